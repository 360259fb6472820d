//! Adaptive pacing through the engine (paused time): against a target that
//! refuses (429) every call above R accepted in any one second, the engine,
//! driven the way a consumer drives it (no more events at once than the
//! pace allows), settles near R with few refusals.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use tokio::task::JoinSet;

use super::*;

/// A target that accepts at most `limit` calls in any one-second window
/// and answers the others 429 (with `Retry-After` when set); every answer
/// takes `latency`. Look-ups find every account; updates succeed.
struct ThrottlingTarget {
    limit: AtomicUsize,
    latency: Duration,
    retry_after: Option<Duration>,
    accepted: Mutex<VecDeque<Instant>>,
    /// Every call: when it arrived and whether it was accepted.
    calls: Mutex<Vec<(Instant, bool)>>,
}

impl ThrottlingTarget {
    fn new(limit: usize, latency: Duration, retry_after: Option<Duration>) -> Self {
        ThrottlingTarget {
            limit: AtomicUsize::new(limit),
            latency,
            retry_after,
            accepted: Mutex::new(VecDeque::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    async fn answer(&self, op: &str) -> TargetResult<()> {
        let now = Instant::now();
        let admitted = {
            let mut accepted = lock(&self.accepted);
            while accepted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                accepted.pop_front();
            }
            let admitted = accepted.len() < self.limit.load(AtomicOrdering::Relaxed);
            if admitted {
                accepted.push_back(now);
            }
            admitted
        };
        lock(&self.calls).push((now, admitted));
        tokio::time::sleep(self.latency).await;
        if admitted {
            Ok(())
        } else {
            Err(TargetError::from_status(
                op,
                429,
                "too many requests",
                self.retry_after,
            ))
        }
    }

    /// Accepted calls per second and the share refused, over `[from, to)`.
    fn measured(&self, from: Instant, to: Instant) -> (f64, f64) {
        let calls = lock(&self.calls);
        let within: Vec<bool> = calls
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, ok)| *ok)
            .collect();
        let accepted = within.iter().filter(|ok| **ok).count();
        let refused = within.len() - accepted;
        (
            accepted as f64 / (to - from).as_secs_f64(),
            refused as f64 / within.len().max(1) as f64,
        )
    }
}

fn not_simulated() -> TargetError {
    TargetError::permanent("not simulated by ThrottlingTarget")
}

#[async_trait]
impl TargetApi for ThrottlingTarget {
    fn match_value(&self, subject: &str, _attributes: &Attributes) -> TargetResult<String> {
        Ok(subject.to_lowercase())
    }

    async fn lookup_account(&self, ctx: &SubjectContext) -> TargetResult<Option<Found>> {
        self.answer("lookup").await?;
        Ok(Some(Found {
            api_id: format!("u-{}", ctx.match_value),
            in_step: false,
        }))
    }

    async fn create_account(&self, _ctx: &SubjectContext) -> TargetResult<Created> {
        Err(not_simulated())
    }

    async fn update_account(&self, _api_id: &str, _ctx: &SubjectContext) -> TargetResult<()> {
        self.answer("update").await
    }

    async fn deprovision_account(
        &self,
        _api_id: &str,
        _ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        Err(not_simulated())
    }

    async fn list_accounts(
        &self,
        _desired: Option<Desired<'_>>,
    ) -> TargetResult<Vec<RemoteAccount>> {
        Err(not_simulated())
    }

    async fn list_groups(&self) -> TargetResult<Vec<RemoteGroup>> {
        Err(not_simulated())
    }

    async fn list_members(&self, _group_id: &str) -> TargetResult<Vec<RemoteAccount>> {
        Err(not_simulated())
    }

    async fn add_member(
        &self,
        _group: &RemoteGroup,
        _api_id: &str,
        _ctx: &SubjectContext,
    ) -> TargetResult<()> {
        Err(not_simulated())
    }

    async fn remove_member(
        &self,
        _group: &RemoteGroup,
        _api_id: &str,
        _ctx: &SubjectContext,
    ) -> TargetResult<Removal> {
        Err(not_simulated())
    }
}

/// What a run measured over its second half.
#[derive(Debug)]
struct Settled {
    calls_per_s: f64,
    refused_share: f64,
    throttled: u64,
}

