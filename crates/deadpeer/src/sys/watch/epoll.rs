//! The reaper: one error-only epoll instance for the whole process, and a thread blocked in
//! `epoll_wait` on it, that tells a watched connection the moment the kernel kills it.
//!
//! Each watched socket is registered with its **own** descriptor (no duplicate) and an event mask
//! of `EPOLLRDHUP | EPOLLET`. The kernel always adds `EPOLLERR|EPOLLHUP` to a registration, so the
//! instance reports exactly those and the peer's FIN, once per wake-up of the socket: when the
//! peer closes its side, when the kernel closes the connection with an error, or when a locally
//! shut-down connection finishes closing. Data and window updates wake the socket with
//! `EPOLLIN`/`EPOLLOUT` keys, which the registration filters out in the kernel: the data path
//! never wakes this thread, and no timer runs (docs/kernel.md, "Error-only epoll").
//!
//! The thread never touches a socket itself: an event carries a slot key (index and generation),
//! the slot holds a `Weak` reference to whoever watches, and the watcher reads the socket under
//! its own lock, through [`WatchedFd`].
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use super::table::Table;
use super::{OnError, OnReplaced, Report};

/// A watched socket's descriptor, for reading its state from outside the stream that owns it.
///
/// # Invariant
///
/// While it holds a descriptor, that descriptor is open and is the watched socket: the owner (a
/// `KeepaliveStream`) calls [`release`](Self::release) before it can close the socket, and all
/// access goes through `&self`/`&mut self` behind the owner's mutex, so no use overlaps the
/// release. `KeepaliveStream` (and its split halves) upholds this by dropping its
/// `engine::Owner` (which releases) before its I/O object (field order), by releasing in
/// `into_inner` before giving the I/O object away, and by never handing out `&mut` access to the
/// I/O object (which could replace the socket).
#[derive(Debug)]
pub(crate) struct WatchedFd {
    /// -1 when not watching.
    fd: RawFd,
    /// The reaper's slot key, meaningful while `fd` is not -1.
    key: u64,
}

impl Default for WatchedFd {
    fn default() -> Self {
        Self { fd: -1, key: 0 }
    }
}

impl WatchedFd {
    /// Registers `fd` with the reaper, so that `target` hears about errors on it. Does nothing if
    /// already watching. `on_replaced` is kept by the reaper when this call creates it (the
    /// engine always passes the same function).
    ///
    /// # Errors
    ///
    /// When the reaper cannot be started (no epoll instance or thread) or `epoll_ctl` fails.
    /// Nothing is cached: the next call tries again.
    pub(crate) fn watch(
        &mut self,
        fd: BorrowedFd<'_>,
        target: Weak<dyn OnError>,
        on_replaced: OnReplaced,
    ) -> io::Result<()> {
        if self.fd >= 0 {
            return Ok(());
        }
        let reaper = reaper(on_replaced)?;
        reaper.ensure_thread()?;
        let key = reaper.table().insert(target);
        if let Err(e) = reaper.ctl(libc::EPOLL_CTL_ADD, fd, key) {
            reaper.table().remove(key);
            return Err(e);
        }
        self.fd = fd.as_raw_fd();
        self.key = key;
        Ok(())
    }

    /// Whether a socket is registered (between a successful [`watch`](Self::watch) and
    /// [`release`](Self::release)).
    pub(crate) fn is_watching(&self) -> bool {
        self.fd >= 0
    }

