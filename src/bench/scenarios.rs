//! The measurements. Each worker run gets a fresh queue, a freshly seeded
//! mock and a worker process of its own, so that no run inherits another's
//! caches, connections or memory high-water mark.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Map, Value};

use super::broker::{Broker, Message};
use super::mock::MockTarget;
use super::process::{write_config, Settled, WorkerProcess};
use super::report::{
    AdaptiveRun, Coalescing, HidingRun, Machine, OriginalModel, Quantiles, RateLimitRun, Report,
    Settings, SyncRun, TargetLimit, WorkerRun,
};
use super::{BenchError, BenchOptions, Measurement, DEFAULT_CONCURRENCY, DEFAULT_PREFETCH};
use crate::demo::server::Server;

const EXAMPLE: &str = include_str!("../../provisioners/example.toml");

/// The example provisioner's provision group: `update` events here are
/// look-up + PATCH.
const PROVISION_GROUP: &str = "app:example:users";

/// A run that settles nothing and calls nothing for this long has failed.
const STALL: Duration = Duration::from_secs(120);

/// Page size the example file lists accounts with.
const LIST_PAGE_SIZE: u64 = 300;

/// The worker's default `[amqp] max_event_bytes`.
const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

struct Ctx<'a> {
    options: &'a BenchOptions,
    broker: Broker,
    mock: MockTarget,
    mock_url: String,
    amqp_url: String,
}

/// Takes every measurement asked for; the queues are deleted and the mock
/// stopped whatever happens, the work directory removed only on success
/// (its logs explain a failure).
pub async fn run_all(options: &BenchOptions) -> Result<Report, BenchError> {
    std::fs::create_dir_all(&options.work_dir).map_err(|e| BenchError::io(&options.work_dir, e))?;
    let broker = Broker::connect(&options.amqp).await?;
    let mock = MockTarget::new();
    let server = Server::start(mock.router())
        .await
        .map_err(|e| BenchError::Target(format!("cannot start the mock target: {e}")))?;
    let mut ctx = Ctx {
        options,
        amqp_url: options.amqp.url.expose_list(),
        broker,
        mock,
        mock_url: server.url(),
    };
    let result = measure(&mut ctx).await;
    ctx.broker.cleanup().await;
    server.shutdown().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&options.work_dir);
    }
    result
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

