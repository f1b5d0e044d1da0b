//! Opaque secrets: a readable prefix, 256 random bits and a checksum, stored only as SHA-256.
//! High-entropy secrets need no slow hash, which keeps the token endpoint fast.
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

/// Prefix of agent and MCP server client secrets.
pub const CLIENT_SECRET_PREFIX: &str = "mnd_cs_";
/// Prefix of admin API bearer tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "mnd_adm_";

/// `n` random bytes from the system CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // SystemRandom::fill only fails if the OS has no randomness source at all; a zeroed buffer
    // would be a disaster, so fall back to a UUIDv4 (itself from getrandom) per 16 bytes.
    if SystemRandom::new().fill(&mut out).is_err() {
        for chunk in out.chunks_mut(16) {
            let u = uuid::Uuid::new_v4();
            chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
        }
    }
    out
}

/// A random identifier with a prefix, e.g. `agt_3f0c...` (96 bits, hex).
pub fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", hex(&random_bytes::<12>()))
}

fn checksum(body: &str) -> String {
    let d = digest(&SHA256, body.as_bytes());
    hex(&d.as_ref()[..3])
}

/// A new secret: `prefix` + base64url(32 random bytes) + 6 hex checksum characters.
pub fn generate(prefix: &str) -> String {
    let body = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
    let sum = checksum(&body);
    body + &sum
}

/// Whether a presented secret is well formed (prefix and checksum); lets secret scanners and
/// typos fail fast, before any lookup.
pub fn well_formed(prefix: &str, secret: &str) -> bool {
    secret.len() == prefix.len() + 43 + 6
        && secret.starts_with(prefix)
        && secret.is_char_boundary(secret.len() - 6)
        && {
            let (body, sum) = secret.split_at(secret.len() - 6);
            checksum(body).as_bytes().ct_eq(sum.as_bytes()).into()
        }
}

/// SHA-256 of a secret, as stored.
pub fn hash(secret: &str) -> [u8; 32] {
    let d = digest(&SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Parses a 64-character hex SHA-256.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// A short, non-reversible fingerprint for logs and audit records (never the secret itself).
pub fn fingerprint(secret: &str) -> String {
    hex(&hash(secret)[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_well_formed_and_distinct() {
        let a = generate(CLIENT_SECRET_PREFIX);
        let b = generate(CLIENT_SECRET_PREFIX);
        assert_ne!(a, b);
        assert!(well_formed(CLIENT_SECRET_PREFIX, &a));
        assert!(!well_formed(ADMIN_TOKEN_PREFIX, &a));
        let mut typo = a.clone();
        typo.replace_range(10..11, if &a[10..11] == "x" { "y" } else { "x" });
        assert!(!well_formed(CLIENT_SECRET_PREFIX, &typo));
    }

    #[test]
    fn hex_round_trip() {
        let h = hash("abc");
        assert_eq!(parse_hex32(&hex(&h)), Some(h));
        assert!(parse_hex32("zz").is_none());
    }
}
