//! Agent sessions, revocation and the kill switch.
//!
//! Every node keeps a full local replica of what is revoked (`Replica`), so introspection never
//! leaves the process. Revocations are persisted in the database first, then shared through a
//! `Backend`: Redis (keys with TTLs plus a pub/sub channel every node listens to) in production,
//! or the in-process backend of the embedded default. When the backend cannot vouch for the
//! replica (Redis unreachable), introspection answers inactive and issuance refuses: fail closed.
pub mod manager;
pub mod redis;

use crate::tokens::AccessClaims;
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};

/// The store cannot answer; callers fail closed.
#[derive(Debug, thiserror::Error)]
#[error("session and revocation store unavailable")]
pub struct Unavailable;

/// What a revocation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One token, by `jti`.
    Jti,
    /// Every token of one session (`sid`).
    Session,
    /// Every token of one agent issued at or before the revocation (the kill switch).
    Agent,
    /// Every delegated token whose subject is this person, issued at or before the revocation.
    Human,
    /// Every token of one environment issued at or before the revocation.
    Env,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jti => "jti",
            Self::Session => "session",
            Self::Agent => "agent",
            Self::Human => "human",
            Self::Env => "env",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jti" => Some(Self::Jti),
            "session" | "sid" => Some(Self::Session),
            "agent" => Some(Self::Agent),
            "human" => Some(Self::Human),
            "env" | "environment" => Some(Self::Env),
            _ => None,
        }
    }
}

/// One revocation: `kind` + `value`, made at `at`, to be remembered until `until` (after which
/// every token it covers has expired anyway).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    pub kind: Kind,
    pub value: String,
    pub at: i64,
    pub until: i64,
}

impl Revocation {
    /// Compact wire form for the pub/sub channel: `kind|at|until|value`.
    pub fn encode(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.kind.as_str(),
            self.at,
            self.until,
            self.value
        )
    }

    pub fn decode(s: &str) -> Option<Self> {
        let mut it = s.splitn(4, '|');
        Some(Self {
            kind: Kind::parse(it.next()?)?,
            at: it.next()?.parse().ok()?,
            until: it.next()?.parse().ok()?,
            value: it.next()?.to_string(),
        })
    }
}

#[derive(Debug, Default)]
struct ReplicaInner {
    /// value -> until
    jti: HashMap<String, i64>,
    sid: HashMap<String, i64>,
    /// value -> (cutoff, until)
    agent: HashMap<String, (i64, i64)>,
    human: HashMap<String, (i64, i64)>,
    env: HashMap<String, (i64, i64)>,
}

impl ReplicaInner {
    fn apply(&mut self, r: &Revocation) {
        let cutoff = |m: &mut HashMap<String, (i64, i64)>| {
            let e = m.entry(r.value.clone()).or_insert((r.at, r.until));
            e.0 = e.0.max(r.at);
            e.1 = e.1.max(r.until);
        };
        match r.kind {
            Kind::Jti => {
                let e = self.jti.entry(r.value.clone()).or_insert(r.until);
                *e = (*e).max(r.until);
            }
            Kind::Session => {
                let e = self.sid.entry(r.value.clone()).or_insert(r.until);
                *e = (*e).max(r.until);
            }
            Kind::Agent => cutoff(&mut self.agent),
            Kind::Human => cutoff(&mut self.human),
            Kind::Env => cutoff(&mut self.env),
        }
    }
}

/// This node's copy of every live revocation.
#[derive(Debug, Default)]
pub struct Replica {
    inner: RwLock<ReplicaInner>,
}

impl Replica {
    pub fn apply(&self, r: &Revocation) {
        if let Ok(mut g) = self.inner.write() {
            g.apply(r);
        }
    }

    /// Replaces everything (after a resynchronisation).
    pub fn replace(&self, all: &[Revocation]) {
        let mut fresh = ReplicaInner::default();
        for r in all {
            fresh.apply(r);
        }
        if let Ok(mut g) = self.inner.write() {
            *g = fresh;
        }
    }

    /// Whether any revocation covers this token. A poisoned lock counts as revoked.
    pub fn covers(&self, c: &AccessClaims) -> bool {
        let Ok(g) = self.inner.read() else {
            return true;
        };
        let before = |m: &HashMap<String, (i64, i64)>, k: &str| {
            m.get(k).is_some_and(|(cut, _)| c.iat <= *cut)
        };
        g.jti.contains_key(&c.jti)
            || c.sid.as_deref().is_some_and(|s| g.sid.contains_key(s))
            || before(&g.agent, &c.client_id)
            || (c.sub != c.client_id && before(&g.human, &c.sub))
            || c.env.as_deref().is_some_and(|e| before(&g.env, e))
    }

