//! The reaper: one error-only epoll instance for the whole process, and a thread blocked in
//! `epoll_wait` on it, that tells a watched connection the moment the kernel kills it.
//!
//! Each watched socket is registered with its **own** descriptor (no duplicate) and an event mask
//! of nothing but `EPOLLET`. The kernel always adds `EPOLLERR|EPOLLHUP` to a registration, so the
//! instance reports exactly those, once per wake-up of the socket: when the kernel closes the
//! connection with an error, or when a locally shut-down connection finishes closing. Data,
//! window updates and a peer's FIN wake the socket with `EPOLLIN`/`EPOLLOUT` keys, which the
//! registration filters out in the kernel: the data path never wakes this thread, and no timer
//! runs (docs/kernel.md, "Error-only epoll").
//!
//! The thread never touches a socket itself: an event carries a slot key (index and generation),
//! the slot holds a `Weak` reference to whoever watches, and the watcher reads the socket under
//! its own lock, through [`WatchedFd`].
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Told when the kernel reports an error or hang-up on a watched socket.
pub(crate) trait OnError: Send + Sync {
    /// Runs on the reaper thread. It must be quick and must not block on I/O.
    fn on_error(&self);
}

/// A watched socket's descriptor, for reading its state from outside the stream that owns it.
///
/// # Invariant
///
/// While it holds a descriptor, that descriptor is open and is the watched socket: the owner (a
/// `KeepaliveStream`) calls [`release`](Self::release) before it can close the socket, and all
/// access goes through `&self`/`&mut self` behind the owner's mutex, so no use overlaps the
/// release. `KeepaliveStream` upholds this by dropping its latch (which releases) before its
/// I/O object (field order), by releasing in `into_inner` before giving the I/O object away, and
/// by never handing out `&mut` access to the I/O object (which could replace the socket).
/// `AsTcpStream` is sealed, so every implementation returns a socket its value owns for its
/// whole life.
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
    /// already watching.
    ///
    /// # Errors
    ///
    /// When the reaper cannot be started (no epoll instance or thread) or `epoll_ctl` fails.
    pub(crate) fn watch(
        &mut self,
        fd: BorrowedFd<'_>,
        target: Weak<dyn OnError>,
    ) -> io::Result<()> {
        if self.fd >= 0 {
            return Ok(());
        }
        let reaper = reaper()?;
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
        if let Ok(reaper) = reaper() {
            if let Some(fd) = open {
                // ENOENT only if the registration is already gone; nothing to do then.
                let _ = reaper.ctl(libc::EPOLL_CTL_DEL, fd, key);
            }
            reaper.table().remove(key);
        }
    }
}

struct Reaper {
    epoll: OwnedFd,
    table: Mutex<Table>,
}

static REAPER: OnceLock<Result<Reaper, String>> = OnceLock::new();

fn reaper() -> io::Result<&'static Reaper> {
    REAPER
        .get_or_init(start)
        .as_ref()
        .map_err(|why| io::Error::other(why.clone()))
}

fn start() -> Result<Reaper, String> {
    // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new descriptor that
    // nothing else owns, so `OwnedFd` may take it.
    let epoll = unsafe {
        let fd = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        if fd < 0 {
            return Err(format!(
                "deadpeer cannot watch connections: epoll_create1 failed ({})",
                io::Error::last_os_error()
            ));
        }
        OwnedFd::from_raw_fd(fd)
    };
    let raw = epoll.as_raw_fd();
    std::thread::Builder::new()
        .name("deadpeer-reaper".into())
        .spawn(move || run(raw))
        .map_err(|e| format!("deadpeer cannot watch connections: no reaper thread ({e})"))?;
    Ok(Reaper {
        epoll,
        table: Mutex::new(Table::default()),
    })
}

impl Reaper {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Nothing panics while holding it; a poisoned table is still consistent.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ctl(&self, op: libc::c_int, fd: BorrowedFd<'_>, key: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLET as u32,
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

/// The reaper thread: waits for error events and hands each to its watcher.
fn run(epoll: RawFd) {
    const BATCH: usize = 64;
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
    let mut targets: Vec<Arc<dyn OnError>> = Vec::with_capacity(BATCH);
    loop {
        // SAFETY: the epoll instance lives in a static `Reaper` and is never closed; `events`
        // has room for BATCH entries and the kernel writes at most that many.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), BATCH as libc::c_int, -1) };
        if n < 0 {
            // EINTR; nothing else can fail on a valid instance and buffer.
            continue;
        }
        {
            let table = match REAPER.get() {
                Some(Ok(reaper)) => reaper.table(),
                _ => continue,
            };
            for event in &events[..n as usize] {
                if let Some(target) = table.get(event.u64) {
                    targets.push(target);
                }
            }
        }
        for target in targets.drain(..) {
            target.on_error();
        }
    }
}

/// Watchers by slot; a key is `generation << 32 | index`, so a freed and reused slot never gets
/// an event meant for its previous occupant.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

struct Slot {
    generation: u32,
    target: Option<Weak<dyn OnError>>,
}

impl Table {
    fn insert(&mut self, target: Weak<dyn OnError>) -> u64 {
        self.live += 1;
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    target: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.target = Some(target);
        u64::from(slot.generation) << 32 | u64::from(index)
    }

    fn get(&self, key: u64) -> Option<Arc<dyn OnError>> {
        let slot = self.slots.get((key & 0xffff_ffff) as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        slot.target.as_ref()?.upgrade()
    }

    fn remove(&mut self, key: u64) {
        let index = (key & 0xffff_ffff) as u32;
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        if u64::from(slot.generation) != key >> 32 || slot.target.is_none() {
            return;
        }
        slot.target = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
        self.live -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl OnError for Count {
        fn on_error(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
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
        w.watch(client.as_fd(), weak).unwrap();
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

    #[test]
    fn keys_carry_generations() {
        let mut t = Table::default();
        let target: Arc<dyn OnError> = Arc::new(Count::default());
        let a = t.insert(Arc::downgrade(&target));
        t.remove(a);
        let b = t.insert(Arc::downgrade(&target));
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "slot reused");
        assert!(t.get(a).is_none(), "stale key reached the new occupant");
        assert!(t.get(b).is_some());
        t.remove(a);
        assert!(t.get(b).is_some(), "a stale remove freed the new occupant");
        assert_eq!(t.live, 1);
    }
}
