//! membership_sync: full account reconciliation and group membership
//! reconciliation, small and large.

use super::*;

// ------------------------------------------------------------ accounts

#[tokio::test]
async fn account_sync_provisions_listed_and_deprovisions_the_rest() {
    let t = MemoryTarget::new()
        .with_accounts(["alice", "zed", "yan"])
        .arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &sync(PG, ["Bob", "alice"])).await,
        [
            "list_accounts",
            "update u-alice",
            "create bob",
            "deprovision u-yan",
            "deprovision u-zed"
        ]
    );
    assert_eq!(t.account_list(), ["alice", "bob"]);
    // The listing and the creates filled the cache.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "bob")).await,
        ["update u-bob"]
    );
    assert_eq!(
        applied(&e, &t, &one("add", PG, "alice")).await,
        ["update u-alice"]
    );
}

#[tokio::test]
async fn account_sync_never_updates_nor_deprovisions_unmanaged_accounts() {
    let t = MemoryTarget::new()
        .with_accounts(["admin", "breakglass", "alice", "zed"])
        .arc();
    let e = engine(&cfg("unmanaged_logins = \"ADMIN breakglass root\""), &t);
    // admin: listed and present; breakglass: present, not listed; root:
    // listed, not present.
    assert_eq!(
        applied(&e, &t, &sync(PG, ["admin", "alice", "bob", "Root"])).await,
        [
            "list_accounts",
            "update u-alice",
            "create bob",
            "deprovision u-zed"
        ]
    );
    assert_eq!(t.account_list(), ["admin", "alice", "bob", "breakglass"]);
    let (_, admin) = t.account("admin").expect("admin gone");
    assert!(admin.attributes.is_empty(), "admin was updated: {admin:?}");
}

#[tokio::test]
async fn an_empty_account_sync_deprovisions_every_managed_account() {
    let t = MemoryTarget::new().with_accounts(["admin", "alice"]).arc();
    let e = engine(&cfg("unmanaged_logins = [\"admin\"]"), &t);
    assert_eq!(
        applied(&e, &t, &sync(PG, Vec::<String>::new())).await,
        ["list_accounts", "deprovision u-alice"]
    );
    assert_eq!(t.account_list(), ["admin"]);
}

#[tokio::test]
async fn account_sync_falls_back_to_lookup_and_update_when_a_create_finds_the_account() {
    // The listing does not show bob (e.g. it changed while paging), but the
    // create says he exists.
    let t = MemoryTarget::new().with_accounts(["alice", "bob"]).arc();
    t.hide_from_listing("bob");
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &sync(PG, ["alice", "bob"])).await,
        [
            "list_accounts",
            "update u-alice",
            "create bob",
            "lookup bob",
            "update u-bob"
        ]
    );
    assert_eq!(t.account_list(), ["alice", "bob"]);
}

#[tokio::test]
async fn applying_the_same_account_sync_twice_leaves_the_same_state() {
    let t = MemoryTarget::new().with_accounts(["alice", "zed"]).arc();
    let e = engine(&cfg(""), &t);
    let ev = sync(PG, ["alice", "bob"]);
    applied(&e, &t, &ev).await;
    let first = t.snapshot();
    // Both accounts are as the event has them: nothing to write.
    assert_eq!(applied(&e, &t, &ev).await, ["list_accounts"]);
    assert_eq!(t.snapshot(), first);

    // With `full_sync_updates = "all"`, every listed subject is updated again.
    let e = engine(&cfg("full_sync_updates = \"all\""), &t);
    assert_eq!(
        applied(&e, &t, &ev).await,
        ["list_accounts", "update u-alice", "update u-bob"]
    );
    assert_eq!(t.snapshot(), first);
}

/// 20 subjects; the target has 19 of them, two with a stale attribute,
/// and one account no subject wants.
fn mostly_equal_target() -> (Arc<MemoryTarget>, Event) {
    let subjects: Vec<String> = (0..20).map(user).collect();
    let ev = sync(PG, &subjects);
    let t = MemoryTarget::new();
    for s in subjects.iter().skip(1) {
        let mut attributes: Attributes =
            serde_json::from_value(attrs_of(s)).unwrap_or_else(|e| panic!("{e}"));
        if s == "user007" || s == "user013" {
            attributes.insert("sn".into(), vec!["Stale".into()]);
        }
        t.insert_account_with(s, attributes);
    }
    t.insert_account("gone");
    (t.arc(), ev)
}

