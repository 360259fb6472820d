//! The commands behind `main.rs`. Each returns the process exit code; errors
//! meant for the operator are printed here, in plain words.

use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config};

mod check;
mod dead_letters;
mod demo;
mod logging;
mod publish;
mod replay;

pub use crate::amqp::dead_letters::RequeueOptions;
pub use check::check;
pub use dead_letters::{dead_letters_list, dead_letters_requeue};
pub use demo::demo;
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

/// A token cancelled on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
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
pub async fn run(config_path: &Path) -> anyhow_free::Result {
    let Some(config) = load_config(config_path) else {
        return Ok(EXIT_CONFIG);
    };
    init_logging(&config.log.level, config.log.format);
    tracing::info!(
        provisioners = config.provisioners.len(),
        broker = %crate::amqp::redact_url(config.amqp.url.expose()),
        "starting"
    );
    let shutdown = shutdown_on_signals();
    match crate::worker::run(config, shutdown).await {
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

/// Commands return an exit code; I/O errors writing to the terminal are the only errors.
pub mod anyhow_free {
    pub type Result = std::result::Result<i32, std::io::Error>;
}
