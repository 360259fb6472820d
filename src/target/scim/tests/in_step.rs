//! Whether an update would change anything: the mapped attributes of a
//! subject against a User as the provider shows it, what an account listing
//! asks for to compare, and what a sync through this adapter then sends.

use std::sync::Arc;

use wiremock::matchers::path_regex;

use super::*;
use crate::engine::{Engine, Provisioner};

/// The User the default mapping makes of `user<i>` with sn `family`.
fn listed_user(i: u32, family: &str) -> Value {
    json!({
        "id": format!("u{i}"),
        "userName": format!("user{i:02}"),
        "active": true,
        "emails": [{"value": format!("user{i}@example.edu"), "type": "work", "primary": true}],
        "name": {"givenName": format!("Given{i}"), "familyName": family},
        "meta": {"resourceType": "User"}
    })
}

fn subject_ctx(t: &ScimTarget, i: u32, family: &str) -> SubjectContext {
    ctx(
        t,
        &format!("user{i:02}"),
        &[
            ("mail", &format!("user{i}@example.edu")),
            ("givenName", &format!("Given{i}")),
            ("sn", family),
        ],
    )
}

// ------------------------------------------------------------ pure

fn path(p: &str) -> AttrPath {
    AttrPath::parse(p).unwrap()
}

#[test]
fn values_are_read_at_each_kind_of_path() {
    let resource = json!({
        "name": {"givenName": "Ann"},
        "emails": [
            {"value": "home@x", "type": "home"},
            {"value": "work@x", "type": "work", "primary": true}
        ],
        "phoneNumbers": [{"value": "1", "type": "mobile"}],
        "roles": [{"value": "r1"}, {"value": "r2", "primary": true}],
        ENTERPRISE: {"employeeNumber": 42, "manager": {"value": "m1"}}
    });
    let cases = [
        ("name.givenName", Some("Ann")),
        ("name.familyName", None),
        ("emails", Some("work@x")),
        ("phoneNumbers[type eq \"mobile\"]", Some("1")),
        ("phoneNumbers[type eq \"work\"]", None),
        ("roles", Some("r2")),
        (&format!("{ENTERPRISE}:employeeNumber") as &str, Some("42")),
        (&format!("{ENTERPRISE}:manager.value"), Some("m1")),
        ("title", None),
    ];
    for (p, want) in cases {
        assert_eq!(path(p).value_in(&resource).as_deref(), want, "{p}");
    }
    let demoted = json!({"emails": [{"value": "work@x", "type": "work", "primary": false}]});
    assert_eq!(
        path("emails").value_in(&demoted),
        None,
        "an update would make it primary again"
    );
}

#[test]
fn a_user_is_in_step_when_each_mapped_value_is_there() {
    let (given, family, title) = (
        path("name.givenName"),
        path("name.familyName"),
        path("title"),
    );
    let values = |f: &str, t: &str| {
        vec![
            (&given, "Ann".to_string()),
            (&family, f.to_string()),
            (&title, t.to_string()),
        ]
    };
    let listed = json!({"userName": "ann", "active": true, "name": {"givenName": "Ann", "familyName": "Lee"}, "title": "Boss"});
    let inactive = json!({"userName": "ann", "active": false, "name": {"givenName": "Ann", "familyName": "Lee"}, "title": "Boss"});
    let untitled = json!({"userName": "ann", "name": {"givenName": "Ann", "familyName": "Lee"}});
    // (user, userName, familyName, title, PUT, in step, why)
    let cases = [
        (&listed, "ann", "Lee", "Boss", false, true, "all there"),
        (
            &listed,
            "ann",
            "Li",
            "Boss",
            false,
            false,
            "a value differs",
        ),
        (
            &listed,
            "Ann",
            "Lee",
            "Boss",
            false,
            false,
            "the userName differs",
        ),
        (
            &inactive,
            "ann",
            "Lee",
            "Boss",
            false,
            false,
            "an update reactivates",
        ),
        (
            &listed,
            "ann",
            "Lee",
            "",
            false,
            true,
            "a PATCH leaves an empty value alone",
        ),
        (&listed, "ann", "Lee", "", true, false, "a PUT clears it"),
        (
            &untitled,
            "ann",
            "Lee",
            "",
            true,
            true,
            "nothing to clear; no `active` means active",
        ),
    ];
    for (user, user_name, f, t, put, want, why) in cases {
        assert_eq!(
            mapping::user_in_step(user, user_name, &values(f, t), put),
            want,
            "{why}"
        );
    }
}

// ------------------------------------------------------------ against a mock provider

#[tokio::test]
async fn a_listing_given_desired_states_asks_for_the_mapped_attributes_and_compares() {
    let server = MockServer::start().await;
    let users = vec![
        listed_user(1, "Doe"),
        listed_user(2, "Stale"),
        listed_user(3, "Doe"),
    ];
    mount(&server, "GET", "/Users", scim(200, list(users))).await;
    let t = target(&server).await;
    let wanted = [subject_ctx(&t, 1, "Doe"), subject_ctx(&t, 2, "Doe")];
    let desired = |m: &str| wanted.iter().find(|c| c.match_value == m).cloned();
    let listed = t.list_accounts(Some(&desired)).await.unwrap();
    let flags: Vec<(&str, bool)> = listed
        .iter()
        .map(|a| (a.api_id.as_str(), a.in_step))
        .collect();
    assert_eq!(flags, [("u1", true), ("u2", false), ("u3", false)]);
    let asked = query_map(&requests(&server).await[0]);
    assert_eq!(
        asked["attributes"],
        "userName,active,displayName,emails,name"
    );

    // Without desired states only the match attribute is asked for.
    t.list_accounts(None).await.unwrap();
    let asked = query_map(&requests(&server).await[1]);
    assert_eq!(asked["attributes"], "userName");
}

