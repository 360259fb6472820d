//! The LRU caches of API IDs. Each sits behind a std `Mutex` that is only
//! held for a map operation, never across an `.await`.

use std::collections::HashSet;
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
    /// Accounts known to exist whose API ID is not known (their create did not
    /// name it): never "absent", not even in the trusted window, until a
    /// prefill lists them.
    unnamed: HashSet<String>,
    /// Until when a miss means "absent" (set by a complete prefill).
    trusted_until: Option<Instant>,
    /// When the last prefill happened, complete or not: one listing per
    /// validity period at most, even when it cannot be trusted.
    prefilled_at: Option<Instant>,
    /// Listings begun and not yet prefilled or abandoned.
    open_listings: usize,
    /// Counts changes; a listing remembers the count it began at.
    version: u64,
    /// The changes made while a listing was open, with their version: a
    /// listing may predate them, so its prefill applies them after its own
    /// accounts.
    journal: Vec<(u64, String, Change)>,
    /// More changes came in while listings were open than the journal keeps:
    /// their prefills are not trusted.
    journal_overflowed: bool,
}

#[derive(Debug, Clone)]
enum Change {
    Put(ApiId),
    Remove,
    Unnamed,
}

impl AccountState {
    fn note(&mut self, match_value: &str, change: Change) {
        self.version += 1;
        if self.open_listings == 0 {
            return;
        }
        if self.journal.len() >= self.lru.cap().get() {
            self.journal_overflowed = true;
            return;
        }
        self.journal
            .push((self.version, match_value.to_string(), change));
    }

    /// Applies a change to the maps; `false` when it evicted an entry.
    fn apply(&mut self, match_value: &str, change: Change) -> bool {
        match change {
            Change::Put(api_id) => {
                self.unnamed.remove(match_value);
                let evicts =
                    self.lru.len() == self.lru.cap().get() && !self.lru.contains(match_value);
                self.lru.put(match_value.to_string(), api_id);
                !evicts
            }
            Change::Remove => {
                self.unnamed.remove(match_value);
                self.lru.pop(match_value);
                true
            }
            Change::Unnamed => {
                self.lru.pop(match_value);
                self.unnamed.insert(match_value.to_string());
                // Bounded like the cache: past that, no miss can be trusted.
                self.unnamed.len() <= self.lru.cap().get()
            }
        }
    }

    fn change(&mut self, match_value: &str, change: Change) {
        self.note(match_value, change.clone());
        if !self.apply(match_value, change) {
            // An eviction makes a miss ambiguous again.
            self.trusted_until = None;
        }
    }
}

/// A listing of the target's accounts in progress, from
/// [`AccountCache::begin_listing`] to [`AccountCache::prefill`]. Dropping it
/// unused (the listing failed) is fine.
pub struct Listing<'a> {
    cache: &'a AccountCache,
    since: u64,
}

