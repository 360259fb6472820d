use super::file::WorkerFile;
use super::validate::amqp_config;
use super::*;

const EXAMPLE: &str = include_str!("../../provisioners/example.toml");

/// The example's complete `[rest]` description.
fn rest() -> &'static str {
    EXAMPLE
        .find("\n[rest]")
        .map(|i| &EXAMPLE[i..])
        .unwrap_or("")
}

fn parse(text: &str) -> Result<ProvisionerConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    match parse_provisioner(Path::new("/etc/p/zoom.toml"), text, &mut errors) {
        Some(p) if errors.is_empty() => Ok(p),
        _ => Err(errors),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults_follow_the_original() {
    let p = match parse(&format!(
        "kind = \"rest\"\nurl_prefix = \"https://api.example.com/v2/\"\nprovision_group = \"App:Users\"\n{}",
        rest()
    )) {
        Ok(p) => p,
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(p.name, "zoom");
    assert_eq!(p.queue, "provisioner.zoom");
    assert_eq!(p.url_prefixes, vec!["https://api.example.com/v2"]);
    assert_eq!(p.provision_group.as_deref(), Some("app:users"));
    assert_eq!(p.account_cache_size, 1000);
    assert_eq!(p.target_group_cache_size, 100);
    assert_eq!(p.account_cache_validity_period, Duration::ZERO);
    assert_eq!(p.target_group_retry_delay, Duration::from_secs(20));
    assert_eq!(p.provision_strategy, ProvisionStrategy::QueryFirst);
    assert_eq!(p.group_sync_strategy, GroupSyncStrategy::AddMemberFirst);
    assert_eq!(p.timeout, Duration::from_secs(30));
    assert!(!p.remove_only_owned, "removals as the original made them");
    assert_eq!(p.dead_letter_queue(), "provisioner.zoom.dead");
    // The summary of `check` names the choices as they are written.
    assert_eq!(
        problems::spelling(&p.group_sync_strategy),
        "add-member-first"
    );
}

#[test]
fn unmanaged_logins_take_a_list_or_a_whitespace_separated_string() {
    let base = "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n";
    for form in [
        "unmanaged_logins = \"Root  admin\\n\"",
        "unmanaged_logins = [\"root\", \"ADMIN\"]",
    ] {
        let p = parse(&format!("{base}{form}\n{}", rest())).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.unmanaged_logins, vec!["root", "admin"]);
    }
    let p = parse(&format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\ngroup_sync_strategy = \"add-members-first\"\ntarget_group_map = {{ \"A:B\" = \"Remote\" }}\n{}",
        rest()
    ))
    .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.group_sync_strategy, GroupSyncStrategy::AddMemberFirst);
    assert_eq!(
        p.target_group_map.get("a:b").map(String::as_str),
        Some("Remote")
    );
}

#[test]
fn target_group_map_may_come_from_a_json_file_next_to_the_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("map.json"), r#"{"app:staff": "Staff"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("p.toml");
    let text = format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\ntarget_group_map = \"map.json\"\n{}",
        rest()
    );
    let mut errs = Vec::new();
    let p = parse_provisioner(&path, &text, &mut errs).unwrap_or_else(|| panic!("{errs:?}"));
    assert_eq!(
        p.target_group_map.get("app:staff").map(String::as_str),
        Some("Staff")
    );
}

#[test]
fn the_mass_deprovision_guard_has_a_share_and_an_absolute_limit() {
    let base = format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n{}",
        rest()
    );
    let p = parse(&base).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        (p.max_removal_share, p.removal_guard_min, p.max_removals),
        (0.5, 10, 500)
    );
    let p = parse(&format!("max_removals = 0\n{base}")).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(p.max_removals, 0);
    let e = errors(&format!("max_removals = -1\n{base}"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("`max_removals`") && e[0].contains("-1") && e[0].contains("line 1"),
        "{}",
        e[0]
    );
}

#[test]
fn a_misspelled_key_is_named_with_its_file() {
    let e = errors(&format!("kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\naccount_cache_sise = 5\n{}", rest()));
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("/etc/p/zoom.toml"), "{}", e[0]);
    assert!(e[0].contains("account_cache_sise"), "{}", e[0]);
    assert!(e[0].contains("line 4"), "{}", e[0]);
}

