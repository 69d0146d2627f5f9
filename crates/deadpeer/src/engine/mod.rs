//! The engine: the life of a watched connection, in one place.
//!
//! | file | holds |
//! |---|---|
//! | `owner.rs` | [`Owner`], the stream's side: its [`Meta`], the application's own shutdown, and the [`Latch`] made on first need |
//! | `latch.rs` | [`Latch`], shared by a stream and its `Liveness` handles: the latched verdict, the closed flag, the watched descriptor and the waiters under one lock |
//! | `waiters.rs` | the wakers of pending `Dead` futures |
//! | `classify.rs` | errno + `TCP_INFO` → [`Cause`](crate::Cause) (built without `tokio` too) |
//! | `recent.rs` | the last deaths latched, for `DeadPeer::recover` (built without `tokio` too) |

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

/// What a death report says about its connection, captured when the stream is wrapped.
#[cfg(feature = "tokio")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) peer_addr: Option<std::net::SocketAddr>,
    pub(crate) local_addr: Option<std::net::SocketAddr>,
    pub(crate) policy: Option<crate::KeepalivePolicy>,
    /// When the stream was wrapped: milliseconds on the coarse clock (`sys::coarse_now`).
    pub(crate) since_ms: u64,
}

#[cfg(feature = "tokio")]
impl Meta {
    pub(crate) fn new(
        peer_addr: Option<std::net::SocketAddr>,
        local_addr: Option<std::net::SocketAddr>,
        policy: Option<crate::KeepalivePolicy>,
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
    /// A read or write of the stream: `seen` is its errno, `None` for an EOF; `shut_down` says
    /// the application shut down its write side, which makes `EPIPE` its own doing.
    Io { seen: Option<i32>, shut_down: bool },
    /// The reaper thread, told of an error or hang-up.
    Reaper,
    /// `KeepaliveStream::wrap` or `new`, given a socket the kernel had already closed, with the
    /// pending errno it took: the first observer, so a close with no errno left is a death
    /// whose reason someone else took.
    Wrap { errno: Option<i32> },
}
