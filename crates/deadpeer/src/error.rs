//! The kernel's verdict on a connection: [`DeadPeer`] and its [`Cause`].

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::KeepalivePolicy;

/// Why the kernel declared a peer dead: what the kernel did, read from the errno and `TCP_INFO`
/// at the moment of death (see docs/kernel.md, "How connections die", for the measurements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// The keepalive probes went unanswered (`ETIMEDOUT` on an idle connection): the peer
    /// vanished, crashed without a trace, or a middlebox dropped the flow.
    KeepaliveTimeout,
    /// Sent data stayed unacknowledged until the user timeout (or `tcp_retries2`) ran out
    /// (`ETIMEDOUT` with retransmissions, or zero-window probes that went unanswered).
    RetransmitTimeout,
    /// The peer was alive but stopped reading: its receive window stayed at zero, its kernel
    /// answered every zero-window probe, and the user timeout ran out (`ETIMEDOUT` with a zero
    /// send window). The user timeout bounds how long a peer may refuse data as well as how long
    /// it may stay silent; with it off, such a connection is never killed.
    Stalled,
    /// The peer answered with a reset (`ECONNRESET`), for example after it rebooted and forgot
    /// the connection; or it had closed its side (FIN) and then reset or forgot the connection
    /// (`EPIPE`).
    Reset,
    /// The network said the peer cannot be reached while data was in flight: ICMP host or
    /// network unreachable, or (IPv4) administratively prohibited (`EHOSTUNREACH`,
    /// `ENETUNREACH`, `EHOSTDOWN`, `ENONET`).
    Unreachable,
    /// Something on the path refused the connection's packets while data was in flight: ICMP
    /// port or protocol unreachable, as a firewall's `reject` sends by default, or (IPv6)
    /// administratively prohibited (`ECONNREFUSED`, `ENOPROTOOPT`, `EACCES`).
    Refused,
    /// The kernel closed the connection for a reason not listed above, or the reason was
    /// consumed elsewhere before deadpeer could read it; [`DeadPeer::raw_os_error`] says what
    /// the kernel reported.
    Aborted,
}

impl Cause {
    /// Every cause, in declaration order.
    pub const ALL: [Cause; 7] = [
        Cause::KeepaliveTimeout,
        Cause::RetransmitTimeout,
        Cause::Stalled,
        Cause::Reset,
        Cause::Unreachable,
        Cause::Refused,
        Cause::Aborted,
    ];

    /// The cause in snake case, as the `cause` field of the `dead peer detected` event gives it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::KeepaliveTimeout => "keepalive_timeout",
            Cause::RetransmitTimeout => "retransmit_timeout",
            Cause::Stalled => "stalled",
            Cause::Reset => "reset",
            Cause::Unreachable => "unreachable",
            Cause::Refused => "refused",
            Cause::Aborted => "aborted",
        }
    }

    /// The [`io::ErrorKind`] of the [`io::Error`] that carries a death of this cause:
    /// `TimedOut` for the three timeouts, `ConnectionReset`, `HostUnreachable`,
    /// `ConnectionRefused`, `ConnectionAborted`. (`ENETUNREACH` keeps `NetworkUnreachable`.)
    pub fn io_error_kind(&self) -> io::ErrorKind {
        match self {
            Cause::KeepaliveTimeout | Cause::RetransmitTimeout | Cause::Stalled => {
                io::ErrorKind::TimedOut
            }
            Cause::Reset => io::ErrorKind::ConnectionReset,
            Cause::Unreachable => io::ErrorKind::HostUnreachable,
            Cause::Refused => io::ErrorKind::ConnectionRefused,
            Cause::Aborted => io::ErrorKind::ConnectionAborted,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::KeepaliveTimeout => "keepalive timeout",
            Cause::RetransmitTimeout => "retransmit timeout",
            Cause::Stalled => "stalled",
            Cause::Reset => "reset",
            Cause::Unreachable => "unreachable",
            Cause::Refused => "refused",
            Cause::Aborted => "aborted",
        })
    }
}

