//! The audit log: every event type, the hash chain and `verify` (tampering, deletion,
//! truncation), back-pressure, filters and paging, retention, and a kill -9 of the binary.
use crate::both;
use crate::harness::H;
use mandate::audit::verify::Report;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

const URI: &str = "https://audit.mcp.test/mcp";

/// Every stored event, oldest first, as JSON lines parse.
async fn events(h: &H) -> Vec<Value> {
    let mut out = Vec::new();
    h.app().audit.sync().await;
    mandate::audit::query::export(&h.app().store.db, 0, i64::MAX, |r| {
        out.push(serde_json::from_str(&r.json_line()).unwrap());
        Ok(())
    })
    .await
    .unwrap();
    out
}

fn of_type<'a>(all: &'a [Value], t: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["type"] == t).collect()
}

async fn verify(h: &H) -> Report {
    h.app().audit.sync().await;
    mandate::audit::verify::verify(&h.app().store)
        .await
        .unwrap()
}

async fn sql(h: &H, s: &str) {
    h.app().audit.sync().await;
    h.app().store.db.execute_unprepared(s).await.unwrap();
}

/// A server and an agent, and a token.
async fn setup(h: &H) -> ((String, String), (String, String), String) {
    let server = h
        .server(
            URI,
            "prod",
            &["search:read:internal", "write_doc:write:internal"],
        )
        .await;
    let agent = h
        .simple_agent("prod", &[URI], "tools:read", "client_secret_basic")
        .await;
    let token = h
        .token(&agent.0, &agent.1, &[("resource", URI)])
        .await
        .access_token();
    (server, agent, token)
}

