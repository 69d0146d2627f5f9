//! A plain tokio accept loop whose per-connection handlers are reaped when their client dies.
//!
//! The handler echoes lines. For the line `slow`, it first waits on a slow backend (60 s), as
//! handlers do, and reads nothing from the client meanwhile. The client vanishes during that wait
//! (a blackhole in a network-namespace lab): without deadpeer the handler would run its full
//! 60 s for nobody and the connection would stay open for hours. With `ReapLayer` and a 1/1/3
//! policy, the kernel declares the client dead within 4 s, the handler's future is dropped on
//! the spot, and the call returns the `DeadPeer`.
//!
//! Run: `cargo run -p examples --example echo_server` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped echo_server: <reason>` line and
//! exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::layer::ReapLayer;
use deadpeer::{DeadPeer, KeepalivePolicy, KeepaliveStream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tower::service_fn;
use tower_layer::Layer;
use tower_service::Service;
use tracing_subscriber::EnvFilter;

/// Prints if the handler's future is dropped while it waits on the backend.
struct DropNotice {
    armed: bool,
}

impl Drop for DropNotice {
    fn drop(&mut self) {
        if self.armed {
            println!("server: handler future dropped while it was waiting on the backend");
        }
    }
}

/// The per-connection handler: echo lines; `slow` first waits on a slow backend.
async fn handle(stream: KeepaliveStream) -> std::io::Result<()> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        if line == "slow" {
            let mut notice = DropNotice { armed: true };
            println!("server: `slow` received, waiting 60 s on the backend without reading");
            tokio::time::sleep(Duration::from_secs(60)).await;
            notice.armed = false;
        }
        write.write_all(format!("{line}\n").as_bytes()).await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("deadpeer=info")),
        )
        .init();

    let Some(lab) = deadpeer_testkit::lab_or_skip("echo_server") else {
        return Ok(());
    };
    // 1 s idle, 1 s between probes, 3 probes: a dead client is found within 4 s.
    let policy: KeepalivePolicy = "1:1:3".parse()?;
    println!(
        "policy {policy}, detection bound {:?}",
        policy.detection_bound()
    );

    // The server: a plain tokio listener inside the lab's server namespace. `ReapLayer` applies
    // the policy to each accepted socket and hands the handler a `KeepaliveStream`.
    let addr = SocketAddr::new(lab.server_addr(), 7000);
    let listener = lab.server().tokio_listener(addr)?;
    let reap = ReapLayer::new(policy).layer(service_fn(|stream| async move {
        handle(stream).await?;
        Ok::<_, std::io::Error>(())
    }));
    let (done_tx, mut done) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            println!("server: accepted {peer}");
            let mut reap = reap.clone();
            let done_tx = done_tx.clone();
            tokio::spawn(async move {
                let result = reap.call(stream).await;
                let _ = done_tx.send((peer, result, Instant::now()));
            });
        }
    });

    // The client, inside the client namespace, with no keepalive of its own.
    let stream = lab.client().tokio_connect(addr).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"hello\n").await?;
    println!(
        "client: sent `hello`, got `{}` back",
        lines.next_line().await?.unwrap_or_default()
    );
    write.write_all(b"slow\n").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    println!("client: vanishes (blackhole between client and server)");
    lab.blackhole()?;
    let start = Instant::now();

    let Ok(Some((peer, result, at))) = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        done.recv(),
    )
    .await
    else {
        // Returning (not `process::exit`) drops the lab, which deletes its namespaces.
        return Err("the server did not reap the handler in time".into());
    };
    match result {
        Ok(()) => println!("server: handler for {peer} finished normally (unexpected)"),
        Err(err) => match DeadPeer::find(&*err) {
            Some(dead) => println!(
                "server: handler for {peer} reaped after {:.1}s: {dead} (cause {:?})",
                at.duration_since(start).as_secs_f64(),
                dead.cause()
            ),
            None => println!("server: handler for {peer} failed: {err}"),
        },
    }
    Ok(())
}
