use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::config::{self, Deprovision, MemberMatch, UpdateMethod};
use super::mapping::{self, AttrPath, ListPage, Member, Paging, ScimError};
use super::ScimTarget;
use crate::config::problems::ConfigError;
use crate::config::{parse_provisioner, KindConfig, ProvisionerConfig};
use crate::event::Attributes;
use crate::http::HttpClient;
use crate::target::{
    Created, FailureClass, RemoteAccount, RemoteGroup, Removal, SubjectContext, TargetApi,
};

const PREFIX: &str = "/scim/v2";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

// ------------------------------------------------------------------ helpers

fn parse(url_prefix: &str, scim: &str) -> Result<ProvisionerConfig, Vec<ConfigError>> {
    let text = format!(
        "kind = \"scim\"\nurl_prefix = \"{url_prefix}\"\nprovision_group = \"app:x:users\"\n\
         target_group_map = {{ \"app:x:staff\" = \"Staff\" }}\n{scim}\n"
    );
    let mut errors = Vec::new();
    match parse_provisioner(Path::new("scim.toml"), &text, &mut errors) {
        Some(c) if errors.is_empty() => Ok(c),
        _ => Err(errors),
    }
}

fn scim_config(scim: &str) -> config::ScimConfig {
    let c = parse("https://scim.example.com/v2", scim).unwrap();
    let KindConfig::Scim(s) = c.kind else {
        panic!("not a scim kind")
    };
    s
}

/// The dotted keys of the errors of a `[scim]` table.
fn error_keys(scim: &str) -> Vec<String> {
    parse("https://scim.example.com/v2", scim)
        .unwrap_err()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

async fn target_with(server: &MockServer, scim: &str) -> ScimTarget {
    let config = parse(&format!("{}{PREFIX}", server.uri()), scim).unwrap();
    let KindConfig::Scim(s) = &config.kind else {
        panic!("not a scim kind")
    };
    ScimTarget::new(
        s.clone(),
        HttpClient::new(&crate::assembly::http_settings(&config)).unwrap(),
    )
}

async fn target(server: &MockServer) -> ScimTarget {
    target_with(server, "").await
}

fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect()
}

fn ctx(t: &ScimTarget, subject: &str, pairs: &[(&str, &str)]) -> SubjectContext {
    let attributes = attrs(pairs);
    SubjectContext {
        subject: subject.to_string(),
        match_value: t.match_value(subject, &attributes).unwrap().to_lowercase(),
        attributes,
        actor: None,
    }
}

fn jdoe(t: &ScimTarget) -> SubjectContext {
    ctx(
        t,
        "jdoe",
        &[
            ("mail", "jdoe@example.edu"),
            ("givenName", "John"),
            ("sn", "Doe"),
            ("displayName", "John Doe"),
        ],
    )
}

/// A SCIM answer, with the SCIM media type.
fn scim(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/scim+json")
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": resources.len(),
        "Resources": resources,
    })
}

fn user(id: &str, user_name: &str) -> Value {
    json!({"id": id, "userName": user_name})
}

fn scim_error(status: u16, scim_type: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(),
        "scimType": scim_type,
        "detail": "refused",
    })
}

async fn mount(server: &MockServer, verb: &str, p: &str, answer: ResponseTemplate) {
    Mock::given(method(verb))
        .and(path(format!("{PREFIX}{p}")))
        .respond_with(answer)
        .mount(server)
        .await;
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

/// The only request the server saw, checked for the SCIM headers.
async fn only_request(server: &MockServer) -> Request {
    let mut all = requests(server).await;
    assert_eq!(all.len(), 1, "expected exactly one request");
    let r = all.remove(0);
    assert_scim_headers(&r);
    r
}

fn assert_scim_headers(r: &Request) {
    let header = |name: &str| r.headers.get(name).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        header("accept").as_deref(),
        Some("application/scim+json, application/json")
    );
    if !r.body.is_empty() {
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/scim+json")
        );
    }
}

fn body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn raw_query(r: &Request) -> String {
    r.url.query().unwrap_or_default().to_string()
}

fn query_map(r: &Request) -> HashMap<String, String> {
    r.url.query_pairs().into_owned().collect()
}

fn group() -> RemoteGroup {
    RemoteGroup {
        name: "Staff".into(),
        api_id: "g1".into(),
    }
}

/// A `/Users` collection that pages by `startIndex`/`count`, returning at
/// most `max_page` resources whatever was asked, never `itemsPerPage`, and
/// `totalResults` only when `with_total`.
struct Directory {
    users: Vec<Value>,
    max_page: usize,
    with_total: bool,
}

impl Respond for Directory {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let q = query_map(request);
        let start: usize = q.get("startIndex").map_or(1, |s| s.parse().unwrap());
        let count: usize = q.get("count").map_or(100, |s| s.parse().unwrap());
        let items: Vec<Value> = self
            .users
            .iter()
            .skip(start - 1)
            .take(count.min(self.max_page))
            .cloned()
            .collect();
        let mut page = json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "startIndex": start,
            "Resources": items,
        });
        if self.with_total {
            page["totalResults"] = json!(self.users.len());
        }
        scim(200, page)
    }
}

fn directory(n: usize) -> Vec<Value> {
    (1..=n)
        .map(|i| user(&format!("u{i:04}"), &format!("User{i:04}")))
        .collect()
}

// ------------------------------------------------------------ accounts

#[tokio::test]
async fn create_posts_the_mapped_user_and_returns_its_id() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        "/Users",
        scim(201, json!({"id": "u1", "userName": "jdoe"})),
    )
    .await;
    let t = target(&server).await;

    let created = t.create_account(&jdoe(&t)).await.unwrap();

    assert_eq!(created, Created::New(Some("u1".into())));
    let r = only_request(&server).await;
    assert_eq!(r.method.as_str(), "POST");
    assert_eq!(r.url.path(), "/scim/v2/Users");
    assert_eq!(
        body(&r),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "jdoe",
            "name": {"givenName": "John", "familyName": "Doe"},
            "displayName": "John Doe",
            "emails": [{"value": "jdoe@example.edu", "type": "work", "primary": true}],
            "active": true,
        })
    );
}

