//! The worker: `run(config, shutdown)` starts one consumer task per
//! consumed queue and one prober per provisioner, and returns when every task
//! has drained after `shutdown`. Every event's outcome is logged once,
//! counted in the metrics and broadcast to observers (the journal, the demo,
//! tests); each provisioner's live state is in its [`ProvisionerStatus`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ProvisionerConfig};
use crate::engine::health::{HealthPolicy, TargetHealth};
use crate::engine::Provisioner;
use crate::journal::Journal;
use crate::metrics::{Metrics, Sample, SampleKind, SampleSource};

pub mod coalesce;
mod consumer;
pub mod order;
pub mod status;

pub use status::{ConsumerState, ProvisionerStatus};

/// How an event ended for one provisioner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    Ignored,
    DeadLettered,
    /// Given back to the broker unsettled: its target is down. It comes
    /// again later.
    Returned,
    /// Acknowledged with a later event of its subject, whose effect stands
    /// for both (`coalesce`).
    Coalesced,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Ignored => "ignored",
            Verdict::DeadLettered => "dead-lettered",
            Verdict::Returned => "returned",
            Verdict::Coalesced => "coalesced",
        }
    }
}

/// One event's outcome, as logged and broadcast.
#[derive(Debug, Clone)]
pub struct OutcomeRecord {
    pub provisioner: String,
    pub event_id: String,
    /// `None` when the body was not a valid event.
    pub action: Option<String>,
    pub group: Option<String>,
    pub subject: Option<String>,
    pub verdict: Verdict,
    pub detail: String,
    pub attempts: u32,
    pub api_calls: u32,
    pub duration: Duration,
    pub redelivered: bool,
    /// When it was settled.
    pub at: std::time::SystemTime,
    /// The target calls the event made (the first ones, and how many more).
    pub calls: crate::call_log::CallLog,
}

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no provisioners configured")]
    NoProvisioners,
}

/// A configured worker, ready to run.
pub struct Worker {
    config: Config,
    provisioners: Vec<(ProvisionerConfig, Arc<ProvisionerStatus>)>,
    outcomes: broadcast::Sender<OutcomeRecord>,
    metrics: Arc<Metrics>,
    journal: Option<Journal>,
}

impl Worker {
    /// A worker over its configuration's provisioners, each already built
    /// (by `assembly`, or by tests with their own).
    pub fn with_provisioners(
        config: Config,
        provisioners: Vec<(ProvisionerConfig, Arc<dyn Provisioner>)>,
    ) -> Result<Self, WorkerError> {
        if provisioners.is_empty() {
            return Err(WorkerError::NoProvisioners);
        }
        let (outcomes, _) = broadcast::channel(4096);
        let provisioners: Vec<(ProvisionerConfig, Arc<ProvisionerStatus>)> = provisioners
            .into_iter()
            .map(|(p, built)| {
                let health = Arc::new(TargetHealth::new(HealthPolicy {
                    first_probe: p.retry.probe_first,
                    max_probe_interval: p.retry.probe_max,
                    ..HealthPolicy::default()
                }));
                let queues = crate::amqp::Topology::of(&p, &config.amqp).consumed();
                let status = Arc::new(ProvisionerStatus::new(&p.name, health, built, &queues));
                (p, status)
            })
            .collect();
        let statuses = provisioners.iter().map(|(_, s)| s.clone()).collect();
        let metrics = Arc::new(Metrics::new(vec![Arc::new(status::StatusSamples(
            statuses,
        ))]));
        Ok(Worker {
            config,
            provisioners,
            outcomes,
            metrics,
            journal: None,
        })
    }

    /// Keeps every outcome in `journal` from now on (its dropped rows count
    /// in the metrics).
    pub fn set_journal(&mut self, journal: Journal) {
        self.metrics
            .add_source(Arc::new(JournalSamples(journal.clone())));
        self.journal = Some(journal);
    }

