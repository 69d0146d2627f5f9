//! The confusion matrix, ICMP: a path that answers with an ICMP error while data is in flight
//! kills the connection at the user timeout with that error's errno. Each must surface as its
//! cause, latched on every observer, announced once; never as an EOF.

mod common;

use std::time::{Duration, Instant};

use common::*;
use deadpeer::{Cause, KeepalivePolicy};
use deadpeer_testkit::{Lab, Reject, Tool, lab_or_skip};
use tokio::io::AsyncWriteExt;

/// Sends data into `fault` and returns the death and how long it took from the write.
async fn unacked_into(
    lab: &Lab,
    port: u16,
    p: &KeepalivePolicy,
    fault: impl FnOnce(&Lab),
    limit: Duration,
) -> (deadpeer::DeadPeer, Duration) {
    let (events, _guard) = capture();
    let (mut client, _server) = client_pair(lab, port, p).await;
    let liveness = client.liveness();
    fault(lab);
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();
    let dead = wait_dead(&liveness, limit).await;
    let elapsed = start.elapsed();
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
    (dead, elapsed)
}

#[tokio::test(flavor = "current_thread")]
async fn icmp_port_unreachable_is_refused() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    let p = policy(1, 1, 3);
    let reject = |lab: &Lab| lab.reject(Reject::PortUnreachable).unwrap();
    let (dead, elapsed) =
        unacked_into(&lab, 7201, &p, reject, deadline(p) + Duration::from_secs(3)).await;
    assert_cause(&dead, Cause::Refused, libc::ECONNREFUSED);
    assert_within_bound(elapsed, p);
}

#[tokio::test(flavor = "current_thread")]
async fn icmp_protocol_unreachable_is_refused() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    let p = policy(1, 1, 3);
    let reject = |lab: &Lab| lab.reject(Reject::ProtocolUnreachable).unwrap();
    let (dead, elapsed) =
        unacked_into(&lab, 7202, &p, reject, deadline(p) + Duration::from_secs(3)).await;
    assert_cause(&dead, Cause::Refused, libc::ENOPROTOOPT);
    assert_within_bound(elapsed, p);
}

#[tokio::test(flavor = "current_thread")]
async fn icmp_admin_prohibited_is_unreachable() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    let p = policy(1, 1, 3);
    let reject = |lab: &Lab| lab.reject(Reject::AdminProhibited).unwrap();
    let (dead, elapsed) =
        unacked_into(&lab, 7203, &p, reject, deadline(p) + Duration::from_secs(3)).await;
    assert_cause(&dead, Cause::Unreachable, libc::EHOSTUNREACH);
    assert_within_bound(elapsed, p);
}

/// ICMP host unreachable (an `unreachable` route on the router) makes Linux revert its
/// retransmission backoff (RFC 6069) and re-arm the timer without clamping it to the user
/// timeout: the verdict can come up to one retransmission timeout after the bound. The test
/// allows exactly that, with the RTO the kernel reached, read from `TCP_INFO` after the death.
#[tokio::test(flavor = "current_thread")]
async fn icmp_host_unreachable_is_unreachable_within_one_rto_of_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7204, &p).await;
    let liveness = client.liveness();
    lab.unreachable().unwrap();
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();
    let dead = wait_dead(&liveness, deadline(p) + Duration::from_secs(5)).await;
    let elapsed = start.elapsed();
    assert_cause(&dead, Cause::Unreachable, libc::EHOSTUNREACH);
    let rto = deadpeer::tcp_info(&client).unwrap().rto;
    assert!(
        elapsed <= deadline(p) + rto,
        "died after {elapsed:?}: bound {:?} + slack {:?} + RTO {rto:?}",
        p.detection_bound(),
        p.timer_slack()
    );
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}

/// Without a `Liveness`, the stream alone: the read that is pending when the kernel kills the
/// connection gets the cause, not an EOF.
#[tokio::test(flavor = "current_thread")]
async fn icmp_port_unreachable_reaches_a_pending_read_without_liveness() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, _server) = client_pair(&lab, 7205, &p).await;
    lab.reject(Reject::PortUnreachable).unwrap();
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();
    let mut buf = [0u8; 16];
    let err = tokio::time::timeout(
        deadline(p) + Duration::from_secs(3),
        tokio::io::AsyncReadExt::read(&mut client, &mut buf),
    )
    .await
    .expect("the read was not released")
    .expect_err("a death, not data or EOF");
    assert_within_bound(start.elapsed(), p);
    let dead = deadpeer::DeadPeer::from_io(&err)
        .expect("a DeadPeer")
        .clone();
    assert_cause(&dead, Cause::Refused, libc::ECONNREFUSED);
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // A Liveness taken after the death sees it too.
    let liveness = client.liveness();
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}
