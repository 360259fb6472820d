//! Single-subject account provisioning: strategies, delete, cached API IDs,
//! stale IDs, idempotency.

use super::*;

#[tokio::test]
async fn query_first_looks_up_then_creates_a_new_account() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg(""), &t);
    let calls = applied(&e, &t, &one("add", PG, "JDoe")).await;
    assert_eq!(calls, ["lookup jdoe", "create jdoe"]);
    let (id, account) = t.account("jdoe").expect("not created");
    assert_eq!(id, "u-jdoe");
    assert_eq!(
        account.attributes.get("givenName"),
        Some(&vec!["Given jdoe".to_string()])
    );
}

#[tokio::test]
async fn query_first_looks_up_then_updates_an_existing_account() {
    let t = MemoryTarget::new().with_accounts(["jdoe"]).arc();
    let e = engine(&cfg(""), &t);
    let calls = applied(&e, &t, &one("update", PG, "jdoe")).await;
    assert_eq!(calls, ["lookup jdoe", "update u-jdoe"]);
    assert_eq!(t.account_list(), ["jdoe"], "no duplicate");
    let (_, account) = t.account("jdoe").expect("gone");
    assert_eq!(
        account.attributes.get("mail"),
        Some(&vec!["jdoe@example.edu".to_string()])
    );
}

#[tokio::test]
async fn a_second_event_for_the_same_subject_uses_the_cached_api_id() {
    // ID cached by a lookup ...
    let t = MemoryTarget::new().with_accounts(["jdoe"]).arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "update u-jdoe"]
    );
    assert_eq!(
        applied(&e, &t, &one("update", PG, "JDOE")).await,
        ["update u-jdoe"]
    );
    // ... and by a create.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "asmith")).await,
        ["lookup asmith", "create asmith"]
    );
    assert_eq!(
        applied(&e, &t, &one("update", PG, "asmith")).await,
        ["update u-asmith"]
    );
    let stats = crate::engine::Provisioner::stats(&e);
    let (hits, misses) = (stats.account_cache_hits, stats.account_cache_misses);
    assert!(hits >= 2 && misses >= 2, "cache stats {hits}/{misses}");
    crate::engine::Provisioner::clear_caches(&e);
    assert_eq!(
        applied(&e, &t, &one("update", PG, "asmith")).await,
        ["lookup asmith"],
        "after clearing the caches the ID is looked up again (and the look-up shows nothing to update)"
    );
}

#[tokio::test]
async fn create_first_creates_without_a_lookup() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg("provision_strategy = \"create-first\""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["create jdoe"]
    );
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["update u-jdoe"],
        "cached"
    );
    assert_eq!(t.account_list(), ["jdoe"]);
}

#[tokio::test]
async fn create_first_falls_back_to_lookup_and_update_when_the_account_exists() {
    let t = MemoryTarget::new().with_accounts(["jdoe"]).arc();
    let e = engine(&cfg("provision_strategy = \"create-first\""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["create jdoe", "lookup jdoe", "update u-jdoe"]
    );
    assert_eq!(t.account_list(), ["jdoe"], "no duplicate");
    let (_, account) = t.account("jdoe").expect("gone");
    assert!(
        !account.attributes.is_empty(),
        "updated with the event's attributes"
    );
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["update u-jdoe"],
        "cached"
    );
}

#[tokio::test]
async fn delete_deprovisions_the_account_found_by_lookup() {
    let t = MemoryTarget::new().with_accounts(["jdoe", "other"]).arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "JDoe")).await,
        ["lookup jdoe", "deprovision u-jdoe"]
    );
    assert_eq!(t.account_list(), ["other"]);
}

#[tokio::test]
async fn delete_of_an_absent_account_makes_no_deprovision_call() {
    let t = MemoryTarget::new().with_accounts(["other"]).arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "ghost")).await,
        ["lookup ghost"]
    );
    assert_eq!(t.account_list(), ["other"]);
}

#[tokio::test]
async fn delete_uses_the_cached_id_and_forgets_it() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "create jdoe"]
    );
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "jdoe")).await,
        ["deprovision u-jdoe"]
    );
    // Forgotten: a new add looks up (and creates) again.
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "create jdoe"]
    );
}

#[tokio::test]
async fn a_stale_cached_id_is_looked_up_again_and_the_fresh_account_updated() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "create jdoe"]
    );
    // Deleted and re-created out of band under a new ID.
    t.remove_account("jdoe");
    t.insert_account_with_id("jdoe", "u-jdoe-new");
    assert_eq!(
        applied(&e, &t, &one("update", PG, "jdoe")).await,
        ["update u-jdoe", "lookup jdoe", "update u-jdoe-new"]
    );
    assert_eq!(
        applied(&e, &t, &one("update", PG, "jdoe")).await,
        ["update u-jdoe-new"]
    );
    assert_eq!(t.account_list(), ["jdoe"]);
}

#[tokio::test]
async fn a_stale_cached_id_of_an_account_gone_for_good_leads_to_a_create() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "create jdoe"]
    );
    t.remove_account("jdoe");
    assert_eq!(
        applied(&e, &t, &one("update", PG, "jdoe")).await,
        ["update u-jdoe", "lookup jdoe", "create jdoe"]
    );
    assert_eq!(t.account_list(), ["jdoe"]);
    assert_eq!(
        applied(&e, &t, &one("update", PG, "jdoe")).await,
        ["update u-jdoe"]
    );
}

