//! The kernel's keepalive defaults (`/proc/sys/net/ipv4/tcp_keepalive_*` and `tcp_retries2`,
//! [`Sysctl`], [`SystemKeepalive`]) and its timers' arithmetic ([`probe_ticks`],
//! [`retransmit_bound`]).
//!
//! These defaults apply to sockets that turn `SO_KEEPALIVE` on without setting the other options.
//! They are per network namespace: reading or writing them affects the namespace of the calling
//! thread.

use std::fmt;
use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::{KeepalivePolicy, UserTimeout};

const PROC_DIR: &str = "/proc/sys/net/ipv4";
/// `EPERM`, the same number on every Unix; only Linux has these files.
const EPERM: i32 = 1;

/// `Ok` on Linux and Android, whose kernel keepalive defaults live in `/proc/sys/net/ipv4`.
fn linux_only() -> io::Result<()> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the kernel keepalive defaults are read from /proc/sys/net/ipv4 on Linux only; \
                 this is {}",
                std::env::consts::OS
            ),
        ))
    }
}

/// One of the kernel's four TCP keepalive sysctls: its name, its file under `/proc/sys/net/ipv4`,
/// the values deadpeer accepts, and Linux's default. The one model of these sysctls, for
/// [`SystemKeepalive`] and the `deadpeer` command.
///
/// ```
/// use deadpeer::kernel::Sysctl;
///
/// assert_eq!(Sysctl::TIME.name(), "net.ipv4.tcp_keepalive_time");
/// assert_eq!(Sysctl::PROBES.range(), 1..=127);
/// assert_eq!(Sysctl::RETRIES2.default_value(), 15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sysctl {
    file: &'static str,
    name: &'static str,
    min: i64,
    max: i64,
    default: i64,
}

impl Sysctl {
    /// `net.ipv4.tcp_keepalive_time`: seconds of idleness before the first probe (1..=32767, the
    /// socket option's range; the sysctl itself takes more, which no socket could set).
    pub const TIME: Sysctl = Sysctl {
        file: "tcp_keepalive_time",
        name: "net.ipv4.tcp_keepalive_time",
        min: 1,
        max: 32767,
        default: 7200,
    };
    /// `net.ipv4.tcp_keepalive_intvl`: seconds between probes (1..=32767).
    pub const INTVL: Sysctl = Sysctl {
        file: "tcp_keepalive_intvl",
        name: "net.ipv4.tcp_keepalive_intvl",
        min: 1,
        max: 32767,
        default: 75,
    };
    /// `net.ipv4.tcp_keepalive_probes`: unanswered probes before the peer is dead (1..=127).
    pub const PROBES: Sysctl = Sysctl {
        file: "tcp_keepalive_probes",
        name: "net.ipv4.tcp_keepalive_probes",
        min: 1,
        max: 127,
        default: 9,
    };
    /// `net.ipv4.tcp_retries2`: retransmissions of unacknowledged data before the connection is
    /// dropped, when no user timeout is set (0..=255, a byte in the kernel; 15 gives about
    /// 924.6 s, see [`retransmit_bound`]).
    pub const RETRIES2: Sysctl = Sysctl {
        file: "tcp_retries2",
        name: "net.ipv4.tcp_retries2",
        min: 0,
        max: 255,
        default: 15,
    };

    /// The four, in display order.
    pub const ALL: [Sysctl; 4] = [Self::TIME, Self::INTVL, Self::PROBES, Self::RETRIES2];

    /// The `sysctl` name, `net.ipv4.…`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The procfs path, `/proc/sys/net/ipv4/<file>`.
    pub fn path(&self) -> PathBuf {
        Path::new(PROC_DIR).join(self.file)
    }

    /// The values deadpeer accepts.
    pub fn range(&self) -> RangeInclusive<i64> {
        self.min..=self.max
    }

    /// Linux's default.
    pub fn default_value(&self) -> i64 {
        self.default
    }

