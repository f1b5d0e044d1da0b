//! The approver's side: pending requests, and approve/deny with a passkey check bound to the
//! request and its details.
use super::{json_error, json_ok, passkey_failure, script_caller, script_json};
use crate::app::AppState;
use crate::approvals::DecideError;
use crate::humans::web::{self as hw, SignedIn};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::Response;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::{get, post};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/approvals", get(list_page))
        .route("/approvals/list.json", get(list_json))
        .route("/approvals/events", get(events))
        .route("/approvals/{id}", get(detail_page))
        .route("/approvals/{id}/start", post(start))
        .route("/approvals/{id}/finish", post(finish))
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

/// One tool call of a request, as text (escaped by the template, never markup).
#[derive(serde::Serialize)]
struct CallView {
    tool: String,
    arguments: String,
    reason: String,
}

/// A request as the approver sees it.
#[derive(serde::Serialize)]
struct RequestView {
    id: String,
    agent_id: String,
    agent_name: String,
    trust_level: String,
    purpose: String,
    owner: String,
    environment: String,
    server_name: String,
    resource: String,
    scope: String,
    calls: Vec<CallView>,
    binding_message: String,
    policy_reasons: String,
    approver: String,
    status: String,
    deny_reason: String,
    expires_at: i64,
    seconds_left: i64,
}

async fn view(
    app: &AppState,
    r: &crate::approvals::entity::approval_request::Model,
) -> RequestView {
    let registry = app.registry();
    let agent = registry.agent(&r.agent_id);
    let server = registry.server_by_resource(&r.resource);
    let details: serde_json::Value =
        serde_json::from_str(&r.authorization_details).unwrap_or_default();
    let calls = details
        .as_array()
        .map(|l| {
            l.iter()
                .map(|d| CallView {
                    tool: d["tool"].as_str().unwrap_or("").to_string(),
                    arguments: match (d.get("arguments"), d.get("arguments_digest")) {
                        (Some(a), _) => serde_json::to_string_pretty(a).unwrap_or_default(),
                        (None, Some(g)) => {
                            format!("(digest only) {}", g.as_str().unwrap_or(""))
                        }
                        _ => String::new(),
                    },
                    reason: d["reason"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let approver = match &r.approver_id {
        Some(id) => crate::humans::find_by_id(&app.store, id)
            .await
            .ok()
            .flatten()
            .map_or_else(|| id.clone(), |h| h.human.email),
        None => "any approver".into(),
    };
    RequestView {
        id: r.id.clone(),
        agent_id: r.agent_id.clone(),
        agent_name: agent.map_or_else(|| r.agent_id.clone(), |a| a.name.clone()),
        trust_level: agent.map_or("", |a| a.trust_level.as_str()).to_string(),
        purpose: agent.map(|a| a.purpose.clone()).unwrap_or_default(),
        owner: agent.map(|a| a.owner.clone()).unwrap_or_default(),
        environment: agent.map(|a| a.environment.clone()).unwrap_or_default(),
        server_name: server.map_or_else(|| r.resource.clone(), |s| s.name.clone()),
        resource: r.resource.clone(),
        scope: r.scope.clone(),
        calls,
        binding_message: r.binding_message.clone().unwrap_or_default(),
        policy_reasons: r.policy_reasons.clone(),
        approver,
        status: r.status.clone(),
        deny_reason: r.deny_reason.clone().unwrap_or_default(),
        expires_at: r.expires_at,
        seconds_left: (r.expires_at - app.clock.now()).max(0),
    }
}

#[derive(askama::Template)]
#[template(path = "approvals.html")]
struct ListPage<'a> {
    who: &'a SignedIn,
    requests: Vec<RequestView>,
}

#[derive(askama::Template)]
#[template(path = "approval.html")]
struct DetailPage<'a> {
    who: &'a SignedIn,
    r: RequestView,
    decidable: bool,
}

fn page_refused(e: &DecideError) -> Response {
    let (status, title) = match e {
        DecideError::NotFound => (StatusCode::NOT_FOUND, "Not found"),
        DecideError::NotYours => (StatusCode::FORBIDDEN, "Not yours to decide"),
        _ => {
            tracing::error!(error = %e, "approvals page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Error")
        }
    };
    hw::error_page(status, title, &e.to_string())
}

async fn pending(app: &AppState, who: &SignedIn) -> Result<Vec<RequestView>, DecideError> {
    let rows = app.pending_approvals(&who.human).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(view(app, r).await);
    }
    Ok(out)
}

async fn list_page(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(who) = hw::current(&app, &headers).await else {
        return hw::login_redirect("/approvals");
    };
    match pending(&app, &who).await {
        Ok(requests) => hw::page(
            StatusCode::OK,
            &ListPage {
                who: &who,
                requests,
            },
        ),
        Err(e) => page_refused(&e),
    }
}

async fn list_json(State(app): State<AppState>, headers: HeaderMap) -> Response {
    let Some(who) = hw::current(&app, &headers).await else {
        return json_error(StatusCode::UNAUTHORIZED, "not signed in");
    };
    match pending(&app, &who).await {
        Ok(requests) => json_ok(json!({ "requests": requests })),
        Err(e) => refused(&e),
    }
}

/// Server-sent events: `changed` whenever a request is created, decided, redeemed or expired.
async fn events(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if hw::current(&app, &headers).await.is_none() {
        return json_error(StatusCode::UNAUTHORIZED, "not signed in");
    }
    let rx = app.approvals.subscribe();
    let closed = Box::pin(app.approvals.closed());
    let stream = futures_util::stream::unfold((rx, closed), |(mut rx, mut closed)| async move {
        tokio::select! {
            () = &mut closed => None,
            got = rx.recv() => match got {
                Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let ev = SseEvent::default().event("changed").data("{}");
                    Some((Ok::<_, std::convert::Infallible>(ev), (rx, closed)))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            },
        }
    });
    let mut resp = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

async fn detail_page(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(who) = hw::current(&app, &headers).await else {
        return hw::login_redirect(&format!("/approvals/{id}"));
    };
    let r = match app.approval(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return page_refused(&DecideError::NotFound),
        Err(e) => return page_refused(&e),
    };
    if !crate::approvals::may_decide(&who.human, &r) {
        return page_refused(&DecideError::NotYours);
    }
    app.approval_viewed(&who.human, &r).await;
    let decidable = r.status == "pending" && r.expires_at > app.clock.now();
    let r = view(&app, &r).await;
    hw::page(
        StatusCode::OK,
        &DetailPage {
            who: &who,
            r,
            decidable,
        },
    )
}
