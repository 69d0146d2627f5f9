//! axum 0.8: [`KeepaliveListener`] as an `axum::serve::Listener`, and [`Liveness`] as connect info.

use std::io;
use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};

use crate::listener::KeepaliveListener;
use crate::liveness::Liveness;
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
        self.accept_forever().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        KeepaliveListener::local_addr(self)
    }
}

/// Handlers get their connection's [`Liveness`] with `ConnectInfo<Liveness>`, after
/// `axum::serve(listener, app.into_make_service_with_connect_info::<Liveness>())`.
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
impl Connected<IncomingStream<'_, KeepaliveListener>> for Liveness {
    fn connect_info(stream: IncomingStream<'_, KeepaliveListener>) -> Self {
        stream.io().liveness()
    }
}
