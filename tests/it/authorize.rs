//! The authorization code flow for MCP clients acting for a person: `/authorize`, consent,
//! the code and refresh grants, and every bad input the issue names.
use crate::harness::{H, Resp};
use base64::Engine;
use mandate::app::AppState;
use serde_json::{Value, json};
use std::collections::HashMap;

pub const MCP: &str = "https://mcp.example/mcp";
pub const OTHER: &str = "https://other.example/mcp";
pub const REDIRECT: &str = "http://127.0.0.1:7777/callback";
const TOOLS: &[&str] = &[
    "search:read:internal",
    "edit:write:internal",
    "wipe:execute:restricted",
];

/// An http client that never follows redirects.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn pkce() -> (String, String) {
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(mandate::secrets::random_bytes::<32>());
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref());
    (verifier, challenge)
}

/// A person and the `Cookie` header of a browser session of theirs.
pub async fn person(h: &H, email: &str) -> (String, String) {
    let app = h.app().clone();
    let trail = app.audit.trail(mandate::audit::Actor::system());
    let human = mandate::humans::create(
        &app.store,
        &trail,
        h.now(),
        email,
        "Test Person",
        &[mandate::humans::Role::Approver],
    )
    .await
    .unwrap();
    let set = mandate::humans::web::start_session(&AppState(app), &human.id, "passkey")
        .await
        .unwrap();
    let cookie = set.to_str().unwrap().split(';').next().unwrap().to_string();
    (human.id, cookie)
}