    /// Reads the value in the calling thread's network namespace, as the kernel holds it (a value
    /// outside [`range`](Self::range) is returned as it is, so that it can be repaired).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] off Linux and Android; the file's error, naming the path;
    /// [`io::ErrorKind::InvalidData`] when it holds no whole number.
    pub fn read(&self) -> io::Result<i64> {
        linux_only()?;
        let path = self.path();
        let text = fs::read_to_string(&path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display()))
        })?;
        text.trim().parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not a whole number: {e}",
                    path.display(),
                    text.trim()
                ),
            )
        })
    }

    /// Writes `value` in the calling thread's network namespace.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a value outside [`range`](Self::range), naming it and
    /// the range; [`io::ErrorKind::Unsupported`] off Linux and Android;
    /// [`io::ErrorKind::PermissionDenied`] without privilege (root, or `CAP_NET_ADMIN` in the
    /// network namespace), naming the `sysctl -w` command to run instead; other errors name the
    /// file.
    pub fn write(&self, value: i64) -> io::Result<()> {
        self.write_or_run(value, &format!("sysctl -w {}={value}", self.name))
    }

    /// [`write`](Self::write), naming `command` as what to run instead without privilege.
    fn write_or_run(&self, value: i64, command: &str) -> io::Result<()> {
        if !self.range().contains(&value) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} = {value} is out of range: deadpeer accepts {}..={}",
                    self.name, self.min, self.max
                ),
            ));
        }
        linux_only()?;
        let path = self.path();
        fs::write(&path, format!("{value}\n")).map_err(|e| {
            let denied = matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
            ) || e.raw_os_error() == Some(EPERM);
            if denied {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "cannot write {}: {e}; writing the keepalive defaults needs root, or \
                         CAP_NET_ADMIN in this network namespace; run instead: {command}",
                        path.display()
                    ),
                )
            } else {
                io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
            }
        })
    }
}

/// The kernel's keepalive defaults for the calling thread's network namespace.
///
/// # Examples
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// let sys = deadpeer::SystemKeepalive::read()?;
/// println!("the kernel finds a dead peer after {}", humantime::format_duration(sys.detection_bound()));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemKeepalive {
    /// The defaults as a policy (user timeout `Off`: there is no system-wide user timeout).
    pub policy: KeepalivePolicy,
    /// `net.ipv4.tcp_retries2`.
    pub retries2: u32,
}

impl SystemKeepalive {
    /// Reads the defaults from `/proc/sys/net/ipv4`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::Unsupported`] on systems other than Linux and Android; when a file cannot
    /// be read (no procfs), with the path in the message; or when a value is outside what a
    /// policy can hold.
    pub fn read() -> io::Result<Self> {
        let read = |s: Sysctl| {
            let value = s.read()?;
            u32::try_from(value).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} = {value} is out of range: deadpeer accepts {}..={}",
                        s.name, s.min, s.max
                    ),
                )
            })
        };
        let (idle, interval, probes) = (
            read(Sysctl::TIME)?,
            read(Sysctl::INTVL)?,
            read(Sysctl::PROBES)?,
        );
        let retries2 = read(Sysctl::RETRIES2)?;
        let policy = KeepalivePolicy::builder()
            .idle(Duration::from_secs(idle.into()))
            .interval(Duration::from_secs(interval.into()))
            .probes(probes)
            .user_timeout(UserTimeout::Off)
            .build()
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the kernel's keepalive defaults do not form a valid policy: {e}"),
                )
            })?;
        Ok(Self { policy, retries2 })
    }

    /// Writes `policy`'s idle time, interval and probe count as the defaults of the calling
    /// thread's network namespace ([`Sysctl::write`], in order). The user timeout has no
    /// system-wide setting and is ignored.
    ///
    /// # Errors
    ///
    /// As [`Sysctl::write`]; without privilege, the [`io::ErrorKind::PermissionDenied`] error
    /// gives the `sysctl -w` command that sets all three values.
    pub fn write(policy: KeepalivePolicy) -> io::Result<()> {
        let values = [
            (Sysctl::TIME, policy.idle().as_secs()),
            (Sysctl::INTVL, policy.interval().as_secs()),
            (Sysctl::PROBES, policy.probes().into()),
        ];
        let command = format!(
            "sysctl -w {}",
            values
                .iter()
                .map(|(s, v)| format!("{}={v}", s.name))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (sysctl, value) in values {
            // A policy's values are within every range, so the conversion cannot fail.
            sysctl.write_or_run(i64::try_from(value).unwrap_or(i64::MAX), &command)?;
        }
        Ok(())
    }

    /// How long a dead idle peer goes unnoticed under these defaults:
    /// `tcp_keepalive_time + tcp_keepalive_intvl × tcp_keepalive_probes`.
    pub fn detection_bound(&self) -> Duration {
        self.policy.detection_bound()
    }

    /// [`retransmit_bound`] of these defaults' `tcp_retries2`.
    pub fn retransmit_bound(&self) -> Duration {
        retransmit_bound(self.retries2)
    }
}

