//! Helpers shared by the integration tests: event capture and lab connections.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpeer::{KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::Lab;
use tokio::net::TcpStream;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Kernel timer overshoot allowed past a policy's bound (kernel-facts: 55–140 ms measured).
pub const OVERSHOOT: Duration = Duration::from_millis(300);

/// One captured event: its message and fields, as strings.
#[derive(Debug, Clone)]
pub struct Event {
    pub level: tracing::Level,
    pub target: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    pub fn with_message(&self, message: &str) -> Vec<Event> {
        self.all()
            .into_iter()
            .filter(|e| e.message == message)
            .collect()
    }
}

struct Visitor<'a>(&'a mut Event);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.0.message = v;
        } else {
            self.0
                .fields
                .insert(field.name().to_string(), v.trim_matches('"').to_string());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.message = value.to_string();
        } else {
            self.0
                .fields
                .insert(field.name().to_string(), value.to_string());
        }
    }
}

struct Capture(Events);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut e = Event {
            level: *meta.level(),
            target: meta.target().to_string(),
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut Visitor(&mut e));
        self.0.0.lock().unwrap().push(e);
    }
}

/// Captures every event on this thread until the guard drops. Use a current-thread runtime.
pub fn capture() -> (Events, tracing::subscriber::DefaultGuard) {
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    (events, guard)
}

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
