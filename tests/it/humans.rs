//! Humans: invitation and enrolment links, passkey registration and sign-in (webauthn-rs's
//! software authenticator), browser sessions (cookie, CSRF, idle/absolute timeouts,
//! revocation), page security headers, and upstream OIDC sign-in against a small OIDC
//! provider run inside the test.
use crate::harness::{Backend, H};
use mandate::humans::{self, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

/// Runs a test on SQLite and (when configured) PostgreSQL, with a `localhost` issuer
/// (WebAuthn needs a domain name) and short session timeouts.
macro_rules! humans_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(h) =
                    super::start($crate::harness::Backend::Sqlite, stringify!($name)).await
                {
                    let h = super::$name(h).await;
                    h.finish().await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(h) =
                    super::start($crate::harness::Backend::Postgres, stringify!($name)).await
                {
                    let h = super::$name(h).await;
                    h.finish().await;
                }
            }
        }
    };
}

const IDLE: i64 = 600;
const LIFETIME: i64 = 1800;

async fn start(backend: Backend, test: &str) -> Option<H> {
    start_with(backend, test, |_| {}).await
}

async fn start_with(
    backend: Backend,
    test: &str,
    tweak: impl FnOnce(&mut mandate::config::Config),
) -> Option<H> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    H::start_with(backend, test, |c| {
        c.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.issuer = Some(format!("http://localhost:{port}"));
        c.human_session_idle_secs = IDLE;
        c.human_session_lifetime_secs = LIFETIME;
        tweak(c);
    })
    .await
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

/// The `__Host-mandate_session` value of a `Set-Cookie` header.
fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Host-mandate_session=") && !v.contains("Max-Age=0"))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap()
                .trim_start_matches("__Host-mandate_session=")
                .to_string()
        })
}

fn cookie_header(sid: &str) -> String {
    format!("__Host-mandate_session={sid}")
}

