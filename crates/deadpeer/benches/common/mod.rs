//! Workloads shared by the `micro` (criterion) and `paired` (interleaved ratios) benches.
//!
//! Every workload has a raw tokio baseline and one or more deadpeer variants that do exactly the
//! same work, so that a ratio measures what deadpeer adds and nothing else.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io;
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

use deadpeer::{KeepaliveListener, KeepalivePolicy, KeepaliveStream};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;

/// The policy every deadpeer variant runs under (the hand-written baseline sets the same values).
pub const POLICY: KeepalivePolicy = KeepalivePolicy::FAST;

/// Connections queued per accept batch (below the listener backlog of 4096).
pub const ACCEPT_BATCH: usize = 500;

/// Block size for the echo throughput workload.
pub const BLOCK: usize = 64 * 1024;

/// Message size for the round-trip workload.
pub const MSG: usize = 64;

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A loopback listener with a deep backlog, so a whole batch can be queued before accepting.
pub fn listener() -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    socket.listen(4096).expect("listen")
}

/// What tonic's `TcpIncoming` and axum's `tap_io` snippets do after every accept: socket2
/// keepalive with time/interval/retries, then `TCP_USER_TIMEOUT`.
pub fn hand_written_keepalive(stream: &TcpStream) -> io::Result<()> {
    let sock = SockRef::from(stream);
    sock.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(POLICY.idle())
            .with_interval(POLICY.interval())
            .with_retries(POLICY.probes()),
    )?;
    sock.set_tcp_user_timeout(POLICY.effective_user_timeout())
}

/// The three accept loops, each with its own listener.
pub struct AcceptBench {
    pub raw: TcpListener,
    /// A raw tokio listener with the policy set on it: accepted sockets inherit keepalive, so the
    /// kernel arms a keepalive timer per connection, but no deadpeer code runs per accept.
    pub raw_inherited: TcpListener,
    pub hand: TcpListener,
    pub deadpeer: KeepaliveListener,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptKind {
    Raw,
    RawInherited,
    HandWritten,
    Deadpeer,
}

impl AcceptKind {
    pub const ALL: [AcceptKind; 4] = [
        AcceptKind::Raw,
        AcceptKind::RawInherited,
        AcceptKind::HandWritten,
        AcceptKind::Deadpeer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AcceptKind::Raw => "raw_tokio",
            AcceptKind::RawInherited => "raw_tokio_inherited_keepalive",
            AcceptKind::HandWritten => "hand_written_socket2",
            AcceptKind::Deadpeer => "keepalive_listener",
        }
    }
}

impl AcceptBench {
    /// Must be called inside the runtime.
    pub fn new() -> Self {
        AcceptBench {
            raw: listener(),
            raw_inherited: {
                let l = listener();
                deadpeer::apply(&l, POLICY).expect("policy on the listener");
                l
            },
            hand: listener(),
            deadpeer: deadpeer::KeepaliveListener::new(listener(), POLICY)
                .expect("keepalive listener"),
        }
    }

    fn addr(&self, kind: AcceptKind) -> SocketAddr {
        match kind {
            AcceptKind::Raw => self.raw.local_addr(),
            AcceptKind::RawInherited => self.raw_inherited.local_addr(),
            AcceptKind::HandWritten => self.hand.local_addr(),
            AcceptKind::Deadpeer => self.deadpeer.local_addr(),
        }
        .expect("local addr")
    }

    /// Queues `n` connections (blocking connects, completed by the kernel from the backlog),
    /// then times accepting all of them. Accepted streams are kept until the clock stops, and
    /// everything is closed afterwards with RST (no TIME_WAIT build-up across batches).
    pub async fn batch(&self, kind: AcceptKind, n: usize) -> Duration {
        let addr = self.addr(kind);
        let clients: Vec<StdStream> = (0..n)
            .map(|_| StdStream::connect(addr).expect("connect"))
            .collect();
        let elapsed;
        match kind {
            AcceptKind::Raw | AcceptKind::RawInherited => {
                let listener = if kind == AcceptKind::Raw {
                    &self.raw
                } else {
                    &self.raw_inherited
                };
                let mut held = Vec::with_capacity(n);
                let start = Instant::now();
                for _ in 0..n {
                    held.push(listener.accept().await.expect("accept"));
                }
                elapsed = start.elapsed();
                drop(held);
            }
            AcceptKind::HandWritten => {
                let mut held = Vec::with_capacity(n);
                let start = Instant::now();
                for _ in 0..n {
                    let (stream, peer) = self.hand.accept().await.expect("accept");
                    hand_written_keepalive(&stream).expect("setsockopt");
                    held.push((stream, peer));
                }
                elapsed = start.elapsed();
                drop(held);
            }
            AcceptKind::Deadpeer => {
                let mut held = Vec::with_capacity(n);
                let start = Instant::now();
                for _ in 0..n {
                    held.push(self.deadpeer.accept().await.expect("accept"));
                }
                elapsed = start.elapsed();
                drop(held);
            }
        }
        for c in clients {
            let _ = SockRef::from(&c).set_linger(Some(Duration::ZERO));
        }
        elapsed
    }
}

