//! What a benchmark run found: [`Report`], serialised as JSON (`--json`)
//! or rendered as a table. A measurement not taken (`--only`) is `null`.

use std::fmt::Write as _;

use serde::Serialize;

use super::broker::BrokerLimit;
use super::mock::CallCounts;

/// Everything one run measured, and where.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: Machine,
    /// The sizes and settings of the run.
    pub settings: Settings,
    /// 1. The broker alone.
    pub broker_limit: Option<BrokerLimit>,
    /// 2. The mock target alone.
    pub target_limit: Option<TargetLimit>,
    /// 3. The worker end to end at latency 0: subjects = events, then events / 10.
    pub worker: Option<Vec<WorkerRun>>,
    /// 4. Latency hiding at the configured latency: concurrency 8, then 64.
    pub latency_hiding: Option<Vec<HidingRun>>,
    /// 5. Prefetch 1, concurrency 1, at the same latency.
    pub original_model: Option<OriginalModel>,
    /// 6. `account_sync_rate_limit_ms` as the target sees it.
    pub rate_limit: Option<RateLimitRun>,
    /// 7. Account `membership_sync`s, one per size.
    pub full_sync: Option<Vec<SyncRun>>,
    /// 8. A backlog of updates (10 per subject), with and without coalescing.
    pub coalescing: Option<Coalescing>,
    /// 9. Adaptive pacing against a target that refuses (429) above its limit.
    pub adaptive: Option<AdaptiveRun>,
}

/// Measurement 9: cold subjects (look-up + PATCH each) at latency 0, no
/// configured rate limit, `[pacing]` defaults, against the mock refusing
/// (429, `Retry-After: 1`) every call above its limit in any one second.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptiveRun {
    pub run: WorkerRun,
    /// The mock's limit, calls accepted per second.
    pub target_limit_per_s: u64,
    /// Accepted calls per second from the first call to the last.
    pub achieved_calls_per_s: f64,
    /// Accepted calls per second over the second half of that time.
    pub settled_calls_per_s: f64,
    /// settled_calls_per_s / target_limit_per_s.
    pub ratio: f64,
    /// Calls the mock refused with 429.
    pub rejected_429: u64,
    /// Refused calls / all calls.
    pub rejected_share: f64,
}

/// 8. The same backlog applied with `coalesce = false`, then `true`.
#[derive(Debug, Clone, Serialize)]
pub struct Coalescing {
    pub without: WorkerRun,
    pub with: WorkerRun,
    /// Events per target call with coalescing.
    pub events_per_call: f64,
    /// Calls without / calls with.
    pub fewer_calls: f64,
}

/// The machine, as far as it matters to the numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Cores this process may use.
    pub cores: usize,
    /// The broker's URL, password hidden.
    pub broker: String,
    /// Whether the executable was built with optimisations.
    pub release_build: bool,
    /// The 1-minute load average when the run began and when it ended:
    /// other work on the machine takes CPU from the measurements.
    pub load_at_start: Option<f64>,
    pub load_at_end: Option<f64>,
}

/// The sizes and settings a run used.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    pub events: usize,
    pub sync_subjects: Vec<usize>,
    pub latency_ms: f64,
    pub rate_limit_ms: u64,
    pub run_seconds: f64,
}

/// 2. Bare HTTP requests at the worker's concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct TargetLimit {
    /// Requests made: look-ups and PATCHes, alternately.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// The mock's latency.
    pub latency_ms: f64,
    pub seconds: f64,
    pub requests_per_s: f64,
}

