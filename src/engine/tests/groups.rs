//! Single-subject target-group events: strategies, the retry delay, group
//! resolution.

use super::*;

fn staff_target() -> MemoryTarget {
    MemoryTarget::new()
        .with_accounts(["alice", "bob"])
        .with_group("Other", Vec::<String>::new())
        .with_group("Staff", ["alice"])
}

#[tokio::test]
async fn add_member_first_adds_without_looking_at_the_members() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "bob")).await,
        ["list_groups", "lookup bob", "add_member g-staff u-bob"]
    );
    // Group ID cached; alice is added although she is a member already.
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "alice")).await,
        ["lookup alice", "add_member g-staff u-alice"]
    );
    assert_eq!(t.members("Staff"), set(["alice", "bob"]));
}

#[tokio::test]
async fn query_first_adds_only_a_member_that_is_missing() {
    // A server that rejects adding an existing member.
    let t = staff_target().rejecting_duplicate_members().arc();
    let e = engine(&cfg("group_sync_strategy = \"query-first\""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "bob")).await,
        [
            "list_groups",
            "lookup bob",
            "list_members g-staff",
            "add_member g-staff u-bob"
        ]
    );
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "alice")).await,
        ["lookup alice", "list_members g-staff"]
    );
    assert_eq!(t.members("Staff"), set(["alice", "bob"]));
}

#[tokio::test]
async fn delete_removes_the_member_and_an_absent_account_makes_no_call() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &bare("delete", STAFF, "alice")).await,
        [
            "list_groups",
            "lookup alice",
            "remove_member g-staff u-alice"
        ]
    );
    assert_eq!(
        applied(&e, &t, &bare("delete", STAFF, "ghost")).await,
        ["lookup ghost"]
    );
    assert!(t.members("Staff").is_empty());
    assert_eq!(t.account_set(), set(["alice", "bob"]), "accounts stay");
}

#[tokio::test]
async fn applying_the_same_group_events_twice_leaves_the_same_state() {
    for strategy in ["add-member-first", "query-first"] {
        let t = staff_target().arc();
        let e = engine(&cfg(&format!("group_sync_strategy = \"{strategy}\"")), &t);
        for ev in [one("add", STAFF, "bob"), bare("delete", STAFF, "alice")] {
            applied(&e, &t, &ev).await;
            let first = t.snapshot();
            applied(&e, &t, &ev).await;
            assert_eq!(t.snapshot(), first, "{strategy}: {ev:?}");
        }
        assert_eq!(t.members("Staff"), set(["bob"]));
    }
}

#[tokio::test(start_paused = true)]
async fn an_account_not_there_yet_is_looked_up_again_after_the_retry_delay() {
    let t = staff_target().arc();
    let e = engine(&cfg("target_group_retry_delay = 7"), &t);
    let start = Instant::now();
    // The account is provisioned (by someone else) 5 s into the wait.
    let provisioner = {
        let t = t.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            t.insert_account("carol")
        })
    };
    let result = e.apply(&one("add", STAFF, "carol")).await;
    let timed = t.take_timed_calls();
    let calls: Vec<&str> = timed.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        calls,
        [
            "list_groups",
            "lookup carol",
            "lookup carol",
            "add_member g-staff u-carol"
        ]
    );
    let outcome = result.unwrap();
    assert_eq!(outcome.api_calls, 4);
    assert_eq!(timed[1].1 - start, Duration::ZERO);
    assert_eq!(
        timed[2].1 - timed[1].1,
        Duration::from_secs(7),
        "waited exactly the delay"
    );
    assert_eq!(timed[3].1, timed[2].1);
    assert_eq!(provisioner.await.ok(), Some("u-carol".to_string()));
    assert_eq!(t.members("Staff"), set(["alice", "carol"]));
}

#[tokio::test(start_paused = true)]
async fn an_account_still_missing_after_the_retry_delay_is_a_permanent_error() {
    let t = staff_target().arc();
    let e = engine(&cfg("target_group_retry_delay = 7"), &t);
    let start = Instant::now();
    let (err, calls) = failed(&e, &t, &one("add", STAFF, "carol")).await;
    assert_eq!(calls, ["list_groups", "lookup carol", "lookup carol"]);
    assert!(!err.is_transient(), "{err:?}");
    assert_eq!(err.api_calls, 3);
    assert!(err.to_string().contains("carol"), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(7));
    assert_eq!(t.members("Staff"), set(["alice"]));
}

