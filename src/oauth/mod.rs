//! The protocol core: request parsing, client authentication, grants, introspection and
//! revocation. Plain Rust: no axum, no sea-orm types.
pub mod authorize;
pub mod client_auth;
mod error;
pub mod grants;
mod params;
pub mod scopes;
pub mod throttle;
pub mod trust;

pub use error::OAuthError;
pub use params::Params;

use crate::app::App;
use crate::registry::Registry;
use client_auth::{AuthEnv, Client};
use serde_json::{Value, json};
use std::net::IpAddr;

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    /// Scopes policy would grant with a human's approval (not in this token): the agent may ask
    /// for one (see the approval flow).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_up_scope: Option<String>,
    /// RFC 8693 §2.2.1: the type of the issued token (token exchange only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// A rotating refresh token (authorization code and refresh grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The grant that issued it (for metrics and audit; not sent).
    #[serde(skip)]
    pub grant_type: &'static str,
}

/// Grant types `/token` accepts.
pub const GRANT_TYPES: &[&str] = &[
    "client_credentials",
    "authorization_code",
    "refresh_token",
    grants::token_exchange::GRANT_TYPE,
    grants::jwt_bearer::GRANT_TYPE,
    grants::ciba::GRANT_TYPE,
];

impl App {
    /// Authenticates the caller of a grant only agents may use (MCP servers get
    /// `unauthorized_client`) and records it in `seen`.
    pub(crate) async fn authenticate_agent(
        &self,
        registry: &Registry,
        now: i64,
        peer: IpAddr,
        authorization: Option<&str>,
        p: &Params,
        seen: &mut crate::audit::Seen,
    ) -> Result<std::sync::Arc<crate::agents::Agent>, OAuthError> {
        let client =
            client_auth::authenticate(&self.auth_env(registry, now, peer), authorization, p)
                .await?;
        let Client::Agent(agent) = client else {
            return Err(OAuthError::UnauthorizedClient(
                "MCP server credentials cannot obtain tokens".into(),
            ));
        };
        seen.agent = Some(agent.clone());
        Ok(agent)
    }

