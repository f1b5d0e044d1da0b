//! Registry changes, shared by the CLI and the admin API: validate, write in one transaction
//! with a registry version bump, and return what the operator must see once (secrets).
use super::{agent_from_model, server_from_model};
use crate::agents::{Agent, AgentPatch, AgentStatus, AuthMethod, NewAgent, TrustLevel};
use crate::audit::{self, Detail, kinds};
use crate::resources::{McpServer, ServerManifest, canonical_resource, valid_name};
use crate::secrets;
use crate::sessions::{Kind, Revocation};
use crate::store::entities::{admin_token, agent, client_secret, mcp_server, signing_key};
use crate::store::{
    Store, StoreError, bump_registry_version, end_sessions_tx, insert_revocation_tx,
};
use crate::tokens::keys::{self, Kek, KeyError};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    Set,
};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("session and revocation store unavailable")]
    Unavailable,
}

impl From<sea_orm::DbErr> for AdminError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

/// A server as created: credentials are shown once.
#[derive(Debug, serde::Serialize)]
pub struct CreatedServer {
    #[serde(flatten)]
    pub server: McpServer,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// False when an import updated an existing server.
    pub created: bool,
}

/// An agent as created: the secret (if any) is shown once.
#[derive(Debug, serde::Serialize)]
pub struct CreatedAgent {
    #[serde(flatten)]
    pub agent: Agent,
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct RotatedSecret {
    pub client_id: String,
    pub client_secret: String,
    /// When the previous secrets stop working.
    pub previous_expire_at: i64,
}

/// The registry write service.
pub struct Admin<'a> {
    pub store: &'a Store,
    pub now: i64,
    /// Who makes the changes; each change writes its audit event in its own transaction.
    pub audit: crate::audit::Trail,
}

