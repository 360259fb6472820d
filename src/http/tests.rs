//! The HTTP layer against real servers: what a target receives for every auth
//! scheme, TLS and mTLS, failover over `url_prefix` nodes, `endpoint`,
//! on-behalf-of, limits, and that no secret ever shows (issue #6).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use reqwest::Method;
use sha2::{Digest, Sha256};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;
use crate::config::{parse_provisioner, ProvisionerConfig};
use crate::target::{FailureClass, TargetError};

// ------------------------------------------------------------------ helpers

/// Every secret used below. None may show in a `Debug` of a configuration or
/// in any error message.
const BEARER_SECRET: &str = "bearer-secret-Kx81f";
const API_KEY_SECRET: &str = "api-key-secret-Pq02m";
const BASIC_SECRET: &str = "open sesame";
const OAUTH2_SECRET: &str = "oauth2-client-secret-Wd55t";
const LOGIN_SECRET: &str = "login-p&ss=w0rd+ é";
const JWT_SECRET: &str = "jwt-signing-key-Hy73c";
/// The password written in a `url_prefix` (`http://svc:PASSWORD@host/`).
const PREFIX_PASSWORD: &str = "prefix-pw-Tg47v";
const SECRETS: &[&str] = &[
    BEARER_SECRET,
    API_KEY_SECRET,
    BASIC_SECRET,
    OAUTH2_SECRET,
    LOGIN_SECRET,
    JWT_SECRET,
    PREFIX_PASSWORD,
];

/// The operations `provision_group` needs, so that the files are complete.
const REST: &str = r#"
[rest.accounts.lookup]
method = "GET"
url = "/users/{{ match }}"
ok = [200]
absent = [404]
id = "/id"

[rest.accounts.list]
method = "GET"
url = "/users"
items = "/users"
id = "/id"
match = "/email"

[rest.accounts.create]
method = "POST"
url = "/users"
body = { email = "{{ match }}" }
ok = [201]
id = "/id"

[rest.accounts.update]
method = "PATCH"
url = "/users/{{ api_id }}"
body = { email = "{{ match }}" }
ok = [204]

[rest.accounts.deprovision]
method = "DELETE"
url = "/users/{{ api_id }}"
ok = [204]
absent = [404]
"#;

/// A provisioner from `head` (top-level keys, then tables such as `[auth]`).
fn config(head: &str) -> ProvisionerConfig {
    let text = format!("kind = \"rest\"\nprovision_group = \"app:test:users\"\n{head}\n{REST}");
    let mut errors = Vec::new();
    let config = parse_provisioner(Path::new("t.toml"), &text, &mut errors);
    assert!(errors.is_empty(), "{text}\n{errors:?}");
    config.unwrap()
}

fn client(head: &str) -> HttpClient {
    HttpClient::new(&crate::assembly::http_settings(&config(head))).unwrap()
}

fn request(m: Method, path_and_query: &str, body: Option<serde_json::Value>) -> HttpRequest {
    HttpRequest {
        operation: "accounts.test".into(),
        method: m,
        path_and_query: path_and_query.into(),
        body,
        ..Default::default()
    }
}

fn get(path_and_query: &str) -> HttpRequest {
    request(Method::GET, path_and_query, None)
}

/// Checks that an error shows no secret, and hands it back.
fn clean(e: TargetError) -> TargetError {
    let shown = format!("{e} {e:?}");
    for s in SECRETS {
        assert!(!shown.contains(s), "a secret shows in {shown}");
    }
    e
}

async fn send_ok(c: &HttpClient, req: HttpRequest) -> HttpResponse {
    match c.send(req).await {
        Ok(r) => r,
        Err(e) => panic!("{}", clean(e)),
    }
}

async fn send_err(c: &HttpClient, req: HttpRequest) -> TargetError {
    match c.send(req).await {
        Ok(r) => panic!(
            "expected an error, got HTTP {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ),
        Err(e) => clean(e),
    }
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

/// The requests a server received on `p`.
async fn received_on(server: &MockServer, p: &str) -> Vec<Request> {
    received(server)
        .await
        .into_iter()
        .filter(|r| r.url.path() == p)
        .collect()
}

fn header_of(r: &Request, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

async fn ok_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&server)
        .await;
    server
}

/// Answers `tok-1`, `tok-2`, ... in turn: as an OAuth2 token answer, as a plain
/// text body (as a Ligato-style REST plugin answers its login) or as a
/// Salt-style `{"return": [{"token"}]}`.
#[derive(Clone, Copy)]
enum TokenStyle {
    OAuth2,
    Plain,
    Salt,
}

struct Tokens {
    style: TokenStyle,
    count: AtomicUsize,
    delay: Duration,
}

impl Tokens {
    fn new(style: TokenStyle) -> Self {
        Tokens {
            style,
            count: AtomicUsize::new(0),
            delay: Duration::ZERO,
        }
    }
}

impl Respond for Tokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let token = format!("tok-{}", self.count.fetch_add(1, Ordering::SeqCst) + 1);
        let t = match self.style {
            TokenStyle::OAuth2 => ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})),
            TokenStyle::Plain => ResponseTemplate::new(200).set_body_string(format!("{token}\n")),
            TokenStyle::Salt => ResponseTemplate::new(200).set_body_json(
                serde_json::json!({"return": [{"token": token, "expire": 1.7e9, "user": "svc", "eauth": "pam"}]}),
            ),
        };
        t.set_delay(self.delay)
    }
}

/// A port with nothing listening on it (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ------------------------------------------------- 1. static schemes and none

#[tokio::test]
async fn bearer_sends_the_secret_as_a_bearer_token() {
    let server = ok_server().await;
    let c = client(&format!(
        "url_prefix = \"{}/api\"\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"",
        server.uri()
    ));
    let resp = send_ok(&c, get("/users/alice")).await;
    assert_eq!(resp.status, 200);
    let reqs = received(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].url.path(), "/api/users/alice");
    assert_eq!(
        header_of(&reqs[0], "authorization").as_deref(),
        Some(format!("Bearer {BEARER_SECRET}").as_str())
    );
}

#[tokio::test]
async fn header_scheme_sends_the_api_key_in_its_header_only() {
    let server = ok_server().await;
    let c = client(&format!(
        "url_prefix = \"{}\"\n[auth]\nscheme = \"header\"\nheader = \"X-Api-Key\"\nclient_secret = \"{API_KEY_SECRET}\"",
        server.uri()
    ));
    send_ok(&c, get("/users")).await;
    let reqs = received(&server).await;
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        header_of(&reqs[0], "x-api-key").as_deref(),
        Some(API_KEY_SECRET)
    );
    assert_eq!(header_of(&reqs[0], "authorization"), None);
}

