//! The admin JSON API (`/admin/v1`), guarded by an admin bearer token (`mandate admin token`).
use super::ErrorResponse;
use crate::agents::{AgentPatch, AgentStatus, NewAgent};
use crate::app::AppState;
use crate::oauth::OAuthError;
use crate::registry::admin::AdminError;
use crate::registry::{agent_from_model, server_from_model};
use crate::resources::ServerManifest;
use crate::sessions::Kind;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/servers",
            get(list_servers).post(create_server).put(import_server),
        )
        .route("/servers/{id}", get(get_server).delete(delete_server))
        .route("/servers/{id}/rotate-secret", post(rotate_secret))
        .route("/agents", get(list_agents).post(create_agent))
        .route(
            "/agents/{id}",
            get(get_agent).patch(update_agent).delete(delete_agent),
        )
        .route("/agents/{id}/rotate-secret", post(rotate_secret))
        .route("/agents/{id}/suspend", post(suspend_agent))
        .route("/agents/{id}/activate", post(activate_agent))
        .route("/agents/{id}/kill", post(kill_agent))
        .route("/agents/{id}/revive", post(activate_agent))
        .route("/revocations", post(revoke))
        .route("/sessions", get(list_sessions))
        .route("/agents/{id}/sessions", post(start_session))
        .route("/sessions/{sid}", axum::routing::delete(revoke_session))
        .route("/keys", get(list_keys))
        .route("/keys/rotate", post(rotate_key))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
}

/// A caller holding a valid admin token (its id, for the audit record).
pub struct AdminCaller(pub String);

impl AdminCaller {
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor::new(crate::audit::ActorKind::Admin, self.0.clone())
    }
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ErrorResponse;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ErrorResponse> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(OAuthError::InvalidToken)?;
        app.registry()
            .admin_token(token)
            .map(|id| AdminCaller(id.to_string()))
            .ok_or(ErrorResponse(OAuthError::InvalidToken))
    }
}

/// Admin API errors.
pub struct AdminResponseError(AdminError);

impl From<AdminError> for AdminResponseError {
    fn from(e: AdminError) -> Self {
        Self(e)
    }
}

impl From<crate::store::StoreError> for AdminResponseError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(AdminError::Store(e))
    }
}

impl From<JsonRejection> for AdminResponseError {
    fn from(e: JsonRejection) -> Self {
        Self(AdminError::Invalid(e.body_text()))
    }
}

impl IntoResponse for AdminResponseError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            AdminError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
            AdminError::Store(_) | AdminError::Key(_) => {
                tracing::error!(error = %self.0, "admin request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            }
        };
        let description = match status {
            StatusCode::INTERNAL_SERVER_ERROR => "internal error".to_string(),
            _ => self.0.to_string(),
        };
        (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response()
    }
}

type AdminResult = Result<Response, AdminResponseError>;

async fn after_change(app: &AppState) {
    app.after_registry_change().await;
}

async fn list_servers(_: AdminCaller, State(app): State<AppState>) -> AdminResult {
    let servers: Vec<_> = app
        .store
        .list_servers()
        .await?
        .into_iter()
        .filter_map(|m| server_from_model(m).ok())
        .collect();
    Ok(Json(json!({ "servers": servers })).into_response())
}

async fn get_server(
    _: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    let m = app
        .store
        .find_server(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("server {id}")))?;
    let s = server_from_model(m).map_err(AdminError::Invalid)?;
    Ok(Json(s).into_response())
}

async fn create_server(
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Result<Json<ServerManifest>, JsonRejection>,
) -> AdminResult {
    let Json(m) = body?;
    let created = app.admin_as(caller.actor()).create_server(&m).await?;
    after_change(&app).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn import_server(
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Result<Json<ServerManifest>, JsonRejection>,
) -> AdminResult {
    let Json(m) = body?;
    let created = app.admin_as(caller.actor()).import_server(&m).await?;
    after_change(&app).await;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created)).into_response())
}

async fn delete_server(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    app.admin_as(caller.actor()).delete_server(&id).await?;
    after_change(&app).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    #[serde(default = "default_overlap")]
    overlap_secs: i64,
}

fn default_overlap() -> i64 {
    3600
}

async fn rotate_secret(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<RotateSecret>>,
) -> AdminResult {
    let overlap = body.map_or_else(default_overlap, |Json(b)| b.overlap_secs);
    let rotated = app
        .admin_as(caller.actor())
        .rotate_secret(&id, overlap)
        .await?;
    after_change(&app).await;
    Ok(Json(rotated).into_response())
}

async fn list_agents(_: AdminCaller, State(app): State<AppState>) -> AdminResult {
    let agents: Vec<_> = app
        .store
        .list_agents()
        .await?
        .into_iter()
        .filter_map(|m| agent_from_model(m).ok())
        .collect();
    Ok(Json(json!({ "agents": agents })).into_response())
}

