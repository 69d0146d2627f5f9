//! The state a stream shares with its `Liveness` handles: the latched verdict, the first
//! ending, the closed flag, and, under one lock, the watched descriptor and the waiters.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::waiters::Waiters;
use super::{Meta, Observer, classify, recent};
use crate::ending::Ending;
use crate::error::{Cause, DeadPeer, Details};
use crate::liveness::State;
use crate::report;
use crate::sys::{self, OnError, Report, TcpInfo, WatchedFd};

/// The latch of one connection: whichever observer sees the death first classifies it here,
/// and every other observer gets that same [`DeadPeer`].
pub(crate) struct Latch {
    verdict: OnceLock<DeadPeer>,
    closed: AtomicBool,
    /// The first ending seen, a FIN or a death (`Ending::index`); [`NO_ENDING`] until then.
    /// Written under the lock, read without it.
    ending: AtomicU8,
    /// The application shut down its write side (set by the `Owner`): `EPIPE` is then its own
    /// doing, and the peer's FIN leaves the socket in `CLOSE` with no error.
    shut_down: AtomicBool,
    /// Serialises "read the socket, classify, latch", and guards the watched descriptor.
    inner: Mutex<Inner>,
    pub(crate) meta: Meta,
    /// Where the event goes when the reaper thread, not the application, sees the death.
    context: report::Context,
}

#[derive(Default)]
pub(crate) struct Inner {
    socket: WatchedFd,
    pub(crate) waiters: Waiters,
}

/// What a verdict asks: the socket, who looks at it, and a `TCP_INFO` the caller already read.
struct Case<'a> {
    socket: sys::Borrowed<'a>,
    observer: Observer,
    known: Option<TcpInfo>,
}

/// What [`Latch::view`] shows of a connection.
pub(crate) struct View {
    pub(crate) meta: Meta,
    pub(crate) tcp_info: Option<TcpInfo>,
    pub(crate) dead_peer: Option<DeadPeer>,
    pub(crate) ending: Option<Ending>,
}

/// [`Latch::ending`] before any ending.
const NO_ENDING: u8 = u8::MAX;

