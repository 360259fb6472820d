//! Peak memory of a large account sync: parse of a 100,000-subject event,
//! then the sync against [`MemoryTarget`]. A measurement, not a check (RSS
//! on a shared machine is too noisy to assert): run it alone with
//! `cargo test --lib engine::tests::memory -- --ignored --nocapture`.

use super::*;

/// `VmHWM` (peak RSS) and `VmRSS` of this process, in MB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Starts a new peak: the kernel sets `VmHWM` back to the current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn subject(i: usize) -> String {
    format!("user{i:06}")
}

/// What the event gives subject `s`, and what its account holds.
fn attributes(s: &str) -> [(&'static str, String); 3] {
    [
        ("mail", format!("{s}@example.edu")),
        ("givenName", format!("Given {s}")),
        ("sn", "Doe".to_string()),
    ]
}

/// A membership_sync of subjects `0..n` with their attributes, written
/// straight into a string: no `Value` is built and dropped before the
/// measurement, whose freed memory the parse would reuse unseen.
fn sync_body(n: usize) -> String {
    use std::fmt::Write;
    let mut body = String::with_capacity(n * 110);
    body.push_str(&format!(
        r#"{{"action":"membership_sync","group":"{PG}","subjects":["#
    ));
    for i in 0..n {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(body, r#"{sep}"{}""#, subject(i));
    }
    body.push_str(r#"],"attributes":{"#);
    for i in 0..n {
        let s = subject(i);
        let sep = if i == 0 { "" } else { "," };
        let fields: Vec<String> = attributes(&s)
            .iter()
            .map(|(k, v)| format!(r#""{k}":["{v}"]"#))
            .collect();
        let _ = write!(body, r#"{sep}"{s}":{{{}}}"#, fields.join(","));
    }
    body.push_str("}}");
    body
}

#[tokio::test]
#[ignore = "a measurement: run alone, with --nocapture"]
async fn peak_memory_of_a_100k_account_sync() {
    const N: usize = 100_000;
    let body = sync_body(N);
    // The target holds users 1,000..101,000: 1 % to create, 1 % to remove,
    // every other account equal to what the event says.
    let t = MemoryTarget::new();
    for i in 1_000..N + 1_000 {
        let s = subject(i);
        let attrs: Attributes = attributes(&s)
            .into_iter()
            .map(|(k, v)| (k.to_string(), vec![v]))
            .collect();
        t.insert_account_with(&s, attrs);
    }
    let t = t.arc();
    let e = engine(&cfg("max_removals = 0\nmax_removal_share = 1"), &t);

    reset_peak();
    let (_, before) = rss();
    let event = crate::event::parse(body.as_bytes(), None).unwrap();
    let (parse_peak, _) = rss();
    let (outcome, calls) = ok(&e, &t, &event).await;
    let (sync_peak, _) = rss();
    let mb = body.len() as f64 / 1e6;
    println!(
        "event {mb:.1} MB, {N} subjects; RSS before parsing {before:.1} MB (the body and the target); \
         peak over it: parse +{:.1} MB, parse and sync +{:.1} MB, so (event + that) = {:.1}x the event; \
         {} calls; {}",
        parse_peak - before,
        sync_peak - before,
        (mb + sync_peak - before) / mb,
        calls.len(),
        outcome.detail
    );
}
