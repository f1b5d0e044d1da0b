//! The registry snapshot each node serves from: agents, MCP servers, client secret hashes,
//! admin token hashes and signing keys, read from the database in one transaction and swapped
//! in whole. The hot path never touches the database; writes bump a version that every node
//! polls, so the CLI, the admin API and other nodes are seen within one refresh interval.
pub mod admin;

use crate::agents::{Agent, AgentStatus, AuthMethod, TrustLevel};
use crate::resources::McpServer;
use crate::secrets;
use crate::store::RegistryRows;
use crate::store::entities::{agent, mcp_server};
use crate::tokens::keys::{Kek, KeySet, SigningKey};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct StoredSecret {
    hash: [u8; 32],
    expires_at: Option<i64>,
}

/// An immutable view of the registry.
#[derive(Debug, Default)]
pub struct Registry {
    pub version: i64,
    agents: HashMap<String, Arc<Agent>>,
    servers: HashMap<String, Arc<McpServer>>,
    by_resource: HashMap<String, Arc<McpServer>>,
    secrets: HashMap<String, Vec<StoredSecret>>,
    admin_tokens: HashMap<[u8; 32], String>,
    pub keys: KeySet,
    /// The policy set in force, compiled with this snapshot's agents and tools.
    pub policy: Arc<crate::policy::Engine>,
}

impl Registry {
    /// Builds a snapshot; rows that do not parse are left out (fail closed) and logged.
    pub fn from_rows(rows: RegistryRows, kek: &Kek) -> Self {
        let mut reg = Registry {
            version: rows.version,
            ..Default::default()
        };
        for m in rows.servers {
            match server_from_model(m) {
                Ok(s) => {
                    let s = Arc::new(s);
                    reg.by_resource.insert(s.resource.clone(), s.clone());
                    reg.servers.insert(s.id.clone(), s);
                }
                Err(e) => tracing::error!(error = %e, "skipping unreadable MCP server row"),
            }
        }
        for m in rows.agents {
            match agent_from_model(m) {
                Ok(a) => {
                    reg.agents.insert(a.id.clone(), Arc::new(a));
                }
                Err(e) => tracing::error!(error = %e, "skipping unreadable agent row"),
            }
        }
        for s in rows.secrets {
            if let Some(hash) = secrets::parse_hex32(&s.secret_hash) {
                reg.secrets
                    .entry(s.client_id)
                    .or_default()
                    .push(StoredSecret {
                        hash,
                        expires_at: s.expires_at,
                    });
            }
        }
        for t in rows.admin_tokens {
            if let Some(hash) = secrets::parse_hex32(&t.token_hash) {
                reg.admin_tokens.insert(hash, t.id);
            }
        }
        for k in rows.keys {
            match SigningKey::load(
                &k.kid,
                &k.alg,
                &k.private_key,
                &k.public_jwk,
                k.created_at,
                k.activates_at,
                kek,
            ) {
                Ok(key) => reg.keys.keys.push(Arc::new(key)),
                Err(e) => tracing::error!(kid = %k.kid, error = %e, "skipping signing key"),
            }
        }
        reg.policy = Arc::new(match &rows.policy {
            Some(p) => crate::policy::Engine::build(p.version, Some(&p.source), &reg),
            None => crate::policy::Engine::build(0, None, &reg),
        });
        reg
    }

    pub fn agent(&self, id: &str) -> Option<&Arc<Agent>> {
        self.agents.get(id)
    }

    pub fn server(&self, id: &str) -> Option<&Arc<McpServer>> {
        self.servers.get(id)
    }

    pub fn server_by_resource(&self, resource: &str) -> Option<&Arc<McpServer>> {
        self.by_resource.get(resource)
    }

    pub fn agents(&self) -> impl Iterator<Item = &Arc<Agent>> {
        self.agents.values()
    }

    pub fn servers(&self) -> impl Iterator<Item = &Arc<McpServer>> {
        self.servers.values()
    }

    /// Whether `secret` is a current secret of `client_id`, in constant time per stored hash.
    /// Unknown clients cost the same hash as known ones.
    pub fn verify_secret(&self, client_id: &str, secret: &str, now: i64) -> bool {
        let presented = secrets::hash(secret);
        let Some(stored) = self.secrets.get(client_id) else {
            return false;
        };
        let mut ok = false;
        for s in stored {
            let live = s.expires_at.is_none_or(|e| e > now);
            ok |= secrets::hashes_equal(&s.hash, &presented) && live;
        }
        ok
    }

    /// The admin token id for a presented bearer token.
    pub fn admin_token(&self, token: &str) -> Option<&str> {
        if !secrets::well_formed(secrets::ADMIN_TOKEN_PREFIX, token) {
            return None;
        }
        self.admin_tokens
            .get(&secrets::hash(token))
            .map(String::as_str)
    }
}

pub fn server_from_model(m: mcp_server::Model) -> Result<McpServer, String> {
    let tools: Vec<crate::resources::Tool> =
        serde_json::from_str(&m.tools).map_err(|e| format!("server {}: tools: {e}", m.id))?;
    Ok(McpServer {
        tools: tools.into_iter().map(|t| (t.name.clone(), t)).collect(),
        id: m.id,
        resource: m.resource_uri,
        name: m.name,
        environment: m.environment,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

pub fn agent_from_model(m: agent::Model) -> Result<Agent, String> {
    let ctx = |f: &str| format!("agent {}: bad {f}", m.id);
    Ok(Agent {
        trust_level: TrustLevel::parse(&m.trust_level).ok_or_else(|| ctx("trust_level"))?,
        status: match m.status.as_str() {
            "active" => AgentStatus::Active,
            "suspended" => AgentStatus::Suspended,
            _ => return Err(ctx("status")),
        },
        auth_method: AuthMethod::parse(&m.auth_method).ok_or_else(|| ctx("auth_method"))?,
        allowed_resources: serde_json::from_str(&m.allowed_resources)
            .map_err(|_| ctx("allowed_resources"))?,
        scope_ceiling: m
            .scope_ceiling
            .split_whitespace()
            .map(String::from)
            .collect(),
        jwks: match &m.jwks {
            Some(j) => Some(serde_json::from_str(j).map_err(|_| ctx("jwks"))?),
            None => None,
        },
        id: m.id,
        name: m.name,
        purpose: m.purpose,
        justification: m.justification,
        owner: m.owner,
        environment: m.environment,
        token_ttl_cap: m.token_ttl_cap,
        jwks_uri: m.jwks_uri,
        session_lifetime_secs: m.session_lifetime_secs,
        session_idle_secs: m.session_idle_secs,
        groups: m
            .groups
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect(),
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}