/// Server thread for the connect, echo and round-trip workloads: its own single-threaded
/// runtime on the second core. Two listeners: a raw one, and a `KeepaliveListener` whose
/// accepted streams are `KeepaliveStream`s (so the deadpeer variant is wrapped on both ends).
pub struct Server {
    pub raw: SocketAddr,
    pub deadpeer: SocketAddr,
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; BLOCK];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Server {
    pub fn start() -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("bench-server".into())
            .spawn(move || {
                let rt = runtime();
                rt.block_on(async move {
                    let raw = listener();
                    let dp = deadpeer::KeepaliveListener::new(listener(), POLICY)
                        .expect("keepalive listener");
                    tx.send((raw.local_addr().unwrap(), dp.local_addr().unwrap()))
                        .unwrap();
                    let a = tokio::spawn(async move {
                        loop {
                            if let Ok((s, _)) = raw.accept().await {
                                let _ = s.set_nodelay(true);
                                tokio::spawn(echo(s));
                            }
                        }
                    });
                    let b = tokio::spawn(async move {
                        loop {
                            if let Ok((s, _)) = dp.accept().await {
                                let _ = s.get_ref().set_nodelay(true);
                                tokio::spawn(echo(s));
                            }
                        }
                    });
                    let _ = tokio::join!(a, b);
                });
            })
            .expect("server thread");
        let (raw, deadpeer) = rx.recv().expect("server addresses");
        Server { raw, deadpeer }
    }
}

/// Closes a client with RST, so that neither side is left in TIME_WAIT.
pub fn close_rst(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Connect + first byte: connect, send one byte, receive its echo. Returns the time to the first
/// byte back; the close is not timed.
pub async fn connect_raw(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"x").await.expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("read");
    let t = start.elapsed();
    close_rst(&s);
    t
}

pub async fn connect_deadpeer(addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let mut s = deadpeer::connect(addr, POLICY).await.expect("connect");
    s.write_all(b"x").await.expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("read");
    let t = start.elapsed();
    close_rst(s.get_ref());
    t
}

/// A persistent client connection of each kind, for echo and round trips.
pub struct Clients {
    pub raw: TcpStream,
    pub deadpeer: KeepaliveStream,
    /// A second deadpeer connection with a pending `Liveness::dead()` and a pending
    /// `Liveness::gone()`, each in a spawned task, to show what a watcher costs on a busy
    /// connection.
    pub watched: KeepaliveStream,
}

impl Clients {
    pub async fn connect(server: &Server) -> Clients {
        let raw = TcpStream::connect(server.raw).await.expect("connect");
        raw.set_nodelay(true).unwrap();
        let deadpeer = deadpeer::connect(server.deadpeer, POLICY)
            .await
            .expect("connect");
        deadpeer.get_ref().set_nodelay(true).unwrap();
        let watched = deadpeer::connect(server.deadpeer, POLICY)
            .await
            .expect("connect");
        watched.get_ref().set_nodelay(true).unwrap();
        // What a handler waits on: `dead()`, and `gone()`, which the peer's FIN resolves too
        // (one registration with the reaper for both).
        let liveness = watched.liveness();
        let (dead, gone) = (liveness.dead(), liveness.gone());
        tokio::spawn(async move {
            let d = dead.await;
            panic!("bench connection died: {d:?}");
        });
        tokio::spawn(async move {
            let e = gone.await;
            panic!("bench connection ended: {e:?}");
        });
        tokio::task::yield_now().await;
        Clients {
            raw,
            deadpeer,
            watched,
        }
    }
}