/// Registers a client through `POST /register` (open registration); returns the response.
pub async fn register(h: &H, meta: Value) -> Resp {
    Resp::from(
        h.http
            .post(h.url("/register"))
            .json(&meta)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// A public native client with the refresh grant.
pub async fn public_client(h: &H) -> String {
    let r = register(
        h,
        json!({
            "client_name": "Test IDE",
            "redirect_uris": [REDIRECT],
            "application_type": "native",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"]
        }),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["client_id"].as_str().unwrap().to_string()
}

pub struct Setup {
    pub client: String,
    pub human: String,
    pub cookie: String,
    pub server: (String, String),
}

pub async fn setup(h: &H) -> Setup {
    let server = h.server(MCP, "prod", TOOLS).await;
    let client = public_client(h).await;
    let (human, cookie) = person(h, "alice@example.com").await;
    Setup {
        client,
        human,
        cookie,
        server,
    }
}

/// The query of an authorization request.
pub fn auth_query(client: &str, challenge: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut q: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
        ("resource", MCP),
        ("scope", "tools:search tools:edit"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        q.retain(|(qk, _)| qk != k);
        if !v.is_empty() {
            q.push((k.to_string(), v.to_string()));
        }
    }
    q
}

pub async fn get_authorize(
    h: &H,
    cookie: Option<&str>,
    q: &[(String, String)],
) -> reqwest::Response {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q.iter())
        .finish();
    let mut req = no_redirects().get(h.url(&format!("/authorize?{query}")));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// The query parameters of a redirect's `Location`.
pub fn location(r: &reqwest::Response) -> (String, HashMap<String, String>) {
    let loc = r
        .headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location (status {})", r.status()))
        .to_str()
        .unwrap()
        .to_string();
    let u = url::Url::parse(&loc).unwrap();
    let base = format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().map_or(String::new(), |h| match u.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_string(),
        }),
        u.path()
    );
    (base, u.query_pairs().into_owned().collect())
}

fn csrf_of(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    html[i..].split('"').next().unwrap().to_string()
}

/// Approves (or denies) on the consent page shown for `q`; returns the response to the POST.
pub async fn consent(
    h: &H,
    cookie: &str,
    q: &[(String, String)],
    decision: &str,
) -> reqwest::Response {
    let page = get_authorize(h, Some(cookie), q).await;
    assert_eq!(page.status(), 200, "consent page expected");
    let html = page.text().await.unwrap();
    let mut form = q.to_vec();
    form.push(("csrf".into(), csrf_of(&html)));
    form.push(("decision".into(), decision.into()));
    no_redirects()
        .post(h.url("/authorize/consent"))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap()
}

/// Runs the flow to a code: (code, verifier).
pub async fn code_for(h: &H, s: &Setup, extra: &[(&str, &str)]) -> (String, String) {
    let (verifier, challenge) = pkce();
    let q = auth_query(&s.client, &challenge, extra);
    let r = get_authorize(h, Some(&s.cookie), &q).await;
    let r = if r.status() == 200 {
        consent(h, &s.cookie, &q, "approve").await
    } else {
        r
    };
    let (_, params) = location(&r);
    (
        params
            .get("code")
            .unwrap_or_else(|| panic!("no code: {params:?}"))
            .clone(),
        verifier,
    )
}

pub async fn redeem(
    h: &H,
    client: &str,
    code: &str,
    verifier: &str,
    extra: &[(&str, &str)],
) -> Resp {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("client_id", client),
        ("code", code),
        ("code_verifier", verifier),
        ("redirect_uri", REDIRECT),
        ("resource", MCP),
    ];
    for (k, v) in extra {
        form.retain(|(fk, _)| fk != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    h.post("/token", None, &form).await
}

pub async fn refresh(h: &H, client: &str, rt: &str, extra: &[(&str, &str)]) -> Resp {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("client_id", client),
        ("refresh_token", rt),
    ];
    form.extend_from_slice(extra);
    h.post("/token", None, &form).await
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

async fn full_flow_with_consent_and_refresh(h: H) -> H {
    let s = setup(&h).await;
    let (verifier, challenge) = pkce();
    let q = auth_query(&s.client, &challenge, &[]);
    // The consent page names the client, its redirect host, the server and each tool.
    let page = get_authorize(&h, Some(&s.cookie), &q).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    for needle in [
        "Test IDE",
        "127.0.0.1:7777",
        "server https://mcp.example/mcp",
        "search",
        "edit",
    ] {
        assert!(html.contains(needle), "consent page lacks {needle}");
    }
    let r = consent(&h, &s.cookie, &q, "approve").await;
    assert_eq!(r.status(), 303);
    let (base, params) = location(&r);
    assert_eq!(base, REDIRECT);
    assert_eq!(params["state"], "st-123");
    assert_eq!(params["iss"], h.base, "RFC 9207 iss");
    let code = &params["code"];
    let t = redeem(&h, &s.client, code, &verifier, &[]).await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert_eq!(t.header("cache-control"), Some("no-store"));
    let at = t.access_token();
    let c = claims(&at);
    assert_eq!(c["sub"], s.human.as_str());
    assert_eq!(c["aud"], MCP);
    assert_eq!(c["client_id"], s.client.as_str());
    assert_eq!(c["scope"], "tools:edit tools:search");
    assert!(c["sid"].as_str().unwrap().starts_with("ses_"));
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    assert!(rt.starts_with("mnd_rt_"));
    // The MCP server sees it active, for the person.
    let v = h.introspect((&s.server.0, &s.server.1), &at).await;
    assert_eq!(v["active"], true, "{v}");
    assert_eq!(v["sub"], s.human.as_str());
    // Refresh rotates; the new token works, and narrowing is allowed.
    let r2 = refresh(&h, &s.client, &rt, &[("scope", "tools:search")]).await;
    assert_eq!(r2.status, 200, "{:?}", r2.body);
    assert_eq!(r2.body["scope"], "tools:search");
    let rt2 = r2.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt, rt2);
    assert_eq!(claims(&r2.access_token())["sid"], c["sid"]);
    // Consent is remembered: the next request goes straight back with a code.
    let (_, challenge2) = pkce();
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(&s.client, &challenge2, &[]),
    )
    .await;
    assert_eq!(r.status(), 302);
    assert!(location(&r).1.contains_key("code"));
    // ... unless prompt=consent.
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(&s.client, &challenge2, &[("prompt", "consent")]),
    )
    .await;
    assert_eq!(r.status(), 200);
    h
}
open_both!(full_flow_with_consent_and_refresh);

async fn not_signed_in_goes_to_login_or_login_required(h: H) -> H {
    let s = setup(&h).await;
    let (_, challenge) = pkce();
    let q = auth_query(&s.client, &challenge, &[]);
    let r = get_authorize(&h, None, &q).await;
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with("/login?next=%2Fauthorize%3F"), "{loc}");
    let r = get_authorize(
        &h,
        None,
        &auth_query(&s.client, &challenge, &[("prompt", "none")]),
    )
    .await;
    let (base, p) = location(&r);
    assert_eq!(
        (base.as_str(), p["error"].as_str()),
        (REDIRECT, "login_required")
    );
    assert_eq!(p["iss"], h.base);
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(&s.client, &challenge, &[("prompt", "none")]),
    )
    .await;
    assert_eq!(location(&r).1["error"], "consent_required");
    h
}
open_both!(not_signed_in_goes_to_login_or_login_required);

