//! Each fault of the lab, observed with raw sockets (std, socket2, tokio) against the kernel's
//! own keepalive and retransmission machinery.
//!
//! Time checks use the policy's bound plus 0.3 s (the kernel's timer overshoot is 55–140 ms),
//! never the machine's speed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use deadpeer_testkit::{Lab, lab_or_skip, send_nowait};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const ETIMEDOUT: i32 = 110;
const ECONNRESET: i32 = 104;
const EHOSTUNREACH: i32 = 113;

/// Margin over a policy bound: the kernel's keepalive timer fires up to ~140 ms late.
const MARGIN: Duration = Duration::from_millis(300);

/// A keepalive policy `idle/interval/count` in seconds.
#[derive(Clone, Copy)]
struct Policy {
    idle: u64,
    interval: u64,
    count: u32,
}

const FAST: Policy = Policy {
    idle: 1,
    interval: 1,
    count: 3,
};

impl Policy {
    /// `idle + count × interval`: a blackholed idle peer is declared dead by then.
    fn bound(self) -> Duration {
        Duration::from_secs(self.idle + u64::from(self.count) * self.interval)
    }

    /// `count × interval`: the earliest a death can come after the blackhole starts.
    fn floor(self) -> Duration {
        Duration::from_secs(u64::from(self.count) * self.interval)
    }

    fn apply(self, sock: &impl std::os::fd::AsFd) {
        SockRef::from(sock)
            .set_tcp_keepalive(
                &TcpKeepalive::new()
                    .with_time(Duration::from_secs(self.idle))
                    .with_interval(Duration::from_secs(self.interval))
                    .with_retries(self.count),
            )
            .expect("set keepalive");
    }
}

fn server_sockaddr(lab: &Lab) -> SocketAddr {
    SocketAddr::new(lab.server_addr(), 7000)
}

/// A connected client (in the client ns) and server side (in the server ns), after one
/// round trip so that the last received segment is fresh.
async fn connected(lab: &Lab) -> (TcpStream, TcpStream) {
    let addr = server_sockaddr(lab);
    let listener = lab
        .server()
        .tokio_listener(addr)
        .expect("listen in server ns");
    let (client, accepted) = tokio::join!(lab.client().tokio_connect(addr), listener.accept());
    let mut client = client.expect("connect from client ns");
    let (mut server, peer) = accepted.expect("accept");
    assert_eq!(peer.ip(), lab.client_addr(), "traffic is routed, not NATed");
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(&buf).await.unwrap();
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    (client, server)
}

/// Waits for a pending read on `sock` to fail, for at most `limit`, and returns the error
/// and how long it took from `start`.
async fn read_error(
    sock: &mut TcpStream,
    start: Instant,
    limit: Duration,
) -> (io::Error, Duration) {
    let mut buf = [0u8; 64];
    match timeout(limit, sock.read(&mut buf)).await {
        Ok(Err(err)) => (err, start.elapsed()),
        Ok(Ok(n)) => panic!("read returned Ok({n}) instead of an error"),
        Err(_) => panic!("no error within {limit:?}"),
    }
}

fn assert_within(elapsed: Duration, floor: Duration, bound: Duration, what: &str) {
    eprintln!(
        "{what}: {:.3} s (floor {floor:?}, bound {bound:?} + {MARGIN:?})",
        elapsed.as_secs_f64()
    );
    assert!(
        elapsed >= floor && elapsed <= bound + MARGIN,
        "{what} after {elapsed:?}, expected between {floor:?} and {bound:?} + {MARGIN:?}"
    );
}

