//! The approver's side: pending requests, and approve/deny with a passkey check bound to the
//! request and its details.
use super::{json_error, json_ok, passkey_failure, script_json};
use crate::app::AppState;
use crate::approvals::DecideError;
use crate::humans::web::{self as hw, SignedIn};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/approvals/{id}/start", post(start))
        .route("/approvals/{id}/finish", post(finish))
}

/// The signed-in person of a page-script call carrying the session's CSRF token.
async fn script_caller(app: &AppState, headers: &HeaderMap) -> Result<SignedIn, Response> {
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

pub(super) fn refused(e: &DecideError) -> Response {
    let status = match e {
        DecideError::NotFound => StatusCode::NOT_FOUND,
        DecideError::NotYours => StatusCode::FORBIDDEN,
        DecideError::Expired | DecideError::Decided => StatusCode::CONFLICT,
        DecideError::Ceremony | DecideError::Invalid(_) => StatusCode::BAD_REQUEST,
        DecideError::Passkey(p) => return passkey_failure(p),
        DecideError::Store(_) => {
            tracing::error!(error = %e, "approval decision failed");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "try again later");
        }
    };
    json_error(status, &e.to_string())
}

async fn start(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = match script_caller(&app, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = script_json::<serde_json::Value>(&app, &headers, body).await {
        return r;
    }
    match app.start_decision(&who.human, &id).await {
        Ok((ceremony, options)) => json_ok(json!({ "ceremony": ceremony, "options": options })),
        Err(e) => refused(&e),
    }
}

#[derive(serde::Deserialize)]
struct Finish {
    ceremony: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
    decision: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn finish(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = match script_caller(&app, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let f: Finish = match script_json(&app, &headers, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let approve = match f.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return json_error(StatusCode::BAD_REQUEST, "decision must be approve or deny"),
    };
    match app
        .finish_decision(
            &who.human,
            &id,
            &f.ceremony,
            &f.credential,
            approve,
            f.reason.as_deref(),
        )
        .await
    {
        Ok(s) => json_ok(json!({ "status": s.as_str(), "redirect": "/approvals" })),
        Err(e) => refused(&e),
    }
}
