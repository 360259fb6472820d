//! Whether an update would change anything: the comparison of a rendered
//! update body with a listed (or looked-up) account, `compare`, and what a
//! sync through this adapter then sends.

use std::sync::Arc;

use wiremock::matchers::path_regex;

use super::*;
use crate::engine::{Engine, Provisioner};

// ------------------------------------------------------------ pure

#[test]
fn a_body_is_in_step_when_the_item_holds_every_leaf() {
    let body = json!({"first_name": "Ann", "tags": ["a", "b"], "profile": {"dept": "7"}});
    let cases: &[(Json, bool, &str)] = &[
        (
            json!({"id": 1, "first_name": "Ann", "tags": ["a", "b"], "profile": {"dept": 7, "x": 1}}),
            true,
            "extra keys, and a number where the template rendered its text",
        ),
        (
            json!({"first_name": "ann", "tags": ["a", "b"], "profile": {"dept": "7"}}),
            false,
            "case differs",
        ),
        (
            json!({"first_name": "Ann", "tags": ["b", "a"], "profile": {"dept": "7"}}),
            false,
            "array order differs",
        ),
        (
            json!({"first_name": "Ann", "tags": ["a", "b", "c"], "profile": {"dept": "7"}}),
            false,
            "the update would drop an entry",
        ),
        (
            json!({"tags": ["a", "b"], "profile": {"dept": "7"}}),
            false,
            "a leaf is missing",
        ),
        (
            json!({"first_name": null, "tags": ["a", "b"], "profile": {"dept": "7"}}),
            false,
            "null is not a value",
        ),
    ];
    for (item, want, why) in cases {
        assert_eq!(mapping::in_step(&body, item, None), *want, "{why}: {item}");
    }
    assert!(
        !mapping::in_step(&json!({"last_name": ""}), &json!({}), None),
        "an empty value equals only an empty value"
    );
    assert!(mapping::in_step(
        &json!({"last_name": ""}),
        &json!({"last_name": ""}),
        None
    ));
    assert!(mapping::in_step(
        &json!({"active": true}),
        &json!({"active": "true"}),
        None
    ));
}

#[test]
fn compare_names_where_each_place_is_in_the_item() {
    let body = json!({"first_name": "Ann", "last_name": "Lee", "note": "not listed"});
    let compare = vec![
        ("/first_name".to_string(), "/name/given".to_string()),
        ("/last_name".to_string(), "/name/family".to_string()),
    ];
    let item = json!({"name": {"given": "Ann", "family": "Lee"}});
    assert!(
        mapping::in_step(&body, &item, Some(&compare)),
        "places not named are not compared"
    );
    let stale = json!({"name": {"given": "Ann", "family": "Li"}});
    assert!(!mapping::in_step(&body, &stale, Some(&compare)));
    let missing = json!({"name": {"given": "Ann"}});
    assert!(!mapping::in_step(&body, &missing, Some(&compare)));
}

/// The update of [`EXAMPLE_API`] with `compare` added.
fn with_compare(compare: &str) -> String {
    let update = "body = { first_name = \"{{ attributes.givenName[0] }}\", last_name = \"{{ attributes.sn[0] }}\" }\nok = [204]";
    assert!(EXAMPLE_API.contains(update));
    EXAMPLE_API.replacen(update, &format!("{update}\ncompare = {compare}"), 1)
}

