//! People acting through MCP clients are `Human` principals: on the consent page and in the
//! token (authorization-code grant, refresh), through AuthZEN with their token, with policies
//! on their roles, without one person's decision reaching another; and a policy set stored
//! before Human principals existed keeps its old behaviour.
use crate::authorize::{MCP, code_for, public_client, redeem, refresh};
use crate::harness::{H, Resp};
use base64::Engine;
use mandate::app::AppState;
use mandate::humans::Role;
use serde_json::{Value, json};

const TOOLS: &[&str] = &[
    "search:read:internal",
    "edit:write:internal",
    "wipe:execute:restricted",
    "export:read:confidential",
];

fn open(c: &mut mandate::config::Config) {
    c.registration_policy = "open".into();
}

macro_rules! open_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let h = $crate::harness::H::start_with(
                    $crate::harness::Backend::Sqlite,
                    stringify!($name),
                    super::open,
                )
                .await
                .unwrap();
                let h = super::$name(h).await;
                h.finish().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) = $crate::harness::H::start_with(
                    $crate::harness::Backend::Postgres,
                    stringify!($name),
                    super::open,
                )
                .await
                {
                    let h = super::$name(h).await;
                    h.finish().await;
                }
            }
        }
    };
}

/// A person with `roles` and the `Cookie` header of a browser session of theirs.
async fn person(h: &H, email: &str, roles: &[Role]) -> (String, String) {
    let app = h.app().clone();
    let trail = app.audit.trail(mandate::audit::Actor::system());
    let human = mandate::humans::create(&app.store, &trail, h.now(), email, "Test Person", roles)
        .await
        .unwrap();
    let set = mandate::humans::web::start_session(&AppState(app), &human.id, "passkey")
        .await
        .unwrap();
    let cookie = set.to_str().unwrap().split(';').next().unwrap().to_string();
    (human.id, cookie)
}

struct World {
    client: String,
    server: (String, String),
}

async fn world(h: &H) -> World {
    let server = h.server(MCP, "prod", TOOLS).await;
    let client = public_client(h).await;
    World { client, server }
}

/// The token response for `cookie`'s person asking for `scope`.
async fn token_for(h: &H, w: &World, human: &str, cookie: &str, scope: &str) -> Resp {
    let s = crate::authorize::Setup {
        client: w.client.clone(),
        human: human.to_string(),
        cookie: cookie.to_string(),
        server: w.server.clone(),
    };
    let (code, verifier) = code_for(h, &s, &[("scope", scope)]).await;
    let t = redeem(h, &w.client, &code, &verifier, &[]).await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    t
}

