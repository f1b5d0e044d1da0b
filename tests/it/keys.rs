//! Signing key rotation and secret rotation, on the test clock.
use crate::both;
use crate::harness::H;
use base64::Engine;

const A: &str = "https://a.mcp.test/mcp";

fn kid(jwt: &str) -> String {
    let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&h).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn published_kids(h: &H) -> Vec<String> {
    let v: serde_json::Value = h
        .http
        .get(h.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

async fn key_rotation_publishes_before_signing(h: H) -> H {
    let srv = h.server(A, "prod", &["search:read:internal"]).await;
    let server = (srv.0.as_str(), srv.1.as_str());
    let (id, secret) = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let old_token = h.token(&id, &secret, &[]).await.access_token();
    let old = kid(&old_token);
    assert_eq!(published_kids(&h).await, vec![old.clone()]);

    // A new key, signing in 120 s: published now, not used yet.
    let new = h
        .app()
        .admin()
        .add_key("EdDSA", 120, &h.app().kek)
        .await
        .unwrap()
        .kid;
    h.app().refresh_registry(true).await.unwrap();
    assert_eq!(published_kids(&h).await, vec![old.clone(), new.clone()]);
    assert_eq!(kid(&h.token(&id, &secret, &[]).await.access_token()), old);

    // Once active, it signs; the old key stays published while its tokens may live.
    h.clock.advance(120);
    let new_token = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(kid(&new_token), new);
    assert_eq!(published_kids(&h).await, vec![old.clone(), new.clone()]);
    assert_eq!(h.introspect(server, &new_token).await["active"], true);
    // The old token expired at +300; the old key goes after a full token lifetime (+60 s).
    h.clock.advance(300 + 60);
    assert_eq!(published_kids(&h).await, vec![new.clone()]);
    assert_eq!(h.introspect(server, &old_token).await["active"], false);

    // RS256 works too (RFC 9068 requires it).
    let rs = h
        .app()
        .admin()
        .add_key("RS256", 0, &h.app().kek)
        .await
        .unwrap()
        .kid;
    h.app().refresh_registry(true).await.unwrap();
    let t = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(kid(&t), rs);
    assert_eq!(h.introspect(server, &t).await["active"], true);
    h
}
both!(key_rotation_publishes_before_signing);

async fn secret_rotation_overlaps(h: H) -> H {
    h.server(A, "prod", &["search:read:internal"]).await;
    let (id, old) = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let rotated = h.app().admin().rotate_secret(&id, 60).await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    assert!(rotated.client_secret.starts_with("mnd_cs_"));
    assert_eq!(h.token(&id, &old, &[]).await.status, 200);
    assert_eq!(h.token(&id, &rotated.client_secret, &[]).await.status, 200);
    h.clock.advance(61);
    assert_eq!(h.token(&id, &old, &[]).await.status, 401);
    assert_eq!(h.token(&id, &rotated.client_secret, &[]).await.status, 200);
    h
}
both!(secret_rotation_overlaps);

/// Private keys are encrypted at rest: the database holds no PKCS#8, and the key-encryption
/// key file is private to its owner.
#[tokio::test]
async fn private_keys_are_encrypted_at_rest() {
    let h = H::start(crate::harness::Backend::Sqlite, "keys_at_rest")
        .await
        .unwrap();
    let rows = h.app().store.list_keys().await.unwrap();
    assert_eq!(rows.len(), 1);
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(&rows[0].private_key)
        .unwrap();
    // A PKCS#8 document starts with a SEQUENCE tag and holds the P-256 OID; ciphertext holds neither.
    let oid = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    assert!(!sealed.windows(oid.len()).any(|w| w == oid));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(h.dir.path().join("key-encryption-key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // With another key-encryption key the server cannot sign: it refuses rather than invent one.
    let mut cfg = h.config.clone();
    cfg.key_encryption_key = Some(base64::engine::general_purpose::STANDARD.encode([9u8; 32]));
    let app = mandate::app::App::start(cfg, h.base.clone(), h.clock.clone(), None)
        .await
        .unwrap();
    assert!(app.registry().keys.active(h.now()).is_none());
    h.finish().await;
}
