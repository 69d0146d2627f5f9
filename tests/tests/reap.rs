//! ReapLayer: a per-connection service blocked on something other than the socket is dropped
//! when the kernel declares its client dead.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::layer::ReapLayer;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::{events::capture, lab_or_skip};
use tokio::sync::{mpsc, oneshot};
use tower_layer::Layer;
use tower_service::Service;

/// Reports the instant it is dropped: proves the handler future was reaped.
struct DropGuard(Option<mpsc::UnboundedSender<Instant>>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

/// Blackholes the client and checks that the handler is dropped within the bound and the call
/// fails with a keepalive-timeout `DeadPeer`.
async fn blackhole_and_expect_reaped(
    lab: &deadpeer_testkit::Lab,
    policy: KeepalivePolicy,
    dropped: &mut mpsc::UnboundedReceiver<Instant>,
    call: tokio::task::JoinHandle<Result<(), deadpeer::layer::BoxError>>,
) {
    let start = Instant::now();
    lab.blackhole().unwrap();
    let dropped_at = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        dropped.recv(),
    )
    .await
    .expect("handler reaped")
    .unwrap();
    let latency = dropped_at - start;
    deadpeer_testkit::assert_within_bound(latency, policy);
    let err = call
        .await
        .unwrap()
        .expect_err("the call fails with the death");
    let dead = DeadPeer::find(&*err).expect("a DeadPeer");
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout);
}

#[tokio::test(flavor = "current_thread")]
async fn reap_layer_drops_a_handler_blocked_elsewhere_when_the_client_dies() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let addr = SocketAddr::new(lab.server_addr(), 7501);
    let listener = lab.server().tokio_listener(addr).unwrap();
    let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel();
    // Held open for the whole test: the handler waits on it forever.
    let (_never_tx, never_rx) = oneshot::channel::<()>();
    let never_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(never_rx)));

    let handler = tower::service_fn(move |stream: KeepaliveStream| {
        let guard = DropGuard(Some(dropped_tx.clone()));
        let never_rx = never_rx.clone();
        async move {
            let _guard = guard;
            let _stream = stream;
            let rx = never_rx.lock().await.take();
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(())
        }
    });
    let mut reap = ReapLayer::new(policy).layer(handler);

    let _client = lab.client().tokio_connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let call = tokio::spawn(reap.call(stream));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        dropped_rx.try_recv().is_err(),
        "the handler runs while the client lives"
    );

    blackhole_and_expect_reaped(&lab, policy, &mut dropped_rx, call).await;
    assert_eq!(events.settled("dead peer detected", 1).len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn reap_layer_takes_keepalive_listener_streams_as_they_are() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let addr = SocketAddr::new(lab.server_addr(), 7502);
    let listener =
        deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), policy)
            .unwrap();
    let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel();
    // The inner service gets the listener's stream itself, not a stream wrapped twice.
    let handler = tower::service_fn(move |stream: KeepaliveStream| {
        let guard = DropGuard(Some(dropped_tx.clone()));
        async move {
            let _guard = guard;
            assert_eq!(
                stream.policy(),
                Some("1:1:3".parse::<KeepalivePolicy>().unwrap())
            );
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(())
        }
    });
    let mut reap = ReapLayer::new(policy).layer(handler);

    let _client = lab.client().tokio_connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let call = tokio::spawn(reap.call(stream));
    tokio::task::yield_now().await;

    blackhole_and_expect_reaped(&lab, policy, &mut dropped_rx, call).await;
}
