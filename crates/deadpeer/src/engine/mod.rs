//! The engine: the life of a watched connection, in one place.
//!
//! | file | holds |
//! |---|---|
//! | `owner.rs` | [`Owner`], the stream's side: its [`Meta`], the application's own shutdown, and the [`Latch`] made on first need |
//! | `latch.rs` | [`Latch`], shared by a stream and its `Liveness` handles: the latched verdict, the closed flag, the watched descriptor and the waiters under one lock |
//! | `waiters.rs` | the wakers of pending `Dead` futures |
//! | `classify.rs` | errno + `TCP_INFO` → [`Cause`](crate::Cause) (built without `tokio` too) |
//! | `recent.rs` | the last deaths latched, for `DeadPeer::recover` (built without `tokio` too) |
//!
//! # Architecture: one death, through the modules
//!
//! Data flows one way: `policy` → `sys` → `engine` → `stream`/`liveness`/`listener` →
//! `report`, with the integrations (`axum`, `tonic`, `hyper`, `tls`, `reqwest`, `layer`) at the
//! edge. The core names no integration; `sys` names nothing above it (the reaper reports its
//! own failures through a function the engine hands it); `report` calls back into nothing.
//!
//! 1. **Set up.** `listener.rs` or `stream::connect` applies the `KeepalivePolicy`
//!    (`sys::apply`); the [`KeepaliveStream`](crate::KeepaliveStream) holds an [`Owner`] with the
//!    connection's [`Meta`]. No allocation yet.
//! 2. **Watch.** `liveness()` (or a layer, axum, tonic, through
//!    [`AsLiveness`](crate::liveness::AsLiveness)) makes the [`Latch`] and registers the socket's
//!    own descriptor with the reaper (`sys/watch/epoll.rs`: one error-only epoll instance and
//!    thread per process), handing it `report::reaper_replaced` for its own failures.
//! 3. **The kernel kills the connection.** Either the reaper gets `EPOLLERR` and calls
//!    `OnError::on_error` on the `Latch`, or a read or write sees the errno or the EOF and calls
//!    `Owner::on_error`/`on_eof` → `Latch::verdict`. Both end in `Latch::judge`, under the
//!    connection's lock: `TCP_INFO` and `SO_ERROR` (`sys`) → `classify` → a
//!    [`DeadPeer`](crate::DeadPeer), latched once, remembered in `recent`, its waiters taken out.
//! 4. **Wake, then report.** With the lock released the waiters are woken (`Liveness::dead()`
//!    resolves), and only then `report::dead_peer_detected` emits the WARN event
//!    (`report/events.rs`) and counts the death (`report/metrics.rs`); on the reaper thread that
//!    report waits until no verdict is pending, and each callout is isolated.
//! 5. **Every observer agrees.** Later reads and writes return the latched death
//!    (`Owner::latched_error`), as do `Liveness::state` and every `dead()`.

pub(crate) mod classify;
pub(crate) mod recent;

#[cfg(feature = "tokio")]
mod latch;
#[cfg(feature = "tokio")]
mod owner;
#[cfg(feature = "tokio")]
mod waiters;

#[cfg(feature = "tokio")]
pub(crate) use self::latch::Latch;
#[cfg(feature = "tokio")]
pub(crate) use self::owner::Owner;
#[cfg(feature = "tokio")]
pub(crate) use self::waiters::Until;
#[cfg(feature = "tokio")]
use crate::KeepalivePolicy;

/// What a death report says about its connection, captured when the stream is wrapped.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) peer_addr: Option<std::net::SocketAddr>,
    pub(crate) local_addr: Option<std::net::SocketAddr>,
    pub(crate) policy: Option<KeepalivePolicy>,
    /// When the stream was wrapped: milliseconds on the coarse clock (`sys::coarse_now`).
    pub(crate) since_ms: u64,
}

#[cfg(feature = "tokio")]
impl Meta {
    pub(crate) fn new(
        peer_addr: Option<std::net::SocketAddr>,
        local_addr: Option<std::net::SocketAddr>,
        policy: Option<KeepalivePolicy>,
    ) -> Self {
        Self {
            peer_addr,
            local_addr,
            policy,
            since_ms: crate::sys::coarse_now().as_millis() as u64,
        }
    }

    /// How long ago the stream was wrapped.
    pub(crate) fn age(&self) -> std::time::Duration {
        crate::sys::coarse_now().saturating_sub(std::time::Duration::from_millis(self.since_ms))
    }
}

/// Who asks for a verdict, and what it saw.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub(crate) enum Observer {
    /// A read or write of the stream: `seen` is its errno, `None` for an EOF (the peer's FIN,
    /// unless the kernel closed the connection).
    Io { seen: Option<i32> },
    /// The reaper thread, told of an error or hang-up; `peer_closed` when the event carried the
    /// peer's FIN (`EPOLLRDHUP`).
    Reaper { peer_closed: bool },
    /// `KeepaliveStream::wrap` or `new`, given a socket the kernel had already closed, with the
    /// pending errno it took: the first observer, so a close with no errno left is a death
    /// whose reason someone else took.
    Wrap { errno: Option<i32> },
}
