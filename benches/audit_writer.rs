//! The audit batch writer on its own: how many events per second it commits when many
//! requests record at once, on the embedded SQLite default and, when
//! `MANDATE_BENCH_DATABASE_URL` names a PostgreSQL database, on a fresh schema there. Each
//! backend runs twice: with the journal (the default: a request returns once its event is
//! journaled) and without (`audit_journal = false`: each request waits for its commit). The
//! time runs until the writer has committed every event.
//!
//!     cargo bench --bench audit_writer
//!     MANDATE_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench audit_writer
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]
use mandate::audit::{Actor, ActorKind, Audit, Decision, Detail, Event, kinds};
use mandate::clock::SystemClock;
use mandate::config::Config;
use mandate::store::Store;
use sea_orm::ConnectionTrait;
use std::sync::Arc;
use std::time::Instant;

/// Requests recording at once (the token benchmark runs 32 connections).
const CONCURRENCY: usize = 32;
const EVENTS: usize = 100_000;

fn event(i: usize) -> Event {
    let mut ev = Event::new(
        kinds::TOKEN_ISSUED,
        1_795_683_000,
        Actor::new(ActorKind::Agent, "agt_0123456789abcdef01234567"),
    )
    .action("issue")
    .decision(Decision::Permit)
    .source("127.0.0.1".parse().unwrap())
    .reason("same-environment")
    .detail_str("grant_type", "client_credentials")
    .detail_str("resource", "https://docs.example.com/mcp")
    .detail("scope", Detail::Str("tools:search tools:fetch".into()))
    .detail("exp", Detail::Int(1_795_683_300));
    ev.subject = Some(format!("{i:032x}"));
    ev.agent = Some("agt_0123456789abcdef01234567".into());
    ev.server = Some("srv_0123456789abcdef01234567".into());
    ev
}

async fn run(label: &str, config: Config, schema: Option<&str>) {
    let store = Store::connect(&config.database_url(), schema)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let metrics = mandate::metrics::Metrics::default();
    let audit = Arc::new(
        Audit::start(&config, schema, Arc::new(SystemClock), &metrics)
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let audit = audit.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..EVENTS).step_by(CONCURRENCY) {
                audit.record(event(i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let answered = started.elapsed().as_secs_f64();
    audit.writer.shutdown().await;
    let secs = started.elapsed().as_secs_f64();
    let n: i64 = store
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            store.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM audit_events",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    assert_eq!(n, EVENTS as i64, "every event committed");
    println!(
        "{label}: all {EVENTS} answered after {answered:.2} s ({:.0} events/s)",
        EVENTS as f64 / answered
    );
    println!(
        "{label}: {EVENTS} events from {CONCURRENCY} concurrent writers in {secs:.2} s: {:.0} events/s committed",
        EVENTS as f64 / secs
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for journal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let label = if journal { "journal" } else { "no journal" };
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            audit_journal: journal,
            ..Config::default()
        };
        run(&format!("sqlite, {label}"), config, None).await;
    }
    let Ok(url) = std::env::var("MANDATE_BENCH_DATABASE_URL") else {
        return;
    };
    for journal in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let label = if journal { "journal" } else { "no journal" };
        let schema = format!("bench_audit_{}_{journal}", std::process::id());
        let admin = Store::connect(&url, None).await.unwrap();
        admin
            .db
            .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let config = Config {
            database_url: Some(url.clone()),
            data_dir: dir.path().to_path_buf(),
            audit_journal: journal,
            ..Config::default()
        };
        run(&format!("postgres, {label}"), config, Some(&schema)).await;
        admin
            .db
            .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    }
}
