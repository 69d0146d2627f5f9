//! The only code that touches socket options, `TCP_INFO` and `cfg(target_os)`.
//!
//! Portable work goes through [socket2](https://docs.rs/socket2). The FFI is `getsockopt(TCP_INFO)`
//! in [`tcp_info`] and the error-only epoll of the reaper in `watch` (`watch/epoll.rs`). Each function documents
//! which socket options it sets or reads on which OS.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::policy::KeepalivePolicy;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as imp;
#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as imp;

pub(crate) use imp::borrow;
#[cfg(feature = "tokio")]
pub(crate) use imp::{Borrowed, coarse_now};

#[cfg(feature = "tokio")]
mod watch;
#[cfg(feature = "tokio")]
pub(crate) use watch::{OnError, Report, WatchedFd};

/// A TCP socket deadpeer can set options on: [`AsFd`](std::os::fd::AsFd) on Unix,
/// [`AsSocket`](https://doc.rust-lang.org/std/os/windows/io/trait.AsSocket.html) on Windows.
/// Every socket type of std, tokio and socket2 is one.
pub trait AsSocketDescriptor: imp::AsOsSocket {}

impl<T: imp::AsOsSocket + ?Sized> AsSocketDescriptor for T {}

/// What an OS error code says about a connection, whatever the OS: the tables are in
/// `sys/unix.rs` and `sys/windows.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// The kernel gave up waiting on the peer (`ETIMEDOUT`, `WSAETIMEDOUT`).
    TimedOut,
    /// Keepalive found the peer gone (`WSAENETRESET`; Unix says `ETIMEDOUT`).
    #[cfg_attr(unix, allow(dead_code))]
    KeepaliveFailed,
    /// The peer reset the connection.
    Reset,
    /// `EPIPE`: a reset after the peer's FIN, or a write after our own shutdown.
    #[cfg_attr(windows, allow(dead_code))]
    Pipe,
    /// The connection is no longer connected (`ENOTCONN`, `WSAESHUTDOWN`): the aftermath.
    NotConnected,
    /// ICMP host or network unreachable.
    Unreachable,
    /// ICMP port or protocol unreachable, or administratively prohibited.
    Refused,
    /// The local stack aborted the connection (`WSAECONNABORTED`).
    #[cfg_attr(unix, allow(dead_code))]
    Aborted,
    /// Not an error that ends a connection.
    Other,
}

/// What `errno` says about a connection on this OS (the vocabulary of the engine's classifier).
pub(crate) fn code(errno: i32) -> Code {
    imp::code(errno)
}

/// Whether `errno` says the process or system has no descriptor left (`EMFILE`, `ENFILE`,
/// `WSAEMFILE`).
#[cfg(feature = "metrics")]
pub(crate) fn is_out_of_descriptors(errno: i32) -> bool {
    imp::is_out_of_descriptors(errno)
}

/// The error for an option or structure this OS does not have (or socket2 cannot read).
#[cfg_attr(any(target_os = "linux", target_os = "android"), allow(dead_code))]
fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "{what} is not available on {} (see deadpeer's crate docs, Platforms)",
            std::env::consts::OS
        ),
    )
}

/// The keepalive options in effect on a socket, read back by [`inspect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketKeepalive {
    /// `SO_KEEPALIVE`: whether keepalive probes are sent at all.
    pub enabled: bool,
    /// `TCP_KEEPIDLE` (`TCP_KEEPALIVE` on macOS), whole seconds.
    pub idle: Duration,
    /// `TCP_KEEPINTVL`, whole seconds.
    pub interval: Duration,
    /// `TCP_KEEPCNT`.
    pub probes: u32,
    /// `TCP_USER_TIMEOUT`, whole milliseconds; `None` when it is 0 (off) or the OS has no such option.
    pub user_timeout: Option<Duration>,
}

impl SocketKeepalive {
    /// Whether these values are exactly what [`apply`] sets for `policy`.
    pub fn matches(&self, policy: KeepalivePolicy) -> bool {
        self.enabled
            && self.idle == policy.idle()
            && self.interval == policy.interval()
            && self.probes == policy.probes()
            && (!HAS_USER_TIMEOUT || self.user_timeout == policy.effective_user_timeout())
    }

    /// The detection bound these values give: `idle + interval × probes`, or, with a user
    /// timeout, the first probe tick at or past it (see
    /// [`KeepalivePolicy::detection_bound`]).
    pub fn detection_bound(&self) -> Duration {
        let ticks =
            crate::kernel::probe_ticks(self.idle, self.interval, self.probes, self.user_timeout);
        self.idle.saturating_add(
            self.interval
                .saturating_mul(u32::try_from(ticks).unwrap_or(u32::MAX)),
        )
    }
}

