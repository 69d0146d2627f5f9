use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use crate::layer::BoxError;
use crate::policy::KeepalivePolicy;
use crate::stream::{AsTcpStream, KeepaliveStream, addrs, apply_logged};

pin_project_lite::pin_project! {
    /// The future of [`Keepalive`](super::Keepalive): the connection, under the policy.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) policy: KeepalivePolicy,
        pub(super) strict: bool,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    T: AsTcpStream,
    E: Into<BoxError>,
{
    type Output = Result<KeepaliveStream<T>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let conn = ready!(this.inner.poll(cx)).map_err(Into::into)?;
        let tcp = conn.as_tcp_stream();
        let (peer, local) = addrs(tcp);
        let applied = apply_logged(tcp, this.policy, peer, *this.strict)?;
        let policy = applied.then_some(*this.policy);
        Poll::Ready(Ok(KeepaliveStream::from_parts(conn, peer, local, policy)))
    }
}
