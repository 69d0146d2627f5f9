//! [`KeepaliveStream`]: a TCP stream whose dead peer surfaces as a typed, latched [`DeadPeer`]
//! error, and [`connect`], which applies a policy before the SYN.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, ToSocketAddrs};

use crate::liveness::{Liveness, Meta, Shared};
use crate::policy::KeepalivePolicy;
use crate::sys::{self, SocketKeepalive, TcpInfo};
use crate::{DeadPeer, trace};

/// A connection that owns a TCP socket, so deadpeer can set options on it and watch it.
///
/// Implemented for [`TcpStream`], for [`KeepaliveStream`], and with the `hyper` feature for
/// `hyper_util::rt::TokioIo<T>`. Sealed: a watched connection's socket must stay the same socket
/// for the connection's whole life, which these types guarantee. Put TLS *over* a
/// `KeepaliveStream` (a death then surfaces through the TLS stream as the same `DeadPeer`).
pub trait AsTcpStream: sealed::SealedIo {
    /// The TCP stream underneath.
    fn as_tcp_stream(&self) -> &TcpStream;
}

impl AsTcpStream for TcpStream {
    fn as_tcp_stream(&self) -> &TcpStream {
        self
    }
}

impl<S: AsTcpStream> AsTcpStream for KeepaliveStream<S> {
    fn as_tcp_stream(&self) -> &TcpStream {
        self.io.as_tcp_stream()
    }
}

#[cfg(feature = "hyper")]
impl<T: AsTcpStream> AsTcpStream for hyper_util::rt::TokioIo<T> {
    fn as_tcp_stream(&self) -> &TcpStream {
        self.inner().as_tcp_stream()
    }
}

/// The stream's side of the latch: what a death report needs, and the state shared with
/// `Liveness` handles, created on the first `liveness()` or death so that wrapping a connection
/// allocates nothing. Dropping it marks the shared state closed and stops watching the socket,
/// which must still be open then (see the field order of `KeepaliveStream`).
pub(crate) struct Latch {
    meta: Meta,
    /// The application shut down its write side: `EPIPE` is then its own doing.
    shut_down: bool,
    shared: OnceLock<Arc<Shared>>,
}

impl Latch {
    fn new(meta: Meta) -> Self {
        Self {
            meta,
            shut_down: false,
            shared: OnceLock::new(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        self.shared.get_or_init(|| Arc::new(Shared::new(self.meta)))
    }

    /// The latched death, if any: two loads, for the hot path.
    #[inline]
    pub(crate) fn latched(&self) -> Option<&DeadPeer> {
        self.shared.get()?.latched()
    }

    /// An error from the socket: a death becomes the latched `DeadPeer` (as an `io::Error`),
    /// anything else passes through unchanged.
    pub(crate) fn on_error(&self, socket: &TcpStream, err: io::Error) -> io::Error {
        let dead = match err.raw_os_error() {
            Some(errno) => self.verdict(socket, Some(errno)),
            None => self.latched().cloned(),
        };
        dead.map_or(err, io::Error::from)
    }

    /// End of file: a FIN, or what follows a death (whose error someone else may have taken).
    /// One `TCP_INFO` read, once per connection.
    pub(crate) fn on_eof(&self, socket: &TcpStream) -> Option<DeadPeer> {
        self.verdict(socket, None)
    }

    fn verdict(&self, socket: &TcpStream, seen: Option<i32>) -> Option<DeadPeer> {
        if let Some(dead) = self.latched() {
            return Some(dead.clone());
        }
        // Allocate the shared state only for a connection the kernel closed.
        if self.shared.get().is_none()
            && sys::tcp_info(socket).is_ok_and(|i| i.state != TcpInfo::CLOSE)
        {
            return None;
        }
        self.shared().verdict(socket.as_fd(), seen, self.shut_down)
    }
}

impl Drop for Latch {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.get() {
            shared.close(None);
        }
    }
}

pin_project_lite::pin_project! {
    /// A TCP connection under a keepalive policy, whose dead peer surfaces as a [`DeadPeer`].
    ///
    /// When a read or write fails because the kernel declared the peer dead, the stream
    /// classifies the death (keepalive timeout, retransmit timeout, reset, unreachable) from the
    /// errno and `TCP_INFO`, emits `dead peer detected` once, and latches it: every later read and
    /// write returns the same `DeadPeer` (as an [`io::Error`] of the matching kind) instead of
    /// EOF or `EPIPE`. A FIN stays a plain EOF, and other errors pass through unchanged.
    ///
    /// The read and write paths add one atomic load and nothing else: no syscall, no clock read,
    /// no allocation.
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
    /// let mut client = deadpeer::connect(listener.local_addr()?, &KeepalivePolicy::FAST).await?;
    /// let (mut server, _peer) = listener.accept().await?;
    ///
    /// client.write_all(b"ping").await?;
    /// let mut buf = [0; 4];
    /// server.read_exact(&mut buf).await?;
    /// assert_eq!(&buf, b"ping");
    /// assert!(server.keepalive()?.matches(&KeepalivePolicy::FAST));
    /// # Ok(()) }
    /// ```
    pub struct KeepaliveStream<S> {
        // First: fields drop in order, and the latch must stop watching the socket before `io`
        // closes it (the invariant of `sys::WatchedFd`).
        latch: Latch,
        #[pin]
        io: S,
    }
}

impl<S: AsTcpStream> KeepaliveStream<S> {
    /// Applies `policy` to `io` and wraps it.
    ///
    /// # Errors
    ///
    /// When a socket option cannot be set (see [`apply`](crate::apply)).
    pub fn new(io: S, policy: KeepalivePolicy) -> io::Result<Self> {
        sys::apply(io.as_tcp_stream(), &policy)?;
        let (peer, local) = addrs(io.as_tcp_stream());
        trace::keepalive_applied(peer, &policy, false);
        Ok(Self::from_parts(io, peer, local, Some(policy)))
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
    pub fn wrap(io: S) -> Self {
        let tcp = io.as_tcp_stream();
        let (peer, local) = addrs(tcp);
        if !socket2::SockRef::from(tcp).keepalive().unwrap_or(true) {
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                trace::keepalive_off(peer);
            }
        }
        Self::from_parts(io, peer, local, None)
    }

