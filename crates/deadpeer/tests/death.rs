//! The confusion matrix, timeouts: each real fault gives exactly its cause, within the policy's
//! (truthful) bound; the verdict is latched on every observer and announced once. Dead peers come
//! from the testkit's network namespaces.

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::*;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream, UserTimeout};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn read_err(stream: &mut KeepaliveStream, limit: Duration) -> io::Error {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Err(e)) => e,
        Ok(Ok(n)) => panic!("read returned Ok({n}) where a death was expected"),
        Err(_) => panic!("no error within {limit:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn blackhole_on_idle_socket_is_keepalive_timeout_latched_and_announced_once() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7101, &p).await;
    let liveness = client.liveness();
    let start = Instant::now();
    lab.blackhole().unwrap();

    let err = read_err(&mut client, deadline(p) + Duration::from_secs(2)).await;
    let elapsed = start.elapsed();
    assert_within_bound(elapsed, p);
    assert!(
        elapsed >= Duration::from_secs(3),
        "probes take 3 s: {elapsed:?}"
    );
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer").clone();
    assert_cause(&dead, Cause::KeepaliveTimeout, libc::ETIMEDOUT);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(dead.policy(), Some(p));
    assert_eq!(
        dead.peer_addr(),
        Some(std::net::SocketAddr::new(lab.server_addr(), 7101))
    );
    assert_eq!(dead.local_addr().map(|a| a.ip()), Some(lab.client_addr()));
    let idle = dead.idle_for().expect("TCP_INFO on Linux");
    assert!(
        idle >= Duration::from_secs(3) && idle <= deadline(p),
        "idle_for {idle:?}"
    );

    // The latch: the kernel would now say EOF and EPIPE; every observer repeats the verdict.
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
    let e = &events.with_message("dead peer detected")[0];
    assert_eq!(
        e.fields["network.peer.address"],
        lab.server_addr().to_string()
    );
    assert_eq!(e.fields["network.peer.port"], "7101");
    assert_eq!(
        e.fields["network.local.address"],
        lab.client_addr().to_string()
    );
    assert_eq!(
        e.fields["connected_for_s"],
        format!("{:?}", dead.connected_for().as_millis() as f64 / 1000.0)
    );
    assert_eq!(e.fields["policy"], p.to_string());
}

#[tokio::test(flavor = "current_thread")]
async fn unacked_data_with_auto_user_timeout_is_retransmit_timeout() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    assert_eq!(p.user_timeout(), UserTimeout::Auto);
    let (mut client, _server) = client_pair(&lab, 7102, &p).await;
    let liveness = client.liveness();
    lab.blackhole().unwrap();
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();

    let dead = wait_dead(&liveness, deadline(p) + Duration::from_secs(3)).await;
    assert_within_bound(start.elapsed(), p);
    assert_cause(&dead, Cause::RetransmitTimeout, libc::ETIMEDOUT);
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}

#[tokio::test(flavor = "current_thread")]
async fn forgotten_connection_is_reset_at_the_first_probe() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, server) = client_pair(&lab, 7103, &p).await;
    let liveness = client.liveness();
    let start = Instant::now();
    lab.forget(server.into_std().unwrap()).unwrap();

    let err = read_err(&mut client, deadline(p) + Duration::from_secs(2)).await;
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer").clone();
    assert_cause(&dead, Cause::Reset, libc::ECONNRESET);
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    // The first probe, after the idle time, meets the RST.
    let first_probe = p.idle() + p.timer_slack() + WAKE;
    assert!(start.elapsed() <= first_probe, "{:?}", start.elapsed());
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}

/// A fixed user timeout above the probe bound replaces the probe count: `1/1/2` finds a silent
/// peer after 3 s, but with a 6 s user timeout only after 6 s, and `detection_bound` says so.
#[tokio::test(flavor = "current_thread")]
async fn fixed_user_timeout_above_the_probe_bound_is_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let p = policy(1, 1, 2)
        .with_user_timeout(UserTimeout::Fixed(Duration::from_secs(6)))
        .unwrap();
    assert_eq!(p.detection_bound(), Duration::from_secs(6));
    fixed_user_timeout(&lab, 7104, p).await;
}

/// A fixed user timeout below the probe bound cuts it short: `2/2/10` would take 22 s, but a 3 s
/// user timeout ends it at the first probe tick past 3 s, 4 s.
#[tokio::test(flavor = "current_thread")]
async fn fixed_user_timeout_below_the_probe_bound_is_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let p = policy(2, 2, 10)
        .with_user_timeout(UserTimeout::Fixed(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(p.detection_bound(), Duration::from_secs(4));
    fixed_user_timeout(&lab, 7105, p).await;
}

async fn fixed_user_timeout(lab: &deadpeer_testkit::Lab, port: u16, p: KeepalivePolicy) {
    let (events, _guard) = capture();
    let (mut client, _server) = client_pair(lab, port, &p).await;
    let liveness = client.liveness();
    let start = Instant::now();
    lab.blackhole().unwrap();
    let dead = wait_dead(&liveness, deadline(p) + Duration::from_secs(3)).await;
    let elapsed = start.elapsed();
    assert_within_bound(elapsed, p);
    // Not a probe tick earlier: the bound is also when it happens, not only a limit.
    let tick_before = p.detection_bound() - p.interval();
    assert!(
        elapsed > tick_before,
        "died after {elapsed:?}, before the tick at {tick_before:?}"
    );
    assert_cause(&dead, Cause::KeepaliveTimeout, libc::ETIMEDOUT);
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}

/// A healthy peer whose application stops reading is not a vanished peer: its kernel answers
/// every zero-window probe, and the user timeout ends the connection as `Stalled`.
#[tokio::test(flavor = "current_thread")]
async fn a_peer_that_stops_reading_is_stalled_not_dead() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7106, &p).await;
    let liveness = client.liveness();
    let start = Instant::now();
    // The server never reads: the writer fills both buffers and then blocks, until the kernel
    // gives up at the user timeout.
    let chunk = vec![0x55u8; 64 * 1024];
    let err = loop {
        match tokio::time::timeout(deadline(p) + Duration::from_secs(3), client.write(&chunk)).await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break e,
            Err(_) => panic!("the blocked writer was not released"),
        }
    };
    let elapsed = start.elapsed();
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer").clone();
    assert_cause(&dead, Cause::Stalled, libc::ETIMEDOUT);
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let user_timeout = p.effective_user_timeout().unwrap();
    assert!(
        elapsed >= user_timeout,
        "{elapsed:?} before the user timeout"
    );
    assert_within_bound(elapsed, p);
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}

#[tokio::test(flavor = "current_thread")]
async fn fin_is_a_plain_eof_and_never_a_death() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, server) = client_pair(&lab, 7107, &p).await;
    let liveness = client.liveness();
    lab.fin(server.into_std().unwrap()).unwrap();

    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "EOF");
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "EOF again");
    assert!(client.dead_peer().is_none());
    // Nothing dies afterwards either, not even over the whole bound.
    let wait = tokio::time::timeout(deadline(p), liveness.dead()).await;
    assert!(wait.is_err(), "a FIN was reported as a death: {wait:?}");
    assert!(events.with_message("dead peer detected").is_empty());
    // Our own shutdown completes the close: still no death, and dead() ends on drop.
    client.shutdown().await.unwrap();
    drop(client);
    assert!(liveness.dead().await.is_none());
    assert!(events.with_message("dead peer detected").is_empty());
}