#[test]
fn a_missing_required_key_is_named() {
    let e = errors("url_prefix = \"https://x\"\nprovision_group = \"g\"\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("`kind`") && e[0].contains("needs"),
        "{}",
        e[0]
    );
}

/// serde stops at the first key it refuses; the check must not. A missing
/// required key, unknown enum values, an unknown key, a value of the wrong
/// type and problems only validation finds, in the provisioner file and in
/// its `[rest]` and `[auth]` tables, all come out of one pass.
#[test]
fn a_missing_key_an_unknown_value_and_other_problems_are_reported_together() {
    let text = format!(
        "kind = \"rest\"\nprovision_group = \"g\"\nprovision_strategy = \"eager\"\n\
         queu = \"q\"\ntimeout_s = \"30\"\nconcurrency = 0\n\
         [auth]\nscheme = \"kerberos\"\n{}",
        rest()
            .replacen("method = \"PATCH\"", "method = \"PTACH\"", 1)
            .replacen("style = \"page_number\"", "style = \"pages\"", 1)
            .replacen("id = \"/id\"", "id = \"id\"", 1)
    );
    let e = parse(&text).err().unwrap_or_default();
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    for key in [
        "url_prefix",
        "provision_strategy",
        "queu",
        "timeout_s",
        "concurrency",
        "auth.scheme",
        "rest.accounts.update.method",
        "rest.accounts.list.paging.style",
        "rest.accounts.lookup.id",
    ] {
        assert_eq!(
            keys.iter().filter(|k| **k == key).count(),
            1,
            "one problem at `{key}` in {e:#?}"
        );
    }
    assert_eq!(e.len(), 9, "nothing else: {e:#?}");
    let shown = |key: &str| e.iter().find(|e| e.key == key).map(ToString::to_string);
    let strategy = shown("provision_strategy").unwrap_or_default();
    assert!(
        strategy.contains("`eager`")
            && strategy.contains("query-first")
            && strategy.contains("(line 3)"),
        "{strategy}"
    );
    let typo = shown("queu").unwrap_or_default();
    assert!(
        typo.contains("unknown field") && typo.contains("(line 4)"),
        "{typo}"
    );
    assert!(e.iter().all(|e| !e.fix.is_empty()), "{e:#?}");
}

