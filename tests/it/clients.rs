//! Client registration: dynamic registration (RFC 7591/7592) under each policy, and Client ID
//! Metadata Documents served by a local test server (huge, slow, redirecting, private,
//! malformed, claiming another client_id, cached, errors not cached).
use crate::authorize::{
    MCP, REDIRECT, auth_query, consent, get_authorize, location, person, pkce, redeem, register,
};
use crate::harness::{Backend, H, Resp};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const TOOLS: &[&str] = &["search:read:internal"];

/// A local server of metadata documents; `hits` counts fetches of `/good.json`.
struct Docs {
    base: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Docs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn docs() -> Docs {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let flaky = Arc::new(AtomicUsize::new(0));
    let doc = {
        let base = base.clone();
        move |path: &str| {
            json!({
                "client_id": format!("{base}{path}"),
                "client_name": "Doc Client",
                "redirect_uris": [REDIRECT],
                "application_type": "native",
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none"
            })
        }
    };
    let app = axum::Router::new()
        .route(
            "/good.json",
            axum::routing::get({
                let doc = doc.clone();
                let hits = hits.clone();
                move || async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let mut h = HeaderMap::new();
                    h.insert(header::CACHE_CONTROL, "max-age=300".parse().unwrap());
                    (h, axum::Json(doc("/good.json"))).into_response()
                }
            }),
        )
        .route(
            "/nocache.json",
            axum::routing::get({
                let doc = doc.clone();
                move || async move { axum::Json(doc("/nocache.json")).into_response() }
            }),
        )
        .route(
            "/huge.json",
            axum::routing::get({
                let doc = doc.clone();
                move || async move {
                    let mut d = doc("/huge.json");
                    d["padding"] = "x".repeat(6000).into();
                    axum::Json(d).into_response()
                }
            }),
        )
        .route(
            "/slow.json",
            axum::routing::get({
                let doc = doc.clone();
                move || async move {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    axum::Json(doc("/slow.json")).into_response()
                }
            }),
        )
        .route(
            "/redirect.json",
            axum::routing::get(|| async {
                (StatusCode::FOUND, [(header::LOCATION, "/good.json")]).into_response()
            }),
        )
        .route(
            "/other.json",
            axum::routing::get({
                let doc = doc.clone();
                move || async move { axum::Json(doc("/good.json")).into_response() }
            }),
        )
        .route(
            "/malformed.json",
            axum::routing::get(|| async { "{\"client_id\": not json" }),
        )
        .route(
            "/secret.json",
            axum::routing::get({
                let doc = doc.clone();
                move || async move {
                    let mut d = doc("/secret.json");
                    d["token_endpoint_auth_method"] = "client_secret_basic".into();
                    axum::Json(d).into_response()
                }
            }),
        )
        .route(
            "/flaky.json",
            axum::routing::get({
                let doc = doc.clone();
                let flaky = flaky.clone();
                move || async move {
                    if flaky.fetch_add(1, Ordering::SeqCst) == 0 {
                        StatusCode::INTERNAL_SERVER_ERROR.into_response()
                    } else {
                        let mut h = HeaderMap::new();
                        h.insert(header::CACHE_CONTROL, "max-age=300".parse().unwrap());
                        (h, axum::Json(doc("/flaky.json"))).into_response()
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Docs { base, hits, task }
}

async fn cimd_server(test: &str) -> H {
    H::start_with(Backend::Sqlite, test, |c| {
        c.dev_allow_loopback_clients = true;
        c.cimd_fetch_timeout_ms = 700;
    })
    .await
    .unwrap()
}

/// The consent page (or error page) for a metadata-document client.
async fn try_doc(h: &H, cookie: &str, client_id: &str) -> reqwest::Response {
    let (_, challenge) = pkce();
    get_authorize(h, Some(cookie), &auth_query(client_id, &challenge, &[])).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_document_client_end_to_end_and_cached() {
    let h = cimd_server("cimd_end_to_end").await;
    h.server(MCP, "prod", TOOLS).await;
    let d = docs().await;
    let (_, cookie) = person(&h, "carol@example.com").await;
    let client_id = format!("{}/good.json", d.base);
    let (verifier, challenge) = pkce();
    let q = auth_query(&client_id, &challenge, &[("scope", "tools:search")]);
    let page = get_authorize(&h, Some(&cookie), &q).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("described by <strong>127.0.0.1</strong>"),
        "names the document host"
    );
    assert!(
        html.contains("only runs on your own computer"),
        "warns on localhost redirects"
    );
    let r = consent(&h, &cookie, &q, "approve").await;
    let (_, p) = location(&r);
    let t = redeem(&h, &client_id, &p["code"], &verifier, &[]).await;
    assert_eq!(t.status, 200, "{:?}", t.body);
    assert!(t.body["refresh_token"].is_string());
    // Cached per its Cache-Control: three authorize requests, one fetch.
    assert_eq!(d.hits.load(Ordering::SeqCst), 1);
    // A public document client cannot present a secret.
    let r = h
        .post(
            "/token",
            Some((&client_id, "guess")),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", t.body["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(r.error(), "invalid_client");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_metadata_documents_are_refused() {
    let h = cimd_server("cimd_bad_documents").await;
    h.server(MCP, "prod", TOOLS).await;
    let d = docs().await;
    let (_, cookie) = person(&h, "dave@example.com").await;
    for (path, why) in [
        ("/huge.json", "larger than"),
        ("/slow.json", "timed out"),
        ("/redirect.json", "answered 302"),
        ("/other.json", "not the URL"),
        ("/malformed.json", "not valid JSON"),
        ("/secret.json", "client_secret_basic"),
        ("/missing.json", "answered 404"),
    ] {
        let started = std::time::Instant::now();
        let r = try_doc(&h, &cookie, &format!("{}{path}", d.base)).await;
        assert_eq!(r.status(), 400, "{path}");
        assert!(r.headers().get("location").is_none(), "{path}: no redirect");
        let html = r.text().await.unwrap();
        assert!(
            html.contains(why),
            "{path}: page should say {why:?}: {html}"
        );
        assert!(started.elapsed().as_secs() < 4, "{path} took too long");
    }
    // Errors are never cached: the flaky document fails once, then works at once.
    let flaky = format!("{}/flaky.json", d.base);
    assert_eq!(try_doc(&h, &cookie, &flaky).await.status(), 400);
    assert_eq!(try_doc(&h, &cookie, &flaky).await.status(), 200);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_outside_development() {
    let h = H::start_with(Backend::Sqlite, "cimd_private", |_| {})
        .await
        .unwrap();
    h.server(MCP, "prod", TOOLS).await;
    let d = docs().await;
    let (_, cookie) = person(&h, "erin@example.com").await;
    let port = d.base.rsplit(':').next().unwrap();
    // https names and literals that resolve to loopback or private space: refused after
    // resolution, before any connection.
    for id in [
        format!("https://localhost:{port}/good.json"),
        format!("https://127.0.0.1:{port}/good.json"),
        "https://10.0.0.1/client.json".to_string(),
        "https://[::1]/client.json".to_string(),
        "https://169.254.169.254/latest.json".to_string(),
    ] {
        let r = try_doc(&h, &cookie, &id).await;
        assert_eq!(r.status(), 400, "{id}");
        let html = r.text().await.unwrap();
        assert!(html.contains("special-use address"), "{id}: {html}");
    }
    // And plain http is refused outright.
    let r = try_doc(&h, &cookie, &format!("{}/good.json", d.base)).await;
    assert!(r.text().await.unwrap().contains("must be https"));
    assert_eq!(d.hits.load(Ordering::SeqCst), 0, "nothing was fetched");
    h.finish().await;
}

async fn reg(h: &H, token: Option<&str>, meta: Value) -> Resp {
    let mut req = h.http.post(h.url("/register")).json(&meta);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    Resp::from(req.send().await.unwrap()).await
}

fn web_client() -> Value {
    json!({
        "client_name": "Web App",
        "redirect_uris": ["https://app.example/cb"],
        "application_type": "web",
        "grant_types": ["authorization_code", "refresh_token"]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_needs_an_initial_access_token_by_default() {
    let h = H::start(Backend::Sqlite, "dcr_default").await.unwrap();
    let meta: Value = h
        .http
        .get(h.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["registration_endpoint"],
        format!("{}/register", h.base)
    );
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
    assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
    let r = reg(&h, None, web_client()).await;
    assert_eq!((r.status, r.error()), (401, "invalid_token"));
    let r = reg(&h, Some("mnd_adm_wrong"), web_client()).await;
    assert_eq!(r.status, 401);
    let admin = h.app().admin().create_admin_token("iat").await.unwrap();
    h.app().after_registry_change().await;
    let r = reg(&h, Some(&admin), web_client()).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(
        r.body["client_secret"]
            .as_str()
            .unwrap()
            .starts_with("mnd_cs_")
    );
    assert_eq!(r.body["token_endpoint_auth_method"], "client_secret_basic");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_can_be_off() {
    let h = H::start_with(Backend::Sqlite, "dcr_off", |c| {
        c.registration_policy = "off".into();
    })
    .await
    .unwrap();
    let meta: Value = h
        .http
        .get(h.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(meta.get("registration_endpoint").is_none());
    let r = reg(&h, None, web_client()).await;
    assert_eq!(r.status, 403);
    h.finish().await;
}

async fn open_registration_rules_and_management(h: H) -> H {
    // Bad metadata, each with its RFC 7591 error.
    for (meta, code) in [
        (json!({"redirect_uris": []}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris": ["http://app.example/cb"], "application_type": "web"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://app.example/cb#frag"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["com.example.app:/cb"], "application_type": "web"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["http://evil.example/cb"], "application_type": "native"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "application_type": "desktop"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": ["https://a.example/cb"], "client_id": "mine"}),
            "invalid_client_metadata",
        ),
        (json!("not an object"), "invalid_client_metadata"),
    ] {
        let r = register(&h, meta.clone()).await;
        assert_eq!((r.status, r.error()), (400, code), "{meta}");
    }
    // Native clients: loopback http and private-use schemes.
    let r = register(
        &h,
        json!({"redirect_uris": ["http://127.0.0.1/cb", "com.example.app:/cb"], "application_type": "native", "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert!(
        r.body.get("client_secret").is_none(),
        "public clients get no secret"
    );
    // A confidential web client authenticates at /token with its secret.
    h.server(MCP, "prod", TOOLS).await;
    let r = register(&h, web_client()).await;
    assert_eq!(r.status, 201);
    let id = r.body["client_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("mcl_"));
    let secret = r.body["client_secret"].as_str().unwrap().to_string();
    let rat = r.body["registration_access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rat.starts_with("mnd_rat_"));
    let uri = r.body["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_string();
    // Clients are not agents: no client_credentials.
    let cc = h
        .post(
            "/token",
            Some((&id, &secret)),
            &[("grant_type", "client_credentials")],
        )
        .await;
    assert_eq!(cc.status / 100, 4);
    assert_ne!(cc.status, 200);
    // Read with the registration access token; not without it.
    let read = h.http.get(&uri).bearer_auth(&rat).send().await.unwrap();
    assert_eq!(read.status(), 200);
    let body: Value = read.json().await.unwrap();
    assert_eq!(body["client_id"], id.as_str());
    assert!(body.get("client_secret").is_none());
    assert_eq!(h.http.get(&uri).send().await.unwrap().status(), 401);
    let wrong = mandate::secrets::generate("mnd_rat_");
    assert_eq!(
        h.http
            .get(&uri)
            .bearer_auth(&wrong)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The code flow with client_secret_basic.
    let (_, cookie) = person(&h, "frank@example.com").await;
    let (verifier, challenge) = pkce();
    let q: Vec<(String, String)> = auth_query(
        &id,
        &challenge,
        &[
            ("redirect_uri", "https://app.example/cb"),
            ("scope", "tools:search"),
        ],
    );
    let r = consent(&h, &cookie, &q, "approve").await;
    let (_, p) = location(&r);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", p["code"].as_str()),
        ("code_verifier", verifier.as_str()),
        ("redirect_uri", "https://app.example/cb"),
    ];
    let bad = h.post("/token", Some((&id, "mnd_cs_wrong")), &form).await;
    assert_eq!((bad.status, bad.error()), (401, "invalid_client"));
    let none = h
        .post(
            "/token",
            None,
            &[form.as_slice(), &[("client_id", id.as_str())]].concat(),
        )
        .await;
    assert_eq!(
        none.error(),
        "invalid_client",
        "a confidential client must authenticate"
    );
    let ok = h.post("/token", Some((&id, &secret)), &form).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let at = ok.access_token();
    // Delete: the client is gone and its grants end.
    let del = h.http.delete(&uri).bearer_auth(&rat).send().await.unwrap();
    assert_eq!(del.status(), 204);
    assert_eq!(
        h.http
            .get(&uri)
            .bearer_auth(&rat)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let (_, challenge) = pkce();
    let r = get_authorize(
        &h,
        Some(&cookie),
        &auth_query(
            &id,
            &challenge,
            &[("redirect_uri", "https://app.example/cb")],
        ),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());
    let server = h.app().registry().servers().next().unwrap().clone();
    let _ = server;
    let rt = ok.body["refresh_token"].as_str().unwrap();
    let r = h
        .post(
            "/token",
            Some((&id, &secret)),
            &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        )
        .await;
    assert_eq!(r.error(), "invalid_client");
    let _ = at;
    h
}

mod open_registration {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let h = crate::harness::H::start_with(
            crate::harness::Backend::Sqlite,
            "open_registration",
            |c| c.registration_policy = "open".into(),
        )
        .await
        .unwrap();
        super::open_registration_rules_and_management(h)
            .await
            .finish()
            .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(h) = crate::harness::H::start_with(
            crate::harness::Backend::Postgres,
            "open_registration",
            |c| c.registration_policy = "open".into(),
        )
        .await
        {
            super::open_registration_rules_and_management(h)
                .await
                .finish()
                .await;
        }
    }
}
