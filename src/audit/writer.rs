//! The batch writer for high-rate events (token and introspection decisions).
//!
//! By default a request makes its event durable itself, by appending it to this node's
//! [`journal`](super::journal) with one write, queues it for the writer and answers; the
//! writer takes whatever is queued (up to `audit_batch_max`, every few milliseconds), chains,
//! hashes and inserts it in one transaction. No request waits for the writer's thread or the
//! database. With `audit_sync_commit` (or `audit_journal = false`) there is no journal: a
//! request waits until its event is committed (group commit: while one batch commits the next
//! one fills). When the queue is full, `record` waits (back-pressure); nothing is dropped.
//! While the database refuses writes, the writer keeps the journaled events and retries them
//! on its timer, and requests are refused (503): the log fails closed, as without a journal.
//!
//! The writer is its own thread with its own single-threaded runtime and its own database
//! connection, so it depends on no caller's runtime. On SQLite it writes through
//! [`super::lite`] on that thread. On PostgreSQL it keeps its stream head in memory and
//! writes a batch in one round trip: a compare-and-set of the head and the insert, guarded by
//! it, in a single statement. When another writer moved the head (a registry change recorded
//! in its own transaction, another process with the same node name), it falls back to
//! locking and re-reading the head and re-chains the batch.
use super::chain::{self, Head};
use super::event::{Event, Row};
use super::journal::{self, Journal, Leftover, Segment};
use super::lite::Lite;
use super::sink::Sink;
use crate::clock::Clock;
use crate::store::Store;
use prometheus_client::metrics::counter::Counter;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, TransactionTrait};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{Mutex, mpsc, oneshot};

/// The audit log could not take the event; the request must fail (fail closed).
#[derive(Debug, thiserror::Error)]
#[error("audit log unavailable")]
pub struct AuditUnavailable;

type Ack = oneshot::Sender<Result<(), AuditUnavailable>>;

/// What the writer receives: an event (journaled, or waited for) or a request to be told
/// once everything queued before it is committed.
struct Item {
    row: Option<Row>,
    ack: Option<Ack>,
    /// The journal segment holding `row`, kept until the row is committed.
    seg: Option<Arc<Segment>>,
}

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
    /// Microseconds the writer waits for more events when a batch is small.
    pub linger_us: u64,
    /// The journal's directory; `None`: acknowledge after commit.
    pub journal: Option<PathBuf>,
}

/// With a journal, the longest a request waits for room in a full queue before it is refused.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// With a journal, the writer lets events gather this long between transactions.
const JOURNAL_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Batches of 2 up to this many events wait `linger_us` for more.
const LINGER_BELOW: usize = 64;

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
    tx: mpsc::Sender<Item>,
    stop: Arc<tokio::sync::Notify>,
    done: Mutex<Option<oneshot::Receiver<()>>>,
    stream: String,
    node: String,
    /// Set when the writer took the journal (it may not: another writer holds it).
    journal: Option<Arc<Journal>>,
    /// The last write to the database failed (the writer is retrying).
    failing: Arc<AtomicBool>,
}

/// How the writer reaches the database (connected on the writer's own runtime).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub schema: Option<String>,
}

