//! The mass-deprovision guard: a sync that would remove more than
//! `max_removal_share` of the managed remote entries is refused before it
//! removes anything.

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
