//! Ownership: what the engine records as created or adopted, what it
//! forgets, and what `remove_only_owned` leaves alone (deprovisions,
//! membership removals, both kinds of full sync), over the in-memory
//! records.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::engine::ownership::{Acquired, MemoryOwnership, Owned, Ownership, OwnershipError};

const P: &str = "t";

/// An engine recording in `store`.
fn owning(config: &ProvisionerConfig, t: &Arc<MemoryTarget>, store: &MemoryOwnership) -> Engine {
    Engine::new(config, t.clone()).with_ownership(Arc::new(store.clone()))
}

fn only_owned() -> ProvisionerConfig {
    cfg("remove_only_owned = true")
}

fn how(store: &MemoryOwnership, api_id: &str) -> Option<Acquired> {
    store.account(P, api_id).map(|o| o.how)
}

fn member_how(store: &MemoryOwnership, member: &str) -> Option<Acquired> {
    store.membership(P, "staff", member).map(|o| o.how)
}

#[tokio::test]
async fn creates_and_adds_are_recorded_as_created_existing_ones_as_adopted() {
    let t = MemoryTarget::new()
        .with_accounts(["old"])
        .with_group("Staff", ["old"])
        .arc();
    let store = MemoryOwnership::default();
    let e = owning(&only_owned(), &t, &store);
    applied(&e, &t, &one("add", PG, "new")).await;
    applied(&e, &t, &one("add", PG, "old")).await;
    assert_eq!(how(&store, "u-new"), Some(Acquired::Created));
    assert_eq!(how(&store, "u-old"), Some(Acquired::Adopted));
    assert_eq!(
        store.account(P, "u-new").map(|o| o.subject),
        Some("new".to_string())
    );

    applied(&e, &t, &one("add", STAFF, "new")).await;
    assert_eq!(member_how(&store, "u-new"), Some(Acquired::Created));
    assert_eq!(member_how(&store, "u-old"), None, "not added by an event");

    // A later event that finds the account keeps the first record.
    applied(&e, &t, &one("update", PG, "new")).await;
    assert_eq!(how(&store, "u-new"), Some(Acquired::Created));

    // Removed: forgotten, the account with its memberships.
    applied(&e, &t, &one("delete", PG, "new")).await;
    assert_eq!(how(&store, "u-new"), None);
    assert_eq!(member_how(&store, "u-new"), None);
}

#[tokio::test]
async fn query_first_group_adds_adopt_a_membership_already_there() {
    let t = MemoryTarget::new()
        .with_accounts(["old"])
        .with_group("Staff", ["old"])
        .arc();
    let store = MemoryOwnership::default();
    let e = owning(
        &cfg("group_sync_strategy = \"query-first\"\nremove_only_owned = true"),
        &t,
        &store,
    );
    let calls = applied(&e, &t, &one("add", STAFF, "old")).await;
    assert!(
        !calls.iter().any(|c| c.starts_with("add_member")),
        "{calls:?}"
    );
    assert_eq!(member_how(&store, "u-old"), Some(Acquired::Adopted));
    applied(&e, &t, &one("delete", STAFF, "old")).await;
    assert_eq!(member_how(&store, "u-old"), None, "removed: forgotten");
}

#[tokio::test]
async fn a_create_whose_answer_names_no_id_is_looked_up_to_be_recorded() {
    let t = MemoryTarget::new().creating_without_ids().arc();
    let store = MemoryOwnership::default();
    let e = owning(&only_owned(), &t, &store);
    let calls = applied(&e, &t, &one("add", PG, "new")).await;
    assert_eq!(calls, ["lookup new", "create new", "lookup new"]);
    assert_eq!(how(&store, "u-new"), Some(Acquired::Created));
}

#[tokio::test]
async fn a_deprovision_of_an_account_not_owned_is_left_alone_and_reported() {
    let t = MemoryTarget::new().with_accounts(["stranger"]).arc();
    let store = MemoryOwnership::default();
    let e = owning(&only_owned(), &t, &store);
    let (outcome, calls) = ok(&e, &t, &one("delete", PG, "stranger")).await;
    assert_eq!(outcome.status, OutcomeStatus::Ignored);
    assert_eq!(
        outcome.detail,
        "account u-stranger (`stranger`) left alone: not owned"
    );
    assert_eq!(calls, ["lookup stranger"]);
    assert_eq!(t.account_list(), ["stranger"]);

    // Adopted by an add, it is the worker's to remove.
    applied(&e, &t, &one("add", PG, "stranger")).await;
    assert_eq!(
        applied(&e, &t, &one("delete", PG, "stranger")).await,
        ["deprovision u-stranger"]
    );
    assert!(t.account_list().is_empty());
}

