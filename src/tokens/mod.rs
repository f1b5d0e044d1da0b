//! Access tokens: RFC 9068 JWTs signed with the active key, and their verification.
pub mod keys;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
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

/// Verifies one of our access tokens: header `typ` and `kid`, the key's own algorithm (never
/// the header's choice), signature, issuer and times.
pub fn verify(
    token: &str,
    keys: &keys::KeySet,
    issuer: &str,
    now: i64,
    max_ttl: i64,
) -> Result<AccessClaims, TokenError> {
    if token.len() > 8192 {
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
    if c.exp <= now {
        return Err(TokenError::Expired);
    }
    if c.nbf > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    Ok(c)
}
