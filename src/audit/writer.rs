//! The batch writer for high-rate events (token and introspection decisions).
//!
//! A request pushes its [`Event`] into a bounded queue and waits for the writer's
//! acknowledgement before it answers: the writer takes whatever is queued (up to
//! `audit_batch_max`), chains, hashes and inserts it in one transaction, commits, then wakes
//! every request of the batch. While one batch commits the next one fills (group commit), so
//! the per-request cost on the HTTP thread is building a small struct and two wake-ups.
//! When the queue is full, `record` waits (back-pressure); nothing is dropped.
use super::chain;
use super::event::Event;
use super::sink::Sink;
use crate::clock::Clock;
use crate::store::Store;
use prometheus_client::metrics::counter::Counter;
use sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
use std::sync::Arc;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

/// The audit log could not take the event; the request must fail (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable")]
pub struct AuditUnavailable;

type Ack = oneshot::Sender<Result<(), AuditUnavailable>>;

/// Settings of the writer, from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub stream: String,
    pub node: String,
    pub batch_max: usize,
    pub checkpoint_every: i64,
    pub checkpoint_interval_secs: i64,
    pub flush_interval_ms: u64,
    /// Wait for the database to flush to disk before acknowledging (PostgreSQL
    /// `synchronous_commit`, SQLite `synchronous=FULL`).
    pub sync_commit: bool,
    pub retention_secs: i64,
}

/// Counters the writer keeps (exported as `mandate_audit_*` metrics).
#[derive(Debug, Default, Clone)]
pub struct WriterStats {
    pub events: Counter,
    pub batches: Counter,
    pub failures: Counter,
}

/// The sending side, held by `App`.
#[derive(Debug)]
pub struct Writer {
    tx: mpsc::Sender<(Event, Ack)>,
    stop: Arc<tokio::sync::Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<WriterStats>,
}

impl Writer {
    /// Starts the writer task on the current runtime.
    pub fn start(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: WriterSettings,
        capacity: usize,
        sink: Option<Sink>,
        stats: WriterStats,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stop = Arc::new(tokio::sync::Notify::new());
        let stats = Arc::new(stats);
        let task = tokio::spawn(run(
            store,
            clock,
            settings,
            rx,
            stop.clone(),
            sink,
            stats.clone(),
        ));
        Self {
            tx,
            stop,
            task: Mutex::new(Some(task)),
            stats,
        }
    }

    /// Queues `event` and waits until it is committed. Waits while the queue is full.
    pub async fn record(&self, event: Event) -> Result<(), AuditUnavailable> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((event, ack))
            .await
            .map_err(|_| AuditUnavailable)?;
        done.await.map_err(|_| AuditUnavailable)?
    }

    /// Writes what is queued, then stops the writer (graceful shutdown).
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let task = self.task.lock().await.take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

async fn run(
    store: Store,
    clock: Arc<dyn Clock>,
    s: WriterSettings,
    mut rx: mpsc::Receiver<(Event, Ack)>,
    stop: Arc<tokio::sync::Notify>,
    mut sink: Option<Sink>,
    stats: Arc<WriterStats>,
) {
    let mut timer = tokio::time::interval(std::time::Duration::from_millis(
        s.flush_interval_ms.max(10),
    ));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = clock.now();
    let mut last_prune = 0i64;
    let mut batch: Vec<(Event, Ack)> = Vec::with_capacity(s.batch_max);
    loop {
        let mut stopping = false;
        tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, s.batch_max.max(1)) => {
                if n == 0 {
                    stopping = true;
                }
            }
            () = stop.notified() => stopping = true,
            _ = timer.tick() => {
                let now = clock.now();
                if now - last_checkpoint >= s.checkpoint_interval_secs {
                    last_checkpoint = now;
                    if let Err(e) = chain::checkpoint_if_moved(&store.db, &s.stream, now).await {
                        tracing::warn!(error = %e, "audit checkpoint failed");
                    }
                }
                if s.retention_secs > 0 && now.saturating_sub(last_prune) >= 3600 {
                    last_prune = now;
                    if let Err(e) = super::retention::prune(&store, &s, now).await {
                        tracing::warn!(error = %e, "audit retention failed");
                    }
                }
                if let Some(sink) = &mut sink {
                    sink.flush();
                }
                continue;
            }
        }
        if stopping {
            // Refuse new events and drain what is already queued.
            rx.close();
            while rx.recv_many(&mut batch, s.batch_max.max(1)).await > 0 {
                flush(&store, &clock, &s, &mut batch, &mut sink, &stats).await;
            }
            flush(&store, &clock, &s, &mut batch, &mut sink, &stats).await;
            let _ = chain::checkpoint_if_moved(&store.db, &s.stream, clock.now()).await;
            if let Some(sink) = &mut sink {
                sink.flush();
            }
            return;
        }
        flush(&store, &clock, &s, &mut batch, &mut sink, &stats).await;
    }
}

async fn flush(
    store: &Store,
    clock: &Arc<dyn Clock>,
    s: &WriterSettings,
    batch: &mut Vec<(Event, Ack)>,
    sink: &mut Option<Sink>,
    stats: &WriterStats,
) {
    if batch.is_empty() {
        return;
    }
    let (events, acks): (Vec<Event>, Vec<Ack>) = std::mem::take(batch).into_iter().unzip();
    let n = events.len() as u64;
    let now = clock.now();
    let result = write_batch(store, s, events, now).await;
    match result {
        Ok(rows) => {
            stats.events.inc_by(n);
            stats.batches.inc();
            for a in acks {
                let _ = a.send(Ok(()));
            }
            if let Some(sink) = sink {
                sink.write(&rows);
            }
        }
        Err(e) => {
            stats.failures.inc();
            tracing::error!(error = %e, events = n, "audit batch not written: requests fail");
            for a in acks {
                let _ = a.send(Err(AuditUnavailable));
            }
        }
    }
}

async fn write_batch(
    store: &Store,
    s: &WriterSettings,
    events: Vec<Event>,
    now: i64,
) -> Result<Vec<super::event::Row>, sea_orm::DbErr> {
    let db = &store.db;
    let tx = match db.get_database_backend() {
        DbBackend::Sqlite => {
            db.begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?
        }
        _ => db.begin().await?,
    };
    if !s.sync_commit && db.get_database_backend() == DbBackend::Postgres {
        // Durable once PostgreSQL has it (a Mandate crash loses nothing acknowledged); only a
        // crash of PostgreSQL itself may lose the last few hundred milliseconds.
        tx.execute_unprepared("SET LOCAL synchronous_commit = off")
            .await?;
    }
    let head = chain::lock_head(&tx, &s.stream, now).await?;
    let rows = chain::seal(&head, &s.stream, &s.node, events);
    chain::write_rows(&tx, &s.stream, &rows, now, s.checkpoint_every, head.seq).await?;
    tx.commit().await?;
    Ok(rows)
}
