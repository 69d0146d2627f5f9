//! The one place that emits deadpeer's events. Messages and fields are fixed so users can filter
//! on them; see the guide. Nothing here installs a subscriber.
#![cfg_attr(
    not(all(feature = "tracing", feature = "tokio")),
    allow(unused_variables, dead_code)
)]

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::DeadPeer;
use crate::policy::KeepalivePolicy;

/// Displays a duration as seconds with millisecond precision, `4.084s`, without allocating.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.0.as_secs_f64())
    }
}

/// Displays an optional address, `-` when unknown.
struct Addr(Option<SocketAddr>);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("-"),
        }
    }
}

struct OptPolicy<'a>(Option<&'a KeepalivePolicy>);

impl fmt::Display for OptPolicy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => p.fmt(f),
            None => f.write_str("-"),
        }
    }
}

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

/// WARN `dead peer detected`, in `context` when given (the reaper thread's report), else in the
/// current one.
pub(crate) fn dead_peer_detected(dead: &DeadPeer, context: Option<&Context>) {
    #[cfg(feature = "tracing")]
    match context {
        Some(c) => tracing::dispatcher::with_default(&c.dispatch, || emit_dead_peer(dead)),
        None => emit_dead_peer(dead),
    }
}

#[cfg(feature = "tracing")]
fn emit_dead_peer(dead: &DeadPeer) {
    tracing::warn!(
        peer.addr = %Addr(dead.peer_addr()),
        local.addr = %Addr(dead.local_addr()),
        cause = dead.cause().as_str(),
        connected_for = %Secs(dead.connected_for()),
        idle_for = %Secs(dead.idle_for().unwrap_or_default()),
        policy = %OptPolicy(dead.policy().as_ref()),
        errno = dead.raw_os_error().unwrap_or(0),
        "dead peer detected"
    );
}

/// DEBUG `keepalive applied`.
pub(crate) fn keepalive_applied(
    peer: Option<SocketAddr>,
    policy: &KeepalivePolicy,
    inherited: bool,
) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        peer.addr = %Addr(peer),
        idle = %Secs(policy.idle()),
        interval = %Secs(policy.interval()),
        probes = policy.probes(),
        user_timeout = %policy.user_timeout(),
        inherited,
        "keepalive applied"
    );
}

/// WARN `failed to apply keepalive`.
pub(crate) fn apply_failed(peer: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(peer.addr = %Addr(peer), error = %error, "failed to apply keepalive");
}

/// INFO `listener keepalive set`.
pub(crate) fn listener_set(
    local: Option<SocketAddr>,
    policy: &KeepalivePolicy,
    mode: &'static str,
) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        local.addr = %Addr(local),
        policy = %policy,
        detection_bound = %Secs(policy.detection_bound()),
        mode,
        "listener keepalive set"
    );
}

/// WARN when an accepted socket did not inherit the listener's options.
pub(crate) fn not_inherited(local: Option<SocketAddr>, policy: &KeepalivePolicy) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        local.addr = %Addr(local),
        policy = %policy,
        "accepted socket did not inherit the listener's keepalive options; applying them per socket"
    );
}

/// WARN when a connection cannot be watched (no epoll instance or thread): its `dead()` then
/// resolves only when a read or write sees the death.
pub(crate) fn watch_failed(peer: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        peer.addr = %Addr(peer),
        error = %error,
        "cannot watch connection; dead() resolves only when a read or write sees the death"
    );
}

/// WARN, once per process, when a stream is wrapped whose socket has keepalive off.
pub(crate) fn keepalive_off(peer: Option<SocketAddr>) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        peer.addr = %Addr(peer),
        "wrapped connection has keepalive off; a silent peer on an idle connection is never \
         found (resets, and timeouts of unacknowledged data, still are); apply a KeepalivePolicy \
         (warned once per process)"
    );
}

/// ERROR when accepting fails for a reason other than one connection's (e.g. `EMFILE`); the
/// server retries after a second.
#[cfg(any(feature = "axum", feature = "rustls"))]
pub(crate) fn accept_failed(local: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::error!(local.addr = %Addr(local), error = %error, "accept failed; retrying in 1s");
}

/// DEBUG when a TLS handshake fails or times out; the connection is dropped. DEBUG, not WARN: a
/// client's bad handshake is its own problem, and scanners would flood the log.
#[cfg(feature = "rustls")]
pub(crate) fn tls_handshake_failed(peer: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::debug!(peer.addr = %Addr(peer), error = %error, "tls handshake failed");
}