/// Publish-to-settlement latency quantiles, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// One run of the worker over `update` events.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRun {
    pub label: String,
    pub events: usize,
    pub subjects: usize,
    pub concurrency: u32,
    pub prefetch: u16,
    pub latency_ms: f64,
    pub account_sync_rate_limit_ms: u64,
    /// From the worker's `consuming` line to its last settlement.
    pub seconds: f64,
    pub events_per_s: f64,
    /// Requests the target answered during the run, by kind.
    pub calls: CallCounts,
    pub calls_per_event: f64,
    /// Events not applied (parked or ignored; coalesced ones count as
    /// applied): 0 in a sound run.
    pub not_applied: usize,
    /// Events applied as part of a later one of their subject (coalescing).
    pub coalesced: usize,
    /// Times the worker lost its broker connection during the run (0 in a
    /// sound run; otherwise the numbers include redeliveries).
    pub reconnections: usize,
    /// Latency of events published at half the measured rate, from the
    /// publish confirm to the worker's settlement (measurement 3 only).
    pub latency_from_confirm: Option<Quantiles>,
    /// The same from the moment the event was handed to the broker.
    pub latency_from_publish: Option<Quantiles>,
    /// Events the latency figures are taken over.
    pub latency_events: usize,
    /// Worker CPU (user + system) during the run, per event.
    pub cpu_us_per_event: f64,
    /// The worker's context switches during the run (all threads), per event.
    pub context_switches_per_event: f64,
    /// The worker process's peak resident memory (VmHWM).
    pub peak_rss_bytes: u64,
    /// The worker's CPU per second of wall time while it has nothing to do,
    /// after the run (measurement 3 only).
    pub idle_cpu_ms_per_s: Option<f64>,
    /// What the mock's delay came to on average (tokio's timer rounds each
    /// sleep up to the next millisecond), when there was one.
    pub mock_mean_delay_ms: Option<f64>,
    /// min(broker limit, target limit / calls per event), when both limits were measured.
    pub ceiling_events_per_s: Option<f64>,
    /// events_per_s / ceiling.
    pub ratio_to_ceiling: Option<f64>,
}

/// 4. A run at the configured latency against its ideal rate.
#[derive(Debug, Clone, Serialize)]
pub struct HidingRun {
    pub run: WorkerRun,
    /// concurrency / (calls per event × latency).
    pub ideal_events_per_s: f64,
    /// events_per_s / ideal.
    pub ratio: f64,
    /// The ideal with the mock's actual mean delay instead of the latency
    /// asked for: what is left is the worker's own.
    pub ideal_at_actual_delay: Option<f64>,
    /// events_per_s / ideal_at_actual_delay.
    pub ratio_at_actual_delay: Option<f64>,
}

/// 5. The original's model against the default.
#[derive(Debug, Clone, Serialize)]
pub struct OriginalModel {
    pub run: WorkerRun,
    /// 1 / (calls per event × latency).
    pub ideal_events_per_s: f64,
    /// The default (concurrency 8, prefetch 64) at the same latency, from measurement 4.
    pub default_events_per_s: Option<f64>,
    /// default / original.
    pub speedup: Option<f64>,
}

/// 6. Calls per second at the target under `account_sync_rate_limit_ms`.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitRun {
    pub run: WorkerRun,
    /// 1000 / account_sync_rate_limit_ms.
    pub limit_calls_per_s: f64,
    /// Calls after the first over the time from the first to the last.
    pub achieved_calls_per_s: f64,
    /// The most calls that arrived within any one second.
    pub peak_calls_in_any_second: usize,
    /// The mock's own limit (429 above it): a little above the worker's, so
    /// that only a worker that exceeds its limit is refused.
    pub mock_limit_per_s: u64,
    /// Calls the mock refused with 429.
    pub rejected_429: u64,
}

