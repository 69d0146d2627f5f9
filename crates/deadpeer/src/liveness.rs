//! [`Liveness`]: learn that a peer died even when nothing reads or writes its connection.
//!
//! The kernel reports a death once: as the error of the next read or write, or as `SO_ERROR`,
//! whichever is asked first; after that reads return EOF and writes `EPIPE`. A
//! [`KeepaliveStream`](crate::KeepaliveStream) and its `Liveness` handles share one latch, so
//! whichever sees the death first classifies it, emits the `dead peer detected` event, and every
//! later read, write and [`Liveness::dead`] returns that same [`DeadPeer`].
//!
//! A watched connection (one whose `liveness()` was taken) is registered, with its own
//! descriptor, in a process-wide epoll instance that reports nothing but errors and hang-ups; a
//! thread blocked on it classifies the death the moment the kernel declares it. There is no timer
//! and no polling: a live connection costs one epoll registration and nothing else.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use crate::engine::Latch;
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
/// The [`dead`](Self::dead) future and the [`State`] it can be asked for live in this module,
/// [`deadpeer::liveness`](crate::liveness).
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
            latch: Arc::clone(&self.latch),
            slot: None,
        }
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
/// | [`tls::TlsStream`](crate::tls::TlsStream) (TLS over a `KeepaliveStream`) | `rustls` |
/// | `hyper_util::rt::TokioIo<T>` for any `T` here | `hyper` |
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
    latch: Arc<Latch>,
    /// This future's place among the connection's waiters, once it has waited.
    slot: Option<usize>,
}

/// What `dead()` resolves to once the connection is settled: `Some(death)`, or `None` for a
/// closed stream; `Pending` while it is alive.
fn settled(state: State) -> Poll<Option<DeadPeer>> {
    match state {
        State::Alive => Poll::Pending,
        State::Dead(dead) => Poll::Ready(Some(dead)),
        State::Closed => Poll::Ready(None),
    }
}

impl Future for Dead {
    type Output = Option<DeadPeer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DeadPeer>> {
        let Dead { latch, slot } = &mut *self;
        if slot.is_none() {
            if let ready @ Poll::Ready(_) = settled(latch.state()) {
                return ready;
            }
        }
        let mut inner = latch.lock();
        // Deaths and closes are published under this lock, so nothing is missed in between.
        if let ready @ Poll::Ready(_) = settled(latch.state()) {
            if let Some(i) = slot.take() {
                inner.waiters.leave(i);
            }
            return ready;
        }
        match *slot {
            Some(i) => inner.waiters.update(i, cx.waker()),
            None => *slot = Some(inner.waiters.join(cx.waker())),
        }
        Poll::Pending
    }
}

impl Drop for Dead {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            self.latch.lock().waiters.leave(i);
        }
    }
}

impl fmt::Debug for Dead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dead").finish_non_exhaustive()
    }
}
