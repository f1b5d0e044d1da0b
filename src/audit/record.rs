//! The events Mandate writes for protocol requests: token issued or refused, introspection,
//! revocation. The protocol core notes what it saw in a [`Seen`]; the functions here turn it
//! into an [`Event`] (owned strings, nothing hashed or serialised on the request thread).
use super::event::{Actor, ActorKind, Decision, Detail, Event, kinds};
use super::{Audit, AuditUnavailable};
use crate::agents::Agent;
use crate::oauth::{OAuthError, Params, TokenResponse};
use crate::resources::McpServer;
use base64::Engine;
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;

/// What the protocol core learnt while handling a request, for its audit event.
#[derive(Debug, Default)]
pub struct Seen {
    /// The authenticated agent.
    pub agent: Option<Arc<Agent>>,
    /// The MCP server: the token's audience (token) or the caller (introspection).
    pub server: Option<Arc<McpServer>>,
    pub jti: Option<String>,
    pub scope: Option<String>,
    pub exp: i64,
    /// From the request, for refusals: the claimed client id, resource and scope asked.
    pub claimed: Option<String>,
    pub resource: Option<String>,
    pub asked_scope: Option<String>,
    pub grant_type: Option<String>,
    /// Ids of the policies that determined the decisions behind the answer.
    pub policy_reasons: Vec<String>,
    /// The MCP server that authenticated (token exchange to a downstream server).
    pub caller_server: Option<Arc<McpServer>>,
    /// Delegation facts for token exchange and jwt-bearer events (subject, actors, assertion
    /// issuer and jti; never a token).
    pub delegation: Vec<(&'static str, String)>,
    /// The OAuth client acting for a person (authorization code and refresh grants).
    pub client: Option<String>,
    /// The person a token was issued for.
    pub human: Option<String>,
}

impl Seen {
    /// Notes the issued token (called by the token endpoint right before answering).
    pub fn issued(&mut self, claims: &crate::tokens::AccessClaims, server: Option<Arc<McpServer>>) {
        self.jti = Some(claims.jti.clone());
        self.scope = Some(claims.scope.clone());
        self.exp = claims.exp;
        self.server = server;
    }