/// 7. One account `membership_sync`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncRun {
    pub subjects: usize,
    /// The event's body.
    pub event_bytes: usize,
    /// Accounts on the target before the sync.
    pub target_accounts_before: usize,
    /// Subjects to create, accounts to remove, accounts with a changed attribute.
    pub to_create: usize,
    pub to_remove: usize,
    pub to_change: usize,
    /// From the publish confirm to the worker's settlement.
    pub seconds: f64,
    /// Requests the target answered, by kind.
    pub calls: CallCounts,
    pub calls_total: u64,
    /// Pages of the listing + creates + removals + real changes.
    pub minimum_calls: u64,
    /// calls_total / minimum_calls.
    pub calls_over_minimum: f64,
    /// Worker CPU during the sync.
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// The settlement: `applied` in a sound run.
    pub result: String,
    /// The worker's own account of it.
    pub detail: String,
    /// The target ended with exactly the listed subjects, changes made.
    pub target_correct: bool,
    /// Times the worker lost its broker connection during the sync (0 in a
    /// sound run; otherwise the sync may have run more than once).
    pub reconnections: usize,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// The report as text tables, one section per measurement taken.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let s = &self.settings;
        let _ = writeln!(
            out,
            "provisioner bench: {} ({} cores), broker {}, {} build{}; load average {} at start, {} at end",
            m.cpu,
            m.cores,
            m.broker,
            if m.release_build { "release" } else { "debug" },
            if s.quick { ", --quick" } else { "" },
            opt(m.load_at_start, 2),
            opt(m.load_at_end, 2)
        );
        if let Some(b) = &self.broker_limit {
            let _ = writeln!(
                out,
                "\n1. Broker limit: bare lapin consumer, prefetch {}, {} events: {:.0} events/s",
                b.prefetch, b.events, b.events_per_s
            );
        }
        if let Some(t) = &self.target_limit {
            let _ = writeln!(
                out,
                "\n2. Target limit: bare reqwest, concurrency {}, {} requests, latency {} ms: {:.0} requests/s",
                t.concurrency, t.requests, t.latency_ms, t.requests_per_s
            );
        }
        if let Some(runs) = &self.worker {
            let _ = writeln!(
                out,
                "\n3. Worker end to end, latency 0, concurrency {}, prefetch {}",
                runs.first().map_or(0, |r| r.concurrency),
                runs.first().map_or(0, |r| r.prefetch)
            );
            let _ = writeln!(
                out,
                "   {:>8} {:>8} {:>9} {:>11} {:>8} {:>8} {:>10} {:>11} {:>12} {:>10} {:>9} {:>6}",
                "subjects",
                "events",
                "events/s",
                "calls/event",
                "p50 ms",
                "p99 ms",
                "CPU µs/ev",
                "switches/ev",
                "idle CPU ms/s",
                "peak RSS",
                "ceiling",
                "ratio"
            );
            for r in runs {
                let _ = writeln!(
                    out,
                    "   {:>8} {:>8} {:>9.0} {:>11.2} {:>8} {:>8} {:>10.0} {:>11.1} {:>12} {:>10} {:>9} {:>6}",
                    r.subjects,
                    r.events,
                    r.events_per_s,
                    r.calls_per_event,
                    opt(r.latency_from_publish.map(|q| q.p50_ms), 1),
                    opt(r.latency_from_publish.map(|q| q.p99_ms), 1),
                    r.cpu_us_per_event,
                    r.context_switches_per_event,
                    opt(r.idle_cpu_ms_per_s, 1),
                    mib(r.peak_rss_bytes),
                    opt(r.ceiling_events_per_s, 0),
                    opt(r.ratio_to_ceiling, 2)
                );
            }
            let confirm: Vec<String> = runs
                .iter()
                .map(|r| {
                    format!(
                        "{} / {}",
                        opt(r.latency_from_confirm.map(|q| q.p50_ms), 1),
                        opt(r.latency_from_confirm.map(|q| q.p99_ms), 1)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "   latency: {} events published at half the measured rate, from basic.publish to the worker's settlement;\n   from the publish confirm instead (p50 / p99 ms): {}",
                runs.first().map_or(0, |r| r.latency_events),
                confirm.join(", ")
            );
        }
        if let Some(runs) = &self.latency_hiding {
            let _ = writeln!(out, "\n4. Latency hiding, latency {} ms", s.latency_ms);
            let _ = writeln!(
                out,
                "   {:>11} {:>8} {:>7} {:>9} {:>11} {:>9} {:>6} {:>13} {:>10} {:>10} {:>11} {:>10}",
                "concurrency",
                "prefetch",
                "events",
                "events/s",
                "calls/event",
                "ideal",
                "ratio",
                "mock delay ms",
                "ratio@delay",
                "CPU µs/ev",
                "switches/ev",
                "peak RSS"
            );
            for h in runs {
                let r = &h.run;
                let _ = writeln!(
                    out,
                    "   {:>11} {:>8} {:>7} {:>9.1} {:>11.2} {:>9.1} {:>6.2} {:>13} {:>10} {:>10.0} {:>11.1} {:>10}",
                    r.concurrency,
                    r.prefetch,
                    r.events,
                    r.events_per_s,
                    r.calls_per_event,
                    h.ideal_events_per_s,
                    h.ratio,
                    opt(r.mock_mean_delay_ms, 2),
                    opt(h.ratio_at_actual_delay, 2),
                    r.cpu_us_per_event,
                    r.context_switches_per_event,
                    mib(r.peak_rss_bytes)
                );
            }
        }
        if let Some(o) = &self.original_model {
            let _ = writeln!(
                out,
                "\n5. Original model (prefetch 1, concurrency 1, latency {} ms): {:.1} events/s (ideal {:.1}), {:.0} CPU µs/event, {:.1} context switches/event; default {} events/s, speedup {}",
                s.latency_ms,
                o.run.events_per_s,
                o.ideal_events_per_s,
                o.run.cpu_us_per_event,
                o.run.context_switches_per_event,
                opt(o.default_events_per_s, 1),
                opt(o.speedup, 1)
            );
        }
        if let Some(r) = &self.rate_limit {
            let _ = writeln!(
                out,
                "\n6. Rate limit (account_sync_rate_limit_ms = {}, limit {:.0} calls/s): achieved {:.1} calls/s, at most {} calls in any second, {} refused by the mock (limit {}/s), {} calls",
                r.run.account_sync_rate_limit_ms,
                r.limit_calls_per_s,
                r.achieved_calls_per_s,
                r.peak_calls_in_any_second,
                r.rejected_429,
                r.mock_limit_per_s,
                r.run.calls.total()
            );
        }
        if let Some(runs) = &self.full_sync {
            let _ = writeln!(
                out,
                "\n7. Full sync (account membership_sync, 1 % create / 1 % remove / 1 % changed, latency 0)"
            );
            let _ = writeln!(
                out,
                "   {:>8} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>10} {:>8}",
                "subjects",
                "event",
                "seconds",
                "calls",
                "minimum",
                "pages",
                "POST",
                "PATCH",
                "DELETE",
                "x min",
                "peak RSS",
                "correct"
            );
            for r in runs {
                let _ = writeln!(
                    out,
                    "   {:>8} {:>9} {:>8.2} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7.2} {:>10} {:>8}",
                    r.subjects,
                    mib(r.event_bytes as u64),
                    r.seconds,
                    r.calls_total,
                    r.minimum_calls,
                    r.calls.pages,
                    r.calls.creates,
                    r.calls.updates,
                    r.calls.deletes,
                    r.calls_over_minimum,
                    mib(r.peak_rss_bytes),
                    if r.target_correct { "yes" } else { "NO" }
                );
            }
        }
        if let Some(c) = &self.coalescing {
            let _ = writeln!(
                out,
                "\n8. Coalescing ({} updates, {} per subject, queued before the worker starts): without {} calls, {:.0} events/s; with {} calls, {:.0} events/s ({} coalesced); {:.1} events per call, {:.1}x fewer calls",
                c.with.events,
                c.with.events / c.with.subjects.max(1),
                c.without.calls.total(),
                c.without.events_per_s,
                c.with.calls.total(),
                c.with.events_per_s,
                c.with.coalesced,
                c.events_per_call,
                c.fewer_calls
            );
        }
        if let Some(a) = &self.adaptive {
            let _ = writeln!(
                out,
                "\n9. Adaptive pacing (target refuses above {} calls/s, no rate limit configured, {} events): achieved {:.1} calls/s, {:.1} over the second half ({:.2} of the limit); {} refused (429), {:.1} % of the calls",
                a.target_limit_per_s,
                a.run.events,
                a.achieved_calls_per_s,
                a.settled_calls_per_s,
                a.ratio,
                a.rejected_429,
                a.rejected_share * 100.0
            );
        }
        let interrupted = self
            .worker
            .iter()
            .flatten()
            .map(|r| r.reconnections)
            .chain(
                self.latency_hiding
                    .iter()
                    .flatten()
                    .map(|h| h.run.reconnections),
            )
            .chain(self.original_model.iter().map(|o| o.run.reconnections))
            .chain(self.rate_limit.iter().map(|r| r.run.reconnections))
            .chain(self.full_sync.iter().flatten().map(|s| s.reconnections))
            .chain(self.adaptive.iter().map(|a| a.run.reconnections))
            .chain(
                self.coalescing
                    .iter()
                    .flat_map(|c| [c.without.reconnections, c.with.reconnections]),
            )
            .sum::<usize>();
        if interrupted > 0 {
            let _ = writeln!(
                out,
                "\nwarning: the worker lost its broker connection {interrupted} time(s) during the runs; their numbers include redeliveries"
            );
        }
        out
    }
}
