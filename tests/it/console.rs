//! The console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, fantoccini) against the whole service, with
//! events flowing through the real broker into the mock target. Skipped,
//! with a message, only where Chromium or chromedriver is not installed
//! (`scripts/test.sh` installs them).

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::admin::{free_port, Service};
use crate::support::*;

const OPERATOR: (&str, &str) = ("oncall", "op-pass-1");
const READER: (&str, &str) = ("viewer", "read-pass-1");
const HOSTILE: &str = "<script>alert(1)</script>";

/// The worker's `[admin]` credentials: a read token for polling, an
/// operator and a read-only user for the browser.
fn admin_credentials() -> String {
    let hash = |p: &str| provisioner::admin::auth::hash_password(p).unwrap();
    format!(
        "[[admin.tokens]]\nrole = \"read\"\ntoken = \"reader-token\"\n\n\
         [[admin.users]]\nname = \"{}\"\nrole = \"operate\"\npassword_hash = \"{}\"\n\n\
         [[admin.users]]\nname = \"{}\"\nrole = \"read\"\npassword_hash = \"{}\"\n",
        OPERATOR.0,
        hash(OPERATOR.1),
        READER.0,
        hash(READER.1)
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// chromedriver on a free port, and the Chromium it starts.
struct Browser {
    chromium: PathBuf,
    url: String,
    _driver: tokio::process::Child,
    profiles: Vec<tempfile::TempDir>,
}

impl Browser {
    /// None (and a message) where Chromium or chromedriver is missing.
    async fn start() -> Option<Browser> {
        let chromium = on_path("chromium").or_else(|| on_path("chromium-browser"));
        let (Some(chromium), Some(driver)) = (chromium, on_path("chromedriver")) else {
            eprintln!(
                "SKIPPED: the console's browser tests need Chromium and chromedriver \
                 (apt-get install chromium chromium-driver; scripts/test.sh does it)"
            );
            return None;
        };
        let port = free_port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let probe = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Ok(r) = probe.get(format!("{url}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(Browser {
            chromium,
            url,
            _driver: child,
            profiles: Vec::new(),
        })
    }

    /// A new browser window with its own fresh profile, `width` x `height`.
    async fn session(&mut self, width: u32, height: u32) -> Client {
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            }),
        );
        self.profiles.push(profile);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("no browser session: {e}"));
        client.set_window_size(width, height).await.unwrap();
        client
    }
}

/// `base` with the user's credentials in it: the browser sends them as
/// basic authentication and keeps them for the site.
fn signed_in(base: &str, (user, password): (&str, &str)) -> String {
    base.replacen("http://", &format!("http://{user}:{password}@"), 1)
}

async fn text_of(c: &Client, css: &str) -> String {
    // The overview's live refresh may replace an element between finding
    // and reading it: then it is found again.
    for _ in 0..20 {
        let found = c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match found.text().await {
            Ok(text) => return text,
            Err(e) if e.to_string().contains("stale") => continue,
            Err(e) => panic!("{css}: {e}"),
        }
    }
    panic!("{css} kept going stale")
}

