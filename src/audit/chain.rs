//! Appending to a stream's hash chain inside a caller's transaction, and checkpoints.
//!
//! Every append first takes the stream's head row for writing (an `UPDATE` of the head, which
//! locks the row on PostgreSQL and takes the write lock on SQLite), so writers of one stream
//! (the batch writer, a registry change, another process with the same node name) are
//! serialised and the chain never forks.
use super::event::{Event, GENESIS, Row};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value};

/// Columns of `audit_events` written on append, in order.
pub(crate) const COLUMNS: &[&str] = &[
    "id",
    "stream",
    "seq",
    "time",
    "node",
    "kind",
    "actor_kind",
    "actor_id",
    "subject",
    "agent",
    "server",
    "tool",
    "action",
    "decision",
    "reasons",
    "request_id",
    "source",
    "details",
    "prev_hash",
    "hash",
];

/// Rows per INSERT statement (keeps bind parameters well under both backends' limits).
pub(crate) const ROWS_PER_INSERT: usize = 400;

/// Placeholder `n` (1-based) for the backend.
pub(crate) fn ph(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_string(),
    }
}

pub(crate) fn stmt(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Postgres => {
            // Written with `?`; PostgreSQL wants `$n`.
            let mut out = String::with_capacity(sql.len() + 16);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push_str(&format!("${n}"));
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => sql.to_string(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// A stream head: the last sequence number and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// Locks the head of `stream` for this transaction (creating it on first use) and reads it.
pub async fn lock_head<C: ConnectionTrait>(c: &C, stream: &str, now: i64) -> Result<Head, DbErr> {
    let b = c.get_database_backend();
    let lock = || {
        stmt(
            b,
            "UPDATE audit_streams SET seq = seq WHERE stream = ?",
            vec![stream.into()],
        )
    };
    if c.execute_raw(lock()).await?.rows_affected() == 0 {
        c.execute_raw(stmt(
            b,
            "INSERT INTO audit_streams (stream, seq, hash, updated_at) VALUES (?, 0, ?, ?) \
             ON CONFLICT (stream) DO NOTHING",
            vec![stream.into(), GENESIS.into(), now.into()],
        ))
        .await?;
        c.execute_raw(lock()).await?;
    }
    read_head(c, stream)
        .await?
        .ok_or_else(|| DbErr::Custom(format!("audit stream {stream} has no head")))
}

/// The head of `stream`, if it exists.
pub async fn read_head<C: ConnectionTrait>(c: &C, stream: &str) -> Result<Option<Head>, DbErr> {
    let b = c.get_database_backend();
    let row = c
        .query_one_raw(stmt(
            b,
            "SELECT seq, hash FROM audit_streams WHERE stream = ?",
            vec![stream.into()],
        ))
        .await?;
    match row {
        Some(r) => Ok(Some(Head {
            seq: r.try_get("", "seq")?,
            hash: r.try_get("", "hash")?,
        })),
        None => Ok(None),
    }
}

fn opt(v: &Option<String>) -> Value {
    Value::String(v.clone())
}

/// Chains `rows` after `head` (assigning sequence numbers and hashes) without writing.
pub fn seal(head: &Head, stream: &str, node: &str, events: Vec<Event>) -> Vec<Row> {
    let mut rows: Vec<Row> = events
        .into_iter()
        .map(|e| Row::from_event(e, stream, node, 0))
        .collect();
    seal_rows(head, &mut rows);
    rows
}

/// (Re)numbers and (re)hashes `rows` to follow `head`; returns the new head.
pub fn seal_rows(head: &Head, rows: &mut [Row]) -> Head {
    let mut prev = head.hash.clone();
    let mut seq = head.seq;
    for r in rows.iter_mut() {
        seq += 1;
        r.seq = seq;
        r.seal(&prev);
        prev.clone_from(&r.hash);
    }
    Head { seq, hash: prev }
}

fn push_values(values: &mut Vec<Value>, r: &Row) {
    values.extend([
        r.id.clone().into(),
        r.stream.clone().into(),
        r.seq.into(),
        r.time.into(),
        r.node.clone().into(),
        r.kind.clone().into(),
        r.actor_kind.clone().into(),
        r.actor_id.clone().into(),
        opt(&r.subject),
        opt(&r.agent),
        opt(&r.server),
        opt(&r.tool),
        opt(&r.action),
        opt(&r.decision),
        r.reasons.clone().into(),
        opt(&r.request_id),
        opt(&r.source),
        r.details.clone().into(),
        r.prev_hash.clone().into(),
        r.hash.clone().into(),
    ]);
}

/// Inserts sealed rows and moves the head; the caller's transaction holds the head lock.
pub async fn write_rows<C: ConnectionTrait>(
    c: &C,
    stream: &str,
    rows: &[Row],
    now: i64,
    checkpoint_every: i64,
    old_seq: i64,
) -> Result<(), DbErr> {
    let Some(last) = rows.last() else {
        return Ok(());
    };
    let b = c.get_database_backend();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = format!("INSERT INTO audit_events ({}) VALUES ", COLUMNS.join(", "));
        let mut values = Vec::with_capacity(chunk.len() * COLUMNS.len());
        let mut n = 0;
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            for j in 0..COLUMNS.len() {
                if j > 0 {
                    sql.push(',');
                }
                n += 1;
                sql.push_str(&ph(b, n));
            }
            sql.push(')');
            push_values(&mut values, r);
        }
        c.execute_raw(Statement::from_sql_and_values(b, sql, values))
            .await?;
    }
    c.execute_raw(stmt(
        b,
        "UPDATE audit_streams SET seq = ?, hash = ?, updated_at = ? WHERE stream = ?",
        vec![
            last.seq.into(),
            last.hash.clone().into(),
            now.into(),
            stream.into(),
        ],
    ))
    .await?;
    if checkpoint_every > 0 && last.seq / checkpoint_every > old_seq / checkpoint_every {
        insert_checkpoint(c, stream, last.seq, &last.hash, now).await?;
    }
    Ok(())
}

/// Appends `events` to `stream` inside the caller's transaction: the event commits or rolls
/// back with the change it records.
pub async fn append<C: ConnectionTrait>(
    c: &C,
    stream: &str,
    node: &str,
    events: Vec<Event>,
    now: i64,
    checkpoint_every: i64,
) -> Result<Vec<Row>, DbErr> {
    let head = lock_head(c, stream, now).await?;
    let rows = seal(&head, stream, node, events);
    write_rows(c, stream, &rows, now, checkpoint_every, head.seq).await?;
    Ok(rows)
}

pub async fn insert_checkpoint<C: ConnectionTrait>(
    c: &C,
    stream: &str,
    seq: i64,
    hash: &str,
    now: i64,
) -> Result<(), DbErr> {
    c.execute_raw(stmt(
        c.get_database_backend(),
        "INSERT INTO audit_checkpoints (stream, seq, hash, time) VALUES (?, ?, ?, ?) \
         ON CONFLICT (stream, seq) DO NOTHING",
        vec![stream.into(), seq.into(), hash.into(), now.into()],
    ))
    .await?;
    Ok(())
}

/// Writes a checkpoint of `stream`'s head if it moved since the last one.
pub async fn checkpoint_if_moved<C: ConnectionTrait>(
    c: &C,
    stream: &str,
    now: i64,
) -> Result<bool, DbErr> {
    let Some(head) = read_head(c, stream).await? else {
        return Ok(false);
    };
    if head.seq == 0 {
        return Ok(false);
    }
    let last = c
        .query_one_raw(stmt(
            c.get_database_backend(),
            "SELECT MAX(seq) AS seq FROM audit_checkpoints WHERE stream = ?",
            vec![stream.into()],
        ))
        .await?
        .and_then(|r| r.try_get::<Option<i64>>("", "seq").ok().flatten())
        .unwrap_or(0);
    if last >= head.seq {
        return Ok(false);
    }
    insert_checkpoint(c, stream, head.seq, &head.hash, now).await?;
    Ok(true)
}
