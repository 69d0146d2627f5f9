//! [`Liveness`]: learn that a peer died even when nothing reads or writes its connection.
//!
//! The kernel reports a death once: as the error of the next read, or as `SO_ERROR`, whichever is
//! asked first; after that reads return EOF. A [`KeepaliveStream`](crate::KeepaliveStream) and its
//! `Liveness` handles share one latch, so whichever sees the death first classifies it, emits the
//! `dead peer detected` event, and every later read, write and [`Liveness::dead`] returns that
//! same [`DeadPeer`].
//!
//! `dead()` is event-driven: the kernel wakes epoll with `EPOLLERR|EPOLLHUP` when it kills a
//! connection, even if no read is pending, and Tokio's error readiness
//! ([`Interest::ERROR`](tokio::io::Interest::ERROR)) delivers that wake-up. There is no timer and
//! no polling; a live connection costs nothing.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::error::DeadPeer;
use crate::policy::KeepalivePolicy;
use crate::{sys, trace};

/// What a [`Liveness`] knows about its connection.
#[derive(Debug, Clone)]
pub enum State {
    /// No death has been seen, and the stream is still held by the application.
    Alive,
    /// The kernel declared the peer dead.
    Dead(DeadPeer),
    /// The application dropped the stream (or took it apart with `into_inner`) without a death.
    Closed,
}

/// The watcher's socket: a duplicate descriptor, registered lazily with the reactor.
enum Watch {
    Unset,
    Fd(OwnedFd),
    Registered(Arc<TcpStream>),
    Closed,
}

/// State shared by a stream and its `Liveness` handles.
pub(crate) struct Shared {
    latch: OnceLock<DeadPeer>,
    /// Serialises "take the error, classify, latch" so that a reader that sees EOF right after a
    /// `Liveness` consumed the error finds the latch set.
    classify: Mutex<()>,
    /// Set while a `Liveness` holds `classify` after taking the socket's error, so that readers
    /// need the lock only then.
    classifying: AtomicBool,
    closed: AtomicBool,
    notify: Notify,
    watch: Mutex<Watch>,
    meta: Meta,
}

/// What a death report says about its connection, captured when the stream is wrapped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) policy: Option<KeepalivePolicy>,
    pub(crate) since: Instant,
}

