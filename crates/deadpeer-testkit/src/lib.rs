//! Real dead TCP peers on demand.
//!
//! `deadpeer-testkit` builds a small, isolated network for each test — a client, a router and a
//! server, each in its own Linux network namespace, joined by veth links — and kills the TCP
//! connections between them in the ways real peers die:
//!
//! | fault | how | what the surviving side gets |
//! |---|---|---|
//! | [`Lab::blackhole`] | blackhole routes on the router, both directions | `ETIMEDOUT` at the keepalive bound |
//! | [`Lab::unreachable`] | unreachable routes on the router (ICMP host unreachable) | idle: `ETIMEDOUT`; unacked data + `TCP_USER_TIMEOUT`: `EHOSTUNREACH` |
//! | [`Lab::cut_link`] | `ip link del` of the router–server veth | idle: `ETIMEDOUT` |
//! | [`Lab::forget`] | `TCP_REPAIR=1` then close on the peer socket (a reboot) | `ECONNRESET` at the next probe |
//! | [`Lab::reset`] | `SO_LINGER {1, 0}` then close | `ECONNRESET` at once |
//! | [`Lab::send_unacked`] | blackhole, then queue bytes | keepalive never fires; only `TCP_USER_TIMEOUT` ends it |
//! | [`Lab::fin`] | drain, `shutdown(SHUT_WR)`, close — the control case | EOF, no error |
//!
//! Nothing is mocked: the kernel's own keepalive, retransmission and ICMP handling produce the
//! errors, so a test observes exactly what production will.
//!
//! # Example
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//! use socket2::{SockRef, TcpKeepalive};
//! use tokio::io::AsyncReadExt;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Skips (with one line on stderr) when not root, unless DEADPEER_REQUIRE_NETNS=1.
//! let Some(lab) = deadpeer_testkit::lab_or_skip("blackhole_is_detected") else { return Ok(()) };
//!
//! let addr = SocketAddr::new(lab.server_addr(), 8080);
//! let listener = lab.server().tokio_listener(addr)?;
//! let mut client = lab.client().tokio_connect(addr).await?;
//! let (_server_side, _) = listener.accept().await?;
//!
//! // 1 s idle, 1 s interval, 3 probes: dead within 1 + 3 × 1 = 4 s.
//! SockRef::from(&client).set_tcp_keepalive(
//!     &TcpKeepalive::new()
//!         .with_time(Duration::from_secs(1))
//!         .with_interval(Duration::from_secs(1))
//!         .with_retries(3),
//! )?;
//!
//! lab.blackhole()?;
//! let start = Instant::now();
//! let err = client.read(&mut [0; 1]).await.unwrap_err();
//! assert_eq!(err.raw_os_error(), Some(110)); // ETIMEDOUT
//! assert!(start.elapsed() < Duration::from_millis(4_300));
//! # Ok(()) }
//! ```
//!
//! # Entering namespaces: a scoped `setns` guard on the calling thread
//!
//! A socket belongs, for its whole life, to the network namespace that was current for the thread
//! that *created* it. So the testkit does not run your code in another process
//! (`ip netns exec`) or spawn a dedicated thread per namespace: [`Netns::enter`] moves the
//! **calling thread** into the namespace with `setns(2)` and returns a [`NetnsGuard`] that moves
//! it back on drop (also while unwinding). [`Netns::run`] wraps that around a closure. Sockets
//! created inside stay inside after the thread leaves, and can then be used from any thread, by
//! std, socket2 or tokio — so one test, in one tokio runtime, drives both the client and the
//! server.
//!
//! The guard is `!Send`, and a thread that entered must be restored before it is reused. With a
//! multi-thread tokio runtime, never hold a guard across `.await`: create the socket inside
//! [`Netns::run`] (a socket2 `Socket` or a std listener, set non-blocking, then
//! `tokio::net::TcpStream::from_std` / `TcpSocket::from_std_stream`), and await outside. The
//! helpers [`Netns::tokio_listener`], [`Netns::tokio_socket`] and [`Netns::tokio_connect`] do
//! exactly that.
//!
//! # Why `ip` and not a netlink crate
//!
//! Topology and faults are set up by running `ip` from iproute2:
//! - iproute2 is the reference tool the kernel facts behind this crate were measured with, so the
//!   recipes map one to one (`ip -n ROUTER route replace blackhole ADDR/32 table 100`) and can be replayed by
//!   hand while debugging a test;
//! - it keeps the dependency tree small (no netlink stack) and the crate free of `unsafe`;
//! - a failure is readable: every [`LabError::Command`] carries the full command line and `ip`'s
//!   own stderr.
//!
//! # Privileges and skipping
//!
//! Creating namespaces needs `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` (root). Without them
//! [`Lab::new`] returns a [`LabError`] saying what is missing — it never panics. Use
//! [`lab_or_skip`] in tests: it prints one `skipped <test>: <reason>` line and returns `None`, or
//! panics when the environment variable `DEADPEER_REQUIRE_NETNS=1` is set (as CI does), so that a
//! skip cannot hide a broken setup.
//!
//! # Hygiene
//!
//! Every namespace is named `dpk-<pid>-<n>-<c|r|s>`. Dropping a [`Lab`] deletes its namespaces,
//! also on panic. [`Lab::new`] deletes stale `dpk-` namespaces whose creating process has exited
//! (after a `SIGKILL`, say). Nothing is configured in the host's namespace.
#![forbid(unsafe_code)]