#[tokio::test]
async fn basic_scheme_follows_rfc_7617() {
    let server = ok_server().await;
    // RFC 7617 section 2's own example.
    let c = client(&format!(
        "url_prefix = \"{}\"\n[auth]\nscheme = \"basic\"\nusername = \"Aladdin\"\nclient_secret = \"{BASIC_SECRET}\"",
        server.uri()
    ));
    send_ok(&c, get("/users")).await;
    let reqs = received(&server).await;
    assert_eq!(
        header_of(&reqs[0], "authorization").as_deref(),
        Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    );
}

#[tokio::test]
async fn none_sends_no_credentials() {
    let server = ok_server().await;
    for head in [
        format!("url_prefix = \"{}\"", server.uri()),
        format!(
            "url_prefix = \"{}\"\n[auth]\nscheme = \"none\"",
            server.uri()
        ),
    ] {
        let c = client(&head);
        send_ok(&c, get("/users")).await;
    }
    let reqs = received(&server).await;
    assert_eq!(reqs.len(), 2);
    for r in reqs {
        assert_eq!(header_of(&r, "authorization"), None);
    }
}

#[tokio::test]
async fn static_schemes_do_not_retry_a_401() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let c = client(&format!(
        "url_prefix = \"{}\"\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"",
        server.uri()
    ));
    let resp = send_ok(&c, get("/users")).await;
    assert_eq!(resp.status, 401);
    assert_eq!(received(&server).await.len(), 1);
    let e = clean(resp.error("accounts.test"));
    assert_eq!(e.status, Some(401));
}

