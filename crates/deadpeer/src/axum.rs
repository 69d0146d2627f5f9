//! axum 0.8 (feature `axum`): [`KeepaliveListener`] (and, feature `rustls`,
//! [`TlsListener`]) as an `axum::serve::Listener`, and [`Liveness`] as
//! connect info, alone or next to the peer's `SocketAddr` ([`RouterExt`]).
//!
#![cfg_attr(feature = "rustls", doc = "[`TlsListener`]: crate::tls::TlsListener")]
#![cfg_attr(not(feature = "rustls"), doc = docs_rs!("`TlsListener`", "tls/struct.TlsListener.html"))]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tower_service::Service;

use crate::listener::KeepaliveListener;
use crate::liveness::{AsLiveness, Liveness};
use crate::stream::KeepaliveStream;

/// `axum::serve(listener, app)` accepts through deadpeer: every connection runs under the policy,
/// and a dead client surfaces as a `DeadPeer` on its stream.
///
/// Accept errors follow axum's own contract for `TcpListener`: connection errors
/// (`ECONNREFUSED`, `ECONNABORTED`, `ECONNRESET`) are skipped, anything else (such as `EMFILE`)
/// is logged at ERROR (`accept failed; retrying in 1s`) and retried after a second. A connection
/// that [strict](KeepaliveListener::strict) mode refuses is dropped and the next one is accepted
/// at once.
impl Listener for KeepaliveListener {
    type Io = KeepaliveStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let mut backoff = None;
        std::future::poll_fn(|cx| self.poll_accept_serving(&mut backoff, cx)).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        KeepaliveListener::local_addr(self)
    }
}

/// Handlers get their connection's [`Liveness`] with `ConnectInfo<Liveness>`, after
/// `axum::serve(listener, app.into_make_service_with_connect_info::<Liveness>())`, for a
/// [`KeepaliveListener`] or (feature `rustls`) a [`TlsListener`].
///
/// ```
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use deadpeer::{KeepaliveListener, KeepalivePolicy, Liveness};
///
/// async fn handler(ConnectInfo(liveness): ConnectInfo<Liveness>) -> String {
///     format!("hello {:?}", liveness.peer_addr())
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
/// let app = Router::new().route("/", get(handler));
/// axum::serve(listener, app.into_make_service_with_connect_info::<Liveness>()).await
/// # }
/// ```
///
/// # Handlers that stop when their client leaves
///
/// Race the work against [`Liveness::gone`], which resolves when the client's connection ends
/// (its FIN, its RST, or its death), with nothing reading it; an SSE stream ends with
/// `take_until(liveness.gone())`:
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use axum::extract::ConnectInfo;
/// use axum::response::sse::{Event, Sse};
/// use deadpeer::Liveness;
/// use futures_util::{Stream, StreamExt, stream};
///
/// async fn work(ConnectInfo(liveness): ConnectInfo<Liveness>) -> String {
///     tokio::select! {
///         Some(ending) = liveness.gone() => format!("client left: {ending}"),
///         () = tokio::time::sleep(Duration::from_secs(60)) => "done".to_owned(), // the long job
///     }
/// }
///
/// async fn events(
///     ConnectInfo(liveness): ConnectInfo<Liveness>,
/// ) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
///     let updates = stream::pending(); // a stream that is quiet for long stretches
///     Sse::new(updates.take_until(liveness.gone()))
/// }
/// ```
///
/// hyper, which `axum::serve` runs, also drops a handler itself when the connection ends, in
/// most cases: what it does over HTTP/1 and HTTP/2 (one request cancelled, a half-closed
/// client), and what `gone()` adds, is on
/// [`LivenessLayer`].
///
#[cfg_attr(
    feature = "hyper",
    doc = "[`LivenessLayer`]: crate::layer::LivenessLayer#http1-and-http2-what-ends-a-request-besides-gone"
)]
#[cfg_attr(not(feature = "hyper"), doc = docs_rs!("`LivenessLayer`", "layer/add_liveness/struct.LivenessLayer.html#http1-and-http2-what-ends-a-request-besides-gone"))]
#[cfg_attr(feature = "rustls", doc = "[`TlsListener`]: crate::tls::TlsListener")]
#[cfg_attr(not(feature = "rustls"), doc = docs_rs!("`TlsListener`", "tls/struct.TlsListener.html"))]
impl Connected<IncomingStream<'_, KeepaliveListener>> for Liveness {
    fn connect_info(stream: IncomingStream<'_, KeepaliveListener>) -> Self {
        stream.io().liveness()
    }
}