mod cmd;
mod error;
mod lab;
mod netns;
mod reject;

#[cfg(feature = "events")]
pub mod events;

pub use error::LabError;
pub use lab::{Lab, send_nowait};
pub use netns::{CONNECT_TIMEOUT, Netns, NetnsGuard};
pub use reject::Reject;

/// The environment variable that turns skips into failures: set it to `1` in CI.
pub const REQUIRE_NETNS_ENV: &str = "DEADPEER_REQUIRE_NETNS";

/// Creates a [`Lab`] for the test `test_name`, or skips the test.
///
/// When the machine cannot host a lab (no `CAP_NET_ADMIN`/`CAP_SYS_ADMIN`, or no `ip`), it prints
/// exactly one line, `skipped <test_name>: <reason>`, to stderr (visible even when the test
/// harness captures output) and returns `None`; the test then
/// returns early. If `DEADPEER_REQUIRE_NETNS=1` is set it panics with the reason instead.
///
/// # Panics
///
/// - when the lab cannot be created for any other reason (a failing `ip` command on a machine
///   that should support it is a bug, not a skip);
/// - on a privilege or tooling error when `DEADPEER_REQUIRE_NETNS=1`.
///
/// # Example
///
/// ```no_run
/// #[test]
/// fn my_service_reaps_dead_clients() {
///     let Some(lab) = deadpeer_testkit::lab_or_skip("my_service_reaps_dead_clients") else {
///         return;
///     };
///     // ... start the service in lab.server(), connect from lab.client(), lab.blackhole() ...
/// #   drop(lab);
/// }
/// ```
pub fn lab_or_skip(test_name: &str) -> Option<Lab> {
    use std::io::Write as _;
    match Lab::new() {
        Ok(lab) => Some(lab),
        Err(err) if err.is_skip() => {
            if std::env::var(REQUIRE_NETNS_ENV).is_ok_and(|v| v == "1") {
                panic!("{test_name}: {err} ({REQUIRE_NETNS_ENV}=1 forbids skipping)");
            }
            // Straight to fd 2, not `eprintln!`: the test harness captures the macros and would
            // hide the skip of a passing test.
            // One write, so that parallel tests cannot split the line.
            let line = format!("skipped {test_name}: {err}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
        Err(err) => panic!("{test_name}: cannot create the lab: {err}"),
    }
}
