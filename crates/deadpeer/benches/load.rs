//! Load harness: heap bytes per connection, and wakeups and CPU of many idle connections that
//! each have a pending `Liveness::dead()`.
//!
//! `cargo bench -p deadpeer --bench load`. Environment:
//! - `LOAD_ONLY=heap` or `LOAD_ONLY=idle` (default: both);
//! - `LOAD_CONNS=10000,50000` idle connection counts (default);
//! - `LOAD_SECS=10` length of the idle window;
//! - `LOAD_HEAP_CONNS=2000` connections for the heap measurement.
//!
//! Each idle connection costs three descriptors (client, accepted stream, and the duplicate that
//! `Liveness` watches), so the harness raises `RLIMIT_NOFILE` itself (with `nix`); without
//! `CAP_SYS_RESOURCE` it can only raise the soft limit to the hard one, and then runs as many
//! connections as fit and says so. Client sockets are spread over 127.0.0.2–127.0.0.9 (bind before
//! connect) so that the ephemeral port range (about 28 000 ports per source address) is no limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use deadpeer::{KeepalivePolicy, KeepaliveStream, TcpListenerExt};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

// ---- counting allocator ------------------------------------------------------------------------

/// Forwards to the system allocator and keeps the number of live heap bytes.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// A global allocator can only be written with `unsafe`; this one adds counters around `System`.
#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counters do not touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE_BYTES.load(Ordering::SeqCst)
}

// ---- poll counting -----------------------------------------------------------------------------

static FIRST_POLLS: AtomicUsize = AtomicUsize::new(0);
static LATER_POLLS: AtomicU64 = AtomicU64::new(0);

/// Counts its polls: the first one (registration) separately from every later one (a wakeup).
struct Counted<F> {
    inner: F,
    polled: bool,
}

impl<F: Future + Unpin> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if self.polled {
            LATER_POLLS.fetch_add(1, Ordering::Relaxed);
        } else {
            self.polled = true;
            FIRST_POLLS.fetch_add(1, Ordering::Relaxed);
        }
        Pin::new(&mut self.inner).poll(cx)
    }
}

fn counted<F>(inner: F) -> Counted<F> {
    Counted {
        inner,
        polled: false,
    }
}

// ---- helpers -----------------------------------------------------------------------------------

const POLICY: KeepalivePolicy = KeepalivePolicy::CLOUD;

fn listener() -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    socket.listen(4096).expect("listen")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn status_field(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Context switches (voluntary + involuntary) of every thread but the main one: the runtime's
/// worker and blocking threads. Each voluntary switch is a sleep in `epoll_wait` that ended.
fn worker_switches() -> u64 {
    let main = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy() != main)
        .map(|e| {
            let p = format!("{}/status", e.path().display());
            status_field(&p, "voluntary_ctxt_switches:")
                + status_field(&p, "nonvoluntary_ctxt_switches:")
        })
        .sum()
}

/// User + system CPU of the whole process.
fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// Raises `RLIMIT_NOFILE` to `want` if it can; returns the soft limit in effect.
fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= want {
        return soft;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit").0
}

/// A blocking client socket from 127.0.0.(2 + i mod 8), connected to `server`.
fn client(i: usize, server: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    let src = Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
    s.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
    s.connect(&SockAddr::from(server))?;
    Ok(s)
}

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name).map_or_else(
        |_| default.to_vec(),
        |v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
    )
}

fn wanted(name: &str) -> bool {
    std::env::var("LOAD_ONLY").map_or(true, |v| v.split(',').any(|w| w.trim() == name))
}

// ---- heap --------------------------------------------------------------------------------------

async fn accept_raw(l: &TcpListener, n: usize, held: &mut Vec<(TcpStream, SocketAddr)>) {
    for _ in 0..n {
        held.push(l.accept().await.expect("accept"));
    }
}