#[tokio::test]
async fn create_leaves_out_empty_values_and_fills_extensions() {
    let server = MockServer::start().await;
    mount(&server, "POST", "/Users", scim(201, json!({"id": "u2"}))).await;
    let t = target_with(
        &server,
        &format!(
            "[scim.attributes]\n\"{ENTERPRISE}:employeeNumber\" = \"{{{{ attributes.employeeNumber[0] }}}}\"\n\
             displayName = \"\"\n"
        ),
    )
    .await;
    let c = ctx(
        &t,
        "asmith",
        &[
            ("sn", "Smith"),
            ("employeeNumber", "701984"),
            ("displayName", "Ann"),
        ],
    );

    assert_eq!(
        t.create_account(&c).await.unwrap(),
        Created::New(Some("u2".into()))
    );

    let r = only_request(&server).await;
    assert_eq!(
        body(&r),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
            "userName": "asmith",
            "name": {"familyName": "Smith"},
            ENTERPRISE: {"employeeNumber": "701984"},
            "active": true,
        })
    );
}

#[tokio::test]
async fn create_of_an_existing_user_is_already_exists() {
    for (status, answer) in [
        (409, scim_error(409, "uniqueness")),
        (409, json!({})),
        (400, scim_error(400, "uniqueness")),
    ] {
        let server = MockServer::start().await;
        mount(&server, "POST", "/Users", scim(status, answer)).await;
        let t = target(&server).await;
        assert_eq!(
            t.create_account(&jdoe(&t)).await.unwrap(),
            Created::AlreadyExists,
            "status {status}"
        );
    }
}

#[tokio::test]
async fn other_create_failures_keep_their_status_and_class() {
    for (status, class) in [
        (400, FailureClass::Permanent),
        (403, FailureClass::Permanent),
        (429, FailureClass::Transient),
        (503, FailureClass::Transient),
    ] {
        let server = MockServer::start().await;
        mount(
            &server,
            "POST",
            "/Users",
            scim(status, scim_error(status, "invalidValue")),
        )
        .await;
        let t = target(&server).await;
        let e = t.create_account(&jdoe(&t)).await.unwrap_err();
        assert_eq!((e.status, e.class), (Some(status), class));
    }
}

#[tokio::test]
async fn lookup_filters_by_escaped_user_name() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/Users",
        scim(200, list(vec![user("u1", "JDoe")])),
    )
    .await;
    let t = target(&server).await;

    assert_eq!(
        t.lookup_account(&jdoe(&t)).await.unwrap().map(|f| f.api_id),
        Some("u1".into())
    );

    let r = only_request(&server).await;
    assert_eq!(r.method.as_str(), "GET");
    assert_eq!(r.url.path(), "/scim/v2/Users");
    assert_eq!(raw_query(&r), "filter=userName%20eq%20%22jdoe%22");
}

#[tokio::test]
async fn lookup_finds_nothing_or_refuses_to_pick() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/Users",
        scim(200, json!({"totalResults": 0})),
    )
    .await;
    let t = target(&server).await;
    assert_eq!(t.lookup_account(&jdoe(&t)).await.unwrap(), None);

    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/Users",
        scim(200, list(vec![user("u1", "jdoe"), user("u2", "JDOE")])),
    )
    .await;
    let t = target(&server).await;
    let e = t.lookup_account(&jdoe(&t)).await.unwrap_err();
    assert_eq!(e.class, FailureClass::Permanent);
    assert!(e.message.contains("2 accounts"), "{}", e.message);

    // A provider that ignores the filter answers with someone else.
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/Users",
        scim(200, list(vec![user("u9", "root")])),
    )
    .await;
    let t = target(&server).await;
    assert_eq!(t.lookup_account(&jdoe(&t)).await.unwrap(), None);
}

#[tokio::test]
async fn hostile_user_names_reach_the_server_only_as_escaped_filter_values() {
    for name in [r#"a"b"#, r"a\b", r#"x" or userName pr or ""#, "tab\there"] {
        let server = MockServer::start().await;
        mount(&server, "GET", "/Users", scim(200, list(vec![]))).await;
        let t = target(&server).await;
        let c = ctx(&t, name, &[]);

        assert_eq!(t.lookup_account(&c).await.unwrap(), None);

        let r = only_request(&server).await;
        let raw = raw_query(&r);
        assert!(
            !raw.contains(['"', ' ', '\\', '&', '+']),
            "raw query must be fully encoded: {raw}"
        );
        let q = query_map(&r);
        assert_eq!(q.len(), 1, "{raw}");
        let filter = &q["filter"];
        let literal = filter
            .strip_prefix("userName eq ")
            .unwrap_or_else(|| panic!("{filter}"));
        // The literal is one JSON string that decodes to the whole name:
        // nothing of the name is left over as filter syntax.
        let decoded: String = serde_json::from_str(literal).unwrap();
        assert_eq!(decoded, name.to_lowercase(), "filter {filter}");
    }
}

#[tokio::test]
async fn hostile_ids_stay_one_path_segment() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let t = target(&server).await;
    t.deprovision_account("../Groups/g1?x=1#", &jdoe(&t))
        .await
        .unwrap();
    let r = only_request(&server).await;
    assert_eq!(r.url.path(), "/scim/v2/Users/..%2FGroups%2Fg1%3Fx%3D1%23");
    assert_eq!(r.url.query(), None);
    for id in ["", ".", ".."] {
        let e = t.deprovision_account(id, &jdoe(&t)).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Permanent);
    }
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn update_patches_replace_operations_and_reactivates() {
    let server = MockServer::start().await;
    mount(&server, "PATCH", "/Users/u1", scim(200, user("u1", "jdoe"))).await;
    let t = target(&server).await;

    t.update_account("u1", &jdoe(&t)).await.unwrap();

    let r = only_request(&server).await;
    assert_eq!(r.method.as_str(), "PATCH");
    assert_eq!(
        body(&r),
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [
                {"op": "replace", "path": "active", "value": true},
                {"op": "replace", "path": "displayName", "value": "John Doe"},
                {"op": "replace", "path": "emails", "value": [
                    {"value": "jdoe@example.edu", "type": "work", "primary": true}
                ]},
                {"op": "replace", "path": "name.familyName", "value": "Doe"},
                {"op": "replace", "path": "name.givenName", "value": "John"},
                {"op": "replace", "path": "userName", "value": "jdoe"},
            ]
        })
    );
}

