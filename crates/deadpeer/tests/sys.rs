//! apply / inspect / tcp_info on real sockets: set a value, read it back.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use deadpeer::{KeepalivePolicy, TcpInfo, UserTimeout};

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn keepalive_is_off_by_default_then_set_and_read_back() {
    let (client, _server) = pair();
    let before = deadpeer::inspect(&client).unwrap();
    assert!(!before.enabled, "Linux leaves SO_KEEPALIVE off");

    let policy = KeepalivePolicy::new(Duration::from_secs(7), Duration::from_secs(3), 4).unwrap();
    deadpeer::apply(&client, policy).unwrap();
    let after = deadpeer::inspect(&client).unwrap();
    assert!(after.enabled);
    assert_eq!(after.idle, Duration::from_secs(7));
    assert_eq!(after.interval, Duration::from_secs(3));
    assert_eq!(after.probes, 4);
    assert_eq!(
        after.user_timeout,
        Some(Duration::from_secs(18)),
        "auto = the bound less 1 s"
    );
    assert!(after.matches(policy));
    assert_eq!(after.detection_bound(), policy.detection_bound());
}

#[test]
fn user_timeout_off_and_fixed_read_back() {
    let (client, _server) = pair();
    let fixed = KeepalivePolicy::FAST
        .with_user_timeout(UserTimeout::Fixed(Duration::from_millis(1500)))
        .unwrap();
    deadpeer::apply(&client, fixed).unwrap();
    assert_eq!(
        deadpeer::inspect(&client).unwrap().user_timeout,
        Some(Duration::from_millis(1500))
    );

    let off = KeepalivePolicy::FAST
        .with_user_timeout(UserTimeout::Off)
        .unwrap();
    deadpeer::apply(&client, off).unwrap();
    let got = deadpeer::inspect(&client).unwrap();
    assert_eq!(
        got.user_timeout, None,
        "Off clears a user timeout set earlier"
    );
    assert!(got.matches(off));
    assert!(!got.matches(fixed));
}

#[test]
fn listener_options_are_inherited_on_linux() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let policy = KeepalivePolicy::new(Duration::from_secs(11), Duration::from_secs(2), 5).unwrap();
    deadpeer::apply(&listener, policy).unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    assert!(deadpeer::inspect(&accepted).unwrap().matches(policy));
}

#[test]
fn tcp_info_reads_an_established_connection() {
    let (client, _server) = pair();
    let info = deadpeer::tcp_info(&client).unwrap();
    assert_eq!(info.state, TcpInfo::ESTABLISHED);
    assert_eq!((info.probes, info.backoff, info.unacked), (0, 0, 0));
}

#[test]
fn non_tcp_sockets_get_a_clear_error() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = deadpeer::apply(&udp, KeepalivePolicy::FAST).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not a TCP socket"), "{err}");
    let err = deadpeer::inspect(&udp).unwrap_err();
    assert!(err.to_string().contains("not a TCP socket"), "{err}");
    let err = deadpeer::tcp_info(&udp).unwrap_err();
    assert!(err.to_string().contains("not a TCP socket"), "{err}");

    let (unix, _other) = UnixStream::pair().unwrap();
    let err = deadpeer::apply(&unix, KeepalivePolicy::FAST).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("not a TCP socket"), "{err}");
}
