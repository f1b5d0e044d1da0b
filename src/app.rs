//! The wiring: `App` holds everything a request needs; `AppState(Arc<App>)` is what axum
//! handlers receive. No global singletons.
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oauth::client_auth::RemoteJwks;
use crate::registry::Registry;
use crate::registry::admin::{Admin, AdminError};
use crate::sessions::manager::SessionCache;
use crate::sessions::redis::RedisBackend;
use crate::sessions::{Backend, MemoryBackend, Replica};
use crate::store::{Store, StoreError};
use crate::tokens::keys::{Kek, KeyError};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("redis: {0}")]
    Redis(String),
}

pub struct App {
    pub config: Config,
    pub issuer: String,
    pub token_endpoint: String,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub kek: Kek,
    pub metrics: Metrics,
    /// This node's copy of every live revocation (the hot path reads only this).
    pub replica: Replica,
    /// Sessions, replay caches and cross-node events: Redis, or in-process.
    pub backend: Arc<dyn Backend>,
    pub redis: Option<Arc<RedisBackend>>,
    pub sessions: SessionCache,
    pub remote_jwks: RemoteJwks,
    /// Tokens whose signatures this node has checked.
    pub verified: crate::tokens::VerifiedCache,
    pub throttle: crate::oauth::throttle::FailureThrottle,
    /// The audit log: this node's stream and its batch writer.
    pub audit: crate::audit::Audit,
    /// Trusted external issuers (token exchange, ID-JAG, workload identity).
    pub trust: crate::oauth::trust::Trust,
    /// Humans: the WebAuthn relying party, upstream OIDC.
    pub humans: crate::humans::Humans,
    /// Client ID Metadata Documents fetched and still fresh.
    pub client_documents: crate::clients::cimd::DocumentCache,
    /// Human approval requests: live changes and the webhook.
    pub approvals: crate::approvals::Approvals,
    registry: ArcSwap<Registry>,
    revocations_synced_at: AtomicI64,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// What axum handlers receive.
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// Opens the database named by the configuration and brings its schema up to date.
pub async fn open_store(config: &Config, schema: Option<&str>) -> Result<Store, StoreError> {
    let store = Store::connect(&config.database_url(), schema).await?;
    store.migrate().await?;
    Ok(store)
}

impl App {
    /// Connects, migrates, makes sure a signing key exists and loads the registry.
    pub async fn start(
        config: Config,
        issuer: String,
        clock: Arc<dyn Clock>,
        schema: Option<&str>,
    ) -> Result<Arc<Self>, StartError> {
        let store = open_store(&config, schema).await?;
        let kek = Kek::load(config.key_encryption_key.as_deref(), &config.data_dir)?;
        Admin {
            store: &store,
            now: clock.now(),
            audit: crate::audit::Trail::new(&config, crate::audit::Actor::system()),
        }
        .ensure_key(&config.signing_alg, &kek)
        .await?;
        crate::policy::store::ensure_default(
            &store,
            clock.now(),
            &crate::audit::Trail::new(&config, crate::audit::Actor::system()),
        )
        .await?;
        let registry = Registry::from_rows(store.load_registry().await?, &kek);
        let metrics = Metrics::default();
        let audit = crate::audit::Audit::start(&config, schema, clock.clone(), &metrics).await?;
        let redis = match &config.redis_url {
            Some(url) => Some(Arc::new(
                RedisBackend::connect(url, &config.redis_prefix)
                    .await
                    .map_err(StartError::Redis)?,
            )),
            None => None,
        };
        match &config.redis_url {
            Some(_) => {
                tracing::info!(prefix = %config.redis_prefix, "sessions and revocation: redis")
            }
            None => tracing::info!("sessions and revocation: in-process (no redis_url)"),
        }
        if let Some(email) = &config.dev_auto_approve_email {
            tracing::warn!(
                email,
                "DEVELOPMENT MODE: dev_auto_approve_email is set: /authorize signs this person in \
                 and approves every consent without asking; never use this in production"
            );
        }
        if config.dev_allow_loopback_clients {
            tracing::warn!(
                "DEVELOPMENT MODE: dev_allow_loopback_clients is set: client metadata documents \
                 are fetched from loopback addresses"
            );
        }
        let backend: Arc<dyn Backend> = match &redis {
            Some(r) => r.clone(),
            None => Arc::new(MemoryBackend::default()),
        };
        let trust = crate::oauth::trust::Trust::new(&config.trusted_issuers);
        let humans = crate::humans::Humans::new(&issuer, &config);
        let app = Arc::new(Self {
            approvals: crate::approvals::Approvals::new(&config),
            humans,
            token_endpoint: format!("{issuer}/token"),
            issuer,
            config,
            store,
            clock,
            kek,
            metrics,
            replica: Replica::default(),
            backend,
            redis,
            sessions: SessionCache::default(),
            remote_jwks: RemoteJwks::default(),
            verified: Default::default(),
            throttle: Default::default(),
            audit,
            trust,
            client_documents: Default::default(),
            registry: ArcSwap::from_pointee(registry),
            revocations_synced_at: AtomicI64::new(i64::MIN),
        });
        app.sync_revocations().await?;
        Ok(app)
    }