async fn measure(ctx: &mut Ctx<'_>) -> Result<Report, BenchError> {
    let o = ctx.options;
    let mut report = Report {
        machine: machine(o),
        settings: Settings {
            quick: o.quick,
            events: o.events,
            sync_subjects: o.sync_subjects.clone(),
            latency_ms: o.latency.as_secs_f64() * 1000.0,
            rate_limit_ms: o.rate_limit_ms,
            run_seconds: o.run_seconds,
        },
        broker_limit: None,
        target_limit: None,
        worker: None,
        latency_hiding: None,
        original_model: None,
        rate_limit: None,
        full_sync: None,
        coalescing: None,
        adaptive: None,
    };
    if o.wants(Measurement::Broker) {
        progress(&format!(
            "1. broker limit: {} events, prefetch {DEFAULT_PREFETCH}",
            o.events
        ));
        let messages = update_messages("broker", o.events, o.events, 0);
        report.broker_limit = Some(
            ctx.broker
                .consume_limit(&messages, DEFAULT_PREFETCH)
                .await?,
        );
    }
    if o.wants(Measurement::Target) {
        progress(&format!(
            "2. target limit: {} requests, concurrency {DEFAULT_CONCURRENCY}",
            2 * o.events
        ));
        report.target_limit = Some(target_limit(ctx, 2 * o.events, DEFAULT_CONCURRENCY).await?);
    }
    if o.wants(Measurement::Worker) {
        let mut runs = Vec::new();
        for subjects in [o.events, (o.events / 10).max(1)] {
            progress(&format!(
                "3. worker end to end: {} events over {subjects} subjects",
                o.events
            ));
            let spec = Spec {
                label: format!("worker-k{subjects}"),
                events: o.events,
                subjects,
                latency_phase: true,
                ..Spec::default()
            };
            let (mut run, _) = worker_run(ctx, &spec).await?;
            if let (Some(b), Some(t)) = (&report.broker_limit, &report.target_limit) {
                let ceiling = b
                    .events_per_s
                    .min(t.requests_per_s / run.calls_per_event.max(1e-9));
                run.ceiling_events_per_s = Some(ceiling);
                run.ratio_to_ceiling = Some(run.events_per_s / ceiling);
            }
            runs.push(run);
        }
        report.worker = Some(runs);
    }
    let latency_s = o.latency.as_secs_f64().max(1e-6);
    if o.wants(Measurement::Hiding) {
        let mut runs = Vec::new();
        for concurrency in [DEFAULT_CONCURRENCY, 64] {
            // Cold subjects (one event each): look-up + PATCH, 2 calls.
            let expected = f64::from(concurrency) / (2.0 * latency_s);
            let events = sized(expected * o.run_seconds, 50, o.events);
            let prefetch = DEFAULT_PREFETCH.max(u16::try_from(4 * concurrency).unwrap_or(u16::MAX));
            progress(&format!(
                "4. latency hiding: {events} events, concurrency {concurrency}, prefetch {prefetch}, latency {} ms",
                latency_s * 1000.0
            ));
            let spec = Spec {
                label: format!("hiding-c{concurrency}"),
                events,
                subjects: events,
                concurrency,
                prefetch,
                latency: o.latency,
                ..Spec::default()
            };
            let (run, _) = worker_run(ctx, &spec).await?;
            let ideal = f64::from(concurrency) / (run.calls_per_event.max(1e-9) * latency_s);
            let actual = run.mock_mean_delay_ms.map(|ms| {
                f64::from(concurrency) / (run.calls_per_event.max(1e-9) * ms.max(1e-3) / 1000.0)
            });
            runs.push(HidingRun {
                ratio: run.events_per_s / ideal,
                ideal_events_per_s: ideal,
                ratio_at_actual_delay: actual.map(|a| run.events_per_s / a),
                ideal_at_actual_delay: actual,
                run,
            });
        }
        report.latency_hiding = Some(runs);
    }
    if o.wants(Measurement::Original) {
        let events = sized(o.run_seconds / (2.0 * latency_s), 20, o.events);
        progress(&format!(
            "5. original model: {events} events, prefetch 1, concurrency 1, latency {} ms",
            latency_s * 1000.0
        ));
        let spec = Spec {
            label: "original".into(),
            events,
            subjects: events,
            concurrency: 1,
            prefetch: 1,
            latency: o.latency,
            ..Spec::default()
        };
        let (run, _) = worker_run(ctx, &spec).await?;
        let default = report.latency_hiding.as_ref().and_then(|runs| {
            runs.iter()
                .find(|h| h.run.concurrency == DEFAULT_CONCURRENCY)
                .map(|h| h.run.events_per_s)
        });
        report.original_model = Some(OriginalModel {
            ideal_events_per_s: 1.0 / (run.calls_per_event.max(1e-9) * latency_s),
            default_events_per_s: default,
            speedup: default.map(|d| d / run.events_per_s.max(1e-9)),
            run,
        });
    }
    if o.wants(Measurement::RateLimit) {
        report.rate_limit = Some(rate_limit(ctx).await?);
    }
    if o.wants(Measurement::Sync) {
        let mut runs = Vec::new();
        for &subjects in &o.sync_subjects {
            progress(&format!("7. full sync: {subjects} subjects"));
            runs.push(sync_run(ctx, subjects).await?);
        }
        report.full_sync = Some(runs);
    }
    if o.wants(Measurement::Coalescing) {
        let subjects = (o.events / 10).clamp(1, 100);
        let events = subjects * 10;
        progress(&format!(
            "8. coalescing: {events} updates over {subjects} subjects, without then with"
        ));
        let spec = |coalesce| Spec {
            label: format!("coalesce-{coalesce}"),
            events,
            subjects,
            coalesce,
            // A subject's backlog within reach: the worker coalesces what
            // waits in its prefetch window (64), and in turn with 100
            // subjects a subject's next event is 100 deliveries away.
            by_subject: true,
            ..Spec::default()
        };
        let (without, _) = worker_run(ctx, &spec(false)).await?;
        let (with, _) = worker_run(ctx, &spec(true)).await?;
        report.coalescing = Some(Coalescing {
            events_per_call: with.events as f64 / (with.calls.total().max(1) as f64),
            fewer_calls: without.calls.total() as f64 / (with.calls.total().max(1) as f64),
            without,
            with,
        });
    }
    if o.wants(Measurement::Adaptive) {
        report.adaptive = Some(adaptive(ctx).await?);
    }
    report.machine.load_at_end = load_average();
    Ok(report)
}

