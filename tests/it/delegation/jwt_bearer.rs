//! The jwt-bearer grant (RFC 7523): ID-JAG (MCP enterprise-managed authorization) with every
//! profile check, and workload identity federation.
use super::*;
fn jag(h: &H, client_id: &str, sub: &str) -> Value {
    let now = h.now();
    json!({"iss": IDP, "sub": sub, "aud": as_issuer(h), "client_id": client_id, "resource": A,
           "scope": "tools:read", "exp": now + 300, "iat": now,
           "jti": uuid::Uuid::new_v4().to_string()})
}

async fn redeem(h: &H, agent: (&str, &str), assertion: &str, extra: &[(&str, &str)]) -> Resp {
    let mut form = vec![
        ("grant_type", JB),
        ("assertion", assertion),
        ("client_id", agent.0),
        ("client_secret", agent.1),
    ];
    form.extend_from_slice(extra);
    h.post("/token", None, &form).await
}

/// ID-JAG (MCP enterprise-managed authorization): every profile check.
pub(super) async fn id_jag(mut h: H) -> H {
    let key = agent_key("idp-1");
    trust(&mut h, &key).await;
    let (a, _b, _c, _x) = setup(&h).await;
    let x = h
        .simple_agent(
            "prod",
            &[A, B],
            "tools:read tools:write",
            "client_secret_post",
        )
        .await;
    let xs = (x.0.as_str(), x.1.as_str());
    const TYP: Option<&str> = Some("oauth-id-jag+jwt");

    let md = h
        .http
        .get(h.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    let md: Value = md.json().await.unwrap();
    assert_eq!(
        md["authorization_grant_profiles_supported"],
        json!(["urn:ietf:params:oauth:grant-profile:id-jag"])
    );
    let grants = md["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!(JB)) && grants.contains(&json!(TE)));

    let claims = jag(&h, &x.0, "alice");
    let assertion = sign(&key, &claims, TYP);
    let r = redeem(&h, xs, &assertion, &[]).await;
    let t = payload(&r.access_token());
    assert_eq!(
        (t["sub"].as_str(), t["aud"].as_str()),
        (Some("alice"), Some(A))
    );
    assert_eq!(t["client_id"], x.0.as_str());
    assert_eq!(r.body["scope"], "tools:read");
    assert_eq!(
        h.introspect((&a.0, &a.1), &r.access_token()).await["sub"],
        "alice"
    );
    // Single use, scoped by issuer and subject.
    let r = redeem(&h, xs, &assertion, &[]).await;
    refused(&r, 400, "invalid_grant", "replayed ID-JAG");
    let mut same_jti = jag(&h, &x.0, "bob");
    same_jti["jti"] = claims["jti"].clone();
    let r = redeem(&h, xs, &sign(&key, &same_jti, TYP), &[]).await;
    assert_eq!(r.status, 200, "same jti, other subject: {:?}", r.body);

    // requested ∩ ID-JAG: asking beyond the ID-JAG's scope gets nothing more.
    let r = redeem(
        &h,
        xs,
        &sign(&key, &jag(&h, &x.0, "alice"), TYP),
        &[("scope", "tools:write")],
    )
    .await;
    refused(&r, 400, "invalid_scope", "scope beyond the ID-JAG");

    let now = h.now();
    let mut bad: Vec<(&str, String)> = Vec::new();
    let mut c = jag(&h, &x.0, "alice");
    c["aud"] = json!("https://another-as.test");
    bad.push(("wrong aud", sign(&key, &c, TYP)));
    let mut c = jag(&h, &x.0, "alice");
    c["aud"] = json!([as_issuer(&h), "https://another-as.test"]);
    bad.push(("aud with two entries", sign(&key, &c, TYP)));
    bad.push((
        "client_id of another client",
        sign(&key, &jag(&h, "agt_other", "alice"), TYP),
    ));
    let mut c = jag(&h, &x.0, "alice");
    c["resource"] = json!("https://unregistered.test/mcp");
    bad.push(("unregistered resource", sign(&key, &c, TYP)));
    bad.push((
        "wrong typ",
        sign(&key, &jag(&h, &x.0, "alice"), Some("JWT")),
    ));
    let mut c = jag(&h, &x.0, "alice");
    c["exp"] = json!(now - 100);
    bad.push(("expired", sign(&key, &c, TYP)));
    let mut c = jag(&h, &x.0, "alice");
    c["nbf"] = json!(now + 600);
    bad.push(("not yet valid", sign(&key, &c, TYP)));
    let mut c = jag(&h, &x.0, "alice");
    c.as_object_mut().unwrap().remove("jti");
    bad.push(("no jti", sign(&key, &c, TYP)));
    let mut c = jag(&h, &x.0, "alice");
    c["iss"] = json!("https://evil.test");
    bad.push(("untrusted issuer", sign(&key, &c, TYP)));
    bad.push((
        "alg none",
        raw_jwt(
            &json!({"alg": "none", "typ": "oauth-id-jag+jwt"}),
            &jag(&h, &x.0, "alice"),
            b"",
        ),
    ));
    let public = key.jwks["keys"][0].to_string();
    let mut hh = Header::new(Algorithm::HS256);
    hh.kid = Some("idp-1".into());
    hh.typ = Some("oauth-id-jag+jwt".into());
    bad.push((
        "HMAC with the public key",
        jsonwebtoken::encode(
            &hh,
            &jag(&h, &x.0, "alice"),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap(),
    ));
    let mut unknown = agent_key("nope");
    unknown.kid = "nope".into();
    bad.push(("unknown kid", sign(&unknown, &jag(&h, &x.0, "alice"), TYP)));
    for (what, token) in &bad {
        let r = redeem(&h, xs, token, &[]).await;
        refused(&r, 400, "invalid_grant", what);
    }
    let r = redeem(
        &h,
        xs,
        &sign(&key, &jag(&h, &x.0, "alice"), TYP),
        &[("resource", B)],
    )
    .await;
    refused(
        &r,
        400,
        "invalid_grant",
        "resource parameter differs from the ID-JAG",
    );
    // An ID-JAG needs the client it names to authenticate.
    let r = h
        .post(
            "/token",
            None,
            &[
                ("grant_type", JB),
                ("assertion", &sign(&key, &jag(&h, &x.0, "alice"), TYP)),
            ],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "invalid_grant", "{:?}", r.body);
    let r = redeem(
        &h,
        (&x.0, "wrong"),
        &sign(&key, &jag(&h, &x.0, "alice"), TYP),
        &[],
    )
    .await;
    refused(&r, 401, "invalid_client", "bad client secret");
    // Audited: issued with the assertion's issuer and jti, refusals with their reason.
    let events = audit_events(&h).await;
    let issued = events
        .iter()
        .find(|e| e["type"] == "token.issued" && e["details"]["grant_type"] == JB)
        .unwrap();
    assert_eq!(issued["details"]["assertion_issuer"], IDP);
    assert_eq!(issued["details"]["assertion_jti"], claims["jti"]);
    assert_eq!(issued["details"]["sub"], "alice");
    assert!(events.iter().any(|e| e["type"] == "token.refused"
        && e["details"]["grant_type"] == JB
        && e["details"]["reason"] == "assertion refused: jti replayed"));
    assert!(!serde_json::to_string(&events).unwrap().contains(&assertion));
    h
}
both!(id_jag);

/// Workload identity federation: a JWT-SVID-like token and no client registration.
async fn workload_identity(mut h: H) -> H {
    let key = agent_key("idp-1");
    trust(&mut h, &key).await;
    h.server(A, "prod", &["search:read:internal"]).await;
    let (indexer, _) = h
        .agent(NewAgent {
            name: "indexer".into(),
            owner: "o@example.com".into(),
            environment: "prod".into(),
            allowed_resources: vec![A.into()],
            scope_ceiling: vec!["tools:read".into()],
            ..Default::default()
        })
        .await;
    let wl = |h: &H, sub: &str| {
        let now = h.now();
        json!({"iss": WL, "sub": sub, "aud": format!("{}/token", as_issuer(h)), "exp": now + 300,
               "iat": now, "jti": uuid::Uuid::new_v4().to_string()})
    };
    let svid = sign(
        &key,
        &wl(&h, "spiffe://example.org/ns/prod/sa/indexer"),
        Some("JWT"),
    );
    let r = h
        .post(
            "/token",
            None,
            &[("grant_type", JB), ("assertion", &svid), ("resource", A)],
        )
        .await;
    let t = payload(&r.access_token());
    assert_eq!(
        (t["sub"].as_str(), t["client_id"].as_str()),
        (Some(indexer.as_str()), Some(indexer.as_str()))
    );
    assert_eq!(r.body["scope"], "tools:read");
    let r = h
        .post(
            "/token",
            None,
            &[("grant_type", JB), ("assertion", &svid), ("resource", A)],
        )
        .await;
    refused(&r, 400, "invalid_grant", "replayed workload JWT");

    let mut bad: Vec<(&str, String)> = vec![
        (
            "no rule matches",
            sign(
                &key,
                &wl(&h, "spiffe://example.org/ns/dev/sa/indexer"),
                None,
            ),
        ),
        (
            "segment wildcard only",
            sign(&key, &wl(&h, "spiffe://example.org/ns/prod/sa/x/y"), None),
        ),
    ];
    let mut c = wl(&h, "spiffe://example.org/ns/prod/sa/indexer");
    c["aud"] = json!("https://another-as.test");
    bad.push(("wrong aud", sign(&key, &c, None)));
    let mut c = wl(&h, "spiffe://example.org/ns/prod/sa/indexer");
    c["iss"] = json!(IDP);
    bad.push(("issuer trusted for another kind", sign(&key, &c, None)));
    let c = wl(&h, "spiffe://example.org/ns/prod/sa/indexer");
    bad.push((
        "an ID-JAG without client authentication",
        sign(&key, &c, Some("oauth-id-jag+jwt")),
    ));
    let mut c = wl(&h, "spiffe://example.org/ns/prod/sa/indexer");
    c["exp"] = json!(h.now() - 60);
    bad.push(("expired", sign(&key, &c, None)));
    for (what, token) in &bad {
        let r = h
            .post(
                "/token",
                None,
                &[("grant_type", JB), ("assertion", token), ("resource", A)],
            )
            .await;
        refused(&r, 400, "invalid_grant", what);
    }
    let r = h
        .post("/token", None, &[("grant_type", JB), ("resource", A)])
        .await;
    refused(&r, 400, "invalid_request", "no assertion");
    // Policy and the kill switch apply as for any agent.
    h.app()
        .kill_agent(mandate::audit::Actor::system(), &indexer)
        .await
        .unwrap();
    h.clock.advance(1);
    let svid = sign(
        &key,
        &wl(&h, "spiffe://example.org/ns/prod/sa/indexer"),
        None,
    );
    let r = h
        .post(
            "/token",
            None,
            &[("grant_type", JB), ("assertion", &svid), ("resource", A)],
        )
        .await;
    refused(&r, 400, "unauthorized_client", "suspended agent");
    h
}
both!(workload_identity);