    /// The current registry snapshot.
    pub fn registry(&self) -> arc_swap::Guard<Arc<Registry>> {
        self.registry.load()
    }

    /// The registry write service, as the system (start-up, tests).
    pub fn admin(&self) -> Admin<'_> {
        self.admin_as(crate::audit::Actor::system())
    }

    /// The registry write service, for changes made by `actor` (audited).
    pub fn admin_as(&self, actor: crate::audit::Actor) -> Admin<'_> {
        Admin {
            store: &self.store,
            now: self.clock.now(),
            audit: self.audit.trail(actor),
        }
    }

    /// The policy write service, for changes made by `actor` (audited).
    pub fn policy_admin_as(
        &self,
        actor: crate::audit::Actor,
    ) -> crate::policy::service::PolicyAdmin<'_> {
        crate::policy::service::PolicyAdmin {
            store: &self.store,
            now: self.clock.now(),
            trail: self.audit.trail(actor),
        }
    }

    /// Reloads the registry if its version moved (another node, the CLI, or this node's admin
    /// API changed it).
    pub async fn refresh_registry(&self, force: bool) -> Result<(), StoreError> {
        let current = self.registry.load().version;
        if !force && self.store.registry_version().await? == current {
            return Ok(());
        }
        let rows = self.store.load_registry().await?;
        let fresh = Arc::new(Registry::from_rows(rows, &self.kek));
        // Reloads can overlap (an event, the poll, an admin change): never let a slower one
        // that read an older version replace a newer snapshot.
        self.registry.rcu(|cur| {
            if fresh.version >= cur.version {
                fresh.clone()
            } else {
                cur.clone()
            }
        });
        tracing::debug!(version = fresh.version, "registry reloaded");
        Ok(())
    }

    /// Copies revocations made elsewhere (other nodes, the CLI, before a restart) into the
    /// replica. Each pass re-reads a short overlap, so a row committed late or stamped by a
    /// node with a slightly different clock is not missed; re-applying one is harmless. With
    /// Redis this is the safety net under pub/sub; without it, how nodes learn of revocations.
    pub async fn sync_revocations(&self) -> Result<(), StoreError> {
        let since = self.revocations_synced_at.load(Ordering::SeqCst);
        let now = self.clock.now();
        for r in self.store.revocations_created_since(since, now).await? {
            if let Some(r) = crate::store::revocation_from_row(r) {
                self.replica.apply(&r);
            }
        }
        self.revocations_synced_at.store(now - 10, Ordering::SeqCst);
        Ok(())
    }

    /// One tick of background upkeep: pick up changes, forget what has expired.
    pub async fn tick(&self) {
        if let Err(e) = self.refresh_registry(false).await {
            tracing::warn!(error = %e, "registry refresh failed");
        }
        if let Err(e) = self.sync_revocations().await {
            tracing::warn!(error = %e, "revocation sync failed");
        }
        let now = self.clock.now();
        self.replica.prune(now);
        self.backend.prune(now);
        self.throttle.prune(now);
        self.flush_sessions(now).await;
    }

    /// Runs `tick` every refresh interval until the app is dropped elsewhere, and, with Redis,
    /// the events listener and the health pinger.
    pub fn spawn_upkeep(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(redis) = &self.redis {
            tasks.push(self.spawn_redis_listener(redis.clone()));
            tasks.push(self.spawn_redis_pinger(redis.clone()));
        }
        tasks.push(crate::approvals::spawn_sweeper(self));
        let weak = Arc::downgrade(self);
        let every = std::time::Duration::from_millis(self.config.refresh_interval_ms.max(50));
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut pruned_at = 0i64;
            loop {
                interval.tick().await;
                let Some(app) = weak.upgrade() else { break };
                app.tick().await;
                let now = app.clock.now();
                if now - pruned_at > 3600 {
                    pruned_at = now;
                    if let Err(e) = app.store.prune_revocations(now).await {
                        tracing::warn!(error = %e, "pruning revocations failed");
                    }
                    if let Err(e) = crate::clients::store::ClientStore(&app.store)
                        .prune_codes(now)
                        .await
                    {
                        tracing::warn!(error = %e, "pruning authorization codes failed");
                    }
                }
            }
        }));
        tasks
    }
}
