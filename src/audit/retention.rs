//! Retention: whole segments older than the window are deleted, always up to and including a
//! checkpointed event, and the checkpoint stays; `verify` then starts each pruned stream from
//! that checkpoint's hash. The pruning itself is an audit event.
use super::chain::{self, stmt};
use super::event::{Actor, Detail, Event, kinds};
use super::writer::WriterSettings;
use crate::store::Store;
use sea_orm::{ConnectionTrait, DbErr};

/// What one pruning pass removed, per stream: (stream, through seq, events deleted).
pub type Pruned = Vec<(String, i64, u64)>;

/// Deletes the segments of every stream whose checkpoint is older than the retention window.
pub async fn prune(store: &Store, s: &WriterSettings, now: i64) -> Result<Pruned, DbErr> {
    if s.retention_secs <= 0 {
        return Ok(Vec::new());
    }
    prune_before(
        store,
        &s.stream,
        &s.node,
        now - s.retention_secs,
        now,
        s.checkpoint_every,
    )
    .await
}

/// Deletes, in every stream, the events up to the newest checkpoint taken before `cutoff`.
pub async fn prune_before(
    store: &Store,
    stream: &str,
    node: &str,
    cutoff: i64,
    now: i64,
    checkpoint_every: i64,
) -> Result<Pruned, DbErr> {
    let tx = store
        .begin()
        .await
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    let b = tx.get_database_backend();
    // Our own head first: it serialises pruning passes of different nodes.
    chain::lock_head(&tx, stream, now).await?;
    let rows = tx
        .query_all_raw(stmt(
            b,
            "SELECT stream, MAX(seq) AS seq FROM audit_checkpoints WHERE time < ? GROUP BY stream",
            vec![cutoff.into()],
        ))
        .await?;
    let mut pruned = Vec::new();
    for r in rows {
        let st: String = r.try_get("", "stream")?;
        let seq: i64 = r.try_get("", "seq")?;
        let n = tx
            .execute_raw(stmt(
                b,
                "DELETE FROM audit_events WHERE stream = ? AND seq <= ?",
                vec![st.clone().into(), seq.into()],
            ))
            .await?
            .rows_affected();
        if n > 0 {
            pruned.push((st, seq, n));
        }
    }
    if !pruned.is_empty() {
        let events = pruned
            .iter()
            .map(|(st, seq, n)| {
                Event::new(kinds::AUDIT_PRUNED, now, Actor::system())
                    .subject(st.clone())
                    .action("prune")
                    .detail("stream", Detail::Str(st.clone()))
                    .detail("through_seq", Detail::Int(*seq))
                    .detail("events", Detail::Int(i64::try_from(*n).unwrap_or(i64::MAX)))
                    .detail("cutoff", Detail::Int(cutoff))
            })
            .collect();
        chain::append(&tx, stream, node, events, now, checkpoint_every).await?;
    }
    tx.commit().await?;
    Ok(pruned)
}
