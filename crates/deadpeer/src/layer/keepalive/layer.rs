use tower_layer::Layer;

use super::Keepalive;
use crate::policy::KeepalivePolicy;

/// Applies a [`KeepalivePolicy`] to every connection a connector makes, and wraps each one in a
/// [`KeepaliveStream`](crate::KeepaliveStream) so a dead server surfaces as a
/// [`DeadPeer`](crate::DeadPeer).
///
/// The connector's response must implement [`AsTcpStream`](crate::AsTcpStream): `TcpStream`,
/// `hyper_util::rt::TokioIo<TcpStream>` (feature `hyper`, as hyper-util's `HttpConnector`
/// returns), or your own wrapper. Setting the policy costs five `setsockopt` calls per connection.
///
/// A `setsockopt` failure is logged at WARN (`failed to apply keepalive`) and the connection is
/// kept; with [`strict`](Self::strict) it is an error of the connector.
#[derive(Debug, Clone, Copy)]
pub struct KeepaliveLayer {
    pub(super) policy: KeepalivePolicy,
    pub(super) strict: bool,
}

impl KeepaliveLayer {
    /// A layer applying `policy`.
    pub fn new(policy: KeepalivePolicy) -> Self {
        Self {
            policy,
            strict: false,
        }
    }

    /// Makes a failed `setsockopt` an error instead of a WARN.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

impl<S> Layer<S> for KeepaliveLayer {
    type Service = Keepalive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Keepalive {
            inner,
            policy: self.policy,
            strict: self.strict,
        }
    }
}