#[test]
fn a_syntax_error_is_the_only_problem_of_its_file() {
    let e = errors("kind = \"rest\"\nurl_prefix = \n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("line 2"), "{}", e[0]);
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let e = errors(&format!(
        "kind = \"rest\"\nurl_prefix = \"ftp://x\"\nprovision_strategy = \"eager\"\ngroup_sync_strategy = \"lazy\"\naccount_cache_size = 0\nendpoint = \"nohost\"\n{}",
        rest()
    ));
    let all = e.join("\n");
    for key in [
        "url_prefix",
        "provision_strategy",
        "group_sync_strategy",
        "account_cache_size",
        "endpoint",
        "provision_group",
    ] {
        assert!(
            all.contains(&format!("`{key}`")),
            "{key} missing in:\n{all}"
        );
    }
    assert!(e.iter().all(|l| l.contains("fix:")), "{all}");
}

#[test]
fn worker_file_reports_provisioner_errors_and_duplicate_names() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("p");
    std::fs::create_dir(&p).unwrap_or_else(|e| panic!("{e}"));
    let good = format!(
        "name = \"same\"\nkind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n{}",
        rest()
    );
    std::fs::write(p.join("a.toml"), &good).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(p.join("b.toml"), good.replace("provisioner", "x"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("worker.toml"),
        "provisioners = \"p\"\n[amqp]\nprefetch = 0\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = match load(&dir.path().join("worker.toml")) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("amqp.prefetch"), "{err}");
    assert!(err.contains("name `same` is also used"), "{err}");
}

/// The problems of `[amqp]` given as TOML, with `AMQP_URL` set to `env_url`.
fn amqp_errors(text: &str, env_url: Option<&str>) -> Vec<ConfigError> {
    let file: WorkerFile = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut errors = Vec::new();
    let mut p = Problems::new(Path::new("/etc/p/worker.toml"), &mut errors);
    amqp_config(file.amqp, env_url.map(str::to_string), &mut p);
    errors
}

#[test]
fn amqp_tls_with_a_plain_amqp_url_is_an_error() {
    let plain = "[amqp]\nurl = \"amqp://u:broker-pw-Jd62@mq.example.com/%2f\"\n[amqp.tls]\n";
    let tls = "[amqp]\nurl = \"amqps://u:broker-pw-Jd62@mq.example.com/%2f\"\n[amqp.tls]\n";
    let e = amqp_errors(plain, None);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "amqp.tls");
    assert!(e[0].fix.contains("amqps://"), "{}", e[0]);
    assert!(e[0].fix.contains("remove"), "{}", e[0]);
    assert!(!e[0].to_string().contains("broker-pw-Jd62"), "{}", e[0]);
    assert!(amqp_errors(tls, None).is_empty());
    // AMQP_URL replaces the file's URL, so it is the one that counts.
    let e = amqp_errors(tls, Some("amqp://u:env-pw-Lk40@mq.example.com/%2f"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "amqp.tls");
    assert!(e[0].problem.contains("AMQP_URL"), "{}", e[0]);
    assert!(!e[0].to_string().contains("env-pw-Lk40"), "{}", e[0]);
    assert!(amqp_errors(plain, Some("amqps://u:p@mq.example.com/%2f")).is_empty());
    // Without a [amqp.tls] table a plain URL is fine.
    assert!(amqp_errors("[amqp]\nurl = \"amqp://u:p@mq/%2f\"\n", None).is_empty());
}

/// The broker URLs `[amqp]` resolves to, shown (passwords masked).
fn broker_urls_of(text: &str, env_url: Option<&str>) -> (String, Vec<ConfigError>) {
    let file: WorkerFile = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut errors = Vec::new();
    let mut p = Problems::new(Path::new("/etc/p/worker.toml"), &mut errors);
    let config = amqp_config(file.amqp, env_url.map(str::to_string), &mut p);
    (config.url.shown(), errors)
}

#[test]
fn the_nodes_of_a_cluster_are_a_list_or_comma_separated_in_order() {
    let want = "amqp://u:***@mq1:5672/%2f,amqp://u:***@mq2:5672/%2f,amqp://u:***@mq3:5672/%2f";
    let list = "[amqp]\nurl = [\"amqp://u:p@mq1:5672/%2f\", \"amqp://u:p@mq2:5672/%2f\", \"amqp://u:p@mq3:5672/%2f\"]\n";
    assert_eq!(broker_urls_of(list, None), (want.to_string(), vec![]));
    let commas =
        "[amqp]\nurl = \"amqp://u:p@mq1:5672/%2f, amqp://u:p@mq2:5672/%2f,amqp://u:p@mq3:5672/%2f,\"\n";
    assert_eq!(broker_urls_of(commas, None), (want.to_string(), vec![]));
    // AMQP_URL wins, comma-separated the same way.
    let (shown, errors) = broker_urls_of(
        list,
        Some("amqp://u:p@mq7:5672/%2f,amqp://u:p@mq8:5672/%2f"),
    );
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(shown, "amqp://u:***@mq7:5672/%2f,amqp://u:***@mq8:5672/%2f");
    // A comma in a password is written %2C and stays in its URL.
    let (shown, errors) = broker_urls_of("[amqp]\nurl = \"amqp://u:a%2Cb@mq1/%2f\"\n", None);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(shown, "amqp://u:***@mq1/%2f");
}

#[test]
fn each_bad_broker_url_is_named_by_its_entry_without_its_password() {
    let text = "[amqp]\nurl = [\"amqp://u:pw-Hq81@mq1/%2f\", \"http://u:pw-Hq81@mq2/\", \"amqp://u:pw-Hq81@mq3:99999/%2f\", \"amqp://u:pw-Hq81@mq4/%2f\"]\n";
    let (_, e) = broker_urls_of(text, None);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.iter().all(|e| e.key == "amqp.url"), "{e:?}");
    assert!(e[0].problem.contains("entry 2 of 4"), "{}", e[0]);
    assert!(e[0].problem.contains("amqp:// or amqps://"), "{}", e[0]);
    assert!(e[1].problem.contains("entry 3 of 4"), "{}", e[1]);
    assert!(e[1].problem.contains("not a URL"), "{}", e[1]);
    for e in &e {
        assert!(!e.to_string().contains("pw-Hq81"), "{e}");
    }

    // One scheme for all: [amqp.tls] applies to every node.
    let (_, e) = broker_urls_of(
        "[amqp]\nurl = \"amqps://u:pw-Hq81@mq1/%2f,amqp://u:pw-Hq81@mq2/%2f\"\n",
        None,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].problem.contains("entry 2 of 2"), "{}", e[0]);
    assert!(e[0].problem.contains("entry 1 of 2"), "{}", e[0]);
    assert!(e[0].fix.contains("one scheme"), "{}", e[0]);
    assert!(!e[0].to_string().contains("pw-Hq81"), "{}", e[0]);

    // From AMQP_URL, the key says so.
    let (_, e) = broker_urls_of("", Some("amqp://u:pw-Hq81@mq1/%2f,nonsense"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "AMQP_URL");
    assert!(e[0].problem.contains("entry 2 of 2"), "{}", e[0]);

    // Nothing at all.
    let (_, e) = broker_urls_of("[amqp]\nurl = \" , \"\n", None);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].problem.contains("no broker URL"), "{}", e[0]);
}

