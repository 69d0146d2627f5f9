//! reqwest under a keepalive policy, against real servers in the testkit's network namespaces:
//! the policy's four values read back from reqwest's own sockets; a request in flight (and a
//! streaming body) to a blackholed server failing within the policy's bound, typed by
//! `PeerDeath`; a forgotten connection typed as a reset; and reqwest's own defaults as the
//! negative control.
//!
//! Every test holds the client namespace's guard on its current-thread runtime from the first
//! request on, so every socket reqwest creates (it connects lazily, on the first poll of `send`)
//! is created inside the lab, and no request can leave it. `reqwest_sockets` proves it: it finds
//! the connections with `ss` in the client namespace and reads them through duplicates of this
//! process's own descriptors (`pidfd_getfd`), the one way to reach a socket reqwest keeps sealed.

// `capture` goes unused: deadpeer emits no events for reqwest's connections, which it cannot see.
#[allow(unused_imports)]
mod common;

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use deadpeer::reqwest::{ClientBuilderExt, PeerDeath};
use deadpeer::{Cause, KeepalivePolicy, SocketKeepalive, UserTimeout};
use deadpeer_testkit::{Lab, Tool, lab_or_skip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
const STREAM_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n4\r\ntick\r\n";

/// A server in the lab's server namespace that speaks just enough HTTP/1.1, keep-alive:
/// `GET /ok` answers `ok`; `GET /hold` reads the request and hands the connection to the test
/// unanswered; `GET /stream` sends the head and one chunk of a chunked body, then hands it over.
struct Server {
    addr: SocketAddr,
    held: mpsc::UnboundedReceiver<TcpStream>,
    accepted: Arc<AtomicUsize>,
}

impl Server {
    fn start(lab: &Lab, port: u16) -> Server {
        let addr = SocketAddr::new(lab.server_addr(), port);
        let listener = lab.server().tokio_listener(addr).unwrap();
        let (tx, held) = mpsc::unbounded_channel();
        let accepted = Arc::new(AtomicUsize::new(0));
        tokio::spawn(accept_loop(listener, tx, Arc::clone(&accepted)));
        Server {
            addr,
            held,
            accepted,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The server side of the next `/hold` or `/stream` request, once the server has read it.
    async fn next_held(&mut self) -> TcpStream {
        tokio::time::timeout(Duration::from_secs(5), self.held.recv())
            .await
            .expect("the request did not reach the server within 5 s")
            .expect("server gone")
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    held: mpsc::UnboundedSender<TcpStream>,
    accepted: Arc<AtomicUsize>,
) {
    while let Ok((stream, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(stream, held.clone()));
    }
}

async fn serve(mut stream: TcpStream, held: mpsc::UnboundedSender<TcpStream>) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        match head.split_whitespace().nth(1) {
            Some("/ok") => {
                if stream.write_all(OK).await.is_err() {
                    return;
                }
            }
            Some("/stream") => {
                if stream.write_all(STREAM_HEAD).await.is_ok() {
                    let _ = held.send(stream);
                }
                return;
            }
            Some("/hold") => {
                let _ = held.send(stream);
                return;
            }
            _ => return,
        }
    }
}

/// Builds the client (never through a proxy) and makes one `/ok` request. Call it inside the
/// client namespace: the request creates reqwest's first connection there, which stays pooled.
async fn client(builder: reqwest::ClientBuilder, server: &Server) -> reqwest::Client {
    let client = builder.no_proxy().build().unwrap();
    let response = client.get(server.url("/ok")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");
    client
}

/// reqwest's established connections to `server`, duplicated from this process's descriptor
/// table. Must run inside the client namespace (`ss` lists the namespace it starts in); each
/// socket is checked to be the client's end of a connection to `server` from `client_addr`.
fn reqwest_sockets(lab: &Lab, server: SocketAddr) -> Vec<OwnedFd> {
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established", "dst", &server.to_string()])
        .output()
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "ss: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let me = rustix::process::getpid();
    let pidfd = rustix::process::pidfd_open(me, rustix::process::PidfdFlags::empty()).unwrap();
    let ours = format!("pid={},fd=", me.as_raw_nonzero());
    let mut sockets = Vec::new();
    for line in text.lines() {
        for (_, rest) in line.match_indices(&ours).map(|(i, _)| line.split_at(i)) {
            let digits: String = rest[ours.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let fd: i32 = digits.parse().unwrap();
            let dup =
                rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty())
                    .unwrap();
            let sock = socket2::SockRef::from(&dup);
            let peer = sock.peer_addr().unwrap().as_socket();
            let local = sock.local_addr().unwrap().as_socket();
            assert_eq!(peer, Some(server), "{line}");
            assert_eq!(local.map(|a| a.ip()), Some(lab.client_addr()), "{line}");
            sockets.push(dup);
        }
    }
    sockets
}

/// The keepalive options on reqwest's one connection to `server`, read back from the kernel.
fn options_on_the_connection(lab: &Lab, server: SocketAddr) -> SocketKeepalive {
    let sockets = reqwest_sockets(lab, server);
    assert_eq!(sockets.len(), 1, "reqwest connections to {server}");
    deadpeer::inspect(&sockets[0]).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_policy_lands_on_reqwest_sockets_every_value_read_back_from_the_kernel() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::SS)) else {
        return;
    };
    let auto = policy(1, 1, 3);
    let off = policy(2, 3, 4).with_user_timeout(UserTimeout::Off).unwrap();
    let fixed = policy(7, 5, 9)
        .with_user_timeout(UserTimeout::Fixed(Duration::from_millis(12_345)))
        .unwrap();
    // The kernel's limits, each one: they go through reqwest's setters untruncated.
    let limits = KeepalivePolicy::builder()
        .idle(Duration::from_secs(32767))
        .interval(Duration::from_secs(32767))
        .probes(127)
        .user_timeout(UserTimeout::Fixed(Duration::from_millis(i32::MAX as u64)))
        .build()
        .unwrap();
    let servers: Vec<Server> = (7201..=7205)
        .map(|port| Server::start(&lab, port))
        .collect();
    let _inside = lab.client().enter().unwrap();

    let mut clients = Vec::new();
    for (p, server) in [auto, off, fixed, limits].iter().zip(&servers) {
        clients.push(client(reqwest::Client::builder().tcp_keepalive_policy(*p), server).await);
        let got = options_on_the_connection(&lab, server.addr);
        assert!(got.matches(*p), "{p}: read back {got:?}");
        assert!(got.enabled, "{got:?}");
        assert_eq!(
            (got.idle, got.interval, got.probes, got.user_timeout),
            (
                p.idle(),
                p.interval(),
                p.probes(),
                p.effective_user_timeout()
            ),
            "{p}"
        );
        println!("{p}: read back {got:?}");
    }
    // `Off` really is off (reqwest's own default would be 30 s), and `Auto` is the bound less
    // half an interval.
    assert_eq!(
        options_on_the_connection(&lab, servers[0].addr).user_timeout,
        Some(Duration::from_millis(3500))
    );
    assert_eq!(
        options_on_the_connection(&lab, servers[1].addr).user_timeout,
        None
    );

    // What reqwest sets without deadpeer: the defaults the negative control runs under.
    let _plain = client(reqwest::Client::builder(), &servers[4]).await;
    let defaults = options_on_the_connection(&lab, servers[4].addr);
    println!("reqwest defaults: read back {defaults:?}");
    assert_eq!(
        (
            defaults.enabled,
            defaults.idle,
            defaults.interval,
            defaults.probes,
            defaults.user_timeout
        ),
        (
            true,
            Duration::from_secs(15),
            Duration::from_secs(15),
            3,
            Some(Duration::from_secs(30))
        ),
        "reqwest's defaults changed: update the guide's reqwest section"
    );
    for server in &servers {
        assert_eq!(server.connections(), 1, "{}", server.addr);
    }
}

/// The request in flight on a pooled connection, held unanswered by the server: blackholed
/// there, it fails within the bound, and `PeerDeath` types it.
#[tokio::test(flavor = "current_thread")]
async fn a_request_in_flight_to_a_blackholed_server_fails_within_the_bound() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::SS)) else {
        return;
    };
    let p = policy(1, 1, 3);
    let mut server = Server::start(&lab, 7211);
    let _inside = lab.client().enter().unwrap();
    let client = client(reqwest::Client::builder().tcp_keepalive_policy(p), &server).await;
    assert!(options_on_the_connection(&lab, server.addr).matches(p));

    let request = tokio::spawn(client.get(server.url("/hold")).send());
    let _held = server.next_held().await;
    let start = Instant::now();
    lab.blackhole().unwrap();
    let err = match tokio::time::timeout(deadline(p) + Duration::from_secs(2), request).await {
        Ok(Ok(Err(err))) => err,
        Ok(Ok(Ok(response))) => panic!("answered: {}", response.status()),
        Ok(Err(join)) => panic!("{join}"),
        Err(_) => panic!("still pending after {:?}", start.elapsed()),
    };
    let elapsed = start.elapsed();
    println!(
        "request failed after {elapsed:?} (bound {:?}): {err:?}",
        p.detection_bound()
    );
    assert_within_bound(elapsed, p);
    assert!(
        elapsed >= Duration::from_secs(3),
        "before the probes: {elapsed:?}"
    );
    assert_eq!(
        server.connections(),
        1,
        "the request used the pooled connection"
    );
    assert!(err.is_request() && !err.is_connect(), "{err:?}");

    let death = PeerDeath::find(&err).unwrap_or_else(|| panic!("no PeerDeath in {err:?}"));
    assert_eq!(death.raw_os_error(), libc::ETIMEDOUT, "{death}");
    assert!(death.is_timeout());
    assert_eq!(
        death.cause(),
        None,
        "a timeout cannot be named without TCP_INFO"
    );
    assert!(death.possible_causes().contains(&Cause::KeepaliveTimeout));
    assert_eq!(death.io_error_kind(), io::ErrorKind::TimedOut);
}

