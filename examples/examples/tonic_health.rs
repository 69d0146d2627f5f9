//! A tonic gRPC client whose channel runs under a keepalive policy, against a tonic-health
//! server; a call stuck on a dead server fails within the policy's bound.
//!
//! The channel is `Endpoint::connect_with_connector(KeepaliveLayer::new(policy)
//! .layer(HttpConnector::new()))`. A `Check` call succeeds (`SERVING`); then the server vanishes
//! (a blackhole in the lab) and a second `Check` is sent. Its bytes are never acknowledged, so
//! the policy's user timeout (`UserTimeout::Auto`, 3.5 s for 1/1/3) ends the connection and the
//! call fails, instead of hanging for about 15 minutes (`tcp_retries2`).
//!
//! The failed call's `Status` is `Unknown: transport error`. HTTP/2 (h2) keeps only the kind and
//! the text of the connection's I/O error, so the chain holds the `DeadPeer`'s message, not the
//! typed value; `DeadPeer::recover` finds the death of this process whose text it is (cause,
//! errno, addresses), and `DeadPeer::find`, which takes only typed values, finds nothing.
//!
//! The server side sets the policy on its listening socket with `deadpeer::apply`: on Linux,
//! accepted sockets inherit it, so tonic's own `TcpIncoming` serves connections that are reaped
//! within the same bound.
//!
//! Run: `cargo run -p examples --example tonic_health` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped tonic_health: <reason>` line and
//! exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::error::Error as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::layer::KeepaliveLayer;
use deadpeer::{DeadPeer, KeepalivePolicy};
use hyper_util::client::legacy::connect::HttpConnector;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
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

    let Some(lab) = deadpeer_testkit::lab_or_skip("tonic_health") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "1:1:3".parse()?;

    // The server: tonic-health in the lab's server namespace; the listening socket carries the
    // policy, which accepted sockets inherit on Linux.
    let addr = SocketAddr::new(lab.server_addr(), 50051);
    let listener = lab.server().tokio_listener(addr)?;
    deadpeer::apply(&listener, policy)?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    // From here on, sockets this thread creates live in the client namespace.
    let inside = lab.client().enter()?;
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(KeepaliveLayer::new(policy).layer(HttpConnector::new()))
        .await?;
    let mut client = HealthClient::new(channel);

    let reply = client.check(HealthCheckRequest::default()).await?;
    println!("client: Check -> {:?}", reply.into_inner().status());

    println!("client: the server vanishes (blackhole), then a second Check");
    lab.blackhole()?;
    let start = Instant::now();
    let result = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        client.check(HealthCheckRequest::default()),
    )
    .await;
    let elapsed = start.elapsed();
    drop(inside);

    match result {
        Err(_) => return Err("the call did not fail in time".into()),
        Ok(Ok(reply)) => println!("client: Check -> {:?} (unexpected)", reply.into_inner()),
        Ok(Err(status)) => {
            println!(
                "client: Check failed after {:.1}s: code {:?}, message {:?}",
                elapsed.as_secs_f64(),
                status.code(),
                status.message()
            );
            let mut source = status.source();
            while let Some(e) = source {
                println!("  caused by: {e}");
                source = e.source();
            }
            match DeadPeer::recover(&status) {
                Some(dead) => {
                    println!(
                        "client: DeadPeer::recover -> cause {:?}, errno {:?}",
                        dead.cause(),
                        dead.raw_os_error(),
                    );
                    if typed_in_chain(&status) {
                        println!("client: (the typed DeadPeer is in the chain)");
                    } else {
                        println!(
                            "client: (recovered from its message: h2 keeps only the kind and text of I/O errors)"
                        );
                    }
                }
                None => {
                    println!("client: DeadPeer::recover -> None (the death is not in the chain)")
                }
            }
        }
    }
    Ok(())
}
