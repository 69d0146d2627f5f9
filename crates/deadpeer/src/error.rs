//! The kernel's verdict on a connection: [`DeadPeer`] and its [`Cause`].

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::ending::Ending;
use crate::policy::KeepalivePolicy;
use crate::sys::TcpInfo;

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
    /// The kernel's verdict on a connection whose socket reported the OS error `errno`, with its
    /// `TCP_INFO` read after the error where there is one: the rules a
    /// [`KeepaliveStream`] applies, for tools that see deaths elsewhere
    /// (a tracepoint, another process's socket).
    ///
    /// With `info`, the connection is dead only in state `CLOSE`, and the errno names the cause
    /// (any errno, even one not listed, is then a death: [`Aborted`](Cause::Aborted)). Without
    /// it, only the errors that a dead connection alone returns count; a timeout is then
    /// [`KeepaliveTimeout`](Cause::KeepaliveTimeout), as nothing tells probes from
    /// retransmissions. The table per OS is in the crate docs, "Platforms".
    ///
    /// ```
    /// use deadpeer::Cause;
    /// # #[cfg(target_os = "linux")] {
    /// assert_eq!(Cause::from_os_error(104, None), Some(Cause::Reset)); // ECONNRESET
    /// assert_eq!(Cause::from_os_error(11, None), None); // EAGAIN: not a death
    /// # }
    /// ```
    ///
    #[cfg_attr(feature = "tokio", doc = "[`KeepaliveStream`]: crate::KeepaliveStream")]
    #[cfg_attr(not(feature = "tokio"), doc = docs_rs!("`KeepaliveStream`", "stream/struct.KeepaliveStream.html"))]
    pub fn from_os_error(errno: i32, info: Option<&crate::TcpInfo>) -> Option<Cause> {
        crate::engine::classify::classify(errno, info)
    }

    /// What this cause of death says happened to the peer, given `TCP_INFO` at the moment of
    /// death where there is one (the table is on [`Ending`]): a reset is
    /// [`Forgot`](Ending::Forgot) when it answered a probe or retransmission of ours, else
    /// [`Aborted`](Ending::Aborted); the timeouts and `Unreachable` are
    /// [`Vanished`](Ending::Vanished).
    pub fn ending(self, info: Option<&crate::TcpInfo>) -> Ending {
        crate::engine::classify::ending_of(self, info)
    }

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

    /// The cause in snake case, as the `error.type` field of the `dead peer detected` event and
    /// the `error.type` label of the [metrics](crate#features) give it.
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
/// Every read and write on a [`KeepaliveStream`] after the death returns
/// this same error, wrapped in an [`io::Error`] whose [`kind`](io::Error::kind) is the cause's
/// ([`Cause::io_error_kind`]). Find it again with [`DeadPeer::from_io`], with
/// [`DeadPeer::find`] through hyper's, hyper-util's and tower's error chains, or, where a layer
/// kept only the text (h2, tonic), with [`DeadPeer::recover`].
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
///
#[cfg_attr(feature = "tokio", doc = "[`KeepaliveStream`]: crate::KeepaliveStream")]
#[cfg_attr(not(feature = "tokio"), doc = docs_rs!("`KeepaliveStream`", "stream/struct.KeepaliveStream.html"))]
#[derive(Clone)]
pub struct DeadPeer {
    inner: Arc<Details>,
}

/// What a [`DeadPeer`] says, by name: what the engine gives [`DeadPeer::new`].
#[derive(Debug)]
pub(crate) struct Details {
    pub(crate) cause: Cause,
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) connected_for: Duration,
    pub(crate) idle_for: Option<Duration>,
    pub(crate) policy: Option<KeepalivePolicy>,
    pub(crate) raw_os_error: Option<i32>,
    pub(crate) ending: Ending,
    pub(crate) tcp_info: Option<TcpInfo>,
}

impl DeadPeer {
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn new(details: Details) -> Self {
        Self {
            inner: Arc::new(details),
        }
    }

    /// Why the peer was declared dead.
    pub fn cause(&self) -> Cause {
        self.inner.cause
    }

    /// What happened to the peer (see [`Ending`]): only [`Ending::is_death`] endings are
    /// reported at WARN and counted as deaths; an application's abort
    /// ([`Ending::Aborted`]) is a `DeadPeer` on the stream's reads and writes all the same.
    pub fn ending(&self) -> Ending {
        self.inner.ending
    }

    /// `TCP_INFO` at the moment of death (state `CLOSE`): the round-trip time and
    /// retransmission timeout, the probes and retransmissions outstanding, the time since data
    /// was last received and sent, the peer's window. `None` where `TCP_INFO` is not available
    /// (off Linux and Android), and for a socket that was already closed when it was wrapped.
    ///
    /// After an RST the kernel has purged the write queue: `unacked` and `backoff` read 0 then.
    pub fn tcp_info(&self) -> Option<&TcpInfo> {
        self.inner.tcp_info.as_ref()
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
    pub fn policy(&self) -> Option<KeepalivePolicy> {
        self.inner.policy
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
    /// [`io::Error`]s on the way: the typed value a deadpeer stream returned, through hyper's,
    /// hyper-util's and tower's errors.
    ///
    /// Only a typed value is found. Some layers keep nothing but the text of an I/O error (h2,
    /// and so tonic and HTTP/2 clients); for those see [`recover`](Self::recover).
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
    /// // Text is not a death, however it reads.
    /// let text = Wrapper(io::Error::other("dead peer 10.0.0.2:443 from 10.0.0.1:5000: reset (os error 104)"));
    /// assert!(DeadPeer::find(&text).is_none());
    /// ```
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a DeadPeer> {
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(dead) = e.downcast_ref::<DeadPeer>() {
                return Some(dead);
            }
            // `io::Error::source` skips the error it wraps, so look inside explicitly.
            if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
                if let Some(dead) = Self::find(inner) {
                    return Some(dead);
                }
            }
            current = e.source();
        }
        None
    }

