//! The audit journal: where a batched event becomes durable before its request is answered.
//!
//! A request appends its event, sealed by nothing yet, as one JSON line to the current
//! segment file with a single `write` (appends of one `write` each never interleave) and
//! answers; the batch writer inserts events into the database behind it, in large
//! transactions, and deletes a segment once it has been replaced and every event in it is
//! committed. A write that returned is in the kernel's page cache, so it survives a crash of
//! Mandate, as a `synchronous=NORMAL` SQLite commit or an asynchronous PostgreSQL commit
//! does (with `audit_sync_commit` there is no journal: events are acknowledged after a
//! synchronous commit). At start the writer inserts what segments are left (a crash's tail),
//! skipping events the database already has, before it takes new ones.
//!
//! No request waits for another thread, and the database sees few, large transactions.
use super::event::Row;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A segment is replaced once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 8 << 20;

/// One segment file. Each journaled event holds its segment until the event is committed.
#[derive(Debug)]
pub struct Segment {
    path: PathBuf,
    file: File,
    bytes: AtomicU64,
}

impl Segment {
    fn create(dir: &Path, no: u64) -> io::Result<Self> {
        let path = dir.join(format!("{no:016}.jsonl"));
        // Events name agents, servers and addresses: readable by Mandate's user only.
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        Ok(Self {
            path,
            file,
            bytes: AtomicU64::new(0),
        })
    }

    /// Deletes the file (its events are all committed).
    pub fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(error = %e, path = %self.path.display(), "audit journal segment not removed");
        }
    }
}

/// The journal of one node: a directory of segments, the newest being appended to.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    current: RwLock<Arc<Segment>>,
    next: AtomicU64,
}

/// What a previous run left: its events (oldest first) and the files that held them.
#[derive(Debug, Default)]
pub struct Leftover {
    pub rows: Vec<Row>,
    pub files: Vec<PathBuf>,
}

impl Journal {
    /// Takes the journal in `dir` (created if needed) for this writer: `None` when another
    /// writer (another node with the same name on this data directory) holds it. The lock
    /// lasts as long as the returned file is open.
    pub fn lock(dir: &Path) -> io::Result<Option<File>> {
        std::fs::create_dir_all(dir)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Opens the journal in `dir` (locked with [`Journal::lock`]), reads what a previous run
    /// left and starts a new segment after it.
    pub fn open(dir: &Path) -> io::Result<(Self, Leftover)> {
        std::fs::create_dir_all(dir)?;
        let mut numbered: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let p = e.path();
                let no = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".jsonl")?
                    .parse()
                    .ok()?;
                Some((no, p))
            })
            .collect();
        numbered.sort();
        let mut left = Leftover::default();
        for (_, path) in &numbered {
            read_segment(path, &mut left.rows)?;
            left.files.push(path.clone());
        }
        let no = numbered.last().map_or(1, |(n, _)| n + 1);
        let first = Segment::create(dir, no)?;
        Ok((
            Self {
                dir: dir.to_path_buf(),
                current: RwLock::new(Arc::new(first)),
                next: AtomicU64::new(no + 1),
            },
            left,
        ))
    }

    /// Appends `record` (one event, see [`line`]) with one `write`; returns the segment that
    /// holds it. A short write is an error, never completed by a second `write` (another
    /// thread's record could land in between): the part written reads back as a torn record
    /// and is skipped, and the request is refused.
    pub fn append(&self, record: &[u8]) -> io::Result<Arc<Segment>> {
        let seg = self
            .current
            .read()
            .map_err(|_| io::Error::other("audit journal lock poisoned"))?
            .clone();
        let n = (&seg.file).write(record)?;
        if n != record.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to the audit journal ({n} of {} bytes)",
                    record.len()
                ),
            ));
        }
        seg.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(seg)
    }

    /// When the current segment is full: starts a new one and returns the old one (which
    /// events still hold until they are committed).
    pub fn rotate_if_full(&self) -> io::Result<Option<Arc<Segment>>> {
        let full = self
            .current
            .read()
            .map_err(|_| io::Error::other("audit journal lock poisoned"))?
            .bytes
            .load(Ordering::Relaxed)
            >= SEGMENT_BYTES;
        if !full {
            return Ok(None);
        }
        let next = Arc::new(Segment::create(
            &self.dir,
            self.next.fetch_add(1, Ordering::Relaxed),
        )?);
        let mut cur = self
            .current
            .write()
            .map_err(|_| io::Error::other("audit journal lock poisoned"))?;
        Ok(Some(std::mem::replace(&mut *cur, next)))
    }

    /// After a clean shutdown (every event committed, no request can append any more):
    /// removes the current segment, so the next start has nothing to read back.
    pub fn remove_current(&self) {
        if let Ok(c) = self.current.read() {
            c.remove();
        }
    }
}

/// The journal record of `row` (not yet sealed): a newline, then its JSON. Leading with the
/// newline ends any record a failed write left cut short, so the next one reads back whole.
pub fn line(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(384 + row.details.len());
    out.push(b'\n');
    // Serialising owned strings and integers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, row);
    out
}

/// The events of one segment. A record cut short (a crash or a failed write in the middle of
/// it) was never acknowledged, so it is skipped.
fn read_segment(path: &Path, rows: &mut Vec<Row>) -> io::Result<()> {
    let reader = io::BufReader::new(File::open(path)?);
    let mut torn = 0;
    for l in reader.split(b'\n') {
        let l = l?;
        if l.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Row>(&l) {
            Ok(r) => rows.push(r),
            Err(_) => torn += 1,
        }
    }
    if torn > 0 {
        tracing::warn!(path = %path.display(), torn, "audit journal: records cut short were skipped (never acknowledged)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, ActorKind, Event, kinds};

    fn row(i: i64) -> Row {
        let e = Event::new(
            kinds::TOKEN_ISSUED,
            1_795_683_000 + i,
            Actor::new(ActorKind::Agent, "agt_x"),
        )
        .detail_str("scope", "tools:read \"quoted\"\n");
        Row::from_event(e, "node-a", "node-a", 0)
    }

    #[test]
    fn one_writer_per_journal() {
        let dir = tempfile::tempdir().unwrap();
        let held = Journal::lock(dir.path()).unwrap();
        assert!(held.is_some());
        assert!(Journal::lock(dir.path()).unwrap().is_none());
        drop(held);
        assert!(Journal::lock(dir.path()).unwrap().is_some());
    }

    #[test]
    fn leftover_events_are_read_back_in_order_and_torn_records_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Row> = (0..4).map(row).collect();
        {
            let (j, left) = Journal::open(dir.path()).unwrap();
            assert!(left.rows.is_empty());
            j.append(&line(&rows[0])).unwrap();
            j.append(&line(&rows[1])).unwrap();
            // A write that failed half-way (its request was refused), then more events.
            j.append(&line(&row(9))[..40]).unwrap();
            j.append(&line(&rows[2])).unwrap();
            j.append(&line(&rows[3])).unwrap();
            // A crash in the middle of a write.
            j.append(&line(&row(10))[..60]).unwrap();
        }
        let (j, left) = Journal::open(dir.path()).unwrap();
        assert_eq!(left.rows, rows);
        assert_eq!(left.files.len(), 1);
        // The new run writes to a new segment.
        j.append(&line(&row(5))).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
