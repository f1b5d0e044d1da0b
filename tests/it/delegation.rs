//! Delegation: token exchange (RFC 8693) with subject tokens from a trusted identity provider
//! and from Mandate itself, MCP-server-to-downstream exchange and the three-hop chain, ID-JAG
//! and workload identity with the jwt-bearer grant (RFC 7523), and every bad input refused.
use crate::both;
use crate::client_auth::{AgentKey, agent_key};
use crate::harness::{H, Resp};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mandate::agents::NewAgent;
use mandate::oauth::trust::{TrustKind, TrustedIssuer, WorkloadRule};
use serde_json::{Value, json};

const A: &str = "https://a.mcp.test/mcp";
const B: &str = "https://b.mcp.test/mcp";
const C: &str = "https://c.mcp.test/mcp";
const D: &str = "https://d.mcp.test/mcp";
const IDP: &str = "https://idp.test";
const WL: &str = "https://k8s.test";
const TE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JB: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const AT: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const IDT: &str = "urn:ietf:params:oauth:token-type:id_token";

fn issuer(iss: &str, kind: TrustKind, key: &AgentKey) -> TrustedIssuer {
    TrustedIssuer {
        issuer: iss.into(),
        kind,
        jwks_uri: None,
        jwks: Some(key.jwks.to_string()),
        algorithms: vec!["ES256".into()],
        audiences: vec!["mandate-at-idp".into()],
        subject_claim: "sub".into(),
        roles_claim: "roles".into(),
        workloads: vec![],
    }
}

/// Restarts the server trusting `IDP` (subject tokens and ID-JAGs) and `WL` (workloads whose
/// SPIFFE ID is under ns/prod map to the agent named "indexer").
async fn trust(h: &mut H, key: &AgentKey) {
    let mut wl = issuer(WL, TrustKind::Workload, key);
    wl.audiences.clear();
    wl.workloads = vec![WorkloadRule {
        claim: "sub".into(),
        pattern: "spiffe://example.org/ns/prod/sa/*".into(),
        agent: "indexer".into(),
    }];
    h.config.trusted_issuers = vec![
        issuer(IDP, TrustKind::SubjectToken, key),
        issuer(IDP, TrustKind::IdJag, key),
        wl,
    ];
    h.boot().await;
}

fn sign(key: &AgentKey, claims: &Value, typ: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = typ.map(String::from);
    jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
}

/// Mandate's issuer (kept across the restart that installs the trusted issuers).
fn as_issuer(h: &H) -> String {
    h.config.issuer.clone().unwrap()
}

fn human(h: &H, sub: &str, roles: &[&str], ttl: i64) -> Value {
    let now = h.now();
    json!({"iss": IDP, "sub": sub, "aud": as_issuer(h), "exp": now + ttl, "iat": now,
           "roles": roles, "jti": uuid::Uuid::new_v4().to_string()})
}

