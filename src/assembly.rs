//! Assembly: builds a runnable provisioner from its validated configuration.
//! The one place where the HTTP client, the target kind and the engine meet:
//! the worker, `replay` and `demo` all build their provisioners here, so no
//! other module needs to know all three.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ProvisionerConfig;
use crate::engine::{Engine, Provisioner};
use crate::http::{HttpClient, HttpSettings, HttpSetupError};
use crate::target::dry_run::{DryRunTarget, WriteLog};

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
/// its own, under the engine.
pub fn provisioner(
    config: &ProvisionerConfig,
    writes: Writes,
) -> Result<Arc<dyn Provisioner>, AssemblyError> {
    let http = HttpClient::new(&http_settings(config)).map_err(|source| AssemblyError {
        name: config.name.clone(),
        source,
    })?;
    let target = crate::target::build(&config.kind, http);
    Ok(match writes {
        Writes::Apply => Arc::new(Engine::new(config, target)),
        Writes::Record(log) => {
            // Nothing is created, so waiting for an account to appear is pointless.
            let mut config = config.clone();
            config.target_group_retry_delay = Duration::ZERO;
            Arc::new(Engine::new(
                &config,
                Arc::new(DryRunTarget::new(target, log)),
            ))
        }
    })
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