#[tokio::test]
async fn a_stale_cached_id_under_create_first_is_refreshed_too() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg("provision_strategy = \"create-first\""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["create jdoe"]
    );
    t.remove_account("jdoe");
    t.insert_account_with_id("jdoe", "u-jdoe-new");
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["update u-jdoe", "lookup jdoe", "update u-jdoe-new"]
    );
}

#[tokio::test]
async fn applying_the_same_add_twice_leaves_the_same_state() {
    for strategy in ["query-first", "create-first"] {
        let t = MemoryTarget::new().with_accounts(["other"]).arc();
        let c = cfg(&format!("provision_strategy = \"{strategy}\""));
        let ev = one("add", PG, "jdoe");
        let e = engine(&c, &t);
        applied(&e, &t, &ev).await;
        let first = t.snapshot();
        applied(&e, &t, &ev).await;
        assert_eq!(t.snapshot(), first, "{strategy}: same engine");
        // A restarted worker (empty cache) gets the same event again.
        let e = engine(&c, &t);
        applied(&e, &t, &ev).await;
        assert_eq!(t.snapshot(), first, "{strategy}: fresh engine");
        assert_eq!(t.account_list(), ["jdoe", "other"]);
    }
}

#[tokio::test]
async fn applying_the_same_delete_twice_leaves_the_same_state() {
    let t = MemoryTarget::new().with_accounts(["jdoe", "other"]).arc();
    let e = engine(&cfg(""), &t);
    let ev = bare("delete", PG, "jdoe");
    assert_eq!(
        applied(&e, &t, &ev).await,
        ["lookup jdoe", "deprovision u-jdoe"]
    );
    let first = t.snapshot();
    assert_eq!(applied(&e, &t, &ev).await, ["lookup jdoe"]);
    assert_eq!(t.snapshot(), first);
}

#[tokio::test]
async fn a_stale_cached_id_in_a_delete_is_looked_up_again_and_the_fresh_account_deprovisioned() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &one("add", PG, "jdoe")).await,
        ["lookup jdoe", "create jdoe"]
    );
    // Deleted and re-created out of band (or by another worker) under a new ID.
    t.remove_account("jdoe");
    t.insert_account_with_id("jdoe", "u-jdoe-new");
    // The cached ID is absent, which proves nothing about the account itself.
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "jdoe")).await,
        [
            "deprovision u-jdoe",
            "lookup jdoe",
            "deprovision u-jdoe-new"
        ]
    );
    assert!(t.account_list().is_empty(), "{:?}", t.account_list());
}

#[tokio::test]
async fn a_delete_whose_cached_account_is_gone_looks_once_more_and_is_done() {
    let t = MemoryTarget::new().arc();
    let e = engine(&cfg(""), &t);
    applied(&e, &t, &one("add", PG, "jdoe")).await;
    t.remove_account("jdoe");
    let (outcome, calls) = ok(&e, &t, &bare("delete", PG, "jdoe")).await;
    assert_eq!(calls, ["deprovision u-jdoe", "lookup jdoe"]);
    assert_eq!(outcome.status, OutcomeStatus::Applied);
    assert!(outcome.detail.contains("already gone"), "{outcome:?}");
    // Forgotten: the next delete asks the target.
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "jdoe")).await,
        ["lookup jdoe"]
    );
}

#[tokio::test]
async fn an_absent_answer_on_an_id_just_looked_up_is_final() {
    let t = MemoryTarget::new().with_accounts(["jdoe"]).arc();
    // Someone else deletes the account between the look-up and the deprovision.
    t.before_call("deprovision u-jdoe", |t| t.remove_account("jdoe"));
    let e = engine(&cfg(""), &t);
    assert_eq!(
        applied(&e, &t, &bare("delete", PG, "jdoe")).await,
        ["lookup jdoe", "deprovision u-jdoe"]
    );
}

/// A target whose account of the event's subject holds the event's attributes.
fn holding(ev: &Event) -> Arc<MemoryTarget> {
    let Subjects::One {
        subject,
        attributes,
    } = &ev.subjects
    else {
        panic!("one subject")
    };
    let t = MemoryTarget::new();
    t.insert_account_with(subject, attributes.clone());
    t.arc()
}

#[tokio::test]
async fn an_update_whose_look_up_shows_the_account_as_wanted_sends_nothing() {
    let ev = one("update", PG, "jdoe");
    let t = holding(&ev);
    let e = engine(&cfg(""), &t);
    let (outcome, calls) = ok(&e, &t, &ev).await;
    assert_eq!(calls, ["lookup jdoe"]);
    assert_eq!(outcome.detail, "u-jdoe already up to date; not updated");
    // From the cache there is nothing to compare with: the update goes out.
    assert_eq!(applied(&e, &t, &ev).await, ["update u-jdoe"]);

    // `all` keeps the original's update.
    let e = engine(&cfg("full_sync_updates = \"all\""), &t);
    assert_eq!(applied(&e, &t, &ev).await, ["lookup jdoe", "update u-jdoe"]);
}

#[tokio::test]
async fn create_first_skips_the_update_when_the_existing_account_is_as_wanted() {
    let ev = one("add", PG, "jdoe");
    let t = holding(&ev);
    let e = engine(&cfg("provision_strategy = \"create-first\""), &t);
    assert_eq!(applied(&e, &t, &ev).await, ["create jdoe", "lookup jdoe"]);
}
