//! Reading the log: filters with validation, cursor paging (newest first), export.
use super::chain::stmt;
use super::event::{Decision, Row, kinds};
use sea_orm::{ConnectionTrait, DbErr, QueryResult, Value};

pub(crate) const SELECT_ROW: &str = "SELECT pos, id, stream, seq, time, node, kind, actor_kind, \
    actor_id, subject, agent, server, tool, action, decision, reasons, request_id, source, \
    details, prev_hash, hash FROM audit_events";

pub(crate) fn row_from(r: &QueryResult) -> Result<Row, DbErr> {
    Ok(Row {
        pos: r.try_get("", "pos")?,
        id: r.try_get("", "id")?,
        stream: r.try_get("", "stream")?,
        seq: r.try_get("", "seq")?,
        time: r.try_get("", "time")?,
        node: r.try_get("", "node")?,
        kind: r.try_get("", "kind")?,
        actor_kind: r.try_get("", "actor_kind")?,
        actor_id: r.try_get("", "actor_id")?,
        subject: r.try_get("", "subject")?,
        agent: r.try_get("", "agent")?,
        server: r.try_get("", "server")?,
        tool: r.try_get("", "tool")?,
        action: r.try_get("", "action")?,
        decision: r.try_get("", "decision")?,
        reasons: r.try_get("", "reasons")?,
        request_id: r.try_get("", "request_id")?,
        source: r.try_get("", "source")?,
        details: r.try_get("", "details")?,
        prev_hash: r.try_get("", "prev_hash")?,
        hash: r.try_get("", "hash")?,
    })
}

/// One event by id.
pub async fn row_by_id<C: ConnectionTrait>(c: &C, id: &str) -> Result<Option<Row>, DbErr> {
    let sql = format!("{SELECT_ROW} WHERE id = ?");
    match c
        .query_one_raw(stmt(c.get_database_backend(), &sql, vec![id.into()]))
        .await?
    {
        Some(r) => Ok(Some(row_from(&r)?)),
        None => Ok(None),
    }
}

/// A malformed filter value (answered 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadFilter(pub String);

/// Validated filters. Every query is bounded by a time range (default: the last 24 hours).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub since: i64,
    pub until: i64,
    pub agent: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<Decision>,
    pub kind: Option<&'static str>,
    pub limit: u64,
    /// Only events older than this position (the previous page's `next_cursor`).
    pub cursor: Option<i64>,
}

/// Raw query parameters, as the admin API receives them.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub agent: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub decision: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

pub const DEFAULT_LIMIT: u64 = 100;
pub const MAX_LIMIT: u64 = 1000;

fn ident(name: &str, v: Option<String>) -> Result<Option<String>, BadFilter> {
    match v {
        None => Ok(None),
        Some(v)
            if !v.is_empty()
                && v.len() <= 200
                && v.bytes().all(|c| c.is_ascii_graphic() && c != b'%') =>
        {
            Ok(Some(v))
        }
        Some(_) => Err(BadFilter(format!(
            "{name} must be 1-200 printable ASCII characters"
        ))),
    }
}

impl RawFilter {
    pub fn parse(self, now: i64) -> Result<Filter, BadFilter> {
        let until = match self.until.as_deref() {
            Some(u) => parse_time(u, now).map_err(|e| BadFilter(format!("until: {e}")))?,
            None => now + 1,
        };
        let since = match self.since.as_deref() {
            Some(s) => parse_time(s, now).map_err(|e| BadFilter(format!("since: {e}")))?,
            None => until - 86_400,
        };
        if since > until {
            return Err(BadFilter("since must not be after until".into()));
        }
        let decision = self
            .decision
            .map(|d| {
                Decision::parse(&d)
                    .ok_or_else(|| BadFilter("decision must be permit, deny or step_up".into()))
            })
            .transpose()?;
        let kind = self
            .kind
            .map(|k| {
                kinds::ALL
                    .iter()
                    .find(|x| x.0 == k)
                    .map(|x| x.0)
                    .ok_or_else(|| BadFilter(format!("unknown event type {k:?}")))
            })
            .transpose()?;
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<u64>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| BadFilter(format!("limit must be 1-{MAX_LIMIT}")))?,
        };
        let cursor = self
            .cursor
            .map(|c| {
                c.parse::<i64>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| BadFilter("cursor is malformed".into()))
            })
            .transpose()?;
        Ok(Filter {
            since,
            until,
            agent: ident("agent", self.agent)?,
            server: ident("server", self.server)?,
            tool: ident("tool", self.tool)?,
            decision,
            kind,
            limit,
            cursor,
        })
    }
}