fn heap(n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let raw = listener();
        let dp = listener().keepalive(POLICY).expect("keepalive listener");
        let (raw_addr, dp_addr) = (raw.local_addr().unwrap(), dp.local_addr().unwrap());
        // Warm the reactor and the listener's verification with one connection of each kind.
        let w1 = std::net::TcpStream::connect(raw_addr).unwrap();
        let w2 = std::net::TcpStream::connect(dp_addr).unwrap();
        let warm = (raw.accept().await.unwrap(), dp.accept().await.unwrap());
        let wl = warm.1.0.liveness();
        let mut wd = wl.dead();
        std::future::poll_fn(|cx| {
            let _ = Pin::new(&mut wd).poll(cx);
            Poll::Ready(())
        })
        .await;
        drop((wd, wl));

        // Raw tokio stream.
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(raw_addr).unwrap())
            .collect();
        let mut held_raw = Vec::with_capacity(n);
        let (l0, fd0) = (live(), open_fds());
        accept_raw(&raw, n, &mut held_raw).await;
        let raw_bytes = (live() - l0) as f64 / n as f64;
        let raw_fds = (open_fds() - fd0) as f64 / n as f64;
        drop(held_raw);
        drop(clients);

        // KeepaliveStream from a KeepaliveListener.
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(dp_addr).unwrap())
            .collect();
        let mut held: Vec<(KeepaliveStream<TcpStream>, SocketAddr)> = Vec::with_capacity(n);
        let (l0, fd0) = (live(), open_fds());
        for _ in 0..n {
            held.push(dp.accept().await.expect("accept"));
        }
        let ks_bytes = (live() - l0) as f64 / n as f64;
        let ks_fds = (open_fds() - fd0) as f64 / n as f64;

        // liveness() (duplicates the descriptor) and a dead() future polled once in place
        // (registers the duplicate with the reactor), held in a pre-allocated Vec.
        let mut lives = Vec::with_capacity(n);
        let mut deads = Vec::with_capacity(n);
        let (l1, fd1) = (live(), open_fds());
        for (s, _) in &held {
            lives.push(s.liveness());
        }
        let live_bytes = (live() - l1) as f64 / n as f64;
        let live_fds = (open_fds() - fd1) as f64 / n as f64;
        let l2 = live();
        for l in &lives {
            deads.push(l.dead());
        }
        let dead_unpolled = (live() - l2) as f64 / n as f64;
        let l3 = live();
        std::future::poll_fn(|cx| {
            for d in deads.iter_mut() {
                assert!(Pin::new(d).poll(cx).is_pending());
            }
            Poll::Ready(())
        })
        .await;
        let dead_polled = (live() - l3) as f64 / n as f64;
        drop(deads);

        // The same, as a spawned task (what a service does), against a trivial task.
        let l4 = live();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            tasks.push(tokio::spawn(std::future::pending::<()>()));
        }
        tokio::task::yield_now().await;
        let task_bytes = (live() - l4) as f64 / n as f64;
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        let mut tasks = Vec::with_capacity(n);
        let first = FIRST_POLLS.load(Ordering::SeqCst);
        let l5 = live();
        for l in &lives {
            tasks.push(tokio::spawn(counted(l.dead())));
        }
        while FIRST_POLLS.load(Ordering::SeqCst) < first + n {
            tokio::task::yield_now().await;
        }
        let dead_task = (live() - l5) as f64 / n as f64;
        for t in &tasks {
            t.abort();
        }

        println!("\n## heap per connection ({n} connections, accepted side, counting allocator)");
        println!("| what | heap bytes / connection | descriptors / connection |");
        println!("|---|---|---|");
        println!("| raw tokio `TcpStream` (accepted) | {raw_bytes:.0} | {raw_fds:.2} |");
        println!("| `KeepaliveStream` from `KeepaliveListener::accept` | {ks_bytes:.0} | {ks_fds:.2} |");
        println!("| + `liveness()` | {live_bytes:.0} | {live_fds:.2} |");
        println!("| + `dead()` future, not yet polled | {dead_unpolled:.0} | 0 |");
        println!("| + first poll of `dead()` (registers the duplicate) | {dead_polled:.0} | 0 |");
        println!("| trivial spawned task (`pending()`), for reference | {task_bytes:.0} | 0 |");
        println!("| `dead()` in a spawned task, polled once (future + registration + task) | {dead_task:.0} | 0 |");
        println!(
            "| total: `KeepaliveStream` + `liveness()` + spawned pending `dead()` | {:.0} | {:.2} |",
            ks_bytes + live_bytes + dead_task,
            ks_fds + live_fds
        );
        println!(
            "| extra over raw | {:.0} | {:.2} |",
            ks_bytes + live_bytes + dead_task - raw_bytes,
            ks_fds + live_fds - raw_fds
        );
        drop((tasks, lives, held, clients, warm, w1, w2));
    });
}

