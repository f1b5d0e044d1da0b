//! `grant_type=refresh_token` (OAuth 2.1 §4.3) for MCP clients acting for a person. Refresh
//! tokens rotate on every use; presenting a used one revokes the whole family (RFC 9700
//! §4.14.2) and its session. A refresh never widens scope (RFC 6749 §6) or changes the
//! resource, and policy is asked again, so a tightened policy narrows the next token.
use crate::app::App;
use crate::audit::{Actor, ActorKind, Seen, kinds};
use crate::clients::store::ClientStore;
use crate::clients::{OAuthClient, REFRESH_TOKEN_PREFIX};
use crate::oauth::authorize::scope_set;
use crate::oauth::{OAuthError, Params, TokenResponse};
use crate::resources::canonical_resource;

fn store_err(e: impl std::fmt::Display) -> OAuthError {
    OAuthError::ServerError(e.to_string().into())
}

impl App {
    pub(crate) async fn refresh_grant(
        &self,
        client: &OAuthClient,
        p: &Params,
        seen: &mut Seen,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.clock.now();
        let store = ClientStore(&self.store);
        let presented = p.require("refresh_token")?;
        let unknown = || OAuthError::InvalidGrant("unknown refresh token".into());
        if !crate::secrets::well_formed(REFRESH_TOKEN_PREFIX, presented) {
            return Err(unknown());
        }
        let row = store
            .refresh(presented)
            .await
            .map_err(store_err)?
            .ok_or_else(unknown)?;
        let family = store
            .family(&row.family_id)
            .await
            .map_err(store_err)?
            .ok_or_else(unknown)?;
        if family.client_id != client.client_id {
            return Err(OAuthError::InvalidGrant(
                "the refresh token was issued to another client".into(),
            ));
        }
        if family.revoked_at.is_some() || self.replica.session_revoked(&family.sid) {
            return Err(OAuthError::InvalidGrant("the grant was revoked".into()));
        }
        if family.expires_at <= now {
            return Err(OAuthError::InvalidGrant(
                "the refresh token has expired".into(),
            ));
        }
        if row.used_at.is_some() {
            self.refresh_reused(&family).await;
            return Err(OAuthError::InvalidGrant(
                "the refresh token was already used; the grant is revoked".into(),
            ));
        }
        for r in p.all("resource") {
            if canonical_resource(r).ok().as_deref() != Some(family.resource.as_str()) {
                return Err(OAuthError::InvalidTarget(
                    "a refresh token is for the resource it was granted for".into(),
                ));
            }
        }
        let server = self
            .registry()
            .server_by_resource(&family.resource)
            .cloned()
            .ok_or_else(|| {
                OAuthError::InvalidGrant("the MCP server is no longer registered".into())
            })?;
        // Never wider than the grant: each scope asked is granted, or a tool of a class granted.
        let have = scope_set(&family.scope);
        let covered = |w: &str| {
            have.contains(w)
                || w.strip_prefix("tools:")
                    .and_then(|n| server.tools.get(n))
                    .is_some_and(|t| have.contains(format!("tools:{}", t.class.as_str()).as_str()))
        };
        let asked = match p.get("scope") {
            Some(s) => {
                let want = scope_set(s);
                if let Some(extra) = want.iter().find(|w| !covered(w)) {
                    return Err(OAuthError::InvalidScope(
                        format!("{extra} was not granted; refresh cannot widen scope").into(),
                    ));
                }
                Some(want.into_iter().collect::<Vec<_>>().join(" "))
            }
            None => None,
        };
        let Some(person) = self.person(&family.human_id).await? else {
            return Err(OAuthError::InvalidGrant(
                "the person who made this grant no longer exists".into(),
            ));
        };
        // Policy again, within what is asked (itself within the grant).
        let decided = self.person_scopes(
            client,
            &server,
            &person,
            Some(asked.as_deref().unwrap_or(&family.scope)),
            None,
        )?;
        seen.policy_reasons.extend(decided.reasons);
        let granted = decided.granted;
        if granted.is_empty() {
            return Err(OAuthError::InvalidScope(
                "policy no longer permits any of the granted scopes".into(),
            ));
        }
        if !store
            .consume_refresh(&row.token_hash, now)
            .await
            .map_err(store_err)?
        {
            self.refresh_reused(&family).await;
            return Err(OAuthError::InvalidGrant(
                "the refresh token was already used; the grant is revoked".into(),
            ));
        }
        self.issue_in_family(client, &family, &person, &granted.join(" "), seen)
            .await
    }

    async fn refresh_reused(&self, family: &crate::clients::store::refresh_family::Model) {
        let now = self.clock.now();
        self.revoke_family(family, Actor::system()).await;
        let ev = self
            .audit
            .trail(Actor::new(ActorKind::Client, &family.client_id))
            .event(kinds::REFRESH_REUSED, now)
            .subject(family.id.clone())
            .action("refresh")
            .decision(crate::audit::Decision::Deny)
            .detail_str("human", family.human_id.clone())
            .detail_str("sid", family.sid.clone())
            .detail_str("resource", family.resource.clone());
        if self.audit.record(ev).await.is_err() {
            tracing::warn!("audit log unavailable: refresh token reuse not recorded");
        }
    }
}

/// The client id a request presents (body `client_id`, or the id of Basic credentials).
pub fn presented_client_id(authorization: Option<&str>, p: &Params) -> Option<String> {
    use base64::Engine;
    if let Some(id) = p.get("client_id") {
        return Some(id.to_string());
    }
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
    url::form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
}

/// Whether `client_id` names an MCP client acting for a person (registered or CIMD).
pub fn is_person_client(client_id: &str) -> bool {
    client_id.starts_with(crate::clients::CLIENT_ID_PREFIX)
        || crate::clients::cimd::looks_like_url(client_id)
}

impl App {
    /// `POST /revoke` (RFC 7009) by an MCP client acting for a person: a refresh token ends
    /// its whole grant (§2.1: and the access tokens issued in it); an access token is revoked
    /// by its `jti`. Tokens of other clients are refused; unknown ones are a success.
    pub async fn revoke_by_person_client(
        &self,
        authorization: Option<&str>,
        p: &Params,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate_person_client(authorization, p).await?;
        let token = p.require("token")?;
        let now = self.clock.now();
        let by = Actor::new(ActorKind::Client, &client.client_id);
        if crate::secrets::well_formed(REFRESH_TOKEN_PREFIX, token) {
            let store = ClientStore(&self.store);
            let Some(row) = store.refresh(token).await.map_err(store_err)? else {
                return Ok(());
            };
            let Some(family) = store.family(&row.family_id).await.map_err(store_err)? else {
                return Ok(());
            };
            if family.client_id != client.client_id {
                return Err(OAuthError::UnauthorizedClient(
                    "the token was not issued to this client".into(),
                ));
            }
            self.revoke_family(&family, by).await;
            return Ok(());
        }
        let registry = self.registry();
        self.revoke_access_token(&registry, now, token, Some(&client.client_id), |_| by)
            .await
    }
}