#[tokio::test(start_paused = true)]
async fn the_default_retry_delay_is_twenty_seconds() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    let start = Instant::now();
    failed(&e, &t, &one("add", STAFF, "carol")).await;
    assert_eq!(start.elapsed(), Duration::from_secs(20));
}

#[tokio::test]
async fn a_mapped_group_missing_on_the_target_is_a_permanent_error() {
    let t = MemoryTarget::new().with_accounts(["alice"]).arc();
    let e = engine(&cfg(""), &t);
    let (err, calls) = failed(&e, &t, &one("add", STAFF, "alice")).await;
    assert_eq!(calls, ["list_groups", "create_group Staff"]);
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("Staff"), "{err}");
}

#[tokio::test]
async fn remote_group_names_are_matched_case_insensitively_as_in_the_original() {
    // The original lowercased both the mapped name and the listed names.
    let t = MemoryTarget::new()
        .with_accounts(["alice"])
        .with_group("STAFF", Vec::<String>::new())
        .arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "alice")).await,
        ["list_groups", "lookup alice", "add_member g-staff u-alice"]
    );
    assert_eq!(t.members("STAFF"), set(["alice"]));
}

#[tokio::test]
async fn a_stale_cached_id_in_a_group_add_is_looked_up_again() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "carol")).await,
        ["lookup carol", "create carol"]
    );
    t.remove_account("carol");
    t.insert_account_with_id("carol", "u-carol-new");
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "carol")).await,
        [
            "list_groups",
            "add_member g-staff u-carol",
            // Only the cached ID may be stale: the group was listed just now.
            "lookup carol",
            "add_member g-staff u-carol-new"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice", "carol"]));
}

#[tokio::test]
async fn a_group_event_without_attributes_uses_the_match_value_seen_with_them() {
    let t = MemoryTarget::new()
        .matching_on_mail()
        .with_accounts(["alice@example.edu"])
        .with_group("Staff", Vec::<String>::new())
        .arc();
    let e = engine(&cfg(""), &t);
    // Never seen with attributes: cannot know the match value.
    let (err, calls) = failed(&e, &t, &bare("delete", STAFF, "alice")).await;
    assert!(!err.is_transient());
    assert!(err.to_string().contains("send the attributes"), "{err}");
    assert!(calls.is_empty(), "{calls:?}");
    // Seen once with attributes, later events may come without them.
    applied(&e, &t, &one("add", STAFF, "alice")).await;
    assert_eq!(t.members("Staff"), set(["alice@example.edu"]));
    applied(&e, &t, &bare("delete", STAFF, "alice")).await;
    assert!(t.members("Staff").is_empty());
}

#[tokio::test]
async fn target_group_cache_size_bounds_the_cached_group_ids() {
    let t = MemoryTarget::new()
        .with_accounts(["alice"])
        .with_group("Staff", Vec::<String>::new())
        .with_group("Admins", Vec::<String>::new())
        .arc();
    let both = |size: usize| {
        config(&format!(
            "provision_group = \"{PG}\"\ntarget_group_map = {{ \"{STAFF}\" = \"Staff\", \"app:example:admins\" = \"Admins\" }}\ntarget_group_cache_size = {size}"
        ))
    };
    let calls_for = |e: Engine, t: Arc<MemoryTarget>| async move {
        let mut lists = 0;
        for group in [STAFF, "app:example:admins", STAFF, "app:example:admins"] {
            let calls = applied(&e, &t, &one("add", group, "alice")).await;
            lists += calls.iter().filter(|c| *c == "list_groups").count();
        }
        lists
    };
    // Room for both: one listing fills the cache with every mapped group.
    assert_eq!(calls_for(engine(&both(2), &t), t.clone()).await, 1);
    // Room for one: alternating groups evict each other, so each event lists again.
    assert_eq!(calls_for(engine(&both(1), &t), t.clone()).await, 4);
}