/// Reloads `url` until the element at `css` has text for which `check`
/// holds, and returns that text.
async fn until_text(c: &Client, url: &str, css: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        c.goto(url).await.unwrap();
        if let Ok(e) = c.find(Locator::Css(css)).await {
            let text = e.text().await.unwrap_or_default();
            if check(&text) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} on {url} still shows `{text}`"
            );
        } else {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{css} not on {url}:\n{}",
                c.source().await.unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `/v1/events` until `n` rows match `query`.
async fn journal_rows(base: &str, query: &str, n: usize) -> Vec<Value> {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let page: Value = client
            .get(format!("{base}/v1/events?{query}&limit=1000"))
            .bearer_auth("reader-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = page["events"].as_array().cloned().unwrap_or_default();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {rows:?} for {query}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The service with the first events through the broker: three accounts,
/// one with a hostile subject, and one the target refuses (parked).
async fn start_with_events() -> Service {
    let svc = Service::start(&admin_credentials(), "path = \"journal.sqlite\"", "").await;
    svc.mock.fail_matching("GET", "/users/blocked", 400);
    let mut events: Vec<Value> = (0..3)
        .map(|i| {
            let mut e = add(
                USERS,
                &format!("cw{i}"),
                &format!("cw{i}@example.edu"),
                "C",
                "W",
            );
            e["id"] = json!(format!("ev-cw{i}"));
            e
        })
        .collect();
    let mut hostile = add(USERS, HOSTILE, "hostile@example.edu", "H", "S");
    hostile["id"] = json!("ev-hostile");
    events.push(hostile);
    let mut blocked = add(USERS, "blocked", "blocked@example.edu", "B", "B");
    blocked["id"] = json!("ev-blocked");
    events.push(blocked);
    svc.publish(&events).await;
    journal_rows(&svc.base, "provisioner=example", 5).await;
    svc
}

/// A form's CSRF token, as the page gives it to `who`.
async fn csrf_of(base: &str, who: (&str, &str)) -> String {
    let page = reqwest::Client::new()
        .get(format!("{base}/dead-letters"))
        .basic_auth(who.0, Some(who.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The page header carries it for the viewer, forms or not.
    let marker = "name=\"csrf-token\" content=\"";
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf token in {page}"))
        + marker.len();
    page[start..start + 64].to_string()
}

async fn post_form(
    base: &str,
    path: &str,
    who: (&str, &str),
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client
        .post(format!("{base}{path}"))
        .basic_auth(who.0, Some(who.1))
        .form(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The console in Chromium: the overview shows the events that went
/// through the broker; a filter finds one subject's outcome and its page
/// shows the calls; a hostile subject is text; pause holds new events in
/// the queue and resume applies them; a dead letter is requeued and then
/// applied; the guard override asks first; forms without a valid token,
/// from another site or from a read user are refused (403), and a read
/// user sees no action button; the overview fits a phone's width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_browser_shows_finds_pauses_and_requeues() {
    let _broker = shared().await;
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let svc = start_with_events().await;
    let base = svc.base.clone();
    let op = browser.session(1280, 900).await;
    op.goto(&signed_in(&base, OPERATOR)).await.unwrap();

    // The overview: the provisioner consuming, its events and the parked one.
    let card = "section[data-provisioner=\"example\"]";
    assert_eq!(
        text_of(&op, &format!("{card} [data-state]")).await,
        "consuming"
    );
    let counted = until_text(
        &op,
        &format!("{base}/"),
        &format!("{card} [data-field=\"events-hour\"]"),
        |t| t.starts_with("5 "),
    )
    .await;
    assert!(counted.contains("/min"), "{counted}");
    until_text(
        &op,
        &format!("{base}/"),
        &format!("{card} [data-field=\"dead-letters\"]"),
        |t| t == "1",
    )
    .await;
    assert!(
        text_of(&op, ".who").await.contains("oncall"),
        "signed in as the operator"
    );
    // The script (allowed by the page's policy) refreshes the overview in
    // place: its time stamp moves on without a navigation.
    let before = text_of(&op, "#updated").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while text_of(&op, "#updated").await == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the overview never refreshed itself"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A filter finds one subject's outcome; its row opens the event.
    op.goto(&format!("{base}/events")).await.unwrap();
    let subject = op.find(Locator::Id("f-subject")).await.unwrap();
    subject.send_keys("CW1").await.unwrap();
    op.find(Locator::Css("form.filters button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = op
        .find_all(Locator::Css("table.events tbody tr[data-id]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{}", op.source().await.unwrap());
    let row = rows[0].text().await.unwrap();
    assert!(
        row.contains("cw1") && row.contains("applied"),
        "the outcome of cw1: {row}"
    );
    op.find(Locator::Css("table.events a.row-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        text_of(&op, "h1").await.contains("applied"),
        "the event page"
    );
    let calls: Vec<String> = {
        let mut out = Vec::new();
        for r in op
            .find_all(Locator::Css("#h-calls ~ .scroll tbody tr"))
            .await
            .unwrap()
        {
            out.push(r.text().await.unwrap());
        }
        out
    };
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("GET")
            && calls[0].contains("/users/{{ match }}")
            && calls[0].contains("404"),
        "{calls:?}"
    );
    assert!(
        calls[1].contains("POST") && calls[1].contains("201"),
        "{calls:?}"
    );

    // A hostile subject is shown as text, never run.
    op.goto(&format!("{base}/events?provisioner=example"))
        .await
        .unwrap();
    let mut shown = Vec::new();
    for cell in op.find_all(Locator::Css("td.subject a")).await.unwrap() {
        shown.push(cell.text().await.unwrap());
    }
    assert!(shown.iter().any(|s| s == HOSTILE), "{shown:?}");
    assert!(
        op.get_alert_text().await.is_err(),
        "no script of a subject ran"
    );
    assert!(op
        .source()
        .await
        .unwrap()
        .contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    op.find(Locator::LinkText(HOSTILE))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&op, "h1 .subject").await, HOSTILE);
    assert!(text_of(&op, "#h-history ~ h3").await.contains("example"));
    assert!(op.find(Locator::Id("explain")).await.is_ok());
    assert!(op.get_alert_text().await.is_err());

    // Pause: new events stay in the queue; resume: they are applied.
    op.goto(&format!("{base}/")).await.unwrap();
    op.find(Locator::Css(&format!("{card} button[data-action=pause]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        text_of(&op, &format!("{card} [data-state]")).await,
        "paused"
    );
    let held: Vec<Value> = (0..3)
        .map(|i| {
            add(
                USERS,
                &format!("pz{i}"),
                &format!("pz{i}@example.edu"),
                "P",
                "Z",
            )
        })
        .collect();
    svc.publish(&held).await;
    until_text(
        &op,
        &format!("{base}/"),
        &format!("{card} [data-field=\"queued\"]"),
        |t| t == "3",
    )
    .await;
    assert!(
        svc.mock.user("pz0@example.edu").is_none(),
        "nothing applied while paused"
    );
    op.find(Locator::Css(&format!("{card} button[data-action=resume]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        svc.mock
            .wait_until(DEADLINE, |m| (0..3)
                .all(|i| m.user(&format!("pz{i}@example.edu")).is_some()))
            .await,
        "resumed and applied"
    );
    until_text(
        &op,
        &format!("{base}/"),
        &format!("{card} [data-state]"),
        |t| t == "consuming",
    )
    .await;

    // Forms without this console's token, or sent from another site, are
    // refused, and change nothing.
    let (status, _) = post_form(
        &base,
        "/provisioners/example/pause",
        OPERATOR,
        &[("csrf", "0000")],
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post_form(&base, "/provisioners/example/pause", OPERATOR, &[], &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let bare = reqwest::Client::new()
        .post(format!("{base}/provisioners/example/pause"))
        .basic_auth(OPERATOR.0, Some(OPERATOR.1))
        .send()
        .await
        .unwrap();
    assert_eq!(
        bare.status(),
        StatusCode::FORBIDDEN,
        "a POST without a body"
    );
    let token = csrf_of(&base, OPERATOR).await;
    let (status, _) = post_form(
        &base,
        "/provisioners/example/pause",
        OPERATOR,
        &[("csrf", &token)],
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = post_form(
        &base,
        "/provisioners/example/pause",
        READER,
        &[("csrf", &token)],
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another user's token");
    assert_eq!(
        text_of(&op, &format!("{card} [data-state]")).await,
        "consuming"
    );

    // The guard override asks first: nothing moves without the confirmation.
    let (status, page) = post_form(
        &base,
        "/dead-letters/example/requeue",
        OPERATOR,
        &[("csrf", &token), ("allow_removals", "yes")],
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("name=\"confirmed\" value=\"yes\""), "{page}");
    until_text(
        &op,
        &format!("{base}/"),
        &format!("{card} [data-field=\"dead-letters\"]"),
        |t| t == "1",
    )
    .await;

    // The parked event, requeued once the target accepts it, is applied.
    svc.mock.clear_faults();
    op.goto(&format!("{base}/dead-letters?provisioner=example"))
        .await
        .unwrap();
    let letter = text_of(&op, "section[data-provisioner=\"example\"] tbody tr").await;
    assert!(
        letter.contains("ev-blocked") && letter.contains("400"),
        "{letter}"
    );
    op.find(Locator::Css("button[data-action=requeue-one]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(
        text_of(&op, ".notice-ok").await.contains("1 letter(s)"),
        "the requeue is confirmed"
    );
    assert!(
        svc.mock
            .wait_until(DEADLINE, |m| m.user("blocked@example.edu").is_some())
            .await,
        "the requeued event was applied"
    );
    let rows = journal_rows(&base, "event_id=ev-blocked&result=applied", 1).await;
    assert_eq!(rows[0]["subject"], "blocked");

    // A read user sees everything, and no action.
    let reader = browser.session(1280, 900).await;
    reader.goto(&signed_in(&base, READER)).await.unwrap();
    assert_eq!(
        text_of(&reader, &format!("{card} [data-state]")).await,
        "consuming"
    );
    for path in ["/", "/dead-letters", "/events", "/subject"] {
        reader.goto(&format!("{base}{path}")).await.unwrap();
        let forms = reader
            .find_all(Locator::Css("form[method=post], button[data-action]"))
            .await
            .unwrap();
        assert!(forms.is_empty(), "{path} offers a read user actions");
    }
    let reader_token = csrf_of(&base, READER).await;
    for path in [
        "/provisioners/example/pause",
        "/provisioners/example/resume",
        "/dead-letters/example/requeue",
    ] {
        let (status, body) = post_form(&base, path, READER, &[("csrf", &reader_token)], &[]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }

    // Readable on a phone: nothing wider than the screen.
    op.set_window_size(390, 844).await.unwrap();
    for path in ["/", "/events", "/dead-letters"] {
        op.goto(&format!("{base}{path}")).await.unwrap();
        let fits = op
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(fits, json!(true), "{path} is wider than a phone");
    }

    // Every page forbids inline and foreign scripts.
    let r = reqwest::Client::new()
        .get(format!("{base}/"))
        .basic_auth(READER.0, Some(READER.1))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );

    op.close().await.unwrap();
    reader.close().await.unwrap();
    svc.cleanup().await;
}

/// Regenerates docs/console-overview.png and docs/console-event.png:
/// `cargo test --test it console::screenshots -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the screenshots under docs/; run on purpose"]
async fn screenshots() {
    let _broker = shared().await;
    let Some(mut browser) = Browser::start().await else {
        return;
    };
    let svc = start_with_events().await;
    let base = svc.base.clone();
    let more: Vec<Value> = (0..12)
        .map(|i| {
            add(
                USERS,
                &format!("user{i}"),
                &format!("user{i}@example.edu"),
                "Ada",
                "Lovelace",
            )
        })
        .collect();
    svc.publish(&more).await;
    journal_rows(&base, "provisioner=example", 17).await;
    let c = browser.session(1280, 560).await;
    c.goto(&signed_in(&base, OPERATOR)).await.unwrap();
    until_text(
        &c,
        &format!("{base}/"),
        "[data-field=\"dead-letters\"]",
        |t| t == "1",
    )
    .await;
    let docs = repo_path("docs");
    std::fs::write(
        docs.join("console-overview.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    let rows = journal_rows(&base, "subject=cw1", 1).await;
    let id = rows[0]["id"].as_i64().unwrap();
    c.set_window_size(1280, 1040).await.unwrap();
    c.goto(&format!("{base}/events/{id}")).await.unwrap();
    std::fs::write(
        docs.join("console-event.png"),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
    c.close().await.unwrap();
    svc.cleanup().await;
}

/// The subject page explains a subject on a provisioner's target: its
/// account, memberships, ownership and the plan of an `add`, every value
/// escaped, and the target sees reads only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subject_page_shows_the_remote_state_and_plan_and_writes_nothing() {
    let mut svc = start_with_events().await;
    let writes = |svc: &Service| {
        svc.mock
            .requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .count()
    };
    let before = writes(&svc);
    let attributes = r#"{"mail": ["cw1@example.edu"], "givenName": ["Other"], "sn": ["W"]}"#;
    let page = reqwest::Client::new()
        .get(subject_page(
            &svc.base,
            &[
                ("subject", "cw1"),
                ("provisioner", "example"),
                ("attributes", attributes),
            ],
        ))
        .basic_auth(READER.0, Some(READER.1))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        svc.mock
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.raw_body.contains("cw1@example.edu")),
        "cw1 was created"
    );
    assert!(
        html.contains("present, ID u-") && html.contains("not in step"),
        "account state missing:\n{html}"
    );
    assert!(
        html.contains("would update account u-"),
        "plan missing:\n{html}"
    );
    // The attributes come back in the form, escaped.
    assert!(
        html.contains("&quot;cw1@example.edu&quot;") || html.contains("&#34;cw1@example.edu&#34;"),
        "attributes not echoed escaped:\n{html}"
    );
    assert_eq!(writes(&svc), before, "explaining wrote to the target");

    // A hostile subject is text here too, and an unknown provisioner says so.
    let html = reqwest::Client::new()
        .get(subject_page(
            &svc.base,
            &[("subject", HOSTILE), ("provisioner", "nosuch")],
        ))
        .basic_auth(READER.0, Some(READER.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains(HOSTILE), "unescaped subject");
    assert!(html.contains("no provisioner `nosuch`"), "{html}");
    svc.stop().await;
}

/// The subject page's address with `query`, encoded.
fn subject_page(base: &str, query: &[(&str, &str)]) -> url::Url {
    let mut url = url::Url::parse(&format!("{base}/subject")).unwrap();
    url.query_pairs_mut().extend_pairs(query);
    url
}
