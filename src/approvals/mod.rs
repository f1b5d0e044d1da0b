//! Step-up: a human approves one exact agent action (OpenID CIBA, poll mode; RFC 9396
//! `authorization_details` of type `mcp_tool_call`).
//!
//! `POST /bc-authorize` stores a request (the `auth_req_id` only as SHA-256), routed to one
//! approver (the `login_hint`, else the agent's owner when they may approve) or to every
//! approver. The approver decides in the browser with a fresh passkey assertion whose ceremony
//! is bound to the request id and a digest of its details. The agent polls `/token` with the
//! CIBA grant (src/oauth/grants/ciba.rs) and receives a short-lived token for that call only.
pub mod entity;

use crate::app::App;
use crate::audit::{Actor, ActorKind, Event, kinds};
use crate::humans::{Human, Role};
use crate::oauth::client_auth::{self, Client};
use crate::oauth::{OAuthError, Params, scopes};
use crate::policy::{Facts, Outcome};
use entity::approval_request as row;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, Set, TransactionTrait,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// The `acr` of a token issued on a human's passkey approval.
pub const ACR: &str = "urn:mandate:acr:passkey-approval";
/// The one `authorization_details` type.
pub const DETAIL_TYPE: &str = "mcp_tool_call";
/// Largest `authorization_details`, bytes of JSON.
pub const MAX_DETAILS_BYTES: usize = 16 * 1024;
/// Deepest nesting of `authorization_details` (arrays and objects).
pub const MAX_DETAILS_DEPTH: usize = 8;
/// Most tool calls in one request.
pub const MAX_DETAILS: usize = 8;
/// Longest `binding_message`, characters.
pub const MAX_BINDING_MESSAGE: usize = 200;
/// CIBA §11: `slow_down` adds this to the interval.
pub const SLOW_DOWN_STEP: i64 = 5;
const AUTH_REQ_PREFIX: &str = "mnd_car_";

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
    Redeemed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Redeemed => "redeemed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "expired" => Self::Expired,
            "redeemed" => Self::Redeemed,
            _ => return None,
        })
    }
}

/// The answer to `/bc-authorize` (CIBA §7.3).
#[derive(Debug, Serialize)]
pub struct BcResponse {
    pub auth_req_id: String,
    pub expires_in: i64,
    pub interval: i64,
    /// The stored request (not sent), for the notification.
    #[serde(skip)]
    pub request: row::Model,
}

/// Why a decision in the browser was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("no such approval request")]
    NotFound,
    #[error("this request is for another approver")]
    NotYours,
    #[error("this request expired")]
    Expired,
    #[error("this request was already decided")]
    Decided,
    #[error("the passkey check does not belong to this request or its details changed")]
    Ceremony,
    #[error("passkey: {0}")]
    Passkey(#[from] crate::humans::passkeys::PasskeyError),
    #[error("store: {0}")]
    Store(String),
    #[error("{0}")]
    Invalid(&'static str),
}

fn store_err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::ServerError(e.to_string().into())
}

