//! The admin HTTP API (axum): health and readiness probes, Prometheus
//! metrics, each provisioner's state with pause, resume and cache clearing,
//! the outcome journal, dead letters and the effective configuration, all
//! as JSON with an OpenAPI document, and the same as web pages for people
//! (the console, [`console`]). Served over HTTP or HTTPS (optionally
//! requiring client certificates), with bearer tokens or basic users and
//! their roles (see [`auth`]).
//!
//! The admin API only reads the worker's state and asks it to change
//! (pause, resume, clear caches): it never acknowledges a delivery.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::admin::{AdminConfig, AdminTls};
use crate::config::Config;
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::worker::status::ProvisionerStatus;

pub mod auth;
mod broker;
mod console;
mod openapi;
mod routes;

/// What the admin API serves from.
pub struct AdminState {
    pub statuses: Vec<Arc<ProvisionerStatus>>,
    pub metrics: Arc<Metrics>,
    pub journal: Option<Journal>,
    pub config: Arc<Config>,
    /// Builds what `GET /v1/provisioners/{name}/subjects/{subject}` reads
    /// through (`assembly::explainer`: the admin API never builds targets).
    pub explainer: crate::explain::BuildExplainer,
}

/// The state the handlers share.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

pub struct Inner {
    state: AdminState,
    credentials: auth::Credentials,
    broker: broker::BrokerView,
    console: console::Console,
}

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    fn status(&self, name: &str) -> Result<&Arc<ProvisionerStatus>, ApiError> {
        self.state
            .statuses
            .iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no provisioner `{}`", crate::bounded::label(name)),
                )
            })
    }
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("the admin API cannot listen on {addr}: {reason} (fix: free the port, or set another [admin] listen)")]
    Bind { addr: SocketAddr, reason: String },
    #[error("[admin.tls]: {0}")]
    Tls(String),
}

/// A JSON error: `{"error": "...", "status": 404}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    #[schema(ignore)]
    code: StatusCode,
    /// What went wrong, in words.
    error: String,
    /// The HTTP status, repeated.
    status: u16,
}

impl ApiError {
    pub fn new(code: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            code,
            error: error.into(),
            status: code.as_u16(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code, Json(self)).into_response()
    }
}

/// A running admin API.
pub struct AdminServer {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds the listener (a clear error if the address is taken) and serves
/// until `shutdown`.
pub async fn serve(
    config: &AdminConfig,
    state: AdminState,
    shutdown: CancellationToken,
) -> Result<AdminServer, AdminError> {
    let amqp = state.config.amqp.clone();
    let shared = Shared(Arc::new(Inner {
        credentials: auth::Credentials::new(config),
        broker: broker::BrokerView::new(amqp),
        console: console::Console::new(),
        state,
    }));
    let router = routes::router(shared.clone())
        .merge(console::router())
        .route("/v1/openapi.json", axum::routing::get(openapi::serve))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::require_role,
        ))
        .with_state(shared);
    let listener = std::net::TcpListener::bind(config.listen).map_err(|e| AdminError::Bind {
        addr: config.listen,
        reason: e.to_string(),
    })?;
    let bind_error = |e: std::io::Error| AdminError::Bind {
        addr: config.listen,
        reason: e.to_string(),
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, %scheme, auth = config.requires_auth(), "admin API listening");
    let task = match &config.tls {
        None => {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the admin API stopped");
                }
            })
        }
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
                server_tls(tls).map_err(AdminError::Tls)?,
            ));
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
            });
            let server = axum_server::from_tcp_rustls(listener, rustls)
                .map_err(bind_error)?
                .handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(router.into_make_service()).await {
                    tracing::error!(error = %e, "the admin API stopped");
                }
            })
        }
    };
    Ok(AdminServer { addr, task })
}

/// The TLS settings of `[admin.tls]`: the certificate and key, and with
/// `client_ca` a required client certificate signed by it.
fn server_tls(tls: &AdminTls) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("cert `{}`: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "cert `{}` holds no certificate",
            tls.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("key `{}`: {e}", tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("client_ca `{}`: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("client_ca `{}`: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("client_ca `{}`: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("client_ca `{}`: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