async fn every_event_type_is_recorded(h: H) -> H {
    let (server, agent, token) = setup(&h).await;
    let other = h
        .server("https://other.mcp.test/", "prod", &["x:read:public"])
        .await;
    // Refused: bad secret, then an unknown resource.
    let r = h
        .token(&agent.0, "mnd_cs_wrong", &[("resource", URI)])
        .await;
    assert_eq!(r.status, 401);
    let r = h
        .http
        .post(h.url("/token"))
        .basic_auth(&agent.0, Some(&agent.1))
        .header("x-request-id", "req-42")
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", "https://nope.test/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Introspection: active for the audience, inactive for another server.
    assert_eq!(
        h.introspect((&server.0, &server.1), &token).await["active"],
        true
    );
    assert_eq!(
        h.introspect((&other.0, &other.1), &token).await["active"],
        false
    );
    // Revocation by the holder.
    let r = h
        .post("/revoke", Some((&agent.0, &agent.1)), &[("token", &token)])
        .await;
    assert_eq!(r.status, 200);
    // Registry changes through the admin API (actor: that admin token).
    let admin = h.app().admin().create_admin_token("auditor").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let api = |m: reqwest::Method, p: &str| {
        h.http
            .request(m, h.url(&format!("/admin/v1{p}")))
            .bearer_auth(&admin)
    };
    let r = api(reqwest::Method::PATCH, &format!("/agents/{}", agent.0))
        .json(&json!({"trust_level": "high"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["suspend", "activate", "rotate-secret"] {
        let r = api(
            reqwest::Method::POST,
            &format!("/agents/{}/{path}", agent.0),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = api(reqwest::Method::POST, "/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api(reqwest::Method::DELETE, &format!("/agents/{}", agent.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = api(reqwest::Method::DELETE, &format!("/servers/{}", other.0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let all = events(&h).await;
    let one = |t: &str| -> &Value {
        let v = of_type(&all, t);
        assert!(!v.is_empty(), "no {t} event in {all:#?}");
        v[0]
    };
    let jti = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["jti"].as_str().unwrap().to_string()
    };
    let issued = one("token.issued");
    assert_eq!(issued["actor"], json!({"kind": "agent", "id": agent.0}));
    assert_eq!(issued["agent"], agent.0.as_str());
    assert_eq!(issued["server"], server.0.as_str());
    assert_eq!(issued["subject"], jti.as_str());
    assert_eq!(issued["decision"], "permit");
    assert_eq!(issued["details"]["scope"], "tools:read");
    assert_eq!(issued["details"]["resource"], URI);
    assert_eq!(issued["source"], "127.0.0.1");
    let refused = of_type(&all, "token.refused");
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["actor"]["kind"], "anonymous");
    assert_eq!(refused[0]["actor"]["id"], agent.0.as_str());
    assert_eq!(refused[0]["decision"], "deny");
    assert_eq!(refused[0]["reasons"], json!(["invalid_client"]));
    assert_eq!(refused[0]["details"]["reason"], "bad client secret");
    assert_eq!(refused[1]["actor"]["kind"], "agent");
    assert_eq!(refused[1]["reasons"], json!(["invalid_target"]));
    assert_eq!(refused[1]["request_id"], "req-42");
    assert_eq!(refused[1]["details"]["resource"], "https://nope.test/");
    let intro = of_type(&all, "token.introspected");
    assert_eq!(intro.len(), 2);
    assert_eq!(intro[0]["actor"], json!({"kind": "server", "id": server.0}));
    assert_eq!(intro[0]["details"]["active"], true);
    assert_eq!(intro[0]["subject"], jti.as_str());
    assert_eq!(intro[0]["agent"], agent.0.as_str());
    assert_eq!(intro[1]["server"], other.0.as_str());
    assert_eq!(intro[1]["details"]["active"], false);
    assert_eq!(intro[1]["decision"], "deny");
    assert_eq!(
        intro[1]["details"]["token_fingerprint"],
        mandate::secrets::fingerprint(&token).as_str()
    );
    let revoked = one("token.revoked");
    assert_eq!(revoked["subject"], jti.as_str());
    assert_eq!(revoked["actor"], json!({"kind": "agent", "id": agent.0}));
    assert_eq!(one("agent.created")["subject"], agent.0.as_str());
    assert_eq!(one("agent.created")["actor"]["kind"], "system");
    let upd = one("agent.updated");
    assert_eq!(upd["actor"]["kind"], "admin");
    assert_eq!(upd["details"]["changed"], json!(["trust_level"]));
    assert_eq!(upd["details"]["trust_level"], "high");
    let st = of_type(&all, "agent.status_changed");
    assert_eq!(st[0]["details"]["status"], "suspended");
    assert_eq!(st[1]["details"]["status"], "active");
    assert!(one("secret.rotated")["details"]["secret_fingerprint"].is_string());
    assert_eq!(one("agent.deleted")["subject"], agent.0.as_str());
    assert_eq!(one("server.created")["details"]["resource"], URI);
    assert_eq!(one("server.deleted")["subject"], other.0.as_str());
    assert_eq!(
        of_type(&all, "key.added").len(),
        2,
        "start-up key and rotation"
    );
    assert_eq!(one("admin_token.created")["details"]["name"], "auditor");

    // Never a token, secret or assertion in the record.
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(&token));
    assert!(!text.contains(&agent.1) && !text.contains(&server.1) && !text.contains(&admin));
    assert!(!text.contains("mnd_cs_") && !text.contains("mnd_adm_"));

    // One chain, sequence numbers 1..n, verified.
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let rep = verify(&h).await;
    assert!(rep.ok, "{rep:#?}");
    assert_eq!(rep.events, all.len() as u64);
    h
}
both!(every_event_type_is_recorded);

async fn tampering_and_deletion_are_named(h: H) -> H {
    let (server, _agent, token) = setup(&h).await;
    for _ in 0..5 {
        h.introspect((&server.0, &server.1), &token).await;
    }
    assert!(verify(&h).await.ok);
    let all = events(&h).await;
    let victim = all.iter().find(|e| e["type"] == "token.issued").unwrap();
    let (seq, id) = (
        victim["seq"].as_i64().unwrap(),
        victim["id"].as_str().unwrap(),
    );

    // Edit one row: it is named.
    sql(
        &h,
        &format!("UPDATE audit_events SET decision = 'deny' WHERE id = '{id}'"),
    )
    .await;
    let rep = verify(&h).await;
    assert!(!rep.ok);
    assert_eq!(rep.problems.len(), 1, "{rep:#?}");
    assert_eq!(rep.problems[0].kind, "modified");
    assert_eq!(rep.problems[0].seq, Some(seq));
    assert_eq!(rep.problems[0].id.as_deref(), Some(id));

    // Edit it and recompute its hash: the next event no longer links to it.
    let mut row = mandate::audit::query::row_by_id(&h.app().store.db, id)
        .await
        .unwrap()
        .unwrap();
    row.decision = Some("deny".into());
    row.hash = row.compute_hash();
    sql(
        &h,
        &format!(
            "UPDATE audit_events SET hash = '{}' WHERE id = '{id}'",
            row.hash
        ),
    )
    .await;
    let rep = verify(&h).await;
    assert_eq!(rep.problems.len(), 1, "{rep:#?}");
    assert_eq!(rep.problems[0].kind, "chain_break");
    assert_eq!(rep.problems[0].seq, Some(seq));
    assert_eq!(rep.problems[0].id.as_deref(), Some(id));

    // Delete a row in the middle: the gap is named.
    let gone = &all[all.len() - 3];
    sql(
        &h,
        &format!(
            "DELETE FROM audit_events WHERE id = '{}'",
            gone["id"].as_str().unwrap()
        ),
    )
    .await;
    let rep = verify(&h).await;
    let missing: Vec<_> = rep
        .problems
        .iter()
        .filter(|p| p.kind == "missing")
        .collect();
    assert_eq!(missing.len(), 1, "{rep:#?}");
    assert_eq!(missing[0].seq, gone["seq"].as_i64());
    assert!(
        missing[0]
            .message
            .contains(&format!("event seq {} is missing", gone["seq"]))
    );
    h
}
both!(tampering_and_deletion_are_named);

async fn truncation_is_caught_by_checkpoints(mut h: H) -> H {
    h.config.audit_checkpoint_every = 4;
    h.boot().await;
    let (server, _agent, token) = setup(&h).await;
    for _ in 0..8 {
        h.introspect((&server.0, &server.1), &token).await;
    }
    assert!(verify(&h).await.ok);
    let all = events(&h).await;
    let n = all.len() as i64;
    assert!(n >= 12, "{n}");
    // Drop the tail after seq 5 and make the head agree: the checkpoints beyond betray it.
    let keep = &all[4];
    let stream = keep["stream"].as_str().unwrap();
    sql(
        &h,
        &format!("DELETE FROM audit_events WHERE seq > 5 AND stream = '{stream}'"),
    )
    .await;
    let rep = verify(&h).await;
    assert_eq!(rep.problems.len(), 1, "{rep:#?}");
    assert_eq!(rep.problems[0].kind, "truncated");
    assert!(
        rep.problems[0]
            .message
            .contains(&format!("head is at seq {n}"))
    );
    sql(
        &h,
        &format!(
            "UPDATE audit_streams SET seq = 5, hash = '{}' WHERE stream = '{stream}'",
            keep["hash"].as_str().unwrap()
        ),
    )
    .await;
    let rep = verify(&h).await;
    assert_eq!(rep.problems.len(), 1, "{rep:#?}");
    assert_eq!(rep.problems[0].kind, "truncated");
    assert!(
        rep.problems[0]
            .message
            .contains("checkpoint was taken at seq"),
        "{rep:#?}"
    );
    // Stop without writing more to the cut stream (a shutdown checkpoint is harmless).
    h
}
both!(truncation_is_caught_by_checkpoints);

/// `n` concurrent token requests by `agent`, each yielding its HTTP status.
fn token_requests(h: &H, agent: &(String, String), n: usize) -> Vec<tokio::task::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            let (http, url, id, secret) = (
                h.http.clone(),
                h.url("/token"),
                agent.0.clone(),
                agent.1.clone(),
            );
            tokio::spawn(async move {
                http.post(url)
                    .basic_auth(id, Some(secret))
                    .form(&[("grant_type", "client_credentials"), ("resource", URI)])
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect()
}

async fn back_pressure_loses_nothing(mut h: H) -> H {
    h.config.audit_queue_capacity = 1;
    h.config.audit_batch_max = 2;
    h.boot().await;
    let (_server, agent, _token) = setup(&h).await;
    let tasks = token_requests(&h, &agent, 150);
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let all = events(&h).await;
    assert_eq!(of_type(&all, "token.issued").len(), 151);
    assert!(verify(&h).await.ok);
    h
}
both!(back_pressure_loses_nothing);

/// Batches of the writer and registry changes (each recorded in its own transaction on
/// another connection) interleave on one stream: the chain stays whole and gap-free.
async fn batches_and_registry_changes_share_one_chain(h: H) -> H {
    let (_server, agent, _token) = setup(&h).await;
    let tasks = token_requests(&h, &agent, 120);
    for i in 0..8 {
        h.server(
            &format!("https://interleaved-{i}.mcp.test/"),
            "prod",
            &["x:read:public"],
        )
        .await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let all = events(&h).await;
    assert_eq!(of_type(&all, "token.issued").len(), 121);
    assert_eq!(of_type(&all, "server.created").len(), 9);
    let stream = &of_type(&all, "token.issued")[0]["stream"];
    let mut seqs: Vec<i64> = all
        .iter()
        .filter(|e| &e["stream"] == stream)
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    seqs.sort_unstable();
    assert!(seqs.len() >= 130, "{}", seqs.len());
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let report = verify(&h).await;
    assert!(report.ok, "{report:?}");
    h
}
both!(batches_and_registry_changes_share_one_chain);

/// A restart writes what a crash left in the journal (here planted in it): events journaled
/// but never inserted are written, events the database already has are not written twice.
/// A graceful stop leaves an empty journal.
async fn restart_writes_the_journal_tail_once(mut h: H) -> H {
    let (_server, agent, _token) = setup(&h).await;
    for t in token_requests(&h, &agent, 40) {
        assert_eq!(t.await.unwrap(), 200);
    }
    let before = of_type(&events(&h).await, "token.issued").len();
    assert_eq!(before, 41);
    // What a crash would leave: an answered event in the journal, not in the database.
    let dir = h.config.data_dir.join("audit-journal");
    let mut lost = mandate::audit::Event::new(
        mandate::audit::kinds::TOKEN_ISSUED,
        h.now(),
        mandate::audit::Actor::new(mandate::audit::ActorKind::Agent, agent.0.clone()),
    );
    lost.subject = Some("jti-of-the-crash".into());
    let row = mandate::audit::Row::from_event(lost, "x", "x", 0);
    // ... and an event the database already has (a crash after its commit, before the
    // journal was tidied).
    let mut committed = row.clone();
    committed.id = of_type(&events(&h).await, "token.issued")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tail = mandate::audit::journal::line(&committed);
    tail.extend(mandate::audit::journal::line(&row));
    std::fs::write(dir.join("0000000000000000.jsonl"), tail).unwrap();
    h.boot().await;
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    assert_eq!(left.len(), 1, "only the new run's segment: {left:?}");
    let all = events(&h).await;
    let issued = of_type(&all, "token.issued");
    assert_eq!(issued.len(), before + 1);
    assert_eq!(
        issued
            .iter()
            .filter(|e| e["subject"] == "jti-of-the-crash")
            .count(),
        1
    );
    let report = verify(&h).await;
    assert!(report.ok, "{report:?}");
    h
}
both!(restart_writes_the_journal_tail_once);

async fn admin_api_filters_and_pages(h: H) -> H {
    let (server, agent, token) = setup(&h).await;
    for _ in 0..4 {
        h.token(&agent.0, &agent.1, &[("resource", URI)])
            .await
            .access_token();
    }
    h.token(&agent.0, "bad", &[]).await;
    h.introspect((&server.0, &server.1), &token).await;
    let admin = h.app().admin().create_admin_token("reader").await.unwrap();
    h.app().refresh_registry(true).await.unwrap();
    let get = |q: String| {
        let req = h
            .http
            .get(h.url(&format!("/admin/v1/audit{q}")))
            .bearer_auth(&admin);
        async move { crate::harness::Resp::from(req.send().await.unwrap()).await }
    };
    // Without a token: 401.
    let r = crate::harness::Resp::from(h.http.get(h.url("/admin/v1/audit")).send().await.unwrap())
        .await;
    assert_eq!(r.status, 401);

    let r = get("?type=token.issued".into()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["events"].as_array().unwrap().len(), 5);
    assert!(r.body["next_cursor"].is_null());
    let r = get(format!("?agent={}&decision=deny", agent.0)).await;
    assert_eq!(
        r.body["events"].as_array().unwrap().len(),
        0,
        "bad secret: not authenticated"
    );
    let r = get("?decision=deny".into()).await;
    assert_eq!(r.body["events"][0]["type"], "token.refused");
    let r = get(format!("?server={}&type=token.introspected", server.0)).await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
    let r = get(format!("?agent={}&type=token.issued&since=1h", agent.0)).await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 5);
    let future = h.now() + 3600;
    let r = get(format!("?since={future}&until={}", future + 60)).await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 0);
    let r = get("?tool=search".into()).await;
    assert_eq!(r.status, 200);

    // Paging: newest first, no duplicates, nothing missed.
    let total = get("?limit=1000".into()).await.body["events"]
        .as_array()
        .unwrap()
        .len();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=3&cursor={c}"),
            None => "?limit=3".into(),
        };
        let r = get(q).await;
        assert_eq!(r.status, 200);
        for e in r.body["events"].as_array().unwrap() {
            seen.push(e["pos"].as_i64().unwrap());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), total);
    assert!(seen.windows(2).all(|w| w[0] > w[1]));

    // Malformed values: 400, never a scan.
    for q in [
        "?decision=maybe",
        "?limit=0",
        "?limit=5000",
        "?limit=abc",
        "?since=yesterday",
        "?since=200&until=100",
        "?type=token.stolen",
        "?cursor=-4",
        "?cursor=x",
        "?agent=",
        "?colour=red",
    ] {
        let r = get(q.into()).await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
        assert_eq!(r.body["error"], "invalid_request", "{q}");
    }
    h
}
both!(admin_api_filters_and_pages);

async fn retention_prunes_whole_segments(mut h: H) -> H {
    h.config.audit_checkpoint_every = 5;
    h.boot().await;
    let (server, _agent, token) = setup(&h).await;
    for _ in 0..8 {
        h.introspect((&server.0, &server.1), &token).await;
    }
    let before = events(&h).await;
    let stream = before[0]["stream"].as_str().unwrap().to_string();
    let node = before[0]["node"].as_str().unwrap().to_string();
    h.clock.advance(40 * 86_400);
    let now = h.now();
    let pruned = mandate::audit::retention::prune_before(
        &h.app().store,
        &stream,
        &node,
        now - 30 * 86_400,
        now,
        5,
    )
    .await
    .unwrap();
    // Checkpoints are written at the end of the batch that crosses a multiple of 5.
    let through = pruned[0].1;
    assert!(through >= 10, "{pruned:?}");
    // More events after the pruned segment, so that deleting one below is a gap.
    for _ in 0..2 {
        h.introspect((&server.0, &server.1), &token).await;
    }
    let after = events(&h).await;
    assert_eq!(after[0]["seq"].as_i64().unwrap(), through + 1);
    let p = of_type(&after, "audit.pruned");
    assert_eq!(p[0]["details"]["through_seq"], through);
    let rep = verify(&h).await;
    assert!(rep.ok, "{rep:#?}");
    assert_eq!(rep.streams[0].pruned_through, Some(through));
    // Deleting a segment without its checkpoint is not pruning: named.
    let first = after[0]["seq"].as_i64().unwrap();
    sql(
        &h,
        &format!("DELETE FROM audit_events WHERE seq = {first} AND stream = '{stream}'"),
    )
    .await;
    assert_eq!(verify(&h).await.problems[0].kind, "missing");
    h
}
both!(retention_prunes_whole_segments);

/// A JSON-lines sink gets every committed event.
async fn jsonl_sink_gets_every_event(mut h: H) -> H {
    let path = h.dir.path().join("audit.jsonl");
    h.config.audit_sink = Some(path.to_str().unwrap().to_string());
    h.boot().await;
    let (_server, agent, _token) = setup(&h).await;
    h.token(&agent.0, "bad", &[]).await;
    h.app().audit.sync().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["token.issued", "token.refused"],
        "batched events only"
    );
    let stored = events(&h).await;
    let last = stored.last().unwrap();
    assert_eq!(lines.last().unwrap(), last);
    h
}
both!(jsonl_sink_gets_every_event);

