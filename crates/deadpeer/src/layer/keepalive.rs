//! [`KeepaliveLayer`]: puts every connection a connector makes under a policy.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, KeepaliveIo, Settings};
use crate::connections::Connections;
use crate::liveness::AsLiveness;
use crate::policy::KeepalivePolicy;
use crate::report::Direction;

/// Applies a [`KeepalivePolicy`] to every connection a connector makes, and wraps each one so a
/// dead server surfaces as a [`DeadPeer`](crate::DeadPeer).
///
/// The connector's response must be a [`KeepaliveIo`]: a `TcpStream` becomes a
/// [`KeepaliveStream`](crate::KeepaliveStream), and hyper-util's `TokioIo<TcpStream>` (what its
/// `HttpConnector` returns; feature `hyper`) becomes `TokioIo<KeepaliveStream>`, which hyper-util's
/// `Client` and tonic take as they take the original. Setting the policy costs five
/// `setsockopt` calls per connection.
///
/// A `setsockopt` failure is logged at WARN (`failed to apply keepalive`) and the connection is
/// kept, without a policy; with [`strict`](Self::strict) it is an error of the connector.
#[derive(Debug, Clone)]
pub struct KeepaliveLayer {
    settings: Settings,
    connections: Option<Connections>,
}

impl KeepaliveLayer {
    /// A layer applying `policy`.
    pub fn new(policy: KeepalivePolicy) -> Self {
        Self {
            settings: Settings::new(policy, Direction::Outbound),
            connections: None,
        }
    }

    /// Makes a failed `setsockopt` an error instead of a WARN.
    pub fn strict(mut self, strict: bool) -> Self {
        self.settings.strict = strict;
        self
    }

    /// Tracks every connection in `connections`, for
    /// [`Connections::snapshot`](crate::connections::Connections::snapshot): each is then
    /// watched from the start (as by [`liveness`](crate::KeepaliveStream::liveness)). Without
    /// it, connecting costs nothing more.
    pub fn track(mut self, connections: &Connections) -> Self {
        self.connections = Some(connections.clone());
        self
    }
}

impl<S> Layer<S> for KeepaliveLayer {
    type Service = Keepalive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Keepalive {
            inner,
            settings: self.settings,
            connections: self.connections.clone(),
        }
    }
}

/// A connector that applies a keepalive policy to its connections; see [`KeepaliveLayer`].
#[derive(Debug, Clone)]
pub struct Keepalive<S> {
    inner: S,
    settings: Settings,
    connections: Option<Connections>,
}

impl<S> Keepalive<S> {
    /// Wraps `inner`, applying `policy` to its connections.
    pub fn new(inner: S, policy: KeepalivePolicy) -> Self {
        KeepaliveLayer::new(policy).layer(inner)
    }

    /// The policy applied to each connection.
    pub fn policy(&self) -> KeepalivePolicy {
        self.settings.policy
    }

    /// The wrapped connector.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped connector, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the connector.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for Keepalive<S>
where
    S: Service<R>,
    S::Response: KeepaliveIo,
    S::Error: Into<BoxError>,
{
    type Response = <S::Response as KeepaliveIo>::Wrapped;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: R) -> Self::Future {
        ResponseFuture {
            state: State::Connecting {
                inner: self.inner.call(request),
                settings: self.settings,
                connections: self.connections.clone(),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Keepalive`]: the connection, under the policy.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Connecting { #[pin] inner: F, settings: Settings, connections: Option<Connections> },
        Done,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: KeepaliveIo,
    E: Into<BoxError>,
{
    type Output = Result<T::Wrapped, BoxError>;

    /// # Panics
    ///
    /// When polled again after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let StateProj::Connecting {
            inner,
            settings,
            connections,
        } = state.as_mut().project()
        else {
            panic!("deadpeer::layer::keepalive::ResponseFuture polled after completion");
        };
        let settings = *settings;
        let conn = ready!(inner.poll(cx));
        let connections = connections.take();
        state.set(State::Done);
        let wrapped = conn.map_err(Into::into)?.wrap(settings)?;
        if let Some(connections) = connections {
            connections.register(&AsLiveness::liveness(&wrapped));
        }
        Poll::Ready(Ok(wrapped))
    }
}
