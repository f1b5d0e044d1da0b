//! The browser side of Mandate: static assets, sign-in (passkeys, upstream OIDC), enrolment,
//! the account page. Pages are askama templates (escaped by default) with the page headers of
//! [`crate::humans::web::html`]; every form carries the session's CSRF token, and the JSON
//! endpoints the page script calls accept only same-origin `application/json` requests.
mod account;
mod approvals;
mod enrol;
mod login;

use crate::app::AppState;
use crate::humans::web::{self as hw, SignedIn};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/static/{file}", get(static_file))
        .route("/logout", post(logout))
        .merge(login::routes())
        .merge(enrol::routes())
        .merge(account::routes())
        .merge(approvals::routes())
}

/// The static assets, compiled into the binary.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/app.css"),
    ),
    (
        "webauthn.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/webauthn.js"),
    ),
    (
        "approvals.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/approvals.js"),
    ),
];

async fn static_file(Path(file): Path<String>) -> Response {
    let Some((_, ctype, body)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut resp = Body::from(*body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn home() -> Response {
    hw::see_other("/account")
}

/// A form body as key/value pairs, within the size limit.
pub(super) async fn form(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<(String, String)>, Response> {
    let bytes = super::form_body(headers, body, app.config.max_body_bytes)
        .await
        .map_err(|e| {
            hw::error_page(
                StatusCode::BAD_REQUEST,
                "Bad request",
                e.description().unwrap_or("the form could not be read"),
            )
        })?;
    Ok(url::form_urlencoded::parse(&bytes).into_owned().collect())
}

pub(super) fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The signed-in person of a form post whose CSRF token matches, or the refusal page.
pub(super) async fn signed_in_form(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(SignedIn, Vec<(String, String)>), Response> {
    let Some(who) = hw::current(app, headers).await else {
        return Err(hw::login_redirect("/account"));
    };
    let form = form(app, headers, body).await?;
    if !hw::csrf_ok(&who, field(&form, "csrf").unwrap_or("")) {
        return Err(csrf_refused());
    }
    Ok((who, form))
}

pub(super) fn csrf_refused() -> Response {
    hw::error_page(
        StatusCode::FORBIDDEN,
        "Request refused",
        "The form's security token is missing or wrong. Reload the page and try again.",
    )
}

/// A JSON error for the page script: `{"error": message}`, never cached.
pub(super) fn json_error(status: StatusCode, message: &str) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": message }))).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The signed-in person of a page-script call carrying the session's CSRF token in
/// `X-CSRF-Token`.
pub(super) async fn script_caller(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<SignedIn, Response> {
    let Some(who) = hw::current(app, headers).await else {
        return Err(json_error(StatusCode::UNAUTHORIZED, "not signed in"));
    };
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !hw::csrf_ok(&who, token) {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token",
        ));
    }
    Ok(who)
}

/// A JSON answer for the page script, never cached.
pub(super) fn json_ok(value: serde_json::Value) -> Response {
    super::no_store_json(value)
}

/// The origin of the issuer (`scheme://host[:port]`).
fn issuer_origin(app: &AppState) -> Option<String> {
    url::Url::parse(&app.issuer)
        .ok()
        .map(|u| u.origin().ascii_serialization())
}

/// Reads the JSON body of a page-script call. Refuses anything a cross-site page could send:
/// another content type (a "simple" cross-origin request), or an `Origin` other than ours.
pub(super) async fn script_json<T: DeserializeOwned>(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<T, Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/json")
    {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ours = issuer_origin(app);
        if origin.to_str().ok() != ours.as_deref() {
            return Err(json_error(StatusCode::FORBIDDEN, "cross-origin request"));
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none")
    {
        return Err(json_error(StatusCode::FORBIDDEN, "cross-site request"));
    }
    let bytes = axum::body::to_bytes(body, app.config.max_body_bytes)
        .await
        .map_err(|_| json_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large"))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, &format!("bad request: {e}")))
}

/// A passkey failure as the page script sees it (and a log line for server errors).
pub(super) fn passkey_failure(e: &crate::humans::passkeys::PasskeyError) -> Response {
    use crate::humans::passkeys::PasskeyError as E;
    let status = match e {
        E::Store(_) => {
            tracing::error!(error = %e, "passkey ceremony failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        E::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        E::Duplicate => StatusCode::CONFLICT,
        E::Person | E::NoPasskey | E::Rejected(_) => StatusCode::UNAUTHORIZED,
        E::Ceremony | E::Link => StatusCode::BAD_REQUEST,
    };
    if !e.is_server_error() {
        tracing::debug!(error = %e, "passkey ceremony refused");
    }
    json_error(status, &e.public())
}

/// A JSON answer that also sets the session cookie.
pub(super) fn with_cookie(mut resp: Response, cookie: HeaderValue) -> Response {
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    resp
}

async fn logout(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let (who, _) = match signed_in_form(&app, &headers, body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Err(e) = hw::end_session(&app, &who.session_id).await {
        tracing::error!(error = %e, "ending a session failed");
        return hw::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            "Signing out failed; try again.",
        );
    }
    let mut resp = hw::see_other("/login");
    resp.headers_mut()
        .insert(header::SET_COOKIE, hw::clear_cookie());
    resp
}
