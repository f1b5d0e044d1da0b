//! Trusted external issuers: identity providers whose JWTs Mandate accepts as token-exchange
//! subject tokens (RFC 8693), as ID-JAGs (MCP enterprise-managed authorization) or as workload
//! identities (MCP workload identity federation). Each is configured with its keys (inline JWKS
//! or `jwks_uri`), the algorithms it may use (never `none` or an HMAC), and how its claims map
//! to a human (subject and roles) or to a registered agent (workload rules).
use super::client_auth::{ASSERTION_ALGS, RemoteJwks};
use crate::registry::Registry;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// Largest external JWT accepted, in bytes.
pub const MAX_JWT_LEN: usize = 16 * 1024;

/// What an issuer is trusted for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TrustKind {
    /// Its `jwt` / `id_token` tokens may be the subject of a token exchange (a human).
    SubjectToken,
    /// It issues ID-JAGs (`typ: oauth-id-jag+jwt`) redeemed with the jwt-bearer grant.
    IdJag,
    /// Its workload JWTs (SPIFFE JWT-SVIDs, Kubernetes service-account tokens) authenticate
    /// agents with the jwt-bearer grant, without a client registration.
    Workload,
}

impl TrustKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SubjectToken => "subject-token",
            Self::IdJag => "id-jag",
            Self::Workload => "workload",
        }
    }
}

/// One workload claim rule: a JWT whose `claim` matches `pattern` is the agent `agent`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRule {
    /// The claim to match; default `sub` (a SPIFFE ID for JWT-SVIDs).
    #[serde(default = "default_sub")]
    pub claim: String,
    /// Exact value, or a pattern where `*` matches within one path segment (no `/`) and `**`
    /// matches anything, e.g. `spiffe://example.org/ns/prod/sa/*`.
    pub pattern: String,
    /// The agent: its client id, or its name when exactly one agent has that name.
    pub agent: String,
}

/// One `[[trusted_issuers]]` entry of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The `iss` value, byte-exact.
    pub issuer: String,
    pub kind: TrustKind,
    /// Where its JWKS is fetched (cached five minutes, refetched on an unknown `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Or its JWKS inline, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Signature algorithms accepted from it.
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// Subject tokens: `aud` values accepted besides Mandate's issuer and token endpoint
    /// (e.g. the agent's client id at the identity provider).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Subject tokens and ID-JAGs: the claim naming the human (`sub`, `email`, ...).
    #[serde(default = "default_sub")]
    pub subject_claim: String,
    /// Subject tokens and ID-JAGs: the claim with the human's roles (array or space-separated).
    #[serde(default = "default_roles")]
    pub roles_claim: String,
    /// Workload issuers: claim rules mapping a workload to an agent (first match wins).
    #[serde(default)]
    pub workloads: Vec<WorkloadRule>,
}

fn default_sub() -> String {
    "sub".into()
}
fn default_roles() -> String {
    "roles".into()
}
fn default_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

