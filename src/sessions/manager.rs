//! Sessions and revocation as the server uses them: a per-node session cache on the token
//! path, revocations applied locally and shared, the kill switch, and the Redis listener that
//! keeps this node's replica in step with every other node.
use super::redis::{Event, RedisBackend};
use super::{Kind, Revocation, SessionRecord, SessionStats, Touch, Unavailable};
use crate::agents::Agent;
use crate::app::App;
use crate::registry::admin::AdminError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A session this node issues tokens in.
#[derive(Debug)]
pub struct LiveSession {
    pub rec: SessionRecord,
    last_seen: AtomicI64,
    pending: AtomicU64,
}

/// Per-node cache: agent id -> its current session.
#[derive(Debug, Default)]
pub struct SessionCache {
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
}

/// A session as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    pub sid: String,
    pub agent_id: String,
    pub started_at: i64,
    pub expires_at: i64,
    pub idle_secs: i64,
    pub last_seen: i64,
    pub tokens_issued: u64,
}

impl App {
    fn session_limits(&self, agent: &Agent) -> (i64, i64) {
        let lifetime = agent
            .session_lifetime_secs
            .unwrap_or(self.config.session_lifetime_secs);
        let ttl = agent
            .token_ttl_cap
            .map_or(self.config.access_token_ttl_secs, |c| {
                c.min(self.config.access_token_ttl_secs)
            });
        // Idle never shorter than a token's life: a token then always expires before its
        // session can go idle, so introspection needs no idle check.
        let idle = agent
            .session_idle_secs
            .unwrap_or(self.config.session_idle_secs)
            .max(ttl);
        (lifetime, idle)
    }

    fn usable(&self, s: &SessionRecord, last_seen: i64, now: i64) -> bool {
        s.expires_at - now > 10
            && now - last_seen < s.idle_secs
            && !self.replica.session_revoked(&s.sid)
            && self
                .replica
                .agent_cutoff(&s.agent_id)
                .is_none_or(|cut| s.started_at > cut)
    }

    /// The session a new token for `agent` belongs to: the cached one while it lasts, else the
    /// one another node started, else a new one. Records the issuance.
    pub async fn session_for(
        &self,
        agent: &Agent,
        now: i64,
    ) -> Result<Arc<LiveSession>, Unavailable> {
        let cached = self
            .sessions
            .live
            .lock()
            .map_err(|_| Unavailable)?
            .get(&agent.id)
            .cloned();
        if let Some(live) = cached
            && self.usable(&live.rec, live.last_seen.load(Ordering::Relaxed), now)
        {
            live.last_seen.fetch_max(now, Ordering::Relaxed);
            live.pending.fetch_add(1, Ordering::Relaxed);
            return Ok(live);
        }
        let current = self.backend.agent_session(&agent.id).await?;
        let rec = match current {
            Some(s)
                if s.agent_id == agent.id
                    && self.usable(&s, s.last_seen.max(s.started_at), now) =>
            {
                s
            }
            stale => {
                self.new_session(agent, now, stale.as_ref().map(|s| s.sid.as_str()))
                    .await?
            }
        };
        let live = Arc::new(LiveSession {
            last_seen: AtomicI64::new(now),
            pending: AtomicU64::new(1),
            rec,
        });
        self.sessions
            .live
            .lock()
            .map_err(|_| Unavailable)?
            .insert(agent.id.clone(), live.clone());
        Ok(live)
    }

    /// Starts a session for `agent` in place of `replacing`, unless another node already did;
    /// returns the agent's session.
    async fn new_session(
        &self,
        agent: &Agent,
        now: i64,
        replacing: Option<&str>,
    ) -> Result<SessionRecord, Unavailable> {
        let (lifetime, idle) = self.session_limits(agent);
        let fresh = SessionRecord {
            sid: crate::secrets::random_id("ses_"),
            agent_id: agent.id.clone(),
            started_at: now,
            expires_at: now + lifetime,
            idle_secs: idle,
            last_seen: now,
        };
        let won = self.backend.claim_session(&fresh, replacing).await?;
        if won.sid == fresh.sid {
            self.store.insert_session(&fresh).await.map_err(|e| {
                tracing::error!(error = %e, "cannot persist session");
                Unavailable
            })?;
        }
        Ok(won)
    }