impl Admin<'_> {
    fn event(&self, kind: audit::Kind, subject: &str) -> audit::Event {
        self.audit.event(kind, self.now).subject(subject)
    }

    async fn record(&self, tx: &DatabaseTransaction, e: audit::Event) -> Result<(), AdminError> {
        Ok(self.audit.record(tx, self.now, e).await?)
    }

    async fn add_secret(
        &self,
        tx: &DatabaseTransaction,
        client_id: &str,
    ) -> Result<String, AdminError> {
        let secret = secrets::generate(secrets::CLIENT_SECRET_PREFIX);
        client_secret::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            client_id: Set(client_id.to_string()),
            secret_hash: Set(secrets::hex(&secrets::hash(&secret))),
            created_at: Set(self.now),
            expires_at: Set(None),
        }
        .insert(tx)
        .await?;
        Ok(secret)
    }

    /// Registers a server from a manifest, or updates the one with the same resource URI
    /// (credentials kept).
    pub async fn import_server(&self, m: &ServerManifest) -> Result<CreatedServer, AdminError> {
        let (resource, tools) = m.validate().map_err(AdminError::Invalid)?;
        let tools_json = serde_json::to_string(&tools.values().collect::<Vec<_>>())
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let tx = self.store.begin().await?;
        let existing = mcp_server::Entity::find()
            .filter(mcp_server::Column::ResourceUri.eq(&resource))
            .one(&tx)
            .await?;
        let (model, secret, created) = match existing {
            Some(old) => {
                let mut am = old.into_active_model();
                am.name = Set(m.name.clone());
                am.environment = Set(m.environment.clone());
                am.tools = Set(tools_json);
                am.updated_at = Set(self.now);
                (am.update(&tx).await?, None, false)
            }
            None => {
                let id = secrets::random_id("srv_");
                let model = mcp_server::ActiveModel {
                    id: Set(id.clone()),
                    resource_uri: Set(resource),
                    name: Set(m.name.clone()),
                    environment: Set(m.environment.clone()),
                    tools: Set(tools_json),
                    created_at: Set(self.now),
                    updated_at: Set(self.now),
                }
                .insert(&tx)
                .await?;
                let secret = self.add_secret(&tx, &id).await?;
                (model, Some(secret), true)
            }
        };
        let kind = if created {
            kinds::SERVER_CREATED
        } else {
            kinds::SERVER_UPDATED
        };
        let ev = self
            .event(kind, &model.id)
            .server(model.id.clone())
            .action(if created { "create" } else { "update" })
            .detail_str("resource", model.resource_uri.clone())
            .detail_str("name", model.name.clone())
            .detail_str("environment", model.environment.clone())
            .detail("tools", Detail::List(tools.keys().cloned().collect()));
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let server = server_from_model(model).map_err(AdminError::Invalid)?;
        Ok(CreatedServer {
            client_id: server.id.clone(),
            server,
            client_secret: secret,
            created,
        })
    }

    /// Registers a new server; a second server with the same resource is a conflict.
    pub async fn create_server(&self, m: &ServerManifest) -> Result<CreatedServer, AdminError> {
        let resource = canonical_resource(&m.resource).map_err(AdminError::Invalid)?;
        if self
            .store
            .find_server_by_resource(&resource)
            .await?
            .is_some()
        {
            return Err(AdminError::Conflict(format!(
                "a server with resource {resource} is already registered"
            )));
        }
        self.import_server(m).await
    }

    pub async fn delete_server(&self, id: &str) -> Result<(), AdminError> {
        let tx = self.store.begin().await?;
        let res = mcp_server::Entity::delete_by_id(id).exec(&tx).await?;
        if res.rows_affected == 0 {
            return Err(AdminError::NotFound(format!("server {id}")));
        }
        client_secret::Entity::delete_many()
            .filter(client_secret::Column::ClientId.eq(id))
            .exec(&tx)
            .await?;
        let ev = self
            .event(kinds::SERVER_DELETED, id)
            .server(id)
            .action("delete");
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// Issues a new secret; the old ones keep working for `overlap_secs`.
    pub async fn rotate_secret(
        &self,
        client_id: &str,
        overlap_secs: i64,
    ) -> Result<RotatedSecret, AdminError> {
        if !(0..=30 * 86_400).contains(&overlap_secs) {
            return Err(AdminError::Invalid("overlap must be 0 to 30 days".into()));
        }
        let tx = self.store.begin().await?;
        let is_agent = agent::Entity::find_by_id(client_id).one(&tx).await?;
        let is_server = mcp_server::Entity::find_by_id(client_id).one(&tx).await?;
        match (&is_agent, &is_server) {
            (None, None) => return Err(AdminError::NotFound(format!("client {client_id}"))),
            (Some(a), _) if a.auth_method == AuthMethod::PrivateKeyJwt.as_str() => {
                return Err(AdminError::Invalid(
                    "this agent authenticates with private_key_jwt and has no secret".into(),
                ));
            }
            _ => {}
        }
        let until = self.now + overlap_secs;
        for old in client_secret::Entity::find()
            .filter(client_secret::Column::ClientId.eq(client_id))
            .all(&tx)
            .await?
        {
            if old.expires_at.is_none_or(|e| e > until) {
                let mut am = old.into_active_model();
                am.expires_at = Set(Some(until));
                am.update(&tx).await?;
            }
        }
        let secret = self.add_secret(&tx, client_id).await?;
        let mut ev = self
            .event(kinds::SECRET_ROTATED, client_id)
            .action("rotate_secret")
            .detail_str("secret_fingerprint", secrets::fingerprint(&secret))
            .detail("previous_expire_at", Detail::Int(until));
        if is_agent.is_some() {
            ev = ev.agent(client_id);
        } else {
            ev = ev.server(client_id);
        }
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(RotatedSecret {
            client_id: client_id.to_string(),
            client_secret: secret,
            previous_expire_at: until,
        })
    }

    async fn check_resources(
        &self,
        tx: &DatabaseTransaction,
        environment: &str,
        raw: &[String],
    ) -> Result<Vec<String>, AdminError> {
        let mut out = Vec::new();
        for r in raw {
            let canon = canonical_resource(r).map_err(AdminError::Invalid)?;
            let server = mcp_server::Entity::find()
                .filter(mcp_server::Column::ResourceUri.eq(&canon))
                .one(tx)
                .await?
                .ok_or_else(|| {
                    AdminError::Invalid(format!("no MCP server has resource {canon}"))
                })?;
            if server.environment != environment {
                return Err(AdminError::Invalid(format!(
                    "server {canon} is in environment {}, the agent in {environment}",
                    server.environment
                )));
            }
            if !out.contains(&canon) {
                out.push(canon);
            }
        }
        Ok(out)
    }

    pub async fn create_agent(&self, n: &NewAgent) -> Result<CreatedAgent, AdminError> {
        let inv = |s: &str| AdminError::Invalid(s.to_string());
        if n.name.trim().is_empty() || n.name.len() > 200 {
            return Err(inv("name must be 1-200 characters"));
        }
        if !crate::agents::valid_owner(&n.owner) {
            return Err(inv("owner must be an email address"));
        }
        let trust = TrustLevel::parse(&n.trust_level)
            .ok_or_else(|| inv("trust_level must be low, medium or high"))?;
        if !valid_name(&n.environment) {
            return Err(inv(
                "environment must be 1-64 characters of A-Z a-z 0-9 _ . -",
            ));
        }
        let method = AuthMethod::parse(&n.auth_method).ok_or_else(|| {
            inv("auth_method must be client_secret_basic, client_secret_post or private_key_jwt")
        })?;
        let ceiling = check_scopes(&n.scope_ceiling)?;
        check_ttl(n.token_ttl_cap)?;
        check_session_secs(n.session_lifetime_secs)?;
        check_session_secs(n.session_idle_secs)?;
        let groups = crate::agents::check_groups(&n.groups).map_err(AdminError::Invalid)?;
        let (jwks, jwks_uri) = check_keys(method, n.jwks.as_ref(), n.jwks_uri.as_deref())?;
        let tx = self.store.begin().await?;
        let resources = self
            .check_resources(&tx, &n.environment, &n.allowed_resources)
            .await?;
        let id = secrets::random_id("agt_");
        let model = agent::ActiveModel {
            id: Set(id.clone()),
            name: Set(n.name.clone()),
            purpose: Set(n.purpose.clone()),
            justification: Set(n.justification.clone()),
            owner: Set(n.owner.clone()),
            trust_level: Set(trust.as_str().into()),
            environment: Set(n.environment.clone()),
            allowed_resources: Set(json_list(&resources)),
            scope_ceiling: Set(ceiling.join(" ")),
            token_ttl_cap: Set(n.token_ttl_cap),
            status: Set(AgentStatus::Active.as_str().into()),
            auth_method: Set(method.as_str().into()),
            jwks: Set(jwks),
            jwks_uri: Set(jwks_uri),
            created_at: Set(self.now),
            updated_at: Set(self.now),
            session_lifetime_secs: Set(n.session_lifetime_secs),
            session_idle_secs: Set(n.session_idle_secs),
            groups: Set((!groups.is_empty()).then(|| groups.join(" "))),
        }
        .insert(&tx)
        .await?;
        let secret = if method.uses_secret() {
            Some(self.add_secret(&tx, &id).await?)
        } else {
            None
        };
        let ev = self
            .event(kinds::AGENT_CREATED, &id)
            .agent(id.clone())
            .action("create")
            .detail_str("name", model.name.clone())
            .detail_str("owner", model.owner.clone())
            .detail_str("environment", model.environment.clone())
            .detail_str("trust_level", model.trust_level.clone())
            .detail_str("auth_method", model.auth_method.clone())
            .detail("allowed_resources", Detail::List(resources))
            .detail("scope_ceiling", Detail::List(ceiling))
            .detail("groups", Detail::List(groups));
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let agent = agent_from_model(model).map_err(AdminError::Invalid)?;
        Ok(CreatedAgent {
            client_id: agent.id.clone(),
            agent,
            client_secret: secret,
        })
    }

    pub async fn update_agent(&self, id: &str, p: &AgentPatch) -> Result<Agent, AdminError> {
        let tx = self.store.begin().await?;
        let old = agent::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("agent {id}")))?;
        let method = AuthMethod::parse(&old.auth_method)
            .ok_or_else(|| AdminError::Invalid("stored auth_method is unreadable".into()))?;
        let env = old.environment.clone();
        let mut am = old.clone().into_active_model();
        if let Some(name) = &p.name {
            if name.trim().is_empty() || name.len() > 200 {
                return Err(AdminError::Invalid("name must be 1-200 characters".into()));
            }
            am.name = Set(name.clone());
        }
        if let Some(v) = &p.purpose {
            am.purpose = Set(v.clone());
        }
        if let Some(v) = &p.justification {
            am.justification = Set(v.clone());
        }
        if let Some(v) = &p.owner {
            if !crate::agents::valid_owner(v) {
                return Err(AdminError::Invalid("owner must be an email address".into()));
            }
            am.owner = Set(v.clone());
        }
        if let Some(v) = &p.trust_level {
            let t = TrustLevel::parse(v).ok_or_else(|| {
                AdminError::Invalid("trust_level must be low, medium or high".into())
            })?;
            am.trust_level = Set(t.as_str().into());
        }
        if let Some(v) = &p.allowed_resources {
            let resources = self.check_resources(&tx, &env, v).await?;
            am.allowed_resources = Set(json_list(&resources));
        }
        if let Some(v) = &p.scope_ceiling {
            am.scope_ceiling = Set(check_scopes(v)?.join(" "));
        }
        if let Some(v) = p.token_ttl_cap {
            check_ttl(v)?;
            am.token_ttl_cap = Set(v);
        }
        if let Some(v) = p.session_lifetime_secs {
            check_session_secs(v)?;
            am.session_lifetime_secs = Set(v);
        }
        if let Some(v) = p.session_idle_secs {
            check_session_secs(v)?;
            am.session_idle_secs = Set(v);
        }
        if let Some(v) = &p.groups {
            let groups = crate::agents::check_groups(v).map_err(AdminError::Invalid)?;
            am.groups = Set((!groups.is_empty()).then(|| groups.join(" ")));
        }
        if p.jwks.is_some() || p.jwks_uri.is_some() {
            let jwks_in = match &p.jwks {
                Some(v) => v.clone(),
                None => old
                    .jwks
                    .as_deref()
                    .and_then(|j| serde_json::from_str(j).ok()),
            };
            let uri_in = match &p.jwks_uri {
                Some(v) => v.clone(),
                None => old.jwks_uri.clone(),
            };
            let (jwks, jwks_uri) = check_keys(method, jwks_in.as_ref(), uri_in.as_deref())?;
            am.jwks = Set(jwks);
            am.jwks_uri = Set(jwks_uri);
        }
        am.updated_at = Set(self.now);
        let model = am.update(&tx).await?;
        let changed: Vec<String> = [
            ("name", p.name.is_some()),
            ("purpose", p.purpose.is_some()),
            ("justification", p.justification.is_some()),
            ("owner", p.owner.is_some()),
            ("trust_level", p.trust_level.is_some()),
            ("allowed_resources", p.allowed_resources.is_some()),
            ("scope_ceiling", p.scope_ceiling.is_some()),
            ("token_ttl_cap", p.token_ttl_cap.is_some()),
            ("groups", p.groups.is_some()),
            ("jwks", p.jwks.is_some() || p.jwks_uri.is_some()),
        ]
        .iter()
        .filter(|(_, c)| *c)
        .map(|(n, _)| (*n).to_string())
        .collect();
        let ev = self
            .event(kinds::AGENT_UPDATED, id)
            .agent(id)
            .action("update")
            .detail("changed", Detail::List(changed))
            .detail_str("trust_level", model.trust_level.clone())
            .detail_str("owner", model.owner.clone())
            .detail_str("allowed_resources", model.allowed_resources.clone())
            .detail_str("scope_ceiling", model.scope_ceiling.clone());
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        agent_from_model(model).map_err(AdminError::Invalid)
    }

    pub async fn set_agent_status(
        &self,
        id: &str,
        status: AgentStatus,
    ) -> Result<Agent, AdminError> {
        let tx = self.store.begin().await?;
        let old = agent::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("agent {id}")))?;
        let mut am = old.into_active_model();
        am.status = Set(status.as_str().into());
        am.updated_at = Set(self.now);
        let model = am.update(&tx).await?;
        let ev = self
            .event(kinds::AGENT_STATUS_CHANGED, id)
            .agent(id)
            .action(status.as_str())
            .detail_str("status", status.as_str());
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        agent_from_model(model).map_err(AdminError::Invalid)
    }

    /// The kill switch, durably: suspends the agent, revokes every token it holds (an agent
    /// revocation with cutoff now) and ends its sessions, in one transaction.
    pub async fn kill_agent(
        &self,
        id: &str,
        until: i64,
    ) -> Result<(Agent, Revocation), AdminError> {
        let tx = self.store.begin().await?;
        let old = agent::Entity::find_by_id(id)
            .one(&tx)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("agent {id}")))?;
        let mut am = old.into_active_model();
        am.status = Set(AgentStatus::Suspended.as_str().into());
        am.updated_at = Set(self.now);
        let model = am.update(&tx).await?;
        let r = Revocation {
            kind: Kind::Agent,
            value: id.to_string(),
            at: self.now,
            until,
        };
        insert_revocation_tx(&tx, &r, Some(id)).await?;
        let ended = end_sessions_tx(&tx, Some(id), None, self.now).await?;
        let ev = self
            .event(kinds::AGENT_KILLED, id)
            .agent(id)
            .action("kill")
            .decision(audit::Decision::Permit)
            .detail("cutoff", Detail::Int(r.at))
            .detail(
                "sessions_ended",
                Detail::Int(i64::try_from(ended).unwrap_or(i64::MAX)),
            );
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((agent_from_model(model).map_err(AdminError::Invalid)?, r))
    }

    /// Persists a revocation (a session revocation also ends the session).
    pub async fn revoke(&self, r: &Revocation, client_id: Option<&str>) -> Result<(), AdminError> {
        if r.value.is_empty() || r.value.len() > 512 {
            return Err(AdminError::Invalid(
                "revocation value must be 1-512 characters".into(),
            ));
        }
        let tx = self.store.begin().await?;
        insert_revocation_tx(&tx, r, client_id).await?;
        if r.kind == Kind::Session {
            end_sessions_tx(&tx, None, Some(&r.value), self.now).await?;
        }
        let mut ev = self
            .event(kinds::TOKEN_REVOKED, &r.value)
            .action("revoke")
            .decision(audit::Decision::Permit)
            .detail_str("kind", r.kind.as_str())
            .detail("cutoff", Detail::Int(r.at))
            .detail("expires_at", Detail::Int(r.until));
        ev.agent = client_id.map(str::to_string);
        self.record(&tx, ev).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    pub async fn delete_agent(&self, id: &str) -> Result<(), AdminError> {
        let tx = self.store.begin().await?;
        let res = agent::Entity::delete_by_id(id).exec(&tx).await?;
        if res.rows_affected == 0 {
            return Err(AdminError::NotFound(format!("agent {id}")));
        }
        client_secret::Entity::delete_many()
            .filter(client_secret::Column::ClientId.eq(id))
            .exec(&tx)
            .await?;
        let ev = self
            .event(kinds::AGENT_DELETED, id)
            .agent(id)
            .action("delete");
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(())
    }

    /// A new admin API bearer token, shown once.
    pub async fn create_admin_token(&self, name: &str) -> Result<String, AdminError> {
        let token = secrets::generate(secrets::ADMIN_TOKEN_PREFIX);
        let tx = self.store.begin().await?;
        let id = secrets::random_id("adm_");
        admin_token::ActiveModel {
            id: Set(id.clone()),
            name: Set(name.to_string()),
            token_hash: Set(secrets::hex(&secrets::hash(&token))),
            created_at: Set(self.now),
        }
        .insert(&tx)
        .await?;
        let ev = self
            .event(kinds::ADMIN_TOKEN_CREATED, &id)
            .action("create")
            .detail_str("name", name)
            .detail_str("token_fingerprint", secrets::fingerprint(&token));
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(token)
    }

    /// Adds a signing key that starts signing `lead_secs` from now (published at once).
    pub async fn add_key(
        &self,
        alg: &str,
        lead_secs: i64,
        kek: &Kek,
    ) -> Result<signing_key::Model, AdminError> {
        if lead_secs < 0 {
            return Err(AdminError::Invalid("lead time must not be negative".into()));
        }
        if !matches!(alg, "ES256" | "EdDSA" | "RS256") {
            return Err(AdminError::Invalid(
                "alg must be ES256, EdDSA or RS256".into(),
            ));
        }
        let k = keys::generate(alg, kek)?;
        let tx = self.store.begin().await?;
        let model = signing_key::ActiveModel {
            kid: Set(k.kid),
            alg: Set(k.alg),
            private_key: Set(k.sealed_private),
            public_jwk: Set(k.public_jwk.to_string()),
            created_at: Set(self.now),
            activates_at: Set(self.now + lead_secs),
        }
        .insert(&tx)
        .await?;
        let ev = self
            .event(kinds::KEY_ADDED, &model.kid)
            .action("create")
            .detail_str("alg", model.alg.clone())
            .detail("activates_at", Detail::Int(model.activates_at));
        self.record(&tx, ev).await?;
        bump_registry_version(&tx).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(model)
    }

    /// Makes sure a signing key exists (first start).
    pub async fn ensure_key(&self, alg: &str, kek: &Kek) -> Result<(), AdminError> {
        if self.store.list_keys().await?.is_empty() {
            self.add_key(alg, 0, kek).await?;
        }
        Ok(())
    }
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn check_scopes(raw: &[String]) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::new();
    for s in raw.iter().flat_map(|s| s.split_whitespace()) {
        if !crate::agents::valid_scope_token(s) {
            return Err(AdminError::Invalid(format!(
                "scope {s:?} must be tools:<tool> or tools:read|write|execute"
            )));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

fn check_session_secs(v: Option<i64>) -> Result<(), AdminError> {
    if v.is_some_and(|t| !(60..=30 * 86_400).contains(&t)) {
        return Err(AdminError::Invalid(
            "session lifetimes must be between 60 seconds and 30 days".into(),
        ));
    }
    Ok(())
}

fn check_ttl(v: Option<i64>) -> Result<(), AdminError> {
    if v.is_some_and(|t| !(1..=86_400).contains(&t)) {
        return Err(AdminError::Invalid(
            "token_ttl_cap must be between 1 and 86400 seconds".into(),
        ));
    }
    Ok(())
}

/// `private_key_jwt` needs exactly one of an inline public JWKS or an https `jwks_uri`
/// (http only on loopback); secret methods take neither.
fn check_keys(
    method: AuthMethod,
    jwks: Option<&serde_json::Value>,
    jwks_uri: Option<&str>,
) -> Result<(Option<String>, Option<String>), AdminError> {
    let inv = |s: &str| AdminError::Invalid(s.to_string());
    if method.uses_secret() {
        if jwks.is_some() || jwks_uri.is_some() {
            return Err(inv("jwks and jwks_uri are only for private_key_jwt"));
        }
        return Ok((None, None));
    }
    match (jwks, jwks_uri) {
        (Some(j), None) => {
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(j.clone())
                .map_err(|e| AdminError::Invalid(format!("jwks is not a JWK Set: {e}")))?;
            if set.keys.is_empty() {
                return Err(inv("jwks has no keys"));
            }
            let private = j["keys"]
                .as_array()
                .is_some_and(|ks| ks.iter().any(|k| k.get("d").is_some()));
            if private {
                return Err(inv("jwks must hold public keys only (found a private key)"));
            }
            for k in &set.keys {
                jsonwebtoken::DecodingKey::from_jwk(k)
                    .map_err(|e| AdminError::Invalid(format!("jwks key unusable: {e}")))?;
            }
            Ok((Some(j.to_string()), None))
        }
        (None, Some(u)) => {
            let url =
                url::Url::parse(u).map_err(|e| AdminError::Invalid(format!("jwks_uri: {e}")))?;
            let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
            if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
                return Err(inv("jwks_uri must be https (http only on loopback)"));
            }
            Ok((None, Some(url.to_string())))
        }
        (Some(_), Some(_)) => Err(inv("give jwks or jwks_uri, not both")),
        (None, None) => Err(inv("private_key_jwt needs jwks or jwks_uri")),
    }
}
