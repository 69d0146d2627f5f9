//! tonic through KeepaliveLayer: a health check in flight to a vanished server fails within the
//! bound, and DeadPeer::recover recovers the verdict from the tonic Status.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::layer::KeepaliveLayer;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy};
use deadpeer_testkit::lab_or_skip;
use hyper_util::client::legacy::connect::HttpConnector;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_layer::Layer;

#[tokio::test(flavor = "current_thread")]
async fn health_check_in_flight_to_a_blackholed_server_fails_with_retransmit_timeout() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let addr = SocketAddr::new(lab.server_addr(), 7701);
    common::start_tonic_health(&lab, addr);

    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = {
        let _inside = lab.client().enter().unwrap();
        let connector = KeepaliveLayer::new(policy).layer(HttpConnector::new());
        endpoint.connect_with_connector(connector).await.unwrap()
    };
    let mut client = HealthClient::new(channel);
    let ok = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().status, 1, "SERVING");
    tokio::time::sleep(Duration::from_millis(200)).await;

    lab.blackhole().unwrap();
    let start = Instant::now();
    let status = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(5),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("the call failed in time")
    .expect_err("the call fails");
    let elapsed = start.elapsed();
    // h2 keeps only the text of the connection's I/O error: the death is recovered from this
    // process's own record, to the letter.
    let dead = DeadPeer::recover(&status).unwrap_or_else(|| panic!("no DeadPeer in {status:?}"));
    assert_eq!(dead.cause(), Cause::RetransmitTimeout, "{dead}");
    deadpeer_testkit::assert_within_bound(elapsed, policy);
}

#[tokio::test(flavor = "current_thread")]
async fn tonic_server_on_a_keepalive_listener_sees_its_client_die() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = deadpeer_testkit::events::capture();
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let addr = SocketAddr::new(lab.server_addr(), 7702);
    let listener =
        deadpeer::KeepaliveListener::new(lab.server().tokio_listener(addr).unwrap(), policy)
            .unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(listener.incoming()),
    );

    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let channel = {
        let _inside = lab.client().enter().unwrap();
        endpoint.connect().await.unwrap()
    };
    let mut client = HealthClient::new(channel);
    assert_eq!(
        client
            .check(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner()
            .status,
        1
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    lab.blackhole().unwrap();
    let deadline = start + policy.detection_bound() + Duration::from_secs(3);
    while events.with_message("dead peer detected").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detected = events.with_message("dead peer detected");
    assert_eq!(detected.len(), 1, "{:#?}", events.all());
    assert_eq!(detected[0].fields["error.type"], "keepalive_timeout");
    deadpeer_testkit::assert_within_bound(start.elapsed(), policy);
}