    pub(crate) fn from_parts(
        io: S,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        policy: Option<KeepalivePolicy>,
    ) -> Self {
        Self {
            latch: Latch::new(Meta::new(peer, local, policy)),
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
        let shared = self.latch.shared();
        shared.watch(self.io.as_tcp_stream().as_fd());
        Liveness::new(Arc::clone(shared))
    }

    /// The peer's address, captured when the stream was wrapped.
    ///
    /// # Errors
    ///
    /// When it could not be read then (the connection was already gone).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.latch
            .meta
            .peer_addr
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// The local address, captured when the stream was wrapped.
    ///
    /// # Errors
    ///
    /// When it could not be read then.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.latch
            .meta
            .local_addr
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// The policy this stream was set up with, if deadpeer applied or verified one.
    pub fn policy(&self) -> Option<&KeepalivePolicy> {
        self.latch.meta.policy.as_ref()
    }

    /// The latched death, if one has been seen.
    pub fn dead_peer(&self) -> Option<&DeadPeer> {
        self.latch.latched()
    }

    /// The keepalive options in effect on the socket, read back from the kernel.
    ///
    /// # Errors
    ///
    /// See [`inspect`](crate::inspect).
    pub fn keepalive(&self) -> io::Result<SocketKeepalive> {
        sys::inspect(self.io.as_tcp_stream())
    }

    /// Reads the options back and checks them against the stream's policy.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Other`] naming both when they differ; [`io::ErrorKind::InvalidInput`] when the
    /// stream has no policy.
    pub fn verify(&self) -> io::Result<SocketKeepalive> {
        let policy = self.policy().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "this stream has no keepalive policy to verify",
            )
        })?;
        verify(self.io.as_tcp_stream(), policy)
    }

    /// `TCP_INFO` for the socket.
    ///
    /// # Errors
    ///
    /// See [`tcp_info`](crate::tcp_info).
    pub fn tcp_info(&self) -> io::Result<TcpInfo> {
        sys::tcp_info(self.io.as_tcp_stream())
    }
}

impl<S> KeepaliveStream<S> {
    #[cfg_attr(not(feature = "hyper"), allow(dead_code))]
    pub(crate) fn io_pin_mut(self: Pin<&mut Self>) -> (Pin<&mut S>, &Latch) {
        let this = self.project();
        (this.io, this.latch)
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Unwraps the connection. Its [`Liveness`] handles become [`Closed`](crate::State::Closed)
    /// and their pending `dead()` futures resolve to `None`.
    pub fn into_inner(self) -> S
    where
        S: AsTcpStream,
    {
        let Self { latch, io } = self;
        if let Some(shared) = latch.shared.get() {
            shared.close(Some(io.as_tcp_stream().as_fd()));
        }
        io
    }
}

pub(crate) fn verify(tcp: &TcpStream, policy: &KeepalivePolicy) -> io::Result<SocketKeepalive> {
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

impl<S: AsTcpStream> AsFd for KeepaliveStream<S> {
    /// The TCP socket's descriptor, for socket options (`socket2::SockRef::from(&stream)`).
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.io.as_tcp_stream().as_fd()
    }
}

impl<S: AsTcpStream> AsRawFd for KeepaliveStream<S> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.as_tcp_stream().as_raw_fd()
    }
}

impl<S: fmt::Debug> fmt::Debug for KeepaliveStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepaliveStream")
            .field("io", &self.io)
            .field(
                "policy",
                &self.latch.meta.policy.as_ref().map(|p| p.to_string()),
            )
            .field("dead_peer", &self.latch.latched())
            .finish()
    }
}

