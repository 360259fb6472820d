//! The demo API over HTTP: what the example provisioner file relies on.

use reqwest::Method;
use serde_json::{json, Value};

use super::api::DemoApi;
use super::directory::DemoUser;
use super::server::Server;

/// The demo API served on a loopback port.
struct Demo {
    api: DemoApi,
    server: Server,
}

impl std::ops::Deref for Demo {
    type Target = DemoApi;

    fn deref(&self) -> &DemoApi {
        &self.api
    }
}

impl Demo {
    fn url(&self) -> String {
        self.server.url()
    }

    fn user(&self, email: &str) -> Option<DemoUser> {
        let email = email.to_lowercase();
        self.users()
            .into_iter()
            .find(|u| u.email.to_lowercase() == email)
    }

    fn members(&self, group_name: &str) -> Vec<String> {
        self.groups()
            .into_iter()
            .find(|g| g.name == group_name)
            .map(|g| g.members)
            .unwrap_or_default()
    }
}

async fn start() -> Demo {
    let api = DemoApi::new();
    match Server::start(api.router()).await {
        Ok(server) => Demo { api, server },
        Err(e) => panic!("demo API did not start: {e}"),
    }
}

fn client() -> reqwest::Client {
    match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(e) => panic!("cannot build HTTP client: {e}"),
    }
}

/// An answer: status and body as JSON (`Null` when empty).
struct Answer {
    status: u16,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = resp.status().as_u16();
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => panic!("cannot read body: {e}"),
    };
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    };
    Answer { status, body }
}

async fn call(mock: &Demo, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut req = client().request(method, format!("{}{path}", mock.url()));
    if let Some(body) = body {
        req = req.json(&body);
    }
    send(req).await
}

fn create_body(email: &str, first: &str, last: &str) -> Value {
    json!({"action": "create", "user_info": {"email": email, "first_name": first, "last_name": last}})
}

fn user_or_panic(mock: &Demo, email: &str) -> DemoUser {
    match mock.user(email) {
        Some(u) => u,
        None => panic!("no user {email} in {:?}", mock.users()),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    match v.pointer(pointer).and_then(Value::as_str) {
        Some(s) => s,
        None => panic!("no string at {pointer} in {v}"),
    }
}

fn emails(list: &Value, key: &str) -> Vec<String> {
    match list.get(key).and_then(Value::as_array) {
        Some(items) => items
            .iter()
            .map(|u| str_at(u, "/email").to_string())
            .collect(),
        None => panic!("no array `{key}` in {list}"),
    }
}

#[tokio::test]
async fn users_crud_follows_the_example_api() {
    let mock = start().await;

    let created = call(
        &mock,
        Method::POST,
        "/users",
        Some(create_body("JDoe@Example.edu", "John", "Doe")),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = str_at(&created.body, "/id").to_string();
    assert_eq!(id, "u-000001");

    // Look-up by email: percent-encoded, case-insensitive.
    let found = call(&mock, Method::GET, "/users/jdoe%40example.edu", None).await;
    assert_eq!(found.status, 200);
    assert_eq!(
        found.body,
        json!({"id": id, "email": "JDoe@Example.edu", "first_name": "John",
               "last_name": "Doe", "status": "active"})
    );
    let missing = call(&mock, Method::GET, "/users/nobody%40example.edu", None).await;
    assert_eq!(missing.status, 404);

    // Same email, other case: 409 with Zoom's code.
    let dup = call(
        &mock,
        Method::POST,
        "/users",
        Some(create_body("jdoe@example.edu", "J", "D")),
    )
    .await;
    assert_eq!(dup.status, 409);
    assert_eq!(
        dup.body,
        json!({"code": 1005, "message": "User already exists"})
    );
    assert_eq!(mock.users().len(), 1);

    // Invalid bodies are 400 and create nothing.
    let no_email = call(
        &mock,
        Method::POST,
        "/users",
        Some(json!({"action": "create", "user_info": {"first_name": "X"}})),
    )
    .await;
    assert_eq!(no_email.status, 400);
    let not_json = send(
        client()
            .post(format!("{}/users", mock.url()))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(not_json.status, 400);
    assert_eq!(mock.users().len(), 1);

    // PATCH by ID.
    let patched = call(
        &mock,
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({"first_name": "Johnny", "last_name": "Doe-Smith"})),
    )
    .await;
    assert_eq!(patched.status, 204);
    assert_eq!(patched.body, Value::Null);
    let user = user_or_panic(&mock, "jdoe@example.edu");
    assert_eq!(
        (user.first_name.as_str(), user.last_name.as_str()),
        ("Johnny", "Doe-Smith")
    );
    let email_change = call(
        &mock,
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({"email": "john.doe@example.edu"})),
    )
    .await;
    assert_eq!(email_change.status, 204);
    assert!(mock.user("jdoe@example.edu").is_none());
    assert_eq!(user_or_panic(&mock, "john.doe@example.edu").id, id);
    let patch_missing = call(
        &mock,
        Method::PATCH,
        "/users/u-999999",
        Some(json!({"first_name": "X"})),
    )
    .await;
    assert_eq!(patch_missing.status, 404);
    let bad_type = call(
        &mock,
        Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({"first_name": 7})),
    )
    .await;
    assert_eq!(bad_type.status, 400);

    // DELETE by ID, then it is gone.
    let deleted = call(&mock, Method::DELETE, &format!("/users/{id}"), None).await;
    assert_eq!(deleted.status, 204);
    assert!(mock.users().is_empty());
    let again = call(&mock, Method::DELETE, &format!("/users/{id}"), None).await;
    assert_eq!(again.status, 404);
    let gone = call(&mock, Method::GET, "/users/john.doe%40example.edu", None).await;
    assert_eq!(gone.status, 404);

    // The next ID is new, never reused.
    let next = call(
        &mock,
        Method::POST,
        "/users",
        Some(create_body("a@example.edu", "A", "A")),
    )
    .await;
    assert_eq!(str_at(&next.body, "/id"), "u-000002");
}

