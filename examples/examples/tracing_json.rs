//! deadpeer's events as JSON lines, the way a log pipeline receives them.
//!
//! The example installs `tracing_subscriber::fmt().json()` (the library never installs a
//! subscriber), serves one connection from a `KeepaliveListener` with a 1/1/3 policy in the lab's
//! server namespace, and makes the client vanish (a blackhole). Within 4 s the server's read
//! fails with a `DeadPeer`, and the `dead peer detected` event appears as one JSON line, target
//! `deadpeer`, with OpenTelemetry's field names: `network.peer.address`, `network.peer.port`,
//! `network.local.address`, `network.local.port`, `network.transport`, `network.type`,
//! `error.type` (the cause), and `connected_for_s`, `idle_for_s` (numbers of seconds), `policy`
//! and `errno`.
//!
//! Filter: `RUST_LOG` overrides the default `deadpeer=debug,tracing_json=info`; for production,
//! `deadpeer=info` keeps the listener and death events and drops the per-connection DEBUG one.
//!
//! Run: `cargo run -p examples --example tracing_json` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped tracing_json: <reason>` line and
//! exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::net::SocketAddr;
use std::time::Duration;

use deadpeer::{DeadPeer, KeepalivePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("deadpeer=debug,tracing_json=info")),
        )
        .init();

    let Some(lab) = deadpeer_testkit::lab_or_skip("tracing_json") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "idle=1s,interval=1s,probes=3".parse()?;

    let addr = SocketAddr::new(lab.server_addr(), 7000);
    let listener = deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?;
    let mut client = lab.client().tokio_connect(addr).await?;
    let (mut server, peer) = listener.accept().await?;
    info!(%peer, "accepted");

    client.write_all(b"hello").await?;
    let mut buf = [0; 64];
    let n = server.read(&mut buf).await?;
    info!(
        bytes = n,
        "read from the client; now the client vanishes (blackhole)"
    );
    lab.blackhole()?;

    match tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        server.read(&mut buf),
    )
    .await
    {
        Err(_) => return Err("the server did not notice the dead client in time".into()),
        Ok(Ok(n)) => info!(bytes = n, "read returned data or EOF (unexpected)"),
        Ok(Err(err)) => {
            let cause = DeadPeer::from_io(&err).map(|dead| dead.cause().as_str());
            info!(error = %err, kind = ?err.kind(), cause, "read failed");
        }
    }
    Ok(())
}
