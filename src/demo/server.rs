//! [`Server`]: an axum [`Router`] served on a loopback port by a tokio task,
//! until [`Server::shutdown`] or the handle is dropped.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long [`Server::shutdown`] waits for in-flight requests before stopping
/// the server task outright.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server. Dropping it (or [`Server::shutdown`]) stops it: new
/// connections are refused, idle connections closed.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `127.0.0.1` on a free port and serves `app` on a tokio task.
    ///
    /// Fails when binding fails or when not called inside a tokio runtime.
    pub async fn start(app: Router) -> Result<Server, io::Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let (stop, mut signal) = watch::channel(false);
        let task = runtime.spawn(async move {
            let stopped = async move {
                // Err means the handle is gone: stop as well.
                let _ = signal.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::warn!(error = %e, %addr, "embedded server stopped with an error");
            }
        });
        tracing::debug!(%addr, "embedded server listening");
        Ok(Server {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits (up to 5 s) for in-flight requests to
    /// finish. Dropping the handle stops it too, without waiting.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server task winds down on its own: no new connections, idle
        // ones closed.
        self.stop.send_replace(true);
    }
}
