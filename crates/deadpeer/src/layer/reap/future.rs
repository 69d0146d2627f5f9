use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::layer::BoxError;
use crate::liveness::Dead;

pin_project_lite::pin_project! {
    /// The future of [`Reap`](super::Reap): the inner service's, unless the client dies first.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        dead: Option<Dead>,
        error: Option<BoxError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, dead: Dead) -> Self {
        Self {
            inner: Some(inner),
            dead: Some(dead),
            error: None,
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            inner: None,
            dead: None,
            error: Some(error),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("running", &self.inner.is_some())
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(error) = this.error.take() {
            return Poll::Ready(Err(error));
        }
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            if let Poll::Ready(result) = inner.poll(cx) {
                this.inner.set(None);
                *this.dead = None;
                return Poll::Ready(result.map_err(Into::into));
            }
        }
        if let Some(dead) = this.dead.as_mut() {
            match Pin::new(dead).poll(cx) {
                Poll::Ready(Some(dead)) => {
                    // Reap: drop the handler now, whatever it was waiting on.
                    this.inner.set(None);
                    *this.dead = None;
                    return Poll::Ready(Err(Box::new(dead)));
                }
                // The handler let go of its connection: nothing left to watch.
                Poll::Ready(None) => *this.dead = None,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}
