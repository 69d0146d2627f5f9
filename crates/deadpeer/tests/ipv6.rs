//! The core deaths over IPv6: each real fault gives its cause and errno, within the policy's
//! bound (the testkit's `dies_within_bound`), announced exactly once. The lab is dual-stack;
//! these connections run between its IPv6 (unique local) addresses.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{assert_one_event, capture};
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream, UserTimeout};
use deadpeer_testkit::{Family, Lab, Reject, Tool, WAKE, dies_within_bound, lab_or_skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `deadpeer::connect` client in the lab's client namespace and the accepted plain server
/// stream in the server namespace, over `family`. One byte is exchanged each way so that both
/// sides are established and have just received data.
async fn pair(
    lab: &Lab,
    family: Family,
    port: u16,
    policy: KeepalivePolicy,
) -> (KeepaliveStream, TcpStream) {
    let addr = SocketAddr::new(lab.server_addr_for(family), port);
    let listener = lab.server().tokio_listener(addr).unwrap();
    let mut client = {
        // A current-thread runtime: the task cannot move to a thread outside the namespace.
        let _inside = lab.client().enter().unwrap();
        deadpeer::connect(addr, policy).await.unwrap()
    };
    let (mut server, peer) = listener.accept().await.unwrap();
    assert_eq!(peer.ip(), lab.client_addr_for(family));
    client.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).await.unwrap();
    server.write_all(b"y").await.unwrap();
    client.read_exact(&mut b).await.unwrap();
    (client, server)
}

fn fast() -> KeepalivePolicy {
    let p: KeepalivePolicy = "1:1:3".parse().unwrap();
    assert_eq!(p.user_timeout(), UserTimeout::Auto);
    p
}

/// Asserts the cause, the errno, and that the death is the one of this IPv6 connection.
#[track_caller]
fn assert_death(dead: &DeadPeer, lab: &Lab, port: u16, cause: Cause, errno: i32) {
    assert_eq!(dead.cause(), cause, "{dead}");
    assert_eq!(dead.raw_os_error(), Some(errno), "{dead}");
    let server = SocketAddr::new(lab.server_addr_for(Family::V6), port);
    assert_eq!(dead.peer_addr(), Some(server), "{dead}");
    assert_eq!(
        dead.local_addr().map(|a| a.ip()),
        Some(lab.client_addr_for(Family::V6))
    );
}

#[tokio::test(flavor = "current_thread")]
async fn blackhole_on_an_idle_ipv6_socket_is_keepalive_timeout() {
    let Some(lab) = lab_or_skip!() else { return };
    let (events, _guard) = capture();
    let p = fast();
    let (client, _server) = pair(&lab, Family::V6, 7601, p).await;
    let liveness = client.liveness();
    let start = Instant::now();
    lab.blackhole().unwrap();

    let dead = dies_within_bound(p, start, liveness.dead()).await.unwrap();
    assert_death(&dead, &lab, 7601, Cause::KeepaliveTimeout, libc::ETIMEDOUT);
    assert_one_event(&events, &dead);
    let event = &events.with_message("dead peer detected")[0];
    assert_eq!(
        event.fields["network.peer.address"],
        lab.server_addr_for(Family::V6).to_string()
    );
    assert_eq!(event.fields["network.peer.port"], "7601");
    assert_eq!(event.fields["network.type"], "ipv6");
}

#[tokio::test(flavor = "current_thread")]
async fn unacked_data_into_an_ipv6_blackhole_is_retransmit_timeout() {
    let Some(lab) = lab_or_skip!() else { return };
    let (events, _guard) = capture();
    let p = fast();
    let (mut client, _server) = pair(&lab, Family::V6, 7602, p).await;
    let liveness = client.liveness();
    lab.blackhole().unwrap();
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();

    let dead = dies_within_bound(p, start, liveness.dead()).await.unwrap();
    assert_death(&dead, &lab, 7602, Cause::RetransmitTimeout, libc::ETIMEDOUT);
    assert_one_event(&events, &dead);
}

#[tokio::test(flavor = "current_thread")]
async fn a_forgotten_ipv6_connection_is_reset_at_the_first_probe() {
    let Some(lab) = lab_or_skip!() else { return };
    let (events, _guard) = capture();
    let p = fast();
    let (client, server) = pair(&lab, Family::V6, 7603, p).await;
    let liveness = client.liveness();
    let start = Instant::now();
    lab.forget(server.into_std().unwrap()).unwrap();

    let dead = dies_within_bound(p, start, liveness.dead()).await.unwrap();
    assert_death(&dead, &lab, 7603, Cause::Reset, libc::ECONNRESET);
    // Not only within the bound: at the first probe, after the idle time, which meets the RST.
    let first_probe = p.idle() + p.timer_slack() + WAKE;
    assert!(start.elapsed() <= first_probe, "{:?}", start.elapsed());
    assert_one_event(&events, &dead);
}

/// Data in flight into ICMPv6 errors: the connection dies at its user timeout, with the errno of
/// the last error.
async fn rejected(how: Reject, port: u16) -> (Lab, DeadPeer) {
    let lab = Lab::new().unwrap();
    let (events, _guard) = capture();
    let p = fast();
    let (mut client, _server) = pair(&lab, Family::V6, port, p).await;
    let liveness = client.liveness();
    lab.reject(how).unwrap();
    let start = Instant::now();
    client.write_all(&[7u8; 1000]).await.unwrap();

    let dead = dies_within_bound(p, start, liveness.dead()).await.unwrap();
    assert_one_event(&events, &dead);
    (lab, dead)
}

#[tokio::test(flavor = "current_thread")]
async fn icmpv6_port_unreachable_is_refused() {
    if lab_or_skip!(Lab::builder().requires(Tool::NFT)).is_none() {
        return;
    }
    let (lab, dead) = rejected(Reject::PortUnreachable, 7604).await;
    assert_death(&dead, &lab, 7604, Cause::Refused, libc::ECONNREFUSED);
}

/// On IPv6 an administratively prohibited path is a permission error (`EACCES`, the kernel's
/// `icmpv6_err_convert`), where IPv4 says `EHOSTUNREACH`; the library calls it refused.
#[tokio::test(flavor = "current_thread")]
async fn icmpv6_admin_prohibited_is_refused_with_eacces() {
    if lab_or_skip!(Lab::builder().requires(Tool::NFT)).is_none() {
        return;
    }
    let (lab, dead) = rejected(Reject::AdminProhibited, 7605).await;
    assert_death(&dead, &lab, 7605, Cause::Refused, libc::EACCES);
}
