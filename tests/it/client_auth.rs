//! Client authentication: the three methods, one at a time, and hostile credentials.
use crate::both;
use crate::harness::H;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate::agents::NewAgent;
use serde_json::{Value, json};

const RES: &str = "https://tools.mcp.test/";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An agent's own ES256 key: the private half for signing assertions, the public JWKS.
pub struct AgentKey {
    pub enc: EncodingKey,
    pub jwks: Value,
    pub kid: String,
}

pub fn agent_key(kid: &str) -> AgentKey {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let p = kp.public_key().as_ref();
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]});
    AgentKey {
        enc: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwks,
        kid: kid.into(),
    }
}

pub fn assertion(key: &AgentKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
}

pub fn good_claims(h: &H, client_id: &str, aud: &str) -> Value {
    let now = h.now();
    json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 60, "iat": now,
           "jti": uuid::Uuid::new_v4().to_string()})
}

async fn jwt_token(h: &H, assertion: &str) -> crate::harness::Resp {
    h.post(
        "/token",
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
        ],
    )
    .await
}

async fn pkjwt_agent(h: &H, key: &AgentKey) -> String {
    h.agent(NewAgent {
        name: "jwt agent".into(),
        owner: "o@example.com".into(),
        environment: "prod".into(),
        allowed_resources: vec![RES.into()],
        scope_ceiling: vec!["tools:read".into()],
        auth_method: "private_key_jwt".into(),
        jwks: Some(key.jwks.clone()),
        ..Default::default()
    })
    .await
    .0
}

async fn secret_methods(h: H) -> H {
    h.server(RES, "prod", &["ping:read:public"]).await;
    let (basic_id, basic_secret) = h
        .simple_agent("prod", &[RES], "tools:read", "client_secret_basic")
        .await;
    let (post_id, post_secret) = h
        .simple_agent("prod", &[RES], "tools:read", "client_secret_post")
        .await;
    let cc = ("grant_type", "client_credentials");

    assert_eq!(h.token(&basic_id, &basic_secret, &[]).await.status, 200);
    let r = h
        .post(
            "/token",
            None,
            &[cc, ("client_id", &post_id), ("client_secret", &post_secret)],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The registered method is enforced.
    let r = h
        .post(
            "/token",
            None,
            &[
                cc,
                ("client_id", &basic_id),
                ("client_secret", &basic_secret),
            ],
        )
        .await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));
    assert!(r.header("www-authenticate").is_none());
    let r = h.token(&post_id, &post_secret, &[]).await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"mandate\"")
    );

    // Wrong secret, unknown client: 401 with a challenge when the header was used.
    for (id, secret) in [
        (basic_id.as_str(), "mnd_cs_wrong"),
        ("agt_unknown", basic_secret.as_str()),
    ] {
        let r = h.token(id, secret, &[]).await;
        assert_eq!((r.status, r.error()), (401, "invalid_client"));
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
        assert_eq!(r.body["error_description"], "client authentication failed");
    }
    // Two methods at once.
    let r = h
        .post(
            "/token",
            Some((&basic_id, &basic_secret)),
            &[
                cc,
                ("client_id", &basic_id),
                ("client_secret", &basic_secret),
            ],
        )
        .await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"));
    // No credentials at all.
    let r = h.post("/token", None, &[cc]).await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));
    // Bad base64, no colon, another scheme.
    for header in [
        "Basic %%%notbase64",
        "Basic bm9jb2xvbg==",
        "Bearer abc",
        "Basic",
    ] {
        let resp = h
            .http
            .post(h.url("/token"))
            .header("authorization", header)
            .form(&[cc])
            .send()
            .await
            .unwrap();
        let r = crate::harness::Resp::from(resp).await;
        assert_eq!((r.status, r.error()), (401, "invalid_client"), "{header}");
        assert!(r.header("www-authenticate").is_some());
    }
    // client_id in the body must match the Basic one.
    let r = h
        .post(
            "/token",
            Some((&basic_id, &basic_secret)),
            &[cc, ("client_id", &post_id)],
        )
        .await;
    assert_eq!(r.error(), "invalid_client");
    // MCP server credentials cannot get tokens.
    let (srv_id, srv_secret) = h
        .server("https://srv2.mcp.test/", "prod", &["a:read:public"])
        .await;
    let r = h.token(&srv_id, &srv_secret, &[]).await;
    assert_eq!(r.error(), "unauthorized_client");
    h
}
both!(secret_methods);

async fn brute_force_is_throttled(h: H) -> H {
    h.server(RES, "prod", &["ping:read:public"]).await;
    let (id, secret) = h
        .simple_agent("prod", &[RES], "tools:read", "client_secret_basic")
        .await;
    for _ in 0..10 {
        assert_eq!(h.token(&id, "mnd_cs_guess", &[]).await.status, 401);
    }
    // Now even the right secret is refused from this address until the window ends.
    let r = h.token(&id, &secret, &[]).await;
    assert_eq!((r.status, r.error()), (429, "invalid_client"));
    assert!(r.header("retry-after").is_some());
    // Other clients are unaffected.
    let (other, other_secret) = h
        .simple_agent("prod", &[RES], "tools:read", "client_secret_basic")
        .await;
    assert_eq!(h.token(&other, &other_secret, &[]).await.status, 200);
    h.clock.advance(61);
    assert_eq!(h.token(&id, &secret, &[]).await.status, 200);
    h
}
both!(brute_force_is_throttled);

