//! A tracing instance of its own under tracefs: `instances/deadpeer-watch-PID`, with its own
//! ring buffer, clock and events, so that the global buffer (and anyone else's tracing) is
//! untouched. Removed when [`Instance`] is dropped, on a signal (the caller stops and drops it),
//! and on a panic ([`cleanup`], called by the panic hook); an instance left by a watch that was
//! killed (`SIGKILL`) is removed by the next watch. If tracefs was not mounted, it is mounted at
//! `/sys/kernel/tracing` and unmounted again by the last watch to stop: a watch that mounted it
//! leaves [`MOUNTED_MARK`], and whichever watch finds no other watch's instance on its way out
//! unmounts tracefs and removes the mark.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use super::event::{Decoder, Format};
use crate::error::CliError;

/// Where tracefs lives.
pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";
/// Instances are named `deadpeer-watch-PID`.
pub(crate) const PREFIX: &str = "deadpeer-watch-";
/// Ring buffer per CPU, in KiB: a burst of 5000 deaths is about 15,000 events of 100 to 150
/// bytes, all on one CPU (docs/benchmarks.md).
const BUFFER_KB: u32 = 8192;

/// The tracepoints watch enables, with the filter the kernel applies before recording.
///
/// - error reports of TCP sockets that still have a peer: the application's own abort
///   (`SO_LINGER` 0) reports with `dport` 0;
/// - moves to `ESTABLISHED` (when a connection opened, and that the owners' index is stale),
///   and to `CLOSE` from the states a death leaves: `ESTABLISHED`, `FIN_WAIT1` and
///   `CLOSE_WAIT`. Ordinary closes leave `FIN_WAIT2`, `LAST_ACK` and `CLOSING` and are not
///   recorded (nor, then, a death after this side's own `shutdown`);
/// - every retransmission.
pub(crate) const EVENTS: [(&str, &str); 3] = [
    ("sock/inet_sk_error_report", "protocol == 6 && dport != 0"),
    (
        "sock/inet_sock_set_state",
        "protocol == 6 && (newstate == 1 || (newstate == 7 && (oldstate == 1 || oldstate == 4 || oldstate == 8)))",
    ),
    ("tcp/tcp_retransmit_skb", ""),
];

/// Left by a watch that mounted tracefs, until a watch unmounts it.
pub(crate) const MOUNTED_MARK: &str = "/run/deadpeer-watch-mounted-tracefs";

/// What to undo at exit: the instance.
static CLEANUP: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Removes the instance (and unmounts tracefs if watch mounted it); idempotent. Called on drop
/// and by the panic hook.
pub(crate) fn cleanup() {
    let taken = CLEANUP
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(instance) = taken else { return };
    // Removing an instance disables its events and frees its buffer.
    let _ = fs::remove_dir(&instance);
    let others = fs::read_dir(instance.parent().unwrap_or(Path::new(TRACEFS)))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(PREFIX));
    if !others
        && Path::new(MOUNTED_MARK).exists()
        && rustix::mount::unmount(TRACEFS, rustix::mount::UnmountFlags::empty()).is_ok()
    {
        let _ = fs::remove_file(MOUNTED_MARK);
    }
}

/// A tracing instance with watch's events enabled.
#[derive(Debug)]
pub(crate) struct Instance {
    dir: PathBuf,
}

