//! [`MockTarget`]: the benchmark's target, the users half of the example API
//! (provisioners/example.toml) held in hash maps, with a delay before every
//! answer and an optional rate limit.
//!
//! The demo API (`crate::demo`) would serve the same routes, but it finds a
//! user by scanning every user and sorts the whole directory for each page:
//! fine for a tour of a dozen accounts, quadratic for the 100,000 that a
//! full-sync measurement seeds. This one keeps an index by email and a
//! sorted map for the pages, so the target is never what the benchmark
//! measures by accident.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /users/{email}` | 200 `{"id","email","first_name","last_name","status"}`, 404 |
//! | `GET /users?page_size=N&page_number=P` | 200 `{"page_count","page_number","page_size","total_records","users":[...]}` (sorted by email, `page_size` at most 300) |
//! | `POST /users` `{"action":"create","user_info":{"email","first_name","last_name"}}` | 201 `{"id",...}`, 409 |
//! | `PATCH /users/{id}` | 204, 404 |
//! | `DELETE /users/{id}` | 204, 404 |
//!
//! Above the rate limit the answer is 429 with `Retry-After` (whole seconds,
//! as the worker reads it).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Largest page served, as the example API clamps it.
const MAX_PAGE_SIZE: usize = 300;

/// What the target answered, counted by kind of request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallCounts {
    /// `GET /users/{email}`.
    pub lookups: u64,
    /// `GET /users?...`: pages read.
    pub pages: u64,
    /// `POST /users`.
    pub creates: u64,
    /// `PATCH /users/{id}`.
    pub updates: u64,
    /// `DELETE /users/{id}`.
    pub deletes: u64,
    /// Anything else (unknown routes).
    pub other: u64,
    /// Requests refused with 429 (counted in their kind too).
    pub rate_limited: u64,
}

impl CallCounts {
    /// Every request, of whatever kind.
    pub fn total(&self) -> u64 {
        self.lookups + self.pages + self.creates + self.updates + self.deletes + self.other
    }
}

#[derive(Debug, Clone)]
struct Account {
    id: String,
    email: String,
    first_name: String,
    last_name: String,
}

impl Account {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "status": "active",
        })
    }
}

/// The accounts: by ID, with an index by lowercased email that is also the
/// listing order.
#[derive(Debug, Default)]
struct Accounts {
    by_id: HashMap<String, Account>,
    by_email: BTreeMap<String, String>,
    next_id: u64,
}

impl Accounts {
    fn insert(&mut self, email: &str, first_name: &str, last_name: &str) -> Option<String> {
        let key = email.to_lowercase();
        if self.by_email.contains_key(&key) {
            return None;
        }
        self.next_id += 1;
        let id = format!("u-{:07}", self.next_id);
        self.by_email.insert(key, id.clone());
        self.by_id.insert(
            id.clone(),
            Account {
                id: id.clone(),
                email: email.to_string(),
                first_name: first_name.to_string(),
                last_name: last_name.to_string(),
            },
        );
        Some(id)
    }

    fn by_email(&self, email: &str) -> Option<&Account> {
        self.by_email
            .get(&email.to_lowercase())
            .and_then(|id| self.by_id.get(id))
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(account) => {
                self.by_email.remove(&account.email.to_lowercase());
                true
            }
            None => false,
        }
    }
}

/// Requests admitted in the last second, for the rate limit.
#[derive(Debug, Default)]
struct Window {
    admitted: VecDeque<Instant>,
}