/// `wanted` events, at least `floor`, at most `cap`.
fn sized(wanted: f64, floor: usize, cap: usize) -> usize {
    (wanted.round() as usize).max(floor).min(cap.max(1))
}

fn machine(o: &BenchOptions) -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        broker: o.amqp.url.shown(),
        release_build: !cfg!(debug_assertions),
        load_at_start: load_average(),
        load_at_end: None,
    }
}

/// The 1-minute load average.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn subject(k: usize) -> String {
    format!("bench-{k:07}")
}

fn email(subject: &str) -> String {
    format!("{subject}@example.edu")
}

/// `count` update events, the i-th for subject `i % subjects`, each with a
/// first name of its own so that every PATCH changes something.
fn update_messages(label: &str, count: usize, subjects: usize, serial_from: usize) -> Vec<Message> {
    (0..count)
        .map(|i| {
            let serial = serial_from + i;
            let s = subject(serial % subjects.max(1));
            let id = format!("{label}-{serial}");
            let body = json!({
                "id": id,
                "action": "update",
                "group": PROVISION_GROUP,
                "subject": s,
                "attributes": {
                    "mail": [email(&s)],
                    "givenName": [format!("G{serial}")],
                    "sn": ["Bench"],
                },
            });
            Message {
                id,
                body: body.to_string().into_bytes(),
            }
        })
        .collect()
}

/// Seeds the accounts of subjects `0..subjects`.
fn seed_subjects(mock: &MockTarget, subjects: usize) -> Vec<String> {
    let emails: Vec<String> = (0..subjects).map(|k| email(&subject(k))).collect();
    mock.seed(emails.iter().map(|e| (e.as_str(), "Seed", "Bench")));
    emails
}

/// The example provisioner aimed at the mock and a queue of this run.
fn provisioner_table(
    ctx: &Ctx<'_>,
    queue: &str,
    concurrency: u32,
    rate_limit_ms: u64,
    coalesce: bool,
) -> Result<toml::Table, BenchError> {
    let mut table: toml::Table = toml::from_str(EXAMPLE)
        .map_err(|e| BenchError::Setup(format!("provisioners/example.toml: {e}")))?;
    let mut set = |key: &str, value: toml::Value| {
        table.insert(key.into(), value);
    };
    set("name", toml::Value::String("bench".into()));
    set("url_prefix", toml::Value::String(ctx.mock_url.clone()));
    set("queue", toml::Value::String(queue.into()));
    set("concurrency", toml::Value::Integer(concurrency.into()));
    set(
        "account_sync_rate_limit_ms",
        toml::Value::Integer(i64::try_from(rate_limit_ms).unwrap_or(i64::MAX)),
    );
    // The full sync removes 1 % of the accounts on purpose; the guard's
    // share limit is well above that, but its absolute limit (500) is not.
    set("max_removal_share", toml::Value::Float(1.0));
    set("max_removals", toml::Value::Integer(0));
    // The seeded accounts were never created by this worker, and the bench
    // runs without a journal: the original's removals, as before ownership.
    set("remove_only_owned", toml::Value::Boolean(false));
    // Measurements 3 to 6 are about each event's own cost; coalescing,
    // which applies fewer events than arrive, is measured on its own (8).
    set("coalesce", toml::Value::Boolean(coalesce));
    Ok(table)
}

