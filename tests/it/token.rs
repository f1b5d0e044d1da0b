//! `POST /token` with client_credentials: resource, scopes, lifetimes, and bad input.
use crate::both;
use crate::harness::H;
use base64::Engine;
use mandate::agents::NewAgent;
use serde_json::Value;

const DOCS: &str = "https://docs.mcp.test/mcp";
const TOOLS: &[&str] = &[
    "search:read:internal",
    "fetch:read:public",
    "write_doc:write:internal",
    "run:execute:restricted",
];

fn claims(jwt: &str) -> (Value, Value) {
    let part = |i: usize| -> Value {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(i).unwrap())
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    };
    (part(0), part(1))
}

async fn issues_an_audience_bound_rfc9068_jwt(h: H) -> H {
    h.server(DOCS, "prod", TOOLS).await;
    let (id, secret) = h
        .simple_agent(
            "prod",
            &[DOCS],
            "tools:read tools:write_doc",
            "client_secret_basic",
        )
        .await;
    let r = h
        .token(
            &id,
            &secret,
            &[
                ("resource", DOCS),
                ("scope", "tools:search tools:write_doc"),
            ],
        )
        .await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["scope"], "tools:search tools:write_doc");
    let token = r.access_token();
    let (header, c) = claims(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(c["iss"], h.base.as_str());
    assert_eq!(c["aud"], DOCS);
    assert_eq!(c["sub"], id.as_str());
    assert_eq!(c["client_id"], id.as_str());
    assert_eq!(c["scope"], "tools:search tools:write_doc");
    assert_eq!(c["env"], "prod");
    let now = h.now();
    assert_eq!(c["iat"], now);
    assert_eq!(c["nbf"], now);
    assert_eq!(c["exp"], now + 300);
    assert!(c["jti"].as_str().is_some_and(|j| j.len() >= 16));

    // The signature verifies against the published JWKS, with the kid in the header.
    let jwks: jsonwebtoken::jwk::JwkSet = h
        .http
        .get(h.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks
        .find(header["kid"].as_str().unwrap())
        .expect("kid published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[DOCS]);
    v.set_issuer(&[h.base.as_str()]);
    jsonwebtoken::decode::<Value>(&token, &key, &v).unwrap();

    // Two tokens never share a jti.
    let again = h
        .token(&id, &secret, &[("resource", DOCS)])
        .await
        .access_token();
    assert_ne!(claims(&again).1["jti"], c["jti"]);
    h
}
both!(issues_an_audience_bound_rfc9068_jwt);

async fn scopes_are_cut_to_the_ceiling(h: H) -> H {
    h.server(DOCS, "prod", TOOLS).await;
    let (id, secret) = h
        .simple_agent(
            "prod",
            &[DOCS],
            "tools:read tools:write_doc",
            "client_secret_basic",
        )
        .await;
    let scope = |s: Option<&'static str>| {
        let h = &h;
        let (id, secret) = (id.clone(), secret.clone());
        async move {
            let mut extra = vec![("resource", DOCS)];
            if let Some(s) = s {
                extra.push(("scope", s));
            }
            h.token(&id, &secret, &extra).await
        }
    };
    // No scope asked: the whole ceiling for this server.
    assert_eq!(
        scope(None).await.body["scope"],
        "tools:read tools:write_doc"
    );
    // More than the ceiling: cut down.
    assert_eq!(
        scope(Some("tools:search tools:run")).await.body["scope"],
        "tools:search"
    );
    // A class wholly within the ceiling stays a class scope.
    assert_eq!(
        scope(Some("tools:write")).await.body["scope"],
        "tools:write"
    );
    // Nothing permitted, unknown tools, no wildcard.
    for s in [
        "tools:run",
        "tools:execute",
        "tools:nope",
        "tools:*",
        "admin",
    ] {
        let r = scope(Some(s)).await;
        assert_eq!((r.status, r.error()), (400, "invalid_scope"), "{s}");
    }
    let r = scope(Some("tools:read \"quoted\"")).await;
    assert_eq!(r.error(), "invalid_scope");

    // A narrower ceiling narrows class scopes to the permitted tools.
    let (id2, s2) = h
        .simple_agent("prod", &[DOCS], "tools:search", "client_secret_basic")
        .await;
    let r = h
        .token(&id2, &s2, &[("resource", DOCS), ("scope", "tools:read")])
        .await;
    assert_eq!(r.body["scope"], "tools:search");
    h
}
both!(scopes_are_cut_to_the_ceiling);

async fn resource_rules(h: H) -> H {
    h.server(DOCS, "prod", TOOLS).await;
    h.server("https://other.mcp.test/", "prod", &["ping:read:public"])
        .await;
    h.server("https://dev.mcp.test/", "dev", &["ping:read:public"])
        .await;
    let (one, s1) = h
        .simple_agent("prod", &[DOCS], "tools:read", "client_secret_basic")
        .await;
    let (two, s2) = h
        .simple_agent(
            "prod",
            &[DOCS, "https://other.mcp.test/"],
            "tools:read",
            "client_secret_basic",
        )
        .await;
    // One allowed resource: it is the default.
    let r = h.token(&one, &s1, &[]).await;
    assert_eq!(claims(&r.access_token()).1["aud"], DOCS);
    // Several: resource is required.
    let r = h.token(&two, &s2, &[]).await;
    assert_eq!((r.status, r.error()), (400, "invalid_target"));
    // Scheme and host are case-insensitive; the default port is dropped.
    let r = h
        .token(&one, &s1, &[("resource", "HTTPS://Docs.MCP.test:443/mcp")])
        .await;
    assert_eq!(claims(&r.access_token()).1["aud"], DOCS);
    for bad in [
        "https://docs.mcp.test/mcp#frag",
        "https://docs.mcp.test/MCP",
        "not a uri",
        "/relative",
        "https://unknown.mcp.test/",
        "https://other.mcp.test/",
        "https://dev.mcp.test/",
    ] {
        let r = h.token(&one, &s1, &[("resource", bad)]).await;
        assert_eq!((r.status, r.error()), (400, "invalid_target"), "{bad}");
    }
    // Two different resources in one request.
    let r = h
        .token(
            &two,
            &s2,
            &[("resource", DOCS), ("resource", "https://other.mcp.test/")],
        )
        .await;
    assert_eq!(r.error(), "invalid_target");
    // The same one twice is fine.
    let r = h
        .token(&two, &s2, &[("resource", DOCS), ("resource", DOCS)])
        .await;
    assert_eq!(r.status, 200);

    // A server moved to another environment is out of reach of the agent.
    let m = mandate::resources::ServerManifest {
        resource: DOCS.into(),
        name: "docs".into(),
        environment: "staging".into(),
        tools: vec![mandate::resources::parse_tool_spec("search:read:internal").unwrap()],
    };
    h.app().admin().import_server(&m).await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let r = h.token(&one, &s1, &[("resource", DOCS)]).await;
    assert_eq!(r.error(), "invalid_target");
    h
}
both!(resource_rules);

async fn lifetime_is_capped_and_suspension_refuses(h: H) -> H {
    h.server(DOCS, "prod", TOOLS).await;
    let (id, secret) = h
        .agent(NewAgent {
            name: "short".into(),
            owner: "o@example.com".into(),
            environment: "prod".into(),
            allowed_resources: vec![DOCS.into()],
            scope_ceiling: vec!["tools:read".into()],
            token_ttl_cap: Some(60),
            ..Default::default()
        })
        .await;
    let secret = secret.unwrap();
    let r = h.token(&id, &secret, &[]).await;
    assert_eq!(r.body["expires_in"], 60);
    let c = claims(&r.access_token()).1;
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 60);

    h.app()
        .admin()
        .set_agent_status(&id, mandate::agents::AgentStatus::Suspended)
        .await
        .unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let r = h.token(&id, &secret, &[]).await;
    assert_eq!((r.status, r.error()), (400, "unauthorized_client"));
    h.app()
        .admin()
        .set_agent_status(&id, mandate::agents::AgentStatus::Active)
        .await
        .unwrap();
    h.app().refresh_registry(true).await.unwrap();
    assert_eq!(h.token(&id, &secret, &[]).await.status, 200);
    h
}
both!(lifetime_is_capped_and_suspension_refuses);

