//! The registration service behind `POST /register` and `/register/{client_id}` (RFC 7591,
//! RFC 7592 read and delete): who may register, and the registration access token.
use super::dcr::{self, RegistrationPolicy};
use super::store::{ClientStore, secret_key};
use super::{ClientAuthMethod, ClientError, REGISTRATION_TOKEN_PREFIX};
use crate::app::App;
use crate::audit::{Actor, ActorKind, kinds};
use serde_json::Value;

/// Why a registration request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationError {
    /// 400 with an RFC 7591 §3.2.2 code.
    Invalid(ClientError),
    /// 401: an initial access token (or registration access token) is required or wrong.
    Unauthorized(&'static str),
    /// 403: dynamic registration is off.
    Disabled,
    /// 404: no such client.
    NotFound,
    /// 503.
    Unavailable,
}

impl App {
    /// The registration policy in force.
    pub fn registration_policy(&self) -> RegistrationPolicy {
        RegistrationPolicy::parse(&self.config.registration_policy)
            .unwrap_or(RegistrationPolicy::Off)
    }

    /// Registers a client. `bearer` is the `Authorization: Bearer` token, if any.
    pub async fn register_client(
        &self,
        bearer: Option<&str>,
        body: &Value,
    ) -> Result<Value, RegistrationError> {
        let actor = match self.registration_policy() {
            RegistrationPolicy::Off => return Err(RegistrationError::Disabled),
            RegistrationPolicy::Open => Actor::new(ActorKind::Anonymous, ""),
            RegistrationPolicy::InitialAccessToken => {
                let id = bearer
                    .and_then(|t| self.registry().admin_token(t).map(str::to_string))
                    .ok_or(RegistrationError::Unauthorized(
                        "an initial access token (an admin API token) is required",
                    ))?;
                Actor::new(ActorKind::Admin, id)
            }
        };
        let meta = dcr::parse_registration(body).map_err(RegistrationError::Invalid)?;
        let now = self.clock.now();
        let client_id = crate::secrets::random_id(super::CLIENT_ID_PREFIX);
        let secret = (meta.token_endpoint_auth_method != ClientAuthMethod::None)
            .then(|| crate::secrets::generate(crate::secrets::CLIENT_SECRET_PREFIX));
        let rat = crate::secrets::generate(REGISTRATION_TOKEN_PREFIX);
        ClientStore(&self.store)
            .insert_client(&client_id, &meta, secret.as_deref(), &rat, now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot store a registered client");
                RegistrationError::Unavailable
            })?;
        let ev = self
            .audit
            .trail(actor)
            .event(kinds::CLIENT_REGISTERED, now)
            .subject(client_id.clone())
            .action("register")
            .detail_str("client_name", meta.client_name.clone())
            .detail_str(
                "token_endpoint_auth_method",
                meta.token_endpoint_auth_method.as_str(),
            )
            .detail(
                "redirect_uris",
                crate::audit::Detail::List(meta.redirect_uris.clone()),
            );
        self.audit
            .record(ev)
            .await
            .map_err(|_| RegistrationError::Unavailable)?;
        Ok(dcr::response(
            &client_id,
            &meta,
            now,
            secret.as_deref(),
            Some(&rat),
            &self.registration_uri(&client_id),
        ))
    }

    fn registration_uri(&self, client_id: &str) -> String {
        format!("{}/register/{client_id}", self.issuer)
    }

    async fn registration_access(
        &self,
        client_id: &str,
        bearer: Option<&str>,
    ) -> Result<super::store::oauth_client::Model, RegistrationError> {
        let unauthorized =
            RegistrationError::Unauthorized("a valid registration access token is required");
        let token = bearer.ok_or(unauthorized.clone())?;
        if !crate::secrets::well_formed(REGISTRATION_TOKEN_PREFIX, token) {
            return Err(unauthorized);
        }
        let row = ClientStore(&self.store)
            .client_row(client_id)
            .await
            .map_err(|_| RegistrationError::Unavailable)?
            // RFC 7592 §2.1: an unknown client answers as a bad token would.
            .ok_or(unauthorized.clone())?;
        let want = crate::secrets::parse_hex32(&row.registration_token_hash);
        let got = crate::secrets::parse_hex32(&secret_key(token));
        match (want, got) {
            (Some(w), Some(g)) if crate::secrets::hashes_equal(&w, &g) => Ok(row),
            _ => Err(unauthorized),
        }
    }

    /// RFC 7592 §2.1: the client's registration (without its secret, which is not kept).
    pub async fn read_registration(
        &self,
        client_id: &str,
        bearer: Option<&str>,
    ) -> Result<Value, RegistrationError> {
        let row = self.registration_access(client_id, bearer).await?;
        let meta: super::ClientMetadata =
            serde_json::from_str(&row.metadata).map_err(|_| RegistrationError::Unavailable)?;
        Ok(dcr::response(
            &row.client_id,
            &meta,
            row.created_at,
            None,
            None,
            &self.registration_uri(&row.client_id),
        ))
    }

    /// RFC 7592 §2.3: deletes the client and ends every grant it holds.
    pub async fn delete_registration(
        &self,
        client_id: &str,
        bearer: Option<&str>,
    ) -> Result<(), RegistrationError> {
        self.registration_access(client_id, bearer).await?;
        let now = self.clock.now();
        let actor = Actor::new(ActorKind::Client, client_id);
        ClientStore(&self.store)
            .delete_client(client_id, now)
            .await
            .map_err(|_| RegistrationError::Unavailable)?;
        self.revoke_client_grants(actor.clone(), client_id)
            .await
            .map_err(|_| RegistrationError::Unavailable)?;
        let ev = self
            .audit
            .trail(actor)
            .event(kinds::CLIENT_DELETED, now)
            .subject(client_id.to_string())
            .action("delete");
        self.audit
            .record(ev)
            .await
            .map_err(|_| RegistrationError::Unavailable)?;
        Ok(())
    }
}
