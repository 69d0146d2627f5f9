//! [`KeepaliveListener`]: accepts connections under a keepalive policy, inherited from the
//! listening socket on Linux so that accepting costs no extra syscall.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};

use crate::connections::Connections;
use crate::policy::KeepalivePolicy;
use crate::report::Direction;
use crate::stream::{KeepaliveStream, apply_logged, canonical};
use crate::{report, sys};

const VERIFY: u8 = 0;
const INHERIT: u8 = 1;
const PER_SOCKET: u8 = 2;

/// A TCP listener whose accepted connections run under a keepalive policy and surface dead peers
/// as [`DeadPeer`](crate::DeadPeer) errors.
///
/// On Linux the policy is set once on the listening socket; accepted sockets inherit it, so
/// `accept` makes no `setsockopt`. Accepted sockets are read back with
/// [`inspect`](crate::inspect) until one matches; from then on nothing is checked. Connections
/// that were already queued when the policy was set (a listener handed over by socket activation
/// or a graceful restart) did not inherit it: each gets the policy set on its own socket, without
/// a WARN, and the connections after them inherit. Should a socket that arrived after the policy
/// was set not match, the listener logs a WARN and sets the policy on each socket from then on.
/// On other systems the policy is always set per socket (inheritance is measured on Linux only;
/// see the crate docs, "Platforms").
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
/// assert!(deadpeer::inspect(&stream)?.matches(KeepalivePolicy::FAST));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct KeepaliveListener {
    inner: TcpListener,
    policy: KeepalivePolicy,
    mode: AtomicU8,
    /// Connections queued before the policy was set (the accept queue's length then, from
    /// `TCP_INFO`), still allowed not to have inherited it.
    queued: AtomicU32,
    strict: bool,
    /// The listener's own address when it is bound to a specific IP: then it is every accepted
    /// socket's local address too, and no `getsockname` is needed per accept.
    fixed_local: Option<SocketAddr>,
    /// Where accepted connections are tracked, if anywhere.
    connections: Option<Connections>,
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

    /// Puts an existing listener under `policy` (on Linux, sets it on the listening socket).
    ///
    /// # Errors
    ///
    /// When the policy cannot be set on the listening socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use deadpeer::{KeepaliveListener, KeepalivePolicy};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let listener = KeepaliveListener::new(listener, KeepalivePolicy::CLOUD)?;
    /// assert_eq!(listener.policy(), KeepalivePolicy::CLOUD);
    /// # Ok(()) }
    /// ```
    pub fn new(inner: TcpListener, policy: KeepalivePolicy) -> io::Result<Self> {
        let (mode, queued) = if sys::LISTENER_INHERITS {
            sys::apply(&inner, policy)?;
            // Connections established from here on inherit the policy; those already waiting to
            // be accepted do not. For a listening socket `tcpi_unacked` is the accept queue's
            // length (docs/kernel.md, "Inheritance").
            let queued = sys::tcp_info(&inner).map_or(0, |i| i.unacked);
            (VERIFY, queued)
        } else {
            (PER_SOCKET, 0)
        };
        let local = inner.local_addr().ok();
        let fixed_local = local.filter(|a| !a.ip().is_unspecified());
        let name = if mode == PER_SOCKET {
            "per_socket"
        } else {
            "inherit"
        };
        report::listener_set(local, &policy, name);
        Ok(Self {
            inner,
            policy,
            mode: AtomicU8::new(mode),
            queued: AtomicU32::new(queued),
            strict: false,
            fixed_local,
            connections: None,
        })
    }

    /// Makes a failed `setsockopt` on an accepted socket an error of `accept` (the connection is
    /// dropped) instead of a WARN.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Tracks every accepted connection in `connections`, for
    /// [`Connections::snapshot`]: each is then watched from the accept on (as by
    /// [`liveness`](KeepaliveStream::liveness)). Without it, accepting costs nothing more.
    pub fn track(mut self, connections: &Connections) -> Self {
        self.connections = Some(connections.clone());
        self
    }

    /// Accepts a connection. The peer address is given as the stream's
    /// [`peer_addr`](KeepaliveStream::peer_addr) is: an IPv4-mapped IPv6 address (an IPv4 client
    /// of a dual-stack `[::]` listener) as the IPv4 address.
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
    pub async fn accept(&self) -> io::Result<(KeepaliveStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls to accept a connection, for `Stream` adapters and hand-written futures.
    ///
    /// # Errors
    ///
    /// As [`accept`](Self::accept).
    pub fn poll_accept(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(KeepaliveStream, SocketAddr)>> {
        self.inner
            .poll_accept(cx)
            .map(|r| r.and_then(|(stream, peer)| self.finish_accept(stream, peer)))
    }

    /// Polls for the next connection whatever happens, as a server loop (axum's `serve`,
    /// `TlsListener`) wants: a connection refused by strict mode is dropped (its WARN was logged)
    /// and the next one is accepted at once; a connection error (`ECONNABORTED`, `ECONNRESET`,
    /// `ECONNREFUSED`) is skipped; any other accept error (such as `EMFILE`) is logged at ERROR
    /// and retried after a second (`backoff`, the caller's to keep between polls), as axum does
    /// for `tokio::net::TcpListener`. The one accept-and-retry loop of the server integrations.
    #[cfg(any(feature = "axum", feature = "rustls"))]
    pub(crate) fn poll_accept_serving(
        &self,
        backoff: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        cx: &mut Context<'_>,
    ) -> Poll<(KeepaliveStream, SocketAddr)> {
        loop {
            if let Some(sleep) = backoff {
                std::task::ready!(sleep.as_mut().poll(cx));
                *backoff = None;
            }
            match std::task::ready!(self.inner.poll_accept(cx)) {
                Ok((stream, peer)) => {
                    if let Ok(conn) = self.finish_accept(stream, peer) {
                        return Poll::Ready(conn);
                    }
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    report::accept_failed(self.inner.local_addr().ok(), &e);
                    let sleep = tokio::time::sleep(std::time::Duration::from_secs(1));
                    *backoff = Some(Box::pin(sleep));
                }
            }
        }
    }

    /// Puts an accepted connection under the policy, and tracks it if asked.
    pub(crate) fn finish_accept(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> io::Result<(KeepaliveStream, SocketAddr)> {
        let peer = canonical(peer);
        let policy = self.prepare(&stream, peer)?;
        let local = self
            .fixed_local
            .or_else(|| stream.local_addr().ok().map(canonical));
        if policy.is_some() {
            report::connection_opened(Direction::Inbound);
        }
        let stream = KeepaliveStream::from_parts(stream, Some(peer), local, policy);
        if let Some(connections) = &self.connections {
            connections.register(&stream.liveness());
        }
        Ok((stream, peer))
    }

    /// Makes sure `stream` carries the policy; the policy, when it is in place.
    fn prepare(&self, stream: &TcpStream, peer: SocketAddr) -> io::Result<Option<KeepalivePolicy>> {
        match self.mode.load(Ordering::Relaxed) {
            INHERIT => {
                report::keepalive_applied(Some(peer), &self.policy, true);
                Ok(Some(self.policy))
            }
            VERIFY => {
                if sys::inspect(stream).is_ok_and(|got| got.matches(self.policy)) {
                    self.mode.store(INHERIT, Ordering::Relaxed);
                    report::keepalive_applied(Some(peer), &self.policy, true);
                    Ok(Some(self.policy))
                } else if self
                    .queued
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    // Queued before the policy was set: this one gets it per socket; the
                    // listener still inherits.
                    apply_logged(stream, self.policy, Some(peer), self.strict)
                } else {
                    self.mode.store(PER_SOCKET, Ordering::Relaxed);
                    report::not_inherited(self.inner.local_addr().ok(), &self.policy);
                    report::listener_set(self.inner.local_addr().ok(), &self.policy, "per_socket");
                    apply_logged(stream, self.policy, Some(peer), self.strict)
                }
            }
            _ => apply_logged(stream, self.policy, Some(peer), self.strict),
        }
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
    pub fn policy(&self) -> KeepalivePolicy {
        self.policy
    }

    /// Whether accepted sockets inherit the policy from the listening socket (Linux), so that
    /// accepting makes no `setsockopt`. Before the first accept it is `true` on Linux, still to be
    /// verified; it stays `true` through connections that were queued before the policy was set
    /// (each gets the policy per socket), and turns `false` if a later socket did not inherit the
    /// options (the policy is then set on each socket, and a WARN said so).
    pub fn inherits(&self) -> bool {
        self.mode.load(Ordering::Relaxed) != PER_SOCKET
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

/// An error of one connection, not of the listener: the next accept may well succeed.
#[cfg(any(feature = "axum", feature = "rustls"))]
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inheritance: accepting from an inheriting listener makes no `setsockopt` (debug builds
    /// count `sys::apply` calls per thread).
    #[tokio::test(flavor = "current_thread")]
    async fn many_accepts_make_no_setsockopt() {
        let p = KeepalivePolicy::FAST;
        let listener = KeepaliveListener::bind("127.0.0.1:0", p).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls_before = sys::debug_apply_calls_on_this_thread();
        for _ in 0..50 {
            let _client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            assert!(sys::inspect(&server).unwrap().matches(p));
            assert_eq!(server.policy(), Some(p));
        }
        if cfg!(debug_assertions) {
            assert_eq!(sys::debug_apply_calls_on_this_thread(), calls_before);
        }
        assert!(listener.inherits());
    }

    /// A listener handed over with connections already queued (bound and connected to before
    /// `KeepaliveListener::new` set the policy): the queued ones get the policy per socket, the
    /// later ones inherit it with no `setsockopt`, the listener keeps inheriting, no WARN.
    #[tokio::test(flavor = "current_thread")]
    async fn connections_queued_before_the_policy_get_it_per_socket() {
        let (events, _guard) = crate::report::capture::capture();
        let p = KeepalivePolicy::FAST;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        // Established by the kernel, waiting in the accept queue, before the policy exists.
        let queued: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let listener =
            KeepaliveListener::new(TcpListener::from_std(std_listener).unwrap(), p).unwrap();

        let calls = sys::debug_apply_calls_on_this_thread();
        for _ in 0..queued.len() {
            let (server, _) = listener.accept().await.unwrap();
            assert!(
                sys::inspect(&server).unwrap().matches(p),
                "queued: {:?}",
                sys::inspect(&server)
            );
            assert_eq!(server.policy(), Some(p));
            assert!(listener.inherits());
        }
        let per_socket = sys::debug_apply_calls_on_this_thread() - calls;
        if cfg!(debug_assertions) {
            assert_eq!(
                per_socket,
                queued.len() as u64,
                "one apply per queued connection"
            );
        }
        let calls = sys::debug_apply_calls_on_this_thread();
        let mut fresh = Vec::new();
        for _ in 0..5 {
            fresh.push(TcpStream::connect(addr).await.unwrap());
            let (server, _) = listener.accept().await.unwrap();
            assert!(sys::inspect(&server).unwrap().matches(p));
            assert_eq!(server.policy(), Some(p));
        }
        assert_eq!(
            sys::debug_apply_calls_on_this_thread(),
            calls,
            "later connections inherit"
        );
        assert!(listener.inherits());
        let warned: Vec<_> = events
            .all()
            .into_iter()
            .filter(|e| e.level == tracing::Level::WARN)
            .collect();
        assert!(warned.is_empty(), "{warned:#?}");
        let applied = events.with_message("keepalive applied");
        assert_eq!(applied.len(), 8);
        let inherited = |e: &crate::report::capture::Event| e.fields["inherited"] == "true";
        assert_eq!(applied.iter().filter(|e| inherited(e)).count(), 5);
    }

    #[test]
    fn mapped_addresses_are_shown_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(
            canonical(mapped),
            "10.0.0.1:80".parse::<SocketAddr>().unwrap()
        );
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
