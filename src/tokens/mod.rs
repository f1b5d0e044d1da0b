//! Access tokens: RFC 9068 JWTs signed with the active key, and their verification.
pub mod keys;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// RFC 9068 §2.2 claims, plus `env` (the agent's environment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The agent session this token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// RFC 8693 §4.1: the current actor, with the prior actors nested below (delegation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// A human's approval of this exact transaction (CIBA grant, src/approvals/).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Box<ApprovalClaims>>,
    /// The person a token of an MCP client is for (authorization-code grant and refresh), so
    /// that policy can decide on their token (AuthZEN) without looking them up.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub person: Option<Box<PersonClaims>>,
}

/// Who the person is, in a token an MCP client holds for them: `email` (OpenID Connect Core
/// §5.1) and `roles` (RFC 9068 §2.2.3.1; their Mandate roles at issue time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PersonClaims {
    pub email: String,
    pub roles: Vec<String>,
}

/// What a token issued on a human's approval carries (RFC 9396, RFC 9470).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalClaims {
    pub authorization_details: serde_json::Value,
    pub acr: String,
    pub auth_time: i64,
    /// The approving person's id.
    pub approver: String,
}

/// An RFC 8693 §4.1 `act` claim: who acts, and who acted before (nested). Only the outermost
/// actor is the current one; the nested ones are informational.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Act {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Act>>,
}

impl Act {
    /// Number of actors in the chain.
    pub fn depth(&self) -> usize {
        1 + self.act.as_ref().map_or(0, |a| a.depth())
    }

    /// Every actor's `sub`, current first.
    pub fn subjects(&self) -> Vec<&str> {
        let mut out = vec![self.sub.as_str()];
        let mut cur = &self.act;
        while let Some(a) = cur {
            out.push(a.sub.as_str());
            cur = &a.act;
        }
        out
    }
}

/// Why one of our tokens does not verify. Never sent to a client: introspection says
/// `active: false` and nothing more.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a JWT or not typ at+jwt")]
    Malformed,
    #[error("unknown or retired kid")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
}

/// A memo of tokens whose signature this node has already checked, keyed by the SHA-256 of the
/// whole token: introspection of the same token (the common case: a server checks each call)
/// skips the signature. Times, key retirement and revocation are still checked on every hit.
/// One shard: token hash -> (claims, kid of the key that signed it).
type Shard = Mutex<HashMap<[u8; 32], (Arc<AccessClaims>, Arc<str>)>>;

pub struct VerifiedCache {
    shards: Vec<Shard>,
    per_shard: usize,
}

impl Default for VerifiedCache {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl VerifiedCache {
    pub fn new(capacity: usize) -> Self {
        let n = 16;
        Self {
            shards: (0..n).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: (capacity / n).max(1),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> Option<&Shard> {
        self.shards.get(usize::from(key[0]) % self.shards.len())
    }

    /// Verifies `token` as [`verify`] does, using and filling the memo.
    pub fn verify(
        &self,
        token: &str,
        keys: &keys::KeySet,
        issuer: &str,
        now: i64,
        max_ttl: i64,
    ) -> Result<Arc<AccessClaims>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let key = crate::secrets::hash(token);
        let hit = self
            .shard(&key)
            .and_then(|m| m.lock().ok()?.get(&key).cloned());
        if let Some((claims, kid)) = hit {
            if keys.verifying(&kid, now, max_ttl).is_none() {
                return Err(TokenError::UnknownKey);
            }
            check_times(&claims, now)?;
            return Ok(claims);
        }
        let (claims, kid) = verify_signed(token, keys, issuer, now, max_ttl)?;
        let claims = Arc::new(claims);
        if let Some(m) = self.shard(&key)
            && let Ok(mut m) = m.lock()
        {
            if m.len() >= self.per_shard {
                m.retain(|_, (c, _)| c.exp > now);
                if m.len() >= self.per_shard {
                    m.clear();
                }
            }
            m.insert(key, (claims.clone(), kid.into()));
        }
        Ok(claims)
    }
}

const MAX_TOKEN_LEN: usize = 8192;

fn check_times(c: &AccessClaims, now: i64) -> Result<(), TokenError> {
    if c.exp <= now {
        return Err(TokenError::Expired);
    }
    if c.nbf > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

/// Verifies one of our access tokens: header `typ` and `kid`, the key's own algorithm (never
/// the header's choice), signature, issuer and times.
pub fn verify(
    token: &str,
    keys: &keys::KeySet,
    issuer: &str,
    now: i64,
    max_ttl: i64,
) -> Result<AccessClaims, TokenError> {
    verify_signed(token, keys, issuer, now, max_ttl).map(|(c, _)| c)
}

fn verify_signed(
    token: &str,
    keys: &keys::KeySet,
    issuer: &str,
    now: i64,
    max_ttl: i64,
) -> Result<(AccessClaims, String), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if !header.typ.as_deref().is_some_and(|t| {
        t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
    }) {
        return Err(TokenError::Malformed);
    }
    let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
    let key = keys
        .verifying(kid, now, max_ttl)
        .ok_or(TokenError::UnknownKey)?;
    if header.alg != key.alg {
        return Err(TokenError::Signature);
    }
    let mut v = Validation::new(key.alg);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let data =
        jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &v).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Signature,
                _ => TokenError::Malformed,
            }
        })?;
    let c = data.claims;
    if c.iss != issuer {
        return Err(TokenError::Issuer);
    }
    check_times(&c, now)?;
    Ok((c, kid.to_string()))
}
