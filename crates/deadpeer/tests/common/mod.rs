//! Helpers shared by the integration tests: event capture, lab connections, and the assertions
//! every death test makes (the time against the bound, the latch on every observer, one event).
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use deadpeer::liveness::State;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream, Liveness};
use deadpeer_testkit::Lab;
use deadpeer_testkit::events::Events;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The metrics recorded in the test binary (a global debugging recorder).
#[cfg(feature = "metrics")]
pub mod totals;

#[allow(unused_imports)]
pub use deadpeer_testkit::events::capture;

#[allow(unused_imports)]
pub use deadpeer_testkit::{WAKE, assert_within_bound, deadline};

/// A policy from idle/interval/probes in seconds, user timeout auto.
pub fn policy(idle: u64, interval: u64, probes: u32) -> KeepalivePolicy {
    KeepalivePolicy::new(
        Duration::from_secs(idle),
        Duration::from_secs(interval),
        probes,
    )
    .unwrap()
}

/// A `deadpeer::connect` client in the lab's client namespace, and the accepted plain server
/// stream in the server namespace. One byte is exchanged each way so both sides are established
/// and have just received data.
pub async fn client_pair(
    lab: &Lab,
    port: u16,
    policy: &KeepalivePolicy,
) -> (KeepaliveStream, TcpStream) {
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener = lab.server().tokio_listener(addr).unwrap();
    let mut client = {
        let _inside = lab.client().enter().unwrap();
        deadpeer::connect(addr, *policy).await.unwrap()
    };
    let (mut server, _) = listener.accept().await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).await.unwrap();
    server.write_all(b"y").await.unwrap();
    client.read_exact(&mut b).await.unwrap();
    (client, server)
}

/// The `DeadPeer` inside `err`, checked to be `dead` (the same latched value: same cause, errno
/// and age) and carried with the cause's error kind.
#[track_caller]
pub fn same_death(err: &io::Error, dead: &DeadPeer) {
    let got = DeadPeer::from_io(err).unwrap_or_else(|| panic!("not a DeadPeer: {err:?}"));
    assert_eq!(got.cause(), dead.cause(), "{got}");
    assert_eq!(got.raw_os_error(), dead.raw_os_error(), "{got}");
    assert_eq!(
        got.connected_for(),
        dead.connected_for(),
        "not the latched value: {got}"
    );
    assert_eq!(err.kind(), io::Error::from(dead.clone()).kind());
}

/// Asserts that every observer of the connection reports the one latched `dead`: a read, a
/// write, a flush, a shutdown, the liveness state and `dead()`.
pub async fn assert_latched_everywhere(
    stream: &mut KeepaliveStream,
    liveness: &Liveness,
    dead: &DeadPeer,
) {
    let mut buf = [0u8; 16];
    same_death(&stream.read(&mut buf).await.unwrap_err(), dead);
    same_death(&stream.write(b"more").await.unwrap_err(), dead);
    same_death(&stream.flush().await.unwrap_err(), dead);
    same_death(&stream.shutdown().await.unwrap_err(), dead);
    same_death(&stream.read(&mut buf).await.unwrap_err(), dead);
    match liveness.state() {
        State::Dead(d) => assert_eq!(d.connected_for(), dead.connected_for()),
        other => panic!("liveness state {other:?}"),
    }
    let again = liveness.dead().await.expect("dead() after the death");
    assert_eq!(again.connected_for(), dead.connected_for());
    assert_eq!(
        stream.dead_peer().map(DeadPeer::connected_for),
        Some(dead.connected_for())
    );
}