/// An engine over `target` with `[pacing]` set to `pacing`.
fn paced(pacing: &str, target: &Arc<ThrottlingTarget>) -> (Arc<Engine>, ProvisionerConfig) {
    let config = config(&format!(
        "provision_group = \"{PG}\"\nconcurrency = 8\n[pacing]\n{pacing}"
    ));
    (Arc::new(Engine::new(&config, target.clone())), config)
}

/// Applies update events of fresh subjects (look-up + update each) for
/// `run`, keeping as many in flight as the consumer would: `concurrency`,
/// or what adaptive pacing allows when it is on. Failed events are not
/// retried (retries would only add calls at the same pace).
async fn drive(engine: &Arc<Engine>, config: &ProvisionerConfig, run: Duration) {
    let pace = engine.pacing();
    let end = Instant::now() + run;
    let mut tasks = JoinSet::new();
    let mut next = 0;
    while Instant::now() < end {
        let allowed = pace
            .as_ref()
            .map_or(config.concurrency, |p| p.concurrency())
            .min(config.concurrency);
        while tasks.len() < allowed {
            let (engine, event) = (engine.clone(), one("update", PG, &format!("s{next}")));
            next += 1;
            tasks.spawn(async move { engine.apply(&event).await.is_ok() });
        }
        tasks.join_next().await;
    }
    tasks.abort_all();
}

/// Runs for `run` and measures the second half.
async fn settle(pacing: &str, target: Arc<ThrottlingTarget>, run: Duration) -> Settled {
    let (engine, config) = paced(pacing, &target);
    let start = Instant::now();
    drive(&engine, &config, run).await;
    let (calls_per_s, refused_share) = target.measured(start + run / 2, start + run);
    Settled {
        calls_per_s,
        refused_share,
        throttled: engine.pacing().map_or(0, |p| p.snapshot().throttled),
    }
}

#[tokio::test(start_paused = true)]
async fn against_a_throttling_target_the_rate_settles_near_its_limit_with_few_429s() {
    const LIMIT: usize = 20;
    for (what, retry_after, low) in [
        ("429 alone", None, 0.75),
        // Each throttling holds every call for the second the target
        // names, which costs a little more of the rate.
        ("429 with Retry-After: 1", Some(Duration::from_secs(1)), 0.7),
    ] {
        let target = Arc::new(ThrottlingTarget::new(
            LIMIT,
            Duration::from_millis(20),
            retry_after,
        ));
        let settled = settle("", target, Duration::from_secs(240)).await;
        let ratio = settled.calls_per_s / LIMIT as f64;
        assert!(
            (low..=1.0).contains(&ratio),
            "{what}: {settled:?}, {ratio:.2} of the limit"
        );
        assert!(
            settled.refused_share < 0.03,
            "{what}: {settled:?}: too many refused"
        );
        assert!(settled.throttled > 0, "{what}: the limit was found");
    }
}

#[tokio::test(start_paused = true)]
async fn without_adaptive_pacing_the_same_target_refuses_most_calls() {
    let target = Arc::new(ThrottlingTarget::new(20, Duration::from_millis(20), None));
    let settled = settle("adaptive = false", target, Duration::from_secs(20)).await;
    assert!(
        settled.refused_share > 0.5,
        "{settled:?}: the comparison shows nothing"
    );
    assert_eq!(
        settled.throttled, 0,
        "nothing counts without adaptive pacing"
    );
}

#[tokio::test(start_paused = true)]
async fn the_pace_climbs_back_when_the_target_stops_throttling() {
    let target = Arc::new(ThrottlingTarget::new(5, Duration::from_millis(20), None));
    let (engine, config) = paced("", &target);
    let Some(pace) = engine.pacing() else {
        panic!("adaptive pacing is on by default");
    };
    drive(&engine, &config, Duration::from_secs(30)).await;
    let throttled = pace.snapshot();
    assert!(
        throttled.rate.is_some_and(|r| r <= 6.0) && throttled.concurrency < 8,
        "{throttled:?}"
    );
    target.limit.store(usize::MAX, AtomicOrdering::Relaxed);
    drive(&engine, &config, Duration::from_secs(30)).await;
    let recovered = pace.snapshot();
    assert_eq!(recovered.concurrency, 8, "{recovered:?}");
    // About `increase` (1 call/s) more for each of the 30 s.
    assert!(recovered.rate.is_some_and(|r| r >= 25.0), "{recovered:?}");
}
