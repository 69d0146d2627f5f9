//! Every [`Reject`] on both families: what a connection with unacknowledged data gets when the
//! router rejects its segments, and when. One lab per variant, all at once.
//!
//! Run with `--nocapture` to see the measurements (the table in `docs/testing.md`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use deadpeer_testkit::{Family, Lab, Reject, Tool, WAKE, deadline, lab_or_skip, send_nowait};

const ALL: [Reject; 6] = [
    Reject::PortUnreachable,
    Reject::ProtocolUnreachable,
    Reject::HostUnreachable,
    Reject::NetUnreachable,
    Reject::AdminProhibited,
    Reject::TcpReset,
];

/// The errno each reject gives, per family (see `Reject`'s documentation).
fn expected_errno(how: Reject, family: Family) -> i32 {
    match (how, family) {
        (Reject::PortUnreachable, _) => ECONNREFUSED,
        (Reject::ProtocolUnreachable, Family::V4) => ENOPROTOOPT,
        // IPv6 has no protocol unreachable; the lab sends port unreachable instead.
        (Reject::ProtocolUnreachable, Family::V6) => ECONNREFUSED,
        (Reject::HostUnreachable, _) => EHOSTUNREACH,
        (Reject::NetUnreachable, _) => ENETUNREACH,
        (Reject::AdminProhibited, Family::V4) => EHOSTUNREACH,
        (Reject::AdminProhibited, Family::V6) => EACCES,
        (Reject::TcpReset, _) => ECONNRESET,
        _ => unreachable!("a new Reject variant needs its row here"),
    }
}

/// The ICMP errors after which Linux reverts its retransmission backoff (RFC 6069,
/// `tcp_ld_RTO_revert`): IPv4 host and network unreachable, IPv6 no route only. The death can
/// then come up to one RTO after the deadline.
fn reverts_backoff(how: Reject, family: Family) -> bool {
    match family {
        Family::V4 => matches!(how, Reject::HostUnreachable | Reject::NetUnreachable),
        Family::V6 => how == Reject::NetUnreachable,
    }
}

async fn reject_case(how: Reject, family: Family) -> String {
    let lab = Lab::new().expect("a lab per variant");
    let p = fast();
    let user_timeout = p.effective_user_timeout().unwrap();
    let (mut client, _server) = connected(&lab, family, 7000).await;
    apply(&client, p);

    lab.reject(how).unwrap();
    assert_eq!(send_nowait(&client, 1000).unwrap(), 1000);
    let start = Instant::now();
    let limit = deadline(p) + Duration::from_secs(4);
    let (err, elapsed) = read_error(&mut client, start, limit).await;
    report(family, &format!("{how:?}, unacked data"), &err, elapsed);
    let what = format!("{family} {how:?}: {err} after {elapsed:?}");
    assert_eq!(
        err.raw_os_error(),
        Some(expected_errno(how, family)),
        "{what}"
    );
    if how == Reject::TcpReset {
        // The router answers the data segment itself, at once: no timer is involved.
        assert!(elapsed <= WAKE, "{what}");
    } else {
        // ICMP errors are soft: the connection dies at its user timeout, with their errno.
        assert!(elapsed >= user_timeout, "{what}: before the user timeout");
        let rto = if reverts_backoff(how, family) {
            deadpeer::tcp_info(&client).unwrap().rto
        } else {
            Duration::ZERO
        };
        assert!(
            elapsed <= deadline(p) + rto,
            "{what}: deadline {:?} + RTO {rto:?}",
            deadline(p)
        );
    }
    what
}

async fn all_rejects(family: Family) {
    let cases = ALL.map(|how| tokio::spawn(reject_case(how, family)));
    for case in cases {
        case.await.expect("the case passed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_kill_unacked_data_with_their_errno_v4() {
    if lab_or_skip!(Lab::builder().requires(Tool::NFT)).is_none() {
        return;
    }
    all_rejects(Family::V4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_kill_unacked_data_with_their_errno_v6() {
    if lab_or_skip!(Lab::builder().requires(Tool::NFT)).is_none() {
        return;
    }
    all_rejects(Family::V6).await;
}