    /// Runs `f` on the socket, or returns `None` once released (or if never watched).
    pub(crate) fn with<R>(&self, f: impl FnOnce(BorrowedFd<'_>) -> R) -> Option<R> {
        if self.fd < 0 {
            return None;
        }
        let raw = self.fd;
        // SAFETY: by the type's invariant, `raw` is open and is the watched socket until
        // `release`, which needs `&mut self` and so cannot run while this borrow lives.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        Some(f(fd))
    }

    /// Stops watching. `open` is the socket itself when it stays open (the stream was unwrapped):
    /// it is then removed from the epoll instance. When the socket is about to close, pass `None`:
    /// closing it removes the registration, and the freed slot makes any event still in flight a
    /// no-op.
    pub(crate) fn release(&mut self, open: Option<BorrowedFd<'_>>) {
        if self.fd < 0 {
            return;
        }
        self.fd = -1;
        let key = self.key;
        // Watching means a reaper exists.
        if let Some(reaper) = REAPER.get() {
            if let Some(fd) = open {
                // ENOENT only if the registration is already gone; nothing to do then.
                let _ = reaper.ctl(libc::EPOLL_CTL_DEL, fd, key);
            }
            reaper.table().remove(key);
        }
    }
}

/// The epoll instance and the table of watchers, for the life of the process; the thread that
/// waits on them can be replaced (`running` says whether one is).
struct Reaper {
    epoll: OwnedFd,
    table: Mutex<Table>,
    running: AtomicBool,
    on_replaced: OnReplaced,
}

/// Set once an epoll instance could be had. A failure is not kept: the next watch tries again.
static REAPER: OnceLock<Reaper> = OnceLock::new();
/// Serialises starting the epoll instance and the thread.
static STARTING: Mutex<()> = Mutex::new(());

fn reaper(on_replaced: OnReplaced) -> io::Result<&'static Reaper> {
    if let Some(reaper) = REAPER.get() {
        return Ok(reaper);
    }
    let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(reaper) = REAPER.get() {
        return Ok(reaper);
    }
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so `OwnedFd` may take it.
    let epoll = unsafe {
        let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    Ok(REAPER.get_or_init(|| Reaper {
        epoll,
        table: Mutex::new(Table::default()),
        running: AtomicBool::new(false),
        on_replaced,
    }))
}

impl Reaper {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding it; a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure a thread waits on the instance: one atomic load once it runs.
    fn ensure_thread(&'static self) -> io::Result<()> {
        if self.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        if self.running.load(Ordering::Acquire) {
            return Ok(());
        }
        let raw = self.epoll.as_raw_fd();
        // Set first: a thread that dies at once clears it after this.
        self.running.store(true, Ordering::Release);
        match std::thread::Builder::new()
            .name("deadpeer-reaper".into())
            .spawn(move || run(raw))
        {
            Ok(_) => Ok(()),
            Err(e) => {
                self.running.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open for the call (`fd` is borrowed, the epoll instance
        // lives in a static), and `event` is a valid `epoll_event` the kernel only reads.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd.as_raw_fd(), &mut event) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Owned by the reaper thread: if the thread dies anyway (a panic in deadpeer's own code, since
/// every callout is isolated), a new thread takes over the same epoll instance and table, and
/// the death is reported. Should no thread be had now, the next watch starts one.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        let Some(reaper) = REAPER.get() else { return };
        reaper.running.store(false, Ordering::Release);
        if std::thread::panicking() {
            let replaced = reaper.ensure_thread();
            let _ = catch_unwind(AssertUnwindSafe(|| {
                (reaper.on_replaced)(replaced.as_ref().err());
            }));
        }
    }
}

/// The reaper thread: waits for error events, has each watcher latch its verdict and wake its
/// waiters, and makes the reports (events, metrics) only while no new error waits, one at a
/// time: a slow log sink delays reports, never verdicts.
fn run(epoll: RawFd) {
    const BATCH: usize = 64;
    let _running = Running;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut targets: Vec<(Arc<dyn OnError>, bool)> = Vec::with_capacity(BATCH);
    let mut reports: VecDeque<Report> = VecDeque::new();
    let Some(reaper) = REAPER.get() else { return };
    loop {
        let timeout = if reports.is_empty() { -1 } else { 0 };
        // SAFETY: the epoll instance lives in a static `Reaper` and is never closed; `events`
        // has room for BATCH entries and the kernel writes at most that many.
        let n =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), BATCH as libc::c_int, timeout) };
        // n < 0 is EINTR; nothing else can fail on a valid instance and buffer.
        let n = usize::try_from(n).unwrap_or(0);
        {
            let table = reaper.table();
            for event in &events[..n] {
                if let Some(target) = table.get(event.u64) {
                    let peer_closed = event.events & libc::EPOLLRDHUP as u32 != 0;
                    targets.push((target, peer_closed));
                }
            }
        }
        for (target, peer_closed) in targets.drain(..) {
            // A panic here (a waker's) is the watcher's alone: the verdict was latched first.
            let told = catch_unwind(AssertUnwindSafe(|| target.on_error(peer_closed)));
            if let Ok(Some(report)) = told {
                reports.push_back(report);
            }
        }
        #[cfg(test)]
        if tests::DIE_NEXT.swap(false, Ordering::SeqCst) {
            panic!("deadpeer test: the reaper thread dies");
        }
        // The ready list is drained: one report, then look for new errors again.
        if n < BATCH {
            if let Some(report) = reports.pop_front() {
                let _ = catch_unwind(AssertUnwindSafe(report));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// The tests here report nothing when a thread is replaced.
    const NO_REPORT: OnReplaced = |_| {};

    /// Makes the reaper thread panic outside every callout, once, after its next batch.
    pub(super) static DIE_NEXT: AtomicBool = AtomicBool::new(false);

    /// Counts the events, and those that carried the peer's FIN.
    #[derive(Default)]
    struct Count(AtomicUsize, AtomicUsize);
    impl OnError for Count {
        fn on_error(&self, peer_closed: bool) -> Option<Report> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if peer_closed {
                self.1.fetch_add(1, Ordering::SeqCst);
            }
            None
        }
    }

    /// The thread ids of the live reaper threads.
    fn reaper_threads() -> Vec<u64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?;
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                (comm.trim() == "deadpeer-reaper").then(|| t.file_name().to_str()?.parse().ok())?
            })
            .collect()
    }

    fn reset(server: TcpStream) {
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
    }

