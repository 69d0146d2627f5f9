//! tonic channels under a policy that keep tonic's own connector settings: `TCP_NODELAY` as the
//! endpoint says (on by default), `https://` with the endpoint's TLS; a call in flight to a
//! blackholed server fails within the bound, and `DeadPeer::recover` gives the death.

mod tls_certs;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpeer::layer::KeepaliveLayer;
use deadpeer::tonic::EndpointExt as _;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::{Lab, deadline, dies_within_bound, lab_or_skip};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tls_certs::Certs;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt as _;
use tower_layer::Layer as _;

/// A tonic-health server over TLS on a plain listener in the server namespace (no keepalive of
/// its own: the only deaths seen are the client's).
fn serve_tls(lab: &Lab, port: u16, certs: &Certs) -> SocketAddr {
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener = lab.server().tokio_listener(addr).unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&certs.cert_pem, &certs.key_pem));
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

fn https_endpoint(addr: SocketAddr, certs: &Certs) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&certs.cert_pem)))
        .unwrap()
}

/// What the socket of each connection the channel made says: `TCP_NODELAY`, and whether the
/// keepalive options read back match `policy`.
type Seen = Arc<Mutex<Vec<(bool, bool)>>>;

/// Connects through `deadpeer::tonic::connector` (what `connect_with_keepalive` uses), reading
/// each new connection's socket options back.
async fn connect_recorded(
    endpoint: &Endpoint,
    policy: KeepalivePolicy,
) -> (HealthClient<tonic::transport::Channel>, Seen) {
    let seen = Seen::default();
    let record = seen.clone();
    let connector = deadpeer::tonic::connector(endpoint, policy).map_response(
        move |io: TokioIo<KeepaliveStream>| {
            let stream = io.inner();
            let nodelay = socket2::SockRef::from(stream).tcp_nodelay().unwrap();
            let keepalive = deadpeer::inspect(stream).unwrap().matches(policy);
            record.lock().unwrap().push((nodelay, keepalive));
            io
        },
    );
    let channel = endpoint.connect_with_connector(connector).await.unwrap();
    (HealthClient::new(channel), seen)
}

#[tokio::test(flavor = "current_thread")]
async fn channel_keeps_nodelay_and_https() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let p: KeepalivePolicy = "1:1:3".parse().unwrap();
    let certs = Certs::new(&[lab.server_addr().to_string()]);
    let addr = serve_tls(&lab, 7711, &certs);
    let endpoint = https_endpoint(addr, &certs);
    let _inside = lab.client().enter().unwrap();

    // The one call: https works, and the check is answered.
    let channel = endpoint.connect_with_keepalive(p).await.unwrap();
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status, 1, "SERVING");

    // The same connector, read back: TCP_NODELAY on (tonic's default), the policy in place.
    let (mut client, seen) = connect_recorded(&endpoint, p).await;
    client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(true, true)]);

    // It follows the endpoint: `tcp_nodelay(false)` gives a socket without it.
    let (mut client, seen) = connect_recorded(&endpoint.clone().tcp_nodelay(false), p).await;
    client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(false, true)]);

    // For contrast, the recipe this replaces: hyper-util's own `HttpConnector::new()` refuses
    // the `https://` endpoint (`enforce_http`).
    let old = KeepaliveLayer::new(p).layer(HttpConnector::new());
    assert!(endpoint.connect_with_connector(old).await.is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn call_in_flight_over_https_to_a_blackholed_server_fails_within_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = deadpeer_testkit::events::capture();
    let p: KeepalivePolicy = "1:1:3".parse().unwrap();
    let certs = Certs::new(&[lab.server_addr().to_string()]);
    let addr = serve_tls(&lab, 7712, &certs);
    let channel = {
        let _inside = lab.client().enter().unwrap();
        https_endpoint(addr, &certs)
            .connect_with_keepalive(p)
            .await
            .unwrap()
    };
    let mut client = HealthClient::new(channel);
    client.check(HealthCheckRequest::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    lab.blackhole().unwrap();
    let start = Instant::now();
    let status = dies_within_bound(p, start, client.check(HealthCheckRequest::default()))
        .await
        .expect_err("the call fails");
    eprintln!(
        "call failed after {:?} (deadline {:?})",
        start.elapsed(),
        deadline(p)
    );
    // h2 keeps only the text of the connection's I/O error; the death is this process's own.
    let dead = DeadPeer::recover(&status).unwrap_or_else(|| panic!("no DeadPeer in {status:?}"));
    assert_eq!(dead.cause(), Cause::RetransmitTimeout, "{dead}");
    assert_eq!(dead.peer_addr(), Some(addr));
    let detected = events.settled("dead peer detected", 1);
    assert_eq!(detected.len(), 1, "{:#?}", events.all());
    assert_eq!(detected[0].fields["error.type"], "retransmit_timeout");
}
