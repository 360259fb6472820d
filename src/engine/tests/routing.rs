//! Routing by group, and unmanaged logins in single-subject events.

use super::*;

/// Every kind of single-subject event for `subject`, to both managed groups.
fn single_events(subject: &str) -> Vec<Event> {
    vec![
        one("add", PG, subject),
        one("update", PG, subject),
        bare("delete", PG, subject),
        one("add", STAFF, subject),
        one("update", STAFF, subject),
        bare("delete", STAFF, subject),
    ]
}

#[tokio::test]
async fn events_for_an_unmanaged_group_are_ignored_without_calls() {
    let t = MemoryTarget::new()
        .with_accounts(["jdoe", "zed"])
        .with_group("Staff", ["zed"])
        .arc();
    let e = engine(&cfg(""), &t);
    let before = t.snapshot();
    let events = [
        one("add", OTHER, "jdoe"),
        bare("delete", OTHER, "zed"),
        sync(OTHER, ["jdoe"]),
        sync(OTHER, Vec::<String>::new()),
        // Neither a prefix nor a suffix of a managed group matches.
        one("add", "app:example:users:extra", "jdoe"),
        one("add", "example:users", "jdoe"),
    ];
    for ev in &events {
        assert_eq!(ignored(&e, &t, ev).await, Vec::<String>::new(), "{ev:?}");
    }
    assert_eq!(t.snapshot(), before);
}

#[tokio::test]
async fn group_names_are_compared_case_insensitively() {
    let t = MemoryTarget::new()
        .with_accounts(["jdoe"])
        .with_group("Staff", Vec::<String>::new())
        .arc();
    let c = config(
        "provision_group = \"App:Example:Users\"\ntarget_group_map = { \"App:Example:STAFF\" = \"Staff\" }",
    );
    let e = engine(&c, &t);
    assert_eq!(
        applied(&e, &t, &one("update", "APP:EXAMPLE:users", "jdoe")).await,
        ["lookup jdoe", "update u-jdoe"]
    );
    assert_eq!(
        applied(&e, &t, &one("add", "app:example:Staff", "jdoe")).await,
        ["list_groups", "add_member g-staff u-jdoe"]
    );
    assert_eq!(t.members("Staff"), set(["jdoe"]));
    assert_eq!(
        ignored(&e, &t, &one("add", "APP:OTHER:THINGS", "jdoe")).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn events_for_an_unmanaged_group_make_no_calls_even_with_a_cache_validity_period() {
    // A full listing of the target for an event that is then ignored is
    // wasted, and makes an unrelated event fail when the target is down.
    let t = MemoryTarget::new().with_accounts(["jdoe"]).arc();
    let e = engine(&cfg("account_cache_validity_period = 300"), &t);
    assert_eq!(
        ignored(&e, &t, &one("add", OTHER, "jdoe")).await,
        Vec::<String>::new()
    );
    t.fail("list_accounts", Fail::Transient);
    assert_eq!(
        ignored(&e, &t, &one("add", OTHER, "jdoe")).await,
        Vec::<String>::new()
    );
}

async fn unmanaged_single_events_make_no_calls(unmanaged: &str) {
    let t = MemoryTarget::new()
        .with_accounts(["admin", "breakglass", "root"])
        .with_group("Staff", ["root"])
        .arc();
    let e = engine(&cfg(&format!("unmanaged_logins = {unmanaged}")), &t);
    let before = t.snapshot();
    for subject in ["admin", "ADMIN", "BreakGlass", "root"] {
        for ev in single_events(subject) {
            assert_eq!(ignored(&e, &t, &ev).await, Vec::<String>::new(), "{ev:?}");
        }
    }
    assert_eq!(t.snapshot(), before);
    // A managed login still works.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "create jdoe"]
    );
}

#[tokio::test]
async fn unmanaged_logins_as_a_list_make_no_calls() {
    unmanaged_single_events_make_no_calls(r#"["Admin", " breakglass ", "ROOT"]"#).await;
}

#[tokio::test]
async fn unmanaged_logins_as_a_whitespace_separated_string_make_no_calls() {
    unmanaged_single_events_make_no_calls("\"  Admin\\tbreakglass \\n  root \"").await;
}

#[tokio::test]
async fn unmanaged_logins_make_no_calls_even_with_a_cache_validity_period() {
    let t = MemoryTarget::new().with_accounts(["admin"]).arc();
    let e = engine(
        &cfg("unmanaged_logins = [\"admin\"]\naccount_cache_validity_period = 300"),
        &t,
    );
    for ev in single_events("admin") {
        assert_eq!(ignored(&e, &t, &ev).await, Vec::<String>::new(), "{ev:?}");
    }
}

#[tokio::test]
async fn unmanaged_is_decided_on_the_match_value() {
    // Match on mail: the subject `alias` has the unmanaged mail.
    let t = MemoryTarget::new()
        .matching_on_mail()
        .with_accounts(["ops@example.edu"])
        .arc();
    let e = engine(&cfg("unmanaged_logins = [\"OPS@example.edu\"]"), &t);
    let ev = event(json!({"action": "add", "group": PG, "subject": "alias",
        "attributes": {"mail": ["Ops@Example.edu"]}}));
    assert_eq!(ignored(&e, &t, &ev).await, Vec::<String>::new());
    let ev = event(
        json!({"action": "add", "group": PG, "subject": "ops@example.edu",
        "attributes": {"mail": ["someone@example.edu"]}}),
    );
    assert_eq!(
        applied(&e, &t, &ev).await,
        ["lookup someone@example.edu", "create someone@example.edu"]
    );
}
