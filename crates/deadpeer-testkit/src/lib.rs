//! Real dead TCP peers on demand.
//!
//! `deadpeer-testkit` builds a small, isolated, dual-stack network for each test — a client, a
//! router and a server, each in its own Linux network namespace, joined by veth links, with
//! IPv4 and IPv6 addresses — and kills the TCP connections between them in the ways real peers
//! die. Every fault acts on both families:
//!
//! | fault | how | what the surviving side gets |
//! |---|---|---|
//! | [`Lab::blackhole`] | blackhole routes on the router, both directions | `ETIMEDOUT` at the keepalive bound |
//! | [`Lab::unreachable`] | unreachable routes on the router (ICMP host unreachable, ICMPv6 no route) | idle: `ETIMEDOUT`; unacked data + `TCP_USER_TIMEOUT`: `EHOSTUNREACH` (IPv6: `ENETUNREACH`) |
//! | [`Lab::cut_link`] | `ip link del` of the router–server veth | idle: `ETIMEDOUT` |
//! | [`Lab::reject`] | nftables `reject with …` on the router, see [`Reject`] | unacked data: the ICMP error's errno at the user timeout |
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
//! use deadpeer::KeepalivePolicy;
//! use deadpeer_testkit::{Family, assert_within_bound, lab_or_skip};
//!
//! #[tokio::test]
//! async fn blackhole_is_detected() -> Result<(), Box<dyn std::error::Error>> {
//!     // Skips (with one line on stderr) when not root, unless DEADPEER_REQUIRE_NETNS=1.
//!     let Some(lab) = lab_or_skip!() else { return Ok(()) };
//!
//!     for family in Family::ALL {
//!         let addr = SocketAddr::new(lab.server_addr_for(family), 8080);
//!         let listener = lab.server().tokio_listener(addr)?;
//!         let mut client = lab.client().tokio_connect(addr).await?;
//!         let (_server_side, _) = listener.accept().await?;
//!
//!         // 1 s idle, 1 s interval, 3 probes: dead within 1 + 3 × 1 = 4 s.
//!         let policy: KeepalivePolicy = "1:1:3".parse()?;
//!         SockRef::from(&client).set_tcp_keepalive(
//!             &TcpKeepalive::new()
//!                 .with_time(policy.idle())
//!                 .with_interval(policy.interval())
//!                 .with_retries(policy.probes()),
//!         )?;
//!
//!         lab.blackhole()?;
//!         let start = Instant::now();
//!         let err = client.read(&mut [0; 1]).await.unwrap_err();
//!         assert_eq!(err.raw_os_error(), Some(110)); // ETIMEDOUT
//!         assert_within_bound(start.elapsed(), policy);
//!         lab.heal()?;
//!     }
//!     Ok(())
//! }
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
//! exactly that. [`Netns::open`] gives the same handle on a namespace of your own.
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
//! [`Lab::new`] returns a [`LabError`] saying what is missing — it never panics. Start every lab
//! test with [`lab_or_skip!`]: it prints one `skipped <test>: <reason>` line and evaluates to
//! `None`, or panics when the environment variable `DEADPEER_REQUIRE_NETNS=1` is set (as CI
//! does), so that a skip cannot hide a broken setup.
//!
//! # Timing assertions
//!
//! A test asserts a death against the policy's bound plus what the kernel explains, never the
//! machine's speed: [`assert_within_bound`], [`dies_within_bound`] and their [`deadline`].
//!
//! # Hygiene
//!
//! Every namespace is named `<prefix><pid>-<n>-<c|r|s>`, with the prefix `dpk-` unless
//! [`LabBuilder::prefix`] chose another. Dropping a [`Lab`] deletes its namespaces, also on
//! panic. Building a lab deletes stale namespaces of that prefix's scheme whose creating
//! process has exited (after a `SIGKILL`, say), and nothing else. Namespaces opened with
//! [`Netns::open`] are never deleted. Nothing is configured in the host's namespace.
#![forbid(unsafe_code)]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "deadpeer-testkit runs on Linux only: its labs are Linux network namespaces, veth pairs, \
     routes and nftables; depend on it under [target.'cfg(target_os = \"linux\")'.dev-dependencies]"
);

#[cfg(target_os = "linux")]
mod bound;
#[cfg(target_os = "linux")]
mod cmd;
#[cfg(target_os = "linux")]
mod error;
#[cfg(target_os = "linux")]
mod lab;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
mod reject;
#[cfg(target_os = "linux")]
mod skip;
#[cfg(target_os = "linux")]
mod tool;

#[cfg(feature = "events")]
#[cfg(target_os = "linux")]
pub mod events;

#[cfg(target_os = "linux")]
pub use bound::{WAKE, assert_within_bound, deadline, dies_within_bound};
#[cfg(target_os = "linux")]
pub use error::LabError;
#[cfg(target_os = "linux")]
pub use lab::{DEFAULT_PREFIX, Family, Lab, LabBuilder, MAX_PREFIX_LEN, send_nowait};
#[cfg(target_os = "linux")]
pub use netns::{CONNECT_TIMEOUT, Netns, NetnsGuard};
#[cfg(target_os = "linux")]
pub use reject::Reject;
#[cfg(target_os = "linux")]
pub use skip::{lab_or_skip, tool_or_skip};
#[cfg(target_os = "linux")]
pub use tool::Tool;

/// The environment variable that turns skips into failures: set it to `1` in CI.
pub const REQUIRE_NETNS_ENV: &str = "DEADPEER_REQUIRE_NETNS";

/// For the macros; not public API.
#[doc(hidden)]
#[cfg(target_os = "linux")]
pub mod __private {
    pub use crate::skip::test_name;
}
