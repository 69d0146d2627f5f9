//! The events (target `deadpeer`; messages and fields are fixed so users can filter on them, see
//! the guide). Nothing here installs a subscriber.
//!
//! Addresses are split the OpenTelemetry way: `network.peer.address` (the IP) and
//! `network.peer.port`, `network.local.address` and `network.local.port`; an unknown address
//! leaves its fields out. Durations are numbers of seconds under a name ending in `_s`.
#![cfg_attr(not(feature = "tracing"), allow(unused_variables, dead_code))]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use super::Context;
use crate::error::DeadPeer;
use crate::policy::KeepalivePolicy;

/// A duration as a number of seconds, to the millisecond (`4.078`): how the events carry
/// durations, under a field name ending in `_s`.
fn secs(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// A duration as a number of seconds, to the microsecond (`0.000052`), for round-trip times.
#[cfg(feature = "tracing")]
fn micros(d: Duration) -> f64 {
    d.as_micros() as f64 / 1_000_000.0
}

/// `network.type` of an address: `ipv4` or `ipv6` (an IPv4-mapped address is already IPv4).
fn network_type(addr: SocketAddr) -> &'static str {
    if addr.is_ipv4() { "ipv4" } else { "ipv6" }
}

/// The event of a connection the kernel closed: WARN `dead peer detected` for a death
/// ([`Ending::is_death`](crate::Ending::is_death)), DEBUG `connection ended` for an
/// application's abort; in `context` when given (the reaper thread's report), else in the
/// current one.
pub(super) fn connection_ended(dead: &DeadPeer, context: Option<&Context>) {
    #[cfg(feature = "tracing")]
    in_context(context, || emit_ended(dead));
}

/// Emits in `context`'s subscriber when given (the reaper thread's report), else in the current
/// one.
#[cfg(feature = "tracing")]
fn in_context(context: Option<&Context>, emit: impl FnOnce()) {
    match context {
        Some(c) => tracing::dispatcher::with_default(&c.dispatch, emit),
        None => emit(),
    }
}

/// One event, WARN or DEBUG, with every field of a `DeadPeer`.
#[cfg(feature = "tracing")]
macro_rules! ended_event {
    ($level:ident, $dead:expr, $message:literal) => {{
        let dead: &DeadPeer = $dead;
        let (peer, local, info) = (dead.peer_addr(), dead.local_addr(), dead.tcp_info());
        tracing::$level!(
            target: "deadpeer",
            {
                "network.peer.address" = peer.map(|a| display(a.ip())),
                "network.peer.port" = peer.map(|a| a.port()),
                "network.local.address" = local.map(|a| display(a.ip())),
                "network.local.port" = local.map(|a| a.port()),
                "network.transport" = "tcp",
                "network.type" = peer.or(local).map(network_type),
                "error.type" = dead.cause().as_str(),
                "deadpeer.ending" = dead.ending().as_str(),
                connected_for_s = secs(dead.connected_for()),
                idle_for_s = dead.idle_for().map(secs),
                policy = dead.policy().map(display),
                errno = dead.raw_os_error(),
                "tcp.rtt_s" = info.map(|i| micros(i.rtt)),
                "tcp.rto_s" = info.map(|i| secs(i.rto)),
                "tcp.retransmits" = info.map(|i| i.retransmits),
                "tcp.probes" = info.map(|i| i.probes),
                "tcp.unacked" = info.map(|i| i.unacked),
                "tcp.last_data_sent_s" = info.map(|i| secs(i.last_data_sent)),
                "tcp.snd_wnd" = info.and_then(|i| i.snd_wnd),
            },
            $message
        )
    }};
}

#[cfg(feature = "tracing")]
fn emit_ended(dead: &DeadPeer) {
    if dead.ending().is_death() {
        ended_event!(warn, dead, "dead peer detected");
    } else {
        ended_event!(debug, dead, "connection ended");
    }
}

/// DEBUG `connection ended` with `deadpeer.ending` `closed`: the peer's FIN.
pub(super) fn peer_closed(
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    connected_for: Duration,
    context: Option<&Context>,
) {
    #[cfg(feature = "tracing")]
    in_context(context, || {
        tracing::debug!(
            target: "deadpeer",
            {
                "network.peer.address" = peer.map(|a| display(a.ip())),
                "network.peer.port" = peer.map(|a| a.port()),
                "network.local.address" = local.map(|a| display(a.ip())),
                "network.local.port" = local.map(|a| a.port()),
                "network.transport" = "tcp",
                "network.type" = peer.or(local).map(network_type),
                "deadpeer.ending" = crate::Ending::Closed.as_str(),
                connected_for_s = secs(connected_for),
            },
            "connection ended"
        );
    });
}

/// DEBUG `keepalive applied`.
pub(crate) fn keepalive_applied(
    peer: Option<SocketAddr>,
    policy: &KeepalivePolicy,
    inherited: bool,
) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: "deadpeer",
        {
            "network.peer.address" = peer.map(|a| tracing::field::display(a.ip())),
            "network.peer.port" = peer.map(|a| a.port()),
            idle_s = secs(policy.idle()),
            interval_s = secs(policy.interval()),
            probes = policy.probes(),
            user_timeout = %policy.user_timeout(),
            inherited,
        },
        "keepalive applied"
    );
}

