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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::DeadPeer;
use crate::policy::KeepalivePolicy;
use crate::sys::{self, OnError, Report, TcpInfo, WatchedFd};
use crate::trace;

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

/// What a death report says about its connection, captured when the stream is wrapped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) policy: Option<KeepalivePolicy>,
    /// When the stream was wrapped: milliseconds on the coarse clock (`sys::coarse_now`).
    pub(crate) since_ms: u64,
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
            since_ms: sys::coarse_now().as_millis() as u64,
        }
    }
}

/// State shared by a stream and its `Liveness` handles.
pub(crate) struct Shared {
    latch: OnceLock<DeadPeer>,
    closed: AtomicBool,
    /// Serialises "read the socket, classify, latch", and guards the watched descriptor.
    inner: Mutex<Inner>,
    meta: Meta,
    /// Where the event goes when the reaper thread, not the application, sees the death.
    context: trace::Context,
}

#[derive(Default)]
struct Inner {
    socket: WatchedFd,
    waiters: Waiters,
}

/// The wakers of pending `Dead` futures, by slot. Most connections have one watcher, kept
/// without an allocation.
#[derive(Default)]
enum Waiters {
    #[default]
    None,
    /// Slot 0 only; `None` once woken.
    One(Option<Waker>),
    /// Any number of slots: `None` is free, `Some(None)` taken and woken.
    Many(Vec<Option<Option<Waker>>>),
}

impl Waiters {
    /// Takes a free slot for `waker` and returns it.
    fn join(&mut self, waker: &Waker) -> usize {
        match self {
            Waiters::None => {
                *self = Waiters::One(Some(waker.clone()));
                0
            }
            Waiters::One(first) => {
                let first = first.take();
                *self = Waiters::Many(vec![Some(first), Some(Some(waker.clone()))]);
                1
            }
            Waiters::Many(slots) => {
                let i = slots.iter().position(Option::is_none).unwrap_or_else(|| {
                    slots.push(None);
                    slots.len() - 1
                });
                slots[i] = Some(Some(waker.clone()));
                i
            }
        }
    }

    /// Refreshes the waker of slot `i`.
    fn update(&mut self, i: usize, waker: &Waker) {
        let w = match self {
            Waiters::One(w) if i == 0 => w,
            Waiters::Many(slots) => match slots.get_mut(i) {
                Some(Some(w)) => w,
                _ => return,
            },
            _ => return,
        };
        if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *w = Some(waker.clone());
        }
    }

    /// Frees slot `i`.
    fn leave(&mut self, i: usize) {
        match self {
            Waiters::One(_) if i == 0 => *self = Waiters::None,
            Waiters::Many(slots) => {
                if let Some(slot) = slots.get_mut(i) {
                    *slot = None;
                }
            }
            _ => {}
        }
    }

    /// Wakes every waiter: run with the connection's lock released (taken out with
    /// `mem::take`), each waker isolated, so that a panicking waker stops no other.
    fn wake_all(self) {
        let wake = |w: Waker| {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
        };
        match self {
            Waiters::None => {}
            Waiters::One(w) => w.into_iter().for_each(wake),
            Waiters::Many(slots) => slots.into_iter().flatten().flatten().for_each(wake),
        }
    }
}

