//! A hyper-util `Client` whose connections run under a keepalive policy, so that a request stuck
//! on a dead server fails within the policy's bound, with a typed `DeadPeer` in its error chain.
//!
//! The connector is `KeepaliveLayer::new(policy).layer(HttpConnector::new())`. The server (axum,
//! in the lab's server namespace) answers `GET /`; then the server vanishes (a blackhole) and the
//! client sends `GET /slow` on the pooled connection. The request's bytes are never acknowledged,
//! so keepalive cannot help (it only probes idle connections); the user timeout that the policy
//! sets (`UserTimeout::Auto`, 3.5 s for 1/1/3) ends the connection with `RetransmitTimeout`.
//! Without it, the request would hang for about 15 minutes (`tcp_retries2`).
//!
//! The client's sockets must be created in the lab's client namespace: `HttpConnector` creates
//! them on the thread that polls it, so the example runs on a current-thread runtime and holds
//! `lab.client().enter()` while the client works.
//!
//! Run: `cargo run -p examples --example hyper_client` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped hyper_client: <reason>` line and
//! exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use deadpeer::layer::KeepaliveLayer;
use deadpeer::{DeadPeer, KeepalivePolicy};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_layer::Layer;
use tracing_subscriber::EnvFilter;

/// Whether the chain holds the typed `DeadPeer` itself, or only its message (which
/// `DeadPeer::recover` matches: h2 keeps just the kind and the text of an I/O error).
fn typed_in_chain(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        let in_io = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<DeadPeer>());
        if e.is::<DeadPeer>() || in_io {
            return true;
        }
        current = e.source();
    }
    false
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("deadpeer=info")),
        )
        .init();

    let Some(lab) = deadpeer_testkit::lab_or_skip("hyper_client") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "1:1:3".parse()?;
    println!(
        "policy {policy}: idle bound {:?}, user timeout {:?}",
        policy.detection_bound(),
        policy.auto_user_timeout()
    );

    // The server: axum in the lab's server namespace. `/slow` never answers.
    let addr = SocketAddr::new(lab.server_addr(), 8080);
    let listener = deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?;
    let app = Router::new().route("/", get(|| async { "hello" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "too late"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    // From here on, sockets this thread creates live in the client namespace.
    let inside = lab.client().enter()?;

    let connector = KeepaliveLayer::new(policy).layer(HttpConnector::new());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);

    let response = client.get(format!("http://{addr}/").parse()?).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "client: GET / -> {status} {:?}",
        String::from_utf8_lossy(&body)
    );

    println!("client: the server vanishes (blackhole), then GET /slow on the pooled connection");
    lab.blackhole()?;
    let start = Instant::now();
    let result = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        client.get(format!("http://{addr}/slow").parse()?),
    )
    .await;
    let elapsed = start.elapsed();
    drop(inside);

    match result {
        Err(_) => return Err("the request did not fail in time".into()),
        Ok(Ok(response)) => println!("client: GET /slow -> {} (unexpected)", response.status()),
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
            match DeadPeer::find(&err) {
                Some(dead) => {
                    println!(
                        "client: DeadPeer::find -> cause {:?}, errno {:?}, connected for {:.1}s",
                        dead.cause(),
                        dead.raw_os_error(),
                        dead.connected_for().as_secs_f64(),
                    );
                    if typed_in_chain(&err) {
                        println!("client: (the typed DeadPeer is in the chain)");
                    } else {
                        println!(
                            "client: (read back from its message: h2 keeps only the kind and text of I/O errors)"
                        );
                    }
                }
                None => println!("client: DeadPeer::find -> None (the death is not in the chain)"),
            }
        }
    }
    Ok(())
}
