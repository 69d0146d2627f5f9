//! TLS (feature `rustls`): [`TlsListener`] serves TLS over deadpeer's connections, so a dead
//! client surfaces through TLS as the typed [`DeadPeer`](crate::DeadPeer).
//!
//! TLS goes **over** the [`KeepaliveStream`]: tokio-rustls hands the `io::Error` of the stream
//! underneath through its reads and writes unchanged, so a death reaches the application (and
//! hyper, and axum) as the same latched `DeadPeer`, with one `dead peer detected` event.
//!
//! deadpeer chooses no crypto provider: the [`ServerConfig`] is yours, built with whichever
//! provider your application uses (`ring` or `aws-lc-rs`, rustls 0.23). The library only needs
//! tokio-rustls's types, so it turns on none of its default features.
//!
//! Clients need no deadpeer type: put `tokio_rustls::TlsConnector::connect` over
//! [`deadpeer::connect`](crate::connect) (see [`TlsListener::accept`]), or, for hyper-util's
//! `Client`, hyper-rustls's `HttpsConnector` over [`KeepaliveLayer`]
//! (feature `hyper`): `KeepaliveLayer` returns `TokioIo<KeepaliveStream>`, a hyper-util
//! `Connection`, which is what hyper-rustls wraps.
//!
//! ```
//! # #[cfg(feature = "hyper")]
//! # mod example {
//! use deadpeer::KeepalivePolicy;
//! use deadpeer::layer::{Keepalive, KeepaliveLayer};
//! use hyper_rustls::HttpsConnector;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use tokio_rustls::rustls::ClientConfig;
//! use tower_layer::Layer;
//!
//! type HttpsClient = Client<HttpsConnector<Keepalive<HttpConnector>>, String>;
//!
//! fn https_client(tls: ClientConfig) -> HttpsClient {
//!     let mut http = HttpConnector::new();
//!     http.enforce_http(false); // the scheme is hyper-rustls's to check
//!     let https = hyper_rustls::HttpsConnectorBuilder::new()
//!         .with_tls_config(tls)
//!         .https_only()
//!         .enable_http1()
//!         .wrap_connector(KeepaliveLayer::new(KeepalivePolicy::FAST).layer(http));
//!     Client::builder(TokioExecutor::new()).build(https)
//! }
//! # }
//! ```
//!
#![cfg_attr(
    feature = "tower",
    doc = "[`KeepaliveLayer`]: crate::layer::KeepaliveLayer"
)]
#![cfg_attr(not(feature = "tower"), doc = docs_rs!("`KeepaliveLayer`", "layer/keepalive/struct.KeepaliveLayer.html"))]

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::ToSocketAddrs;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

pub use tokio_rustls;

use crate::listener::KeepaliveListener;
use crate::policy::KeepalivePolicy;
use crate::report;
use crate::stream::KeepaliveStream;

/// A server-side TLS connection over a [`KeepaliveStream`], as [`TlsListener`] accepts it.
///
/// Its connection's [`Liveness`](crate::Liveness) is `stream.liveness()`
/// ([`AsLiveness`](crate::liveness::AsLiveness)), or `stream.get_ref().0.liveness()`.
pub type TlsStream = tokio_rustls::server::TlsStream<KeepaliveStream>;

impl crate::liveness::sealed::Sealed for TlsStream {}

/// The [`Liveness`](crate::Liveness) of the connection under TLS.
impl crate::liveness::AsLiveness for TlsStream {
    fn liveness(&self) -> crate::Liveness {
        self.get_ref().0.liveness()
    }
}

/// A handshake in progress gets this long before it is dropped, unless
/// [`TlsListener::handshake_timeout`] says otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many handshakes run at once, unless [`TlsListener::max_handshakes`] says
/// otherwise; beyond it, new connections wait in the kernel's accept queue.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

type Handshake = Option<(TlsStream, SocketAddr)>;

