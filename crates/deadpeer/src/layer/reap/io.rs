use std::io;

use tokio::net::TcpStream;

use super::ReapLayer;
use crate::stream::{AsTcpStream, KeepaliveStream, addrs, apply_logged};
use crate::trace;

/// A connection [`ReapLayer`] can watch.
///
/// - A plain [`TcpStream`] (or, with the `hyper` feature, `hyper_util::rt::TokioIo<TcpStream>`)
///   gets the layer's policy (unless [`inherited`](ReapLayer::inherited)) and is wrapped in a
///   [`KeepaliveStream`].
/// - A [`KeepaliveStream`], as [`KeepaliveListener`](crate::KeepaliveListener) accepts them, is
///   used as it is: its policy is already in place and it is not wrapped a second time.
///
/// Implement it for your own connection type with [`ReapIo::wrap`].
pub trait ReapIo: Sized {
    /// The connection inside the [`KeepaliveStream`] the inner service receives.
    type Io;

    /// Prepares the connection for the layer's inner service.
    ///
    /// # Errors
    ///
    /// When the policy cannot be set and the layer is [`strict`](ReapLayer::strict).
    fn into_keepalive_stream(self, layer: &ReapLayer) -> io::Result<KeepaliveStream<Self::Io>>;

    /// Applies `layer`'s policy to `io` as [`ReapLayer`] does for a plain TCP stream, and wraps it:
    /// the building block for implementing this trait.
    ///
    /// # Errors
    ///
    /// When the policy cannot be set and the layer is [`strict`](ReapLayer::strict).
    fn wrap<T: AsTcpStream>(io: T, layer: &ReapLayer) -> io::Result<KeepaliveStream<T>> {
        let policy = layer.policy;
        let tcp = io.as_tcp_stream();
        let (peer, local) = addrs(tcp);
        if layer.inherited {
            trace::keepalive_applied(peer, &policy, true);
        } else {
            apply_logged(tcp, &policy, peer, layer.strict)?;
        }
        Ok(KeepaliveStream::from_parts(io, peer, local, Some(policy)))
    }
}

impl ReapIo for TcpStream {
    type Io = TcpStream;

    fn into_keepalive_stream(self, layer: &ReapLayer) -> io::Result<KeepaliveStream<TcpStream>> {
        Self::wrap(self, layer)
    }
}

#[cfg(feature = "hyper")]
impl<T: AsTcpStream> ReapIo for hyper_util::rt::TokioIo<T> {
    type Io = hyper_util::rt::TokioIo<T>;

    fn into_keepalive_stream(self, layer: &ReapLayer) -> io::Result<KeepaliveStream<Self::Io>> {
        Self::wrap(self, layer)
    }
}

impl<S: AsTcpStream> ReapIo for KeepaliveStream<S> {
    type Io = S;

    fn into_keepalive_stream(self, _layer: &ReapLayer) -> io::Result<KeepaliveStream<S>> {
        Ok(self)
    }
}
