//! The reaper's watch on connections: what it tells a watcher, and [`WatchedFd`], a watched
//! socket's descriptor. With epoll (Linux, Android: `epoll.rs`) a process-wide thread tells a
//! watcher the moment the kernel kills its connection; elsewhere (`none.rs`) nothing is watched
//! and `Liveness::dead()` resolves when a read or write sees the death.

use std::io;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod table;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) use self::epoll::WatchedFd;

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod none;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) use self::none::WatchedFd;

/// What the reaper does after a death is latched and its waiters woken: the report (events,
/// metrics), made once no verdict waits behind it.
pub(crate) type Report = Box<dyn FnOnce() + Send>;

/// What the reaper calls from a thread that died (a panic in deadpeer's own code), once a new
/// thread took over (`None`) or with why none could be started: the engine hands the reporting
/// down this way, so that `sys` never names it.
pub(crate) type OnReplaced = fn(Option<&io::Error>);

/// Told when the kernel reports an error, a hang-up or the peer's FIN on a watched socket.
pub(crate) trait OnError: Send + Sync {
    /// Runs on the reaper thread; `peer_closed` says the event carried `EPOLLRDHUP` (the peer's
    /// FIN was received, or the connection is gone). It must be quick and must not block on I/O: latch the verdict,
    /// wake the waiters, and return the report to make later, if any. It runs no code from
    /// outside deadpeer but wakers, and the reaper survives a panic in it.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    fn on_error(&self, peer_closed: bool) -> Option<Report>;
}
