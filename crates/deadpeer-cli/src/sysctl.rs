//! The kernel's keepalive sysctls, owned by the CLI: names and paths, raw reads that keep
//! out-of-range values (so that `kernel set` can repair them), writes, the `sysctl -w` and
//! sysctl.d forms, and the atomic writer behind `kernel set --persist`.
//!
//! The values are per network namespace: reading or writing them affects the namespace of the
//! calling thread.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
#[cfg(target_os = "linux")]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use deadpeer::kernel::Sysctl;
use deadpeer::{KeepalivePolicy, PolicyError, UserTimeout};

use crate::error::CliError;

/// Where `kernel set --persist` writes when no path is given.
pub(crate) const DEFAULT_CONF: &str = "/etc/sysctl.d/60-deadpeer-keepalive.conf";

/// The first line of every file `--persist` writes; a file without it is not overwritten.
const MARKER: &str = "# Written by deadpeer";

/// The `kernel set` flag that sets a sysctl.
pub(crate) fn flag(s: &Sysctl) -> &'static str {
    match *s {
        Sysctl::TIME => "--idle",
        Sysctl::INTVL => "--interval",
        Sysctl::PROBES => "--probes",
        _ => "--retries2",
    }
}

/// Whether deadpeer accepts `value` for `s`.
pub(crate) fn in_range(s: &Sysctl, value: i64) -> bool {
    s.range().contains(&value)
}

fn read(s: &Sysctl) -> Result<i64, CliError> {
    s.read().map_err(|e| {
        CliError::runtime(format!(
            "{e}; deadpeer kernel needs Linux with /proc mounted"
        ))
    })
}

/// The four values as the kernel holds them, out-of-range ones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Values {
    pub(crate) time: i64,
    pub(crate) intvl: i64,
    pub(crate) probes: i64,
    pub(crate) retries2: i64,
}

impl Values {
    /// Reads the calling thread's network namespace.
    pub(crate) fn read() -> Result<Self, CliError> {
        Ok(Self {
            time: read(&Sysctl::TIME)?,
            intvl: read(&Sysctl::INTVL)?,
            probes: read(&Sysctl::PROBES)?,
            retries2: read(&Sysctl::RETRIES2)?,
        })
    }

    /// The value of one sysctl.
    pub(crate) fn get(&self, s: &Sysctl) -> i64 {
        match *s {
            Sysctl::TIME => self.time,
            Sysctl::INTVL => self.intvl,
            Sysctl::PROBES => self.probes,
            _ => self.retries2,
        }
    }

    /// The sysctls whose value is outside [`Sysctl::in_range`].
    pub(crate) fn out_of_range(&self) -> Vec<Sysctl> {
        Sysctl::ALL
            .into_iter()
            .filter(|s| !in_range(s, self.get(s)))
            .collect()
    }

    /// The keepalive values as a policy (user timeout off), or `None` when one is out of range.
    pub(crate) fn policy(&self) -> Option<KeepalivePolicy> {
        let secs = |v: i64| Duration::from_secs(u64::try_from(v).unwrap_or(0));
        let probes = u32::try_from(self.probes).unwrap_or(0);
        validate(secs(self.time), secs(self.intvl), probes).ok()
    }

    /// `retries2` as the kernel's byte, or `None` when out of range.
    pub(crate) fn retries2(&self) -> Option<u8> {
        u8::try_from(self.retries2).ok()
    }
}

/// One line per value out of range, naming the value, the range and the fix.
pub(crate) fn problem(s: &Sysctl, value: i64) -> String {
    format!(
        "{} = {value} is out of range: deadpeer accepts {}..={}; repair it with deadpeer kernel set {} …, \
         or restore the Linux defaults with deadpeer kernel set --policy linux-default",
        s.name(),
        s.range().start(),
        s.range().end(),
        flag(s)
    )
}

/// Validates the three keepalive values the way a policy is validated (user timeout off: there is
/// no system-wide user timeout).
pub(crate) fn validate(
    idle: Duration,
    interval: Duration,
    probes: u32,
) -> Result<KeepalivePolicy, PolicyError> {
    KeepalivePolicy::builder()
        .idle(idle)
        .interval(interval)
        .probes(probes)
        .user_timeout(UserTimeout::Off)
        .build()
}

/// What `kernel set` writes: the three keepalive values and, optionally, `tcp_retries2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) policy: KeepalivePolicy,
    pub(crate) retries2: Option<u8>,
}

impl Settings {
    /// Settings of the keepalive values only.
    pub(crate) fn keepalive(policy: &KeepalivePolicy) -> Self {
        Self {
            policy: *policy,
            retries2: None,
        }
    }

    fn pairs(&self) -> Vec<(Sysctl, u64)> {
        let p = &self.policy;
        let mut v = vec![
            (Sysctl::TIME, p.idle().as_secs()),
            (Sysctl::INTVL, p.interval().as_secs()),
            (Sysctl::PROBES, p.probes().into()),
        ];
        if let Some(r) = self.retries2 {
            v.push((Sysctl::RETRIES2, r.into()));
        }
        v
    }

