//! `KeepaliveStream::wrap` on a socket whose keepalive is off warns once per process. Alone in
//! its binary, because the warning is once per process.

use deadpeer::KeepaliveStream;
use deadpeer_testkit::events::capture;

#[tokio::test(flavor = "current_thread")]
async fn wrapping_a_socket_with_keepalive_off_warns_once() {
    let (events, _guard) = capture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Keepalive on: no warning.
    let on = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket2::SockRef::from(&on).set_keepalive(true).unwrap();
    let _on = KeepaliveStream::wrap(on).unwrap();
    let warning = "wrapped connection has keepalive off";
    assert!(events.all().iter().all(|e| !e.message.starts_with(warning)));

    // Off (the default): one WARN, naming the peer; a second such socket adds none.
    let off = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _off = KeepaliveStream::wrap(off).unwrap();
    let again = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _again = KeepaliveStream::wrap(again).unwrap();
    let warned: Vec<_> = events
        .all()
        .into_iter()
        .filter(|e| e.message.starts_with(warning))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert_eq!(warned[0].level, tracing::Level::WARN);
    assert_eq!(
        warned[0].fields["network.peer.address"],
        addr.ip().to_string()
    );
    assert_eq!(
        warned[0].fields["network.peer.port"],
        addr.port().to_string()
    );
}