/// Checks `authorization_details` (RFC 9396 §2): a JSON array of 1..=8 objects of type
/// `mcp_tool_call`, each with `tool`, exactly one of `arguments` or `arguments_digest`, and
/// an optional `reason`; at most 16 KB and 8 levels deep. Returns it and its tools.
pub fn parse_details(raw: &str) -> Result<(Value, Vec<String>), OAuthError> {
    let bad =
        |why: &str| OAuthError::InvalidRequest(format!("authorization_details: {why}").into());
    if raw.len() > MAX_DETAILS_BYTES {
        return Err(bad("larger than 16 KB"));
    }
    // Depth first, on the raw text, so a deeply nested document never reaches the parser's
    // recursion (serde_json stops at 128 anyway).
    let mut depth = 0usize;
    let mut in_str = false;
    let mut esc = false;
    for b in raw.bytes() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DETAILS_DEPTH {
                    return Err(bad("nested too deeply"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    let v: Value = serde_json::from_str(raw).map_err(|_| bad("not JSON"))?;
    let list = v.as_array().ok_or_else(|| bad("must be a JSON array"))?;
    if list.is_empty() || list.len() > MAX_DETAILS {
        return Err(bad("must hold 1 to 8 objects"));
    }
    let mut tools = Vec::new();
    for d in list {
        let o = d
            .as_object()
            .ok_or_else(|| bad("each entry must be an object"))?;
        if let Some(k) = o.keys().find(|k| {
            !matches!(
                k.as_str(),
                "type" | "tool" | "arguments" | "arguments_digest" | "reason"
            )
        }) {
            return Err(OAuthError::InvalidRequest(
                format!("authorization_details: unknown member {k:?}").into(),
            ));
        }
        if o.get("type").and_then(Value::as_str) != Some(DETAIL_TYPE) {
            return Err(bad("type must be mcp_tool_call"));
        }
        let tool = o
            .get("tool")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 128)
            .ok_or_else(|| bad("tool must be a tool name"))?;
        match (o.get("arguments"), o.get("arguments_digest")) {
            (Some(Value::Object(_)), None) => {}
            (None, Some(Value::String(s))) if !s.is_empty() && s.len() <= 256 => {}
            _ => {
                return Err(bad(
                    "each entry needs either arguments (an object) or arguments_digest (a string)",
                ));
            }
        }
        if let Some(r) = o.get("reason")
            && r.as_str().is_none_or(|r| r.chars().count() > 1000)
        {
            return Err(bad("reason must be a string of at most 1000 characters"));
        }
        tools.push(tool.to_string());
    }
    Ok((v, tools))
}

/// The digest an approval's passkey ceremony is bound to: everything the approver sees and
/// the token will carry.
pub fn digest(r: &row::Model) -> String {
    let mut s = String::new();
    for part in [
        r.id.as_str(),
        r.agent_id.as_str(),
        r.resource.as_str(),
        r.scope.as_str(),
        r.authorization_details.as_str(),
        r.binding_message.as_deref().unwrap_or(""),
        r.approver_id.as_deref().unwrap_or(""),
    ] {
        s.push_str(&part.len().to_string());
        s.push(':');
        s.push_str(part);
    }
    crate::secrets::hex(&crate::secrets::hash(&s))
}

/// Whether `human` may decide `r`: its designated approver, or an admin; anyone with the
/// approver role when nobody is designated.
pub fn may_decide(human: &Human, r: &row::Model) -> bool {
    if human.has_role(Role::Admin) {
        return true;
    }
    match &r.approver_id {
        Some(id) => *id == human.id && human.has_role(Role::Approver),
        None => human.has_role(Role::Approver),
    }
}

fn may_approve(h: &Human) -> bool {
    h.has_role(Role::Approver) || h.has_role(Role::Admin)
}

/// Ceremony state of an approve/deny passkey check.
#[derive(Serialize, Deserialize)]
struct DecisionCeremony {
    auth: webauthn_rs::prelude::PasskeyAuthentication,
    request: String,
    digest: String,
}

impl App {
    /// `POST /bc-authorize` (CIBA §7.1, poll mode).
    pub async fn bc_authorize(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<BcResponse, OAuthError> {
        let p = Params::parse(body)?;
        let now = self.clock.now();
        let registry = self.registry();
        let client =
            client_auth::authenticate(&self.auth_env(&registry, now, peer), authorization, &p)
                .await?;
        let Client::Agent(agent) = client else {
            return Err(OAuthError::UnauthorizedClient(
                "MCP server credentials cannot ask for approvals".into(),
            ));
        };
        if agent.status != crate::agents::AgentStatus::Active {
            return Err(OAuthError::UnauthorizedClient(
                "the agent is suspended".into(),
            ));
        }
        for one in [
            "scope",
            "authorization_details",
            "binding_message",
            "requested_expiry",
            "login_hint",
            "acr_values",
        ] {
            if p.all(one).len() > 1 {
                return Err(OAuthError::InvalidRequest(
                    format!("{one} is repeated").into(),
                ));
            }
        }
        if p.get("login_hint_token").is_some() || p.get("id_token_hint").is_some() {
            return Err(OAuthError::InvalidRequest(
                "only login_hint is supported to name the approver".into(),
            ));
        }
        if p.get("user_code").is_some() {
            return Err(OAuthError::InvalidRequest(
                "user_code is not supported".into(),
            ));
        }
        let raw = p.require("authorization_details")?;
        let (details, tools) = parse_details(raw)?;
        let server =
            crate::oauth::grants::client_credentials::resolve_resource(&agent, &p, &registry)?;
        for t in &tools {
            if !server.tools.contains_key(t) {
                return Err(OAuthError::InvalidRequest(
                    format!("authorization_details: {t:?} is not a tool of that resource").into(),
                ));
            }
        }
        // The scope is the tools the details name: given, it must say exactly that.
        let mut wanted: Vec<String> = tools.iter().map(|t| format!("tools:{t}")).collect();
        wanted.sort();
        wanted.dedup();
        if let Some(s) = p.get("scope") {
            let mut given: Vec<String> = s
                .split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            given.sort();
            given.dedup();
            if given != wanted {
                return Err(OAuthError::InvalidScope(
                    "scope must name exactly the tools of authorization_details".into(),
                ));
            }
        }
        let binding_message = p.get("binding_message").map(str::to_string);
        if let Some(m) = &binding_message
            && (m.is_empty()
                || m.chars().count() > MAX_BINDING_MESSAGE
                || m.chars().any(char::is_control))
        {
            return Err(OAuthError::InvalidRequest(
                "binding_message must be 1 to 200 characters without control characters".into(),
            ));
        }
        let acr_values = p.get("acr_values").map(str::to_string);
        if let Some(a) = &acr_values
            && !a.split(' ').any(|v| v == ACR)
        {
            return Err(OAuthError::InvalidRequest(
                format!("acr_values: only {ACR} is supported").into(),
            ));
        }
        let expiry = match p.get("requested_expiry") {
            None => self.config.approval_default_expiry_secs,
            Some(e) => e
                .parse::<i64>()
                .ok()
                .filter(|e| (1..=self.config.approval_max_expiry_secs).contains(e))
                .ok_or_else(|| {
                    OAuthError::InvalidRequest(
                        "requested_expiry must be a positive number of seconds within the limit"
                            .into(),
                    )
                })?,
        };
        // The approver.
        let approver = match p.get("login_hint") {
            Some(hint) => {
                let h = crate::humans::find_by_email(&self.store, hint)
                    .await
                    .map_err(store_err)?
                    .filter(crate::humans::HumanRecord::active)
                    .map(|r| r.human)
                    .filter(may_approve)
                    .ok_or_else(|| {
                        OAuthError::UnknownUserId("login_hint names nobody who may approve".into())
                    })?;
                Some(h)
            }
            None => crate::humans::find_by_email(&self.store, &agent.owner)
                .await
                .ok()
                .flatten()
                .filter(crate::humans::HumanRecord::active)
                .map(|r| r.human)
                .filter(may_approve),
        };
        // Policy: each tool must be permitted with a human's approval.
        let mut facts =
            Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), Some(peer));
        facts.approved = true;
        facts.approver = approver.as_ref().map(crate::humans::Human::policy_facts);
        let engine = &registry.policy;
        let features = engine.features(&facts);
        let mut reasons = Vec::new();
        let scope = wanted.join(" ");
        let granted = scopes::narrow(Some(&scope), &agent.scope_ceiling, &server, |tool| {
            let d = engine.decide(&agent, &server, tool, &features, &facts);
            reasons.extend(d.reasons.iter().cloned());
            d.decision == Outcome::Permit
        })?;
        if granted.len() != wanted.len() {
            return Err(OAuthError::AccessDenied(
                "policy does not permit this call even with a human's approval".into(),
            ));
        }
        reasons.sort();
        reasons.dedup();
        let auth_req_id = crate::secrets::generate(AUTH_REQ_PREFIX);
        let id = crate::secrets::random_id("apr_");
        let m = row::ActiveModel {
            id: Set(id.clone()),
            auth_req_hash: Set(crate::secrets::hex(&crate::secrets::hash(&auth_req_id))),
            agent_id: Set(agent.id.clone()),
            resource: Set(server.resource.clone()),
            scope: Set(scope),
            authorization_details: Set(details.to_string()),
            binding_message: Set(binding_message),
            acr_values: Set(acr_values),
            approver_id: Set(approver.as_ref().map(|h| h.id.clone())),
            status: Set(Status::Pending.as_str().into()),
            deny_reason: Set(None),
            decided_by: Set(None),
            policy_reasons: Set(reasons.join(" ")),
            created_at: Set(now),
            expires_at: Set(now + expiry),
            decided_at: Set(None),
            last_polled_at: Set(None),
            poll_interval: Set(self.config.approval_poll_interval_secs),
        };
        // The request and its `approval.requested` event commit together, or neither.
        let actor = Actor::new(ActorKind::Agent, &agent.id);
        let mut ev = Event::new(kinds::APPROVAL_REQUESTED, now, actor.clone())
            .subject(&id)
            .agent(&agent.id)
            .server(&server.id);
        ev.tool = tools.first().cloned();
        ev.reasons = reasons;
        ev.source = Some(peer);
        let tx = self.store.db.begin().await.map_err(store_err)?;
        let m = m.insert(&tx).await.map_err(store_err)?;
        self.audit
            .trail(actor)
            .record(&tx, now, ev)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        self.approvals.changed();
        Ok(BcResponse {
            auth_req_id,
            expires_in: expiry,
            interval: self.config.approval_poll_interval_secs,
            request: m,
        })
    }

    /// One request by its public id.
    pub async fn approval(&self, id: &str) -> Result<Option<row::Model>, DecideError> {
        row::Entity::find_by_id(id.to_string())
            .one(&self.store.db)
            .await
            .map_err(|e| DecideError::Store(e.to_string()))
    }

    /// The pending, unexpired requests `human` may decide, newest first.
    pub async fn pending_approvals(&self, human: &Human) -> Result<Vec<row::Model>, DecideError> {
        let now = self.clock.now();
        let rows = row::Entity::find()
            .filter(row::Column::Status.eq(Status::Pending.as_str()))
            .filter(row::Column::ExpiresAt.gt(now))
            .order_by_desc(row::Column::CreatedAt)
            .all(&self.store.db)
            .await
            .map_err(|e| DecideError::Store(e.to_string()))?;
        Ok(rows.into_iter().filter(|r| may_decide(human, r)).collect())
    }

    fn decidable(&self, human: &Human, r: &row::Model) -> Result<(), DecideError> {
        if !may_decide(human, r) {
            return Err(DecideError::NotYours);
        }
        match Status::parse(&r.status) {
            Some(Status::Pending) if r.expires_at > self.clock.now() => Ok(()),
            Some(Status::Pending | Status::Expired) => Err(DecideError::Expired),
            _ => Err(DecideError::Decided),
        }
    }

    /// Notes that `human` opened request `id` (audit `approval.viewed`).
    pub async fn approval_viewed(&self, human: &Human, r: &row::Model) {
        let ev = Event::new(
            kinds::APPROVAL_VIEWED,
            self.clock.now(),
            Actor::new(ActorKind::Human, &human.id),
        )
        .subject(&r.id)
        .agent(&r.agent_id);
        if self.audit.record(ev).await.is_err() {
            tracing::warn!(request = %r.id, "audit unavailable for approval.viewed");
        }
    }

    /// Starts the passkey check for a decision on request `id` by `human`: returns the
    /// ceremony handle and the WebAuthn options.
    pub async fn start_decision(
        &self,
        human: &Human,
        id: &str,
    ) -> Result<(String, webauthn_rs::prelude::RequestChallengeResponse), DecideError> {
        let r = self.approval(id).await?.ok_or(DecideError::NotFound)?;
        self.decidable(human, &r)?;
        let (rcr, auth) = crate::humans::passkeys::start_assertion(self, &human.id).await?;
        let state = DecisionCeremony {
            auth,
            request: r.id.clone(),
            digest: digest(&r),
        };
        let handle = crate::humans::passkeys::put_ceremony(
            &self.store,
            self.clock.now(),
            "approval_decision",
            Some(&human.id),
            &state,
        )
        .await?;
        Ok((handle, rcr))
    }

    /// Finishes a decision: the assertion must answer a ceremony started by `human` for this
    /// very request and details, with user verification. `approve` false denies, with an
    /// optional reason the agent receives.
    pub async fn finish_decision(
        &self,
        human: &Human,
        id: &str,
        ceremony: &str,
        credential: &webauthn_rs::prelude::PublicKeyCredential,
        approve: bool,
        reason: Option<&str>,
    ) -> Result<Status, DecideError> {
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        if reason.is_some_and(|r| r.chars().count() > 500 || r.chars().any(char::is_control)) {
            return Err(DecideError::Invalid(
                "the reason must be at most 500 characters without control characters",
            ));
        }
        let now = self.clock.now();
        let Some((Some(who), state)) = crate::humans::passkeys::take_ceremony::<DecisionCeremony>(
            &self.store,
            now,
            "approval_decision",
            ceremony,
        )
        .await?
        else {
            return Err(DecideError::Ceremony);
        };
        let r = self.approval(id).await?.ok_or(DecideError::NotFound)?;
        if who != human.id
            || state.request != r.id
            || !crate::secrets::hashes_equal(
                &crate::secrets::hash(&state.digest),
                &crate::secrets::hash(&digest(&r)),
            )
        {
            return Err(DecideError::Ceremony);
        }
        self.decidable(human, &r)?;
        let signer =
            crate::humans::passkeys::finish_assertion(self, &human.id, &state.auth, credential)
                .await?;
        self.decidable(&signer, &r)?;
        let status = if approve {
            Status::Approved
        } else {
            Status::Denied
        };
        let tx = self
            .store
            .begin()
            .await
            .map_err(|e| DecideError::Store(e.to_string()))?;
        let done = row::Entity::update_many()
            .col_expr(row::Column::Status, Expr::value(status.as_str()))
            .col_expr(row::Column::DecidedBy, Expr::value(signer.id.clone()))
            .col_expr(row::Column::DecidedAt, Expr::value(now))
            .col_expr(
                row::Column::DenyReason,
                Expr::value(reason.map(str::to_string)),
            )
            .filter(row::Column::Id.eq(&r.id))
            .filter(row::Column::Status.eq(Status::Pending.as_str()))
            .filter(row::Column::ExpiresAt.gt(now))
            .exec(&tx)
            .await
            .map_err(|e| DecideError::Store(e.to_string()))?;
        if done.rows_affected != 1 {
            return Err(DecideError::Decided);
        }
        let mut ev = Event::new(
            if approve {
                kinds::APPROVAL_APPROVED
            } else {
                kinds::APPROVAL_DENIED
            },
            now,
            Actor::new(ActorKind::Human, &signer.id),
        )
        .subject(&r.id)
        .agent(&r.agent_id);
        ev.details
            .push(("approver", crate::audit::Detail::Str(signer.email.clone())));
        self.audit
            .trail(Actor::new(ActorKind::Human, &signer.id))
            .record(&tx, now, ev)
            .await
            .map_err(|e| DecideError::Store(e.to_string()))?;
        tx.commit()
            .await
            .map_err(|e| DecideError::Store(e.to_string()))?;
        self.approvals.changed();
        Ok(status)
    }

    /// Marks pending requests past their expiry as expired and deletes finished ones older
    /// than the retention. Returns (expired, deleted).
    pub async fn sweep_approvals(&self) -> Result<(u64, u64), DecideError> {
        let now = self.clock.now();
        let e = |e: sea_orm::DbErr| DecideError::Store(e.to_string());
        let expired = row::Entity::update_many()
            .col_expr(row::Column::Status, Expr::value(Status::Expired.as_str()))
            .filter(row::Column::Status.eq(Status::Pending.as_str()))
            .filter(row::Column::ExpiresAt.lte(now))
            .exec(&self.store.db)
            .await
            .map_err(e)?
            .rows_affected;
        let deleted = row::Entity::delete_many()
            .filter(row::Column::Status.ne(Status::Pending.as_str()))
            .filter(row::Column::ExpiresAt.lte(now - self.config.approval_retention_secs))
            .exec(&self.store.db)
            .await
            .map_err(e)?
            .rows_affected;
        if expired > 0 {
            self.approvals.changed();
        }
        Ok((expired, deleted))
    }
}

/// Live state: a change signal for the approvers' pages, and the webhook client.
pub struct Approvals {
    changes: tokio::sync::broadcast::Sender<()>,
    webhook: Option<(reqwest::Client, String)>,
    /// True once the server stops: open event streams end, so graceful shutdown is not held.
    closing: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Approvals {
    pub fn new(config: &crate::config::Config) -> Self {
        let (changes, _) = tokio::sync::broadcast::channel(64);
        let webhook = config.approval_webhook_url.clone().and_then(|url| {
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .ok()
                .map(|c| (c, url))
        });
        let (closing, _) = tokio::sync::watch::channel(false);
        Self {
            changes,
            webhook,
            closing: std::sync::Arc::new(closing),
        }
    }

    /// Ends the open event streams once `stop` turns true (the server is stopping).
    pub fn close_on(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let closing = self.closing.clone();
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            closing.send_replace(true);
        });
    }

    /// Resolves when the server stops.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Something changed: open pages reload their list.
    pub fn changed(&self) {
        let _ = self.changes.send(());
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<()> {
        self.changes.subscribe()
    }
}

/// Posts the webhook for a new request in the background (3 tries, backing off), then
/// records `approval.notified`; never blocks the request.
pub fn notify(app: std::sync::Arc<App>, r: row::Model) {
    let Some((client, url)) = app.approvals.webhook.clone() else {
        return;
    };
    tokio::spawn(async move {
        let registry = app.registry();
        let agent_name = registry
            .agent(&r.agent_id)
            .map_or_else(|| r.agent_id.clone(), |a| a.name.clone());
        let link = format!("{}/approvals/{}", app.issuer, r.id);
        let text = format!(
            "Approval needed: agent {agent_name} asks to call {} on {}. {}Review: {link}",
            r.scope,
            r.resource,
            r.binding_message
                .as_deref()
                .map(|m| format!("\u{201c}{m}\u{201d} "))
                .unwrap_or_default(),
        );
        let body = serde_json::json!({
            "text": text,
            "approval_request": r.id,
            "agent": r.agent_id,
            "resource": r.resource,
            "scope": r.scope,
            "expires_at": r.expires_at,
            "url": link,
        });
        let mut delay = std::time::Duration::from_millis(500);
        let mut outcome = "failed";
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            match client.post(&url).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => {
                    outcome = "delivered";
                    break;
                }
                Ok(resp) => tracing::warn!(status = %resp.status(), "approval webhook refused"),
                Err(e) => tracing::warn!(error = %e, "approval webhook unreachable"),
            }
        }
        let mut ev = Event::new(kinds::APPROVAL_NOTIFIED, app.clock.now(), Actor::system())
            .subject(r.id.clone())
            .agent(r.agent_id.clone());
        ev.details
            .push(("webhook", crate::audit::Detail::Str(outcome.into())));
        if app.audit.record(ev).await.is_err() {
            tracing::warn!(request = %r.id, "audit unavailable for approval.notified");
        }
    });
}

/// Every 30 s: expires pending requests past their time and deletes old finished ones.
pub fn spawn_sweeper(app: &std::sync::Arc<App>) -> tokio::task::JoinHandle<()> {
    let weak = std::sync::Arc::downgrade(app);
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(30);
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let Some(app) = weak.upgrade() else { break };
            if let Err(e) = app.sweep_approvals().await {
                tracing::warn!(error = %e, "sweeping approval requests failed");
            }
        }
    })
}
