//! `grant_type=client_credentials` (OAuth 2.1 §4.2, MCP client-credentials extension), with
//! RFC 8707 `resource` and per-server tool scopes.
use crate::agents::{Agent, AgentStatus};
use crate::oauth::{OAuthError, Params, scopes};
use crate::policy::{Facts, Outcome};
use crate::registry::Registry;
use crate::resources::{McpServer, Tool, canonical_resource};
use crate::tokens::AccessClaims;
use std::sync::Arc;

/// Picks the one MCP server the token is for (RFC 8707 §2): the `resource` given, or the
/// agent's only allowed resource when none is given.
pub fn resolve_resource(
    agent: &Agent,
    p: &Params,
    registry: &Registry,
) -> Result<Arc<McpServer>, OAuthError> {
    let given = p.all("resource");
    let raw = match given.as_slice() {
        [] => match agent.allowed_resources.as_slice() {
            [only] => only.as_str(),
            _ => {
                return Err(OAuthError::InvalidTarget(
                    "resource is required: this agent may reach more than one MCP server".into(),
                ));
            }
        },
        [one] => one,
        [first, rest @ ..] => {
            let canon =
                canonical_resource(first).map_err(|e| OAuthError::InvalidTarget(e.into()))?;
            if rest
                .iter()
                .any(|r| canonical_resource(r).ok().as_deref() != Some(&canon))
            {
                return Err(OAuthError::InvalidTarget(
                    "one resource per token: request a token for each MCP server".into(),
                ));
            }
            first
        }
    };
    let canon = canonical_resource(raw).map_err(|e| OAuthError::InvalidTarget(e.into()))?;
    let server = registry
        .server_by_resource(&canon)
        .ok_or_else(|| OAuthError::InvalidTarget("unknown resource".into()))?;
    if !agent.allowed_resources.contains(&canon) {
        return Err(OAuthError::InvalidTarget(
            "this agent is not allowed to reach that resource".into(),
        ));
    }
    if server.environment != agent.environment {
        return Err(OAuthError::InvalidTarget(
            "the resource is in another environment than the agent".into(),
        ));
    }
    Ok(server.clone())
}

/// The scopes `agent` may have on `server`: those requested (or its ceiling), within its
/// ceiling, that `also` allows, decided tool by tool by policy (`facts` is the request's
/// context; a class scope only partly permitted is narrowed to its permitted tools). Returns
/// the permitted scopes (possibly none) and those policy would permit with a human's
/// approval; the ids of the policies behind the decisions are added to `reasons` (for the
/// audit log, never the wire).
pub fn narrow_by_policy(
    agent: &Agent,
    server: &McpServer,
    requested: Option<&str>,
    registry: &Registry,
    facts: &Facts,
    also: impl Fn(&Tool) -> bool,
    reasons: &mut Vec<String>,
) -> Result<(Vec<String>, Vec<String>), OAuthError> {
    let engine = &registry.policy;
    let features = engine.features(facts);
    let mut step_up = Vec::new();
    let granted = scopes::narrow(requested, &agent.scope_ceiling, server, |tool| {
        if !also(tool) {
            return false;
        }
        let d = engine.decide(agent, server, tool, &features, facts);
        for r in &d.reasons {
            if !reasons.contains(r) {
                reasons.push(r.clone());
            }
        }
        match d.decision {
            Outcome::Permit => true,
            Outcome::StepUp => {
                step_up.push(format!("tools:{}", tool.name));
                false
            }
            Outcome::Deny => false,
        }
    })?;
    Ok((granted, step_up))
}

/// A token to issue, and the scopes that policy would grant with a human's approval.
#[derive(Debug)]
pub struct Grant {
    pub claims: AccessClaims,
    pub step_up: Vec<String>,
}

/// The claims of the token to issue, or why not. Within the agent's scope ceiling, the policy
/// engine is asked tool by tool (`facts` is the request's context); the ids of the policies
/// that determined the decisions are added to `reasons` (for the audit log, never the wire).
pub fn decide(
    agent: &Agent,
    p: &Params,
    registry: &Registry,
    issuer: &str,
    default_ttl: i64,
    facts: &Facts,
    reasons: &mut Vec<String>,
) -> Result<Grant, OAuthError> {
    let now = facts.now;
    if agent.status != AgentStatus::Active {
        return Err(OAuthError::UnauthorizedClient(
            "the agent is suspended".into(),
        ));
    }
    let server = resolve_resource(agent, p, registry)?;
    let (granted, step_up) = narrow_by_policy(
        agent,
        &server,
        p.get("scope"),
        registry,
        facts,
        |_| true,
        reasons,
    )?;
    if granted.is_empty() {
        // The wire names no policy, only what the agent could do about it.
        return Err(OAuthError::InvalidScope(if step_up.is_empty() {
            "none of the requested scopes is permitted for this agent on this resource".into()
        } else {
            format!(
                "the requested scopes need a human's approval: {}",
                step_up.join(" ")
            )
            .into()
        }));
    }
    let ttl = agent
        .token_ttl_cap
        .map_or(default_ttl, |cap| cap.min(default_ttl));
    let claims = AccessClaims {
        iss: issuer.to_string(),
        sub: agent.id.clone(),
        aud: server.resource.clone(),
        client_id: agent.id.clone(),
        scope: granted.join(" "),
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: crate::secrets::hex(&crate::secrets::random_bytes::<16>()),
        sid: None,
        env: Some(agent.environment.clone()),
        act: None,
        approval: None,
        person: None,
    };
    Ok(Grant { claims, step_up })
}