    /// Whether a session has been revoked.
    pub fn session_revoked(&self, sid: &str) -> bool {
        self.inner.read().map_or(true, |g| g.sid.contains_key(sid))
    }

    /// The latest agent cutoff, if the agent was killed.
    pub fn agent_cutoff(&self, agent: &str) -> Option<i64> {
        self.inner.read().ok()?.agent.get(agent).map(|(c, _)| *c)
    }

    pub fn prune(&self, now: i64) {
        if let Ok(mut g) = self.inner.write() {
            g.jti.retain(|_, u| *u > now);
            g.sid.retain(|_, u| *u > now);
            g.agent.retain(|_, (_, u)| *u > now);
            g.human.retain(|_, (_, u)| *u > now);
            g.env.retain(|_, (_, u)| *u > now);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.read().map_or(0, |g| {
            g.jti.len() + g.sid.len() + g.agent.len() + g.human.len() + g.env.len()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session as stored: the agent, when it started, when it ends at the latest, and how long it
/// may sit idle (no token issued) before it ends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    pub sid: String,
    pub agent_id: String,
    pub started_at: i64,
    pub expires_at: i64,
    pub idle_secs: i64,
    pub last_seen: i64,
}

/// Activity since the last flush: tokens issued and the latest issuance time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    pub sid: String,
    pub last_seen: i64,
    pub tokens: u64,
    pub expires_at: i64,
}

/// Live figures of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SessionStats {
    pub last_seen: Option<i64>,
    pub tokens_issued: u64,
}

/// Single-use values (assertion `jti`s): `first_use` is true exactly once per key until it
/// expires.
#[async_trait::async_trait]
pub trait ReplayCache: Send + Sync + 'static {
    async fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, Unavailable>;
}

/// The shared store behind sessions, revocation and replay.
#[async_trait::async_trait]
pub trait Backend: ReplayCache {
    /// Whether the replica can be trusted right now (false while Redis is unreachable or being
    /// resynchronised).
    fn healthy(&self) -> bool;
    /// Tells every node (the caller has persisted it and applied it locally).
    async fn share_revocation(&self, r: &Revocation) -> Result<(), Unavailable>;
    /// Tells every node to reload the registry now.
    async fn share_registry_change(&self);
    /// The agent's current session, if the store knows one.
    async fn agent_session(&self, agent: &str) -> Result<Option<SessionRecord>, Unavailable>;
    /// Makes `s` the agent's current session in place of `replacing` (the unusable one the
    /// caller saw, if any), unless another node replaced it first; returns the session that won.
    async fn claim_session(
        &self,
        s: &SessionRecord,
        replacing: Option<&str>,
    ) -> Result<SessionRecord, Unavailable>;
    /// Forgets the agent's current session (after a kill or a session revocation).
    async fn end_agent_session(&self, agent: &str, sid: Option<&str>) -> Result<(), Unavailable>;
    /// Records activity.
    async fn touch(&self, batch: &[Touch]) -> Result<(), Unavailable>;
    /// Live figures for these sessions.
    async fn stats(&self, sids: &[String]) -> Result<Vec<SessionStats>, Unavailable>;
    /// Drops what has expired (the in-process backend; Redis expires keys itself).
    fn prune(&self, now: i64);
}

/// The in-process backend of the embedded default: one node, nothing to share (other nodes on
/// the same database still see revocations through the database poll).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    replay: Mutex<HashMap<String, i64>>,
    agent_sessions: Mutex<HashMap<String, SessionRecord>>,
    stats: Mutex<HashMap<String, (i64, u64, i64)>>,
}

