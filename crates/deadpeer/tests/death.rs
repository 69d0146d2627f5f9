//! The confusion matrix: each real fault gives exactly its cause, within the bound; the verdict is
//! latched and announced once. Dead peers come from the testkit's network namespaces.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::{OVERSHOOT, capture, client_pair, policy};
use deadpeer::{Cause, DeadPeer, UserTimeout};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn read_err(
    stream: &mut deadpeer::KeepaliveStream<tokio::net::TcpStream>,
    limit: Duration,
) -> io::Error {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Err(e)) => e,
        Ok(Ok(n)) => panic!("read returned Ok({n}) where a death was expected"),
        Err(_) => panic!("no error within {limit:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn blackhole_on_idle_socket_is_keepalive_timeout_latched_and_announced_once() {
    let Some(lab) =
        lab_or_skip("blackhole_on_idle_socket_is_keepalive_timeout_latched_and_announced_once")
    else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7101, &p).await;
    let start = Instant::now();
    lab.blackhole().unwrap();

    let err = read_err(&mut client, p.detection_bound() + Duration::from_secs(3)).await;
    let elapsed = start.elapsed();
    assert!(
        elapsed <= p.detection_bound() + OVERSHOOT,
        "died after {elapsed:?}, bound {:?}",
        p.detection_bound()
    );
    assert!(
        elapsed >= Duration::from_secs(3),
        "died after only {elapsed:?}: probes take 3 s"
    );
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer").clone();
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout);
    assert_eq!(dead.raw_os_error(), Some(110));
    assert_eq!(dead.policy(), Some(&p));
    assert_eq!(
        dead.peer_addr(),
        Some(std::net::SocketAddr::new(lab.server_addr(), 7101))
    );
    assert_eq!(dead.local_addr().map(|a| a.ip()), Some(lab.client_addr()));
    let idle = dead.idle_for().expect("TCP_INFO on Linux");
    assert!(
        idle >= Duration::from_secs(3) && idle <= p.detection_bound() + OVERSHOOT,
        "idle_for {idle:?}"
    );

    // The latch: the kernel would now say EOF and EPIPE; the stream repeats the verdict.
    let mut buf = [0u8; 8];
    let again = client.read(&mut buf).await.unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::TimedOut);
    assert_eq!(DeadPeer::from_io(&again).unwrap().raw_os_error(), Some(110));
    assert_eq!(
        DeadPeer::from_io(&again).unwrap().connected_for(),
        dead.connected_for()
    );
    let write = client.write_all(b"more").await.unwrap_err();
    assert_eq!(write.kind(), io::ErrorKind::TimedOut);
    assert_eq!(
        DeadPeer::from_io(&write).unwrap().cause(),
        Cause::KeepaliveTimeout
    );
    assert_eq!(
        client.dead_peer().map(DeadPeer::cause),
        Some(Cause::KeepaliveTimeout)
    );

    // Exactly one event, with every fixed field.
    let detected = events.with_message("dead peer detected");
    assert_eq!(detected.len(), 1, "{detected:#?}");
    let e = &detected[0];
    assert_eq!(e.level, tracing::Level::WARN);
    assert!(e.target.starts_with("deadpeer"), "{}", e.target);
    for field in [
        "peer.addr",
        "local.addr",
        "cause",
        "connected_for",
        "idle_for",
        "policy",
        "errno",
    ] {
        assert!(e.fields.contains_key(field), "missing {field} in {e:#?}");
    }
    assert_eq!(e.fields["cause"], "keepalive_timeout");
    assert_eq!(e.fields["errno"], "110");
    assert_eq!(e.fields["peer.addr"], format!("{}:7101", lab.server_addr()));
    assert_eq!(e.fields["policy"], p.to_string());
}

#[tokio::test(flavor = "current_thread")]
async fn unacked_data_with_auto_user_timeout_is_retransmit_timeout() {
    let Some(lab) = lab_or_skip("unacked_data_with_auto_user_timeout_is_retransmit_timeout") else {
        return;
    };
    let p = policy(1, 1, 3);
    assert_eq!(p.user_timeout(), UserTimeout::Auto);
    let (mut client, _server) = client_pair(&lab, 7102, &p).await;
    lab.blackhole().unwrap();
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();

    let err = read_err(&mut client, p.detection_bound() + Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer");
    assert_eq!(dead.cause(), Cause::RetransmitTimeout, "{dead}");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert!(
        elapsed <= p.detection_bound() + OVERSHOOT,
        "died after {elapsed:?}, bound {:?}",
        p.detection_bound()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn forgotten_connection_is_reset() {
    let Some(lab) = lab_or_skip("forgotten_connection_is_reset") else {
        return;
    };
    let p = policy(1, 1, 3);
    let (mut client, server) = client_pair(&lab, 7103, &p).await;
    let start = Instant::now();
    lab.forget(server.into_std().unwrap()).unwrap();

    let err = read_err(&mut client, p.detection_bound() + Duration::from_secs(3)).await;
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer");
    assert_eq!(dead.cause(), Cause::Reset, "{dead}");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(dead.raw_os_error(), Some(104));
    // The first probe (after 1 s idle) meets the RST.
    assert!(
        start.elapsed() < p.detection_bound(),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_with_unacked_data_is_unreachable() {
    let Some(lab) = lab_or_skip("unreachable_with_unacked_data_is_unreachable") else {
        return;
    };
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7104, &p).await;
    lab.unreachable().unwrap();
    client.write_all(&[7u8; 1000]).await.unwrap();

    let err = read_err(&mut client, p.detection_bound() + Duration::from_secs(5)).await;
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer");
    assert_eq!(dead.cause(), Cause::Unreachable, "{dead}");
    assert_eq!(dead.raw_os_error(), Some(113));
    assert_eq!(err.kind(), io::ErrorKind::HostUnreachable);
}

#[tokio::test(flavor = "current_thread")]
async fn fin_is_a_plain_eof_and_never_a_death() {
    let Some(lab) = lab_or_skip("fin_is_a_plain_eof_and_never_a_death") else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, server) = client_pair(&lab, 7105, &p).await;
    let liveness = client.liveness();
    lab.fin(server.into_std().unwrap()).unwrap();

    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "EOF");
    assert!(client.dead_peer().is_none());
    // Nothing dies afterwards either, not even over the whole bound.
    let wait = tokio::time::timeout(p.detection_bound() + OVERSHOOT, liveness.dead()).await;
    assert!(wait.is_err(), "a FIN was reported as a death: {wait:?}");
    assert!(events.with_message("dead peer detected").is_empty());
}
