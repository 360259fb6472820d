//! The test-only side of [`MockTarget`]: scripted faults, route failures,
//! hangs, authentication rules, the request log and waiting. (What the demo
//! API answers is tested in src/demo/tests.rs.)

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::*;
use crate::support::call::{client, send, Answer};

const WAIT: Duration = Duration::from_secs(5);

async fn start() -> MockTarget {
    match MockTarget::start().await {
        Ok(mock) => mock,
        Err(e) => panic!("mock target did not start: {e}"),
    }
}

async fn call(mock: &MockTarget, method: Method, path: &str, body: Option<Value>) -> Answer {
    let mut req = client().request(method, format!("{}{path}", mock.url()));
    if let Some(body) = body {
        req = req.json(&body);
    }
    send(req).await
}

fn create_body(email: &str, first: &str, last: &str) -> Value {
    json!({"action": "create", "user_info": {"email": email, "first_name": first, "last_name": last}})
}

fn user_or_panic(mock: &MockTarget, email: &str) -> DemoUser {
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

#[tokio::test]
async fn scripted_failures_come_first_then_normal_service() {
    let mock = start().await;
    mock.add_user("jdoe@example.edu", "John", "Doe");
    mock.fail_next(2, 503);
    mock.fail_next_with_retry_after(1, 429, 7);
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for _ in 0..4 {
        let a = call(&mock, Method::GET, "/users/jdoe%40example.edu", None).await;
        statuses.push(a.status);
        retry_after.push(a.header("retry-after").map(str::to_string));
    }
    assert_eq!(statuses, vec![503, 503, 429, 200]);
    assert_eq!(retry_after, vec![None, None, Some("7".to_string()), None]);

    // The log shows all four, with the statuses answered.
    let logged: Vec<Option<u16>> = mock.requests().iter().map(|r| r.status).collect();
    assert_eq!(logged, vec![Some(503), Some(503), Some(429), Some(200)]);
}

#[tokio::test]
async fn route_failures_persist_for_that_route_only() {
    let mock = start().await;
    let a = mock.add_user("a@example.edu", "A", "A");
    let b = mock.add_user("b@example.edu", "B", "B");
    mock.fail_matching("patch", &format!("/users/{b}"), 400);
    // Decoded prefixes work too.
    mock.fail_matching("GET", "/users/b@example.edu", 500);

    let body = Some(json!({"first_name": "New"}));
    for _ in 0..2 {
        let failed = call(&mock, Method::PATCH, &format!("/users/{b}"), body.clone()).await;
        assert_eq!(failed.status, 400);
    }
    let other = call(&mock, Method::PATCH, &format!("/users/{a}"), body.clone()).await;
    assert_eq!(other.status, 204);
    let get_b = call(&mock, Method::GET, "/users/b%40example.edu", None).await;
    assert_eq!(get_b.status, 500);
    let get_a = call(&mock, Method::GET, "/users/a%40example.edu", None).await;
    assert_eq!(get_a.status, 200);
    assert_eq!(user_or_panic(&mock, "b@example.edu").first_name, "B");

    mock.clear_faults();
    let ok = call(&mock, Method::PATCH, &format!("/users/{b}"), body).await;
    assert_eq!(ok.status, 204);
    assert_eq!(user_or_panic(&mock, "b@example.edu").first_name, "New");
}

#[tokio::test]
async fn hung_request_times_out_the_client_and_shutdown_releases_it() {
    let mock = start().await;
    mock.hang_next(1);
    let quick = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
    {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    match quick.get(format!("{}/groups", mock.url())).send().await {
        Ok(r) => panic!("expected a timeout, got {}", r.status()),
        Err(e) => assert!(e.is_timeout(), "expected a timeout, got {e}"),
    }
    // Only one request was scripted to hang.
    let next = send(quick.get(format!("{}/groups", mock.url()))).await;
    assert_eq!(next.status, 200);

    // A hang that is still pending does not keep shutdown waiting.
    mock.hang_next(1);
    let url = format!("{}/groups", mock.url());
    let pending = tokio::spawn(async move { client().get(url).send().await });
    assert!(mock.wait_for_requests(3, WAIT).await);
    assert_eq!(mock.requests()[2].status, None, "still in flight");
    let started = std::time::Instant::now();
    let addr = mock.url().trim_start_matches("http://").to_string();
    mock.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(4));
    match tokio::time::timeout(WAIT, pending).await {
        Ok(Ok(Ok(resp))) => assert_eq!(resp.status().as_u16(), 503),
        Ok(Ok(Err(e))) => panic!("released request failed: {e}"),
        other => panic!("hung request not released: {other:?}"),
    }
    // And the port is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn authentication_rules_answer_401_when_credentials_are_wrong() {
    let mock = start().await;
    let url = format!("{}/groups", mock.url());

    mock.require_bearer("s3cret");
    let none = send(client().get(&url)).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"mock\"")
    );
    assert_eq!(
        send(client().get(&url).bearer_auth("wrong")).await.status,
        401
    );
    assert_eq!(
        send(client().get(&url).bearer_auth("s3cret")).await.status,
        200
    );

    mock.require_basic("svc", "pw");
    assert_eq!(
        send(client().get(&url).bearer_auth("s3cret")).await.status,
        401
    );
    assert_eq!(
        send(client().get(&url).basic_auth("svc", Some("bad")))
            .await
            .status,
        401
    );
    assert_eq!(
        send(client().get(&url).basic_auth("svc", Some("pw")))
            .await
            .status,
        200
    );

    mock.require_header("X-Api-Key", "k1");
    assert_eq!(
        send(client().get(&url).header("x-api-key", "k2"))
            .await
            .status,
        401
    );
    assert_eq!(
        send(client().get(&url).header("X-API-KEY", "k1"))
            .await
            .status,
        200
    );

    mock.clear_auth();
    assert_eq!(send(client().get(&url)).await.status, 200);

    // Scripted faults come before the auth check.
    mock.require_bearer("s3cret");
    mock.fail_next(1, 502);
    assert_eq!(send(client().get(&url)).await.status, 502);
    assert_eq!(send(client().get(&url)).await.status, 401);
}

