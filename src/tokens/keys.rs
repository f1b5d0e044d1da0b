//! Signing keys: generation (ES256 default, EdDSA, RS256), encryption at rest, the published
//! JWKS and the rotation schedule.
//!
//! Rotation: a new key is published at once and starts signing at `activates_at` (a lead time
//! later, so relying parties see it before any token carries its `kid`). The newest key whose
//! `activates_at` has passed signs. An older key stays published (and verifiable) until its
//! successor has been active for the longest token lifetime, so its last token expires first.
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::json;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported algorithm {0}")]
    UnsupportedAlg(String),
    #[error("key generation failed")]
    Generate,
    #[error("a signing key cannot be decrypted: wrong key_encryption_key?")]
    Decrypt,
    #[error("a stored signing key is malformed: {0}")]
    Malformed(String),
    #[error("key-encryption key: {0}")]
    Kek(String),
}

/// The key that encrypts private signing keys at rest (AES-256-GCM).
pub struct Kek(LessSafeKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KeyError::Kek("must be 32 bytes".into()))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// From configuration (base64) or, failing that, `<data_dir>/key-encryption-key`, generated
    /// with mode 0600 on first use.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self, KeyError> {
        if let Some(b64) = configured {
            let bytes = STANDARD
                .decode(b64.trim())
                .map_err(|_| KeyError::Kek("key_encryption_key is not base64".into()))?;
            return Self::from_bytes(&bytes);
        }
        let path = data_dir.join("key-encryption-key");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = STANDARD
                    .decode(text.trim())
                    .map_err(|_| KeyError::Kek(format!("{} is not base64", path.display())))?;
                Self::from_bytes(&bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(|e| KeyError::Kek(e.to_string()))?;
                let bytes = crate::secrets::random_bytes::<32>();
                write_private_file(&path, STANDARD.encode(bytes).as_bytes())
                    .map_err(|e| KeyError::Kek(format!("{}: {e}", path.display())))?;
                Self::from_bytes(&bytes)
            }
            Err(e) => Err(KeyError::Kek(format!("{}: {e}", path.display()))),
        }
    }

    fn seal(&self, kid: &str, plain: &[u8]) -> Result<String, KeyError> {
        let nonce_bytes = crate::secrets::random_bytes::<NONCE_LEN>();
        let mut buf = plain.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Generate)?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        Ok(STANDARD.encode(out))
    }

    fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| KeyError::Decrypt)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(KeyError::Decrypt);
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Decrypt)?;
        let mut buf = ct.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| KeyError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// A freshly generated key, ready to store.
pub struct NewKey {
    pub kid: String,
    pub alg: String,
    pub sealed_private: String,
    pub public_jwk: serde_json::Value,
}

/// Generates a key of `alg` and seals its private half with `kek`.
pub fn generate(alg: &str, kek: &Kek) -> Result<NewKey, KeyError> {
    let rng = SystemRandom::new();
    let pkcs8: Vec<u8> = match alg {
        "ES256" => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Generate)?
            .as_ref()
            .to_vec(),
        "EdDSA" => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| KeyError::Generate)?
            .as_ref()
            .to_vec(),
        "RS256" => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> =
                kp.as_der().map_err(|_| KeyError::Generate)?;
            der.as_ref().to_vec()
        }
        other => return Err(KeyError::UnsupportedAlg(other.to_string())),
    };
    let kid = crate::secrets::random_id("k_");
    let signer = Signer::from_pkcs8(alg, &pkcs8)?;
    let public_jwk = signer.public_jwk(&kid, alg);
    Ok(NewKey {
        sealed_private: kek.seal(&kid, &pkcs8)?,
        kid,
        alg: alg.to_string(),
        public_jwk,
    })
}

