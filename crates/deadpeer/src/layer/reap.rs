//! [`ReapLayer`]: drops a per-connection service's future when its client dies.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, KeepaliveIo, Settings};
use crate::connections::Connections;
use crate::liveness::{AsLiveness, Dead};
use crate::policy::KeepalivePolicy;
use crate::report::Direction;

/// Reaps per-connection services whose client died.
///
/// It wraps a service that handles one accepted connection (`Service<IO>` for a [`KeepaliveIo`]).
/// For each connection it applies the policy (or, with [`inherited`](Self::inherited), trusts
/// that the listener set it; a stream from a [`KeepaliveListener`](crate::KeepaliveListener) is
/// passed on as it is), hands the inner service the wrapped connection, and races the inner
/// future against [`Liveness::dead`](crate::Liveness::dead). When the kernel declares the client
/// dead, the inner future is dropped on the spot, even if it is blocked on something other than
/// the socket, and the call fails with the [`DeadPeer`](crate::DeadPeer). The event is emitted
/// once. Watching costs no extra descriptor: one epoll registration of the connection's socket.
#[derive(Debug, Clone)]
pub struct ReapLayer {
    settings: Settings,
    connections: Option<Connections>,
}

impl ReapLayer {
    /// A layer applying `policy` to each connection.
    pub fn new(policy: KeepalivePolicy) -> Self {
        Self {
            settings: Settings::new(policy, Direction::Inbound),
            connections: None,
        }
    }

    /// Trusts that the connections already carry the policy, inherited from a listener it was
    /// set on (see [`KeepaliveListener`](crate::KeepaliveListener), or
    /// [`apply`](crate::apply) on a plain listener): no `setsockopt` per connection.
    pub fn inherited(mut self, inherited: bool) -> Self {
        self.settings.inherited = inherited;
        self
    }

    /// Makes a failed `setsockopt` an error of the call instead of a WARN.
    pub fn strict(mut self, strict: bool) -> Self {
        self.settings.strict = strict;
        self
    }

    /// Tracks every connection in `connections`, for
    /// [`Connections::snapshot`](crate::connections::Connections::snapshot). The layer watches
    /// each connection anyway, so tracking adds only the registry's lock and push.
    pub fn track(mut self, connections: &Connections) -> Self {
        self.connections = Some(connections.clone());
        self
    }
}

impl<S> Layer<S> for ReapLayer {
    type Service = Reap<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Reap {
            inner,
            settings: self.settings,
            connections: self.connections.clone(),
        }
    }
}

/// A per-connection service that is reaped when its client dies; see [`ReapLayer`].
#[derive(Debug, Clone)]
pub struct Reap<S> {
    inner: S,
    settings: Settings,
    connections: Option<Connections>,
}

impl<S> Reap<S> {
    /// Wraps `inner`, applying `policy` to each connection.
    pub fn new(inner: S, policy: KeepalivePolicy) -> Self {
        ReapLayer::new(policy).layer(inner)
    }

    /// The policy applied to each connection.
    pub fn policy(&self) -> KeepalivePolicy {
        self.settings.policy
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, IO> Service<IO> for Reap<S>
where
    IO: KeepaliveIo,
    S: Service<IO::Wrapped>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, io: IO) -> Self::Future {
        let state = match io.wrap(self.settings) {
            Ok(conn) => {
                let liveness = AsLiveness::liveness(&conn);
                if let Some(connections) = &self.connections {
                    connections.register(&liveness);
                }
                let dead = liveness.dead();
                State::Running {
                    inner: self.inner.call(conn),
                    dead: Some(dead),
                }
            }
            Err(e) => State::Failed {
                error: Some(e.into()),
            },
        };
        ResponseFuture { state }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Reap`]: the inner service's, unless the client dies first.
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
        Running { #[pin] inner: F, dead: Option<Dead> },
        Failed { error: Option<BoxError> },
        Done,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    /// # Panics
    ///
    /// When polled again after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        let result = match state.as_mut().project() {
            StateProj::Failed { error } => Err(error.take().unwrap_or_else(|| {
                "deadpeer::layer::reap::ResponseFuture polled after completion".into()
            })),
            StateProj::Running { inner, dead } => match inner.poll(cx) {
                Poll::Ready(result) => result.map_err(Into::into),
                Poll::Pending => match dead.as_mut().map(|d| Pin::new(d).poll(cx)) {
                    // Reap: drop the handler now, whatever it was waiting on.
                    Some(Poll::Ready(Some(death))) => Err(death.into()),
                    // The handler let go of its connection: nothing left to watch.
                    Some(Poll::Ready(None)) => {
                        *dead = None;
                        return Poll::Pending;
                    }
                    Some(Poll::Pending) | None => return Poll::Pending,
                },
            },
            StateProj::Done => {
                panic!("deadpeer::layer::reap::ResponseFuture polled after completion")
            }
        };
        state.set(State::Done);
        Poll::Ready(result)
    }
}