    /// Notes what a refused request asked for (never its credentials).
    pub fn note_request(&mut self, authorization: Option<&str>, body: &[u8]) {
        let p = Params::parse(body).ok();
        let get = |k: &str| p.as_ref().and_then(|p| p.get(k)).map(clip);
        self.claimed = basic_client_id(authorization).or_else(|| get("client_id"));
        self.resource = get("resource");
        self.asked_scope = get("scope");
        self.grant_type = get("grant_type");
    }
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The client id of a Basic Authorization header (RFC 6749 §2.3.1), not its secret.
fn basic_client_id(authorization: Option<&str>) -> Option<String> {
    let (scheme, rest) = authorization?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, _) = text.split_once(':')?;
    let pair = format!("{id}=");
    let (k, _) = url::form_urlencoded::parse(pair.as_bytes()).next()?;
    Some(clip(&k))
}

/// An `X-Request-Id` worth keeping: 1-128 printable ASCII characters.
pub fn request_id(header: Option<&str>) -> Option<String> {
    header
        .filter(|h| !h.is_empty() && h.len() <= 128 && h.bytes().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
}

fn refused(e: &OAuthError, ev: Event) -> Event {
    ev.decision(Decision::Deny)
        .reason(e.code())
        .detail_str("error", e.code())
        .detail_str("reason", e.internal())
}

impl Audit {
    /// Records the outcome of `POST /token` (durable when this returns). An issued token whose
    /// event cannot be written is not handed out (503).
    pub async fn token(
        &self,
        now: i64,
        peer: IpAddr,
        request_id: Option<String>,
        mut seen: Seen,
        result: Result<TokenResponse, OAuthError>,
    ) -> Result<TokenResponse, OAuthError> {
        let actor = match (
            &seen.caller_server,
            &seen.agent,
            &seen.client,
            &seen.claimed,
        ) {
            (Some(s), _, _, _) => Actor::new(ActorKind::Server, s.id.clone()),
            (None, Some(a), _, _) => Actor::new(ActorKind::Agent, a.id.clone()),
            (None, None, Some(c), _) => Actor::new(ActorKind::Client, c.clone()),
            (None, None, None, c) => {
                Actor::new(ActorKind::Anonymous, c.clone().unwrap_or_default())
            }
        };
        let kind = if result.is_ok() {
            kinds::TOKEN_ISSUED
        } else {
            kinds::TOKEN_REFUSED
        };
        let mut ev = Event::new(kind, now, actor)
            .action("issue")
            .source(peer)
            .request_id(request_id);
        ev.agent = seen.agent.as_ref().map(|a| a.id.clone());
        ev.server = seen.server.as_ref().map(|s| s.id.clone());
        for r in std::mem::take(&mut seen.policy_reasons) {
            ev = ev.reason(r);
        }
        for (k, v) in std::mem::take(&mut seen.delegation) {
            ev = ev.detail(k, Detail::Str(v));
        }
        match &result {
            Ok(r) => {
                ev = ev
                    .decision(Decision::Permit)
                    .detail_str("grant_type", r.grant_type);
                if let Some(h) = &seen.human {
                    ev = ev.detail_str("human", h.clone());
                }
                ev.subject = seen.jti;
                if let Some(s) = &seen.server {
                    ev = ev.detail_str("resource", s.resource.clone());
                }
                if let Some(scope) = seen.scope {
                    ev = ev.detail("scope", Detail::Str(scope));
                }
                ev = ev.detail("exp", Detail::Int(seen.exp));
            }
            Err(e) => {
                ev = refused(e, ev);
                if let Some(g) = seen.grant_type.take() {
                    ev = ev.detail("grant_type", Detail::Str(g));
                }
                if let Some(r) = seen.resource {
                    ev = ev.detail("resource", Detail::Str(r));
                }
                if let Some(s) = seen.asked_scope {
                    ev = ev.detail("scope_requested", Detail::Str(s));
                }
            }
        }
        match self.record(ev).await {
            Ok(()) => result,
            Err(AuditUnavailable) => Err(OAuthError::TemporarilyUnavailable(
                "audit log unavailable".into(),
            )),
        }
    }

    /// Records an introspection answer (active or not, asked by which server).
    pub async fn introspection(
        &self,
        now: i64,
        peer: IpAddr,
        request_id: Option<String>,
        seen: Seen,
        token: Option<&str>,
        result: Result<Value, OAuthError>,
    ) -> Result<Value, OAuthError> {
        let actor = match (&seen.server, &seen.claimed) {
            (Some(s), _) => Actor::new(ActorKind::Server, s.id.clone()),
            (None, c) => Actor::new(ActorKind::Anonymous, c.clone().unwrap_or_default()),
        };
        let mut ev = Event::new(kinds::TOKEN_INTROSPECTED, now, actor)
            .action("introspect")
            .source(peer)
            .request_id(request_id);
        ev.server = seen.server.as_ref().map(|s| s.id.clone());
        match &result {
            Ok(v) => {
                let active = v["active"].as_bool().unwrap_or(false);
                ev = ev
                    .decision(if active {
                        Decision::Permit
                    } else {
                        Decision::Deny
                    })
                    .detail("active", Detail::Bool(active));
                if active {
                    ev.subject = v["jti"].as_str().map(str::to_string);
                    ev.agent = v["client_id"].as_str().map(str::to_string);
                } else if let Some(t) = token {
                    ev = ev.detail_str("token_fingerprint", crate::secrets::fingerprint(t));
                }
            }
            Err(e) => ev = refused(e, ev),
        }
        match self.record(ev).await {
            Ok(()) => result,
            Err(AuditUnavailable) => Err(OAuthError::TemporarilyUnavailable(
                "audit log unavailable".into(),
            )),
        }
    }
}

/// The `policy.evaluated` event of one AuthZEN evaluation by MCP server `caller`: who asked
/// about which subject and tool, and the decision with the policies behind it. A token
/// subject is recorded by fingerprint.
pub fn evaluation_event(
    now: i64,
    peer: IpAddr,
    request_id: Option<String>,
    caller: &McpServer,
    e: &crate::policy::authzen::Evaluation,
    answer: &Value,
) -> Event {
    let ctx = &answer["context"];
    let decision = match ctx["decision"].as_str() {
        Some("permit") => Decision::Permit,
        Some("step_up") => Decision::StepUp,
        _ => Decision::Deny,
    };
    let mut ev = Event::new(
        kinds::POLICY_EVALUATED,
        now,
        Actor::new(ActorKind::Server, caller.id.clone()),
    )
    .server(caller.id.clone())
    .action("evaluate")
    .decision(decision)
    .source(peer)
    .request_id(request_id)
    .detail_str("requested_action", e.action.name.clone());
    ev.tool = Some(e.resource.id.chars().take(200).collect());
    if e.subject.kind == "token" {
        ev = ev.subject(format!(
            "token:{}",
            crate::secrets::fingerprint(&e.subject.id)
        ));
    } else {
        let id: String = e.subject.id.chars().take(200).collect();
        ev = ev.subject(id.clone()).agent(id);
    }
    if let Some(list) = ctx["reasons"].as_array() {
        for r in list.iter().filter_map(Value::as_str) {
            ev = ev.reason(r);
        }
    }
    if let Some(r) = ctx["reason"].as_str() {
        ev = ev.reason(r);
    }
    ev
}
