//! Load harness: heap bytes per connection, wakeups and CPU of many idle connections that each
//! have a pending `Liveness::dead()`, and the reaper's wake-ups while watched connections carry
//! data.
//!
//! `cargo bench -p deadpeer --bench load`. Environment:
//! - `LOAD_ONLY=heap`, `LOAD_ONLY=idle` or `LOAD_ONLY=data` (default: all three);
//! - `LOAD_CONNS=10000,50000` idle connection counts (default);
//! - `LOAD_SECS=10` length of the idle and data windows;
//! - `LOAD_HEAP_CONNS=2000` connections for the heap measurement;
//! - `LOAD_DATA_CONNS=1000` watched connections carrying data.
//!
//! Each idle connection costs two descriptors (client and accepted stream; `Liveness` watches
//! the accepted stream's own descriptor). The harness raises `RLIMIT_NOFILE` (with `nix`) as far
//! as it may, and spreads the connections over shard processes (this binary, re-executed with
//! `LOAD_ROLE`) so that each process stays under its limit even without `CAP_SYS_RESOURCE`. Client sockets bind
//! to 127.1.SHARD.2–9 before connecting, so the ephemeral port range (about 28 000 ports per
//! source address) is no limit either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use deadpeer::{KeepalivePolicy, KeepaliveStream, Liveness};
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// A blocking client socket from `src`, connected to `server`.
fn client(src: Ipv4Addr, server: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
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

/// Lets the reactor turn, so that registrations dropped before are really freed (tokio releases
/// them on its next turn) and do not count against the next measurement.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::task::yield_now().await;
}

// ---- heap --------------------------------------------------------------------------------------

/// Heap bytes per task of one spawned task per `lives`, each running the future `make` gives,
/// polled once (its waiter slot taken); then the tasks are aborted, reaped and the heap settled,
/// so that the next measurement starts clean.
async fn spawned_bytes<F>(lives: &[Liveness], make: impl Fn(&Liveness) -> F) -> f64
where
    F: Future + Unpin + Send + 'static,
    F::Output: Send + 'static,
{
    let n = lives.len();
    let mut tasks = Vec::with_capacity(n);
    let first = FIRST_POLLS.load(Ordering::SeqCst);
    let before = live();
    for l in lives {
        tasks.push(tokio::spawn(counted(make(l))));
    }
    while FIRST_POLLS.load(Ordering::SeqCst) < first + n {
        tokio::task::yield_now().await;
    }
    let bytes = (live() - before) as f64 / n as f64;
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    settle().await;
    bytes
}

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
        let dp = deadpeer::KeepaliveListener::new(listener(), POLICY).expect("keepalive listener");
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
        settle().await;

        // Grow the runtime's internal tables once, unmeasured, with a raw batch of the same size.
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(raw_addr).unwrap())
            .collect();
        let mut held_raw = Vec::with_capacity(n);
        accept_raw(&raw, n, &mut held_raw).await;
        drop(held_raw);
        drop(clients);
        settle().await;

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
        settle().await;

        // KeepaliveStream from a KeepaliveListener.
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(dp_addr).unwrap())
            .collect();
        let mut held: Vec<(KeepaliveStream, SocketAddr)> = Vec::with_capacity(n);
        let (l0, fd0) = (live(), open_fds());
        for _ in 0..n {
            held.push(dp.accept().await.expect("accept"));
        }
        let ks_bytes = (live() - l0) as f64 / n as f64;
        let ks_fds = (open_fds() - fd0) as f64 / n as f64;

        // liveness() (the shared latch, and one epoll_ctl on the stream's own descriptor) and a
        // dead() future polled once in place (takes a waiter slot), held in a pre-allocated Vec.
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
        settle().await;

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
        let dead_task = spawned_bytes(&lives, Liveness::dead).await;
        // gone() instead, as a spawned task: the same waiter slot.
        let gone_task = spawned_bytes(&lives, Liveness::gone).await;

        // A read's EOF (the peer's FIN) on streams that nothing watches: what the read keeps
        // until the stream is dropped.
        let fin_clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(dp_addr).unwrap())
            .collect();
        let mut fin_held: Vec<(KeepaliveStream, SocketAddr)> = Vec::with_capacity(n);
        for _ in 0..n {
            fin_held.push(dp.accept().await.expect("accept"));
        }
        for c in &fin_clients {
            c.shutdown(std::net::Shutdown::Write).expect("FIN");
        }
        let mut buf = [0u8; 16];
        let l7 = live();
        for (s, _) in &mut fin_held {
            assert_eq!(s.read(&mut buf).await.expect("EOF"), 0);
        }
        let eof_bytes = (live() - l7) as f64 / n as f64;

        println!("\n## heap per connection ({n} connections, accepted side, counting allocator)");
        println!("| what | heap bytes / connection | descriptors / connection |");
        println!("|---|---|---|");
        println!("| raw tokio `TcpStream` (accepted) | {raw_bytes:.0} | {raw_fds:.2} |");
        println!("| `KeepaliveStream` from `KeepaliveListener::accept` | {ks_bytes:.0} | {ks_fds:.2} |");
        println!("| + `liveness()` | {live_bytes:.0} | {live_fds:.2} |");
        println!("| + `dead()` future, not yet polled | {dead_unpolled:.0} | 0 |");
        println!("| + first poll of `dead()` (its waiter slot) | {dead_polled:.0} | 0 |");
        println!("| trivial spawned task (`pending()`), for reference | {task_bytes:.0} | 0 |");
        println!("| `dead()` in a spawned task, polled once (future + task + waiter slot) | {dead_task:.0} | 0 |");
        println!("| `gone()` in a spawned task, polled once (future + task + waiter slot) | {gone_task:.0} | 0 |");
        println!(
            "| **watched**: `liveness()` + spawned pending `dead()` | {:.0} | {:.2} |",
            live_bytes + dead_polled + dead_task,
            live_fds
        );
        println!(
            "| total: `KeepaliveStream` + `liveness()` + spawned pending `dead()` | {:.0} | {:.2} |",
            ks_bytes + live_bytes + dead_polled + dead_task,
            ks_fds + live_fds
        );
        println!(
            "| extra over raw | {:.0} | {:.2} |",
            ks_bytes + live_bytes + dead_polled + dead_task - raw_bytes,
            ks_fds + live_fds - raw_fds
        );
        println!(
            "| a read's EOF (the peer's FIN) on a `KeepaliveStream` nothing watches, kept until \
             the stream is dropped | {eof_bytes:.0} | 0 |"
        );
        drop((lives, held, clients, warm, w1, w2, fin_held, fin_clients));
    });
}