/// The payload of a JWT, unverified.
fn payload(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

/// A JWT with a hand-made header (for `alg: none` and HMAC forgeries).
fn raw_jwt(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

async fn exchange(
    h: &H,
    who: (&str, &str),
    subject: &str,
    kind: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut form = vec![
        ("grant_type", TE),
        ("subject_token", subject),
        ("subject_token_type", kind),
    ];
    form.extend_from_slice(extra);
    h.post("/token", Some(who), &form).await
}

/// The refused request issued nothing and said why in the protocol's terms.
fn refused(r: &Resp, status: u16, error: &str, what: &str) {
    assert_eq!(
        (r.status, r.error()),
        (status, error),
        "{what}: {:?}",
        r.body
    );
    assert!(r.body.get("access_token").is_none(), "{what}");
}

type Creds = (String, String);

/// Every audit event stored so far.
async fn audit_events(h: &H) -> Vec<Value> {
    let mut events = Vec::new();
    h.app().audit.sync().await;
    mandate::audit::query::export(&h.app().store.db, 0, i64::MAX, |r| {
        events.push(serde_json::from_str::<Value>(&r.json_line()).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    events
}

async fn setup(h: &H) -> (Creds, Creds, Creds, Creds) {
    let a = h
        .server(A, "prod", &["search:read:internal", "edit:write:internal"])
        .await;
    let b = h
        .server(B, "prod", &["fetch:read:internal", "store:write:internal"])
        .await;
    let c = h.server(C, "prod", &["archive:read:internal"]).await;
    h.server(D, "prod", &["log:read:internal"]).await;
    let x = h
        .simple_agent(
            "prod",
            &[A, B, C, D],
            "tools:read tools:write",
            "client_secret_basic",
        )
        .await;
    (a, b, c, x)
}

/// Subject tokens from a trusted identity provider: the agent acts for the human, roles reach
/// policy, and every bad token is `invalid_request`.
async fn human_subject_tokens(mut h: H) -> H {
    let key = agent_key("idp-1");
    trust(&mut h, &key).await;
    let (a, _b, _c, x) = setup(&h).await;
    let xs = (x.0.as_str(), x.1.as_str());

    // Delegation: sub is the human, act the agent, exp no later than the subject token's.
    let alice = sign(&key, &human(&h, "alice", &["editor"], 120), None);
    let r = exchange(&h, xs, &alice, JWT, &[("resource", A)]).await;
    let t = r.access_token();
    assert_eq!(r.body["issued_token_type"], AT);
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.body["expires_in"].as_i64().unwrap() <= 120);
    let c = payload(&t);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["client_id"], x.0.as_str());
    assert_eq!(c["aud"], A);
    assert_eq!(c["act"], json!({"sub": x.0}));
    assert!(c["exp"].as_i64().unwrap() <= h.now() + 120);
    // Introspection echoes act.
    let v = h.introspect((&a.0, &a.1), &t).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["act"], json!({"sub": x.0}));
    // id_token type and an audience from the issuer's list work too.
    let mut claims = human(&h, "alice", &["editor"], 120);
    claims["aud"] = json!(["mandate-at-idp"]);
    let r = exchange(&h, xs, &sign(&key, &claims, None), IDT, &[("audience", A)]).await;
    assert_eq!(payload(&r.access_token())["aud"], A);

    // Roles reach policy: writes need the editor role when acting for a human.
    let admin = h.app().admin().create_admin_token("t").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let policies = format!(
        "{}\n@id(\"writes-need-editor\")\nforbid (principal, action == Action::\"write\", resource)\n\
         when {{ context has delegation && !context.delegation.roles.contains(\"editor\") }};\n",
        mandate::policy::DEFAULT_POLICIES
    );
    let r = h
        .http
        .put(h.url("/admin/v1/policies"))
        .bearer_auth(&admin)
        .json(&json!({"policies": policies}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    h.app().refresh_registry(true).await.unwrap();
    let asks = [("resource", A), ("scope", "tools:read tools:write")];
    let r = exchange(&h, xs, &alice, JWT, &asks).await;
    assert_eq!(r.body["scope"], "tools:read tools:write", "{:?}", r.body);
    let bob = sign(&key, &human(&h, "bob", &["viewer"], 120), None);
    let r = exchange(&h, xs, &bob, JWT, &asks).await;
    assert_eq!(r.body["scope"], "tools:read", "{:?}", r.body);
    let r = exchange(
        &h,
        xs,
        &bob,
        JWT,
        &[("resource", A), ("scope", "tools:write")],
    )
    .await;
    refused(&r, 400, "invalid_scope", "bob may not write");

    // may_act: only the agent it names may act.
    let mut m = human(&h, "alice", &[], 120);
    m["may_act"] = json!({"sub": "agt_someone_else"});
    let r = exchange(&h, xs, &sign(&key, &m, None), JWT, &[("resource", A)]).await;
    refused(&r, 400, "invalid_request", "may_act names another agent");
    m["may_act"] = json!({"sub": x.0});
    let r = exchange(&h, xs, &sign(&key, &m, None), JWT, &[("resource", A)]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // A chain already in the subject token is kept below the agent.
    let mut m = human(&h, "alice", &[], 120);
    m["act"] = json!({"sub": "assistant-app", "iss": IDP});
    let r = exchange(&h, xs, &sign(&key, &m, None), JWT, &[("resource", A)]).await;
    assert_eq!(
        payload(&r.access_token())["act"],
        json!({"sub": x.0, "act": {"sub": "assistant-app", "iss": IDP}})
    );

    // Impersonation only where policy explicitly permits it for this agent.
    let with_impersonation = format!(
        "{policies}\n@id(\"x-impersonates\")\npermit (principal == Agent::\"{}\", action == Action::\"impersonate\", resource);\n",
        x.0
    );
    let r = h
        .http
        .put(h.url("/admin/v1/policies"))
        .bearer_auth(&admin)
        .json(&json!({"policies": with_impersonation}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    h.app().refresh_registry(true).await.unwrap();
    let r = exchange(&h, xs, &alice, JWT, &[("resource", A)]).await;
    let c = payload(&r.access_token());
    assert_eq!((c["sub"].as_str(), c.get("act")), (Some("alice"), None));
    let y = h
        .simple_agent("prod", &[A], "tools:read", "client_secret_basic")
        .await;
    let r = exchange(&h, (&y.0, &y.1), &alice, JWT, &[("resource", A)]).await;
    assert_eq!(
        payload(&r.access_token())["act"],
        json!({"sub": y.0}),
        "only x may impersonate"
    );
    // may_act still binds an agent that may impersonate.
    let mut m = human(&h, "alice", &[], 120);
    m["may_act"] = json!({"sub": y.0});
    let r = exchange(&h, xs, &sign(&key, &m, None), JWT, &[("resource", A)]).await;
    refused(
        &r,
        400,
        "invalid_request",
        "may_act names another agent, impersonation allowed",
    );

    // Bad subject tokens: each refused with invalid_request.
    let now = h.now();
    let other = agent_key("idp-1");
    let mut bad: Vec<(&str, String)> = Vec::new();
    let mut c = human(&h, "alice", &[], 120);
    c["exp"] = json!(now - 100);
    bad.push(("expired", sign(&key, &c, None)));
    let mut c = human(&h, "alice", &[], 1200);
    c["nbf"] = json!(now + 600);
    bad.push(("nbf in the future", sign(&key, &c, None)));
    let mut c = human(&h, "alice", &[], 120);
    c["aud"] = json!("https://another-as.test");
    bad.push(("wrong aud", sign(&key, &c, None)));
    let mut c = human(&h, "alice", &[], 120);
    c["iss"] = json!("https://evil.test");
    bad.push(("untrusted issuer", sign(&key, &c, None)));
    bad.push((
        "bad signature",
        sign(&other, &human(&h, "alice", &[], 120), None),
    ));
    let mut unknown = agent_key("idp-unknown");
    unknown.kid = "idp-unknown".into();
    bad.push((
        "unknown kid",
        sign(&unknown, &human(&h, "alice", &[], 120), None),
    ));
    let c = human(&h, "alice", &[], 120);
    bad.push((
        "alg none",
        raw_jwt(
            &json!({"alg": "none", "typ": "JWT", "kid": "idp-1"}),
            &c,
            b"",
        ),
    ));
    // HMAC keyed with the public key (algorithm confusion).
    let public = key.jwks["keys"][0].to_string();
    let mut hh = Header::new(Algorithm::HS256);
    hh.kid = Some("idp-1".into());
    bad.push((
        "HMAC with the public key",
        jsonwebtoken::encode(&hh, &c, &EncodingKey::from_secret(public.as_bytes())).unwrap(),
    ));
    let mut c = human(&h, "alice", &[], 120);
    c["act"] = json!({"sub": "x".repeat(3000)});
    bad.push(("oversized act", sign(&key, &c, None)));
    let mut deep = json!({"sub": "a0"});
    for i in 1..6 {
        deep = json!({"sub": format!("a{i}"), "act": deep});
    }
    let mut c = human(&h, "alice", &[], 120);
    c["act"] = deep;
    bad.push(("deeply nested act", sign(&key, &c, None)));
    bad.push(("garbage", "not.a.jwt".into()));
    bad.push((
        "an ID-JAG as subject token",
        sign(
            &key,
            &human(&h, "alice", &[], 120),
            Some("oauth-id-jag+jwt"),
        ),
    ));
    for (what, token) in &bad {
        let r = exchange(&h, xs, token, JWT, &[("resource", A)]).await;
        refused(&r, 400, "invalid_request", what);
    }

    // Parameter rules (RFC 8693 §2.1, §2.2.2).
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "requested_token_type other than access_token",
            vec![
                ("resource", A),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ],
            "invalid_request",
        ),
        (
            "actor_token_type without actor_token",
            vec![("resource", A), ("actor_token_type", AT)],
            "invalid_request",
        ),
        (
            "unknown resource",
            vec![("resource", "https://unknown.test/mcp")],
            "invalid_target",
        ),
        (
            "resource and audience disagree",
            vec![("resource", A), ("audience", B)],
            "invalid_target",
        ),
    ];
    for (what, extra, err) in cases {
        let r = exchange(&h, xs, &alice, JWT, &extra).await;
        refused(&r, 400, err, what);
    }
    let r = exchange(
        &h,
        xs,
        &alice,
        "urn:ietf:params:oauth:token-type:saml2",
        &[("resource", A)],
    )
    .await;
    refused(&r, 400, "invalid_request", "unsupported subject_token_type");
    let r = h
        .post(
            "/token",
            Some(xs),
            &[("grant_type", TE), ("subject_token_type", JWT)],
        )
        .await;
    refused(&r, 400, "invalid_request", "no subject_token");
    let r = h
        .post(
            "/token",
            None,
            &[
                ("grant_type", TE),
                ("subject_token", &alice),
                ("subject_token_type", JWT),
            ],
        )
        .await;
    refused(&r, 401, "invalid_client", "no client authentication");

    // Audited: issued and refused, with the delegation and never the token.
    let events = audit_events(&h).await;
    let issued: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "token.issued" && e["details"]["grant_type"] == TE)
        .collect();
    assert!(!issued.is_empty());
    assert_eq!(issued[0]["details"]["sub"], "alice");
    assert_eq!(issued[0]["details"]["act"], x.0.as_str());
    let refusals = events
        .iter()
        .filter(|e| e["type"] == "token.refused" && e["details"]["grant_type"] == TE)
        .count();
    assert!(refusals >= bad.len(), "{refusals}");
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains(&alice),
        "a subject token reached the audit log"
    );
    h
}
both!(human_subject_tokens);

/// human -> agent -> MCP server A -> MCP server B (-> C): nested act, exp never later than the
/// first token, no passthrough, no escalation, depth limited, revocation reaches derived tokens.
async fn three_hop_chain(mut h: H) -> H {
    let key = agent_key("idp-1");
    h.config.max_delegation_depth = 3;
    trust(&mut h, &key).await;
    let (a, b, c, x) = setup(&h).await;
    let xs = (x.0.as_str(), x.1.as_str());

    let alice = sign(&key, &human(&h, "alice", &[], 200), None);
    let t1 = exchange(
        &h,
        xs,
        &alice,
        JWT,
        &[("resource", A), ("scope", "tools:read")],
    )
    .await
    .access_token();
    let exp1 = payload(&t1)["exp"].as_i64().unwrap();
    h.clock.advance(5);
    // Server A exchanges what it received for a token to B.
    let r = exchange(&h, (&a.0, &a.1), &t1, AT, &[("resource", B)]).await;
    let t2 = r.access_token();
    let c2 = payload(&t2);
    assert_eq!(c2["sub"], "alice");
    assert_eq!(c2["aud"], B);
    assert_eq!(c2["scope"], "tools:read");
    assert_eq!(c2["act"], json!({"sub": a.0, "act": {"sub": x.0}}));
    assert!(c2["exp"].as_i64().unwrap() <= exp1);
    assert_eq!(c2["sid"], payload(&t1)["sid"]);
    let v = h.introspect((&b.0, &b.1), &t2).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["act"], json!({"sub": a.0, "act": {"sub": x.0}}));
    // Only B sees it.
    assert_eq!(h.introspect((&a.0, &a.1), &t2).await["active"], false);

    h.clock.advance(5);
    let t3 = exchange(&h, (&b.0, &b.1), &t2, AT, &[("resource", C)])
        .await
        .access_token();
    let c3 = payload(&t3);
    assert_eq!(
        c3["act"],
        json!({"sub": b.0, "act": {"sub": a.0, "act": {"sub": x.0}}})
    );
    assert!(c3["exp"].as_i64().unwrap() <= exp1);
    assert_eq!(h.introspect((&c.0, &c.1), &t3).await["act"], c3["act"]);
    // A fourth actor would exceed max_delegation_depth = 3.
    let r = exchange(&h, (&c.0, &c.1), &t3, AT, &[("resource", D)]).await;
    refused(&r, 400, "invalid_request", "chain too deep");

    // No passthrough: a server exchanges only tokens issued to it.
    let r = exchange(&h, (&a.0, &a.1), &t2, AT, &[("resource", C)]).await;
    refused(
        &r,
        400,
        "invalid_request",
        "subject token for another server",
    );
    let r = exchange(&h, (&b.0, &b.1), &t1, AT, &[("resource", C)]).await;
    refused(
        &r,
        400,
        "invalid_request",
        "subject token for another server",
    );
    // No escalation: t1 carries tools:read only.
    let r = exchange(
        &h,
        (&a.0, &a.1),
        &t1,
        AT,
        &[("resource", B), ("scope", "tools:write")],
    )
    .await;
    refused(
        &r,
        400,
        "invalid_scope",
        "scope escalation through exchange",
    );
    // A server exchanges access tokens only, and is itself the actor.
    let r = exchange(&h, (&a.0, &a.1), &alice, JWT, &[("resource", B)]).await;
    refused(
        &r,
        400,
        "invalid_request",
        "server with an external subject",
    );
    let r = exchange(
        &h,
        (&a.0, &a.1),
        &t1,
        AT,
        &[
            ("resource", B),
            ("actor_token", &t1),
            ("actor_token_type", AT),
        ],
    )
    .await;
    refused(&r, 400, "invalid_request", "server with an actor token");
    let r = exchange(&h, (&a.0, &a.1), &t1, AT, &[("resource", A)]).await;
    refused(&r, 400, "invalid_target", "exchange for itself");

    // An agent may exchange its own tokens (no act is added for itself), not another's.
    let own = h.token(&x.0, &x.1, &[("resource", A)]).await.access_token();
    let r = exchange(&h, xs, &own, AT, &[("resource", B)]).await;
    let co = payload(&r.access_token());
    assert_eq!(
        (co["sub"].as_str(), co.get("act")),
        (Some(x.0.as_str()), None)
    );
    let y = h
        .simple_agent("prod", &[A, B], "tools:read", "client_secret_basic")
        .await;
    let r = exchange(&h, (&y.0, &y.1), &own, AT, &[("resource", B)]).await;
    refused(&r, 400, "invalid_request", "another agent's token");
    // An actor token may only confirm the authenticated agent.
    let yt = h.token(&y.0, &y.1, &[("resource", A)]).await.access_token();
    let r = exchange(
        &h,
        xs,
        &alice,
        JWT,
        &[
            ("resource", A),
            ("actor_token", &yt),
            ("actor_token_type", AT),
        ],
    )
    .await;
    refused(&r, 400, "invalid_request", "actor token of another agent");
    let r = exchange(
        &h,
        xs,
        &alice,
        JWT,
        &[
            ("resource", A),
            ("actor_token", &own),
            ("actor_token_type", AT),
        ],
    )
    .await;
    assert_eq!(payload(&r.access_token())["act"], json!({"sub": x.0}));

    // Revoking the subject's session kills every derived token, and no more are made.
    let sid = c2["sid"].as_str().unwrap().to_string();
    h.app()
        .revoke_kind(
            mandate::audit::Actor::system(),
            mandate::sessions::Kind::Session,
            &sid,
            Some(&x.0),
            None,
        )
        .await
        .unwrap();
    assert_eq!(h.introspect((&b.0, &b.1), &t2).await["active"], false);
    assert_eq!(h.introspect((&c.0, &c.1), &t3).await["active"], false);
    let r = exchange(&h, (&a.0, &a.1), &t1, AT, &[("resource", B)]).await;
    refused(&r, 400, "invalid_request", "revoked subject");

    // Killing the delegating agent kills tokens derived from its delegation.
    h.clock.advance(1);
    let alice = sign(&key, &human(&h, "alice", &[], 200), None);
    let t1 = exchange(&h, xs, &alice, JWT, &[("resource", A)])
        .await
        .access_token();
    let t2 = exchange(&h, (&a.0, &a.1), &t1, AT, &[("resource", B)])
        .await
        .access_token();
    assert_eq!(h.introspect((&b.0, &b.1), &t2).await["active"], true);
    h.app()
        .kill_agent(mandate::audit::Actor::system(), &x.0)
        .await
        .unwrap();
    assert_eq!(h.introspect((&b.0, &b.1), &t2).await["active"], false);
    h.clock.advance(1);
    let r = exchange(&h, (&a.0, &a.1), &t1, AT, &[("resource", B)]).await;
    refused(&r, 400, "invalid_request", "killed agent's token");
    h
}
both!(three_hop_chain);

mod jwt_bearer;

/// The ID-JAG replay cache and derived-token revocation on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    if let Some(h) = H::start_redis("delegation_redis_id_jag", None).await {
        jwt_bearer::id_jag(h).await.finish().await;
    }
    if let Some(h) = H::start_redis("delegation_redis_chain", None).await {
        three_hop_chain(h).await.finish().await;
    }
}

