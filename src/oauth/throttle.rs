//! Brute-force protection for client authentication (OAuth 2.1 §2.4.1, RFC 6749 §2.3.1 MUST):
//! after too many failures for one client id from one address within a window, further
//! attempts are refused without being checked until the window ends.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures allowed per (client id, address) per window.
pub const MAX_FAILURES: u32 = 10;
/// The window, in seconds.
pub const WINDOW_SECS: i64 = 60;
/// Entries kept at most; past this, the oldest windows are dropped first.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub struct FailureThrottle {
    map: Mutex<HashMap<(String, IpAddr), (i64, u32)>>,
}

impl FailureThrottle {
    /// Seconds until `client_id` may try again from `ip`, if it is blocked now.
    pub fn blocked(&self, client_id: &str, ip: IpAddr, now: i64) -> Option<i64> {
        let map = self.map.lock().ok()?;
        let (start, count) = map.get(&(client_id.to_string(), ip))?;
        (*count >= MAX_FAILURES && now < start + WINDOW_SECS).then(|| start + WINDOW_SECS - now)
    }

    pub fn record_failure(&self, client_id: &str, ip: IpAddr, now: i64) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (start, _)| now < *start + WINDOW_SECS);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let entry = map.entry((client_id.to_string(), ip)).or_insert((now, 0));
        if now >= entry.0 + WINDOW_SECS {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    pub fn prune(&self, now: i64) {
        if let Ok(mut map) = self.map.lock() {
            map.retain(|_, (start, _)| now < *start + WINDOW_SECS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_too_many_failures_until_the_window_ends() {
        let t = FailureThrottle::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..MAX_FAILURES {
            assert!(t.blocked("c", ip, 100).is_none());
            t.record_failure("c", ip, 100);
        }
        assert_eq!(t.blocked("c", ip, 110), Some(50));
        assert!(t.blocked("other", ip, 110).is_none());
        assert!(t.blocked("c", [10, 0, 0, 1].into(), 110).is_none());
        assert!(t.blocked("c", ip, 160).is_none());
    }
}
