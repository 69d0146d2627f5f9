//! The control: healthy idle clients of every integration see no death and no event for 10 s
//! under a 1/1/3 policy (bound 4 s), and their connections still work afterwards.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use deadpeer::layer::{KeepaliveLayer, ReapLayer};
use deadpeer::{KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::{events::capture, lab_or_skip};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower_layer::Layer;
use tower_service::Service;

#[tokio::test(flavor = "current_thread")]
async fn healthy_idle_clients_see_no_event_for_ten_seconds() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
    let at = |port| SocketAddr::new(lab.server_addr(), port);

    // axum SSE: one event, then an idle stream.
    let (sse_addr, mut sse_ended) = common::start_axum_sse(&lab, 7901, policy).await;
    let sse = common::get_from(lab.client(), sse_addr, "/sse").await;
    let mut sse_body = sse.into_body();
    sse_body.frame().await.unwrap().unwrap();

    // hyper-util client with a pooled connection.
    tokio::spawn(common::serve_hyper(
        lab.server().tokio_listener(at(7902)).unwrap(),
    ));
    let connector = KeepaliveLayer::new(policy).layer(HttpConnector::new());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: hyper::Uri = format!("http://{}/", at(7902)).parse().unwrap();
    // tonic health client.
    common::start_tonic_health(&lab, at(7903));
    let (first, channel) = {
        let _inside = lab.client().enter().unwrap();
        let first = client.get(uri.clone()).await.unwrap();
        let connector = KeepaliveLayer::new(policy).layer(HttpConnector::new());
        let endpoint = Endpoint::from_shared(format!("http://{}", at(7903))).unwrap();
        (
            first,
            endpoint.connect_with_connector(connector).await.unwrap(),
        )
    };
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
    let mut health = HealthClient::new(channel);
    health.check(HealthCheckRequest::default()).await.unwrap();

    // ReapLayer: an echo handler on an idle connection.
    let reap_listener = lab.server().tokio_listener(at(7904)).unwrap();
    let echo = tower::service_fn(|mut stream: KeepaliveStream| async move {
        let mut buf = [0u8; 16];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            stream.write_all(&buf[..n]).await?;
        }
    });
    let mut reap = ReapLayer::new(policy).layer(echo);
    let mut reap_client = lab.client().tokio_connect(at(7904)).await.unwrap();
    let (accepted, _) = reap_listener.accept().await.unwrap();
    let reaped = tokio::spawn(reap.call(accepted));

    tokio::time::sleep(Duration::from_secs(10)).await;

    assert!(
        events.with_message("dead peer detected").is_empty(),
        "{:#?}",
        events.with_message("dead peer detected")
    );
    assert!(
        sse_ended.try_recv().is_err(),
        "the SSE stream of a live client ended"
    );
    assert!(!reaped.is_finished(), "a live client's handler was reaped");
    // Every connection still works.
    let again = client.get(uri).await.unwrap();
    assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), "ok");
    health.check(HealthCheckRequest::default()).await.unwrap();
    reap_client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    reap_client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}
