use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::*;
use crate::config::auth::from_toml as validate;

#[test]
fn qsh_follows_the_gluster_examples() {
    // The examples of docs/auth.md: "GET\n/v1/volumes\nstatus=1" and
    // "POST\n/v1/volumes/gv1/start\n{"force": true}"
    let get = query_string_hash("GET", "/v1/volumes", Some("status=1"), None);
    assert_eq!(
        get,
        hex::encode(Sha256::digest(b"GET\n/v1/volumes\nstatus=1"))
    );
    let post = query_string_hash(
        "POST",
        "/v1/volumes/gv1/start",
        None,
        Some(br#"{"force": true}"#),
    );
    assert_eq!(
        post,
        hex::encode(Sha256::digest(
            b"POST\n/v1/volumes/gv1/start\n{\"force\": true}"
        ))
    );
    let bare = query_string_hash("get", "/v1/volumes", Some(""), Some(b""));
    assert_eq!(bare, hex::encode(Sha256::digest(b"GET\n/v1/volumes")));
}

#[test]
fn qsh_puts_the_query_before_the_body() {
    let both = query_string_hash("PUT", "/v1/volumes/gv1", Some("force=1"), Some(b"{}"));
    assert_eq!(
        both,
        hex::encode(Sha256::digest(b"PUT\n/v1/volumes/gv1\nforce=1\n{}"))
    );
    // The digests of the seed's examples, written out (sha256sum), so that
    // the test does not only compare sha2 with itself.
    assert_eq!(
        query_string_hash("GET", "/v1/volumes", None, None),
        "8746af3d9024df654be2f2e3583b7e44d781f85a6c3065dc6bfe65407020f4ac"
    );
    assert_eq!(
        query_string_hash("GET", "/v1/volumes", Some("status=1"), None),
        "1d26241428b8793fab6edbebfa11e65bd3a3455d4aa59438cdee79fba0a000c8"
    );
    assert_eq!(
        query_string_hash(
            "POST",
            "/v1/volumes/gv1/start",
            None,
            Some(br#"{"force": true}"#)
        ),
        "006279b763c3a7d133cf2b8140c1bdec28c5431b30e817817a2119f1cf0dc07a"
    );
}

// ------------------------------------------------------------ token caching

impl Authenticator {
    /// Replaces the clock that decides when a token is stale.
    fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }
}

/// A clock the test moves by hand.
#[derive(Clone)]
struct ManualClock {
    start: Instant,
    offset_s: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            offset_s: Arc::new(AtomicU64::new(0)),
        }
    }
    fn set(&self, seconds: u64) {
        self.offset_s.store(seconds, Ordering::SeqCst);
    }
    fn clock(&self) -> Clock {
        let me = self.clone();
        Arc::new(move || me.start + Duration::from_secs(me.offset_s.load(Ordering::SeqCst)))
    }
}

/// Answers `tok-1`, `tok-2`, ... in turn, as JSON (`oauth2`) or plain text.
struct Tokens {
    count: AtomicUsize,
    expires_in: Option<u64>,
    plain: bool,
    delay: Duration,
}

impl Tokens {
    fn json(expires_in: Option<u64>) -> Self {
        Tokens {
            count: AtomicUsize::new(0),
            expires_in,
            plain: false,
            delay: Duration::ZERO,
        }
    }
    fn plain() -> Self {
        Tokens {
            count: AtomicUsize::new(0),
            expires_in: None,
            plain: true,
            delay: Duration::ZERO,
        }
    }
}

impl Respond for Tokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("tok-{n}");
        let t = if self.plain {
            ResponseTemplate::new(200).set_body_string(format!("{token}\n"))
        } else {
            let mut body = serde_json::json!({"access_token": token, "token_type": "Bearer"});
            if let Some(e) = self.expires_in {
                body["expires_in"] = e.into();
            }
            ResponseTemplate::new(200).set_body_json(body)
        };
        t.set_delay(self.delay)
    }
}

const CLIENT_SECRET: &str = "oauth-client-secret-Zq81";

/// The response cap of these authenticators (`max_response_bytes`).
const CAP: usize = 1 << 20;

fn oauth2(server: &MockServer, scope: Option<&str>) -> AuthConfig {
    AuthConfig::OAuth2 {
        token_url: format!("{}/oauth/token", server.uri()),
        client_id: "provisioner".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        scope: scope.map(str::to_string),
    }
}

fn parts<'a>(m: &'a Method, url: &'a url::Url) -> RequestParts<'a> {
    RequestParts {
        method: m,
        url,
        body: None,
    }
}

async fn authorization(auth: &Authenticator) -> String {
    let url = url::Url::parse("https://api.example.com/v2/users").unwrap();
    let (headers, _) = auth.headers_for(&parts(&Method::GET, &url)).await.unwrap();
    assert_eq!(headers.len(), 1, "{headers:?}");
    assert_eq!(headers[0].0, AUTHORIZATION);
    headers[0].1.to_str().unwrap().to_string()
}

async fn token_requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

