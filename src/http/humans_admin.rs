//! `/admin/v1/humans`: the admin API twin of `mandate humans ...`.
use super::admin::{AdminCaller, AdminResponseError};
use crate::app::AppState;
use crate::humans::{self, Role, web};
use crate::registry::admin::AdminError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

type Result = std::result::Result<Response, AdminResponseError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/humans", get(list))
        .route("/humans/invite", post(invite))
        .route("/humans/{id}", get(show))
        .route("/humans/{id}/disable", post(disable))
        .route(
            "/humans/{id}/sessions",
            get(sessions).delete(revoke_sessions),
        )
        .route("/humans/{id}/passkeys", get(passkeys))
        .route("/humans/{id}/passkeys/{pk}", delete(remove_passkey))
}

async fn find(app: &AppState, id: &str) -> std::result::Result<humans::HumanRecord, AdminError> {
    humans::find(&app.store, id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("human {id}")))
}

async fn list(_: AdminCaller, State(app): State<AppState>) -> Result {
    let list = humans::list(&app.store).await?;
    Ok(Json(json!({ "humans": list })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invite {
    email: String,
    #[serde(default)]
    name: Option<String>,
    roles: Vec<Role>,
    #[serde(default)]
    ttl_secs: Option<i64>,
}

async fn invite(
    caller: AdminCaller,
    State(app): State<AppState>,
    body: std::result::Result<Json<Invite>, JsonRejection>,
) -> Result {
    let Json(i) = body?;
    let name = i
        .name
        .unwrap_or_else(|| i.email.split('@').next().unwrap_or("").to_string());
    let inv = humans::invite(
        &app.store,
        &app.audit.trail(caller.actor()),
        app.clock.now(),
        &app.issuer,
        &i.email,
        &name,
        &i.roles,
        i.ttl_secs.unwrap_or(app.config.enrolment_link_ttl_secs),
    )
    .await?;
    let status = if inv.existing {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = (status, Json(inv)).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

async fn show(_: AdminCaller, State(app): State<AppState>, Path(id): Path<String>) -> Result {
    let r = find(&app, &id).await?;
    let passkeys = humans::list_passkeys(&app.store, &r.human.id).await?;
    let sessions = web::list_sessions(&app.store, app.clock.now(), &r.human.id).await?;
    Ok(Json(json!({"human": r, "passkeys": passkeys, "sessions": sessions})).into_response())
}

async fn disable(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result {
    let r = find(&app, &id).await?;
    let r = humans::disable(
        &app.store,
        &app.audit.trail(caller.actor()),
        app.clock.now(),
        &r.human.id,
    )
    .await?;
    // Tokens issued for this person stop working too.
    app.revoke_kind(
        caller.actor(),
        crate::sessions::Kind::Human,
        &r.human.id,
        None,
        None,
    )
    .await?;
    Ok(Json(r).into_response())
}

async fn sessions(_: AdminCaller, State(app): State<AppState>, Path(id): Path<String>) -> Result {
    let r = find(&app, &id).await?;
    let list = web::list_sessions(&app.store, app.clock.now(), &r.human.id).await?;
    Ok(Json(json!({ "sessions": list })).into_response())
}

async fn revoke_sessions(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result {
    let r = find(&app, &id).await?;
    let n = web::revoke_sessions(
        &app.store,
        &app.audit.trail(caller.actor()),
        app.clock.now(),
        &r.human.id,
    )
    .await?;
    Ok(Json(json!({ "ended": n })).into_response())
}

async fn passkeys(_: AdminCaller, State(app): State<AppState>, Path(id): Path<String>) -> Result {
    let r = find(&app, &id).await?;
    let list = humans::list_passkeys(&app.store, &r.human.id).await?;
    Ok(Json(json!({ "passkeys": list })).into_response())
}

async fn remove_passkey(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path((id, pk)): Path<(String, String)>,
) -> Result {
    let r = find(&app, &id).await?;
    humans::remove_passkey(
        &app.store,
        &app.audit.trail(caller.actor()),
        app.clock.now(),
        &r.human.id,
        &pk,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
