//! The one place that reports: deadpeer's events ([`events`], feature `tracing`) and metrics
//! ([`metrics`], feature `metrics`; the names are in the public [`crate::metrics`]). The
//! engine, the fronts and the integrations call the entry points here; nothing here calls back
//! into them. Nothing installs a subscriber or a recorder.
#![cfg_attr(not(feature = "tracing"), allow(unused_variables, dead_code))]

#[cfg(all(test, feature = "tracing"))]
pub(crate) mod capture;
mod events;
#[cfg(feature = "metrics")]
mod metrics;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(any(feature = "axum", feature = "rustls"))]
pub(crate) use self::events::accept_failed;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) use self::events::platform_limits;
#[cfg(feature = "rustls")]
pub(crate) use self::events::tls_handshake_failed;
pub(crate) use self::events::{keepalive_applied, keepalive_off, listener_set, not_inherited};
use crate::error::DeadPeer;

/// The subscriber that was current where a connection started being watched, so that a death
/// seen on the reaper thread is reported where the application would have seen it.
#[derive(Clone)]
pub(crate) struct Context {
    #[cfg(feature = "tracing")]
    dispatch: tracing::Dispatch,
}

impl Context {
    pub(crate) fn current() -> Self {
        Self {
            #[cfg(feature = "tracing")]
            dispatch: tracing::dispatcher::get_default(Clone::clone),
        }
    }
}

/// Which side opened a connection that deadpeer put under a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Accepted: by a `KeepaliveListener`, or handed to a `ReapLayer`.
    Inbound,
    /// Opened: by `deadpeer::connect`, or by a connector under a `KeepaliveLayer`.
    Outbound,
}

/// Runs a callout into code outside deadpeer (a subscriber, a recorder) from deadpeer's own
/// thread, which must survive it.
fn isolated(f: impl FnOnce()) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

/// Runs a callout of a report: isolated on the reaper thread (`context` given), where a panic
/// loses that callout only; as it is on the application's thread.
fn callout(context: Option<&Context>, f: impl FnOnce()) {
    match context {
        Some(_) => isolated(f),
        None => f(),
    }
}

/// The event and metrics of a connection the kernel closed: WARN `dead peer detected` and the
/// death's metrics for a death, DEBUG `connection ended` for an application's abort, in
/// `context` when given (the reaper thread's report), else in the current one. Called once per
/// `DeadPeer`, after it was latched and its waiters woken. On the reaper thread (`context`
/// given) each callout is isolated: a panicking subscriber or recorder loses its own report,
/// and nothing else.
pub(crate) fn connection_ended(dead: &DeadPeer, context: Option<&Context>) {
    callout(context, || events::connection_ended(dead, context));
    #[cfg(feature = "metrics")]
    callout(context, || metrics::ended(dead));
}

/// DEBUG `connection ended` (`closed`) and its count: the peer's FIN, latched once per
/// connection, after the `gone()` futures were woken.
pub(crate) fn peer_closed(
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    connected_for: Duration,
    context: Option<&Context>,
) {
    callout(context, || {
        events::peer_closed(peer, local, connected_for, context);
    });
    #[cfg(feature = "metrics")]
    callout(context, || metrics::ending(crate::Ending::Closed));
}

/// WARN `failed to apply keepalive`; and its metric.
pub(crate) fn apply_failed(peer: Option<SocketAddr>, error: &io::Error) {
    events::apply_failed(peer, error);
    #[cfg(feature = "metrics")]
    metrics::apply_failed(error);
}

/// WARN `cannot watch connection`; and its metric.
pub(crate) fn watch_failed(peer: Option<SocketAddr>, error: &io::Error) {
    events::watch_failed(peer, error);
    #[cfg(feature = "metrics")]
    metrics::watch_failed(error);
}

/// ERROR `deadpeer reaper thread died`; and its metric. The engine hands this to the reaper
/// (`sys::WatchedFd::watch`), which calls it from its dying thread, so that `sys` never names
/// the reporting.
pub(crate) fn reaper_replaced(error: Option<&io::Error>) {
    events::reaper_replaced(error);
    #[cfg(feature = "metrics")]
    metrics::reaper_restarted();
}

/// A connection was put under a policy (no event: `keepalive applied` says it at DEBUG).
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn connection_opened(direction: Direction) {
    #[cfg(feature = "metrics")]
    metrics::connection_opened(direction);
}

/// A connection started being watched (its first `liveness()`): no event.
pub(crate) fn watch_started() {
    #[cfg(feature = "metrics")]
    metrics::watch_started();
}

/// A watched connection's stream was dropped or unwrapped: no event.
pub(crate) fn watch_ended() {
    #[cfg(feature = "metrics")]
    metrics::watch_ended();
}
