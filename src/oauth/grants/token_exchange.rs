//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an agent acting
//! for a subject (a human from a trusted identity provider, or the subject of one of our own
//! tokens), and an MCP server exchanging a token it received for one to a downstream server.
//!
//! Delegation or not is decided by who authenticated, never by which parameters are present:
//! the authenticated client is always the actor. An agent becomes `act.sub` above any chain
//! the subject token already carries; an MCP server (authenticated with its introspection
//! credentials) may only exchange a token whose audience is itself, and is added to the chain.
//! Impersonation (a token for the human with no `act` naming the agent) is issued only where
//! policy permits `Action::"impersonate"` for that agent on every tool of the token; no
//! default policy does. `may_act` and every other check apply either way.
//!
//! Revocation: a token derived from one of ours keeps the subject token's `sid`, so revoking
//! that session kills it; introspection also refuses it when any agent in its chain (subject,
//! client or actor) has been killed or suspended since it was issued ([`chain_revoked`]).
use super::client_credentials::narrow_by_policy;
use crate::agents::{Agent, AgentStatus};
use crate::app::App;
use crate::oauth::client_auth::{self, Client};
use crate::oauth::trust::TrustKind;
use crate::oauth::{OAuthError, Params, TokenResponse};
use crate::policy::{Facts, Outcome};
use crate::registry::Registry;
use crate::resources::{McpServer, Tool, canonical_resource};
use crate::sessions::Replica;
use crate::tokens::{AccessClaims, Act};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type identifiers.
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
pub const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Subject token types accepted.
pub const SUBJECT_TOKEN_TYPES: &[&str] = &[ACCESS_TOKEN, JWT, ID_TOKEN];
/// Token types that can be requested (and are issued).
pub const REQUESTED_TOKEN_TYPES: &[&str] = &[ACCESS_TOKEN];
/// Largest `act` claim accepted in a subject token, serialized.
pub const MAX_ACT_BYTES: usize = 2048;

/// Whether any agent named by the token (its subject, its client, each actor) was killed or
/// suspended since the token was issued. `Replica::covers` already checks the client.
pub fn chain_revoked(c: &AccessClaims, registry: &Registry, replica: &Replica) -> bool {
    let Some(act) = &c.act else {
        return false;
    };
    std::iter::once(c.sub.as_str())
        .chain(act.subjects())
        .any(|id| {
            registry
                .agent(id)
                .is_some_and(|a| a.status != AgentStatus::Active)
                || replica.agent_cutoff(id).is_some_and(|cut| c.iat <= cut)
        })
}

/// Whether `scope` (a space-separated scope string) covers `tool`: by name or by class.
pub fn scope_allows(scope: &str, tool: &Tool) -> bool {
    scope.split(' ').any(|s| {
        s.strip_prefix("tools:")
            .is_some_and(|t| t == tool.name || t == tool.class.as_str())
    })
}

/// Reads an `act` claim from an external token, refusing one that is too large or too deep.
pub fn parse_act(v: &Value, max_depth: usize) -> Result<Act, OAuthError> {
    let bad = |why: &'static str| OAuthError::InvalidRequest(why.into());
    if serde_json::to_string(v).map_or(usize::MAX, |s| s.len()) > MAX_ACT_BYTES {
        return Err(bad("the subject token's act claim is too large"));
    }
    let mut depth = 0;
    let mut cur = Some(v);
    while let Some(a) = cur {
        depth += 1;
        if depth > max_depth {
            return Err(bad("the subject token's delegation chain is too deep"));
        }
        if !a.is_object() || a["sub"].as_str().is_none_or(str::is_empty) {
            return Err(bad("the subject token's act claim is malformed"));
        }
        cur = a.get("act");
    }
    serde_json::from_value(v.clone()).map_err(|_| bad("the subject token's act claim is malformed"))
}

/// RFC 8693 §4.4: a `may_act` claim names who may act for the subject; the authenticated
/// agent must be that party.
fn check_may_act(m: &Value, agent: &str, issuer: &str) -> Result<(), OAuthError> {
    let ok = m["sub"].as_str() == Some(agent) && m["iss"].as_str().is_none_or(|i| i == issuer);
    if ok {
        Ok(())
    } else {
        Err(OAuthError::InvalidRequest(
            "the subject token's may_act does not name this client".into(),
        ))
    }
}