#[tokio::test]
async fn oauth2_token_request_is_client_credentials_with_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(Tokens::json(Some(3600)))
        .mount(&server)
        .await;
    let auth = Authenticator::new(
        &oauth2(&server, Some("users:write groups:write")),
        reqwest::Client::new(),
        CAP,
    );
    assert_eq!(authorization(&auth).await, "Bearer tok-1");

    let reqs = token_requests(&server).await;
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(
        r.headers.get("content-type").unwrap(),
        "application/x-www-form-urlencoded"
    );
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("provisioner:{CLIENT_SECRET}"));
    assert_eq!(
        r.headers.get("authorization").unwrap().to_str().unwrap(),
        format!("Basic {basic}")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&r.body).into_owned().collect();
    assert_eq!(
        form,
        vec![
            ("grant_type".to_string(), "client_credentials".to_string()),
            ("scope".to_string(), "users:write groups:write".to_string())
        ]
    );
    // The secret travels in the Authorization header only, never in the body.
    assert!(!String::from_utf8_lossy(&r.body).contains(CLIENT_SECRET));
}

#[tokio::test]
async fn oauth2_without_scope_sends_only_the_grant_type() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Tokens::json(Some(3600)))
        .mount(&server)
        .await;
    let auth = Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP);
    authorization(&auth).await;
    let reqs = token_requests(&server).await;
    assert_eq!(
        String::from_utf8_lossy(&reqs[0].body),
        "grant_type=client_credentials"
    );
}

#[tokio::test]
async fn oauth2_token_is_reused_until_shortly_before_expires_in() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Tokens::json(Some(3600)))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let auth = Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP)
        .with_clock(clock.clock());

    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    for t in [1, 600, 3000, 3540] {
        clock.set(t);
        assert_eq!(authorization(&auth).await, "Bearer tok-1", "at {t} s");
    }
    assert_eq!(token_requests(&server).await.len(), 1);

    // Still one second before the token expires: refreshed already, so that a
    // request never carries a token about to expire on the way.
    clock.set(3599);
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
    assert_eq!(token_requests(&server).await.len(), 2);

    // The new token lives from its own fetch on.
    clock.set(3599 + 3500);
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
    clock.set(3599 + 3599);
    assert_eq!(authorization(&auth).await, "Bearer tok-3");
    assert_eq!(token_requests(&server).await.len(), 3);
}

#[tokio::test]
async fn oauth2_short_lived_token_is_still_reused_for_a_while() {
    // expires_in shorter than the safety margin: the margin shrinks, the token
    // is not fetched anew for every request.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Tokens::json(Some(20)))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let auth = Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP)
        .with_clock(clock.clock());
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    clock.set(5);
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    clock.set(19);
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
}

#[tokio::test]
async fn oauth2_without_expires_in_is_kept_for_an_hour() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Tokens::json(None))
        .mount(&server)
        .await;
    let clock = ManualClock::new();
    let auth = Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP)
        .with_clock(clock.clock());
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    clock.set(3500);
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    clock.set(3600);
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let server = MockServer::start().await;
    let tokens = Tokens {
        delay: Duration::from_millis(200),
        ..Tokens::json(Some(3600))
    };
    Mock::given(method("POST"))
        .respond_with(tokens)
        .mount(&server)
        .await;
    let auth = Arc::new(Authenticator::new(
        &oauth2(&server, None),
        reqwest::Client::new(),
        CAP,
    ));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let auth = auth.clone();
            tokio::spawn(async move { authorization(&auth).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), "Bearer tok-1");
    }
    assert_eq!(token_requests(&server).await.len(), 1);
}

#[tokio::test]
async fn invalidating_a_generation_drops_only_that_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Tokens::json(Some(3600)))
        .mount(&server)
        .await;
    let auth = Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP);
    assert!(auth.can_refresh());
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    auth.invalidate_generation(1).await;
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
    // A late 401 to a request that carried tok-1 leaves tok-2 alone.
    auth.invalidate_generation(1).await;
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
    assert_eq!(token_requests(&server).await.len(), 2);
}

#[tokio::test]
async fn login_token_is_reused_for_token_ttl_s() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(Tokens::plain())
        .mount(&server)
        .await;
    let (config, errors) = validate(&format!(
        "scheme = \"login\"\nlogin_url = \"{}/login\"\nusername = \"svc\"\ntoken_ttl_s = 600\nclient_secret = \"login-pw-Hq2\"",
        server.uri()
    ));
    assert!(errors.is_empty(), "{errors:?}");
    let clock = ManualClock::new();
    let auth = Authenticator::new(&config, reqwest::Client::new(), CAP).with_clock(clock.clock());
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    clock.set(599);
    assert_eq!(authorization(&auth).await, "Bearer tok-1");
    clock.set(600);
    assert_eq!(authorization(&auth).await, "Bearer tok-2");
    assert_eq!(token_requests(&server).await.len(), 2);
}