async fn private_key_jwt(h: H) -> H {
    h.server(RES, "prod", &["ping:read:public"]).await;
    let key = agent_key("k1");
    let id = pkjwt_agent(&h, &key).await;
    let token_endpoint = h.url("/token");

    // aud may be the issuer or the token endpoint.
    for aud in [h.base.clone(), token_endpoint.clone()] {
        let a = assertion(&key, &good_claims(&h, &id, &aud));
        let r = jwt_token(&h, &a).await;
        assert_eq!(r.status, 200, "{aud}: {:?}", r.body);
    }
    // aud as an array containing the issuer.
    let mut c = good_claims(&h, &id, "x");
    c["aud"] = json!(["https://elsewhere.test", h.base]);
    assert_eq!(jwt_token(&h, &assertion(&key, &c)).await.status, 200);

    // Replay of the same assertion.
    let a = assertion(&key, &good_claims(&h, &id, &h.base));
    assert_eq!(jwt_token(&h, &a).await.status, 200);
    let r = jwt_token(&h, &a).await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));

    let refused = |c: Value, why: &'static str| {
        let (h, key) = (&h, &key);
        async move {
            let r = jwt_token(h, &assertion(key, &c)).await;
            assert_eq!((r.status, r.error()), (401, "invalid_client"), "{why}");
        }
    };
    let now = h.now();
    let mut c = good_claims(&h, &id, "https://evil.test/");
    refused(c.clone(), "wrong aud").await;
    c = good_claims(&h, &id, &h.base);
    c["exp"] = json!(now - 120);
    refused(c.clone(), "expired").await;
    c = good_claims(&h, &id, &h.base);
    c["exp"] = json!(now + 3600);
    refused(c.clone(), "exp too far ahead").await;
    c = good_claims(&h, &id, &h.base);
    c.as_object_mut().unwrap().remove("exp");
    refused(c.clone(), "no exp").await;
    c = good_claims(&h, &id, &h.base);
    c.as_object_mut().unwrap().remove("jti");
    refused(c.clone(), "no jti").await;
    c = good_claims(&h, &id, &h.base);
    c["iss"] = json!("someone-else");
    refused(c.clone(), "iss != sub").await;
    c = good_claims(&h, &id, &h.base);
    c["nbf"] = json!(now + 600);
    refused(c.clone(), "not yet valid").await;

    // Signed by a key the agent never registered, or claiming an unknown kid.
    let stranger = agent_key("k1");
    let r = jwt_token(&h, &assertion(&stranger, &good_claims(&h, &id, &h.base))).await;
    assert_eq!(r.error(), "invalid_client");
    let r = jwt_token(
        &h,
        &assertion(&agent_key("k9"), &good_claims(&h, &id, &h.base)),
    )
    .await;
    assert_eq!(r.error(), "invalid_client");

    // alg none and HMAC (keyed with the public JWKS, the classic confusion) are refused.
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let body = b64(good_claims(&h, &id, &h.base));
    let none = format!("{}.{body}.", b64(json!({"alg": "none", "typ": "JWT"})));
    assert_eq!(jwt_token(&h, &none).await.error(), "invalid_client");
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::HS256)
        },
        &good_claims(&h, &id, &h.base),
        &EncodingKey::from_secret(key.jwks.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(jwt_token(&h, &hs).await.error(), "invalid_client");
    // Garbage, a wrong assertion type, and a missing assertion.
    assert_eq!(jwt_token(&h, "a.b.c").await.error(), "invalid_client");
    let r = h
        .post(
            "/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:x"),
                ("client_assertion", &a),
            ],
        )
        .await;
    assert_eq!(r.error(), "invalid_client");
    let r = h
        .post(
            "/token",
            None,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", ASSERTION_TYPE),
            ],
        )
        .await;
    assert_eq!(r.error(), "invalid_request");
    // A secret agent cannot authenticate with an assertion.
    let (sid, _) = h
        .simple_agent("prod", &[RES], "tools:read", "client_secret_basic")
        .await;
    let r = jwt_token(&h, &assertion(&key, &good_claims(&h, &sid, &h.base))).await;
    assert_eq!(r.error(), "invalid_client");
    h
}
both!(private_key_jwt);

async fn private_key_jwt_with_jwks_uri(h: H) -> H {
    h.server(RES, "prod", &["ping:read:public"]).await;
    let key = agent_key("remote-1");
    // The agent publishes its JWKS on a loopback server of its own.
    let jwks = key.jwks.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (id, _) = h
        .agent(NewAgent {
            name: "remote keys".into(),
            owner: "o@example.com".into(),
            environment: "prod".into(),
            allowed_resources: vec![RES.into()],
            scope_ceiling: vec!["tools:read".into()],
            auth_method: "private_key_jwt".into(),
            jwks_uri: Some(format!("http://{addr}/jwks")),
            ..Default::default()
        })
        .await;
    let r = jwt_token(&h, &assertion(&key, &good_claims(&h, &id, &h.base))).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let stranger = agent_key("remote-1");
    let r = jwt_token(&h, &assertion(&stranger, &good_claims(&h, &id, &h.base))).await;
    assert_eq!(r.error(), "invalid_client");
    h
}
both!(private_key_jwt_with_jwks_uri);