/// The real binary under load, killed with SIGKILL: after a restart the chain verifies and
/// every request that was answered 200 has its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_answered_event() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_mandate");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let serve = || {
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", &data])
            .env("MANDATE_LOG_LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let issuer = line
            .split("(issuer ")
            .nth(1)
            .unwrap()
            .trim_end()
            .trim_end_matches(')')
            .to_string();
        (child, issuer)
    };
    let (mut child, issuer) = serve();
    let (code, _) = cli(&[
        "servers",
        "add",
        "--uri",
        URI,
        "--name",
        "a",
        "--env",
        "prod",
        "--tool",
        "search:read:internal",
        "--json",
    ]);
    assert_eq!(code, Some(0));
    let (code, out) = cli(&[
        "agents",
        "add",
        "--name",
        "a",
        "--owner",
        "o@example.com",
        "--env",
        "prod",
        "--resource",
        URI,
        "--scope",
        "tools:read",
        "--json",
    ]);
    assert_eq!(code, Some(0));
    let agent: Value = serde_json::from_str(&out).unwrap();
    let (id, secret) = (
        agent["client_id"].as_str().unwrap().to_string(),
        agent["client_secret"].as_str().unwrap().to_string(),
    );
    let http = reqwest::Client::new();
    // Wait until the server has picked the agent up.
    for _ in 0..50 {
        let r = http
            .post(format!("{issuer}/token"))
            .basic_auth(&id, Some(&secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Load from 16 clients; kill -9 in the middle of it.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, url, id, secret, answered) = (
            http.clone(),
            format!("{issuer}/token"),
            id.clone(),
            secret.clone(),
            answered.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let r = http
                    .post(&url)
                    .basic_auth(&id, Some(&secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await;
                let Ok(r) = r else { return };
                if r.status() != 200 {
                    continue;
                }
                let Ok(v) = r.json::<Value>().await else {
                    return;
                };
                let token = v["access_token"].as_str().unwrap().to_string();
                answered.lock().unwrap().push(token);
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 50, "only {} answers", answered.len());

    // Restart on the same data, stop it, verify and export.
    let (mut child, _) = serve();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (code, out) = cli(&["audit", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("no problems"), "{out}");
    let (code, out) = cli(&["audit", "export", "--since", "1h", "--format", "jsonl"]);
    assert_eq!(code, Some(0));
    let issued: std::collections::HashSet<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "token.issued")
        .map(|e| e["subject"].as_str().unwrap().to_string())
        .collect();
    use base64::Engine;
    for token in &answered {
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        let jti = claims["jti"].as_str().unwrap();
        assert!(issued.contains(jti), "answered token {jti} has no event");
    }
}