/// WARN `failed to apply keepalive`.
pub(super) fn apply_failed(peer: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "deadpeer",
        {
            "network.peer.address" = peer.map(|a| tracing::field::display(a.ip())),
            "network.peer.port" = peer.map(|a| a.port()),
            error = %error,
        },
        "failed to apply keepalive"
    );
}

/// INFO `listener keepalive set`.
pub(crate) fn listener_set(
    local: Option<SocketAddr>,
    policy: &KeepalivePolicy,
    mode: &'static str,
) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: "deadpeer",
        {
            "network.local.address" = local.map(|a| tracing::field::display(a.ip())),
            "network.local.port" = local.map(|a| a.port()),
            policy = %policy,
            detection_bound_s = secs(policy.detection_bound()),
            mode,
        },
        "listener keepalive set"
    );
}

/// WARN when an accepted socket did not inherit the listener's options.
pub(crate) fn not_inherited(local: Option<SocketAddr>, policy: &KeepalivePolicy) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "deadpeer",
        {
            "network.local.address" = local.map(|a| tracing::field::display(a.ip())),
            "network.local.port" = local.map(|a| a.port()),
            policy = %policy,
        },
        "accepted socket did not inherit the listener's keepalive options; applying them per socket"
    );
}

/// WARN when a connection cannot be watched (no epoll instance or reaper thread could be had,
/// e.g. `EMFILE`), once per failed watch; and its metric. Its `dead()` then resolves only when a
/// read or write sees the death, and `Liveness::is_watched` is `false`; the next `liveness()`
/// tries again.
pub(super) fn watch_failed(peer: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "deadpeer",
        {
            "network.peer.address" = peer.map(|a| tracing::field::display(a.ip())),
            "network.peer.port" = peer.map(|a| a.port()),
            error = %error,
        },
        "cannot watch connection; dead() resolves only when a read or write sees the death"
    );
}

/// ERROR when the reaper thread died (a panic in deadpeer's own code: every callout into a
/// subscriber, recorder or waker is isolated); `error` is `None` when a new thread took over its
/// epoll instance and table, else why none could be started (the next watch tries again).
/// Reported by the dying thread, in its own (default) context.
pub(super) fn reaper_replaced(error: Option<&io::Error>) {
    #[cfg(feature = "tracing")]
    tracing::error!(
        target: "deadpeer",
        { error = error.map(tracing::field::display) },
        "deadpeer reaper thread died; replaced by a new one"
    );
}

/// WARN, once per process, when a stream is wrapped whose socket has keepalive off.
pub(crate) fn keepalive_off(peer: Option<SocketAddr>) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: "deadpeer",
        {
            "network.peer.address" = peer.map(|a| tracing::field::display(a.ip())),
            "network.peer.port" = peer.map(|a| a.port()),
        },
        "wrapped connection has keepalive off; a silent peer on an idle connection is never \
         found (resets, and timeouts of unacknowledged data, still are); apply a KeepalivePolicy \
         (warned once per process)"
    );
}

/// WARN, once per process, on an OS where deadpeer does less than on Linux: what is missing
/// (the table is in the crate docs, "Platforms").
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn platform_limits() {
    #[cfg(feature = "tracing")]
    {
        use std::sync::atomic::{AtomicBool, Ordering};
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "deadpeer",
                { os = std::env::consts::OS },
                "on this OS deadpeer sets keepalive (idle, interval, probes) but has no \
                 TCP_USER_TIMEOUT, no TCP_INFO (a timeout is reported as keepalive_timeout) and \
                 no background watch (Liveness::dead() resolves when a read or write sees the \
                 death); see the crate docs, Platforms (warned once per process)"
            );
        }
    }
}

/// ERROR when accepting fails for a reason other than one connection's (e.g. `EMFILE`); the
/// server retries after a second.
#[cfg(any(feature = "axum", feature = "rustls"))]
pub(crate) fn accept_failed(local: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::error!(
        target: "deadpeer",
        {
            "network.local.address" = local.map(|a| tracing::field::display(a.ip())),
            "network.local.port" = local.map(|a| a.port()),
            error = %error,
        },
        "accept failed; retrying in 1s"
    );
}

/// DEBUG when a TLS handshake fails or times out; the connection is dropped. DEBUG, not WARN: a
/// client's bad handshake is its own problem, and scanners would flood the log.
#[cfg(feature = "rustls")]
pub(crate) fn tls_handshake_failed(peer: Option<SocketAddr>, error: &io::Error) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: "deadpeer",
        {
            "network.peer.address" = peer.map(|a| tracing::field::display(a.ip())),
            "network.peer.port" = peer.map(|a| a.port()),
            error = %error,
        },
        "tls handshake failed"
    );
}

