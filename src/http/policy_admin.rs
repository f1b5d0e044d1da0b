//! Policy administration under `/admin/v1/policies` (admin bearer token): the set in force,
//! its history, apply, rollback, diff, and what-if.
use super::ErrorResponse;
use crate::app::AppState;
use crate::oauth::OAuthError;
use crate::policy::service::PolicyAdmin;
use crate::policy::testing::Case;
use crate::policy::{PolicyError, compile, schema, store};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/policies", get(active).put(apply))
        .route("/policies/versions", get(history))
        .route("/policies/versions/{version}", get(version))
        .route("/policies/rollback", post(rollback))
        .route("/policies/diff", get(diff))
        .route("/policies/what-if", post(what_if))
}

/// An admin caller, by the id of the admin token it presented (recorded as the author).
pub struct Author(String);

impl FromRequestParts<AppState> for Author {
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
            .map(|id| Author(format!("admin token {id}")))
            .ok_or(ErrorResponse(OAuthError::InvalidToken))
    }
}

pub struct PolicyResponseError(PolicyError);

impl From<PolicyError> for PolicyResponseError {
    fn from(e: PolicyError) -> Self {
        Self(e)
    }
}

impl From<crate::store::StoreError> for PolicyResponseError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(PolicyError::Store(e))
    }
}

impl From<JsonRejection> for PolicyResponseError {
    fn from(e: JsonRejection) -> Self {
        Self(PolicyError::Invalid(e.body_text()))
    }
}

impl IntoResponse for PolicyResponseError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            PolicyError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_policy"),
            PolicyError::Lockout(_) => (StatusCode::CONFLICT, "lockout"),
            PolicyError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            PolicyError::Store(e) => {
                tracing::error!(error = %e, "policy admin request failed");
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

type PolicyResult = Result<Response, PolicyResponseError>;

async fn active(_: Author, State(app): State<AppState>) -> PolicyResult {
    let reg = app.registry();
    let engine = &reg.policy;
    Ok(Json(json!({
        "version": engine.version,
        "policies": engine.policies(),
        "load_error": engine.load_error,
    }))
    .into_response())
}

async fn history(_: Author, State(app): State<AppState>) -> PolicyResult {
    Ok(Json(json!({ "versions": store::history(&app.store).await? })).into_response())
}

async fn version(_: Author, State(app): State<AppState>, Path(v): Path<i64>) -> PolicyResult {
    let m = store::get(&app.store, v)
        .await?
        .ok_or_else(|| PolicyError::NotFound(format!("policy version {v}")))?;
    Ok(Json(m).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    policies: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    force: bool,
}

async fn apply(
    Author(author): Author,
    State(app): State<AppState>,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> PolicyResult {
    let Json(b) = body?;
    let registry = app.registry();
    let applied = PolicyAdmin {
        store: &app.store,
        now: app.clock.now(),
    }
    .apply(&b.policies, &author, &b.message, b.force, &registry)
    .await?;
    app.after_registry_change().await;
    Ok((StatusCode::CREATED, Json(applied)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: i64,
    #[serde(default)]
    force: bool,
}

async fn rollback(
    Author(author): Author,
    State(app): State<AppState>,
    body: Result<Json<RollbackBody>, JsonRejection>,
) -> PolicyResult {
    let Json(b) = body?;
    let registry = app.registry();
    let applied = PolicyAdmin {
        store: &app.store,
        now: app.clock.now(),
    }
    .rollback(b.version, &author, b.force, &registry)
    .await?;
    app.after_registry_change().await;
    Ok((StatusCode::CREATED, Json(applied)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: i64,
    to: Option<i64>,
}

async fn diff(
    _: Author,
    State(app): State<AppState>,
    q: Result<Query<DiffQuery>, axum::extract::rejection::QueryRejection>,
) -> PolicyResult {
    let Query(q) = q.map_err(|e| PolicyError::Invalid(e.body_text()))?;
    let text = |v: i64| {
        let app = app.clone();
        async move {
            store::get(&app.store, v)
                .await?
                .map(|m| m.source)
                .ok_or_else(|| PolicyError::NotFound(format!("policy version {v}")))
        }
    };
    let from = text(q.from).await?;
    let to = match q.to {
        Some(v) => text(v).await?,
        None => store::latest(&app.store.db)
            .await?
            .map(|m| m.source)
            .unwrap_or_default(),
    };
    Ok(Json(json!({ "diff": crate::policy::service::diff(&from, &to) })).into_response())
}

#[derive(Deserialize)]
struct WhatIf {
    /// Policy text to try; default: the set in force.
    policies: Option<String>,
    #[serde(flatten)]
    case: Case,
}

/// What would policy decide for this request (with these policies)? Changes nothing.
async fn what_if(
    _: Author,
    State(app): State<AppState>,
    body: Result<Json<WhatIf>, JsonRejection>,
) -> PolicyResult {
    let Json(w) = body?;
    let registry = app.registry();
    let source = match &w.policies {
        Some(p) => p.clone(),
        None => store::latest(&app.store.db)
            .await?
            .map(|m| m.source)
            .ok_or_else(|| PolicyError::NotFound("policy set".into()))?,
    };
    let compiled = compile(&source, &schema()?)?;
    let r = w.case.evaluate(
        &compiled,
        Some(&registry),
        app.clock.now(),
        app.config.policy_utc_offset_minutes * 60,
    )?;
    Ok(Json(r).into_response())
}
