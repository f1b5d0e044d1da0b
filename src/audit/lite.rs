//! The batch writer's path on the embedded SQLite default: its own connection, used directly
//! on the writer's thread.
//!
//! Through sqlx every statement is a message to a driver thread and back, and most of the
//! writer's cost was those hand-offs, not SQLite. Here a batch is one `BEGIN IMMEDIATE`
//! transaction on this thread: it takes the database's write lock, so reading the stream head
//! inside it is authoritative (a registry change or another process writes the stream only
//! under the same lock), and the rows are sealed after that head and inserted with one cached
//! prepared statement.
use super::chain::{COLUMNS, Head};
use super::event::{GENESIS, Row};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::str::FromStr;
use std::time::Duration;

/// The size the write-ahead log is cut back to after a checkpoint.
const WAL_LIMIT_BYTES: i64 = 64 << 20;

/// The writer's SQLite connection.
pub struct Lite {
    conn: Connection,
    insert: String,
}

impl std::fmt::Debug for Lite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lite").finish_non_exhaustive()
    }
}

/// Why the SQLite writer could not open its database.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the audit log needs a SQLite database file, not an in-memory database")]
    InMemory,
    #[error("invalid SQLite URL: {0}")]
    Url(String),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl Lite {
    /// Opens the database file of `url` (a sqlx SQLite URL, as the server uses): write-ahead
    /// log, `synchronous=NORMAL` (a commit survives a crash of Mandate) or `FULL` when `sync`,
    /// and a 5 s busy timeout for the write lock.
    ///
    /// The write-ahead log is checkpointed by this connection, after the commit that takes it
    /// past `wal_autocheckpoint` pages (SQLite's default, 1,000): as the stream's only busy
    /// writer it is the one connection whose checkpoint can copy every frame back, so the
    /// next batch starts the log again from its beginning. (A checkpoint from another
    /// connection never catches up with a writer that commits all the time, and the log grew
    /// by gigabytes under load.) `journal_size_limit` gives the disk back after a burst.
    pub fn open(url: &str, sync: bool) -> Result<Self, OpenError> {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(|e| OpenError::Url(e.to_string()))?;
        let path = opts.get_filename();
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(OpenError::InMemory);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if sync { "FULL" } else { "NORMAL" })?;
        conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
        conn.pragma_update(None, "journal_size_limit", WAL_LIMIT_BYTES)?;
        let placeholders = vec!["?"; COLUMNS.len()].join(", ");
        let insert = format!(
            "INSERT INTO audit_events ({}) VALUES ({placeholders})",
            COLUMNS.join(", ")
        );
        Ok(Self { conn, insert })
    }

    /// Seals `rows` after the stream's head and commits them, the head move and, when a
    /// boundary of `checkpoint_every` is crossed, a checkpoint, in one transaction. Returns
    /// the new head. On error nothing is written.
    pub fn write(
        &mut self,
        stream: &str,
        rows: &mut [Row],
        now: i64,
        checkpoint_every: i64,
    ) -> Result<Head, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let head = tx
            .prepare_cached("SELECT seq, hash FROM audit_streams WHERE stream = ?1")?
            .query_row([stream], |r| {
                Ok(Head {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            })
            .optional()?;
        let head = match head {
            Some(h) => h,
            None => {
                tx.execute(
                    "INSERT INTO audit_streams (stream, seq, hash, updated_at) VALUES (?1, 0, ?2, ?3)",
                    params![stream, GENESIS, now],
                )?;
                Head {
                    seq: 0,
                    hash: GENESIS.to_string(),
                }
            }
        };
        let new = super::chain::seal_rows(&head, rows);
        {
            let mut insert = tx.prepare_cached(&self.insert)?;
            for r in rows.iter() {
                insert.execute(params![
                    r.id,
                    r.stream,
                    r.seq,
                    r.time,
                    r.node,
                    r.kind,
                    r.actor_kind,
                    r.actor_id,
                    r.subject,
                    r.agent,
                    r.server,
                    r.tool,
                    r.action,
                    r.decision,
                    r.reasons,
                    r.request_id,
                    r.source,
                    r.details,
                    r.prev_hash,
                    r.hash,
                ])?;
            }
        }
        tx.prepare_cached(
            "UPDATE audit_streams SET seq = ?1, hash = ?2, updated_at = ?3 WHERE stream = ?4",
        )?
        .execute(params![new.seq, new.hash, now, stream])?;
        if checkpoint_every > 0 && new.seq / checkpoint_every > head.seq / checkpoint_every {
            tx.execute(
                "INSERT INTO audit_checkpoints (stream, seq, hash, time) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (stream, seq) DO NOTHING",
                params![stream, new.seq, new.hash, now],
            )?;
        }
        tx.commit()?;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, ActorKind, Event, kinds};

    /// Under a writer that commits all the time the write-ahead log stays bounded (it grew
    /// without limit when only another connection checkpointed it), and the chain it wrote
    /// verifies.
    #[tokio::test]
    async fn wal_stays_bounded_and_chain_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let store = crate::store::Store::connect(&url, None).await.unwrap();
        store.migrate().await.unwrap();
        let mut lite = Lite::open(&url, false).unwrap();
        let mut head = Head {
            seq: 0,
            hash: GENESIS.into(),
        };
        for b in 0..2500 {
            let mut rows: Vec<Row> = (0..8)
                .map(|i| {
                    let mut e = Event::new(
                        kinds::TOKEN_ISSUED,
                        1_795_683_000 + b,
                        Actor::new(ActorKind::Agent, "agt_0123456789abcdef01234567"),
                    );
                    e.subject = Some(format!("{b:016x}{i:016x}"));
                    Row::from_event(e, "node-a", "node-a", 0)
                })
                .collect();
            head = lite
                .write("node-a", &mut rows, 1_795_683_000, 1000)
                .unwrap();
        }
        assert_eq!(head.seq, 20_000);
        let wal = std::fs::metadata(dir.path().join("m.db-wal"))
            .unwrap()
            .len();
        // 1,000 pages of 4 KiB plus frame headers, and the batch that crossed the mark.
        assert!(wal < 6 << 20, "write-ahead log of {wal} bytes");
        let report = crate::audit::verify::verify(&store).await.unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.events, 20_000);
    }

    #[test]
    fn in_memory_databases_are_refused() {
        assert!(matches!(
            Lite::open("sqlite::memory:", false),
            Err(OpenError::InMemory)
        ));
    }
}
