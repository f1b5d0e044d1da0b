//! `/healthz`, `/readyz`, `/metrics`.
use crate::app::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Ready when the database answers and the revocation store can be trusted (with Redis: the
/// node is subscribed and resynchronised).
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let db = app.store.ping().await;
    if let Err(e) = &db {
        tracing::warn!(error = %e, "readiness check failed");
    }
    let store = app.backend.healthy();
    if db.is_ok() && store {
        return (StatusCode::OK, axum::Json(json!({"status": "ready"})));
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({
            "status": "unavailable",
            "database": if db.is_ok() { "ok" } else { "unreachable" },
            "revocation_store": if store { "ok" } else { "unreachable" },
        })),
    )
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
