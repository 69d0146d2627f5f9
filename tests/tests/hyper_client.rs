//! hyper-util's Client through KeepaliveLayer: a request in flight to a vanished server fails
//! within the bound, and DeadPeer::find recovers the verdict from the client's error.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::layer::KeepaliveLayer;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy};
use deadpeer_testkit::lab_or_skip;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_layer::Layer;

#[tokio::test(flavor = "current_thread")]
async fn request_in_flight_to_a_blackholed_server_fails_with_retransmit_timeout() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let policy: KeepalivePolicy = "idle=1s,interval=1s,probes=3".parse().unwrap();
    let addr = SocketAddr::new(lab.server_addr(), 7601);
    tokio::spawn(common::serve_hyper(
        lab.server().tokio_listener(addr).unwrap(),
    ));

    let connector = KeepaliveLayer::new(policy).layer(HttpConnector::new());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = format!("http://{addr}/").parse().unwrap();
    // The connector creates its socket while this thread is in the client namespace.
    let first = {
        let _inside = lab.client().enter().unwrap();
        client.get(uri.clone()).await.unwrap()
    };
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The pooled connection carries the next request into the blackhole: its bytes stay
    // unacknowledged, which only the user timeout catches.
    lab.blackhole().unwrap();
    let start = Instant::now();
    let hang: hyper::Uri = format!("http://{addr}/hang").parse().unwrap();
    let err = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(5),
        client.get(hang),
    )
    .await
    .expect("the request failed in time")
    .expect_err("the request fails");
    let elapsed = start.elapsed();
    let dead = DeadPeer::find(&err).unwrap_or_else(|| panic!("no DeadPeer in {err:?}"));
    assert_eq!(dead.cause(), Cause::RetransmitTimeout, "{dead}");
    deadpeer_testkit::assert_within_bound(elapsed, policy);
}