/// A worker run over `update` events.
#[derive(Debug, Clone)]
struct Spec {
    label: String,
    events: usize,
    subjects: usize,
    concurrency: u32,
    prefetch: u16,
    latency: Duration,
    rate_limit_ms: u64,
    /// The mock's own rate limit (0: none).
    mock_limit: u64,
    /// Whether to measure latency at half load after the throughput.
    latency_phase: bool,
    /// `coalesce` of the provisioner.
    coalesce: bool,
    /// Each subject's events queued one after the other instead of in
    /// turn with the other subjects'.
    by_subject: bool,
}

impl Default for Spec {
    fn default() -> Spec {
        Spec {
            label: String::new(),
            events: 0,
            subjects: 0,
            concurrency: DEFAULT_CONCURRENCY,
            prefetch: DEFAULT_PREFETCH,
            latency: Duration::ZERO,
            rate_limit_ms: 0,
            mock_limit: 0,
            latency_phase: false,
            coalesce: false,
            by_subject: false,
        }
    }
}

/// The events are published before the worker starts, so that the
/// throughput is the worker's and not the publisher's: timed from the
/// worker's `consuming` line to its last settlement, CPU read from /proc at
/// both ends. Then, with `latency_phase`, a fifth as many events are
/// published at half that rate and timed one by one.
async fn worker_run(
    ctx: &mut Ctx<'_>,
    spec: &Spec,
) -> Result<(WorkerRun, Vec<Instant>), BenchError> {
    let mock = ctx.mock.clone();
    mock.reset();
    mock.set_latency(spec.latency);
    mock.set_rate_limit(spec.mock_limit);
    seed_subjects(&mock, spec.subjects);
    let queue = ctx.broker.fresh_queue(&spec.label).await?;
    let mut messages = update_messages(&spec.label, spec.events, spec.subjects, 0);
    if spec.by_subject {
        // Each subject's events one after the other, oldest first.
        let subjects = spec.subjects.max(1);
        let mut indexed: Vec<(usize, Message)> = messages.into_iter().enumerate().collect();
        indexed.sort_by_key(|(i, _)| (i % subjects, *i));
        messages = indexed.into_iter().map(|(_, m)| m).collect();
    }
    ctx.broker.publish_all(&queue, &messages).await?;

    let provisioner = provisioner_table(
        ctx,
        &queue,
        spec.concurrency,
        spec.rate_limit_ms,
        spec.coalesce,
    )?;
    let dir = ctx.options.work_dir.join(&spec.label);
    let worker_file = write_config(
        &dir,
        &ctx.amqp_url,
        spec.prefetch,
        DEFAULT_MAX_EVENT_BYTES,
        &provisioner,
    )?;
    mock.reset_counts();
    let mut worker = WorkerProcess::spawn(
        &ctx.options.worker_exe,
        &ctx.options.worker_wrapper,
        &worker_file,
        &ctx.amqp_url,
        "worker",
    )?;
    let consuming = worker.wait_consuming(Duration::from_secs(60)).await?;
    let cpu_before = worker.cpu_time()?;
    let switches_before = worker.context_switches()?;
    let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
    let counter = mock.clone();
    let settled = worker
        .wait_settled(&ids, STALL, || counter.counts().total())
        .await?;
    let cpu = worker.cpu_time()?.saturating_sub(cpu_before);
    let switches = worker.context_switches()?.saturating_sub(switches_before);
    let calls = mock.counts();
    let arrivals = mock.arrivals();
    let mean_delay = mock.mean_delay();
    let last = settled.iter().map(|s| s.at).max().unwrap_or(consuming);
    let seconds = seconds_between(consuming, last).max(1e-6);
    let events_per_s = spec.events as f64 / seconds;
    let coalesced = settled.iter().filter(|s| s.result == "coalesced").count();
    let not_applied = settled
        .iter()
        .filter(|s| s.result != "applied" && s.result != "coalesced")
        .count();

    let (mut from_confirm, mut from_publish, mut latency_events) = (None, None, 0);
    let mut idle_cpu = None;
    if spec.latency_phase {
        let count = (spec.events / 5).max(20);
        let rate = (events_per_s / 2.0).max(1.0);
        let label = format!("{}-latency", spec.label);
        let messages = update_messages(&label, count, spec.subjects, spec.events);
        let times = ctx.broker.publish_paced(&queue, &messages, rate).await?;
        let ids: Vec<String> = messages.iter().map(|m| m.id.clone()).collect();
        let settled = worker
            .wait_settled(&ids, STALL, || counter.counts().total())
            .await?;
        let ms = |pick: fn(&(SystemTime, SystemTime)) -> SystemTime| {
            let mut v: Vec<f64> = times
                .iter()
                .zip(&settled)
                .map(|(t, s)| signed_ms(pick(t), s.at))
                .collect();
            quantiles(&mut v)
        };
        from_confirm = Some(ms(|t| t.1));
        from_publish = Some(ms(|t| t.0));
        latency_events = count;
        let idle_for = Duration::from_secs_f64((ctx.options.run_seconds / 3.0).clamp(0.3, 2.0));
        let before = worker.cpu_time()?;
        tokio::time::sleep(idle_for).await;
        let idle = worker.cpu_time()?.saturating_sub(before);
        idle_cpu = Some(idle.as_secs_f64() * 1000.0 / idle_for.as_secs_f64());
    }
    let peak_rss_bytes = worker.peak_rss()?;
    let worker_reconnections = worker.reconnections;
    worker.stop().await;
    ctx.broker.delete(&queue).await?;
    let run = WorkerRun {
        label: spec.label.clone(),
        events: spec.events,
        subjects: spec.subjects,
        concurrency: spec.concurrency,
        prefetch: spec.prefetch,
        latency_ms: spec.latency.as_secs_f64() * 1000.0,
        account_sync_rate_limit_ms: spec.rate_limit_ms,
        seconds,
        events_per_s,
        calls_per_event: calls.total() as f64 / spec.events.max(1) as f64,
        calls,
        not_applied,
        coalesced,
        reconnections: worker_reconnections,
        latency_from_confirm: from_confirm,
        latency_from_publish: from_publish,
        latency_events,
        cpu_us_per_event: cpu.as_secs_f64() * 1e6 / spec.events.max(1) as f64,
        context_switches_per_event: switches as f64 / spec.events.max(1) as f64,
        peak_rss_bytes,
        idle_cpu_ms_per_s: idle_cpu,
        mock_mean_delay_ms: mean_delay.map(|d| d.as_secs_f64() * 1000.0),
        ceiling_events_per_s: None,
        ratio_to_ceiling: None,
    };
    Ok((run, arrivals))
}