/// The events with `message` once there are at least `n` (or after 2 s). A death's event follows
/// its verdict: when the reaper saw the death, `dead()` may resolve a moment before the event is
/// written, on the reaper thread.
pub fn events_settled(
    events: &Events,
    message: &str,
    n: usize,
) -> Vec<deadpeer_testkit::events::Event> {
    let until = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let got = events.with_message(message);
        if got.len() >= n || std::time::Instant::now() >= until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asserts exactly one event for `dead`, with every fixed field: WARN `dead peer detected` for
/// a death ([`Ending::is_death`](deadpeer::Ending::is_death)), else DEBUG `connection ended`;
/// and none of the other kind.
#[track_caller]
pub fn assert_one_event(events: &Events, dead: &DeadPeer) {
    let (message, level, other) = if dead.ending().is_death() {
        (
            "dead peer detected",
            tracing::Level::WARN,
            "connection ended",
        )
    } else {
        (
            "connection ended",
            tracing::Level::DEBUG,
            "dead peer detected",
        )
    };
    // A clean close (`closed`) is its own `connection ended` event, not this death's: wait for
    // `n` events besides those (or 2 s).
    let of_death = |message: &str, n: usize| -> Vec<_> {
        let until = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let got: Vec<_> = events
                .with_message(message)
                .into_iter()
                .filter(|e| e.fields.get("deadpeer.ending").map(String::as_str) != Some("closed"))
                .collect();
            if got.len() >= n || std::time::Instant::now() >= until {
                return got;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let detected = of_death(message, 1);
    assert_eq!(detected.len(), 1, "{dead}: {:#?}", events.all());
    assert!(
        of_death(other, 0).is_empty(),
        "{dead}: an event of the other kind: {:#?}",
        events.all()
    );
    let e = &detected[0];
    assert_eq!(e.level, level);
    assert_eq!(e.target, "deadpeer");
    for field in [
        "network.peer.address",
        "network.peer.port",
        "network.local.address",
        "network.local.port",
        "network.transport",
        "network.type",
        "error.type",
        "deadpeer.ending",
        "connected_for_s",
        "idle_for_s",
        "policy",
        "errno",
    ] {
        assert!(e.fields.contains_key(field), "missing {field} in {e:#?}");
    }
    assert_eq!(e.fields["error.type"], dead.cause().as_str());
    assert_eq!(e.fields["deadpeer.ending"], dead.ending().as_str());
    assert_eq!(e.fields["network.transport"], "tcp");
    let peer = dead.peer_addr().expect("a lab connection knows its peer");
    assert_eq!(e.fields["network.peer.address"], peer.ip().to_string());
    assert_eq!(e.fields["network.peer.port"], peer.port().to_string());
    let ip = if peer.is_ipv4() { "ipv4" } else { "ipv6" };
    assert_eq!(e.fields["network.type"], ip);
    let seconds = |d: Duration| format!("{:?}", d.as_millis() as f64 / 1000.0);
    assert_eq!(e.fields["connected_for_s"], seconds(dead.connected_for()));
    if let Some(idle) = dead.idle_for() {
        assert_eq!(e.fields["idle_for_s"], seconds(idle));
    }
    if let Some(info) = dead.tcp_info() {
        assert_eq!(e.fields["tcp.probes"], info.probes.to_string());
        assert_eq!(e.fields["tcp.retransmits"], info.retransmits.to_string());
        assert_eq!(e.fields["tcp.unacked"], info.unacked.to_string());
        assert_eq!(e.fields["tcp.rto_s"], seconds(info.rto));
        assert_eq!(
            e.fields["tcp.last_data_sent_s"],
            seconds(info.last_data_sent)
        );
    }
    assert_eq!(
        e.fields["errno"],
        dead.raw_os_error().expect("an errno").to_string()
    );
}

/// Waits for `liveness.dead()`, at most `limit`, and returns the death.
pub async fn wait_dead(liveness: &Liveness, limit: Duration) -> DeadPeer {
    match tokio::time::timeout(limit, liveness.dead()).await {
        Ok(Some(dead)) => dead,
        Ok(None) => panic!("dead() resolved to None: the stream was dropped"),
        Err(_) => panic!("no death within {limit:?}"),
    }
}

/// Asserts a death of `cause` with OS error `errno`.
#[track_caller]
pub fn assert_cause(dead: &DeadPeer, cause: Cause, errno: i32) {
    assert_eq!(dead.cause(), cause, "{dead}");
    assert_eq!(dead.raw_os_error(), Some(errno), "{dead}");
}

/// Makes room for `needed` open descriptors, or skips the test `test`: raises the soft
/// `RLIMIT_NOFILE` to the hard limit (which any process may do; a user's shell often starts at a
/// soft 1024). When the hard limit is below `needed`, prints one line, `skipped <test>: <reason>`,
/// and returns false; under `DEADPEER_REQUIRE_NETNS=1` it panics instead.
pub fn nofile_or_skip(test: &str, needed: u64) -> bool {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use std::io::Write as _;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit(RLIMIT_NOFILE)");
    if soft < needed && hard > soft {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft RLIMIT_NOFILE");
    }
    if hard >= needed {
        return true;
    }
    let reason = format!(
        "needs {needed} open descriptors, RLIMIT_NOFILE's hard limit is {hard}: raise it (as \
         root, `ulimit -Hn {needed}`, or `nofile` in /etc/security/limits.conf)"
    );
    if std::env::var(deadpeer_testkit::REQUIRE_NETNS_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{test}: {reason} ({}=1 forbids skipping)",
            deadpeer_testkit::REQUIRE_NETNS_ENV
        );
    }
    // One write straight to fd 2, as the testkit's skips: the harness captures `eprintln!`.
    let _ = std::io::stderr().write_all(format!("skipped {test}: {reason}\n").as_bytes());
    false
}

/// The process's open descriptors.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A `deadpeer::connect` client of `listener` on loopback, and the accepted stream.
pub async fn loopback_pair(
    listener: &deadpeer::KeepaliveListener,
) -> (KeepaliveStream, KeepaliveStream) {
    let addr = listener.local_addr().unwrap();
    let client = deadpeer::connect(addr, KeepalivePolicy::FAST)
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}
