//! deadpeer's metrics in Prometheus: an axum server under a `KeepaliveListener`, with
//! `metrics-exporter-prometheus` as the recorder and its own `/metrics` endpoint.
//!
//! A client in the lab's client namespace sends a long-poll request (`GET /wait`, answered only
//! when something happens) and then vanishes (a blackhole). With a 1/1/3 policy the server finds
//! it dead within 4 s, and the example fetches its own `/metrics` (from the router namespace,
//! which still reaches the server) and prints the lines for deaths by cause and watched
//! connections:
//!
//! ```text
//! deadpeer_dead_connections_total{error_type="keepalive_timeout",deadpeer_ending="vanished"} 1
//! deadpeer_watched_connections 1
//! ```
//!
//! The one watched connection is the `/metrics` request's own (axum takes each connection's
//! `Liveness` here, which watches it); the dead client's is gone, since hyper dropped its stream.
//!
//! The recorder: `PrometheusBuilder::with_recommended_naming(true)` turns OpenTelemetry-style
//! names into Prometheus ones (`deadpeer.dead_connections` → `deadpeer_dead_connections_total`,
//! `deadpeer.dead_connection.duration` → `deadpeer_dead_connection_duration_seconds`), and
//! `deadpeer::metrics::DURATION_BUCKETS` makes the two duration metrics histograms rather than
//! summaries. `deadpeer::metrics::describe()` adds the `# HELP` lines and units.
//!
//! Run: `cargo run -p examples --example metrics_prometheus` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped metrics_prometheus: <reason>` line
//! and exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use deadpeer::{KeepaliveListener, KeepalivePolicy, Liveness};
use deadpeer_testkit::Netns;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A long poll: answers when the client's connection dies (nothing else ever happens here).
async fn wait(ConnectInfo(liveness): ConnectInfo<Liveness>) -> &'static str {
    println!("server: {:?} is waiting", liveness.peer_addr());
    match liveness.dead().await {
        Some(dead) => println!("server: the waiting client died: {dead}"),
        None => println!("server: the waiting client left"),
    }
    "bye"
}

async fn metrics(State(handle): State<PrometheusHandle>) -> String {
    handle.render()
}

/// `GET path` over HTTP/1.1 from `netns`, the whole response as text.
async fn get_from(netns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = netns.tokio_connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("deadpeer=warn")),
        )
        .init();
    let Some(lab) = deadpeer_testkit::lab_or_skip("metrics_prometheus") else {
        return Ok(());
    };

    // The recorder, installed globally (deaths seen by deadpeer's reaper thread are counted
    // there), then deadpeer's descriptions and units.
    let handle = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Prefix("deadpeer.dead_connection.".into()),
            deadpeer::metrics::DURATION_BUCKETS,
        )?
        .install_recorder()?;
    deadpeer::metrics::describe();

    let policy: KeepalivePolicy = "1:1:3".parse()?;
    let addr = SocketAddr::new(lab.server_addr(), 9000);
    let listener = KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?;
    let app = Router::new()
        .route("/wait", get(wait))
        .route("/metrics", get(metrics))
        .with_state(handle);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Liveness>(),
        )
        .await
    });

    // The client: a long poll, then it vanishes.
    let mut client = lab.client().tokio_connect(addr).await?;
    client
        .write_all(format!("GET /wait HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    lab.blackhole()?;
    println!("client: vanished (blackhole); policy {policy}");

    // Scrape until the death shows, as Prometheus would every few seconds.
    let until = start + policy.detection_bound() + Duration::from_secs(3);
    let body = loop {
        let response = get_from(lab.router(), addr, "/metrics").await?;
        if response.contains("deadpeer_dead_connections_total{") {
            break response;
        }
        if Instant::now() > until {
            return Err(format!("no death counted within the bound:\n{response}").into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "scraped /metrics {:.1}s after the client vanished:",
        start.elapsed().as_secs_f64()
    );
    for line in body.lines().filter(|l| {
        l.starts_with("deadpeer_dead_connections_total")
            || l.starts_with("deadpeer_watched_connections")
            || l.starts_with("deadpeer_opened_connections_total")
    }) {
        println!("  {line}");
    }
    let death = "deadpeer_dead_connections_total{error_type=\"keepalive_timeout\",deadpeer_ending=\"vanished\"} 1";
    if !body.contains(death) {
        return Err(format!("expected one keepalive_timeout death:\n{body}").into());
    }
    Ok(())
}
