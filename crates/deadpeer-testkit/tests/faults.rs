//! Each fault of the lab, in both families, observed with raw sockets (tokio and std) against
//! the kernel's own keepalive and retransmission machinery.
//!
//! Times are checked against the policy's deadline (`deadpeer_testkit::deadline`: its bound,
//! the kernel's timer slack and the wake-up), never against the machine's speed. Run with
//! `--nocapture` to see what each fault gave, and after how long.

#[macro_use]
mod common;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use deadpeer_testkit::{
    Family, Lab, LabError, Reject, WAKE, assert_within_bound, deadline, lab_or_skip, send_nowait,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

both_families!(
    blackhole_times_out_at_the_keepalive_bound,
    forget_gives_reset_at_the_next_probe,
    reset_gives_reset_at_once,
    unreachable_on_an_idle_socket_still_times_out,
    unreachable_with_unacked_data_is_unreachable,
    unacked_data_blocks_keepalive,
    fin_is_eof_not_an_error,
    healthy_idle_connection_survives,
    cut_link_kills_both_sides,
);

/// `heal_undoes_every_fault` rejects with nftables: skipped where `nft` is missing.
mod heal_undoes_every_fault {
    use deadpeer_testkit::{Family, Lab, Tool, lab_or_skip};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v4() {
        let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
            return;
        };
        super::heal_undoes_every_fault(&lab, Family::V4).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v6() {
        let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
            return;
        };
        super::heal_undoes_every_fault(&lab, Family::V6).await;
    }
}

async fn blackhole_times_out_at_the_keepalive_bound(lab: &Lab, family: Family) {
    let p = fast_without_user_timeout();
    let (mut client, _server) = connected(lab, family, 7000).await;
    apply(&client, p);

    lab.blackhole().unwrap();
    let start = Instant::now();
    let (err, elapsed) = read_error(&mut client, start, deadline(p) + Duration::from_secs(2)).await;
    report(family, "blackhole, idle", &err, elapsed);
    assert_eq!(err.raw_os_error(), Some(ETIMEDOUT), "{err}");
    assert!(
        elapsed >= floor(p),
        "{elapsed:?}: before the probes ran out"
    );
    assert_within_bound(elapsed, p);
    // The error is reported once; the next read is EOF.
    assert_eq!(client.read(&mut [0u8; 8]).await.unwrap(), 0);
}

async fn forget_gives_reset_at_the_next_probe(lab: &Lab, family: Family) {
    let p = fast_without_user_timeout();
    let (mut client, server) = connected(lab, family, 7000).await;
    apply(&client, p);

    lab.forget(server.into_std().unwrap()).unwrap();
    let start = Instant::now();
    let (err, elapsed) = read_error(&mut client, start, deadline(p) + Duration::from_secs(2)).await;
    report(family, "forget, idle", &err, elapsed);
    assert_eq!(err.raw_os_error(), Some(ECONNRESET), "{err}");
    // The first probe goes out `idle` after the last exchange and is answered with RST.
    let first_probe = p.idle() + p.timer_slack() + WAKE;
    assert!(
        elapsed <= first_probe,
        "{elapsed:?}, first probe by {first_probe:?}"
    );
}

async fn reset_gives_reset_at_once(lab: &Lab, family: Family) {
    let (mut client, server) = connected(lab, family, 7000).await;
    let start = Instant::now();
    lab.reset(server.into_std().unwrap()).unwrap();
    let (err, elapsed) = read_error(&mut client, start, Duration::from_secs(2)).await;
    report(family, "reset", &err, elapsed);
    assert_eq!(err.raw_os_error(), Some(ECONNRESET), "{err}");
    // No timer is involved: the RST arrives at once, and the read wakes up.
    assert!(elapsed <= WAKE, "{elapsed:?}");
}