    /// Starts a new session for an agent explicitly; its next tokens belong to it. The session
    /// it replaces ends for new tokens (tokens already issued in it live out their lifetime).
    pub async fn start_session(
        &self,
        by: crate::audit::Actor,
        agent_id: &str,
    ) -> Result<SessionView, AdminError> {
        let now = self.clock.now();
        let agent = self
            .registry()
            .agent(agent_id)
            .cloned()
            .ok_or_else(|| AdminError::NotFound(format!("agent {agent_id}")))?;
        let current = self
            .backend
            .agent_session(agent_id)
            .await
            .map_err(|_| AdminError::Unavailable)?;
        let rec = self
            .new_session(&agent, now, current.as_ref().map(|s| s.sid.as_str()))
            .await
            .map_err(|_| AdminError::Unavailable)?;
        self.drop_cached_session(agent_id);
        let trail = self.audit.trail(by);
        let ev = trail
            .event(crate::audit::kinds::SESSION_STARTED, now)
            .subject(rec.sid.clone())
            .agent(agent_id)
            .action("start_session");
        if self.audit.record(ev).await.is_err() {
            return Err(AdminError::Unavailable);
        }
        Ok(SessionView {
            sid: rec.sid,
            agent_id: rec.agent_id,
            started_at: rec.started_at,
            expires_at: rec.expires_at,
            idle_secs: rec.idle_secs,
            last_seen: rec.last_seen,
            tokens_issued: 0,
        })
    }

