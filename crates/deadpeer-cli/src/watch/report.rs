//! A death as a human line, a JSON object and metrics.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::event::state_name;
use super::flows::Death;
use super::owners::Owner;

/// One death, as `--json` prints it (one object per line).
#[derive(Debug, Serialize)]
pub(crate) struct Record {
    /// Wall-clock time of the kernel's decision, RFC 3339 UTC.
    pub(crate) time: String,
    /// The tracepoint's timestamp, seconds on CLOCK_MONOTONIC.
    pub(crate) kernel_ts: f64,
    /// `Cause::as_str()`.
    pub(crate) cause: &'static str,
    /// `Ending::as_str()`.
    pub(crate) ending: &'static str,
    /// `Ending::is_death()`: a death, not a close or an application's abort.
    pub(crate) is_death: bool,
    pub(crate) errno: i32,
    pub(crate) error: String,
    pub(crate) local_addr: SocketAddr,
    pub(crate) peer_addr: SocketAddr,
    /// The state the connection left for `close`.
    pub(crate) state_before: String,
    pub(crate) pid: Option<u32>,
    pub(crate) process: Option<String>,
    /// The network namespace's inode, from the owners' index (the kernel gives none).
    pub(crate) netns: Option<u64>,
    pub(crate) netns_name: Option<String>,
    /// Retransmissions seen within TCP_RTO_MAX before the death.
    pub(crate) retransmits: u32,
    pub(crate) last_retransmit_ms_before: Option<f64>,
    /// Since the connection reached ESTABLISHED, when watch saw it.
    pub(crate) open_for_ms: Option<f64>,
    /// From the kernel's timestamp to this line.
    pub(crate) delay_ms: f64,
}

impl Record {
    /// `now_mono` and `now_wall` are read together, just before the line is written.
    pub(crate) fn new(
        d: &Death,
        owner: Option<Owner>,
        now_mono: f64,
        now_wall: SystemTime,
    ) -> Self {
        let ago = Duration::from_secs_f64((now_mono - d.ts).max(0.0));
        let at = now_wall.checked_sub(ago).unwrap_or(now_wall);
        let ms = |s: f64| (s * 1e6).round() / 1e3;
        let owner = owner.unwrap_or_default();
        let error = io::Error::from_raw_os_error(d.errno).to_string();
        let error = match error.rsplit_once(" (os error") {
            Some((text, _)) => text.to_owned(),
            None => error,
        };
        Self {
            time: humantime::format_rfc3339_micros(at).to_string(),
            kernel_ts: d.ts,
            cause: d.cause.as_str(),
            ending: d.ending.as_str(),
            is_death: d.ending.is_death(),
            errno: d.errno,
            error,
            local_addr: canonical(d.flow.0),
            peer_addr: canonical(d.flow.1),
            state_before: state_name(d.state_before),
            pid: owner.pid,
            process: owner.command,
            netns: (owner.netns != 0).then_some(owner.netns),
            netns_name: owner.netns_name,
            retransmits: d.retransmits,
            last_retransmit_ms_before: d.last_retransmit.map(|t| ms(d.ts - t)),
            open_for_ms: d.established.map(|t| ms(d.ts - t)),
            delay_ms: ms(now_mono - d.ts),
        }
    }

    /// `2026-12-03T01:02:03.456789Z vanished/keepalive_timeout 10.0.0.1:7300 -> 10.0.0.2:5000 ...`:
    /// the ending, then the cause.
    pub(crate) fn line(&self) -> String {
        let owner = match (&self.pid, &self.process) {
            (Some(pid), Some(p)) => format!("{pid}/{p}"),
            _ => "owner unknown".to_owned(),
        };
        let netns = match (&self.netns_name, self.netns) {
            (Some(name), _) => format!(" netns {name}"),
            (None, Some(ino)) => format!(" net:[{ino}]"),
            (None, None) => String::new(),
        };
        let mut figures = format!("{} after {}", self.error, self.state_before);
        if let Some(open) = self.open_for_ms {
            figures.push_str(&format!(", open {}", secs(open)));
        }
        if self.retransmits > 0 {
            figures.push_str(&format!(", {} retransmits", self.retransmits));
            if let Some(last) = self.last_retransmit_ms_before {
                figures.push_str(&format!(" (last {} before)", secs(last)));
            }
        }
        format!(
            "{} {}/{} {} -> {} {owner}{netns} ({figures}) delay {:.1}ms",
            self.time, self.ending, self.cause, self.local_addr, self.peer_addr, self.delay_ms
        )
    }

    /// The library's metrics: `deadpeer.ended_connections{deadpeer.ending}`, and for a death
    /// `deadpeer.dead_connections{error.type, deadpeer.ending}` and, when the opening was seen,
    /// `deadpeer.dead_connection.duration{error.type, deadpeer.ending}`.
    pub(crate) fn count(&self) {
        use deadpeer::metrics::{
            DEAD_CONNECTION_DURATION, DEAD_CONNECTIONS, ENDED_CONNECTIONS, ENDING, ERROR_TYPE,
        };
        metrics::counter!(ENDED_CONNECTIONS, ENDING => self.ending).increment(1);
        if !self.is_death {
            return;
        }
        let labels = [(ERROR_TYPE, self.cause), (ENDING, self.ending)];
        metrics::counter!(DEAD_CONNECTIONS, &labels).increment(1);
        if let Some(open) = self.open_for_ms {
            metrics::histogram!(DEAD_CONNECTION_DURATION, &labels).record(open / 1000.0);
        }
    }
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn secs(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.3}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpeer::Cause;

    #[test]
    fn a_line_and_an_object() {
        let d = Death {
            ts: 100.0,
            flow: (
                "[::ffff:10.0.0.1]:7300".parse().unwrap(),
                "10.0.0.2:5000".parse().unwrap(),
            ),
            errno: 110,
            cause: Cause::RetransmitTimeout,
            ending: deadpeer::Ending::Vanished,
            state_before: 1,
            retransmits: 3,
            last_retransmit: Some(99.5),
            established: Some(90.0),
        };
        let owner = Owner {
            pid: Some(42),
            command: Some("python3".into()),
            netns: 4026531840,
            netns_name: None,
        };
        let r = Record::new(
            &d,
            Some(owner),
            100.0025,
            SystemTime::UNIX_EPOCH + Duration::from_secs(60),
        );
        assert_eq!(r.delay_ms, 2.5);
        assert_eq!(r.local_addr, "10.0.0.1:7300".parse().unwrap());
        assert_eq!(r.time, "1970-01-01T00:00:59.997500Z");
        assert_eq!(
            r.line(),
            "1970-01-01T00:00:59.997500Z vanished/retransmit_timeout 10.0.0.1:7300 -> 10.0.0.2:5000 \
             42/python3 net:[4026531840] (Connection timed out after established, open 10.000s, \
             3 retransmits (last 500.0ms before)) delay 2.5ms"
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cause"], "retransmit_timeout");
        assert_eq!(v["ending"], "vanished");
        assert_eq!(v["is_death"], true);
        assert_eq!(v["open_for_ms"], 10000.0);
        let bare = Record::new(&d, None, 100.0, SystemTime::UNIX_EPOCH);
        assert!(bare.line().contains(" owner unknown ("), "{}", bare.line());
    }
}
