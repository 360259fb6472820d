//! The LRU caches of API IDs. Each sits behind a std `Mutex` that is only
//! held for a map operation, never across an `.await`.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lru::LruCache;
use tokio::time::Instant;

use crate::target::{ApiId, RemoteAccount, RemoteGroup};

/// What the account cache knows about a match value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CachedAccount {
    /// The account's API ID.
    Known(ApiId),
    /// Not cached, and the cache is inside its validity window after a
    /// complete prefill: the account does not exist on the target.
    TrustedAbsent,
    /// Not cached: ask the target.
    Unknown,
}

struct AccountState {
    lru: LruCache<String, ApiId>,
    /// Until when a miss means "absent" (set by a complete prefill).
    trusted_until: Option<Instant>,
    /// When the last prefill happened, complete or not: one listing per
    /// validity period at most, even when it cannot be trusted.
    prefilled_at: Option<Instant>,
}

/// Match value -> account API ID (`account_cache_size`,
/// `account_cache_validity_period`).
pub struct AccountCache {
    state: Mutex<AccountState>,
    validity: Duration,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn capacity(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the guard cannot leave a cache map half-written
    // in a way that matters: at worst an entry is missing, which means a lookup.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AccountCache {
    pub fn new(size: usize, validity: Duration) -> Self {
        AccountCache {
            state: Mutex::new(AccountState {
                lru: LruCache::new(capacity(size)),
                trusted_until: None,
                prefilled_at: None,
            }),
            validity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, match_value: &str) -> CachedAccount {
        let mut s = lock(&self.state);
        if let Some(id) = s.lru.get(match_value) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return CachedAccount::Known(id.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        match s.trusted_until {
            Some(until) if Instant::now() < until => CachedAccount::TrustedAbsent,
            _ => CachedAccount::Unknown,
        }
    }

    /// The cached ID without touching recency or the hit statistics.
    pub fn peek(&self, match_value: &str) -> Option<ApiId> {
        lock(&self.state).lru.peek(match_value).cloned()
    }

    pub fn put(&self, match_value: &str, api_id: &str) {
        let mut s = lock(&self.state);
        if s.lru.len() == s.lru.cap().get() && !s.lru.contains(match_value) {
            // An eviction makes a miss ambiguous again.
            s.trusted_until = None;
        }
        s.lru.put(match_value.to_string(), api_id.to_string());
    }

    pub fn remove(&self, match_value: &str) {
        lock(&self.state).lru.pop(match_value);
    }

    /// Fills the cache from a complete listing of the target's accounts. The
    /// cache is trusted for the validity period only if the listing fit whole.
    pub fn prefill(&self, accounts: &[RemoteAccount]) {
        let mut s = lock(&self.state);
        s.lru.clear();
        for a in accounts {
            s.lru.put(a.match_value.clone(), a.api_id.clone());
        }
        let complete = accounts.len() <= s.lru.cap().get();
        let now = Instant::now();
        s.prefilled_at = Some(now);
        s.trusted_until = (complete && !self.validity.is_zero()).then(|| now + self.validity);
    }

    /// Whether a prefill is due: the validity period is on and the last
    /// listing is older than it (or there was none).
    pub fn wants_prefill(&self) -> bool {
        !self.validity.is_zero()
            && lock(&self.state)
                .prefilled_at
                .is_none_or(|at| Instant::now() >= at + self.validity)
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

/// Subject -> match value, sized like the account cache: remembers match
/// values computed from attributes for later events that come without them.
pub struct SubjectCache {
    lru: Mutex<LruCache<String, String>>,
}

impl SubjectCache {
    pub fn new(size: usize) -> Self {
        SubjectCache {
            lru: Mutex::new(LruCache::new(capacity(size))),
        }
    }

    pub fn get(&self, subject: &str) -> Option<String> {
        lock(&self.lru).get(subject).cloned()
    }

    pub fn put(&self, subject: &str, match_value: &str) {
        lock(&self.lru).put(subject.to_string(), match_value.to_string());
    }
}

/// Remote group name -> API ID (`target_group_cache_size`).
pub struct GroupCache {
    lru: Mutex<LruCache<String, ApiId>>,
}

impl GroupCache {
    pub fn new(size: usize) -> Self {
        GroupCache {
            lru: Mutex::new(LruCache::new(capacity(size))),
        }
    }

    // Names are keyed lowercased: remote group names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<ApiId> {
        lock(&self.lru).get(&name.to_lowercase()).cloned()
    }

    pub fn put(&self, name: &str, api_id: &str) {
        lock(&self.lru).put(name.to_lowercase(), api_id.to_string());
    }

    pub fn remove(&self, name: &str) {
        lock(&self.lru).pop(&name.to_lowercase());
    }

    /// Caches the groups of a listing that the provisioner maps to, so that
    /// unrelated groups do not push mapped ones out.
    pub fn fill(&self, groups: &[RemoteGroup], wanted: impl Fn(&str) -> bool) {
        let mut lru = lock(&self.lru);
        for g in groups.iter().filter(|g| wanted(&g.name)) {
            lru.put(g.name.to_lowercase(), g.api_id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(m: &str, id: &str) -> RemoteAccount {
        RemoteAccount {
            api_id: id.into(),
            match_value: m.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prefilled_cache_is_trusted_only_within_the_validity_period() {
        let cache = AccountCache::new(10, Duration::from_secs(60));
        assert!(cache.wants_prefill());
        assert_eq!(cache.get("a"), CachedAccount::Unknown);
        cache.prefill(&[acct("a", "1"), acct("b", "2")]);
        assert!(!cache.wants_prefill());
        assert_eq!(cache.get("a"), CachedAccount::Known("1".into()));
        assert_eq!(cache.get("zz"), CachedAccount::TrustedAbsent);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.get("zz"), CachedAccount::Unknown);
        assert!(cache.wants_prefill());
    }

    #[tokio::test(start_paused = true)]
    async fn incomplete_prefill_or_eviction_is_never_trusted() {
        let cache = AccountCache::new(2, Duration::from_secs(60));
        cache.prefill(&[acct("a", "1"), acct("b", "2"), acct("c", "3")]);
        assert_eq!(cache.get("x"), CachedAccount::Unknown);
        assert!(
            !cache.wants_prefill(),
            "an untrusted listing is not repeated within the period"
        );
        cache.prefill(&[acct("a", "1"), acct("b", "2")]);
        assert_eq!(cache.get("x"), CachedAccount::TrustedAbsent);
        cache.put("c", "3");
        assert_eq!(
            cache.get("x"),
            CachedAccount::Unknown,
            "eviction ends trust"
        );
    }

    #[test]
    fn zero_validity_never_trusts_and_lru_evicts_oldest() {
        let cache = AccountCache::new(2, Duration::ZERO);
        cache.prefill(&[acct("a", "1")]);
        assert_eq!(cache.get("x"), CachedAccount::Unknown);
        cache.put("b", "2");
        cache.get("a");
        cache.put("c", "3");
        assert_eq!(
            cache.get("b"),
            CachedAccount::Unknown,
            "b was least recently used"
        );
        assert_eq!(cache.get("a"), CachedAccount::Known("1".into()));
        let groups = GroupCache::new(1);
        groups.fill(
            &[
                RemoteGroup {
                    name: "Other".into(),
                    api_id: "g0".into(),
                },
                RemoteGroup {
                    name: "Staff".into(),
                    api_id: "g1".into(),
                },
            ],
            |n| n == "Staff",
        );
        assert_eq!(groups.get("Staff"), Some("g1".into()));
        assert_eq!(groups.get("Other"), None);
    }
}