#[tokio::test]
async fn update_patches_extension_attributes_by_their_urn_path() {
    let server = MockServer::start().await;
    mount(&server, "PATCH", "/Users/u1", ResponseTemplate::new(204)).await;
    let t = target_with(
        &server,
        &format!(
            "[scim]\nupdate_method = \"patch\"\n[scim.attributes]\n\
             \"{ENTERPRISE}:employeeNumber\" = \"{{{{ attributes.employeeNumber[0] }}}}\"\n\
             emails = \"\"\n\"name.givenName\" = \"\"\n\"name.familyName\" = \"\"\ndisplayName = \"\"\n"
        ),
    )
    .await;
    t.update_account("u1", &ctx(&t, "jdoe", &[("employeeNumber", "42")]))
        .await
        .unwrap();
    let ops = body(&only_request(&server).await)["Operations"].clone();
    assert_eq!(
        ops,
        json!([
            {"op": "replace", "path": "active", "value": true},
            {"op": "replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "42"},
            {"op": "replace", "path": "userName", "value": "jdoe"},
        ])
    );
}

#[tokio::test]
async fn update_by_put_sends_the_whole_resource() {
    let server = MockServer::start().await;
    mount(&server, "PUT", "/Users/u1", scim(200, user("u1", "jdoe"))).await;
    let t = target_with(&server, "[scim]\nupdate_method = \"put\"").await;

    t.update_account("u1", &jdoe(&t)).await.unwrap();

    let r = only_request(&server).await;
    assert_eq!(r.method.as_str(), "PUT");
    assert_eq!(r.url.path(), "/scim/v2/Users/u1");
    assert_eq!(
        body(&r),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "u1",
            "userName": "jdoe",
            "name": {"givenName": "John", "familyName": "Doe"},
            "displayName": "John Doe",
            "emails": [{"value": "jdoe@example.edu", "type": "work", "primary": true}],
            "active": true,
        })
    );
}

#[tokio::test]
async fn update_of_a_vanished_account_keeps_the_404() {
    let server = MockServer::start().await;
    mount(
        &server,
        "PATCH",
        "/Users/u1",
        scim(404, scim_error(404, "")),
    )
    .await;
    let t = target(&server).await;
    let e = t.update_account("u1", &jdoe(&t)).await.unwrap_err();
    assert_eq!((e.status, e.class), (Some(404), FailureClass::Permanent));
}

#[tokio::test]
async fn deactivate_then_update_reactivates() {
    let server = MockServer::start().await;
    mount(&server, "PATCH", "/Users/u1", ResponseTemplate::new(204)).await;
    let t = target_with(&server, "[scim]\ndeprovision = \"deactivate\"").await;
    let c = jdoe(&t);

    t.deprovision_account("u1", &c).await.unwrap();
    t.update_account("u1", &c).await.unwrap();

    let all = requests(&server).await;
    assert_eq!(all.len(), 2);
    all.iter().for_each(assert_scim_headers);
    assert_eq!(all[0].method.as_str(), "PATCH");
    assert_eq!(all[0].url.path(), "/scim/v2/Users/u1");
    assert_eq!(
        body(&all[0]),
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "active", "value": false}]
        })
    );
    let ops = body(&all[1])["Operations"].as_array().unwrap().clone();
    assert!(
        ops.contains(&json!({"op": "replace", "path": "active", "value": true})),
        "{ops:?}"
    );
}

#[tokio::test]
async fn deactivating_a_vanished_account_is_done() {
    let server = MockServer::start().await;
    mount(
        &server,
        "PATCH",
        "/Users/u1",
        scim(404, scim_error(404, "")),
    )
    .await;
    let t = target_with(&server, "[scim]\ndeprovision = \"deactivate\"").await;
    assert_eq!(
        t.deprovision_account("u1", &jdoe(&t)).await.unwrap(),
        Removal::Absent
    );
}

#[tokio::test]
async fn delete_deprovisions_and_a_missing_account_is_done() {
    for status in [204, 200, 404] {
        let server = MockServer::start().await;
        mount(
            &server,
            "DELETE",
            "/Users/u1",
            ResponseTemplate::new(status),
        )
        .await;
        let t = target(&server).await;
        let removal = t.deprovision_account("u1", &jdoe(&t)).await.unwrap();
        let expected = if status == 404 {
            Removal::Absent
        } else {
            Removal::Removed
        };
        assert_eq!(removal, expected, "{status}");
        let r = only_request(&server).await;
        assert_eq!(
            (r.method.as_str(), r.url.path()),
            ("DELETE", "/scim/v2/Users/u1")
        );
        assert!(r.body.is_empty());
    }
    let server = MockServer::start().await;
    mount(&server, "DELETE", "/Users/u1", ResponseTemplate::new(500)).await;
    let t = target(&server).await;
    let e = t.deprovision_account("u1", &jdoe(&t)).await.unwrap_err();
    assert_eq!(e.class, FailureClass::Transient);
}

/// A user listing whose first page says 50,000 users: asking for a few
/// members one by one is then cheaper than reading on.
async fn mount_huge_directory(server: &MockServer) {
    let first_page = json!({"totalResults": 50000, "Resources": [user("u9", "z")]});
    mount(server, "GET", "/Users", scim(200, first_page)).await;
}

#[tokio::test]
async fn members_asked_for_one_by_one_read_the_match_attribute() {
    let server = MockServer::start().await;
    let members = json!({"id": "g1", "members": [{"value": "u1"}, {"value": "u2"}]});
    mount(&server, "GET", "/Groups/g1", scim(200, members)).await;
    mount(&server, "GET", "/Users/u1", scim(200, user("u1", "JDoe"))).await;
    mount(&server, "GET", "/Users/u2", scim(404, scim_error(404, ""))).await;
    mount_huge_directory(&server).await;
    let t = target(&server).await;

    // u2 is gone (404): no subject's account, so it is left out.
    assert_eq!(
        t.list_members("g1").await.unwrap(),
        vec![RemoteAccount {
            api_id: "u1".into(),
            match_value: "jdoe".into(),
            in_step: false,
        }]
    );
    let one_by_one: Vec<String> = requests(&server)
        .await
        .iter()
        .filter(|r| r.url.path().starts_with("/scim/v2/Users/"))
        .map(raw_query)
        .collect();
    assert_eq!(one_by_one, ["attributes=userName", "attributes=userName"]);
}

#[tokio::test]
async fn a_custom_match_and_filter_attribute_are_used_together() {
    let server = MockServer::start().await;
    mount(
        &server,
        "GET",
        "/Users",
        scim(
            200,
            list(vec![json!({"id": "u7", "userName": "x", "emails": [
                {"value": "other@example.edu"},
                {"value": "JDoe@Example.edu", "primary": false}
            ]})]),
        ),
    )
    .await;
    let t = target_with(
        &server,
        "[scim]\nmatch = \"{{ attributes.mail[0] | lower }}\"\nfilter_attribute = \"emails.value\"",
    )
    .await;
    let c = jdoe(&t);
    assert_eq!(c.match_value, "jdoe@example.edu");
    assert_eq!(
        t.lookup_account(&c).await.unwrap().map(|f| f.api_id),
        Some("u7".into())
    );
    let r = only_request(&server).await;
    assert_eq!(
        query_map(&r)["filter"],
        r#"emails.value eq "jdoe@example.edu""#
    );
}

