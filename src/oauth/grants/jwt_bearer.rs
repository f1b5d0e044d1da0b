//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1), two profiles,
//! chosen by how the caller authenticated:
//! - with client authentication: an ID-JAG (`typ: oauth-id-jag+jwt`, MCP enterprise-managed
//!   authorization, draft-ietf-oauth-identity-assertion-authz-grant) from a trusted identity
//!   provider, for the human it names;
//! - without: a workload JWT (MCP workload identity federation) from a trusted issuer, mapped
//!   to a registered agent by the issuer's claim rules; no client registration needed.
//!
//! Either way the assertion's `jti` is single use until it expires (scoped by issuer and
//! subject), policy decides the scopes, and a bad assertion is `invalid_grant`.
use super::token_exchange::{SessionOf, policy_scopes, scope_allows};
use crate::agents::AgentStatus;
use crate::app::App;
use crate::oauth::trust::{Trust, TrustKind, Verified};
use crate::oauth::{OAuthError, Params, TokenResponse};
use crate::policy::Facts;
use crate::registry::Registry;
use crate::resources::canonical_resource;
use crate::tokens::AccessClaims;
use std::net::IpAddr;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The JOSE `typ` of an ID-JAG.
pub const ID_JAG_TYP: &str = "oauth-id-jag+jwt";
/// Advertised in `authorization_grant_profiles_supported` (ID-JAG draft §7.2).
pub const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

fn grant_err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::InvalidGrant(format!("assertion refused: {e}").into())
}