async fn authzen(h: &H, w: &World, token: &str, tool: &str, context: Value) -> Value {
    let r = Resp::from(
        h.http
            .post(h.url("/access/v1/evaluation"))
            .basic_auth(&w.server.0, Some(&w.server.1))
            .json(&json!({
                "subject": {"type": "token", "id": token},
                "action": {"name": "call"},
                "resource": {"type": "tool", "id": tool},
                "context": context,
            }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn admin(h: &H) -> String {
    let t = h.app().admin().create_admin_token("test").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    t
}

async fn apply(h: &H, admin: &str, policies: &str) -> Resp {
    let r = Resp::from(
        h.http
            .put(h.url("/admin/v1/policies"))
            .bearer_auth(admin)
            .json(&json!({"policies": policies}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    h.app().refresh_registry(true).await.unwrap();
    r
}

/// Under the defaults a person through an MCP client is `Human::"<email>"`: internal tools
/// permitted, restricted ones step_up (not granted), confidential ones refused; the token
/// names the person, and AuthZEN decides on it with the Human policies.
async fn people_are_human_principals(h: H) -> H {
    let w = world(&h).await;
    let (alice, cookie) = person(&h, "alice@example.com", &[Role::Admin]).await;
    // The consent page: each tool's outcome for this person.
    let (_, challenge) = crate::authorize::pkce();
    let q = crate::authorize::auth_query(
        &w.client,
        &challenge,
        &[("scope", "tools:search tools:wipe tools:export")],
    );
    let html = crate::authorize::get_authorize(&h, Some(&cookie), &q)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("needs a separate approval"), "wipe: step_up");
    assert!(html.contains("denied (not granted)"), "export: deny");
    let t = token_for(
        &h,
        &w,
        &alice,
        &cookie,
        "tools:search tools:wipe tools:export",
    )
    .await;
    assert_eq!(t.body["scope"], "tools:search");
    let at = t.access_token();
    let c = claims(&at);
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["roles"], json!(["admin"]));
    assert_eq!(c["client_id"], w.client);

    // AuthZEN with the person's token: the Human policies decide.
    let v = authzen(&h, &w, &at, "search", json!({})).await;
    assert_eq!(v["decision"], true, "{v}");
    assert_eq!(v["context"]["reasons"], json!(["people-via-mcp-clients"]));
    let v = authzen(&h, &w, &at, "search", json!({"risk_score": 95})).await;
    assert_eq!(v["decision"], false);
    assert_eq!(v["context"]["reasons"], json!(["very-high-risk-denied"]));
    let v = authzen(&h, &w, &at, "search", json!({"environment": "staging"})).await;
    assert_eq!(
        v["context"]["reasons"],
        json!(["people-no-cross-environment"])
    );
    // Not in the token: refused before policy.
    let v = authzen(&h, &w, &at, "export", json!({})).await;
    assert_eq!(v["context"]["reason"], "insufficient_scope");

    // What-if with a Human principal, for the set in force.
    let t = admin(&h).await;
    let what_if = |tool: &str| {
        json!({"human": {"email": "alice@example.com", "roles": ["admin"]},
               "tool": {"server": MCP, "name": tool}})
    };
    for (tool, decision, reason) in [
        ("search", "permit", "people-via-mcp-clients"),
        ("wipe", "step_up", "people-restricted-needs-approval"),
        ("export", "deny", "people-no-confidential"),
    ] {
        let r = Resp::from(
            h.http
                .post(h.url("/admin/v1/policies/what-if"))
                .bearer_auth(&t)
                .json(&what_if(tool))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["decision"], decision, "{tool}: {:?}", r.body);
        assert_eq!(r.body["reasons"], json!([reason]), "{tool}");
    }

    // A refresh asks policy again, as the Human; its audit record names the policies.
    let t = token_for(&h, &w, &alice, &cookie, "tools:search tools:edit").await;
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&h, &w.client, &rt, &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["scope"], "tools:edit tools:search");
    let mut issued = Vec::new();
    h.app().audit.sync().await;
    mandate::audit::query::export(&h.app().store.db, 0, i64::MAX, |r| {
        let v: Value = serde_json::from_str(&r.json_line()).unwrap();
        if v["type"] == "token.issued" && v["details"]["grant_type"] == "refresh_token" {
            issued.push(v);
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["reasons"], json!(["people-via-mcp-clients"]));
    h
}
open_both!(people_are_human_principals);

/// A policy on the person's roles, through real authorization-code flows and AuthZEN: admins
/// may reach confidential tools and risky calls, others not; two people through the same
/// client never share a cached decision.
async fn policies_on_roles_take_effect(h: H) -> H {
    let w = world(&h).await;
    let t = admin(&h).await;
    let policies = format!(
        "{}\n@id(\"risky-calls-for-admins-only\")\n\
         forbid (principal is Human, action, resource)\n\
         when {{ context.risk_score >= 30 }}\n\
         unless {{ principal.roles.contains(\"admin\") }};\n",
        mandate::policy::DEFAULT_POLICIES.replace(
            "when { resource.sensitivity == \"confidential\" };",
            "when { resource.sensitivity == \"confidential\" }\n\
             unless { principal is Human && principal.roles.contains(\"admin\") };",
        )
    );
    // An agent rule without `principal is Agent` beside Human policies is refused, with how
    // to fix it.
    let careless = format!(
        "{}\n@id(\"x\") forbid (principal, action, resource) when {{ principal.trust_rank < 3 }};",
        mandate::policy::DEFAULT_POLICIES
    );
    let r = apply(&h, &t, &careless).await;
    assert_eq!((r.status, r.error()), (400, "invalid_policy"));
    let d = r.body["error_description"].as_str().unwrap();
    assert!(d.contains("principal is Agent"), "{d}");
    let r = apply(&h, &t, &policies).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["warnings"], json!([]), "{:?}", r.body);

    let (alice, alice_cookie) = person(&h, "alice@example.com", &[Role::Admin]).await;
    let (bob, bob_cookie) = person(&h, "bob@example.com", &[Role::Approver]).await;
    // Bob first, then Alice, then Bob again: each gets their own decision.
    let b = token_for(&h, &w, &bob, &bob_cookie, "tools:search tools:export").await;
    assert_eq!(b.body["scope"], "tools:search");
    let a = token_for(&h, &w, &alice, &alice_cookie, "tools:search tools:export").await;
    assert_eq!(a.body["scope"], "tools:export tools:search");
    let b2 = token_for(&h, &w, &bob, &bob_cookie, "tools:search tools:export").await;
    assert_eq!(b2.body["scope"], "tools:search");

    // AuthZEN, same tool, same context: the risk rule lets only the admin through, in either
    // order (the second answer of each comes from the cache).
    let risky = json!({"risk_score": 40});
    for _ in 0..2 {
        let v = authzen(&h, &w, &b.access_token(), "search", risky.clone()).await;
        assert_eq!(v["decision"], false, "{v}");
        assert_eq!(
            v["context"]["reasons"],
            json!(["risky-calls-for-admins-only"])
        );
        let v = authzen(&h, &w, &a.access_token(), "search", risky.clone()).await;
        assert_eq!(v["decision"], true, "{v}");
        assert_eq!(v["context"]["reasons"], json!(["people-via-mcp-clients"]));
    }
    let v = authzen(&h, &w, &a.access_token(), "export", json!({})).await;
    assert_eq!(v["decision"], true, "{v}");
    h
}
open_both!(policies_on_roles_take_effect);

/// A deployment that stored the version 1 defaults keeps them: they still load (legacy mode,
/// said so when applied), and people through MCP clients are evaluated as before.
async fn a_v1_policy_set_keeps_working(h: H) -> H {
    let w = world(&h).await;
    let t = admin(&h).await;
    let r = apply(&h, &t, mandate::policy::DEFAULT_POLICIES_V1).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let warnings = r.body["warnings"].to_string();
    assert!(warnings.contains("schema version 1"), "{warnings}");
    assert!(h.app().registry().policy.legacy());
    assert!(h.app().registry().policy.load_error.is_none());
    let r = Resp::from(
        h.http
            .get(h.url("/admin/v1/policies"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.body["schema_version"], 1, "{:?}", r.body);

    let (alice, cookie) = person(&h, "alice@example.com", &[Role::Admin]).await;
    let tok = token_for(
        &h,
        &w,
        &alice,
        &cookie,
        "tools:search tools:wipe tools:export",
    )
    .await;
    assert_eq!(tok.body["scope"], "tools:search");
    let v = authzen(&h, &w, &tok.access_token(), "search", json!({})).await;
    assert_eq!(v["decision"], true, "{v}");
    assert_eq!(v["context"]["reasons"], json!(["same-environment"]));
    h
}
open_both!(a_v1_policy_set_keeps_working);

/// The lockout check counts people: a set that permits only people through MCP clients is a
/// lockout while only agents are registered, and saved once a person it permits exists.
async fn a_people_only_set_is_no_lockout_once_people_exist(h: H) -> H {
    let _w = world(&h).await;
    h.simple_agent("prod", &[MCP], "tools:read", "client_secret_basic")
        .await;
    let t = admin(&h).await;
    let people_only = "@id(\"people-only\")\npermit (principal is Human, action, resource)\n\
                       when { principal.roles.contains(\"admin\") };\n";
    let r = apply(&h, &t, people_only).await;
    assert_eq!((r.status, r.error()), (409, "lockout"), "{:?}", r.body);
    // A person the set does not permit changes nothing; one it permits does.
    person(&h, "viewer@example.com", &[Role::Viewer]).await;
    let r = apply(&h, &t, people_only).await;
    assert_eq!((r.status, r.error()), (409, "lockout"), "{:?}", r.body);
    person(&h, "admin@example.com", &[Role::Admin]).await;
    let r = apply(&h, &t, people_only).await;
    assert!(r.status < 300, "{:?}", r.body);
    assert!(r.body.get("forced_past").is_none(), "{:?}", r.body);
    h
}
open_both!(a_people_only_set_is_no_lockout_once_people_exist);