impl Drop for Listing<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.cache.state);
        s.open_listings = s.open_listings.saturating_sub(1);
        if s.open_listings == 0 {
            s.journal.clear();
            s.journal_overflowed = false;
        }
    }
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
                unnamed: HashSet::new(),
                trusted_until: None,
                prefilled_at: None,
                open_listings: 0,
                version: 0,
                journal: Vec::new(),
                journal_overflowed: false,
            }),
            validity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Forgets every ID and any trust in absences (an operator's request):
    /// the next events ask the target, or list it again.
    pub fn clear(&self) {
        let mut s = lock(&self.state);
        s.lru.clear();
        s.unnamed.clear();
        s.trusted_until = None;
        s.prefilled_at = None;
    }

    pub fn get(&self, match_value: &str) -> CachedAccount {
        let mut s = lock(&self.state);
        if let Some(id) = s.lru.get(match_value) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return CachedAccount::Known(id.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if s.unnamed.contains(match_value) {
            return CachedAccount::Unknown;
        }
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
        lock(&self.state).change(match_value, Change::Put(api_id.to_string()));
    }

    pub fn remove(&self, match_value: &str) {
        lock(&self.state).change(match_value, Change::Remove);
    }

    /// The account exists but its API ID is unknown (a create that did not
    /// name it): a miss on it must ask the target.
    pub fn put_unnamed(&self, match_value: &str) {
        lock(&self.state).change(match_value, Change::Unnamed);
    }

    /// To be called just before listing the target's accounts for
    /// [`prefill`](Self::prefill).
    pub fn begin_listing(&self) -> Listing<'_> {
        let mut s = lock(&self.state);
        s.open_listings += 1;
        Listing {
            cache: self,
            since: s.version,
        }
    }

    /// Fills the cache from a complete listing of the target's accounts,
    /// begun with `listing`. Changes made since the listing began are kept
    /// over what it shows. The cache is trusted for the validity period only
    /// if everything fit whole.
    pub fn prefill(&self, listing: Listing<'_>, accounts: &[RemoteAccount]) {
        let mut s = lock(&self.state);
        s.lru.clear();
        s.unnamed.clear();
        let mut complete = accounts.len() <= s.lru.cap().get() && !s.journal_overflowed;
        for a in accounts {
            s.lru.put(a.match_value.clone(), a.api_id.clone());
        }
        let later: Vec<(String, Change)> = s
            .journal
            .iter()
            .filter(|(version, _, _)| *version > listing.since)
            .map(|(_, m, c)| (m.clone(), c.clone()))
            .collect();
        for (match_value, change) in later {
            complete &= s.apply(&match_value, change);
        }
        let now = Instant::now();
        s.prefilled_at = Some(now);
        s.trusted_until = (complete && !self.validity.is_zero()).then(|| now + self.validity);
        drop(s);
        drop(listing);
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

    pub fn clear(&self) {
        lock(&self.lru).clear();
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

    pub fn clear(&self) {
        lock(&self.lru).clear();
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
            in_step: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prefilled_cache_is_trusted_only_within_the_validity_period() {
        let cache = AccountCache::new(10, Duration::from_secs(60));
        assert!(cache.wants_prefill());
        assert_eq!(cache.get("a"), CachedAccount::Unknown);
        cache.prefill(cache.begin_listing(), &[acct("a", "1"), acct("b", "2")]);
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
        cache.prefill(
            cache.begin_listing(),
            &[acct("a", "1"), acct("b", "2"), acct("c", "3")],
        );
        assert_eq!(cache.get("x"), CachedAccount::Unknown);
        assert!(
            !cache.wants_prefill(),
            "an untrusted listing is not repeated within the period"
        );
        cache.prefill(cache.begin_listing(), &[acct("a", "1"), acct("b", "2")]);
        assert_eq!(cache.get("x"), CachedAccount::TrustedAbsent);
        cache.put("c", "3");
        assert_eq!(
            cache.get("x"),
            CachedAccount::Unknown,
            "eviction ends trust"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn changes_made_while_a_listing_runs_win_over_it() {
        let cache = AccountCache::new(10, Duration::from_secs(60));
        cache.put("gone", "0");
        let listing = cache.begin_listing();
        // The listing's pages are read here; meanwhile other events change things.
        cache.put("new", "9");
        cache.remove("gone");
        cache.put_unnamed("nameless");
        cache.prefill(listing, &[acct("a", "1"), acct("gone", "0")]);
        assert_eq!(cache.get("new"), CachedAccount::Known("9".into()));
        assert_eq!(cache.get("gone"), CachedAccount::TrustedAbsent);
        assert_eq!(cache.get("nameless"), CachedAccount::Unknown);
        assert_eq!(cache.get("a"), CachedAccount::Known("1".into()));
        assert_eq!(cache.get("zz"), CachedAccount::TrustedAbsent);

        // Changes from before a listing began are what it shows instead.
        cache.put("b", "2");
        cache.prefill(cache.begin_listing(), &[acct("a", "1")]);
        assert_eq!(cache.get("b"), CachedAccount::TrustedAbsent);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_listing_keeps_nothing_and_too_many_changes_end_trust() {
        let cache = AccountCache::new(3, Duration::from_secs(60));
        drop(cache.begin_listing());
        cache.put("x", "1");
        cache.prefill(cache.begin_listing(), &[]);
        assert_eq!(
            cache.get("x"),
            CachedAccount::TrustedAbsent,
            "not journaled"
        );

        let listing = cache.begin_listing();
        for i in 0..4 {
            cache.put(&format!("m{i}"), "1");
        }
        cache.prefill(listing, &[]);
        assert_eq!(cache.get("other"), CachedAccount::Unknown);
    }

    #[tokio::test(start_paused = true)]
    async fn an_account_without_a_known_id_is_never_trusted_absent() {
        let cache = AccountCache::new(2, Duration::from_secs(60));
        cache.prefill(cache.begin_listing(), &[]);
        cache.put_unnamed("a");
        assert_eq!(cache.get("a"), CachedAccount::Unknown);
        assert_eq!(cache.get("b"), CachedAccount::TrustedAbsent);
        cache.put("a", "1");
        assert_eq!(cache.get("a"), CachedAccount::Known("1".into()));
        // More of them than the cache holds: no miss is trusted any more.
        for m in ["c", "d", "e"] {
            cache.put_unnamed(m);
        }
        assert_eq!(cache.get("b"), CachedAccount::Unknown);
        // A full listing names them (or shows they are gone).
        cache.prefill(cache.begin_listing(), &[acct("c", "3")]);
        assert_eq!(cache.get("d"), CachedAccount::TrustedAbsent);
        assert_eq!(cache.get("c"), CachedAccount::Known("3".into()));
    }

    #[test]
    fn zero_validity_never_trusts_and_lru_evicts_oldest() {
        let cache = AccountCache::new(2, Duration::ZERO);
        cache.prefill(cache.begin_listing(), &[acct("a", "1")]);
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
