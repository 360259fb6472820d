//! The commands behind `main.rs`. Each returns the process exit code; errors
//! meant for the operator are printed here, in plain words.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};

mod bench;
mod check;
mod dead_letters;
mod demo;
mod explain;
mod logging;
mod progress;
mod publish;
mod replay;

pub use crate::amqp::dead_letters::RequeueOptions;
pub use bench::{bench, BenchArgs};
pub use check::check;
pub use dead_letters::{dead_letters_list, dead_letters_requeue};
pub use demo::demo;
pub use explain::{explain, ExplainArgs};
pub use logging::init_logging;
pub use publish::{publish, PublishTarget};
pub use replay::replay;

/// Exit code for configuration errors.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code for a broker that cannot be reached or refuses.
pub const EXIT_BROKER: i32 = 3;

/// Loads the configuration, printing every error on failure.
pub fn load_config(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            eprint!("{errors}");
            None
        }
    }
}

/// A token cancelled on SIGTERM or SIGINT. SIGHUP, which would otherwise
/// kill the process without draining, is logged and ignored: the
/// configuration is not reloaded in place (see docs/operations.md for why a
/// restart is the reload).
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let hangups = signal(SignalKind::hangup());
            match (signal(SignalKind::terminate()), hangups) {
                (Ok(mut term), Ok(mut hup)) => {
                    tokio::pin!(ctrl_c);
                    loop {
                        tokio::select! {
                            _ = &mut ctrl_c => break,
                            _ = term.recv() => break,
                            _ = hup.recv() => tracing::warn!(
                                "SIGHUP: the configuration is not reloaded in place; run `provisioner check`, then restart (SIGTERM drains in-flight events first)"
                            ),
                        }
                    }
                }
                _ => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested; draining");
        t.cancel();
    });
    token
}

/// `provisioner run`
pub async fn run(config_path: &Path) -> ExitResult {
    let Some(config) = load_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    init_logging(&config.log.level, config.log.format);
    tracing::info!(
        provisioners = config.provisioners.len(),
        broker = %config.amqp.url.shown(),
        "starting"
    );
    let shutdown = shutdown_on_signals();
    match crate::assembly::run(config, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

/// `provisioner hash-password`: reads one line (the password) from standard
/// input and prints its argon2id PHC string. Nothing else is printed, so
/// the output can go straight into a file or a variable.
pub fn hash_password() -> ExitResult {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!(
            "error: give the password on standard input, e.g. `provisioner hash-password < file`"
        );
        return Ok(EXIT_CONFIG);
    }
    match crate::admin::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(1)
        }
    }
}

/// The lines of a file, or of standard input for `-`.
fn read_lines(file: &str) -> std::io::Result<Vec<String>> {
    use std::io::BufRead;
    if file == "-" {
        std::io::stdin().lock().lines().collect()
    } else {
        Ok(std::fs::read_to_string(file)?
            .lines()
            .map(str::to_string)
            .collect())
    }
}

/// What a command returns: its exit code, or an I/O error on the terminal
/// or a named file (the only errors `main` reports itself).
pub type ExitResult = Result<i32, std::io::Error>;