impl Writer {
    /// Starts the writer thread; returns once its database connection is up.
    pub async fn start(
        target: Target,
        clock: Arc<dyn Clock>,
        settings: WriterSettings,
        capacity: usize,
        sink: Option<Sink>,
        stats: WriterStats,
    ) -> Result<Self, DbErr> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stop = Arc::new(tokio::sync::Notify::new());
        let failing = Arc::new(AtomicBool::new(false));
        let (stream, node) = (settings.stream.clone(), settings.node.clone());
        let failing2 = failing.clone();
        // Ready: the journal the writer took, if any.
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Option<Arc<Journal>>, DbErr>>();
        let (done_tx, done_rx) = oneshot::channel();
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("mandate-audit".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(DbErr::Custom(e.to_string())));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut sink = sink;
                    let store = match connect(&target, settings.sync_commit).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    // SQLite: the connection batches go through (the writer does not start
                    // without it).
                    let lite = match store.db.get_database_backend() {
                        DbBackend::Sqlite => match Lite::open(&target.url, settings.sync_commit) {
                            Ok(l) => Some(l),
                            Err(e) => {
                                let _ =
                                    ready_tx.send(Err(DbErr::Custom(format!("audit writer: {e}"))));
                                return;
                            }
                        },
                        _ => None,
                    };
                    let mut w = State {
                        store,
                        lite,
                        pg_fast: pg_fast_sql().into(),
                        s: settings,
                        head: None,
                        stats,
                        failing: failing2,
                        journal: None,
                        replaced: Vec::new(),
                        retained: Vec::new(),
                    };
                    let _lock = match w.take_journal(&clock, &mut sink).await {
                        Ok(lock) => lock,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(w.journal.clone()));
                    run(w, clock, rx, stop2, sink).await;
                });
                let _ = done_tx.send(());
            })
            .map_err(|e| DbErr::Custom(format!("cannot start the audit writer: {e}")))?;
        let journal = ready_rx
            .await
            .map_err(|_| DbErr::Custom("the audit writer did not start".into()))??;
        Ok(Self {
            tx,
            stop,
            done: Mutex::new(Some(done_rx)),
            stream,
            node,
            journal,
            failing,
        })
    }

    /// Records `event`: durable once this returns Ok (journaled, or committed when there is
    /// no journal). Waits while the queue is full.
    pub async fn record(&self, event: Event) -> Result<(), AuditUnavailable> {
        match &self.journal {
            Some(journal) => self.journaled(journal, event).await,
            None => self.committed(vec![event]).await,
        }
    }

    /// Records `events` (one request's) in order; durable once this returns Ok.
    pub async fn record_all(&self, events: Vec<Event>) -> Result<(), AuditUnavailable> {
        let Some(journal) = &self.journal else {
            return self.committed(events).await;
        };
        for e in events {
            self.journaled(journal, e).await?;
        }
        Ok(())
    }

    /// Appends `event` to the journal and queues it for the writer.
    async fn journaled(&self, journal: &Journal, event: Event) -> Result<(), AuditUnavailable> {
        // Fail closed while the database refuses writes (the writer retries what it holds).
        if self.failing.load(Ordering::Relaxed) {
            return Err(AuditUnavailable);
        }
        // A place in the queue first: an event is journaled only if it will be written. A
        // full queue is back-pressure; one that stays full means the database hangs.
        let permit = match self.tx.try_reserve() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(())) => {
                tokio::time::timeout(QUEUE_WAIT, self.tx.reserve())
                    .await
                    .map_err(|_| AuditUnavailable)?
                    .map_err(|_| AuditUnavailable)?
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(AuditUnavailable),
        };
        let row = Row::from_event(event, &self.stream, &self.node, 0);
        let seg = journal.append(&journal::line(&row)).map_err(|e| {
            tracing::error!(error = %e, "audit journal write failed: request refused");
            AuditUnavailable
        })?;
        permit.send(Item {
            row: Some(row),
            ack: None,
            seg: Some(seg),
        });
        Ok(())
    }

    /// Queues `events` in order and waits until every one is committed (no journal).
    async fn committed(&self, events: Vec<Event>) -> Result<(), AuditUnavailable> {
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let (ack, done) = oneshot::channel();
            self.send(Item {
                row: Some(Row::from_event(event, &self.stream, &self.node, 0)),
                ack: Some(ack),
                seg: None,
            })
            .await?;
            acks.push(done);
        }
        for done in acks {
            done.await.map_err(|_| AuditUnavailable)??;
        }
        Ok(())
    }

    async fn send(&self, item: Item) -> Result<(), AuditUnavailable> {
        self.tx.send(item).await.map_err(|_| AuditUnavailable)
    }

    /// Waits (up to 30 s) until every event recorded before the call is in the database, so a
    /// read on this node sees them (the admin API and tests read after it).
    pub async fn sync(&self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let (ack, done) = oneshot::channel();
                let item = Item {
                    row: None,
                    ack: Some(ack),
                    seg: None,
                };
                if self.send(item).await.is_err() {
                    return;
                }
                match done.await {
                    Ok(Ok(())) | Err(_) => return,
                    // The batch it came with failed: its events are kept and retried first.
                    Ok(Err(AuditUnavailable)) => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        })
        .await;
    }

    /// Writes what is queued, then stops the writer (graceful shutdown).
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let done = self.done.lock().await.take();
        if let Some(d) = done {
            let _ = d.await;
        }
    }
}