async fn bad_redirect_uris_get_a_page_never_a_redirect(h: H) -> H {
    let s = setup(&h).await;
    let (_, challenge) = pkce();
    for bad in [
        "https://evil.example/callback",
        "http://127.0.0.1:7777/callback/",
        "http://127.0.0.1:7778/callback",
        "http://127.0.0.1:7777/callback?x=1",
        "",
    ] {
        let q = auth_query(&s.client, &challenge, &[("redirect_uri", bad)]);
        let r = get_authorize(&h, Some(&s.cookie), &q).await;
        assert_eq!(r.status(), 400, "{bad}");
        assert!(
            r.headers().get("location").is_none(),
            "{bad}: never redirects"
        );
        let html = r.text().await.unwrap();
        assert!(html.contains("<html"), "an HTML page for {bad}");
    }
    // An unknown client: a page too.
    let q = auth_query("mcl_nobody", &challenge, &[]);
    let r = get_authorize(&h, Some(&s.cookie), &q).await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    h
}
open_both!(bad_redirect_uris_get_a_page_never_a_redirect);

async fn pkce_is_required_and_s256_only(h: H) -> H {
    let s = setup(&h).await;
    let (verifier, challenge) = pkce();
    for (extra, why) in [
        (vec![("code_challenge", "")], "missing challenge"),
        (vec![("code_challenge_method", "")], "missing method"),
        (
            vec![
                ("code_challenge_method", "plain"),
                ("code_challenge", verifier.as_str()),
            ],
            "plain",
        ),
        (vec![("code_challenge", "short")], "malformed"),
    ] {
        let r = get_authorize(
            &h,
            Some(&s.cookie),
            &auth_query(&s.client, &challenge, &extra),
        )
        .await;
        assert_eq!(r.status(), 302, "{why}");
        let (base, p) = location(&r);
        assert_eq!(base, REDIRECT);
        assert_eq!(p["error"], "invalid_request", "{why}");
        assert_eq!(p["state"], "st-123");
        assert_eq!(p["iss"], h.base, "iss on error responses too");
    }
    // Other request errors go back to the client as well, with iss.
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(&s.client, &challenge, &[("response_type", "token")]),
    )
    .await;
    assert_eq!(location(&r).1["error"], "unsupported_response_type");
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(
            &s.client,
            &challenge,
            &[("resource", "https://unknown.example/mcp")],
        ),
    )
    .await;
    let p = location(&r).1;
    assert_eq!(
        (p["error"].as_str(), p["iss"].as_str()),
        ("invalid_target", h.base.as_str())
    );
    // A denied consent: access_denied.
    let q = auth_query(&s.client, &challenge, &[]);
    let r = consent(&h, &s.cookie, &q, "deny").await;
    assert_eq!(location(&r).1["error"], "access_denied");
    h
}
open_both!(pkce_is_required_and_s256_only);

async fn code_replay_revokes_what_it_issued(h: H) -> H {
    let s = setup(&h).await;
    let (code, verifier) = code_for(&h, &s, &[]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    let at = t.access_token();
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    let again = redeem(&h, &s.client, &code, &verifier, &[]).await;
    assert_eq!((again.status, again.error()), (400, "invalid_grant"));
    // What the code issued is revoked: the access token, and the refresh token.
    let v = h.introspect((&s.server.0, &s.server.1), &at).await;
    assert_eq!(v, json!({"active": false}));
    let r = refresh(&h, &s.client, &rt, &[]).await;
    assert_eq!(r.error(), "invalid_grant");
    h
}
open_both!(code_replay_revokes_what_it_issued);

async fn code_is_bound_to_client_verifier_resource_and_time(h: H) -> H {
    let s = setup(&h).await;
    let other = public_client(&h).await;
    h.server(OTHER, "prod", TOOLS).await;
    let (code, verifier) = code_for(&h, &s, &[]).await;
    let (_, wrong_verifier) = {
        let (v, _) = pkce();
        ((), v)
    };
    for (client, extra, why) in [
        (other.as_str(), vec![], "another client"),
        (
            s.client.as_str(),
            vec![("code_verifier", wrong_verifier.as_str())],
            "another verifier",
        ),
        (
            s.client.as_str(),
            vec![("resource", OTHER)],
            "another resource",
        ),
        (
            s.client.as_str(),
            vec![("redirect_uri", "http://127.0.0.1:7777/other")],
            "another redirect",
        ),
        (
            s.client.as_str(),
            vec![("code", "mnd_ac_not-a-real-code")],
            "unknown code",
        ),
    ] {
        let r = redeem(&h, client, &code, &verifier, &extra).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "invalid_grant"),
            "{why}: {:?}",
            r.body
        );
    }
    let r = redeem(&h, &s.client, &code, &verifier, &[("code_verifier", "")]).await;
    assert_eq!(r.error(), "invalid_request", "missing verifier");
    // The failures did not burn the code for its rightful client...
    let (code2, verifier2) = code_for(&h, &s, &[]).await;
    assert_eq!(
        redeem(&h, &s.client, &code, &verifier, &[]).await.status,
        200
    );
    // ... and an expired code is refused.
    h.clock.advance(61);
    let r = redeem(&h, &s.client, &code2, &verifier2, &[]).await;
    assert_eq!(r.error(), "invalid_grant", "expired");
    h
}
open_both!(code_is_bound_to_client_verifier_resource_and_time);