async fn malformed_requests_get_rfc_errors(h: H) -> H {
    h.server(DOCS, "prod", TOOLS).await;
    let (id, secret) = h
        .simple_agent("prod", &[DOCS], "tools:read", "client_secret_basic")
        .await;
    let basic = Some((id.as_str(), secret.as_str()));
    // Missing or unknown grant type.
    let r = h.post("/token", basic, &[]).await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"));
    let r = h.post("/token", basic, &[("grant_type", "password")]).await;
    assert_eq!((r.status, r.error()), (400, "unsupported_grant_type"));
    let r = h.post("/token", basic, &[("grant_type", "implicit")]).await;
    assert_eq!(r.error(), "unsupported_grant_type");
    // Repeated parameter.
    let r = h
        .post(
            "/token",
            basic,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "a"),
                ("scope", "b"),
            ],
        )
        .await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"));
    // Wrong content type.
    let resp = h
        .http
        .post(h.url("/token"))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#)
        .send()
        .await
        .unwrap();
    let r = crate::harness::Resp::from(resp).await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"));
    // Oversized body, declared and chunked.
    let big = format!("grant_type=client_credentials&pad={}", "x".repeat(70_000));
    let resp = h
        .http
        .post(h.url("/token"))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    let r = crate::harness::Resp::from(resp).await;
    assert_eq!((r.status, r.error()), (413, "invalid_request"));
    // Chunked, with no Content-Length: the server stops reading at the limit and answers 413;
    // the client may see that answer or, still uploading, a reset connection. Never a 200 or
    // a hang, and the server goes on serving.
    let stream = futures_stream(big.into_bytes());
    let sent = h
        .http
        .post(h.url("/token"))
        .basic_auth(&id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(resp) = sent {
        assert_eq!(resp.status().as_u16(), 413);
    }
    assert_eq!(h.token(&id, &secret, &[]).await.status, 200);
    // Not valid form encoding at all: still a clean answer.
    let resp = h
        .http
        .post(h.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0xff, 0xfe, b'=', 0x00])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    // A GET is not allowed.
    let resp = h.http.get(h.url("/token")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    h
}
both!(malformed_requests_get_rfc_errors);

fn futures_stream(
    data: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    struct S(Vec<Vec<u8>>);
    impl futures_core::Stream for S {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.pop().map(Ok))
        }
    }
    let mut chunks: Vec<Vec<u8>> = data.chunks(8192).map(<[u8]>::to_vec).collect();
    chunks.reverse();
    S(chunks)
}