    /// Every outcome from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<OutcomeRecord> {
        self.outcomes.subscribe()
    }

    /// Each provisioner's live state (pause and resume go through it).
    pub fn statuses(&self) -> Vec<Arc<ProvisionerStatus>> {
        self.provisioners.iter().map(|(_, s)| s.clone()).collect()
    }

    /// The process's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The configuration the worker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Consumes until `shutdown`, then drains: in-flight events finish within
    /// the grace period or are returned to the queue.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for (config, status) in self.provisioners {
            let health = status.health().clone();
            let provisioner = status.provisioner().clone();
            let span = tracing::info_span!("prober", provisioner = %config.name);
            tasks.spawn(tracing::Instrument::instrument(
                probe_while_down(
                    health.clone(),
                    provisioner.clone(),
                    probe_timeout(&config),
                    shutdown.clone(),
                ),
                span,
            ));
            let topology = crate::amqp::Topology::of(&config, &self.config.amqp);
            for queue in topology.consumed() {
                let ctx = consumer::ConsumerContext {
                    amqp: self.config.amqp.clone(),
                    grace: self.config.shutdown_grace,
                    config: config.clone(),
                    topology: topology.clone(),
                    queue: queue.clone(),
                    provisioner: provisioner.clone(),
                    outcomes: self.outcomes.clone(),
                    health: health.clone(),
                    refused_parks: Arc::new(consumer::RefusedParks::new()),
                    status: status.clone(),
                    metrics: self.metrics.clone(),
                    calls: self.metrics.calls_of(&config.name),
                    journal: self.journal.clone(),
                    coalescing: coalesce::Coalescing::of(&config),
                };
                let span = tracing::info_span!("consumer", provisioner = %config.name, %queue);
                let stop = shutdown.clone();
                tasks.spawn(tracing::Instrument::instrument(supervise(ctx, stop), span));
            }
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "a consumer task ended abnormally");
            }
        }
    }
}

/// The journal's dropped rows, as the metrics read them.
struct JournalSamples(Journal);

impl SampleSource for JournalSamples {
    fn samples(&self) -> Vec<Sample> {
        vec![Sample {
            name: "journal_rows_dropped",
            help: "Outcomes the journal could not keep (its queue full, or its store failing); events are never held up for it",
            kind: SampleKind::Counter,
            labels: Vec::new(),
            value: self.0.dropped() as f64,
        }]
    }
}

/// Runs a consumer until `shutdown`, restarting it should it ever panic: a
/// bug must not silently stop a provisioner for good.
async fn supervise(ctx: consumer::ConsumerContext, shutdown: CancellationToken) {
    loop {
        let task = tokio::spawn(tracing::Instrument::in_current_span(consumer::consume(
            ctx.clone(),
            shutdown.clone(),
        )));
        match task.await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "consumer crashed; restarting it in 1 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// A probe is one read, but through the auth layer (a token fetch) and
/// failover: give it a few call timeouts.
fn probe_timeout(config: &ProvisionerConfig) -> Duration {
    config.timeout * 3
}

/// While the target is down, asks it at growing intervals whether it
/// answers; the first answer brings the provisioner's consumers back. Each
/// probe runs as its own task holding the probe slot, so an aborted or
/// panicking probe frees the slot and probing goes on.
async fn probe_while_down(
    health: Arc<TargetHealth>,
    provisioner: Arc<dyn Provisioner>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut up = health.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = up.wait_for(|up| !*up) => if changed.is_err() { return },
        }
        while let Some(at) = health.next_probe_at() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(at) => {}
            }
            let Some(guard) = health.begin_probe() else {
                continue;
            };
            let provisioner = provisioner.clone();
            let probe = tokio::spawn(async move {
                match tokio::time::timeout(timeout, provisioner.probe()).await {
                    Ok(Ok(())) => guard.answered(),
                    // Refused with an answer is still an answer.
                    Ok(Err(e)) if !e.is_transient() => guard.answered(),
                    Ok(Err(e)) => guard.failed(crate::bounded::detail(&e.to_string())),
                    Err(_) => guard.failed(format!("no answer within {} s", timeout.as_secs())),
                }
            });
            if let Err(e) = probe.await {
                tracing::error!(error = %e, "a probe task ended abnormally; probing goes on");
            }
        }
    }
}