#[tokio::test]
async fn request_log_keeps_order_raw_paths_bodies_and_headers() {
    let mock = start().await;
    let staff = mock.add_group("Staff");
    let before = std::time::Instant::now();

    let look = call(&mock, Method::GET, "/users/jdoe%40example.edu", None).await;
    assert_eq!(look.status, 404);
    let created = send(
        client()
            .post(format!("{}/users", mock.url()))
            .header("X-Caller-Id", "choria=alice")
            .json(&create_body("jdoe@example.edu", "John", "Doe")),
    )
    .await;
    let id = str_at(&created.body, "/id").to_string();
    call(
        &mock,
        Method::POST,
        &format!("/groups/{staff}/members"),
        Some(json!({"members": [{"id": id}]})),
    )
    .await;
    call(
        &mock,
        Method::GET,
        "/users?page_size=300&page_number=1",
        None,
    )
    .await;
    call(&mock, Method::GET, "/no/such/route", None).await;

    assert_eq!(
        mock.request_lines(),
        vec![
            "GET /users/jdoe%40example.edu".to_string(),
            "POST /users".to_string(),
            format!("POST /groups/{staff}/members"),
            "GET /users?page_size=300&page_number=1".to_string(),
            "GET /no/such/route".to_string(),
        ]
    );
    let log = mock.requests();
    assert_eq!(log[0].path, "/users/jdoe%40example.edu");
    assert_eq!(log[0].decoded_path(), "/users/jdoe@example.edu");
    assert_eq!(log[0].query, None);
    assert_eq!(log[0].body, None);
    assert_eq!(
        log[1].body,
        Some(create_body("jdoe@example.edu", "John", "Doe"))
    );
    assert_eq!(log[1].header("x-caller-id"), Some("choria=alice"));
    assert_eq!(log[1].header("Content-Type"), Some("application/json"));
    assert!(log[1].headers.keys().all(|k| k == &k.to_ascii_lowercase()));
    assert_eq!(
        log[1].raw_body,
        serde_json::to_string(&create_body("jdoe@example.edu", "John", "Doe")).unwrap_or_default()
    );
    assert_eq!(log[3].query.as_deref(), Some("page_size=300&page_number=1"));
    let statuses: Vec<Option<u16>> = log.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![Some(404), Some(201), Some(201), Some(200), Some(404)]
    );
    assert!(log
        .windows(2)
        .all(|w| w[0].at <= w[1].at && w[0].seq < w[1].seq));
    assert!(log[0].at >= before);

    mock.clear_requests();
    assert!(mock.requests().is_empty());
    call(&mock, Method::GET, "/groups", None).await;
    assert_eq!(mock.request_lines(), vec!["GET /groups"]);
    assert_eq!(mock.requests()[0].seq, 5, "seq is not reset by clear");
}

#[tokio::test]
async fn waiting_synchronises_on_requests_and_state() {
    let mock = start().await;
    // Nothing arrives: false after the timeout.
    assert!(!mock.wait_for_requests(1, Duration::from_millis(50)).await);

    let url = mock.url();
    let producer = tokio::spawn(async move {
        let http = client();
        for n in 0..3 {
            let body = create_body(&format!("u{n}@example.edu"), "U", "N");
            if let Err(e) = http.post(format!("{url}/users")).json(&body).send().await {
                return Err(e.to_string());
            }
        }
        Ok(())
    });
    assert!(mock.wait_for_requests(3, WAIT).await);
    assert!(
        mock.wait_until(WAIT, |m| m.user("u2@example.edu").is_some())
            .await
    );
    assert_eq!(mock.users().len(), 3);
    match producer.await {
        Ok(Ok(())) => {}
        other => panic!("producer failed: {other:?}"),
    }
    assert!(
        !mock
            .wait_until(Duration::from_millis(50), |m| m.users().len() > 3)
            .await
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused() {
    let mock = start().await;
    assert_eq!(call(&mock, Method::GET, "/nothing", None).await.status, 404);
    assert_eq!(call(&mock, Method::PUT, "/users", None).await.status, 405);
    assert_eq!(mock.requests().len(), 2, "refused requests are logged too");
}