/// The one MCP server asked for: `resource` (RFC 8707) and/or `audience` (RFC 8693, taken as
/// a resource URI), all naming the same server.
fn resolve(agent: &Agent, p: &Params, registry: &Registry) -> Result<Arc<McpServer>, OAuthError> {
    let audiences = p.all("audience");
    if audiences.is_empty() {
        return super::client_credentials::resolve_resource(agent, p, registry);
    }
    let mut named = Vec::new();
    for r in p.all("resource").into_iter().chain(audiences) {
        named.push(canonical_resource(r).map_err(|e| OAuthError::InvalidTarget(e.into()))?);
    }
    named.dedup();
    if named.len() != 1 {
        return Err(OAuthError::InvalidTarget(
            "resource and audience must name one MCP server".into(),
        ));
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("resource", &named[0])
        .finish();
    super::client_credentials::resolve_resource(agent, &Params::parse(body.as_bytes())?, registry)
}

/// Scopes `agent` may have on `server` per policy (with the facts' delegating human), within
/// its ceiling, restricted further by `also`; see [`narrow_by_policy`]. Nothing left is
/// `invalid_scope`.
pub(crate) fn policy_scopes(
    agent: &Agent,
    server: &McpServer,
    requested: Option<&str>,
    registry: &Registry,
    facts: &Facts,
    also: impl Fn(&Tool) -> bool,
    reasons: &mut Vec<String>,
) -> Result<(Vec<String>, Vec<String>), OAuthError> {
    let (granted, step_up) =
        narrow_by_policy(agent, server, requested, registry, facts, also, reasons)?;
    if granted.is_empty() {
        return Err(OAuthError::InvalidScope(
            "none of the requested scopes is permitted for this delegation on this resource".into(),
        ));
    }
    Ok((granted, step_up))
}

/// Which session the issued token belongs to.
pub(crate) enum SessionOf {
    /// The subject token's session (a token derived from one of ours).
    Kept(Option<String>),
    /// The agent's current session.
    Agent(Arc<Agent>),
}

/// What the audit event of a delegated grant should say.
fn note(seen: &mut crate::audit::Seen, key: &'static str, value: impl Into<String>) {
    let mut v: String = value.into();
    v.truncate(256);
    seen.delegation.push((key, v));
}

impl App {
    /// Signs and returns a delegated token (token exchange, jwt-bearer): no token in the second
    /// of a kill of any agent it names, and the session as chosen.
    #[expect(
        clippy::too_many_arguments,
        reason = "the token and how it was granted"
    )]
    pub(crate) async fn issue_delegated(
        &self,
        registry: &Registry,
        mut claims: AccessClaims,
        session: SessionOf,
        step_up: Vec<String>,
        grant_type: &'static str,
        issued_token_type: Option<&'static str>,
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = claims.iat;
        let mut named = vec![claims.client_id.as_str(), claims.sub.as_str()];
        if let Some(a) = &claims.act {
            named.extend(a.subjects());
        }
        if named
            .iter()
            .any(|id| self.replica.agent_cutoff(id).is_some_and(|cut| cut >= now))
        {
            return Err(OAuthError::TemporarilyUnavailable(
                "an agent of this delegation was revoked this second; retry shortly".into(),
            ));
        }
        match session {
            SessionOf::Kept(sid) => {
                if sid
                    .as_deref()
                    .is_some_and(|s| self.replica.session_revoked(s))
                {
                    return Err(OAuthError::InvalidRequest(
                        "the subject token's session was revoked".into(),
                    ));
                }
                claims.sid = sid;
            }
            SessionOf::Agent(agent) => {
                let s = self.session_for(&agent, now).await.map_err(|_| {
                    OAuthError::TemporarilyUnavailable("the session store is unreachable".into())
                })?;
                claims.sid = Some(s.rec.sid.clone());
                claims.exp = claims.exp.min(s.rec.expires_at);
            }
        }
        if claims.exp <= now {
            return Err(OAuthError::InvalidRequest(
                "the subject token expires now".into(),
            ));
        }
        let key = registry
            .keys
            .active(now)
            .ok_or_else(|| OAuthError::TemporarilyUnavailable("no active signing key".into()))?;
        let token = key
            .sign_jwt(&claims)
            .ok_or_else(|| OAuthError::ServerError("signing failed".into()))?;
        if let Some(act) = &claims.act {
            note(seen, "act", act.subjects().join(" <- "));
        }
        note(seen, "sub", claims.sub.clone());
        seen.issued(&claims, registry.server_by_resource(&claims.aud).cloned());
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: claims.exp - now,
            scope: claims.scope,
            step_up_scope: (!step_up.is_empty()).then(|| step_up.join(" ")),
            issued_token_type,
            refresh_token: None,
            grant_type,
        })
    }

    /// One of our access tokens as a subject or actor token: valid, not revoked, and issued to
    /// an active agent. Anything else is `invalid_request` (RFC 8693 §2.2.2).
    fn our_token(
        &self,
        token: &str,
        registry: &Registry,
        now: i64,
        what: &'static str,
    ) -> Result<Arc<AccessClaims>, OAuthError> {
        let bad = |why: String| OAuthError::InvalidRequest(why.into());
        let c = self
            .verified
            .verify(
                token,
                &registry.keys,
                &self.issuer,
                now,
                self.config.access_token_ttl_secs,
            )
            .map_err(|e| bad(format!("{what} is not a valid access token: {e}")))?;
        let active = registry
            .agent(&c.client_id)
            .is_some_and(|a| a.status == AgentStatus::Active);
        if !active || self.replica.covers(&c) || chain_revoked(&c, registry, &self.replica) {
            return Err(bad(format!("{what} was revoked")));
        }
        Ok(c)
    }

    /// `POST /token` with the token-exchange grant.
    pub(crate) async fn token_exchange(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        p: &Params,
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let registry = self.registry();
        seen.grant_type = Some(GRANT_TYPE.into());
        let client =
            client_auth::authenticate(&self.auth_env(&registry, now, peer), authorization, p)
                .await?;
        match &client {
            Client::Agent(a) => seen.agent = Some(a.clone()),
            Client::Server(s) => seen.caller_server = Some(s.clone()),
        }
        // RFC 8693 §2.1.
        if let Some(t) = p.get("requested_token_type")
            && t != ACCESS_TOKEN
        {
            return Err(OAuthError::InvalidRequest(
                "requested_token_type: only access tokens are issued".into(),
            ));
        }
        match (p.get("actor_token"), p.get("actor_token_type")) {
            (None, Some(_)) => {
                return Err(OAuthError::InvalidRequest(
                    "actor_token_type must not be sent without actor_token".into(),
                ));
            }
            (Some(_), None) => {
                return Err(OAuthError::InvalidRequest(
                    "actor_token_type is required with actor_token".into(),
                ));
            }
            _ => {}
        }
        let subject_token = p.require("subject_token")?;
        let subject_type = p.require("subject_token_type")?;
        note(seen, "subject_token_type", subject_type);
        if !self.backend.healthy() {
            return Err(OAuthError::TemporarilyUnavailable(
                "the revocation store is unreachable".into(),
            ));
        }
        match client {
            Client::Agent(agent) => {
                self.exchange_by_agent(agent, p, subject_token, subject_type, &registry, peer, seen)
                    .await
            }
            Client::Server(server) => {
                self.exchange_by_server(
                    server,
                    p,
                    subject_token,
                    subject_type,
                    &registry,
                    peer,
                    seen,
                )
                .await
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all distinct inputs"
    )]
    async fn exchange_by_agent(
        &self,
        agent: Arc<Agent>,
        p: &Params,
        subject_token: &str,
        subject_type: &str,
        registry: &Registry,
        peer: IpAddr,
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        if agent.status != AgentStatus::Active {
            return Err(OAuthError::UnauthorizedClient(
                "the agent is suspended".into(),
            ));
        }
        let max_depth = self.config.max_delegation_depth;
        // What the subject token says: sub, the human for policy, its chain, its end, and,
        // when it is ours, its scopes and session.
        let (sub, human, prior, exp, ours) = match subject_type {
            ACCESS_TOKEN => {
                let c = self.our_token(subject_token, registry, now, "subject_token")?;
                if c.client_id != agent.id {
                    // Only the agent a token was issued to may exchange it; MCP servers
                    // exchange the tokens they received with their own credentials.
                    return Err(OAuthError::InvalidRequest(
                        "the subject token was not issued to this client".into(),
                    ));
                }
                let human = (c.sub != c.client_id).then(|| (c.sub.clone(), Vec::new()));
                (c.sub.clone(), human, c.act.clone(), c.exp, Some(c))
            }
            JWT | ID_TOKEN => {
                let v = self
                    .trust
                    .verify(
                        &self.remote_jwks,
                        subject_token,
                        TrustKind::SubjectToken,
                        now,
                        self.config.clock_skew_secs,
                    )
                    .await
                    .map_err(|e| {
                        OAuthError::InvalidRequest(format!("subject_token refused: {e}").into())
                    })?;
                note(seen, "subject_issuer", v.issuer.issuer.clone());
                if v.typ.as_deref().is_some_and(|t| {
                    t.eq_ignore_ascii_case(super::jwt_bearer::ID_JAG_TYP)
                        || t.eq_ignore_ascii_case("at+jwt")
                }) {
                    // An ID-JAG is a single-use grant for the jwt-bearer grant, not a subject.
                    return Err(OAuthError::InvalidRequest(
                        "subject_token refused: an ID-JAG or access token is not an identity token"
                            .into(),
                    ));
                }
                let mut accepted = vec![self.issuer.as_str(), self.token_endpoint.as_str()];
                accepted.extend(v.issuer.audiences.iter().map(String::as_str));
                if !v.aud_in(&accepted) {
                    return Err(OAuthError::InvalidRequest(
                        "subject_token refused: its audience is not this server".into(),
                    ));
                }
                if let Some(m) = v.claims.get("may_act") {
                    check_may_act(m, &agent.id, &self.issuer)?;
                }
                let prior = match v.claims.get("act") {
                    Some(a) => Some(parse_act(a, max_depth)?),
                    None => None,
                };
                let (who, roles) = v.human().ok_or_else(|| {
                    OAuthError::InvalidRequest("subject_token names no human".into())
                })?;
                let exp = v.claims["exp"].as_i64().unwrap_or(now);
                (who.clone(), Some((who, roles)), prior, exp, None)
            }
            _ => {
                return Err(OAuthError::InvalidRequest(
                    "subject_token_type is not supported".into(),
                ));
            }
        };
        if let Some(actor) = p.get("actor_token") {
            // The actor is whoever authenticated; an actor token may only confirm it.
            if p.get("actor_token_type") != Some(ACCESS_TOKEN) {
                return Err(OAuthError::InvalidRequest(
                    "actor_token_type is not supported".into(),
                ));
            }
            let a = self.our_token(actor, registry, now, "actor_token")?;
            if a.sub != agent.id || a.client_id != agent.id {
                return Err(OAuthError::InvalidRequest(
                    "actor_token does not identify the authenticated client".into(),
                ));
            }
        }
        // The agent becomes the current actor, unless it already is or is the subject.
        let mut act = if sub == agent.id
            || prior
                .as_ref()
                .is_some_and(|a| a.sub == agent.id && a.iss.is_none())
        {
            prior
        } else {
            Some(Act {
                sub: agent.id.clone(),
                iss: None,
                act: prior.map(Box::new),
            })
        };
        if act.as_ref().is_some_and(|a| a.depth() > max_depth) {
            return Err(OAuthError::InvalidRequest(
                "the delegation chain would be too deep".into(),
            ));
        }
        let mut facts =
            Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), Some(peer));
        facts.delegation = human.map(|(who, roles)| crate::policy::HumanFacts::new(who, roles));
        let server = resolve(&agent, p, registry)?;
        let subject_scope = ours.as_ref().map(|c| c.scope.clone());
        let (granted, step_up) = policy_scopes(
            &agent,
            &server,
            p.get("scope"),
            registry,
            &facts,
            |tool| {
                subject_scope
                    .as_deref()
                    .is_none_or(|s| scope_allows(s, tool))
            },
            &mut seen.policy_reasons,
        )?;
        // Impersonation (no `act` naming the agent) only where policy explicitly permits
        // `Action::"impersonate"` for this agent on every tool of the token.
        let scope = granted.join(" ");
        if facts.delegation.is_some() && act.as_ref().is_some_and(|a| a.sub == agent.id) {
            let engine = &registry.policy;
            let mut tools = server
                .tools
                .values()
                .filter(|t| scope_allows(&scope, t))
                .peekable();
            let permitted = tools.peek().is_some()
                && tools.all(|t| {
                    engine
                        .permits_impersonation(
                            &agent.id,
                            &crate::policy::tool_uid(&server, t),
                            &facts,
                        )
                        .decision
                        == Outcome::Permit
                });
            if permitted {
                act = act.and_then(|a| a.act.map(|prior| *prior));
                note(seen, "impersonation", "permitted by policy");
            }
        }
        let ttl = agent
            .token_ttl_cap
            .map_or(self.config.access_token_ttl_secs, |cap| {
                cap.min(self.config.access_token_ttl_secs)
            });
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub,
            aud: server.resource.clone(),
            client_id: agent.id.clone(),
            scope,
            iat: now,
            nbf: now,
            // Never longer than the subject token.
            exp: (now + ttl).min(exp),
            jti: crate::secrets::hex(&crate::secrets::random_bytes::<16>()),
            sid: None,
            env: Some(agent.environment.clone()),
            act,
            approval: None,
            person: None,
        };
        let session = match &ours {
            Some(c) => SessionOf::Kept(c.sid.clone()),
            None => SessionOf::Agent(agent.clone()),
        };
        self.issue_delegated(
            registry,
            claims,
            session,
            step_up,
            GRANT_TYPE,
            Some(ACCESS_TOKEN),
            seen,
        )
        .await
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all distinct inputs"
    )]
    async fn exchange_by_server(
        &self,
        server: Arc<McpServer>,
        p: &Params,
        subject_token: &str,
        subject_type: &str,
        registry: &Registry,
        peer: IpAddr,
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        if subject_type != ACCESS_TOKEN {
            return Err(OAuthError::InvalidRequest(
                "an MCP server exchanges the access tokens it received".into(),
            ));
        }
        if p.get("actor_token").is_some() {
            return Err(OAuthError::InvalidRequest(
                "the authenticated MCP server is the actor: no actor_token".into(),
            ));
        }
        let c = self.our_token(subject_token, registry, now, "subject_token")?;
        if c.aud != server.resource {
            // No passthrough: a server may only exchange a token issued to it.
            return Err(OAuthError::InvalidRequest(
                "the subject token was issued for another server".into(),
            ));
        }
        let Some(agent) = registry.agent(&c.client_id).cloned() else {
            return Err(OAuthError::InvalidRequest(
                "the subject token's agent is gone".into(),
            ));
        };
        seen.agent = Some(agent.clone());
        let act = Act {
            sub: server.id.clone(),
            iss: None,
            act: c.act.clone().map(Box::new),
        };
        if act.depth() > self.config.max_delegation_depth {
            return Err(OAuthError::InvalidRequest(
                "the delegation chain would be too deep".into(),
            ));
        }
        let mut facts =
            Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), Some(peer));
        facts.delegation =
            (c.sub != c.client_id).then(|| crate::policy::HumanFacts::new(c.sub.clone(), []));
        let target = resolve(&agent, p, registry)?;
        if target.resource == server.resource {
            return Err(OAuthError::InvalidTarget(
                "exchange for a downstream server, not for the caller itself".into(),
            ));
        }
        let (granted, step_up) = policy_scopes(
            &agent,
            &target,
            p.get("scope"),
            registry,
            &facts,
            |tool| scope_allows(&c.scope, tool),
            &mut seen.policy_reasons,
        )?;
        let ttl = agent
            .token_ttl_cap
            .map_or(self.config.access_token_ttl_secs, |cap| {
                cap.min(self.config.access_token_ttl_secs)
            });
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: c.sub.clone(),
            aud: target.resource.clone(),
            // The registered agent the delegation runs from: policy's principal, and what an
            // agent kill revokes. The MCP server that asked is the current actor.
            client_id: c.client_id.clone(),
            scope: granted.join(" "),
            iat: now,
            nbf: now,
            exp: (now + ttl).min(c.exp),
            jti: crate::secrets::hex(&crate::secrets::random_bytes::<16>()),
            sid: None,
            env: c.env.clone(),
            act: Some(act),
            approval: None,
            person: None,
        };
        self.issue_delegated(
            registry,
            claims,
            SessionOf::Kept(c.sid.clone()),
            step_up,
            GRANT_TYPE,
            Some(ACCESS_TOKEN),
            seen,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_limits() {
        let mut v = serde_json::json!({"sub": "a"});
        for i in 0..6 {
            v = serde_json::json!({"sub": format!("s{i}"), "act": v});
        }
        assert!(parse_act(&v, 5).is_err());
        let ok = serde_json::json!({"sub": "x", "act": {"sub": "y"}});
        assert_eq!(parse_act(&ok, 5).unwrap().depth(), 2);
        let big = serde_json::json!({"sub": "x".repeat(4000)});
        assert!(parse_act(&big, 5).is_err());
        assert!(parse_act(&serde_json::json!({"act": {"sub": "y"}}), 5).is_err());
    }
}
