//! Revocation and replay state. Both sit behind traits so the shared Redis implementation
//! (multi-node) slots in beside the in-process one that the embedded default uses.
use std::collections::HashMap;
use std::sync::Mutex;

/// The store cannot answer; callers fail closed.
#[derive(Debug, thiserror::Error)]
#[error("revocation store unavailable")]
pub struct Unavailable;

/// Revoked token ids (`jti`), each kept until the token would have expired anyway.
#[async_trait::async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<(), Unavailable>;
    async fn is_revoked(&self, jti: &str) -> Result<bool, Unavailable>;
    /// Drops entries that expired before `now`.
    async fn prune(&self, now: i64);
}

/// Single-use values (assertion `jti`s): `first_use` is true exactly once per key until it
/// expires.
#[async_trait::async_trait]
pub trait ReplayCache: Send + Sync + 'static {
    async fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, Unavailable>;
    async fn prune(&self, now: i64);
}

/// In-process store for one node (the embedded default).
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<HashMap<String, i64>>,
}

impl MemoryStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, i64>>, Unavailable> {
        self.entries.lock().map_err(|_| Unavailable)
    }
    fn prune_now(&self, now: i64) {
        if let Ok(mut m) = self.entries.lock() {
            m.retain(|_, exp| *exp > now);
        }
    }
}

#[async_trait::async_trait]
impl RevocationStore for MemoryStore {
    async fn revoke_jti(&self, jti: &str, expires_at: i64) -> Result<(), Unavailable> {
        self.lock()?.insert(jti.to_string(), expires_at);
        Ok(())
    }
    async fn is_revoked(&self, jti: &str) -> Result<bool, Unavailable> {
        Ok(self.lock()?.contains_key(jti))
    }
    async fn prune(&self, now: i64) {
        self.prune_now(now);
    }
}

#[async_trait::async_trait]
impl ReplayCache for MemoryStore {
    async fn first_use(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, Unavailable> {
        let mut m = self.lock()?;
        match m.get(key) {
            Some(exp) if *exp > now => Ok(false),
            _ => {
                m.insert(key.to_string(), expires_at);
                Ok(true)
            }
        }
    }
    async fn prune(&self, now: i64) {
        self.prune_now(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replay_cache_allows_once_until_expiry() {
        let c = MemoryStore::default();
        assert!(c.first_use("a", 100, 10).await.unwrap());
        assert!(!c.first_use("a", 100, 50).await.unwrap());
        assert!(c.first_use("a", 200, 100).await.unwrap());
    }

    #[tokio::test]
    async fn revocations_prune_after_expiry() {
        let s = MemoryStore::default();
        s.revoke_jti("j", 100).await.unwrap();
        assert!(s.is_revoked("j").await.unwrap());
        RevocationStore::prune(&s, 100).await;
        assert!(!s.is_revoked("j").await.unwrap());
    }
}
