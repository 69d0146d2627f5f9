//! [`Liveness`]: learn that a peer died even when nothing reads or writes its connection.
//!
//! The kernel reports a death once: as the error of the next read or write, or as `SO_ERROR`,
//! whichever is asked first; after that reads return EOF and writes `EPIPE`. A
//! [`KeepaliveStream`](crate::KeepaliveStream) and its `Liveness` handles share one latch, so
//! whichever sees the death first classifies it, reports it once (the `dead peer detected` event
//! for a death), and every later read, write and [`Liveness::dead`] returns that same
//! [`DeadPeer`].
//!
//! A peer's FIN is not a death: [`Liveness::dead`] stays pending, as the stream can still send
//! to a half-closed peer. [`Liveness::gone`] resolves at the FIN too, with the connection's
//! [`Ending`]: what a handler that should stop when its client leaves waits for.
//!
//! A watched connection (one whose `liveness()` was taken) is registered, with its own
//! descriptor, in a process-wide epoll instance that reports nothing but errors, hang-ups and
//! the peer's FIN; a thread blocked on it classifies the ending the moment the kernel shows it.
//! There is no timer and no polling: a live connection costs one epoll registration and nothing
//! else.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use crate::Ending;
use crate::engine::{Latch, Until};
use crate::error::DeadPeer;
use crate::policy::KeepalivePolicy;

/// What a [`Liveness`] knows about its connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum State {
    /// No death has been seen, and the stream is still held by the application.
    Alive,
    /// The kernel declared the peer dead.
    Dead(DeadPeer),
    /// The application dropped the stream (or took it apart with `into_inner`) without a death.
    Closed,
}

/// A handle on a connection's liveness, from
/// [`KeepaliveStream::liveness`](crate::KeepaliveStream::liveness).
///
/// The [`dead`](Self::dead) and [`gone`](Self::gone) futures and the [`State`] it can be asked
/// for live in this module, [`deadpeer::liveness`](crate::liveness).
///
/// It is `Clone`, `Send` and `Sync`, holds no descriptor, and does not keep the socket open: once
/// the application drops the stream, the socket closes at once (its FIN goes out), the state is
/// [`Closed`](State::Closed), and every pending [`dead()`](Self::dead) resolves to `None`.
///
/// # Examples
///
/// End a long-running handler when its client dies, even though it never reads from the client:
///
/// ```
/// # async fn handler(stream: deadpeer::KeepaliveStream) {
/// let liveness = stream.liveness();
/// let (_tx, mut events) = tokio::sync::mpsc::channel::<String>(8);
/// tokio::select! {
///     Some(dead) = liveness.dead() => eprintln!("client gone: {dead}"),
///     _ = events.recv() => { /* push the event to the client */ }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Liveness {
    latch: Arc<Latch>,
}

impl Liveness {
    pub(crate) fn new(latch: Arc<Latch>) -> Self {
        Self { latch }
    }

    /// A reference to the latch that does not keep it alive, for
    /// [`Connections`](crate::connections::Connections).
    pub(crate) fn downgrade(&self) -> Weak<Latch> {
        Arc::downgrade(&self.latch)
    }

    /// Resolves when the connection is settled: `Some(DeadPeer)` when the kernel declares the
    /// peer dead, whether or not anything is reading or writing; `None` when the application
    /// drops the stream (or unwraps it) first. A watcher task that awaits it therefore always
    /// ends.
    ///
    /// The future holds no descriptor and needs no runtime: any executor can poll it.
    ///
    /// # Platform
    ///
    /// On Linux and Android it resolves at the kernel's verdict, with no read or write pending
    /// (an error-only epoll registration). Elsewhere it resolves when a read or write on the
    /// stream (or a clone's `dead()` after one) sees the death, or when the stream is dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing, and the death stays latched for the next
    /// call, for the stream, and for every clone of this handle.
    pub fn dead(&self) -> Dead {
        Dead {
            wait: Wait::new(&self.latch, Until::Dead),
        }
    }

