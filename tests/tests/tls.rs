//! hyper-util's Client over TLS (hyper-rustls over `KeepaliveLayer`) against axum over TLS
//! (`TlsListener`, `into_make_service_with_liveness`): the death of either side surfaces as the
//! typed `DeadPeer`, through hyper and TLS on the client and through `Liveness` in the server's
//! handler, with one event per connection.

mod tls_certs;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use deadpeer::axum::RouterExt as _;
use deadpeer::layer::{Keepalive, KeepaliveLayer};
use deadpeer::liveness::State as LivenessState;
use deadpeer::{Cause, DeadPeer, KeepaliveListener, KeepalivePolicy, Liveness};
use deadpeer_testkit::events::Events;
use deadpeer_testkit::{Lab, deadline, dies_within_bound, lab_or_skip};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tls_certs::Certs;
use tokio::sync::mpsc;
use tower_layer::Layer;

type HttpsClient = Client<HttpsConnector<Keepalive<HttpConnector>>, Empty<Bytes>>;

/// The user's lines: hyper-rustls over deadpeer's layer over hyper-util's connector.
fn https_client(certs: &Certs, policy: KeepalivePolicy) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(certs.client.clone())
        .https_only()
        .enable_http1()
        .wrap_connector(KeepaliveLayer::new(policy).layer(http));
    Client::builder(TokioExecutor::new()).build(https)
}

/// The `dead peer detected` events of the connection whose local address is `local`.
fn deaths_at(events: &Events, local: SocketAddr) -> usize {
    events
        .with_message("dead peer detected")
        .iter()
        .filter(|e| {
            e.fields.get("network.local.address") == Some(&local.ip().to_string())
                && e.fields.get("network.local.port") == Some(&local.port().to_string())
        })
        .count()
}

/// Reports the waiting handler's outcome when it ends or hyper drops it.
struct OnEnd(Liveness, mpsc::UnboundedSender<String>);

impl Drop for OnEnd {
    fn drop(&mut self) {
        let outcome = match self.0.state() {
            LivenessState::Dead(dead) => format!("dead {}", dead.cause().as_str()),
            other => format!("{other:?}"),
        };
        let _ = self.1.send(outcome);
    }
}

async fn wait(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    State(seen): State<mpsc::UnboundedSender<String>>,
) -> &'static str {
    let _on_end = OnEnd(liveness.clone(), seen);
    let _ = liveness.dead().await;
    "dead"
}

/// axum over TLS in the server namespace: `/` answers its peer's address, `/wait` waits for the
/// death of its client and reports it, `/hang` never answers.
fn serve(
    lab: &Lab,
    port: u16,
    certs: &Certs,
    p: KeepalivePolicy,
) -> mpsc::UnboundedReceiver<String> {
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener = KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), p)
        .unwrap()
        .tls(certs.server.clone());
    let (tx, seen) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/",
            get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { addr.to_string() }),
        )
        .route("/wait", get(wait))
        .route("/hang", get(std::future::pending::<&'static str>))
        .with_state(tx);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_liveness())
            .await
            .unwrap();
    });
    seen
}

#[tokio::test(flavor = "current_thread")]
async fn request_in_flight_over_tls_to_a_vanished_server_fails_with_a_typed_dead_peer() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = deadpeer_testkit::events::capture();
    let p: KeepalivePolicy = "1:1:3".parse().unwrap();
    let certs = Certs::new(&[lab.server_addr().to_string()]);
    let _seen = serve(&lab, 7911, &certs, p);
    let client = https_client(&certs, p);
    let base = format!("https://{}:7911", lab.server_addr());

    // The connector creates its socket while this thread is in the client namespace.
    let _inside = lab.client().enter().unwrap();
    let first = client
        .get(format!("{base}/").parse().unwrap())
        .await
        .unwrap();
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).starts_with(&lab.client_addr().to_string()),
        "{body:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The pooled connection carries the next request into the blackhole.
    lab.blackhole().unwrap();
    let start = Instant::now();
    let err = dies_within_bound(
        p,
        start,
        client.get(format!("{base}/hang").parse().unwrap()),
    )
    .await
    .expect_err("the request fails");
    eprintln!(
        "request failed after {:?} (deadline {:?})",
        start.elapsed(),
        deadline(p)
    );
    let dead = DeadPeer::find(&err).unwrap_or_else(|| panic!("no DeadPeer in {err:?}"));
    assert_eq!(dead.cause(), Cause::RetransmitTimeout, "{dead}");
    assert_eq!(
        dead.peer_addr(),
        Some(SocketAddr::new(lab.server_addr(), 7911))
    );
    // Typed, not read back from a message: hyper (HTTP/1) and TLS keep the io::Error.
    let mut typed = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        typed |= e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<DeadPeer>());
        source = e.source();
    }
    assert!(typed, "the typed DeadPeer is in the chain: {err:?}");
    assert_eq!(
        deaths_at(&events, dead.local_addr().unwrap()),
        1,
        "{:#?}",
        events.all()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_client_dying_over_tls_ends_the_servers_waiting_handler() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = deadpeer_testkit::events::capture();
    let p: KeepalivePolicy = "1:1:3".parse().unwrap();
    let certs = Certs::new(&[lab.server_addr().to_string()]);
    let mut seen = serve(&lab, 7912, &certs, p);
    let client = https_client(&certs, p);
    let url = format!("https://{}:7912/wait", lab.server_addr());

    // The connector creates its socket on this thread, in the client namespace.
    let _inside = lab.client().enter().unwrap();
    let client_task = tokio::spawn(client.get(url.parse().unwrap()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    lab.blackhole().unwrap();
    let outcome = dies_within_bound(p, start, seen.recv()).await.unwrap();
    eprintln!(
        "handler ended after {:?} (deadline {:?})",
        start.elapsed(),
        deadline(p)
    );
    assert_eq!(
        outcome,
        format!("dead {}", Cause::KeepaliveTimeout.as_str())
    );
    let server = SocketAddr::new(lab.server_addr(), 7912);
    assert_eq!(deaths_at(&events, server), 1, "{:#?}", events.all());

    // The client's side of the same blackhole: its request fails with its own typed death.
    let err = tokio::time::timeout(Duration::from_secs(2), client_task)
        .await
        .expect("the client's request ended")
        .unwrap()
        .expect_err("the request fails");
    let dead = DeadPeer::find(&err).unwrap_or_else(|| panic!("no DeadPeer in {err:?}"));
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout, "{dead}");
    assert_eq!(
        deaths_at(&events, dead.local_addr().unwrap()),
        1,
        "{:#?}",
        events.all()
    );
}
