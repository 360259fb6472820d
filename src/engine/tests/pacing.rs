//! `account_sync_rate_limit_ms` and `member_sync_rate_limit_ms` (paused time).

use super::*;

#[tokio::test(start_paused = true)]
async fn account_sync_calls_are_spaced_by_the_account_rate_limit() {
    let t = MemoryTarget::new()
        .with_accounts(["a", "b", "x", "y"])
        .arc();
    let e = engine(&cfg("account_sync_rate_limit_ms = 200"), &t);
    let start = Instant::now();
    let result = e.apply(&sync(PG, ["a", "b", "c", "d"])).await;
    let timed = t.take_timed_calls();
    let calls: Vec<&str> = timed.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        calls,
        [
            "list_accounts",
            "update u-a",
            "update u-b",
            "create c",
            "create d",
            "deprovision u-x",
            "deprovision u-y"
        ]
    );
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(timed[0].1, start, "the first call does not wait");
    assert_spaced(&timed, Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn group_sync_calls_are_spaced_by_the_member_rate_limit() {
    let t = MemoryTarget::new()
        .with_accounts(["a", "b", "c", "x", "y"])
        .with_group("Staff", ["a", "x", "y"])
        .arc();
    let e = engine(&cfg("member_sync_rate_limit_ms = 300"), &t);
    let start = Instant::now();
    let result = e.apply(&sync(STAFF, ["a", "b", "c"])).await;
    let timed = t.take_timed_calls();
    let calls: Vec<&str> = timed.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        calls,
        [
            "list_groups",
            "list_members g-staff",
            "lookup a",
            "add_member g-staff u-a",
            "lookup b",
            "add_member g-staff u-b",
            "lookup c",
            "add_member g-staff u-c",
            "remove_member g-staff u-x",
            "remove_member g-staff u-y"
        ]
    );
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(timed[0].1, start);
    assert_spaced(&timed, Duration::from_millis(300));
    assert_eq!(t.members("Staff"), set(["a", "b", "c"]));
}

#[tokio::test(start_paused = true)]
async fn each_rate_limit_applies_to_its_own_reconciliation_only() {
    // A slow account limit does not slow a group sync ...
    let t = MemoryTarget::new()
        .with_accounts(["a", "b", "x"])
        .with_group("Staff", ["x"])
        .arc();
    let e = engine(&cfg("account_sync_rate_limit_ms = 5000"), &t);
    let start = Instant::now();
    applied(&e, &t, &sync(STAFF, ["a", "b"])).await;
    assert_eq!(
        Instant::now(),
        start,
        "group sync waited for the account limit"
    );

    // ... and a slow member limit does not slow an account sync.
    let t = MemoryTarget::new().with_accounts(["a", "b", "x"]).arc();
    let e = engine(&cfg("member_sync_rate_limit_ms = 5000"), &t);
    let start = Instant::now();
    let calls = applied(&e, &t, &sync(PG, ["a", "b", "c"])).await;
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(
        Instant::now(),
        start,
        "account sync waited for the member limit"
    );
}

#[tokio::test(start_paused = true)]
async fn without_rate_limits_nothing_waits() {
    let t = MemoryTarget::new()
        .with_accounts(["a", "b", "x"])
        .with_group("Staff", ["x"])
        .arc();
    let e = engine(&cfg(""), &t);
    let start = Instant::now();
    applied(&e, &t, &sync(PG, ["a", "b", "c"])).await;
    applied(&e, &t, &sync(STAFF, ["a", "b"])).await;
    assert_eq!(Instant::now(), start);
}
