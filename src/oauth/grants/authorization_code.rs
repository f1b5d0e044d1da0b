//! `grant_type=authorization_code` (OAuth 2.1 §4.1.3) for MCP clients acting for a person:
//! the code is single use and bound to its client, redirect URI, PKCE challenge (S256),
//! resource and scopes; a replayed code revokes what it issued (RFC 9700 §4.2.1). Also the
//! pieces shared with the refresh grant: client authentication of these clients, and issuing
//! an access token (plus a rotating refresh token) within a grant's session.
use crate::app::App;
use crate::audit::{Actor, ActorKind, Seen, kinds};
use crate::clients::store::{ClientStore, refresh_family};
use crate::clients::{ClientAuthMethod, ClientError, OAuthClient, REFRESH_TOKEN_PREFIX};
use crate::oauth::authorize::{Person, pkce_matches, pkce_value_ok};
use crate::oauth::{OAuthError, Params, TokenResponse};
use crate::resources::canonical_resource;
use crate::tokens::AccessClaims;
use base64::Engine;

fn store_err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::ServerError(e.to_string().into())
}

fn form_decode(s: &str) -> Option<String> {
    let pair = format!("{s}=");
    let (k, _) = url::form_urlencoded::parse(pair.as_bytes()).next()?;
    Some(k.into_owned())
}

impl App {
    /// Authenticates an MCP client at `/token` by its registered method: `none` (public, the
    /// `client_id` alone; PKCE proves the rest), `client_secret_basic` or `client_secret_post`.
    pub async fn authenticate_person_client(
        &self,
        authorization: Option<&str>,
        p: &Params,
    ) -> Result<OAuthClient, OAuthError> {
        let header = authorization.map(str::trim).filter(|h| !h.is_empty());
        let post_secret = p.get("client_secret");
        if p.get("client_assertion").is_some() || p.get("client_assertion_type").is_some() {
            return Err(OAuthError::invalid_client(
                false,
                "private_key_jwt is not registered for this client",
            ));
        }
        if header.is_some() && post_secret.is_some() {
            return Err(OAuthError::InvalidRequest(
                "more than one client authentication method was used".into(),
            ));
        }
        let (id, secret, basic) = match header {
            Some(h) => {
                let bad = |why: &'static str| OAuthError::invalid_client(true, why);
                let (scheme, rest) = h
                    .split_once(' ')
                    .ok_or_else(|| bad("malformed Authorization"))?;
                if !scheme.eq_ignore_ascii_case("basic") {
                    return Err(bad("Authorization scheme is not Basic"));
                }
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .map_err(|_| bad("Basic credentials are not base64"))?;
                let text =
                    String::from_utf8(raw).map_err(|_| bad("Basic credentials are not UTF-8"))?;
                let (id, secret) = text
                    .split_once(':')
                    .ok_or_else(|| bad("Basic credentials lack ':'"))?;
                let id = form_decode(id).ok_or_else(|| bad("bad client id encoding"))?;
                let secret = form_decode(secret).ok_or_else(|| bad("bad secret encoding"))?;
                if p.get("client_id").is_some_and(|b| b != id) {
                    return Err(bad("client_id in body differs from Basic credentials"));
                }
                (id, Some(secret), true)
            }
            None => {
                let id = p
                    .get("client_id")
                    .ok_or_else(|| OAuthError::invalid_client(false, "client_id is required"))?;
                (id.to_string(), post_secret.map(str::to_string), false)
            }
        };
        let client = match self.oauth_client(&id).await {
            Ok(c) => c,
            Err(ClientError::Unavailable(e)) => {
                return Err(OAuthError::TemporarilyUnavailable(e.into()));
            }
            Err(e) => {
                return Err(OAuthError::invalid_client(basic, e.message().to_string()));
            }
        };
        let method = client.meta.token_endpoint_auth_method;
        let ok = match (method, &secret, basic) {
            (ClientAuthMethod::None, None, false) => true,
            (ClientAuthMethod::ClientSecretBasic, Some(s), true)
            | (ClientAuthMethod::ClientSecretPost, Some(s), false) => client
                .secret_hash
                .as_ref()
                .is_some_and(|h| crate::secrets::hashes_equal(h, &crate::secrets::hash(s))),
            _ => false,
        };
        if !ok {
            return Err(OAuthError::invalid_client(
                basic,
                format!(
                    "client authentication does not match its registered method {}",
                    method.as_str()
                ),
            ));
        }
        Ok(client)
    }