/// The kernel declared the peer of a connection dead.
///
/// Every read and write on a [`KeepaliveStream`](crate::KeepaliveStream) after the death returns
/// this same error, wrapped in an [`io::Error`] whose [`kind`](io::Error::kind) matches the cause
/// (`TimedOut`, `ConnectionReset` or `HostUnreachable`). Find it again with
/// [`DeadPeer::from_io`], or with [`DeadPeer::find`] through hyper's and tonic's error chains.
///
/// Cloning is cheap: the details are shared.
///
/// ```
/// use std::io;
/// use deadpeer::{Cause, DeadPeer};
///
/// fn is_zombie(err: &io::Error) -> bool {
///     matches!(DeadPeer::from_io(err).map(DeadPeer::cause), Some(Cause::KeepaliveTimeout))
/// }
/// # assert!(!is_zombie(&io::Error::from(io::ErrorKind::TimedOut)));
/// ```
#[derive(Clone)]
pub struct DeadPeer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cause: Cause,
    peer_addr: Option<SocketAddr>,
    local_addr: Option<SocketAddr>,
    connected_for: Duration,
    idle_for: Option<Duration>,
    policy: Option<KeepalivePolicy>,
    raw_os_error: Option<i32>,
}

impl DeadPeer {
    #[allow(clippy::too_many_arguments)]
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn new(
        cause: Cause,
        peer_addr: Option<SocketAddr>,
        local_addr: Option<SocketAddr>,
        connected_for: Duration,
        idle_for: Option<Duration>,
        policy: Option<KeepalivePolicy>,
        raw_os_error: Option<i32>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cause,
                peer_addr,
                local_addr,
                connected_for,
                idle_for,
                policy,
                raw_os_error,
            }),
        }
    }

    /// Why the peer was declared dead.
    pub fn cause(&self) -> Cause {
        self.inner.cause
    }

    /// The peer's address, captured when the connection was wrapped.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr
    }

    /// The local address, captured when the connection was wrapped.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local_addr
    }

    /// How long the connection lived, from when it was wrapped until the death was seen.
    pub fn connected_for(&self) -> Duration {
        self.inner.connected_for
    }

    /// How long nothing had been received from the peer when it was declared dead
    /// (`tcpi_last_data_recv`); `None` where `TCP_INFO` is not available.
    pub fn idle_for(&self) -> Option<Duration> {
        self.inner.idle_for
    }

    /// The keepalive policy the connection ran under, when deadpeer applied or verified one.
    pub fn policy(&self) -> Option<&KeepalivePolicy> {
        self.inner.policy.as_ref()
    }

    /// The OS error the kernel reported (`ETIMEDOUT`, `ECONNRESET`, `EHOSTUNREACH`, …).
    pub fn raw_os_error(&self) -> Option<i32> {
        self.inner.raw_os_error
    }

    /// The `DeadPeer` inside an [`io::Error`] returned by a deadpeer stream.
    pub fn from_io(err: &io::Error) -> Option<&DeadPeer> {
        err.get_ref()?.downcast_ref::<DeadPeer>()
    }

    /// The first `DeadPeer` in an error's [`source`](Error::source) chain, looking inside
    /// [`io::Error`]s on the way. Use it on the errors of hyper, hyper-util's `Client` and tonic,
    /// which wrap the connection's I/O error.
    ///
    /// Some layers keep only the kind and the message of an I/O error: h2, and so tonic and
    /// HTTP/2 clients, rebuild it as a new `io::Error` holding a string. Where no typed
    /// `DeadPeer` is found, `find` reads one back from such a message, which `Display` writes in
    /// a stable format (durations to the millisecond).
    ///
    /// ```
    /// use std::io;
    /// use deadpeer::DeadPeer;
    ///
    /// #[derive(Debug)]
    /// struct Wrapper(io::Error);
    /// impl std::fmt::Display for Wrapper {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("request failed") }
    /// }
    /// impl std::error::Error for Wrapper {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> { Some(&self.0) }
    /// }
    ///
    /// let plain = Wrapper(io::Error::from(io::ErrorKind::TimedOut));
    /// assert!(DeadPeer::find(&plain).is_none());
    ///
    /// // What h2 makes of a deadpeer error: the kind and the message.
    /// let text = "dead peer 10.0.0.2:443: reset (connected 1.500s, os error 104)";
    /// let h2_like = Wrapper(io::Error::new(io::ErrorKind::ConnectionReset, text));
    /// let dead = DeadPeer::find(&h2_like).expect("read back");
    /// assert_eq!(dead.cause(), deadpeer::Cause::Reset);
    /// assert_eq!(dead.raw_os_error(), Some(104));
    /// ```
    pub fn find(err: &(dyn Error + 'static)) -> Option<DeadPeer> {
        Self::find_typed(err)
            .cloned()
            .or_else(|| Self::find_message(err))
    }

    fn find_typed<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a DeadPeer> {
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(dead) = e.downcast_ref::<DeadPeer>() {
                return Some(dead);
            }
            // `io::Error::source` skips the error it wraps, so look inside explicitly.
            if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
                if let Some(dead) = Self::find_typed(inner) {
                    return Some(dead);
                }
            }
            current = e.source();
        }
        None
    }

    fn find_message(err: &(dyn Error + 'static)) -> Option<DeadPeer> {
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
                if let Some(dead) = parse_display(&inner.to_string()) {
                    return Some(dead);
                }
            }
            if let Some(dead) = parse_display(&e.to_string()) {
                return Some(dead);
            }
            current = e.source();
        }
        None
    }
}