#[tokio::test]
async fn user_list_pages_are_sorted_by_email() {
    let mock = start().await;
    for name in ["g", "c", "a", "e", "b", "f", "d"] {
        mock.add_user(&format!("{name}@example.edu"), name, "Test");
    }
    let mut seen = Vec::new();
    for page in 1..=3 {
        let answer = call(
            &mock,
            Method::GET,
            &format!("/users?page_size=3&page_number={page}"),
            None,
        )
        .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["page_count"], json!(3));
        assert_eq!(answer.body["page_number"], json!(page));
        assert_eq!(answer.body["page_size"], json!(3));
        assert_eq!(answer.body["total_records"], json!(7));
        let page_emails = emails(&answer.body, "users");
        assert_eq!(page_emails.len(), if page == 3 { 1 } else { 3 });
        seen.extend(page_emails);
    }
    let expected: Vec<String> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| format!("{n}@example.edu"))
        .collect();
    assert_eq!(seen, expected);

    let beyond = call(&mock, Method::GET, "/users?page_size=3&page_number=4", None).await;
    assert_eq!(beyond.status, 200);
    assert_eq!(emails(&beyond.body, "users"), Vec::<String>::new());

    // No paging parameters: the first page at the default size holds everything.
    let all = call(&mock, Method::GET, "/users", None).await;
    assert_eq!(all.body["page_number"], json!(1));
    assert_eq!(all.body["page_count"], json!(1));
    assert_eq!(emails(&all.body, "users"), expected);

    // Oversized pages are clamped; nonsense is a 400.
    let big = call(&mock, Method::GET, "/users?page_size=5000", None).await;
    assert_eq!(big.body["page_size"], json!(300));
    for bad in ["page_size=0", "page_number=0", "page_size=abc"] {
        let answer = call(&mock, Method::GET, &format!("/users?{bad}"), None).await;
        assert_eq!(answer.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn group_membership_add_is_idempotent_and_remove_is_strict() {
    let mock = start().await;
    let staff = mock.add_group("Staff");
    let other = mock.add_group("Faculty");
    assert_eq!(mock.add_group("Staff"), staff, "same name, same group");
    let alice = mock.add_user("alice@example.edu", "Alice", "A");
    let bob = mock.add_user("bob@example.edu", "Bob", "B");
    assert!(mock.add_member("Faculty", "bob@example.edu"));
    assert!(!mock.add_member("Nope", "bob@example.edu"));
    assert!(!mock.add_member("Faculty", "nobody@example.edu"));

    let groups = call(&mock, Method::GET, "/groups", None).await;
    assert_eq!(groups.status, 200);
    assert_eq!(
        groups.body["groups"],
        json!([{"id": other, "name": "Faculty", "total_members": 1},
               {"id": staff, "name": "Staff", "total_members": 0}])
    );

    let path = format!("/groups/{staff}/members");
    let added = call(
        &mock,
        Method::POST,
        &path,
        Some(json!({"members": [{"id": bob}, {"id": alice}]})),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.body);
    assert_eq!(added.body["ids"], json!(format!("{bob},{alice}")));
    assert!(added.body["added_at"].is_string());
    assert_eq!(
        mock.members("Staff"),
        vec!["alice@example.edu", "bob@example.edu"]
    );

    // Adding again: accepted, nothing doubled.
    let again = call(
        &mock,
        Method::POST,
        &path,
        Some(json!({"members": [{"id": alice}]})),
    )
    .await;
    assert_eq!(again.status, 201);
    assert_eq!(mock.members("Staff").len(), 2);

    // Unknown user: 404, and the known one in the same call is not added.
    let carol = mock.add_user("carol@example.edu", "Carol", "C");
    let unknown = call(
        &mock,
        Method::POST,
        &path,
        Some(json!({"members": [{"id": carol}, {"id": "u-999999"}]})),
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(mock.members("Staff").len(), 2);
    let no_group = call(
        &mock,
        Method::POST,
        "/groups/g-999999/members",
        Some(json!({"members": [{"id": alice}]})),
    )
    .await;
    assert_eq!(no_group.status, 404);

    // Members listing, paged like users.
    let page1 = call(&mock, Method::GET, &format!("{path}?page_size=1"), None).await;
    assert_eq!(page1.status, 200);
    assert_eq!(page1.body["page_count"], json!(2));
    assert_eq!(page1.body["total_records"], json!(2));
    assert_eq!(
        page1.body["members"],
        json!([{"id": alice, "email": "alice@example.edu"}])
    );
    let page2 = call(
        &mock,
        Method::GET,
        &format!("{path}?page_size=1&page_number=2"),
        None,
    )
    .await;
    assert_eq!(emails(&page2.body, "members"), vec!["bob@example.edu"]);
    let missing = call(&mock, Method::GET, "/groups/g-999999/members", None).await;
    assert_eq!(missing.status, 404);

    // Remove: 204, then 404 (not a member any more).
    let removed = call(&mock, Method::DELETE, &format!("{path}/{alice}"), None).await;
    assert_eq!(removed.status, 204);
    assert_eq!(mock.members("Staff"), vec!["bob@example.edu"]);
    let twice = call(&mock, Method::DELETE, &format!("{path}/{alice}"), None).await;
    assert_eq!(twice.status, 404);

    // Deleting a user removes it from every group.
    let deleted = call(&mock, Method::DELETE, &format!("/users/{bob}"), None).await;
    assert_eq!(deleted.status, 204);
    assert!(mock.members("Staff").is_empty());
    assert!(mock.members("Faculty").is_empty());
    assert!(mock.groups().iter().all(|g| g.members.is_empty()));
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    let mock = start().await;
    assert_eq!(call(&mock, Method::GET, "/nothing", None).await.status, 404);
    assert_eq!(call(&mock, Method::PUT, "/users", None).await.status, 405);
    assert_eq!(
        mock.requests_served(),
        2,
        "refused requests are counted too"
    );
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let mock = start().await;
    let url = mock.url();
    assert_eq!(call(&mock, Method::GET, "/groups", None).await.status, 200);
    mock.server.shutdown().await;
    assert!(client().get(format!("{url}/groups")).send().await.is_err());
}
