//! `amqps://`: the worker reaches the broker over TLS, trusting a custom CA
//! and presenting a client certificate (`[amqp.tls]`). The broker itself
//! speaks plain AMQP and is left alone: a TLS-terminating proxy in the test,
//! which requires a client certificate from the test CA, stands in front of
//! it and counts the handshakes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::QueueDeleteOptions;
use lapin::BasicProperties;
use provisioner::amqp::{AmqpError, CONNECT_TIMEOUT};
use provisioner::config::{self, AmqpConfig, BrokerUrls, TlsConfig};
use provisioner::worker::Verdict;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_util::sync::CancellationToken;

use crate::support::mock_rest::MockTarget;
use crate::support::*;

/// The password of the URLs that must fail; it may show in no error.
const PASSWORD: &str = "s3cr3t-pw";

// ------------------------------------------------------------- certificates

struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate signed by `ca`.
struct Leaf {
    der: CertificateDer<'static>,
    pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

fn leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        der: cert.der().clone(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        key_der: key.serialize_der(),
    }
}

/// The test CA with a server certificate for localhost and 127.0.0.1 and a
/// client certificate, another CA, and their PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    server: Leaf,
    client_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("provisioner amqps test CA");
        let other = new_ca("some other CA");
        let server = leaf(
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            &ca,
            &["provisioner-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        for (name, text) in [
            ("ca.pem", &ca.pem),
            ("other-ca.pem", &other.pem),
            ("client.pem", &client.pem),
            ("client.key", &client.key_pem),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Pki {
            dir,
            ca,
            server,
            client_der: client.der.to_vec(),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[amqp.tls]` trusting `ca_file`, with or without the client certificate.
    fn tls(&self, ca_file: &str, client_cert: bool) -> TlsConfig {
        TlsConfig {
            ca_file: Some(self.file(ca_file)),
            client_cert: client_cert.then(|| self.file("client.pem")),
            client_key: client_cert.then(|| self.file("client.key")),
        }
    }
}

// -------------------------------------------------------------------- proxy

/// What the proxy saw.
#[derive(Debug, Default, Clone)]
struct Handshakes {
    ok: usize,
    failed: usize,
    /// The client certificates presented on successful handshakes.
    peers: Vec<Vec<u8>>,
}

/// TLS on 127.0.0.1:`port`, requiring a client certificate signed by the test
/// CA, forwarding each connection to the plain broker.
struct Proxy {
    port: u16,
    seen: watch::Receiver<Handshakes>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Dropping the accept loop drops its JoinSet, which aborts the connections.
        self.task.abort();
    }
}

impl Proxy {
    async fn start(pki: &Pki) -> Proxy {
        let broker = url::Url::parse(&amqp_url()).unwrap();
        let upstream = format!(
            "{}:{}",
            broker.host_str().unwrap_or("127.0.0.1"),
            broker.port().unwrap_or(5672)
        );
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.cert.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![pki.server.der.clone(), pki.ca.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.key_der.clone())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = watch::channel(Handshakes::default());
        let tx = Arc::new(tx);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                while conns.try_join_next().is_some() {}
                let (acceptor, tx, upstream) = (acceptor.clone(), tx.clone(), upstream.clone());
                conns.spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            tx.send_modify(|h| h.failed += 1);
                            return;
                        }
                    };
                    let peers: Vec<Vec<u8>> = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .unwrap_or_default()
                        .iter()
                        .map(|c| c.to_vec())
                        .collect();
                    tx.send_modify(|h| {
                        h.ok += 1;
                        h.peers.extend(peers);
                    });
                    if let Ok(mut broker) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                    }
                });
            }
        });
        Proxy { port, seen, task }
    }

    fn now(&self) -> Handshakes {
        self.seen.borrow().clone()
    }

    /// Waits (bounded) until the proxy has seen what `done` wants.
    async fn wait_for(&self, what: &str, done: impl FnMut(&Handshakes) -> bool) -> Handshakes {
        let mut seen = self.seen.clone();
        let seen = match tokio::time::timeout(DEADLINE, seen.wait_for(done)).await {
            Ok(Ok(h)) => h.clone(),
            Ok(Err(_)) => panic!("the proxy stopped before {what}"),
            Err(_) => panic!("no {what} within {DEADLINE:?}: {:?}", self.now()),
        };
        seen
    }

    /// The broker URL through the proxy: `amqps://`, host `localhost`.
    fn url(&self, password: Option<&str>) -> String {
        let mut u = url::Url::parse(&amqp_url()).unwrap();
        u.set_scheme("amqps").unwrap();
        u.set_host(Some("localhost")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        if let Some(p) = password {
            u.set_password(Some(p)).unwrap();
        }
        u.to_string()
    }
}

fn amqps(url: String, tls: TlsConfig) -> AmqpConfig {
    AmqpConfig {
        url: BrokerUrls::split(&url),
        tls: Some(tls),
        ..amqp_config()
    }
}

/// Connects with `cfg`, which must fail promptly; returns the error's text
/// (Display and Debug), checked free of the password.
async fn connect_fails(cfg: &AmqpConfig) -> String {
    let started = Instant::now();
    let e = match provisioner::amqp::connect(cfg, "provisioner:test-amqps").await {
        Ok(conn) => {
            let _ = conn.close(200, "unexpected".into()).await;
            panic!("connected to {}", cfg.url.shown())
        }
        Err(e) => e,
    };
    let took = started.elapsed();
    assert!(
        took < CONNECT_TIMEOUT + Duration::from_secs(2),
        "failed only after {took:?}: {e}"
    );
    assert!(
        matches!(e, AmqpError::Connect { .. }),
        "a refused handshake is a connect error, not {e:?}"
    );
    let shown = format!("{e} | {e:?}");
    assert!(!shown.contains(PASSWORD), "the password shows in {shown}");
    assert!(
        shown.to_lowercase().contains("certificate"),
        "the error says why: {shown}"
    );
    shown
}

// --------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_talks_amqps_with_a_custom_ca_and_a_client_certificate() {
    let _broker = shared().await;
    let pki = Pki::new();
    let proxy = Proxy::start(&pki).await;

    // 1. A worker over amqps:// with the CA and the client certificate.
    let mock = MockTarget::start().await.unwrap();
    let queue = unique("amqps");
    let dead = format!("{queue}.dead");
    let conn = connect().await;
    let channel = provisioner::amqp::confirm_channel(&conn).await.unwrap();
    provisioner::amqp::declare_queues(&channel, &queue, &dead)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, example_provisioner(&mock.url(), &queue, "")).unwrap();
    let mut cfg = match config::from_provisioner_files(&[path]) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    cfg.amqp = amqps(proxy.url(None), pki.tls("ca.pem", true));
    cfg.shutdown_grace = Duration::from_secs(10);
    let worker = provisioner::assembly::worker(cfg).unwrap();
    let mut outcomes = worker.subscribe();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(worker.run(shutdown.clone()));

    provisioner::amqp::publish_confirmed(
        &channel,
        &queue,
        add(USERS, "tls", "tls@example.edu", "T", "LS")
            .to_string()
            .as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let outcome = match tokio::time::timeout(DEADLINE, outcomes.recv()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => panic!("outcome channel: {e}"),
        Err(_) => panic!(
            "the worker applied nothing over amqps within {DEADLINE:?}; proxy: {:?}",
            proxy.now()
        ),
    };
    assert_eq!(outcome.verdict, Verdict::Applied, "{outcome:#?}");
    assert!(
        mock.user("tls@example.edu").is_some(),
        "the event reached the target"
    );
    let seen = proxy.now();
    assert!(seen.ok >= 1, "{seen:?}");
    assert_eq!(seen.failed, 0, "the worker's handshakes all succeeded");
    assert!(
        seen.peers.contains(&pki.client_der),
        "the worker presented the client certificate"
    );

    shutdown.cancel();
    tokio::time::timeout(DEADLINE, handle)
        .await
        .unwrap()
        .unwrap();
    for q in [&queue, &dead] {
        let _ = channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }

    // 2. Without the client certificate the proxy refuses the handshake.
    let before = proxy.now();
    let shown = connect_fails(&amqps(proxy.url(Some(PASSWORD)), pki.tls("ca.pem", false))).await;
    let after = proxy
        .wait_for("refused handshake", |h| h.failed > before.failed)
        .await;
    assert_eq!(after.ok, before.ok, "no handshake succeeded: {shown}");

    // 3. A CA that did not sign the server's certificate: not trusted.
    let before = after;
    let shown = connect_fails(&amqps(
        proxy.url(Some(PASSWORD)),
        pki.tls("other-ca.pem", true),
    ))
    .await;
    let after = proxy
        .wait_for("aborted handshake", |h| h.failed > before.failed)
        .await;
    assert_eq!(after.ok, before.ok, "no handshake succeeded: {shown}");

    let _ = conn.close(200, "done".into()).await;
}