fn seconds_between(from: SystemTime, to: SystemTime) -> f64 {
    to.duration_since(from).map_or(0.0, |d| d.as_secs_f64())
}

/// `to - from` in milliseconds, negative when `to` is earlier.
fn signed_ms(from: SystemTime, to: SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

/// Nearest-rank p50 and p99.
fn quantiles(values: &mut [f64]) -> Quantiles {
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        if values.is_empty() {
            return 0.0;
        }
        let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
        values[i]
    };
    Quantiles {
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
    }
}

/// Measurement 2: look-ups and PATCHes, alternately, from `concurrency`
/// tasks sharing one reqwest client, against the seeded mock at latency 0.
async fn target_limit(
    ctx: &mut Ctx<'_>,
    requests: usize,
    concurrency: u32,
) -> Result<TargetLimit, BenchError> {
    let mock = &ctx.mock;
    mock.reset();
    mock.set_latency(Duration::ZERO);
    mock.set_rate_limit(0);
    let subjects = (requests / 2).max(1);
    let emails = seed_subjects(mock, subjects);
    let accounts: Arc<Vec<(String, String)>> = Arc::new(
        emails
            .iter()
            .filter_map(|e| mock.id_of(e).map(|id| (e.replace('@', "%40"), id)))
            .collect(),
    );
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| BenchError::Target(e.to_string()))?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, next, accounts) = (http.clone(), next.clone(), accounts.clone());
        let url = ctx.mock_url.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return Ok::<(), String>(());
                }
                let Some((email, id)) = accounts.get((i / 2) % accounts.len().max(1)) else {
                    return Err("no seeded account".into());
                };
                let request = if i % 2 == 0 {
                    http.get(format!("{url}/users/{email}"))
                } else {
                    http.patch(format!("{url}/users/{id}"))
                        .json(&json!({"first_name": format!("T{i}"), "last_name": "Bench"}))
                };
                let answer = request.send().await.map_err(|e| e.to_string())?;
                let status = answer.status();
                // The body is read as the worker would read it.
                answer.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("the mock answered {status}"));
                }
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Target(e.to_string()))?
            .map_err(BenchError::Target)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(TargetLimit {
        requests,
        concurrency,
        latency_ms: 0.0,
        seconds,
        requests_per_s: requests as f64 / seconds.max(1e-9),
    })
}

