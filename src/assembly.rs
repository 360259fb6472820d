//! Assembly: the composition root. It builds a runnable provisioner from its
//! validated configuration — the one place where the HTTP client, the target
//! kind and the engine meet, so that the worker, `replay` and `demo` build
//! their provisioners the same way — and [`run`] puts the whole service
//! together: journal, worker, admin API.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminError, AdminState};
use crate::config::admin::{JournalConfig, JournalStore};
use crate::config::{Config, ProvisionerConfig};
use crate::engine::ownership::{Ownership, Rehearsal};
use crate::engine::{Engine, Provisioner};
use crate::explain::Explainer;
use crate::http::{HttpClient, HttpSettings, HttpSetupError};
use crate::journal::{Journal, JournalError, JournalSettings, Store};
use crate::target::dry_run::{DryRunTarget, WriteLog};
use crate::target::TargetApi;
use crate::worker::{Worker, WorkerError};

/// What becomes of the writes a provisioner decides on.
#[derive(Clone)]
pub enum Writes {
    /// Sent to the target.
    Apply,
    /// Only recorded (`replay --dry-run`); reads still go to the target, so
    /// every decision is the real one.
    Record(WriteLog),
}

/// Why a provisioner could not be built.
#[derive(Debug, thiserror::Error)]
#[error("provisioner `{name}`: {source}")]
pub struct AssemblyError {
    pub name: String,
    pub source: HttpSetupError,
}

/// The provisioner of `config`: its kind's target, over an HTTP client of
/// its own, under the engine; without an ownership store (see
/// [`provisioner_owning`]).
pub fn provisioner(
    config: &ProvisionerConfig,
    writes: Writes,
) -> Result<Arc<dyn Provisioner>, AssemblyError> {
    provisioner_owning(config, writes, None)
}

/// The provisioner of `config`, recording what it creates and adopts in
/// `ownership` (the journal's store) when given. Without one, a provisioner
/// with `remove_only_owned` remembers what it owns for the life of the
/// process only. A dry run reads the store and writes nothing to it.
pub fn provisioner_owning(
    config: &ProvisionerConfig,
    writes: Writes,
    ownership: Option<Arc<dyn Ownership>>,
) -> Result<Arc<dyn Provisioner>, AssemblyError> {
    let http = HttpClient::new(&http_settings(config)).map_err(|source| AssemblyError {
        name: config.name.clone(),
        source,
    })?;
    let target = crate::target::build(&config.kind, http);
    Ok(match writes {
        Writes::Apply => {
            let engine = Engine::new(config, target);
            Arc::new(match ownership {
                Some(store) => engine.with_ownership(store),
                None => engine,
            })
        }
        Writes::Record(log) => {
            // Nothing is created, so waiting for an account to appear is pointless.
            let mut config = config.clone();
            config.target_group_retry_delay = Duration::ZERO;
            let engine = Engine::new(&config, Arc::new(DryRunTarget::new(target, log.clone())))
                .with_plan(log);
            Arc::new(match ownership {
                Some(store) => engine.with_ownership(Arc::new(Rehearsal::new(store))),
                None => engine,
            })
        }
    })
}

/// What `provisioner explain` and the admin API's subject view read
/// through: the provisioner's target behind the dry-run wrapper, so that
/// nothing an explanation does can write, and an engine of its own over
/// that same target for the plan. A fresh one per explanation: its caches
/// start empty, so the plan asks the target rather than remembering.
pub fn explainer(config: &ProvisionerConfig) -> Result<Explainer, AssemblyError> {
    let http = HttpClient::new(&http_settings(config)).map_err(|source| AssemblyError {
        name: config.name.clone(),
        source,
    })?;
    let writes = WriteLog::default();
    let target: Arc<dyn TargetApi> = Arc::new(DryRunTarget::new(
        crate::target::build(&config.kind, http),
        writes.clone(),
    ));
    let mut planning = config.clone();
    // Nothing is created, so waiting for an account to appear is pointless.
    planning.target_group_retry_delay = Duration::ZERO;
    // A trusted-absent window starts with a listing of every account; the
    // plan of one subject needs only its own look-up.
    planning.account_cache_validity_period = Duration::ZERO;
    Ok(Explainer {
        config: config.clone(),
        engine: Arc::new(Engine::new(&planning, target.clone())),
        target,
        writes,
    })
}

