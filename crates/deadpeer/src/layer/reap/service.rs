use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};
use tower_service::Service;

use super::{ReapIo, ReapLayer, ResponseFuture};
use crate::layer::BoxError;
use crate::stream::{AsTcpStream, KeepaliveStream};

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
    IO: ReapIo,
    IO::Io: AsTcpStream + AsyncRead + AsyncWrite,
    S: Service<KeepaliveStream<IO::Io>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, io: IO) -> Self::Future {
        match io.into_keepalive_stream(&self.layer) {
            Ok(stream) => {
                let dead = stream.liveness().dead();
                ResponseFuture::new(self.inner.call(stream), dead)
            }
            Err(e) => ResponseFuture::failed(e.into()),
        }
    }
}
