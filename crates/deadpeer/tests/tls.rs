//! TLS over deadpeer's connections (feature `rustls`): a death on either side surfaces through
//! tokio-rustls as the typed `DeadPeer`, with one event; `TlsListener` runs handshakes
//! concurrently, drops silent and broken clients, and survives accept errors while handshakes
//! go on; axum over `TlsListener` gives handlers `ConnectInfo<SocketAddr>` and
//! `ConnectInfo<Liveness>`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::routing::get;
use common::*;
use deadpeer::axum::RouterExt as _;
use deadpeer::liveness::State as LivenessState;
use deadpeer::{Cause, DeadPeer, KeepaliveListener, KeepalivePolicy, Liveness};
use deadpeer_testkit::{dies_within_bound, lab_or_skip};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The cross-crate tests' self-signed certificate (rcgen, made at run time) and rustls configs,
/// shared rather than copied.
#[path = "../../../tests/tests/tls_certs/mod.rs"]
mod tls_certs;

/// A certificate for `localhost`, the server's config and a client connector.
struct Certs {
    server: Arc<ServerConfig>,
    client: TlsConnector,
}

impl Certs {
    fn new() -> Self {
        let certs = tls_certs::Certs::new(&["localhost".into()]);
        Self {
            server: certs.server,
            client: TlsConnector::from(Arc::new(certs.client)),
        }
    }

    async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: IO,
    ) -> tokio_rustls::client::TlsStream<IO> {
        let name = ServerName::try_from("localhost").unwrap();
        self.client.connect(name, io).await.unwrap()
    }
}

/// One byte each way, so both ends are established and have just received data.
async fn ping<A, B>(a: &mut A, b: &mut B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut byte = [0u8; 1];
    a.write_all(b"x").await.unwrap();
    a.flush().await.unwrap();
    b.read_exact(&mut byte).await.unwrap();
    b.write_all(b"y").await.unwrap();
    b.flush().await.unwrap();
    a.read_exact(&mut byte).await.unwrap();
}

/// The error of a TLS read that a death (from `start`, under `p`) ends: within the bound, and
/// the typed `DeadPeer` that tokio-rustls passed through.
async fn read_death(
    tls: &mut (impl AsyncRead + Unpin),
    start: Instant,
    p: KeepalivePolicy,
) -> DeadPeer {
    let mut buf = [0u8; 16];
    let err = dies_within_bound(p, start, tls.read(&mut buf))
        .await
        .expect_err("the TLS read fails");
    eprintln!(
        "the TLS read failed after {:?} (deadline {:?})",
        start.elapsed(),
        deadline(p)
    );
    DeadPeer::from_io(&err)
        .unwrap_or_else(|| panic!("tokio-rustls kept the typed DeadPeer: {err:?}"))
        .clone()
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_client_surfaces_through_tls_on_the_server() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let certs = Certs::new();
    let addr = SocketAddr::new(lab.server_addr(), 7901);
    let mut listener = KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), p)
        .unwrap()
        .tls(certs.server.clone());

    // A plain tokio-rustls client (no keepalive of its own: the only death seen is the server's).
    let tcp = lab.client().tokio_connect(addr).await.unwrap();
    let (mut client, (mut server, peer)) = tokio::join!(certs.connect(tcp), listener.accept());
    assert_eq!(peer.ip(), lab.client_addr());
    ping(&mut client, &mut server).await;
    let liveness = server.get_ref().0.liveness();
    // Let the client's ACK of the last byte reach the server, so the server's socket is idle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    lab.blackhole().unwrap();
    let dead = read_death(&mut server, start, p).await;
    assert_cause(&dead, Cause::KeepaliveTimeout, libc::ETIMEDOUT);
    assert_eq!(dead.peer_addr(), Some(peer));
    // The latch, through TLS: a write repeats the verdict; the Liveness has it.
    same_death(&server.write_all(b"more").await.unwrap_err(), &dead);
    match liveness.state() {
        LivenessState::Dead(d) => assert_eq!(d.connected_for(), dead.connected_for()),
        other => panic!("liveness state {other:?}"),
    }
    assert_one_event(&events, &dead);
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_server_surfaces_through_tls_on_the_client() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let certs = Certs::new();
    let addr = SocketAddr::new(lab.server_addr(), 7902);
    // A plain tokio-rustls server: the only death seen is the client's.
    let listener = lab.server().tokio_listener(addr).unwrap();
    let acceptor = TlsAcceptor::from(certs.server.clone());

    let tcp = {
        let _inside = lab.client().enter().unwrap();
        deadpeer::connect(addr, p).await.unwrap()
    };
    let (mut client, mut server) = tokio::join!(certs.connect(tcp), async {
        acceptor
            .accept(listener.accept().await.unwrap().0)
            .await
            .unwrap()
    });
    ping(&mut client, &mut server).await;

    // The server vanishes; the client's request stays unacknowledged (the user timeout's case).
    lab.blackhole().unwrap();
    let start = Instant::now();
    client.write_all(b"GET /slow").await.unwrap();
    client.flush().await.unwrap();
    let dead = read_death(&mut client, start, p).await;
    assert_cause(&dead, Cause::RetransmitTimeout, libc::ETIMEDOUT);
    assert_eq!(dead.peer_addr(), Some(addr));
    same_death(&client.write_all(b"more").await.unwrap_err(), &dead);
    assert_one_event(&events, &dead);
}