/// A streaming body (SSE, long poll): the head and a first chunk arrive, then the server is
/// blackholed; reading the next chunk fails within the bound, typed the same way.
#[tokio::test(flavor = "current_thread")]
async fn a_streaming_body_from_a_blackholed_server_fails_within_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let p = policy(1, 1, 3);
    let mut server = Server::start(&lab, 7221);
    let _inside = lab.client().enter().unwrap();
    let client = client(reqwest::Client::builder().tcp_keepalive_policy(p), &server).await;

    let mut response = client.get(server.url("/stream")).send().await.unwrap();
    let _held = server.next_held().await;
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(&first[..], b"tick");
    let start = Instant::now();
    lab.blackhole().unwrap();
    let next = tokio::time::timeout(deadline(p) + Duration::from_secs(2), response.chunk());
    let err = match next.await {
        Ok(Err(err)) => err,
        Ok(Ok(chunk)) => panic!("read {chunk:?} from a blackholed server"),
        Err(_) => panic!("still pending after {:?}", start.elapsed()),
    };
    let elapsed = start.elapsed();
    println!(
        "body read failed after {elapsed:?} (bound {:?}): {err:?}",
        p.detection_bound()
    );
    assert_within_bound(elapsed, p);
    assert!(
        elapsed >= Duration::from_secs(3),
        "before the probes: {elapsed:?}"
    );
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    let death = PeerDeath::find(&err).unwrap_or_else(|| panic!("no PeerDeath in {err:?}"));
    assert_eq!(death.raw_os_error(), libc::ETIMEDOUT, "{death}");
    assert!(death.is_timeout());
}