#[test]
fn compare_is_read_and_checked() {
    let p = parse(&with_compare(
        r#"{ first_name = "/name/given", "/last_name" = "/name/family" }"#,
    ))
    .unwrap();
    let update = rest_of(&p).accounts.update.expect("no update");
    assert_eq!(
        update.compare,
        Some(vec![
            ("/last_name".into(), "/name/family".into()),
            ("/first_name".into(), "/name/given".into()),
        ])
    );
    assert_error(
        &with_compare("{}"),
        "rest.accounts.update.compare",
        "is empty",
    );
    assert_error(
        &with_compare(r#"{ email = "/email" }"#),
        "rest.accounts.update.compare.email",
        "not a place in the body",
    );
    assert_error(
        &with_compare(r#"{ first_name = "name" }"#),
        "rest.accounts.update.compare.first_name",
        "not a JSON pointer",
    );
    let on_create = EXAMPLE_API.replacen(
        "ok = [201]\nexists = [409]",
        "ok = [201]\nexists = [409]\ncompare = { x = \"/x\" }",
        1,
    );
    assert_error(&on_create, "rest.accounts.create.compare", "has no meaning");
    let no_body = EXAMPLE_API.replacen(
        "body = { first_name = \"{{ attributes.givenName[0] }}\", last_name = \"{{ attributes.sn[0] }}\" }\nok = [204]",
        "ok = [204]\ncompare = { first_name = \"/first_name\" }",
        1,
    );
    assert_error(&no_body, "rest.accounts.update.compare", "no `body`");
}

// ------------------------------------------------------------ against a mock API

fn ann() -> SubjectContext {
    subject(
        "ann@x.edu",
        &[("mail", "ann@x.edu"), ("givenName", "Ann"), ("sn", "Lee")],
    )
}

#[tokio::test]
async fn a_listing_given_desired_states_says_which_accounts_are_in_step() {
    let f = fixture(EXAMPLE_API).await;
    let users = json!({"page_count": 1, "users": [
        {"id": 1, "email": "Ann@X.edu", "first_name": "Ann", "last_name": "Lee", "dept": "x"},
        {"id": 2, "email": "bob@x.edu", "first_name": "Bob", "last_name": "Old"},
        {"id": 3, "email": "eve@x.edu", "first_name": "Eve", "last_name": "Lee"},
    ]});
    Mock::given(method("GET"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users))
        .mount(&f.server)
        .await;
    let desired = |m: &str| match m {
        "ann@x.edu" => Some(ann()),
        "bob@x.edu" => Some(subject("bob@x.edu", &[("givenName", "Bob"), ("sn", "New")])),
        _ => None,
    };
    let listed = f.target.list_accounts(Some(&desired)).await.unwrap();
    let flags: Vec<(&str, bool)> = listed
        .iter()
        .map(|a| (a.api_id.as_str(), a.in_step))
        .collect();
    // eve: no desired state, so not compared.
    assert_eq!(flags, [("1", true), ("2", false), ("3", false)]);
    // Without desired states nothing is compared.
    let plain = f.target.list_accounts(None).await.unwrap();
    assert!(plain.iter().all(|a| !a.in_step), "{plain:?}");
}

#[tokio::test]
async fn a_listing_shaped_unlike_the_update_is_compared_through_compare() {
    let f = fixture(&with_compare(
        r#"{ first_name = "/name/given", last_name = "/name/family" }"#,
    ))
    .await;
    let users = json!({"page_count": 1, "users": [
        {"id": 1, "email": "ann@x.edu", "name": {"given": "Ann", "family": "Lee"}},
    ]});
    Mock::given(method("GET"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users))
        .mount(&f.server)
        .await;
    let desired = |_: &str| Some(ann());
    let listed = f.target.list_accounts(Some(&desired)).await.unwrap();
    assert!(listed[0].in_step, "{listed:?}");
}

#[tokio::test]
async fn a_look_up_says_whether_the_account_it_found_is_in_step() {
    let f = fixture(EXAMPLE_API).await;
    Mock::given(method("GET"))
        .and(path_regex("^/v2/users/ann"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"id": 1, "email": "ann@x.edu", "first_name": "Ann", "last_name": "Lee"}),
        ))
        .mount(&f.server)
        .await;
    let found = f.target.lookup_account(&ann()).await.unwrap();
    assert_eq!(
        found,
        Some(crate::target::Found {
            api_id: "1".into(),
            in_step: true
        })
    );
    let renamed = subject(
        "ann@x.edu",
        &[("mail", "ann@x.edu"), ("givenName", "Anne"), ("sn", "Lee")],
    );
    let found = f.target.lookup_account(&renamed).await.unwrap();
    assert_eq!(found.map(|f| f.in_step), Some(false));
}