/// Reports the waiting handler's outcome when it ends or hyper drops it.
struct OnEnd(Liveness, mpsc::UnboundedSender<String>);

impl Drop for OnEnd {
    fn drop(&mut self) {
        let outcome = match self.0.state() {
            LivenessState::Dead(dead) => format!("dead {}", dead.cause().as_str()),
            other => format!("{other:?}"),
        };
        let _ = self.1.send(outcome);
    }
}

async fn who(
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ConnectInfo(liveness): ConnectInfo<Liveness>,
) -> String {
    format!("{addr} {:?}", liveness.peer_addr())
}

async fn wait(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    State(seen): State<mpsc::UnboundedSender<String>>,
) -> &'static str {
    let _on_end = OnEnd(liveness.clone(), seen);
    match liveness.dead().await {
        Some(_) => "dead",
        None => "closed",
    }
}

/// Sends an HTTP/1.1 GET over `io`.
async fn send_get(io: &mut (impl AsyncWrite + Unpin), path: &str, close: bool) {
    let connection = if close { "close" } else { "keep-alive" };
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: {connection}\r\n\r\n");
    io.write_all(request.as_bytes()).await.unwrap();
    io.flush().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn axum_over_tls_gives_handlers_the_address_and_liveness() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let certs = Certs::new();
    let addr = SocketAddr::new(lab.server_addr(), 7903);
    let listener = KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), p)
        .unwrap()
        .tls(certs.server.clone());
    let (tx, mut seen) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/who", get(who))
        .route("/wait", get(wait))
        .with_state(tx);
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_liveness())
            .await
            .unwrap();
    });

    let mut tls = certs
        .connect(lab.client().tokio_connect(addr).await.unwrap())
        .await;
    send_get(&mut tls, "/who", true).await;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    let client_ip = lab.client_addr().to_string();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(body.starts_with(&client_ip), "{response}");
    assert!(body.contains(&format!("Some({client_ip}:")), "{response}");

    // A second connection waits for its death; then the client vanishes.
    let mut tls = certs
        .connect(lab.client().tokio_connect(addr).await.unwrap())
        .await;
    send_get(&mut tls, "/wait", false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    lab.blackhole().unwrap();
    let outcome = dies_within_bound(p, start, seen.recv()).await.unwrap();
    assert_eq!(
        outcome,
        format!("dead {}", Cause::KeepaliveTimeout.as_str())
    );
    let detected = events_settled(&events, "dead peer detected", 1);
    assert_eq!(detected.len(), 1, "{:#?}", events.all());
    assert_eq!(detected[0].fields["error.type"], "keepalive_timeout");
    drop(tls);
}

