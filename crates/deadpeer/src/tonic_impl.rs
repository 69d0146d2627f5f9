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
//!
//! [`KeepaliveListener`]: crate::KeepaliveListener

use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::stream::KeepaliveStream;

/// tonic's connection info for a deadpeer stream is tonic's own [`TcpConnectInfo`], so
/// `Request::remote_addr` and `Request::local_addr` keep working.
impl Connected for KeepaliveStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: self.local_addr().ok(),
            remote_addr: self.peer_addr().ok(),
        }
    }
}