impl fmt::Debug for DeadPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("DeadPeer")
            .field("cause", &i.cause)
            .field("peer_addr", &i.peer_addr)
            .field("local_addr", &i.local_addr)
            .field("connected_for", &i.connected_for)
            .field("idle_for", &i.idle_for)
            .field("policy", &i.policy.map(|p| p.to_string()))
            .field("raw_os_error", &i.raw_os_error)
            .finish()
    }
}

impl fmt::Display for DeadPeer {
    /// `dead peer 10.0.0.2:443: keepalive timeout after 4.084s without data (connected 12.000s,
    /// local 10.0.0.1:50000, policy idle=1s,interval=1s,probes=3,user_timeout=auto, os error 110)`.
    ///
    /// The format is stable: [`DeadPeer::find`] reads it back when a library kept only the
    /// message of the I/O error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.write_str("dead peer")?;
        if let Some(peer) = i.peer_addr {
            write!(f, " {peer}")?;
        }
        write!(f, ": {}", i.cause)?;
        if let Some(idle) = i.idle_for {
            write!(f, " after {:.3}s without data", idle.as_secs_f64())?;
        }
        write!(f, " (connected {:.3}s", i.connected_for.as_secs_f64())?;
        if let Some(local) = i.local_addr {
            write!(f, ", local {local}")?;
        }
        if let Some(p) = &i.policy {
            write!(f, ", policy {p}")?;
        }
        if let Some(errno) = i.raw_os_error {
            write!(f, ", os error {errno}")?;
        }
        f.write_str(")")
    }
}

/// Reads back what `Display` wrote; `None` for any other text.
fn parse_display(text: &str) -> Option<DeadPeer> {
    let rest = text.strip_prefix("dead peer")?;
    let (head, tail) = rest.split_once(": ")?;
    let peer_addr = match head.trim() {
        "" => None,
        addr => Some(addr.parse().ok()?),
    };
    let (main, details) = tail.split_once(" (")?;
    let details = details.strip_suffix(')')?;
    let (cause, idle_for) = match main.split_once(" after ") {
        Some((cause, idle)) => (cause, Some(secs(idle.strip_suffix(" without data")?)?)),
        None => (main, None),
    };
    let cause = *Cause::ALL.iter().find(|c| c.to_string() == cause)?;
    let mut parts = details.split(", ");
    let connected_for = secs(parts.next()?.strip_prefix("connected ")?)?;
    let (mut local_addr, mut policy, mut raw_os_error) = (None, None, None);
    for part in parts {
        if let Some(v) = part.strip_prefix("local ") {
            local_addr = Some(v.parse().ok()?);
        } else if let Some(v) = part.strip_prefix("policy ") {
            policy = Some(v.parse().ok()?);
        } else if let Some(v) = part.strip_prefix("os error ") {
            raw_os_error = Some(v.parse().ok()?);
        } else {
            return None;
        }
    }
    Some(DeadPeer::new(
        cause,
        peer_addr,
        local_addr,
        connected_for,
        idle_for,
        policy,
        raw_os_error,
    ))
}

