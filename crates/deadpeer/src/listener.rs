//! [`KeepaliveListener`]: accepts connections under a keepalive policy, inherited from the
//! listening socket on Linux so that accepting costs no extra syscall.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::policy::KeepalivePolicy;
use crate::stream::{KeepaliveStream, apply_logged};
use crate::{sys, trace};

const VERIFY: u8 = 0;
const INHERIT: u8 = 1;
const PER_SOCKET: u8 = 2;

/// How a [`KeepaliveListener`] gets its policy onto accepted sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerMode {
    /// Set once on the listening socket and inherited by every accepted socket (Linux): no
    /// syscall per accept. The first accepted socket is checked.
    Inherit,
    /// Set on each accepted socket: on systems without inheritance, or after the first accepted
    /// socket on Linux turned out not to have inherited the options.
    PerSocket,
}

impl ListenerMode {
    /// `inherit` or `per_socket`, as in the `listener keepalive set` event.
    pub fn as_str(&self) -> &'static str {
        match self {
            ListenerMode::Inherit => "inherit",
            ListenerMode::PerSocket => "per_socket",
        }
    }
}

/// A TCP listener whose accepted connections run under a keepalive policy and surface dead peers
/// as [`DeadPeer`](crate::DeadPeer) errors.
///
/// On Linux the policy is set once on the listening socket; accepted sockets inherit it, so
/// `accept` makes no `setsockopt`. The first accepted socket is read back with
/// [`inspect`](crate::inspect); should it not match, the listener logs a WARN and sets the policy
/// on each socket from then on. On other systems the policy is always set per socket (keepalive on
/// a listening socket can kill the listener on macOS and the BSDs).
///
/// A `setsockopt` that fails on an accepted socket is logged at WARN (`failed to apply
/// keepalive`) and the connection is kept; with [`strict`](Self::strict) the connection is
/// dropped and `accept` returns the error.
///
/// # Examples
///
/// ```
/// use deadpeer::{KeepaliveListener, KeepalivePolicy};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
/// let addr = listener.local_addr()?;
/// let _client = tokio::net::TcpStream::connect(addr).await?;
/// let (stream, peer) = listener.accept().await?;
/// assert_eq!(stream.peer_addr()?, peer);
/// assert!(stream.keepalive()?.matches(&KeepalivePolicy::FAST));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct KeepaliveListener {
    inner: TcpListener,
    policy: KeepalivePolicy,
    mode: AtomicU8,
    strict: bool,
    /// The listener's own address when it is bound to a specific IP: then it is every accepted
    /// socket's local address too, and no `getsockname` is needed per accept.
    fixed_local: Option<SocketAddr>,
}

impl KeepaliveListener {
    /// Binds a listener to `addr` and sets `policy` on it.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::bind`], or when the policy cannot be set on the listening socket.
    pub async fn bind(addr: impl ToSocketAddrs, policy: KeepalivePolicy) -> io::Result<Self> {
        Self::new(TcpListener::bind(addr).await?, policy)
    }

    fn new(inner: TcpListener, policy: KeepalivePolicy) -> io::Result<Self> {
        let mode = if sys::LISTENER_INHERITS {
            sys::apply(&inner, &policy)?;
            VERIFY
        } else {
            PER_SOCKET
        };
        let local = inner.local_addr().ok();
        let fixed_local = local.filter(|a| !a.ip().is_unspecified());
        let name = if mode == PER_SOCKET {
            "per_socket"
        } else {
            "inherit"
        };
        trace::listener_set(local, &policy, name);
        Ok(Self {
            inner,
            policy,
            mode: AtomicU8::new(mode),
            strict: false,
            fixed_local,
        })
    }