// ---- data --------------------------------------------------------------------------------------

/// The reaper thread's context switches, voluntary and involuntary (each voluntary one is a
/// sleep in `epoll_wait` that ended); `None` while no reaper thread runs.
fn reaper_switches() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    dir.filter_map(Result::ok).find_map(|e| {
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "deadpeer-reaper").then(|| {
            let p = format!("{}/status", e.path().display());
            status_field(&p, "voluntary_ctxt_switches:")
                + status_field(&p, "nonvoluntary_ctxt_switches:")
        })
    })
}

/// `n` watched connections (accepted `KeepaliveStream`s, each with a pending `dead()` and a
/// pending `gone()` in spawned tasks) carry data for `secs`: 64-byte round trips on each, and
/// 1 MiB both ways on eight of them per round (full send buffers, window updates). Counts the
/// reaper thread's context switches and the watchers' wake-ups, which must stay 0; then, as the
/// control, one client's FIN, which must wake both.
fn data(n: usize, secs: u64) {
    raise_nofile(2 * n as u64 + 1024);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l = deadpeer::KeepaliveListener::new(listener(), POLICY).expect("keepalive listener");
        let addr = l.local_addr().unwrap();
        let first = FIRST_POLLS.load(Ordering::SeqCst);
        let mut pairs: Vec<(TcpStream, KeepaliveStream)> = Vec::with_capacity(n);
        for _ in 0..n {
            let client = TcpStream::connect(addr).await.expect("connect");
            let (server, _) = l.accept().await.expect("accept");
            let liveness = server.liveness();
            tokio::spawn(counted(liveness.dead()));
            tokio::spawn(counted(liveness.gone()));
            pairs.push((client, server));
        }
        while FIRST_POLLS.load(Ordering::SeqCst) < first + 2 * n {
            tokio::task::yield_now().await;
        }
        settle().await;
        let sw0 = reaper_switches().expect("the reaper thread runs");
        let later0 = LATER_POLLS.load(Ordering::SeqCst);
        let start = Instant::now();
        let (mut trips, mut bulk) = (0u64, 0u64);
        let mut msg = [7u8; 64];
        let mut big = vec![0u8; 1 << 20];
        let mut back = vec![0u8; 1 << 20];
        while start.elapsed() < Duration::from_secs(secs) {
            for (c, s) in &mut pairs {
                c.write_all(&msg).await.expect("write");
                s.read_exact(&mut msg).await.expect("read");
                s.write_all(&msg).await.expect("write");
                c.read_exact(&mut msg).await.expect("read");
                trips += 1;
            }
            for (c, s) in pairs.iter_mut().take(8) {
                let (w, r) = tokio::join!(s.write_all(&big), c.read_exact(&mut back));
                w.and(r.map(drop)).expect("server to client");
                let (w, r) = tokio::join!(c.write_all(&back), s.read_exact(&mut big));
                w.and(r.map(drop)).expect("client to server");
                bulk += 2 << 20;
            }
        }
        let window = start.elapsed();
        let sw1 = reaper_switches().expect("the reaper thread runs");
        let later1 = LATER_POLLS.load(Ordering::SeqCst);

        // The control: the first client's FIN wakes the reaper and resolves one gone().
        let (client, server) = pairs.remove(0);
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sw2 = reaper_switches().expect("the reaper thread runs");
        let later2 = LATER_POLLS.load(Ordering::SeqCst);
        drop(server);

        println!(
            "\n## data on watched connections: {n} accepted `KeepaliveStream`s, each with a \
             pending `dead()` and `gone()`"
        );
        println!(
            "| window | round trips (64 B) | bulk bytes | reaper context switches | watcher \
             wake-ups (polls after the first) | control, one FIN: reaper switches / wake-ups |"
        );
        println!("|---|---|---|---|---|---|");
        println!(
            "| {:.2} s | {trips} | {} MiB | {} | {} | {} / {} |",
            window.as_secs_f64(),
            bulk >> 20,
            sw1 - sw0,
            later1 - later0,
            sw2 - sw1,
            later2 - later1
        );
        drop(pairs);
    });
}

