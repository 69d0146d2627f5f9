//! KeepaliveListener: the policy is set once on the listening socket and inherited; accepted
//! streams die with the right cause when the client vanishes.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{assert_within_bound, capture, deadline, policy, wait_dead};
use deadpeer::Cause;
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "current_thread")]
async fn inherited_policy_catches_a_blackholed_client_without_setsockopt_per_accept() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let addr = SocketAddr::new(lab.server_addr(), 7401);
    let listener =
        deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), p).unwrap();
    assert!(listener.inherits());

    let set = events.with_message("listener keepalive set");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].fields["mode"], "inherit");
    assert_eq!(set[0].fields["policy"], p.to_string());
    assert_eq!(set[0].target, "deadpeer");
    assert_eq!(
        set[0].fields["network.local.address"],
        addr.ip().to_string()
    );
    assert_eq!(set[0].fields["network.local.port"], addr.port().to_string());
    assert_eq!(
        set[0].fields["detection_bound_s"],
        format!("{:?}", p.detection_bound().as_secs_f64())
    );

    let mut client = lab.client().tokio_connect(addr).await.unwrap();
    let (mut server, peer) = listener.accept().await.unwrap();
    assert!(
        listener.inherits(),
        "the first socket verified the inheritance"
    );
    assert_eq!(peer.ip(), lab.client_addr());
    assert!(
        deadpeer::inspect(&server).unwrap().matches(p),
        "{:?}",
        deadpeer::inspect(&server)
    );
    assert_eq!(server.policy(), Some(p));

    let applied = events.with_message("keepalive applied");
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0].fields["inherited"], "true");

    client.write_all(b"hi").await.unwrap();
    let mut buf = [0u8; 2];
    server.read_exact(&mut buf).await.unwrap();
    let liveness = server.liveness();
    let start = Instant::now();
    lab.blackhole().unwrap();

    let dead = wait_dead(&liveness, deadline(p) + Duration::from_secs(3)).await;
    assert_within_bound(start.elapsed(), p);
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout);
    assert_eq!(dead.peer_addr(), Some(peer));
    assert_eq!(dead.local_addr(), Some(addr));
    let err = server.read(&mut buf).await.unwrap_err();
    assert_eq!(
        deadpeer::DeadPeer::from_io(&err).map(deadpeer::DeadPeer::cause),
        Some(Cause::KeepaliveTimeout)
    );
    assert_eq!(
        common::events_settled(&events, "dead peer detected", 1).len(),
        1
    );
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