/// As for [`KeepaliveListener`]: `ConnectInfo<Liveness>` over TLS (feature `rustls`).
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
impl Connected<IncomingStream<'_, crate::tls::TlsListener>> for Liveness {
    fn connect_info(stream: IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        stream.io().get_ref().0.liveness()
    }
}

/// Serving an axum app so that handlers and middleware get **both** `ConnectInfo<SocketAddr>`
/// (for rate limiters, client-IP logging, anything that reads it from the request extensions)
/// and `ConnectInfo<Liveness>`. Implemented for `axum::Router`; served from a
/// [`KeepaliveListener`] or (feature `rustls`) a [`TlsListener`].
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use deadpeer::axum::RouterExt as _;
/// use deadpeer::{KeepaliveListener, KeepalivePolicy, Liveness};
///
/// async fn handler(
///     ConnectInfo(addr): ConnectInfo<SocketAddr>,
///     ConnectInfo(liveness): ConnectInfo<Liveness>,
/// ) -> String {
///     format!("hello {addr}, alive: {}", !liveness.is_dead())
/// }
///
/// async fn run() -> std::io::Result<()> {
///     let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
///     let app = Router::new().route("/", get(handler));
///     axum::serve(listener, app.into_make_service_with_liveness()).await
/// }
/// ```
///
/// Each connection is watched from the moment it is accepted: one epoll registration of its own
/// socket and about 240 heap bytes, no extra descriptor (docs/benchmarks.md).
///
#[cfg_attr(feature = "rustls", doc = "[`TlsListener`]: crate::tls::TlsListener")]
#[cfg_attr(not(feature = "rustls"), doc = docs_rs!("`TlsListener`", "tls/struct.TlsListener.html"))]
pub trait RouterExt: sealed::Sealed + Sized {
    /// A make-service that gives every request `ConnectInfo<SocketAddr>` (the peer address, an
    /// IPv4-mapped address as IPv4) and `ConnectInfo<Liveness>`.
    fn into_make_service_with_liveness(self) -> IntoMakeServiceWithLiveness<Self>;
}

impl<S: Clone + Send + Sync + 'static> RouterExt for axum::Router<S> {
    fn into_make_service_with_liveness(self) -> IntoMakeServiceWithLiveness<Self> {
        IntoMakeServiceWithLiveness { app: self }
    }
}

mod sealed {
    pub trait Sealed {}
    impl<S> Sealed for axum::Router<S> {}
}

/// The make-service of [`RouterExt::into_make_service_with_liveness`].
#[derive(Debug, Clone)]
pub struct IntoMakeServiceWithLiveness<A> {
    app: A,
}

impl<'a, L, A> Service<IncomingStream<'a, L>> for IntoMakeServiceWithLiveness<A>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: AsLiveness,
    A: Clone,
{
    type Response = AddConnectInfo<A>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<AddConnectInfo<A>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: IncomingStream<'a, L>) -> Self::Future {
        std::future::ready(Ok(AddConnectInfo {
            inner: self.app.clone(),
            addr: *stream.remote_addr(),
            liveness: stream.io().liveness(),
        }))
    }
}

/// The per-connection service of [`IntoMakeServiceWithLiveness`]: inserts
/// `ConnectInfo<SocketAddr>` and `ConnectInfo<Liveness>` into each request's extensions.
#[derive(Debug, Clone)]
pub struct AddConnectInfo<S> {
    inner: S,
    addr: SocketAddr,
    liveness: Liveness,
}

impl<S, B> Service<axum::http::Request<B>> for AddConnectInfo<S>
where
    S: Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::http::Request<B>) -> Self::Future {
        let extensions = request.extensions_mut();
        extensions.insert(ConnectInfo(self.addr));
        extensions.insert(ConnectInfo(self.liveness.clone()));
        self.inner.call(request)
    }
}