#[tokio::test]
async fn an_account_sync_writes_only_what_differs() {
    let (t, ev) = mostly_equal_target();
    let e = engine(&cfg(""), &t);
    let (outcome, calls) = ok(&e, &t, &ev).await;
    assert_eq!(
        calls,
        [
            "list_accounts",
            "create user000",
            "update u-user007",
            "update u-user013",
            "deprovision u-gone"
        ]
    );
    assert_eq!(
        outcome.detail,
        "account sync: 1 created, 2 updated, 17 already up to date, 1 deprovisioned"
    );
    let (_, fixed) = t.account("user007").expect("user007 gone");
    assert_eq!(fixed.attributes["sn"], ["Doe"]);
    // Everything is in step now.
    assert_eq!(applied(&e, &t, &ev).await, ["list_accounts"]);
}

#[tokio::test]
async fn an_account_sync_with_all_updates_every_listed_subject() {
    let (t, ev) = mostly_equal_target();
    let e = engine(&cfg("full_sync_updates = \"all\""), &t);
    let (outcome, calls) = ok(&e, &t, &ev).await;
    let mut expected = strings(["list_accounts", "create user000"]);
    expected.extend((1..20).map(|i| format!("update u-{}", user(i))));
    expected.push("deprovision u-gone".into());
    assert_eq!(calls, expected);
    assert_eq!(
        outcome.detail,
        "account sync: 1 created, 19 updated, 1 deprovisioned"
    );
}

#[tokio::test]
async fn subjects_sharing_a_match_value_are_not_compared() {
    // Two subjects with one mail: no one desired state to compare with, so
    // both update the account, as before.
    let t = MemoryTarget::new().matching_on_mail().arc();
    let e = engine(&cfg(""), &t);
    let shared = json!({"mail": ["x@example.edu"], "sn": ["Doe"]});
    let ev = event(json!({
        "action": "membership_sync", "group": PG, "subjects": ["a", "b"],
        "attributes": {"a": shared, "b": shared}
    }));
    applied(&e, &t, &ev).await;
    assert_eq!(
        applied(&e, &t, &ev).await,
        [
            "list_accounts",
            "update u-x@example.edu",
            "update u-x@example.edu"
        ]
    );
}

fn user(i: usize) -> String {
    format!("user{i:03}")
}

#[tokio::test]
async fn a_large_account_sync_ends_with_exactly_the_listed_and_the_unmanaged_accounts() {
    let listed: Vec<String> = (0..300).map(user).collect();
    let present: Vec<String> = (0..300)
        .filter(|i| i % 2 == 0 || i % 7 == 0)
        .map(user)
        .collect();
    let extras: Vec<String> = (0..80).map(|i| format!("old{i:03}")).collect();
    let t = MemoryTarget::new()
        .with_accounts(present.iter().chain(&extras))
        .with_accounts(["admin", "svc-backup"])
        .arc();
    let e = engine(
        &cfg("unmanaged_logins = [\"admin\", \"svc-backup\", \"root\"]"),
        &t,
    );
    let mut subjects = listed.clone();
    subjects.extend(["admin".to_string(), "root".to_string()]);
    subjects.reverse();
    let calls = applied(&e, &t, &sync(PG, &subjects)).await;

    let mut expected = vec!["list_accounts".to_string()];
    for s in &listed {
        if present.contains(s) {
            expected.push(format!("update u-{s}"));
        } else {
            expected.push(format!("create {s}"));
        }
    }
    expected.extend(extras.iter().map(|s| format!("deprovision u-{s}")));
    assert_eq!(calls.len(), expected.len());
    assert_eq!(calls, expected);

    let mut want: BTreeSet<String> = listed.iter().cloned().collect();
    want.extend(set(["admin", "svc-backup"]));
    assert_eq!(t.account_set(), want);
    assert_eq!(t.account_list().len(), want.len(), "no duplicates");
    let (_, admin) = t.account("admin").expect("admin gone");
    assert!(admin.attributes.is_empty());
}