/// Checks the configured issuers; the message names the problem.
pub fn validate(issuers: &[TrustedIssuer]) -> Result<(), String> {
    for (i, t) in issuers.iter().enumerate() {
        let at = format!("trusted_issuers[{i}] ({})", t.issuer);
        if t.issuer.is_empty() {
            return Err(format!("{at}: issuer is empty"));
        }
        if issuers[..i]
            .iter()
            .any(|o| o.issuer == t.issuer && o.kind == t.kind)
        {
            return Err(format!("{at}: issuer listed twice for {}", t.kind.as_str()));
        }
        match (&t.jwks_uri, &t.jwks) {
            (Some(u), None) => {
                let url = url::Url::parse(u).map_err(|e| format!("{at}: jwks_uri: {e}"))?;
                let local = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
                if url.scheme() != "https" && !(url.scheme() == "http" && local) {
                    return Err(format!("{at}: jwks_uri must be https"));
                }
            }
            (None, Some(j)) => {
                serde_json::from_str::<JwkSet>(j).map_err(|e| format!("{at}: jwks: {e}"))?;
            }
            _ => return Err(format!("{at}: give exactly one of jwks_uri and jwks")),
        }
        if t.algorithms.is_empty() {
            return Err(format!("{at}: algorithms is empty"));
        }
        if let Some(a) = t
            .algorithms
            .iter()
            .find(|a| !ASSERTION_ALGS.contains(&a.as_str()))
        {
            return Err(format!(
                "{at}: algorithm {a} is not allowed (asymmetric only: {})",
                ASSERTION_ALGS.join(", ")
            ));
        }
        match t.kind {
            TrustKind::Workload if t.workloads.is_empty() => {
                return Err(format!("{at}: a workload issuer needs workloads rules"));
            }
            TrustKind::Workload => {}
            _ if !t.workloads.is_empty() => {
                return Err(format!("{at}: workloads rules only apply to kind workload"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The issuers in force, with inline key sets parsed once.
#[derive(Debug, Default)]
pub struct Trust {
    issuers: Vec<(TrustedIssuer, Option<Arc<JwkSet>>)>,
}

/// Why an external JWT was not accepted (internal: for the audit log, never the wire).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("JWT malformed or too large")]
    Malformed,
    #[error("issuer not trusted for {0}")]
    UntrustedIssuer(&'static str),
    #[error("alg {0} not allowed")]
    Alg(String),
    #[error("unknown kid")]
    UnknownKid,
    #[error("bad signature")]
    Signature,
    #[error("issuer keys unavailable: {0}")]
    Keys(String),
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("missing claim {0}")]
    Missing(&'static str),
}

/// A verified external JWT.
#[derive(Debug, Clone)]
pub struct Verified<'a> {
    pub issuer: &'a TrustedIssuer,
    /// The JOSE header `typ`, when present.
    pub typ: Option<String>,
    pub claims: Value,
}

impl Verified<'_> {
    pub fn str(&self, name: &str) -> Option<&str> {
        self.claims[name].as_str()
    }

    /// Whether `aud` (a string or an array) contains one of `accepted`.
    pub fn aud_in(&self, accepted: &[&str]) -> bool {
        match &self.claims["aud"] {
            Value::String(a) => accepted.contains(&a.as_str()),
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| accepted.contains(&a)),
            _ => false,
        }
    }

    /// The human this token names, and their roles, by the issuer's claim mapping.
    pub fn human(&self) -> Option<(String, Vec<String>)> {
        let who = self.claims[self.issuer.subject_claim.as_str()]
            .as_str()
            .filter(|s| !s.is_empty() && s.len() <= 256)?
            .to_string();
        let roles = match &self.claims[self.issuer.roles_claim.as_str()] {
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            Value::String(s) => s
                .split(' ')
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        Some((who, roles.into_iter().take(64).collect()))
    }

    /// The agent a workload token maps to by the issuer's rules (first match wins).
    pub fn workload_agent(&self, registry: &Registry) -> Option<Arc<crate::agents::Agent>> {
        let rule = self.issuer.workloads.iter().find(|r| {
            self.claims[r.claim.as_str()]
                .as_str()
                .is_some_and(|v| glob(&r.pattern, v))
        })?;
        if let Some(a) = registry.agent(&rule.agent) {
            return Some(a.clone());
        }
        let mut named = registry.agents().filter(|a| a.name == rule.agent);
        match (named.next(), named.next()) {
            (Some(a), None) => Some(a.clone()),
            _ => None,
        }
    }
}

/// `*` matches within one `/`-separated segment, `**` matches anything; the rest is exact.
pub fn glob(pattern: &str, value: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("**") {
        return (0..=value.len())
            .filter(|&i| value.is_char_boundary(i))
            .any(|i| glob(rest, &value[i..]));
    }
    if let Some(rest) = pattern.strip_prefix('*') {
        let seg = value.find('/').unwrap_or(value.len());
        return (0..=seg)
            .filter(|&i| value.is_char_boundary(i))
            .any(|i| glob(rest, &value[i..]));
    }
    match (pattern.chars().next(), value.chars().next()) {
        (None, None) => true,
        (Some(p), Some(v)) if p == v => glob(&pattern[p.len_utf8()..], &value[v.len_utf8()..]),
        _ => false,
    }
}

fn header(token: &str) -> Result<Value, TrustError> {
    let h = token.split('.').next().ok_or(TrustError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| TrustError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TrustError::Malformed)
}

impl Trust {
    pub fn new(issuers: &[TrustedIssuer]) -> Self {
        Self {
            issuers: issuers
                .iter()
                .map(|t| {
                    let set = t
                        .jwks
                        .as_deref()
                        .and_then(|j| serde_json::from_str::<JwkSet>(j).ok())
                        .map(Arc::new);
                    (t.clone(), set)
                })
                .collect(),
        }
    }

    pub fn any(&self, kind: TrustKind) -> bool {
        self.issuers.iter().any(|(t, _)| t.kind == kind)
    }

    /// The unverified `iss` and header `typ` of a JWT: enough to choose how to check it.
    pub fn peek(token: &str) -> Result<(String, Option<String>), TrustError> {
        if token.len() > MAX_JWT_LEN || token.split('.').count() != 3 {
            return Err(TrustError::Malformed);
        }
        let h = header(token)?;
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| TrustError::Malformed)?;
        let iss = claims["iss"]
            .as_str()
            .ok_or(TrustError::Missing("iss"))?
            .to_string();
        Ok((iss, h["typ"].as_str().map(String::from)))
    }

    /// Verifies a JWT from an issuer trusted for `kind`: its algorithm on the issuer's
    /// allow-list (read from the raw header, so `none` and HMAC are refused by name), the
    /// signature with one of its keys (by `kid`), `exp` (required), `nbf` and `iat` with
    /// `skew`, and the presence of `iss` and `sub`. Audience is the caller's to check.
    pub async fn verify(
        &self,
        remote: &RemoteJwks,
        token: &str,
        kind: TrustKind,
        now: i64,
        skew: i64,
    ) -> Result<Verified<'_>, TrustError> {
        let (iss, typ) = Self::peek(token)?;
        let (issuer, inline) = self
            .issuers
            .iter()
            .find(|(t, _)| t.kind == kind && t.issuer == iss)
            .ok_or(TrustError::UntrustedIssuer(kind.as_str()))?;
        let h = header(token)?;
        let alg_name = h["alg"].as_str().unwrap_or("");
        if !issuer.algorithms.iter().any(|a| a == alg_name) || !ASSERTION_ALGS.contains(&alg_name) {
            return Err(TrustError::Alg(alg_name.chars().take(16).collect()));
        }
        let alg: Algorithm = alg_name
            .parse()
            .map_err(|_| TrustError::Alg(alg_name.chars().take(16).collect()))?;
        let kid = h["kid"].as_str();
        let claims = match (inline, &issuer.jwks_uri) {
            (Some(set), _) => try_set(set, token, alg, kid)?,
            (None, Some(uri)) => {
                let set = remote
                    .get(uri, now, false)
                    .await
                    .map_err(TrustError::Keys)?;
                match try_set(&set, token, alg, kid) {
                    Err(TrustError::UnknownKid) => {
                        // The issuer may have rotated: fetch again (rate limited).
                        let set = remote.get(uri, now, true).await.map_err(TrustError::Keys)?;
                        try_set(&set, token, alg, kid)?
                    }
                    other => other?,
                }
            }
            (None, None) => return Err(TrustError::Keys("no keys configured".into())),
        };
        let exp = claims["exp"].as_i64().ok_or(TrustError::Missing("exp"))?;
        if exp + skew <= now {
            return Err(TrustError::Expired);
        }
        if let Some(nbf) = claims["nbf"].as_i64()
            && nbf > now + skew
        {
            return Err(TrustError::NotYetValid);
        }
        if let Some(iat) = claims["iat"].as_i64()
            && iat > now + skew
        {
            return Err(TrustError::IssuedInFuture);
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err(TrustError::Missing("sub"));
        }
        Ok(Verified {
            issuer,
            typ,
            claims,
        })
    }
}

fn try_set(
    set: &JwkSet,
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
) -> Result<Value, TrustError> {
    let candidates: Vec<_> = set
        .keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
        // A key that names its algorithm is used with that algorithm only.
        .filter(|k| {
            k.common
                .key_algorithm
                .is_none_or(|ka| format!("{ka:?}") == format!("{alg:?}"))
        })
        .take(10)
        .collect();
    if candidates.is_empty() {
        return Err(TrustError::UnknownKid);
    }
    let mut v = Validation::new(alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    for k in candidates {
        let Ok(dk) = DecodingKey::from_jwk(k) else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<Value>(token, &dk, &v) {
            return Ok(data.claims);
        }
    }
    Err(TrustError::Signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = "spiffe://example.org/ns/*/sa/agent";
        assert!(glob(p, "spiffe://example.org/ns/prod/sa/agent"));
        assert!(!glob(p, "spiffe://example.org/ns/prod/x/sa/agent"));
        assert!(glob("spiffe://example.org/**", "spiffe://example.org/a/b"));
        assert!(!glob("spiffe://example.org/a", "spiffe://example.org/ab"));
        assert!(glob("exact", "exact"));
        assert!(!glob("spiffe://x/*", "spiffe://x/a/b"));
    }

    #[test]
    fn hmac_and_none_are_refused_in_config() {
        let t = |alg: &str| TrustedIssuer {
            issuer: "https://idp.example".into(),
            kind: TrustKind::SubjectToken,
            jwks_uri: None,
            jwks: Some(r#"{"keys":[]}"#.into()),
            algorithms: vec![alg.into()],
            audiences: vec![],
            subject_claim: "sub".into(),
            roles_claim: "roles".into(),
            workloads: vec![],
        };
        assert!(validate(&[t("HS256")]).is_err());
        assert!(validate(&[t("none")]).is_err());
        assert!(validate(&[t("ES256")]).is_ok());
    }
}
