//! The Redis backend: revocations as keys with TTLs, sessions as hashes, replay keys with
//! `SET NX`, and one pub/sub channel that carries revocations and registry changes to every
//! node. The listener resubscribes and resynchronises after any disconnect, and replays the
//! database into Redis when Redis comes back empty (its epoch marker is gone).
use super::{Backend, ReplayCache, Revocation, SessionRecord, SessionStats, Touch, Unavailable};
use redis::aio::ConnectionManager;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct RedisBackend {
    pub client: redis::Client,
    conn: ConnectionManager,
    pub prefix: String,
    /// The listener is subscribed and the replica has been resynchronised since it connected.
    listening: AtomicBool,
    /// The last PING answered.
    reachable: AtomicBool,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A message on the events channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Revoked(Revocation),
    RegistryChanged,
}

impl Event {
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once('|') {
            Some(("r", rest)) => Revocation::decode(rest).map(Self::Revoked),
            _ if s == "g" => Some(Self::RegistryChanged),
            _ => None,
        }
    }
}

fn down<E: std::fmt::Display>(e: E) -> Unavailable {
    tracing::warn!(error = %e, "redis command failed");
    Unavailable
}

impl RedisBackend {
    /// Connects (commands time out after a second, so a dead Redis fails fast, never hangs).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            Duration::from_secs(3),
            ConnectionManager::new_with_config(client.clone(), cfg),
        )
        .await
        .map_err(|_| "timed out connecting to redis".to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_string(),
            listening: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
        })
    }

    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.prefix.clone();
        k.push_str(&parts.join(":"));
        k
    }

    pub fn set_listening(&self, on: bool) {
        self.listening.store(on, Ordering::SeqCst);
    }

    /// One PING; records whether Redis answered.
    pub async fn ping(&self) -> bool {
        let mut c = self.conn.clone();
        let ok = redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .is_ok();
        self.reachable.store(ok, Ordering::SeqCst);
        ok
    }

    /// Whether this Redis still holds what was replayed into it (false after a restart with an
    /// empty dataset or a flush).
    pub async fn has_epoch(&self) -> Result<bool, Unavailable> {
        let mut c = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.key(&["epoch"]))
            .query_async::<i64>(&mut c)
            .await
            .map(|n| n > 0)
            .map_err(down)
    }

    /// Writes revocations and sessions from the database, then the epoch marker.
    pub async fn replay(
        &self,
        revocations: &[Revocation],
        sessions: &[SessionRecord],
        now: i64,
    ) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        for r in revocations.iter().filter(|r| r.until > now) {
            pipe.cmd("SET")
                .arg(self.key(&["rev", r.kind.as_str(), &r.value]))
                .arg(r.at)
                .arg("EXAT")
                .arg(r.until)
                .ignore();
        }
        for s in sessions.iter().filter(|s| s.expires_at > now) {
            self.session_cmds(&mut pipe, s, now);
            pipe.cmd("SET")
                .arg(self.key(&["agentsess", &s.agent_id]))
                .arg(&s.sid)
                .arg("NX")
                .arg("EXAT")
                .arg(s.expires_at)
                .ignore();
        }
        pipe.cmd("SET").arg(self.key(&["epoch"])).arg(now).ignore();
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await.map_err(down)
    }

    fn session_cmds(&self, pipe: &mut redis::Pipeline, s: &SessionRecord, last_seen: i64) {
        let key = self.key(&["sess", &s.sid]);
        pipe.cmd("HSET")
            .arg(&key)
            .arg("agent")
            .arg(&s.agent_id)
            .arg("started")
            .arg(s.started_at)
            .arg("expires")
            .arg(s.expires_at)
            .arg("idle")
            .arg(s.idle_secs)
            .arg("last_seen")
            .arg(last_seen)
            .ignore();
        pipe.cmd("EXPIREAT").arg(&key).arg(s.expires_at).ignore();
    }

    async fn load_session(&self, sid: &str) -> Result<Option<SessionRecord>, Unavailable> {
        let mut c = self.conn.clone();
        let m: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(&["sess", sid]))
            .query_async(&mut c)
            .await
            .map_err(down)?;
        let num = |k: &str| m.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok((|| {
            Some(SessionRecord {
                sid: sid.to_string(),
                agent_id: m.get("agent")?.clone(),
                started_at: num("started")?,
                expires_at: num("expires")?,
                idle_secs: num("idle")?,
                last_seen: num("last_seen").unwrap_or(0),
            })
        })())
    }
}

#[async_trait::async_trait]
impl ReplayCache for RedisBackend {
    async fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, Unavailable> {
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&["replay", key]))
            .arg(now)
            .arg("NX")
            .arg("EXAT")
            .arg(expires_at.max(now + 1))
            .query_async(&mut c)
            .await
            .map_err(down)?;
        Ok(set.is_some())
    }
}

#[async_trait::async_trait]
impl Backend for RedisBackend {
    fn healthy(&self) -> bool {
        self.listening.load(Ordering::Relaxed) && self.reachable.load(Ordering::Relaxed)
    }