// ------------------------------------------------------------ groups

/// alice..dave have accounts; Staff has alice and carol.
fn small_group_target() -> MemoryTarget {
    MemoryTarget::new()
        .with_accounts(["alice", "bob", "carol", "dave"])
        .with_group("Staff", ["alice", "carol"])
}

#[tokio::test]
async fn group_sync_add_member_first_lists_then_adds_everyone_then_removes() {
    let t = small_group_target().arc();
    let e = engine(&cfg(""), &t);
    let (outcome, calls) = ok(&e, &t, &sync(STAFF, ["alice", "bob", "ghost"])).await;
    assert_eq!(
        calls,
        [
            // Read before the adds: the removals and the mass-deprovision
            // guard count against the group as it was.
            "list_groups",
            "list_members g-staff",
            "lookup alice",
            "add_member g-staff u-alice",
            "lookup bob",
            "add_member g-staff u-bob",
            "lookup ghost",
            "remove_member g-staff u-carol"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice", "bob"]));
    assert!(outcome.detail.contains("ghost"), "{outcome:?}");
    assert_eq!(
        t.account_set(),
        set(["alice", "bob", "carol", "dave"]),
        "accounts untouched"
    );
}

#[tokio::test]
async fn group_sync_query_first_lists_first_and_adds_only_the_missing() {
    let t = small_group_target().rejecting_duplicate_members().arc();
    let e = engine(&cfg("group_sync_strategy = \"query-first\""), &t);
    let (outcome, calls) = ok(&e, &t, &sync(STAFF, ["alice", "bob", "ghost"])).await;
    assert_eq!(
        calls,
        [
            "list_groups",
            "list_members g-staff",
            "lookup bob",
            "add_member g-staff u-bob",
            "lookup ghost",
            "remove_member g-staff u-carol"
        ]
    );
    assert_eq!(t.members("Staff"), set(["alice", "bob"]));
    assert!(outcome.detail.contains("ghost"), "{outcome:?}");
}

#[tokio::test]
async fn add_members_first_is_accepted_as_a_spelling() {
    let t = small_group_target().arc();
    let e = engine(&cfg("group_sync_strategy = \"add-members-first\""), &t);
    let calls = applied(&e, &t, &sync(STAFF, ["alice"])).await;
    assert_eq!(
        calls,
        [
            "list_groups",
            "list_members g-staff",
            "lookup alice",
            "add_member g-staff u-alice",
            "remove_member g-staff u-carol"
        ]
    );
}

#[tokio::test]
async fn group_sync_never_adds_nor_removes_unmanaged_members() {
    for strategy in ["add-member-first", "query-first"] {
        let t = MemoryTarget::new()
            .with_accounts(["admin", "breakglass", "alice", "zed"])
            .with_group("Staff", ["admin", "zed"])
            .arc();
        let e = engine(
            &cfg(&format!(
                "unmanaged_logins = [\"admin\", \"breakglass\"]\ngroup_sync_strategy = \"{strategy}\""
            )),
            &t,
        );
        // admin: a member, not listed; breakglass: listed, not a member.
        let calls = applied(&e, &t, &sync(STAFF, ["alice", "breakglass"])).await;
        // The same calls with both strategies: alice, the only managed one
        // listed, is not a member yet.
        assert_eq!(
            calls,
            [
                "list_groups",
                "list_members g-staff",
                "lookup alice",
                "add_member g-staff u-alice",
                "remove_member g-staff u-zed",
            ],
            "{strategy}"
        );
        assert_eq!(t.members("Staff"), set(["admin", "alice"]), "{strategy}");
    }
}

#[tokio::test]
async fn applying_the_same_group_sync_twice_leaves_the_same_state() {
    let t = small_group_target().rejecting_duplicate_members().arc();
    let e = engine(&cfg("group_sync_strategy = \"query-first\""), &t);
    let ev = sync(STAFF, ["alice", "bob", "dave"]);
    applied(&e, &t, &ev).await;
    let first = t.snapshot();
    assert_eq!(applied(&e, &t, &ev).await, ["list_members g-staff"]);
    assert_eq!(t.snapshot(), first);

    let t = small_group_target().arc();
    let e = engine(&cfg(""), &t);
    applied(&e, &t, &ev).await;
    let first = t.snapshot();
    assert_eq!(
        applied(&e, &t, &ev).await,
        [
            "list_members g-staff",
            "add_member g-staff u-alice",
            "add_member g-staff u-bob",
            "add_member g-staff u-dave"
        ]
    );
    assert_eq!(t.snapshot(), first);
    assert_eq!(t.members("Staff"), set(["alice", "bob", "dave"]));
}

/// 300 listed users, accounts for all but every tenth; Staff starts with every
/// fourth user that has an account, 60 old members and the unmanaged admin.
fn large_group_target() -> (MemoryTarget, Vec<String>, Vec<String>, Vec<String>) {
    let listed: Vec<String> = (0..300).map(user).collect();
    let with_account: Vec<String> = (0..300).filter(|i| i % 10 != 9).map(user).collect();
    let extras: Vec<String> = (0..60).map(|i| format!("old{i:03}")).collect();
    let initial: Vec<String> = (0..300)
        .filter(|i| i % 10 != 9 && i % 4 == 0)
        .map(user)
        .chain(extras.iter().cloned())
        .chain(["admin".to_string()])
        .collect();
    let t = MemoryTarget::new()
        .with_accounts(with_account.iter().chain(&extras))
        .with_accounts(["admin"])
        .with_group("Staff", &initial);
    (t, listed, with_account, initial)
}

#[tokio::test]
async fn a_large_group_sync_add_member_first() {
    let (t, listed, with_account, _) = large_group_target();
    let t = t.arc();
    let e = engine(&cfg("unmanaged_logins = [\"admin\"]"), &t);
    let calls = applied(&e, &t, &sync(STAFF, &listed)).await;

    // Hundreds of unknown IDs: one account listing instead of a look-up each.
    let mut expected = strings(["list_groups", "list_members g-staff", "list_accounts"]);
    for s in &listed {
        if with_account.contains(s) {
            expected.push(format!("add_member g-staff u-{s}"));
        }
    }
    expected.extend((0..60).map(|i| format!("remove_member g-staff u-old{i:03}")));
    assert_eq!(calls, expected);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("get ") || (c.starts_with("lookup") && c.contains("old"))),
        "a call per removed member"
    );

    let mut want = set(&with_account);
    want.insert("admin".into());
    assert_eq!(t.members("Staff"), want);
}

