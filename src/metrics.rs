//! Prometheus metrics, through `prometheus-client`: counters and histograms
//! updated as events settle and calls end, plus values read when scraped
//! (cache statistics, target state, journal drops) from [`SampleSource`]s.
//! Served by the admin API at `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::call_log::{CallObserver, CallRecord};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    provisioner: String,
    action: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provisioner: String,
    operation: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    provisioner: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProvisionerLabels {
    provisioner: String,
}

fn call_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The process's metrics. Cheap to share (`Arc`); every update is lock-free
/// but for the first use of a label set.
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    call_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    retries: Family<ProvisionerLabels, Counter>,
    dead_letters: Family<ProvisionerLabels, Counter>,
    sampled: Arc<Sampled>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics, with `sources` read at every scrape.
    pub fn new(sources: Vec<Arc<dyn SampleSource>>) -> Self {
        let mut registry = Registry::with_prefix("provisioner");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Events settled, by provisioner, action and result (applied, ignored, dead-lettered, returned, coalesced)",
            events.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "target_calls",
            "Calls made to targets, by operation and HTTP status (`none`: no answer)",
            calls.clone(),
        );
        let call_seconds =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                call_histogram,
            );
        registry.register(
            "target_call_duration_seconds",
            "Duration of target calls, by operation",
            call_seconds.clone(),
        );
        let retries = Family::<ProvisionerLabels, Counter>::default();
        registry.register(
            "retries",
            "Attempts repeated after a transient failure",
            retries.clone(),
        );
        let dead_letters = Family::<ProvisionerLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Events parked in a dead-letter queue by the worker",
            dead_letters.clone(),
        );
        let sampled = Arc::new(Sampled(Mutex::new(sources)));
        registry.register_collector(Box::new(sampled.clone()));
        Metrics {
            registry,
            events,
            calls,
            call_seconds,
            retries,
            dead_letters,
            sampled,
        }
    }

    /// Adds a source of values read at every scrape.
    pub fn add_source(&self, source: Arc<dyn SampleSource>) {
        self.sampled
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// One settled event.
    pub fn event(&self, provisioner: &str, action: &str, result: &str) {
        self.events
            .get_or_create(&EventLabels {
                provisioner: provisioner.to_string(),
                action: action.to_string(),
                result: result.to_string(),
            })
            .inc();
        if result == "dead-lettered" {
            self.dead_letters
                .get_or_create(&ProvisionerLabels {
                    provisioner: provisioner.to_string(),
                })
                .inc();
        }
    }

    /// One attempt repeated.
    pub fn retry(&self, provisioner: &str) {
        self.retries
            .get_or_create(&ProvisionerLabels {
                provisioner: provisioner.to_string(),
            })
            .inc();
    }

    fn call(&self, provisioner: &str, call: &CallRecord) {
        let status = call
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into());
        self.calls
            .get_or_create(&CallLabels {
                provisioner: provisioner.to_string(),
                operation: call.operation.to_string(),
                status,
            })
            .inc();
        self.call_seconds
            .get_or_create(&OperationLabels {
                provisioner: provisioner.to_string(),
                operation: call.operation.to_string(),
            })
            .observe(call.duration.as_secs_f64());
    }

    /// A [`CallObserver`] that counts one provisioner's calls.
    pub fn calls_of(self: &Arc<Self>, provisioner: &str) -> Arc<dyn CallObserver> {
        Arc::new(ProvisionerCalls {
            metrics: self.clone(),
            provisioner: provisioner.to_string(),
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

struct ProvisionerCalls {
    metrics: Arc<Metrics>,
    provisioner: String,
}

impl CallObserver for ProvisionerCalls {
    fn observe(&self, call: &CallRecord) {
        self.metrics.call(&self.provisioner, call);
    }
}

/// Whether a sampled value only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Counter,
    Gauge,
}

/// A value read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Without the `provisioner_` prefix, and for counters without `_total`.
    pub name: &'static str,
    pub help: &'static str,
    pub kind: SampleKind,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

/// Something that has values to show at every scrape (the worker's
/// provisioners, the journal).
pub trait SampleSource: Send + Sync {
    fn samples(&self) -> Vec<Sample>;
}

struct Sampled(Mutex<Vec<Arc<dyn SampleSource>>>);

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sampled")
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_name: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        for source in sources.iter() {
            for s in source.samples() {
                by_name.entry(s.name).or_default().push(s);
            }
        }
        for (name, samples) in by_name {
            let (help, kind) = (samples[0].help, samples[0].kind);
            let metric_type = match kind {
                SampleKind::Counter => ConstCounter::new(0.0f64).metric_type(),
                SampleKind::Gauge => ConstGauge::new(0.0f64).metric_type(),
            };
            let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
            for s in &samples {
                let labels: Vec<(&str, &str)> =
                    s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let metric = family.encode_family(&labels)?;
                match kind {
                    SampleKind::Counter => ConstCounter::new(s.value).encode(metric)?,
                    SampleKind::Gauge => ConstGauge::new(s.value).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Fixed;
    impl SampleSource for Fixed {
        fn samples(&self) -> Vec<Sample> {
            vec![
                Sample {
                    name: "target_up",
                    help: "1 while the target answers",
                    kind: SampleKind::Gauge,
                    labels: vec![("provisioner", "zoom".into())],
                    value: 1.0,
                },
                Sample {
                    name: "account_cache_hits",
                    help: "Account cache hits",
                    kind: SampleKind::Counter,
                    labels: vec![("provisioner", "zoom".into())],
                    value: 7.0,
                },
            ]
        }
    }

    #[test]
    fn the_exposition_holds_what_was_counted_and_sampled() {
        let m = Arc::new(Metrics::new(vec![Arc::new(Fixed)]));
        m.event("zoom", "add", "applied");
        m.event("zoom", "add", "applied");
        m.event("zoom", "delete", "dead-lettered");
        m.retry("zoom");
        let calls = m.calls_of("zoom");
        calls.observe(&CallRecord {
            operation: Arc::from("accounts.lookup"),
            method: "GET".into(),
            path_template: Arc::from("/users/{{ match }}"),
            status: Some(404),
            duration: Duration::from_millis(3),
        });
        let text = m.render();
        for want in [
            r#"provisioner_events_total{provisioner="zoom",action="add",result="applied"} 2"#,
            r#"provisioner_dead_letters_total{provisioner="zoom"} 1"#,
            r#"provisioner_retries_total{provisioner="zoom"} 1"#,
            r#"provisioner_target_calls_total{provisioner="zoom",operation="accounts.lookup",status="404"} 1"#,
            r#"provisioner_target_call_duration_seconds_count{provisioner="zoom",operation="accounts.lookup"} 1"#,
            r#"provisioner_target_up{provisioner="zoom"} 1"#,
            r#"provisioner_account_cache_hits_total{provisioner="zoom"} 7"#,
        ] {
            assert!(text.contains(want), "{want}\nnot in:\n{text}");
        }
    }
}
