//! `GET /admin/v1/audit`: the audit log, filtered, newest first, with cursor paging.
use super::admin::AdminCaller;
use crate::app::AppState;
use crate::audit::query::{self, RawFilter};
use axum::Json;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/v1/audit", get(list))
}

fn error(status: StatusCode, code: &str, description: String) -> Response {
    (
        status,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}

async fn list(
    _: AdminCaller,
    State(app): State<AppState>,
    q: Result<Query<RawFilter>, QueryRejection>,
) -> Response {
    let raw = match q {
        Ok(Query(raw)) => raw,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.body_text()),
    };
    let filter = match raw.parse(app.clock.now()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_request", e.0),
    };
    // What this node has answered is in the database before it is read.
    app.audit.sync().await;
    match query::page(&app.store.db, &filter).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "audit query failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error".into(),
            )
        }
    }
}