    /// Resolves when the peer is gone: `Some(ending)` at the first [`Ending`] the kernel
    /// shows, the peer's clean close ([`Ending::Closed`], a FIN) included, whether or not
    /// anything is reading; `None` when the application drops the stream (or unwraps it) first.
    ///
    /// This is what a handler that should stop when its client leaves waits for: an SSE stream,
    /// a long poll, a long job. Use [`dead`](Self::dead) instead where a half-closed peer
    /// (one that sent its FIN and still reads our answer) must be served to the end.
    ///
    /// The value is the *first* ending: a peer that closed and later reset the connection is
    /// [`Closed`](Ending::Closed) here and, for the reads and writes after the reset, a
    /// [`DeadPeer`] with [`Ending::Aborted`].
    ///
    /// The future holds no descriptor and needs no runtime: any executor can poll it.
    ///
    /// ```
    /// # async fn run() -> std::io::Result<()> {
    /// use deadpeer::{Ending, KeepaliveListener, KeepalivePolicy};
    /// use tokio::io::AsyncWriteExt;
    ///
    /// let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
    /// let client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
    /// let (stream, _) = listener.accept().await?;
    /// let gone = stream.liveness().gone();
    /// drop(client); // the client leaves: its FIN arrives, nothing reads the stream
    /// assert_eq!(gone.await, Some(Ending::Closed));
    /// # Ok(()) }
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
    /// ```
    ///
    /// # Platform
    ///
    /// On Linux and Android it resolves at the FIN or the kernel's verdict, with no read or
    /// write pending (`EPOLLRDHUP` on the same error-only registration). Elsewhere it resolves
    /// when a read sees the EOF or a read or write sees the death, or when the stream is
    /// dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the ending stays latched for the next call and for every clone.
    pub fn gone(&self) -> Gone {
        Gone {
            wait: Wait::new(&self.latch, Until::Gone),
        }
    }

    /// The first ending seen, without waiting: the peer's FIN or a death; `None` while neither
    /// has been seen.
    pub fn ending(&self) -> Option<Ending> {
        self.latch.ending()
    }

    /// Whether the peer is gone: an ending was seen (its FIN, or the kernel closed the
    /// connection). One atomic load, no round trip: the check a connection pool makes before
    /// handing a connection out (deadpool's `recycle`, bb8's `has_broken`), which also catches
    /// a server that closed the connection cleanly, where [`is_dead`](Self::is_dead) stays
    /// `false`.
    pub fn is_gone(&self) -> bool {
        self.latch.ending().is_some()
    }

    /// What is known now, without waiting: a death that the kernel declared, or that the stream
    /// was dropped.
    pub fn state(&self) -> State {
        self.latch.state()
    }

    /// Whether a death has been seen.
    pub fn is_dead(&self) -> bool {
        self.latch.latched().is_some()
    }

    /// Whether deadpeer's reaper watches the connection now, so that [`dead`](Self::dead)
    /// resolves the moment the kernel declares the peer dead, even with nothing reading or
    /// writing.
    ///
    /// `false` when the watch could not be started (no epoll instance or reaper thread could be
    /// had, as when the process is out of descriptors, `EMFILE`; a WARN `cannot watch
    /// connection` and the metric `deadpeer.watch_failures` said so), on systems without epoll,
    /// for a socket that was already dead when it was wrapped (its death is latched at once), and
    /// once the stream is gone. Unwatched, `dead()` still resolves
    /// when a read or write sees the death. Nothing is cached: the next
    /// [`KeepaliveStream::liveness`](crate::KeepaliveStream::liveness) tries again.
    pub fn is_watched(&self) -> bool {
        self.latch.is_watched()
    }

    /// The peer's address (an IPv4-mapped address as IPv4).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.latch.meta.peer_addr
    }

    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.latch.meta.local_addr
    }

    /// The policy the connection runs under, if deadpeer applied or verified one.
    pub fn policy(&self) -> Option<KeepalivePolicy> {
        self.latch.meta.policy
    }
}

impl fmt::Debug for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Liveness")
            .field("peer_addr", &self.latch.meta.peer_addr)
            .field("state", &self.latch.state())
            .finish()
    }
}

