//! The `provisioner` binary's offline commands.

use std::process::Command;

use crate::support::repo_path;

fn provisioner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
}

fn check(files: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("p");
    std::fs::create_dir(&pdir).unwrap();
    for (name, text) in files {
        std::fs::write(pdir.join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("worker.toml"), "provisioners = \"p\"\n").unwrap();
    let out = provisioner()
        .args([
            "--config",
            dir.path().join("worker.toml").to_str().unwrap(),
            "check",
        ])
        .env_remove("AMQP_URL")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// provisioners/example.toml with `remove_only_owned` off, for worker files
/// without a `[journal]`.
fn example() -> String {
    std::fs::read_to_string(repo_path("provisioners/example.toml"))
        .unwrap()
        .replace("remove_only_owned = true", "remove_only_owned = false")
}

#[test]
fn check_accepts_the_shipped_configuration() {
    let out = provisioner()
        .args([
            "--config",
            repo_path("config/worker.toml").to_str().unwrap(),
            "check",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("provisioner `example`"), "{stdout}");
}

#[test]
fn check_names_file_and_key_of_a_misspelled_key() {
    let text = example().replace("provision_strategy", "provision_stratgy");
    let (ok, _, err) = check(&[("zoom.toml", &text)]);
    assert!(!ok);
    assert!(err.contains("zoom.toml"), "{err}");
    assert!(err.contains("provision_stratgy"), "{err}");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn check_names_file_and_key_of_a_missing_required_key() {
    let text = example().replace("kind = \"rest\"\n", "");
    let (ok, _, err) = check(&[("zoom.toml", &text)]);
    assert!(!ok);
    assert!(err.contains("zoom.toml") && err.contains("`kind`"), "{err}");
}

#[test]
fn check_reports_every_problem_at_once() {
    let text = example()
        .replace(
            "provision_strategy = \"query-first\"",
            "provision_strategy = \"fastest\"",
        )
        .replace(
            "group_sync_strategy = \"add-member-first\"",
            "group_sync_strategy = \"whatever\"",
        );
    let (ok, _, err) = check(&[
        ("a.toml", &text),
        ("b.toml", "kind = \"rest\"\nurl_prefix = \"x\"\n"),
    ]);
    assert!(!ok);
    for needle in [
        "a.toml",
        "provision_strategy",
        "group_sync_strategy",
        "b.toml",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
}

/// serde stops at the first key it refuses; `check` must not, nor hide the
/// file's other problems behind a missing required key.
#[test]
fn check_reports_a_missing_key_an_unknown_value_and_other_errors_together() {
    let text = example()
        .replace("url_prefix = \"http://127.0.0.1:8080\"\n", "")
        .replace(
            "provision_strategy = \"query-first\"",
            "provision_strategy = \"fastest\"",
        )
        .replace(
            "target_group_retry_delay = 20",
            "target_group_retry_delay = \"soon\"\naccount_cache_size = 0",
        )
        .replacen("method = \"PATCH\"", "method = \"PTACH\"", 1);
    let (ok, _, err) = check(&[("a.toml", &text)]);
    assert!(!ok);
    for needle in [
        "a.toml: key `url_prefix`: every provisioner needs `url_prefix`",
        "a.toml: key `provision_strategy`: unknown variant `fastest`, expected `query-first` or `create-first` (line 10)",
        "a.toml: key `target_group_retry_delay`: invalid type: string \"soon\"",
        "a.toml: key `account_cache_size`: must be at least 1",
        "a.toml: key `rest.accounts.update.method`: unknown variant `PTACH`",
        "configuration has 5 errors",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[test]
fn check_never_prints_a_secret() {
    let text = example().replace(
        "# [auth]\n# scheme = \"bearer\"\n# client_secret = { env = \"EXAMPLE_API_TOKEN\" }",
        "[auth]\nscheme = \"bearer\"\nclient_secret = \"tok-SECRET-123\"",
    );
    assert!(text.contains("tok-SECRET-123"));
    let (ok, out, err) = check(&[("s.toml", &text)]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("tok-SECRET-123") && !err.contains("tok-SECRET-123"),
        "{out}"
    );
    assert!(out.contains("auth: bearer"));
}

#[test]
fn check_hides_the_password_of_a_url_prefix() {
    let text = example().replace(
        "url_prefix = \"http://127.0.0.1:8080\"",
        "url_prefix = [\"https://svc:url-pw-Rm29q@api1.example.com/v2\", \"https://api2.example.com/v2\"]",
    );
    assert!(text.contains("url-pw-Rm29q"));
    let (ok, out, err) = check(&[("s.toml", &text)]);
    assert!(ok, "{err}");
    assert!(
        !out.contains("url-pw-Rm29q") && !err.contains("url-pw-Rm29q"),
        "{out}{err}"
    );
    assert!(
        out.contains(
            "url_prefix: https://svc:***@api1.example.com/v2, https://api2.example.com/v2\n"
        ),
        "{out}"
    );
}

#[test]
fn the_demo_runs_through_the_broker_and_shows_the_final_state() {
    let out = provisioner()
        .arg("demo")
        .env("AMQP_URL", crate::support::amqp_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Publishing 9 events"), "{stdout}");
    assert_eq!(
        stdout.matches("dead-lettered").count(),
        1,
        "one invalid event: {stdout}"
    );
    // An outcome line: `  5. applied       demo-4  update ...`. Events of
    // one subject that wait together may be coalesced into the last one.
    let verdicts: Vec<&str> = stdout
        .lines()
        .filter_map(|l| {
            let (n, rest) = l.trim_start().split_once(". ")?;
            n.parse::<u32>().ok()?;
            rest.split_whitespace().next()
        })
        .collect();
    let count = |v: &str| verdicts.iter().filter(|&&x| x == v).count();
    assert_eq!(count("applied") + count("coalesced"), 6, "{stdout}");
    assert!(count("applied") >= 5, "{stdout}");
    assert_eq!(count("ignored"), 2, "{stdout}");
    assert!(stdout.contains("user  jdoe@example.edu"), "{stdout}");
    assert!(stdout.contains("members: asmith@example.edu"), "{stdout}");
    assert!(
        !stdout.contains("olduser@example.edu   "),
        "olduser deprovisioned: {stdout}"
    );
}

#[test]
fn the_demo_without_a_broker_says_how_to_start_one_and_still_shows_the_events() {
    let out = provisioner()
        .arg("demo")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("No RabbitMQ broker answered"), "{stdout}");
    assert!(stdout.contains("rabbitmq-server -detached"), "{stdout}");
    assert!(stdout.contains("user  jdoe@example.edu"), "{stdout}");
    assert!(stdout.contains("applied"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_dry_run_shows_the_writes_and_changes_nothing_then_replay_applies() {
    use crate::support::mock_rest::MockTarget;
    let mock = MockTarget::start().await.unwrap();
    mock.add_user("old@example.edu", "Old", "User");
    mock.add_group("Staff");
    assert!(mock.add_member("Staff", "old@example.edu"));
    let dir = tempfile::tempdir().unwrap();
    let text = crate::support::example_provisioner(
        &mock.url(),
        &crate::support::unique("rp"),
        "name = \"rp\"",
    );
    std::fs::write(dir.path().join("rp.toml"), text).unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = [\"rp.toml\"]\n",
    )
    .unwrap();
    let events = [
        r#"{"action":"add","group":"app:example:users","subject":"new","attributes":{"mail":["new@example.edu"],"givenName":["N"],"sn":["U"]}}"#,
        r#"{"action":"membership_sync","group":"app:example:staff","subjects":["new"],"attributes":{"new":{"mail":["new@example.edu"]}}}"#,
        r#"{"action":"delete","group":"app:example:users","subject":"old","attributes":{"mail":["old@example.edu"]}}"#,
    ];
    std::fs::write(dir.path().join("events.jsonl"), events.join("\n")).unwrap();
    let run = |dry: bool| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"));
        c.arg("--config").arg(dir.path().join("worker.toml"));
        c.args(["replay", "--provisioner", "rp"]);
        if dry {
            c.arg("--dry-run");
        }
        c.arg(dir.path().join("events.jsonl"));
        c.output()
    };

    let out = run(true).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "would create account `new@example.edu`",
        "would add (new:new@example.edu) (`new@example.edu`) to group `Staff`",
        "from group `Staff`",
        "would deprovision account",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
    assert!(
        mock.requests().iter().all(|r| r.method == "GET"),
        "{:?}",
        mock.request_lines()
    );
    assert_eq!(mock.users().len(), 1);
    assert_eq!(mock.members("Staff"), ["old@example.edu"]);

    let out = run(false).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(mock.user("new@example.edu").is_some());
    assert!(mock.user("old@example.edu").is_none());
    assert_eq!(mock.members("Staff"), ["new@example.edu"]);
}

/// `hash-password` prints an argon2 PHC string that verifies the password
/// it was given, and nothing else; `check` accepts it in `[[admin.users]]`
/// and refuses a plain password there.
#[test]
fn hash_password_makes_a_hash_the_admin_configuration_accepts() {
    use std::io::Write;
    let mut child = provisioner()
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("correct horse"));
    assert!(provisioner::admin::auth::verify_password(
        &hash,
        "correct horse battery"
    ));
    assert!(!provisioner::admin::auth::verify_password(
        &hash,
        "correct horse"
    ));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), example()).unwrap();
    for (password_hash, ok) in [(hash.as_str(), true), ("correct horse battery", false)] {
        std::fs::write(
            dir.path().join("worker.toml"),
            format!(
                "provisioners = [\"p.toml\"]\n[admin]\nlisten = \"0.0.0.0:9610\"\n[[admin.users]]\nname = \"oncall\"\nrole = \"operate\"\npassword_hash = \"{password_hash}\"\n"
            ),
        )
        .unwrap();
        let out = provisioner()
            .args([
                "--config",
                dir.path().join("worker.toml").to_str().unwrap(),
                "check",
            ])
            .env_remove("AMQP_URL")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), ok, "{text}");
        if !ok {
            assert!(text.contains("admin.users[0].password_hash"), "{text}");
            assert!(
                !text.contains("correct horse"),
                "the password is never echoed: {text}"
            );
        }
    }
}

/// An admin API on a non-loopback address without credentials is refused.
#[test]
fn an_open_admin_api_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), example()).unwrap();
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = [\"p.toml\"]\n[admin]\nlisten = \"0.0.0.0:9610\"\n",
    )
    .unwrap();
    let out = provisioner()
        .args([
            "--config",
            dir.path().join("worker.toml").to_str().unwrap(),
            "check",
        ])
        .env_remove("AMQP_URL")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("admin.listen") && text.contains("no token or user"),
        "{text}"
    );
}

/// Shell completions name the subcommands.
#[test]
fn completions_are_printed_for_bash() {
    let out = provisioner()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "check", "publish", "dead-letters", "hash-password"] {
        assert!(text.contains(sub), "{sub} missing");
    }
}
