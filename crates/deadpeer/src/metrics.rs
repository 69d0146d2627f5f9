//! Metrics (feature `metrics`), through the [`metrics`](https://docs.rs/metrics) facade: deaths by
//! cause, every ending by name, watched connections now, connections put under a policy, and failures to apply one.
//!
//! deadpeer installs no recorder. Install the one your service already exports with (for
//! Prometheus, `metrics-exporter-prometheus`; for OpenTelemetry, a `metrics` → OTLP bridge):
//! until one is installed every call below costs a thread-local read and an atomic load. Call
//! [`describe`] once after installing it, so that the exporter knows each metric's unit and
//! description.
//!
//! # The metrics
//!
//! Names follow OpenTelemetry's conventions: dotted, the unit in the metric's metadata (a
//! Prometheus exporter with its recommended naming shows `deadpeer.dead_connections` as
//! `deadpeer_dead_connections_total` and `deadpeer.dead_connection.duration` as
//! `deadpeer_dead_connection_duration_seconds`), and the cause of a failure under `error.type`.
//! Every label takes a bounded set of values: no address, port or policy is ever a label.
//!
//! | name | type | unit | labels | moves when |
//! |---|---|---|---|---|
//! | [`deadpeer.dead_connections`](DEAD_CONNECTIONS) | counter | `{connection}` | `error.type`, `deadpeer.ending` | +1 when the kernel declares a peer dead ([`Ending::is_death`]: forgot, vanished, refused, stalled): once per connection, when `dead peer detected` is emitted. An application's abort is not counted here |
//! | [`deadpeer.dead_connection.duration`](DEAD_CONNECTION_DURATION) | histogram | `s` | `error.type`, `deadpeer.ending` | records, at the same moment, how long the connection had been open ([`DeadPeer::connected_for`]) |
//! | [`deadpeer.dead_connection.idle_duration`](DEAD_CONNECTION_IDLE_DURATION) | histogram | `s` | `error.type`, `deadpeer.ending` | records, at the same moment, how long the peer had sent no data ([`DeadPeer::idle_for`]; not recorded where `TCP_INFO` is unavailable) |
//! | [`deadpeer.ended_connections`](ENDED_CONNECTIONS) | counter | `{connection}` | `deadpeer.ending` | +1 for each ending seen, with each `dead peer detected` or `connection ended` event: the peer's FIN (`closed`), an application's abort (`aborted`), and the deaths. A peer that closes and then resets the connection counts as `closed` and as `aborted` |
//! | [`deadpeer.watched_connections`](WATCHED_CONNECTIONS) | gauge | `{connection}` | — | +1 when a connection starts being watched (its first [`liveness()`](crate::KeepaliveStream::liveness), which a `ReapLayer`, axum's `ConnectInfo<Liveness>` and [`Connections`](crate::connections::Connections) also take); −1 when its stream is dropped or unwrapped. A dead connection counts until the application drops it |
//! | [`deadpeer.opened_connections`](OPENED_CONNECTIONS) | counter | `{connection}` | `direction` | +1 for each connection put under its policy: `inbound` when a [`KeepaliveListener`](crate::KeepaliveListener) accepts it or a `ReapLayer` wraps a `TcpStream`, `outbound` when [`connect`](crate::connect) or a connector under a `KeepaliveLayer` opens it. A connection whose policy could not be applied is not counted here but below; [`KeepaliveStream::new`](crate::KeepaliveStream::new) and `wrap` count nothing (deadpeer does not know the side) |
//! | [`deadpeer.watch_failures`](WATCH_FAILURES) | counter | `{failure}` | `error.type` | +1 when a connection cannot be watched (no epoll instance or reaper thread could be had, e.g. the process is out of descriptors), when `cannot watch connection` is emitted; its [`Liveness::is_watched`](crate::Liveness::is_watched) is `false` and the next `liveness()` tries again |
//! | [`deadpeer.reaper.restarts`](REAPER_RESTARTS) | counter | `{restart}` | — | +1 when the reaper thread died (a panic in deadpeer's own code) and was replaced, when `deadpeer reaper thread died` is emitted. Should stay 0 |
//! | [`deadpeer.keepalive.apply_failures`](APPLY_FAILURES) | counter | `{failure}` | `error.type` | +1 when a `setsockopt` of the policy fails on a connection, when `failed to apply keepalive` is emitted (the connection is kept, or dropped in strict mode) |
//!
//! Label values:
//!
//! - `error.type` of a death: [`Cause::as_str`](crate::Cause::as_str): `keepalive_timeout`,
//!   `retransmit_timeout`, `stalled`, `reset`, `unreachable`, `refused`, `aborted`.
//! - `deadpeer.ending`: [`Ending::as_str`]: `closed`, `aborted`, `forgot`, `vanished`,
//!   `refused`, `stalled`.
//! - `error.type` of an apply or watch failure: `too_many_open_files` (`EMFILE`, `ENFILE`), or
//!   the [`std::io::ErrorKind`] in snake case (`invalid_input` for a socket that is not TCP,
//!   `permission_denied`, `not_connected`, `out_of_memory`, `unsupported`, `would_block` for a
//!   thread that could not be spawned), or `_OTHER`, OpenTelemetry's value for anything else.
//! - `direction`: `inbound` or `outbound`.
//!
//! The histograms' buckets are the exporter's to choose; [`DURATION_BUCKETS`] suits both.
//!
//! # Threads and recorders
//!
//! A death seen by a read or a write is counted on the application's thread, and one seen by
//! deadpeer's reaper thread (nothing was reading) is counted there: install the recorder
//! globally (`metrics::set_global_recorder`, or the exporter's `install`), not only as a
//! thread-local one.
//!
//! # Example
//!
//! The `metrics_prometheus` example serves `/metrics` for an axum server under a
//! `KeepaliveListener`, makes a client die in a network-namespace lab, and prints its own
//! `/metrics` lines:
//!
//! ```text
//! deadpeer_dead_connections_total{error_type="keepalive_timeout",deadpeer_ending="vanished"} 1
//! deadpeer_watched_connections 0
//! ```
#![cfg_attr(docsrs, doc(cfg(feature = "metrics")))]