    /// Makes a failed `setsockopt` on an accepted socket an error of `accept` (the connection is
    /// dropped) instead of a WARN.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Accepts a connection.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::accept`]; in [strict](Self::strict) mode, also when the policy cannot be
    /// set on the accepted socket.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`TcpListener::accept`]: if the future is dropped before it completes, no
    /// connection is lost.
    pub async fn accept(&self) -> io::Result<(KeepaliveStream<TcpStream>, SocketAddr)> {
        let (stream, peer) = self.inner.accept().await?;
        self.finish_accept(stream, peer)
    }

    /// Polls to accept a connection, for `Stream` adapters and hand-written futures.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<(KeepaliveStream<TcpStream>, SocketAddr)>> {
        self.inner
            .poll_accept(cx)
            .map(|r| r.and_then(|(stream, peer)| self.finish_accept(stream, peer)))
    }

    fn finish_accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(KeepaliveStream<TcpStream>, SocketAddr)> {
        self.prepare(&stream, peer)?;
        let local = self.fixed_local.or_else(|| stream.local_addr().ok());
        Ok((
            KeepaliveStream::from_parts(stream, Some(peer), local, Some(self.policy)),
            peer,
        ))
    }

    fn prepare(&self, stream: &TcpStream, peer: SocketAddr) -> io::Result<()> {
        match self.mode.load(Ordering::Relaxed) {
            INHERIT => {
                trace::keepalive_applied(Some(peer), &self.policy, true);
                Ok(())
            }
            VERIFY => {
                if sys::inspect(stream).is_ok_and(|got| got.matches(&self.policy)) {
                    self.mode.store(INHERIT, Ordering::Relaxed);
                    trace::keepalive_applied(Some(peer), &self.policy, true);
                    Ok(())
                } else {
                    self.mode.store(PER_SOCKET, Ordering::Relaxed);
                    trace::not_inherited(self.inner.local_addr().ok(), &self.policy);
                    trace::listener_set(self.inner.local_addr().ok(), &self.policy, "per_socket");
                    self.apply_to(stream, peer)
                }
            }
            _ => self.apply_to(stream, peer),
        }
    }

    fn apply_to(&self, stream: &TcpStream, peer: SocketAddr) -> io::Result<()> {
        apply_logged(stream, &self.policy, Some(peer), self.strict).map(drop)
    }

    /// The listener's local address.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The policy accepted connections run under.
    pub fn policy(&self) -> &KeepalivePolicy {
        &self.policy
    }

    /// How the policy reaches accepted sockets. Before the first accept on Linux this is
    /// [`Inherit`](ListenerMode::Inherit), still to be verified.
    pub fn mode(&self) -> ListenerMode {
        match self.mode.load(Ordering::Relaxed) {
            PER_SOCKET => ListenerMode::PerSocket,
            _ => ListenerMode::Inherit,
        }
    }

    /// The underlying listener.
    pub fn get_ref(&self) -> &TcpListener {
        &self.inner
    }

    /// Unwraps the listener. On Linux its socket keeps the policy, so sockets accepted from it
    /// still inherit it.
    pub fn into_inner(self) -> TcpListener {
        self.inner
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for tokio::net::TcpListener {}
}

/// Turns a [`TcpListener`] into a [`KeepaliveListener`]. Sealed.
pub trait TcpListenerExt: sealed::Sealed + Sized {
    /// Sets `policy` on the listener (on Linux) and wraps it.
    ///
    /// # Errors
    ///
    /// When the policy cannot be set on the listening socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use deadpeer::{KeepalivePolicy, TcpListenerExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?.keepalive(KeepalivePolicy::CLOUD)?;
    /// assert_eq!(listener.policy(), &KeepalivePolicy::CLOUD);
    /// # Ok(()) }
    /// ```
    fn keepalive(self, policy: KeepalivePolicy) -> io::Result<KeepaliveListener>;
}

impl TcpListenerExt for TcpListener {
    fn keepalive(self, policy: KeepalivePolicy) -> io::Result<KeepaliveListener> {
        KeepaliveListener::new(self, policy)
    }
}
