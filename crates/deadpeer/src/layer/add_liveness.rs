//! [`LivenessLayer`]: every request carries its connection's [`Liveness`], so that a handler
//! can stop when its client leaves.

use std::task::{Context, Poll};

use hyper::http;
use tower_layer::Layer;

use crate::liveness::Liveness;

#[doc = include_str!("../docs/liveness_layer.md")]
///
#[cfg_attr(
    feature = "tonic",
    doc = "[`incoming.liveness_layer()`]: crate::tonic::Incoming::liveness_layer"
)]
#[cfg_attr(not(feature = "tonic"), doc = docs_rs!("`incoming.liveness_layer()`", "tonic/struct.Incoming.html#method.liveness_layer"))]
#[cfg_attr(feature = "axum", doc = "[`axum`]: crate::axum")]
#[cfg_attr(not(feature = "axum"), doc = docs_rs!("`axum`", "axum/index.html"))]
#[derive(Debug, Clone)]
pub struct LivenessLayer {
    source: Source,
}

/// Where a request's [`Liveness`] comes from.
#[derive(Debug, Clone)]
enum Source {
    /// The one connection a per-connection service serves.
    Connection(Liveness),
    /// The connections of a tonic [`Incoming`](crate::tonic::Incoming), found by the
    /// `TcpConnectInfo` tonic puts into each request.
    #[cfg(feature = "tonic")]
    Incoming(crate::tonic::Registry),
}

impl Source {
    #[cfg_attr(not(feature = "tonic"), allow(unused_variables))]
    fn liveness_of(&self, extensions: &http::Extensions) -> Option<Liveness> {
        match self {
            Source::Connection(liveness) => Some(liveness.clone()),
            #[cfg(feature = "tonic")]
            Source::Incoming(registry) => registry.liveness_of(extensions),
        }
    }
}

impl LivenessLayer {
    /// A layer for the service of one connection (what hyper's `serve_connection` takes): every
    /// request it serves carries `liveness`, that connection's.
    pub fn new(liveness: Liveness) -> Self {
        Self {
            source: Source::Connection(liveness),
        }
    }

    /// The layer of [`Incoming::liveness_layer`](crate::tonic::Incoming::liveness_layer).
    #[cfg(feature = "tonic")]
    pub(crate) fn incoming(registry: crate::tonic::Registry) -> Self {
        Self {
            source: Source::Incoming(registry),
        }
    }
}

impl<S> Layer<S> for LivenessLayer {
    type Service = AddLiveness<S>;

    fn layer(&self, inner: S) -> AddLiveness<S> {
        AddLiveness {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service of [`LivenessLayer`]: a tower `Service` (for tower stacks and tonic) and a
/// hyper `Service` (for `serve_connection`), as the service it wraps is.
#[derive(Debug, Clone)]
pub struct AddLiveness<S> {
    inner: S,
    source: Source,
}

impl<S> AddLiveness<S> {
    fn insert<B>(&self, request: &mut http::Request<B>) {
        if let Some(liveness) = self.source.liveness_of(request.extensions()) {
            request.extensions_mut().insert(liveness);
        }
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for AddLiveness<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        self.insert(&mut request);
        self.inner.call(request)
    }
}

impl<S, B> hyper::service::Service<http::Request<B>> for AddLiveness<S>
where
    S: hyper::service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut request: http::Request<B>) -> S::Future {
        self.insert(&mut request);
        self.inner.call(request)
    }
}
