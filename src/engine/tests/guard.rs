//! The mass-deprovision guard: a sync that would remove more than
//! `max_removal_share` of the managed remote entries, or more than
//! `max_removals` of them, is refused before it removes anything, unless the
//! operator re-queued the event with `--allow-removals`.

use super::*;

fn many(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

#[tokio::test]
async fn an_empty_account_sync_of_a_large_target_is_refused_and_changes_nothing() {
    let accounts = many("u", 20);
    let t = MemoryTarget::new()
        .with_accounts(&accounts)
        .with_accounts(["admin"])
        .arc();
    let e = engine(&cfg("unmanaged_logins = [\"admin\"]"), &t);
    let (err, calls) = failed(&e, &t, &sync(PG, Vec::<String>::new())).await;
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains("mass-deprovision guard") && msg.contains("20 of 20 accounts"),
        "{msg}"
    );
    assert_eq!(calls, ["list_accounts"], "refused before any change");
    assert_eq!(t.account_list().len(), 21);
}

#[tokio::test]
async fn removals_up_to_the_share_go_through_and_one_more_is_refused() {
    let accounts = many("u", 20);
    let t = MemoryTarget::new().with_accounts(&accounts).arc();
    let e = engine(&cfg("max_removal_share = 0.25"), &t);
    // Keep 15 of 20: removes 5 = 25%, allowed.
    applied(&e, &t, &sync(PG, &accounts[..15])).await;
    assert_eq!(t.account_list().len(), 15);
    // Keep 11 of 15: removes 4 = 27%, refused.
    let (err, _) = failed(&e, &t, &sync(PG, &accounts[..11])).await;
    assert!(err.to_string().contains("4 of 15 accounts"), "{err}");
    assert_eq!(t.account_list().len(), 15);
}

#[tokio::test]
async fn small_targets_and_a_share_of_one_are_not_guarded() {
    let t = MemoryTarget::new().with_accounts(many("u", 9)).arc();
    let e = engine(&cfg(""), &t);
    applied(&e, &t, &sync(PG, Vec::<String>::new())).await;
    assert!(t.account_list().is_empty(), "below removal_guard_min (10)");

    let t = MemoryTarget::new().with_accounts(many("u", 30)).arc();
    let e = engine(&cfg("max_removal_share = 1"), &t);
    applied(&e, &t, &sync(PG, Vec::<String>::new())).await;
    assert!(t.account_list().is_empty(), "guard off");
}

#[tokio::test]
async fn a_group_sync_that_would_empty_a_large_group_removes_nobody() {
    let members = many("m", 12);
    let t = MemoryTarget::new()
        .with_accounts(&members)
        .with_group("Staff", &members)
        .arc();
    let e = engine(&cfg("group_sync_strategy = \"query-first\""), &t);
    let (err, calls) = failed(&e, &t, &sync(STAFF, Vec::<String>::new())).await;
    assert!(err.to_string().contains("12 of 12 members"), "{err}");
    assert!(
        !calls.iter().any(|c| c.starts_with("remove_member")),
        "{calls:?}"
    );
    assert_eq!(t.members("Staff").len(), 12);
}

#[tokio::test]
async fn replacing_every_member_under_add_member_first_is_refused_before_any_change() {
    let old = many("m", 10);
    let new = many("n", 10);
    let t = MemoryTarget::new()
        .with_accounts(&old)
        .with_accounts(&new)
        .with_group("Staff", &old)
        .arc();
    // add-member-first is the default strategy.
    let e = engine(&cfg(""), &t);
    let (err, calls) = failed(&e, &t, &sync(STAFF, &new)).await;
    assert!(!err.is_transient());
    // Counted against the 10 members the group had, not the 20 it would
    // have after the adds.
    assert!(err.to_string().contains("10 of 10 members"), "{err}");
    assert_eq!(calls, ["list_groups", "list_members g-staff"]);
    assert_eq!(t.members("Staff"), set(&old), "neither added nor removed");
}

#[tokio::test]
async fn more_removals_than_max_removals_are_refused_whatever_the_share() {
    let accounts = many("u", 501);
    let t = MemoryTarget::new().with_accounts(&accounts).arc();
    let e = engine(&cfg("max_removal_share = 1"), &t);
    let (err, calls) = failed(&e, &t, &sync(PG, Vec::<String>::new())).await;
    assert!(!err.is_transient());
    let msg = err.to_string();
    let requeue = format!(
        "provisioner dead-letters requeue --provisioner {} --allow-removals",
        e.name()
    );
    for needle in [
        "mass-deprovision guard",
        "501 of 501 accounts",
        "more than max_removals = 500",
        "nothing was removed",
        "raise max_removals",
        &requeue,
    ] {
        assert!(msg.contains(needle), "`{needle}` missing from: {msg}");
    }
    assert_eq!(calls, ["list_accounts"], "refused before any change");
    assert_eq!(t.account_list().len(), 501);

    // 500 is the limit itself: allowed.
    let calls = applied(&e, &t, &sync(PG, &accounts[..1])).await;
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("deprovision"))
            .count(),
        500
    );
    assert_eq!(t.account_list(), accounts[..1]);
}

#[tokio::test]
async fn max_removals_applies_below_removal_guard_min_and_zero_turns_it_off() {
    let t = MemoryTarget::new().with_accounts(many("u", 5)).arc();
    let e = engine(&cfg("max_removals = 3"), &t);
    let (err, _) = failed(&e, &t, &sync(PG, Vec::<String>::new())).await;
    let msg = err.to_string();
    assert!(
        msg.contains("5 of 5 accounts") && msg.contains("max_removals = 3"),
        "{msg}"
    );
    assert_eq!(t.account_list().len(), 5);

    let t = MemoryTarget::new().with_accounts(many("u", 600)).arc();
    let e = engine(&cfg("max_removals = 0\nmax_removal_share = 1"), &t);
    applied(&e, &t, &sync(PG, Vec::<String>::new())).await;
    assert!(t.account_list().is_empty(), "no absolute limit");
}

/// The log lines written while `f` runs (on this thread's runtime).
async fn logged<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = {
        let _guard = tracing::subscriber::set_default(subscriber);
        f.await
    };
    let text = String::from_utf8_lossy(&lock(&buf.0)).into_owned();
    (out, text)
}

#[tokio::test]
async fn an_operator_override_applies_a_refused_sync_and_warns() {
    let accounts = many("u", 20);
    let t = MemoryTarget::new().with_accounts(&accounts).arc();
    let e = engine(&cfg(""), &t);
    let mut ev = sync(PG, Vec::<String>::new());
    ev.allow_removals = true;
    let (calls, log) = logged(applied(&e, &t, &ev)).await;
    assert_eq!(calls.len(), 21, "{calls:?}");
    assert!(t.account_list().is_empty());
    assert!(
        log.contains("WARN") && log.contains("mass-deprovision guard overridden by operator"),
        "{log}"
    );
    assert!(
        log.contains("removing=20") && log.contains("managed=20"),
        "{log}"
    );

    // The same for a group: every member replaced.
    let old = many("m", 10);
    let new = many("n", 10);
    let t = MemoryTarget::new()
        .with_accounts(&old)
        .with_accounts(&new)
        .with_group("Staff", &old)
        .arc();
    let e = engine(&cfg(""), &t);
    let mut ev = sync(STAFF, &new);
    ev.allow_removals = true;
    applied(&e, &t, &ev).await;
    assert_eq!(t.members("Staff"), set(&new));
}
