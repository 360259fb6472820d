//! `provisioner explain` and `GET /v1/provisioners/{name}/subjects/{subject}`:
//! a subject gets a known history through the real broker and the running
//! service (journal in SQLite), then is explained: the events and outcomes,
//! the account on the mock target, its memberships and the plan, and the
//! target saw no write while it was explained.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::admin::{call, wait_events, Service, TOKENS};
use crate::support::mock_rest::MockTarget;
use crate::support::*;

const MAIL: &str = "jdoe@example.edu";

/// The requests the target received, other than reads.
fn writes_seen(mock: &MockTarget) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Runs the binary's `explain` against the service's worker file.
fn explain(svc: &Service, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("--config")
        .arg(svc.dir.path().join("worker.toml"))
        .arg("explain")
        .args(["--provisioner", "example"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn explain_json(svc: &Service, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, out, err) = explain(svc, &all);
    assert!(ok, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// jdoe: created, added to Staff, then an event for a group this
/// provisioner does not manage; asmith: created (not jdoe's history).
async fn known_history(svc: &Service) {
    svc.mock.add_group("Staff");
    svc.mock.add_group("Admins");
    svc.publish(&[
        add(USERS, "jdoe", MAIL, "John", "Doe"),
        add(STAFF, "jdoe", MAIL, "John", "Doe"),
        add("app:other:group", "jdoe", MAIL, "John", "Doe"),
        add(USERS, "asmith", "asmith@example.edu", "Anne", "Smith"),
    ])
    .await;
    let client = reqwest::Client::new();
    wait_events(&client, &svc.base, "subject=jdoe", 3).await;
    wait_events(&client, &svc.base, "subject=asmith", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_history_the_account_its_groups_and_the_plan_and_writes_nothing() {
    let _broker = shared().await;
    // Ownership is recorded before each event's acknowledgement with the
    // option on, so the explanation sees it.
    let svc = Service::start(
        TOKENS,
        "path = \"journal.sqlite\"",
        "remove_only_owned = true",
    )
    .await;
    known_history(&svc).await;
    let id = svc.mock.user(MAIL).unwrap().id;
    let writes_before = writes_seen(&svc.mock);
    let reads_before = svc.mock.requests().len() - writes_before.len();

    // New last name: the account is not in step, an update is planned.
    let attributes = json!({"mail": [MAIL], "givenName": ["John"], "sn": ["Smith"]}).to_string();
    let e = explain_json(&svc, &["--attributes", &attributes, "jdoe"]);
    assert_eq!(e["provisioner"], "example");
    assert_eq!(e["subject"], "jdoe");
    assert_eq!(e["attributes_given"], true);

    let events = e["history"]["events"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|ev| {
            (
                ev["action"].as_str().unwrap(),
                ev["group"].as_str().unwrap(),
                ev["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("add", "app:other:group", "ignored"),
            ("add", STAFF, "applied"),
            ("add", USERS, "applied"),
        ],
        "newest first, jdoe's only: {e:#}"
    );
    assert_eq!(events[1]["detail"], format!("added {id} to Staff"));
    assert_eq!(events[2]["detail"], format!("created {id}"));
    assert_eq!(e["history"]["journal"], true);
    assert_eq!(e["history"]["more"], false);

    assert_eq!(
        e["account"],
        json!({"match_value": MAIL, "state": "present", "api_id": id, "in_step": false,
               "unmanaged": false, "error": null})
    );
    assert_eq!(
        e["memberships"],
        json!([
            {"group": "app:example:admins", "target_group": "Admins", "state": "not-member", "error": null},
            {"group": STAFF, "target_group": "Staff", "state": "member", "error": null},
        ])
    );
    assert_eq!(
        e["ownership"],
        json!({"remove_only_owned": true, "account": true,
               "memberships": [{"target_group": "Staff", "owned": true}], "error": null}),
        "the worker created the account and added the membership"
    );
    assert_eq!(e["plan"]["action"], "add");
    assert_eq!(e["plan"]["group"], USERS);
    assert_eq!(e["plan"]["status"], "planned");
    assert_eq!(
        e["plan"]["writes"],
        json!([format!("would update account {id} (`{MAIL}`)")])
    );

    // The target was read (the look-up among them) and never written to.
    assert_eq!(writes_seen(&svc.mock), writes_before, "explain wrote");
    let requests = svc.mock.requests();
    let reads = &requests[reads_before + writes_before.len()..];
    assert!(
        reads.iter().any(|r| r.path == "/users/jdoe%40example.edu"),
        "no look-up: {:?}",
        svc.mock.request_lines()
    );
    assert_eq!(svc.mock.user(MAIL).unwrap().last_name, "Doe");

    // As the account is: nothing to update; an add to Admins is planned.
    let same = json!({"mail": [MAIL], "givenName": ["John"], "sn": ["Doe"]}).to_string();
    let e = explain_json(&svc, &["--attributes", &same, "JDoe"]);
    assert_eq!(e["account"]["in_step"], true, "{e:#}");
    assert_eq!(e["plan"]["status"], "planned");
    assert_eq!(e["plan"]["writes"], json!([]), "{e:#}");
    assert_eq!(
        e["history"]["events"].as_array().unwrap().len(),
        3,
        "the subject's case does not matter"
    );
    let e = explain_json(
        &svc,
        &[
            "--attributes",
            &same,
            "--group",
            "app:example:admins",
            "--limit",
            "2",
            "jdoe",
        ],
    );
    assert_eq!(
        e["plan"]["writes"],
        json!([format!("would add {id} (`{MAIL}`) to group `Admins`")]),
        "{e:#}"
    );
    assert_eq!(e["history"]["events"].as_array().unwrap().len(), 2);
    assert_eq!(e["history"]["more"], true);

    // Without attributes the match value (built from `mail`) is unknown,
    // and the explanation says to give them.
    let e = explain_json(&svc, &["jdoe"]);
    assert_eq!(e["attributes_given"], false);
    assert_eq!(e["account"]["state"], "unknown");
    assert!(
        e["account"]["error"]
            .as_str()
            .unwrap()
            .contains("attributes"),
        "{e:#}"
    );
    assert_eq!(e["plan"]["status"], "failed");
    assert_eq!(e["history"]["events"].as_array().unwrap().len(), 3);

    // On a terminal: the same, in lines; a hostile subject stays one line.
    let (ok, out, err) = explain(&svc, &["--attributes", &attributes, "jdoe"]);
    assert!(ok, "{out}{err}");
    for line in [
        "subject `jdoe` of provisioner `example`".to_string(),
        format!("present, ID {id}; not in step"),
        "app:example:staff -> Staff: member".into(),
        "app:example:admins -> Admins: not a member".into(),
        "ownership (remove_only_owned = true):".into(),
        "  account: owned".into(),
        "  member of Staff: owned".into(),
        format!("would update account {id} (`{MAIL}`)"),
        format!("added {id} to Staff"),
    ] {
        assert!(out.contains(&line), "`{line}` not in:\n{out}");
    }
    let hostile = format!("evil\n\u{1b}[2J{}", "x".repeat(5000));
    let (ok, out, err) = explain(&svc, &[&hostile]);
    assert!(ok, "{out}{err}");
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("subject `evil\\n\\u{1b}[2J"), "{first}");
    assert!(first.len() < 600, "not clipped: {} bytes", first.len());
    assert!(!out.contains('\u{1b}'));

    assert_eq!(writes_seen(&svc.mock), writes_before, "explain wrote");
    svc.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_explains_a_subject_with_the_read_role() {
    let _broker = shared().await;
    let svc = Service::start(TOKENS, "path = \"journal.sqlite\"", "").await;
    known_history(&svc).await;
    let id = svc.mock.user(MAIL).unwrap().id;
    let writes_before = writes_seen(&svc.mock);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/provisioners/example/subjects/jdoe", svc.base);

    let attributes = json!({"mail": [MAIL], "givenName": ["John"], "sn": ["Smith"]}).to_string();
    let mut with_query = url::Url::parse(&url).unwrap();
    with_query
        .query_pairs_mut()
        .append_pair("attributes", &attributes)
        .append_pair("limit", "1");
    let r = client
        .get(with_query)
        .bearer_auth("reader-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["provisioner"], "example");
    assert_eq!(e["history"]["events"].as_array().unwrap().len(), 1);
    assert_eq!(e["history"]["events"][0]["result"], "ignored");
    assert_eq!(e["history"]["more"], true);
    assert_eq!(e["account"]["api_id"], id.as_str());
    assert_eq!(e["memberships"][1]["state"], "member");
    assert_eq!(e["ownership"]["remove_only_owned"], false);
    assert_eq!(
        e["plan"]["writes"],
        json!([format!("would update account {id} (`{MAIL}`)")])
    );
    assert_eq!(writes_seen(&svc.mock), writes_before, "explain wrote");

    let (s, body) = call(
        &client,
        Method::GET,
        &format!("{}/v1/provisioners/nope/subjects/jdoe", svc.base),
        Some(("bearer", "reader-token")),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, body) = call(
        &client,
        Method::GET,
        &format!("{url}?attributes=not-json"),
        Some(("bearer", "reader-token")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("attributes"), "{body}");
    let (s, _) = call(&client, Method::GET, &url, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    svc.cleanup().await;
}