// --------------------------------------------------------------- paging

#[tokio::test]
async fn list_accounts_pages_past_short_pages_without_items_per_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(Directory {
            users: directory(7),
            max_page: 2,
            with_total: true,
        })
        .mount(&server)
        .await;
    let t = target_with(&server, "[scim]\npage_size = 3").await;

    let accounts = t.list_accounts(None).await.unwrap();

    let matches: Vec<&str> = accounts.iter().map(|a| a.match_value.as_str()).collect();
    assert_eq!(
        matches,
        ["user0001", "user0002", "user0003", "user0004", "user0005", "user0006", "user0007"]
    );
    let all = requests(&server).await;
    all.iter().for_each(assert_scim_headers);
    let queries: Vec<String> = all.iter().map(raw_query).collect();
    assert_eq!(
        queries,
        [
            "startIndex=1&count=3&attributes=userName",
            "startIndex=3&count=3&attributes=userName",
            "startIndex=5&count=3&attributes=userName",
            "startIndex=7&count=3&attributes=userName",
        ]
    );
}

#[tokio::test]
async fn list_without_total_results_stops_at_an_empty_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(Directory {
            users: directory(5),
            max_page: 2,
            with_total: false,
        })
        .mount(&server)
        .await;
    let t = target_with(&server, "[scim]\npage_size = 2").await;
    assert_eq!(t.list_accounts(None).await.unwrap().len(), 5);
    // 1-2, 3-4, 5, then the empty page at 6.
    assert_eq!(requests(&server).await.len(), 4);
}

#[tokio::test]
async fn a_server_ignoring_start_index_is_an_error_not_a_loop() {
    let server = MockServer::start().await;
    let page = json!({"totalResults": 10, "Resources": [user("u1", "a"), user("u2", "b")]});
    mount(&server, "GET", "/Users", scim(200, page)).await;
    let t = target_with(&server, "[scim]\npage_size = 2").await;
    let e = t.list_accounts(None).await.unwrap_err();
    assert_eq!(e.class, FailureClass::Permanent);
    assert!(e.message.contains("startIndex"), "{}", e.message);
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn with_deactivate_inactive_accounts_are_not_listed() {
    let server = MockServer::start().await;
    let users = vec![
        json!({"id": "u1", "userName": "a", "active": true}),
        json!({"id": "u2", "userName": "b", "active": false}),
        json!({"id": "u3", "userName": "c"}),
    ];
    mount(&server, "GET", "/Users", scim(200, list(users))).await;
    let t = target_with(&server, "[scim]\ndeprovision = \"deactivate\"").await;
    let ids: Vec<String> = t
        .list_accounts(None)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.api_id)
        .collect();
    assert_eq!(ids, ["u1", "u3"]);
    assert_eq!(
        query_map(&only_request(&server).await)["attributes"],
        "userName,active"
    );
}

// --------------------------------------------------------------- groups

#[tokio::test]
async fn list_groups_asks_for_display_names_only() {
    let server = MockServer::start().await;
    let groups = vec![
        json!({"id": "g1", "displayName": "Staff"}),
        json!({"id": "g2", "displayName": "Admins", "members": [{"value": "u1"}]}),
    ];
    mount(&server, "GET", "/Groups", scim(200, list(groups))).await;
    let t = target(&server).await;

    let found = t.list_groups().await.unwrap();

    assert_eq!(
        found,
        [
            RemoteGroup {
                name: "Staff".into(),
                api_id: "g1".into()
            },
            RemoteGroup {
                name: "Admins".into(),
                api_id: "g2".into()
            },
        ]
    );
    let r = only_request(&server).await;
    assert_eq!(r.url.path(), "/scim/v2/Groups");
    assert_eq!(
        raw_query(&r),
        "startIndex=1&count=100&attributes=displayName"
    );
}

#[tokio::test]
async fn missing_groups_are_created_only_when_configured() {
    let server = MockServer::start().await;
    let t = target(&server).await;
    assert_eq!(t.create_group("Staff").await.unwrap(), None);
    assert!(requests(&server).await.is_empty());

    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        "/Groups",
        scim(201, json!({"id": "g9", "displayName": "Staff"})),
    )
    .await;
    let t = target_with(&server, "[scim]\ncreate_missing_groups = true").await;
    assert_eq!(t.create_group("Staff").await.unwrap(), Some("g9".into()));
    let r = only_request(&server).await;
    assert_eq!(
        body(&r),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Staff"})
    );
}

#[tokio::test]
async fn a_group_created_meanwhile_is_found_by_display_name() {
    let server = MockServer::start().await;
    mount(
        &server,
        "POST",
        "/Groups",
        scim(409, scim_error(409, "uniqueness")),
    )
    .await;
    mount(
        &server,
        "GET",
        "/Groups",
        scim(200, list(vec![json!({"id": "g3", "displayName": "Staff"})])),
    )
    .await;
    let t = target_with(&server, "[scim]\ncreate_missing_groups = true").await;
    assert_eq!(t.create_group("Staff").await.unwrap(), Some("g3".into()));
    let all = requests(&server).await;
    assert_eq!(
        raw_query(&all[1]),
        "filter=displayName%20eq%20%22Staff%22&attributes=displayName"
    );
}

#[tokio::test]
async fn add_members_sends_one_patch_per_batch() {
    let server = MockServer::start().await;
    mount(&server, "PATCH", "/Groups/g1", ResponseTemplate::new(204)).await;
    let t = target_with(&server, "[scim]\nmember_batch_size = 100").await;
    let members: Vec<(String, SubjectContext)> = (0..250)
        .map(|i| (format!("u{i}"), SubjectContext::default()))
        .collect();

    t.add_members(&group(), &members).await.unwrap();

    let all = requests(&server).await;
    assert_eq!(all.len(), 3);
    let sizes: Vec<usize> = all
        .iter()
        .map(|r| {
            assert_scim_headers(r);
            assert_eq!(
                (r.method.as_str(), r.url.path()),
                ("PATCH", "/scim/v2/Groups/g1")
            );
            body(r)["Operations"][0]["value"].as_array().unwrap().len()
        })
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(
        body(&all[2])["Operations"][0]["value"][49],
        json!({"value": "u249"})
    );
}

