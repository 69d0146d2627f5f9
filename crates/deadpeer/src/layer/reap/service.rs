use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use super::{ReapLayer, ResponseFuture};
use crate::layer::BoxError;
use crate::stream::{AsTcpStream, KeepaliveStream};
use crate::{sys, trace};

/// A per-connection service that is reaped when its client dies; see
/// [`ReapLayer`](super::ReapLayer).
#[derive(Debug, Clone)]
pub struct Reap<S> {
    pub(super) inner: S,
    pub(super) layer: ReapLayer,
}

impl<S> Reap<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, IO> Service<IO> for Reap<S>
where
    IO: AsTcpStream + AsyncRead + AsyncWrite,
    S: Service<KeepaliveStream<IO>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, io: IO) -> Self::Future {
        let policy = self.layer.policy;
        let tcp = io.as_tcp_stream();
        let (peer, local) = (tcp.peer_addr().ok(), tcp.local_addr().ok());
        let applied = if self.layer.inherited {
            trace::keepalive_applied(peer, &policy, true);
            Ok(())
        } else {
            sys::apply(tcp, &policy).inspect(|()| trace::keepalive_applied(peer, &policy, false))
        };
        if let Err(e) = applied {
            trace::apply_failed(peer, &e);
            if self.layer.strict {
                return ResponseFuture::failed(e.into());
            }
        }
        let stream = KeepaliveStream::from_parts(io, peer, local, Some(policy));
        let dead = stream.liveness().dead();
        ResponseFuture::new(self.inner.call(stream), dead)
    }
}
