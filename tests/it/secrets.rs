//! The worker, run as a process with every auth scheme configured and debug
//! logging, never prints a secret: not in logs, not in errors.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::mock_rest::MockTarget;
use crate::support::*;

const SECRETS: [&str; 7] = [
    "bearer-SECRET-1f3a",
    "header-SECRET-2b4c",
    "basic-SECRET-3c5d",
    "oauth-SECRET-4d6e",
    "login-SECRET-5e7f",
    "jwt-SECRET-6f80",
    "token-SECRET-7091",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_worker_output() {
    let _broker = shared().await;
    let dir = tempfile::tempdir().unwrap();
    // Token endpoints: the issued tokens are secrets too.
    let idp = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": SECRETS[6], "expires_in": 3600})),
        )
        .mount(&idp)
        .await;
    Mock::given(method("POST"))
        .and(path("/login"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": SECRETS[6]})))
        .mount(&idp)
        .await;

    let schemes: Vec<(&str, String)> = vec![
        ("none", String::new()),
        ("bearer", format!("[auth]\nscheme = \"bearer\"\nclient_secret = \"{}\"\n", SECRETS[0])),
        ("header", "[auth]\nscheme = \"header\"\nheader = \"X-Api-Key\"\nclient_secret = { env = \"PROV_TEST_HEADER_SECRET\" }\n".to_string()),
        ("basic", "[auth]\nscheme = \"basic\"\nusername = \"svc\"\nclient_secret = { file = \"basic.secret\" }\n".to_string()),
        ("oauth2", format!("[auth]\nscheme = \"oauth2\"\ntoken_url = \"{}/token\"\nclient_id = \"prov\"\nclient_secret = \"{}\"\n", idp.uri(), SECRETS[3])),
        ("login", format!("[auth]\nscheme = \"login\"\nlogin_url = \"{}/login\"\nusername = \"svc\"\ntoken_pointer = \"/token\"\nclient_secret = \"{}\"\n", idp.uri(), SECRETS[4])),
        ("jwt", format!("[auth]\nscheme = \"jwt\"\nissuer = \"prov\"\nqsh = true\nclient_secret = \"{}\"\n", SECRETS[5])),
    ];
    std::fs::write(dir.path().join("basic.secret"), format!("{}\n", SECRETS[2])).unwrap();

    let mut mocks = Vec::new();
    let mut files = Vec::new();
    let mut queues = Vec::new();
    for (scheme, auth) in &schemes {
        let mock = MockTarget::start().await.unwrap();
        if *scheme == "bearer" {
            mock.require_bearer(SECRETS[0]);
        }
        if *scheme == "basic" {
            // Wrong on purpose for half the story: a 401 must not echo the password either.
            mock.require_basic("svc", "not-the-password");
        }
        let queue = unique(scheme);
        let text = example_provisioner(&mock.url(), &queue, &format!("name = \"p-{scheme}\""));
        // `[auth]` must come before `[rest]`.
        let (top, rest) = text.split_at(text.find("\n[rest]").unwrap());
        let file = format!("{scheme}.toml");
        std::fs::write(dir.path().join(&file), format!("{top}\n{auth}\n{rest}")).unwrap();
        files.push(file);
        queues.push(queue);
        mocks.push(mock);
    }
    let list: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
    let amqp = amqp_url();
    std::fs::write(
        dir.path().join("worker.toml"),
        format!("provisioners = [{}]\nshutdown_grace_s = 5\n[amqp]\nurl = \"{amqp}\"\n[log]\nlevel = \"debug\"\n", list.join(", ")),
    )
    .unwrap();

    let check = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args([
            "--config",
            dir.path().join("worker.toml").to_str().unwrap(),
            "check",
        ])
        .env("PROV_TEST_HEADER_SECRET", SECRETS[1])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let log = std::fs::File::create(dir.path().join("worker.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args([
            "--config",
            dir.path().join("worker.toml").to_str().unwrap(),
            "run",
        ])
        .env("PROV_TEST_HEADER_SECRET", SECRETS[1])
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();

    let conn = connect().await;
    let channel = provisioner::amqp::confirm_channel(&conn).await.unwrap();
    for q in &queues {
        provisioner::amqp::declare_queues(&channel, q, &format!("{q}.dead"))
            .await
            .unwrap();
        let event = json!({"action": "add", "group": USERS, "subject": "jdoe", "actor": "alice",
            "attributes": {"mail": ["jdoe@example.edu"], "givenName": ["J"], "sn": ["D"]}});
        provisioner::amqp::publish_confirmed(
            &channel,
            q,
            event.to_string().as_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
    }
    // Every target saw its event (the basic one is refused, then retried).
    for (mock, (scheme, _)) in mocks.iter().zip(&schemes) {
        let seen = mock
            .wait_until(DEADLINE, |m| !m.requests().is_empty())
            .await;
        assert!(seen, "{scheme}: no request reached the target");
    }
    assert!(
        mocks[0]
            .wait_until(DEADLINE, |m| m.user("jdoe@example.edu").is_some())
            .await
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "worker did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");

    let output = std::fs::read_to_string(dir.path().join("worker.log")).unwrap();
    assert!(output.contains("consuming"), "the worker ran: {output}");
    assert!(
        output.contains("DEBUG") || output.contains("debug"),
        "debug logging was on"
    );
    for secret in SECRETS {
        assert!(
            !output.contains(secret),
            "secret {secret} in the output:\n{output}"
        );
    }
    assert!(!String::from_utf8_lossy(&check.stdout).contains("SECRET"));
    for q in queues {
        let _ = channel
            .queue_delete(q.as_str().into(), Default::default())
            .await;
        let _ = channel
            .queue_delete(format!("{q}.dead").as_str().into(), Default::default())
            .await;
    }
}