#[tokio::test]
async fn add_member_is_a_batch_of_one() {
    let server = MockServer::start().await;
    mount(
        &server,
        "PATCH",
        "/Groups/g1",
        scim(200, json!({"id": "g1"})),
    )
    .await;
    let t = target(&server).await;
    t.add_member(&group(), "u1", &jdoe(&t)).await.unwrap();
    assert_eq!(
        body(&only_request(&server).await),
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": "u1"}]}]
        })
    );
}

#[tokio::test]
async fn a_member_already_present_is_success() {
    let server = MockServer::start().await;
    mount(
        &server,
        "PATCH",
        "/Groups/g1",
        scim(409, scim_error(409, "uniqueness")),
    )
    .await;
    let t = target(&server).await;
    t.add_member(&group(), "u1", &jdoe(&t)).await.unwrap();
    // A refused batch is retried member by member: all still end up in.
    let members = vec![("u1".to_string(), jdoe(&t)), ("u2".to_string(), jdoe(&t))];
    t.add_members(&group(), &members).await.unwrap();
    assert_eq!(requests(&server).await.len(), 1 + 1 + 2);
}

#[tokio::test]
async fn remove_member_uses_a_value_filter_path() {
    let server = MockServer::start().await;
    mount(&server, "PATCH", "/Groups/g1", ResponseTemplate::new(204)).await;
    let t = target(&server).await;
    t.remove_member(&group(), r#"u"1"#, &jdoe(&t))
        .await
        .unwrap();
    let r = only_request(&server).await;
    assert_eq!(
        (r.method.as_str(), r.url.path()),
        ("PATCH", "/scim/v2/Groups/g1")
    );
    assert_eq!(
        body(&r),
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": r#"members[value eq "u\"1"]"#}]
        })
    );
}

#[tokio::test]
async fn removing_an_absent_member_is_done() {
    for (status, answer) in [
        (404, scim_error(404, "")),
        (400, scim_error(400, "noTarget")),
    ] {
        let server = MockServer::start().await;
        mount(&server, "PATCH", "/Groups/g1", scim(status, answer)).await;
        let t = target(&server).await;
        assert_eq!(
            t.remove_member(&group(), "u1", &jdoe(&t)).await.unwrap(),
            Removal::Absent,
            "{status}"
        );
    }
    let server = MockServer::start().await;
    mount(
        &server,
        "PATCH",
        "/Groups/g1",
        scim(400, scim_error(400, "invalidPath")),
    )
    .await;
    let t = target(&server).await;
    let e = t
        .remove_member(&group(), "u1", &jdoe(&t))
        .await
        .unwrap_err();
    assert_eq!((e.status, e.class), (Some(400), FailureClass::Permanent));
}

/// Removals from a group of which only `u2` is a member; a PATCH with several
/// operations is refused as a whole when one of them has no target.
struct OnlyU2;

impl Respond for OnlyU2 {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let ops = body(r)["Operations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all_present = ops
            .iter()
            .all(|op| op["path"].as_str().is_some_and(|p| p.contains("\"u2\"")));
        if all_present {
            ResponseTemplate::new(204)
        } else {
            scim(400, scim_error(400, "noTarget"))
        }
    }
}

#[tokio::test]
async fn a_removal_batch_is_absent_only_when_every_member_was() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path(format!("{PREFIX}/Groups/g1")))
        .respond_with(OnlyU2)
        .mount(&server)
        .await;
    let t = target(&server).await;
    let batch = |ids: &[&str]| -> Vec<(String, SubjectContext)> {
        ids.iter()
            .map(|id| (id.to_string(), SubjectContext::default()))
            .collect()
    };
    // Refused as a whole, then member by member: u2 was there.
    assert_eq!(
        t.remove_members(&group(), &batch(&["u1", "u2"]))
            .await
            .unwrap(),
        Removal::Removed
    );
    assert_eq!(requests(&server).await.len(), 1 + 2);
    assert_eq!(
        t.remove_members(&group(), &batch(&["u1", "u3"]))
            .await
            .unwrap(),
        Removal::Absent
    );

    // A group that is gone: every member absent.
    let server = MockServer::start().await;
    mount(
        &server,
        "PATCH",
        "/Groups/g1",
        scim(404, scim_error(404, "")),
    )
    .await;
    let t = target(&server).await;
    assert_eq!(
        t.remove_members(&group(), &batch(&["u1", "u2"]))
            .await
            .unwrap(),
        Removal::Absent
    );
}

#[tokio::test]
async fn list_members_joins_ids_with_the_user_listing() {
    let server = MockServer::start().await;
    let members = json!({"id": "g1", "displayName": "Staff", "members": [
        {"value": "u0002", "display": "Someone Else"},
        {"value": "u0004"},
        {"value": "g7", "type": "Group"},
    ]});
    mount(&server, "GET", "/Groups/g1", scim(200, members)).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(Directory {
            users: directory(5),
            max_page: 100,
            with_total: true,
        })
        .mount(&server)
        .await;
    let t = target(&server).await;

    let found = t.list_members("g1").await.unwrap();

    assert_eq!(
        found,
        [
            RemoteAccount {
                api_id: "u0002".into(),
                match_value: "user0002".into(),
                in_step: false,
            },
            RemoteAccount {
                api_id: "u0004".into(),
                match_value: "user0004".into(),
                in_step: false,
            },
        ]
    );
    let all = requests(&server).await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].url.path(), "/scim/v2/Groups/g1");
    assert_eq!(
        raw_query(&all[1]),
        "startIndex=1&count=100&attributes=userName"
    );
}

#[tokio::test]
async fn list_members_trusts_display_only_when_configured() {
    let server = MockServer::start().await;
    let members = json!({"id": "g1", "members": [
        {"value": "u1", "display": "JDoe"},
        {"value": "u2"},
    ]});
    mount(&server, "GET", "/Groups/g1", scim(200, members)).await;
    mount(&server, "GET", "/Users/u2", scim(200, user("u2", "ASmith"))).await;
    mount_huge_directory(&server).await;
    let t = target_with(&server, "[scim]\nmember_match = \"display\"").await;

    let found = t.list_members("g1").await.unwrap();

    let matches: Vec<&str> = found.iter().map(|m| m.match_value.as_str()).collect();
    assert_eq!(matches, ["jdoe", "asmith"]);
    // u2 had no display: one page of users showed a huge directory, so
    // asking for u2 alone is cheaper than reading on.
    let paths: Vec<String> = requests(&server)
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(
        paths,
        ["/scim/v2/Groups/g1", "/scim/v2/Users", "/scim/v2/Users/u2"]
    );
}

