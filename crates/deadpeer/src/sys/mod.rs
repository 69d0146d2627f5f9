//! The only code that touches socket options, `TCP_INFO` and `cfg(target_os)`.
//!
//! Portable work goes through [socket2](https://docs.rs/socket2). The FFI is `getsockopt(TCP_INFO)`
//! in [`tcp_info`] and the error-only epoll of the reaper in `watch`. Each function documents
//! which socket options it sets or reads on which OS.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

#[cfg(feature = "tokio")]
use crate::error::Cause;
use crate::policy::KeepalivePolicy;

#[cfg(all(feature = "tokio", any(target_os = "linux", target_os = "android")))]
mod watch;
#[cfg(all(
    feature = "tokio",
    not(any(target_os = "linux", target_os = "android"))
))]
#[path = "watch_none.rs"]
mod watch;
#[cfg(feature = "tokio")]
pub(crate) use watch::{OnError, Report, WatchedFd};

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
        let probes = match self.user_timeout {
            Some(ut) if !self.interval.is_zero() => {
                let after_idle = ut.saturating_sub(self.idle);
                let ticks = after_idle
                    .as_nanos()
                    .div_ceil(self.interval.as_nanos())
                    .max(1);
                u32::try_from(ticks).unwrap_or(u32::MAX)
            }
            _ => self.probes,
        };
        self.idle
            .saturating_add(self.interval.saturating_mul(probes))
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
/// `TCP_KEEPCNT` and `TCP_USER_TIMEOUT` are inherited. False elsewhere: on macOS and the BSDs,
/// keepalive on a listening socket is reported to kill the listener, so the policy is applied to
/// each accepted socket instead.
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
/// | option | Linux, Android | macOS, iOS | FreeBSD, NetBSD, illumos |
/// |---|---|---|---|
/// | `SO_KEEPALIVE` | on | on | on |
/// | idle | `TCP_KEEPIDLE`, s | `TCP_KEEPALIVE`, s | `TCP_KEEPIDLE`, s |
/// | interval | `TCP_KEEPINTVL`, s | `TCP_KEEPINTVL`, s | `TCP_KEEPINTVL`, s |
/// | probes | `TCP_KEEPCNT` | `TCP_KEEPCNT` | `TCP_KEEPCNT` |
/// | user timeout | `TCP_USER_TIMEOUT`, ms (0 for `Off`) | not set | not set |
///
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
pub fn apply(socket: &impl AsFd, policy: KeepalivePolicy) -> io::Result<()> {
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
/// # Errors
///
/// As for [`apply`]: a socket that is not TCP gives [`io::ErrorKind::InvalidInput`].
pub fn inspect(socket: &impl AsFd) -> io::Result<SocketKeepalive> {
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
/// # Errors
///
/// [`io::ErrorKind::Unsupported`] on systems other than Linux and Android;
/// [`io::ErrorKind::InvalidInput`] for a socket that is not TCP.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
pub fn tcp_info(socket: &impl AsFd) -> io::Result<TcpInfo> {
    use std::mem::{MaybeUninit, size_of};
    use std::os::fd::AsRawFd;

    let fd = socket.as_fd();
    let mut raw = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is a descriptor borrowed for the duration of the call; `raw` points to
    // `len` writable bytes; the kernel writes at most `len` bytes and stores the count in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            raw.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(option_error(io::Error::last_os_error(), "TCP_INFO", "read"));
    }
    // SAFETY: `tcp_info` is plain integers, so the zeroed bytes are a valid value, and the kernel
    // overwrote a prefix of them with another valid value (older kernels fill less).
    let raw = unsafe { raw.assume_init() };
    let ms = |v: u32| Duration::from_millis(v.into());
    let has_snd_wnd =
        len as usize >= std::mem::offset_of!(libc::tcp_info, tcpi_snd_wnd) + size_of::<u32>();
    Ok(TcpInfo {
        state: raw.tcpi_state,
        probes: raw.tcpi_probes,
        backoff: raw.tcpi_backoff,
        retransmits: raw.tcpi_retransmits,
        unacked: raw.tcpi_unacked,
        last_data_recv: ms(raw.tcpi_last_data_recv),
        last_ack_recv: ms(raw.tcpi_last_ack_recv),
        rtt: Duration::from_micros(raw.tcpi_rtt.into()),
        rto: Duration::from_micros(raw.tcpi_rto.into()),
        snd_wnd: has_snd_wnd.then_some(raw.tcpi_snd_wnd),
    })
}

/// Reads `TCP_INFO`: not available on this OS.
///
/// # Errors
///
/// Always [`io::ErrorKind::Unsupported`].
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub fn tcp_info(_socket: &impl AsFd) -> io::Result<TcpInfo> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "TCP_INFO is only available on Linux and Android",
    ))
}