/// Measurement 6: cold subjects (look-up + PATCH each) at latency 0, with
/// `account_sync_rate_limit_ms`; the rate is read from when the calls
/// arrived at the mock, which also refuses (429) anything above 110 % of
/// the limit in any one second.
async fn rate_limit(ctx: &mut Ctx<'_>) -> Result<RateLimitRun, BenchError> {
    let o = ctx.options;
    let period_ms = o.rate_limit_ms.max(1);
    let limit = 1000.0 / period_ms as f64;
    let events = sized(limit * o.run_seconds / 2.0, 20, o.events);
    let mock_limit = (limit * 1.1).ceil() as u64;
    progress(&format!(
        "6. rate limit: {events} events, account_sync_rate_limit_ms = {period_ms}"
    ));
    let spec = Spec {
        label: "rate-limit".into(),
        events,
        subjects: events,
        rate_limit_ms: period_ms,
        mock_limit,
        ..Spec::default()
    };
    let (run, arrivals) = worker_run(ctx, &spec).await?;
    let achieved = match (arrivals.first(), arrivals.last()) {
        (Some(first), Some(last)) if arrivals.len() > 1 => {
            (arrivals.len() - 1) as f64 / last.duration_since(*first).as_secs_f64().max(1e-9)
        }
        _ => 0.0,
    };
    Ok(RateLimitRun {
        limit_calls_per_s: limit,
        achieved_calls_per_s: achieved,
        peak_calls_in_any_second: peak_in_window(&arrivals, Duration::from_secs(1)),
        mock_limit_per_s: mock_limit,
        rejected_429: run.calls.rate_limited,
        run,
    })
}

/// The mock's limit for measurement 9, calls per second.
const ADAPTIVE_LIMIT: u64 = 40;

