//! Sessions, each kind of revocation, the kill switch, Redis propagation and failure.
use crate::both;
use crate::harness::{H, PrivateRedis, eventually};
use base64::Engine;
use mandate::agents::NewAgent;
use serde_json::{Value, json};

const A: &str = "https://a.mcp.test/mcp";

fn claims(jwt: &str) -> Value {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').nth(1).unwrap())
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

async fn admin(h: &H) -> String {
    let t = h.app().admin().create_admin_token("t").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    t
}

async fn api(
    h: &H,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> crate::harness::Resp {
    let mut req = h
        .http
        .request(method, h.url(&format!("/admin/v1{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    crate::harness::Resp::from(req.send().await.unwrap()).await
}

async fn agent_with_sessions(h: &H, lifetime: Option<i64>, idle: Option<i64>) -> (String, String) {
    let (id, secret) = h
        .agent(NewAgent {
            name: "session agent".into(),
            owner: "o@example.com".into(),
            environment: "prod".into(),
            allowed_resources: vec![A.into()],
            scope_ceiling: vec!["tools:read".into()],
            session_lifetime_secs: lifetime,
            session_idle_secs: idle,
            ..Default::default()
        })
        .await;
    (id, secret.unwrap())
}

async fn sessions_start_last_and_end_on_their_own(h: H) -> H {
    let srv = h.server(A, "prod", &["search:read:internal"]).await;
    let server = (srv.0.as_str(), srv.1.as_str());
    let (id, secret) = agent_with_sessions(&h, Some(600), Some(400)).await;
    let t1 = h.token(&id, &secret, &[]).await.access_token();
    let t2 = h.token(&id, &secret, &[]).await.access_token();
    let sid = claims(&t1)["sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("ses_"));
    assert_eq!(
        claims(&t2)["sid"],
        sid.as_str(),
        "one session per agent while it lasts"
    );
    assert_eq!(h.introspect(server, &t1).await["sid"], sid.as_str());

    // Listed with its activity.
    let token = admin(&h).await;
    let r = api(
        &h,
        &token,
        reqwest::Method::GET,
        &format!("/sessions?agent={id}"),
        None,
    )
    .await;
    let list = r.body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{:?}", r.body);
    assert_eq!(list[0]["sid"], sid.as_str());
    assert_eq!(list[0]["tokens_issued"], 2);
    assert_eq!(list[0]["last_seen"], h.now());

    // An explicit start: the next tokens belong to the new session.
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        &format!("/agents/{id}/sessions"),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let explicit = r.body["sid"].as_str().unwrap().to_string();
    assert_ne!(explicit, sid);
    let te = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(claims(&te)["sid"], explicit.as_str());
    assert_eq!(
        h.introspect(server, &t1).await["active"],
        true,
        "older tokens live on"
    );
    let sid = explicit;
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        "/agents/agt_nope/sessions",
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    // Idle (no token for 400 s): the next token starts a new session.
    h.clock.advance(401);
    let t3 = h.token(&id, &secret, &[]).await.access_token();
    let sid3 = claims(&t3)["sid"].as_str().unwrap().to_string();
    assert_ne!(sid3, sid);
    // Absolute lifetime: tokens never outlive their session, and it ends at 600 s.
    h.clock.advance(350);
    let t4 = h.token(&id, &secret, &[]).await.access_token();
    let c4 = claims(&t4);
    assert_eq!(c4["sid"], sid3.as_str());
    assert_eq!(
        c4["exp"].as_i64().unwrap(),
        claims(&t3)["iat"].as_i64().unwrap() + 600
    );
    h.clock.advance(251);
    assert_eq!(h.introspect(server, &t4).await["active"], false);
    let t5 = h.token(&id, &secret, &[]).await.access_token();
    assert_ne!(claims(&t5)["sid"], sid3.as_str());
    h
}
both!(sessions_start_last_and_end_on_their_own);

async fn each_kind_of_revocation(h: H) -> H {
    let srv = h.server(A, "prod", &["search:read:internal"]).await;
    let server = (srv.0.as_str(), srv.1.as_str());
    let (dsrv_id, dsrv_secret) = h
        .server("https://dev.mcp.test/", "dev", &["search:read:internal"])
        .await;
    let token = admin(&h).await;
    let (id, secret) = agent_with_sessions(&h, None, None).await;
    let (dev, dev_secret) = h
        .simple_agent(
            "dev",
            &["https://dev.mcp.test/"],
            "tools:read",
            "client_secret_basic",
        )
        .await;

    // Session: every token in it goes; the next token starts a new session.
    let t1 = h.token(&id, &secret, &[]).await.access_token();
    let sid = claims(&t1)["sid"].as_str().unwrap().to_string();
    let r = api(
        &h,
        &token,
        reqwest::Method::DELETE,
        &format!("/sessions/{sid}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(h.introspect(server, &t1).await["active"], false);
    let t2 = h.token(&id, &secret, &[]).await.access_token();
    assert_ne!(claims(&t2)["sid"], sid.as_str());
    assert_eq!(h.introspect(server, &t2).await["active"], true);

    // Environment: everything issued in dev before now, nothing in prod.
    let dev_token = h.token(&dev, &dev_secret, &[]).await.access_token();
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        "/revocations",
        Some(json!({"kind": "env", "value": "dev"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        h.introspect((&dsrv_id, &dsrv_secret), &dev_token).await["active"],
        false
    );
    assert_eq!(h.introspect(server, &t2).await["active"], true);
    h.clock.advance(1);
    let fresh_dev = h.token(&dev, &dev_secret, &[]).await.access_token();
    assert_eq!(
        h.introspect((&dsrv_id, &dsrv_secret), &fresh_dev).await["active"],
        true
    );

    // The kill switch: everything the agent holds, new tokens refused; revive lets it start
    // again, the old tokens stay dead.
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        &format!("/agents/{id}/kill"),
        None,
    )
    .await;
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(h.introspect(server, &t2).await["active"], false);
    assert_eq!(
        h.token(&id, &secret, &[]).await.error(),
        "unauthorized_client"
    );
    assert_eq!(
        api(
            &h,
            &token,
            reqwest::Method::GET,
            &format!("/sessions?agent={id}"),
            None
        )
        .await
        .body["sessions"],
        json!([])
    );
    h.clock.advance(1);
    let r = api(
        &h,
        &token,
        reqwest::Method::POST,
        &format!("/agents/{id}/revive"),
        None,
    )
    .await;
    assert_eq!(r.body["status"], "active");
    let t3 = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(h.introspect(server, &t3).await["active"], true);
    assert_eq!(h.introspect(server, &t2).await["active"], false);

    // Bad input: clear errors, nothing changed.
    for (body, status) in [
        (json!({"kind": "session", "value": "not-a-sid"}), 400),
        (
            json!({"kind": "session", "value": "ses_000000000000000000000000"}),
            404,
        ),
        (json!({"kind": "agent", "value": "agt_unknown"}), 404),
        (json!({"kind": "planet", "value": "x"}), 400),
        (json!({"kind": "env", "value": "bad env!"}), 400),
        (json!({"kind": "jti"}), 400),
    ] {
        let r = api(
            &h,
            &token,
            reqwest::Method::POST,
            "/revocations",
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, status, "{body}: {:?}", r.body);
    }
    assert_eq!(h.introspect(server, &t3).await["active"], true);

    // Everything survives a restart.
    let mut h = h;
    h.boot().await;
    let server = (srv.0.as_str(), srv.1.as_str());
    assert_eq!(h.introspect(server, &t1).await["active"], false);
    assert_eq!(h.introspect(server, &t2).await["active"], false);
    assert_eq!(h.introspect(server, &t3).await["active"], true);
    h
}
both!(each_kind_of_revocation);

/// Two nodes sharing Redis: a kill on one is seen by the other through pub/sub, well before
/// any database poll could (the poll is stretched to 60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_on_one_node_is_seen_on_the_other_through_redis() {
    let Some(h) = H::start_redis("kill_on_one_node", None).await else {
        return;
    };
    let mut h = h;
    h.config.refresh_interval_ms = 60_000;
    h.boot().await;
    let (sid, ssecret) = h.server(A, "prod", &["search:read:internal"]).await;
    let node_b = h.second_node().await;
    let (id, secret) = agent_with_sessions(&h, None, None).await;
    let t = h.token(&id, &secret, &[]).await.access_token();
    let introspect_b = || async {
        let r = h
            .http
            .post(format!("http://{}/introspect", node_b.addr))
            .basic_auth(&sid, Some(&ssecret))
            .form(&[("token", &t)])
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()["active"] == true
    };
    assert!(
        eventually(5, &introspect_b).await,
        "node B should accept the token first"
    );
    let started = std::time::Instant::now();
    h.app()
        .kill_agent(mandate::audit::Actor::system(), &id)
        .await
        .unwrap();
    assert!(
        eventually(5, || async { !introspect_b().await }).await,
        "node B still accepts a killed agent's token"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    node_b.stop().await.unwrap();
    h.finish().await;
}

/// Redis dies: introspection fails closed, issuance answers 503. Redis comes back empty:
/// service resumes by itself, and every revocation still holds (replayed from the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failure_fails_closed_and_recovers_without_losing_revocations() {
    let Some(mut redis) = PrivateRedis::start("redis_failure::redis").await else {
        return;
    };
    let h = H::start_redis("redis_failure", Some(redis.url()))
        .await
        .unwrap();
    let srv = h.server(A, "prod", &["search:read:internal"]).await;
    let server = (srv.0.as_str(), srv.1.as_str());
    let (id, secret) = agent_with_sessions(&h, None, None).await;
    assert!(eventually(5, || async { h.app().backend.healthy() }).await);
    let revoked = h.token(&id, &secret, &[]).await.access_token();
    let valid = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(
        h.post("/revoke", Some((&id, &secret)), &[("token", &revoked)])
            .await
            .status,
        200
    );

    // Load keeps running through the outage: a revoked token is never active, and token
    // requests get 200 or 503, never anything else.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, http, base) = (stop.clone(), h.http.clone(), h.base.clone());
        let (sid, ssecret, id, secret, revoked) = (
            srv.0.clone(),
            srv.1.clone(),
            id.clone(),
            secret.clone(),
            revoked.clone(),
        );
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let v: Value = http
                    .post(format!("{base}/introspect"))
                    .basic_auth(&sid, Some(&ssecret))
                    .form(&[("token", &revoked)])
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(v["active"], false, "a revoked token came back");
                let r = http
                    .post(format!("{base}/token"))
                    .basic_auth(&id, Some(&secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .unwrap();
                seen.insert(r.status().as_u16());
            }
            seen
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    redis.down();
    assert!(
        eventually(5, || async { !h.app().backend.healthy() }).await,
        "outage not noticed"
    );
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["revocation_store"],
        "unreachable"
    );
    assert_eq!(h.introspect(server, &valid).await, json!({"active": false}));
    let r = h.token(&id, &secret, &[]).await;
    assert_eq!((r.status, r.error()), (503, "temporarily_unavailable"));
    let text = h
        .http
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("mandate_revocation_store_failures_total 0"),
        "{text}"
    );

    redis.up().await; // empty dataset
    assert!(
        eventually(10, || async { h.app().backend.healthy() }).await,
        "did not recover"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&503) && statuses.contains(&200),
        "{statuses:?}"
    );
    assert_eq!(h.introspect(server, &valid).await["active"], true);
    assert_eq!(h.introspect(server, &revoked).await["active"], false);
    assert_eq!(h.token(&id, &secret, &[]).await.status, 200);
    // The replay put the revocation back into Redis itself.
    let mut c = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}rev:jti:*", h.config.redis_prefix))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    h.finish().await;
}

/// The same revocation checks, on Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_on_redis() {
    let Some(h) = H::start_redis("revocations_on_redis", None).await else {
        return;
    };
    assert!(eventually(5, || async { h.app().backend.healthy() }).await);
    let h = each_kind_of_revocation(h).await;
    h.finish().await;
    let Some(h) = H::start_redis("sessions_on_redis", None).await else {
        return;
    };
    assert!(eventually(5, || async { h.app().backend.healthy() }).await);
    let h = sessions_start_last_and_end_on_their_own(h).await;
    h.finish().await;
}

/// PostgreSQL goes away: every answer needs its audit record, so token issuance and
/// introspection fail closed (503 `temporarily_unavailable`, promptly), readiness says so, a
/// revocation changes nothing; when it is back everything resumes by itself and nothing that
/// was in memory (registry, keys, revocations, sessions) was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_fails_closed_and_recovers() {
    let Some(pg) = crate::harness::PrivatePostgres::start("postgres_restart").await else {
        return;
    };
    let url = pg.url();
    let h = H::start_with(crate::harness::Backend::Sqlite, "postgres_restart", |c| {
        c.database_url = Some(url)
    })
    .await
    .unwrap();
    let srv = h.server(A, "prod", &["search:read:internal"]).await;
    let server = (srv.0.as_str(), srv.1.as_str());
    let (id, secret) = agent_with_sessions(&h, None, None).await;
    let t1 = h.token(&id, &secret, &[]).await.access_token();

    pg.down();
    let started = std::time::Instant::now();
    // Answers go on while their events are journaled, until the audit writer finds the
    // database gone; from then on requests fail closed.
    let mut journaled = 0;
    loop {
        let r = h.token(&id, &secret, &[]).await;
        if r.status == 200 {
            journaled += 1;
            assert!(started.elapsed() < std::time::Duration::from_secs(15));
            continue;
        }
        assert_eq!((r.status, r.error()), (503, "temporarily_unavailable"));
        break;
    }
    let r = h.post("/introspect", Some(server), &[("token", &t1)]).await;
    assert_eq!((r.status, r.error()), (503, "temporarily_unavailable"));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap().status();
    assert_eq!(ready, 503);
    let r = h
        .post("/revoke", Some((&id, &secret)), &[("token", &t1)])
        .await;
    assert_eq!((r.status, r.error()), (503, "temporarily_unavailable"));

    pg.up();
    assert!(
        eventually(15, || async {
            h.http.get(h.url("/readyz")).send().await.unwrap().status() == 200
        })
        .await,
        "not ready again"
    );
    assert!(
        eventually(15, || async {
            h.token(&id, &secret, &[]).await.status == 200
        })
        .await,
        "token issuance did not resume"
    );
    let t2 = h.token(&id, &secret, &[]).await.access_token();
    assert_eq!(
        h.introspect(server, &t1).await["active"],
        true,
        "a failed revocation changed nothing"
    );
    let r = h
        .post("/revoke", Some((&id, &secret)), &[("token", &t1)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(h.introspect(server, &t1).await["active"], false);
    assert_eq!(h.introspect(server, &t2).await["active"], true);
    // The tokens answered during the outage and after it have their events: the writer kept
    // and wrote them. (Not necessarily `t1`'s: it was committed asynchronously just before
    // PostgreSQL crashed, the documented risk of `synchronous_commit=off`.)
    h.app().audit.sync().await;
    let mut issued = 0;
    mandate::audit::query::export(&h.app().store.db, 0, i64::MAX, |r| {
        issued += usize::from(r.kind == "token.issued");
        Ok(())
    })
    .await
    .unwrap();
    assert!(
        issued >= journaled + 2,
        "{issued} events, {journaled} answered during the outage"
    );
    h.finish().await;
}
