//! OpenID AuthZEN Authorization API 1.0: `POST /access/v1/evaluation(s)` for MCP servers and
//! gateways (authenticated with their client credentials, as for `/introspect`), and
//! `/.well-known/authzen-configuration`.
use super::{ErrorResponse, authorization, no_store_json};
use crate::app::AppState;
use crate::audit::record::evaluation_event;
use crate::policy::authzen::{self, AuthzenError};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::net::SocketAddr;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/access/v1/evaluation", post(evaluation))
        .route("/access/v1/evaluations", post(evaluations))
        .route("/.well-known/authzen-configuration", get(configuration))
}

fn refused(e: AuthzenError) -> Response {
    let (status, code) = match &e {
        AuthzenError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        AuthzenError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
    };
    let mut resp = (
        status,
        axum::Json(json!({"error": code, "error_description": e.to_string()})),
    )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// Authenticates the caller, parses the body as `T`, answers with `f` and records one
/// `policy.evaluated` event per decision (answered only once they are committed).
async fn handle<T: serde::de::DeserializeOwned>(
    app: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: &[u8],
    f: impl FnOnce(
        &crate::registry::Registry,
        &crate::resources::McpServer,
        &T,
    ) -> Result<(serde_json::Value, Vec<crate::audit::Event>), AuthzenError>,
) -> Response {
    let server = match authorization(headers) {
        Ok(auth) => match app.authenticate_server(peer.ip(), auth).await {
            Ok(s) => s,
            Err(e) => return ErrorResponse(e).into_response(),
        },
        Err(e) => return ErrorResponse(e).into_response(),
    };
    if body.len() > app.config.max_body_bytes {
        return ErrorResponse(crate::oauth::OAuthError::PayloadTooLarge).into_response();
    }
    let req: T = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return refused(AuthzenError::BadRequest(format!("body: {e}"))),
    };
    let registry = app.registry();
    match f(&registry, &server, &req) {
        Ok((v, events)) => match app.audit.record_all(events).await {
            Ok(()) => no_store_json(v),
            Err(_) => ErrorResponse(crate::oauth::OAuthError::TemporarilyUnavailable(
                "audit log unavailable".into(),
            ))
            .into_response(),
        },
        Err(e) => refused(e),
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    crate::audit::record::request_id(headers.get("x-request-id").and_then(|v| v.to_str().ok()))
}

async fn evaluation(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    handle(&app, peer, &headers, &body, |reg, srv, e| {
        let v = app.authzen_evaluate(reg, srv, e)?;
        let ev = evaluation_event(app.clock.now(), peer.ip(), rid, srv, e, &v);
        Ok((v, vec![ev]))
    })
    .await
}

async fn evaluations(
    State(app): State<AppState>,
    ConnectInfo(crate::server::Peer(peer)): ConnectInfo<crate::server::Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rid = request_id(&headers);
    handle(&app, peer, &headers, &body, |reg, srv, b| {
        let (v, items) = app.authzen_evaluations(reg, srv, b)?;
        let now = app.clock.now();
        let events = items
            .iter()
            .zip(v["evaluations"].as_array().into_iter().flatten())
            .map(|(e, answer)| evaluation_event(now, peer.ip(), rid.clone(), srv, e, answer))
            .collect();
        Ok((v, events))
    })
    .await
}

async fn configuration(State(app): State<AppState>) -> Response {
    axum::Json(authzen::metadata(&app.issuer)).into_response()
}