/// A connection whose [`Liveness`] deadpeer can give, however it is wrapped: what axum's and
/// tonic's integrations and the layers take. Sealed.
///
/// | connection | feature |
/// |---|---|
/// | [`KeepaliveStream`](crate::KeepaliveStream) | `tokio` |
/// | [`tls::TlsStream`] (TLS over a `KeepaliveStream`) | `rustls` |
/// | `hyper_util::rt::TokioIo<T>` for any `T` here | `hyper` |
///
#[cfg_attr(feature = "rustls", doc = "[`tls::TlsStream`]: crate::tls::TlsStream")]
#[cfg_attr(not(feature = "rustls"), doc = docs_rs!("`tls::TlsStream`", "tls/type.TlsStream.html"))]
pub trait AsLiveness: sealed::Sealed {
    /// The connection's [`Liveness`]; the first call starts watching it (see
    /// [`KeepaliveStream::liveness`](crate::KeepaliveStream::liveness)).
    fn liveness(&self) -> Liveness;
}

impl AsLiveness for crate::KeepaliveStream {
    fn liveness(&self) -> Liveness {
        crate::KeepaliveStream::liveness(self)
    }
}

pub(crate) mod sealed {
    /// Seals [`AsLiveness`](super::AsLiveness): implemented next to each connection type.
    pub trait Sealed {}
    impl Sealed for crate::KeepaliveStream {}
}

/// The future returned by [`Liveness::dead`].
#[must_use = "futures do nothing unless polled"]
pub struct Dead {
    wait: Wait,
}

/// The future returned by [`Liveness::gone`].
#[must_use = "futures do nothing unless polled"]
pub struct Gone {
    wait: Wait,
}

/// A wait on a connection's latch, shared by [`Dead`] and [`Gone`].
struct Wait {
    latch: Arc<Latch>,
    until: Until,
    /// This future's place among the connection's waiters, once it has waited.
    slot: Option<usize>,
}

/// What `dead()` resolves to once the connection is settled: `Some(death)`, or `None` for a
/// closed stream; `Pending` while it is alive.
fn dead_settled(latch: &Latch) -> Poll<Option<DeadPeer>> {
    match latch.state() {
        State::Alive => Poll::Pending,
        State::Dead(dead) => Poll::Ready(Some(dead)),
        State::Closed => Poll::Ready(None),
    }
}

/// What `gone()` resolves to: the first ending, or `None` for a closed stream.
fn gone_settled(latch: &Latch) -> Poll<Option<Ending>> {
    match latch.ending() {
        Some(ending) => Poll::Ready(Some(ending)),
        None if latch.is_closed() => Poll::Ready(None),
        None => Poll::Pending,
    }
}

impl Wait {
    fn new(latch: &Arc<Latch>, until: Until) -> Self {
        Self {
            latch: Arc::clone(latch),
            until,
            slot: None,
        }
    }

    fn poll<T>(&mut self, cx: &mut Context<'_>, settled: fn(&Latch) -> Poll<T>) -> Poll<T> {
        let Wait { latch, until, slot } = self;
        if slot.is_none() {
            if let ready @ Poll::Ready(_) = settled(latch) {
                return ready;
            }
        }
        let mut inner = latch.lock();
        // Endings and closes are published under this lock, so nothing is missed in between.
        if let ready @ Poll::Ready(_) = settled(latch) {
            if let Some(i) = slot.take() {
                inner.waiters.leave(i);
            }
            return ready;
        }
        match *slot {
            Some(i) => inner.waiters.update(i, cx.waker(), *until),
            None => *slot = Some(inner.waiters.join(cx.waker(), *until)),
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.latch.lock().waiters.leave(i);
        }
    }
}

impl Future for Dead {
    type Output = Option<DeadPeer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DeadPeer>> {
        self.wait.poll(cx, dead_settled)
    }
}

impl Future for Gone {
    type Output = Option<Ending>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Ending>> {
        self.wait.poll(cx, gone_settled)
    }
}

impl fmt::Debug for Dead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dead").finish_non_exhaustive()
    }
}

impl fmt::Debug for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gone").finish_non_exhaustive()
    }
}