/// The server's host forgets the connection (a reboot): the first probe meets a reset, and the
/// request fails with `Cause::Reset`, one idle time after the last exchange.
#[tokio::test(flavor = "current_thread")]
async fn a_forgotten_connection_fails_the_request_as_a_reset() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let p = policy(1, 1, 3);
    let mut server = Server::start(&lab, 7231);
    let _inside = lab.client().enter().unwrap();
    let client = client(reqwest::Client::builder().tcp_keepalive_policy(p), &server).await;

    let request = tokio::spawn(client.get(server.url("/hold")).send());
    let held = server.next_held().await;
    let start = Instant::now();
    lab.forget(held.into_std().unwrap()).unwrap();
    let err = match tokio::time::timeout(deadline(p) + Duration::from_secs(2), request).await {
        Ok(Ok(Err(err))) => err,
        other => panic!("no error: {other:?}"),
    };
    let elapsed = start.elapsed();
    println!("request failed after {elapsed:?}: {err:?}");
    let first_probe = p.idle() + p.timer_slack() + WAKE;
    assert!(elapsed <= first_probe, "{elapsed:?} after the first probe");
    let death = PeerDeath::find(&err).unwrap_or_else(|| panic!("no PeerDeath in {err:?}"));
    assert_eq!(death.cause(), Some(Cause::Reset), "{death}");
    assert_eq!(death.raw_os_error(), libc::ECONNRESET);
    assert_eq!(death.possible_causes(), [Cause::Reset]);
}