    pub(crate) fn auth_env<'a>(
        &'a self,
        registry: &'a Registry,
        now: i64,
        peer: IpAddr,
    ) -> AuthEnv<'a> {
        AuthEnv {
            registry,
            issuer: &self.issuer,
            token_endpoint: &self.token_endpoint,
            now,
            skew: self.config.clock_skew_secs,
            max_assertion_lifetime: self.config.assertion_max_lifetime_secs,
            replay: self.backend.as_ref(),
            remote_jwks: &self.remote_jwks,
            throttle: &self.throttle,
            peer,
        }
    }

    /// `POST /token`. What it decides is noted in `seen` for the audit event.
    pub async fn token(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        body: &[u8],
        seen: &mut crate::audit::Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let p = Params::parse(body)?;
        let now = self.clock.now();
        let registry = self.registry();
        let grant_type = p.require("grant_type")?;
        if !GRANT_TYPES.contains(&grant_type) {
            return Err(OAuthError::UnsupportedGrantType);
        }
        match grant_type {
            grants::token_exchange::GRANT_TYPE => {
                return self.token_exchange(peer, authorization, &p, seen).await;
            }
            grants::jwt_bearer::GRANT_TYPE => {
                return self.jwt_bearer(peer, authorization, &p, seen).await;
            }
            // MCP clients acting for a person (src/oauth/grants/authorization_code.rs).
            "authorization_code" | "refresh_token" => {
                return self.person_token(authorization, &p, grant_type, seen).await;
            }
            _ => {}
        }
        if grant_type == grants::ciba::GRANT_TYPE {
            // A human's approval of one call (src/approvals/).
            return self.ciba_token(peer, authorization, &p, seen).await;
        }
        let agent = self
            .authenticate_agent(&registry, now, peer, authorization, &p, seen)
            .await?;
        if !self.backend.healthy() {
            // Never issue a token nobody could revoke.
            return Err(OAuthError::TemporarilyUnavailable(
                "the revocation store is unreachable".into(),
            ));
        }
        let facts = crate::policy::Facts::for_agent(
            &agent,
            now,
            self.config.policy_offset_secs(now),
            Some(peer),
        );
        let grants::client_credentials::Grant {
            mut claims,
            step_up,
        } = grants::client_credentials::decide(
            &agent,
            &p,
            &registry,
            &self.issuer,
            self.config.access_token_ttl_secs,
            &facts,
            &mut seen.policy_reasons,
        )?;
        if self
            .replica
            .agent_cutoff(&agent.id)
            .is_some_and(|cut| cut >= now)
        {
            // A token issued in the second of a kill would be covered by it.
            return Err(OAuthError::TemporarilyUnavailable(
                "the agent was revoked this second; retry shortly".into(),
            ));
        }
        let session = self.session_for(&agent, now).await.map_err(|_| {
            OAuthError::TemporarilyUnavailable("the session store is unreachable".into())
        })?;
        claims.sid = Some(session.rec.sid.clone());
        claims.exp = claims.exp.min(session.rec.expires_at);
        let key = registry
            .keys
            .active(now)
            .ok_or_else(|| OAuthError::TemporarilyUnavailable("no active signing key".into()))?;
        let token = key
            .sign_jwt(&claims)
            .ok_or_else(|| OAuthError::ServerError("signing failed".into()))?;
        seen.issued(&claims, registry.server_by_resource(&claims.aud).cloned());
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: claims.exp - now,
            scope: claims.scope,
            step_up_scope: (!step_up.is_empty()).then(|| step_up.join(" ")),
            issued_token_type: None,
            refresh_token: None,
            grant_type: "client_credentials",
        })
    }

    /// Authenticates a registered MCP server by its `Authorization` header alone (JSON APIs
    /// such as AuthZEN, where credentials cannot travel in a form body).
    pub async fn authenticate_server(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
    ) -> Result<std::sync::Arc<crate::resources::McpServer>, OAuthError> {
        let now = self.clock.now();
        let registry = self.registry();
        let p = Params::parse(b"")?;
        match client_auth::authenticate(&self.auth_env(&registry, now, peer), authorization, &p)
            .await?
        {
            Client::Server(server) => Ok(server),
            Client::Agent(_) => Err(OAuthError::invalid_client(
                authorization.is_some(),
                "only MCP servers may ask for access decisions",
            )),
        }
    }

    /// `POST /introspect` (RFC 7662): only registered MCP servers may ask, and a token is
    /// active only for the server it was issued to.
    pub async fn introspect(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        body: &[u8],
        seen: &mut crate::audit::Seen,
    ) -> Result<Value, OAuthError> {
        let p = Params::parse(body)?;
        let now = self.clock.now();
        let registry = self.registry();
        let client =
            client_auth::authenticate(&self.auth_env(&registry, now, peer), authorization, &p)
                .await?;
        let Client::Server(server) = client else {
            return Err(OAuthError::invalid_client(
                authorization.is_some(),
                "only MCP servers may introspect",
            ));
        };
        seen.server = Some(server.clone());
        let token = p.require("token")?;
        let inactive = json!({ "active": false });
        let Ok(c) = self.verified.verify(
            token,
            &registry.keys,
            &self.issuer,
            now,
            self.config.access_token_ttl_secs,
        ) else {
            return Ok(inactive);
        };
        if c.aud != server.resource {
            return Ok(inactive);
        }
        let agent = registry.agent(&c.client_id);
        match agent {
            Some(a) if a.status != crate::agents::AgentStatus::Active => return Ok(inactive),
            Some(_) => {}
            // An MCP client's token for a person: it lives while its grant's session does.
            None if c.sid.is_some() && c.sub != c.client_id => {}
            None => return Ok(inactive),
        }
        if !self.backend.healthy() {
            self.metrics.revocation_store_failures.inc();
            tracing::warn!("revocation store unreachable: answering inactive");
            return Ok(inactive);
        }
        if self.replica.covers(&c)
            || grants::token_exchange::chain_revoked(&c, &registry, &self.replica)
        {
            return Ok(inactive);
        }
        let mut answer = json!({
            "active": true,
            "scope": c.scope,
            "client_id": c.client_id,
            "sub": c.sub,
            "aud": c.aud,
            "iss": c.iss,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "jti": c.jti,
            "sid": c.sid,
            "token_type": "Bearer",
            "env": c.env,
        });
        if let Some(a) = &c.approval
            && let (Ok(serde_json::Value::Object(extra)), Some(obj)) =
                (serde_json::to_value(a), answer.as_object_mut())
        {
            obj.extend(extra);
        }
        if let Some(agent) = agent {
            answer["env"] = agent.environment.clone().into();
            answer["trust_level"] = agent.trust_level.as_str().into();
        }
        if let Some(act) = &c.act {
            // RFC 8693 §4.1: the delegation chain travels with the token's answer.
            answer["act"] = json!(act);
        }
        Ok(answer)
    }

    /// `POST /revoke` (RFC 7009) by the agent holding the token, or by an admin (`admin_id`).
    pub async fn revoke(
        &self,
        peer: IpAddr,
        authorization: Option<&str>,
        admin_id: Option<&str>,
        body: &[u8],
    ) -> Result<(), OAuthError> {
        let p = Params::parse(body)?;
        let now = self.clock.now();
        let registry = self.registry();
        if admin_id.is_none()
            && grants::refresh_token::presented_client_id(authorization, &p)
                .is_some_and(|id| grants::refresh_token::is_person_client(&id))
        {
            // An MCP client acting for a person (src/oauth/grants/refresh_token.rs).
            return self.revoke_by_person_client(authorization, &p).await;
        }
        let caller = match admin_id {
            Some(_) => None,
            None => {
                match client_auth::authenticate(
                    &self.auth_env(&registry, now, peer),
                    authorization,
                    &p,
                )
                .await?
                {
                    Client::Agent(a) => Some(a),
                    Client::Server(_) => {
                        return Err(OAuthError::UnauthorizedClient(
                            "MCP servers cannot revoke tokens".into(),
                        ));
                    }
                }
            }
        };
        let token = p.require("token")?;
        let owner = caller.as_ref().map(|a| a.id.as_str());
        self.revoke_access_token(&registry, now, token, owner, |c| match admin_id {
            Some(id) => crate::audit::Actor::new(crate::audit::ActorKind::Admin, id),
            None => crate::audit::Actor::new(crate::audit::ActorKind::Agent, &c.client_id),
        })
        .await
    }

    /// RFC 7009 for an access token: an invalid or expired one is a success with nothing to
    /// do (§2.2); one not issued to `owner` (when given) is refused (§2.1); otherwise its
    /// `jti` is revoked until it expires, by the actor `by` names.
    pub(crate) async fn revoke_access_token(
        &self,
        registry: &Registry,
        now: i64,
        token: &str,
        owner: Option<&str>,
        by: impl FnOnce(&crate::tokens::AccessClaims) -> crate::audit::Actor,
    ) -> Result<(), OAuthError> {
        let Ok(c) = crate::tokens::verify(
            token,
            &registry.keys,
            &self.issuer,
            now,
            self.config.access_token_ttl_secs,
        ) else {
            return Ok(());
        };
        if owner.is_some_and(|o| o != c.client_id) {
            return Err(OAuthError::UnauthorizedClient(
                "the token was not issued to this client".into(),
            ));
        }
        self.revoke_kind(
            by(&c),
            crate::sessions::Kind::Jti,
            &c.jti,
            Some(&c.client_id),
            Some(c.exp),
        )
        .await
        .map(|_| ())
        .map_err(|_| OAuthError::TemporarilyUnavailable("revocation store unavailable".into()))
    }
}
