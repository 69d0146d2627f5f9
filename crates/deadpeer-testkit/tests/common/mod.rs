//! Helpers of the testkit's own tests: a connected pair in either family, a pending read that
//! must fail, and the policy the faults are measured with.
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::{KeepalivePolicy, UserTimeout};
use deadpeer_testkit::{Family, Lab};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

pub const ETIMEDOUT: i32 = 110;
pub const ECONNRESET: i32 = 104;
pub const EHOSTUNREACH: i32 = 113;
pub const ENETUNREACH: i32 = 101;
pub const ECONNREFUSED: i32 = 111;
pub const ENOPROTOOPT: i32 = 92;
pub const EACCES: i32 = 13;

/// 1 s idle, 1 s interval, 3 probes, user timeout = the bound (4 s): what the faults are
/// measured with.
pub fn fast() -> KeepalivePolicy {
    "1:1:3".parse().unwrap()
}

/// [`fast`] without a user timeout: keepalive alone, as the kernel does it by default.
pub fn fast_without_user_timeout() -> KeepalivePolicy {
    fast().with_user_timeout(UserTimeout::Off).unwrap()
}

/// Applies `policy` to `sock` (keepalive and `TCP_USER_TIMEOUT`) with `deadpeer::apply`.
pub fn apply(sock: &impl std::os::fd::AsFd, policy: KeepalivePolicy) {
    deadpeer::apply(sock, policy).expect("apply the policy");
}

/// `probes × interval`: the earliest a keepalive death can come after the fault starts.
pub fn floor(policy: KeepalivePolicy) -> Duration {
    policy.interval() * policy.probes()
}

#[allow(unused_macros)] // not every test file runs cases for both families
/// Runs `$case(&lab, family)` as two tests, `$case::v4` and `$case::v6`, each on its own lab.
macro_rules! both_families {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v4() {
                let Some(lab) = deadpeer_testkit::lab_or_skip!() else { return };
                super::$case(&lab, deadpeer_testkit::Family::V4).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn v6() {
                let Some(lab) = deadpeer_testkit::lab_or_skip!() else { return };
                super::$case(&lab, deadpeer_testkit::Family::V6).await;
            }
        }
    )*};
}

/// A connected client (in the client ns) and server side (in the server ns) over `family`, after
/// one round trip so that the last received segment is fresh.
pub async fn connected(lab: &Lab, family: Family, port: u16) -> (TcpStream, TcpStream) {
    let addr = SocketAddr::new(lab.server_addr_for(family), port);
    let listener = lab
        .server()
        .tokio_listener(addr)
        .expect("listen in server ns");
    let (client, accepted) = tokio::join!(lab.client().tokio_connect(addr), listener.accept());
    let mut client = client.expect("connect from client ns");
    let (mut server, peer) = accepted.expect("accept");
    assert_eq!(
        peer.ip(),
        lab.client_addr_for(family),
        "traffic is routed, not NATed"
    );
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(&buf).await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    (client, server)
}

/// Waits for a pending read on `sock` to fail, for at most `limit` from `start`, and returns the
/// error and how long it took from `start`.
pub async fn read_error(
    sock: &mut TcpStream,
    start: Instant,
    limit: Duration,
) -> (io::Error, Duration) {
    let mut buf = [0u8; 64];
    let left = limit.saturating_sub(start.elapsed());
    match timeout(left, sock.read(&mut buf)).await {
        Ok(Err(err)) => (err, start.elapsed()),
        Ok(Ok(n)) => panic!("read returned Ok({n}) instead of an error"),
        Err(_) => panic!("no error within {limit:?}"),
    }
}

/// Prints one measurement line (shown with `--nocapture`): what the docs' tables are made of.
pub fn report(family: Family, what: &str, err: &io::Error, elapsed: Duration) {
    eprintln!(
        "{family} {what}: {} ({err}) after {:.3} s",
        err.raw_os_error().map_or("no errno".to_owned(), errno_name),
        elapsed.as_secs_f64()
    );
}

fn errno_name(errno: i32) -> String {
    match errno {
        ETIMEDOUT => "ETIMEDOUT".into(),
        ECONNRESET => "ECONNRESET".into(),
        EHOSTUNREACH => "EHOSTUNREACH".into(),
        ENETUNREACH => "ENETUNREACH".into(),
        ECONNREFUSED => "ECONNREFUSED".into(),
        ENOPROTOOPT => "ENOPROTOOPT".into(),
        EACCES => "EACCES".into(),
        other => format!("errno {other}"),
    }
}