/// A trusted issuer's keys from its `jwks_uri` (a tiny local HTTP server): cached, fetched
/// again on an unknown `kid` (rate limited), so a rotation is picked up and a retired key is not.
async fn remote_jwks_rotation(mut h: H) -> H {
    use std::sync::{Arc, Mutex};
    let k1 = agent_key("k1");
    let k2 = agent_key("k2");
    let served = Arc::new(Mutex::new(k1.jwks.clone()));
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, f) = (served.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (s, f) = (s.clone(), f.clone());
            async move {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(s.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut t = issuer(IDP, TrustKind::SubjectToken, &k1);
    t.jwks = None;
    t.jwks_uri = Some(format!("http://{addr}/jwks"));
    h.config.trusted_issuers = vec![t];
    h.boot().await;
    let (_a, _b, _c, x) = setup(&h).await;
    let xs = (x.0.as_str(), x.1.as_str());

    let r = exchange(
        &h,
        xs,
        &sign(&k1, &human(&h, "alice", &[], 120), None),
        JWT,
        &[("resource", A)],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = exchange(
        &h,
        xs,
        &sign(&k1, &human(&h, "alice", &[], 120), None),
        JWT,
        &[("resource", A)],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached"
    );

    // The IdP rotates to k2 and retires k1.
    *served.lock().unwrap() = k2.jwks.clone();
    h.clock.advance(11);
    let r = exchange(
        &h,
        xs,
        &sign(&k2, &human(&h, "alice", &[], 120), None),
        JWT,
        &[("resource", A)],
    )
    .await;
    assert_eq!(r.status, 200, "new kid picked up: {:?}", r.body);
    h.clock.advance(11);
    let r = exchange(
        &h,
        xs,
        &sign(&k1, &human(&h, "alice", &[], 120), None),
        JWT,
        &[("resource", A)],
    )
    .await;
    refused(&r, 400, "invalid_request", "retired key");
    h
}
both!(remote_jwks_rotation);