/// The kernel's verdict on a connection that reported `errno`: `Some(cause)` when the kernel
/// closed it, `None` when the error leaves the connection alive (a transient error, or one of the
/// application's own making).
///
/// With `TCP_INFO` (Linux), a connection is dead when its state is `CLOSE`; the errno then names
/// the cause (docs/kernel.md, "How connections die"):
///
/// | errno | cause |
/// |---|---|
/// | `ETIMEDOUT` | [`Stalled`](Cause::Stalled) when the peer's window is 0 and its last probe was answered; [`RetransmitTimeout`](Cause::RetransmitTimeout) with retransmissions, backoff, unacknowledged data or a zero window; otherwise [`KeepaliveTimeout`](Cause::KeepaliveTimeout) |
/// | `ECONNRESET`, `EPIPE` | [`Reset`](Cause::Reset) (`EPIPE`: reset after the peer's FIN) |
/// | `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`, `ENONET`, `EOPNOTSUPP` | [`Unreachable`](Cause::Unreachable) |
/// | `ECONNREFUSED`, `ENOPROTOOPT`, `EACCES` | [`Refused`](Cause::Refused) |
/// | anything else | [`Aborted`](Cause::Aborted) |
///
/// Without `TCP_INFO`, only the errnos that a closed connection alone returns count.
#[cfg(feature = "tokio")]
pub(crate) fn classify(errno: i32, info: Option<&TcpInfo>) -> Option<Cause> {
    match info {
        Some(info) if info.state != TcpInfo::CLOSE => None,
        Some(info) => Some(cause_of(errno, Some(info))),
        None => match errno {
            libc::ETIMEDOUT
            | libc::ECONNRESET
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::ECONNREFUSED => Some(cause_of(errno, None)),
            _ => None,
        },
    }
}

#[cfg(feature = "tokio")]
pub(crate) fn cause_of(errno: i32, info: Option<&TcpInfo>) -> Cause {
    match errno {
        libc::ETIMEDOUT => match info {
            Some(i) if i.snd_wnd == Some(0) && i.probes == 0 => Cause::Stalled,
            Some(i)
                if i.retransmits > 0 || i.backoff > 0 || i.unacked > 0 || i.snd_wnd == Some(0) =>
            {
                Cause::RetransmitTimeout
            }
            _ => Cause::KeepaliveTimeout,
        },
        libc::ECONNRESET | libc::EPIPE => Cause::Reset,
        libc::EHOSTUNREACH
        | libc::ENETUNREACH
        | libc::EHOSTDOWN
        | libc::ENONET
        | libc::EOPNOTSUPP => Cause::Unreachable,
        libc::ECONNREFUSED | libc::ENOPROTOOPT | libc::EACCES => Cause::Refused,
        _ => Cause::Aborted,
    }
}

/// Whether `errno` is what a socket returns *after* the kernel closed it, rather than the reason
/// it closed: the reason, if still pending, is in `SO_ERROR`.
#[cfg(feature = "tokio")]
pub(crate) fn is_aftermath(errno: i32) -> bool {
    matches!(errno, libc::EPIPE | libc::ENOTCONN)
}

/// A monotonic timestamp from the kernel's coarse clock (`CLOCK_MONOTONIC_COARSE`: the time of
/// the last timer tick, 1–10 ms resolution), read without a hardware clock access: a few
/// nanoseconds, against about 25 for `Instant::now`. For `connected_for`, which needs no finer
/// resolution, on the accept path.
#[cfg(feature = "tokio")]
#[allow(unsafe_code)]
pub(crate) fn coarse_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;
    // SAFETY: `ts` is a valid, writable `timespec` for the duration of the call; the clock id is
    // a constant the platform defines. On failure (impossible for these ids) `ts` stays zero.
    let rc = unsafe { libc::clock_gettime(CLOCK, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Takes (and clears) the socket's pending error, `SO_ERROR`.
#[cfg(feature = "tokio")]
pub(crate) fn take_error(socket: &impl AsFd) -> io::Result<Option<io::Error>> {
    SockRef::from(socket).take_error()
}

fn option_error(e: io::Error, option: &str, verb: &str) -> io::Error {
    let not_tcp = matches!(e.raw_os_error(), Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP));
    let not_socket = e.raw_os_error() == Some(libc::ENOTSOCK);
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
