//! The metrics' recording, through the [`metrics`](https://docs.rs/metrics) facade; their
//! names and the table of what each means are in the public [`crate::metrics`] module. Nothing
//! here installs a recorder.

use std::io;

use ::metrics::{Key, Label, Level, Metadata};

use super::Direction;
use crate::ending::Ending;
use crate::error::DeadPeer;
use crate::metrics::{
    APPLY_FAILURES, DEAD_CONNECTION_DURATION, DEAD_CONNECTION_IDLE_DURATION, DEAD_CONNECTIONS,
    DIRECTION, ENDED_CONNECTIONS, ENDING, ERROR_TYPE, OPENED_CONNECTIONS, REAPER_RESTARTS,
    WATCH_FAILURES, WATCHED_CONNECTIONS,
};
use crate::sys;

/// Where deadpeer's metrics come from, for recorders that filter on it.
/// The module path is the public `deadpeer::metrics`, where the names are documented.
static METADATA: Metadata<'static> =
    Metadata::new("deadpeer", Level::INFO, Some("deadpeer::metrics"));

static WATCHED: Key = Key::from_static_name(WATCHED_CONNECTIONS);
static RESTARTS: Key = Key::from_static_name(REAPER_RESTARTS);
static INBOUND_LABEL: [Label; 1] = [Label::from_static_parts(DIRECTION, "inbound")];
static OUTBOUND_LABEL: [Label; 1] = [Label::from_static_parts(DIRECTION, "outbound")];
static OPENED_INBOUND: Key = Key::from_static_parts(OPENED_CONNECTIONS, &INBOUND_LABEL);
static OPENED_OUTBOUND: Key = Key::from_static_parts(OPENED_CONNECTIONS, &OUTBOUND_LABEL);

/// A key with the one label `error.type` (a death or a failure: rare, so built each time).
fn by_error_type(name: &'static str, error_type: &'static str) -> Key {
    Key::from_parts(name, vec![Label::from_static_parts(ERROR_TYPE, error_type)])
}

/// A key with the labels `error.type` and `deadpeer.ending` (a death: rare, so built each time).
fn by_death(name: &'static str, dead: &DeadPeer) -> Key {
    Key::from_parts(
        name,
        vec![
            Label::from_static_parts(ERROR_TYPE, dead.cause().as_str()),
            Label::from_static_parts(ENDING, dead.ending().as_str()),
        ],
    )
}

/// The ending's count, and, for a death, its counter and histograms.
pub(super) fn ended(dead: &DeadPeer) {
    ending(dead.ending());
    if !dead.ending().is_death() {
        return;
    }
    ::metrics::with_recorder(|r| {
        r.register_counter(&by_death(DEAD_CONNECTIONS, dead), &METADATA)
            .increment(1);
        r.register_histogram(&by_death(DEAD_CONNECTION_DURATION, dead), &METADATA)
            .record(dead.connected_for().as_secs_f64());
        if let Some(idle) = dead.idle_for() {
            r.register_histogram(&by_death(DEAD_CONNECTION_IDLE_DURATION, dead), &METADATA)
                .record(idle.as_secs_f64());
        }
    });
}

/// The key of each ending's count, built once.
static ENDING_LABELS: [[Label; 1]; 6] = [
    [Label::from_static_parts(ENDING, "closed")],
    [Label::from_static_parts(ENDING, "aborted")],
    [Label::from_static_parts(ENDING, "forgot")],
    [Label::from_static_parts(ENDING, "vanished")],
    [Label::from_static_parts(ENDING, "refused")],
    [Label::from_static_parts(ENDING, "stalled")],
];

/// +1 on `deadpeer.ended_connections{deadpeer.ending}`.
pub(super) fn ending(ending: Ending) {
    let labels = &ENDING_LABELS[usize::from(ending.index())];
    let key = Key::from_static_parts(ENDED_CONNECTIONS, labels);
    ::metrics::with_recorder(|r| r.register_counter(&key, &METADATA).increment(1));
}

pub(super) fn apply_failed(error: &io::Error) {
    let key = by_error_type(APPLY_FAILURES, io_error_type(error));
    ::metrics::with_recorder(|r| r.register_counter(&key, &METADATA).increment(1));
}

pub(super) fn watch_failed(error: &io::Error) {
    let key = by_error_type(WATCH_FAILURES, io_error_type(error));
    ::metrics::with_recorder(|r| r.register_counter(&key, &METADATA).increment(1));
}

pub(super) fn reaper_restarted() {
    ::metrics::with_recorder(|r| r.register_counter(&RESTARTS, &METADATA).increment(1));
}

pub(super) fn connection_opened(direction: Direction) {
    let key = match direction {
        Direction::Inbound => &OPENED_INBOUND,
        Direction::Outbound => &OPENED_OUTBOUND,
    };
    ::metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
}

pub(super) fn watch_started() {
    ::metrics::with_recorder(|r| r.register_gauge(&WATCHED, &METADATA).increment(1.0));
}

pub(super) fn watch_ended() {
    ::metrics::with_recorder(|r| r.register_gauge(&WATCHED, &METADATA).decrement(1.0));
}

/// `error.type` of an I/O error: a fixed set of names, so the label stays bounded.
fn io_error_type(error: &io::Error) -> &'static str {
    if error.raw_os_error().is_some_and(sys::is_out_of_descriptors) {
        return "too_many_open_files";
    }
    match error.kind() {
        io::ErrorKind::WouldBlock => "would_block",
        io::ErrorKind::InvalidInput => "invalid_input",
        io::ErrorKind::PermissionDenied => "permission_denied",
        io::ErrorKind::NotConnected => "not_connected",
        io::ErrorKind::OutOfMemory => "out_of_memory",
        io::ErrorKind::Unsupported => "unsupported",
        _ => "_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_bounded_names() {
        let not_tcp = io::Error::new(io::ErrorKind::InvalidInput, "not a TCP socket");
        assert_eq!(io_error_type(&not_tcp), "invalid_input");
        assert_eq!(
            io_error_type(&io::Error::from_raw_os_error(libc::EPERM)),
            "permission_denied"
        );
        assert_eq!(
            io_error_type(&io::Error::from_raw_os_error(libc::EBADF)),
            "_OTHER"
        );
        assert_eq!(
            io_error_type(&io::Error::from_raw_os_error(libc::EMFILE)),
            "too_many_open_files"
        );
    }

    #[test]
    fn ending_labels_follow_the_endings() {
        for e in Ending::ALL {
            let label = &ENDING_LABELS[usize::from(e.index())][0];
            assert_eq!((label.key(), label.value()), (ENDING, e.as_str()));
        }
    }

    #[test]
    fn static_keys_carry_their_label() {
        let labels: Vec<_> = OPENED_INBOUND
            .labels()
            .map(|l| (l.key(), l.value()))
            .collect();
        assert_eq!(OPENED_INBOUND.name(), OPENED_CONNECTIONS);
        assert_eq!(labels, [(DIRECTION, "inbound")]);
    }
}
