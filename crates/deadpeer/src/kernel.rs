//! The kernel's keepalive defaults: `/proc/sys/net/ipv4/tcp_keepalive_*` and `tcp_retries2`.
//!
//! These defaults apply to sockets that turn `SO_KEEPALIVE` on without setting the other options.
//! They are per network namespace: reading or writing them affects the namespace of the calling
//! thread.

use std::fmt;
use std::fs;
use std::io;
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

/// One of the sysctls [`SystemKeepalive`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sysctl {
    /// The file name under `/proc/sys/net/ipv4`.
    file: &'static str,
    /// The `sysctl` name.
    name: &'static str,
}

impl Sysctl {
    /// `net.ipv4.tcp_keepalive_time`: seconds of idleness before the first probe.
    const TIME: Sysctl = Sysctl {
        file: "tcp_keepalive_time",
        name: "net.ipv4.tcp_keepalive_time",
    };
    /// `net.ipv4.tcp_keepalive_intvl`: seconds between probes.
    const INTVL: Sysctl = Sysctl {
        file: "tcp_keepalive_intvl",
        name: "net.ipv4.tcp_keepalive_intvl",
    };
    /// `net.ipv4.tcp_keepalive_probes`: unanswered probes before the peer is dead.
    const PROBES: Sysctl = Sysctl {
        file: "tcp_keepalive_probes",
        name: "net.ipv4.tcp_keepalive_probes",
    };
    /// `net.ipv4.tcp_retries2`: retransmissions of unacknowledged data before the connection is
    /// dropped, when no user timeout is set (15 gives about 924.6 s).
    const RETRIES2: Sysctl = Sysctl {
        file: "tcp_retries2",
        name: "net.ipv4.tcp_retries2",
    };

    /// The procfs path, `/proc/sys/net/ipv4/<file>`.
    fn path(&self) -> PathBuf {
        Path::new(PROC_DIR).join(self.file)
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
        linux_only()?;
        let idle = read_u32(Sysctl::TIME)?;
        let interval = read_u32(Sysctl::INTVL)?;
        let probes = read_u32(Sysctl::PROBES)?;
        let retries2 = read_u32(Sysctl::RETRIES2)?;
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
    /// thread's network namespace. The user timeout has no system-wide setting and is ignored.
    ///
    /// # Errors
    ///
    /// Without privilege, an [`io::ErrorKind::PermissionDenied`] error that says what is needed
    /// (root, or `CAP_NET_ADMIN` in the network namespace) and gives the `sysctl -w` command to
    /// run instead. Other I/O errors name the file. [`io::ErrorKind::Unsupported`] on systems
    /// other than Linux and Android.
    pub fn write(policy: KeepalivePolicy) -> io::Result<()> {
        linux_only()?;
        let values = [
            (Sysctl::TIME, policy.idle().as_secs()),
            (Sysctl::INTVL, policy.interval().as_secs()),
            (Sysctl::PROBES, policy.probes().into()),
        ];
        for (sysctl, value) in values {
            fs::write(sysctl.path(), format!("{value}\n")).map_err(|e| {
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) || e.raw_os_error() == Some(EPERM)
                {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "cannot write {}: {e}; writing the keepalive defaults needs root, or \
                             CAP_NET_ADMIN in this network namespace; run instead: {}",
                            sysctl.path().display(),
                            sysctl_command(&policy)
                        ),
                    )
                } else {
                    io::Error::new(
                        e.kind(),
                        format!("cannot write {}: {e}", sysctl.path().display()),
                    )
                }
            })?;
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

/// The `sysctl -w` command that sets `policy` as the kernel default.
fn sysctl_command(policy: &KeepalivePolicy) -> String {
    format!(
        "sysctl -w {}={} {}={} {}={}",
        Sysctl::TIME.name,
        policy.idle().as_secs(),
        Sysctl::INTVL.name,
        policy.interval().as_secs(),
        Sysctl::PROBES.name,
        policy.probes()
    )
}

fn read_u32(sysctl: Sysctl) -> io::Result<u32> {
    let path = sysctl.path();
    let text = fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
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