/// Handshakes run concurrently: silent clients and a broken one hold up no real client, which
/// is served (with `ConnectInfo<Liveness>` over TLS) while their handshakes are still pending;
/// then each of them is dropped with one `tls handshake failed` event.
#[tokio::test(flavor = "current_thread")]
async fn silent_and_broken_clients_hold_up_no_handshake() {
    let (events, _guard) = capture();
    let certs = Certs::new();
    let timeout = Duration::from_secs(3);
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap()
        .tls(certs.server.clone())
        .handshake_timeout(timeout);
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/",
        get(|ConnectInfo(liveness): ConnectInfo<Liveness>| async move {
            format!("{:?}", liveness.peer_addr())
        }),
    );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Liveness>(),
        )
        .await
        .unwrap();
    });

    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut broken = TcpStream::connect(addr).await.unwrap();
    broken.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

    let served = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let mut tls = certs.connect(tcp).await;
    send_get(&mut tls, "/", true).await;
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    assert!(response.ends_with(&format!("Some({local})")), "{response}");
    eprintln!(
        "served in {:?}, with the silent handshakes pending (timeout {timeout:?})",
        served.elapsed()
    );
    // Served while the silent handshakes were still pending: none of them has been dropped.
    for s in &silent {
        let mut b = [0u8; 1];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a silent client was already dropped: {other:?}"),
        }
    }

    // Then each of the eleven is dropped (EOF), and logged once.
    let mut b = [0u8; 64];
    for mut s in silent {
        let n = tokio::time::timeout(timeout + Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("the silent client was dropped")
            .unwrap_or(0);
        assert_eq!(n, 0, "a silent client gets EOF");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), broken.read_to_end(&mut Vec::new())).await;
    let failed = events.with_message("tls handshake failed");
    assert_eq!(failed.len(), 11, "{:#?}", events.all());
    assert_eq!(
        failed
            .iter()
            .filter(|e| e.fields["error"].contains("TlsListener::handshake_timeout"))
            .count(),
        10,
        "{failed:#?}"
    );
    assert!(failed.iter().all(|e| e.level == tracing::Level::DEBUG));
}

/// Accept errors (here `EMFILE`) pause accepting for a second while the handshakes in progress
/// go on, and accepting resumes on its own. Run in a child process: it lowers the process's
/// descriptor limit.
#[test]
fn accept_errors_pause_accepting_but_not_handshakes() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "emfile_child", "--ignored", "--nocapture"])
        .env("DEADPEER_TLS_EMFILE_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{stdout}\n{stderr}");
}

#[tokio::test(flavor = "current_thread")]
#[ignore = "run by accept_errors_pause_accepting_but_not_handshakes, in its own process"]
async fn emfile_child() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if std::env::var_os("DEADPEER_TLS_EMFILE_CHILD").is_none() {
        return;
    }
    let (events, _guard) = capture();
    let certs = Certs::new();
    let mut listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap()
        .tls(certs.server.clone());
    let addr = listener.local_addr().unwrap();

    // A: accepted, its handshake left pending (the client says nothing yet).
    let a = TcpStream::connect(addr).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_err()
    );
    assert_eq!(listener.handshakes_in_progress(), 1);

    // No descriptor left: B's connection is queued by the kernel, and accepting it fails.
    let b = tokio::net::TcpSocket::new_v4().unwrap();
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // The limit is on descriptor numbers: the lowest free one is the first a new socket takes.
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|n| !open.contains(n)).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, lowest_free, hard).unwrap();
    let b = b.connect(addr).await.unwrap();

    // A completes its handshake meanwhile, and is returned, during the pause.
    let a_local = a.local_addr().unwrap();
    let connector = certs.client.clone();
    let client_a = tokio::spawn(async move {
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, a).await.unwrap()
    });
    let (_tls_a, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("A is returned during the pause");
    assert_eq!(peer, a_local);
    let failed = events.with_message("accept failed; retrying in 1s");
    assert!(!failed.is_empty(), "{:#?}", events.all());
    assert_eq!(failed[0].level, tracing::Level::ERROR);
    assert!(
        failed[0].fields["error"].contains("Too many open files"),
        "{failed:#?}"
    );

    // Descriptors again: accepting resumes by itself and B is served.
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let b_local = b.local_addr().unwrap();
    let connector = certs.client.clone();
    let client_b = tokio::spawn(async move {
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, b).await.unwrap()
    });
    let (_tls_b, peer) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .expect("B is served once descriptors are back");
    assert_eq!(peer, b_local);
    client_a.await.unwrap();
    client_b.await.unwrap();
}