/// No latch: a pooled connection that dies idle is dropped, and the next request, once the
/// server is reachable again, opens a new connection and succeeds.
#[tokio::test(flavor = "current_thread")]
async fn an_idle_pooled_connection_that_died_is_replaced_by_the_next_request() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::SS)) else {
        return;
    };
    let p = policy(1, 1, 3);
    let server = Server::start(&lab, 7251);
    let _inside = lab.client().enter().unwrap();
    let client = client(reqwest::Client::builder().tcp_keepalive_policy(p), &server).await;
    assert_eq!(reqwest_sockets(&lab, server.addr).len(), 1);

    lab.blackhole().unwrap();
    tokio::time::sleep(deadline(p)).await;
    assert!(
        reqwest_sockets(&lab, server.addr).is_empty(),
        "the idle connection outlived the bound"
    );
    lab.heal().unwrap();
    let response = client.get(server.url("/ok")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(server.connections(), 2, "a new connection");
}

/// The negative control: the same request under reqwest's own defaults (15 s idle, 15 s interval,
/// 3 probes, 30 s user timeout) is still pending at the policy's deadline.
#[tokio::test(flavor = "current_thread")]
async fn under_reqwest_defaults_the_same_request_is_still_pending_at_the_bound() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::SS)) else {
        return;
    };
    let p = policy(1, 1, 3);
    let mut server = Server::start(&lab, 7241);
    let _inside = lab.client().enter().unwrap();
    let client = client(reqwest::Client::builder(), &server).await;
    let defaults = options_on_the_connection(&lab, server.addr);
    assert!(!defaults.matches(p), "{defaults:?}");
    assert!(defaults.detection_bound() > deadline(p), "{defaults:?}");

    let request = client.get(server.url("/hold")).send();
    tokio::pin!(request);
    // Drive the request until the server holds it.
    let _held = tokio::select! {
        held = server.next_held() => held,
        done = &mut request => panic!("answered before the server held it: {done:?}"),
    };
    let start = Instant::now();
    lab.blackhole().unwrap();
    let outcome = tokio::time::timeout(deadline(p), &mut request).await;
    assert!(
        outcome.is_err(),
        "without the policy the request ended after {:?}: {outcome:?}",
        start.elapsed()
    );
    // Cancelled here, by dropping it; the lab goes with the test.
}