enum Signer {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    fn from_pkcs8(alg: &str, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let bad = |e: String| KeyError::Malformed(e);
        Ok(match alg {
            "ES256" => Self::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "EdDSA" => Self::Ed(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| bad(e.to_string()))?),
            "RS256" => Self::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| bad(e.to_string()))?),
            other => return Err(KeyError::UnsupportedAlg(other.to_string())),
        })
    }

    fn public_jwk(&self, kid: &str, alg: &str) -> serde_json::Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            Self::Ec(k) => {
                let point = k.public_key().as_ref();
                // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                json!({"kty":"EC","crv":"P-256","x":b64(x),"y":b64(y),"kid":kid,"alg":alg,"use":"sig"})
            }
            Self::Ed(k) => {
                json!({"kty":"OKP","crv":"Ed25519","x":b64(k.public_key().as_ref()),"kid":kid,"alg":alg,"use":"sig"})
            }
            Self::Rsa(k) => {
                let pk = k.public_key();
                let n = pk.modulus().big_endian_without_leading_zero();
                let e = pk.exponent().big_endian_without_leading_zero();
                json!({"kty":"RSA","n":b64(n),"e":b64(e),"kid":kid,"alg":alg,"use":"sig"})
            }
        }
    }

    fn sign(&self, rng: &SystemRandom, msg: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Ec(k) => k.sign(rng, msg).ok().map(|s| s.as_ref().to_vec()),
            Self::Ed(k) => Some(k.sign(msg).as_ref().to_vec()),
            Self::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, rng, msg, &mut sig).ok()?;
                Some(sig)
            }
        }
    }
}

/// A loaded signing key.
pub struct SigningKey {
    pub kid: String,
    pub alg: Algorithm,
    pub alg_name: String,
    pub activates_at: i64,
    pub created_at: i64,
    pub public_jwk: serde_json::Value,
    pub decoding: DecodingKey,
    /// base64url of the JOSE header `{"alg","typ":"at+jwt","kid"}`, computed once.
    header_b64: String,
    signer: Signer,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg_name)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn load(
        kid: &str,
        alg: &str,
        sealed: &str,
        public_jwk: &str,
        created_at: i64,
        activates_at: i64,
        kek: &Kek,
    ) -> Result<Self, KeyError> {
        let pkcs8 = kek.open(kid, sealed)?;
        let signer = Signer::from_pkcs8(alg, &pkcs8)?;
        let public_jwk: serde_json::Value =
            serde_json::from_str(public_jwk).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(public_jwk.clone())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        let decoding =
            DecodingKey::from_jwk(&jwk).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let alg_enum = match alg {
            "ES256" => Algorithm::ES256,
            "EdDSA" => Algorithm::EdDSA,
            "RS256" => Algorithm::RS256,
            other => return Err(KeyError::UnsupportedAlg(other.to_string())),
        };
        let header = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        Ok(Self {
            kid: kid.to_string(),
            alg: alg_enum,
            alg_name: alg.to_string(),
            activates_at,
            created_at,
            public_jwk,
            decoding,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            signer,
            rng: SystemRandom::new(),
        })
    }

    /// Signs `claims` as a compact JWS with this key's header (`typ: at+jwt`).
    pub fn sign_jwt(&self, claims: &impl serde::Serialize) -> Option<String> {
        let payload = serde_json::to_vec(claims).ok()?;
        let mut out = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        out.push_str(&self.header_b64);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut out);
        let sig = self.signer.sign(&self.rng, out.as_bytes())?;
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(&sig, &mut out);
        Some(out)
    }
}

/// All keys a node knows, oldest activation first.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<std::sync::Arc<SigningKey>>,
}

impl KeySet {
    /// The key that signs at `now`: the newest already active.
    pub fn active(&self, now: i64) -> Option<&std::sync::Arc<SigningKey>> {
        self.keys.iter().rev().find(|k| k.activates_at <= now)
    }

    /// Whether key `i` is still published at `now`, given the longest token lifetime.
    fn published(&self, i: usize, now: i64, max_ttl: i64) -> bool {
        match self.keys.get(i + 1) {
            // Superseded: keep it until its successor has signed for a whole token lifetime.
            Some(next) => next.activates_at + max_ttl + 60 > now,
            None => true,
        }
    }

