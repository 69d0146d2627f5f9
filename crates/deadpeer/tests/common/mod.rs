//! Helpers shared by the integration tests: event capture and lab connections.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use deadpeer::{KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::Lab;
use tokio::net::TcpStream;

/// Kernel timer overshoot allowed past a policy's bound (kernel-facts: 55–140 ms measured).
pub const OVERSHOOT: Duration = Duration::from_millis(300);

pub use deadpeer_testkit::events::capture;

/// A policy from idle/interval/probes in seconds, user timeout auto.
pub fn policy(idle: u64, interval: u64, probes: u32) -> KeepalivePolicy {
    KeepalivePolicy::new(
        Duration::from_secs(idle),
        Duration::from_secs(interval),
        probes,
    )
    .unwrap()
}

/// A `deadpeer::connect` client in the lab's client namespace, and the accepted plain server
/// stream in the server namespace. One byte is exchanged each way so both sides are established
/// and have just received data.
pub async fn client_pair(
    lab: &Lab,
    port: u16,
    policy: &KeepalivePolicy,
) -> (KeepaliveStream<TcpStream>, TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener = lab.server().tokio_listener(addr).unwrap();
    let mut client = {
        let _inside = lab.client().enter().unwrap();
        deadpeer::connect(addr, policy).await.unwrap()
    };
    let (mut server, _) = listener.accept().await.unwrap();
    client.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).await.unwrap();
    server.write_all(b"y").await.unwrap();
    client.read_exact(&mut b).await.unwrap();
    (client, server)
}