    /// A reaper thread that dies (a real panic on the real thread, outside the callouts) is
    /// replaced at once by a thread on the same epoll instance and table: a socket watched
    /// before the death is still reported after it.
    #[test]
    fn a_dead_reaper_thread_is_replaced_with_its_table() {
        let (c1, s1) = pair();
        let (c2, s2) = pair();
        let first = Arc::new(Count::default());
        let second = Arc::new(Count::default());
        let (mut w1, mut w2) = (WatchedFd::default(), WatchedFd::default());
        w1.watch(
            c1.as_fd(),
            Arc::downgrade(&(first.clone() as Arc<dyn OnError>)),
            NO_REPORT,
        )
        .unwrap();
        w2.watch(
            c2.as_fd(),
            Arc::downgrade(&(second.clone() as Arc<dyn OnError>)),
            NO_REPORT,
        )
        .unwrap();
        // The thread names itself when it first runs, a moment after the spawn returned.
        let until = Instant::now() + Duration::from_secs(5);
        let mut before = reaper_threads();
        while before.is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            before = reaper_threads();
        }
        assert_eq!(before.len(), 1, "{before:?}");

        DIE_NEXT.store(true, Ordering::SeqCst);
        reset(s1);
        assert!(
            wait_for(&first, 1),
            "the death before the panic was not handled"
        );
        let until = Instant::now() + Duration::from_secs(5);
        let mut after = reaper_threads();
        while (after.is_empty() || after == before) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            after = reaper_threads();
        }
        assert_eq!(after.len(), 1, "no replacement: {after:?}");
        assert_ne!(after, before, "the same thread: it did not die");

        reset(s2);
        assert!(wait_for(&second, 1), "the replacement lost the table");
        w1.release(Some(c1.as_fd()));
        w2.release(Some(c2.as_fd()));
    }

    fn wait_for(count: &Count, n: usize) -> bool {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if count.0.load(Ordering::SeqCst) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn a_reset_reaches_the_watcher_and_data_does_not() {
        use std::io::Write;
        let (client, mut server) = pair();
        let count = Arc::new(Count::default());
        let weak: Weak<dyn OnError> = Arc::downgrade(&(count.clone() as Arc<dyn OnError>));
        let mut w = WatchedFd::default();
        w.watch(client.as_fd(), weak, NO_REPORT).unwrap();
        server.write_all(b"data").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "data woke the reaper");
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        assert!(wait_for(&count, 1), "the reset was not reported");
        assert_eq!(w.with(|fd| fd.as_raw_fd()), Some(client.as_raw_fd()));
        assert!(w.is_watching());
        w.release(Some(client.as_fd()));
        assert_eq!(w.with(|_| ()), None);
        assert!(!w.is_watching());
        w.release(None);
        assert!(!w.is_watching(), "a second release is a no-op");
    }

    /// The peer's FIN reaches the watcher once, marked as such; data before and after it does
    /// not, and the reset that follows comes as its own event.
    #[test]
    fn a_fin_reaches_the_watcher_once_and_data_does_not() {
        use std::io::Write;
        let (client, mut server) = pair();
        let count = Arc::new(Count::default());
        let weak: Weak<dyn OnError> = Arc::downgrade(&(count.clone() as Arc<dyn OnError>));
        let mut w = WatchedFd::default();
        w.watch(client.as_fd(), weak, NO_REPORT).unwrap();
        for _ in 0..10 {
            server.write_all(b"data").unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "data woke the reaper");
        server.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(wait_for(&count, 1), "the FIN was not reported");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one FIN, one event");
        assert_eq!(
            count.1.load(Ordering::SeqCst),
            1,
            "the event did not carry RDHUP"
        );
        reset(server);
        assert!(
            wait_for(&count, 2),
            "the reset after the FIN was not reported"
        );
        w.release(Some(client.as_fd()));
    }

    /// The invariant behind `with`: once released, a slot never reaches its old watcher, even
    /// when the descriptor number is reused by another watched socket that then dies.
    #[test]
    fn a_released_slot_is_never_reached_again() {
        let (client, server) = pair();
        let first = Arc::new(Count::default());
        let mut w = WatchedFd::default();
        w.watch(
            client.as_fd(),
            Arc::downgrade(&(first.clone() as Arc<dyn OnError>)),
            NO_REPORT,
        )
        .unwrap();
        let raw = client.as_raw_fd();
        w.release(None);
        drop(client);
        drop(server);

        // Probably the same descriptor number; if not, the check still holds.
        let (client2, server2) = pair();
        let second = Arc::new(Count::default());
        let mut w2 = WatchedFd::default();
        w2.watch(
            client2.as_fd(),
            Arc::downgrade(&(second.clone() as Arc<dyn OnError>)),
            NO_REPORT,
        )
        .unwrap();
        socket2::SockRef::from(&server2)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server2);
        assert!(wait_for(&second, 1));
        assert_eq!(
            first.0.load(Ordering::SeqCst),
            0,
            "fd {raw} reused: old watcher reached"
        );
        w2.release(Some(client2.as_fd()));
    }
}