/// `remove_only_owned` needs the journal's store: without `[journal]` the
/// worker file is refused, naming the provisioner file, the key, the worker
/// file and the fix; with it, or with the option off, it loads.
#[test]
fn remove_only_owned_needs_a_journal_in_the_worker_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let provisioner = format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\nremove_only_owned = true\n{}",
        rest()
    );
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"))
    };
    write("owned.toml", &provisioner);
    write(
        "plain.toml",
        &provisioner.replace("remove_only_owned = true", ""),
    );
    let worker = dir.path().join("worker.toml");
    write(
        "worker.toml",
        "provisioners = [\"owned.toml\", \"plain.toml\"]\n",
    );
    let errors = match load(&worker) {
        Ok(_) => panic!("loaded without a journal"),
        Err(e) => e.0,
    };
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.file, dir.path().join("owned.toml"));
    assert_eq!(e.key, "remove_only_owned");
    assert!(e.problem.contains(&worker.display().to_string()), "{e}");
    assert!(e.problem.contains("no `[journal]`"), "{e}");
    assert!(e.fix.contains("add a `[journal]` table"), "{e}");
    assert!(e.fix.contains("remove_only_owned = false"), "{e}");

    write(
        "worker.toml",
        "provisioners = [\"owned.toml\", \"plain.toml\"]\n[journal]\npath = \"j.sqlite\"\n",
    );
    let config = load(&worker).unwrap_or_else(|e| panic!("{e}"));
    let owned: Vec<bool> = config
        .provisioners
        .iter()
        .map(|p| p.remove_only_owned)
        .collect();
    assert_eq!(owned, [true, false]);
}

#[test]
fn pacing_is_adaptive_by_default_and_its_factors_are_checked_together() {
    let base = format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n{}",
        rest()
    );
    let p = parse(&base).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        p.pacing,
        PacingPolicy {
            adaptive: true,
            decrease: 0.7,
            increase: 1.0,
            min_rate: 1.0,
        }
    );
    let p =
        parse(&format!(
            "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n[pacing]\nadaptive = false\n{}",
            rest()
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(!p.pacing.adaptive);
    let bad = format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n[pacing]\ndecrease = 1.0\nincrease = 0.0\nmin_rate = -2.0\n{}",
        rest()
    );
    let e = errors(&bad);
    let all = e.join("\n");
    for key in ["pacing.decrease", "pacing.increase", "pacing.min_rate"] {
        assert!(
            all.contains(&format!("`{key}`")),
            "{key} missing in:\n{all}"
        );
    }
    assert_eq!(e.len(), 3, "{all}");
    assert!(e.iter().all(|l| l.contains("fix:")), "{all}");
    let e = errors(&format!(
        "kind = \"rest\"\nurl_prefix = \"https://x\"\nprovision_group = \"g\"\n[pacing]\nslowly = true\n{}",
        rest()
    ));
    assert!(e.join("\n").contains("slowly"), "{e:?}");
}