async fn refresh_never_widens_and_reuse_revokes_the_family(h: H) -> H {
    let s = setup(&h).await;
    h.server(OTHER, "prod", TOOLS).await;
    let (code, verifier) = code_for(&h, &s, &[("scope", "tools:search")]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&h, &s.client, &rt, &[("scope", "tools:search tools:edit")]).await;
    assert_eq!(r.error(), "invalid_scope", "widening");
    let r = refresh(&h, &s.client, &rt, &[("resource", OTHER)]).await;
    assert_eq!(r.error(), "invalid_target", "another resource");
    let other = public_client(&h).await;
    let r = refresh(&h, &other, &rt, &[]).await;
    assert_eq!(r.error(), "invalid_grant", "another client");
    // Rotation, then reuse of the old token revokes the whole family.
    let r1 = refresh(&h, &s.client, &rt, &[]).await;
    assert_eq!(r1.status, 200, "{:?}", r1.body);
    let at1 = r1.access_token();
    let rt1 = r1.body["refresh_token"].as_str().unwrap().to_string();
    let reuse = refresh(&h, &s.client, &rt, &[]).await;
    assert_eq!(reuse.error(), "invalid_grant");
    let r = refresh(&h, &s.client, &rt1, &[]).await;
    assert_eq!(r.error(), "invalid_grant", "the family is revoked");
    let v = h.introspect((&s.server.0, &s.server.1), &at1).await;
    assert_eq!(v["active"], false);
    let r = refresh(&h, &s.client, "mnd_rt_garbage", &[]).await;
    assert_eq!(r.error(), "invalid_grant");
    h
}
open_both!(refresh_never_widens_and_reuse_revokes_the_family);

async fn forged_csrf_is_refused(h: H) -> H {
    let s = setup(&h).await;
    let (_, challenge) = pkce();
    let q = auth_query(&s.client, &challenge, &[]);
    let page = get_authorize(&h, Some(&s.cookie), &q).await;
    assert_eq!(page.status(), 200);
    for csrf in ["mnd_csrf_forged", ""] {
        let mut form = q.clone();
        form.push(("csrf".into(), csrf.into()));
        form.push(("decision".into(), "approve".into()));
        let r = no_redirects()
            .post(h.url("/authorize/consent"))
            .header("cookie", &s.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert!(r.headers().get("location").is_none());
    }
    // Another person's session cannot use this one's token either.
    let (_, bob) = person(&h, "bob@example.com").await;
    let html = get_authorize(&h, Some(&s.cookie), &q)
        .await
        .text()
        .await
        .unwrap();
    let mut form = q.clone();
    form.push(("csrf".into(), csrf_of(&html)));
    form.push(("decision".into(), "approve".into()));
    let r = no_redirects()
        .post(h.url("/authorize/consent"))
        .header("cookie", &bob)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    h
}
open_both!(forged_csrf_is_refused);

async fn policy_decides_per_tool_for_the_person(h: H) -> H {
    let s = setup(&h).await;
    let (_, challenge) = pkce();
    let q = auth_query(
        &s.client,
        &challenge,
        &[("scope", "tools:search tools:wipe")],
    );
    let html = get_authorize(&h, Some(&s.cookie), &q)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("needs a separate approval"),
        "restricted tool: step_up"
    );
    let r = consent(&h, &s.cookie, &q, "approve").await;
    let (_, p) = location(&r);
    let (verifier, code) = {
        // Re-run with a known verifier to redeem.
        let (code, verifier) = code_for(&h, &s, &[("scope", "tools:search tools:wipe")]).await;
        (verifier, code)
    };
    assert!(p.contains_key("code"));
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    assert_eq!(
        t.body["scope"], "tools:search",
        "the restricted tool is not granted"
    );
    // Only restricted tools asked: nothing can be granted.
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(
            &s.client,
            &challenge,
            &[("scope", "tools:wipe"), ("prompt", "none")],
        ),
    )
    .await;
    assert_eq!(location(&r).1["error"], "consent_required");
    h
}
open_both!(policy_decides_per_tool_for_the_person);

