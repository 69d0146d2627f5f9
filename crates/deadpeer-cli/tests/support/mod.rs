//! Helpers shared by the `deadpeer` binary's end-to-end tests: running it (also inside a lab
//! namespace, also as `nobody`), and asserting on its exit status and its one-line errors.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

use deadpeer_testkit::Netns;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_deadpeer");

/// Skips a test whose tooling is missing with one line, or fails it under
/// `DEADPEER_REQUIRE_NETNS=1`.
pub(crate) fn skip(test: &str, reason: &str) {
    if std::env::var(deadpeer_testkit::REQUIRE_NETNS_ENV).is_ok_and(|v| v == "1") {
        panic!("{test} cannot run (DEADPEER_REQUIRE_NETNS=1): {reason}");
    }
    // Straight to fd 2 in one write, as the testkit does: the harness captures `eprintln!`.
    let _ = std::io::stderr().write_all(format!("skipped {test}: {reason}\n").as_bytes());
}

/// Command-line words: `words("kernel set --idle 300s")`.
pub(crate) fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs the binary in this process's network namespace.
pub(crate) fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the deadpeer binary")
}

/// Runs `program args…` inside `ns` (`ip netns exec`).
pub(crate) fn exec(ns: &Netns, program: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), program])
        .args(args)
        .output()
        .expect("run ip netns exec")
}

/// Runs the binary inside `ns`.
pub(crate) fn run_in(ns: &Netns, args: &[&str]) -> Output {
    exec(ns, BIN, args)
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success with an empty stderr, and returns stdout.
pub(crate) fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "expected success, got {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    assert_eq!(stderr(o), "", "stderr should be empty on success");
    stdout(o)
}

/// Asserts exit status `code` and exactly one line on stderr, `error: …`; returns that line.
pub(crate) fn one_line_error(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{err}",
        stdout(o)
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
    lines[0].to_owned()
}

/// The host's keepalive defaults, read straight from /proc: (time, intvl, probes).
pub(crate) fn proc_values() -> (u64, u64, u64) {
    let read = |f: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{f}"))
            .unwrap_or_else(|e| panic!("read {f}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        read("tcp_keepalive_time"),
        read("tcp_keepalive_intvl"),
        read("tcp_keepalive_probes"),
    )
}

/// A copy of the binary that an unprivileged user can run, removed on drop.
pub(crate) struct TempBin {
    dir: PathBuf,
    pub(crate) bin: PathBuf,
}

impl TempBin {
    pub(crate) fn new(tag: &str) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dpcli-bin-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let bin = dir.join("deadpeer");
        std::fs::copy(BIN, &bin)?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir, bin })
    }

    /// Runs the copy inside `ns` as `nobody` (uid and gid 65534, no groups), through `setpriv`.
    pub(crate) fn run_as_nobody(&self, ns: &Netns, args: &[&str]) -> Output {
        let mut full = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            self.bin.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        exec(ns, "setpriv", &full)
    }
}

impl Drop for TempBin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Python 3 process in a namespace, spoken to line by line; killed on drop (also on panic).
pub(crate) struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub(crate) pid: u32,
}

impl Python {
    /// Runs `script`, which prints its pid first; `None` (the test `test` skipped) without
    /// python3.
    pub(crate) fn start(test: &str, ns: &Netns, script: &str) -> Option<Self> {
        let spawned = Command::new("ip")
            .args(["netns", "exec", ns.name(), "python3", "-u", "-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                skip(test, &format!("cannot run python3 ({e}): install python3"));
                return None;
            }
        };
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut py = Self {
            child,
            stdin,
            stdout,
            pid: 0,
        };
        py.pid = py.line().parse().expect("the script prints its pid");
        Some(py)
    }

    /// The next line the script prints.
    pub(crate) fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        assert!(!s.is_empty(), "python3 exited early");
        s.trim_end().to_owned()
    }

    /// Writes a line to the script.
    pub(crate) fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    /// Writes a line and returns the script's answer.
    pub(crate) fn ask(&mut self, line: &str) -> String {
        self.say(line);
        self.line()
    }

    /// `/proc/PID/comm`.
    pub(crate) fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
            .unwrap()
            .trim_end()
            .to_owned()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
