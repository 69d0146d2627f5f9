//! Tower middleware: [`KeepaliveLayer`] for connectors, [`ReapLayer`] for per-connection services.
//!
//! | layer | wraps | does |
//! |---|---|---|
//! | [`KeepaliveLayer`] | a connector, `Service<Uri>` or any `Service<R>` returning a TCP connection | applies the policy to each new connection and returns it as a [`KeepaliveStream`](crate::KeepaliveStream), so a dead server surfaces as a [`DeadPeer`](crate::DeadPeer) through hyper-util's `Client` and tonic |
//! | [`ReapLayer`] | a per-connection service, `Service<IO>` for an accepted stream | applies the policy, hands the service a `KeepaliveStream`, and drops (reaps) the service's future when the client dies, returning the `DeadPeer` |
//!
//! # Examples
//!
//! A hyper-util client whose connections run under a policy (feature `hyper`):
//!
//! ```
//! # #[cfg(feature = "hyper")]
//! # fn client() {
//! use deadpeer::{KeepalivePolicy, layer::KeepaliveLayer};
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use tower_layer::Layer;
//!
//! let connector = KeepaliveLayer::new(KeepalivePolicy::FAST).layer(HttpConnector::new());
//! let client: Client<_, String> = Client::builder(TokioExecutor::new()).build(connector);
//! # let _ = client;
//! # }
//! ```
//!
//! A plain tokio accept loop that reaps handlers of dead clients:
//!
//! ```
//! use std::convert::Infallible;
//! use deadpeer::{KeepalivePolicy, KeepaliveStream, layer::ReapLayer};
//! use tokio::net::TcpStream;
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let handler = tower::service_fn(|stream: KeepaliveStream<TcpStream>| async move {
//!     // Serve the connection; if the client dies, this future is dropped.
//!     drop(stream);
//!     Ok::<_, Infallible>(())
//! });
//! let mut reap = ReapLayer::new(KeepalivePolicy::FAST).layer(handler);
//! # let addr = listener.local_addr()?;
//! # tokio::spawn(async move { let _c = tokio::net::TcpStream::connect(addr).await; });
//! let (stream, _) = listener.accept().await?;
//! tokio::spawn(reap.call(stream));
//! # Ok(()) }
//! ```

mod keepalive;
mod reap;

pub use keepalive::{Keepalive, KeepaliveLayer, ResponseFuture as KeepaliveFuture};
pub use reap::{Reap, ReapIo, ReapLayer, ResponseFuture as ReapFuture};

/// The error type of the layers: the inner service's error or a [`DeadPeer`](crate::DeadPeer),
/// boxed, as tower-http does. Recover the `DeadPeer` with [`DeadPeer::find`](crate::DeadPeer::find)
/// or `downcast_ref`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