impl Shared {
    pub(crate) fn new(meta: Meta) -> Self {
        Self {
            latch: OnceLock::new(),
            closed: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            meta,
            context: trace::Context::current(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The guarded sections cannot panic half-way; a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latched death, if any: one atomic load, for the hot path.
    #[inline]
    pub(crate) fn latched(&self) -> Option<&DeadPeer> {
        self.latch.get()
    }

    /// Starts watching `socket` for its death, unless it is already watched (a failed watch is
    /// tried again). Without the reaper (no epoll or thread could be had now), deaths are still
    /// seen by reads and writes.
    pub(crate) fn watch(self: &Arc<Self>, socket: sys::Borrowed<'_>) {
        let result = {
            let mut inner = self.lock();
            if self.closed.load(Ordering::Relaxed)
                || self.latch.get().is_some()
                || inner.socket.is_watching()
            {
                return;
            }
            let target: Weak<dyn OnError> = Arc::downgrade(&(Arc::clone(self) as Arc<dyn OnError>));
            inner.socket.watch(socket, target)
        };
        // Reported with the lock released.
        match result {
            Ok(()) => trace::watch_started(),
            // No watch on this OS: said once per process (`trace::platform_limits`).
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => trace::watch_failed(self.meta.peer_addr, &e),
        }
    }

    /// Whether the reaper watches the socket now (see [`Liveness::is_watched`]).
    pub(crate) fn is_watched(&self) -> bool {
        self.lock().socket.is_watching()
    }

    /// The verdict on `socket` after `observer` looked at it: the latched death, a new one
    /// (latched, every waiter woken, then announced), or `None` while the kernel keeps the
    /// connection open. `known` is a `TCP_INFO` the caller already read showing state `CLOSE`
    /// (final: it no longer changes); `None` reads it here, under the lock.
    pub(crate) fn verdict(
        &self,
        socket: sys::Borrowed<'_>,
        observer: Observer,
        known: Option<TcpInfo>,
    ) -> Option<DeadPeer> {
        let (dead, waiters) = {
            let mut inner = self.lock();
            self.judge(&mut inner.waiters, socket, observer, known)
        };
        if let Some(waiters) = waiters {
            waiters.wake_all();
            if let Some(dead) = &dead {
                trace::dead_peer_detected(dead, None);
            }
        }
        dead
    }

    /// The verdict, under the lock: the death, and, when this call latched it, the waiters to
    /// wake (taken out of the lock). Nothing from outside deadpeer runs here.
    fn judge(
        &self,
        waiters: &mut Waiters,
        socket: sys::Borrowed<'_>,
        observer: Observer,
        known: Option<TcpInfo>,
    ) -> (Option<DeadPeer>, Option<Waiters>) {
        if let Some(dead) = self.latch.get() {
            return (Some(dead.clone()), None);
        }
        let info = known.or_else(|| sys::tcp_info(&socket).ok());
        if info.is_some_and(|i| i.state != TcpInfo::CLOSE) {
            return (None, None);
        }
        // The kernel closed the connection (or, without TCP_INFO, may have). The errno that
        // names the reason is `seen` unless `seen` is only the aftermath (EPIPE, ENOTCONN) or
        // an EOF: then the reason is still pending in SO_ERROR, unless someone consumed it.
        let pending_error = |socket: sys::Borrowed<'_>| {
            sys::take_error(&socket)
                .ok()
                .flatten()
                .and_then(|e| e.raw_os_error())
        };
        let errno = match observer {
            // Taken by `wrap`, which saw `CLOSE` first; `None` when someone else had taken it:
            // nothing says why (`Cause::Aborted`, no errno).
            Observer::Wrap { errno } => errno,
            Observer::Io { seen, shut_down } => match seen {
                Some(errno) if !sys::is_aftermath(errno) => Some(errno),
                _ => match pending_error(socket) {
                    Some(errno) => Some(errno),
                    // EPIPE with nothing pending: the reason was taken by an earlier call.
                    None if seen.is_some() && !shut_down => seen,
                    // EOF, or EPIPE after the application's own shutdown: no death.
                    None => return (None, None),
                },
            },
            Observer::Reaper => match pending_error(socket) {
                Some(errno) => Some(errno),
                None => return (None, None),
            },
        };
        let cause = match errno {
            Some(errno) => match sys::classify(errno, info.as_ref()) {
                Some(cause) => cause,
                None => return (None, None),
            },
            None => crate::Cause::Aborted,
        };
        let idle_for = match observer {
            // `tcpi_last_data_recv` of a connection that died before deadpeer saw it may
            // count from before it was ever established: not an idle time to report.
            Observer::Wrap { .. } => None,
            _ => info.map(|i| i.last_data_recv),
        };
        let dead = DeadPeer::new(
            cause,
            self.meta.peer_addr,
            self.meta.local_addr,
            sys::coarse_now().saturating_sub(Duration::from_millis(self.meta.since_ms)),
            idle_for,
            self.meta.policy,
            errno,
        );
        // Under the lock no other verdict is in progress, so this latches. The death is
        // latched and its waiters taken before anything outside deadpeer runs: the event and
        // the metrics follow, with the lock released.
        crate::error::recent::remember(&dead);
        let dead = self.latch.get_or_init(|| dead).clone();
        (Some(dead), Some(std::mem::take(waiters)))
    }

    /// The stream is gone (`open` is its socket when it lives on, unwrapped): stop watching and
    /// wake every `dead()`, which then resolves to `None`.
    pub(crate) fn close(&self, open: Option<sys::Borrowed<'_>>) {
        let (ended, waiters) = {
            let mut inner = self.lock();
            // `close` runs twice when a stream is unwrapped (then its latch drops): count once.
            let ended = inner.socket.is_watching();
            inner.socket.release(open);
            self.closed.store(true, Ordering::Release);
            (ended, std::mem::take(&mut inner.waiters))
        };
        waiters.wake_all();
        if ended {
            trace::watch_ended();
        }
    }

    /// What [`Connections`](crate::connections::Connections) shows of a connection: `None` once
    /// the stream is gone; else its description, a fresh `TCP_INFO` (read under the lock, while
    /// the socket is watched: the invariant of `WatchedFd`), and its death, if any.
    pub(crate) fn view(&self) -> Option<(Meta, Option<TcpInfo>, Option<DeadPeer>)> {
        let inner = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let info = inner.socket.with(|fd| sys::tcp_info(&fd).ok()).flatten();
        Some((self.meta, info, self.latch.get().cloned()))
    }

    /// Whether the stream is gone (dropped or unwrapped).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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

    /// `Some(outcome)` once settled: `Some(dead)` for a death, `None` for a closed stream.
    fn settled(&self) -> Option<Option<DeadPeer>> {
        match self.state() {
            State::Alive => None,
            State::Dead(dead) => Some(Some(dead)),
            State::Closed => Some(None),
        }
    }
}

impl OnError for Shared {
    fn on_error(&self) -> Option<Report> {
        let (dead, waiters) = {
            let mut guard = self.lock();
            let Inner { socket, waiters } = &mut *guard;
            // Released: the stream is gone, and so is the socket.
            socket.with(|fd| self.judge(waiters, fd, Observer::Reaper, None))?
        };
        waiters?.wake_all();
        let (dead, context) = (dead?, self.context.clone());
        Some(Box::new(move || {
            trace::dead_peer_detected(&dead, Some(&context))
        }))
    }
}

/// Who asks for a verdict, and what it saw.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Observer {
    /// A read or write of the stream: `seen` is its errno, `None` for an EOF; `shut_down` says
    /// the application shut down its write side, which makes `EPIPE` its own doing.
    Io { seen: Option<i32>, shut_down: bool },
    /// The reaper thread, told of an error or hang-up.
    Reaper,
    /// `KeepaliveStream::wrap` or `new`, given a socket the kernel had already closed, with the
    /// pending errno it took: the first observer, so a close with no errno left is a death
    /// whose reason someone else took.
    Wrap { errno: Option<i32> },
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
    shared: Arc<Shared>,
}

impl Liveness {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// A reference to the shared state that does not keep it alive, for
    /// [`Connections`](crate::connections::Connections).
    pub(crate) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.shared)
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
            shared: Arc::clone(&self.shared),
            slot: None,
        }
    }

    /// What is known now, without waiting: a death that the kernel declared, or that the stream
    /// was dropped.
    pub fn state(&self) -> State {
        self.shared.state()
    }

    /// Whether a death has been seen.
    pub fn is_dead(&self) -> bool {
        self.shared.latched().is_some()
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
        self.shared.is_watched()
    }

    /// The peer's address (an IPv4-mapped address as IPv4).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.shared.meta.peer_addr
    }

    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.meta.local_addr
    }

    /// The policy the connection runs under, if deadpeer applied or verified one.
    pub fn policy(&self) -> Option<KeepalivePolicy> {
        self.shared.meta.policy
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
    shared: Arc<Shared>,
    /// This future's place among the connection's waiters, once it has waited.
    slot: Option<usize>,
}

impl Future for Dead {
    type Output = Option<DeadPeer>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<DeadPeer>> {
        let Dead { shared, slot } = &mut *self;
        if slot.is_none() {
            if let Some(outcome) = shared.settled() {
                return Poll::Ready(outcome);
            }
        }
        let mut inner = shared.lock();
        // Deaths and closes are published under this lock, so nothing is missed in between.
        if let Some(outcome) = shared.settled() {
            if let Some(i) = slot.take() {
                inner.waiters.leave(i);
            }
            return Poll::Ready(outcome);
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
            self.shared.lock().waiters.leave(i);
        }
    }
}

impl fmt::Debug for Dead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dead").finish_non_exhaustive()
    }
}
