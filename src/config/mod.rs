//! Configuration: the worker file and one provisioner file per target.
//!
//! - `file.rs`: the files as written (serde structs, unknown keys refused).
//! - `parse.rs`: reads a file into its struct, reporting every key serde
//!   refuses instead of stopping at the first.
//! - `validate.rs`: file structs into the runtime types of `runtime.rs`.
//! - `auth.rs`: `[auth]` as written and validated; `http/auth.rs` uses it.
//! - Leaves, importing nothing else from the crate: `problems.rs`
//!   (`ConfigError`, `Problems` and the checks every table shares),
//!   `secret.rs` (`Secret`), `needs.rs` (what routing asks of a kind).
//!
//! This file loads: it reads the files, runs the two steps over each, and
//! returns every problem of every file together.
//!
//! Architecture Invariant: the leaves import nothing from the crate, and the
//! kinds' configurations (`target::*::config`) import only the leaves, so
//! `config` can hold them without a cycle. Code outside `config` imports a
//! leaf by its own path (`crate::config::secret::Secret`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod admin;
pub mod auth;
pub mod describe;
pub mod file;
pub mod needs;
mod parse;
pub mod problems;
mod runtime;
pub mod secret;
mod validate;

pub use problems::{ConfigError, ConfigErrors, Problems};
pub use runtime::{
    AmqpConfig, BrokerUrls, Config, FullSyncUpdates, GroupSyncStrategy, KindConfig, LogConfig,
    LogFormat, OnBehalfOf, PacingPolicy, ProvisionStrategy, ProvisionerConfig, QueueType,
    RetryPolicy, TlsConfig,
};
pub use secret::{Secret, SecretSource};

use file::{AmqpFile, PathOrList, ProvisionerFile, WorkerFile};

/// Default worker file location.
pub const DEFAULT_WORKER_FILE: &str = "config/worker.toml";

/// Reads the worker file and every provisioner file it names.
pub fn load(worker_file: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(worker_file).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: worker_file.to_path_buf(),
            key: String::new(),
            problem: format!("cannot read the worker file: {e}"),
            fix: "create it (see config/worker.toml) or pass --config PATH".into(),
        }])
    })?;
    let mut errors = Vec::new();
    let Some(file) = parse::parse::<WorkerFile>(worker_file, &text, &mut errors) else {
        return Err(ConfigErrors(errors));
    };
    let mut p = Problems::new(worker_file, &mut errors);
    let amqp = validate::amqp(file.amqp, &mut p);
    let admin = file.admin.map(|a| admin::validate_admin(a, &mut p));
    let journal = file.journal.map(|j| admin::validate_journal(j, &mut p));
    let paths = provisioner_paths(&file.provisioners, &mut p);
    let provisioners = load_provisioners(&paths, &mut errors);
    validate::retry_budgets(&amqp, &provisioners, &mut errors);
    validate::ownership_store(worker_file, journal.is_some(), &provisioners, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        worker_file: Some(worker_file.to_path_buf()),
        amqp,
        log: LogConfig {
            level: file.log.level,
            format: file.log.format,
        },
        shutdown_grace: Duration::from_secs(file.shutdown_grace_s),
        provisioners,
        admin,
        journal,
    })
}

/// The worker defaults plus the given provisioner files (demo, replay, tests).
pub fn from_provisioner_files(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let provisioners = load_provisioners(paths, &mut errors);
    let amqp = validate::amqp(
        AmqpFile::default(),
        &mut Problems::new(Path::new("<defaults>"), &mut errors),
    );
    validate::retry_budgets(&amqp, &provisioners, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    Ok(Config {
        worker_file: None,
        amqp,
        log: LogConfig {
            level: file::default_log_level(),
            format: LogFormat::default(),
        },
        shutdown_grace: Duration::from_secs(file::default_shutdown_grace_s()),
        provisioners,
        admin: None,
        journal: None,
    })
}

/// Parses and validates one provisioner file.
pub fn load_provisioner(path: &Path, errors: &mut Vec<ConfigError>) -> Option<ProvisionerConfig> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_provisioner(path, &text, errors),
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                key: String::new(),
                problem: format!("cannot read the provisioner file: {e}"),
                fix: "check the path in the worker file's `provisioners`".into(),
            });
            None
        }
    }
}

/// Parses and validates a provisioner file's text (`path` is used for errors
/// and relative paths); `None` when it has any problem.
pub fn parse_provisioner(
    path: &Path,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<ProvisionerConfig> {
    let before = errors.len();
    let file: ProvisionerFile = parse::parse(path, text, errors)?;
    let config = validate::provisioner(file, &mut Problems::new(path, errors))?;
    (errors.len() == before).then_some(config)
}

fn provisioner_paths(spec: &PathOrList, p: &mut Problems<'_>) -> Vec<PathBuf> {
    let base = p.base_dir();
    let dir = match spec {
        PathOrList::Many(list) => return list.iter().map(|f| base.join(f)).collect(),
        PathOrList::One(one) => base.join(one),
    };
    if !dir.is_dir() {
        return vec![dir];
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|f| f.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            p.add(
                "provisioners",
                format!("cannot read directory `{}`: {e}", dir.display()),
                "point it at a directory of *.toml files or list the files",
            );
            return Vec::new();
        }
    };
    files.sort();
    if files.is_empty() {
        p.add(
            "provisioners",
            format!("directory `{}` holds no *.toml files", dir.display()),
            "add a provisioner file (see provisioners/ in the repository)",
        );
    }
    files
}

/// Every valid provisioner of `paths`; names and queues must be unique.
fn load_provisioners(paths: &[PathBuf], errors: &mut Vec<ConfigError>) -> Vec<ProvisionerConfig> {
    let out: Vec<ProvisionerConfig> = paths
        .iter()
        .filter_map(|path| load_provisioner(path, errors))
        .collect();
    let mut seen_names = BTreeMap::new();
    let mut seen_queues = BTreeMap::new();
    for prov in &out {
        if let Some(other) = seen_names.insert(prov.name.clone(), prov.file.clone()) {
            errors.push(ConfigError {
                file: prov.file.clone(),
                key: "name".into(),
                problem: format!("name `{}` is also used by `{}`", prov.name, other.display()),
                fix: "give each provisioner a unique `name`".into(),
            });
        }
        if let Some(other) = seen_queues.insert(prov.queue.clone(), prov.file.clone()) {
            errors.push(ConfigError {
                file: prov.file.clone(),
                key: "queue".into(),
                problem: format!(
                    "queue `{}` is also consumed by `{}`",
                    prov.queue,
                    other.display()
                ),
                fix: "give each provisioner its own `queue`".into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
