//! `provisioner bench`: a small run completes against the real broker and
//! reports every measurement. No timing is asserted: the numbers depend on
//! the machine; docs/benchmarks.md has this machine's.

use std::process::Command;

use serde_json::Value;

use crate::support::amqp_url;

fn bench(args: &[&str], amqp: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    // No worker file: the broker settings are the defaults and AMQP_URL.
    let config = dir.path().join("absent.toml");
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("--config")
        .arg(&config)
        .arg("bench")
        .args(args)
        .env("AMQP_URL", amqp)
        .env("TMPDIR", dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn number(v: &Value, pointer: &str) -> f64 {
    match v.pointer(pointer).and_then(Value::as_f64) {
        Some(n) if n.is_finite() => n,
        _ => panic!("no finite number at {pointer} in {v:#}"),
    }
}

#[test]
fn a_quick_run_reports_every_measurement_as_json() {
    let out = bench(&["--quick", "--json"], &amqp_url());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    number(&report, "/broker_limit/events_per_s");
    number(&report, "/target_limit/requests_per_s");

    let worker = report["worker"].as_array().unwrap();
    assert_eq!(worker.len(), 2, "subjects = events, then events / 10");
    for run in worker {
        for key in [
            "/events_per_s",
            "/calls_per_event",
            "/cpu_us_per_event",
            "/peak_rss_bytes",
            "/latency_from_confirm/p50_ms",
            "/latency_from_confirm/p99_ms",
            "/latency_from_publish/p99_ms",
            "/ceiling_events_per_s",
            "/ratio_to_ceiling",
        ] {
            number(run, key);
        }
        assert_eq!(run["not_applied"], 0, "{run:#}");
    }
    // Every update is a look-up + PATCH until the ID is cached.
    assert_eq!(number(&worker[0], "/calls_per_event"), 2.0);
    assert!(number(&worker[1], "/calls_per_event") < 2.0);

    let hiding = report["latency_hiding"].as_array().unwrap();
    let concurrency: Vec<f64> = hiding
        .iter()
        .map(|h| number(h, "/run/concurrency"))
        .collect();
    // At the worker's default concurrency, and at 64.
    assert_eq!(
        concurrency,
        [f64::from(provisioner::bench::DEFAULT_CONCURRENCY), 64.0]
    );
    for h in hiding {
        number(h, "/ideal_events_per_s");
        number(h, "/ratio");
    }

    number(&report, "/original_model/run/events_per_s");
    number(&report, "/original_model/speedup");
    assert_eq!(number(&report, "/original_model/run/prefetch"), 1.0);

    number(&report, "/rate_limit/achieved_calls_per_s");
    number(&report, "/rate_limit/peak_calls_in_any_second");
    number(&report, "/rate_limit/rejected_429");

    let syncs = report["full_sync"].as_array().unwrap();
    assert_eq!(syncs.len(), 1);
    let sync = &syncs[0];
    assert_eq!(sync["result"], "applied", "{sync:#}");
    assert_eq!(sync["target_correct"], true, "{sync:#}");
    for key in [
        "/seconds",
        "/calls_total",
        "/minimum_calls",
        "/peak_rss_bytes",
        "/event_bytes",
    ] {
        number(sync, key);
    }
    assert!(number(sync, "/calls_total") >= number(sync, "/minimum_calls"));

    for run in ["/coalescing/without", "/coalescing/with"] {
        number(&report, &format!("{run}/events_per_s"));
        assert_eq!(
            report.pointer(&format!("{run}/not_applied")),
            Some(&serde_json::json!(0))
        );
    }
    assert_eq!(number(&report, "/coalescing/without/coalesced"), 0.0);
    number(&report, "/coalescing/events_per_call");
    number(&report, "/coalescing/fewer_calls");

    for key in [
        "/adaptive/target_limit_per_s",
        "/adaptive/achieved_calls_per_s",
        "/adaptive/settled_calls_per_s",
        "/adaptive/ratio",
        "/adaptive/rejected_429",
        "/adaptive/rejected_share",
    ] {
        number(&report, key);
    }
    assert_eq!(
        report.pointer("/adaptive/run/not_applied"),
        Some(&serde_json::json!(0)),
        "{:#}",
        report["adaptive"]
    );
    // The mock never accepts more than its limit.
    assert!(number(&report, "/adaptive/ratio") <= 1.05);
}

#[test]
fn without_a_broker_it_says_how_to_start_one() {
    let out = bench(
        &["--quick", "--only", "broker"],
        "amqp://guest:guest@127.0.0.1:1/%2f",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("rabbitmq-server"), "{stderr}");
}

#[test]
fn an_unknown_measurement_is_refused_with_the_names() {
    let out = bench(&["--only", "broker,nonsense"], &amqp_url());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rate-limit"), "{stderr}");
}
