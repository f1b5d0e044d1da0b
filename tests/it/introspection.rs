//! `POST /introspect`: only registered MCP servers ask, and only their own tokens are active.
use crate::both;
use crate::harness::H;
use mandate::agents::AgentStatus;

const A: &str = "https://a.mcp.test/mcp";
const B: &str = "https://b.mcp.test/mcp";

async fn active_only_for_the_audience(h: H) -> H {
    let (a_id, a_secret) = h.server(A, "prod", &["search:read:internal"]).await;
    let (b_id, b_secret) = h.server(B, "prod", &["search:read:internal"]).await;
    let (id, secret) = h
        .simple_agent("prod", &[A, B], "tools:read", "client_secret_basic")
        .await;
    let token = h
        .token(&id, &secret, &[("resource", A)])
        .await
        .access_token();

    let v = h.introspect((&a_id, &a_secret), &token).await;
    assert_eq!(v["active"], true);
    let now = h.now();
    for (k, want) in [
        ("aud", serde_json::json!(A)),
        ("scope", "tools:read".into()),
        ("client_id", id.clone().into()),
        ("sub", id.clone().into()),
        ("iss", h.base.clone().into()),
        ("token_type", "Bearer".into()),
        ("exp", (now + 300).into()),
        ("iat", now.into()),
        ("trust_level", "medium".into()),
        ("env", "prod".into()),
    ] {
        assert_eq!(v[k], want, "{k}");
    }
    assert!(v["jti"].is_string());

    // Another server sees nothing at all.
    let v = h.introspect((&b_id, &b_secret), &token).await;
    assert_eq!(v, serde_json::json!({"active": false}));
    // post auth works too.
    let r = h
        .post(
            "/introspect",
            None,
            &[
                ("token", &token),
                ("client_id", &a_id),
                ("client_secret", &a_secret),
            ],
        )
        .await;
    assert_eq!(r.body["active"], true);

    // Garbage, tampered and foreign tokens are inactive, with nothing else said.
    let mut tampered = token.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = base64_claims_with_aud(parts[1], B);
    parts[1] = &forged_payload;
    let forged = parts.join(".");
    for t in [
        "x",
        "a.b.c",
        tampered.as_str(),
        forged.as_str(),
        &"e".repeat(10_000),
    ] {
        let v = h.introspect((&a_id, &a_secret), t).await;
        assert_eq!(v, serde_json::json!({"active": false}));
    }

    // Expired.
    h.clock.advance(301);
    let v = h.introspect((&a_id, &a_secret), &token).await;
    assert_eq!(v, serde_json::json!({"active": false}));
    h
}
both!(active_only_for_the_audience);

fn base64_claims_with_aud(payload: &str, aud: &str) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut c: serde_json::Value = serde_json::from_slice(&e.decode(payload).unwrap()).unwrap();
    c["aud"] = aud.into();
    e.encode(c.to_string())
}

async fn callers_must_be_servers(h: H) -> H {
    let (a_id, a_secret) = h.server(A, "prod", &["search:read:internal"]).await;
    let (id, secret) = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let token = h.token(&id, &secret, &[]).await.access_token();
    // Unauthenticated, wrong secret, or an agent: 401.
    let r = h.post("/introspect", None, &[("token", &token)]).await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));
    let r = h
        .post("/introspect", Some((&a_id, "nope")), &[("token", &token)])
        .await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    let r = h
        .post("/introspect", Some((&id, &secret)), &[("token", &token)])
        .await;
    assert_eq!((r.status, r.error()), (401, "invalid_client"));
    // No token parameter.
    let r = h.post("/introspect", Some((&a_id, &a_secret)), &[]).await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"));
    // A suspended agent's tokens are inactive at once; active again after reactivation.
    h.app()
        .admin()
        .set_agent_status(&id, AgentStatus::Suspended)
        .await
        .unwrap();
    h.app().refresh_registry(true).await.unwrap();
    assert_eq!(
        h.introspect((&a_id, &a_secret), &token).await["active"],
        false
    );
    h.app()
        .admin()
        .set_agent_status(&id, AgentStatus::Active)
        .await
        .unwrap();
    h.app().refresh_registry(true).await.unwrap();
    assert_eq!(
        h.introspect((&a_id, &a_secret), &token).await["active"],
        true
    );
    h
}
both!(callers_must_be_servers);