#[tokio::test]
async fn blackhole_times_out_at_the_keepalive_bound() {
    let Some(lab) = lab_or_skip("blackhole_times_out_at_the_keepalive_bound") else {
        return;
    };
    let (mut client, _server) = connected(&lab).await;
    FAST.apply(&client);

    lab.blackhole().unwrap();
    let start = Instant::now();
    let (err, elapsed) =
        read_error(&mut client, start, FAST.bound() + Duration::from_secs(2)).await;
    assert_eq!(err.raw_os_error(), Some(ETIMEDOUT), "{err}");
    assert_within(
        elapsed,
        FAST.floor(),
        FAST.bound(),
        "blackhole -> ETIMEDOUT",
    );
    // The error is reported once; the next read is EOF.
    assert_eq!(client.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_gives_reset_at_the_next_probe() {
    let Some(lab) = lab_or_skip("forget_gives_reset_at_the_next_probe") else {
        return;
    };
    let (mut client, server) = connected(&lab).await;
    FAST.apply(&client);

    lab.forget(server.into_std().unwrap()).unwrap();
    let start = Instant::now();
    let (err, elapsed) =
        read_error(&mut client, start, FAST.bound() + Duration::from_secs(2)).await;
    assert_eq!(err.raw_os_error(), Some(ECONNRESET), "{err}");
    // The first probe goes out `idle` after the last exchange and is answered with RST.
    assert_within(
        elapsed,
        Duration::ZERO,
        Duration::from_secs(FAST.idle),
        "forget -> ECONNRESET",
    );
}

#[tokio::test]
async fn unreachable_on_an_idle_socket_still_times_out() {
    let Some(lab) = lab_or_skip("unreachable_on_an_idle_socket_still_times_out") else {
        return;
    };
    let (mut client, _server) = connected(&lab).await;
    FAST.apply(&client);

    lab.unreachable().unwrap();
    let start = Instant::now();
    let (err, elapsed) =
        read_error(&mut client, start, FAST.bound() + Duration::from_secs(2)).await;
    assert_eq!(err.raw_os_error(), Some(ETIMEDOUT), "{err}");
    assert_within(
        elapsed,
        FAST.floor(),
        FAST.bound(),
        "unreachable idle -> ETIMEDOUT",
    );
}

#[tokio::test]
async fn unreachable_with_unacked_data_gives_host_unreachable() {
    let Some(lab) = lab_or_skip("unreachable_with_unacked_data_gives_host_unreachable") else {
        return;
    };
    let (mut client, _server) = connected(&lab).await;
    let user_timeout = Duration::from_millis(3000);
    SockRef::from(&client)
        .set_tcp_user_timeout(Some(user_timeout))
        .unwrap();

    lab.unreachable().unwrap();
    let queued = send_nowait(&client, 1000).unwrap();
    assert_eq!(queued, 1000);
    let start = Instant::now();
    // The user timeout is checked when the retransmission timer fires, whose interval doubles
    // each time: the death comes after `user_timeout` and before twice that.
    let bound = 2 * user_timeout;
    let (err, elapsed) = read_error(&mut client, start, bound + Duration::from_secs(2)).await;
    assert_eq!(err.raw_os_error(), Some(EHOSTUNREACH), "{err}");
    assert_within(
        elapsed,
        user_timeout,
        bound,
        "unreachable + unacked + UT 3000 -> EHOSTUNREACH",
    );
}

#[tokio::test]
async fn unacked_data_blocks_keepalive() {
    let Some(lab) = lab_or_skip("unacked_data_blocks_keepalive") else {
        return;
    };
    let (mut client, _server) = connected(&lab).await;
    FAST.apply(&client);
    SockRef::from(&client).set_tcp_user_timeout(None).unwrap();

    let queued = lab.send_unacked(&client, 4096).unwrap();
    assert_eq!(queued, 4096);
    let wait = FAST.bound() + Duration::from_secs(1);
    let mut buf = [0u8; 16];
    let outcome = timeout(wait, client.read(&mut buf)).await;
    assert!(
        outcome.is_err(),
        "keepalive must not fire while data is unacked, got {outcome:?}"
    );
    assert!(client.take_error().unwrap().is_none());
}

#[tokio::test]
async fn fin_is_eof_not_an_error() {
    let Some(lab) = lab_or_skip("fin_is_eof_not_an_error") else {
        return;
    };
    let (mut client, mut server) = connected(&lab).await;
    FAST.apply(&client);
    // Leave something unread on the server side: fin() must drain it, or close would send RST.
    client.write_all(b"unread").await.unwrap();
    let mut one = [0u8; 1];
    server.read_exact(&mut one).await.unwrap();

    lab.fin(server.into_std().unwrap()).unwrap();
    let n = timeout(Duration::from_secs(2), client.read(&mut [0u8; 16]))
        .await
        .expect("EOF promptly")
        .expect("EOF, not an error");
    assert_eq!(n, 0);
    assert!(
        client.take_error().unwrap().is_none(),
        "SO_ERROR must be empty after a FIN"
    );
}

/// Echoes everything on `sock` until EOF or error.
async fn echo(mut sock: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = sock.read(&mut buf).await {
        if n == 0 || sock.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_idle_connection_survives() {
    let Some(lab) = lab_or_skip("healthy_idle_connection_survives") else {
        return;
    };
    let (mut client, server) = connected(&lab).await;
    FAST.apply(&client);
    let echo = tokio::spawn(echo(server));

    let mut buf = [0u8; 16];
    let idle = timeout(Duration::from_secs(10), client.read(&mut buf)).await;
    assert!(idle.is_err(), "a healthy idle connection got {idle:?}");
    assert!(client.take_error().unwrap().is_none());

    client.write_all(b"still here").await.unwrap();
    let mut back = [0u8; 10];
    timeout(Duration::from_secs(2), client.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&back, b"still here");
    drop(client);
    echo.await.unwrap();
}

#[tokio::test]
async fn heal_undoes_blackhole_and_cut_link() {
    let Some(lab) = lab_or_skip("heal_undoes_blackhole_and_cut_link") else {
        return;
    };
    let (mut client, server) = connected(&lab).await;
    FAST.apply(&client);
    let echo = tokio::spawn(echo(server));
    let mut back = [0u8; 2];

    for (name, fault) in [
        (
            "blackhole",
            Lab::blackhole as fn(&Lab) -> Result<(), deadpeer_testkit::LabError>,
        ),
        ("cut_link", Lab::cut_link),
        ("unreachable", Lab::unreachable),
    ] {
        fault(&lab).unwrap();
        // Shorter than the bound: the connection is starving, not dead yet.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        lab.heal().unwrap();
        client.write_all(b"ok").await.unwrap();
        timeout(Duration::from_secs(3), client.read_exact(&mut back))
            .await
            .unwrap_or_else(|_| panic!("no echo after healing {name}"))
            .unwrap();
        assert_eq!(&back, b"ok");
    }
    assert!(client.take_error().unwrap().is_none());
    // Healing twice, or a healthy lab, is fine.
    lab.heal().unwrap();
    drop(client);
    echo.await.unwrap();
}

/// One lab per thread, blocking std sockets. Returns the client and server side after a
/// round trip.
fn connected_std(lab: &Lab) -> (std::net::TcpStream, std::net::TcpStream) {
    let addr = server_sockaddr(lab);
    let listener = lab.server().tcp_listener(addr).unwrap();
    let mut client = lab.client().tcp_connect(addr).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();
    server.write_all(&b).unwrap();
    client.read_exact(&mut b).unwrap();
    (client, server)
}

/// A blocking read that gives up after `limit`, retrying when a signal interrupts it (a blocking
/// read with `SO_RCVTIMEO` returns `EINTR` rather than restarting).
fn blocking_read(sock: &mut std::net::TcpStream, limit: Duration) -> io::Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        sock.set_read_timeout(Some(left))?;
        match sock.read(&mut [0u8; 8]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

#[test]
fn parallel_labs_do_not_interfere() {
    const DYING: usize = 8;
    // Create one lab first so that a skip happens once, on the main thread.
    let Some(first) = lab_or_skip("parallel_labs_do_not_interfere") else {
        return;
    };
    let barrier = Arc::new(Barrier::new(DYING + 1));
    let mut threads = Vec::new();
    for i in 0..DYING {
        let barrier = Arc::clone(&barrier);
        threads.push(std::thread::spawn(move || {
            let lab = Lab::new().expect("lab in a thread");
            let (mut client, _server) = connected_std(&lab);
            FAST.apply(&client);
            barrier.wait();
            // Stagger the blackholes so that a fault leaking into another lab would show up as
            // a death at the wrong time there.
            std::thread::sleep(Duration::from_millis(150 * i as u64));
            lab.blackhole().unwrap();
            let start = Instant::now();
            let err =
                blocking_read(&mut client, FAST.bound() + Duration::from_secs(2)).unwrap_err();
            let elapsed = start.elapsed();
            assert_eq!(err.raw_os_error(), Some(ETIMEDOUT), "lab {i}: {err}");
            assert_within(
                elapsed,
                FAST.floor(),
                FAST.bound(),
                &format!("lab {i} blackhole"),
            );
            lab.client().name().to_owned()
        }));
    }

    // The healthy lab: same addresses plan, same ports, no fault, must outlive all the deaths.
    let (mut client, mut server) = connected_std(&first);
    FAST.apply(&client);
    barrier.wait();
    let survive = Duration::from_millis(150 * DYING as u64) + FAST.bound() + Duration::from_secs(1);
    let err = blocking_read(&mut client, survive).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "healthy lab: {err}");
    assert!(client.take_error().unwrap().is_none());
    client.write_all(b"y").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();
    server.write_all(&b).unwrap();
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"y");

    let mut names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    names.push(first.client().name().to_owned());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DYING + 1, "every lab has its own namespaces");
}

#[tokio::test]
async fn cut_link_kills_both_sides() {
    let Some(lab) = lab_or_skip("cut_link_kills_both_sides") else {
        return;
    };
    let (mut client, mut server) = connected(&lab).await;
    FAST.apply(&client);
    FAST.apply(&server);

    lab.cut_link().unwrap();
    let start = Instant::now();
    let limit = FAST.bound() + Duration::from_secs(2);
    let ((client_err, client_after), (server_err, server_after)) = tokio::join!(
        read_error(&mut client, start, limit),
        read_error(&mut server, start, limit)
    );
    eprintln!(
        "cut_link: client {client_err} after {client_after:?}, server {server_err} after {server_after:?}"
    );
    assert_eq!(
        client_err.raw_os_error(),
        Some(ETIMEDOUT),
        "client: {client_err}"
    );
    assert_within(client_after, FAST.floor(), FAST.bound(), "cut_link client");
    assert_eq!(
        server_err.raw_os_error(),
        Some(ETIMEDOUT),
        "server: {server_err}"
    );
    assert_within(server_after, FAST.floor(), FAST.bound(), "cut_link server");
}