/// The writer's own connection. SQLite: `synchronous=NORMAL` unless `sync`, so a commit
/// survives a crash of Mandate (not necessarily of the machine) without an fsync; PostgreSQL:
/// `synchronous_commit=off` unless `sync`, so a commit survives a crash of Mandate (a crash of
/// PostgreSQL itself may lose the last few hundred milliseconds).
async fn connect(t: &Target, sync: bool) -> Result<Store, DbErr> {
    use std::time::Duration;
    let mut opts = sea_orm::ConnectOptions::new(t.url.clone());
    opts.sqlx_logging(false)
        .max_connections(1)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(None)
        .max_lifetime(None);
    if let Some(schema) = &t.schema {
        opts.set_schema_search_path(schema.clone());
    }
    if t.url.starts_with("sqlite:") {
        opts.map_sqlx_sqlite_opts(move |o| {
            // Batches go through `Lite`; this connection does the rare rest (checkpoints of
            // the chain, retention).
            o.busy_timeout(Duration::from_secs(5)).synchronous(if sync {
                sqlx::sqlite::SqliteSynchronous::Full
            } else {
                sqlx::sqlite::SqliteSynchronous::Normal
            })
        });
    } else {
        opts.map_sqlx_postgres_opts(move |o| {
            let o = if sync {
                o
            } else {
                o.options([("synchronous_commit", "off")])
            };
            plain_on_loopback(o)
        });
    }
    let db = sea_orm::Database::connect(opts).await?;
    db.execute_unprepared("SELECT 1").await?;
    Ok(Store { db })
}