/// A [`KeepaliveListener`] that completes a TLS handshake on each accepted connection: every
/// connection runs under the policy, and a dead client surfaces through TLS as a
/// [`DeadPeer`](crate::DeadPeer).
///
/// - **Handshakes run concurrently**, each on its own task, each bounded by a
///   [timeout](Self::handshake_timeout) (10 s by default): a slow or silent client holds up no
///   other. At most [`max_handshakes`](Self::max_handshakes) are in progress (1024 by default).
///   A failed or timed-out handshake is logged at DEBUG (`tls handshake failed`, fields
///   `peer.addr` and `error`) and the connection is dropped: a client's bad handshake is the
///   client's problem, and scanners would otherwise flood the log.
/// - **Accept errors** are handled as [`KeepaliveListener`]'s are under axum: connection errors
///   (`ECONNABORTED`, `ECONNRESET`, `ECONNREFUSED`) are skipped, anything else (such as
///   `EMFILE`) is logged at ERROR (`accept failed; retrying in 1s`) and accepting resumes after
///   a second, while the handshakes in progress go on.
/// - With the `axum` feature it is an `axum::serve::Listener`, and
///   [`into_make_service_with_liveness`]
///   gives handlers `ConnectInfo<SocketAddr>` and `ConnectInfo<Liveness>` as over plain TCP.
///
/// # Examples
///
/// With axum, see the `axum::serve::Listener` impl below; a plain tokio server is under
/// [`accept`](Self::accept).
///
#[cfg_attr(
    feature = "axum",
    doc = "[`into_make_service_with_liveness`]: crate::axum::RouterExt::into_make_service_with_liveness"
)]
#[cfg_attr(not(feature = "axum"), doc = docs_rs!("`into_make_service_with_liveness`", "axum/trait.RouterExt.html#tymethod.into_make_service_with_liveness"))]
pub struct TlsListener {
    listener: KeepaliveListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Handshake>,
    timeout: Duration,
    max_handshakes: usize,
    /// While accepting is paused after an accept error.
    backoff: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("listener", &self.listener)
            .field("handshakes_in_progress", &self.handshakes.len())
            .field("handshake_timeout", &self.timeout)
            .field("max_handshakes", &self.max_handshakes)
            .finish_non_exhaustive()
    }
}

impl KeepaliveListener {
    /// Serves TLS on this listener's connections with `config`: see [`TlsListener`].
    #[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
    pub fn tls(self, config: impl Into<TlsAcceptor>) -> TlsListener {
        TlsListener::new(self, config)
    }
}

impl TlsListener {
    /// Accepts TLS over `listener`'s connections, with `config` (an `Arc<ServerConfig>` or a
    /// `tokio_rustls::TlsAcceptor`).
    ///
    /// The `ServerConfig` is built as for any rustls server; deadpeer chooses no crypto provider
    /// (`ServerConfig::builder()` takes the process's default, or the one compiled in):
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tokio_rustls::rustls::ServerConfig;
    /// use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    ///
    /// fn server_config(
    ///     chain: Vec<CertificateDer<'static>>,
    ///     key: PrivateKeyDer<'static>,
    /// ) -> Result<Arc<ServerConfig>, tokio_rustls::rustls::Error> {
    ///     let config = ServerConfig::builder()
    ///         .with_no_client_auth()
    ///         .with_single_cert(chain, key)?;
    ///     Ok(Arc::new(config))
    /// }
    /// ```
    pub fn new(listener: KeepaliveListener, config: impl Into<TlsAcceptor>) -> Self {
        Self {
            listener,
            acceptor: config.into(),
            handshakes: JoinSet::new(),
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            backoff: None,
        }
    }

    /// Binds a [`KeepaliveListener`] to `addr` under `policy`, and serves TLS on it.
    ///
    /// # Errors
    ///
    /// As [`KeepaliveListener::bind`].
    pub async fn bind(
        addr: impl ToSocketAddrs,
        policy: KeepalivePolicy,
        config: std::sync::Arc<ServerConfig>,
    ) -> io::Result<Self> {
        Ok(Self::new(
            KeepaliveListener::bind(addr, policy).await?,
            config,
        ))
    }

