//! `/token`, `/introspect`, `/revoke`.
use super::{ErrorResponse, authorization, form_body, no_store_json};
use crate::app::AppState;
use crate::metrics::{GrantLabels, IntrospectionLabels, RefusalLabels};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/token", post(token))
        .route("/introspect", post(introspect))
        .route("/revoke", post(revoke))
}

async fn token(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut seen = crate::audit::Seen::default();
    let result = async {
        let body = form_body(&headers, body, app.config.max_body_bytes).await?;
        let auth = authorization(&headers)?;
        let r = app.token(peer.ip(), auth, &body, &mut seen).await;
        if r.is_err() {
            seen.note_request(auth, &body);
        }
        r
    }
    .await;
    let result = app
        .audit
        .token(
            app.clock.now(),
            peer.ip(),
            request_id(&headers),
            seen,
            result,
        )
        .await;
    match result {
        Ok(v) => {
            app.metrics
                .tokens_issued
                .get_or_create(&GrantLabels {
                    grant_type: v.grant_type,
                })
                .inc();
            no_store_json(v)
        }
        Err(e) => {
            app.metrics
                .tokens_refused
                .get_or_create(&RefusalLabels { reason: e.code() })
                .inc();
            ErrorResponse(e).into_response()
        }
    }
}

async fn introspect(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut seen = crate::audit::Seen::default();
    let mut fingerprint_of = None;
    let result = async {
        let body = form_body(&headers, body, app.config.max_body_bytes).await?;
        let auth = authorization(&headers)?;
        let r = app.introspect(peer.ip(), auth, &body, &mut seen).await;
        if !matches!(&r, Ok(v) if v["active"] == true) {
            seen.note_request(auth, &body);
            fingerprint_of = crate::oauth::Params::parse(&body)
                .ok()
                .and_then(|p| p.get("token").map(str::to_string));
        }
        r
    }
    .await;
    let result = app
        .audit
        .introspection(
            app.clock.now(),
            peer.ip(),
            request_id(&headers),
            seen,
            fingerprint_of.as_deref(),
            result,
        )
        .await;
    match result {
        Ok(v) => {
            let active = v["active"].as_bool().unwrap_or(false);
            app.metrics
                .introspections
                .get_or_create(&IntrospectionLabels { active })
                .inc();
            no_store_json(v)
        }
        Err(e) => ErrorResponse(e).into_response(),
    }
}

async fn revoke(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let body = form_body(&headers, body, app.config.max_body_bytes).await?;
        let auth = authorization(&headers)?;
        // An admin bearer token may revoke any token; anything else is client authentication.
        let admin = auth
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|t| {
                app.registry()
                    .admin_token(t.trim())
                    .map(str::to_string)
                    .ok_or(crate::oauth::OAuthError::InvalidToken)
            })
            .transpose()?;
        app.revoke(peer.ip(), auth, admin.as_deref(), &body).await
    }
    .await;
    match result {
        Ok(()) => no_store_json(serde_json::json!({})),
        Err(e) => ErrorResponse(e).into_response(),
    }
}

/// The caller's `X-Request-Id`, for the audit record.
fn request_id(headers: &HeaderMap) -> Option<String> {
    crate::audit::record::request_id(headers.get("x-request-id").and_then(|v| v.to_str().ok()))
}