use ::metrics::Unit;

#[cfg(doc)]
use crate::{DeadPeer, Ending};

/// Counter of connections whose peer the kernel declared dead, by `error.type` (the cause) and
/// `deadpeer.ending` (the deaths among the [`Ending`]s).
pub const DEAD_CONNECTIONS: &str = "deadpeer.dead_connections";
/// Counter of connections' endings, by `deadpeer.ending`.
pub const ENDED_CONNECTIONS: &str = "deadpeer.ended_connections";
/// Histogram, in seconds, of how long a connection had been open when its peer was declared
/// dead, by `error.type`.
pub const DEAD_CONNECTION_DURATION: &str = "deadpeer.dead_connection.duration";
/// Histogram, in seconds, of how long the peer had sent no data when it was declared dead, by
/// `error.type`.
pub const DEAD_CONNECTION_IDLE_DURATION: &str = "deadpeer.dead_connection.idle_duration";
/// Gauge of the connections watched now (from their first `liveness()` until their stream is
/// dropped).
pub const WATCHED_CONNECTIONS: &str = "deadpeer.watched_connections";
/// Counter of connections put under a policy, by `direction`.
pub const OPENED_CONNECTIONS: &str = "deadpeer.opened_connections";
/// Counter of failures to apply a policy to a connection, by `error.type`.
pub const APPLY_FAILURES: &str = "deadpeer.keepalive.apply_failures";
/// Counter of failures to watch a connection (no epoll instance or reaper thread), by
/// `error.type`.
pub const WATCH_FAILURES: &str = "deadpeer.watch_failures";
/// Counter of reaper threads that died and were replaced.
pub const REAPER_RESTARTS: &str = "deadpeer.reaper.restarts";

/// The label naming a death's cause or a failure's kind (OpenTelemetry's `error.type`).
pub const ERROR_TYPE: &str = "error.type";
/// The label naming how a connection ended ([`Ending::as_str`]).
pub const ENDING: &str = "deadpeer.ending";
/// The label of [`OPENED_CONNECTIONS`]: `inbound` or `outbound`.
pub const DIRECTION: &str = "direction";

/// Histogram buckets, in seconds, for [`DEAD_CONNECTION_DURATION`] and
/// [`DEAD_CONNECTION_IDLE_DURATION`]: from the fastest policies' bounds (a few seconds) to a day.
///
/// ```
/// # fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
///
/// let builder = PrometheusBuilder::new().set_buckets_for_metric(
///     Matcher::Prefix("deadpeer.dead_connection.".into()),
///     deadpeer::metrics::DURATION_BUCKETS,
/// )?;
/// # let _ = builder; Ok(()) }
/// ```
pub const DURATION_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// Gives the installed recorder each metric's unit and description (`# HELP` lines, and unit
/// suffixes where the exporter adds them). Call it once, after installing the recorder; without
/// it the metrics are still recorded.
pub fn describe() {
    ::metrics::describe_counter!(
        DEAD_CONNECTIONS,
        Unit::Count,
        "Connections whose peer the kernel declared dead, by cause (error.type) and ending (deadpeer.ending)."
    );
    ::metrics::describe_counter!(
        ENDED_CONNECTIONS,
        Unit::Count,
        "Connection endings seen, by deadpeer.ending (closed, aborted, forgot, vanished, refused, stalled)."
    );
    ::metrics::describe_histogram!(
        DEAD_CONNECTION_DURATION,
        Unit::Seconds,
        "How long a connection had been open when its peer was declared dead, by cause (error.type)."
    );
    ::metrics::describe_histogram!(
        DEAD_CONNECTION_IDLE_DURATION,
        Unit::Seconds,
        "How long the peer had sent no data when it was declared dead, by cause (error.type)."
    );
    ::metrics::describe_gauge!(
        WATCHED_CONNECTIONS,
        Unit::Count,
        "Connections watched for a dead peer now (from their first liveness() until their stream is dropped)."
    );
    ::metrics::describe_counter!(
        OPENED_CONNECTIONS,
        Unit::Count,
        "Connections put under a keepalive policy, by direction (inbound: accepted, outbound: connected)."
    );
    ::metrics::describe_counter!(
        APPLY_FAILURES,
        Unit::Count,
        "Failures to apply a keepalive policy to a connection, by error.type."
    );
    ::metrics::describe_counter!(
        WATCH_FAILURES,
        Unit::Count,
        "Failures to watch a connection for its death (no epoll instance or reaper thread), by error.type."
    );
    ::metrics::describe_counter!(
        REAPER_RESTARTS,
        Unit::Count,
        "Reaper threads that died and were replaced (should stay 0)."
    );
}