#[tokio::test]
async fn group_sync_of_a_thousand_members_costs_pages_plus_batches() {
    let server = MockServer::start().await;
    let users = directory(1200);
    let members: Vec<Value> = users[..1000]
        .iter()
        .map(|u| json!({"value": u["id"], "display": "not the userName"}))
        .collect();
    mount(
        &server,
        "GET",
        "/Groups/g1",
        scim(
            200,
            json!({"id": "g1", "displayName": "Staff", "members": members}),
        ),
    )
    .await;
    mount(&server, "PATCH", "/Groups/g1", ResponseTemplate::new(204)).await;
    Mock::given(method("GET"))
        .and(path("/scim/v2/Users"))
        .respond_with(Directory {
            users,
            max_page: 100,
            with_total: true,
        })
        .mount(&server)
        .await;
    let t = target(&server).await;

    let present = t.list_members("g1").await.unwrap();
    assert_eq!(present.len(), 1000);
    assert_eq!(present[999].match_value, "user1000");
    let listing = requests(&server).await.len();

    // 10 changes: 5 users join, 5 members leave.
    let join: Vec<(String, SubjectContext)> = (1001..=1005)
        .map(|i| (format!("u{i:04}"), SubjectContext::default()))
        .collect();
    let leave: Vec<(String, SubjectContext)> = present[..5]
        .iter()
        .map(|m| (m.api_id.clone(), SubjectContext::default()))
        .collect();
    t.add_members(&group(), &join).await.unwrap();
    t.remove_members(&group(), &leave).await.unwrap();

    let total = requests(&server).await.len();
    let user_pages = 1000usize.div_ceil(100);
    let group_read = 1;
    let batches = 2;
    assert!(
        listing <= group_read + user_pages,
        "{listing} requests to list the members"
    );
    assert!(
        total <= group_read + user_pages + batches,
        "{total} requests in all"
    );
    let last = requests(&server).await.pop().unwrap();
    assert_eq!(body(&last)["Operations"].as_array().unwrap().len(), 5);
}

// ------------------------------------------------------------ configuration

#[test]
fn defaults_are_the_documented_ones() {
    let c = scim_config("");
    let subject = minijinja::context! { subject => "JDoe" };
    assert_eq!(
        c.templates.render(&c.user_name, &subject).as_deref(),
        Ok("JDoe")
    );
    assert_eq!(c.match_template, None);
    assert_eq!(c.update_method, UpdateMethod::Patch);
    assert_eq!(c.deprovision, Deprovision::Delete);
    assert!(!c.create_missing_groups);
    assert_eq!((c.page_size, c.member_batch_size), (100, 100));
    assert_eq!(c.filter_attribute, "userName");
    assert_eq!(c.member_match, MemberMatch::Users);
    let keys: Vec<&str> = c.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["displayName", "emails", "name.familyName", "name.givenName"]
    );
    let p = parse("https://x.example/v2", "").unwrap();
    assert_eq!(p.kind.missing_operations(p.needs()), Vec::new());
}

#[test]
fn overrides_merge_over_the_default_attributes() {
    let c = scim_config(
        "[scim]\nuser_name = \"{{ attributes.uid[0] }}\"\nupdate_method = \"put\"\ndeprovision = \"deactivate\"\n\
         member_match = \"display\"\n[scim.attributes]\nemails = \"\"\ntitle = \"{{ attributes.title[0] }}\"\n",
    );
    let keys: Vec<&str> = c.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["displayName", "name.familyName", "name.givenName", "title"]
    );
    assert_eq!(c.update_method, UpdateMethod::Put);
    assert_eq!(c.deprovision, Deprovision::Deactivate);
    assert_eq!(c.member_match, MemberMatch::Display);
}

