//! The admin JSON API.
use crate::both;
use crate::harness::H;
use serde_json::{Value, json};

async fn call(
    h: &H,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> crate::harness::Resp {
    let mut req = h.http.request(method, h.url(&format!("/admin/v1{path}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    crate::harness::Resp::from(req.send().await.unwrap()).await
}

async fn registry_through_the_api(h: H) -> H {
    use reqwest::Method as M;
    // No token, a forged one: 401 with a Bearer challenge.
    let r = call(&h, M::GET, "/agents", None, None).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = call(&h, M::GET, "/agents", Some("mnd_adm_nope"), None).await;
    assert_eq!(r.status, 401);

    let token = h.app().admin().create_admin_token("test").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let t = Some(token.as_str());

    let manifest = json!({"resource": "https://API.mcp.test/mcp", "name": "api", "environment": "prod",
        "tools": [{"name": "search", "class": "read", "sensitivity": "internal"}]});
    let r = call(&h, M::POST, "/servers", t, Some(manifest.clone())).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["resource"], "https://api.mcp.test/mcp");
    let (srv_id, srv_secret) = (
        r.body["client_id"].as_str().unwrap().to_string(),
        r.body["client_secret"].as_str().unwrap().to_string(),
    );
    // Same resource again: conflict. PUT imports (updates, keeps credentials).
    assert_eq!(
        call(&h, M::POST, "/servers", t, Some(manifest.clone()))
            .await
            .status,
        409
    );
    let mut updated = manifest.clone();
    updated["tools"] = json!([{"name": "search", "class": "read", "sensitivity": "internal"},
                              {"name": "write_doc", "class": "write", "sensitivity": "confidential"}]);
    let r = call(&h, M::PUT, "/servers", t, Some(updated)).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("client_secret").is_none());
    assert_eq!(r.body["tools"]["write_doc"]["class"], "write");

    // Bad bodies: 400 with a reason, never a 500.
    for bad in [
        json!({"resource": "https://x.test/#f", "name": "x", "environment": "prod"}),
        json!({"resource": "https://x.test/", "name": "x", "environment": "prod", "tools": [{"name": "a", "class": "delete", "sensitivity": "public"}]}),
        json!({"resource": "https://x.test/", "name": "x", "environment": "prod", "extra": 1}),
        json!({"resource": "https://x.test/", "name": "x", "environment": "prod", "tools": [{"name": "read", "class": "read", "sensitivity": "public"}]}),
        json!("just a string"),
    ] {
        let r = call(&h, M::POST, "/servers", t, Some(bad.clone())).await;
        assert_eq!((r.status, r.error()), (400, "invalid_request"), "{bad}");
    }

    let agent = json!({"name": "api agent", "owner": "me@example.com", "environment": "prod", "trust_level": "high",
        "allowed_resources": ["https://api.mcp.test/mcp"], "scope_ceiling": ["tools:read"], "purpose": "answer questions"});
    let r = call(&h, M::POST, "/agents", t, Some(agent.clone())).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["client_id"].as_str().unwrap().to_string();
    let secret = r.body["client_secret"].as_str().unwrap().to_string();
    assert_eq!(r.body["trust_level"], "high");
    // Usable at once on this node.
    let tok = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(
        h.introspect((&srv_id, &srv_secret), &tok).await["trust_level"],
        "high"
    );

    for (bad, why) in [
        (
            json!({"name": "x", "owner": "not-an-email", "environment": "prod"}),
            "owner",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "dev", "allowed_resources": ["https://api.mcp.test/mcp"]}),
            "environment",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "prod", "allowed_resources": ["https://nope.test/"]}),
            "unknown resource",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "prod", "scope_ceiling": ["*"]}),
            "scope",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "prod", "auth_method": "private_key_jwt"}),
            "no keys",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "prod", "auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}]}}),
            "private key",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "prod", "auth_method": "private_key_jwt", "jwks_uri": "http://example.com/jwks"}),
            "plain http",
        ),
        (
            json!({"name": "x", "owner": "a@b.co", "environment": "prod", "token_ttl_cap": 0}),
            "ttl",
        ),
    ] {
        let r = call(&h, M::POST, "/agents", t, Some(bad)).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "invalid_request"),
            "{why}: {:?}",
            r.body
        );
    }

    // Read, patch, suspend, rotate, delete.
    let r = call(&h, M::GET, &format!("/agents/{id}"), t, None).await;
    assert_eq!(r.body["purpose"], "answer questions");
    assert!(r.body.get("client_secret").is_none());
    let r = call(
        &h,
        M::PATCH,
        &format!("/agents/{id}"),
        t,
        Some(json!({"trust_level": "low"})),
    )
    .await;
    assert_eq!(r.body["trust_level"], "low");
    let r = call(&h, M::POST, &format!("/agents/{id}/suspend"), t, None).await;
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(
        h.token(&id, &secret, &[]).await.error(),
        "unauthorized_client"
    );
    call(&h, M::POST, &format!("/agents/{id}/activate"), t, None).await;
    let r = call(
        &h,
        M::POST,
        &format!("/agents/{id}/rotate-secret"),
        t,
        Some(json!({"overlap_secs": 0})),
    )
    .await;
    let new_secret = r.body["client_secret"].as_str().unwrap().to_string();
    assert_eq!(h.token(&id, &secret, &[]).await.status, 401);
    assert_eq!(h.token(&id, &new_secret, &[]).await.status, 200);
    let r = call(&h, M::GET, "/agents", t, None).await;
    assert_eq!(r.body["agents"].as_array().unwrap().len(), 1);
    assert_eq!(
        call(&h, M::DELETE, &format!("/agents/{id}"), t, None)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&h, M::GET, &format!("/agents/{id}"), t, None)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&h, M::DELETE, &format!("/agents/{id}"), t, None)
            .await
            .status,
        404
    );
    assert_eq!(h.token(&id, &new_secret, &[]).await.status, 401);

    // Keys.
    let r = call(
        &h,
        M::POST,
        "/keys/rotate",
        t,
        Some(json!({"alg": "ES256", "lead_secs": 60})),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(&h, M::GET, "/keys", t, None).await;
    let states: Vec<&str> = r.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["active", "next"]);
    let r = call(
        &h,
        M::POST,
        "/keys/rotate",
        t,
        Some(json!({"alg": "HS256"})),
    )
    .await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"));
    h
}
both!(registry_through_the_api);