#[derive(Debug, Default)]
struct MockState {
    accounts: Mutex<Accounts>,
    latency_us: AtomicU64,
    /// Requests per second admitted; 0 = no limit.
    rate_limit: AtomicU64,
    window: Mutex<Window>,
    lookups: AtomicU64,
    pages: AtomicU64,
    creates: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
    other: AtomicU64,
    rate_limited: AtomicU64,
    /// When each request arrived (for the rate measurement).
    arrivals: Mutex<Vec<Instant>>,
    /// When each request refused with 429 arrived.
    refusals: Mutex<Vec<Instant>>,
    /// The delays actually slept (tokio's timer rounds up to whole
    /// milliseconds, so they exceed the latency asked for).
    delayed_us: AtomicU64,
    delayed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain counters and maps: a panic elsewhere leaves nothing half-done
    // that matters more than carrying on with the measurement.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The benchmark's mock target. Clones share the same accounts, settings
/// and counters.
#[derive(Debug, Clone, Default)]
pub struct MockTarget {
    state: Arc<MockState>,
}

impl MockTarget {
    /// An empty target with no delay and no rate limit.
    pub fn new() -> MockTarget {
        MockTarget::default()
    }

    /// The routes, over this target's state.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/users", get(list_users).post(create_user))
            .route(
                "/users/{user}",
                get(get_user).patch(update_user).delete(delete_user),
            )
            .fallback(no_route)
            .with_state(Arc::clone(&self.state))
            .layer(middleware::from_fn_with_state(
                Arc::clone(&self.state),
                admit,
            ))
    }

    /// Every answer is delayed by this much from now on.
    pub fn set_latency(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_us.store(us, Ordering::Relaxed);
    }

    /// At most `per_second` requests are admitted in any one-second window;
    /// the others are answered 429 with `Retry-After: 1`. 0 lifts the limit.
    pub fn set_rate_limit(&self, per_second: u64) {
        self.state.rate_limit.store(per_second, Ordering::Relaxed);
        lock(&self.state.window).admitted.clear();
    }

    /// Empties the directory and zeroes the counters; latency and rate limit stay.
    pub fn reset(&self) {
        *lock(&self.state.accounts) = Accounts::default();
        self.reset_counts();
    }

    /// Zeroes the counters and forgets the arrival times.
    pub fn reset_counts(&self) {
        let s = &self.state;
        for c in [
            &s.lookups,
            &s.pages,
            &s.creates,
            &s.updates,
            &s.deletes,
            &s.other,
            &s.rate_limited,
            &s.delayed_us,
            &s.delayed,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        lock(&s.arrivals).clear();
        lock(&s.refusals).clear();
        lock(&s.window).admitted.clear();
    }

    /// Adds accounts (email, first name, last name) in one go; an email
    /// already there is left as it is.
    pub fn seed<'a>(&self, accounts: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        let mut held = lock(&self.state.accounts);
        for (email, first, last) in accounts {
            held.insert(email, first, last);
        }
    }

    /// The API ID of the account with this email.
    pub fn id_of(&self, email: &str) -> Option<String> {
        lock(&self.state.accounts)
            .by_email(email)
            .map(|a| a.id.clone())
    }

    /// How many accounts the target holds.
    pub fn len(&self) -> usize {
        lock(&self.state.accounts).by_id.len()
    }

    /// Whether the target holds no account.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first name of the account with this email.
    pub fn first_name(&self, email: &str) -> Option<String> {
        lock(&self.state.accounts)
            .by_email(email)
            .map(|a| a.first_name.clone())
    }

    /// The requests answered since the last reset.
    pub fn counts(&self) -> CallCounts {
        let s = &self.state;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallCounts {
            lookups: get(&s.lookups),
            pages: get(&s.pages),
            creates: get(&s.creates),
            updates: get(&s.updates),
            deletes: get(&s.deletes),
            other: get(&s.other),
            rate_limited: get(&s.rate_limited),
        }
    }

    /// The mean time from a request's arrival to the end of its delay,
    /// since the last reset; `None` when nothing was delayed.
    pub fn mean_delay(&self) -> Option<Duration> {
        let count = self.state.delayed.load(Ordering::Relaxed);
        (count > 0)
            .then(|| Duration::from_micros(self.state.delayed_us.load(Ordering::Relaxed) / count))
    }

    /// When each request since the last reset arrived, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        lock(&self.state.arrivals).clone()
    }

    /// When each request refused (429) since the last reset arrived, in order.
    pub fn refusals(&self) -> Vec<Instant> {
        lock(&self.state.refusals).clone()
    }
}