fn secs(text: &str) -> Option<Duration> {
    let value: f64 = text.strip_suffix('s')?.parse().ok()?;
    Duration::try_from_secs_f64(value).ok()
}

impl Error for DeadPeer {}

impl From<DeadPeer> for io::Error {
    /// An `io::Error` that carries the `DeadPeer`, of the cause's [kind](Cause::io_error_kind)
    /// (`NetworkUnreachable` for `ENETUNREACH`).
    fn from(dead: DeadPeer) -> Self {
        let kind = match dead.raw_os_error() {
            Some(libc::ENETUNREACH) => io::ErrorKind::NetworkUnreachable,
            _ => dead.cause().io_error_kind(),
        };
        io::Error::new(kind, dead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeadPeer {
        DeadPeer::new(
            Cause::Reset,
            Some("10.0.0.2:80".parse().expect("addr")),
            None,
            Duration::from_secs(3),
            Some(Duration::from_millis(1500)),
            Some(KeepalivePolicy::FAST),
            Some(libc::ECONNRESET),
        )
    }

    #[test]
    fn network_unreachable_keeps_its_kind() {
        let dead = DeadPeer::new(
            Cause::Unreachable,
            None,
            None,
            Duration::ZERO,
            None,
            None,
            Some(libc::ENETUNREACH),
        );
        assert_eq!(
            io::Error::from(dead).kind(),
            io::ErrorKind::NetworkUnreachable
        );
    }

    #[test]
    fn io_error_keeps_kind_and_payload() {
        let e = io::Error::from(sample());
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(
            DeadPeer::from_io(&e).map(DeadPeer::cause),
            Some(Cause::Reset)
        );
    }

    #[derive(Debug)]
    struct Outer(io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn find_walks_through_wrappers() {
        let nested = io::Error::other(Outer(io::Error::from(sample())));
        let outer = Outer(nested);
        let found = DeadPeer::find(&outer).expect("found");
        assert_eq!(found.raw_os_error(), Some(libc::ECONNRESET));
        assert!(DeadPeer::find(&Outer(io::Error::from(io::ErrorKind::TimedOut))).is_none());
    }

    #[test]
    fn display_reads_back() {
        let dead = sample();
        let back = parse_display(&dead.to_string()).expect("parses");
        assert_eq!(back.to_string(), dead.to_string());
        assert_eq!(back.cause(), Cause::Reset);
        assert_eq!(back.policy(), Some(&KeepalivePolicy::FAST));
        assert_eq!(back.idle_for(), Some(Duration::from_millis(1500)));
        let v6 = DeadPeer::new(
            Cause::KeepaliveTimeout,
            Some("[::1]:8080".parse().expect("addr")),
            Some("[::1]:50000".parse().expect("addr")),
            Duration::from_millis(12_345),
            None,
            None,
            None,
        );
        assert_eq!(
            parse_display(&v6.to_string()).expect("parses").local_addr(),
            v6.local_addr()
        );
        assert!(parse_display("dead peer: sleepy (connected 1s)").is_none());
        assert!(parse_display("connection reset by peer").is_none());
    }

    #[test]
    fn find_reads_back_a_message_only_error() {
        let text = sample().to_string();
        let outer = Outer(io::Error::new(io::ErrorKind::ConnectionReset, text));
        let found = DeadPeer::find(&outer).expect("found");
        assert_eq!(found.peer_addr(), sample().peer_addr());
        assert_eq!(found.raw_os_error(), Some(libc::ECONNRESET));
    }

    #[test]
    fn display_names_peer_cause_and_policy() {
        let s = sample().to_string();
        assert!(
            s.starts_with("dead peer 10.0.0.2:80: reset after 1.500s"),
            "{s}"
        );
        assert!(
            s.contains("policy idle=15s,interval=5s,probes=3,user_timeout=auto"),
            "{s}"
        );
    }
}
