use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::layer::BoxError;
use crate::policy::KeepalivePolicy;
use crate::stream::{AsTcpStream, KeepaliveStream};

/// A connector that applies a keepalive policy to its connections; see
/// [`KeepaliveLayer`](super::KeepaliveLayer).
#[derive(Debug, Clone)]
pub struct Keepalive<S> {
    pub(super) inner: S,
    pub(super) policy: KeepalivePolicy,
    pub(super) strict: bool,
}

impl<S> Keepalive<S> {
    /// Wraps `inner`, applying `policy` to its connections.
    pub fn new(inner: S, policy: KeepalivePolicy) -> Self {
        Self {
            inner,
            policy,
            strict: false,
        }
    }

    /// The wrapped connector.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The policy applied to each connection.
    pub fn policy(&self) -> &KeepalivePolicy {
        &self.policy
    }
}

impl<S, R> Service<R> for Keepalive<S>
where
    S: Service<R>,
    S::Response: AsTcpStream,
    S::Error: Into<BoxError>,
{
    type Response = KeepaliveStream<S::Response>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            policy: self.policy,
            strict: self.strict,
        }
    }
}
