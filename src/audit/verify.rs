//! `mandate audit verify`: walks every stream in sequence order and reports each modified
//! event, broken link, gap (deleted events) and truncation (a head or checkpoint beyond the
//! last event).
use super::chain::{Head, read_head, stmt};
use super::event::{GENESIS, Row};
use super::query::{SELECT_ROW, row_from};
use crate::store::Store;
use sea_orm::{ConnectionTrait, DbErr};
use std::collections::BTreeMap;

/// What is wrong, at which event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub stream: String,
    /// `modified`, `chain_break`, `missing`, `truncated`, `checkpoint_mismatch`.
    pub kind: &'static str,
    pub seq: Option<i64>,
    pub id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamReport {
    pub stream: String,
    pub events: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub head_seq: Option<i64>,
    pub checkpoints: usize,
    /// Events before this sequence number were pruned by retention (checkpoint kept).
    pub pruned_through: Option<i64>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub events: u64,
    pub streams: Vec<StreamReport>,
    pub problems: Vec<Problem>,
}

impl Report {
    /// The report for a terminal: one line per stream, one per problem, a verdict.
    pub fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .streams
            .iter()
            .map(|s| {
                format!(
                    "stream {}: {} events, seq {}..{}, head {}, {} checkpoints{}",
                    s.stream,
                    s.events,
                    s.first_seq.unwrap_or(0),
                    s.last_seq.unwrap_or(0),
                    s.head_seq.unwrap_or(0),
                    s.checkpoints,
                    s.pruned_through
                        .map(|p| format!(", pruned through seq {p}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        for p in &self.problems {
            lines.push(format!(
                "PROBLEM [{}] stream {}: {}",
                p.kind, p.stream, p.message
            ));
        }
        lines.push(if self.ok {
            format!("audit log verified: {} events, no problems", self.events)
        } else {
            format!("audit log NOT verified: {} problem(s)", self.problems.len())
        });
        lines.join("\n")
    }
}

const PAGE: u64 = 5000;

/// Verifies every stream.
pub async fn verify(store: &Store) -> Result<Report, DbErr> {
    let db = &store.db;
    let b = db.get_database_backend();
    let mut names = std::collections::BTreeSet::new();
    for sql in [
        "SELECT stream FROM audit_streams",
        "SELECT DISTINCT stream FROM audit_checkpoints",
        "SELECT DISTINCT stream FROM audit_events",
    ] {
        for r in db.query_all_raw(stmt(b, sql, vec![])).await? {
            names.insert(r.try_get::<String>("", "stream")?);
        }
    }
    let mut report = Report::default();
    for name in names {
        let (s, mut problems) = verify_stream(store, &name).await?;
        report.events += s.events;
        report.streams.push(s);
        report.problems.append(&mut problems);
    }
    report.ok = report.problems.is_empty();
    Ok(report)
}

async fn verify_stream(store: &Store, stream: &str) -> Result<(StreamReport, Vec<Problem>), DbErr> {
    let db = &store.db;
    let b = db.get_database_backend();
    let head: Option<Head> = read_head(db, stream).await?;
    let mut checkpoints = BTreeMap::new();
    for r in db
        .query_all_raw(stmt(
            b,
            "SELECT seq, hash FROM audit_checkpoints WHERE stream = ? ORDER BY seq",
            vec![stream.into()],
        ))
        .await?
    {
        checkpoints.insert(
            r.try_get::<i64>("", "seq")?,
            r.try_get::<String>("", "hash")?,
        );
    }
    let mut rep = StreamReport {
        stream: stream.to_string(),
        head_seq: head.as_ref().map(|h| h.seq),
        checkpoints: checkpoints.len(),
        ..Default::default()
    };
    let mut problems = Vec::new();
    let mut problem = |kind, seq: Option<i64>, id: Option<&str>, message: String| {
        problems.push(Problem {
            stream: stream.to_string(),
            kind,
            seq,
            id: id.map(str::to_string),
            message,
        });
    };
    let mut prev: Option<Row> = None;
    let mut after = 0i64;
    loop {
        let sql = format!("{SELECT_ROW} WHERE stream = ? AND seq > ? ORDER BY seq LIMIT {PAGE}");
        let page = db
            .query_all_raw(stmt(b, &sql, vec![stream.into(), after.into()]))
            .await?;
        if page.is_empty() {
            break;
        }
        for qr in page {
            let row = row_from(&qr)?;
            after = row.seq;
            rep.events += 1;
            if row.compute_hash() != row.hash {
                problem(
                    "modified",
                    Some(row.seq),
                    Some(&row.id),
                    format!(
                        "event seq {} (id {}) was modified: its hash does not match its content",
                        row.seq, row.id
                    ),
                );
            }
            if let Some(cp) = checkpoints.get(&row.seq)
                && *cp != row.hash
            {
                problem(
                    "checkpoint_mismatch",
                    Some(row.seq),
                    Some(&row.id),
                    format!(
                        "event seq {} (id {}) differs from its checkpoint: the chain was rewritten",
                        row.seq, row.id
                    ),
                );
            }
            match &prev {
                None => {
                    rep.first_seq = Some(row.seq);
                    if row.seq == 1 {
                        if row.prev_hash != GENESIS {
                            problem(
                                "chain_break",
                                Some(1),
                                Some(&row.id),
                                "the first event does not start the chain".into(),
                            );
                        }
                    } else if checkpoints.get(&(row.seq - 1)) == Some(&row.prev_hash) {
                        rep.pruned_through = Some(row.seq - 1);
                    } else {
                        problem(
                            "missing",
                            Some(row.seq - 1),
                            None,
                            format!(
                                "events seq 1..{} are missing and no checkpoint covers them (deleted)",
                                row.seq - 1
                            ),
                        );
                    }
                }
                Some(p) => {
                    if row.seq != p.seq + 1 {
                        let (a, z) = (p.seq + 1, row.seq - 1);
                        let which = if a == z {
                            format!("event seq {a} is missing")
                        } else {
                            format!("events seq {a}..{z} are missing")
                        };
                        problem(
                            "missing",
                            Some(a),
                            None,
                            format!("{which} (deleted) between id {} and id {}", p.id, row.id),
                        );
                    } else if row.prev_hash != p.hash {
                        problem(
                            "chain_break",
                            Some(p.seq),
                            Some(&p.id),
                            format!(
                                "event seq {} (id {}) does not link to event seq {} (id {}): \
                                 the earlier event was modified or replaced",
                                row.seq, row.id, p.seq, p.id
                            ),
                        );
                    }
                }
            }
            prev = Some(row);
        }
    }
    let last_seq = prev.as_ref().map_or(0, |p| p.seq);
    rep.last_seq = prev.as_ref().map(|p| p.seq);
    if prev.is_none()
        && let Some((&seq, _)) = checkpoints.last_key_value()
        && head.as_ref().is_some_and(|h| h.seq == seq)
    {
        // Everything pruned; the head is the last checkpoint.
        rep.pruned_through = Some(seq);
    } else {
        if let Some(h) = &head {
            if h.seq > last_seq {
                problem(
                    "truncated",
                    Some(last_seq + 1),
                    None,
                    format!(
                        "the log ends at seq {last_seq} but the stream head is at seq {}: \
                         events {}..{} were deleted",
                        h.seq,
                        last_seq + 1,
                        h.seq
                    ),
                );
            } else if let Some(p) = &prev
                && h.seq == p.seq
                && h.hash != p.hash
            {
                problem(
                    "modified",
                    Some(p.seq),
                    Some(&p.id),
                    format!(
                        "the last event seq {} (id {}) does not match the stream head",
                        p.seq, p.id
                    ),
                );
            }
        }
        if let Some((&cp, _)) = checkpoints.range(last_seq + 1..).next_back()
            && head.as_ref().is_none_or(|h| h.seq <= last_seq)
        {
            problem(
                "truncated",
                Some(last_seq + 1),
                None,
                format!(
                    "the log ends at seq {last_seq} but a checkpoint was taken at seq {cp}: \
                     events {}..{cp} were deleted",
                    last_seq + 1
                ),
            );
        }
    }
    Ok((rep, problems))
}
