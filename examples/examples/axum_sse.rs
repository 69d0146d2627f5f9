//! An axum Server-Sent Events endpoint that ends its stream when the client dies.
//!
//! SSE handlers spend their life waiting for the next event and never read from the client.
//! Here the handler takes its connection's `Liveness` as connect info and ends the event stream
//! with `take_until(liveness.dead())`, which resolves as soon as the kernel declares the client
//! dead, with no read or write pending.
//!
//! What the run shows: under axum, hyper keeps a read pending on every connection, so once the
//! `KeepaliveListener` has put keepalive on the socket, hyper's read usually sees the death first
//! and axum drops the stream before `take_until` fires. Either way the stream and its `Liveness`
//! share one latch, so the end of the stream reports the same `DeadPeer`. `take_until` is what
//! ends the stream when nothing reads the socket (your own server loop, a task that outlives
//! the connection).
//!
//! The client is a real HTTP/1 client (hyper) in the lab's client namespace. It reads three
//! events and then vanishes (a blackhole). With a 1/1/3 policy the server ends the stream within
//! 4 s.
//!
//! Run: `cargo run -p examples --example axum_sse` (as root: the lab needs network namespaces).
//! Without the privileges it prints one `skipped axum_sse: <reason>` line and exits 0; with
//! `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use deadpeer::liveness::State as LivenessState;
use deadpeer::{KeepalivePolicy, Liveness};
use futures_util::{Stream, StreamExt, stream};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

/// Reports how the event stream ended, when axum drops it.
struct EndNotice {
    liveness: Liveness,
    via_dead: Arc<AtomicBool>,
    ended: mpsc::UnboundedSender<Instant>,
}

impl Drop for EndNotice {
    fn drop(&mut self) {
        // The stream and its `Liveness` share one latch: whoever saw the death first (hyper's
        // read of the connection or `dead()`), the state says why.
        match self.liveness.state() {
            LivenessState::Dead(dead) => {
                println!("sse stream ended: client dead ({})", dead.cause());
                println!("server: {dead}");
                if !self.via_dead.load(Ordering::SeqCst) {
                    // hyper keeps a read pending on every connection; with keepalive on, that
                    // read fails first and axum drops the stream before `take_until` fires.
                    println!("server: (hyper's read of the connection saw the death first)");
                }
            }
            LivenessState::Closed => println!("sse stream ended: connection closed"),
            _ => println!("sse stream ended"),
        }
        let _ = self.ended.send(Instant::now());
    }
}

/// The SSE handler: three events, then silence (a quiet channel), until the client dies.
async fn events(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    State(ended): State<mpsc::UnboundedSender<Instant>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    println!("server: client {:?} subscribed", liveness.peer_addr());
    let via_dead = Arc::new(AtomicBool::new(false));
    let notice = EndNotice {
        liveness: liveness.clone(),
        via_dead: Arc::clone(&via_dead),
        ended,
    };
    let ticks = stream::iter(1..=3)
        .then(|n| async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(Event::default().data(format!("tick {n}")))
        })
        // Nothing more to send for now: the handler waits, and reads nothing from the client.
        .chain(stream::pending())
        .map(move |event| {
            let _ = &notice; // dropped with the stream
            event
        });
    let dead = async move {
        // `None`: the connection closed without a death; the stream ends with it.
        if let Some(dead) = liveness.dead().await {
            via_dead.store(true, Ordering::SeqCst);
            println!(
                "server: liveness.dead() resolved ({}), ending the stream",
                dead.cause()
            );
        }
    };
    Sse::new(ticks.take_until(dead))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("deadpeer=info")),
        )
        .init();

    let Some(lab) = deadpeer_testkit::lab_or_skip("axum_sse") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "1:1:3".parse()?;

    // The server: axum on a `KeepaliveListener` in the lab's server namespace, with each
    // connection's `Liveness` as connect info.
    let addr = SocketAddr::new(lab.server_addr(), 8080);
    let listener = deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?;
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/events", get(events))
        .with_state(ended_tx);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Liveness>(),
        )
        .await
    });

    // The client: hyper's HTTP/1 client over a connection made in the client namespace.
    let tcp = lab.client().tokio_connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(format!("http://{addr}/events"))
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    println!("client: GET /events -> {}", response.status());
    let mut body = response.into_body();
    let mut seen = 0;
    while seen < 3 {
        let Some(frame) = body.frame().await.transpose()? else {
            break;
        };
        if let Some(data) = frame.data_ref() {
            for line in String::from_utf8_lossy(data)
                .lines()
                .filter(|l| !l.is_empty())
            {
                println!("client: {line}");
                seen += line.starts_with("data:") as usize;
            }
        }
    }

    println!("client: vanishes (blackhole between client and server)");
    lab.blackhole()?;
    let start = Instant::now();
    match tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        ended.recv(),
    )
    .await
    {
        Ok(Some(at)) => println!(
            "server: stream ended {:.1}s after the client vanished (bound {:?})",
            at.duration_since(start).as_secs_f64(),
            policy.detection_bound()
        ),
        _ => return Err("the server did not notice the dead client in time".into()),
    }
    drop(body);
    conn.abort();
    Ok(())
}
