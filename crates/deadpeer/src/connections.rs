//! [`Connections`]: a live view of the connections a listener or layer serves, with fresh
//! `TCP_INFO`, for an admin endpoint ("which connections are being probed right now?").
//!
//! Tracking is opt-in and costs nothing when off. A [`Connections`] handle is cheap to clone;
//! give it to a [`KeepaliveListener`](crate::KeepaliveListener::track), a
//! [`ReapLayer`] or a
//! [`KeepaliveLayer`], or [`register`](Connections::register)
//! a connection yourself, and call [`snapshot`](Connections::snapshot) when asked.
//!
//! ```
//! use deadpeer::connections::Connections;
//! use deadpeer::{KeepaliveListener, KeepalivePolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let connections = Connections::new();
//! let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
//!     .await?
//!     .track(&connections);
//! let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
//! let (stream, peer) = listener.accept().await?;
//!
//! let now = connections.snapshot();
//! assert_eq!(now.len(), 1);
//! assert_eq!(now[0].peer_addr, Some(peer));
//! assert!(!now[0].is_probing());
//! drop(stream);
//! assert!(connections.snapshot().is_empty());
//! # Ok(()) }
//! ```
//!
#![cfg_attr(
    feature = "tower",
    doc = "[`KeepaliveLayer`]: crate::layer::KeepaliveLayer::track"
)]
#![cfg_attr(not(feature = "tower"), doc = docs_rs!("`KeepaliveLayer`", "layer/keepalive/struct.KeepaliveLayer.html#method.track"))]
#![cfg_attr(
    feature = "tower",
    doc = "[`ReapLayer`]: crate::layer::ReapLayer::track"
)]
#![cfg_attr(not(feature = "tower"), doc = docs_rs!("`ReapLayer`", "layer/reap/struct.ReapLayer.html#method.track"))]

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use crate::engine::Latch;
use crate::error::DeadPeer;
use crate::liveness::Liveness;
use crate::policy::KeepalivePolicy;
use crate::sys::TcpInfo;

/// A registry of live connections, shared by the listeners and layers that
/// [track](crate::KeepaliveListener::track) into it; cloning it gives another handle on the same
/// registry.
///
/// A tracked connection is *watched*, as by [`KeepaliveStream::liveness`](crate::KeepaliveStream::liveness):
/// one registration with deadpeer's error-only epoll instance and about 200 bytes of shared state,
/// which is what lets [`snapshot`](Self::snapshot) read its `TCP_INFO` safely. The registry holds
/// the connection weakly: it never keeps a socket open, and a connection leaves the snapshot the
/// moment its stream is dropped or unwrapped. Its entry is reclaimed by a later
/// [`register`](Self::register) or `snapshot`, so the registry stays within twice the number of
/// live connections.
///
/// Tracking costs, per connection, one lock of the registry and a push; a listener or layer that
/// tracks nothing pays nothing (no allocation, no lock).
#[derive(Clone, Default)]
pub struct Connections {
    registry: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    entries: Vec<Weak<Latch>>,
    /// Prune when `entries` reaches this length.
    prune_at: usize,
}

impl Registry {
    /// Drops the entries of connections that are gone.
    fn prune(&mut self) {
        self.entries
            .retain(|w| w.upgrade().is_some_and(|s| !s.is_closed()));
        self.prune_at = (self.entries.len() * 2).max(64);
    }
}

/// One connection in a [`Connections::snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The peer's address (an IPv4-mapped address as IPv4), if it could be read.
    pub peer_addr: Option<SocketAddr>,
    /// The local address, if it could be read.
    pub local_addr: Option<SocketAddr>,
    /// How long ago deadpeer wrapped the connection (on the coarse monotonic clock: within
    /// 10 ms).
    pub age: Duration,
    /// The policy the connection runs under, if deadpeer applied or verified one.
    pub policy: Option<KeepalivePolicy>,
    /// `TCP_INFO` read for this snapshot (Linux): `probes` is the keepalive probes outstanding,
    /// `last_data_recv` how long the peer has been silent, `backoff`, `retransmits` and `unacked`
    /// show data that the peer does not acknowledge, `rtt` the smoothed round-trip time. `None`
    /// where `TCP_INFO` is unavailable, or when the connection could not be watched.
    pub tcp_info: Option<TcpInfo>,
    /// The death, once the kernel declared the peer dead (until the application drops the
    /// stream).
    pub dead_peer: Option<DeadPeer>,
    /// The connection's first [`Ending`](crate::Ending), once seen: a connection whose peer
    /// closed ([`Closed`](crate::Ending::Closed)) that the application still holds is one it
    /// may have forgotten to drop.
    pub ending: Option<crate::Ending>,
}