    /// The person a grant was made by, with their current roles; `None` if they are gone.
    pub async fn person(&self, human_id: &str) -> Result<Option<Person>, OAuthError> {
        Ok(crate::humans::active(&self.store, human_id)
            .await
            .map_err(store_err)?
            .map(|h| Person::from(&h)))
    }

    /// `/token` with `grant_type=authorization_code` or `refresh_token`.
    pub async fn person_token(
        &self,
        authorization: Option<&str>,
        p: &Params,
        grant_type: &str,
        seen: &mut Seen,
    ) -> Result<TokenResponse, OAuthError> {
        seen.grant_type = Some(grant_type.to_string());
        let client = self.authenticate_person_client(authorization, p).await?;
        seen.client = Some(client.client_id.clone());
        if !self.backend.healthy() {
            return Err(OAuthError::TemporarilyUnavailable(
                "the revocation store is unreachable".into(),
            ));
        }
        if grant_type == "refresh_token" {
            if !client.refresh_allowed() {
                return Err(OAuthError::UnauthorizedClient(
                    "this client did not register the refresh_token grant".into(),
                ));
            }
            return self.refresh_grant(&client, p, seen).await;
        }
        self.code_grant(&client, p, seen).await
    }

    async fn code_grant(
        &self,
        client: &OAuthClient,
        p: &Params,
        seen: &mut Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let store = ClientStore(&self.store);
        let code = p.require("code")?;
        let verifier = p
            .require("code_verifier")
            .map_err(|_| OAuthError::InvalidRequest("code_verifier is required (PKCE)".into()))?;
        if !code.starts_with(crate::clients::CODE_PREFIX) || code.len() > 128 {
            return Err(OAuthError::InvalidGrant(
                "unknown authorization code".into(),
            ));
        }
        let row = store
            .code(code)
            .await
            .map_err(store_err)?
            .ok_or_else(|| OAuthError::InvalidGrant("unknown authorization code".into()))?;
        if row.used_at.is_some() {
            self.code_replayed(&row).await;
            return Err(OAuthError::InvalidGrant(
                "the authorization code was already used".into(),
            ));
        }
        if row.client_id != client.client_id {
            return Err(OAuthError::InvalidGrant(
                "the authorization code was issued to another client".into(),
            ));
        }
        if row.expires_at <= now {
            return Err(OAuthError::InvalidGrant(
                "the authorization code has expired".into(),
            ));
        }
        if p.get("redirect_uri") != Some(row.redirect_uri.as_str()) {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri differs from the authorization request".into(),
            ));
        }
        if !pkce_value_ok(verifier) || !pkce_matches(verifier, &row.code_challenge) {
            return Err(OAuthError::InvalidGrant(
                "code_verifier does not match the code_challenge".into(),
            ));
        }
        let resources = p.all("resource");
        for r in &resources {
            if canonical_resource(r).ok().as_deref() != Some(row.resource.as_str()) {
                return Err(OAuthError::InvalidGrant(
                    "resource differs from the authorization request".into(),
                ));
            }
        }
        if !store
            .consume_code(&row.code_hash, now)
            .await
            .map_err(store_err)?
        {
            self.code_replayed(&row).await;
            return Err(OAuthError::InvalidGrant(
                "the authorization code was already used".into(),
            ));
        }
        let Some(person) = self.person(&row.human_id).await? else {
            return Err(OAuthError::InvalidGrant(
                "the person who authorized this code no longer exists".into(),
            ));
        };
        let family = refresh_family::Model {
            id: crate::secrets::random_id("fam_"),
            client_id: client.client_id.clone(),
            human_id: person.id.clone(),
            resource: row.resource.clone(),
            scope: row.scope.clone(),
            sid: crate::secrets::random_id("ses_"),
            created_at: now,
            expires_at: now + self.config.refresh_token_lifetime_secs,
            revoked_at: None,
        };
        self.store
            .insert_session(&crate::sessions::SessionRecord {
                sid: family.sid.clone(),
                agent_id: client.client_id.clone(),
                started_at: now,
                expires_at: family.expires_at,
                idle_secs: self.config.refresh_token_lifetime_secs,
                last_seen: now,
            })
            .await
            .map_err(store_err)?;
        store
            .insert_family(family.clone())
            .await
            .map_err(store_err)?;
        store
            .link_code(&row.code_hash, &family.id)
            .await
            .map_err(store_err)?;
        self.issue_in_family(client, &family, &person, &row.scope, seen)
            .await
    }

    /// A used code came back: revoke the grant it started (its refresh family and session).
    async fn code_replayed(&self, row: &crate::clients::store::authorization_code::Model) {
        let now = self.clock.now();
        if let Some(fid) = &row.family_id
            && let Ok(Some(fam)) = ClientStore(&self.store).family(fid).await
        {
            self.revoke_family(&fam, Actor::system()).await;
        }
        let ev = self
            .audit
            .trail(Actor::new(ActorKind::Client, &row.client_id))
            .event(kinds::CODE_REPLAYED, now)
            .subject(row.code_hash.get(..16).unwrap_or_default().to_string())
            .action("redeem")
            .decision(crate::audit::Decision::Deny)
            .detail_str("human", row.human_id.clone())
            .detail_str("resource", row.resource.clone());
        if self.audit.record(ev).await.is_err() {
            tracing::warn!("audit log unavailable: code replay not recorded");
        }
    }

    /// Ends a grant: its refresh tokens stop working and its session is revoked, which
    /// revokes every access token issued in it.
    pub async fn revoke_family(&self, fam: &refresh_family::Model, by: Actor) {
        let now = self.clock.now();
        if let Err(e) = ClientStore(&self.store).revoke_family(&fam.id, now).await {
            tracing::error!(error = %e, family = %fam.id, "cannot revoke refresh family");
        }
        if let Err(e) = self
            .revoke_kind(
                by,
                crate::sessions::Kind::Session,
                &fam.sid,
                Some(&fam.client_id),
                None,
            )
            .await
        {
            tracing::error!(error = %e, sid = %fam.sid, "cannot revoke grant session");
        }
    }

    /// Issues an access token (and, for clients with the refresh grant, a new refresh token)
    /// in `family`, for `scope` (already within the family's). The token names `person` (email
    /// and current roles) so that policy can decide on it without looking them up.
    pub async fn issue_in_family(
        &self,
        client: &OAuthClient,
        family: &refresh_family::Model,
        person: &Person,
        scope: &str,
        seen: &mut Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let registry = self.registry();
        let server = registry
            .server_by_resource(&family.resource)
            .cloned()
            .ok_or_else(|| {
                OAuthError::InvalidGrant("the MCP server is no longer registered".into())
            })?;
        if self.replica.session_revoked(&family.sid) {
            return Err(OAuthError::InvalidGrant("the grant was revoked".into()));
        }
        let ttl = self.config.access_token_ttl_secs;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: family.human_id.clone(),
            aud: family.resource.clone(),
            client_id: client.client_id.clone(),
            scope: scope.to_string(),
            iat: now,
            nbf: now,
            exp: (now + ttl).min(family.expires_at),
            jti: crate::secrets::hex(&crate::secrets::random_bytes::<16>()),
            sid: Some(family.sid.clone()),
            env: Some(server.environment.clone()),
            act: None,
            approval: None,
            person: Some(Box::new(crate::tokens::PersonClaims {
                email: person.email.clone(),
                roles: person.roles.clone(),
            })),
        };
        if claims.exp <= now {
            return Err(OAuthError::InvalidGrant("the grant has expired".into()));
        }
        let key = registry
            .keys
            .active(now)
            .ok_or_else(|| OAuthError::TemporarilyUnavailable("no active signing key".into()))?;
        let token = key
            .sign_jwt(&claims)
            .ok_or_else(|| OAuthError::ServerError("signing failed".into()))?;
        let refresh_token = if client.refresh_allowed() {
            let rt = crate::secrets::generate(REFRESH_TOKEN_PREFIX);
            ClientStore(&self.store)
                .insert_refresh(&rt, &family.id, now)
                .await
                .map_err(store_err)?;
            Some(rt)
        } else {
            None
        };
        seen.human = Some(family.human_id.clone());
        seen.issued(&claims, Some(server));
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: claims.exp - now,
            scope: claims.scope,
            step_up_scope: None,
            issued_token_type: None,
            refresh_token,
            grant_type: if seen.grant_type.as_deref() == Some("refresh_token") {
                "refresh_token"
            } else {
                "authorization_code"
            },
        })
    }
}
