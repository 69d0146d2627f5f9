//! hyper-util (feature `hyper`): `TokioIo<KeepaliveStream>` as a connection of hyper-util's
//! `Client`, as `TokioIo<TcpStream>` is, and the [`Liveness`] of a `TokioIo`.

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use crate::liveness::{AsLiveness, Liveness, sealed};
use crate::stream::KeepaliveStream;

/// hyper-util's `Connection` (feature `hyper`), so `TokioIo<KeepaliveStream>` is a connection of
/// hyper-util's `Client`, as `TokioIo<TcpStream>` is.
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
impl Connection for KeepaliveStream {
    fn connected(&self) -> Connected {
        self.get_ref().connected()
    }
}

impl<T: AsLiveness> sealed::Sealed for TokioIo<T> {}

/// The [`Liveness`] of the connection inside (feature `hyper`).
#[cfg_attr(docsrs, doc(cfg(feature = "hyper")))]
impl<T: AsLiveness> AsLiveness for TokioIo<T> {
    fn liveness(&self) -> Liveness {
        self.inner().liveness()
    }
}
