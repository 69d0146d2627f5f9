//! axum over TLS and a hyper-util client over TLS, both under a keepalive policy: the death of
//! either side surfaces through TLS as the typed `DeadPeer`.
//!
//! The server is `axum::serve(KeepaliveListener::..tls(config), app.into_make_service_with_liveness())`:
//! a `TlsListener` that completes handshakes concurrently (a silent client holds up no other),
//! handles accept errors as axum does, and gives handlers `ConnectInfo<SocketAddr>` and
//! `ConnectInfo<Liveness>`. The client is hyper-util's `Client` with hyper-rustls's
//! `HttpsConnector` over `KeepaliveLayer`. The certificate is self-signed, made at run time with
//! rcgen; the crypto provider is rustls's `ring` (deadpeer chooses none).
//!
//! 1. **The client dies.** The client asks `/events`, whose handler waits on its connection's
//!    `Liveness` and never reads; then the client vanishes (a blackhole in the lab). The
//!    server's handler learns it within the 1/1/3 policy's 4 s bound, as a typed `DeadPeer`
//!    (one `dead peer detected` event for that connection). The client's own connection is cut
//!    off the same way and its request fails with its own `DeadPeer`.
//! 2. **The server vanishes**, with a request in flight: the lab heals, the client sends `GET /`
//!    on a new connection, the server vanishes, and the client sends `GET /slow` on the pooled
//!    connection. Its bytes are never acknowledged; the policy's user timeout ends the
//!    connection (`RetransmitTimeout`), and the error hyper returns carries the typed
//!    `DeadPeer` through hyper and TLS (`DeadPeer::find`).
//!
//! Run: `cargo run -p examples --example tls` (as root: the lab needs network namespaces).
//! Without the privileges it prints one `skipped tls: <reason>` line and exits 0; with
//! `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use deadpeer::axum::RouterExt as _;
use deadpeer::layer::KeepaliveLayer;
use deadpeer::liveness::State;
use deadpeer::{DeadPeer, KeepaliveListener, KeepalivePolicy, Liveness};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::PrivatePkcs8KeyDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tower_layer::Layer;
use tracing_subscriber::EnvFilter;

/// Reports what the handler's connection came to when the handler ends, whoever ended it:
/// its own `dead()`, or hyper, whose pending read of the connection often sees the death first
/// and drops the handler. The two share one latch, so the verdict is the same.
struct Report(Liveness, mpsc::UnboundedSender<Option<DeadPeer>>);

impl Drop for Report {
    fn drop(&mut self) {
        let dead = match self.0.state() {
            State::Dead(dead) => Some(dead),
            _ => None,
        };
        let _ = self.1.send(dead);
    }
}

/// Waits for its client's death, reading nothing from it.
async fn events(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    axum::extract::State(report): axum::extract::State<mpsc::UnboundedSender<Option<DeadPeer>>>,
) -> &'static str {
    println!(
        "server: {addr} waits for events (peer {:?})",
        liveness.peer_addr()
    );
    let _report = Report(liveness.clone(), report);
    match liveness.dead().await {
        Some(_) => "dead",
        None => "closed",
    }
}

/// The self-signed certificate for `ip`, and the server's and client's configs.
fn certificates(
    ip: std::net::IpAddr,
) -> Result<(ServerConfig, ClientConfig), Box<dyn std::error::Error>> {
    let certified = rcgen::generate_simple_self_signed(vec![ip.to_string()])?;
    let cert = certified.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key.into())?;
    let mut roots = RootCertStore::empty();
    roots.add(cert)?;
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((server, client))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("deadpeer=info")),
        )
        .init();

    let Some(lab) = deadpeer_testkit::lab_or_skip("tls") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "1:1:3".parse()?;
    let (server_tls, client_tls) = certificates(lab.server_addr())?;

    // The server: axum over TLS in the lab's server namespace.
    let addr = SocketAddr::new(lab.server_addr(), 8443);
    let listener = KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?
        .tls(Arc::new(server_tls));
    let (report, mut reports) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/",
            get(
                |ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { format!("hello {addr}") },
            ),
        )
        .route("/events", get(events))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "too late"
            }),
        )
        .with_state(report);
    tokio::spawn(async move { axum::serve(listener, app.into_make_service_with_liveness()).await });

    // The client: hyper-rustls over deadpeer's layer over hyper-util's connector. Its sockets
    // are created on this thread, which lives in the client namespace from here on.
    let inside = lab.client().enter()?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls)
        .https_only()
        .enable_http1()
        .wrap_connector(KeepaliveLayer::new(policy).layer(http));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(https);

    println!("1. the client dies while the server's handler waits on its Liveness");
    let waiting = tokio::spawn(client.get(format!("https://{addr}/events").parse()?));
    tokio::time::sleep(Duration::from_millis(300)).await;
    lab.blackhole()?;
    let start = Instant::now();
    let limit = policy.detection_bound() + Duration::from_secs(3);
    match tokio::time::timeout(limit, reports.recv()).await {
        Ok(Some(Some(dead))) => println!(
            "server: the handler's client is dead after {:.1}s: cause {:?}, errno {:?}, peer {:?}",
            start.elapsed().as_secs_f64(),
            dead.cause(),
            dead.raw_os_error(),
            dead.peer_addr()
        ),
        Ok(other) => return Err(format!("the handler ended without a death: {other:?}").into()),
        Err(_) => return Err("the server did not learn of the death in time".into()),
    }
    match tokio::time::timeout(limit, waiting).await {
        Err(_) => return Err("the client's request did not end in time".into()),
        Ok(result) => match result? {
            Ok(response) => println!("client: GET /events -> {} (unexpected)", response.status()),
            Err(err) => match DeadPeer::find(&err) {
                Some(dead) => println!("client: its own connection died too: {:?}", dead.cause()),
                None => println!("client: GET /events failed: {err}"),
            },
        },
    }

    println!("2. the server vanishes while the client has a request in flight");
    lab.heal()?;
    let response = client.get(format!("https://{addr}/").parse()?).await?;
    let body = response.into_body().collect().await?.to_bytes();
    println!("client: GET / -> {:?}", String::from_utf8_lossy(&body));
    tokio::time::sleep(Duration::from_millis(200)).await; // the response's ACK gets through
    lab.blackhole()?;
    let start = Instant::now();
    let result = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        client.get(format!("https://{addr}/slow").parse()?),
    )
    .await;
    let elapsed = start.elapsed();
    drop(inside);
    match result {
        Err(_) => return Err("the request did not fail in time".into()),
        Ok(Ok(response)) => return Err(format!("GET /slow -> {}", response.status()).into()),
        Ok(Err(err)) => {
            println!(
                "client: GET /slow failed after {:.1}s: {err}",
                elapsed.as_secs_f64()
            );
            let mut source = err.source();
            while let Some(e) = source {
                println!("  caused by: {e}");
                source = e.source();
            }
            let dead = DeadPeer::find(&err).ok_or("no DeadPeer in the error")?;
            println!(
                "client: DeadPeer::find -> cause {:?}, errno {:?}, peer {:?}",
                dead.cause(),
                dead.raw_os_error(),
                dead.peer_addr()
            );
        }
    }
    Ok(())
}
