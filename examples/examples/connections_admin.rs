//! An admin endpoint that answers "which connections are being probed right now?": an axum
//! server whose `KeepaliveListener` tracks its connections in a `deadpeer::connections::Connections`,
//! and serves `Connections::snapshot()` as JSON at `/connections`, with each connection's fresh
//! `TCP_INFO`.
//!
//! Two clients send a long poll (`GET /wait`) and stay idle: one from the lab's client
//! namespace, which then vanishes (a blackhole), and one from the router namespace, which stays
//! healthy. The example polls its own `/connections` until the vanished client shows keepalive
//! probes outstanding, prints that snapshot, and exits before the verdict (a 1/1/5 policy gives
//! up after 6 s). The healthy client shows `"probes": 0`: its kernel answers every probe.
//!
//! Run: `cargo run -p examples --example connections_admin` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped connections_admin: <reason>` line
//! and exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::routing::get;
use deadpeer::connections::{ConnectionInfo, Connections};
use deadpeer::{KeepaliveListener, KeepalivePolicy, Liveness};
use deadpeer_testkit::Netns;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One connection as JSON: addresses, age and policy, and what `TCP_INFO` says now.
fn to_json(c: &ConnectionInfo) -> Value {
    json!({
        "peer": c.peer_addr.map(|a| a.to_string()),
        "local": c.local_addr.map(|a| a.to_string()),
        "age_s": c.age.as_secs_f64(),
        "policy": c.policy.map(|p| p.to_string()),
        "probing": c.is_probing(),
        "tcp_info": c.tcp_info.map(|i| json!({
            "state": i.state,
            "probes": i.probes,
            "backoff": i.backoff,
            "retransmits": i.retransmits,
            "unacked": i.unacked,
            "idle_s": i.last_data_recv.as_secs_f64(),
            "rtt_s": i.rtt.as_secs_f64(),
        })),
        "dead": c.dead_peer.as_ref().map(|d| d.cause().as_str()),
        "ending": c.ending.map(|e| e.as_str()),
    })
}

/// `/connections`: the snapshot, as a JSON array.
async fn connections(
    State(connections): State<Connections>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let all: Vec<Value> = connections.snapshot().iter().map(to_json).collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&all).unwrap_or_default(),
    )
}

/// A long poll that answers when the client's connection dies.
async fn wait(ConnectInfo(liveness): ConnectInfo<Liveness>) -> &'static str {
    let _ = liveness.dead().await;
    "bye"
}

/// `GET path` over HTTP/1.1 from `netns`: the response body.
async fn get_from(netns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = netns.tokio_connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(response.clone(), |(_, body)| body.to_owned()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(lab) = deadpeer_testkit::lab_or_skip("connections_admin") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "1:1:5".parse()?;
    let addr = SocketAddr::new(lab.server_addr(), 9001);
    let tracked = Connections::new();
    let listener =
        KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?.track(&tracked);
    let app = Router::new()
        .route("/wait", get(wait))
        .route("/connections", get(connections))
        .with_state(tracked);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Liveness>(),
        )
        .await
    });

    let poll = format!("GET /wait HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut doomed = lab.client().tokio_connect(addr).await?;
    doomed.write_all(poll.as_bytes()).await?;
    let doomed_addr = doomed.local_addr()?.to_string();
    let mut healthy = lab.router().tokio_connect(addr).await?;
    healthy.write_all(poll.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    lab.blackhole()?;
    println!("client {doomed_addr} vanished (blackhole); policy {policy}");

    // Poll the admin endpoint (from the router, which still reaches the server) until the
    // vanished client is being probed.
    loop {
        let body = get_from(lab.router(), addr, "/connections").await?;
        let all: Vec<Value> = serde_json::from_str(&body)?;
        let doomed = all.iter().find(|c| c["peer"] == doomed_addr.as_str());
        if doomed.is_some_and(|c| c["probing"] == true) {
            println!(
                "GET /connections, {:.1}s after the client vanished:\n{body}",
                start.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if start.elapsed() > policy.detection_bound() {
            return Err(format!("the vanished client was never seen probing:\n{body}").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