/// Measurement 9: cold subjects (look-up + PATCH each) at latency 0, no
/// configured rate limit and the `[pacing]` defaults, against the mock
/// refusing (429, `Retry-After: 1`) every call above [`ADAPTIVE_LIMIT`] in
/// any one second. Events enough for about four times `run_seconds` (at
/// least 5 s): the pace needs a few seconds to find the limit.
async fn adaptive(ctx: &mut Ctx<'_>) -> Result<AdaptiveRun, BenchError> {
    let o = ctx.options;
    let limit = ADAPTIVE_LIMIT;
    let seconds = (o.run_seconds * 4.0).max(5.0);
    // Look-up + PATCH per event, at about 0.8 of the limit.
    let events = sized(limit as f64 * 0.8 * seconds / 2.0, 20, o.events);
    progress(&format!(
        "9. adaptive pacing: {events} events, target limit {limit} calls/s"
    ));
    let spec = Spec {
        label: "adaptive".into(),
        events,
        subjects: events,
        mock_limit: limit,
        ..Spec::default()
    };
    let (run, arrivals) = worker_run(ctx, &spec).await?;
    let refusals = ctx.mock.refusals();
    let (achieved, settled) = match (arrivals.first(), arrivals.last()) {
        (Some(&first), Some(&last)) if arrivals.len() > 1 => {
            let whole = last.duration_since(first);
            let middle = first + whole / 2;
            let accepted_since = |from: Instant| {
                let all = arrivals.iter().filter(|t| **t >= from).count();
                let refused = refusals.iter().filter(|t| **t >= from).count();
                all.saturating_sub(refused) as f64
            };
            (
                accepted_since(first) / whole.as_secs_f64().max(1e-9),
                accepted_since(middle) / (last - middle).as_secs_f64().max(1e-9),
            )
        }
        _ => (0.0, 0.0),
    };
    let rejected = run.calls.rate_limited;
    Ok(AdaptiveRun {
        target_limit_per_s: limit,
        achieved_calls_per_s: achieved,
        settled_calls_per_s: settled,
        ratio: settled / limit as f64,
        rejected_429: rejected,
        rejected_share: rejected as f64 / run.calls.total().max(1) as f64,
        run,
    })
}

/// The most instants within any half-open window of `width`.
fn peak_in_window(sorted: &[Instant], width: Duration) -> usize {
    let mut start = 0;
    let mut peak = 0;
    for (end, t) in sorted.iter().enumerate() {
        while t.duration_since(sorted[start]) >= width {
            start += 1;
        }
        peak = peak.max(end + 1 - start);
    }
    peak
}