/// `n` blocks of [`BLOCK`] bytes out and back.
pub async fn echo_blocks<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, buf: &mut [u8], n: usize) {
    for _ in 0..n {
        s.write_all(&buf[..BLOCK]).await.expect("write");
        s.read_exact(&mut buf[..BLOCK]).await.expect("read");
    }
}

/// `n` round trips of a [`MSG`]-byte message.
pub async fn round_trips<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, n: usize) {
    let mut buf = [7u8; MSG];
    for _ in 0..n {
        s.write_all(&buf).await.expect("write");
        s.read_exact(&mut buf).await.expect("read");
    }
}

/// How the client of the FIN workload waits for its peer's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinKind {
    /// A raw tokio `TcpStream` with a pending `read()`, which returns `Ok(0)`.
    RawRead,
    /// A `deadpeer::connect` stream that nothing reads, with a pending `Liveness::gone()`, which
    /// resolves to `Some(Ending::Closed)`.
    Gone,
}

/// A thread that closes the peers of the FIN workload, as a remote peer would: the FIN arrives
/// while the waiter's runtime thread is parked, so that a raw read, too, has to be woken.
pub struct Closer {
    peers: std::sync::mpsc::Sender<StdStream>,
    closed: std::sync::mpsc::Receiver<Instant>,
}

impl Closer {
    pub fn start() -> Closer {
        let (peers, todo) = std::sync::mpsc::channel::<StdStream>();
        let (done, closed) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("bench-closer".into())
            .spawn(move || {
                for peer in todo {
                    // Long enough for the runtime thread to park.
                    std::thread::sleep(Duration::from_micros(200));
                    let at = Instant::now();
                    drop(peer);
                    if done.send(at).is_err() {
                        return;
                    }
                }
            })
            .expect("closer thread");
        Closer { peers, closed }
    }

    /// Closes `peer` cleanly, soon, on the closer's thread.
    fn close(&self, peer: StdStream) {
        self.peers.send(peer).expect("closer thread");
    }

    /// When the last peer handed over was closed.
    fn closed_at(&self) -> Instant {
        self.closed.recv().expect("closer thread")
    }
}

/// The FIN workload: `n` times, a client of `kind` connects to `listener` (untimed) and waits
/// in a spawned task; its peer, the accepted std socket, is closed cleanly by `closer`
/// (nothing unread: a FIN); the time from that `close` to the task's wake-up (read in the task)
/// is pushed to `samples`. Returns the sum. Each client is then closed with RST (no
/// TIME_WAIT).
pub async fn fin_batch(
    kind: FinKind,
    listener: &std::net::TcpListener,
    closer: &Closer,
    n: usize,
    samples: &mut Vec<Duration>,
) -> Duration {
    let addr = listener.local_addr().expect("addr");
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let (task, peer) = match kind {
            FinKind::RawRead => {
                let mut client = TcpStream::connect(addr).await.expect("connect");
                let peer = listener.accept().expect("accept").0;
                let task = tokio::spawn(async move {
                    let mut b = [0u8; 16];
                    let n = client.read(&mut b).await.expect("read");
                    let at = Instant::now();
                    assert_eq!(n, 0, "EOF");
                    close_rst(&client);
                    at
                });
                (task, peer)
            }
            FinKind::Gone => {
                let client = deadpeer::connect(addr, POLICY).await.expect("connect");
                let peer = listener.accept().expect("accept").0;
                let gone = client.liveness().gone();
                let task = tokio::spawn(async move {
                    let ending = gone.await;
                    let at = Instant::now();
                    assert_eq!(ending, Some(deadpeer::Ending::Closed));
                    close_rst(client.get_ref());
                    at
                });
                (task, peer)
            }
        };
        // Let the task reach its pending await (the read registered, the waiter in its slot).
        for _ in 0..2 {
            tokio::task::yield_now().await;
        }
        closer.close(peer);
        let at = task.await.expect("waiter");
        let took = at.duration_since(closer.closed_at());
        samples.push(took);
        total += took;
    }
    total
}

/// Median and the 25th/75th percentiles of `v` (sorted in place).
pub fn quartiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let at = |q: f64| {
        let i = q * (v.len() - 1) as f64;
        let (lo, hi) = (i.floor() as usize, i.ceil() as usize);
        (v[hi] - v[lo]).mul_add(i - lo as f64, v[lo])
    };
    (at(0.5), at(0.25), at(0.75))
}