#[tokio::test]
async fn a_group_recreated_out_of_band_loses_the_member_on_delete() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    // Caches the group's ID.
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "alice")).await,
        ["list_groups", "lookup alice", "add_member g-staff u-alice"]
    );
    t.recreate_group("Staff", "g-staff-2", ["alice", "bob"]);
    assert_eq!(
        applied(&e, &t, &bare("delete", STAFF, "bob")).await,
        [
            "lookup bob",
            "remove_member g-staff u-bob",
            // Absent from the cached group ID: which group is `Staff` now?
            "list_groups",
            "remove_member g-staff-2 u-bob"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice"]));
    // The fresh group ID is the cached one from now on.
    assert_eq!(
        applied(&e, &t, &bare("delete", STAFF, "alice")).await,
        ["remove_member g-staff-2 u-alice"]
    );
    assert!(t.members("Staff").is_empty());
}

#[tokio::test]
async fn an_account_recreated_out_of_band_loses_its_membership_on_delete() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    // Caches the group's and bob's IDs.
    applied(&e, &t, &one("add", STAFF, "bob")).await;
    t.remove_account("bob");
    t.insert_account_with_id("bob", "u-bob-new");
    t.join_group("Staff", "bob");
    assert_eq!(
        applied(&e, &t, &bare("delete", STAFF, "bob")).await,
        [
            "remove_member g-staff u-bob",
            // Both IDs came from the cache: both are looked up once more.
            "list_groups",
            "lookup bob",
            "remove_member g-staff u-bob-new"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice"]));
    // Not a member any more, under IDs that are still right: done.
    assert_eq!(
        applied(&e, &t, &bare("delete", STAFF, "bob")).await,
        [
            "remove_member g-staff u-bob-new",
            "list_groups",
            "lookup bob"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice"]));
}

#[tokio::test]
async fn query_first_reads_a_group_recreated_out_of_band_under_its_new_id() {
    let t = staff_target().rejecting_duplicate_members().arc();
    let e = engine(&cfg("group_sync_strategy = \"query-first\""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "alice")).await,
        ["list_groups", "lookup alice", "list_members g-staff"]
    );
    t.recreate_group("Staff", "g-staff-2", ["alice"]);
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "bob")).await,
        [
            "lookup bob",
            "list_members g-staff",
            "list_groups",
            "list_members g-staff-2",
            "add_member g-staff-2 u-bob"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice", "bob"]));
}

#[tokio::test]
async fn a_removal_batch_absent_as_a_whole_looks_the_group_up_again() {
    let t = MemoryTarget::new()
        .with_accounts(["alice", "bob", "carol"])
        .with_group("Staff", ["alice", "bob", "carol"])
        .batching(10)
        .arc();
    // The group is deleted and re-created (members and all) between the
    // sync's read of the group and its removals.
    t.before_call("remove_members g-staff u-bob u-carol", |t| {
        t.recreate_group("Staff", "g-staff-2", ["alice", "bob", "carol"])
    });
    let e = engine(&cfg("group_sync_strategy = \"query-first\""), &t);
    assert_eq!(
        applied(&e, &t, &sync(STAFF, ["alice"])).await,
        [
            "list_groups",
            "list_members g-staff",
            "remove_members g-staff u-bob u-carol",
            "list_groups",
            "remove_members g-staff-2 u-bob u-carol"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice"]));
}

#[tokio::test]
async fn an_add_to_a_group_recreated_out_of_band_goes_to_its_new_id() {
    let t = staff_target().arc();
    let e = engine(&cfg(""), &t);
    applied(&e, &t, &one("add", STAFF, "alice")).await;
    t.recreate_group("Staff", "g-staff-2", ["alice"]);
    assert_eq!(
        applied(&e, &t, &one("add", STAFF, "bob")).await,
        [
            "lookup bob",
            "add_member g-staff u-bob",
            // Only the group's ID came from the cache; bob's was just looked up.
            "list_groups",
            "add_member g-staff-2 u-bob"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice", "bob"]));
}