// ---- idle --------------------------------------------------------------------------------------

/// Runs `want` idle connections, each with a pending `dead()`, for a window of `secs`.
///
/// The connections are spread over shard processes (this binary again, with `LOAD_ROLE`): each
/// server shard accepts its share and holds, per connection, the accepted stream (1 descriptor;
/// the watch adds none); a client process per shard holds the client sockets. So only the share
/// must fit under one process's `RLIMIT_NOFILE`, which the harness first tries to raise. Wakeups and CPU are summed over the server shards, whose numbers are
/// the ones that matter; the clients are plain blocking sockets that nothing polls.
fn idle(want: usize, secs: u64) {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let limit = raise_nofile(want as u64 + 1024);
    let per_shard = limit.saturating_sub(1024).clamp(1, 18000) as usize;
    let shards = want.div_ceil(per_shard);
    println!(
        "\n## idle: {want} connections, RLIMIT_NOFILE {limit}, {shards} server shard process(es) \
         of ≤ {per_shard} connections, one client process each"
    );
    let exe = std::env::current_exe().expect("current exe");
    let spawn = |role: &str, n: usize, shard: usize, addr: Option<SocketAddr>| {
        let mut c = Command::new(&exe);
        c.env("LOAD_ROLE", role)
            .env("LOAD_SHARD_N", n.to_string())
            .env("LOAD_SHARD", shard.to_string())
            .env("LOAD_SECS", secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(a) = addr {
            c.env("LOAD_ADDR", a.to_string());
        }
        let mut child = c.spawn().expect("spawn shard");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        (child, out)
    };
    let line = |r: &mut BufReader<std::process::ChildStdout>| {
        let mut s = String::new();
        r.read_line(&mut s).expect("read shard");
        s.trim().to_owned()
    };
    let start = Instant::now();
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let mut left = want;
    for shard in 0..shards {
        let n = left.min(per_shard);
        left -= n;
        let (mut child, mut out) = spawn("server", n, shard, None);
        let addr: SocketAddr = line(&mut out)
            .strip_prefix("ADDR ")
            .expect("ADDR line")
            .parse()
            .expect("address");
        let (c, mut cout) = spawn("client", n, shard, Some(addr));
        assert_eq!(line(&mut cout), "READY", "client shard {shard}");
        assert_eq!(line(&mut out), "READY", "server shard {shard}");
        let _ = child.stdin.as_mut().map(|s| s.flush());
        servers.push((child, out, n));
        clients.push((c, cout));
    }
    let setup = start.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    for (child, _, _) in &mut servers {
        writeln!(child.stdin.as_mut().expect("stdin"), "GO").expect("GO");
    }
    let (mut polls, mut switches, mut cpu_us, mut fds, mut rss, mut pending, mut window) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64, 0f64);
    for (_, out, _) in &mut servers {
        let l = line(out);
        let v: Vec<f64> = l
            .strip_prefix("RESULT ")
            .unwrap_or_else(|| panic!("bad shard line {l:?}"))
            .split_whitespace()
            .map(|x| x.parse().expect("number"))
            .collect();
        polls += v[0] as u64;
        switches += v[1] as u64;
        cpu_us += v[2] as u64;
        fds += v[3] as u64;
        rss += v[4] as u64;
        pending += v[5] as u64;
        window = window.max(v[6]);
    }
    println!(
        "| connections | pending dead() | window | wakeups (polls after the first) | runtime thread context switches | server CPU (user+sys) | CPU / s | server fds | server RSS | setup |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {want} | {pending} | {window:.2} s | {polls} | {switches} | {:.1} ms | {:.3} ms/s | {fds} | {} MiB | {:.1} s |",
        cpu_us as f64 / 1e3,
        cpu_us as f64 / 1e3 / window,
        rss / 1024,
        setup.as_secs_f64()
    );
    // Closing the pipes ends every shard; the kernel closes their sockets.
    for (mut child, _, _) in servers {
        drop(child.stdin.take());
        let _ = child.wait();
    }
    for (mut child, _) in clients {
        drop(child.stdin.take());
        let _ = child.wait();
    }
}