#[tokio::test]
async fn without_remove_only_owned_a_deprovision_removes_what_the_worker_never_made() {
    let t = MemoryTarget::new().with_accounts(["stranger"]).arc();
    let store = MemoryOwnership::default();
    let e = owning(&cfg(""), &t, &store);
    assert_eq!(
        applied(&e, &t, &one("delete", PG, "stranger")).await,
        ["lookup stranger", "deprovision u-stranger"]
    );
}

#[tokio::test]
async fn a_membership_removal_not_owned_is_left_alone() {
    let t = MemoryTarget::new()
        .with_accounts(["stranger"])
        .with_group("Staff", ["stranger"])
        .arc();
    let store = MemoryOwnership::default();
    let e = owning(&only_owned(), &t, &store);
    let (outcome, calls) = ok(&e, &t, &one("delete", STAFF, "stranger")).await;
    assert_eq!(outcome.status, OutcomeStatus::Ignored);
    assert_eq!(
        outcome.detail,
        "membership of u-stranger (`stranger`) in Staff left alone: not owned"
    );
    assert!(!calls.iter().any(|c| c.starts_with("remove")), "{calls:?}");
    assert_eq!(t.members("Staff"), set(["stranger"]));
}

/// The target: `s1`, `s2` never made by the worker, `mine` created by it,
/// all three members of Staff (`mine` added by the worker).
async fn strangers_and_mine(
    config: &ProvisionerConfig,
) -> (Arc<MemoryTarget>, MemoryOwnership, Engine) {
    let t = MemoryTarget::new()
        .with_accounts(["s1", "s2"])
        .with_group("Staff", ["s1", "s2"])
        .arc();
    let store = MemoryOwnership::default();
    let e = owning(config, &t, &store);
    applied(&e, &t, &one("add", PG, "mine")).await;
    applied(&e, &t, &one("add", STAFF, "mine")).await;
    t.take_calls();
    (t, store, e)
}

#[tokio::test]
async fn an_account_sync_with_remove_only_owned_removes_only_owned_accounts() {
    let (t, store, e) = strangers_and_mine(&only_owned()).await;
    let (outcome, calls) = ok(&e, &t, &sync(PG, ["alice"])).await;
    assert_eq!(
        calls,
        ["list_accounts", "create alice", "deprovision u-mine"]
    );
    assert_eq!(t.account_list(), ["alice", "s1", "s2"]);
    assert_eq!(
        outcome.detail,
        "account sync: 1 created, 0 updated, 0 already up to date, 1 deprovisioned, 2 left alone: not owned: s1; s2"
    );
    assert_eq!(how(&store, "u-alice"), Some(Acquired::Created));
    assert_eq!(how(&store, "u-mine"), None);
}

#[tokio::test]
async fn an_account_sync_without_remove_only_owned_removes_every_unlisted_account() {
    let (t, _, e) = strangers_and_mine(&cfg("")).await;
    let (outcome, calls) = ok(&e, &t, &sync(PG, ["alice"])).await;
    assert_eq!(
        calls,
        [
            "list_accounts",
            "create alice",
            "deprovision u-mine",
            "deprovision u-s1",
            "deprovision u-s2"
        ]
    );
    assert_eq!(t.account_list(), ["alice"]);
    assert!(!outcome.detail.contains("left alone"), "{}", outcome.detail);
}

