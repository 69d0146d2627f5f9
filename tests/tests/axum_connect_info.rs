//! axum: one line (`into_make_service_with_liveness`) gives handlers and middleware both
//! `ConnectInfo<SocketAddr>` and `ConnectInfo<Liveness>`; a handler waiting on `dead()` ends when
//! its client dies, and middleware that reads `ConnectInfo<SocketAddr>` from the extensions (as
//! rate limiters do) still finds it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use deadpeer::axum::RouterExt as _;
use deadpeer::{Cause, KeepaliveListener, KeepalivePolicy, Liveness};
use deadpeer_testkit::lab_or_skip;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

/// What the server saw: the middleware's address, and the waiting handler's outcome.
#[derive(Clone)]
struct Seen(mpsc::UnboundedSender<String>);

async fn who(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ConnectInfo(liveness): ConnectInfo<Liveness>,
) -> String {
    format!("{addr} {:?}", liveness.peer_addr())
}

/// Reports how the waiting handler ended, when it ends or hyper drops it.
struct OnEnd(Liveness, Seen);

impl Drop for OnEnd {
    fn drop(&mut self) {
        let outcome = match self.0.state() {
            State2::Dead(dead) => format!("dead {}", dead.cause().as_str()),
            other => format!("{other:?}"),
        };
        let _ = (self.1).0.send(outcome);
    }
}

use deadpeer::liveness::State as State2;

/// Waits for the client's death, reading nothing from it. hyper keeps a read pending on the
/// connection, so it usually sees the death first and drops this future; either way the
/// connection's `Liveness` holds the verdict.
async fn wait(ConnectInfo(liveness): ConnectInfo<Liveness>, State(seen): State<Seen>) -> String {
    let _on_end = OnEnd(liveness.clone(), seen);
    match liveness.dead().await {
        Some(_) => "dead".into(),
        None => "closed".into(),
    }
}

/// Third-party middleware that reads the peer address from the extensions.
async fn record_addr(State(seen): State<Seen>, request: Request, next: Next) -> Response {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let _ = seen.0.send(format!("middleware {addr:?}"));
    next.run(request).await
}

#[tokio::test(flavor = "current_thread")]
async fn connect_info_socket_addr_and_liveness_together() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = deadpeer_testkit::events::capture();
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let addr = SocketAddr::new(lab.server_addr(), 7801);
    let listener =
        KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), policy).unwrap();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let state = Seen(tx);
    let app = Router::new()
        .route("/who", get(who))
        .route("/wait", get(wait))
        .layer(middleware::from_fn_with_state(state.clone(), record_addr))
        .with_state(state);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_liveness())
            .await
            .unwrap();
    });

    let response = common::get_from(lab.client(), addr, "/who").await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    let client_ip = lab.client_addr().to_string();
    assert!(body.starts_with(&client_ip), "{body}");
    assert!(body.contains(&format!("Some({client_ip}:")), "{body}");
    let middleware = seen.recv().await.unwrap();
    assert!(
        middleware.starts_with(&format!("middleware Some({client_ip}:")),
        "{middleware}"
    );

    // A second connection waits for its death; then the client vanishes.
    let _response = tokio::spawn({
        let tcp = lab.client().tokio_connect(addr).await.unwrap();
        async move {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let request = hyper::Request::get("/wait")
                .header("host", addr.to_string())
                .body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .unwrap();
            sender.send_request(request).await
        }
    });
    assert!(seen.recv().await.unwrap().starts_with("middleware Some("));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    lab.blackhole().unwrap();
    let outcome = tokio::time::timeout(
        policy.detection_bound() + policy.timer_slack() + Duration::from_secs(2),
        seen.recv(),
    )
    .await
    .expect("the waiting handler ended")
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        outcome,
        format!("dead {}", Cause::KeepaliveTimeout.as_str())
    );
    assert!(
        elapsed <= policy.detection_bound() + policy.timer_slack() + Duration::from_millis(100),
        "{elapsed:?}"
    );
    assert_eq!(events.settled("dead peer detected", 1).len(), 1);
}
