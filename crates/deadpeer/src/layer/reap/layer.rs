use tower_layer::Layer;

use super::Reap;
#[allow(unused_imports)] // for the docs
use super::ReapIo;
use crate::policy::KeepalivePolicy;

/// Reaps per-connection services whose client died.
///
/// It wraps a service that handles one accepted connection (`Service<IO>`, see [`ReapIo`] for the
/// connection types). For each connection it applies the policy (or, with
/// [`inherited`](Self::inherited), trusts that the listener set it), hands the inner service a
/// [`KeepaliveStream`](crate::KeepaliveStream) (a stream from a
/// [`KeepaliveListener`](crate::KeepaliveListener) is passed as it is), and races the inner
/// future against [`Liveness::dead`](crate::Liveness::dead). When the kernel declares the client
/// dead, the inner future is dropped on the spot, even if it is blocked on something other than
/// the socket, and the call fails with the [`DeadPeer`](crate::DeadPeer). The event is emitted
/// once.
///
/// Watching costs one duplicated descriptor per connection while the call runs.
#[derive(Debug, Clone, Copy)]
pub struct ReapLayer {
    pub(super) policy: KeepalivePolicy,
    pub(super) inherited: bool,
    pub(super) strict: bool,
}

impl ReapLayer {
    /// A layer applying `policy` to each connection.
    pub fn new(policy: KeepalivePolicy) -> Self {
        Self {
            policy,
            inherited: false,
            strict: false,
        }
    }

    /// Trusts that the connections already carry `policy`, inherited from a listener the policy
    /// was set on (see [`KeepaliveListener`](crate::KeepaliveListener)): no `setsockopt` per
    /// connection.
    pub fn inherited(mut self, inherited: bool) -> Self {
        self.inherited = inherited;
        self
    }

    /// Makes a failed `setsockopt` an error of the call instead of a WARN.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
}

impl<S> Layer<S> for ReapLayer {
    type Service = Reap<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Reap {
            inner,
            layer: *self,
        }
    }
}