/// Counts the request, refuses it above the rate limit, delays the answer.
async fn admit(State(state): State<Arc<MockState>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    lock(&state.arrivals).push(now);
    let counter = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/users") => &state.pages,
        ("GET", p) if p.starts_with("/users/") => &state.lookups,
        ("POST", "/users") => &state.creates,
        ("PATCH", p) if p.starts_with("/users/") => &state.updates,
        ("DELETE", p) if p.starts_with("/users/") => &state.deletes,
        _ => &state.other,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let admitted = admitted(&state, now);
    if !admitted {
        lock(&state.refusals).push(now);
    }
    let latency = state.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
        let slept = u64::try_from(now.elapsed().as_micros()).unwrap_or(u64::MAX);
        state.delayed_us.fetch_add(slept, Ordering::Relaxed);
        state.delayed.fetch_add(1, Ordering::Relaxed);
    }
    if !admitted {
        state.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut answer = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"code": 429, "message": "Too many requests"})),
        )
            .into_response();
        answer
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return answer;
    }
    next.run(req).await
}

/// Whether a request arriving at `now` is within the rate limit (and if so,
/// it counts against it).
fn admitted(state: &MockState, now: Instant) -> bool {
    let limit = state.rate_limit.load(Ordering::Relaxed);
    if limit == 0 {
        return true;
    }
    let mut window = lock(&state.window);
    while window
        .admitted
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        window.admitted.pop_front();
    }
    if window.admitted.len() as u64 >= limit {
        return false;
    }
    window.admitted.push_back(now);
    true
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let message: String = message.into();
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

fn user_missing(who: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        1001,
        format!("User does not exist: {who}"),
    )
}

async fn get_user(State(state): State<Arc<MockState>>, Path(email): Path<String>) -> Response {
    let found = lock(&state.accounts).by_email(&email).map(Account::to_json);
    match found {
        Some(body) => (StatusCode::OK, Json(body)).into_response(),
        None => user_missing(&email),
    }
}

/// `page_size` and `page_number`, or what is wrong with them.
fn page_query(query: Option<&str>) -> Result<(usize, usize), String> {
    let (mut size, mut number) = (MAX_PAGE_SIZE, 1usize);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key != "page_size" && key != "page_number" {
            continue;
        }
        let Some(n) = value.parse::<usize>().ok().filter(|n| *n >= 1) else {
            return Err(format!("Invalid field: {key} must be a positive integer"));
        };
        if key == "page_size" {
            size = n.min(MAX_PAGE_SIZE);
        } else {
            number = n;
        }
    }
    Ok((size, number))
}

async fn list_users(State(state): State<Arc<MockState>>, RawQuery(query): RawQuery) -> Response {
    let (size, number) = match page_query(query.as_deref()) {
        Ok(p) => p,
        Err(problem) => return error(StatusCode::BAD_REQUEST, 300, problem),
    };
    let body = {
        let held = lock(&state.accounts);
        let total = held.by_id.len();
        let users: Vec<Value> = held
            .by_email
            .values()
            .skip((number - 1).saturating_mul(size))
            .take(size)
            .filter_map(|id| held.by_id.get(id))
            .map(Account::to_json)
            .collect();
        json!({
            "page_count": total.div_ceil(size),
            "page_number": number,
            "page_size": size,
            "total_records": total,
            "users": users,
        })
    };
    (StatusCode::OK, Json(body)).into_response()
}

fn field<'a>(body: &'a Value, pointer: &str) -> Option<&'a str> {
    body.pointer(pointer).and_then(Value::as_str)
}

async fn create_user(State(state): State<Arc<MockState>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, 300, "Request body is not JSON");
    };
    let Some(email) = field(&body, "/user_info/email").filter(|e| e.contains('@')) else {
        return error(
            StatusCode::BAD_REQUEST,
            300,
            "Invalid field: user_info.email",
        );
    };
    let first = field(&body, "/user_info/first_name").unwrap_or("");
    let last = field(&body, "/user_info/last_name").unwrap_or("");
    let created = lock(&state.accounts).insert(email, first, last);
    match created {
        Some(id) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "email": email, "first_name": first, "last_name": last})),
        )
            .into_response(),
        None => error(StatusCode::CONFLICT, 1005, "User already exists"),
    }
}

