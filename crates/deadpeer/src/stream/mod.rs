//! [`KeepaliveStream`]: a TCP stream whose dead peer surfaces as a typed, latched [`DeadPeer`]
//! error, and [`connect`], which applies a policy before the SYN.

mod guarded;
mod split;

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream, ToSocketAddrs};

use self::guarded::{impl_guarded_read, impl_guarded_write};
pub use self::split::{OwnedReadHalf, OwnedWriteHalf, ReuniteError};
use crate::engine::{Meta, Owner};
use crate::liveness::Liveness;
use crate::policy::KeepalivePolicy;
use crate::sys::{self, SocketKeepalive, TcpInfo};
use crate::{DeadPeer, report};

/// A TCP connection under a keepalive policy, whose dead peer surfaces as a [`DeadPeer`].
///
/// When the kernel kills the connection (`TCP_INFO` state `CLOSE` after an error, see
/// [`Cause`](crate::Cause)), the stream classifies the death from the errno and `TCP_INFO`,
/// reports it once (WARN `dead peer detected` for a death, DEBUG `connection ended` for an
/// application's abort: see [`Ending`](crate::Ending)), and latches it: that read or write, and
/// every later read, write, flush and shutdown, returns the same `DeadPeer` (as an
/// [`io::Error`] of the cause's kind) instead of EOF or `EPIPE`. A FIN stays a plain EOF (and
/// the ending [`Closed`](crate::Ending::Closed) for [`Liveness::gone`](crate::Liveness::gone));
/// other errors pass through unchanged.
///
/// Reads and writes add one atomic load; the EOF that ends a connection adds one `TCP_INFO`
/// read. Put TLS, HTTP or anything else *over* the stream: a death then surfaces through them as
/// the same typed error. For hyper, wrap it in `hyper_util::rt::TokioIo`.
///
/// # Examples
///
/// ```
/// use deadpeer::{KeepaliveListener, KeepalivePolicy};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
/// let mut client = deadpeer::connect(listener.local_addr()?, KeepalivePolicy::FAST).await?;
/// let (mut server, _peer) = listener.accept().await?;
///
/// client.write_all(b"ping").await?;
/// let mut buf = [0; 4];
/// server.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"ping");
/// assert!(deadpeer::inspect(&server)?.matches(KeepalivePolicy::FAST));
/// # Ok(()) }
/// ```
pub struct KeepaliveStream {
    // First: fields drop in order, and the owner must stop watching the socket before `io`
    // closes it (the invariant of `sys::WatchedFd`).
    owner: Owner,
    io: TcpStream,
}

impl KeepaliveStream {
    /// Applies `policy` to `io` and wraps it.
    ///
    /// As for [`wrap`](Self::wrap), a socket still connecting or listening is refused, and one
    /// the kernel already closed is dead from the start.
    ///
    /// # Errors
    ///
    /// When a socket option cannot be set (see [`apply`](crate::apply)), or the socket is not
    /// a connection yet (see [`wrap`](Self::wrap)).
    pub fn new(io: TcpStream, policy: KeepalivePolicy) -> io::Result<Self> {
        let closed = check_connected(&io)?;
        sys::apply(&io, policy)?;
        let (peer, local) = addrs(&io);
        report::keepalive_applied(peer, &policy, false);
        Ok(Self::from_parts(io, peer, local, Some(policy)).judged_at_wrap(closed))
    }

