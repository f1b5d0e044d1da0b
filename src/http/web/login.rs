//! `/login`: the sign-in page, passkey sign-in (email first), upstream OIDC sign-in.
use super::{json_ok, passkey_failure, script_json, with_cookie};
use crate::app::AppState;
use crate::humans::web::{self as hw};
use crate::humans::{oidc, passkeys};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::PublicKeyCredential;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(page))
        .route("/login/passkey/start", post(passkey_start))
        .route("/login/passkey/finish", post(passkey_finish))
        .route("/login/oidc", get(oidc_start))
        .route("/login/oidc/callback", get(oidc_callback))
}

/// The cookie that binds an upstream sign-in to the browser that started it.
const OIDC_COOKIE: &str = "__Host-mandate_oidc";

async fn oidc_start(State(app): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    let next = hw::safe_next(q.next.as_deref().unwrap_or("/"));
    match oidc::start(&app, next).await {
        Ok((url, handle)) => {
            let mut resp = StatusCode::SEE_OTHER.into_response();
            let h = resp.headers_mut();
            match (
                HeaderValue::from_str(&url),
                HeaderValue::from_str(&format!(
                    "{OIDC_COOKIE}={handle}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
                    passkeys::CEREMONY_TTL_SECS
                )),
            ) {
                (Ok(loc), Ok(cookie)) => {
                    h.insert(header::LOCATION, loc);
                    h.insert(header::SET_COOKIE, cookie);
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    resp
                }
                _ => hw::see_other("/login?error=oidc"),
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream sign-in could not start");
            hw::audit_failed_sign_in(&app, "oidc", "", e.reason()).await;
            hw::see_other("/login?error=oidc")
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

async fn oidc_callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let clear = HeaderValue::from_static(
        "__Host-mandate_oidc=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax",
    );
    let result = match q {
        Callback { error: Some(e), .. } => Err(oidc::OidcError::Provider(e)),
        Callback {
            code: Some(code),
            state: Some(state),
            ..
        } => oidc::finish(&app, &state, cookie(&headers, OIDC_COOKIE), &code).await,
        _ => Err(oidc::OidcError::State),
    };
    let mut resp = match result {
        Ok((human, next)) => match hw::start_session(&app, &human.id, "oidc").await {
            Ok(session) => {
                let mut r = hw::see_other(&next);
                r.headers_mut().append(header::SET_COOKIE, session);
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "starting a session failed");
                hw::see_other("/login?error=oidc")
            }
        },
        Err(e) => {
            if matches!(e, oidc::OidcError::Store(_) | oidc::OidcError::Discovery(_)) {
                tracing::error!(error = %e, "upstream sign-in failed");
            } else {
                tracing::info!(error = %e, "upstream sign-in refused");
            }
            hw::audit_failed_sign_in(&app, "oidc", "", e.reason()).await;
            if matches!(e, oidc::OidcError::Unknown) {
                hw::see_other("/login?error=unknown")
            } else {
                hw::see_other("/login?error=oidc")
            }
        }
    };
    resp.headers_mut().append(header::SET_COOKIE, clear);
    resp
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    next: &'a str,
    passkeys: bool,
    oidc_label: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Deserialize, Default)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

async fn page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = hw::safe_next(q.next.as_deref().unwrap_or("/"));
    if hw::current(&app, &headers).await.is_some() {
        return hw::see_other(next);
    }
    let error = match q.error.as_deref() {
        Some("oidc") => Some("Signing in with your company account failed."),
        Some("unknown") => {
            Some("There is no Mandate account for you yet: ask an administrator for an invitation.")
        }
        _ => None,
    };
    hw::page(
        StatusCode::OK,
        &LoginPage {
            next,
            passkeys: app.humans.webauthn.is_some(),
            oidc_label: app.config.oidc.as_ref().map(|o| o.label.as_str()),
            error,
        },
    )
}

#[derive(Deserialize)]
struct Start {
    email: String,
}

async fn passkey_start(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let s: Start = match script_json(&app, &headers, body).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match passkeys::start_login(&app, &s.email).await {
        Ok((ceremony, options)) => json_ok(json!({ "ceremony": ceremony, "options": options })),
        Err(e) => {
            hw::audit_failed_sign_in(&app, "passkey", &s.email, e.reason()).await;
            passkey_failure(&e)
        }
    }
}

#[derive(Deserialize)]
struct Finish {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    next: Option<String>,
}

async fn passkey_finish(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let f: Finish = match script_json(&app, &headers, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let human = match passkeys::finish_login(&app, &f.ceremony, &f.credential).await {
        Ok(h) => h,
        Err(e) => {
            hw::audit_failed_sign_in(
                &app,
                "passkey",
                &passkeys::credential_fingerprint(&f.credential),
                e.reason(),
            )
            .await;
            return passkey_failure(&e);
        }
    };
    match hw::start_session(&app, &human.id, "passkey").await {
        Ok(cookie) => with_cookie(
            json_ok(json!({
                "redirect": hw::safe_next(f.next.as_deref().unwrap_or("/")),
            })),
            cookie,
        ),
        Err(e) => passkey_failure(&passkeys::PasskeyError::Store(e)),
    }
}