/// The assertion's `jti`, required, of sane length.
fn jti<'a>(v: &'a Verified<'_>) -> Result<&'a str, OAuthError> {
    v.str("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| grant_err("no usable jti"))
}

fn note(seen: &mut crate::audit::Seen, key: &'static str, value: &str) {
    seen.delegation
        .push((key, value.chars().take(256).collect()));
}

impl App {
    /// Records the assertion's first use; a second use before it expires is refused.
    async fn first_use(
        &self,
        prefix: &str,
        v: &Verified<'_>,
        jti: &str,
        now: i64,
    ) -> Result<(), OAuthError> {
        let scope = format!(
            "{}\n{}\n{jti}",
            v.issuer.issuer,
            v.str("sub").unwrap_or_default()
        );
        let key = format!(
            "{prefix}:{}",
            crate::secrets::hex(&crate::secrets::hash(&scope))
        );
        let exp = v.claims["exp"].as_i64().unwrap_or(now);
        match self
            .backend
            .first_use(&key, exp + self.config.clock_skew_secs, now)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(grant_err("jti replayed")),
            Err(_) => Err(OAuthError::TemporarilyUnavailable(
                "replay cache unavailable".into(),
            )),
        }
    }

    /// `POST /token` with the jwt-bearer grant.
    pub(crate) async fn jwt_bearer(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        p: &Params,
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let registry = self.registry();
        seen.grant_type = Some(GRANT_TYPE.into());
        let assertion = p.require("assertion")?;
        let client_auth = authorization.is_some_and(|h| !h.trim().is_empty())
            || p.get("client_secret").is_some()
            || p.get("client_assertion").is_some()
            || p.get("client_assertion_type").is_some();
        if client_auth {
            let agent = self
                .authenticate_agent(&registry, now, peer, authorization, p, seen)
                .await?;
            let (iss, typ) = Trust::peek(assertion).map_err(grant_err)?;
            note(seen, "assertion_issuer", &iss);
            if !typ.is_some_and(|t| t.eq_ignore_ascii_case(ID_JAG_TYP)) {
                return Err(grant_err(
                    "an authenticated client's assertion must be an ID-JAG (typ oauth-id-jag+jwt)",
                ));
            }
            self.id_jag(agent, p, assertion, &registry, peer, seen)
                .await
        } else {
            let (iss, _) = Trust::peek(assertion).map_err(grant_err)?;
            note(seen, "assertion_issuer", &iss);
            self.workload(p, assertion, &registry, peer, seen).await
        }
    }

    /// MCP enterprise-managed authorization §5.1 / ID-JAG draft §4.4.1.
    async fn id_jag(
        &self,
        agent: std::sync::Arc<crate::agents::Agent>,
        p: &Params,
        assertion: &str,
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
        if !self.backend.healthy() {
            return Err(OAuthError::TemporarilyUnavailable(
                "the revocation store is unreachable".into(),
            ));
        }
        let v = self
            .trust
            .verify(
                &self.remote_jwks,
                assertion,
                TrustKind::IdJag,
                now,
                self.config.clock_skew_secs,
            )
            .await
            .map_err(grant_err)?;
        if !v
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ID_JAG_TYP))
        {
            return Err(grant_err("typ is not oauth-id-jag+jwt"));
        }
        // aud: our issuer, as a string or a one-element array.
        let aud_ok = match &v.claims["aud"] {
            serde_json::Value::String(a) => *a == self.issuer,
            serde_json::Value::Array(list) => {
                list.len() == 1 && list[0].as_str() == Some(self.issuer.as_str())
            }
            _ => false,
        };
        if !aud_ok {
            return Err(grant_err("aud is not this authorization server"));
        }
        if v.str("client_id") != Some(agent.id.as_str()) {
            return Err(grant_err("client_id is not the authenticated client"));
        }
        if v.claims["iat"].as_i64().is_none() {
            return Err(grant_err("no iat"));
        }
        let jti = jti(&v)?;
        note(seen, "assertion_jti", jti);
        let (human, roles) = v
            .human()
            .ok_or_else(|| grant_err("names no subject the claim mapping accepts"))?;
        // The resource: the ID-JAG's, which must be a registered server, and any `resource`
        // parameter must agree with it.
        let mut rp = Params::default();
        if let Some(r) = v.claims.get("resource") {
            let r = r
                .as_str()
                .and_then(|r| canonical_resource(r).ok())
                .ok_or_else(|| grant_err("resource is not a registered MCP server"))?;
            if registry.server_by_resource(&r).is_none() {
                return Err(grant_err("resource is not a registered MCP server"));
            }
            for asked in p.all("resource") {
                if canonical_resource(asked).ok().as_deref() != Some(r.as_str()) {
                    return Err(grant_err(
                        "the resource parameter differs from the ID-JAG's",
                    ));
                }
            }
            let body: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("resource", &r)
                .finish();
            rp = Params::parse(body.as_bytes())?;
        }
        let resource_params = if v.claims.get("resource").is_some() {
            &rp
        } else {
            p
        };
        let server =
            super::client_credentials::resolve_resource(&agent, resource_params, registry)?;
        let mut facts =
            Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), Some(peer));
        facts.delegation = Some(crate::policy::HumanFacts::new(human.clone(), roles));
        // requested ∩ ID-JAG ∩ policy.
        let jag_scope = v.str("scope").map(str::to_string);
        let requested = p.get("scope").or(jag_scope.as_deref());
        let (granted, step_up) = policy_scopes(
            &agent,
            &server,
            requested,
            registry,
            &facts,
            |tool| jag_scope.as_deref().is_none_or(|s| scope_allows(s, tool)),
            &mut seen.policy_reasons,
        )?;
        self.first_use("idjag", &v, jti, now).await?;
        let ttl = agent
            .token_ttl_cap
            .map_or(self.config.access_token_ttl_secs, |cap| {
                cap.min(self.config.access_token_ttl_secs)
            });
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: human,
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
        self.issue_delegated(
            registry,
            claims,
            SessionOf::Agent(agent),
            step_up,
            GRANT_TYPE,
            None,
            seen,
        )
        .await
    }

    /// MCP workload identity federation: no client authentication; the issuer's claim rules
    /// name the agent, and policy applies as for any agent.
    async fn workload(
        &self,
        p: &Params,
        assertion: &str,
        registry: &Registry,
        peer: IpAddr,
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let v = self
            .trust
            .verify(
                &self.remote_jwks,
                assertion,
                TrustKind::Workload,
                now,
                self.config.clock_skew_secs,
            )
            .await
            .map_err(grant_err)?;
        if !v.aud_in(&[self.issuer.as_str(), self.token_endpoint.as_str()]) {
            return Err(grant_err("aud is not this authorization server"));
        }
        if v.typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ID_JAG_TYP))
        {
            return Err(grant_err(
                "an ID-JAG needs the client it names to authenticate",
            ));
        }
        let jti = jti(&v)?;
        note(seen, "assertion_jti", jti);
        if let Some(sub) = v.str("sub") {
            note(seen, "workload", sub);
        }
        let agent = v
            .workload_agent(registry)
            .ok_or_else(|| grant_err("no workload rule maps this workload to an agent"))?;
        seen.agent = Some(agent.clone());
        if !self.backend.healthy() {
            return Err(OAuthError::TemporarilyUnavailable(
                "the revocation store is unreachable".into(),
            ));
        }
        let facts = Facts::for_agent(&agent, now, self.config.policy_offset_secs(now), Some(peer));
        let grant = super::client_credentials::decide(
            &agent,
            p,
            registry,
            &self.issuer,
            self.config.access_token_ttl_secs,
            &facts,
            &mut seen.policy_reasons,
        )?;
        self.first_use("wif", &v, jti, now).await?;
        self.issue_delegated(
            registry,
            grant.claims,
            SessionOf::Agent(agent),
            grant.step_up,
            GRANT_TYPE,
            None,
            seen,
        )
        .await
    }
}
