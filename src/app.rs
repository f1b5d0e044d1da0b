//! The wiring: `App` holds everything a request needs; `AppState(Arc<App>)` is what axum
//! handlers receive. No global singletons.
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oauth::client_auth::RemoteJwks;
use crate::registry::Registry;
use crate::registry::admin::{Admin, AdminError};
use crate::sessions::{MemoryStore, ReplayCache, RevocationStore, Unavailable};
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
}

pub struct App {
    pub config: Config,
    pub issuer: String,
    pub token_endpoint: String,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub kek: Kek,
    pub metrics: Metrics,
    pub revocations: Arc<dyn RevocationStore>,
    pub replay: Arc<dyn ReplayCache>,
    pub remote_jwks: RemoteJwks,
    /// Tokens whose signatures this node has checked.
    pub verified: crate::tokens::VerifiedCache,
    pub throttle: crate::oauth::throttle::FailureThrottle,
    /// The audit log: this node's stream and its batch writer.
    pub audit: crate::audit::Audit,
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
        let registry = Registry::from_rows(store.load_registry().await?, &kek);
        let metrics = Metrics::default();
        let audit = crate::audit::Audit::start(&config, schema, clock.clone(), &metrics).await?;
        let memory = Arc::new(MemoryStore::default());
        let app = Arc::new(Self {
            token_endpoint: format!("{issuer}/token"),
            issuer,
            config,
            store,
            clock,
            kek,
            metrics,
            revocations: memory,
            replay: Arc::new(MemoryStore::default()),
            remote_jwks: RemoteJwks::default(),
            verified: Default::default(),
            throttle: Default::default(),
            audit,
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

    /// Reloads the registry if its version moved (another node, the CLI, or this node's admin
    /// API changed it).
    pub async fn refresh_registry(&self, force: bool) -> Result<(), StoreError> {
        let current = self.registry.load().version;
        if !force && self.store.registry_version().await? == current {
            return Ok(());
        }
        let rows = self.store.load_registry().await?;
        let reg = Registry::from_rows(rows, &self.kek);
        tracing::debug!(version = reg.version, "registry reloaded");
        self.registry.store(Arc::new(reg));
        Ok(())
    }

    /// Copies revocations made elsewhere (other nodes, the CLI, before a restart) into the
    /// local store. Each pass re-reads a short overlap, so a row committed late or stamped by a
    /// node with a slightly different clock is not missed; re-adding one is harmless.
    pub async fn sync_revocations(&self) -> Result<(), StoreError> {
        let since = self.revocations_synced_at.load(Ordering::SeqCst);
        let now = self.clock.now();
        for r in self.store.revocations_created_since(since, now).await? {
            if r.kind == "jti"
                && self
                    .revocations
                    .revoke_jti(&r.value, r.expires_at)
                    .await
                    .is_err()
            {
                self.metrics.revocation_store_failures.inc();
                return Ok(()); // retried on the next tick from the same point
            }
        }
        self.revocations_synced_at.store(now - 10, Ordering::SeqCst);
        Ok(())
    }

    /// Revokes one token id: durably in the database (with its audit event, in one
    /// transaction), then in the revocation store.
    pub async fn revoke_jti(
        &self,
        by: crate::audit::Actor,
        jti: &str,
        client_id: Option<&str>,
        expires_at: i64,
    ) -> Result<(), Unavailable> {
        let now = self.clock.now();
        let trail = self.audit.trail(by);
        crate::audit::record::persist_revocation(
            &self.store,
            &trail,
            "jti",
            jti,
            client_id,
            expires_at,
            now,
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot persist revocation");
            Unavailable
        })?;
        self.revocations.revoke_jti(jti, expires_at).await
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
        self.revocations.prune(now).await;
        self.replay.prune(now).await;
        self.throttle.prune(now);
    }

    /// Runs `tick` every refresh interval until the app is dropped elsewhere.
    pub fn spawn_upkeep(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let every = std::time::Duration::from_millis(self.config.refresh_interval_ms.max(50));
        tokio::spawn(async move {
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
                }
            }
        })
    }
}