async fn unreachable_on_an_idle_socket_still_times_out(lab: &Lab, family: Family) {
    let p = fast_without_user_timeout();
    let (mut client, _server) = connected(lab, family, 7000).await;
    apply(&client, p);

    lab.unreachable().unwrap();
    let start = Instant::now();
    let (err, elapsed) = read_error(&mut client, start, deadline(p) + Duration::from_secs(2)).await;
    report(family, "unreachable, idle", &err, elapsed);
    assert_eq!(err.raw_os_error(), Some(ETIMEDOUT), "{err}");
    assert!(
        elapsed >= floor(p),
        "{elapsed:?}: before the probes ran out"
    );
    assert_within_bound(elapsed, p);
}

/// ICMP host unreachable (IPv4) and ICMPv6 no route (IPv6) make Linux revert its retransmission
/// backoff (RFC 6069) and re-arm the timer without clamping it to the user timeout: the verdict
/// can come up to one retransmission timeout after the deadline. The test allows exactly that,
/// with the RTO the kernel reached, read from `TCP_INFO` after the death.
async fn unreachable_with_unacked_data_is_unreachable(lab: &Lab, family: Family) {
    let p = fast();
    let user_timeout = p.effective_user_timeout().unwrap();
    let (mut client, _server) = connected(lab, family, 7000).await;
    apply(&client, p);

    lab.unreachable().unwrap();
    let queued = send_nowait(&client, 1000).unwrap();
    assert_eq!(queued, 1000);
    let start = Instant::now();
    let limit = deadline(p) + Duration::from_secs(4);
    let (err, elapsed) = read_error(&mut client, start, limit).await;
    report(family, "unreachable, unacked data", &err, elapsed);
    let expected = match family {
        Family::V4 => EHOSTUNREACH,
        Family::V6 => ENETUNREACH,
    };
    assert_eq!(err.raw_os_error(), Some(expected), "{err}");
    assert!(
        elapsed >= user_timeout,
        "{elapsed:?} before the user timeout"
    );
    let rto = deadpeer::tcp_info(&client).unwrap().rto;
    assert!(
        elapsed <= deadline(p) + rto,
        "died after {elapsed:?}: deadline {:?} + RTO {rto:?}",
        deadline(p)
    );
}

async fn unacked_data_blocks_keepalive(lab: &Lab, family: Family) {
    let p = fast_without_user_timeout();
    let (mut client, _server) = connected(lab, family, 7000).await;
    apply(&client, p);

    let queued = lab.send_unacked(&client, 4096).unwrap();
    assert_eq!(queued, 4096);
    let wait = deadline(p) + Duration::from_secs(1);
    let mut buf = [0u8; 16];
    let outcome = timeout(wait, client.read(&mut buf)).await;
    assert!(
        outcome.is_err(),
        "keepalive must not fire while data is unacked, got {outcome:?}"
    );
    assert!(client.take_error().unwrap().is_none());
}

