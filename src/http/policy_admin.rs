//! Policy administration under `/admin/v1/policies` (admin bearer token): the set in force,
//! its history, apply, rollback, diff, and what-if.
use super::admin::AdminCaller;
use crate::app::AppState;
use crate::policy::testing::Case;
use crate::policy::{PolicyError, compile, schema, store};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
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

async fn active(_: AdminCaller, State(app): State<AppState>) -> PolicyResult {
    let reg = app.registry();
    let engine = &reg.policy;
    Ok(Json(json!({
        "version": engine.version,
        "policies": engine.policies(),
        "load_error": engine.load_error,
        // 1: a set written before Human principals (people through MCP clients are evaluated
        // as low-trust agents); 2: the current schema.
        "schema_version": if engine.legacy() { 1 } else { 2 },
    }))
    .into_response())
}

async fn history(_: AdminCaller, State(app): State<AppState>) -> PolicyResult {
    Ok(Json(json!({ "versions": store::history(&app.store).await? })).into_response())
}

async fn version(_: AdminCaller, State(app): State<AppState>, Path(v): Path<i64>) -> PolicyResult {
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
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> PolicyResult {
    let Json(b) = body?;
    let registry = app.registry();
    let author = format!("admin token {}", caller.0);
    let applied = app
        .policy_admin_as(caller.actor())
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
    caller: AdminCaller,
    State(app): State<AppState>,
    body: Result<Json<RollbackBody>, JsonRejection>,
) -> PolicyResult {
    let Json(b) = body?;
    let registry = app.registry();
    let author = format!("admin token {}", caller.0);
    let applied = app
        .policy_admin_as(caller.actor())
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
    _: AdminCaller,
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
    _: AdminCaller,
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
    let r = w
        .case
        .evaluate(&compiled, Some(&registry), app.clock.now(), &|t| {
            app.config.policy_offset_secs(t)
        })?;
    Ok(Json(r).into_response())
}