/// `TCP_INFO`, the subset deadpeer uses (Linux only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TcpInfo {
    /// `tcpi_state`: 1 is `ESTABLISHED`, 7 is `CLOSE` (the state after the kernel kills a connection).
    pub state: u8,
    /// `tcpi_probes`: keepalive (or zero-window) probes sent without an answer.
    pub probes: u8,
    /// `tcpi_backoff`: retransmission timer backoff; above 0 while data goes unacknowledged.
    pub backoff: u8,
    /// `tcpi_retransmits`: retransmissions of the current segment.
    pub retransmits: u8,
    /// `tcpi_unacked`: segments sent and not yet acknowledged.
    pub unacked: u32,
    /// `tcpi_last_data_recv`: time since data was last received.
    pub last_data_recv: Duration,
    /// `tcpi_last_data_sent`: time since data was last sent.
    pub last_data_sent: Duration,
    /// `tcpi_last_ack_recv`: time since an ACK (including a probe's answer) was last received.
    pub last_ack_recv: Duration,
    /// `tcpi_rtt`: smoothed round-trip time.
    pub rtt: Duration,
    /// `tcpi_rto`: the current retransmission timeout, backoff included.
    pub rto: Duration,
    /// `tcpi_snd_wnd`: the peer's advertised receive window, in bytes; 0 while the peer's
    /// application is not reading and its buffer is full. `None` on kernels older than 6.2,
    /// whose `tcp_info` ends before this field.
    pub snd_wnd: Option<u32>,
}

impl TcpInfo {
    /// `TCP_ESTABLISHED`.
    pub const ESTABLISHED: u8 = 1;
    /// `TCP_CLOSE`.
    pub const CLOSE: u8 = 7;
}

/// Whether this OS copies keepalive options from a listening socket to the sockets it accepts.
///
/// True on Linux and Android, where a listener's `SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`,
/// `TCP_KEEPCNT` and `TCP_USER_TIMEOUT` are inherited (measured: docs/kernel.md). False
/// elsewhere, where inheritance was not measured: the policy is applied to each accepted socket.
#[cfg(feature = "tokio")]
pub(crate) const LISTENER_INHERITS: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Whether this OS has `TCP_USER_TIMEOUT`.
const HAS_USER_TIMEOUT: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "fuchsia"
));

/// Applies `policy` to a TCP socket.
///
/// # Platform
///
/// | option | Linux, Android | macOS, iOS | FreeBSD, NetBSD, illumos | Windows |
/// |---|---|---|---|---|
/// | `SO_KEEPALIVE` | on | on | on | on |
/// | idle | `TCP_KEEPIDLE`, s | `TCP_KEEPALIVE`, s | `TCP_KEEPIDLE`, s | `SIO_KEEPALIVE_VALS`, ms |
/// | interval | `TCP_KEEPINTVL`, s | `TCP_KEEPINTVL`, s | `TCP_KEEPINTVL`, s | `SIO_KEEPALIVE_VALS`, ms |
/// | probes | `TCP_KEEPCNT` | `TCP_KEEPCNT` | `TCP_KEEPCNT` | `TCP_KEEPCNT` (Windows 10 1703 and later) |
/// | user timeout | `TCP_USER_TIMEOUT`, ms (0 for `Off`) | not set | not set | not set |
///
/// Sources for each OS are in the crate docs, "Platforms"; only Linux is measured.
/// Five `setsockopt` calls on Linux, about 1–2 µs. Values are already validated by
/// [`KeepalivePolicy`], so nothing is truncated. On a listening socket on Linux the values are
/// inherited by every accepted socket.
///
/// # Errors
///
/// The OS error of the first option that failed, with a message naming it. A socket that is not
/// TCP (UDP, Unix) gives [`io::ErrorKind::InvalidInput`] with a message saying so, rather than a
/// bare `ENOPROTOOPT`.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let stream = std::net::TcpStream::connect(listener.local_addr()?)?;
/// deadpeer::apply(&stream, deadpeer::KeepalivePolicy::FAST)?;
/// assert!(deadpeer::inspect(&stream)?.matches(deadpeer::KeepalivePolicy::FAST));
/// # Ok(()) }
/// ```
pub fn apply(socket: &impl AsSocketDescriptor, policy: KeepalivePolicy) -> io::Result<()> {
    #[cfg(debug_assertions)]
    APPLY_CALLS.with(|c| c.set(c.get() + 1));
    let sock = SockRef::from(socket);
    let ka = TcpKeepalive::new()
        .with_time(policy.idle())
        .with_interval(policy.interval())
        .with_retries(policy.probes());
    sock.set_tcp_keepalive(&ka).map_err(|e| {
        option_error(
            e,
            "SO_KEEPALIVE/TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPCNT",
            "set",
        )
    })?;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    sock.set_tcp_user_timeout(policy.effective_user_timeout())
        .map_err(|e| option_error(e, "TCP_USER_TIMEOUT", "set"))?;
    Ok(())
}

