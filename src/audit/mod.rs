//! The tamper-evident audit log.
//!
//! - [`event`]: the event model ([`Event`], built by requests) and its stored, hash-chained
//!   form ([`Row`]).
//! - [`chain`]: appending to a writer stream's chain inside a transaction; checkpoints.
//! - [`writer`]: the batch writer for high-rate events (bounded queue, group commit,
//!   back-pressure, flush on shutdown).
//! - [`record`]: the events Mandate writes for requests (token, introspection, revocation).
//! - [`verify`], [`query`], [`retention`], [`sink`]: reading, checking, pruning, SIEM output.
//!
//! Adding an event type: add a [`Kind`] to [`event::kinds`] (and to `kinds::ALL`), build an
//! [`Event`] where the decision or change happens, and write it either with
//! [`Trail::record`] inside the transaction of the state change it records, or with
//! [`Audit::record`] (batched; durable, journaled or committed, when it returns) for
//! decisions that change no state. Never put a token, secret or assertion in an event: a `jti` or
//! [`crate::secrets::fingerprint`] instead.
pub mod chain;
pub mod event;
pub mod journal;
mod lite;
pub mod query;
pub mod record;
pub mod retention;
pub mod sink;
pub mod verify;
pub mod writer;

pub use event::{Actor, ActorKind, Decision, Detail, Event, Kind, Row, kinds};
pub use record::Seen;
pub use writer::{AuditUnavailable, Writer, WriterSettings};

use crate::clock::Clock;
use crate::config::Config;
use crate::store::StoreError;
use sea_orm::{DatabaseTransaction, DbErr};
use std::sync::Arc;

/// This node's name: `audit_node`, else the host name, else `mandate`.
pub fn node_name(config: &Config) -> String {
    if let Some(n) = config.audit_node.as_deref().filter(|n| !n.is_empty()) {
        return n.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mandate".into())
}

/// Who makes a registry change, and the stream that records it. Registry writes record their
/// event in their own transaction through this.
#[derive(Debug, Clone)]
pub struct Trail {
    pub actor: Actor,
    pub node: String,
    pub checkpoint_every: i64,
}

impl Trail {
    pub fn new(config: &Config, actor: Actor) -> Self {
        Self {
            actor,
            node: node_name(config),
            checkpoint_every: config.audit_checkpoint_every,
        }
    }

    /// A change made at the command line.
    pub fn cli(config: &Config) -> Self {
        Self::new(config, Actor::cli())
    }

    /// Appends `event` to this node's stream inside `tx`: it commits or rolls back with the
    /// change it records.
    pub async fn record(
        &self,
        tx: &DatabaseTransaction,
        now: i64,
        event: Event,
    ) -> Result<(), DbErr> {
        chain::append(
            tx,
            &self.node,
            &self.node,
            vec![event],
            now,
            self.checkpoint_every,
        )
        .await
        .map(|_| ())
    }

    /// A new event by this trail's actor.
    pub fn event(&self, kind: Kind, now: i64) -> Event {
        Event::new(kind, now, self.actor.clone())
    }
}

/// The audit log of a running node: its stream name and its batch writer.
#[derive(Debug)]
pub struct Audit {
    pub node: String,
    pub checkpoint_every: i64,
    pub writer: Writer,
}

impl Audit {
    /// Starts the batch writer (its own thread, runtime and database connection).
    pub async fn start(
        config: &Config,
        schema: Option<&str>,
        clock: Arc<dyn Clock>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Self, StoreError> {
        let node = node_name(config);
        let sink =
            match config.audit_sink.as_deref().filter(|s| !s.is_empty()) {
                Some(target) => Some(sink::Sink::open(target).map_err(|e| {
                    StoreError::Db(DbErr::Custom(format!("audit sink {target}: {e}")))
                })?),
                None => None,
            };
        let settings = WriterSettings {
            stream: node.clone(),
            node: node.clone(),
            batch_max: config.audit_batch_max.max(1),
            checkpoint_every: config.audit_checkpoint_every,
            checkpoint_interval_secs: config.audit_checkpoint_interval_secs.max(1),
            flush_interval_ms: config.audit_flush_interval_ms,
            sync_commit: config.audit_sync_commit,
            retention_secs: config.audit_retention_days.saturating_mul(86_400),
            linger_us: config.audit_linger_us.min(100_000),
            journal: (config.audit_journal && !config.audit_sync_commit)
                .then(|| config.data_dir.join("audit-journal")),
        };
        let target = writer::Target {
            url: config.database_url(),
            schema: schema.map(str::to_string),
        };
        let writer = Writer::start(
            target,
            clock,
            settings,
            config.audit_queue_capacity,
            sink,
            writer::WriterStats {
                events: metrics.audit_events.clone(),
                batches: metrics.audit_batches.clone(),
                failures: metrics.audit_failures.clone(),
            },
        )
        .await?;
        Ok(Self {
            node,
            checkpoint_every: config.audit_checkpoint_every,
            writer,
        })
    }

    /// A trail for a change made by `actor` on this node.
    pub fn trail(&self, actor: Actor) -> Trail {
        Trail {
            actor,
            node: self.node.clone(),
            checkpoint_every: self.checkpoint_every,
        }
    }

    /// Records a high-rate event: durable (journaled or committed) once this returns Ok.
    pub async fn record(&self, event: Event) -> Result<(), AuditUnavailable> {
        self.writer.record(event).await
    }

    /// Waits until every event recorded on this node so far is in the database (for reads).
    pub async fn sync(&self) {
        self.writer.sync().await;
    }

    /// Queues several events (one request's) and waits until all are committed.
    pub async fn record_all(&self, events: Vec<Event>) -> Result<(), AuditUnavailable> {
        self.writer.record_all(events).await
    }
}
