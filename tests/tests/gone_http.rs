//! What hyper's server does when a client leaves, beside `Liveness::gone()`: the facts
//! `deadpeer::layer::LivenessLayer`'s docs state, measured on hyper-util's `auto::Builder` (what
//! axum::serve runs) with the layer.
//!
//! - HTTP/2, one stream reset by the client (`RST_STREAM`): hyper drops that stream's handler;
//!   the connection lives, so `gone()` stays pending, and the other streams' handlers run on;
//!   when the connection then goes, `gone()` resolves in each of them.
//! - HTTP/1, a pipelined request in hyper's buffer: hyper does not look for the FIN, and lets
//!   the handler before it run to its end; `gone()` resolves at the FIN.
//! - HTTP/1, a client that half-closes (sends its request, then its FIN, and waits for the
//!   answer): by default hyper gives up on the request at the FIN (no answer); with
//!   `half_close(true)` it serves it, and there `gone()` resolves at the FIN (`closed`) while
//!   `dead()` stays pending.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::layer::LivenessLayer;
use deadpeer::{Ending, KeepaliveListener, KeepalivePolicy, Liveness};
use http_body_util::{Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tower_layer::Layer;

mod probe;
use probe::{End, PROMPT, Probe, Rx, Tx, ended, none_ends, started};

/// `/forever` waits until its client is gone, `/dead` until it dies (`dead()`, which a FIN does
/// not resolve); `/slow` waits 300 ms at most, `/slow-dead` 300 ms unless the client dies.
async fn handler(request: Request<Incoming>, tx: Tx) -> Result<Response<Full<Bytes>>, Infallible> {
    let liveness = request
        .extensions()
        .get::<Liveness>()
        .cloned()
        .expect("the LivenessLayer put the connection's Liveness in");
    let path = request.uri().path().to_owned();
    let probe = Probe::start(&path, &liveness, &tx);
    let slow = tokio::time::sleep(Duration::from_millis(300));
    match path.as_str() {
        "/slow-dead" => tokio::select! {
            dead = liveness.dead() => probe.end(End::Gone(dead.map(|d| d.ending()))),
            () = slow => probe.end(End::Finished),
        },
        "/slow" => tokio::select! {
            ending = liveness.gone() => probe.end(End::Gone(ending)),
            () = slow => probe.end(End::Finished),
        },
        "/dead" => probe.end(End::Gone(liveness.dead().await.map(|d| d.ending()))),
        "/pending" => std::future::pending().await,
        _ => probe.end(End::Gone(liveness.gone().await)),
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"done\n"))))
}

/// hyper-util's `auto::Builder` on a `KeepaliveListener`, each connection's service under a
/// `LivenessLayer`.
async fn serve(half_close: bool) -> (SocketAddr, Rx) {
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            let service = LivenessLayer::new(stream.liveness())
                .layer(hyper::service::service_fn(move |r| handler(r, tx.clone())));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().half_close(half_close);
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://localhost{path}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_a_stream_reset_drops_its_handler_and_the_connection_lives() {
    let (addr, mut seen) = serve(false).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    // A second descriptor of the client's socket, to shut it while hyper holds the first.
    let socket = tcp.into_std().unwrap();
    let client_socket = socket.try_clone().unwrap();
    let tcp = TcpStream::from_std(socket).unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let a = tokio::spawn(sender.send_request(get("/forever")));
    started(&mut seen, "/forever").await;
    let b = tokio::spawn(sender.send_request(get("/forever")));
    started(&mut seen, "/forever").await;
    let c = tokio::spawn(sender.send_request(get("/pending")));
    started(&mut seen, "/pending").await;

    // Dropping a response future makes hyper's client reset its stream (RST_STREAM CANCEL).
    let reset = Instant::now();
    a.abort();
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    eprintln!("stream reset: handler {end:?} after {:?}", at - reset);
    assert_eq!(
        end,
        End::Dropped(None),
        "hyper drops the reset stream's handler; the connection has no ending"
    );
    assert!(at - reset <= PROMPT, "{:?}", at - reset);
    // The other streams' handlers run on: their connection is alive.
    none_ends(&mut seen, Duration::from_millis(300)).await;

    // The connection goes (the client shuts its socket: its FIN). The handler waiting on
    // `gone()` sees it; the one waiting on `dead()` (which a FIN does not resolve) is dropped
    // by hyper, whose connection ended.
    let close = Instant::now();
    client_socket.shutdown(std::net::Shutdown::Both).unwrap();
    let mut ends = Vec::new();
    for _ in 0..2 {
        let (path, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
        eprintln!("connection closed: {path} {end:?} after {:?}", at - close);
        assert!(at - close <= PROMPT, "{path}: {:?}", at - close);
        ends.push((path, end));
    }
    ends.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        ends[1],
        ("/pending".into(), End::Dropped(Some(Ending::Closed)))
    );
    assert_eq!(ends[0].0, "/forever");
    assert!(ends[0].1.left(Ending::Closed), "{ends:?}");
    drop((b, c));
}