    /// A published key by `kid`, for verifying our own tokens.
    pub fn verifying(
        &self,
        kid: &str,
        now: i64,
        max_ttl: i64,
    ) -> Option<&std::sync::Arc<SigningKey>> {
        let i = self.keys.iter().position(|k| k.kid == kid)?;
        self.published(i, now, max_ttl).then(|| &self.keys[i])
    }

    /// Each key with its state: `active` (signs), `next` (published, signs later),
    /// `retiring` (superseded, still published) or `retired`.
    pub fn describe(&self, now: i64, max_ttl: i64) -> Vec<serde_json::Value> {
        let active = self.active(now).map(|k| k.kid.clone());
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let state = if Some(&k.kid) == active.as_ref() {
                    "active"
                } else if k.activates_at > now {
                    "next"
                } else if self.published(i, now, max_ttl) {
                    "retiring"
                } else {
                    "retired"
                };
                json!({"kid": k.kid, "alg": k.alg_name, "created_at": k.created_at,
                       "activates_at": k.activates_at, "state": state})
            })
            .collect()
    }

    /// The public JWKS document.
    pub fn jwks(&self, now: i64, max_ttl: i64) -> serde_json::Value {
        let keys: Vec<_> = (0..self.keys.len())
            .filter(|&i| self.published(i, now, max_ttl))
            .map(|i| self.keys[i].public_jwk.clone())
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(k: &NewKey, kek: &Kek, at: i64) -> SigningKey {
        SigningKey::load(
            &k.kid,
            &k.alg,
            &k.sealed_private,
            &k.public_jwk.to_string(),
            at,
            at,
            kek,
        )
        .unwrap()
    }

    #[test]
    fn every_alg_signs_and_verifies() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        for alg in ["ES256", "EdDSA", "RS256"] {
            let k = generate(alg, &kek).unwrap();
            let sk = load(&k, &kek, 0);
            let jwt = sk.sign_jwt(&json!({"sub": "x"})).unwrap();
            let mut v = jsonwebtoken::Validation::new(sk.alg);
            v.required_spec_claims.clear();
            v.validate_exp = false;
            v.validate_aud = false;
            let data = jsonwebtoken::decode::<serde_json::Value>(&jwt, &sk.decoding, &v).unwrap();
            assert_eq!(data.claims["sub"], "x");
            assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
            assert_eq!(data.header.kid.as_deref(), Some(k.kid.as_str()));
        }
    }

    #[test]
    fn wrong_kek_cannot_open() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        let other = Kek::from_bytes(&[8u8; 32]).unwrap();
        let k = generate("ES256", &kek).unwrap();
        let err = SigningKey::load(
            &k.kid,
            "ES256",
            &k.sealed_private,
            &k.public_jwk.to_string(),
            0,
            0,
            &other,
        )
        .unwrap_err();
        assert!(matches!(err, KeyError::Decrypt));
    }

    #[test]
    fn rotation_schedule() {
        let kek = Kek::from_bytes(&[7u8; 32]).unwrap();
        let a = load(&generate("ES256", &kek).unwrap(), &kek, 0);
        let mut b = load(&generate("ES256", &kek).unwrap(), &kek, 0);
        b.activates_at = 1000;
        let (ka, kb) = (a.kid.clone(), b.kid.clone());
        let set = KeySet {
            keys: vec![a.into(), b.into()],
        };
        // Before b activates: a signs, both are published.
        assert_eq!(set.active(999).unwrap().kid, ka);
        assert_eq!(set.jwks(999, 300)["keys"].as_array().unwrap().len(), 2);
        // After: b signs, a stays published for a token lifetime (+60 s skew), then goes.
        assert_eq!(set.active(1000).unwrap().kid, kb);
        assert!(set.verifying(&ka, 1359, 300).is_some());
        assert!(set.verifying(&ka, 1360, 300).is_none());
        assert_eq!(set.jwks(1360, 300)["keys"].as_array().unwrap().len(), 1);
    }
}