async fn fin_is_eof_not_an_error(lab: &Lab, family: Family) {
    let (mut client, mut server) = connected(lab, family, 7000).await;
    apply(&client, fast());
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

async fn healthy_idle_connection_survives(lab: &Lab, family: Family) {
    let p = fast();
    let (mut client, server) = connected(lab, family, 7000).await;
    apply(&client, p);
    let echo = tokio::spawn(echo(server));

    let mut buf = [0u8; 16];
    let idle = timeout(2 * deadline(p), client.read(&mut buf)).await;
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

async fn heal_undoes_every_fault(lab: &Lab, family: Family) {
    let (mut client, server) = connected(lab, family, 7000).await;
    apply(&client, fast_without_user_timeout());
    let echo = tokio::spawn(echo(server));
    let mut back = [0u8; 2];

    type Fault = fn(&Lab) -> Result<(), LabError>;
    let faults: [(&str, Fault); 4] = [
        ("blackhole", Lab::blackhole),
        ("cut_link", Lab::cut_link),
        ("unreachable", Lab::unreachable),
        ("reject", |lab| lab.reject(Reject::PortUnreachable)),
    ];
    for (name, fault) in faults {
        fault(lab).unwrap();
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

async fn cut_link_kills_both_sides(lab: &Lab, family: Family) {
    let p = fast_without_user_timeout();
    let (mut client, mut server) = connected(lab, family, 7000).await;
    apply(&client, p);
    apply(&server, p);

    lab.cut_link().unwrap();
    let start = Instant::now();
    let limit = deadline(p) + Duration::from_secs(2);
    let ((client_err, client_after), (server_err, server_after)) = tokio::join!(
        read_error(&mut client, start, limit),
        read_error(&mut server, start, limit)
    );
    report(family, "cut_link, client", &client_err, client_after);
    report(family, "cut_link, server", &server_err, server_after);
    // The server's probes fail locally (no route left). IPv6 records that as the socket's soft
    // error (`inet6_csk_xmit`), which the timeout then reports; IPv4 does not.
    let server_errno = match family {
        Family::V4 => ETIMEDOUT,
        Family::V6 => ENETUNREACH,
    };
    for (side, err, after, errno) in [
        ("client", client_err, client_after, ETIMEDOUT),
        ("server", server_err, server_after, server_errno),
    ] {
        assert_eq!(err.raw_os_error(), Some(errno), "{side}: {err}");
        assert!(after >= floor(p), "{side}: {after:?}");
        assert_within_bound(after, p);
    }
}

/// One lab per thread, blocking std sockets. Returns the client and server side after a
/// round trip.
fn connected_std(lab: &Lab, family: Family) -> (std::net::TcpStream, std::net::TcpStream) {
    let addr = SocketAddr::new(lab.server_addr_for(family), 7000);
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[test]
fn parallel_labs_do_not_interfere() {
    const DYING: usize = 8;
    // Create one lab first so that a skip happens once, on the main thread.
    let Some(first) = lab_or_skip!() else {
        return;
    };
    let p = fast_without_user_timeout();
    let barrier = Arc::new(Barrier::new(DYING + 1));
    let mut threads = Vec::new();
    for i in 0..DYING {
        let barrier = Arc::clone(&barrier);
        threads.push(std::thread::spawn(move || {
            let family = Family::ALL[i % 2];
            let lab = Lab::new().expect("lab in a thread");
            let (mut client, _server) = connected_std(&lab, family);
            apply(&client, p);
            barrier.wait();
            // Stagger the blackholes so that a fault leaking into another lab would show up as
            // a death at the wrong time there.
            std::thread::sleep(Duration::from_millis(150 * i as u64));
            lab.blackhole().unwrap();
            let start = Instant::now();
            let err = blocking_read(&mut client, deadline(p) + Duration::from_secs(2)).unwrap_err();
            let elapsed = start.elapsed();
            assert_eq!(
                err.raw_os_error(),
                Some(ETIMEDOUT),
                "lab {i}, {family}: {err}"
            );
            assert!(elapsed >= floor(p), "lab {i}: {elapsed:?}");
            assert_within_bound(elapsed, p);
            lab.client().name().to_owned()
        }));
    }

    // The healthy lab: same addresses plan, same ports, no fault, must outlive all the deaths,
    // on both families.
    let mut healthy: Vec<_> = Family::ALL
        .into_iter()
        .map(|family| connected_std(&first, family))
        .collect();
    for (client, _) in &healthy {
        apply(client, p);
    }
    barrier.wait();
    let survive = Duration::from_millis(150 * DYING as u64) + deadline(p) + Duration::from_secs(1);
    let err = blocking_read(&mut healthy[0].0, survive).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "healthy lab: {err}");
    for (client, server) in &mut healthy {
        assert!(client.take_error().unwrap().is_none());
        client.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        server.write_all(&b).unwrap();
        client.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"y");
    }

    let mut names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    names.push(first.client().name().to_owned());
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DYING + 1, "every lab has its own namespaces");
}
