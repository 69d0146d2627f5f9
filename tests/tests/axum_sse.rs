//! axum: an SSE handler ends its stream when its client dies (`take_until(liveness.dead())`),
//! the death is logged once, and the server keeps serving others.

mod common;

use std::time::{Duration, Instant};

use deadpeer::KeepalivePolicy;
use deadpeer_testkit::{events::capture, lab_or_skip};
use http_body_util::BodyExt;

#[tokio::test(flavor = "current_thread")]
async fn sse_stream_ends_when_the_client_is_blackholed() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let (addr, mut ended) = common::start_axum_sse(&lab, 7801, policy).await;

    let response = common::get_from(lab.client(), addr, "/sse").await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("data: hello"),
        "{first:?}"
    );
    // Let the client's ACK of the event reach the server, so the server's socket is idle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now();
    lab.blackhole().unwrap();
    let ended_at = tokio::time::timeout(
        policy.detection_bound() + Duration::from_secs(3),
        ended.recv(),
    )
    .await
    .unwrap_or_else(|_| panic!("the SSE stream did not end; events: {:#?}", events.all()))
    .unwrap();
    let latency = ended_at - start;
    deadpeer_testkit::assert_within_bound(latency, policy);

    let detected = events.settled("dead peer detected", 1);
    assert_eq!(detected.len(), 1, "{detected:#?}");
    assert_eq!(detected[0].fields["error.type"], "keepalive_timeout");

    // The server still serves everyone else (the router reaches it directly).
    let other = common::get_from(lab.router(), addr, "/hello").await;
    assert_eq!(other.status(), 200);
    assert_eq!(other.into_body().collect().await.unwrap().to_bytes(), "hi");
}