/// No TLS for the writer's connection to a PostgreSQL server on this machine when TLS is only
/// preferred (`sslmode=prefer`, the default), not required.
///
/// sqlx's rustls socket sends each 16 KiB TLS record with its own `send` and never sets
/// `TCP_NODELAY`. On loopback the segment size (64 KiB) is larger than a record, so the
/// second record of a batch larger than one record waits in Nagle's algorithm for the
/// server's delayed acknowledgement (40 ms): measured, every batch of more than ~30 events
/// took ~42 ms and the writer committed ~5,000 events/s instead of ~30,000. Over a real
/// network (segments of ~1.4 KiB) this does not happen, and on loopback the encryption
/// protects nothing (only the kernel sees the traffic); `prefer` already accepts a plain
/// connection whenever the server offers no TLS. `require` and `verify-*` are kept as set.
fn plain_on_loopback(o: sqlx::postgres::PgConnectOptions) -> sqlx::postgres::PgConnectOptions {
    use sqlx::postgres::PgSslMode;
    if matches!(o.get_ssl_mode(), PgSslMode::Prefer)
        && o.get_socket().is_none()
        && is_loopback(o.get_host())
    {
        o.ssl_mode(PgSslMode::Disable)
    } else {
        o
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn run(
    mut w: State,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::Receiver<Item>,
    stop: Arc<tokio::sync::Notify>,
    mut sink: Option<Sink>,
) {
    let mut timer = tokio::time::interval(std::time::Duration::from_millis(
        w.s.flush_interval_ms.max(10),
    ));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = clock.now();
    let mut last_prune = 0i64;
    let max = w.s.batch_max.max(1);
    let linger = w.s.linger_us;
    let mut batch: Vec<Item> = Vec::with_capacity(max);
    loop {
        let mut stopping = false;
        if !w.retained.is_empty() {
            // The database refused the last batch: retry it on the timer's next tick, taking
            // nothing new meanwhile (the queue fills up, then requests are refused).
            tokio::select! {
                () = stop.notified() => stopping = true,
                _ = timer.tick() => {}
            }
        } else {
            // Not `biased`: under a steady stream of events the timer still gets its turn.
            tokio::select! {
                n = rx.recv_many(&mut batch, max) => {
                    if n == 0 {
                        stopping = true;
                    }
                }
                () = stop.notified() => stopping = true,
                _ = timer.tick() => {
                    let now = clock.now();
                    if now - last_checkpoint >= w.s.checkpoint_interval_secs {
                        last_checkpoint = now;
                        if let Err(e) = chain::checkpoint_if_moved(&w.store.db, &w.s.stream, now).await {
                            tracing::warn!(error = %e, "audit checkpoint failed");
                        }
                    }
                    if w.s.retention_secs > 0 && now.saturating_sub(last_prune) >= 3600 {
                        last_prune = now;
                        w.head = None; // pruning appends to the stream
                        if let Err(e) = super::retention::prune(&w.store, &w.s, now).await {
                            tracing::warn!(error = %e, "audit retention failed");
                        }
                    }
                    if let Some(sink) = &mut sink {
                        sink.flush();
                    }
                    continue;
                }
            }
        }
        let waited_for = batch.iter().any(|i| i.ack.is_some());
        let pause = if stopping || batch.is_empty() || batch.len() >= max {
            None
        } else if !waited_for {
            // Journaled events: nobody waits, so gather a larger transaction.
            Some(JOURNAL_LINGER)
        } else if linger > 0 && (2..LINGER_BELOW).contains(&batch.len()) {
            // Requests waiting, and arriving together (more than one queued): group more
            // events per commit. Fewer, larger commits cost less CPU than this short wait adds
            // to the latency (the writer has its own thread to block). A lone event commits
            // at once.
            Some(std::time::Duration::from_micros(linger))
        } else {
            None
        };
        if let Some(pause) = pause {
            std::thread::sleep(pause);
            let room = max - batch.len();
            for _ in 0..room {
                match rx.try_recv() {
                    Ok(x) => batch.push(x),
                    Err(_) => break,
                }
            }
        }
        if stopping {
            // Refuse new events and write what is already queued.
            rx.close();
            while rx.recv_many(&mut batch, max).await > 0 {
                w.flush(&clock, &mut batch, &mut sink).await;
            }
            w.flush(&clock, &mut batch, &mut sink).await;
            if w.retained.is_empty() {
                // Every event is committed and the queue is closed (no request holds a place
                // in it, so none can append): the journal is empty.
                w.tidy_journal();
                if let Some(j) = &w.journal {
                    j.remove_current();
                }
            }
            let _ = chain::checkpoint_if_moved(&w.store.db, &w.s.stream, clock.now()).await;
            if let Some(sink) = &mut sink {
                sink.flush();
            }
            return;
        }
        w.flush(&clock, &mut batch, &mut sink).await;
    }
}

struct State {
    /// Journaled rows the database refused, with their segments: retried first.
    retained: Vec<(Row, Arc<Segment>)>,
    /// This writer's journal, and its replaced segments not yet removed.
    journal: Option<Arc<Journal>>,
    replaced: Vec<Arc<Segment>>,
    failing: Arc<AtomicBool>,
    store: Store,
    /// SQLite: the connection batches are written through (`None` on PostgreSQL).
    lite: Option<Lite>,
    /// PostgreSQL: the fast path's statement ([`pg_fast_sql`]).
    pg_fast: std::sync::Arc<str>,
    s: WriterSettings,
    /// The stream head as this writer last wrote it; `None` until read.
    head: Option<Head>,
    stats: WriterStats,
}

impl State {
    async fn flush(
        &mut self,
        clock: &Arc<dyn Clock>,
        batch: &mut Vec<Item>,
        sink: &mut Option<Sink>,
    ) {
        if batch.is_empty() && self.retained.is_empty() {
            return;
        }
        let mut acks = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len() + self.retained.len());
        let mut segs = Vec::with_capacity(rows.capacity());
        for (r, seg) in self.retained.drain(..) {
            rows.push(r);
            segs.push(Some(seg));
        }
        for item in batch.drain(..) {
            if let Some(r) = item.row {
                rows.push(r);
                segs.push(item.seg);
            }
            if let Some(a) = item.ack {
                acks.push(a);
            }
        }
        let n = rows.len() as u64;
        let result = if rows.is_empty() {
            Ok(())
        } else {
            self.write(&mut rows, clock.now()).await
        };
        match result {
            Ok(()) => {
                self.failing.store(false, Ordering::Relaxed);
                if n > 0 {
                    self.stats.events.inc_by(n);
                    self.stats.batches.inc();
                }
                // The SIEM copy first: an answered request's event is in the sink too.
                if let Some(sink) = sink {
                    sink.write(&rows);
                }
                for a in acks {
                    let _ = a.send(Ok(()));
                }
                drop(segs);
                self.tidy_journal();
            }
            Err(e) => {
                self.head = None;
                self.failing.store(true, Ordering::Relaxed);
                self.stats.failures.inc();
                tracing::error!(error = %e, events = n, "audit batch not written: journaled events are kept and retried, waiting requests fail");
                for a in acks {
                    let _ = a.send(Err(AuditUnavailable));
                }
                self.retained = rows
                    .into_iter()
                    .zip(segs)
                    .filter_map(|(r, seg)| Some((r, seg?)))
                    .collect();
            }
        }
    }

    /// After a commit: starts a new journal segment when the current one is full, and removes
    /// replaced segments whose events are all committed (no queued event holds them).
    fn tidy_journal(&mut self) {
        let Some(j) = &self.journal else { return };
        match j.rotate_if_full() {
            Ok(Some(old)) => self.replaced.push(old),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "audit journal: no new segment"),
        }
        self.replaced.retain(|seg| {
            if Arc::strong_count(seg) == 1 {
                seg.remove();
                false
            } else {
                true
            }
        });
    }

    /// Takes this node's journal (when configured and no other writer holds it) and writes
    /// what a previous run left in it, skipping events the database already has. Returns
    /// the lock, held while the writer runs.
    async fn take_journal(
        &mut self,
        clock: &Arc<dyn Clock>,
        sink: &mut Option<Sink>,
    ) -> Result<Option<std::fs::File>, DbErr> {
        let Some(dir) = self.s.journal.clone() else {
            return Ok(None);
        };
        let io = |e: std::io::Error| DbErr::Custom(format!("audit journal {}: {e}", dir.display()));
        let Some(lock) = Journal::lock(&dir).map_err(io)? else {
            tracing::warn!(dir = %dir.display(), "audit journal held by another writer of this node: events are acknowledged after commit");
            return Ok(None);
        };
        let (j, left) = Journal::open(&dir).map_err(io)?;
        self.replay(left, clock, sink).await?;
        self.journal = Some(Arc::new(j));
        Ok(Some(lock))
    }

    async fn replay(
        &mut self,
        left: Leftover,
        clock: &Arc<dyn Clock>,
        sink: &mut Option<Sink>,
    ) -> Result<(), DbErr> {
        if let Some(since) = left.rows.iter().map(|r| r.time).min() {
            let b = self.store.db.get_database_backend();
            let known: std::collections::HashSet<String> = self
                .store
                .db
                .query_all_raw(chain::stmt(
                    b,
                    "SELECT id FROM audit_events WHERE time >= ?",
                    vec![(since - 1).into()],
                ))
                .await?
                .into_iter()
                .filter_map(|r| r.try_get::<String>("", "id").ok())
                .collect();
            let mut rows: Vec<Row> = left
                .rows
                .into_iter()
                .filter(|r| !known.contains(&r.id))
                .map(|mut r| {
                    r.stream.clone_from(&self.s.stream);
                    r
                })
                .collect();
            for chunk in rows.chunks_mut(self.s.batch_max.max(1)) {
                self.write(chunk, clock.now()).await?;
                if let Some(sink) = sink {
                    sink.write(chunk);
                }
            }
            if !rows.is_empty() {
                tracing::warn!(
                    events = rows.len(),
                    "audit journal: events of the previous run written (it stopped before writing them)"
                );
            }
        }
        for f in left.files {
            if let Err(e) = std::fs::remove_file(&f) {
                tracing::warn!(error = %e, path = %f.display(), "audit journal segment not removed");
            }
        }
        Ok(())
    }

    async fn write(&mut self, rows: &mut [Row], now: i64) -> Result<(), DbErr> {
        if self.store.db.get_database_backend() == DbBackend::Sqlite {
            let lite = self
                .lite
                .as_mut()
                .ok_or_else(|| DbErr::Custom("the audit writer has no SQLite connection".into()))?;
            lite.write(&self.s.stream, rows, now, self.s.checkpoint_every)
                .map_err(|e| DbErr::Custom(format!("audit write: {e}")))?;
            return Ok(());
        }
        if let Some(h) = self.head.clone() {
            let new = chain::seal_rows(&h, rows);
            if self.fast(&h, &new, rows, now).await? {
                self.after(&h, &new, now).await;
                return Ok(());
            }
        }
        // Slow path: lock and read the head, re-chain, write.
        let tx = self.store.db.begin().await?;
        let head = chain::lock_head(&tx, &self.s.stream, now).await?;
        let new = chain::seal_rows(&head, rows);
        chain::write_rows(
            &tx,
            &self.s.stream,
            rows,
            now,
            self.s.checkpoint_every,
            head.seq,
        )
        .await?;
        tx.commit().await?;
        self.head = Some(new);
        Ok(())
    }

    /// After a fast write: remember the head, checkpoint when a boundary was crossed.
    async fn after(&mut self, old: &Head, new: &Head, now: i64) {
        let every = self.s.checkpoint_every;
        if every > 0
            && new.seq / every > old.seq / every
            && let Err(e) =
                chain::insert_checkpoint(&self.store.db, &self.s.stream, new.seq, &new.hash, now)
                    .await
        {
            tracing::warn!(error = %e, "audit checkpoint failed");
        }
        self.head = Some(new.clone());
    }

    /// PostgreSQL, one round trip: move the head from `old` to `new` if nobody else did, and
    /// insert the rows only if that worked. False when the head had moved (nothing written).
    /// One prepared statement for any batch size: the rows go as one array per column.
    async fn fast(&self, old: &Head, new: &Head, rows: &[Row], now: i64) -> Result<bool, DbErr> {
        if self.store.db.get_database_backend() != DbBackend::Postgres {
            return Ok(false);
        }
        fn col<'a>(rows: &'a [Row], f: impl Fn(&'a Row) -> &'a str) -> Vec<&'a str> {
            rows.iter().map(f).collect()
        }
        fn opt<'a>(
            rows: &'a [Row],
            f: impl Fn(&'a Row) -> &'a Option<String>,
        ) -> Vec<Option<&'a str>> {
            rows.iter().map(|r| f(r).as_deref()).collect()
        }
        // Built from constants only (`pg_fast_sql`): no input reaches the SQL text.
        let r = sqlx::query(sqlx::AssertSqlSafe(self.pg_fast.clone()))
            .bind(new.seq)
            .bind(&new.hash)
            .bind(now)
            .bind(&self.s.stream)
            .bind(old.seq)
            .bind(&old.hash)
            .bind(col(rows, |r| &r.id))
            .bind(col(rows, |r| &r.stream))
            .bind(rows.iter().map(|r| r.seq).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.time).collect::<Vec<i64>>())
            .bind(col(rows, |r| &r.node))
            .bind(col(rows, |r| &r.kind))
            .bind(col(rows, |r| &r.actor_kind))
            .bind(col(rows, |r| &r.actor_id))
            .bind(opt(rows, |r| &r.subject))
            .bind(opt(rows, |r| &r.agent))
            .bind(opt(rows, |r| &r.server))
            .bind(opt(rows, |r| &r.tool))
            .bind(opt(rows, |r| &r.action))
            .bind(opt(rows, |r| &r.decision))
            .bind(col(rows, |r| &r.reasons))
            .bind(opt(rows, |r| &r.request_id))
            .bind(opt(rows, |r| &r.source))
            .bind(col(rows, |r| &r.details))
            .bind(col(rows, |r| &r.prev_hash))
            .bind(col(rows, |r| &r.hash))
            .execute(self.store.db.get_postgres_connection_pool())
            .await
            .map_err(|e| DbErr::Custom(format!("audit write: {e}")))?;
        Ok(r.rows_affected() == rows.len() as u64)
    }
}