/// How many keepalive timer ticks after the idle time the kernel declares a silent peer of an idle
/// connection dead (Linux's `tcp_keepalive_timer`, measured in docs/kernel.md): the probe count,
/// or, with a user timeout, the first tick at or past it, at least one (the kernel then ignores
/// the probe count). The bound is `idle + interval × ticks`. The one formula behind
/// [`KeepalivePolicy::detection_bound`] and [`SocketKeepalive::detection_bound`](crate::SocketKeepalive::detection_bound)
/// (a policy's `Auto` user timeout, half an interval short of the last probe, gives the probe
/// count).
///
/// ```
/// use std::time::Duration;
/// let s = Duration::from_secs;
/// assert_eq!(deadpeer::kernel::probe_ticks(s(15), s(15), 3, None), 3);
/// // reqwest's defaults: the 30 s user timeout ends it at the first probe.
/// assert_eq!(deadpeer::kernel::probe_ticks(s(15), s(15), 3, Some(s(30))), 1);
/// ```
pub fn probe_ticks(
    idle: Duration,
    interval: Duration,
    probes: u32,
    user_timeout: Option<Duration>,
) -> u64 {
    match user_timeout {
        Some(ut) if !interval.is_zero() => {
            let after_idle = ut.saturating_sub(idle).as_nanos();
            // At most i32::MAX ms / 1 s, about 2.1 million: fits.
            after_idle.div_ceil(interval.as_nanos()).max(1) as u64
        }
        _ => u64::from(probes),
    }
}

/// How long the kernel retransmits unacknowledged data before it drops a connection, under
/// `tcp_retries2 = retries2` and no `TCP_USER_TIMEOUT`: its own model (`tcp_model_timeout`), an
/// RTO of 200 ms doubling up to 120 s, summed over `retries2 + 1` transmissions. About 924.6 s
/// for the default of 15.
///
/// ```
/// let bound = deadpeer::kernel::retransmit_bound(15);
/// assert_eq!(bound.as_millis(), 924_600);
/// ```
pub fn retransmit_bound(retries2: u32) -> Duration {
    let mut total = 0.0;
    let mut rto: f64 = 0.2;
    for _ in 0..=retries2.min(255) {
        total += rto;
        rto = (rto * 2.0).min(120.0);
    }
    Duration::from_secs_f64(total)
}

impl fmt::Display for SystemKeepalive {
    /// `2h 11m 15s (7200 + 75 × 9)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} + {} × {})",
            humantime::format_duration(self.detection_bound()),
            self.policy.idle().as_secs(),
            self.policy.interval().as_secs(),
            self.policy.probes()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmit_bound_matches_the_kernel_model() {
        let sys = SystemKeepalive {
            policy: KeepalivePolicy::LINUX_DEFAULT,
            retries2: 15,
        };
        let b = sys.retransmit_bound().as_secs_f64();
        assert!((b - 924.6).abs() < 0.1, "{b}");
        let five = SystemKeepalive { retries2: 5, ..sys };
        assert!((five.retransmit_bound().as_secs_f64() - 12.6).abs() < 0.1);
    }

    #[test]
    fn display_shows_the_bound_and_its_terms() {
        let sys = SystemKeepalive {
            policy: KeepalivePolicy::LINUX_DEFAULT,
            retries2: 15,
        };
        assert_eq!(sys.to_string(), "2h 11m 15s (7200 + 75 × 9)");
    }
}