async fn update_user(
    State(state): State<Arc<MockState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, 300, "Request body is not JSON");
    };
    let mut held = lock(&state.accounts);
    let Some(account) = held.by_id.get_mut(&id) else {
        return user_missing(&id);
    };
    if let Some(first) = field(&body, "/first_name") {
        account.first_name = first.to_string();
    }
    if let Some(last) = field(&body, "/last_name") {
        account.last_name = last.to_string();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn delete_user(State(state): State<Arc<MockState>>, Path(id): Path<String>) -> Response {
    if lock(&state.accounts).remove(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        user_missing(&id)
    }
}

async fn no_route() -> Response {
    error(StatusCode::NOT_FOUND, 404, "No such route")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::server::Server;

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn served(mock: &MockTarget) -> Server {
        match Server::start(mock.router()).await {
            Ok(s) => s,
            Err(e) => panic!("mock did not start: {e}"),
        }
    }

    #[tokio::test]
    async fn serves_the_example_users_api() {
        let mock = MockTarget::new();
        mock.seed([("b@example.edu", "B", "Bee"), ("a@example.edu", "A", "Ay")]);
        let server = served(&mock).await;
        let http = client();
        let url = server.url();

        let found = http
            .get(format!("{url}/users/A%40Example.edu"))
            .send()
            .await
            .unwrap();
        assert_eq!(found.status(), 200);
        let body: Value = found.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_string();

        let patch = http
            .patch(format!("{url}/users/{id}"))
            .json(&json!({"first_name": "Anna"}))
            .send()
            .await
            .unwrap();
        assert_eq!(patch.status(), 204);
        assert_eq!(mock.first_name("a@example.edu").as_deref(), Some("Anna"));

        let create = |email: &str| {
            http.post(format!("{url}/users"))
                .json(&json!({"action": "create", "user_info": {"email": email, "first_name": "C", "last_name": "See"}}))
                .send()
        };
        assert_eq!(create("c@example.edu").await.unwrap().status(), 201);
        assert_eq!(create("C@example.edu").await.unwrap().status(), 409);

        let page: Value = http
            .get(format!("{url}/users?page_size=2&page_number=2"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(page["page_count"], 2);
        assert_eq!(page["total_records"], 3);
        assert_eq!(page["users"][0]["email"], "c@example.edu");

        let gone = http
            .delete(format!("{url}/users/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(gone.status(), 204);
        let again = http
            .delete(format!("{url}/users/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 404);
        assert_eq!(mock.len(), 2);
        let counts = mock.counts();
        assert_eq!(
            (
                counts.lookups,
                counts.updates,
                counts.creates,
                counts.pages,
                counts.deletes
            ),
            (1, 1, 2, 1, 2)
        );
        server.shutdown().await;
    }

    #[tokio::test]
    async fn answers_429_with_retry_after_above_the_rate_limit() {
        let mock = MockTarget::new();
        mock.set_rate_limit(5);
        let server = served(&mock).await;
        let http = client();
        let mut statuses = Vec::new();
        for _ in 0..8 {
            let answer = http
                .get(format!("{}/users/nobody%40example.edu", server.url()))
                .send()
                .await
                .unwrap();
            if answer.status() == 429 {
                assert_eq!(answer.headers()["retry-after"], "1");
            }
            statuses.push(answer.status().as_u16());
        }
        assert_eq!(statuses, [404, 404, 404, 404, 404, 429, 429, 429]);
        assert_eq!(mock.counts().rate_limited, 3);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn delays_every_answer() {
        let mock = MockTarget::new();
        mock.set_latency(Duration::from_millis(30));
        let server = served(&mock).await;
        let started = Instant::now();
        let answer = client()
            .get(format!("{}/users?page_size=10", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(30));
        server.shutdown().await;
    }
}
