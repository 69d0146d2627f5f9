//! `Connections`: the snapshot shows what the kernel is doing to each tracked connection. In a
//! lab, a blackholed client shows keepalive probes outstanding before it dies while a healthy
//! one shows none; the death then appears in the snapshot, and the connection leaves it when its
//! stream is dropped. On loopback, the layers track what they wrap.

// `capture` goes unused: these tests read the snapshot, not the events.
#[allow(unused_imports)]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{deadline, policy, wait_dead};
use deadpeer::connections::{ConnectionInfo, Connections};
use deadpeer::layer::{KeepaliveLayer, ReapLayer};
use deadpeer::{Cause, KeepaliveListener, KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_layer::Layer;
use tower_service::Service;

fn find(snapshot: &[ConnectionInfo], peer: SocketAddr) -> Option<&ConnectionInfo> {
    snapshot.iter().find(|c| c.peer_addr == Some(peer))
}

#[tokio::test(flavor = "current_thread")]
async fn a_blackholed_peer_shows_probes_outstanding_and_a_healthy_one_none() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    // 1 s idle, then a probe a second: 5 probes, dead within 6 s.
    let p = policy(1, 1, 5);
    let connections = Connections::new();
    let addr = SocketAddr::new(lab.server_addr(), 7701);
    let listener = KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), p)
        .unwrap()
        .track(&connections);

    // The client namespace goes through the router's blackhole; the router reaches the server
    // directly and stays healthy.
    let mut doomed = lab.client().tokio_connect(addr).await.unwrap();
    let (doomed_server, doomed_peer) = listener.accept().await.unwrap();
    let mut healthy = lab.router().tokio_connect(addr).await.unwrap();
    let (mut healthy_server, healthy_peer) = listener.accept().await.unwrap();
    doomed.write_all(b"x").await.unwrap();
    healthy.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    healthy_server.read_exact(&mut b).await.unwrap();

    let first = connections.snapshot();
    assert_eq!(first.len(), 2, "{first:#?}");
    for c in &first {
        assert_eq!(c.policy, Some(p));
        assert_eq!(c.local_addr, Some(addr));
        let info = c.tcp_info.expect("TCP_INFO on Linux");
        assert_eq!(info.state, deadpeer::TcpInfo::ESTABLISHED);
        assert_eq!(info.probes, 0, "{c:#?}");
        assert!(c.dead_peer.is_none());
        assert!(c.ending.is_none());
    }

    let start = Instant::now();
    lab.blackhole().unwrap();
    let doomed_liveness = doomed_server.liveness();
    // Before the verdict, a snapshot shows the doomed connection probing and the healthy one
    // not: its probes are answered.
    let seen = loop {
        let now = connections.snapshot();
        let d = find(&now, doomed_peer).expect("tracked").clone();
        let h = find(&now, healthy_peer).expect("tracked").clone();
        if d.tcp_info.is_some_and(|i| i.probes >= 2) {
            break (d, h);
        }
        assert!(
            d.dead_peer.is_none(),
            "died before two probes were seen: {d:#?}"
        );
        assert!(start.elapsed() < deadline(p), "no probe seen: {d:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (d, h) = seen;
    assert!(d.is_probing(), "{d:#?}");
    assert!(d.dead_peer.is_none());
    let idle = d.tcp_info.unwrap().last_data_recv;
    assert!(idle >= p.idle(), "silent for {idle:?} only: {d:#?}");
    assert!(
        !h.is_probing(),
        "the healthy peer answers its probes: {h:#?}"
    );
    assert_eq!(h.tcp_info.unwrap().state, deadpeer::TcpInfo::ESTABLISHED);

    // The verdict shows in the snapshot, until the application drops the stream.
    let dead = wait_dead(&doomed_liveness, deadline(p)).await;
    assert_eq!(dead.cause(), Cause::KeepaliveTimeout);
    let now = connections.snapshot();
    let d = find(&now, doomed_peer).expect("still held");
    assert_eq!(
        d.dead_peer.as_ref().map(deadpeer::DeadPeer::cause),
        Some(Cause::KeepaliveTimeout)
    );
    assert_eq!(d.tcp_info.unwrap().state, deadpeer::TcpInfo::CLOSE);
    assert_eq!(d.ending, Some(deadpeer::Ending::Vanished));
    drop(doomed_server);
    let now = connections.snapshot();
    assert!(find(&now, doomed_peer).is_none());
    let h = find(&now, healthy_peer).expect("the healthy one stays");
    assert_eq!(h.tcp_info.unwrap().probes, 0, "{h:#?}");
    assert!(h.dead_peer.is_none());
    // Its client closes: the ending shows while the application still holds the stream.
    drop(healthy);
    let closed = loop {
        let now = connections.snapshot();
        let h = find(&now, healthy_peer).expect("still held").clone();
        if h.ending.is_some() || start.elapsed() > deadline(p) * 2 {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(closed.ending, Some(deadpeer::Ending::Closed), "{closed:#?}");
    assert!(closed.dead_peer.is_none());
    drop(healthy_server);
    assert!(connections.is_empty());
}

/// Both layers track what they wrap: a `ReapLayer` its accepted connections, a
/// `KeepaliveLayer` its connector's; a stream passed through both is listed once.
#[tokio::test(flavor = "current_thread")]
async fn the_layers_track_what_they_wrap() {
    let p = KeepalivePolicy::FAST;
    let connections = Connections::new();
    let listener = KeepaliveListener::bind("127.0.0.1:0", p)
        .await
        .unwrap()
        .track(&connections);
    let addr = listener.local_addr().unwrap();

    let connector = tower::service_fn(|addr: SocketAddr| tokio::net::TcpStream::connect(addr));
    let mut connector = KeepaliveLayer::new(p).track(&connections).layer(connector);
    let client: KeepaliveStream = connector.call(addr).await.unwrap();

    let hand_back = || {
        tower::service_fn(|s: KeepaliveStream| async move { Ok::<_, std::convert::Infallible>(s) })
    };
    let mut reap = ReapLayer::new(p).track(&connections).layer(hand_back());
    let (accepted, _) = listener.accept().await.unwrap();
    // Tracked by the listener and by the layer: listed once.
    let server = reap.call(accepted).await.unwrap();

    let raw = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw_client = tokio::net::TcpStream::connect(raw.local_addr().unwrap())
        .await
        .unwrap();
    let (raw_accepted, _) = raw.accept().await.unwrap();
    let mut reap_plain = ReapLayer::new(p).track(&connections).layer(hand_back());
    let reaped = reap_plain.call(raw_accepted).await.unwrap();

    let now = connections.snapshot();
    let peers: Vec<_> = now.iter().map(|c| c.peer_addr).collect();
    assert_eq!(now.len(), 3, "{now:#?}");
    assert!(peers.contains(&client.peer_addr().ok()));
    assert!(peers.contains(&server.peer_addr().ok()));
    assert!(peers.contains(&reaped.peer_addr().ok()));
    assert!(now.iter().all(|c| c.policy == Some(p)));
    drop((client, server, reaped, raw_client));
    assert!(connections.is_empty());
}