#[tokio::test]
async fn body_content_type_and_accept_are_sent_as_asked() {
    let server = ok_server().await;
    let c = client(&format!("url_prefix = \"{}\"", server.uri()));
    let body = serde_json::json!({"userName": "alice", "name": {"givenName": "Alice"}});
    send_ok(&c, request(Method::POST, "/Users", Some(body.clone()))).await;
    let mut scim = request(Method::PATCH, "/Users/1", Some(body.clone()));
    scim.content_type = Some("application/scim+json");
    scim.accept = Some("application/scim+json");
    send_ok(&c, scim).await;
    send_ok(&c, get("/Users")).await;
    let reqs = received(&server).await;
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].method.as_str(), "POST");
    assert_eq!(
        header_of(&reqs[0], "content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reqs[0].body, serde_json::to_vec(&body).unwrap());
    assert_eq!(reqs[1].method.as_str(), "PATCH");
    assert_eq!(
        header_of(&reqs[1], "content-type").as_deref(),
        Some("application/scim+json")
    );
    assert_eq!(
        header_of(&reqs[1], "accept").as_deref(),
        Some("application/scim+json")
    );
    assert_eq!(header_of(&reqs[2], "content-type"), None);
    assert!(reqs[2].body.is_empty());
}

// ---------------------------------------------------------------- 2. oauth2

async fn oauth2_server(delay: Duration) -> MockServer {
    let server = MockServer::start().await;
    let tokens = Tokens {
        delay,
        ..Tokens::new(TokenStyle::OAuth2)
    };
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(tokens)
        .mount(&server)
        .await;
    server
}

fn oauth2_client(server: &MockServer) -> HttpClient {
    client(&format!(
        "url_prefix = \"{uri}/v2\"\n[auth]\nscheme = \"oauth2\"\ntoken_url = \"{uri}/oauth/token\"\nclient_id = \"provisioner\"\nscope = \"users:write\"\nclient_secret = \"{OAUTH2_SECRET}\"",
        uri = server.uri()
    ))
}

#[tokio::test]
async fn oauth2_fetches_a_client_credentials_token_and_sends_it() {
    let server = oauth2_server(Duration::ZERO).await;
    Mock::given(method("GET"))
        .and(path("/v2/users"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = oauth2_client(&server);
    assert_eq!(send_ok(&c, get("/users")).await.status, 200);

    let token = received_on(&server, "/oauth/token").await;
    assert_eq!(token.len(), 1);
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("provisioner:{OAUTH2_SECRET}"));
    assert_eq!(
        header_of(&token[0], "authorization"),
        Some(format!("Basic {basic}"))
    );
    assert_eq!(
        header_of(&token[0], "content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&token[0].body),
        "grant_type=client_credentials&scope=users%3Awrite"
    );

    let api = received_on(&server, "/v2/users").await;
    assert_eq!(api.len(), 1);
    assert_eq!(
        header_of(&api[0], "authorization").as_deref(),
        Some("Bearer tok-1")
    );

    // The token is kept: a second call fetches none.
    send_ok(&c, get("/users")).await;
    assert_eq!(received_on(&server, "/oauth/token").await.len(), 1);
    let api = received_on(&server, "/v2/users").await;
    assert_eq!(
        header_of(&api[1], "authorization").as_deref(),
        Some("Bearer tok-1")
    );
}

#[tokio::test]
async fn oauth2_concurrent_requests_cause_one_token_request() {
    let server = oauth2_server(Duration::from_millis(300)).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = oauth2_client(&server);
    let calls = (0..12).map(|i| {
        let c = c.clone();
        async move { c.send(get(&format!("/users/{i}"))).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.map_err(clean).unwrap().status, 200);
    }
    assert_eq!(received_on(&server, "/oauth/token").await.len(), 1);
    let api: Vec<_> = received(&server)
        .await
        .into_iter()
        .filter(|r| r.url.path().starts_with("/v2/users/"))
        .collect();
    assert_eq!(api.len(), 12);
    for r in api {
        assert_eq!(
            header_of(&r, "authorization").as_deref(),
            Some("Bearer tok-1")
        );
    }
}

#[tokio::test]
async fn oauth2_401_fetches_a_new_token_and_retries_once() {
    let server = oauth2_server(Duration::ZERO).await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = oauth2_client(&server);
    assert_eq!(send_ok(&c, get("/users")).await.status, 200);
    assert_eq!(received_on(&server, "/oauth/token").await.len(), 2);
    let api = received_on(&server, "/v2/users").await;
    assert_eq!(api.len(), 2);
    assert_eq!(
        header_of(&api[0], "authorization").as_deref(),
        Some("Bearer tok-1")
    );
    assert_eq!(
        header_of(&api[1], "authorization").as_deref(),
        Some("Bearer tok-2")
    );
}

#[tokio::test]
async fn oauth2_concurrent_401s_cause_one_re_authentication() {
    let server = oauth2_server(Duration::ZERO).await;
    // tok-1 works for the warm-up, then is refused for the burst; slow 401s
    // make every request of the burst hold the stale token at the same time.
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-1"))
        .and(wiremock::matchers::path_regex(r"^/v2/users/[0-9]+$"))
        .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(200)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = oauth2_client(&server);
    // The first token is fetched before the burst, so all eight carry tok-1.
    assert_eq!(send_ok(&c, get("/users/warm")).await.status, 200);
    let calls = (0..8).map(|i| {
        let c = c.clone();
        async move { c.send(get(&format!("/users/{i}"))).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.map_err(clean).unwrap().status, 200);
    }
    let api = received(&server).await;
    let refused = api
        .iter()
        .filter(|r| r.url.path() != "/v2/users/warm")
        .filter(|r| header_of(r, "authorization").as_deref() == Some("Bearer tok-1"))
        .count();
    assert_eq!(refused, 8, "the whole burst carried the stale token");
    let fetched = received_on(&server, "/oauth/token").await.len();
    assert_eq!(
        fetched, 2,
        "one re-authentication for eight 401s, not one per 401"
    );
}

#[tokio::test]
async fn oauth2_a_second_401_is_returned_not_retried_again() {
    let server = oauth2_server(Duration::ZERO).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let c = oauth2_client(&server);
    let resp = send_ok(&c, get("/users")).await;
    assert_eq!(resp.status, 401);
    assert_eq!(received_on(&server, "/oauth/token").await.len(), 2);
    assert_eq!(received_on(&server, "/v2/users").await.len(), 2);
    // What the adapter makes of it: transient (docs/operations.md: a 401 that
    // persists after re-authenticating once).
    let e = clean(resp.error("accounts.test"));
    assert_eq!(e.class, FailureClass::Transient);
}

// ----------------------------------------------------------------- 3. login

fn login_client(server: &MockServer, extra: &str) -> HttpClient {
    client(&format!(
        "url_prefix = \"{uri}\"\n[auth]\nscheme = \"login\"\nlogin_url = \"{uri}/login\"\nusername = \"svc-prov\"\nclient_secret = \"{LOGIN_SECRET}\"\n{extra}",
        uri = server.uri()
    ))
}

async fn login_server(style: TokenStyle) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(Tokens::new(style))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn login_default_json_body_and_plain_text_token() {
    // A Ligato-style REST plugin's login: POST {"username", "password"}, the
    // token comes back as plain text.
    let server = login_server(TokenStyle::Plain).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = login_client(&server, "");
    send_ok(&c, get("/users")).await;
    send_ok(&c, get("/users")).await;

    let login = received_on(&server, "/login").await;
    assert_eq!(login.len(), 1, "the token is reused");
    assert_eq!(
        header_of(&login[0], "content-type").as_deref(),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_slice(&login[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"username": "svc-prov", "password": LOGIN_SECRET})
    );
    assert_eq!(header_of(&login[0], "authorization"), None);

    for r in received_on(&server, "/users").await {
        assert_eq!(
            header_of(&r, "authorization").as_deref(),
            Some("Bearer tok-1")
        );
    }
}

#[tokio::test]
async fn login_salt_style_form_body_token_pointer_and_x_auth_token() {
    // Salt's rest_cherrypy `/login`: eauth in the login body, the token in
    // X-Auth-Token, no prefix.
    let server = login_server(TokenStyle::Salt).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = login_client(
        &server,
        "login_format = \"form\"\nlogin_body = { username = \"{{ username }}\", password = \"{{ password }}\", eauth = \"pam\" }\ntoken_pointer = \"/return/0/token\"\ntoken_header = \"X-Auth-Token\"\ntoken_prefix = \"\"",
    );
    send_ok(&c, get("/minions")).await;

    let login = received_on(&server, "/login").await;
    assert_eq!(login.len(), 1);
    assert_eq!(
        header_of(&login[0], "content-type").as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let mut form: Vec<(String, String)> = url::form_urlencoded::parse(&login[0].body)
        .into_owned()
        .collect();
    form.sort();
    assert_eq!(
        form,
        vec![
            ("eauth".to_string(), "pam".to_string()),
            ("password".to_string(), LOGIN_SECRET.to_string()),
            ("username".to_string(), "svc-prov".to_string()),
        ]
    );
    let api = received_on(&server, "/minions").await;
    assert_eq!(header_of(&api[0], "x-auth-token").as_deref(), Some("tok-1"));
    assert_eq!(header_of(&api[0], "authorization"), None);
}

#[tokio::test]
async fn login_custom_json_body_template_keeps_its_shape() {
    let server = login_server(TokenStyle::Salt).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let c = login_client(
        &server,
        "token_pointer = \"/return/0/token\"\ntoken_prefix = \"Token \"\n[auth.login_body]\neauth = \"pam\"\nttl = 3600\ncredentials = { user = \"{{ username }}\", secret = \"{{ password }}\", tags = [\"{{ username }}\", \"fixed\"] }",
    );
    send_ok(&c, get("/users")).await;
    let login = received_on(&server, "/login").await;
    let body: serde_json::Value = serde_json::from_slice(&login[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "eauth": "pam",
            "ttl": 3600,
            "credentials": {"user": "svc-prov", "secret": LOGIN_SECRET, "tags": ["svc-prov", "fixed"]}
        })
    );
    let api = received_on(&server, "/users").await;
    assert_eq!(
        header_of(&api[0], "authorization").as_deref(),
        Some("Token tok-1")
    );
}

#[tokio::test]
async fn login_logs_in_again_exactly_once_after_401_and_419() {
    for status in [401u16, 419] {
        let server = login_server(TokenStyle::Plain).await;
        Mock::given(method("GET"))
            .and(header("authorization", "Bearer tok-1"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let c = login_client(&server, "");
        assert_eq!(
            send_ok(&c, get("/users")).await.status,
            200,
            "after {status}"
        );
        assert_eq!(
            received_on(&server, "/login").await.len(),
            2,
            "after {status}"
        );
        let api = received_on(&server, "/users").await;
        assert_eq!(api.len(), 2);
        assert_eq!(
            header_of(&api[1], "authorization").as_deref(),
            Some("Bearer tok-2")
        );
        // The new token is kept for the next call.
        send_ok(&c, get("/users")).await;
        assert_eq!(received_on(&server, "/login").await.len(), 2);
    }
}

#[tokio::test]
async fn login_a_target_that_keeps_refusing_gets_one_re_login_per_call() {
    for status in [401u16, 419] {
        let server = login_server(TokenStyle::Plain).await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let c = login_client(&server, "");
        let resp = send_ok(&c, get("/users")).await;
        assert_eq!(resp.status, status);
        assert_eq!(received_on(&server, "/login").await.len(), 2);
        assert_eq!(received_on(&server, "/users").await.len(), 2);
        assert_eq!(
            clean(resp.error("accounts.test")).class,
            FailureClass::Transient
        );
    }
}

#[tokio::test]
async fn login_refused_is_a_permanent_error_without_the_password() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(
            ResponseTemplate::new(401).set_body_string(format!("wrong password {LOGIN_SECRET}")),
        )
        .mount(&server)
        .await;
    let c = login_client(&server, "");
    let e = send_err(&c, get("/users")).await;
    assert_eq!(e.class, FailureClass::Permanent);
    assert!(received_on(&server, "/users").await.is_empty());
}

// ------------------------------------------------------------------- 4. jwt

fn jwt_client(uri: &str, extra: &str) -> HttpClient {
    client(&format!(
        "url_prefix = \"{uri}\"\n[auth]\nscheme = \"jwt\"\nissuer = \"gluster-app\"\nttl_s = 120\nclient_secret = \"{JWT_SECRET}\"\n{extra}"
    ))
}

/// The verified claims of the bearer JWT a request carried.
fn jwt_claims(r: &Request) -> serde_json::Map<String, serde_json::Value> {
    let value = header_of(r, "authorization").unwrap();
    let token = value.strip_prefix("Bearer ").unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    validation.set_issuer(&["gluster-app"]);
    let wrong = jsonwebtoken::DecodingKey::from_secret(b"another key");
    assert!(jsonwebtoken::decode::<serde_json::Value>(token, &wrong, &validation).is_err());
    let key = jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes());
    let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
        token,
        &key,
        &validation,
    )
    .unwrap();
    assert_eq!(data.header.alg, jsonwebtoken::Algorithm::HS256);
    data.claims
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[tokio::test]
async fn jwt_carries_iss_iat_exp_and_extra_claims() {
    let server = ok_server().await;
    let c = jwt_client(
        &server.uri(),
        "claims = { sub = \"provisioner\", admin = true, tenant = { id = 7 } }",
    );
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    send_ok(&c, get("/v1/volumes")).await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reqs = received(&server).await;
    let claims = jwt_claims(&reqs[0]);
    assert_eq!(claims["iss"], "gluster-app");
    let iat = claims["iat"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(
        before <= iat && iat <= after,
        "iat {iat} not in [{before}, {after}]"
    );
    assert_eq!(exp - iat, 120);
    assert_eq!(claims["sub"], "provisioner");
    assert_eq!(claims["admin"], true);
    assert_eq!(claims["tenant"], serde_json::json!({"id": 7}));
    assert!(!claims.contains_key("qsh"), "qsh is off by default");
    assert_eq!(claims.len(), 6, "{claims:?}");
}

#[tokio::test]
async fn jwt_qsh_for_a_get_with_a_query() {
    let server = ok_server().await;
    let c = jwt_client(&server.uri(), "qsh = true");
    send_ok(&c, get("/v1/volumes?status=1")).await;
    let reqs = received(&server).await;
    assert_eq!(reqs[0].url.path(), "/v1/volumes");
    assert_eq!(reqs[0].url.query(), Some("status=1"));
    // The Heketi/Atlassian-style request hash: sha256("GET\n/v1/volumes\nstatus=1"), hex.
    assert_eq!(
        jwt_claims(&reqs[0])["qsh"],
        "1d26241428b8793fab6edbebfa11e65bd3a3455d4aa59438cdee79fba0a000c8"
    );
    assert_eq!(
        jwt_claims(&reqs[0])["qsh"],
        sha256_hex(b"GET\n/v1/volumes\nstatus=1").as_str()
    );
}

#[tokio::test]
async fn jwt_qsh_for_a_post_hashes_the_path_as_sent_and_the_exact_body() {
    let server = ok_server().await;
    // The path as sent includes url_prefix's own path.
    let c = jwt_client(&format!("{}/gluster", server.uri()), "qsh = true");
    send_ok(
        &c,
        request(
            Method::POST,
            "/v1/volumes/gv1/start",
            Some(serde_json::json!({"force": true})),
        ),
    )
    .await;
    send_ok(&c, request(Method::DELETE, "/v1/volumes/my%20vol", None)).await;
    let reqs = received(&server).await;
    assert_eq!(reqs.len(), 2);

    let post = &reqs[0];
    assert_eq!(post.url.path(), "/gluster/v1/volumes/gv1/start");
    let mut expected = b"POST\n/gluster/v1/volumes/gv1/start\n".to_vec();
    expected.extend_from_slice(&post.body);
    assert_eq!(post.body, br#"{"force":true}"#);
    assert_eq!(jwt_claims(post)["qsh"], sha256_hex(&expected).as_str());

    let delete = &reqs[1];
    assert_eq!(delete.url.path(), "/gluster/v1/volumes/my%20vol");
    assert_eq!(
        jwt_claims(delete)["qsh"],
        sha256_hex(b"DELETE\n/gluster/v1/volumes/my%20vol").as_str()
    );
}

#[tokio::test]
async fn jwt_401_is_not_retried() {
    // A JWT is made fresh for every request: a 401 would not change with another.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let c = jwt_client(&server.uri(), "");
    assert_eq!(send_ok(&c, get("/v1/volumes")).await.status, 401);
    assert_eq!(received(&server).await.len(), 1);
}

// ------------------------------------------------------------------ 5. mTLS

mod tls {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    pub struct Ca {
        pub cert: CertificateDer<'static>,
        pub pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    pub fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate signed by `ca`: (DER, PEM, PKCS#8 key PEM, key DER).
    pub fn leaf(
        ca: &Ca,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> (CertificateDer<'static>, String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (
            cert.der().clone(),
            cert.pem(),
            key.serialize_pem(),
            key.serialize_der(),
        )
    }

    pub fn server_usage() -> ExtendedKeyUsagePurpose {
        ExtendedKeyUsagePurpose::ServerAuth
    }
    pub fn client_usage() -> ExtendedKeyUsagePurpose {
        ExtendedKeyUsagePurpose::ClientAuth
    }

    /// A TLS server that requires a client certificate signed by `client_ca`
    /// and answers every request `200 mtls-ok`.
    pub struct Server {
        pub port: u16,
        pub handshakes_ok: Arc<AtomicUsize>,
        pub handshakes_failed: Arc<AtomicUsize>,
        /// The client certificates presented on successful handshakes.
        pub peers: Arc<Mutex<Vec<Vec<u8>>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub async fn start(
        client_ca: &Ca,
        chain: Vec<CertificateDer<'static>>,
        key_der: Vec<u8>,
    ) -> Server {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(client_ca.cert.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                chain,
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (ok2, failed2, peers2) = (ok.clone(), failed.clone(), peers.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, ok, failed, peers) = (
                    acceptor.clone(),
                    ok2.clone(),
                    failed2.clone(),
                    peers2.clone(),
                );
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    if let Some(certs) = tls.get_ref().1.peer_certificates() {
                        peers
                            .lock()
                            .unwrap()
                            .extend(certs.iter().map(|c| c.to_vec()));
                    }
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nmtls-ok")
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Server {
            port,
            handshakes_ok: ok,
            handshakes_failed: failed,
            peers,
            task,
        }
    }
}

/// Waits (bounded) for what a server task records after the client is done.
async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition did not hold within 2 s");
}

struct Pki {
    dir: tempfile::TempDir,
    server: tls::Server,
    client_cert_der: Vec<u8>,
}

impl Pki {
    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn tls_table(&self, with_client_cert: &str) -> String {
        let mut t = format!("[tls]\nca_file = \"{}\"\n", self.file("ca.pem").display());
        if !with_client_cert.is_empty() {
            t.push_str(&format!(
                "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                self.file(&format!("{with_client_cert}.pem")).display(),
                self.file(&format!("{with_client_cert}.key")).display()
            ));
        }
        t
    }
}

/// A CA, a server certificate for 127.0.0.1, localhost and
/// api.provisioner.test, a client certificate from the same CA and one from
/// another CA; the server requires a client certificate from the first CA.
async fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::ca("provisioner test CA");
    let other_ca = tls::ca("some other CA");
    let (server_der, _, _, server_key) = tls::leaf(
        &ca,
        &["api.provisioner.test", "localhost", "127.0.0.1"],
        tls::server_usage(),
    );
    let (client_der, client_pem, client_key, _) =
        tls::leaf(&ca, &["provisioner-client"], tls::client_usage());
    let (_, stranger_pem, stranger_key, _) =
        tls::leaf(&other_ca, &["stranger"], tls::client_usage());
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.path().join("client.pem"), client_pem).unwrap();
    std::fs::write(dir.path().join("client.key"), client_key).unwrap();
    std::fs::write(dir.path().join("stranger.pem"), stranger_pem).unwrap();
    std::fs::write(dir.path().join("stranger.key"), stranger_key).unwrap();
    let server = tls::start(&ca, vec![server_der, ca.cert.clone()], server_key).await;
    Pki {
        dir,
        server,
        client_cert_der: client_der.to_vec(),
    }
}

#[tokio::test]
async fn mtls_server_rejects_a_client_without_a_certificate() {
    let pki = pki().await;
    let c = client(&format!(
        "url_prefix = \"https://127.0.0.1:{}\"\n{}",
        pki.server.port,
        pki.tls_table("")
    ));
    let e = send_err(&c, get("/users")).await;
    assert!(e.is_transient(), "{e:?}");
    // The client trusted the server (ca_file) and the server refused it.
    eventually(|| pki.server.handshakes_failed.load(Ordering::SeqCst) >= 1).await;
    assert_eq!(pki.server.handshakes_ok.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn mtls_client_certificate_is_accepted() {
    let pki = pki().await;
    let c = client(&format!(
        "url_prefix = \"https://127.0.0.1:{}\"\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"\n{}",
        pki.server.port,
        pki.tls_table("client")
    ));
    let resp = send_ok(&c, get("/users")).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"mtls-ok");
    assert_eq!(pki.server.handshakes_ok.load(Ordering::SeqCst), 1);
    assert_eq!(
        pki.server.peers.lock().unwrap().first(),
        Some(&pki.client_cert_der)
    );
}

#[tokio::test]
async fn mtls_client_certificate_of_another_ca_is_rejected() {
    let pki = pki().await;
    let c = client(&format!(
        "url_prefix = \"https://127.0.0.1:{}\"\n{}",
        pki.server.port,
        pki.tls_table("stranger")
    ));
    send_err(&c, get("/users")).await;
    eventually(|| pki.server.handshakes_failed.load(Ordering::SeqCst) >= 1).await;
    assert_eq!(pki.server.handshakes_ok.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn tls_without_ca_file_does_not_trust_the_private_ca() {
    let pki = pki().await;
    let c = client(&format!(
        "url_prefix = \"https://127.0.0.1:{}\"",
        pki.server.port
    ));
    let e = send_err(&c, get("/users")).await;
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(pki.server.handshakes_ok.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn endpoint_keeps_the_tls_name_of_the_url() {
    // api.provisioner.test does not resolve; `endpoint` says where it is, and
    // the certificate is checked against the URL's name.
    let pki = pki().await;
    let port = pki.server.port;
    let c = client(&format!(
        "url_prefix = \"https://api.provisioner.test:{port}\"\nendpoint = \"127.0.0.1:{port}\"\n{}",
        pki.tls_table("client")
    ));
    assert_eq!(send_ok(&c, get("/users")).await.body, b"mtls-ok");
}

#[test]
fn unreadable_or_bad_certificate_files_fail_at_setup() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    std::fs::write(
        dir.path().join("c.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("c.key"), "garbage").unwrap();
    let mut config = config("url_prefix = \"https://127.0.0.1:1\"");
    config.tls = Some(crate::config::TlsConfig {
        ca_file: None,
        client_cert: Some(dir.path().join("c.pem")),
        client_key: Some(dir.path().join("c.key")),
    });
    assert!(matches!(
        HttpClient::new(&crate::assembly::http_settings(&config)),
        Err(HttpSetupError::File { .. })
    ));
    config.tls = Some(crate::config::TlsConfig {
        ca_file: Some(dir.path().join("missing.pem")),
        ..Default::default()
    });
    let e = HttpClient::new(&crate::assembly::http_settings(&config))
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing.pem"), "{e}");
}

// ---------------------------------------------------- 6. failover, endpoint

/// A wiremock server on `listener` (not from wiremock's pool, so that
/// dropping it really closes the port). It closes every connection after its
/// answer: a kept-alive connection to a node that then stops would fail the
/// next call as "connection closed before message completed", which may have
/// reached the node and so is not failed over.
async fn server_on(listener: std::net::TcpListener) -> MockServer {
    let server = MockServer::builder().listener(listener).start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200).insert_header("connection", "close"))
        .mount(&server)
        .await;
    server
}

/// Waits (bounded) until nothing accepts connections on `port` any more.
async fn until_closed(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("port {port} still accepts connections");
}

#[tokio::test]
async fn failover_goes_to_the_next_node_and_back() {
    let port1 = closed_port();
    let node2 = server_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).await;
    let port2 = node2.address().port();
    let c = client(&format!(
        "url_prefix = [\"http://127.0.0.1:{port1}/api\", \"http://127.0.0.1:{port2}/api\"]\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\""
    ));

    // node1 is down: the calls go to node2.
    for _ in 0..3 {
        assert_eq!(send_ok(&c, get("/users?x=1")).await.status, 200);
    }
    let reqs = received(&node2).await;
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].url.path(), "/api/users");
    assert_eq!(reqs[0].url.query(), Some("x=1"));
    assert_eq!(
        header_of(&reqs[0], "authorization"),
        Some(format!("Bearer {BEARER_SECRET}"))
    );

    // node1 comes back: node2 answered last and still does, so it stays first.
    let node1 = server_on(std::net::TcpListener::bind(("127.0.0.1", port1)).unwrap()).await;
    send_ok(&c, get("/users")).await;
    assert_eq!(received(&node2).await.len(), 4);
    assert!(received(&node1).await.is_empty());

    // node2 goes down: the calls go to node1.
    drop(node2);
    until_closed(port2).await;
    for _ in 0..2 {
        assert_eq!(send_ok(&c, get("/users")).await.status, 200);
    }
    let reqs = received(&node1).await;
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].url.path(), "/api/users");
    assert_eq!(
        header_of(&reqs[0], "authorization"),
        Some(format!("Bearer {BEARER_SECRET}"))
    );
}

/// What `tracing` writes while installed with [`capture_logs`].
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }
}

/// Logs of this thread (a `#[tokio::test]` runs its futures on it) until the
/// guard is dropped.
fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn a_password_in_url_prefix_is_sent_but_never_logged_or_shown() {
    let (logs, _guard) = capture_logs();
    let port1 = closed_port();
    let node2 = server_on(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).await;
    let port2 = node2.address().port();
    let c = client(&format!(
        "url_prefix = [\"http://svc:{PREFIX_PASSWORD}@127.0.0.1:{port1}/api\", \"http://svc:{PREFIX_PASSWORD}@127.0.0.1:{port2}/api\"]"
    ));
    assert_eq!(send_ok(&c, get("/users")).await.status, 200);
    // reqwest sends the URL's credentials as Basic authentication.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("svc:{PREFIX_PASSWORD}"));
    let reqs = received(&node2).await;
    assert_eq!(
        header_of(&reqs[0], "authorization"),
        Some(format!("Basic {basic}"))
    );

    let shown = logs.text();
    assert!(shown.contains("failed over"), "{shown}");
    assert!(
        shown.contains(&format!("http://svc:***@127.0.0.1:{port2}/api")),
        "{shown}"
    );
    assert!(!shown.contains(PREFIX_PASSWORD), "{shown}");

    // No node answers: the error shows no password either (`send_err` checks).
    drop(node2);
    until_closed(port2).await;
    let e = send_err(&c, get("/users")).await;
    assert_eq!(e.class, FailureClass::Transient);
    assert!(!logs.text().contains(PREFIX_PASSWORD), "{}", logs.text());

    // A url_prefix that does not parse is named without its password.
    let mut bad = config(&format!("url_prefix = \"http://127.0.0.1:{port1}\""));
    bad.url_prefixes = vec![format!("http://svc:{PREFIX_PASSWORD}@[::1/api")];
    let e = match HttpClient::new(&crate::assembly::http_settings(&bad)) {
        Ok(_) => panic!("an unparsable url_prefix was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("svc:***@"), "{e}");
    assert!(!e.contains(PREFIX_PASSWORD), "{e}");
}

#[tokio::test]
async fn no_node_reachable_is_transient_and_names_no_secret() {
    let (p1, p2) = (closed_port(), closed_port());
    let c = client(&format!(
        "url_prefix = [\"http://127.0.0.1:{p1}\", \"http://127.0.0.1:{p2}\"]\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\""
    ));
    let e = send_err(&c, get("/users")).await;
    assert_eq!(e.class, FailureClass::Transient);
    assert_eq!(e.status, None);
}

#[tokio::test]
async fn a_node_that_answers_with_an_error_is_not_failed_over() {
    // A 503 is an answer: the adapter decides, the next node is not asked.
    let node1 = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&node1)
        .await;
    let node2 = ok_server().await;
    let c = client(&format!(
        "url_prefix = [\"{}\", \"{}\"]",
        node1.uri(),
        node2.uri()
    ));
    assert_eq!(send_ok(&c, get("/users")).await.status, 503);
    assert!(received(&node2).await.is_empty());
}

#[tokio::test]
async fn endpoint_connects_there_and_keeps_the_url_host() {
    let server = ok_server().await;
    let port = server.address().port();
    // The URL names no port: the endpoint's port is used.
    let c = client(&format!(
        "url_prefix = \"http://api.invalid/v2\"\nendpoint = \"127.0.0.1:{port}\""
    ));
    send_ok(&c, get("/users")).await;
    // The URL names a port: reqwest's `resolve` keeps the URL's port, so the
    // endpoint's port is not used.
    let c = client(&format!(
        "url_prefix = \"http://api.invalid:{port}/v2\"\nendpoint = \"127.0.0.1:{}\"",
        closed_port()
    ));
    send_ok(&c, get("/users")).await;
    let reqs = received(&server).await;
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].url.path(), "/v2/users");
    assert_eq!(header_of(&reqs[0], "host").as_deref(), Some("api.invalid"));
    assert_eq!(
        header_of(&reqs[1], "host"),
        Some(format!("api.invalid:{port}"))
    );
}

// ------------------------------------------------ 7. safe values and limits

#[tokio::test]
async fn a_response_larger_than_max_response_bytes_is_permanent() {
    let server = MockServer::start().await;
    Mock::given(path("/small"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(64)))
        .mount(&server)
        .await;
    Mock::given(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(65)))
        .mount(&server)
        .await;
    Mock::given(path("/huge"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 1 << 20]))
        .mount(&server)
        .await;
    let c = client(&format!(
        "url_prefix = \"{}\"\nmax_response_bytes = 64",
        server.uri()
    ));
    assert_eq!(send_ok(&c, get("/small")).await.body.len(), 64);
    for p in ["/big", "/huge"] {
        let e = send_err(&c, get(p)).await;
        assert_eq!(e.class, FailureClass::Permanent, "{e:?}");
        assert!(e.message.contains("max_response_bytes"), "{}", e.message);
    }
}

#[tokio::test]
async fn token_and_login_answers_larger_than_max_response_bytes_are_refused() {
    let server = MockServer::start().await;
    let pad = "x".repeat(1 << 20);
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "tok-big", "expires_in": 3600, "pad": pad}),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("tok-{pad}")))
        .mount(&server)
        .await;
    // Exactly at the limit: accepted.
    Mock::given(method("POST"))
        .and(path("/login-at-limit"))
        .respond_with(ResponseTemplate::new(200).set_body_string("y".repeat(256)))
        .mount(&server)
        .await;
    // A refusal is judged by its status, however large its page.
    Mock::given(method("POST"))
        .and(path("/busy/token"))
        .respond_with(ResponseTemplate::new(503).set_body_string(pad.clone()))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let uri = server.uri();
    let with_auth = |auth: String| {
        client(&format!(
            "url_prefix = \"{uri}\"\nmax_response_bytes = 256\n[auth]\n{auth}"
        ))
    };
    let oauth2 = |token_path: &str| {
        format!("scheme = \"oauth2\"\ntoken_url = \"{uri}{token_path}\"\nclient_id = \"p\"\nclient_secret = \"{OAUTH2_SECRET}\"")
    };
    let login = |login_path: &str| {
        format!("scheme = \"login\"\nlogin_url = \"{uri}{login_path}\"\nusername = \"u\"\nclient_secret = \"{LOGIN_SECRET}\"")
    };

    for (auth, answer) in [
        (oauth2("/oauth/token"), "token"),
        (login("/login"), "login"),
    ] {
        let e = send_err(&with_auth(auth), get("/users")).await;
        assert_eq!(e.class, FailureClass::Permanent, "{e:?}");
        assert!(e.message.contains("max_response_bytes"), "{}", e.message);
        assert!(e.message.contains(answer), "{}", e.message);
        assert!(!e.message.contains("xxxx"), "{}", e.message);
    }
    assert!(received_on(&server, "/users").await.is_empty());

    let e = send_err(&with_auth(oauth2("/busy/token")), get("/users")).await;
    assert_eq!(e.class, FailureClass::Transient, "{e:?}");
    assert_eq!(e.status, Some(503));

    send_ok(&with_auth(login("/login-at-limit")), get("/users")).await;
    let api = received_on(&server, "/users").await;
    assert_eq!(
        header_of(&api[0], "authorization"),
        Some(format!("Bearer {}", "y".repeat(256)))
    );
}

