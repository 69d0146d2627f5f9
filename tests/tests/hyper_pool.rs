//! hyper-util's legacy `Client` pool and a connection under `KeepaliveLayer`: a pooled idle
//! connection whose server vanished is not reused after the bound. The pool judges a connection
//! by `!poisoned && SendRequest::is_ready()`; hyper's connection task keeps a read pending on an
//! idle HTTP/1 connection, so when the kernel declares the server dead that read fails, the task
//! ends and the pool drops the connection at the next checkout. The control, a plain
//! `HttpConnector` (keepalive off), reuses the same connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::KeepalivePolicy;
use deadpeer::layer::KeepaliveLayer;
use deadpeer_testkit::{deadline, lab_or_skip};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tower_layer::Layer;

/// An HTTP/1 server that answers `ok` and reports each connection's client address.
async fn serve(listener: tokio::net::TcpListener, accepted: mpsc::UnboundedSender<SocketAddr>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            return;
        };
        let _ = accepted.send(peer);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One request before the server vanishes, one after the bound and the heal; the client
/// addresses of the connections the server accepted.
async fn before_and_after<C>(
    lab: &deadpeer_testkit::Lab,
    port: u16,
    connector: C,
    policy: KeepalivePolicy,
) -> Vec<SocketAddr>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let addr = SocketAddr::new(lab.server_addr(), port);
    let (tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(serve(lab.server().tokio_listener(addr).unwrap(), tx));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    let get = || async {
        let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri.clone()))
            .await
            .expect("an answer within 5 s")
            .expect("a response");
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "ok"
        );
    };
    get().await;
    // The connection is back in the pool, idle.
    tokio::time::sleep(Duration::from_millis(100)).await;
    lab.blackhole().unwrap();
    tokio::time::sleep(deadline(policy)).await;
    lab.heal().unwrap();
    let start = Instant::now();
    get().await;
    eprintln!("request after heal: {:?}", start.elapsed());
    let mut peers = Vec::new();
    while let Ok(peer) = accepted.try_recv() {
        peers.push(peer);
    }
    peers
}

#[tokio::test(flavor = "current_thread")]
async fn a_pooled_connection_whose_server_vanished_is_not_reused_after_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    // The connectors create their sockets on this thread: in the client namespace.
    let _inside = lab.client().enter().unwrap();
    let policy: KeepalivePolicy = "idle=1s,interval=1s,probes=3".parse().unwrap();

    let connector = KeepaliveLayer::new(policy).layer(HttpConnector::new());
    let peers = before_and_after(&lab, 7611, connector, policy).await;
    assert_eq!(
        peers.len(),
        2,
        "a new connection after the death: {peers:?}"
    );
    assert_ne!(peers[0], peers[1]);

    // The control: without keepalive nothing is sent while the server is away, so the pool
    // still holds the connection as open, and reuses it.
    let peers = before_and_after(&lab, 7612, HttpConnector::new(), policy).await;
    assert_eq!(peers.len(), 1, "the same connection, reused: {peers:?}");
}
