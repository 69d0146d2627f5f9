//! Writing to stdout without panicking, and formatting durations.

use std::fmt;
use std::io::{self, Write};
use std::time::Duration;

use deadpeer::KeepalivePolicy;

/// Standard output that never panics: once a write fails (a closed pipe, as in
/// `deadpeer kernel | head -1`), later writes are dropped and the exit status is unchanged.
#[derive(Debug)]
pub(crate) struct Out {
    inner: io::Stdout,
    broken: bool,
}

impl Out {
    pub(crate) fn stdout() -> Self {
        Self {
            inner: io::stdout(),
            broken: false,
        }
    }

    /// Whether a write failed (the reader went away): long-running commands stop.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Writes one line.
    pub(crate) fn line(&mut self, line: impl fmt::Display) {
        if !self.broken && writeln!(self.inner, "{line}").is_err() {
            self.broken = true;
        }
    }

    /// Writes a value as pretty JSON.
    pub(crate) fn json(&mut self, value: &impl serde::Serialize) {
        match serde_json::to_string_pretty(value) {
            Ok(text) => self.line(text),
            Err(e) => self.line(format_args!("{{\"error\": \"cannot encode JSON: {e}\"}}")),
        }
    }
}

/// Writes a formatted line to an [`Out`].
macro_rules! outln {
    ($out:expr) => { $out.line("") };
    ($out:expr, $($arg:tt)*) => { $out.line(format_args!($($arg)*)) };
}
pub(crate) use outln;

/// A duration the way people read it: `2h 11m 15s`, `30s`.
pub(crate) fn human(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Seconds with one decimal: `924.6s`.
pub(crate) fn secs_tenths(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Seconds rounded to one decimal, for JSON.
pub(crate) fn secs_f64(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// The bound and its terms: `2h 11m 15s (7200 + 75 × 9)`. A user timeout that moves the bound
/// off the probe count shows the probes the kernel really sends: `30s (15 + 15 × 1: the user
/// timeout ends it after 1 probe, not 3)`.
pub(crate) fn bound(policy: &KeepalivePolicy) -> String {
    let idle = policy.idle().as_secs();
    let interval = policy.interval().as_secs();
    let ticks = (policy.detection_bound().as_secs() - idle) / interval;
    let mut s = format!(
        "{} ({idle} + {interval} × {ticks}",
        human(policy.detection_bound())
    );
    if ticks != u64::from(policy.probes()) {
        let noun = if ticks == 1 { "probe" } else { "probes" };
        s.push_str(&format!(
            ": the user timeout ends it after {ticks} {noun}, not {}",
            policy.probes()
        ));
    }
    s.push(')');
    s
}

/// The `TCP_USER_TIMEOUT` a policy sets: `30s`, or `off`.
pub(crate) fn user_timeout(d: Option<Duration>) -> String {
    match d {
        Some(d) if d.subsec_millis() != 0 => format!("{}ms", d.as_millis()),
        Some(d) => human(d),
        None => "off".to_owned(),
    }
}