impl ConnectionInfo {
    /// Whether keepalive (or zero-window) probes are outstanding: the peer has not answered the
    /// last probe, and the kernel is counting down to a verdict.
    pub fn is_probing(&self) -> bool {
        self.tcp_info.is_some_and(|i| i.probes > 0)
    }

    /// Whether sent data goes unacknowledged past its retransmission timeout: retransmissions
    /// or backoff (the kernel is counting down to the user timeout).
    pub fn is_retransmitting(&self) -> bool {
        self.tcp_info
            .is_some_and(|i| i.retransmits > 0 || i.backoff > 0)
    }
}

impl Connections {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Nothing panics while holding it; a poisoned registry is still consistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tracks the connection of `liveness` (taking a [`Liveness`] is what makes the connection
    /// watched). Registering a connection twice lists it once.
    pub fn register(&self, liveness: &Liveness) {
        let mut registry = self.lock();
        registry.entries.push(liveness.downgrade());
        if registry.entries.len() >= registry.prune_at {
            registry.prune();
        }
    }

    /// The connections tracked now, oldest first, each with a fresh `TCP_INFO`.
    ///
    /// It reads `TCP_INFO` once per connection (about 0.3 µs each), under that connection's
    /// own lock, and holds the registry's lock meanwhile: tracking new connections waits for
    /// it. A connection whose stream is gone is left out.
    pub fn snapshot(&self) -> Vec<ConnectionInfo> {
        let mut registry = self.lock();
        registry.prune();
        let mut seen = HashSet::with_capacity(registry.entries.len());
        registry
            .entries
            .iter()
            .filter(|w| seen.insert(w.as_ptr()))
            .filter_map(Weak::upgrade)
            .filter_map(|latch| latch.view())
            .map(|view| ConnectionInfo {
                peer_addr: view.meta.peer_addr,
                local_addr: view.meta.local_addr,
                age: view.meta.age(),
                policy: view.meta.policy,
                tcp_info: view.tcp_info,
                dead_peer: view.dead_peer,
                ending: view.ending,
            })
            .collect()
    }

    /// How many connections are tracked now (without reading `TCP_INFO`).
    pub fn len(&self) -> usize {
        let mut registry = self.lock();
        registry.prune();
        let seen: HashSet<_> = registry.entries.iter().map(Weak::as_ptr).collect();
        seen.len()
    }

    /// Whether no connection is tracked now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("entries", &self.lock().entries.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeepaliveListener, KeepalivePolicy};

    /// Churn does not grow the registry: entries of dropped streams are reclaimed.
    #[tokio::test(flavor = "current_thread")]
    async fn the_registry_stays_within_twice_the_live_connections() {
        let connections = Connections::new();
        let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
            .await
            .unwrap()
            .track(&connections);
        let addr = listener.local_addr().unwrap();
        let mut kept = Vec::new();
        for i in 0..500 {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            if i % 50 == 0 {
                kept.push((client, stream));
            }
        }
        assert_eq!(connections.len(), kept.len());
        let entries = connections.lock().entries.len();
        assert!(entries <= 64.max(2 * kept.len()) + 1, "{entries} entries");
        drop(kept);
        assert!(connections.is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_registered_twice_is_listed_once() {
        let connections = Connections::new();
        let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
            .await
            .unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        connections.register(&stream.liveness());
        connections.register(&stream.liveness());
        assert_eq!(connections.snapshot().len(), 1);
        assert_eq!(connections.len(), 1);
        // Unwrapped: the socket lives on, but it is no longer deadpeer's.
        let _tcp = stream.into_inner();
        assert!(connections.snapshot().is_empty());
    }
}