impl Meta {
    pub(crate) fn new(
        peer_addr: Option<SocketAddr>,
        local_addr: Option<SocketAddr>,
        policy: Option<KeepalivePolicy>,
    ) -> Self {
        Self {
            peer_addr,
            local_addr,
            policy,
            since: Instant::now(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded sections cannot panic half-way; a poisoned lock is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(meta: Meta) -> Self {
        Self {
            latch: OnceLock::new(),
            classify: Mutex::new(()),
            classifying: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
            watch: Mutex::new(Watch::Unset),
            meta,
        }
    }

    /// The latched death, if any: one atomic load, for the hot path.
    #[inline]
    pub(crate) fn latched(&self) -> Option<&DeadPeer> {
        self.latch.get()
    }

    /// The latched death, waiting for a classification in progress elsewhere to finish.
    /// For EOF and `EPIPE`, which follow a death whose error someone else consumed.
    pub(crate) fn latched_after_classify(&self) -> Option<&DeadPeer> {
        let _guard = lock(&self.classify);
        self.latch.get()
    }

    /// The latched death after a successful read, which may be the EOF that follows a death whose
    /// error a `Liveness` just took: two atomic loads, and the lock only in that window.
    #[inline]
    pub(crate) fn latched_after_read(&self) -> Option<&DeadPeer> {
        if let Some(dead) = self.latch.get() {
            return Some(dead);
        }
        if self.classifying.load(Ordering::SeqCst) {
            return self.latched_after_classify();
        }
        None
    }

    /// Classifies an OS error seen on `socket`: a death is latched (with its event, once) and
    /// returned; anything else is `None`.
    pub(crate) fn classify(&self, socket: &impl AsFd, errno: i32) -> Option<DeadPeer> {
        let _guard = lock(&self.classify);
        self.classify_locked(socket, errno)
    }

    /// Takes the socket's pending error (`SO_ERROR`) and classifies it, for a `Liveness` woken by
    /// error readiness.
    fn take_and_classify(&self, socket: &impl AsFd) {
        let _guard = lock(&self.classify);
        self.classifying.store(true, Ordering::SeqCst);
        if let Ok(Some(err)) = sys::take_error(socket) {
            if let Some(errno) = err.raw_os_error() {
                self.classify_locked(socket, errno);
            }
        }
        self.classifying.store(false, Ordering::SeqCst);
    }

    fn classify_locked(&self, socket: &impl AsFd, errno: i32) -> Option<DeadPeer> {
        if let Some(dead) = self.latch.get() {
            return Some(dead.clone());
        }
        let info = sys::tcp_info(socket).ok();
        let cause = sys::classify(errno, info.as_ref())?;
        let dead = DeadPeer::new(
            cause,
            self.meta.peer_addr,
            self.meta.local_addr,
            self.meta.since.elapsed(),
            info.map(|i| i.last_data_recv),
            self.meta.policy,
            Some(errno),
        );
        let dead = self.latch.get_or_init(|| dead).clone();
        trace::dead_peer_detected(&dead);
        self.notify.notify_waiters();
        Some(dead)
    }

    /// Maps an I/O error from the stream: a death becomes the latched `DeadPeer`, anything else
    /// passes through unchanged.
    pub(crate) fn map_error(&self, socket: &impl AsFd, err: io::Error) -> io::Error {
        // `classify` returns a death already latched (as after `EPIPE`) before classifying.
        let dead = match err.raw_os_error() {
            Some(errno) => self.classify(socket, errno),
            None => self.latched_after_classify().cloned(),
        };
        dead.map_or(err, io::Error::from)
    }

    /// Lets a `Liveness` watch `socket` later, without keeping it open past the stream.
    pub(crate) fn prepare_watch(&self, socket: &impl AsFd) {
        let mut watch = lock(&self.watch);
        if matches!(*watch, Watch::Unset) {
            // Without a duplicate, `dead()` still resolves when a read or write sees the death.
            if let Ok(fd) = socket.as_fd().try_clone_to_owned() {
                *watch = Watch::Fd(fd);
            }
        }
    }

    /// The stream is gone: release the watcher's descriptor and wake every `dead()`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let old = std::mem::replace(&mut *lock(&self.watch), Watch::Closed);
        drop(old);
        self.notify.notify_waiters();
    }

    fn watcher(&self) -> Option<Arc<TcpStream>> {
        let mut watch = lock(&self.watch);
        if let Watch::Fd(_) = &*watch {
            let Watch::Fd(fd) = std::mem::replace(&mut *watch, Watch::Unset) else {
                return None;
            };
            // Outside a Tokio runtime (another executor polling `dead()`) there is no reactor
            // to register with; keep the duplicate for a later poll, and meanwhile only reads
            // and writes see deaths.
            if tokio::runtime::Handle::try_current().is_err() {
                *watch = Watch::Fd(fd);
                return None;
            }
            // The duplicate shares the original's file description, which Tokio already made
            // non-blocking. If registration fails, only reads and writes see deaths.
            if let Ok(stream) = TcpStream::from_std(std::net::TcpStream::from(fd)) {
                *watch = Watch::Registered(Arc::new(stream));
            }
        }
        match &*watch {
            Watch::Registered(stream) => Some(Arc::clone(stream)),
            _ => None,
        }
    }

    fn state(&self) -> State {
        if let Some(dead) = self.latch.get() {
            State::Dead(dead.clone())
        } else if self.closed.load(Ordering::Acquire) {
            State::Closed
        } else {
            State::Alive
        }
    }

    /// Resolves once the connection is dead or closed.
    async fn settle(self: Arc<Self>) -> State {
        let mut error_seen = false;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.state() {
                State::Alive => {}
                settled => return settled,
            }
            let watcher = if error_seen { None } else { self.watcher() };
            let Some(watcher) = watcher else {
                notified.await;
                continue;
            };
            tokio::select! {
                _ = &mut notified => {}
                ready = watcher.ready(Interest::ERROR) => {
                    // Error readiness stays set once seen: handle it once, then wait for the latch.
                    error_seen = true;
                    if ready.is_ok() {
                        self.take_and_classify(&*watcher);
                    }
                }
            }
        }
    }
}

/// A handle on a connection's liveness, from
/// [`KeepaliveStream::liveness`](crate::KeepaliveStream::liveness).
///
/// It is `Clone`, `Send` and `Sync`, and does not keep the socket open: once the application drops
/// the stream, the state is [`Closed`](State::Closed) and pending futures release everything.
///
/// # Examples
///
/// End a long-running handler when its client dies, even though it never reads from the client:
///
/// ```
/// # async fn handler(stream: deadpeer::KeepaliveStream<tokio::net::TcpStream>) {
/// let liveness = stream.liveness();
/// let (_tx, mut events) = tokio::sync::mpsc::channel::<String>(8);
/// tokio::select! {
///     dead = liveness.dead() => eprintln!("client gone: {dead}"),
///     _ = events.recv() => { /* push the event to the client */ }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Liveness {
    shared: Arc<Shared>,
}