/// Measurement 7: one account `membership_sync` of `subjects` against a
/// target that holds them with 1 % missing, 1 % extra and 1 % changed.
async fn sync_run(ctx: &mut Ctx<'_>, subjects: usize) -> Result<SyncRun, BenchError> {
    let mock = ctx.mock.clone();
    mock.reset();
    mock.set_latency(Duration::ZERO);
    mock.set_rate_limit(0);
    let name = |i: usize| format!("sync-{i:07}");
    let (mut to_create, mut to_change) = (0, 0);
    let mut seeded: Vec<(String, String, String)> = Vec::with_capacity(subjects);
    for i in 0..subjects {
        match i % 100 {
            0 => to_create += 1,
            1 => {
                to_change += 1;
                seeded.push((email(&name(i)), "Changed".into(), format!("S{i}")));
            }
            _ => seeded.push((email(&name(i)), "Given".into(), format!("S{i}"))),
        }
    }
    let to_remove = subjects / 100;
    for j in 0..to_remove {
        seeded.push((
            format!("extra-{j:07}@example.edu"),
            "Extra".into(),
            "Account".into(),
        ));
    }
    mock.seed(
        seeded
            .iter()
            .map(|(e, f, l)| (e.as_str(), f.as_str(), l.as_str())),
    );
    let target_accounts_before = mock.len();
    drop(seeded);

    let id = format!("sync-{subjects}");
    let mut attributes = Map::with_capacity(subjects);
    let mut listed = Vec::with_capacity(subjects);
    for i in 0..subjects {
        let s = name(i);
        attributes.insert(
            s.clone(),
            json!({"mail": [email(&s)], "givenName": ["Given"], "sn": [format!("S{i}")]}),
        );
        listed.push(Value::String(s));
    }
    let body = json!({
        "id": id,
        "action": "membership_sync",
        "group": PROVISION_GROUP,
        "subjects": listed,
        "attributes": attributes,
    })
    .to_string()
    .into_bytes();
    let event_bytes = body.len();
    let message = Message {
        id: id.clone(),
        body,
    };

    let label = format!("sync-{subjects}");
    let queue = ctx.broker.fresh_queue(&label).await?;
    let provisioner = provisioner_table(ctx, &queue, DEFAULT_CONCURRENCY, 0, false)?;
    let dir = ctx.options.work_dir.join(&label);
    let worker_file = write_config(
        &dir,
        &ctx.amqp_url,
        DEFAULT_PREFETCH,
        DEFAULT_MAX_EVENT_BYTES.max(2 * event_bytes),
        &provisioner,
    )?;
    let mut worker = WorkerProcess::spawn(
        &ctx.options.worker_exe,
        &ctx.options.worker_wrapper,
        &worker_file,
        &ctx.amqp_url,
        "worker",
    )?;
    worker.wait_consuming(Duration::from_secs(60)).await?;
    let cpu_before = worker.cpu_time()?;
    mock.reset_counts();
    let confirmed = ctx.broker.publish_timed(&queue, &message).await?;
    drop(message);
    let counter = mock.clone();
    let settled: Vec<Settled> = worker
        .wait_settled(std::slice::from_ref(&id), STALL, || {
            counter.counts().total()
        })
        .await?;
    let cpu = worker.cpu_time()?.saturating_sub(cpu_before);
    let peak_rss_bytes = worker.peak_rss()?;
    let reconnections = worker.reconnections;
    worker.stop().await;
    ctx.broker.delete(&queue).await?;
    let calls = mock.counts();
    let (result, detail, at) = match settled.first() {
        Some(s) => (s.result.clone(), s.detail.clone(), s.at),
        None => (String::new(), String::new(), confirmed),
    };
    let pages = (target_accounts_before as u64).div_ceil(LIST_PAGE_SIZE);
    let minimum_calls = pages + (to_create + to_remove + to_change) as u64;
    let changed_one = (0..subjects).find(|i| i % 100 == 1).map(name);
    let target_correct = mock.len() == subjects
        && (0..subjects)
            .step_by(100)
            .all(|i| mock.id_of(&email(&name(i))).is_some())
        && mock.id_of("extra-0000000@example.edu").is_none()
        && changed_one.is_none_or(|s| mock.first_name(&email(&s)).as_deref() == Some("Given"));
    Ok(SyncRun {
        subjects,
        event_bytes,
        target_accounts_before,
        to_create,
        to_remove,
        to_change,
        seconds: seconds_between(confirmed, at),
        calls_total: calls.total(),
        calls_over_minimum: calls.total() as f64 / minimum_calls.max(1) as f64,
        calls,
        minimum_calls,
        cpu_seconds: cpu.as_secs_f64(),
        peak_rss_bytes,
        result,
        detail,
        target_correct,
        reconnections,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let q = quantiles(&mut v);
        assert_eq!((q.p50_ms, q.p99_ms), (50.0, 99.0));
        let q = quantiles(&mut [7.0]);
        assert_eq!((q.p50_ms, q.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn the_peak_counts_calls_within_one_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let calls = [
            at(0),
            at(10),
            at(500),
            at(999),
            at(1000),
            at(1001),
            at(3000),
        ];
        assert_eq!(peak_in_window(&calls, Duration::from_secs(1)), 5);
    }

    #[test]
    fn update_events_cycle_over_the_subjects() {
        let m = update_messages("t", 4, 2, 10);
        let bodies: Vec<Value> = m
            .iter()
            .map(|m| serde_json::from_slice(&m.body).unwrap())
            .collect();
        assert_eq!(m[0].id, "t-10");
        assert_eq!(bodies[0]["subject"], "bench-0000000");
        assert_eq!(bodies[1]["subject"], "bench-0000001");
        assert_eq!(bodies[2]["subject"], "bench-0000000");
        assert_eq!(bodies[3]["attributes"]["givenName"][0], "G13");
    }
}