/// A server shard: accepts `LOAD_SHARD_N` connections, a pending `dead()` on each, then measures
/// one window when told `GO` on stdin.
fn server_shard() {
    use std::io::BufRead;
    let n: usize = env_list("LOAD_SHARD_N", &[0])[0];
    let secs = env_list("LOAD_SECS", &[10])[0] as u64;
    raise_nofile(n as u64 + 1024);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-worker")
        .enable_all()
        .build()
        .expect("runtime");
    let accepted = Arc::new(AtomicUsize::new(0));
    let held: Arc<Mutex<Vec<KeepaliveStream>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let accepted = Arc::clone(&accepted);
        let held = Arc::clone(&held);
        rt.spawn(async move {
            let l =
                deadpeer::KeepaliveListener::new(listener(), POLICY).expect("keepalive listener");
            tx.send(l.local_addr().unwrap()).unwrap();
            for _ in 0..n {
                let (s, _) = l.accept().await.expect("accept");
                let dead = s.liveness().dead();
                tokio::spawn(async move {
                    let d = counted(dead).await;
                    panic!("an idle loopback connection died: {d:?}");
                });
                held.lock().unwrap().push(s);
                accepted.fetch_add(1, Ordering::Release);
            }
        });
    }
    println!("ADDR {}", rx.recv().expect("listener address"));
    while accepted.load(Ordering::Acquire) < n || FIRST_POLLS.load(Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("READY");
    let mut stdin = std::io::stdin().lock();
    let mut go = String::new();
    stdin.read_line(&mut go).expect("GO");
    let (later1, cpu1, sw1) = (LATER_POLLS.load(Ordering::SeqCst), cpu(), worker_switches());
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (later2, cpu2, sw2) = (LATER_POLLS.load(Ordering::SeqCst), cpu(), worker_switches());
    let window = t1.elapsed();
    println!(
        "RESULT {} {} {} {} {} {} {:.3}",
        later2 - later1,
        sw2 - sw1,
        (cpu2 - cpu1).as_micros(),
        open_fds(),
        status_field("/proc/self/status", "VmRSS:"),
        FIRST_POLLS.load(Ordering::SeqCst),
        window.as_secs_f64()
    );
    let mut rest = String::new();
    while stdin.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {}
    // Exit without tearing down 'held' one by one: the kernel closes everything.
    #[allow(
        clippy::exit,
        reason = "a child process of the benchmark; teardown is the kernel's"
    )]
    std::process::exit(0);
}

/// A client shard: `LOAD_SHARD_N` blocking sockets to `LOAD_ADDR`, from 127.1.SHARD.2–9, held
/// until stdin closes.
fn client_shard() {
    use std::io::Read;
    let n: usize = env_list("LOAD_SHARD_N", &[0])[0];
    let shard = env_list("LOAD_SHARD", &[0])[0];
    let addr: SocketAddr = std::env::var("LOAD_ADDR")
        .expect("LOAD_ADDR")
        .parse()
        .expect("address");
    raise_nofile(n as u64 + 1024);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let src = Ipv4Addr::new(127, 1, shard as u8, 2 + (i % 8) as u8);
        let s = client(src, addr).unwrap_or_else(|e| panic!("connect {i} from {src}: {e}"));
        held.push(s);
    }
    println!("READY");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    #[allow(
        clippy::exit,
        reason = "a child process of the benchmark; teardown is the kernel's"
    )]
    std::process::exit(0);
}

fn main() {
    match std::env::var("LOAD_ROLE").as_deref() {
        Ok("server") => return server_shard(),
        Ok("client") => return client_shard(),
        _ => {}
    }
    if wanted("heap") {
        let n = env_list("LOAD_HEAP_CONNS", &[2000])[0];
        heap(n);
    }
    if wanted("data") {
        let secs = env_list("LOAD_SECS", &[10])[0] as u64;
        data(env_list("LOAD_DATA_CONNS", &[1000])[0], secs);
    }
    if wanted("idle") {
        let secs = env_list("LOAD_SECS", &[10])[0] as u64;
        for n in env_list("LOAD_CONNS", &[10_000, 50_000]) {
            idle(n, secs);
        }
    }
}
