//! HTTP: routers, extractors and the one place where errors become responses.
mod admin;
mod approvals;
mod audit;
mod authorize;
mod authzen;
mod humans_admin;
mod metadata;
mod oauth;
mod ops;
mod policy_admin;
mod web;

use crate::app::AppState;
use crate::oauth::OAuthError;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.request_timeout_secs.max(1));
    Router::new()
        .merge(oauth::routes())
        .merge(approvals::routes())
        .merge(authorize::routes())
        .merge(metadata::routes())
        .merge(ops::routes())
        .merge(authzen::routes())
        .nest(
            "/admin/v1",
            admin::routes(state.config.max_body_bytes)
                .merge(policy_admin::routes())
                .merge(humans_admin::routes())
                .merge(authorize::admin_routes()),
        )
        .merge(audit::routes())
        .merge(web::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .with_state(state)
}

/// The metrics label of a route.
fn endpoint_label(path: Option<&str>) -> &'static str {
    match path {
        Some("/token") => "token",
        Some("/bc-authorize") => "bc_authorize",
        Some("/introspect") => "introspect",
        Some("/revoke") => "revoke",
        Some("/authorize" | "/authorize/consent") => "authorize",
        Some("/register" | "/register/{client_id}") => "register",
        Some("/jwks.json") => "jwks",
        Some("/.well-known/oauth-authorization-server") => "as_metadata",
        Some("/.well-known/openid-configuration") => "openid_configuration",
        Some("/healthz" | "/readyz" | "/metrics") => "ops",
        Some("/access/v1/evaluation" | "/access/v1/evaluations") => "authzen",
        Some(p) if p.starts_with("/admin/") => "admin",
        _ => "other",
    }
}

/// Metrics per endpoint, and the security headers every response carries.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_label(
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // HTML pages set their own (still strict) policy; everything else gets the strictest.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    state
        .metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            endpoint,
            status: resp.status().as_u16(),
        })
        .inc();
    state
        .metrics
        .latency
        .get_or_create(&crate::metrics::EndpointLabels { endpoint })
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// An OAuth error on the wire: JSON body, status, `WWW-Authenticate`, never cached.
pub struct ErrorResponse(pub OAuthError);

impl From<OAuthError> for ErrorResponse {
    fn from(e: OAuthError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::warn!(error = e.code(), reason = e.internal(), "request failed");
        } else {
            tracing::debug!(error = e.code(), reason = e.internal(), "request refused");
        }
        let mut resp = (status, axum::Json(e.body())).into_response();
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(secs) = e.retry_after()
            && let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if let Some(challenge) = e.www_authenticate() {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

/// A JSON answer that must not be cached (tokens, introspection).
pub fn no_store_json(value: impl serde::Serialize) -> Response {
    let mut resp = axum::Json(value).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Reads an `application/x-www-form-urlencoded` body, within the size limit.
pub async fn form_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<axum::body::Bytes, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::InvalidRequest(
            "Content-Type must be application/x-www-form-urlencoded".into(),
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(OAuthError::PayloadTooLarge);
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| OAuthError::PayloadTooLarge)
}

/// The `Authorization` header as text (a non-ASCII header counts as malformed credentials).
pub fn authorization(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| OAuthError::invalid_client(true, "Authorization header is not ASCII")),
    }
}