async fn get_agent(
    _: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    let m = app
        .store
        .find_agent(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("agent {id}")))?;
    Ok(Json(agent_from_model(m).map_err(AdminError::Invalid)?).into_response())
}

async fn create_agent(
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Result<Json<NewAgent>, JsonRejection>,
) -> AdminResult {
    let Json(n) = body?;
    let created = app.admin_as(caller.actor()).create_agent(&n).await?;
    after_change(&app).await;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn update_agent(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AgentPatch>, JsonRejection>,
) -> AdminResult {
    let Json(p) = body?;
    let agent = app.admin_as(caller.actor()).update_agent(&id, &p).await?;
    after_change(&app).await;
    Ok(Json(agent).into_response())
}

async fn delete_agent(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    app.admin_as(caller.actor()).delete_agent(&id).await?;
    after_change(&app).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn suspend_agent(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    let agent = app
        .admin_as(caller.actor())
        .set_agent_status(&id, AgentStatus::Suspended)
        .await?;
    after_change(&app).await;
    Ok(Json(agent).into_response())
}

async fn activate_agent(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    let agent = app
        .admin_as(caller.actor())
        .set_agent_status(&id, AgentStatus::Active)
        .await?;
    after_change(&app).await;
    Ok(Json(agent).into_response())
}

async fn list_keys(_: AdminCaller, State(app): State<AppState>) -> AdminResult {
    let keys = app
        .registry()
        .keys
        .describe(app.clock.now(), app.config.access_token_ttl_secs);
    Ok(Json(json!({ "keys": keys })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    alg: Option<String>,
    lead_secs: Option<i64>,
}

async fn rotate_key(
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Option<Json<RotateKey>>,
) -> AdminResult {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let alg = b.alg.unwrap_or_else(|| app.config.signing_alg.clone());
    let lead = b.lead_secs.unwrap_or(app.config.key_publish_lead_secs);
    let m = app
        .admin_as(caller.actor())
        .add_key(&alg, lead, &app.kek)
        .await?;
    after_change(&app).await;
    Ok(Json(json!({"kid": m.kid, "alg": m.alg, "activates_at": m.activates_at})).into_response())
}

/// The kill switch.
async fn kill_agent(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    let agent = app.kill_agent(caller.actor(), &id).await?;
    Ok(Json(agent).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    kind: String,
    value: String,
}

/// Checks a revocation request names something real (or well-formed, for humans and jtis).
async fn check_revocation(app: &AppState, kind: Kind, value: &str) -> Result<(), AdminError> {
    let exists = match kind {
        Kind::Agent => app.store.find_agent(value).await?.is_some(),
        Kind::Session => {
            if !value.starts_with("ses_") || value.len() > 64 {
                return Err(AdminError::Invalid(format!(
                    "malformed session id {value:?}"
                )));
            }
            app.store.find_session(value).await?.is_some()
        }
        Kind::Env => {
            if !crate::resources::valid_name(value) {
                return Err(AdminError::Invalid(format!(
                    "malformed environment {value:?}"
                )));
            }
            true
        }
        Kind::Jti | Kind::Human => {
            if value.is_empty() || value.len() > 256 {
                return Err(AdminError::Invalid("value must be 1-256 characters".into()));
            }
            true
        }
    };
    if exists {
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("{} {value}", kind.as_str())))
    }
}

async fn revoke(
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Result<Json<RevokeBody>, JsonRejection>,
) -> AdminResult {
    let Json(b) = body?;
    let kind = Kind::parse(&b.kind).ok_or_else(|| {
        AdminError::Invalid("kind must be jti, session, agent, human or env".into())
    })?;
    check_revocation(&app, kind, &b.value).await?;
    if kind == Kind::Agent {
        let agent = app.kill_agent(caller.actor(), &b.value).await?;
        return Ok((
            StatusCode::CREATED,
            Json(json!({"kind": "agent", "value": agent.id})),
        )
            .into_response());
    }
    let r = app
        .revoke_kind(caller.actor(), kind, &b.value, None, None)
        .await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionFilter {
    agent: Option<String>,
}

async fn list_sessions(
    _: AdminCaller,
    State(app): State<AppState>,
    q: Result<axum::extract::Query<SessionFilter>, axum::extract::rejection::QueryRejection>,
) -> AdminResult {
    let axum::extract::Query(f) = q.map_err(|e| AdminError::Invalid(e.body_text()))?;
    let sessions = app.list_sessions(f.agent.as_deref()).await?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

async fn revoke_session(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(sid): Path<String>,
) -> AdminResult {
    check_revocation(&app, Kind::Session, &sid).await?;
    let r = app
        .revoke_kind(caller.actor(), Kind::Session, &sid, None, None)
        .await?;
    Ok(Json(r).into_response())
}

/// Starts a session explicitly.
async fn start_session(
    caller: AdminCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> AdminResult {
    let s = app.start_session(caller.actor(), &id).await?;
    Ok((StatusCode::CREATED, Json(s)).into_response())
}