    /// Sends this node's session activity to the backend (batched, off the token path).
    pub async fn flush_sessions(&self, now: i64) {
        let batch: Vec<Touch> = match self.sessions.live.lock() {
            Ok(mut m) => {
                m.retain(|_, s| s.rec.expires_at > now);
                m.values()
                    .filter_map(|s| {
                        let n = s.pending.swap(0, Ordering::Relaxed);
                        (n > 0).then(|| Touch {
                            sid: s.rec.sid.clone(),
                            last_seen: s.last_seen.load(Ordering::Relaxed),
                            tokens: n,
                            expires_at: s.rec.expires_at,
                        })
                    })
                    .collect()
            }
            Err(_) => return,
        };
        if self.backend.touch(&batch).await.is_err() {
            // Put the counts back for the next flush.
            if let Ok(m) = self.sessions.live.lock() {
                for t in &batch {
                    if let Some(s) = m.values().find(|s| s.rec.sid == t.sid) {
                        s.pending.fetch_add(t.tokens, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Live sessions with their activity.
    pub async fn list_sessions(&self, agent: Option<&str>) -> Result<Vec<SessionView>, AdminError> {
        let now = self.clock.now();
        self.flush_sessions(now).await;
        let rows = self.store.live_sessions(now, agent).await?;
        let sids: Vec<String> = rows.iter().map(|r| r.sid.clone()).collect();
        let stats = self
            .backend
            .stats(&sids)
            .await
            .unwrap_or_else(|_| vec![SessionStats::default(); sids.len()]);
        Ok(rows
            .into_iter()
            .zip(stats)
            .map(|(r, st)| SessionView {
                last_seen: st.last_seen.unwrap_or(r.started_at),
                tokens_issued: st.tokens_issued,
                sid: r.sid,
                agent_id: r.agent_id,
                started_at: r.started_at,
                expires_at: r.expires_at,
                idle_secs: r.idle_secs,
            })
            .filter(|v| !self.replica.session_revoked(&v.sid) && now - v.last_seen < v.idle_secs)
            .collect())
    }

    /// How long a revocation of `kind` must be remembered.
    pub fn revocation_until(&self, kind: Kind, now: i64, token_exp: Option<i64>) -> i64 {
        let longest = now + self.config.access_token_ttl_secs + 60;
        match kind {
            Kind::Jti => token_exp.unwrap_or(longest),
            Kind::Session => now + self.config.session_lifetime_secs.max(86_400 * 30),
            Kind::Agent | Kind::Human | Kind::Env => longest,
        }
    }

    /// Applies a persisted revocation here and shares it with every node.
    pub async fn publish_revocation(&self, r: &Revocation) -> Result<(), Unavailable> {
        self.replica.apply(r);
        if r.kind == Kind::Session
            && let Ok(Some(s)) = self.store.find_session(&r.value).await
        {
            self.drop_cached_session(&s.agent_id);
            self.backend
                .end_agent_session(&s.agent_id, Some(&r.value))
                .await?;
        }
        self.backend.share_revocation(r).await
    }

    fn drop_cached_session(&self, agent: &str) {
        if let Ok(mut m) = self.sessions.live.lock() {
            m.remove(agent);
        }
    }

    /// Revokes by kind and value (admin API, CLI through the server, `/revoke`).
    pub async fn revoke_kind(
        &self,
        by: crate::audit::Actor,
        kind: Kind,
        value: &str,
        client_id: Option<&str>,
        token_exp: Option<i64>,
    ) -> Result<Revocation, AdminError> {
        let now = self.clock.now();
        let r = Revocation {
            kind,
            value: value.to_string(),
            at: now,
            until: self.revocation_until(kind, now, token_exp),
        };
        self.admin_as(by).revoke(&r, client_id).await?;
        self.publish_revocation(&r)
            .await
            .map_err(|_| AdminError::Unavailable)?;
        Ok(r)
    }

    /// The kill switch: suspend, revoke everything the agent holds, end its sessions, tell
    /// every node.
    pub async fn kill_agent(&self, by: crate::audit::Actor, id: &str) -> Result<Agent, AdminError> {
        let now = self.clock.now();
        let until = self.revocation_until(Kind::Agent, now, None);
        let (agent, r) = self.admin_as(by).kill_agent(id, until).await?;
        self.drop_cached_session(id);
        self.publish_revocation(&r)
            .await
            .map_err(|_| AdminError::Unavailable)?;
        let _ = self.backend.end_agent_session(id, None).await;
        self.after_registry_change().await;
        Ok(agent)
    }

    /// Reloads the registry here and tells the other nodes to.
    pub async fn after_registry_change(&self) {
        if let Err(e) = self.refresh_registry(true).await {
            tracing::warn!(error = %e, "registry reload after change failed");
        }
        self.backend.share_registry_change().await;
    }

    /// Rebuilds the replica from the database, replaying it into Redis first if Redis lost it.
    pub async fn resync(&self, redis: &RedisBackend) -> Result<(), Unavailable> {
        let now = self.clock.now();
        let revocations = self
            .store
            .live_revocations(now)
            .await
            .map_err(|_| Unavailable)?;
        if !redis.has_epoch().await? {
            let sessions = self
                .store
                .live_sessions(now, None)
                .await
                .map_err(|_| Unavailable)?;
            tracing::warn!(
                revocations = revocations.len(),
                sessions = sessions.len(),
                "redis has no epoch marker (restarted empty?): replaying from the database"
            );
            redis.replay(&revocations, &sessions, now).await?;
        }
        self.replica.replace(&revocations);
        Ok(())
    }

    /// Keeps this node subscribed to the events channel for as long as `app` lives:
    /// resubscribe and resynchronise after every disconnect; mark the backend unhealthy in
    /// between so requests fail closed.
    pub fn spawn_redis_listener(
        self: &Arc<Self>,
        redis: Arc<RedisBackend>,
    ) -> tokio::task::JoinHandle<()> {
        use futures_util::StreamExt;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let connected = async {
                    let mut ps = redis.client.get_async_pubsub().await.ok()?;
                    ps.subscribe(redis.channel()).await.ok()?;
                    Some(ps)
                };
                let ps = tokio::time::timeout(Duration::from_secs(2), connected)
                    .await
                    .ok()
                    .flatten();
                let Some(app) = weak.upgrade() else { break };
                if let Some(mut ps) = ps {
                    if redis.ping().await && app.resync(&redis).await.is_ok() {
                        redis.set_listening(true);
                        backoff = Duration::from_millis(100);
                        tracing::info!("redis events: subscribed and resynchronised");
                        drop(app);
                        let mut stream = ps.on_message();
                        while let Some(msg) = stream.next().await {
                            let Some(app) = weak.upgrade() else { return };
                            let Ok(text) = msg.get_payload::<String>() else {
                                continue;
                            };
                            match Event::parse(&text) {
                                Some(Event::Revoked(r)) => app.replica.apply(&r),
                                Some(Event::RegistryChanged) => {
                                    if let Err(e) = app.refresh_registry(true).await {
                                        tracing::warn!(error = %e, "registry reload failed");
                                    }
                                }
                                None => tracing::debug!("ignoring unknown event"),
                            }
                        }
                        let Some(app) = weak.upgrade() else { return };
                        redis.set_listening(false);
                        app.metrics.revocation_store_failures.inc();
                        tracing::error!(
                            "redis events: connection lost; failing closed until it is back"
                        );
                        continue;
                    }
                    redis.set_listening(false);
                } else {
                    redis.set_listening(false);
                    app.metrics.revocation_store_failures.inc();
                }
                drop(app);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }

    /// PINGs Redis twice a second so a dead server is noticed even without traffic.
    pub fn spawn_redis_pinger(
        self: &Arc<Self>,
        redis: Arc<RedisBackend>,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(500));
            loop {
                interval.tick().await;
                if weak.strong_count() == 0 {
                    break;
                }
                if !redis.ping().await {
                    tracing::warn!("redis did not answer PING: failing closed");
                }
            }
        })
    }
}
