//! KeepaliveListener: the policy is set once on the listening socket and inherited; accepted
//! streams die with the right cause when the client vanishes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{assert_within_bound, capture, deadline, policy, wait_dead};
use deadpeer::{Cause, ListenerMode, TcpListenerExt};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "current_thread")]
async fn inherited_policy_catches_a_blackholed_client_without_setsockopt_per_accept() {
    let Some(lab) =
        lab_or_skip("inherited_policy_catches_a_blackholed_client_without_setsockopt_per_accept")
    else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let addr = SocketAddr::new(lab.server_addr(), 7401);
    let listener = lab
        .server()
        .tokio_listener(addr)
        .unwrap()
        .keepalive(p)
        .unwrap();
    assert_eq!(listener.mode(), ListenerMode::Inherit);

    let set = events.with_message("listener keepalive set");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].fields["mode"], "inherit");
    assert_eq!(set[0].fields["policy"], p.to_string());
    assert_eq!(set[0].fields["local.addr"], addr.to_string());

    let mut client = lab.client().tokio_connect(addr).await.unwrap();
    let calls_before = deadpeer::debug_apply_calls_on_this_thread();
    let (mut server, peer) = listener.accept().await.unwrap();
    if cfg!(debug_assertions) {
        assert_eq!(
            deadpeer::debug_apply_calls_on_this_thread(),
            calls_before,
            "setsockopt after accept"
        );
    }
    assert_eq!(
        listener.mode(),
        ListenerMode::Inherit,
        "the first socket verified the inheritance"
    );
    assert_eq!(peer.ip(), lab.client_addr());
    assert!(
        server.keepalive().unwrap().matches(&p),
        "{:?}",
        server.keepalive()
    );
    assert_eq!(server.policy(), Some(&p));

    let applied = events.with_message("keepalive applied");
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].fields["inherited"], "true");

    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();
    let liveness = server.liveness();
    let start = Instant::now();
    lab.blackhole().unwrap();

    let dead = wait_dead(&liveness, deadline(&p) + Duration::from_secs(3)).await;
    assert_within_bound(start.elapsed(), &p);
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout);
    assert_eq!(dead.peer_addr(), Some(peer));
    assert_eq!(dead.local_addr(), Some(addr));
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(
        deadpeer::DeadPeer::from_io(&err).map(deadpeer::DeadPeer::cause),
        Some(Cause::KeepaliveTimeout)
    );
    assert_eq!(events.with_message("dead peer detected").len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn many_accepts_make_no_setsockopt() {
    let p = policy(30, 5, 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .keepalive(p)
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let calls_before = deadpeer::debug_apply_calls_on_this_thread();
    for _ in 0..50 {
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(server.keepalive().unwrap().matches(&p));
    }
    if cfg!(debug_assertions) {
        assert_eq!(deadpeer::debug_apply_calls_on_this_thread(), calls_before);
    }
    assert_eq!(listener.mode(), ListenerMode::Inherit);
}

#[tokio::test(flavor = "current_thread")]
async fn listener_bound_to_any_address_reports_the_real_local_address() {
    let listener = deadpeer::KeepaliveListener::bind("0.0.0.0:0", deadpeer::KeepalivePolicy::FAST)
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let _client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    assert_eq!(
        server.local_addr().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port))
    );
}
