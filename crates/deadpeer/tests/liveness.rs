//! Liveness::dead(): resolves on a real death with nothing reading, stays quiet on a healthy
//! connection, ends (with `None`) when the stream is dropped, never holds the socket open, and
//! needs no runtime.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::*;
use deadpeer::liveness::State;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "current_thread")]
async fn dead_resolves_with_no_read_or_write_pending() {
    let Some(lab) = lab_or_skip!() else {
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
    let dead = wait_dead(&liveness, deadline(p) + Duration::from_secs(3)).await;
    let elapsed = start.elapsed();
    assert_within_bound(elapsed, p);
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    assert_cause(&dead, Cause::KeepaliveTimeout, libc::ETIMEDOUT);

    // The latch is shared: another handle, the state and the stream all give the same verdict,
    // although the watcher consumed the kernel's one-time error.
    let again = other.dead().await.expect("a death");
    assert_eq!(again.connected_for(), dead.connected_for());
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
    // After the stream is gone, a death stays a death.
    drop(client);
    assert!(matches!(liveness.state(), State::Dead(_)));
    assert!(liveness.dead().await.is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn healthy_idle_connection_lives_ten_seconds_without_an_event() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, mut server) = client_pair(&lab, 7302, &p).await;
    let liveness = client.liveness();
    tokio::select! {
        dead = liveness.dead() => panic!("false death: {dead:?}"),
        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
    }
    // Probes were sent and answered all along.
    let info = deadpeer::tcp_info(&client).unwrap();
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

async fn loopback_pair(
    p: &KeepalivePolicy,
) -> (deadpeer::KeepaliveStream, deadpeer::KeepaliveStream) {
    let listener = deadpeer::KeepaliveListener::bind("127.0.0.1:0", *p)
        .await
        .unwrap();
    let client = deadpeer::connect(listener.local_addr().unwrap(), *p)
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

/// A spawned watcher always ends: dropping the stream resolves `dead()` to `None`, and so does
/// unwrapping it with `into_inner`.
#[tokio::test(flavor = "current_thread")]
async fn dead_ends_with_none_when_the_stream_is_dropped_or_unwrapped() {
    let p = KeepalivePolicy::FAST;
    let (client, server) = loopback_pair(&p).await;
    let liveness = server.liveness();
    let watcher = tokio::spawn(liveness.clone().dead());
    tokio::task::yield_now().await;
    drop(server);
    let outcome = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher ended")
        .unwrap();
    assert!(outcome.is_none(), "{outcome:?}");
    assert!(matches!(liveness.state(), State::Closed));
    drop(client);

    let (client, server) = loopback_pair(&p).await;
    let liveness = server.liveness();
    let watcher = tokio::spawn(liveness.clone().dead());
    tokio::task::yield_now().await;
    let raw = server.into_inner();
    let outcome = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher ended")
        .unwrap();
    assert!(outcome.is_none());
    assert!(matches!(liveness.state(), State::Closed));
    // The unwrapped socket is no longer watched: its later death is not reported to the old
    // handle.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(liveness.state(), State::Closed));
    drop(raw);
}

/// Nothing deadpeer holds keeps the socket open: with a `dead()` future alive (and never polled
/// again), dropping the stream sends the FIN at once, and the peer reads EOF.
#[tokio::test(flavor = "current_thread")]
async fn a_held_dead_future_does_not_keep_the_socket_open() {
    let p = KeepalivePolicy::FAST;
    let (mut client, server) = loopback_pair(&p).await;
    let liveness = server.liveness();
    let mut held = Box::pin(liveness.dead());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(held.as_mut().poll(&mut cx).is_pending());
    drop(server);
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
        .await
        .expect("no FIN while a dead() future was held")
        .unwrap();
    assert_eq!(n, 0, "EOF");
    assert!(matches!(held.as_mut().poll(&mut cx), Poll::Ready(None)));
}

/// The invariant behind watching a socket by its own descriptor: once a watched stream is
/// dropped, its descriptor number can be reused by another watched connection, and a death there
/// reaches only the new connection's handles.
#[tokio::test(flavor = "current_thread")]
async fn a_reused_descriptor_reports_to_its_new_owner_only() {
    use std::os::fd::AsRawFd;
    let p = KeepalivePolicy::FAST;
    let (client_a, server_a) = loopback_pair(&p).await;
    let old = server_a.liveness();
    let fd_a = server_a.get_ref().as_raw_fd();
    drop(server_a);
    drop(client_a);

    let (client_b, server_b) = loopback_pair(&p).await;
    let new = server_b.liveness();
    let reused = server_b.get_ref().as_raw_fd() == fd_a || client_b.get_ref().as_raw_fd() == fd_a;
    socket2::SockRef::from(client_b.get_ref())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client_b);
    let dead = wait_dead(&new, Duration::from_secs(5)).await;
    assert_cause(&dead, Cause::Reset, libc::ECONNRESET);
    assert!(
        matches!(old.state(), State::Closed),
        "reused fd {fd_a}: {reused}"
    );
    assert!(old.dead().await.is_none());
    drop(server_b);
}

/// Any executor: a thread that parks between polls sees the death, with no Tokio context.
#[test]
fn dead_resolves_under_a_plain_thread_executor() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let p = policy(1, 1, 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, _server) = rt.block_on(client_pair(&lab, 7303, &p));
    let liveness = client.liveness();
    let start = Instant::now();
    lab.blackhole().unwrap();
    // No runtime on this thread: park until woken.
    let dead = block_on(liveness.dead()).expect("a death");
    assert_within_bound(start.elapsed(), p);
    assert_cause(&dead, Cause::KeepaliveTimeout, libc::ETIMEDOUT);
    assert!(DeadPeer::from_io(&std::io::Error::from(dead)).is_some());
    drop(client);
}

struct Unpark(std::thread::Thread);
impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = Pin::as_mut(&mut f).poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Split halves share the latch: a death seen by the read half is what the write half and the
/// `Liveness` report; `reunite` puts the halves back, and halves of two streams do not reunite.
#[tokio::test(flavor = "current_thread")]
async fn split_halves_share_one_latch() {
    let p = KeepalivePolicy::FAST;
    let (client, server) = loopback_pair(&p).await;
    let (mut read, mut write) = server.into_split();
    let liveness = read.liveness();
    let mut client = client;
    write.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    client.write_all(b"pong").await.unwrap();
    read.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");

    let (other_client, other_server) = loopback_pair(&p).await;
    let (other_read, other_write) = other_server.into_split();
    let back = read.reunite(other_write).unwrap_err();
    let (mut read, _other_write) = (back.0, back.1);
    drop((other_read, other_client));

    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
    let err = read.read(&mut buf).await.unwrap_err();
    let dead = DeadPeer::from_io(&err).expect("a DeadPeer").clone();
    assert_cause(&dead, Cause::Reset, libc::ECONNRESET);
    same_death(&write.write(b"x").await.unwrap_err(), &dead);
    same_death(&write.flush().await.unwrap_err(), &dead);
    assert_eq!(
        liveness.dead().await.unwrap().connected_for(),
        dead.connected_for()
    );
    let stream = read.reunite(write).expect("the same stream");
    assert_eq!(
        stream.dead_peer().map(DeadPeer::connected_for),
        Some(dead.connected_for())
    );
}

/// After our own shutdown, the peer's FIN completes the close (`CLOSE`, no error): still the
/// ending `closed` for `gone()`, with nothing reading; never a death.
#[tokio::test(flavor = "current_thread")]
async fn gone_resolves_at_the_peers_fin_after_our_own_shutdown() {
    let (mut client, mut server) = loopback_pair(&KeepalivePolicy::FAST).await;
    let liveness = server.liveness();
    let gone = liveness.gone();
    server.shutdown().await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        client.read(&mut buf).await.unwrap(),
        0,
        "our FIN reached the client"
    );
    assert_eq!(liveness.ending(), None, "our own FIN is no ending");
    drop(client);
    let ending = tokio::time::timeout(Duration::from_secs(2), gone).await;
    assert_eq!(
        ending.expect("gone() at the peer's FIN"),
        Some(deadpeer::Ending::Closed)
    );
    assert!(!liveness.is_dead());
}