#[test]
fn every_problem_is_reported_with_its_dotted_key() {
    let keys = error_keys(
        "[scim]\nupdate_method = \"post\"\ndeprovision = \"archive\"\npage_size = 0\n\
         member_batch_size = 5000\nfilter_attribute = 'userName eq \"x\"'\nmember_match = \"guess\"\n\
         user_name = \"{{ subject \"\nmatch = \"\"\n\
         [scim.attributes]\nuserName = \"{{ subject }}\"\n\"a.b.c\" = \"x\"\n\"emails[type eq work]\" = \"x\"\n",
    );
    for key in [
        "scim.update_method",
        "scim.deprovision",
        "scim.page_size",
        "scim.member_batch_size",
        "scim.filter_attribute",
        "scim.member_match",
        "scim.user_name",
        "scim.match",
        "scim.attributes.\"userName\"",
        "scim.attributes.\"a.b.c\"",
        "scim.attributes.\"emails[type eq work]\"",
    ] {
        assert!(
            keys.iter().any(|k| k == key),
            "no error for {key}: {keys:?}"
        );
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let keys = error_keys("[scim]\npagesize = 10\n");
    assert_eq!(keys, ["scim.pagesize"]);
}

#[test]
fn conflicting_paths_are_caught_at_load_time() {
    let keys = error_keys("[scim.attributes]\nname = \"{{ subject }}\"\n");
    assert_eq!(keys, ["scim.attributes"]);
    let keys = error_keys("[scim.attributes]\n'emails[type eq \"work\"]' = \"{{ subject }}\"\n");
    assert_eq!(keys, ["scim.attributes"]);
    let keys = error_keys("[scim.attributes]\n\"Name.middleName\" = \"{{ subject }}\"\n");
    assert_eq!(keys, ["scim.attributes.\"Name.middleName\""]);
    // Dropping the default makes room.
    scim_config(
        "[scim.attributes]\nemails = \"\"\n'emails[type eq \"work\"]' = \"{{ subject }}\"\n",
    );
}

#[test]
fn the_example_file_is_valid() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("provisioners/scim.toml"),
    )
    .unwrap();
    assert!(text.contains("{ env = \"SCIM_TOKEN\" }"));
    let text = text.replace("{ env = \"SCIM_TOKEN\" }", "\"test-token\"");
    let mut errors = Vec::new();
    let c = parse_provisioner(Path::new("scim.toml"), &text, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(matches!(c.unwrap().kind, KindConfig::Scim(_)));
    // The commented override block is valid too once uncommented.
    let block = text.find("# [scim]").unwrap();
    let uncommented = format!(
        "{}{}",
        &text[..block],
        text[block..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut errors = Vec::new();
    parse_provisioner(Path::new("scim.toml"), &uncommented, &mut errors);
    assert!(errors.is_empty(), "{errors:?}\n{uncommented}");
}

#[test]
fn match_value_defaults_to_the_lowercased_user_name() {
    let server_less = {
        let c = parse(
            "https://x.example/v2",
            "[scim]\nuser_name = \"{{ attributes.uid[0] }}\"",
        )
        .unwrap();
        let KindConfig::Scim(s) = &c.kind else {
            panic!()
        };
        ScimTarget::new(
            s.clone(),
            HttpClient::new(&crate::assembly::http_settings(&c)).unwrap(),
        )
    };
    let a = attrs(&[("uid", "JDoe")]);
    assert_eq!(server_less.match_value("ignored", &a).unwrap(), "jdoe");
    let e = server_less
        .match_value("nobody", &Attributes::new())
        .unwrap_err();
    assert_eq!(e.class, FailureClass::Permanent);
}

// ------------------------------------------------------------ mapping tables

#[test]
fn attribute_paths_parse() {
    let core = |a: &str, s: Option<&str>| AttrPath::Core {
        attr: a.into(),
        sub: s.map(Into::into),
    };
    let multi = |a: &str, k: Option<&str>, s: &str, p: bool| AttrPath::MultiValued {
        attr: a.into(),
        kind: k.map(Into::into),
        sub: s.into(),
        primary: p,
    };
    let employee_number = format!("{ENTERPRISE}:employeeNumber");
    let manager = format!("{ENTERPRISE}:manager.value");
    let cases: Vec<(&str, Result<AttrPath, ()>)> = vec![
        ("displayName", Ok(core("displayName", None))),
        ("name.givenName", Ok(core("name", Some("givenName")))),
        ("emails", Ok(multi("emails", Some("work"), "value", true))),
        ("Emails", Ok(multi("emails", Some("work"), "value", true))),
        ("roles", Ok(multi("roles", None, "value", true))),
        (
            r#"phoneNumbers[type eq "mobile"]"#,
            Ok(multi("phoneNumbers", Some("mobile"), "value", false)),
        ),
        (
            r#"addresses[type eq "home"].locality"#,
            Ok(multi("addresses", Some("home"), "locality", false)),
        ),
        (
            &employee_number,
            Ok(AttrPath::Extension {
                urn: ENTERPRISE.into(),
                attr: "employeeNumber".into(),
                sub: None,
            }),
        ),
        (
            &manager,
            Ok(AttrPath::Extension {
                urn: ENTERPRISE.into(),
                attr: "manager".into(),
                sub: Some("value".into()),
            }),
        ),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:title",
            Ok(core("title", None)),
        ),
        ("", Err(())),
        ("a.b.c", Err(())),
        ("1st", Err(())),
        ("display name", Err(())),
        ("userName", Err(())),
        ("active", Err(())),
        ("id", Err(())),
        (r#"title[type eq "x"]"#, Err(())),
        (r#"emails[type eq "x" or 1 eq 1]"#, Err(())),
        (r#"emails[type eq "x"]junk"#, Err(())),
        ("urn:x", Err(())),
        ("urn:a:b:", Err(())),
    ];
    for (input, want) in cases {
        assert_eq!(AttrPath::parse(input).map_err(|_| ()), want, "{input}");
    }
}

#[test]
fn filter_strings_are_json_string_literals() {
    let cases = [
        ("jdoe", r#""jdoe""#),
        (r#"a"b"#, r#""a\"b""#),
        (r"a\b", r#""a\\b""#),
        (r#"x" or userName pr or ""#, r#""x\" or userName pr or \"""#),
        ("l\ni\tne\u{1}", r#""l\ni\tne\u0001""#),
        ("Zoë", r#""Zoë""#),
    ];
    for (value, want) in cases {
        let got = mapping::filter_string(value);
        assert_eq!(got, want);
        assert_eq!(serde_json::from_str::<String>(&got).unwrap(), value);
    }
    assert_eq!(
        mapping::eq_filter("userName", "a\"b"),
        r#"userName eq "a\"b""#
    );
}

#[test]
fn attribute_names_follow_rfc_7643() {
    for ok in [
        "userName",
        "x509Certificates",
        "employee-number",
        "a_b",
        "$ref",
    ] {
        assert_eq!(mapping::check_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "1userName",
        "user name",
        "a$b",
        "$other",
        "-a",
        "a.b",
        "é",
    ] {
        assert!(mapping::check_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn query_values_and_path_segments_are_fully_encoded() {
    let cases = [
        ("abc-._~XYZ09", "abc-._~XYZ09"),
        (r#"userName eq "a b""#, "userName%20eq%20%22a%20b%22"),
        ("a/b?c#d&e=f+g%", "a%2Fb%3Fc%23d%26e%3Df%2Bg%25"),
        ("Zoë", "Zo%C3%AB"),
    ];
    for (raw, want) in cases {
        assert_eq!(mapping::encode(raw), want);
    }
    assert_eq!(
        mapping::query(&[("startIndex", "1"), ("attributes", "userName,active")]),
        "?startIndex=1&attributes=userName%2Cactive"
    );
}

#[test]
fn users_are_built_from_rendered_values() {
    let given = AttrPath::parse("name.givenName").unwrap();
    let name = AttrPath::parse("name").unwrap();
    let emails = AttrPath::parse("emails").unwrap();
    let home = AttrPath::parse(r#"emails[type eq "home"]"#).unwrap();
    let work = AttrPath::parse(r#"emails[type eq "work"]"#).unwrap();
    let ext = AttrPath::parse(&format!("{ENTERPRISE}:manager.value")).unwrap();

    let u = mapping::build_user("j", &[(&emails, "w@x".into()), (&home, "h@x".into())]).unwrap();
    assert_eq!(
        u["emails"],
        json!([{"value": "w@x", "type": "work", "primary": true}, {"value": "h@x", "type": "home"}])
    );
    let u = mapping::build_user("j", &[(&given, "  ".into()), (&ext, "".into())]).unwrap();
    assert_eq!(
        u,
        json!({"schemas": [mapping::USER_SCHEMA], "userName": "j", "active": true})
    );
    let u = mapping::build_user("j", &[(&ext, "m1".into())]).unwrap();
    assert_eq!(u[ENTERPRISE], json!({"manager": {"value": "m1"}}));
    assert_eq!(u["schemas"], json!([mapping::USER_SCHEMA, ENTERPRISE]));

    assert!(mapping::build_user("j", &[(&name, "a".into()), (&given, "b".into())]).is_err());
    assert!(mapping::build_user("j", &[(&emails, "a".into()), (&work, "b".into())]).is_err());
}

#[test]
fn replace_ops_follow_the_resource() {
    let r = json!({
        "schemas": [mapping::USER_SCHEMA, ENTERPRISE],
        "userName": "j",
        "name": {"givenName": "J"},
        ENTERPRISE: {"manager": {"value": "m"}, "department": "D"},
        "emails": [{"value": "e"}],
        "active": true,
    });
    let paths: Vec<String> = mapping::replace_ops(&r)
        .iter()
        .map(|op| op["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "active".to_string(),
            "emails".into(),
            "name.givenName".into(),
            format!("{ENTERPRISE}:department"),
            format!("{ENTERPRISE}:manager.value"),
            "userName".into(),
        ]
    );
}

#[test]
fn member_patch_bodies() {
    assert_eq!(
        mapping::add_members_body(&["a", "b"])["Operations"],
        json!([{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]}])
    );
    assert_eq!(
        mapping::remove_members_body(&["a", r"b\"])["Operations"],
        json!([
            {"op": "remove", "path": "members[value eq \"a\"]"},
            {"op": "remove", "path": r#"members[value eq "b\\"]"#},
        ])
    );
}

#[test]
fn list_responses_parse() {
    let cases = [
        (
            json!({"totalResults": 2, "Resources": [{"id": "a"}, {"id": "b"}]}),
            Some((2, Some(2))),
        ),
        (
            json!({"totalResults": "3", "resources": [{"id": "a"}]}),
            Some((1, Some(3))),
        ),
        (json!({"totalResults": 0}), Some((0, Some(0)))),
        (json!({"Resources": null}), Some((0, None))),
        (json!({"Resources": {}}), None),
        (json!([]), None),
    ];
    for (body, want) in cases {
        let got = mapping::parse_list(&body)
            .ok()
            .map(|p| (p.resources.len(), p.total_results));
        assert_eq!(got, want, "{body}");
    }
}

#[test]
fn paging_moves_by_what_was_returned() {
    let page = |ids: &[&str], total: Option<u64>| ListPage {
        resources: ids.iter().map(|i| json!({"id": i})).collect(),
        total_results: total,
    };
    let mut p = Paging::new(3);
    assert_eq!(p.next(), Some((1, 3)));
    assert_eq!(p.pages_left(), None);
    assert_eq!(p.accept(page(&["a", "b"], Some(5))).unwrap().len(), 2);
    assert_eq!(p.next(), Some((3, 3)));
    assert_eq!(p.pages_left(), Some(1));
    // "b" shows up again (the list shifted): dropped, but the index moves on.
    assert_eq!(p.accept(page(&["b", "c"], Some(5))).unwrap().len(), 1);
    assert_eq!(p.next(), Some((5, 3)));
    assert_eq!(p.accept(page(&["d"], Some(5))).unwrap().len(), 1);
    assert_eq!(p.next(), None);
    assert_eq!(p.pages_left(), Some(0));

    let mut p = Paging::new(2);
    p.accept(page(&["a"], None)).unwrap();
    assert_eq!(p.next(), Some((2, 2)));
    assert!(p.accept(page(&[], None)).unwrap().is_empty());
    assert_eq!(p.next(), None);

    let mut p = Paging::new(2);
    p.accept(page(&["a", "b"], Some(9))).unwrap();
    assert!(p.accept(page(&["a", "b"], Some(9))).is_err());
    assert_eq!(p.next(), None);

    // Resources without an id are dropped; a page of only those is no progress.
    let mut p = Paging::new(2);
    let no_ids = ListPage {
        resources: vec![json!({"userName": "a"}), json!({"id": ""})],
        total_results: Some(9),
    };
    assert!(p.accept(no_ids).is_err());
}

#[test]
fn attribute_values_are_read_case_insensitively() {
    let r = json!({
        "id": 17,
        "UserName": "JDoe",
        "emails": [{"value": "second@x"}, {"value": "first@x", "primary": true}],
        "name": {"givenName": "J"},
        ENTERPRISE: {"employeeNumber": "42"},
    });
    assert_eq!(mapping::resource_id(&r).as_deref(), Some("17"));
    let cases = [
        ("userName", Some("JDoe")),
        ("emails", Some("first@x")),
        ("emails.value", Some("first@x")),
        ("name.givenName", Some("J")),
        ("name.familyName", None),
        ("userName.x", None),
        (&format!("{ENTERPRISE}:employeeNumber") as &str, Some("42")),
        ("urn:other:schema:x", None),
    ];
    for (path, want) in cases {
        assert_eq!(
            mapping::attribute_value(&r, path).as_deref(),
            want,
            "{path}"
        );
    }
    assert_eq!(
        mapping::attribute_values(&r, "emails.value"),
        ["first@x", "second@x"]
    );
}

#[test]
fn members_and_errors_parse() {
    let g = json!({"members": [
        {"value": "u1", "display": " J "},
        {"value": "g2", "type": "Group"},
        {"value": "", "display": "x"},
        {"display": "no id"},
        {"value": 7},
    ]});
    assert_eq!(
        mapping::parse_members(&g),
        [
            Member {
                value: "u1".into(),
                display: Some("J".into())
            },
            Member {
                value: "7".into(),
                display: None
            },
        ]
    );
    assert!(mapping::parse_members(&json!({})).is_empty());

    assert_eq!(
        mapping::parse_error(&scim_error(409, "uniqueness")),
        Some(ScimError {
            status: Some(409),
            scim_type: Some("uniqueness".into())
        })
    );
    assert_eq!(
        mapping::parse_error(&json!({"schemas": [mapping::ERROR_SCHEMA], "status": 404})),
        Some(ScimError {
            status: Some(404),
            scim_type: None
        })
    );
    assert_eq!(mapping::parse_error(&json!({"message": "nope"})), None);
    assert!(mapping::is_uniqueness(400, &scim_error(400, "uniqueness")));
    assert!(!mapping::is_uniqueness(
        400,
        &scim_error(400, "invalidValue")
    ));
    assert!(mapping::is_absent(400, &scim_error(400, "noTarget")));
    assert!(mapping::is_absent(404, &Value::Null));
}

#[test]
fn call_log_templates_keep_the_resource_shape_and_drop_values() {
    let cases = [
        ("/Users", "/Users"),
        ("/Users/2819c223-7f76", "/Users/{id}"),
        (
            "/Users?filter=userName%20eq%20%22jdoe%22&count=1",
            "/Users?filter=…&count=…",
        ),
        (
            "/Groups/g-1?attributes=members",
            "/Groups/{id}?attributes=…",
        ),
        ("", ""),
    ];
    for (path, want) in cases {
        assert_eq!(mapping::path_template(path), want, "{path}");
    }
}

mod in_step;