/// A time: Unix seconds, RFC 3339 UTC (`2026-11-26T08:00:00Z`), or an age (`90s`, `15m`,
/// `24h`, `7d`) counted back from `now`.
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Some(unit) = s.chars().last()
        && let Some(mult) = match unit {
            's' => Some(1),
            'm' => Some(60),
            'h' => Some(3600),
            'd' => Some(86_400),
            _ => None,
        }
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
        && n >= 0
    {
        return Ok(now - n.saturating_mul(mult));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!("{s:?} is not Unix seconds, an RFC 3339 UTC time or an age like 24h")
    })
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !(s.ends_with('Z') || s.ends_with('z')) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' {
        return None;
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se)
}

/// One page of events, newest first, and the cursor of the next page.
#[derive(Debug, serde::Serialize)]
pub struct Page {
    pub events: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

/// A row as the API shows it: the JSON line, parsed.
pub fn row_json(r: &Row) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&r.json_line()).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("pos".into(), r.pos.into());
    }
    v
}

fn where_clause(f: &Filter) -> (String, Vec<Value>) {
    let mut sql = String::from(" WHERE time >= ? AND time < ?");
    let mut v: Vec<Value> = vec![f.since.into(), f.until.into()];
    let mut eq = |col: &str, val: Option<String>| {
        if let Some(val) = val {
            sql.push_str(&format!(" AND {col} = ?"));
            v.push(val.into());
        }
    };
    eq("agent", f.agent.clone());
    eq("server", f.server.clone());
    eq("tool", f.tool.clone());
    eq("decision", f.decision.map(|d| d.as_str().to_string()));
    eq("kind", f.kind.map(str::to_string));
    (sql, v)
}

/// Newest first, `limit` at a time.
pub async fn page<C: ConnectionTrait>(c: &C, f: &Filter) -> Result<Page, DbErr> {
    let (mut w, mut v) = where_clause(f);
    if let Some(cur) = f.cursor {
        w.push_str(" AND pos < ?");
        v.push(cur.into());
    }
    let sql = format!("{SELECT_ROW}{w} ORDER BY pos DESC LIMIT {}", f.limit + 1);
    let rows = c
        .query_all_raw(stmt(c.get_database_backend(), &sql, v))
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(row_from(r)?);
    }
    let more = out.len() as u64 > f.limit;
    out.truncate(usize::try_from(f.limit).unwrap_or(usize::MAX));
    Ok(Page {
        next_cursor: if more {
            out.last().map(|r| r.pos.to_string())
        } else {
            None
        },
        events: out.iter().map(row_json).collect(),
    })
}

/// Oldest first, in pages, for export: calls `each` with every matching row.
pub async fn export<C: ConnectionTrait>(
    c: &C,
    since: i64,
    until: i64,
    mut each: impl FnMut(&Row) -> std::io::Result<()>,
) -> Result<u64, ExportError> {
    let mut after = 0i64;
    let mut n = 0u64;
    loop {
        let sql = format!(
            "{SELECT_ROW} WHERE time >= ? AND time < ? AND pos > ? ORDER BY pos LIMIT 5000"
        );
        let rows = c
            .query_all_raw(stmt(
                c.get_database_backend(),
                &sql,
                vec![since.into(), until.into(), after.into()],
            ))
            .await?;
        if rows.is_empty() {
            return Ok(n);
        }
        for r in &rows {
            let row = row_from(r)?;
            after = row.pos;
            each(&row)?;
            n += 1;
        }
    }
}

/// Writes the events between `since` and `until` to `out` as JSON lines, oldest first.
pub async fn export_jsonl<C: ConnectionTrait>(
    c: &C,
    since: i64,
    until: i64,
    out: impl std::io::Write,
) -> Result<u64, ExportError> {
    use std::io::Write as _;
    let mut w = std::io::BufWriter::new(out);
    let n = export(c, since, until, |r| {
        w.write_all(r.json_line().as_bytes())?;
        w.write_all(b"\n")
    })
    .await?;
    w.flush()?;
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Db(#[from] DbErr),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        assert_eq!(parse_time("1700000000", 0), Ok(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z", 0), Ok(1_700_000_000));
        assert_eq!(parse_time("24h", 100_000), Ok(100_000 - 86_400));
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2023-13-14T22:13:20Z", 0).is_err());
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad = |f: RawFilter| f.parse(1000).unwrap_err();
        bad(RawFilter {
            decision: Some("maybe".into()),
            ..Default::default()
        });
        bad(RawFilter {
            limit: Some("0".into()),
            ..Default::default()
        });
        bad(RawFilter {
            kind: Some("token.stolen".into()),
            ..Default::default()
        });
        bad(RawFilter {
            since: Some("2000".into()),
            until: Some("1000".into()),
            ..Default::default()
        });
        let ok = RawFilter::default().parse(1000).unwrap();
        assert_eq!((ok.since, ok.until, ok.limit), (1001 - 86_400, 1001, 100));
    }
}
