//! tonic handlers get their connection's `Liveness` (`Incoming::liveness_layer`), next to
//! `remote_addr()`, over plain TCP and over tonic's own TLS; a server-streaming RPC (a `Watch`
//! that never ends by itself) ends when its client dies, and the handler's `Liveness` says why.

mod tls_certs;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use deadpeer::liveness::State;
use deadpeer::{Cause, KeepaliveListener, KeepalivePolicy, Liveness};
use deadpeer_testkit::{deadline, dies_within_bound, lab_or_skip};
use futures_util::{Stream, StreamExt, stream};
use tls_certs::Certs;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// What a handler saw.
#[derive(Debug)]
enum Seen {
    Call {
        remote: Option<SocketAddr>,
        liveness: Option<Liveness>,
    },
    /// The Watch stream ended (or was dropped): its connection's state then.
    Ended(String),
}

/// Reports the end of a Watch stream, however it ends.
struct OnEnd(Liveness, mpsc::UnboundedSender<Seen>);

impl Drop for OnEnd {
    fn drop(&mut self) {
        let state = match self.0.state() {
            State::Dead(dead) => format!("dead {}", dead.cause().as_str()),
            other => format!("{other:?}"),
        };
        let _ = self.1.send(Seen::Ended(state));
    }
}

/// A health service whose handlers report what they saw; `Watch` sends SERVING and then waits
/// until its client dies, reading nothing from it.
struct Watcher(mpsc::UnboundedSender<Seen>);

const SERVING: HealthCheckResponse = HealthCheckResponse { status: 1 };

#[tonic::async_trait]
impl Health for Watcher {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let _ = self.0.send(Seen::Call {
            remote: request.remote_addr(),
            liveness: request.extensions().get::<Liveness>().cloned(),
        });
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
        let _ = self.0.send(Seen::Call {
            remote: request.remote_addr(),
            liveness: Some(liveness.clone()),
        });
        let on_end = OnEnd(liveness.clone(), self.0.clone());
        let updates = stream::once(async { Ok(SERVING) })
            .chain(stream::pending())
            .take_until(async move { liveness.dead().await })
            .chain(stream::poll_fn(move |_| {
                let _keep = &on_end;
                std::task::Poll::Ready(None)
            }));
        Ok(Response::new(Box::pin(updates)))
    }
}

#[tokio::test(flavor = "current_thread")]
async fn handlers_get_liveness_next_to_remote_addr() {
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

    let mut clients = Vec::new();
    for _ in 0..3 {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        client.check(HealthCheckRequest::default()).await.unwrap();
        client.check(HealthCheckRequest::default()).await.unwrap();
        clients.push(client);
    }
    let mut peers = Vec::new();
    for _ in 0..6 {
        let Some(Seen::Call { remote, liveness }) = seen.recv().await else {
            panic!("a call");
        };
        let liveness = liveness.expect("the handler got its Liveness");
        assert!(remote.is_some(), "remote_addr() still works");
        assert_eq!(
            liveness.peer_addr(),
            remote,
            "the connection's own Liveness"
        );
        assert_eq!(liveness.local_addr(), Some(addr));
        assert!(matches!(liveness.state(), State::Alive));
        peers.push(remote.unwrap());
    }
    peers.sort();
    peers.dedup();
    assert_eq!(peers.len(), 3, "one Liveness per connection: {peers:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn watch_over_tls_ends_when_its_client_dies() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = deadpeer_testkit::events::capture();
    let p: KeepalivePolicy = "1:1:3".parse().unwrap();
    let certs = Certs::new(&[lab.server_addr().to_string()]);
    let addr = SocketAddr::new(lab.server_addr(), 7721);
    let incoming = KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), p)
        .unwrap()
        .incoming();
    let (tx, mut seen) = mpsc::unbounded_channel();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&certs.cert_pem, &certs.key_pem));
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .layer(incoming.liveness_layer())
            .add_service(HealthServer::new(Watcher(tx)))
            .serve_with_incoming(incoming),
    );

    // A plain tonic client (no keepalive of its own: the only death seen is the server's).
    let channel = {
        let _inside = lab.client().enter().unwrap();
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&certs.cert_pem)),
            )
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    let mut updates = HealthClient::new(channel)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updates.message().await.unwrap().unwrap().status, 1);
    let Some(Seen::Call { remote, liveness }) = seen.recv().await else {
        panic!("the watch call");
    };
    assert_eq!(remote.map(|a| a.ip()), Some(lab.client_addr()));
    assert_eq!(liveness.unwrap().peer_addr(), remote);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    lab.blackhole().unwrap();
    let ended = dies_within_bound(p, start, seen.recv()).await.unwrap();
    eprintln!(
        "watch ended after {:?} (deadline {:?})",
        start.elapsed(),
        deadline(p)
    );
    let Seen::Ended(state) = ended else {
        panic!("{ended:?}");
    };
    assert_eq!(state, format!("dead {}", Cause::KeepaliveTimeout.as_str()));
    let detected = events.settled("dead peer detected", 1);
    assert_eq!(detected.len(), 1, "{:#?}", events.all());
    assert_eq!(detected[0].fields["error.type"], "keepalive_timeout");
}