impl Instance {
    /// Mounts tracefs if needed, creates the instance, sets its clock and buffer, and enables
    /// [`EVENTS`]. Each failure names what is missing.
    pub(crate) fn create() -> Result<Self, CliError> {
        let root = Path::new(TRACEFS);
        if !root.join("instances").is_dir() {
            if !root.is_dir() {
                return Err(missing(format!(
                    "{TRACEFS} does not exist: this kernel has no tracefs (CONFIG_TRACING)"
                )));
            }
            rustix::mount::mount(
                "nodev",
                TRACEFS,
                "tracefs",
                rustix::mount::MountFlags::empty(),
                None,
            )
            .map_err(|e| {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::PermissionDenied {
                    needs_root(format!("cannot mount tracefs at {TRACEFS}: {e}"))
                } else {
                    missing(format!("cannot mount tracefs at {TRACEFS}: {e}"))
                }
            })?;
            // Best effort: without the mark, tracefs stays mounted at the end.
            let _ = fs::write(MOUNTED_MARK, format!("{}\n", std::process::id()));
        }
        // From here on, the exit paths undo what was done.
        let dir = root
            .join("instances")
            .join(format!("{PREFIX}{}", std::process::id()));
        *CLEANUP.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir.clone());
        let instance = Self { dir };
        remove_stale(&root.join("instances"));
        for (event, _) in EVENTS {
            if !root.join("events").join(event).join("format").exists() {
                return Err(missing(format!(
                    "this kernel ({}) has no tracepoint {}: deadpeer watch needs Linux 5.15 or later",
                    kernel_release(),
                    event.replace('/', ":")
                )));
            }
        }
        fs::create_dir(&instance.dir).map_err(|e| {
            let what = format!(
                "cannot create the tracing instance {}: {e}",
                instance.dir.display()
            );
            if e.kind() == io::ErrorKind::PermissionDenied {
                needs_root(what)
            } else {
                CliError::runtime(what)
            }
        })?;
        instance.write("trace_clock", "mono")?;
        instance.write("buffer_size_kb", &BUFFER_KB.to_string())?;
        // Wake the reader at the first event, not when the buffer is half full.
        instance.write("buffer_percent", "0")?;
        for (event, filter) in EVENTS {
            if !filter.is_empty() {
                instance.write(&format!("events/{event}/filter"), filter)?;
            }
            instance.write(&format!("events/{event}/enable"), "1")?;
        }
        Ok(instance)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn write(&self, file: &str, value: &str) -> Result<(), CliError> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| {
            CliError::runtime(format!("cannot write {value:?} to {}: {e}", path.display()))
        })
    }

    /// The decoder of [`EVENTS`]' records, from their `format` files (as this instance lists
    /// them).
    pub(crate) fn decoder(&self) -> Result<Decoder, CliError> {
        let mut formats = Vec::new();
        for (event, _) in EVENTS {
            let path = self.dir.join("events").join(event).join("format");
            let text = fs::read_to_string(&path)
                .map_err(|e| CliError::runtime(format!("cannot read {}: {e}", path.display())))?;
            formats
                .push(Format::parse(&text).ok_or_else(|| {
                    CliError::runtime(format!("cannot parse {}", path.display()))
                })?);
        }
        Decoder::new(&formats[0], &formats[1], &formats[2]).map_err(|e| {
            CliError::runtime(format!(
                "this kernel ({}) lays out its tracepoints differently: {e}",
                kernel_release()
            ))
        })
    }

    /// Each CPU's `trace_pipe_raw`, non-blocking: reading consumes whole ring-buffer pages.
    pub(crate) fn raw_pipes(&self) -> Result<Vec<File>, CliError> {
        let mut cpus: Vec<(u32, PathBuf)> = fs::read_dir(self.dir.join("per_cpu"))
            .map_err(|e| {
                CliError::runtime(format!(
                    "cannot list per_cpu of {}: {e}",
                    self.dir.display()
                ))
            })?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
                Some((n, e.path().join("trace_pipe_raw")))
            })
            .collect();
        cpus.sort();
        cpus.into_iter()
            .map(|(_, path)| {
                OpenOptions::new()
                    .read(true)
                    .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
                    .open(&path)
                    .map_err(|e| CliError::runtime(format!("cannot open {}: {e}", path.display())))
            })
            .collect()
    }

    /// The ring buffer's page size in bytes (`buffer_subbuf_size_kb`, 4 KiB where absent).
    pub(crate) fn page_size(&self) -> usize {
        fs::read_to_string(self.dir.join("buffer_subbuf_size_kb"))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(4096, |kb| kb * 1024)
    }

    /// Events the ring buffer lost: the sum over CPUs of `overrun` (overwritten before they
    /// were read) and `dropped events`, from `per_cpu/cpuN/stats`.
    pub(crate) fn lost(&self) -> u64 {
        let Ok(cpus) = fs::read_dir(self.dir.join("per_cpu")) else {
            return 0;
        };
        cpus.flatten()
            .filter_map(|cpu| fs::read_to_string(cpu.path().join("stats")).ok())
            .map(|stats| lost_in(&stats))
            .sum()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        cleanup();
    }
}

fn lost_in(stats: &str) -> u64 {
    stats
        .lines()
        .filter_map(|l| {
            let v = l
                .strip_prefix("overrun:")
                .or_else(|| l.strip_prefix("dropped events:"))?;
            v.trim().parse::<u64>().ok()
        })
        .sum()
}

/// Removes instances left by watches that no longer run (killed with `SIGKILL`).
fn remove_stale(instances: &Path) {
    for entry in fs::read_dir(instances).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn needs_root(what: String) -> CliError {
    CliError::runtime(format!(
        "{what}; deadpeer watch needs root (CAP_SYS_ADMIN, or CAP_PERFMON with write access to \
         {TRACEFS}): run it with sudo"
    ))
}

fn missing(what: String) -> CliError {
    CliError::runtime(format!(
        "{what}; deadpeer watch reads the kernel's tracepoints through tracefs"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_counts() {
        let stats = "entries: 0\noverrun: 3\ncommit overrun: 0\nbytes: 0\noldest event ts:  0.0\nnow ts:  1.0\ndropped events: 2\nread events: 10\n";
        assert_eq!(lost_in(stats), 5);
        assert_eq!(lost_in(""), 0);
    }
}