    /// Wraps `io` without changing its socket options: for connections whose policy was set
    /// elsewhere (inherited from a listener, or set before connecting). Deaths still surface as
    /// [`DeadPeer`]s; [`DeadPeer::policy`] is `None`.
    ///
    /// If the socket has keepalive off (`SO_KEEPALIVE` is 0), a WARN says so, once per process:
    /// the kernel then never probes, so a peer that goes silent on an idle connection is never
    /// found. Resets, refusals and unreachable answers, and data that stays unacknowledged until
    /// `TCP_USER_TIMEOUT` or `tcp_retries2` runs out, are still seen by reads, writes and
    /// [`Liveness::dead`].
    ///
    /// The socket must be a connection. One still connecting (a non-blocking `connect` that has
    /// not completed: TCP state `SYN_SENT`) is refused, because the kernel could still refuse
    /// the connect, which is no dead peer; so are a socket that never connected and a listening
    /// socket. A socket the kernel already
    /// closed is judged here, as the first observer: its death is latched at once, from its
    /// pending error, or as [`Cause::Aborted`](crate::Cause::Aborted) (no errno) when someone
    /// took that error before (`take_error`), so that reads, writes, [`Liveness::state`] and
    /// [`Liveness::dead`] all give the same [`DeadPeer`] (with no idle time: the kernel's
    /// figure for a connection deadpeer never saw alive is not one). One `TCP_INFO` read.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] for a socket still connecting or never connected: await
    /// the connect first, or use [`deadpeer::connect`](crate::connect);
    /// [`io::ErrorKind::InvalidInput`] for a listening socket.
    pub fn wrap(io: TcpStream) -> io::Result<Self> {
        let closed = check_connected(&io)?;
        let (peer, local) = addrs(&io);
        if !socket2::SockRef::from(&io).keepalive().unwrap_or(true) {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                report::keepalive_off(peer);
            }
        }
        Ok(Self::from_parts(io, peer, local, None).judged_at_wrap(closed))
    }

    /// Latches the death of a socket the kernel closed before it was wrapped.
    fn judged_at_wrap(self, closed: Option<(TcpInfo, Option<i32>)>) -> Self {
        if let Some((info, errno)) = closed {
            self.owner.closed_before_wrap(&self.io, info, errno);
        }
        self
    }

    pub(crate) fn from_parts(
        io: TcpStream,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        policy: Option<KeepalivePolicy>,
    ) -> Self {
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        report::platform_limits();
        Self {
            owner: Owner::new(Meta::new(peer, local, policy)),
            io,
        }
    }

    /// A handle whose [`dead()`](Liveness::dead) resolves when the kernel declares the peer dead,
    /// even with no read or write pending. It shares this stream's latch.
    ///
    /// The first call registers the socket's own descriptor with deadpeer's error-only epoll
    /// instance (one `epoll_ctl`; no duplicate descriptor, no wake-ups on data). Dropping the
    /// stream ends the watch and closes the socket at once.
    pub fn liveness(&self) -> Liveness {
        Liveness::new(self.owner.watched(&self.io))
    }

    /// The peer's address, captured when the stream was wrapped (an IPv4-mapped IPv6 address is
    /// given as the IPv4 address).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] when it could not be read then (the connection was
    /// already gone).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.owner
            .meta
            .peer_addr
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// The local address, captured when the stream was wrapped.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] when it could not be read then.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.owner
            .meta
            .local_addr
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// The policy this stream was set up with, if deadpeer applied or verified one.
    pub fn policy(&self) -> Option<KeepalivePolicy> {
        self.owner.meta.policy
    }

    /// The latched death, if one has been seen.
    pub fn dead_peer(&self) -> Option<&DeadPeer> {
        self.owner.latched()
    }

    /// Reads the options back from the kernel and checks them against the stream's policy.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Other`] naming both when they differ; [`io::ErrorKind::InvalidInput`] when
    /// the stream has no policy.
    pub fn verify(&self) -> io::Result<SocketKeepalive> {
        let policy = self.policy().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "this stream has no keepalive policy to verify; it was wrapped with \
                 KeepaliveStream::wrap",
            )
        })?;
        verify(&self.io, policy)
    }

    /// The TCP stream underneath. Reading from it directly bypasses the latch.
    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }

    /// Unwraps the stream. Its [`Liveness`] handles become
    /// [`Closed`](crate::liveness::State::Closed) and their pending `dead()` futures resolve to
    /// `None`.
    pub fn into_inner(self) -> TcpStream {
        let Self { owner, io } = self;
        owner.detach(&io);
        io
    }

    /// Splits the stream into a read half and a write half that can move to different tasks,
    /// as [`TcpStream::into_split`]; both halves share the latch, and dropping the write half
    /// shuts down the write side. [`OwnedReadHalf::reunite`] puts them back together.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        split::split(self.owner, self.io)
    }
}

/// `tcpi_state` values (`include/net/tcp_states.h`) that `wrap` refuses.
const TCP_SYN_SENT: u8 = 2;
const TCP_LISTEN: u8 = 10;

/// Refuses a socket that is not a connection yet; returns its `TCP_INFO` and its pending errno
/// (taken) when the kernel already closed it. Where `TCP_INFO` is unavailable, nothing is
/// checked.
fn check_connected(io: &TcpStream) -> io::Result<Option<(TcpInfo, Option<i32>)>> {
    let Ok(info) = sys::tcp_info(io) else {
        return Ok(None);
    };
    match info.state {
        TCP_SYN_SENT => Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "cannot wrap a socket that is still connecting (TCP state SYN_SENT): its connect may \
             yet fail, which is no dead peer; await the connect first or use deadpeer::connect",
        )),
        TCP_LISTEN => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot wrap a listening socket (TCP state LISTEN); use KeepaliveListener for a \
             listener, and wrap the connections it accepts",
        )),
        TcpInfo::CLOSE => {
            let errno = sys::take_error(io)
                .ok()
                .flatten()
                .and_then(|e| e.raw_os_error());
            // A connection the kernel closed has its receive side shut: a peek gives EOF. A
            // socket that never connected gives ENOTCONN.
            let mut byte = [std::mem::MaybeUninit::uninit()];
            let never_connected = errno.is_none()
                && socket2::SockRef::from(io)
                    .peek(&mut byte)
                    .is_err_and(|e| e.kind() == io::ErrorKind::NotConnected);
            if never_connected {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "cannot wrap a socket that was never connected (TCP state CLOSE, no \
                     connection); connect it and await the connect first, or use \
                     deadpeer::connect",
                ));
            }
            Ok(Some((info, errno)))
        }
        _ => Ok(None),
    }
}