#[async_trait::async_trait]
impl ReplayCache for MemoryBackend {
    async fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, Unavailable> {
        let mut m = self.replay.lock().map_err(|_| Unavailable)?;
        match m.get(key) {
            Some(exp) if *exp > now => Ok(false),
            _ => {
                m.insert(key.to_string(), expires_at);
                Ok(true)
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn healthy(&self) -> bool {
        true
    }
    async fn share_revocation(&self, _: &Revocation) -> Result<(), Unavailable> {
        Ok(())
    }
    async fn share_registry_change(&self) {}
    async fn agent_session(&self, agent: &str) -> Result<Option<SessionRecord>, Unavailable> {
        let m = self.agent_sessions.lock().map_err(|_| Unavailable)?;
        let stats = self.stats.lock().map_err(|_| Unavailable)?;
        Ok(m.get(agent).cloned().map(|mut s| {
            if let Some((seen, _, _)) = stats.get(&s.sid) {
                s.last_seen = s.last_seen.max(*seen);
            }
            s
        }))
    }
    async fn claim_session(
        &self,
        s: &SessionRecord,
        replacing: Option<&str>,
    ) -> Result<SessionRecord, Unavailable> {
        let mut m = self.agent_sessions.lock().map_err(|_| Unavailable)?;
        let won = match m.get(&s.agent_id) {
            Some(cur) if Some(cur.sid.as_str()) != replacing && cur.expires_at > s.started_at => {
                cur.clone()
            }
            _ => {
                m.insert(s.agent_id.clone(), s.clone());
                s.clone()
            }
        };
        Ok(won)
    }
    async fn end_agent_session(&self, agent: &str, sid: Option<&str>) -> Result<(), Unavailable> {
        let mut m = self.agent_sessions.lock().map_err(|_| Unavailable)?;
        if sid.is_none_or(|sid| m.get(agent).is_some_and(|s| s.sid == sid)) {
            m.remove(agent);
        }
        Ok(())
    }
    async fn touch(&self, batch: &[Touch]) -> Result<(), Unavailable> {
        let mut m = self.stats.lock().map_err(|_| Unavailable)?;
        for t in batch {
            let e = m.entry(t.sid.clone()).or_insert((0, 0, t.expires_at));
            e.0 = e.0.max(t.last_seen);
            e.1 += t.tokens;
        }
        Ok(())
    }
    async fn stats(&self, sids: &[String]) -> Result<Vec<SessionStats>, Unavailable> {
        let m = self.stats.lock().map_err(|_| Unavailable)?;
        Ok(sids
            .iter()
            .map(|s| {
                m.get(s)
                    .map_or_else(SessionStats::default, |(seen, n, _)| SessionStats {
                        last_seen: Some(*seen),
                        tokens_issued: *n,
                    })
            })
            .collect())
    }
    fn prune(&self, now: i64) {
        if let Ok(mut m) = self.replay.lock() {
            m.retain(|_, exp| *exp > now);
        }
        if let Ok(mut m) = self.agent_sessions.lock() {
            m.retain(|_, s| s.expires_at > now);
        }
        if let Ok(mut m) = self.stats.lock() {
            m.retain(|_, (_, _, exp)| *exp > now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(iat: i64) -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            sub: "agt_1".into(),
            aud: "a".into(),
            client_id: "agt_1".into(),
            scope: "s".into(),
            iat,
            nbf: iat,
            exp: iat + 300,
            jti: "j1".into(),
            sid: Some("ses_1".into()),
            env: Some("dev".into()),
            act: None,
            approval: None,
            person: None,
        }
    }

    fn rev(kind: Kind, value: &str, at: i64) -> Revocation {
        Revocation {
            kind,
            value: value.into(),
            at,
            until: at + 360,
        }
    }

    #[test]
    fn each_kind_covers_what_it_names() {
        let c = claims(100);
        for (r, covered) in [
            (rev(Kind::Jti, "j1", 0), true),
            (rev(Kind::Jti, "j2", 0), false),
            (rev(Kind::Session, "ses_1", 0), true),
            (rev(Kind::Agent, "agt_1", 100), true),
            (rev(Kind::Agent, "agt_1", 99), false),
            (rev(Kind::Agent, "agt_2", 200), false),
            (rev(Kind::Env, "dev", 150), true),
            (rev(Kind::Env, "prod", 150), false),
            // Not delegated (sub is the agent itself): a human revocation does not apply.
            (rev(Kind::Human, "agt_1", 150), false),
        ] {
            let replica = Replica::default();
            replica.apply(&r);
            assert_eq!(replica.covers(&c), covered, "{r:?}");
        }
        let mut delegated = claims(100);
        delegated.sub = "alice@example.com".into();
        let replica = Replica::default();
        replica.apply(&rev(Kind::Human, "alice@example.com", 100));
        assert!(replica.covers(&delegated));
    }

    #[test]
    fn wire_form_round_trips_and_prune_forgets() {
        let r = rev(Kind::Env, "a|b", 5);
        assert_eq!(Revocation::decode(&r.encode()), Some(r.clone()));
        assert_eq!(Revocation::decode("bogus|1"), None);
        let replica = Replica::default();
        replica.apply(&r);
        replica.prune(5 + 360);
        assert!(replica.is_empty());
    }

    #[tokio::test]
    async fn replay_cache_allows_once_until_expiry() {
        let c = MemoryBackend::default();
        assert!(c.first_use("a", 100, 10).await.unwrap());
        assert!(!c.first_use("a", 100, 50).await.unwrap());
        assert!(c.first_use("a", 200, 100).await.unwrap());
    }
}
