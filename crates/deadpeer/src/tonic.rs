//! tonic 0.14 (feature `tonic`): servers on a [`KeepaliveListener`] whose handlers get their
//! connection's [`Liveness`], and channels under a policy that keep tonic's own connector
//! settings.
//!
//! **Servers.** `listener.incoming()` is the stream for `serve_with_incoming`, and
//! [`Incoming::liveness_layer`] a [`LivenessLayer`] that puts each request's [`Liveness`] into
//! its extensions (a handler that stops when its client leaves: [`Incoming::liveness_layer`]);
//! `request.remote_addr()` keeps working:
//!
//! ```
//! use deadpeer::{KeepaliveListener, KeepalivePolicy};
//!
//! async fn run() -> Result<(), Box<dyn std::error::Error>> {
//!     let incoming = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
//!         .await?
//!         .incoming();
//!     let (_reporter, health) = tonic_health::server::health_reporter();
//!     tonic::transport::Server::builder()
//!         .layer(incoming.liveness_layer())
//!         .add_service(health)
//!         .serve_with_incoming(incoming)
//!         .await?;
//!     Ok(())
//! }
//! ```
//!
//! **Channels.** [`EndpointExt::connect_with_keepalive`] connects as `Endpoint::connect` does
//! (its `TCP_NODELAY`, connect timeout, TLS for `https://`, HTTP/2 settings), with the policy on
//! the connection and a dead server surfacing as a `DeadPeer`:
//!
//! ```
//! use deadpeer::KeepalivePolicy;
//! use deadpeer::tonic::EndpointExt as _;
//!
//! async fn run() -> Result<(), tonic::transport::Error> {
//!     let channel = tonic::transport::Endpoint::from_static("http://10.0.0.2:50051")
//!         .connect_with_keepalive(KeepalivePolicy::FAST)
//!         .await?;
//!     let _ = channel;
//!     Ok(())
//! }
//! ```
//!
//! A failed call's `Status` holds the death only as text (h2 keeps the kind and the message of
//! an I/O error): [`DeadPeer::recover`](crate::DeadPeer::recover) finds it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::http;
use hyper_util::client::legacy::connect::HttpConnector;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};
use tower_layer::Layer;

pub use crate::layer::{AddLiveness, LivenessLayer};
use crate::layer::{Keepalive, KeepaliveLayer};
use crate::listener::KeepaliveListener;
use crate::liveness::{Liveness, State};
use crate::policy::KeepalivePolicy;
use crate::stream::KeepaliveStream;

/// tonic's connection info for a deadpeer stream is tonic's own [`TcpConnectInfo`], so
/// `Request::remote_addr` and `Request::local_addr` keep working.
impl Connected for KeepaliveStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local_addr().ok(),
            remote_addr: self.peer_addr().ok(),
        }
    }
}

/// The connector `Endpoint::connect` would use, under `policy`: hyper-util's `HttpConnector`
/// set as tonic sets it (`enforce_http(false)`, so `https://` endpoints work; the endpoint's
/// `TCP_NODELAY`, on by default; its connect timeout), with the policy's keepalive and user
/// timeout set before the SYN, inside a [`KeepaliveLayer`] that applies the policy again after
/// the connect, verifies it, and wraps the connection so a dead server surfaces as a
/// [`DeadPeer`](crate::DeadPeer).
///
/// The policy replaces the endpoint's `tcp_keepalive*` settings. tonic gives no getter for
/// `Endpoint::local_address`: set it on the connector, `connector.get_mut().set_local_address(..)`,
/// and connect with `endpoint.connect_with_connector(connector)`, which adds the endpoint's TLS
/// for `https://` URIs.
pub fn connector(endpoint: &Endpoint, policy: KeepalivePolicy) -> Keepalive<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(endpoint.get_tcp_nodelay());
    http.set_connect_timeout(endpoint.get_connect_timeout());
    http.set_keepalive(Some(policy.idle()));
    http.set_keepalive_interval(Some(policy.interval()));
    http.set_keepalive_retries(Some(policy.probes()));
    #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
    http.set_tcp_user_timeout(policy.effective_user_timeout());
    KeepaliveLayer::new(policy).layer(http)
}

/// Connecting a tonic [`Endpoint`] under a keepalive policy. Sealed; implemented for
/// `tonic::transport::Endpoint`.
pub trait EndpointExt: sealed::Sealed {
    /// Connects as `Endpoint::connect` does, through [`connector`]: tonic's own connector
    /// settings (`TCP_NODELAY`, connect timeout, TLS for `https://` with the endpoint's
    /// `tls_config`) are kept, and the policy is on every connection the channel makes.
    fn connect_with_keepalive(
        &self,
        policy: KeepalivePolicy,
    ) -> impl Future<Output = Result<Channel, tonic::transport::Error>> + Send;

    /// As [`connect_with_keepalive`](Self::connect_with_keepalive), connecting on first use,
    /// as `Endpoint::connect_lazy` does.
    fn connect_with_keepalive_lazy(&self, policy: KeepalivePolicy) -> Channel;
}

impl EndpointExt for Endpoint {
    fn connect_with_keepalive(
        &self,
        policy: KeepalivePolicy,
    ) -> impl Future<Output = Result<Channel, tonic::transport::Error>> + Send {
        self.connect_with_connector(connector(self, policy))
    }

