//! Tower middleware: [`KeepaliveLayer`] for connectors, [`ReapLayer`] for per-connection
//! services, `LivenessLayer` for request services (feature `hyper`).
//!
//! | layer | wraps | does |
//! |---|---|---|
//! | [`KeepaliveLayer`] | a connector, `Service<Uri>` or any `Service<R>` returning a [`KeepaliveIo`] | applies the policy to each new connection and wraps it, so a dead server surfaces as a [`DeadPeer`](crate::DeadPeer) through hyper-util's `Client` and tonic |
//! | [`ReapLayer`] | a per-connection service, `Service<IO>` for an accepted [`KeepaliveIo`] | applies the policy, hands the service the wrapped connection, and drops (reaps) the service's future when the client dies, returning the `DeadPeer` |
//! | `LivenessLayer` (feature `hyper`) | a request service, `Service<http::Request<B>>` (tower's or hyper's) | puts the connection's [`Liveness`](crate::Liveness) into each request's extensions, for handlers that stop when their client leaves |
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
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let handler = tower::service_fn(|stream: KeepaliveStream| async move {
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

#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub mod add_liveness;
pub mod keepalive;
pub mod reap;

use std::io;

use tokio::net::TcpStream;

#[cfg(feature = "hyper")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
pub use self::add_liveness::{AddLiveness, LivenessLayer};
pub use self::keepalive::{Keepalive, KeepaliveLayer};
pub use self::reap::{Reap, ReapLayer};
use crate::liveness::AsLiveness;
use crate::policy::KeepalivePolicy;
use crate::report::{self, Direction};
use crate::stream::{KeepaliveStream, addrs, apply_logged};

/// The error type of the layers: the inner service's error or a [`DeadPeer`](crate::DeadPeer),
/// boxed, as tower-http does. Recover the `DeadPeer` with [`DeadPeer::find`](crate::DeadPeer::find).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection type the layers can put under a policy, and what they make of it. Sealed.
///
/// | connection | becomes |
/// |---|---|
/// | `tokio::net::TcpStream` | [`KeepaliveStream`] |
/// | [`KeepaliveStream`] (from a [`KeepaliveListener`](crate::KeepaliveListener): already under its policy) | itself |
/// | `hyper_util::rt::TokioIo<TcpStream>` (feature `hyper`) | `TokioIo<KeepaliveStream>` |
/// | `hyper_util::rt::TokioIo<KeepaliveStream>` (feature `hyper`) | itself |
pub trait KeepaliveIo: Sized + sealed::Sealed {
    /// What the layers hand on.
    type Wrapped: AsLiveness;

    #[doc(hidden)]
    fn wrap(self, settings: sealed::Settings) -> io::Result<Self::Wrapped>;
}

use self::sealed::Settings;

mod sealed {
    use super::*;

    pub trait Sealed {}
    impl Sealed for TcpStream {}
    impl Sealed for KeepaliveStream {}
    #[cfg(feature = "hyper")]
    impl<T: KeepaliveIo<Wrapped = KeepaliveStream>> Sealed for hyper_util::rt::TokioIo<T> {}

    /// What the layers apply to each connection (unnameable outside the crate).
    #[derive(Debug, Clone, Copy)]
    pub struct Settings {
        pub(crate) policy: KeepalivePolicy,
        pub(crate) strict: bool,
        pub(crate) inherited: bool,
        /// Which side the connections are (for the metrics).
        pub(crate) direction: Direction,
    }

    impl Settings {
        pub(crate) fn new(policy: KeepalivePolicy, direction: Direction) -> Self {
            Self {
                policy,
                strict: false,
                inherited: false,
                direction,
            }
        }

        /// Puts `tcp` under the policy (or trusts it is, when inherited), and wraps it.
        pub(crate) fn wrap(&self, tcp: TcpStream) -> io::Result<KeepaliveStream> {
            let (peer, local) = addrs(&tcp);
            let policy = if self.inherited {
                report::keepalive_applied(peer, &self.policy, true);
                Some(self.policy)
            } else {
                apply_logged(&tcp, self.policy, peer, self.strict)?
            };
            if policy.is_some() {
                report::connection_opened(self.direction);
            }
            Ok(KeepaliveStream::from_parts(tcp, peer, local, policy))
        }
    }
}

impl KeepaliveIo for TcpStream {
    type Wrapped = KeepaliveStream;

    fn wrap(self, settings: Settings) -> io::Result<KeepaliveStream> {
        settings.wrap(self)
    }
}

impl KeepaliveIo for KeepaliveStream {
    type Wrapped = KeepaliveStream;

    fn wrap(self, _: Settings) -> io::Result<KeepaliveStream> {
        Ok(self)
    }
}

#[cfg(feature = "hyper")]
impl<T: KeepaliveIo<Wrapped = KeepaliveStream>> KeepaliveIo for hyper_util::rt::TokioIo<T> {
    type Wrapped = hyper_util::rt::TokioIo<KeepaliveStream>;

    fn wrap(self, settings: Settings) -> io::Result<Self::Wrapped> {
        Ok(hyper_util::rt::TokioIo::new(
            self.into_inner().wrap(settings)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    /// A stream from a `KeepaliveListener` is passed on as it is: no second wrap, no
    /// `setsockopt`.
    #[tokio::test(flavor = "current_thread")]
    async fn a_keepalive_stream_is_not_wrapped_again() {
        let p = KeepalivePolicy::FAST;
        let listener = crate::KeepaliveListener::bind("127.0.0.1:0", p)
            .await
            .unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let calls = sys::debug_apply_calls_on_this_thread();
        let mut settings = Settings::new(KeepalivePolicy::CLOUD, Direction::Inbound);
        settings.strict = true;
        let same = stream.wrap(settings).unwrap();
        assert_eq!(sys::debug_apply_calls_on_this_thread(), calls);
        assert_eq!(
            same.policy(),
            Some(p),
            "the listener's policy, not the layer's"
        );
    }
}
