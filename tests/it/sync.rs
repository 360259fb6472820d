//! membership_sync ends with the target in exactly the stated state
//! (unmanaged accounts aside), from a partly different starting state.

use std::collections::BTreeSet;

use provisioner::worker::Verdict;
use serde_json::json;

use crate::support::*;

fn mail(i: usize) -> String {
    format!("user{i:04}@example.edu")
}

fn sync_event(group: &str, range: impl Iterator<Item = usize>) -> serde_json::Value {
    let subjects: Vec<String> = range.map(|i| format!("user{i:04}")).collect();
    let attributes: serde_json::Map<String, serde_json::Value> = subjects
        .iter()
        .map(|s| {
            (
                s.clone(),
                json!({"mail": [format!("{s}@example.edu")], "givenName": [s.to_uppercase()], "sn": ["Synced"]}),
            )
        })
        .collect();
    json!({"action": "membership_sync", "group": group, "subjects": subjects, "attributes": attributes})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_membership_sync_makes_the_accounts_exactly_the_listed_subjects() {
    let _broker = shared().await;
    let mut h = Harness::start("").await;
    // Start: users 0..200 exist (100..200 listed, 0..100 not), plus an unmanaged one.
    for i in 0..200 {
        h.mock.add_user(&mail(i), "Old", "Old");
    }
    let bg = h.mock.add_user("breakglass@example.edu", "Break", "Glass");
    // Stated: users 100..400.
    h.publish(sync_event(USERS, 100..400)).await;
    let o = h.outcome().await;
    assert_eq!(o.verdict, Verdict::Applied, "{o:?}");

    let have: BTreeSet<String> = h.mock.users().into_iter().map(|u| u.email).collect();
    let mut want: BTreeSet<String> = (100..400).map(mail).collect();
    want.insert("breakglass@example.edu".into());
    assert_eq!(have, want);
    assert_eq!(
        h.mock.user(&mail(150)).unwrap().last_name,
        "Synced",
        "existing ones updated"
    );
    assert_eq!(
        h.mock.user(&mail(399)).unwrap().first_name,
        "USER0399",
        "new ones created with attributes"
    );
    let reqs = h.mock.request_lines();
    // Writes address accounts by ID: no request may name the unmanaged one.
    assert!(
        !reqs
            .iter()
            .any(|l| l.contains("breakglass") || l.contains(&bg)),
        "unmanaged never touched"
    );
    assert_eq!(
        h.mock.user("breakglass@example.edu").unwrap().first_name,
        "Break"
    );
    assert_eq!(reqs.iter().filter(|l| l.starts_with("DELETE")).count(), 100);
    // The 100 listed users already there all differ ("Old"): 100 updates.
    assert_eq!(reqs.iter().filter(|l| l.starts_with("PATCH")).count(), 100);
    assert_eq!(
        reqs.iter().filter(|l| l.as_str() == "POST /users").count(),
        200
    );
    // The listing supplies every ID: no per-subject look-ups.
    assert!(
        !reqs.iter().any(|l| l.starts_with("GET /users/")),
        "{reqs:?}"
    );

    // Applying the same sync again changes nothing more.
    h.mock.clear_requests();
    h.publish(sync_event(USERS, 100..400)).await;
    h.outcome().await;
    let again: BTreeSet<String> = h.mock.users().into_iter().map(|u| u.email).collect();
    assert_eq!(again, want);
    // Every account is as stated now: the listing's pages and nothing else
    // (full_sync_updates = "changed", the default).
    let again_reqs = h.mock.request_lines();
    assert!(
        again_reqs.iter().all(|l| l.starts_with("GET /users?")),
        "{again_reqs:?}"
    );
    h.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_membership_sync_makes_the_members_exactly_the_listed_subjects() {
    for strategy in ["add-member-first", "query-first"] {
        let _broker = shared().await;
        let mut h = Harness::start(&format!("group_sync_strategy = \"{strategy}\"")).await;
        for i in 0..400 {
            h.mock.add_user(&mail(i), "U", "U");
        }
        let bg = h.mock.add_user("breakglass@example.edu", "Break", "Glass");
        h.mock.add_group("Staff");
        // Start: members 0..150 (0..50 not listed), plus the unmanaged account.
        for i in 0..150 {
            assert!(h.mock.add_member("Staff", &mail(i)));
        }
        assert!(h.mock.add_member("Staff", "breakglass@example.edu"));
        // Stated: 50..350.
        h.publish(sync_event(STAFF, 50..350)).await;
        let o = h.outcome().await;
        assert_eq!(o.verdict, Verdict::Applied, "{strategy}: {o:?}");

        let have: BTreeSet<String> = h.mock.members("Staff").into_iter().collect();
        let mut want: BTreeSet<String> = (50..350).map(mail).collect();
        want.insert("breakglass@example.edu".into());
        assert_eq!(have, want, "{strategy}");
        let reqs = h.mock.request_lines();
        assert!(
            !reqs.iter().any(|l| l.contains(&bg)),
            "{strategy}: unmanaged member untouched"
        );
        assert_eq!(
            reqs.iter().filter(|l| l.starts_with("DELETE")).count(),
            50,
            "{strategy}: only the 50 extras removed"
        );
        // Unmanaged status comes from the member listing: no look-up per removed member.
        assert!(
            !reqs
                .iter()
                .any(|l| (0..50).any(|i| l.contains(&format!("user{i:04}")))),
            "{strategy}"
        );
        let adds = reqs.iter().filter(|l| l.starts_with("POST")).count();
        match strategy {
            "query-first" => assert_eq!(adds, 200, "only the missing ones added"),
            _ => assert_eq!(adds, 300, "every listed one added"),
        }
        h.cleanup().await;
    }
}