    async fn share_revocation(&self, r: &Revocation) -> Result<(), Unavailable> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(&["rev", r.kind.as_str(), &r.value]))
            .arg(r.at)
            .arg("EXAT")
            .arg(r.until.max(r.at + 1))
            .ignore();
        pipe.cmd("PUBLISH")
            .arg(self.channel())
            .arg(format!("r|{}", r.encode()))
            .ignore();
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await.map_err(down)
    }

    async fn share_registry_change(&self) {
        let mut c = self.conn.clone();
        let _ = redis::cmd("PUBLISH")
            .arg(self.channel())
            .arg("g")
            .query_async::<i64>(&mut c)
            .await
            .map_err(down);
    }

    async fn agent_session(&self, agent: &str) -> Result<Option<SessionRecord>, Unavailable> {
        let mut c = self.conn.clone();
        let sid: Option<String> = redis::cmd("GET")
            .arg(self.key(&["agentsess", agent]))
            .query_async(&mut c)
            .await
            .map_err(down)?;
        match sid {
            Some(sid) => self.load_session(&sid).await,
            None => Ok(None),
        }
    }

    async fn claim_session(
        &self,
        s: &SessionRecord,
        replacing: Option<&str>,
    ) -> Result<SessionRecord, Unavailable> {
        // Compare-and-set: take the agent's slot if it is empty or still holds the session the
        // caller found unusable; otherwise another node won and its session is used.
        const CLAIM: &str = "local cur = redis.call('GET', KEYS[1]) \
            if (not cur) or cur == ARGV[1] then \
              redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3]) return ARGV[2] end \
            return cur";
        let mut pipe = redis::pipe();
        self.session_cmds(&mut pipe, s, s.last_seen);
        pipe.cmd("EVAL")
            .arg(CLAIM)
            .arg(1)
            .arg(self.key(&["agentsess", &s.agent_id]))
            .arg(replacing.unwrap_or(""))
            .arg(&s.sid)
            .arg(s.expires_at);
        let mut c = self.conn.clone();
        let (winner,): (String,) = pipe.query_async(&mut c).await.map_err(down)?;
        if winner == s.sid {
            return Ok(s.clone());
        }
        match self.load_session(&winner).await? {
            Some(cur) if cur.expires_at > s.started_at => Ok(cur),
            _ => {
                redis::cmd("SET")
                    .arg(self.key(&["agentsess", &s.agent_id]))
                    .arg(&s.sid)
                    .arg("EXAT")
                    .arg(s.expires_at)
                    .query_async::<()>(&mut c)
                    .await
                    .map_err(down)?;
                Ok(s.clone())
            }
        }
    }

    async fn end_agent_session(&self, agent: &str, sid: Option<&str>) -> Result<(), Unavailable> {
        let mut c = self.conn.clone();
        let key = self.key(&["agentsess", agent]);
        if let Some(sid) = sid {
            let cur: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut c)
                .await
                .map_err(down)?;
            if cur.as_deref() != Some(sid) {
                return Ok(());
            }
        }
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut c)
            .await
            .map_err(down)
    }

    async fn touch(&self, batch: &[Touch]) -> Result<(), Unavailable> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for t in batch {
            let key = self.key(&["sess", &t.sid]);
            pipe.cmd("HSET")
                .arg(&key)
                .arg("last_seen")
                .arg(t.last_seen)
                .ignore();
            pipe.cmd("HINCRBY")
                .arg(&key)
                .arg("tokens")
                .arg(t.tokens)
                .ignore();
            pipe.cmd("EXPIREAT").arg(&key).arg(t.expires_at).ignore();
        }
        let mut c = self.conn.clone();
        pipe.query_async::<()>(&mut c).await.map_err(down)
    }

    async fn stats(&self, sids: &[String]) -> Result<Vec<SessionStats>, Unavailable> {
        let mut pipe = redis::pipe();
        for s in sids {
            pipe.cmd("HMGET")
                .arg(self.key(&["sess", s]))
                .arg("last_seen")
                .arg("tokens");
        }
        let mut c = self.conn.clone();
        let rows: Vec<(Option<i64>, Option<u64>)> = pipe.query_async(&mut c).await.map_err(down)?;
        Ok(rows
            .into_iter()
            .map(|(last_seen, tokens)| SessionStats {
                last_seen,
                tokens_issued: tokens.unwrap_or(0),
            })
            .collect())
    }

    fn prune(&self, _now: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Kind;

    #[test]
    fn events_parse() {
        let r = Revocation {
            kind: Kind::Agent,
            value: "agt_1".into(),
            at: 5,
            until: 9,
        };
        assert_eq!(
            Event::parse(&format!("r|{}", r.encode())),
            Some(Event::Revoked(r))
        );
        assert_eq!(Event::parse("g"), Some(Event::RegistryChanged));
        assert_eq!(Event::parse("x|y"), None);
    }
}