#[tokio::test]
async fn a_look_up_says_whether_the_user_it_found_is_in_step() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/Users",
        scim(200, list(vec![listed_user(4, "Doe")])),
    )
    .await;
    let t = target(&server).await;
    let found = t.lookup_account(&subject_ctx(&t, 4, "Doe")).await.unwrap();
    assert_eq!(found.map(|f| f.in_step), Some(true));
    let found = t.lookup_account(&subject_ctx(&t, 4, "Lee")).await.unwrap();
    assert_eq!(found.map(|f| f.in_step), Some(false));
}

// ------------------------------------------------------------ a whole sync

fn sync_of_twenty() -> crate::event::Event {
    let subjects: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    let attributes: serde_json::Map<String, Value> = (0..20)
        .map(|i| {
            (
                format!("user{i:02}"),
                json!({"mail": [format!("user{i}@example.edu")], "givenName": [format!("Given{i}")], "sn": ["Doe"]}),
            )
        })
        .collect();
    let body = json!({"action": "membership_sync", "group": "app:x:users",
        "subjects": subjects, "attributes": attributes});
    crate::event::parse(body.to_string().as_bytes(), None).unwrap()
}

/// A provider with users 1..=19 (7 and 13 with a stale family name) and
/// u99, whom no subject wants; listed 8 at a time.
async fn twenty_users_provider(top: &str) -> (MockServer, Engine) {
    let server = MockServer::start().await;
    let mut users: Vec<Value> = (1..=19)
        .map(|i| listed_user(i, if i == 7 || i == 13 { "Stale" } else { "Doe" }))
        .collect();
    users.push(json!({"id": "u99", "userName": "olduser", "active": true}));
    Mock::given(method("GET"))
        .and(wiremock::matchers::path(format!("{PREFIX}/Users")))
        .respond_with(Directory {
            users,
            max_page: 8,
            with_total: true,
        })
        .mount(&server)
        .await;
    mount(&server, "POST", "/Users", scim(201, json!({"id": "u0"}))).await;
    for verb in ["PATCH", "DELETE"] {
        Mock::given(method(verb))
            .and(path_regex(format!("^{PREFIX}/Users/u[0-9]+$")))
            .respond_with(ResponseTemplate::new(204))
            .mount(&server)
            .await;
    }
    let config = parse(
        &format!("{}{PREFIX}", server.uri()),
        &format!("{top}\n[scim]\npage_size = 8"),
    )
    .unwrap();
    let KindConfig::Scim(s) = &config.kind else {
        panic!("not a scim kind")
    };
    let http = HttpClient::new(&crate::assembly::http_settings(&config)).unwrap();
    let engine = Engine::new(&config, Arc::new(ScimTarget::new(s.clone(), http)));
    (server, engine)
}

async fn calls(server: &MockServer) -> Vec<String> {
    requests(server)
        .await
        .iter()
        .map(|r| format!("{} {}", r.method, r.url.path().trim_start_matches(PREFIX)))
        .collect()
}

#[tokio::test]
async fn a_sync_sends_the_pages_the_creates_the_removals_and_only_the_real_changes() {
    let (server, engine) = twenty_users_provider("").await;
    let outcome = engine.apply(&sync_of_twenty()).await.unwrap();
    assert_eq!(
        calls(&server).await,
        [
            "GET /Users",
            "GET /Users",
            "GET /Users",
            "POST /Users",
            "PATCH /Users/u7",
            "PATCH /Users/u13",
            "DELETE /Users/u99",
        ],
        "{outcome:?}"
    );
    let patch = requests(&server)
        .await
        .into_iter()
        .find(|r| r.method.as_str() == "PATCH")
        .unwrap();
    let ops = body(&patch)["Operations"].clone();
    assert!(
        ops.as_array()
            .unwrap()
            .iter()
            .any(|op| op["path"] == "name.familyName" && op["value"] == "Doe"),
        "{ops}"
    );
}

#[tokio::test]
async fn with_all_a_sync_updates_every_listed_user() {
    let (server, engine) = twenty_users_provider("full_sync_updates = \"all\"").await;
    engine.apply(&sync_of_twenty()).await.unwrap();
    let calls = calls(&server).await;
    let patches = calls.iter().filter(|c| c.starts_with("PATCH")).count();
    assert_eq!(patches, 19, "{calls:?}");
    assert_eq!(calls.len(), 3 + 1 + 19 + 1, "{calls:?}");
    let first = query_map(&requests(&server).await[0]);
    assert_eq!(
        first["attributes"], "userName",
        "nothing to compare, so nothing more asked"
    );
}