#[tokio::test]
async fn a_target_that_hangs_beyond_timeout_s_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let c = client(&format!(
        "url_prefix = \"{}\"\ntimeout_s = 1\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"",
        server.uri()
    ));
    let started = Instant::now();
    let e = send_err(&c, get("/users")).await;
    assert_eq!(e.class, FailureClass::Transient);
    assert!(e.message.contains("timed out"), "{}", e.message);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_node_that_hangs_is_skipped_like_one_that_is_down() {
    let slow = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&slow)
        .await;
    let fast = ok_server().await;
    let c = client(&format!(
        "url_prefix = [\"{}\", \"{}\"]\ntimeout_s = 1",
        slow.uri(),
        fast.uri()
    ));
    assert_eq!(send_ok(&c, get("/users")).await.status, 200);
    assert_eq!(received(&fast).await.len(), 1);
}

#[tokio::test]
async fn a_link_to_another_origin_is_refused_before_anything_is_sent() {
    let server = ok_server().await;
    let other = ok_server().await;
    let c = client(&format!(
        "url_prefix = \"{}/api\"\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"",
        server.uri()
    ));
    // Same origin, absolute (a paging `next` link): followed.
    send_ok(&c, get(&format!("{}/api/users?page=2", server.uri()))).await;
    let reqs = received(&server).await;
    assert_eq!(reqs[0].url.path(), "/api/users");
    assert_eq!(reqs[0].url.query(), Some("page=2"));

    // Another host, or the same host on another port: refused, permanently.
    let port = server.address().port();
    for link in [
        format!("{}/api/users?page=2", other.uri()),
        format!("http://localhost:{port}/api/users?page=2"),
        format!("https://127.0.0.1:{port}/api/users?page=2"),
    ] {
        let e = send_err(&c, get(&link)).await;
        assert_eq!(e.class, FailureClass::Permanent, "{link}: {e:?}");
        assert!(e.message.contains("another origin"), "{}", e.message);
    }
    assert!(received(&other).await.is_empty());
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_path_cannot_move_the_request_to_another_host() {
    let server = ok_server().await;
    let other = ok_server().await;
    let c = client(&format!(
        "url_prefix = \"{}\"\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"",
        server.uri()
    ));
    // Pasted after url_prefix, `@host` would make the prefix a user name.
    for p in [
        format!("@{}/steal", other.address()),
        format!(".{}/steal", other.address()),
    ] {
        let e = send_err(&c, get(&p)).await;
        assert_eq!(e.class, FailureClass::Permanent, "{p}: {e:?}");
    }
    assert!(received(&other).await.is_empty());
    assert!(received(&server).await.is_empty());
    // A bare query (what a `next` link on url_prefix itself becomes) is fine.
    send_ok(&c, get("?page=2")).await;
    let reqs = received(&server).await;
    assert_eq!(reqs[0].url.path(), "/");
    assert_eq!(reqs[0].url.query(), Some("page=2"));
}

#[tokio::test]
async fn on_behalf_of_carries_the_actor() {
    let server = ok_server().await;
    let c = client(&format!(
        "url_prefix = \"{}\"\non_behalf_of = {{ header = \"X-Caller-Id\", value = \"choria={{{{ actor }}}}\" }}",
        server.uri()
    ));
    let mut with_actor = get("/users");
    with_actor.actor = Some("alice".into());
    send_ok(&c, with_actor).await;
    send_ok(&c, get("/users")).await;
    let reqs = received(&server).await;
    assert_eq!(
        header_of(&reqs[0], "x-caller-id").as_deref(),
        Some("choria=alice")
    );
    assert_eq!(header_of(&reqs[1], "x-caller-id"), None);
}

#[tokio::test]
async fn an_actor_cannot_inject_headers() {
    let server = ok_server().await;
    let c = client(&format!(
        "url_prefix = \"{}\"\non_behalf_of = {{ header = \"X-Caller-Id\", value = \"choria={{{{ actor }}}}\" }}",
        server.uri()
    ));
    let mut evil = get("/users");
    evil.actor = Some("alice\r\nX-Admin: true".into());
    let e = send_err(&c, evil).await;
    // The event is at fault: retrying it cannot help (docs/operations.md).
    assert_eq!(e.class, FailureClass::Permanent, "{e:?}");
    assert!(received(&server).await.is_empty());
}

// -------------------------------------------------------- 8. no secret shows

#[test]
fn no_configuration_shows_a_secret() {
    let schemes = [
        format!("scheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\""),
        format!("scheme = \"header\"\nheader = \"X-Api-Key\"\nclient_secret = \"{API_KEY_SECRET}\""),
        format!("scheme = \"basic\"\nusername = \"Aladdin\"\nclient_secret = \"{BASIC_SECRET}\""),
        format!("scheme = \"oauth2\"\ntoken_url = \"https://idp.example.com/token\"\nclient_id = \"p\"\nclient_secret = \"{OAUTH2_SECRET}\""),
        format!("scheme = \"login\"\nlogin_url = \"https://api.example.com/login\"\nusername = \"u\"\nclient_secret = \"{LOGIN_SECRET}\""),
        format!("scheme = \"jwt\"\nissuer = \"app\"\nqsh = true\nclient_secret = \"{JWT_SECRET}\""),
    ];
    for auth in &schemes {
        let config = config(&format!(
            "url_prefix = \"https://api.example.com\"\n[auth]\n{auth}"
        ));
        let shown = format!("{config:?} {config:#?} {:?}", config.auth);
        for s in SECRETS {
            assert!(!shown.contains(s), "{s} shows in the Debug of {auth}");
        }
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}

#[test]
fn config_errors_do_not_show_a_secret() {
    // A secret in a wrong place (a typo'd key, a scheme that does not take it).
    for text in [
        format!("kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n[auth]\nscheme = \"bearer\"\nclient_secret = \"{BEARER_SECRET}\"\nusername = \"u\"\n{REST}"),
        format!("kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n[auth]\nscheme = \"bogus\"\nclient_secret = \"{BEARER_SECRET}\"\n{REST}"),
    ] {
        let mut errors = Vec::new();
        assert!(parse_provisioner(Path::new("t.toml"), &text, &mut errors).is_none());
        assert!(!errors.is_empty());
        for e in &errors {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(BEARER_SECRET), "{shown}");
        }
    }
}

// ----------------------------------------------------------- the examples

/// Loads `provisioners/examples/<file>` with the environment it needs.
fn example(file: &str, env: &[(&str, &str)]) -> ProvisionerConfig {
    for (k, v) in env {
        // Each example reads its own variables, so parallel tests do not race.
        std::env::set_var(k, v);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("provisioners/examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut errors = Vec::new();
    let config = parse_provisioner(&path, &text, &mut errors);
    assert!(errors.is_empty(), "{file}: {errors:#?}");
    let config = config.unwrap();
    let shown = format!("{config:?}");
    for (_, v) in env {
        assert!(!shown.contains(v), "{file}: a secret shows in its Debug");
    }
    assert_eq!(config.kind.name(), "rest");
    HttpClient::new(&crate::assembly::http_settings(&config)).unwrap();
    config
}

#[test]
fn example_zoom_jwt() {
    let c = example(
        "zoom-jwt.toml",
        &[("ZOOM_API_SECRET", "zoom-example-secret-1")],
    );
    assert_eq!(c.auth.scheme(), "jwt");
}

#[test]
fn example_login_token() {
    let c = example(
        "login-token.toml",
        &[("SALT_API_PASSWORD", "salt-example-secret-2")],
    );
    assert_eq!(c.auth.scheme(), "login");
    match &c.auth {
        crate::config::auth::AuthConfig::Login {
            token_header,
            token_prefix,
            ..
        } => {
            assert_eq!(token_header, "X-Auth-Token");
            assert_eq!(token_prefix, "");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn example_gluster() {
    let c = example(
        "gluster.toml",
        &[("GLUSTER_APP_SECRET", "gluster-example-secret-3")],
    );
    match &c.auth {
        crate::config::auth::AuthConfig::Jwt { qsh, .. } => assert!(qsh),
        other => panic!("{other:?}"),
    }
    assert!(
        c.url_prefixes.len() > 1,
        "the Gluster example shows failover over its nodes"
    );
}

#[test]
fn example_oauth2() {
    let c = example(
        "oauth2.toml",
        &[("DIRECTORY_CLIENT_SECRET", "oauth2-example-secret-4")],
    );
    assert_eq!(c.auth.scheme(), "oauth2");
}

/// The in-place join gives exactly the URL a full parse of prefix + path
/// gives, for every kind of path a template can render.
#[test]
fn joining_in_place_equals_a_full_parse() {
    let prefixes = [
        "https://api.example.com",
        "https://api.example.com/",
        "https://api.example.com/v2",
        "https://api.example.com/v2/",
        "http://127.0.0.1:8080/scim/v2",
        "https://bücher.example/api",
    ];
    let paths = [
        "/users",
        "/users/jdoe%40example.com",
        "/users/j doe",
        "/users/j%20doe?attributes=id&x=a b",
        "/users?",
        "/users?filter=userName%20eq%20%22a%22",
        "/users/../groups/./1",
        "//other.example/x",
        "/users/ü/ø?q=é",
        "/users/%2e%2e/admin",
        "/a\\b",
        "/",
    ];
    for prefix in prefixes {
        let prefix_url = url::Url::parse(prefix).unwrap();
        for path in paths {
            let full = url::Url::parse(&format!(
                "{}{path}",
                prefix_url.as_str().trim_end_matches('/')
            ))
            .unwrap();
            let fast = super::joined_in_place(&prefix_url, path).unwrap();
            assert_eq!(fast.as_str(), full.as_str(), "{prefix} + {path}");
        }
    }
    let prefix_url = url::Url::parse("https://h.example/api").unwrap();
    for left_to_a_full_parse in ["users", "@evil.example/x", "/x#frag"] {
        assert!(super::joined_in_place(&prefix_url, left_to_a_full_parse).is_none());
    }
}