    /// The `sysctl -w` command that sets these values.
    pub(crate) fn command(&self) -> String {
        let assignments: Vec<String> = self
            .pairs()
            .iter()
            .map(|(s, v)| format!("{}={v}", s.name()))
            .collect();
        format!("sysctl -w {}", assignments.join(" "))
    }

    /// The sysctl.d lines, `name = value`, one per value.
    fn lines(&self) -> String {
        self.pairs()
            .iter()
            .map(|(s, v)| format!("{} = {v}\n", s.name()))
            .collect()
    }

    /// A sysctl.d snippet to show: a comment naming the file, then the lines.
    pub(crate) fn conf(&self, path: &str) -> String {
        format!("# {path}: {}\n{}", self.policy, self.lines())
    }

    /// The file `--persist` writes: a marker line, how to undo it, then the lines.
    pub(crate) fn persisted(&self) -> String {
        format!(
            "{MARKER} kernel set --persist: {}; a dead idle peer is found within {}s\n\
             # Applied at boot by systemd-sysctl or `sysctl --system`; delete this file to return to the defaults.\n{}",
            self.policy,
            self.policy.detection_bound().as_secs(),
            self.lines()
        )
    }

    /// Writes the values to the calling thread's network namespace, in order.
    pub(crate) fn write(&self) -> Result<(), CliError> {
        for (s, value) in self.pairs() {
            // Every value is a policy's or a byte: within `i64`.
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            s.write(value).map_err(|e| {
                if e.kind() == io::ErrorKind::PermissionDenied {
                    CliError::runtime(format!(
                        "cannot write {}: permission denied; writing the keepalive defaults needs \
                         root, or CAP_NET_ADMIN in this network namespace; run instead: {}",
                        s.path().display(),
                        self.command()
                    ))
                } else {
                    CliError::runtime(format!("cannot write {} = {value}: {e}", s.name()))
                }
            })?;
        }
        Ok(())
    }
}

impl fmt::Display for Settings {
    /// `idle=300s interval=60s probes=30[ retries2=8]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.policy;
        write!(
            f,
            "idle={}s interval={}s probes={}",
            p.idle().as_secs(),
            p.interval().as_secs(),
            p.probes()
        )?;
        if let Some(r) = self.retries2 {
            write!(f, " retries2={r}")?;
        }
        Ok(())
    }
}

/// Checks a `--persist` path before anything is written: it must name a `.conf` file (sysctl.d
/// reads nothing else) in an existing directory, and must not be a file deadpeer did not write.
pub(crate) fn check_persist_path(path: &Path) -> Result<(), CliError> {
    let shown = path.display();
    let fix = format!("pass --persist PATH ending in .conf, e.g. {DEFAULT_CONF}");
    if path.extension().and_then(|e| e.to_str()) != Some("conf")
        || path.file_name().is_none_or(|n| n == ".conf")
    {
        return Err(CliError::usage(format!(
            "--persist {shown}: sysctl.d reads only files named *.conf; {fix}"
        )));
    }
    let dir = parent(path);
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "--persist {shown}: the directory {} does not exist; create it or {fix}",
            dir.display()
        )));
    }
    match fs::read_to_string(path) {
        Ok(text) if !text.starts_with(MARKER) => Err(CliError::usage(format!(
            "--persist {shown}: the file exists and was not written by deadpeer, so it is not \
             overwritten; move it away or choose another path ({fix})"
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::runtime(format!("cannot read {shown}: {e}"))),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `contents` atomically: a temporary file in the same directory, written,
/// synced and renamed over `path`, then the directory synced. Readers see the old file or the new
/// one, never a part. The file is mode 0644, as sysctl.d files are.
#[cfg(target_os = "linux")]
pub(crate) fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let tmp = dir.join(format!(
        ".{}.deadpeer-{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_and_conf_forms() {
        let s = Settings::keepalive(&KeepalivePolicy::FAST);
        assert_eq!(
            s.command(),
            "sysctl -w net.ipv4.tcp_keepalive_time=15 net.ipv4.tcp_keepalive_intvl=5 net.ipv4.tcp_keepalive_probes=3"
        );
        let with = Settings {
            retries2: Some(8),
            ..s
        };
        assert!(with.command().ends_with(" net.ipv4.tcp_retries2=8"));
        assert!(with.persisted().starts_with(MARKER));
        assert!(with.persisted().contains("\nnet.ipv4.tcp_retries2 = 8\n"));
        assert!(!s.conf(DEFAULT_CONF).contains("retries2"));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let v = Values {
            time: 0,
            intvl: 75,
            probes: 200,
            retries2: 15,
        };
        assert_eq!(v.out_of_range(), vec![Sysctl::TIME, Sysctl::PROBES]);
        assert_eq!(v.policy(), None);
        let line = problem(&Sysctl::TIME, 0);
        assert!(line.contains("net.ipv4.tcp_keepalive_time = 0"), "{line}");
        assert!(line.contains("1..=32767"), "{line}");
        assert!(line.contains("--idle"), "{line}");
        let ok = Values {
            time: 7200,
            probes: 9,
            ..v
        };
        assert_eq!(ok.policy(), Some(KeepalivePolicy::LINUX_DEFAULT));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("dpcli-sysctl-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("60-test.conf");
        write_atomically(&path, "a\n").unwrap();
        write_atomically(&path, "b\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "b\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
