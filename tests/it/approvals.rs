//! Step-up approvals (OpenID CIBA poll mode): `/bc-authorize`, the approver's passkey
//! decision bound to the request and its details, the CIBA grant's polling states, the token
//! it issues, and every refusal. Time moves only by the injected clock.
use crate::harness::{Backend, H, Resp, eventually};
use mandate::humans::{self, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const CIBA: &str = "urn:openid:params:grant-type:ciba";
const MCP: &str = "https://mcp.example.com/ops";

macro_rules! approvals_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some((h, hook)) =
                    super::start($crate::harness::Backend::Sqlite, stringify!($name)).await
                {
                    let h = super::$name(h, hook).await;
                    h.finish().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some((h, hook)) =
                    super::start($crate::harness::Backend::Postgres, stringify!($name)).await
                {
                    let h = super::$name(h, hook).await;
                    h.finish().await;
                }
            }
        }
    };
}

/// What the webhook receiver got.
type Hook = Arc<Mutex<Vec<Value>>>;

/// A server with a `localhost` issuer (WebAuthn needs a domain) and a webhook receiver.
async fn start(backend: Backend, test: &str) -> Option<(H, Hook)> {
    let hook: Hook = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = hook.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let got = got.clone();
            async move {
                got.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = H::start_with(backend, test, |c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.issuer = Some(format!("http://localhost:{port}"));
        c.approval_webhook_url = Some(hook_url);
    })
    .await?;
    Some((h, hook))
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn origin(h: &H) -> Url {
    Url::parse(h.app().issuer.as_str()).unwrap()
}

/// A person signed in with a software passkey.
struct Person {
    id: String,
    sid: String,
    csrf: String,
    auth: SoftPasskey,
}

async fn script_post(h: &H, path: &str, body: Value, p: Option<&Person>) -> reqwest::Response {
    let mut req = browser()
        .post(format!("{}{path}", h.base))
        .header("origin", origin(h).origin().ascii_serialization())
        .json(&body);
    if let Some(p) = p {
        req = req
            .header("cookie", format!("__Host-mandate_session={}", p.sid))
            .header("x-csrf-token", &p.csrf);
    }
    req.send().await.unwrap()
}

async fn get(h: &H, path: &str, p: Option<&Person>) -> reqwest::Response {
    let mut req = browser().get(format!("{}{path}", h.base));
    if let Some(p) = p {
        req = req.header("cookie", format!("__Host-mandate_session={}", p.sid));
    }
    req.send().await.unwrap()
}

/// Invites `email` with `roles`, enrols a software passkey (which signs them in).
async fn person(h: &H, email: &str, roles: &[Role]) -> Person {
    let trail = h.app().audit.trail(mandate::audit::Actor::system());
    let link = humans::invite(
        &h.app().store,
        &trail,
        h.now(),
        &h.app().issuer,
        email,
        "Test Person",
        roles,
        3600,
    )
    .await
    .unwrap()
    .link;
    let path = link.strip_prefix(h.app().issuer.as_str()).unwrap();
    let started: Value = script_post(h, &format!("{path}/start"), json!({}), None)
        .await
        .json()
        .await
        .unwrap();
    let ccr: CreationChallengeResponse =
        serde_json::from_value(started["options"].clone()).unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = auth.do_registration(origin(h), ccr).unwrap();
    let r = script_post(
        h,
        &format!("{path}/finish"),
        json!({"ceremony": started["ceremony"], "name": "laptop", "credential": cred}),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let sid = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-mandate_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("__Host-mandate_session=")
        .to_string();
    let mut p = Person {
        id: String::new(),
        sid,
        csrf: String::new(),
        auth,
    };
    let page = get(h, "/account", Some(&p)).await.text().await.unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    p.csrf = page[at..].split('"').next().unwrap().to_string();
    p.id = humans::find_by_email(&h.app().store, email)
        .await
        .unwrap()
        .unwrap()
        .human
        .id;
    p
}

/// Starts a decision: (ceremony, options) or the refusal.
async fn start_decision(
    h: &H,
    p: &Person,
    id: &str,
) -> Result<(String, RequestChallengeResponse), (StatusCode, Value)> {
    let r = script_post(h, &format!("/approvals/{id}/start"), json!({}), Some(p)).await;
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    if status != StatusCode::OK {
        return Err((status, v));
    }
    Ok((
        v["ceremony"].as_str().unwrap().to_string(),
        serde_json::from_value(v["options"].clone()).unwrap(),
    ))
}

async fn finish_decision(
    h: &H,
    p: &Person,
    id: &str,
    ceremony: &str,
    cred: &impl serde::Serialize,
    decision: &str,
    reason: Option<&str>,
) -> (StatusCode, Value) {
    let r = script_post(
        h,
        &format!("/approvals/{id}/finish"),
        json!({"ceremony": ceremony, "credential": cred, "decision": decision, "reason": reason}),
        Some(p),
    )
    .await;
    (r.status(), r.json().await.unwrap())
}

/// Approves or denies `id` as `p` with a fresh passkey assertion.
async fn decide(
    h: &H,
    p: &mut Person,
    id: &str,
    decision: &str,
    reason: Option<&str>,
) -> (StatusCode, Value) {
    let (ceremony, rcr) = start_decision(h, p, id).await.unwrap();
    let cred = p.auth.do_authentication(origin(h), rcr).unwrap();
    finish_decision(h, p, id, &ceremony, &cred, decision, reason).await
}

fn details(tool: &str, args: Value) -> String {
    json!([{"type": "mcp_tool_call", "tool": tool, "arguments": args, "reason": "release v42"}])
        .to_string()
}

async fn bc(h: &H, agent: (&str, &str), form: &[(&str, &str)]) -> Resp {
    h.post("/bc-authorize", Some(agent), form).await
}

async fn poll(h: &H, agent: (&str, &str), auth_req_id: &str) -> Resp {
    h.post(
        "/token",
        Some(agent),
        &[("grant_type", CIBA), ("auth_req_id", auth_req_id)],
    )
    .await
}

/// The public request id behind an `auth_req_id`.
async fn request_id(h: &H, auth_req_id: &str) -> String {
    use mandate::approvals::entity::approval_request as row;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let hash = mandate::secrets::hex(&mandate::secrets::hash(auth_req_id));
    row::Entity::find()
        .filter(row::Column::AuthReqHash.eq(hash))
        .one(&h.app().store.db)
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn audit_count(h: &H, kind: &'static str) -> usize {
    let f = mandate::audit::query::Filter {
        since: 0,
        until: i64::MAX,
        kind: Some(kind),
        limit: 1000,
        ..Default::default()
    };
    h.app().audit.sync().await;
    mandate::audit::query::page(&h.app().store.db, &f)
        .await
        .unwrap()
        .events
        .len()
}

struct World {
    agent: (String, String),
    other: (String, String),
    server: (String, String),
    owner: Person,
    bob: Person,
}

async fn world(h: &H) -> World {
    let server = h
        .server(
            MCP,
            "prod",
            &[
                "deploy:execute:restricted",
                "drop:execute:restricted",
                "search:read:public",
            ],
        )
        .await;
    let agent = h
        .simple_agent(
            "prod",
            &[MCP],
            "tools:deploy tools:search",
            "client_secret_basic",
        )
        .await;
    let other = h
        .simple_agent("prod", &[MCP], "tools:deploy", "client_secret_basic")
        .await;
    // The agents' owner (owner@example.com) approves; bob is another approver.
    let owner = person(h, "owner@example.com", &[Role::Approver]).await;
    let bob = person(h, "bob@example.com", &[Role::Approver]).await;
    World {
        agent,
        other,
        server,
        owner,
        bob,
    }
}

async fn approve_and_poll(h: H, hook: Hook) -> H {
    let mut w = world(&h).await;
    let agent = (w.agent.0.as_str(), w.agent.1.as_str());
    // A plain token for the restricted tool: step-up needed.
    let r = h
        .token(
            agent.0,
            agent.1,
            &[("resource", MCP), ("scope", "tools:deploy")],
        )
        .await;
    assert_eq!(r.error(), "invalid_scope", "{:?}", r.body);

    // The metadata names the endpoint and the grant.
    let md = h
        .http
        .get(h.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    let md: Value = md.json().await.unwrap();
    assert_eq!(
        md["backchannel_authentication_endpoint"],
        format!("{}/bc-authorize", h.app().issuer)
    );
    assert_eq!(
        md["backchannel_token_delivery_modes_supported"],
        json!(["poll"])
    );
    assert!(
        md["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(CIBA))
    );
    assert_eq!(
        md["authorization_details_types_supported"],
        json!(["mcp_tool_call"])
    );

    // The live list: an event stream that says when something changed.
    let mut events = browser()
        .get(h.url("/approvals/events"))
        .header("cookie", format!("__Host-mandate_session={}", w.owner.sid))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(
        get(&h, "/approvals/events", None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let args = json!({"service": "web", "version": "v42", "note": "<script>alert(1)</script>"});
    let d = details("deploy", args.clone());
    let r = bc(
        &h,
        agent,
        &[
            ("resource", MCP),
            ("scope", "tools:deploy"),
            ("authorization_details", &d),
            ("binding_message", "<b>Deploy</b> web v42"),
            ("acr_values", "urn:mandate:acr:passkey-approval"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let auth_req_id = r.body["auth_req_id"].as_str().unwrap().to_string();
    assert_eq!(r.body["expires_in"], 300);
    assert_eq!(r.body["interval"], 5);
    let id = request_id(&h, &auth_req_id).await;

    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), events.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("event: changed"));

    // The approver's pages: the list, and the request with everything rendered as text.
    let list = get(&h, "/approvals", Some(&w.owner)).await;
    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(
        list.headers()["content-security-policy"],
        mandate::humans::web::PAGE_CSP
    );
    let body = list.text().await.unwrap();
    assert!(body.contains(&format!("/approvals/{id}")));
    assert!(body.contains("/static/approvals.js") && !body.contains("<script>"));
    let j: Value = get(&h, "/approvals/list.json", Some(&w.owner))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(j["requests"][0]["id"], id.as_str());
    let j: Value = get(&h, "/approvals/list.json", Some(&w.bob))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(j["requests"], json!([]));
    let page = get(&h, &format!("/approvals/{id}"), Some(&w.owner)).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let body = page.text().await.unwrap();
    // Escaped as text (askama writes &#60; for <).
    assert!(
        body.contains("&#60;b&#62;Deploy&#60;/b&#62; web v42"),
        "{body}"
    );
    assert!(body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"));
    assert!(!body.contains("<b>Deploy") && !body.contains("<script>alert"));
    assert!(body.contains("restricted-needs-approval") && body.contains("release v42"));
    assert!(body.contains("test agent") && body.contains("medium"));
    assert_eq!(
        get(&h, &format!("/approvals/{id}"), Some(&w.bob))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&h, &format!("/approvals/{id}"), None).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(audit_count(&h, "approval.viewed").await, 1);

    // The webhook hears of it, in the background.
    assert!(
        eventually(5, || async { !hook.lock().unwrap().is_empty() }).await,
        "webhook not called"
    );
    let sent = hook.lock().unwrap()[0].clone();
    assert!(sent["text"].as_str().unwrap().contains("tools:deploy"));
    assert_eq!(sent["url"], format!("{}/approvals/{id}", h.app().issuer));
    assert!(
        eventually(5, || async {
            audit_count(&h, "approval.notified").await == 1
        })
        .await
    );

    // Polling: pending; too fast: slow_down, and the interval grows by 5.
    assert_eq!(
        poll(&h, agent, &auth_req_id).await.error(),
        "authorization_pending"
    );
    h.clock.advance(1);
    assert_eq!(poll(&h, agent, &auth_req_id).await.error(), "slow_down");
    h.clock.advance(6);
    assert_eq!(poll(&h, agent, &auth_req_id).await.error(), "slow_down");
    h.clock.advance(15);
    assert_eq!(
        poll(&h, agent, &auth_req_id).await.error(),
        "authorization_pending"
    );

    // Another approver may not decide a request routed to the owner.
    let (status, _) = start_decision(&h, &w.bob, &id).await.unwrap_err();
    assert_eq!(status, StatusCode::FORBIDDEN);
    // CSRF: without the token, refused.
    let r = browser()
        .post(h.url(&format!("/approvals/{id}/start")))
        .header("origin", origin(&h).origin().ascii_serialization())
        .header("cookie", format!("__Host-mandate_session={}", w.owner.sid))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // An assertion for another challenge (a second ceremony) is refused.
    let (c1, _r1) = start_decision(&h, &w.owner, &id).await.unwrap();
    let (_c2, r2) = start_decision(&h, &w.owner, &id).await.unwrap();
    let cred2 = w.owner.auth.do_authentication(origin(&h), r2).unwrap();
    let (status, _) = finish_decision(&h, &w.owner, &id, &c1, &cred2, "approve", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(poll(&h, agent, &auth_req_id).await.error(), "slow_down");

    // The owner approves with a fresh passkey assertion.
    let (status, v) = decide(&h, &mut w.owner, &id, "approve", None).await;
    assert_eq!(status, StatusCode::OK, "{v:?}");
    assert_eq!(v["status"], "approved");
    let decided_at = h.now();
    // Decided: a second decision is refused.
    let (status, _) = start_decision(&h, &w.owner, &id).await.unwrap_err();
    assert_eq!(status, StatusCode::CONFLICT);

    // Another client's auth_req_id: invalid_grant.
    let other = (w.other.0.as_str(), w.other.1.as_str());
    assert_eq!(poll(&h, other, &auth_req_id).await.error(), "invalid_grant");

    h.clock.advance(20);
    let r = poll(&h, agent, &auth_req_id).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["expires_in"], 60);
    assert_eq!(r.body["scope"], "tools:deploy");
    let token = r.access_token();
    // Redeemed once only.
    assert_eq!(poll(&h, agent, &auth_req_id).await.error(), "invalid_grant");

    // Introspection returns the approval.
    let i = h.introspect((&w.server.0, &w.server.1), &token).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["aud"], MCP);
    assert_eq!(i["scope"], "tools:deploy");
    assert_eq!(
        i["authorization_details"],
        serde_json::from_str::<Value>(&d).unwrap()
    );
    assert_eq!(i["authorization_details"][0]["arguments"], args);
    assert_eq!(i["acr"], "urn:mandate:acr:passkey-approval");
    assert_eq!(i["auth_time"], decided_at);
    assert_eq!(i["approver"], w.owner.id.as_str());
    assert_eq!(i["exp"].as_i64().unwrap() - i["iat"].as_i64().unwrap(), 60);

    for kind in [
        "approval.requested",
        "approval.approved",
        "approval.redeemed",
    ] {
        assert_eq!(audit_count(&h, kind).await, 1, "{kind}");
    }
    h
}
approvals_test!(approve_and_poll);

async fn deny_expire_and_tamper(h: H, _hook: Hook) -> H {
    let mut w = world(&h).await;
    let agent = (w.agent.0.as_str(), w.agent.1.as_str());
    let d = details("deploy", json!({"service": "db"}));
    let ask = |expiry: &'static str| {
        let d = d.clone();
        let h = &h;
        async move {
            let r = bc(
                h,
                agent,
                &[
                    ("resource", MCP),
                    ("authorization_details", &d),
                    ("requested_expiry", expiry),
                ],
            )
            .await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body["auth_req_id"].as_str().unwrap().to_string()
        }
    };

    // Deny with a reason: the agent receives it as error_description.
    let denied = ask("120").await;
    let id = request_id(&h, &denied).await;
    let (status, v) = decide(&h, &mut w.owner, &id, "deny", Some("not during the freeze")).await;
    assert_eq!(status, StatusCode::OK, "{v:?}");
    assert_eq!(v["status"], "denied");
    let r = poll(&h, agent, &denied).await;
    assert_eq!(r.error(), "access_denied");
    assert_eq!(r.body["error_description"], "not during the freeze");
    assert_eq!(audit_count(&h, "approval.denied").await, 1);
    // Denied is final.
    let (status, _) = start_decision(&h, &w.owner, &id).await.unwrap_err();
    assert_eq!(status, StatusCode::CONFLICT);

    // Details changed between the passkey challenge and the answer: refused.
    let tampered = ask("120").await;
    let tid = request_id(&h, &tampered).await;
    let (ceremony, rcr) = start_decision(&h, &w.owner, &tid).await.unwrap();
    {
        use mandate::approvals::entity::approval_request as row;
        use sea_orm::{ActiveModelTrait, EntityTrait, Set};
        let m = row::Entity::find_by_id(tid.clone())
            .one(&h.app().store.db)
            .await
            .unwrap()
            .unwrap();
        let mut am: row::ActiveModel = m.into();
        am.authorization_details = Set(details("deploy", json!({"service": "everything"})));
        am.update(&h.app().store.db).await.unwrap();
    }
    let cred = w.owner.auth.do_authentication(origin(&h), rcr).unwrap();
    let (status, _) = finish_decision(&h, &w.owner, &tid, &ceremony, &cred, "approve", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A ceremony for one request cannot decide another.
    let (ceremony, rcr) = start_decision(&h, &w.owner, &tid).await.unwrap();
    let second = ask("120").await;
    let sid2 = request_id(&h, &second).await;
    let cred = w.owner.auth.do_authentication(origin(&h), rcr).unwrap();
    let (status, _) = finish_decision(&h, &w.owner, &sid2, &ceremony, &cred, "approve", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        poll(&h, agent, &second).await.error(),
        "authorization_pending"
    );

    // Expiry: a decision after it is refused, and the poll says expired_token.
    let short = ask("30").await;
    let short_id = request_id(&h, &short).await;
    let (ceremony, rcr) = start_decision(&h, &w.owner, &short_id).await.unwrap();
    h.clock.advance(31);
    let cred = w.owner.auth.do_authentication(origin(&h), rcr).unwrap();
    let (status, _) =
        finish_decision(&h, &w.owner, &short_id, &ceremony, &cred, "approve", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(poll(&h, agent, &short).await.error(), "expired_token");
    assert_eq!(poll(&h, agent, &short).await.error(), "expired_token");

    // The sweep expires the rest and, past the retention, deletes finished requests.
    h.clock.advance(200);
    let (expired, _) = h.app().sweep_approvals().await.unwrap();
    assert_eq!(expired, 2);
    h.clock.advance(h.config.approval_retention_secs + 1);
    let (_, deleted) = h.app().sweep_approvals().await.unwrap();
    assert_eq!(deleted, 4);
    assert_eq!(poll(&h, agent, &denied).await.error(), "invalid_grant");
    let _ = &w.bob;
    h
}
approvals_test!(deny_expire_and_tamper);

async fn bad_requests(h: H, _hook: Hook) -> H {
    let w = world(&h).await;
    let _viewer = person(&h, "vic@example.com", &[Role::Viewer]).await;
    let agent = (w.agent.0.as_str(), w.agent.1.as_str());
    let ok = details("deploy", json!({"service": "web"}));
    let try_bc = |extra: Vec<(&'static str, String)>| {
        let h = &h;
        async move {
            let mut form: Vec<(&str, String)> = vec![("resource", MCP.to_string())];
            form.extend(extra);
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            bc(h, agent, &form).await
        }
    };
    let details_case = |v: String| vec![("authorization_details", v)];
    // Oversized.
    let big = details("deploy", json!({"blob": "x".repeat(17 * 1024)}));
    let r = try_bc(details_case(big)).await;
    assert_eq!(r.error(), "invalid_request", "{:?}", r.body);
    // Deeply nested.
    let mut nested = json!("leaf");
    for _ in 0..20 {
        nested = json!({ "n": nested });
    }
    let r = try_bc(details_case(details("deploy", nested))).await;
    assert_eq!(r.error(), "invalid_request");
    assert!(
        r.body["error_description"]
            .as_str()
            .unwrap()
            .contains("nested")
    );
    // Not an array, wrong type, both or neither arguments, unknown member, not JSON.
    for bad in [
        json!({"type": "mcp_tool_call", "tool": "deploy", "arguments": {}}).to_string(),
        json!([{"type": "payment", "tool": "deploy", "arguments": {}}]).to_string(),
        json!([{"type": "mcp_tool_call", "tool": "deploy", "arguments": {}, "arguments_digest": "x"}]).to_string(),
        json!([{"type": "mcp_tool_call", "tool": "deploy"}]).to_string(),
        json!([{"type": "mcp_tool_call", "tool": "deploy", "arguments": {}, "extra": 1}]).to_string(),
        json!([{"type": "mcp_tool_call", "tool": "nosuch", "arguments": {}}]).to_string(),
        "[{".to_string(),
    ] {
        let r = try_bc(details_case(bad.clone())).await;
        assert_eq!(r.error(), "invalid_request", "{bad}: {:?}", r.body);
    }
    let r = try_bc(vec![]).await;
    assert_eq!(r.error(), "invalid_request");
    // The scope must name exactly the tools of the details.
    let r = try_bc(vec![
        ("authorization_details", ok.clone()),
        ("scope", "tools:search".into()),
    ])
    .await;
    assert_eq!(r.error(), "invalid_scope");
    // Unknown resource.
    let r = bc(
        &h,
        agent,
        &[
            ("resource", "https://other.example.com/mcp"),
            ("authorization_details", &ok),
        ],
    )
    .await;
    assert_eq!(r.error(), "invalid_target");
    // Outside the agent's ceiling: policy would refuse even with approval.
    let r = try_bc(details_case(details("drop", json!({})))).await;
    assert_eq!(r.error(), "access_denied", "{:?}", r.body);
    // Binding message: too long, control characters.
    let r = try_bc(vec![
        ("authorization_details", ok.clone()),
        ("binding_message", "x".repeat(201)),
    ])
    .await;
    assert_eq!(r.error(), "invalid_request");
    let r = try_bc(vec![
        ("authorization_details", ok.clone()),
        ("binding_message", "a\nb".into()),
    ])
    .await;
    assert_eq!(r.error(), "invalid_request");
    // login_hint: nobody, or somebody who may not approve.
    for hint in ["nobody@example.com", "vic@example.com"] {
        let r = try_bc(vec![
            ("authorization_details", ok.clone()),
            ("login_hint", hint.into()),
        ])
        .await;
        assert_eq!(r.error(), "unknown_user_id", "{hint}");
    }
    // Unsupported acr, expiry out of range.
    let r = try_bc(vec![
        ("authorization_details", ok.clone()),
        ("acr_values", "urn:other".into()),
    ])
    .await;
    assert_eq!(r.error(), "invalid_request");
    for e in ["0", "-5", "99999", "soon"] {
        let r = try_bc(vec![
            ("authorization_details", ok.clone()),
            ("requested_expiry", e.into()),
        ])
        .await;
        assert_eq!(r.error(), "invalid_request", "{e}");
    }
    // Bad client credentials; an MCP server may not ask.
    let r = bc(&h, (agent.0, "wrong"), &[("authorization_details", &ok)]).await;
    assert_eq!(r.status, 401);
    let r = bc(
        &h,
        (&w.server.0, &w.server.1),
        &[("authorization_details", &ok)],
    )
    .await;
    assert_eq!(r.error(), "unauthorized_client");
    // Unknown auth_req_id.
    assert_eq!(
        poll(&h, agent, "mnd_car_nonsense").await.error(),
        "invalid_grant"
    );
    let r = h.post("/token", Some(agent), &[("grant_type", CIBA)]).await;
    assert_eq!(r.error(), "invalid_request");

    // login_hint routes to bob: the owner (not admin) may no longer decide, bob may.
    let r = try_bc(vec![
        ("authorization_details", ok.clone()),
        ("login_hint", "bob@example.com".into()),
    ])
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = request_id(&h, r.body["auth_req_id"].as_str().unwrap()).await;
    assert_eq!(
        start_decision(&h, &w.owner, &id).await.unwrap_err().0,
        StatusCode::FORBIDDEN
    );
    assert!(start_decision(&h, &w.bob, &id).await.is_ok());
    h
}
approvals_test!(bad_requests);

/// An open live list does not hold the server's graceful shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_at_shutdown() {
    let (h, _hook) = start(Backend::Sqlite, "event_streams_end_at_shutdown")
        .await
        .unwrap();
    let p = person(&h, "ada@example.com", &[Role::Approver]).await;
    let mut events = get(&h, "/approvals/events", Some(&p)).await;
    assert_eq!(events.status(), StatusCode::OK);
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = events.chunk().await {} });
    tokio::time::timeout(std::time::Duration::from_secs(10), h.finish())
        .await
        .expect("shutdown waited for the event stream");
    tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .unwrap()
        .unwrap();
}