async fn invite(h: &H, email: &str, roles: &[Role]) -> String {
    let trail = h.app().audit.trail(mandate::audit::Actor::system());
    humans::invite(
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
    .link
}

async fn script_post(
    h: &H,
    path: &str,
    body: Value,
    sid: Option<&str>,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut req = browser()
        .post(format!("{}{path}", h.base))
        .header("origin", origin(h).origin().ascii_serialization())
        .json(&body);
    if let Some(sid) = sid {
        req = req.header("cookie", cookie_header(sid));
    }
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    req.send().await.unwrap()
}

/// Enrols a passkey at `link` with `auth`; returns the session id set by the enrolment.
async fn enrol(h: &H, link: &str, auth: &mut SoftPasskey) -> reqwest::Response {
    let path = link.strip_prefix(h.app().issuer.as_str()).unwrap();
    let started = script_post(h, &format!("{path}/start"), json!({}), None, None).await;
    assert_eq!(started.status(), StatusCode::OK);
    let started: Value = started.json().await.unwrap();
    let ccr: CreationChallengeResponse =
        serde_json::from_value(started["options"].clone()).unwrap();
    let cred = auth.do_registration(origin(h), ccr).unwrap();
    script_post(
        h,
        &format!("{path}/finish"),
        json!({"ceremony": started["ceremony"], "name": "laptop", "credential": cred}),
        None,
        None,
    )
    .await
}

/// Starts a passkey sign-in for `email`: (ceremony, options).
async fn login_start(h: &H, email: &str) -> (String, RequestChallengeResponse) {
    let r = script_post(
        h,
        "/login/passkey/start",
        json!({"email": email}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    (
        v["ceremony"].as_str().unwrap().to_string(),
        serde_json::from_value(v["options"].clone()).unwrap(),
    )
}

async fn login_finish(h: &H, ceremony: &str, cred: &impl serde::Serialize) -> reqwest::Response {
    script_post(
        h,
        "/login/passkey/finish",
        json!({"ceremony": ceremony, "credential": cred, "next": "/account?tab=1"}),
        None,
        None,
    )
    .await
}

async fn login(h: &H, email: &str, auth: &mut SoftPasskey) -> reqwest::Response {
    let (ceremony, rcr) = login_start(h, email).await;
    let cred = auth.do_authentication(origin(h), rcr).unwrap();
    login_finish(h, &ceremony, &cred).await
}

async fn get(h: &H, path: &str, sid: Option<&str>) -> reqwest::Response {
    let mut req = browser().get(format!("{}{path}", h.base));
    if let Some(sid) = sid {
        req = req.header("cookie", cookie_header(sid));
    }
    req.send().await.unwrap()
}

async fn form_post(h: &H, path: &str, sid: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    browser()
        .post(format!("{}{path}", h.base))
        .header("cookie", cookie_header(sid))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The CSRF token embedded in the account page.
async fn csrf_of(h: &H, sid: &str) -> String {
    let page = get(h, "/account", Some(sid)).await.text().await.unwrap();
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_string()
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

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_string()
}

async fn passkey_enrol_sign_in_and_account(h: H) -> H {
    let link = invite(&h, "Ada@Example.com", &[Role::Admin]).await;
    assert!(link.starts_with(&format!("{}/enrol/mnd_enr_", h.app().issuer)));
    let path = link.strip_prefix(h.app().issuer.as_str()).unwrap();

    // The enrolment page: HTML with the page security headers, the script, no inline script.
    let page = get(&h, path, None).await;
    assert_eq!(page.status(), StatusCode::OK);
    let hd = page.headers().clone();
    assert_eq!(
        hd["content-security-policy"],
        mandate::humans::web::PAGE_CSP
    );
    assert!(mandate::humans::web::PAGE_CSP.contains("frame-ancestors 'none'"));
    assert_eq!(hd["cache-control"], "no-store");
    assert_eq!(hd["x-frame-options"], "DENY");
    assert_eq!(hd["x-content-type-options"], "nosniff");
    assert!(
        hd["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = page.text().await.unwrap();
    assert!(body.contains("/static/webauthn.js"));
    assert!(!body.contains("<script>"), "no inline script");
    assert!(body.contains("ada@example.com"));

    let mut auth = SoftPasskey::new(true);
    let r = enrol(&h, &link, &mut auth).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The session cookie: __Host-, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain.
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("__Host-mandate_session="))
        .unwrap();
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(
            set.split("; ").any(|a| a == attr),
            "{attr} missing in {set}"
        );
    }
    assert!(!set.to_ascii_lowercase().contains("domain="));
    let sid = session_cookie(&r).unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["redirect"], "/account");

    // The link is used up.
    assert_eq!(get(&h, path, None).await.status(), StatusCode::NOT_FOUND);
    let again = script_post(&h, &format!("{path}/start"), json!({}), None, None).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);

    // Signed in: the account page names the person.
    let acct = get(&h, "/account", Some(&sid)).await;
    assert_eq!(acct.status(), StatusCode::OK);
    assert_eq!(
        acct.headers()["content-security-policy"],
        mandate::humans::web::PAGE_CSP
    );
    let body = acct.text().await.unwrap();
    assert!(body.contains("ada@example.com") && body.contains("laptop"));

    // Static assets with their content types; the global strict CSP on non-pages.
    let js = get(&h, "/static/webauthn.js", None).await;
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let css = get(&h, "/static/app.css", None).await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert_eq!(
        css.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(
        get(&h, "/static/../Cargo.toml", None).await.status(),
        StatusCode::NOT_FOUND
    );

    // Sign-out needs the CSRF token.
    let csrf = csrf_of(&h, &sid).await;
    let r = form_post(&h, "/logout", &sid, &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = form_post(&h, "/logout", &sid, &[("csrf", "mnd_csrf_forged")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        get(&h, "/account", Some(&sid)).await.status(),
        StatusCode::OK
    );
    let r = form_post(&h, "/logout", &sid, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Max-Age=0"))
    );
    let gone = get(&h, "/account", Some(&sid)).await;
    assert_eq!(gone.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&gone), "/login?next=%2Faccount");

    // Sign in again with the passkey; lands where `next` says.
    let r = login(&h, "ADA@example.com", &mut auth).await;
    assert_eq!(r.status(), StatusCode::OK);
    let sid = session_cookie(&r).unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["redirect"],
        "/account?tab=1"
    );
    assert_eq!(
        get(&h, "/account", Some(&sid)).await.status(),
        StatusCode::OK
    );

    // A second passkey from the account page: CSRF header required.
    let csrf = csrf_of(&h, &sid).await;
    let r = script_post(&h, "/account/passkeys/start", json!({}), Some(&sid), None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = script_post(
        &h,
        "/account/passkeys/start",
        json!({}),
        Some(&sid),
        Some("nope"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = script_post(
        &h,
        "/account/passkeys/start",
        json!({}),
        Some(&sid),
        Some(&csrf),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let started: Value = r.json().await.unwrap();
    let mut phone = SoftPasskey::new(true);
    let cred = phone
        .do_registration(
            origin(&h),
            serde_json::from_value(started["options"].clone()).unwrap(),
        )
        .unwrap();
    let r = script_post(
        &h,
        "/account/passkeys/finish",
        json!({"ceremony": started["ceremony"], "name": "phone", "credential": cred}),
        Some(&sid),
        Some(&csrf),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let ada = humans::find_by_email(&h.app().store, "ada@example.com")
        .await
        .unwrap()
        .unwrap();
    let keys = humans::list_passkeys(&h.app().store, &ada.human.id)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    // Either passkey signs in.
    assert_eq!(
        login(&h, "ada@example.com", &mut phone).await.status(),
        StatusCode::OK
    );

    // Rename and remove need the CSRF token too.
    let laptop = keys.iter().find(|k| k.name == "laptop").unwrap();
    let rename = format!("/account/passkeys/{}/rename", laptop.id);
    assert_eq!(
        form_post(&h, &rename, &sid, &[("name", "old laptop")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        form_post(
            &h,
            &rename,
            &sid,
            &[("name", "old <laptop>"), ("csrf", &csrf)]
        )
        .await
        .status(),
        StatusCode::SEE_OTHER
    );
    let body = get(&h, "/account", Some(&sid)).await.text().await.unwrap();
    assert!(!body.contains("old <laptop>"), "user data is escaped");
    let remove = format!("/account/passkeys/{}/remove", laptop.id);
    assert_eq!(
        form_post(&h, &remove, &sid, &[("csrf", "x")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        form_post(&h, &remove, &sid, &[("csrf", &csrf)])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        humans::list_passkeys(&h.app().store, &ada.human.id)
            .await
            .unwrap()
            .len(),
        1
    );
    // The removed passkey no longer signs in.
    let (_, rcr) = login_start(&h, "ada@example.com").await;
    assert!(auth.do_authentication(origin(&h), rcr).is_err());

    // The audit log has the sign-ins and the failed attempt is not among them.
    assert!(audit_count(&h, "human.signed_in").await >= 3);
    h
}
humans_test!(passkey_enrol_sign_in_and_account);

async fn enrolment_links_expire_and_are_single_use(h: H) -> H {
    let link = invite(&h, "bo@example.com", &[Role::Viewer]).await;
    let path = link
        .strip_prefix(h.app().issuer.as_str())
        .unwrap()
        .to_string();
    // Malformed and unknown links.
    assert_eq!(
        get(&h, "/enrol/nope", None).await.status(),
        StatusCode::NOT_FOUND
    );
    let forged = format!("{}x", &path[..path.len() - 1]);
    assert_eq!(get(&h, &forged, None).await.status(), StatusCode::NOT_FOUND);
    // Expired: an hour and a second later.
    h.clock.advance(3601);
    assert_eq!(get(&h, &path, None).await.status(), StatusCode::NOT_FOUND);
    let r = script_post(&h, &format!("{path}/start"), json!({}), None, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A fresh link for the same person works, once; a ceremony started on it cannot be
    // finished on another link.
    let link2 = invite(&h, "bo@example.com", &[Role::Viewer]).await;
    let link3 = invite(&h, "bo@example.com", &[Role::Viewer]).await;
    let p2 = link2.strip_prefix(h.app().issuer.as_str()).unwrap();
    let p3 = link3.strip_prefix(h.app().issuer.as_str()).unwrap();
    let started: Value = script_post(&h, &format!("{p2}/start"), json!({}), None, None)
        .await
        .json()
        .await
        .unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = auth
        .do_registration(
            origin(&h),
            serde_json::from_value(started["options"].clone()).unwrap(),
        )
        .unwrap();
    let r = script_post(
        &h,
        &format!("{p3}/finish"),
        json!({"ceremony": started["ceremony"], "credential": cred}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(enrol(&h, &link2, &mut auth).await.status().is_success());
    let r = script_post(&h, &format!("{p2}/start"), json!({}), None, None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A disabled person's links die.
    let bo = humans::find_by_email(&h.app().store, "bo@example.com")
        .await
        .unwrap()
        .unwrap();
    let trail = h.app().audit.trail(mandate::audit::Actor::system());
    humans::disable(&h.app().store, &trail, h.now(), &bo.human.id)
        .await
        .unwrap();
    assert_eq!(get(&h, p3, None).await.status(), StatusCode::NOT_FOUND);
    h
}
humans_test!(enrolment_links_expire_and_are_single_use);

async fn assertions_for_another_person_or_replayed_are_refused(h: H) -> H {
    let mut ada = SoftPasskey::new(true);
    let mut bob = SoftPasskey::new(true);
    let l1 = invite(&h, "ada@example.com", &[Role::Admin]).await;
    let l2 = invite(&h, "bob@example.com", &[Role::Viewer]).await;
    let ada_sid = session_cookie(&enrol(&h, &l1, &mut ada).await).unwrap();
    let bob_sid = session_cookie(&enrol(&h, &l2, &mut bob).await).unwrap();

    // A passkey ceremony Ada started on her account page cannot be finished in Bob's session
    // (Bob's authenticator would otherwise become a passkey of Ada's).
    let ada_csrf = csrf_of(&h, &ada_sid).await;
    let bob_csrf = csrf_of(&h, &bob_sid).await;
    let started: Value = script_post(
        &h,
        "/account/passkeys/start",
        json!({}),
        Some(&ada_sid),
        Some(&ada_csrf),
    )
    .await
    .json()
    .await
    .unwrap();
    let mut mallory = SoftPasskey::new(true);
    let cred = mallory
        .do_registration(
            origin(&h),
            serde_json::from_value(started["options"].clone()).unwrap(),
        )
        .unwrap();
    let r = script_post(
        &h,
        "/account/passkeys/finish",
        json!({"ceremony": started["ceremony"], "name": "mallory", "credential": cred}),
        Some(&bob_sid),
        Some(&bob_csrf),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let ada_id = humans::find_by_email(&h.app().store, "ada@example.com")
        .await
        .unwrap()
        .unwrap()
        .human
        .id;
    assert_eq!(
        humans::list_passkeys(&h.app().store, &ada_id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Bob's passkey answers the challenge of Ada's sign-in: refused.
    let (ada_ceremony, ada_rcr) = login_start(&h, "ada@example.com").await;
    let (_, mut bob_rcr) = login_start(&h, "bob@example.com").await;
    bob_rcr.public_key.challenge = ada_rcr.public_key.challenge.clone();
    let forged = bob.do_authentication(origin(&h), bob_rcr).unwrap();
    let r = login_finish(&h, &ada_ceremony, &forged).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(session_cookie(&r).is_none());
    // The ceremony is single use: even a good assertion cannot use it now.
    let good = ada.do_authentication(origin(&h), ada_rcr).unwrap();
    assert_eq!(
        login_finish(&h, &ada_ceremony, &good).await.status(),
        StatusCode::BAD_REQUEST
    );

    // Stale counter: two challenges answered in order, submitted in reverse. The second
    // submission carries a counter not above the stored one (a cloned authenticator).
    let (c1, r1) = login_start(&h, "ada@example.com").await;
    let (c2, r2) = login_start(&h, "ada@example.com").await;
    let a1 = ada.do_authentication(origin(&h), r1).unwrap();
    let a2 = ada.do_authentication(origin(&h), r2).unwrap();
    assert_eq!(login_finish(&h, &c2, &a2).await.status(), StatusCode::OK);
    assert_eq!(
        login_finish(&h, &c1, &a1).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // An assertion from another origin is refused.
    let (c3, r3) = login_start(&h, "ada@example.com").await;
    let evil = ada
        .do_authentication(Url::parse("http://localhost:1").unwrap(), r3)
        .unwrap();
    assert_eq!(
        login_finish(&h, &c3, &evil).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Unknown people and people without passkeys get no challenge.
    let r = script_post(
        &h,
        "/login/passkey/start",
        json!({"email": "eve@example.com"}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Cross-site calls are refused before anything happens.
    let r = browser()
        .post(format!("{}/login/passkey/start", h.base))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = browser()
        .post(format!("{}/login/passkey/start", h.base))
        .header("content-type", "text/plain")
        .body(r#"{"email":"ada@example.com"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert!(audit_count(&h, "human.sign_in_failed").await >= 4);
    h
}
humans_test!(assertions_for_another_person_or_replayed_are_refused);

async fn sessions_time_out_and_are_revocable(h: H) -> H {
    let app = h.app().clone();
    let state = mandate::app::AppState(app.clone());
    let trail = app.audit.trail(mandate::audit::Actor::system());
    let ada = humans::create(
        &app.store,
        &trail,
        h.now(),
        "ada@example.com",
        "Ada",
        &[Role::Admin],
    )
    .await
    .unwrap();
    let sid_of = |v: axum::http::HeaderValue| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim_start_matches("__Host-mandate_session=")
            .to_string()
    };

    // Idle timeout: a request just before it keeps the session alive; none for IDLE ends it.
    let sid = sid_of(
        humans::web::start_session(&state, &ada.id, "passkey")
            .await
            .unwrap(),
    );
    h.clock.advance(IDLE - 1);
    assert_eq!(
        get(&h, "/account", Some(&sid)).await.status(),
        StatusCode::OK
    );
    h.clock.advance(IDLE - 1);
    assert_eq!(
        get(&h, "/account", Some(&sid)).await.status(),
        StatusCode::OK
    );
    h.clock.advance(IDLE);
    assert_eq!(
        get(&h, "/account", Some(&sid)).await.status(),
        StatusCode::SEE_OTHER
    );

    // Absolute timeout: activity does not extend it.
    let sid = sid_of(
        humans::web::start_session(&state, &ada.id, "passkey")
            .await
            .unwrap(),
    );
    let mut t = 0;
    while t + IDLE - 1 < LIFETIME {
        h.clock.advance(IDLE - 1);
        t += IDLE - 1;
        assert_eq!(
            get(&h, "/account", Some(&sid)).await.status(),
            StatusCode::OK,
            "at {t}"
        );
    }
    h.clock.advance(LIFETIME - t);
    assert_eq!(
        get(&h, "/account", Some(&sid)).await.status(),
        StatusCode::SEE_OTHER
    );

    // Revocation through the admin API ends every session of the person.
    let token = app.admin().create_admin_token("t").await.unwrap();
    app.refresh_registry(true).await.unwrap();
    let s1 = sid_of(
        humans::web::start_session(&state, &ada.id, "passkey")
            .await
            .unwrap(),
    );
    let s2 = sid_of(
        humans::web::start_session(&state, &ada.id, "oidc")
            .await
            .unwrap(),
    );
    let listed: Value = browser()
        .get(format!("{}/admin/v1/humans/{}/sessions", h.base, ada.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);
    assert!(
        !listed.to_string().contains(&s1),
        "session ids are never shown"
    );
    let r = browser()
        .delete(format!("{}/admin/v1/humans/{}/sessions", h.base, ada.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["ended"], 2);
    for s in [&s1, &s2] {
        assert_eq!(
            get(&h, "/account", Some(s)).await.status(),
            StatusCode::SEE_OTHER
        );
    }

    // Disabling a person ends their sessions too.
    let s3 = sid_of(
        humans::web::start_session(&state, &ada.id, "passkey")
            .await
            .unwrap(),
    );
    let r = browser()
        .post(format!("{}/admin/v1/humans/{}/disable", h.base, ada.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get(&h, "/account", Some(&s3)).await.status(),
        StatusCode::SEE_OTHER
    );

    // Forged and malformed cookies are no session.
    assert_eq!(
        get(
            &h,
            "/account",
            Some("mnd_hs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000")
        )
        .await
        .status(),
        StatusCode::SEE_OTHER
    );
    h
}
humans_test!(sessions_time_out_and_are_revocable);

/// The admin API: invite (with the link), list, show, passkeys; unauthenticated refused.
async fn admin_api_invites_and_lists(h: H) -> H {
    let token = h.app().admin().create_admin_token("t").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let url = |p: &str| format!("{}/admin/v1{p}", h.base);
    let r = browser().get(url("/humans")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = browser()
        .post(url("/humans/invite"))
        .bearer_auth(&token)
        .json(&json!({"email": "Root@Example.com", "name": "Root", "roles": ["admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let inv: Value = r.json().await.unwrap();
    assert_eq!(inv["human"]["email"], "root@example.com");
    assert_eq!(inv["human"]["roles"], json!(["admin"]));
    let link = inv["link"].as_str().unwrap();
    let mut auth = SoftPasskey::new(true);
    assert!(enrol(&h, link, &mut auth).await.status().is_success());
    // Bad roles are refused; a second invitation of the same person is a new link.
    let r = browser()
        .post(url("/humans/invite"))
        .bearer_auth(&token)
        .json(&json!({"email": "x@example.com", "roles": ["root"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = browser()
        .post(url("/humans/invite"))
        .bearer_auth(&token)
        .json(&json!({"email": "root@example.com", "roles": ["viewer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["existing"], true);
    let list: Value = browser()
        .get(url("/humans"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["humans"].as_array().unwrap().len(), 1);
    let id = list["humans"][0]["id"].as_str().unwrap().to_string();
    let shown: Value = browser()
        .get(url(&format!("/humans/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["passkeys"].as_array().unwrap().len(), 1);
    assert!(
        !shown.to_string().contains("\"passkey\":{"),
        "no key material"
    );
    let pk = shown["passkeys"][0]["id"].as_str().unwrap();
    let r = browser()
        .delete(url(&format!("/humans/{id}/passkeys/{pk}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = script_post(
        &h,
        "/login/passkey/start",
        json!({"email": "root@example.com"}),
        None,
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    h
}
humans_test!(admin_api_invites_and_lists);

/// The CLI: invite prints a link that enrols; list shows the person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_invites_the_first_admin() {
    let h = start(Backend::Sqlite, "cli_invites_the_first_admin")
        .await
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_mandate");
    let out = std::process::Command::new(bin)
        .args([
            "humans",
            "invite",
            "first@example.com",
            "--name",
            "First",
            "--role",
            "admin",
            "--json",
        ])
        .env("MANDATE_DATA_DIR", h.config.data_dir.to_str().unwrap())
        .env("MANDATE_ISSUER", h.app().issuer.as_str())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let link = v["link"].as_str().unwrap();
    let mut auth = SoftPasskey::new(true);
    assert!(enrol(&h, link, &mut auth).await.status().is_success());
    let out = std::process::Command::new(bin)
        .args(["humans", "passkeys", "first@example.com", "--json"])
        .env("MANDATE_DATA_DIR", h.config.data_dir.to_str().unwrap())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let out = std::process::Command::new(bin)
        .args(["humans", "revoke-sessions", "first@example.com"])
        .env("MANDATE_DATA_DIR", h.config.data_dir.to_str().unwrap())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 session(s)"));
    h.finish().await;
}

mod oidc_idp {
    //! A minimal OpenID Provider: discovery, JWKS, an authorization endpoint that approves at
    //! once, and a token endpoint that checks PKCE and returns an ES256-signed ID token.
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use axum::extract::{Form, Query, State};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    #[derive(Default, Clone)]
    pub struct Knobs {
        pub nonce: Option<String>,
        pub iss: Option<String>,
        pub email: String,
        pub groups: Vec<String>,
        pub sub: String,
    }

    pub struct Idp {
        pub issuer: String,
        pub knobs: Arc<Mutex<Knobs>>,
        codes: Mutex<HashMap<String, (String, String, String)>>, // code -> (nonce, challenge, client)
        der: Vec<u8>,
        jwk: Value,
    }

    pub async fn start() -> Arc<Idp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        });
        let idp = Arc::new(Idp {
            issuer: issuer.clone(),
            knobs: Arc::new(Mutex::new(Knobs {
                email: "ada@example.com".into(),
                sub: "upstream-ada".into(),
                ..Knobs::default()
            })),
            codes: Mutex::new(HashMap::new()),
            der: pkcs8.as_ref().to_vec(),
            jwk,
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(idp.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        idp
    }

    async fn discovery(State(idp): State<Arc<Idp>>) -> Json<Value> {
        let i = &idp.issuer;
        Json(json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "code_challenge_methods_supported": ["S256"],
        }))
    }

    async fn jwks(State(idp): State<Arc<Idp>>) -> Json<Value> {
        Json(json!({"keys": [idp.jwk]}))
    }

    async fn authorize(
        State(idp): State<Arc<Idp>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert!(q["scope"].split(' ').any(|s| s == "openid"));
        let code = uuid::Uuid::new_v4().to_string();
        idp.codes.lock().unwrap().insert(
            code.clone(),
            (
                q["nonce"].clone(),
                q["code_challenge"].clone(),
                q["client_id"].clone(),
            ),
        );
        let sep = if q["redirect_uri"].contains('?') {
            '&'
        } else {
            '?'
        };
        Redirect::to(&format!(
            "{}{sep}code={code}&state={}",
            q["redirect_uri"], q["state"]
        ))
        .into_response()
    }

    async fn token(
        State(idp): State<Arc<Idp>>,
        Form(f): Form<HashMap<String, String>>,
    ) -> Response {
        let Some((nonce, challenge, client)) = idp.codes.lock().unwrap().remove(&f["code"]) else {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant"})),
            )
                .into_response();
        };
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, f["code_verifier"].as_bytes());
        if URL_SAFE_NO_PAD.encode(digest.as_ref()) != challenge {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant"})),
            )
                .into_response();
        }
        let k = idp.knobs.lock().unwrap().clone();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = json!({
            "iss": k.iss.clone().unwrap_or(idp.issuer.clone()),
            "sub": k.sub,
            "aud": client,
            "iat": now,
            "exp": now + 300,
            "nonce": k.nonce.clone().unwrap_or(nonce),
            "email": k.email,
            "email_verified": true,
            "name": "Ada Upstream",
            "groups": k.groups,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("k1".into());
        let id_token = jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ec_der(&idp.der),
        )
        .unwrap();
        Json(json!({
            "access_token": "at", "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
        }))
        .into_response()
    }
}

/// Runs an upstream sign-in in a scripted browser: returns the final response of the callback.
async fn oidc_sign_in(h: &H, tamper_state: bool, send_cookie: bool) -> reqwest::Response {
    let b = browser();
    let r = b
        .get(format!("{}/login/oidc?next=%2Faccount", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let to_idp = location(&r);
    let flow_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("__Host-mandate_oidc="))
        .unwrap();
    assert!(flow_cookie.contains("HttpOnly") && flow_cookie.contains("Secure"));
    let flow_cookie = flow_cookie.split(';').next().unwrap().to_string();
    let r = b.get(&to_idp).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let mut back = location(&r);
    assert!(back.starts_with(&format!("{}/login/oidc/callback?", h.app().issuer)));
    if tamper_state {
        back = back.replace("state=mnd_cer_", "state=mnd_cer_X");
    }
    let back = back.replace(h.app().issuer.as_str(), &h.base);
    let mut req = b.get(back);
    if send_cookie {
        req = req.header("cookie", flow_cookie);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_and_its_refusals() {
    let idp = oidc_idp::start().await;
    let issuer = idp.issuer.clone();
    let h = start_with(Backend::Sqlite, "oidc_sign_in", |c| {
        c.oidc = Some(mandate::config::OidcConfig {
            issuer,
            client_id: "mandate-test".into(),
            client_secret: Some("s3cret".into()),
            scopes: vec!["email".into(), "profile".into()],
            label: "Company sign-in".into(),
            roles_claim: Some("groups".into()),
            role_map: [("mandate-admins".to_string(), "admin".to_string())]
                .into_iter()
                .collect(),
            auto_create: false,
            allowed_domains: vec![],
            default_roles: vec!["viewer".into()],
        });
    })
    .await
    .unwrap();
    // The login page offers it.
    let page = get(&h, "/login", None).await.text().await.unwrap();
    assert!(page.contains("Company sign-in"));

    // Not invited: refused (no auto-creation by default).
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(location(&r), "/login?error=unknown");
    assert!(session_cookie(&r).is_none());

    // Invited: signed in, roles from the groups claim, linked to the upstream subject.
    let trail = h.app().audit.trail(mandate::audit::Actor::system());
    humans::create(
        &h.app().store,
        &trail,
        h.now(),
        "ada@example.com",
        "Ada",
        &[Role::Viewer],
    )
    .await
    .unwrap();
    idp.knobs.lock().unwrap().groups = vec!["mandate-admins".into(), "other".into()];
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/account");
    let sid = session_cookie(&r).unwrap();
    let body = get(&h, "/account", Some(&sid)).await.text().await.unwrap();
    assert!(body.contains("ada@example.com"));
    let ada = humans::find_by_email(&h.app().store, "ada@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ada.human.roles, vec![Role::Admin]);
    assert_eq!(
        ada.oidc_subject.as_deref(),
        Some(format!("{}|upstream-ada", idp.issuer).as_str())
    );

    // Tampered state, or a callback in a browser that did not start the flow: refused.
    let r = oidc_sign_in(&h, true, true).await;
    assert_eq!(location(&r), "/login?error=oidc");
    assert!(session_cookie(&r).is_none());
    let r = oidc_sign_in(&h, false, false).await;
    assert_eq!(location(&r), "/login?error=oidc");
    assert!(session_cookie(&r).is_none());

    // A wrong nonce in the ID token: refused.
    idp.knobs.lock().unwrap().nonce = Some("replayed-nonce".into());
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(location(&r), "/login?error=oidc");
    idp.knobs.lock().unwrap().nonce = None;

    // An ID token from another issuer: refused.
    idp.knobs.lock().unwrap().iss = Some("https://evil.example".into());
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(location(&r), "/login?error=oidc");
    idp.knobs.lock().unwrap().iss = None;

    // Another upstream account with Ada's email cannot take over her linked account.
    idp.knobs.lock().unwrap().sub = "someone-else".into();
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(location(&r), "/login?error=oidc");
    idp.knobs.lock().unwrap().sub = "upstream-ada".into();

    // Groups that map to no role: refused.
    idp.knobs.lock().unwrap().groups = vec!["other".into()];
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(location(&r), "/login?error=oidc");

    // Back to normal: works again.
    idp.knobs.lock().unwrap().groups = vec!["mandate-admins".into()];
    let r = oidc_sign_in(&h, false, true).await;
    assert_eq!(location(&r), "/account");
    h.finish().await;
}
