//! `account_cache_validity_period`: a prefilled account cache trusted
//! absolutely for a while; `account_cache_size`.

use super::*;

#[tokio::test(start_paused = true)]
async fn within_the_validity_period_a_cache_miss_means_absent() {
    // A server that accepts duplicates shows what absolute trust means.
    let t = MemoryTarget::new()
        .accepting_duplicate_accounts()
        .with_accounts(["alice"])
        .arc();
    let e = engine(&cfg("account_cache_validity_period = 60"), &t);

    // The first event prefills the cache with a listing; the miss is trusted.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "bob")).await,
        ["list_accounts", "create bob"]
    );
    assert_eq!(
        applied(&e, &t, &one("add", PG, "alice")).await,
        ["update u-alice"]
    );
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "carol")).await,
        Vec::<String>::new()
    );

    // Still trusted 40 s later, even though `erin` appeared out of band: the
    // cache is trusted absolutely, so erin is created again.
    tokio::time::advance(Duration::from_secs(40)).await;
    t.insert_account("erin");
    assert_eq!(
        applied(&e, &t, &one("add", PG, "erin")).await,
        ["create erin"]
    );
    assert_eq!(
        applied(&e, &t, &one("add", PG, "dave")).await,
        ["create dave"]
    );
    assert_eq!(t.account_list(), ["alice", "bob", "dave", "erin", "erin"]);
}

#[tokio::test(start_paused = true)]
async fn after_the_validity_period_the_target_is_asked_again() {
    let t = MemoryTarget::new()
        .accepting_duplicate_accounts()
        .with_accounts(["alice"])
        .arc();
    let e = engine(&cfg("account_cache_validity_period = 60"), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "bob")).await,
        ["list_accounts", "create bob"]
    );

    tokio::time::advance(Duration::from_secs(61)).await;
    t.insert_account("frank");
    let calls = applied(&e, &t, &one("add", PG, "frank")).await;
    // Either a look-up (the original: trust simply ends) or a fresh listing
    // (a new trusted window) finds frank; what must not happen is a create.
    assert!(
        calls == ["lookup frank", "update u-frank"] || calls == ["list_accounts", "update u-frank"],
        "{calls:?}"
    );
    assert_eq!(t.account_list(), ["alice", "bob", "frank"], "no duplicate");
    // Cached now.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "frank")).await,
        ["update u-frank"]
    );
}

#[tokio::test(start_paused = true)]
async fn within_the_validity_period_a_group_add_waits_without_a_first_lookup() {
    let t = MemoryTarget::new()
        .with_accounts(["alice"])
        .with_group("Staff", Vec::<String>::new())
        .arc();
    let e = engine(
        &cfg("account_cache_validity_period = 600\ntarget_group_retry_delay = 5"),
        &t,
    );
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "alice")).await,
        // The group is resolved first; the prefill comes with the first account look-up.
        ["list_groups", "list_accounts", "add_member g-staff u-alice"]
    );
    let start = Instant::now();
    let (err, calls) = failed(&e, &t, &one("add", STAFF, "carol")).await;
    assert_eq!(
        calls,
        ["lookup carol"],
        "trusted miss, wait, then one real look-up"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(!err.is_transient());
}

#[tokio::test]
async fn without_a_validity_period_there_is_no_prefill() {
    let t = MemoryTarget::new().with_accounts(["alice"]).arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "bob")).await,
        ["lookup bob", "create bob"]
    );
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "carol")).await,
        ["lookup carol"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_listing_larger_than_the_cache_is_not_trusted_and_not_repeated_for_every_event() {
    let t = MemoryTarget::new().with_accounts(["a", "b", "c"]).arc();
    let e = engine(
        &cfg("account_cache_validity_period = 60\naccount_cache_size = 2"),
        &t,
    );
    // Three accounts do not fit a cache of two: misses are looked up.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "x")).await,
        ["list_accounts", "lookup x", "create x"]
    );
    // A complete listing can never fit: listing everything again for each
    // event (as many pages as the target has accounts) buys nothing.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "y")).await,
        ["lookup y", "create y"]
    );
    assert_eq!(
        applied(&e, &t, &one("add", PG, "z")).await,
        ["lookup z", "create z"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_account_sync_with_a_validity_period_lists_the_accounts_once() {
    let t = MemoryTarget::new().with_accounts(["alice", "zed"]).arc();
    let e = engine(&cfg("account_cache_validity_period = 60"), &t);
    assert_eq!(
        applied(&e, &t, &sync(PG, ["alice", "bob"])).await,
        [
            "list_accounts",
            "update u-alice",
            "create bob",
            "deprovision u-zed"
        ]
    );
    // The sync's listing prefilled the cache.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "carol")).await,
        ["create carol"]
    );
}

#[tokio::test]
async fn the_cache_is_a_bounded_lru() {
    let t = MemoryTarget::new().with_accounts(["a", "b", "c"]).arc();
    let e = engine(&cfg("account_cache_size = 2"), &t);
    for s in ["a", "b"] {
        assert_eq!(
            applied(&e, &t, &one("add", PG, s)).await,
            [format!("lookup {s}"), format!("update u-{s}")]
        );
    }
    // `a` used again, then `c` pushes out the least recently used: `b`.
    assert_eq!(applied(&e, &t, &one("add", PG, "a")).await, ["update u-a"]);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "c")).await,
        ["lookup c", "update u-c"]
    );
    assert_eq!(applied(&e, &t, &one("add", PG, "a")).await, ["update u-a"]);
    // Evicted, so looked up again; the look-up shows it as the event has it.
    assert_eq!(applied(&e, &t, &one("add", PG, "b")).await, ["lookup b"]);
}

#[tokio::test(start_paused = true)]
async fn an_account_created_without_an_id_is_not_absent_within_the_validity_period() {
    // A target whose create answers without the new account's ID.
    let t = MemoryTarget::new()
        .creating_without_ids()
        .with_accounts(["alice"])
        .arc();
    let e = engine(&cfg("account_cache_validity_period = 60"), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "bob")).await,
        ["list_accounts", "create bob"]
    );
    // bob exists, only his ID is unknown: ask.
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "bob")).await,
        ["lookup bob", "deprovision u-bob"]
    );
    assert_eq!(t.account_list(), ["alice"]);
    // Other misses are still trusted.
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "carol")).await,
        Vec::<String>::new()
    );
}

#[tokio::test(start_paused = true)]
async fn an_id_cached_while_a_listing_runs_survives_the_prefill() {
    let t = MemoryTarget::new()
        .with_slow_listing(Duration::from_secs(10))
        .arc();
    let e = engine(
        &cfg("account_cache_validity_period = 600\nprovision_strategy = \"create-first\""),
        &t,
    );
    // A delete starts the prefill; while its listing runs, bob is created
    // (create-first needs no listing) and his ID cached.
    let ghost = bare("delete", PG, "ghost");
    let (first, second) = tokio::join!(e.apply(&ghost), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        e.apply(&one("add", PG, "bob")).await
    });
    first.unwrap();
    second.unwrap();
    assert_eq!(t.take_calls(), ["list_accounts", "create bob"]);
    // The listing began before bob existed; his ID must not be lost with it.
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "bob")).await,
        ["deprovision u-bob"]
    );
    assert!(t.account_list().is_empty(), "{:?}", t.account_list());
}
