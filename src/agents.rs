//! AI agents: the OAuth clients that get tokens for MCP servers.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TrustLevel {
    Low,
    Medium,
    High,
}

impl TrustLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Active,
    Suspended,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// Token endpoint authentication method (RFC 7591 §2 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "private_key_jwt" => Some(Self::PrivateKeyJwt),
            _ => None,
        }
    }
    pub fn uses_secret(self) -> bool {
        !matches!(self, Self::PrivateKeyJwt)
    }
}

/// A registered agent. Its id is its OAuth `client_id` and the `sub` of its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub purpose: String,
    pub justification: String,
    pub owner: String,
    pub trust_level: TrustLevel,
    pub environment: String,
    /// Canonical resource URIs of the MCP servers this agent may get tokens for.
    pub allowed_resources: Vec<String>,
    /// The most this agent may ever get on any server: `tools:<name>` and `tools:<class>` scopes.
    pub scope_ceiling: Vec<String>,
    /// Upper bound on its tokens' lifetime, in seconds.
    pub token_ttl_cap: Option<i64>,
    pub status: AgentStatus,
    pub auth_method: AuthMethod,
    /// Inline JWKS for `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
    pub jwks_uri: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Absolute session lifetime, seconds (deployment default when absent).
    pub session_lifetime_secs: Option<i64>,
    /// Session idle timeout, seconds (deployment default when absent).
    pub session_idle_secs: Option<i64>,
    /// Groups (teams and the like) policies can name: `principal.groups.contains("payments")`.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// What an operator gives to register an agent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: String,
    #[serde(default)]
    pub purpose: String,
    #[serde(default)]
    pub justification: String,
    pub owner: String,
    #[serde(default = "default_trust")]
    pub trust_level: String,
    pub environment: String,
    #[serde(default)]
    pub allowed_resources: Vec<String>,
    /// Space-separated or list form both accepted by the CLI; the API takes a list.
    #[serde(default)]
    pub scope_ceiling: Vec<String>,
    #[serde(default)]
    pub token_ttl_cap: Option<i64>,
    #[serde(default = "default_method")]
    pub auth_method: String,
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub session_lifetime_secs: Option<i64>,
    #[serde(default)]
    pub session_idle_secs: Option<i64>,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Default for NewAgent {
    fn default() -> Self {
        Self {
            name: String::new(),
            purpose: String::new(),
            justification: String::new(),
            owner: String::new(),
            trust_level: default_trust(),
            environment: String::new(),
            allowed_resources: Vec::new(),
            scope_ceiling: Vec::new(),
            token_ttl_cap: None,
            auth_method: default_method(),
            jwks: None,
            jwks_uri: None,
            session_lifetime_secs: None,
            session_idle_secs: None,
            groups: Vec::new(),
        }
    }
}

fn default_trust() -> String {
    "low".into()
}
fn default_method() -> String {
    "client_secret_basic".into()
}

/// Changes to an agent (admin API `PATCH`); absent fields stay as they are.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub purpose: Option<String>,
    pub justification: Option<String>,
    pub owner: Option<String>,
    pub trust_level: Option<String>,
    pub allowed_resources: Option<Vec<String>>,
    pub scope_ceiling: Option<Vec<String>>,
    pub token_ttl_cap: Option<Option<i64>>,
    pub jwks: Option<Option<serde_json::Value>>,
    pub jwks_uri: Option<Option<String>>,
    pub session_lifetime_secs: Option<Option<i64>>,
    pub session_idle_secs: Option<Option<i64>>,
    pub groups: Option<Vec<String>>,
}

/// Checks and normalises a group list: names of A-Z a-z 0-9 `_ . - :`, at most 64 groups,
/// sorted, no duplicates.
pub fn check_groups(raw: &[String]) -> Result<Vec<String>, String> {
    if raw.len() > 64 {
        return Err("at most 64 groups".into());
    }
    let mut out = Vec::with_capacity(raw.len());
    for g in raw {
        let ok = (1..=64).contains(&g.len())
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !ok {
            return Err(format!(
                "group {g:?} must be 1-64 characters of A-Z a-z 0-9 _ . - :"
            ));
        }
        out.push(g.clone());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// A scope this server understands: `tools:<name>` or `tools:<class>`.
pub fn valid_scope_token(s: &str) -> bool {
    s.strip_prefix("tools:")
        .is_some_and(crate::resources::valid_name)
}

/// Loose check of an owner address: something@something, no spaces.
pub fn valid_owner(s: &str) -> bool {
    s.len() <= 254
        && !s.chars().any(char::is_whitespace)
        && s.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
}