impl Liveness {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Resolves with the [`DeadPeer`] when the kernel declares the peer dead, whether or not
    /// anything is reading or writing. Stays pending while the peer is alive.
    ///
    /// If the stream is dropped without a death, the future stays pending forever. Dropping the
    /// stream wakes it, and on that poll it releases the duplicate descriptor and its
    /// registration, so it then holds nothing. Use it in a `select!` or with `take_until`; in a
    /// task of its own, use [`settled`](Self::settled), which ends when the stream is dropped.
    ///
    /// Polled outside a Tokio runtime, it cannot watch the socket, and resolves only when a read
    /// or write on the stream sees the death.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future loses nothing, and the death stays latched for the next
    /// call, for the stream, and for every clone of this handle.
    pub fn dead(&self) -> Dead {
        let shared = Arc::clone(&self.shared);
        Dead {
            inner: Box::pin(async move {
                match shared.settle().await {
                    State::Dead(dead) => dead,
                    _ => std::future::pending().await,
                }
            }),
        }
    }

    /// Resolves when the connection is settled: [`State::Dead`] when the kernel declared the peer
    /// dead, [`State::Closed`] when the application dropped the stream first. Never resolves with
    /// [`State::Alive`]. Suited to a spawned watcher task, which then always ends.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`dead`](Self::dead).
    pub fn settled(&self) -> Settled {
        Settled {
            inner: Box::pin(Arc::clone(&self.shared).settle()),
        }
    }

    /// What is known now, without waiting: a death that a read, a write or a `dead()` future
    /// has seen, or that the stream was dropped.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Whether a death has been seen.
    pub fn is_dead(&self) -> bool {
        self.shared.latched().is_some()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.meta.peer_addr
    }
}

impl fmt::Debug for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Liveness")
            .field("peer_addr", &self.shared.meta.peer_addr)
            .field("state", &self.shared.state())
            .finish()
    }
}

/// The future returned by [`Liveness::dead`].
#[must_use = "futures do nothing unless polled"]
pub struct Dead {
    inner: Pin<Box<dyn Future<Output = DeadPeer> + Send>>,
}

impl Future for Dead {
    type Output = DeadPeer;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DeadPeer> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Dead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dead").finish_non_exhaustive()
    }
}

/// The future returned by [`Liveness::settled`].
#[must_use = "futures do nothing unless polled"]
pub struct Settled {
    inner: Pin<Box<dyn Future<Output = State> + Send>>,
}

impl Future for Settled {
    type Output = State;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<State> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for Settled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settled").finish_non_exhaustive()
    }
}