impl Latch {
    pub(crate) fn new(meta: Meta) -> Self {
        Self {
            verdict: OnceLock::new(),
            closed: AtomicBool::new(false),
            ending: AtomicU8::new(NO_ENDING),
            shut_down: AtomicBool::new(false),
            inner: Mutex::new(Inner::default()),
            meta,
            context: report::Context::current(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // The guarded sections cannot panic half-way; a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latched death, if any: one atomic load, for the hot path.
    #[inline]
    pub(crate) fn latched(&self) -> Option<&DeadPeer> {
        self.verdict.get()
    }

    /// Starts watching `socket` for its death, unless it is already watched (a failed watch is
    /// tried again). Without the reaper (no epoll or thread could be had now), deaths are still
    /// seen by reads and writes.
    pub(crate) fn watch(self: &Arc<Self>, socket: sys::Borrowed<'_>) {
        let result = {
            let mut inner = self.lock();
            if self.closed.load(Ordering::Relaxed)
                || self.verdict.get().is_some()
                || inner.socket.is_watching()
            {
                return;
            }
            let target: Weak<dyn OnError> = Arc::downgrade(&(Arc::clone(self) as Arc<dyn OnError>));
            inner.socket.watch(socket, target, report::reaper_replaced)
        };
        // Reported with the lock released.
        match result {
            Ok(()) => report::watch_started(),
            // No watch on this OS: said once per process (`report::platform_limits`).
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => report::watch_failed(self.meta.peer_addr, &e),
        }
    }

    /// Whether the reaper watches the socket now (see `Liveness::is_watched`).
    pub(crate) fn is_watched(&self) -> bool {
        self.lock().socket.is_watching()
    }

    /// The verdict on `socket` after `observer` looked at it: the latched death, a new one
    /// (latched, every waiter woken, then announced), or `None` while the kernel keeps the
    /// connection open (an EOF then latches the ending `closed`, announced the same way).
    /// `known` is a `TCP_INFO` the caller already read showing state `CLOSE` (final: it no
    /// longer changes); `None` reads it here, under the lock.
    pub(crate) fn verdict(
        &self,
        socket: sys::Borrowed<'_>,
        observer: Observer,
        known: Option<TcpInfo>,
    ) -> Option<DeadPeer> {
        let case = Case {
            socket,
            observer,
            known,
        };
        let (dead, waiters) = {
            let mut inner = self.lock();
            self.judge(&mut inner.waiters, case)
        };
        if let Some(waiters) = waiters {
            waiters.wake_all();
            match &dead {
                Some(dead) => report::connection_ended(dead, None),
                None => report::peer_closed(
                    self.meta.peer_addr,
                    self.meta.local_addr,
                    self.meta.age(),
                    None,
                ),
            }
        }
        dead
    }

    /// Under the lock, when `observer` saw no death: whether it saw the peer's FIN (an EOF, or
    /// `EPOLLRDHUP`) on a connection the kernel keeps open, or whose close our own shutdown
    /// completed (`CLOSE` with no error). If so, and no ending is latched, this latches
    /// [`Ending::Closed`] and takes out the waiters of `gone()` to wake. In `CLOSE` with no error
    /// pending and no shutdown of ours, a read or write took the error of a reset instead: it
    /// latches the death in a moment.
    fn no_death(
        &self,
        waiters: &mut Waiters,
        observer: Observer,
        info: Option<&TcpInfo>,
    ) -> (Option<DeadPeer>, Option<Waiters>) {
        let fin = matches!(
            observer,
            Observer::Io { seen: None } | Observer::Reaper { peer_closed: true }
        );
        // Without `TCP_INFO` (off Linux) an EOF is taken for the FIN it usually is.
        let open = info.is_none_or(|i| i.state != TcpInfo::CLOSE);
        if !fin
            || !(open || self.shut_down.load(Ordering::SeqCst))
            || self.ending.load(Ordering::Relaxed) != NO_ENDING
            || self.closed.load(Ordering::Relaxed)
        {
            return (None, None);
        }
        self.ending.store(Ending::Closed.index(), Ordering::Release);
        (None, Some(waiters.take_gone()))
    }

    /// Records the application's own shutdown of the write side.
    pub(crate) fn mark_shut_down(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
    }

    /// The first ending seen, if any: the peer's FIN or a death.
    #[inline]
    pub(crate) fn ending(&self) -> Option<Ending> {
        Ending::from_index(self.ending.load(Ordering::Acquire))
    }

    /// The verdict, under the lock: the death, and, when this call latched it, the waiters to
    /// wake (taken out of the lock). Nothing from outside deadpeer runs here.
    fn judge(&self, waiters: &mut Waiters, case: Case<'_>) -> (Option<DeadPeer>, Option<Waiters>) {
        let Case {
            socket,
            observer,
            known,
        } = case;
        if let Some(dead) = self.verdict.get() {
            return (Some(dead.clone()), None);
        }
        let info = known.or_else(|| sys::tcp_info(&socket).ok());
        if info.is_some_and(|i| i.state != TcpInfo::CLOSE) {
            return self.no_death(waiters, observer, info.as_ref());
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
            Observer::Io { seen } => match seen {
                Some(errno) if !classify::is_aftermath(errno) => Some(errno),
                _ => match pending_error(socket) {
                    Some(errno) => Some(errno),
                    // EPIPE with nothing pending: the reason was taken by an earlier call.
                    None if seen.is_some() && !self.shut_down.load(Ordering::SeqCst) => seen,
                    // EOF, or EPIPE after the application's own shutdown: no death.
                    None => return self.no_death(waiters, observer, info.as_ref()),
                },
            },
            Observer::Reaper { .. } => match pending_error(socket) {
                Some(errno) => Some(errno),
                None => return self.no_death(waiters, observer, info.as_ref()),
            },
        };
        let cause = match errno {
            Some(errno) => match classify::classify(errno, info.as_ref()) {
                Some(cause) => cause,
                None => return self.no_death(waiters, observer, info.as_ref()),
            },
            None => Cause::Aborted,
        };
        let info = match observer {
            // `TCP_INFO` of a connection that died before deadpeer saw it may count from
            // before it was ever established: not the moment of death to report.
            Observer::Wrap { .. } => None,
            _ => info,
        };
        let ending = classify::ending_of(cause, info.as_ref());
        let dead = DeadPeer::new(Details {
            cause,
            peer_addr: self.meta.peer_addr,
            local_addr: self.meta.local_addr,
            connected_for: self.meta.age(),
            idle_for: info.map(|i| i.last_data_recv),
            policy: self.meta.policy,
            raw_os_error: errno,
            ending,
            tcp_info: info,
        });
        // Under the lock no other verdict is in progress, so this latches. The death is
        // latched and its waiters taken before anything outside deadpeer runs: the event and
        // the metrics follow, with the lock released.
        recent::remember(&dead);
        let dead = self.verdict.get_or_init(|| dead).clone();
        // The first ending, unless the peer's FIN came first.
        let _ = self.ending.compare_exchange(
            NO_ENDING,
            ending.index(),
            Ordering::Release,
            Ordering::Relaxed,
        );
        (Some(dead), Some(std::mem::take(waiters)))
    }

    /// The stream is gone (`open` is its socket when it lives on, unwrapped): stop watching and
    /// wake every `dead()`, which then resolves to `None`.
    pub(crate) fn close(&self, open: Option<sys::Borrowed<'_>>) {
        let (ended, waiters) = {
            let mut inner = self.lock();
            // `close` runs twice when a stream is unwrapped (then its owner drops): count once.
            let ended = inner.socket.is_watching();
            inner.socket.release(open);
            self.closed.store(true, Ordering::Release);
            (ended, std::mem::take(&mut inner.waiters))
        };
        waiters.wake_all();
        if ended {
            report::watch_ended();
        }
    }

    /// What [`Connections`](crate::connections::Connections) shows of a connection: `None` once
    /// the stream is gone; else its description, a fresh `TCP_INFO` (read under the lock, while
    /// the socket is watched: the invariant of `WatchedFd`), its death and its first ending, if
    /// any.
    pub(crate) fn view(&self) -> Option<View> {
        let inner = self.lock();
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        Some(View {
            meta: self.meta,
            tcp_info: inner.socket.with(|fd| sys::tcp_info(&fd).ok()).flatten(),
            dead_peer: self.verdict.get().cloned(),
            ending: self.ending(),
        })
    }

    /// Whether the stream is gone (dropped or unwrapped).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// What is known now: the latched death, a closed stream, or neither.
    pub(crate) fn state(&self) -> State {
        if let Some(dead) = self.verdict.get() {
            State::Dead(dead.clone())
        } else if self.closed.load(Ordering::Acquire) {
            State::Closed
        } else {
            State::Alive
        }
    }
}

impl OnError for Latch {
    fn on_error(&self, peer_closed: bool) -> Option<Report> {
        let (dead, waiters) = {
            let mut guard = self.lock();
            let Inner { socket, waiters } = &mut *guard;
            // Released: the stream is gone, and so is the socket.
            socket.with(|socket| {
                let case = Case {
                    socket,
                    observer: Observer::Reaper { peer_closed },
                    known: None,
                };
                self.judge(waiters, case)
            })?
        };
        waiters?.wake_all();
        let context = self.context.clone();
        Some(match dead {
            Some(dead) => Box::new(move || report::connection_ended(&dead, Some(&context))),
            None => {
                let meta = self.meta;
                let age = meta.age();
                Box::new(move || {
                    report::peer_closed(meta.peer_addr, meta.local_addr, age, Some(&context));
                })
            }
        })
    }
}
