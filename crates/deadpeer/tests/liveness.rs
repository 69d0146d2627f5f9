//! Liveness::dead(): resolves on a real death with nothing reading, stays quiet on a healthy
//! connection, and keeps no descriptor or task alive once the stream is dropped.

mod common;

use std::time::{Duration, Instant};

use common::{OVERSHOOT, capture, client_pair, policy};
use deadpeer::{Cause, DeadPeer, State};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "current_thread")]
async fn dead_resolves_with_no_read_or_write_pending() {
    let Some(lab) = lab_or_skip("dead_resolves_with_no_read_or_write_pending") else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7301, &p).await;
    let liveness = client.liveness();
    let other = liveness.clone();
    assert!(matches!(liveness.state(), State::Alive));

    let start = Instant::now();
    lab.blackhole().unwrap();
    // Nothing reads or writes `client` while we wait.
    let dead = tokio::time::timeout(
        p.detection_bound() + Duration::from_secs(3),
        liveness.dead(),
    )
    .await
    .expect("dead() resolved");
    let elapsed = start.elapsed();
    assert!(elapsed <= p.detection_bound() + OVERSHOOT, "{elapsed:?}");
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout);
    assert_eq!(dead.raw_os_error(), Some(110));

    // The latch is shared: another handle, the state and the stream all give the same verdict,
    // although `dead()` consumed the kernel's one-time error.
    assert_eq!(other.dead().await.connected_for(), dead.connected_for());
    assert!(matches!(liveness.state(), State::Dead(ref d) if d.cause() == Cause::KeepaliveTimeout));
    let mut buf = [0u8; 4];
    let err = client.read(&mut buf).await.unwrap_err();
    assert_eq!(
        DeadPeer::from_io(&err).map(DeadPeer::connected_for),
        Some(dead.connected_for())
    );
    let err = client.write_all(b"late").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

    assert_eq!(events.with_message("dead peer detected").len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn healthy_idle_connection_lives_ten_seconds_without_an_event() {
    let Some(lab) = lab_or_skip("healthy_idle_connection_lives_ten_seconds_without_an_event")
    else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, mut server) = client_pair(&lab, 7302, &p).await;
    let liveness = client.liveness();
    tokio::select! {
        dead = liveness.dead() => panic!("false death: {dead}"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    // Probes were sent and answered all along.
    let info = client.tcp_info().unwrap();
    assert_eq!(info.state, deadpeer::TcpInfo::ESTABLISHED);
    assert!(
        info.last_ack_recv < Duration::from_secs(2),
        "probes answered: {info:?}"
    );
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert!(matches!(liveness.state(), State::Alive));
    assert!(events.with_message("dead peer detected").is_empty());
}

#[test]
fn dead_polled_outside_a_runtime_is_pending_and_does_not_panic() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, _server) = rt.block_on(async {
        let listener =
            deadpeer::KeepaliveListener::bind("127.0.0.1:0", deadpeer::KeepalivePolicy::FAST)
                .await
                .unwrap();
        let client = deadpeer::connect(
            listener.local_addr().unwrap(),
            &deadpeer::KeepalivePolicy::FAST,
        )
        .await
        .unwrap();
        let server = listener.accept().await.unwrap();
        (client, server)
    });
    // No runtime context on this thread: another executor polls the future.
    let mut dead = client.liveness().dead();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        std::pin::Pin::new(&mut dead).poll(&mut cx),
        Poll::Pending
    ));
    drop(client);
    assert!(matches!(
        std::pin::Pin::new(&mut dead).poll(&mut cx),
        Poll::Pending
    ));
}