    fn connect_with_keepalive_lazy(&self, policy: KeepalivePolicy) -> Channel {
        self.connect_with_connector_lazy(connector(self, policy))
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for tonic::transport::Endpoint {}
}

impl KeepaliveListener {
    /// The accepted connections as a `Stream`, for tonic's `serve_with_incoming`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn incoming(self) -> Incoming {
        Incoming {
            listener: self,
            registry: Registry::default(),
        }
    }
}

/// The accepted connections of a [`KeepaliveListener`], as a `Stream` for
/// `tonic::transport::Server::serve_with_incoming`; from [`KeepaliveListener::incoming`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming {
    listener: KeepaliveListener,
    /// The connections yielded, for [`Incoming::liveness_layer`].
    registry: Registry,
}

impl futures_core::Stream for Incoming {
    type Item = std::io::Result<KeepaliveStream>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener.poll_accept(cx).map(|r| {
            Some(r.map(|(stream, _)| {
                self.registry.register(&stream);
                stream
            }))
        })
    }
}

/// The connections an [`Incoming`] yields, by (local, peer) address, for [`LivenessLayer`].
///
/// Registering starts only once a layer was taken. A stream's entry outlives it until the next
/// sweep, which runs when the table has doubled since the last one: the table holds at most
/// about twice the live connections (plus 64), each entry a `Liveness` (no descriptor).
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<RegistryInner>);

#[derive(Default)]
struct RegistryInner {
    enabled: AtomicBool,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    connections: HashMap<(SocketAddr, SocketAddr), Liveness>,
    sweep_at: usize,
}

impl Registry {
    /// Records `stream`, if a layer asked for it.
    fn register(&self, stream: &KeepaliveStream) {
        if !self.0.enabled.load(Ordering::Relaxed) {
            return;
        }
        let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) else {
            return;
        };
        let liveness = stream.liveness();
        let mut table = self.lock();
        if table.connections.len() >= table.sweep_at {
            table
                .connections
                .retain(|_, l| matches!(l.state(), State::Alive));
            table.sweep_at = (table.connections.len() * 2).max(64);
        }
        table.connections.insert((local, peer), liveness);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Nothing panics while the lock is held; a poisoned table is still consistent.
        self.0.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Liveness` of a request's connection, from the `TcpConnectInfo` tonic puts into
    /// its extensions (over tonic's TLS too).
    pub(crate) fn liveness_of(&self, extensions: &http::Extensions) -> Option<Liveness> {
        let info = extensions.get::<TcpConnectInfo>()?;
        let key = (info.local_addr?, info.remote_addr?);
        self.lock().connections.get(&key).cloned()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("enabled", &self.0.enabled.load(Ordering::Relaxed))
            .field("connections", &self.lock().connections.len())
            .finish()
    }
}

impl Incoming {
    /// A [`LivenessLayer`] for `tonic::transport::Server::builder().layer(..)`: each request
    /// carries its connection's [`Liveness`], which a handler reads with
    /// `request.extensions().get::<Liveness>()`, and a server-streaming response ends when its
    /// client leaves with `take_until(liveness.gone())`. What a client's cancel of one call
    /// (an HTTP/2 stream reset) does, beside its connection going, is on [`LivenessLayer`].
    ///
    /// From this call on, the stream starts watching each connection it yields (one epoll
    /// registration of its own socket, as [`KeepaliveStream::liveness`] does) and records it by
    /// its addresses, which tonic's [`TcpConnectInfo`] gives back per request. With tonic's own
    /// TLS (`Server::tls_config`) this works as it does over plain TCP.
    ///
    /// # Examples
    ///
    /// A server-streaming handler (tonic-health's `Watch`, which never ends by itself) that ends
    /// when its client leaves:
    ///
    /// ```
    /// use std::pin::Pin;
    /// use deadpeer::Liveness;
    /// use futures_util::{Stream, StreamExt, stream};
    /// use tonic::{Request, Response, Status};
    /// use tonic_health::pb::health_server::Health;
    /// use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
    ///
    /// struct Watcher;
    ///
    /// #[tonic::async_trait]
    /// impl Health for Watcher {
    ///     async fn check(
    ///         &self,
    ///         _request: Request<HealthCheckRequest>,
    ///     ) -> Result<Response<HealthCheckResponse>, Status> {
    ///         Ok(Response::new(HealthCheckResponse { status: 1 }))
    ///     }
    ///
    ///     type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;
    ///
    ///     async fn watch(
    ///         &self,
    ///         request: Request<HealthCheckRequest>,
    ///     ) -> Result<Response<Self::WatchStream>, Status> {
    ///         let liveness = request.extensions().get::<Liveness>().cloned();
    ///         let liveness = liveness.ok_or_else(|| Status::internal("no liveness layer"))?;
    ///         let updates = stream::once(async { Ok(HealthCheckResponse { status: 1 }) })
    ///             .chain(stream::pending()) // a watch that would never end by itself
    ///             .take_until(liveness.gone());
    ///         Ok(Response::new(Box::pin(updates)))
    ///     }
    /// }
    /// ```
    pub fn liveness_layer(&self) -> LivenessLayer {
        self.registry.0.enabled.store(true, Ordering::Relaxed);
        LivenessLayer::incoming(self.registry.clone())
    }
}