impl<S: AsyncRead + AsTcpStream> AsyncRead for KeepaliveStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        let latch = &*this.latch;
        if let Some(dead) = latch.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        let before = buf.filled().len();
        let result = ready!(this.io.as_mut().poll_read(cx, buf));
        let tcp = this.io.as_ref().get_ref().as_tcp_stream();
        Poll::Ready(match result {
            // EOF: a FIN, or what follows a death.
            Ok(()) if buf.filled().len() == before && buf.remaining() > 0 => {
                latch.on_eof(tcp).map_or(Ok(()), |dead| Err(dead.into()))
            }
            Ok(()) => Ok(()),
            Err(e) => Err(latch.on_error(tcp, e)),
        })
    }
}

impl<S: AsyncWrite + AsTcpStream> KeepaliveStream<S> {
    fn map_write<T>(self: Pin<&mut Self>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(Err(e)) => {
                let this = self.project();
                Poll::Ready(Err(this
                    .latch
                    .on_error(this.io.as_ref().get_ref().as_tcp_stream(), e)))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + AsTcpStream> AsyncWrite for KeepaliveStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(dead) = self.latch.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        let r = self.as_mut().project().io.poll_write(cx, buf);
        self.map_write(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(dead) = self.latch.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        let r = self.as_mut().project().io.poll_write_vectored(cx, bufs);
        self.map_write(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(dead) = self.latch.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        let r = self.as_mut().project().io.poll_flush(cx);
        self.map_write(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(dead) = self.latch.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        let r = self.as_mut().project().io.poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = r {
            self.as_mut().project().latch.shut_down = true;
        }
        self.map_write(r)
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
/// let stream = deadpeer::connect(listener.local_addr()?, &KeepalivePolicy::FAST).await?;
/// assert_eq!(stream.keepalive()?.idle, KeepalivePolicy::FAST.idle());
/// # Ok(()) }
/// ```
pub async fn connect(
    addr: impl ToSocketAddrs,
    policy: &KeepalivePolicy,
) -> io::Result<KeepaliveStream<TcpStream>> {
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

async fn connect_one(
    addr: SocketAddr,
    policy: &KeepalivePolicy,
) -> io::Result<KeepaliveStream<TcpStream>> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sys::apply(&socket, policy)?;
    let stream = socket.connect(addr).await?;
    if cfg!(debug_assertions) {
        verify(&stream, policy)?;
    }
    let local = stream.local_addr().ok();
    trace::keepalive_applied(Some(addr), policy, false);
    Ok(KeepaliveStream::from_parts(
        stream,
        Some(addr),
        local,
        Some(*policy),
    ))
}

/// The peer and local addresses of a connection, `None` where the kernel cannot say.
pub(crate) fn addrs(tcp: &TcpStream) -> (Option<SocketAddr>, Option<SocketAddr>) {
    (tcp.peer_addr().ok(), tcp.local_addr().ok())
}

/// Applies `policy` to a connection deadpeer is about to wrap, with its events: DEBUG
/// `keepalive applied`, or WARN `failed to apply keepalive`. A failure is an error only when
/// `strict`; otherwise the connection is kept. Returns whether the policy is in place.
pub(crate) fn apply_logged(
    tcp: &TcpStream,
    policy: &KeepalivePolicy,
    peer: Option<SocketAddr>,
    strict: bool,
) -> io::Result<bool> {
    match sys::apply(tcp, policy) {
        Ok(()) => {
            trace::keepalive_applied(peer, policy, false);
            Ok(true)
        }
        Err(e) => {
            trace::apply_failed(peer, &e);
            if strict { Err(e) } else { Ok(false) }
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for tokio::net::TcpStream {}

    pub trait SealedIo {}
    impl SealedIo for tokio::net::TcpStream {}
    impl<S: super::AsTcpStream> SealedIo for super::KeepaliveStream<S> {}
    #[cfg(feature = "hyper")]
    impl<T: super::AsTcpStream> SealedIo for hyper_util::rt::TokioIo<T> {}
}

/// Keepalive methods on [`TcpStream`]. Sealed.
pub trait TcpStreamExt: sealed::Sealed {
    /// Applies `policy` (see [`apply`](crate::apply)).
    ///
    /// # Errors
    ///
    /// When a socket option cannot be set.
    fn set_keepalive_policy(&self, policy: &KeepalivePolicy) -> io::Result<()>;

    /// The keepalive options in effect (see [`inspect`](crate::inspect)).
    ///
    /// # Errors
    ///
    /// When an option cannot be read.
    fn keepalive(&self) -> io::Result<SocketKeepalive>;

    /// `TCP_INFO` (see [`tcp_info`](crate::tcp_info)).
    ///
    /// # Errors
    ///
    /// When `TCP_INFO` cannot be read.
    fn tcp_info(&self) -> io::Result<TcpInfo>;
}

impl TcpStreamExt for TcpStream {
    fn set_keepalive_policy(&self, policy: &KeepalivePolicy) -> io::Result<()> {
        sys::apply(self, policy)
    }

    fn keepalive(&self) -> io::Result<SocketKeepalive> {
        sys::inspect(self)
    }

    fn tcp_info(&self) -> io::Result<TcpInfo> {
        sys::tcp_info(self)
    }
}
