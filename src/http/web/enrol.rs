//! `/enrol/{token}`: a person invited by `mandate humans invite` registers their first passkey.
//! The link is single use: the registration that succeeds uses it up.
use super::{json_ok, passkey_failure, script_json, with_cookie};
use crate::app::AppState;
use crate::humans::web::{self as hw};
use crate::humans::{self, passkeys};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::RegisterPublicKeyCredential;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/enrol/{token}", get(page))
        .route("/enrol/{token}/start", post(start))
        .route("/enrol/{token}/finish", post(finish))
}

#[derive(askama::Template)]
#[template(path = "enrol.html")]
struct EnrolPage<'a> {
    token: &'a str,
    email: &'a str,
    display_name: &'a str,
}

fn link_refused() -> Response {
    hw::error_page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This enrolment link is invalid, already used or expired. Ask an administrator for a new one.",
    )
}

async fn page(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    match humans::check_link(&app.store, app.clock.now(), &token).await {
        Ok(Ok(h)) => {
            if app.humans.webauthn.is_none() {
                return hw::error_page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Passkeys unavailable",
                    "Passkeys need Mandate's issuer to be a domain name (https, or http://localhost).",
                );
            }
            hw::page(
                StatusCode::OK,
                &EnrolPage {
                    token: &token,
                    email: &h.email,
                    display_name: &h.display_name,
                },
            )
        }
        Ok(Err(_)) => link_refused(),
        Err(e) => {
            tracing::error!(error = %e, "reading an enrolment link failed");
            hw::error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "Try again later.",
            )
        }
    }
}

async fn start(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = script_json::<serde_json::Value>(&app, &headers, body).await {
        return r;
    }
    let human = match humans::check_link(&app.store, app.clock.now(), &token).await {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => {
            hw::audit_failed_sign_in(&app, "enrolment", "", why.as_str()).await;
            return passkey_failure(&passkeys::PasskeyError::Link);
        }
        Err(e) => return passkey_failure(&passkeys::PasskeyError::Store(e)),
    };
    match passkeys::start_registration(&app, &human, Some(&token)).await {
        Ok((ceremony, options)) => json_ok(json!({ "ceremony": ceremony, "options": options })),
        Err(e) => passkey_failure(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct Finish {
    pub ceremony: String,
    #[serde(default)]
    pub name: Option<String>,
    pub credential: RegisterPublicKeyCredential,
}

async fn finish(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let f: Finish = match script_json(&app, &headers, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let name = f.name.as_deref().unwrap_or("Passkey");
    let (human, _) = match passkeys::finish_registration(
        &app,
        &f.ceremony,
        Some(&token),
        None,
        name,
        &f.credential,
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            hw::audit_failed_sign_in(&app, "enrolment", "", e.reason()).await;
            return passkey_failure(&e);
        }
    };
    match hw::start_session(&app, &human.id, "passkey").await {
        Ok(cookie) => with_cookie(json_ok(json!({ "redirect": "/account" })), cookie),
        Err(e) => passkey_failure(&passkeys::PasskeyError::Store(e)),
    }
}
