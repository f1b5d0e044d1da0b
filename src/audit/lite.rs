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
    /// no automatic WAL checkpoints in the commit path (the writer runs them off this
    /// connection on its timer), and a 5 s busy timeout for the write lock.
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
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
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