pub(crate) fn verify(tcp: &TcpStream, policy: KeepalivePolicy) -> io::Result<SocketKeepalive> {
    let got = sys::inspect(tcp)?;
    if got.matches(policy) {
        Ok(got)
    } else {
        Err(io::Error::other(format!(
            "keepalive options read back ({got:?}) differ from the policy ({policy}); another \
             component may have changed them"
        )))
    }
}

#[cfg(unix)]
impl std::os::fd::AsFd for KeepaliveStream {
    /// The socket's descriptor, for socket options (`deadpeer::inspect(&stream)`,
    /// `socket2::SockRef::from(&stream)`).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.io.as_fd()
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for KeepaliveStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.as_raw_fd()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsSocket for KeepaliveStream {
    /// The socket, for socket options (`deadpeer::inspect(&stream)`,
    /// `socket2::SockRef::from(&stream)`).
    fn as_socket(&self) -> std::os::windows::io::BorrowedSocket<'_> {
        self.io.as_socket()
    }
}

#[cfg(windows)]
impl std::os::windows::io::AsRawSocket for KeepaliveStream {
    fn as_raw_socket(&self) -> std::os::windows::io::RawSocket {
        self.io.as_raw_socket()
    }
}

impl fmt::Debug for KeepaliveStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveStream")
            .field("peer_addr", &self.owner.meta.peer_addr)
            .field("policy", &self.owner.meta.policy.map(|p| p.to_string()))
            .field("dead_peer", &self.owner.latched())
            .finish()
    }
}

/// Connects to `addr` with `policy` applied before the SYN.
///
/// The policy is set on a [`TcpSocket`] before `connect`, so it covers the handshake and the
/// connection is never without it. Each address `addr` resolves to is tried in turn, as
/// [`TcpStream::connect`] does. In debug builds the options are read back and checked; call
/// [`KeepaliveStream::verify`] to check in release builds.
///
/// # Errors
///
/// The last connection error, or a resolution error; an error when no address resolved.
///
/// # Cancel safety
///
/// Not cancel safe in the sense that a connection in progress is abandoned; nothing leaks.
///
/// # Examples
///
/// ```
/// use deadpeer::KeepalivePolicy;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let stream = deadpeer::connect(listener.local_addr()?, KeepalivePolicy::FAST).await?;
/// assert_eq!(deadpeer::inspect(&stream)?.idle, KeepalivePolicy::FAST.idle());
/// # Ok(()) }
/// ```
pub async fn connect(
    addr: impl ToSocketAddrs,
    policy: KeepalivePolicy,
) -> io::Result<KeepaliveStream> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match connect_one(addr, policy).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

async fn connect_one(addr: SocketAddr, policy: KeepalivePolicy) -> io::Result<KeepaliveStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sys::apply(&socket, policy)?;
    let stream = socket.connect(addr).await?;
    // Windows cannot read the options back (see `inspect`).
    if cfg!(all(debug_assertions, not(windows))) {
        verify(&stream, policy)?;
    }
    let (peer, local) = (
        Some(canonical(addr)),
        stream.local_addr().ok().map(canonical),
    );
    report::keepalive_applied(peer, &policy, false);
    report::connection_opened(report::Direction::Outbound);
    Ok(KeepaliveStream::from_parts(
        stream,
        peer,
        local,
        Some(policy),
    ))
}

/// An IPv4-mapped IPv6 address (`[::ffff:10.0.0.1]:80`, as a dual-stack socket reports IPv4
/// peers) as the IPv4 address it is; every other address as it is.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// The peer and local addresses of a connection, `None` where the kernel cannot say.
pub(crate) fn addrs(tcp: &TcpStream) -> (Option<SocketAddr>, Option<SocketAddr>) {
    (
        tcp.peer_addr().ok().map(canonical),
        tcp.local_addr().ok().map(canonical),
    )
}

/// Applies `policy` to a connection deadpeer is about to wrap, with its events: DEBUG
/// `keepalive applied`, or WARN `failed to apply keepalive`. A failure is an error only when
/// `strict`; otherwise the connection is kept. Returns the policy when it is in place.
pub(crate) fn apply_logged(
    tcp: &TcpStream,
    policy: KeepalivePolicy,
    peer: Option<SocketAddr>,
    strict: bool,
) -> io::Result<Option<KeepalivePolicy>> {
    match sys::apply(tcp, policy) {
        Ok(()) => {
            report::keepalive_applied(peer, &policy, false);
            Ok(Some(policy))
        }
        Err(e) => {
            report::apply_failed(peer, &e);
            if strict { Err(e) } else { Ok(None) }
        }
    }
}