#[tokio::test]
async fn a_group_sync_with_remove_only_owned_removes_only_owned_memberships() {
    let (t, store, e) = strangers_and_mine(&only_owned()).await;
    applied(&e, &t, &one("add", PG, "alice")).await;
    t.take_calls();
    let (outcome, calls) = ok(&e, &t, &sync(STAFF, ["alice"])).await;
    assert_eq!(
        calls,
        [
            "list_members g-staff",
            "add_member g-staff u-alice",
            "remove_member g-staff u-mine"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice", "s1", "s2"]));
    assert_eq!(
        outcome.detail,
        "group sync Staff: 1 added, 1 removed, 2 left alone: not owned: s1; s2"
    );
    assert_eq!(member_how(&store, "u-alice"), Some(Acquired::Created));
    assert_eq!(member_how(&store, "u-mine"), None);
}

#[tokio::test]
async fn a_group_sync_without_remove_only_owned_removes_every_unlisted_member() {
    let (t, _, e) = strangers_and_mine(&cfg("")).await;
    applied(&e, &t, &one("add", PG, "alice")).await;
    t.take_calls();
    let calls = applied(&e, &t, &sync(STAFF, ["alice"])).await;
    assert_eq!(
        calls,
        [
            "list_members g-staff",
            "add_member g-staff u-alice",
            "remove_member g-staff u-mine",
            "remove_member g-staff u-s1",
            "remove_member g-staff u-s2"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice"]));
}

#[tokio::test]
async fn a_sync_adopts_what_it_lists_so_a_later_sync_may_remove_it() {
    let t = MemoryTarget::new()
        .with_accounts(["old"])
        .with_group("Staff", ["old"])
        .arc();
    let store = MemoryOwnership::default();
    let e = owning(&only_owned(), &t, &store);
    applied(&e, &t, &sync(PG, ["old"])).await;
    applied(&e, &t, &sync(STAFF, ["old"])).await;
    assert_eq!(how(&store, "u-old"), Some(Acquired::Adopted));
    assert_eq!(member_how(&store, "u-old"), Some(Acquired::Adopted));
    t.take_calls();
    assert_eq!(
        applied(&e, &t, &sync(STAFF, Vec::<String>::new())).await,
        ["list_members g-staff", "remove_member g-staff u-old"]
    );
    assert_eq!(
        applied(&e, &t, &sync(PG, Vec::<String>::new())).await,
        ["list_accounts", "deprovision u-old"]
    );
}

#[tokio::test]
async fn the_guard_weighs_removals_against_what_the_worker_owns() {
    // 20 strangers and 12 owned accounts; a sync naming 5 of the owned ones
    // would remove the other 7: 22 % of the accounts, but 58 % of what
    // the sync may remove, which is what the guard weighs.
    let strangers: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let t = MemoryTarget::new().with_accounts(&strangers).arc();
    let store = MemoryOwnership::default();
    let e = owning(&only_owned(), &t, &store);
    let owned: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    for m in &owned {
        applied(&e, &t, &one("add", PG, m)).await;
    }
    t.take_calls();
    let (err, calls) = failed(&e, &t, &sync(PG, &owned[..5])).await;
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains("this sync would remove 7 of 12 owned accounts"),
        "{err}"
    );
    assert_eq!(calls, ["list_accounts"]);
    assert_eq!(t.account_list().len(), 32);
}

/// Counts the store's calls by name, and fails them all while `down`.
#[derive(Default)]
struct Watched {
    inner: MemoryOwnership,
    down: AtomicBool,
    reads_of_one: AtomicUsize,
    reads_of_all: AtomicUsize,
}

impl Watched {
    fn check(&self) -> Result<(), OwnershipError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(OwnershipError("the store is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Ownership for Watched {
    async fn record_accounts(&self, p: &str, a: &[Owned]) -> Result<(), OwnershipError> {
        self.check()?;
        self.inner.record_accounts(p, a).await
    }
    async fn forget_accounts(&self, p: &str, ids: &[ApiId]) -> Result<(), OwnershipError> {
        self.check()?;
        self.inner.forget_accounts(p, ids).await
    }
    async fn owns_account(&self, p: &str, id: &str) -> Result<bool, OwnershipError> {
        self.check()?;
        self.reads_of_one.fetch_add(1, Ordering::SeqCst);
        self.inner.owns_account(p, id).await
    }
    async fn owned_accounts(&self, p: &str) -> Result<HashSet<ApiId>, OwnershipError> {
        self.check()?;
        self.reads_of_all.fetch_add(1, Ordering::SeqCst);
        self.inner.owned_accounts(p).await
    }
    async fn record_memberships(
        &self,
        p: &str,
        g: &str,
        m: &[Owned],
    ) -> Result<(), OwnershipError> {
        self.check()?;
        self.inner.record_memberships(p, g, m).await
    }
    async fn forget_memberships(
        &self,
        p: &str,
        g: &str,
        ids: &[ApiId],
    ) -> Result<(), OwnershipError> {
        self.check()?;
        self.inner.forget_memberships(p, g, ids).await
    }
    async fn owns_membership(&self, p: &str, g: &str, id: &str) -> Result<bool, OwnershipError> {
        self.check()?;
        self.reads_of_one.fetch_add(1, Ordering::SeqCst);
        self.inner.owns_membership(p, g, id).await
    }
    async fn owned_members(&self, p: &str, g: &str) -> Result<HashSet<ApiId>, OwnershipError> {
        self.check()?;
        self.reads_of_all.fetch_add(1, Ordering::SeqCst);
        self.inner.owned_members(p, g).await
    }
}

#[tokio::test]
async fn a_full_sync_reads_the_owned_set_once_not_once_per_account() {
    let many: Vec<String> = (0..300).map(|i| format!("u{i:03}")).collect();
    let t = MemoryTarget::new()
        .with_accounts(&many)
        .with_group("Staff", &many)
        .arc();
    let store = Arc::new(Watched::default());
    let e = Engine::new(
        &cfg("remove_only_owned = true\nmax_removals = 0"),
        t.clone(),
    )
    .with_ownership(store.clone());
    let (outcome, _) = ok(&e, &t, &sync(PG, &many[..100])).await;
    assert!(
        outcome.detail.contains("200 left alone: not owned"),
        "{}",
        outcome.detail
    );
    let (outcome, _) = ok(&e, &t, &sync(STAFF, &many[..100])).await;
    assert!(
        outcome.detail.contains("200 left alone: not owned"),
        "{}",
        outcome.detail
    );
    assert_eq!(store.reads_of_all.load(Ordering::SeqCst), 2);
    assert_eq!(store.reads_of_one.load(Ordering::SeqCst), 0);
    assert_eq!(
        t.account_list().len(),
        300,
        "nothing owned, nothing removed"
    );
}

#[tokio::test]
async fn a_store_that_fails_fails_the_event_transiently_and_the_retry_records_it() {
    let t = MemoryTarget::new().arc();
    let store = Arc::new(Watched::default());
    let e = Engine::new(&only_owned(), t.clone()).with_ownership(store.clone());
    store.down.store(true, Ordering::SeqCst);
    let (err, calls) = failed(&e, &t, &one("add", PG, "new")).await;
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("the store is down"), "{err}");
    assert_eq!(calls, ["lookup new", "create new"]);
    // Not acknowledged, so retried: the account is there, matched, adopted.
    store.down.store(false, Ordering::SeqCst);
    applied(&e, &t, &one("add", PG, "new")).await;
    assert_eq!(
        store.inner.account(P, "u-new").map(|o| o.how),
        Some(Acquired::Adopted)
    );

    // A store down during a deprovision: nothing is removed unasked.
    store.down.store(true, Ordering::SeqCst);
    let (err, calls) = failed(&e, &t, &one("delete", PG, "new")).await;
    assert!(err.is_transient(), "{err}");
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(t.account_list(), ["new"]);
}

#[tokio::test]
async fn without_a_store_remove_only_owned_remembers_what_this_process_made() {
    let t = MemoryTarget::new().with_accounts(["stranger"]).arc();
    let e = engine(&only_owned(), &t);
    applied(&e, &t, &one("add", PG, "mine")).await;
    t.take_calls();
    assert_eq!(
        applied(&e, &t, &sync(PG, Vec::<String>::new())).await,
        ["list_accounts", "deprovision u-mine"]
    );
    assert_eq!(t.account_list(), ["stranger"]);
}

#[tokio::test]
async fn a_dry_run_notes_what_it_leaves_alone_and_writes_no_record() {
    use crate::engine::ownership::Rehearsal;
    use crate::target::dry_run::{DryRunTarget, WriteLog};
    let t = MemoryTarget::new()
        .with_accounts(["stranger", "mine"])
        .arc();
    let real = MemoryOwnership::default();
    real.record_accounts(
        P,
        &[Owned {
            api_id: "u-mine".into(),
            subject: "mine".into(),
            how: Acquired::Created,
        }],
    )
    .await
    .unwrap();
    let plan = WriteLog::default();
    let dry = Arc::new(DryRunTarget::new(t.clone(), plan.clone()));
    let e = Engine::new(&only_owned(), dry)
        .with_ownership(Arc::new(Rehearsal::new(Arc::new(real.clone()))))
        .with_plan(plan.clone());
    e.apply(&sync(PG, ["alice"])).await.unwrap();
    assert_eq!(
        plan.take(),
        [
            "would create account `alice`",
            "would deprovision account u-mine (`mine`)",
            "account u-stranger (`stranger`) left alone: not owned"
        ]
    );
    assert_eq!(t.account_list(), ["mine", "stranger"], "nothing written");
    assert!(real.account(P, "u-mine").is_some(), "the real records stay");
    assert!(real.account(P, "(new:alice)").is_none());
}

/// Polls (yielding to the background writes) until `done`, or fails.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn without_remove_only_owned_records_are_kept_in_the_background_and_never_fail_an_event() {
    let t = MemoryTarget::new().with_accounts(["old"]).arc();
    let store = Arc::new(Watched::default());
    let e = Engine::new(&cfg(""), t.clone()).with_ownership(store.clone());
    applied(&e, &t, &one("add", PG, "new")).await;
    applied(&e, &t, &sync(PG, ["new", "old"])).await;
    until("created and adopted recorded", || {
        store.inner.account(P, "u-new").map(|o| o.how) == Some(Acquired::Created)
            && store.inner.account(P, "u-old").map(|o| o.how) == Some(Acquired::Adopted)
    })
    .await;
    assert_eq!(
        store.reads_of_all.load(Ordering::SeqCst) + store.reads_of_one.load(Ordering::SeqCst),
        0,
        "nothing is read when nothing is left alone"
    );

    // A store that is down neither fails nor holds up an event.
    store.down.store(true, Ordering::SeqCst);
    applied(&e, &t, &one("add", PG, "later")).await;
    assert_eq!(
        applied(&e, &t, &one("delete", PG, "old")).await,
        ["deprovision u-old"]
    );
    assert_eq!(t.account_list(), ["later", "new"]);
}