#[tokio::test]
async fn a_large_group_sync_query_first() {
    let (t, listed, with_account, initial) = large_group_target();
    let t = t.rejecting_duplicate_members().arc();
    let e = engine(
        &cfg("unmanaged_logins = [\"admin\"]\ngroup_sync_strategy = \"query-first\""),
        &t,
    );
    let (outcome, calls) = ok(&e, &t, &sync(STAFF, &listed)).await;

    let mut expected = strings(["list_groups", "list_members g-staff", "list_accounts"]);
    for s in listed.iter().filter(|s| !initial.contains(s)) {
        if with_account.contains(s) {
            expected.push(format!("add_member g-staff u-{s}"));
        }
    }
    expected.extend((0..60).map(|i| format!("remove_member g-staff u-old{i:03}")));
    assert_eq!(calls, expected);

    let mut want = set(&with_account);
    want.insert("admin".into());
    assert_eq!(t.members("Staff"), want);
    assert!(
        outcome.detail.contains("30 without an account"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_large_group_sync_falls_back_to_look_ups_without_an_account_listing() {
    let (t, listed, with_account, _) = large_group_target();
    let t = t.arc();
    // A target that cannot list accounts (e.g. no `accounts.list` operation).
    t.fail("list_accounts", Fail::Permanent);
    let e = engine(&cfg("unmanaged_logins = [\"admin\"]"), &t);
    let calls = applied(&e, &t, &sync(STAFF, &listed)).await;
    assert_eq!(calls[2], "list_accounts", "tried once");
    let lookups = calls.iter().filter(|c| c.starts_with("lookup ")).count();
    assert_eq!(lookups, listed.len(), "then one look-up per listed subject");
    let mut want = set(&with_account);
    want.insert("admin".into());
    assert_eq!(t.members("Staff"), want);
}