/// [`explainer`] as the admin API takes it (it never imports this module).
fn admin_explainer(config: &ProvisionerConfig) -> Result<Explainer, String> {
    explainer(config).map_err(|e| e.to_string())
}

/// The part of a provisioner's configuration the HTTP client works from.
pub fn http_settings(config: &ProvisionerConfig) -> HttpSettings {
    HttpSettings {
        url_prefixes: config.url_prefixes.clone(),
        endpoint: config.endpoint.clone(),
        timeout: config.timeout,
        max_response_bytes: config.max_response_bytes,
        tls: config.tls.clone(),
        auth: config.auth.clone(),
        on_behalf_of: config.on_behalf_of.clone(),
    }
}

/// The journal settings of `[journal]`.
pub fn journal_settings(config: &JournalConfig) -> JournalSettings {
    let store = match &config.store {
        JournalStore::Sqlite(path) => Store::Sqlite(path.clone()),
        JournalStore::Postgres(url) => Store::Postgres(url.expose().to_string()),
    };
    JournalSettings {
        max_age: config.max_age,
        max_rows: config.max_rows,
        channel_capacity: config.queue,
        ..JournalSettings::new(store)
    }
}

/// The worker over every provisioner of the configuration, each built here,
/// without an ownership store (see [`worker_owning`]).
pub fn worker(config: Config) -> Result<Worker, ServiceError> {
    worker_owning(config, None)
}

/// The worker over every provisioner of the configuration, each recording
/// what it owns in `ownership` when given.
pub fn worker_owning(
    config: Config,
    ownership: Option<Arc<dyn Ownership>>,
) -> Result<Worker, ServiceError> {
    let mut provisioners = Vec::new();
    for p in &config.provisioners {
        let built = provisioner_owning(p, Writes::Apply, ownership.clone())?;
        provisioners.push((p.clone(), built));
    }
    Ok(Worker::with_provisioners(config, provisioners)?)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Assembly(#[from] AssemblyError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("the journal: {0}")]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// How long the journal gets to write what it holds at shutdown.
const JOURNAL_CLOSE: Duration = Duration::from_secs(10);

/// The service: opens the journal, builds the worker, starts the admin
/// API, consumes until `shutdown` and drains; then the admin API stops and
/// the journal writes what it still holds. An admin address in use, or a
/// journal that cannot be opened, is an error before anything is consumed.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    let journal = match &config.journal {
        Some(j) => Some(Journal::open(journal_settings(j)).await?),
        None => None,
    };
    let admin_config = config.admin.clone();
    let config = std::sync::Arc::new(config);
    // The ownership records live in the journal's store, so that a
    // provisioner can switch `remove_only_owned` on later and find them.
    let ownership = journal
        .as_ref()
        .map(|j| Arc::new(j.ownership()) as Arc<dyn Ownership>);
    let mut worker = worker_owning((*config).clone(), ownership)?;
    if let Some(j) = &journal {
        worker.set_journal(j.clone());
    }
    let admin_stop = CancellationToken::new();
    let admin = match &admin_config {
        Some(a) => Some(
            admin::serve(
                a,
                AdminState {
                    statuses: worker.statuses(),
                    metrics: worker.metrics(),
                    journal: journal.clone(),
                    config: config.clone(),
                    explainer: admin_explainer,
                },
                admin_stop.clone(),
            )
            .await?,
        ),
        None => None,
    };
    worker.run(shutdown).await;
    // The admin API answers until the worker has drained, for the probes.
    admin_stop.cancel();
    if let Some(a) = admin {
        let _ = a.task.await;
    }
    if let Some(j) = journal {
        let deadline = tokio::time::Instant::now() + JOURNAL_CLOSE;
        if let Err(e) = j.close(deadline).await {
            tracing::warn!(error = %e, "the journal could not write everything before stopping");
        }
    }
    Ok(())
}