#[tokio::test]
async fn static_schemes_cannot_refresh() {
    for config in [
        AuthConfig::None,
        AuthConfig::Bearer {
            token: Secret::new("t"),
        },
        AuthConfig::Header {
            header: "X-Api-Key".into(),
            value: Secret::new("t"),
        },
        AuthConfig::Basic {
            username: "u".into(),
            password: Secret::new("t"),
        },
        AuthConfig::Jwt {
            issuer: "i".into(),
            key: Secret::new("k"),
            ttl: Duration::from_secs(60),
            qsh: false,
            claims: serde_json::Map::new(),
        },
    ] {
        let auth = Authenticator::new(&config, reqwest::Client::new(), CAP);
        assert!(!auth.can_refresh(), "{}", config.scheme());
    }
}

#[tokio::test]
async fn token_endpoint_failures_are_classified_and_hide_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .respond_with(ResponseTemplate::new(503).set_body_string(CLIENT_SECRET))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/bad/token"))
        .respond_with(ResponseTemplate::new(400).set_body_string(CLIENT_SECRET))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/odd/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(serde_json::json!({"token": CLIENT_SECRET})),
        )
        .mount(&server)
        .await;
    let url = url::Url::parse("https://api.example.com/x").unwrap();

    let auth = Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP);
    let e = auth
        .headers_for(&parts(&Method::GET, &url))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(e.status, Some(503));
    assert!(!e.message.contains(CLIENT_SECRET), "{}", e.message);

    let mut config = oauth2(&server, None);
    if let AuthConfig::OAuth2 { token_url, .. } = &mut config {
        *token_url = format!("{}/bad/token", server.uri());
    }
    let e = Authenticator::new(&config, reqwest::Client::new(), CAP)
        .headers_for(&parts(&Method::GET, &url))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    assert!(!e.message.contains(CLIENT_SECRET), "{}", e.message);

    if let AuthConfig::OAuth2 { token_url, .. } = &mut config {
        *token_url = format!("{}/odd/token", server.uri());
    }
    let e = Authenticator::new(&config, reqwest::Client::new(), CAP)
        .headers_for(&parts(&Method::GET, &url))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e:?}");
    assert!(e.message.contains("access_token"), "{}", e.message);
    assert!(!e.message.contains(CLIENT_SECRET), "{}", e.message);

    // Nothing listens: transient, and the token URL's query (which may hold
    // credentials) is not repeated.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    if let AuthConfig::OAuth2 { token_url, .. } = &mut config {
        *token_url = format!("http://{closed}/token?key={CLIENT_SECRET}");
    }
    let e = Authenticator::new(&config, reqwest::Client::new(), CAP)
        .headers_for(&parts(&Method::GET, &url))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert!(!e.message.contains(CLIENT_SECRET), "{}", e.message);
}

#[tokio::test]
async fn refused_login_is_permanent_and_hides_the_password() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(ResponseTemplate::new(401).set_body_string("bad password login-pw-Hq2"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/empty"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": {}})))
        .mount(&server)
        .await;
    let url = url::Url::parse("https://api.example.com/x").unwrap();
    for (login, extra, needle) in [
        ("/login", "", "401"),
        ("/empty", "", "no token"),
        ("/json", "token_pointer = \"/data/token\"\n", "/data/token"),
    ] {
        let (config, errors) = validate(&format!(
            "scheme = \"login\"\nlogin_url = \"{}{login}\"\nusername = \"svc\"\n{extra}client_secret = \"login-pw-Hq2\"",
            server.uri()
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let e = Authenticator::new(&config, reqwest::Client::new(), CAP)
            .headers_for(&parts(&Method::GET, &url))
            .await
            .unwrap_err();
        assert!(!e.is_transient(), "{login}: {e:?}");
        assert!(e.message.contains(needle), "{login}: {}", e.message);
        assert!(!e.message.contains("login-pw-Hq2"), "{}", e.message);
    }
}

#[tokio::test]
async fn headers_for_returns_the_generation_of_the_token_it_sends() {
    // A clock that jumps an hour at every reading finds the cached token
    // stale at every look: a second look at the cache would fetch anew, so
    // the generation returned would not be that of the token sent.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Tokens::json(Some(3600)))
        .mount(&server)
        .await;
    let start = Instant::now();
    let readings = Arc::new(AtomicU64::new(0));
    let clock: Clock = {
        let readings = readings.clone();
        Arc::new(move || {
            start + Duration::from_secs(3600 * readings.fetch_add(1, Ordering::SeqCst))
        })
    };
    let auth =
        Authenticator::new(&oauth2(&server, None), reqwest::Client::new(), CAP).with_clock(clock);
    let url = url::Url::parse("https://api.example.com/v2/users").unwrap();
    for _ in 0..3 {
        let (headers, generation) = auth.headers_for(&parts(&Method::GET, &url)).await.unwrap();
        assert_eq!(headers.len(), 1, "{headers:?}");
        // The mock numbers its tokens as the authenticator numbers its fetches.
        assert_eq!(
            headers[0].1.to_str().unwrap(),
            format!("Bearer tok-{generation}")
        );
    }
    // One fetch per request: the token is looked up once.
    assert_eq!(token_requests(&server).await.len(), 3);
}