/// A half-closing HTTP/1 client: its request, its FIN, then it reads.
async fn half_closing_client(addr: SocketAddr, path: &str) -> (Vec<u8>, Instant) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Let the request reach the handler before the FIN (it is not in hyper's buffer then).
    tokio::time::sleep(Duration::from_millis(50)).await;
    tcp.shutdown().await.unwrap();
    let fin = Instant::now();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    (answer, fin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_half_close() {
    // hyper's default, `half_close(false)`: at the client's FIN hyper drops the handler (one
    // that does not wait on `gone()`), and the client gets no answer.
    let (addr, mut seen) = serve(false).await;
    let client = tokio::spawn(half_closing_client(addr, "/slow-dead"));
    started(&mut seen, "/slow-dead").await;
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    let (answer, fin) = client.await.unwrap();
    eprintln!(
        "half_close(false): handler {end:?} {:?} after the FIN, answer {:?}",
        at - fin,
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(end, End::Dropped(Some(Ending::Closed)));
    assert!(at - fin <= PROMPT, "{:?}", at - fin);
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // `half_close(true)`: hyper serves the half-closed client. `dead()` stays pending at the
    // FIN: the handler that waits on it finishes, and the client gets its answer.
    let (addr, mut seen) = serve(true).await;
    let client = tokio::spawn(half_closing_client(addr, "/slow-dead"));
    started(&mut seen, "/slow-dead").await;
    let (_, end, _) = ended(&mut seen, Duration::from_secs(2)).await;
    let (answer, _) = client.await.unwrap();
    assert_eq!(end, End::Finished, "dead() stays pending at a FIN");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("done\n"),
        "{answer:?}"
    );

    // `gone()` resolves at the FIN: the handler that waits on it stops (its answer, written
    // at once, still reaches the half-closed client).
    let client = tokio::spawn(half_closing_client(addr, "/slow"));
    started(&mut seen, "/slow").await;
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    let (_, fin) = client.await.unwrap();
    eprintln!(
        "half_close(true), gone(): handler {end:?} {:?} after the FIN",
        at - fin
    );
    assert_eq!(end, End::Gone(Some(Ending::Closed)));
    assert!(at - fin <= PROMPT, "{:?}", at - fin);
}

/// Two pipelined requests for `path`, then the client's FIN: how the first handler ends, and
/// how long after the FIN.
async fn pipelined_then_fin(path: &str) -> (End, Duration) {
    let (addr, mut seen) = serve(false).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tcp.write_all(request.repeat(2).as_bytes()).await.unwrap();
    started(&mut seen, path).await;
    tcp.shutdown().await.unwrap();
    let fin = Instant::now();
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    (end, at - fin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_a_pipelined_request_hides_the_fin_from_hyper_not_from_gone() {
    // hyper looks for the FIN only while nothing is buffered: with the second request waiting
    // in its buffer, it lets the first handler run to its end.
    let (end, after) = pipelined_then_fin("/slow-dead").await;
    eprintln!("pipelined, dead(): first handler {end:?} {after:?} after the FIN");
    assert_eq!(end, End::Finished);
    // `gone()` sees the FIN all the same.
    let (end, after) = pipelined_then_fin("/forever").await;
    eprintln!("pipelined, gone(): first handler {end:?} {after:?} after the FIN");
    assert_eq!(end, End::Gone(Some(Ending::Closed)));
    assert!(after <= PROMPT, "{after:?}");
}
