//! Sockets handed to `wrap` in a state deadpeer did not see them reach: every observer agrees,
//! and a socket that is not a connection yet is refused. Loopback only.

use std::io;
use std::time::{Duration, Instant};

use deadpeer::liveness::State;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream, TcpInfo};
use deadpeer_testkit::events::capture;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn wait_state(s: &TcpStream, state: u8) {
    let until = Instant::now() + Duration::from_secs(2);
    while deadpeer::tcp_info(s).unwrap().state != state {
        assert!(Instant::now() < until, "{:?}", deadpeer::tcp_info(s));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The peer resets; the application takes the errno from the raw socket, then wraps it.
async fn closed_with_errno_taken() -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    wait_state(&client, TcpInfo::CLOSE).await;
    let taken = client.take_error().unwrap().expect("the reset's errno");
    assert_eq!(taken.raw_os_error(), Some(libc::ECONNRESET));
    client
}

#[track_caller]
fn aborted(err: &io::Error) {
    let dead = DeadPeer::from_io(err).unwrap_or_else(|| panic!("not a DeadPeer: {err:?}"));
    assert_eq!(dead.cause(), Cause::Aborted, "{dead}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_closed_socket_whose_errno_was_taken_is_aborted_for_every_observer() {
    let (events, _guard) = capture();
    let mut stream = KeepaliveStream::wrap(closed_with_errno_taken().await).unwrap();
    let liveness = stream.liveness();
    match liveness.state() {
        State::Dead(d) => assert_eq!(d.cause(), Cause::Aborted),
        other => panic!("state {other:?}"),
    }
    let dead = tokio::time::timeout(Duration::from_secs(1), liveness.dead())
        .await
        .expect("dead() pending on a closed socket")
        .expect("a death");
    assert_eq!(dead.cause(), Cause::Aborted);
    assert_eq!(
        dead.raw_os_error(),
        None,
        "the errno was taken: none to report"
    );
    assert_eq!(
        dead.idle_for(),
        None,
        "no idle time for a connection never seen alive"
    );
    let mut b = [0u8; 4];
    aborted(&stream.read(&mut b).await.unwrap_err());
    aborted(&stream.write(b"x").await.unwrap_err());
    aborted(&stream.read(&mut b).await.unwrap_err());
    // Nothing says why it closed: the ending `aborted`, no alarm.
    assert!(events.with_message("dead peer detected").is_empty());
    let detected = events.with_message("connection ended");
    assert_eq!(detected.len(), 1, "{:#?}", events.all());
    assert_eq!(detected[0].level, tracing::Level::DEBUG);
    assert_eq!(detected[0].fields["error.type"], "aborted");
    assert_eq!(detected[0].fields["deadpeer.ending"], "aborted");

    // Written to first, then watched: the same, through `new`.
    let mut stream =
        KeepaliveStream::new(closed_with_errno_taken().await, KeepalivePolicy::FAST).unwrap();
    aborted(&stream.write(b"x").await.unwrap_err());
    aborted(&stream.read(&mut b).await.unwrap_err());
    let l = stream.liveness();
    assert!(matches!(l.state(), State::Dead(d) if d.cause() == Cause::Aborted));
    assert_eq!(events.with_message("connection ended").len(), 2);
}

/// A socket whose errno is still pending when wrapped is judged by it (the first observer).
#[tokio::test(flavor = "current_thread")]
async fn a_closed_socket_with_its_errno_is_judged_by_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    wait_state(&client, TcpInfo::CLOSE).await;
    let mut stream = KeepaliveStream::wrap(client).unwrap();
    let dead = stream.liveness().dead().await.expect("a death");
    assert_eq!(dead.cause(), Cause::Reset);
    assert_eq!(dead.raw_os_error(), Some(libc::ECONNRESET));
    let err = stream.read(&mut [0u8; 4]).await.unwrap_err();
    assert_eq!(
        DeadPeer::from_io(&err).map(DeadPeer::cause),
        Some(Cause::Reset)
    );
}

/// A socket still in `SYN_SENT` (a loopback listener whose accept queue is full drops the SYN, so
/// the connect stays in progress), one never connected, and a listening one are refused.
#[tokio::test(flavor = "current_thread")]
async fn a_socket_still_connecting_is_refused_with_a_clear_error() {
    let (events, _guard) = capture();
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SockAddr::from(
            "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap(),
        ))
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    let connecting = loop {
        assert!(held.len() < 16, "the accept queue never filled");
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr);
        std::thread::sleep(Duration::from_millis(20));
        let state = deadpeer::tcp_info(&s).unwrap().state;
        if state == 2 {
            break s;
        }
        held.push(s);
    };
    let stream = TcpStream::from_std(std::net::TcpStream::from(connecting)).unwrap();
    let err = KeepaliveStream::wrap(stream).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    let text = err.to_string();
    assert!(text.contains("SYN_SENT"), "{text}");
    assert!(
        text.contains("await the connect first or use deadpeer::connect"),
        "{text}"
    );
    assert!(events.with_message("dead peer detected").is_empty());

    let never = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    never.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(std::net::TcpStream::from(never)).unwrap();
    let err = KeepaliveStream::wrap(stream).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected, "{err}");
    assert!(err.to_string().contains("never connected"), "{err}");
    assert!(events.with_message("dead peer detected").is_empty());

    let listening = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let raw = Socket::from(listening.into_std().unwrap());
    let stream = TcpStream::from_std(std::net::TcpStream::from(raw)).unwrap();
    let err = KeepaliveStream::new(stream, KeepalivePolicy::FAST).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("KeepaliveListener"), "{err}");
}