    /// Recovers a death of **this process's** connections from an error that kept only its text,
    /// as h2 (so tonic and HTTP/2 clients) does with I/O errors.
    ///
    /// It looks for a message in the chain that is, to the letter, the [`Display`](fmt::Display) text of one of
    /// the last 256 deaths deadpeer latched in this process, and returns that death. The text
    /// names both ends of the connection (`dead peer PEER from LOCAL: …`), and a remote peer
    /// cannot know the local end of a connection of ours to a third party, so a message that
    /// came from elsewhere (a remote server's own dead-peer report, say) is not taken for ours.
    ///
    /// It is lossy: a death older than the last 256, a death whose addresses were unknown, or a
    /// message a layer reworded, is not found. Prefer [`find`](Self::find) where the type
    /// survives, and a [`Liveness`] where you can hold one.
    ///
    #[cfg_attr(feature = "tokio", doc = "[`Liveness`]: crate::Liveness")]
    #[cfg_attr(not(feature = "tokio"), doc = docs_rs!("`Liveness`", "liveness/struct.Liveness.html"))]
    pub fn recover(err: &(dyn Error + 'static)) -> Option<DeadPeer> {
        if let Some(dead) = Self::find(err) {
            return Some(dead.clone());
        }
        let mut current = Some(err);
        while let Some(e) = current {
            if let Some(dead) = crate::engine::recent::lookup(&e.to_string()) {
                return Some(dead);
            }
            if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
                if let Some(dead) = crate::engine::recent::lookup(&inner.to_string()) {
                    return Some(dead);
                }
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
            .field("ending", &i.ending)
            .field("peer_addr", &i.peer_addr)
            .field("local_addr", &i.local_addr)
            .field("connected_for", &i.connected_for)
            .field("idle_for", &i.idle_for)
            .field("policy", &i.policy.map(|p| p.to_string()))
            .field("raw_os_error", &i.raw_os_error)
            .field("tcp_info", &i.tcp_info)
            .finish()
    }
}

impl fmt::Display for DeadPeer {
    /// `dead peer 10.0.0.2:443 from 10.0.0.1:50000: keepalive timeout (os error 110)`; an
    /// unknown address is `-`. The details are in the accessors and the `dead peer detected`
    /// event.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let addr = |a: Option<SocketAddr>| a.map_or_else(|| "-".to_owned(), |a| a.to_string());
        write!(
            f,
            "dead peer {} from {}: {}",
            addr(i.peer_addr),
            addr(i.local_addr),
            i.cause
        )?;
        if let Some(errno) = i.raw_os_error {
            write!(f, " (os error {errno})")?;
        }
        Ok(())
    }
}

impl Error for DeadPeer {}

impl From<DeadPeer> for io::Error {
    /// An `io::Error` that carries the `DeadPeer`, of the cause's [kind](Cause::io_error_kind)
    /// (`NetworkUnreachable` for `ENETUNREACH`).
    fn from(dead: DeadPeer) -> Self {
        let os_kind = dead
            .raw_os_error()
            .map(|e| io::Error::from_raw_os_error(e).kind());
        let kind = match os_kind {
            Some(io::ErrorKind::NetworkUnreachable) => io::ErrorKind::NetworkUnreachable,
            _ => dead.cause().io_error_kind(),
        };
        io::Error::new(kind, dead)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sample() -> DeadPeer {
        DeadPeer::new(Details {
            cause: Cause::Reset,
            peer_addr: Some("10.0.0.2:80".parse().expect("addr")),
            local_addr: Some("10.0.0.1:50000".parse().expect("addr")),
            connected_for: Duration::from_secs(3),
            idle_for: Some(Duration::from_millis(1500)),
            policy: Some(KeepalivePolicy::FAST),
            raw_os_error: Some(libc::ECONNRESET),
            ending: Ending::Aborted,
            tcp_info: None,
        })
    }

    #[test]
    fn network_unreachable_keeps_its_kind() {
        let dead = DeadPeer::new(Details {
            cause: Cause::Unreachable,
            peer_addr: None,
            local_addr: None,
            connected_for: Duration::ZERO,
            idle_for: None,
            policy: None,
            raw_os_error: Some(libc::ENETUNREACH),
            ending: Ending::Vanished,
            tcp_info: None,
        });
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

    /// An error that wraps an `io::Error` as its `source`, as hyper's and reqwest's errors do.
    #[derive(Debug)]
    pub(crate) struct Outer(pub(crate) io::Error);
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
    fn display_is_short_and_names_both_ends() {
        assert_eq!(
            sample().to_string(),
            "dead peer 10.0.0.2:80 from 10.0.0.1:50000: reset (os error 104)"
        );
    }

    #[test]
    fn recover_finds_only_deaths_of_this_process() {
        let dead = sample();
        let text_only = Outer(io::Error::new(
            io::ErrorKind::ConnectionReset,
            dead.to_string(),
        ));
        assert!(DeadPeer::find(&text_only).is_none(), "find is typed only");
        assert!(
            DeadPeer::recover(&text_only).is_none(),
            "not latched here yet"
        );
        crate::engine::recent::remember(&dead);
        let back = DeadPeer::recover(&text_only).expect("recovered");
        assert_eq!(back.connected_for(), dead.connected_for());
        // A forged report about another connection (other local end) is not ours.
        let forged = Outer(io::Error::other(
            "dead peer 10.0.0.2:80 from 10.0.0.9:50000: reset (os error 104)",
        ));
        assert!(DeadPeer::recover(&forged).is_none());
    }
}