// ------------------------------------------------------------ a whole sync

fn given(i: u32) -> String {
    format!("Given{i}")
}

/// A membership_sync of `user0`..`user19` (mail `user<i>@x.edu`).
fn sync_of_twenty() -> crate::event::Event {
    let subjects: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    let attributes: serde_json::Map<String, Json> = (0..20)
        .map(|i| {
            (
                format!("user{i:02}"),
                json!({"mail": [format!("user{i}@x.edu")], "givenName": [given(i)], "sn": ["Doe"]}),
            )
        })
        .collect();
    let body = json!({"action": "membership_sync", "group": "app:example:users",
        "subjects": subjects, "attributes": attributes});
    crate::event::parse(body.to_string().as_bytes(), None).unwrap()
}

/// The API holds users 1..=19 on three pages, 7 and 13 with a stale last
/// name, and user 99 that no subject wants.
async fn twenty_users_api(top: &str) -> (Fixture, Engine) {
    let f = fixture(&format!("{top}\n{EXAMPLE_API}")).await;
    let listed = |i: u32| {
        let last = if i == 7 || i == 13 { "Stale" } else { "Doe" };
        json!({"id": i, "email": format!("user{i}@x.edu"), "first_name": given(i), "last_name": last})
    };
    let pages = [
        (1..=7).map(listed).collect::<Vec<_>>(),
        (8..=14).map(listed).collect(),
        (15..=19).chain([99]).map(listed).collect(),
    ];
    for (n, users) in pages.into_iter().enumerate() {
        Mock::given(method("GET"))
            .and(path("/v2/users"))
            .and(query_param("page_number", (n + 1).to_string()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"page_count": 3, "users": users})),
            )
            .mount(&f.server)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 100})))
        .mount(&f.server)
        .await;
    Mock::given(method("PATCH"))
        .and(path_regex("^/v2/users/[0-9]+$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&f.server)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/v2/users/[0-9]+$"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&f.server)
        .await;
    let text = format!("{top}\n{EXAMPLE_API}").replacen(
        "url_prefix = \"https://api.example.com/v2\"",
        &format!("url_prefix = \"{}/v2\"", f.server.uri()),
        1,
    );
    let config = parse(&text).unwrap();
    let http = HttpClient::new(&crate::assembly::http_settings(&config)).unwrap();
    let target = Arc::new(RestTarget::new(rest_of(&config), http));
    let engine = Engine::new(&config, target);
    (f, engine)
}

/// Method and path of every request, in order.
async fn calls(f: &Fixture) -> Vec<String> {
    received(f)
        .await
        .into_iter()
        .map(|(m, target, _)| format!("{m} {}", target.split('?').next().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn a_sync_sends_the_pages_the_creates_the_removals_and_only_the_real_changes() {
    let (f, engine) = twenty_users_api("").await;
    let outcome = engine.apply(&sync_of_twenty()).await.unwrap();
    assert_eq!(
        calls(&f).await,
        [
            "GET /v2/users",
            "GET /v2/users",
            "GET /v2/users",
            "POST /v2/users",
            "PATCH /v2/users/7",
            "PATCH /v2/users/13",
            "DELETE /v2/users/99",
        ]
    );
    assert_eq!(
        outcome.api_calls, 5,
        "one listing, one create, two updates, one removal"
    );
    let patch = received(&f).await.into_iter().find(|(m, ..)| m == "PATCH");
    assert_eq!(
        patch.and_then(|(_, _, body)| body),
        Some(json!({"first_name": "Given7", "last_name": "Doe"}))
    );
}

#[tokio::test]
async fn with_all_a_sync_updates_every_listed_account() {
    let (f, engine) = twenty_users_api("full_sync_updates = \"all\"").await;
    engine.apply(&sync_of_twenty()).await.unwrap();
    let calls = calls(&f).await;
    let patches = calls.iter().filter(|c| c.starts_with("PATCH")).count();
    assert_eq!(patches, 19, "{calls:?}");
    assert_eq!(calls.len(), 3 + 1 + 19 + 1, "{calls:?}");
}