#[cfg(all(test, feature = "tracing", feature = "tokio"))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Cause;
    use crate::error::Details;

    /// The fields of `dead peer detected`, as a JSON pipeline receives them: addresses split,
    /// the cause as `error.type`, durations as numbers of seconds; unknown values left out.
    #[test]
    fn a_death_has_opentelemetry_fields_and_a_stable_target() {
        let (events, _guard) = crate::report::capture::capture();
        let dead = DeadPeer::new(Details {
            cause: Cause::KeepaliveTimeout,
            peer_addr: Some("[fd00::2]:7000".parse().unwrap()),
            local_addr: Some("10.0.0.1:41000".parse().unwrap()),
            connected_for: Duration::from_millis(4078),
            idle_for: Some(Duration::from_millis(4080)),
            policy: Some(KeepalivePolicy::FAST),
            raw_os_error: Some(libc::ETIMEDOUT),
            ending: crate::Ending::Vanished,
            tcp_info: Some(crate::TcpInfo {
                state: crate::TcpInfo::CLOSE,
                probes: 3,
                rtt: Duration::from_micros(52),
                rto: Duration::from_millis(204),
                last_data_sent: Duration::from_millis(4100),
                snd_wnd: Some(65536),
                ..Default::default()
            }),
        });
        connection_ended(&dead, None);
        let unknown = DeadPeer::new(Details {
            cause: Cause::Reset,
            peer_addr: None,
            local_addr: None,
            connected_for: Duration::ZERO,
            idle_for: None,
            policy: None,
            raw_os_error: None,
            ending: crate::Ending::Forgot,
            tcp_info: None,
        });
        connection_ended(&unknown, None);

        let got = events.with_message("dead peer detected");
        assert_eq!(got.len(), 2, "{:#?}", events.all());
        let e = &got[0].fields;
        assert_eq!(got[0].target, "deadpeer");
        assert_eq!(e["network.peer.address"], "fd00::2");
        assert_eq!(e["network.peer.port"], "7000");
        assert_eq!(e["network.local.address"], "10.0.0.1");
        assert_eq!(e["network.local.port"], "41000");
        assert_eq!(e["network.transport"], "tcp");
        assert_eq!(e["network.type"], "ipv6");
        assert_eq!(e["error.type"], "keepalive_timeout");
        assert_eq!(e["connected_for_s"], "4.078");
        assert_eq!(e["idle_for_s"], "4.08");
        assert_eq!(e["policy"], KeepalivePolicy::FAST.to_string());
        assert_eq!(e["errno"], libc::ETIMEDOUT.to_string());
        assert_eq!(e["deadpeer.ending"], "vanished");
        assert_eq!(e["tcp.rtt_s"].parse::<f64>().ok(), Some(0.000_052));
        assert_eq!(e["tcp.rto_s"], "0.204");
        assert_eq!(e["tcp.probes"], "3");
        assert_eq!(e["tcp.retransmits"], "0");
        assert_eq!(e["tcp.unacked"], "0");
        assert_eq!(e["tcp.last_data_sent_s"], "4.1");
        assert_eq!(e["tcp.snd_wnd"], "65536");
        assert_eq!(got[0].level, tracing::Level::WARN);

        let e = &got[1].fields;
        for absent in [
            "network.peer.address",
            "network.peer.port",
            "network.local.address",
            "network.type",
            "idle_for_s",
            "policy",
            "errno",
            "tcp.rtt_s",
            "tcp.snd_wnd",
        ] {
            assert!(!e.contains_key(absent), "{absent} in {e:#?}");
        }
        assert_eq!(e["error.type"], "reset");
        assert_eq!(e["deadpeer.ending"], "forgot");
        assert_eq!(e["connected_for_s"], "0.0");
    }

    /// An application's abort and a clean close are DEBUG `connection ended`, not alarms.
    #[test]
    fn an_abort_and_a_close_are_debug_events() {
        let (events, _guard) = crate::report::capture::capture();
        let aborted = DeadPeer::new(Details {
            cause: Cause::Reset,
            peer_addr: Some("10.0.0.2:80".parse().unwrap()),
            local_addr: None,
            connected_for: Duration::from_secs(1),
            idle_for: None,
            policy: None,
            raw_os_error: Some(libc::ECONNRESET),
            ending: crate::Ending::Aborted,
            tcp_info: None,
        });
        connection_ended(&aborted, None);
        peer_closed(
            Some("10.0.0.3:80".parse().unwrap()),
            Some("10.0.0.1:5000".parse().unwrap()),
            Duration::from_millis(2500),
            None,
        );
        assert!(events.with_message("dead peer detected").is_empty());
        let got = events.with_message("connection ended");
        assert_eq!(got.len(), 2, "{:#?}", events.all());
        assert!(got.iter().all(|e| e.level == tracing::Level::DEBUG));
        assert_eq!(got[0].fields["deadpeer.ending"], "aborted");
        assert_eq!(got[0].fields["error.type"], "reset");
        assert_eq!(got[1].fields["deadpeer.ending"], "closed");
        assert_eq!(got[1].fields["network.peer.address"], "10.0.0.3");
        assert_eq!(got[1].fields["connected_for_s"], "2.5");
        assert!(!got[1].fields.contains_key("error.type"));
    }
}
