//! The one line per framework: a handler stops when its client leaves.
//!
//! - axum: `ConnectInfo<Liveness>`, and `tokio::select!` on `liveness.gone()`; the job runs on
//!   its own task under a `CancellationToken` whose drop guard the handler holds. Over HTTP/2,
//!   every stream's handler stops when the connection goes; a client that leaves data unread
//!   (its kernel answers with an RST) is `aborted`.
//! - tonic: `incoming.liveness_layer()`, and a server-streaming response
//!   `take_until(liveness.gone())`; a call the client cancels (an HTTP/2 stream reset) is
//!   dropped by hyper, the connection and the other calls live on.
//! - hyper: `LivenessLayer::new(stream.liveness())` around the connection's service, in
//!   gone_http.rs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use deadpeer::{Ending, KeepaliveListener, KeepalivePolicy, Liveness};
use futures_util::{Stream, StreamExt, stream};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

mod probe;
use probe::{End, PROMPT, Probe, Rx, Tx, ended, none_ends, started};

/// `GET /work`: a job on its own task, until the client leaves.
async fn work(ConnectInfo(liveness): ConnectInfo<Liveness>, State(tx): State<Tx>) -> &'static str {
    let handler = Probe::start("/work", &liveness, &tx);
    let token = CancellationToken::new();
    // However this handler ends (it returns, or hyper drops it), the job stops with it.
    let _stop_job = token.clone().drop_guard();
    let job = Probe::start("job", &liveness, &tx);
    let done = tokio::spawn(async move {
        if token
            .run_until_cancelled(std::future::pending::<()>())
            .await
            .is_some()
        {
            job.end(End::Finished);
        }
    });
    tokio::select! {
        // The one line.
        ending = liveness.gone() => handler.end(End::Gone(ending)),
        _ = done => handler.end(End::Finished),
    }
    "done\n"
}

/// `GET /events`: an SSE stream that sends nothing until the client leaves.
async fn events(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    State(tx): State<Tx>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let probe = Probe::start("/events", &liveness, &tx);
    let gone = async move { probe.end(End::Gone(liveness.gone().await)) };
    // The one line: the stream ends when the client leaves.
    Sse::new(stream::pending().take_until(gone))
}

async fn serve_axum() -> (SocketAddr, Rx) {
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/work", get(work))
        .route("/events", get(events))
        .with_state(tx);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Liveness>(),
        )
        .await
    });
    (addr, rx)
}

/// A client connection, and a second descriptor of its socket, to shut it (the client's FIN)
/// while hyper or tonic holds the first.
async fn connect(addr: SocketAddr) -> (TcpStream, std::net::TcpStream) {
    let socket = TcpStream::connect(addr).await.unwrap().into_std().unwrap();
    let shut = socket.try_clone().unwrap();
    (TcpStream::from_std(socket).unwrap(), shut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_every_streams_job_stops_when_the_http2_connection_goes() {
    let (addr, mut seen) = serve_axum().await;
    let (tcp, shut) = connect(addr).await;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut calls = Vec::new();
    for _ in 0..3 {
        let request = hyper::Request::get(format!("http://{addr}/work"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        calls.push(tokio::spawn(sender.send_request(request)));
        started(&mut seen, "/work").await;
        started(&mut seen, "job").await;
    }
    none_ends(&mut seen, Duration::from_millis(100)).await;

    let left = Instant::now();
    shut.shutdown(std::net::Shutdown::Both).unwrap();
    let mut ends = Vec::new();
    for _ in 0..6 {
        let (what, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
        eprintln!("{what}: {end:?} {:?} after the client left", at - left);
        assert!(end.left(Ending::Closed), "{what}: {end:?}");
        assert!(at - left <= PROMPT, "{what}: {:?}", at - left);
        ends.push(what);
    }
    ends.sort();
    assert_eq!(ends, ["/work", "/work", "/work", "job", "job", "job"]);
    drop(calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_a_client_that_leaves_data_unread_is_aborted() {
    let (addr, mut seen) = serve_axum().await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    started(&mut seen, "/events").await;
    // The SSE stream's head arrives; the client never reads it (a client that hangs, and is
    // then killed). Closed with data unread, its socket sends an RST.
    client.peek(&mut [0; 1]).await.unwrap();
    let left = Instant::now();
    drop(client);
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    eprintln!("/events: {end:?} {:?} after the client left", at - left);
    assert!(end.left(Ending::Aborted), "{end:?}");
    assert!(at - left <= PROMPT, "{:?}", at - left);
}

/// tonic-health's `Watch`, which never ends by itself: SERVING, then silence until the client
/// leaves.
struct Watcher(Tx);

const SERVING: HealthCheckResponse = HealthCheckResponse { status: 1 };

#[tonic::async_trait]
impl Health for Watcher {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(SERVING))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let liveness = request
            .extensions()
            .get::<Liveness>()
            .cloned()
            .ok_or_else(|| Status::internal("no Liveness in the request"))?;
        let probe = Probe::start("watch", &liveness, &self.0);
        let gone = async move { probe.end(End::Gone(liveness.gone().await)) };
        let updates = stream::once(async { Ok(SERVING) })
            .chain(stream::pending())
            // The one line.
            .take_until(gone);
        Ok(Response::new(Box::pin(updates)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_a_watch_ends_when_its_client_leaves() {
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = listener.incoming();
    let (tx, mut seen) = mpsc::unbounded_channel();
    tokio::spawn(
        Server::builder()
            .layer(incoming.liveness_layer())
            .add_service(HealthServer::new(Watcher(tx)))
            .serve_with_incoming(incoming),
    );

    // A tonic client on one connection, whose socket the test can shut.
    let (shut_tx, shut_rx) = std::sync::mpsc::channel();
    let connector = tower::service_fn(move |_| {
        let shut_tx = shut_tx.clone();
        async move {
            let (tcp, shut) = connect(addr).await;
            shut_tx.send(shut).unwrap();
            Ok::<_, std::io::Error>(TokioIo::new(tcp))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    let shut = shut_rx.recv().unwrap();
    let mut client = HealthClient::new(channel);
    let mut first = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.message().await.unwrap(), Some(SERVING));
    started(&mut seen, "watch").await;
    let mut second = client
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.message().await.unwrap(), Some(SERVING));
    started(&mut seen, "watch").await;

    // The client cancels one call: its stream is reset (RST_STREAM), hyper drops the response
    // stream, and the connection lives (no ending).
    let cancelled = Instant::now();
    drop(first);
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    eprintln!("watch cancelled: {end:?} {:?} after", at - cancelled);
    assert_eq!(end, End::Dropped(None));
    assert!(at - cancelled <= PROMPT, "{:?}", at - cancelled);
    none_ends(&mut seen, Duration::from_millis(300)).await;

    // The client leaves (its FIN): the other watch ends.
    let left = Instant::now();
    shut.shutdown(std::net::Shutdown::Both).unwrap();
    let (_, end, at) = ended(&mut seen, Duration::from_secs(2)).await;
    eprintln!("watch: {end:?} {:?} after the client left", at - left);
    assert!(end.left(Ending::Closed), "{end:?}");
    assert!(at - left <= PROMPT, "{:?}", at - left);
    drop(second);
}
