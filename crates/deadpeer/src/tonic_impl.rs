//! tonic servers (feature `tonic`): serve gRPC over a [`KeepaliveListener`].
//!
//! ```
//! use deadpeer::{KeepaliveListener, KeepalivePolicy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! tonic::transport::Server::builder()
//!     .add_service(health)
//!     .serve_with_incoming(listener.incoming())
//!     .await?;
//! # Ok(()) }
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::listener::KeepaliveListener;
use crate::stream::KeepaliveStream;

/// tonic's connection info for a deadpeer stream is tonic's own [`TcpConnectInfo`], so
/// `Request::remote_addr` and `Request::local_addr` keep working.
impl Connected for KeepaliveStream<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local_addr().ok(),
            remote_addr: self.peer_addr().ok(),
        }
    }
}

/// The accepted connections of a [`KeepaliveListener`], as a `Stream` for
/// `tonic::transport::Server::serve_with_incoming`; from [`KeepaliveListener::incoming`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming {
    listener: KeepaliveListener,
}

impl KeepaliveListener {
    /// The accepted connections as a `Stream`, for tonic's `serve_with_incoming`.
    pub fn incoming(self) -> Incoming {
        Incoming { listener: self }
    }
}

impl Stream for Incoming {
    type Item = io::Result<KeepaliveStream<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.listener
            .poll_accept(cx)
            .map(|r| Some(r.map(|(stream, _)| stream)))
    }
}