async fn revoking_consent_ends_the_grant(h: H) -> H {
    let s = setup(&h).await;
    let (code, verifier) = code_for(&h, &s, &[]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    let at = t.access_token();
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    let admin = h.app().admin().create_admin_token("t").await.unwrap();
    h.app().after_registry_change().await;
    let list: Value = h
        .http
        .get(h.url(&format!("/admin/v1/consents?human={}", s.human)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consents = list["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1, "{list}");
    assert_eq!(consents[0]["client_id"], s.client.as_str());
    let id = consents[0]["id"].as_str().unwrap();
    let r = h
        .http
        .delete(h.url(&format!("/admin/v1/consents/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        refresh(&h, &s.client, &rt, &[]).await.error(),
        "invalid_grant"
    );
    let v = h.introspect((&s.server.0, &s.server.1), &at).await;
    assert_eq!(v["active"], false);
    // Asked again: the consent page is back.
    let (_, challenge) = pkce();
    let r = get_authorize(&h, Some(&s.cookie), &auth_query(&s.client, &challenge, &[])).await;
    assert_eq!(r.status(), 200);
    // Unauthenticated admin calls are refused.
    let r = h
        .http
        .get(h.url("/admin/v1/consents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    h
}
open_both!(revoking_consent_ends_the_grant);

async fn resource_defaults_to_the_only_server(h: H) -> H {
    let s = setup(&h).await;
    let (code, verifier) = code_for(&h, &s, &[("resource", "")]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[("resource", "")]).await;
    assert_eq!(claims(&t.access_token())["aud"], MCP);
    // With two servers, resource is required.
    h.server(OTHER, "prod", TOOLS).await;
    let (_, challenge) = pkce();
    let r = get_authorize(
        &h,
        Some(&s.cookie),
        &auth_query(&s.client, &challenge, &[("resource", "")]),
    )
    .await;
    assert_eq!(location(&r).1["error"], "invalid_target");
    h
}
open_both!(resource_defaults_to_the_only_server);

async fn dev_auto_approve_signs_in_and_approves(h: H) -> H {
    h.server(MCP, "prod", TOOLS).await;
    let client = public_client(&h).await;
    let (verifier, challenge) = pkce();
    let r = get_authorize(&h, None, &auth_query(&client, &challenge, &[])).await;
    assert_eq!(r.status(), 302);
    let (_, p) = location(&r);
    let t = redeem(&h, &client, &p["code"], &verifier, &[]).await;
    let c = claims(&t.access_token());
    let who = mandate::humans::find_by_email(&h.app().store, "dev@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c["sub"], who.human.id.as_str());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_auto_approve() {
    let h = H::start_with(crate::harness::Backend::Sqlite, "dev_auto_approve", |c| {
        open(c);
        c.dev_auto_approve_email = Some("dev@example.com".into());
    })
    .await
    .unwrap();
    dev_auto_approve_signs_in_and_approves(h)
        .await
        .finish()
        .await;
}

#[test]
fn dev_modes_are_refused_off_loopback() {
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    for key in [
        "MANDATE_DEV_AUTO_APPROVE_EMAIL",
        "MANDATE_DEV_ALLOW_LOOPBACK_CLIENTS",
    ] {
        let value = if key.ends_with("EMAIL") {
            "dev@example.com"
        } else {
            "true"
        };
        let err = mandate::config::Config::load(
            None,
            [env("MANDATE_LISTEN", "0.0.0.0:8080"), env(key, value)],
        );
        assert!(err.is_err(), "{key} off loopback");
        assert!(
            mandate::config::Config::load(
                None,
                [env("MANDATE_LISTEN", "127.0.0.1:8080"), env(key, value)]
            )
            .is_ok()
        );
    }
}

async fn the_flow_is_audited(h: H) -> H {
    let s = setup(&h).await;
    let (code, verifier) = code_for(&h, &s, &[]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(
        redeem(&h, &s.client, &code, &verifier, &[]).await.status,
        400
    );
    let (code, verifier) = code_for(&h, &s, &[]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    let rt2 = t.body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(refresh(&h, &s.client, &rt2, &[]).await.status, 200);
    assert_eq!(refresh(&h, &s.client, &rt2, &[]).await.status, 400);
    let _ = rt;
    let admin = h.app().admin().create_admin_token("reader").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let count = |kind: &'static str| {
        let req = h
            .http
            .get(h.url(&format!("/admin/v1/audit?type={kind}")))
            .bearer_auth(&admin);
        async move {
            let r = Resp::from(req.send().await.unwrap()).await;
            assert_eq!(r.status, 200, "{:?}", r.body);
            r.body["events"].as_array().unwrap().clone()
        }
    };
    assert_eq!(count("consent.granted").await.len(), 1);
    assert_eq!(count("authorization_code.issued").await.len(), 2);
    assert_eq!(count("authorization_code.replayed").await.len(), 1);
    assert_eq!(count("refresh_token.reused").await.len(), 1);
    assert_eq!(count("client.registered").await.len(), 1);
    let issued = count("token.issued").await;
    assert_eq!(issued.len(), 3, "two codes and one refresh");
    let text = serde_json::to_string(&issued).unwrap();
    assert!(text.contains("authorization_code") && text.contains("refresh_token"));
    assert!(text.contains(&s.human), "the person is recorded");
    assert!(!text.contains(&rt2), "no refresh token in the audit log");
    let refused = count("token.refused").await;
    assert!(refused.len() >= 2, "{refused:?}");
    h
}
open_both!(the_flow_is_audited);

async fn refresh_may_narrow_a_class_scope_to_its_tools(h: H) -> H {
    let s = setup(&h).await;
    let (code, verifier) = code_for(&h, &s, &[("scope", "tools:read")]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    assert_eq!(t.body["scope"], "tools:read");
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    let r = refresh(&h, &s.client, &rt, &[("scope", "tools:edit")]).await;
    assert_eq!(
        r.error(),
        "invalid_scope",
        "a write tool is outside tools:read"
    );
    let r = refresh(&h, &s.client, &rt, &[("scope", "tools:search")]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["scope"], "tools:search");
    h
}
open_both!(refresh_may_narrow_a_class_scope_to_its_tools);

async fn clients_revoke_their_own_tokens(h: H) -> H {
    let s = setup(&h).await;
    let other = public_client(&h).await;
    let (code, verifier) = code_for(&h, &s, &[]).await;
    let t = redeem(&h, &s.client, &code, &verifier, &[]).await;
    let at = t.access_token();
    let rt = t.body["refresh_token"].as_str().unwrap().to_string();
    // Another client may not revoke them.
    let r = h
        .post("/revoke", None, &[("client_id", &other), ("token", &rt)])
        .await;
    assert_eq!(r.error(), "unauthorized_client");
    let r = h
        .post("/revoke", None, &[("client_id", &other), ("token", &at)])
        .await;
    assert_eq!(r.error(), "unauthorized_client");
    // Revoking the access token: inactive; the grant goes on.
    let r = h
        .post("/revoke", None, &[("client_id", &s.client), ("token", &at)])
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let v = h.introspect((&s.server.0, &s.server.1), &at).await;
    assert_eq!(v["active"], false);
    let r2 = refresh(&h, &s.client, &rt, &[]).await;
    assert_eq!(r2.status, 200);
    let at2 = r2.access_token();
    let rt2 = r2.body["refresh_token"].as_str().unwrap().to_string();
    // Revoking the refresh token ends the grant, access tokens included (RFC 7009 §2.1).
    let r = h
        .post(
            "/revoke",
            None,
            &[("client_id", &s.client), ("token", &rt2)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        refresh(&h, &s.client, &rt2, &[]).await.error(),
        "invalid_grant"
    );
    let v = h.introspect((&s.server.0, &s.server.1), &at2).await;
    assert_eq!(v["active"], false);
    // Unknown tokens are a success (RFC 7009 §2.2).
    let r = h
        .post(
            "/revoke",
            None,
            &[("client_id", &s.client), ("token", "nonsense")],
        )
        .await;
    assert_eq!(r.status, 200);
    h
}
open_both!(clients_revoke_their_own_tokens);
