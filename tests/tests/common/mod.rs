//! Servers and clients shared by the framework tests.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use deadpeer::{KeepalivePolicy, Liveness};
use deadpeer_testkit::{Lab, Netns};
use futures_util::{Stream, StreamExt, stream};
use http_body_util::{Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

pub type Ended = mpsc::UnboundedSender<Instant>;

/// Reports when the handler's stream is gone, whether it ended or hyper dropped it.
pub struct OnEnd(Ended);

impl Drop for OnEnd {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

/// One event, then silence until the client dies.
pub async fn sse(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    State(ended): State<Ended>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let on_end = OnEnd(ended);
    let events = stream::once(async { Ok(Event::default().data("hello")) })
        .chain(stream::pending())
        .take_until(liveness.dead())
        .chain(stream::poll_fn(move |_| {
            let _keep = &on_end;
            std::task::Poll::Ready(None)
        }));
    Sse::new(events)
}

pub async fn start_axum_sse(
    lab: &Lab,
    port: u16,
    policy: KeepalivePolicy,
) -> (SocketAddr, mpsc::UnboundedReceiver<Instant>) {
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener =
        deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), policy)
            .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/sse", get(sse))
        .route("/hello", get(|| async { "hi" }))
        .with_state(tx);
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<Liveness>(),
        )
        .await
        .unwrap();
    });
    (addr, rx)
}

/// A real HTTP/1 client from `from`: sends GET `path` and returns the response.
pub async fn get_from(
    from: &Netns,
    addr: SocketAddr,
    path: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let tcp = from.tokio_connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// Serves `/` at once and never answers `/hang`.
pub async fn serve_hyper(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    if req.uri().path() == "/hang" {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A tonic-health server on `addr` in the server namespace.
pub fn start_tonic_health(lab: &Lab, addr: SocketAddr) {
    let listener = lab.server().tokio_listener(addr).unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );
}