#[cfg(debug_assertions)]
thread_local! {
    static APPLY_CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times [`apply`] ran on this thread (debug builds only; 0 in release builds). A test
/// uses it to prove that accepting from an inheriting listener makes no `setsockopt`.
#[cfg(all(test, feature = "tokio"))]
pub(crate) fn debug_apply_calls_on_this_thread() -> u64 {
    #[cfg(debug_assertions)]
    return APPLY_CALLS.with(std::cell::Cell::get);
    #[cfg(not(debug_assertions))]
    0
}

/// Reads back the keepalive options in effect on a TCP socket (see [`apply`] for the options on
/// each OS). Five `getsockopt` calls on Linux.
///
/// # Platform
///
/// Linux, Android, macOS, iOS and the BSDs read the options [`apply`] sets; `user_timeout` is
/// `None` where there is no `TCP_USER_TIMEOUT`. On Windows the idle time and interval, set with
/// `SIO_KEEPALIVE_VALS`, cannot be read back through socket2, so `inspect` returns
/// [`io::ErrorKind::Unsupported`] there.
///
/// # Errors
///
/// As for [`apply`]: a socket that is not TCP gives [`io::ErrorKind::InvalidInput`];
/// [`io::ErrorKind::Unsupported`] on Windows.
pub fn inspect(socket: &impl AsSocketDescriptor) -> io::Result<SocketKeepalive> {
    #[cfg(windows)]
    {
        let _ = socket;
        Err(unsupported(
            "reading back TCP keepalive options (SIO_KEEPALIVE_VALS has no getter)",
        ))
    }
    #[cfg(not(windows))]
    inspect_options(socket)
}

#[cfg(not(windows))]
fn inspect_options(socket: &impl AsSocketDescriptor) -> io::Result<SocketKeepalive> {
    let sock = SockRef::from(socket);
    let get = |name: &'static str| move |e| option_error(e, name, "read");
    let enabled = sock.keepalive().map_err(get("SO_KEEPALIVE"))?;
    let idle = sock.tcp_keepalive_time().map_err(get("TCP_KEEPIDLE"))?;
    let interval = sock
        .tcp_keepalive_interval()
        .map_err(get("TCP_KEEPINTVL"))?;
    let probes = sock.tcp_keepalive_retries().map_err(get("TCP_KEEPCNT"))?;
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    let user_timeout = sock.tcp_user_timeout().map_err(get("TCP_USER_TIMEOUT"))?;
    #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
    let user_timeout = None;
    Ok(SocketKeepalive {
        enabled,
        idle,
        interval,
        probes,
        user_timeout,
    })
}

/// Reads `TCP_INFO` from a TCP socket: one `getsockopt`, about 0.3 µs.
///
/// # Platform
///
/// Linux and Android only. Elsewhere it returns [`io::ErrorKind::Unsupported`]: FreeBSD's
/// `struct tcp_info`, macOS's `TCP_CONNECTION_INFO` and Windows' `SIO_TCP_INFO` differ and are
/// not read.
///
/// # Errors
///
/// [`io::ErrorKind::Unsupported`] on other systems; [`io::ErrorKind::InvalidInput`] for a socket
/// that is not TCP.
pub fn tcp_info(socket: &impl AsSocketDescriptor) -> io::Result<TcpInfo> {
    imp::tcp_info(borrow(socket)).map_err(|e| option_error(e, "TCP_INFO", "read"))
}

/// Takes (and clears) the socket's pending error, `SO_ERROR`.
#[cfg(feature = "tokio")]
pub(crate) fn take_error(socket: &impl AsSocketDescriptor) -> io::Result<Option<io::Error>> {
    SockRef::from(socket).take_error()
}

fn option_error(e: io::Error, option: &str, verb: &str) -> io::Error {
    let not_tcp = e.raw_os_error().is_some_and(imp::is_not_tcp);
    let not_socket = e.raw_os_error().is_some_and(imp::is_not_socket);
    if not_tcp {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot {verb} {option}: not a TCP socket ({e}); keepalive policies apply to TCP sockets only"
            ),
        )
    } else if not_socket {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot {verb} {option}: the descriptor is not a socket ({e})"),
        )
    } else {
        // Keep the OS error as it is, so `raw_os_error()` still works.
        e
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;

    /// `coarse_now` reads a real, monotonic clock: not zero, never backwards, and it advances
    /// with `Instant` within the coarse clock's resolution (at most 10 ms, HZ=100).
    #[test]
    fn coarse_clock_is_monotonic_and_tracks_instant() {
        let (a, start) = (coarse_now(), std::time::Instant::now());
        assert!(a > Duration::ZERO);
        std::thread::sleep(Duration::from_millis(50));
        let b = coarse_now();
        let real = start.elapsed();
        assert!(b >= a);
        let coarse = b - a;
        assert!(
            coarse + Duration::from_millis(20) >= real
                && coarse <= real + Duration::from_millis(20),
            "coarse {coarse:?} against {real:?}"
        );
    }
}