    /// How long a client may take to complete its handshake (10 s by default). A zero timeout
    /// fails every handshake; `Duration::MAX` waits for ever.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many handshakes may be in progress at once (1024 by default; 0 is taken as 1).
    /// Beyond it, new connections wait in the kernel's accept queue.
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// The next connection whose handshake completed, and its peer's address.
    ///
    /// Errors are handled here (see [`TlsListener`]), as a server loop wants, so this always
    /// ends with a connection.
    ///
    /// # Examples
    ///
    /// A plain tokio server, and a client that puts TLS over [`deadpeer::connect`](crate::connect):
    ///
    /// ```
    /// use std::sync::Arc;
    /// use deadpeer::{DeadPeer, KeepaliveListener, KeepalivePolicy};
    /// use tokio::io::AsyncReadExt;
    /// use tokio_rustls::TlsConnector;
    /// use tokio_rustls::rustls::pki_types::ServerName;
    /// use tokio_rustls::rustls::{ClientConfig, ServerConfig};
    ///
    /// async fn client(tls: Arc<ClientConfig>) -> std::io::Result<()> {
    ///     let tcp = deadpeer::connect("10.0.0.2:8443", KeepalivePolicy::FAST).await?;
    ///     let name = ServerName::try_from("example.com").map_err(std::io::Error::other)?;
    ///     let mut stream = TlsConnector::from(tls).connect(name, tcp).await?;
    ///     let mut buf = [0u8; 1024];
    ///     if let Err(err) = stream.read(&mut buf).await {
    ///         if let Some(dead) = DeadPeer::from_io(&err) {
    ///             eprintln!("server dead: {dead}");
    ///         }
    ///     }
    ///     Ok(())
    /// }
    ///
    /// async fn server(tls: Arc<ServerConfig>) -> std::io::Result<()> {
    ///     let mut listener = KeepaliveListener::bind("0.0.0.0:8443", KeepalivePolicy::FAST)
    ///         .await?
    ///         .tls(tls);
    ///     loop {
    ///         let (stream, peer) = listener.accept().await; // handshake done, errors handled
    ///         let liveness = stream.get_ref().0.liveness();
    ///         tokio::spawn(async move {
    ///             if let Some(dead) = liveness.dead().await {
    ///                 eprintln!("client {peer} dead: {}", dead.cause());
    ///             }
    ///             drop(stream);
    ///         });
    ///     }
    /// }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no connection is lost; the
    /// handshakes in progress go on and are returned by a later call.
    pub async fn accept(&mut self) -> (TlsStream, SocketAddr) {
        let Self {
            listener,
            acceptor,
            handshakes,
            timeout,
            max_handshakes,
            backoff,
        } = self;
        loop {
            let accepting = handshakes.len() < *max_handshakes;
            tokio::select! {
                biased;
                Some(done) = handshakes.join_next() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
                (stream, peer) = poll_fn(|cx| listener.poll_accept_serving(backoff, cx)), if accepting => {
                    handshakes.spawn(handshake(acceptor.clone(), stream, peer, *timeout));
                }
            }
        }
    }

    /// The listener's local address.
    ///
    /// # Errors
    ///
    /// As [`KeepaliveListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The policy accepted connections run under.
    pub fn policy(&self) -> KeepalivePolicy {
        self.listener.policy()
    }

    /// The listener underneath.
    pub fn get_ref(&self) -> &KeepaliveListener {
        &self.listener
    }

    /// How many handshakes are in progress.
    pub fn handshakes_in_progress(&self) -> usize {
        self.handshakes.len()
    }
}

/// Completes one handshake within `timeout`; a failure is logged and gives `None`.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: KeepaliveStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Handshake {
    let deadline = Instant::now().checked_add(timeout);
    let accept = acceptor.accept(stream);
    let result = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, accept).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no complete handshake within {timeout:?} (TlsListener::handshake_timeout)"
                ),
            )),
        },
        None => accept.await,
    };
    match result {
        Ok(tls) => Some((tls, peer)),
        Err(e) => {
            report::tls_handshake_failed(Some(peer), &e);
            None
        }
    }
}

/// `axum::serve(listener, app)` serves TLS through deadpeer (feature `axum`), and
/// [`into_make_service_with_liveness`](crate::axum::RouterExt::into_make_service_with_liveness)
/// gives handlers `ConnectInfo<SocketAddr>` and `ConnectInfo<Liveness>` as over plain TCP.
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use deadpeer::axum::RouterExt as _;
/// use deadpeer::{KeepaliveListener, KeepalivePolicy};
/// use tokio_rustls::rustls::ServerConfig;
///
/// async fn serve(tls: Arc<ServerConfig>) -> std::io::Result<()> {
///     let listener = KeepaliveListener::bind("0.0.0.0:8443", KeepalivePolicy::FAST)
///         .await?
///         .tls(tls);
///     let app = Router::new().route("/", get(|| async { "hello over TLS" }));
///     axum::serve(listener, app.into_make_service_with_liveness()).await
/// }
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        TlsListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        TlsListener::local_addr(self)
    }
}