// ---- idle --------------------------------------------------------------------------------------

fn idle(want: usize, secs: u64) {
    let need = 3 * want as u64 + 1024;
    let limit = raise_nofile(need);
    let n = if limit >= need {
        want
    } else {
        ((limit.saturating_sub(1024)) / 3) as usize
    };
    println!("\n## idle: {want} connections requested, RLIMIT_NOFILE {limit}");
    if n < want {
        println!(
            "only {n} connections fit: each needs 3 descriptors (client, accepted, watcher \
             duplicate) and the hard limit cannot be raised without CAP_SYS_RESOURCE \
             (run with `ulimit -n {need}` as root)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-worker")
        .enable_all()
        .build()
        .expect("runtime");
    let accepted = Arc::new(AtomicUsize::new(0));
    let held: Arc<Mutex<Vec<KeepaliveStream<TcpStream>>>> =
        Arc::new(Mutex::new(Vec::with_capacity(n)));
    let (first0, later0) = (
        FIRST_POLLS.load(Ordering::SeqCst),
        LATER_POLLS.load(Ordering::SeqCst),
    );
    let addr = {
        let accepted = Arc::clone(&accepted);
        let held = Arc::clone(&held);
        let (tx, rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let l = listener().keepalive(POLICY).expect("keepalive listener");
            tx.send(l.local_addr().unwrap()).unwrap();
            for _ in 0..n {
                let (s, _) = l.accept().await.expect("accept");
                let dead = s.liveness().dead();
                tokio::spawn(async move {
                    let d = counted(dead).await;
                    panic!("an idle loopback connection died: {d}");
                });
                held.lock().unwrap().push(s);
                accepted.fetch_add(1, Ordering::Release);
            }
        });
        rx.recv().expect("listener address")
    };

    let start = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        while i > accepted.load(Ordering::Acquire) + 3000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        match client(i, addr) {
            Ok(c) => clients.push(c),
            Err(e) => {
                println!("connect {i} failed: {e}; stopping at {i} connections");
                break;
            }
        }
    }
    let n = clients.len();
    while accepted.load(Ordering::Acquire) < n || FIRST_POLLS.load(Ordering::SeqCst) - first0 < n {
        std::thread::sleep(Duration::from_millis(5));
    }
    let setup = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));

    let (later1, cpu1, sw1) = (LATER_POLLS.load(Ordering::SeqCst), cpu(), worker_switches());
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (later2, cpu2, sw2) = (LATER_POLLS.load(Ordering::SeqCst), cpu(), worker_switches());
    let window = t1.elapsed();
    let fds = open_fds();
    let rss = status_field("/proc/self/status", "VmRSS:");

    println!(
        "| connections | pending dead() | window | wakeups (polls after the first) | runtime thread context switches | process CPU (user+sys) | CPU / s | open fds | RSS | setup |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {} | {:.2} s | {} | {} | {:.1} ms | {:.3} ms/s | {fds} | {} MiB | {:.1} s |",
        FIRST_POLLS.load(Ordering::SeqCst) - first0,
        window.as_secs_f64(),
        later2 - later1,
        sw2 - sw1,
        (cpu2 - cpu1).as_secs_f64() * 1e3,
        (cpu2 - cpu1).as_secs_f64() * 1e3 / window.as_secs_f64(),
        rss / 1024,
        setup.as_secs_f64()
    );
    println!(
        "(wakeups during setup and settling, before the window: {})",
        later1 - later0
    );

    // Tear down without waking the watchers: the runtime (and its tasks) first, then the
    // accepted streams, then the clients, with RST so nothing lingers in TIME_WAIT.
    rt.shutdown_timeout(Duration::from_secs(5));
    for s in held.lock().unwrap().drain(..) {
        let _ = socket2::SockRef::from(s.get_ref()).set_linger(Some(Duration::ZERO));
        drop(s);
    }
    for c in clients {
        let _ = c.set_linger(Some(Duration::ZERO));
    }
}

fn main() {
    if wanted("heap") {
        let n = env_list("LOAD_HEAP_CONNS", &[2000])[0];
        heap(n);
    }
    if wanted("idle") {
        let secs = env_list("LOAD_SECS", &[10])[0] as u64;
        for n in env_list("LOAD_CONNS", &[10_000, 50_000]) {
            idle(n, secs);
        }
    }
}