/// The PostgreSQL fast path's statement: the head's compare-and-set, and the insert of
/// `UNNEST`ed column arrays guarded by it (columns in [`chain::COLUMNS`] order).
fn pg_fast_sql() -> String {
    let arrays: Vec<String> = chain::COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = if matches!(*c, "seq" | "time") {
                "int8"
            } else {
                "text"
            };
            format!("${}::{ty}[]", i + 7)
        })
        .collect();
    format!(
        "WITH h AS (UPDATE audit_streams SET seq = $1, hash = $2, updated_at = $3 \
         WHERE stream = $4 AND seq = $5 AND hash = $6 RETURNING 1) \
         INSERT INTO audit_events ({}) SELECT * FROM UNNEST({}) WHERE EXISTS (SELECT 1 FROM h)",
        chain::COLUMNS.join(", "),
        arrays.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Statement;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "db.example.com",
            "::2",
            "localhost.example.com",
            "",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn tls_kept_unless_only_preferred_on_loopback() {
        use sqlx::postgres::{PgConnectOptions, PgSslMode};
        let mode = |url: &str| {
            let o: PgConnectOptions = url.parse().unwrap();
            plain_on_loopback(o).get_ssl_mode()
        };
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db?sslmode=prefer"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://u@localhost/db?sslmode=prefer"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://u@127.0.0.1/db?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@db.example.com/db?sslmode=prefer"),
            PgSslMode::Prefer
        ));
    }

    /// The writer's own PostgreSQL connection really commits asynchronously and, on loopback,
    /// without TLS (runs when `MANDATE_TEST_DATABASE_URL` names a PostgreSQL database).
    #[tokio::test]
    async fn postgres_writer_connection_settings() {
        let Ok(url) = std::env::var("MANDATE_TEST_DATABASE_URL") else {
            return;
        };
        let one = |sql: &str| Statement::from_string(DbBackend::Postgres, sql);
        let target = Target { url, schema: None };
        let store = connect(&target, false).await.unwrap();
        let r = store
            .db
            .query_one_raw(one("SHOW synchronous_commit"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            r.try_get::<String>("", "synchronous_commit").unwrap(),
            "off"
        );
        let loopback = target
            .url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map(|o| is_loopback(o.get_host()) && o.get_socket().is_none())
            .unwrap();
        let r = store
            .db
            .query_one_raw(one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            ))
            .await
            .unwrap()
            .unwrap();
        if loopback {
            assert!(!r.try_get::<bool>("", "ssl").unwrap());
        }
        let store = connect(&target, true).await.unwrap();
        let r = store
            .db
            .query_one_raw(one("SHOW synchronous_commit"))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(
            r.try_get::<String>("", "synchronous_commit").unwrap(),
            "off"
        );
    }
}
