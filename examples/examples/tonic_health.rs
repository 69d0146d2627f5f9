//! A tonic gRPC client and server under a keepalive policy, over TLS: a call stuck on a dead
//! server fails within the policy's bound, and a server-streaming `Watch` ends when its client
//! dies, its handler told by the connection's `Liveness`.
//!
//! The channel is `endpoint.connect_with_keepalive(policy)` (`deadpeer::tonic::EndpointExt`):
//! the connector tonic itself would build (`TCP_NODELAY` on, `https://` through the endpoint's
//! `tls_config`, its connect timeout), with the policy on the socket before the SYN and a
//! `KeepaliveLayer` that checks it and wraps the connection. (The older recipe,
//! `KeepaliveLayer::new(policy).layer(HttpConnector::new())`, switched `TCP_NODELAY` off and
//! refused `https://`.)
//!
//! The server serves `listener.incoming()` from a `KeepaliveListener`, with tonic's own TLS, and
//! `incoming.liveness_layer()`, which puts each request's connection `Liveness` into its
//! extensions; `request.remote_addr()` keeps working. The `Watch` handler here sends `SERVING`
//! and then waits on `liveness.dead()`, reading nothing from the client.
//!
//! The run: a `Check` succeeds and a `Watch` starts; then the server and client lose each other
//! (a blackhole in the lab) and the client sends a second `Check`. Its bytes are never
//! acknowledged, so the policy's user timeout (`UserTimeout::Auto`, 3.5 s for 1/1/3) ends the
//! client's connection and the call fails, instead of hanging for about 15 minutes
//! (`tcp_retries2`). h2 keeps only the text of the connection's I/O error, so
//! `DeadPeer::recover(&status)` gives the death (cause, errno, addresses) from this process's own
//! record. On the server, keepalive finds the client dead within the 4 s bound and the `Watch`
//! ends, its handler's `Liveness` reporting the `DeadPeer`.
//!
//! Run: `cargo run -p examples --example tonic_health` (as root: the lab needs network
//! namespaces). Without the privileges it prints one `skipped tonic_health: <reason>` line and
//! exits 0; with `DEADPEER_REQUIRE_NETNS=1` it fails instead.

use std::error::Error as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use deadpeer::liveness::State;
use deadpeer::tonic::EndpointExt as _;
use deadpeer::{DeadPeer, KeepaliveListener, KeepalivePolicy, Liveness};
use futures_util::{Stream, StreamExt, stream};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tracing_subscriber::EnvFilter;

const SERVING: HealthCheckResponse = HealthCheckResponse { status: 1 };

/// Reports what a `Watch`'s connection came to when its stream is dropped, whoever dropped it
/// (the stream's own `take_until`, or h2, whose pending read often sees the death first).
struct Report(Liveness, mpsc::UnboundedSender<Option<DeadPeer>>);

impl Drop for Report {
    fn drop(&mut self) {
        let dead = match self.0.state() {
            State::Dead(dead) => Some(dead),
            _ => None,
        };
        let _ = self.1.send(dead);
    }
}

/// A health service whose `Watch` waits for its client's death.
struct Watcher(mpsc::UnboundedSender<Option<DeadPeer>>);

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
            .ok_or_else(|| Status::internal("served without deadpeer's liveness layer"))?;
        println!(
            "server: Watch from {:?} (its Liveness: {:?})",
            request.remote_addr(),
            liveness.peer_addr()
        );
        let report = Report(liveness.clone(), self.0.clone());
        let updates = stream::once(async { Ok(SERVING) })
            .chain(stream::pending())
            .take_until(async move { liveness.dead().await })
            .chain(stream::poll_fn(move |_| {
                let _report = &report;
                std::task::Poll::Ready(None)
            }));
        Ok(Response::new(Box::pin(updates)))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("deadpeer=info")),
        )
        .init();

    let Some(lab) = deadpeer_testkit::lab_or_skip("tonic_health") else {
        return Ok(());
    };
    let policy: KeepalivePolicy = "1:1:3".parse()?;
    // A self-signed certificate for the server's address, made at run time.
    let cert = rcgen::generate_simple_self_signed(vec![lab.server_addr().to_string()])?;
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());

    // The server: in the lab's server namespace, over TLS, handlers given their Liveness.
    let addr = SocketAddr::new(lab.server_addr(), 50051);
    let incoming = KeepaliveListener::new(lab.server().tokio_listener(addr)?, policy)?.incoming();
    let (report, mut reports) = mpsc::unbounded_channel();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&cert_pem, &key_pem)))?
        .layer(incoming.liveness_layer())
        .add_service(HealthServer::new(Watcher(report)))
        .serve_with_incoming(incoming);
    tokio::spawn(server);

    // From here on, sockets this thread creates live in the client namespace.
    let inside = lab.client().enter()?;
    let channel = Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&cert_pem)))?
        .connect_with_keepalive(policy)
        .await?;
    let mut client = HealthClient::new(channel);

    let reply = client.check(HealthCheckRequest::default()).await?;
    println!(
        "client: Check over https -> {:?}",
        reply.into_inner().status()
    );
    let mut watch = client
        .watch(HealthCheckRequest::default())
        .await?
        .into_inner();
    println!(
        "client: Watch -> {:?}",
        watch.message().await?.map(|r| r.status())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    println!("client: the server vanishes (blackhole), then a second Check");
    lab.blackhole()?;
    let start = Instant::now();
    let limit = policy.detection_bound() + Duration::from_secs(3);
    let result = tokio::time::timeout(limit, client.check(HealthCheckRequest::default())).await;
    let elapsed = start.elapsed();
    drop(inside);
    match result {
        Err(_) => return Err("the call did not fail in time".into()),
        Ok(Ok(reply)) => return Err(format!("Check -> {:?}", reply.into_inner()).into()),
        Ok(Err(status)) => {
            println!(
                "client: Check failed after {:.1}s: code {:?}, message {:?}",
                elapsed.as_secs_f64(),
                status.code(),
                status.message()
            );
            let mut source = status.source();
            while let Some(e) = source {
                println!("  caused by: {e}");
                source = e.source();
            }
            // h2 keeps only the text of the I/O error: `recover` finds this process's record.
            let dead = DeadPeer::recover(&status).ok_or("no DeadPeer in the status")?;
            println!(
                "client: DeadPeer::recover -> cause {:?}, errno {:?}",
                dead.cause(),
                dead.raw_os_error()
            );
        }
    }

    match tokio::time::timeout(limit, reports.recv()).await {
        Ok(Some(Some(dead))) => println!(
            "server: the Watch ended {:.1}s after the blackhole: client dead, cause {:?}",
            start.elapsed().as_secs_f64(),
            dead.cause()
        ),
        Ok(other) => return Err(format!("the Watch ended without a death: {other:?}").into()),
        Err(_) => return Err("the Watch did not end in time".into()),
    }
    Ok(())
}
