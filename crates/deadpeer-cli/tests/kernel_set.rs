//! `deadpeer kernel set` end to end: `--persist` against temporary paths (never the host's
//! /etc), `--retries2`, and the repair of out-of-range values. Every sysctl write happens inside
//! a lab namespace, and the host's values are checked unchanged afterwards.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use deadpeer_testkit::{Lab, Netns, Tool, lab_or_skip};
use support::{exec, ok, one_line_error, proc_values, run_in, stdout, words};

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dpcli-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One sysctl inside `ns`, read from its /proc.
fn ns_value(ns: &Netns, file: &str) -> String {
    let o = exec(ns, "cat", &[&format!("/proc/sys/net/ipv4/{file}")]);
    stdout(&o).trim().to_owned()
}

/// Writes a raw value inside `ns`, the way `sysctl -w` would, bypassing deadpeer's checks.
fn ns_write(ns: &Netns, file: &str, value: &str) {
    let o = exec(
        ns,
        "sh",
        &["-c", &format!("echo {value} > /proc/sys/net/ipv4/{file}")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn kernel_set_persist_writes_a_sysctl_d_file_atomically() {
    let host_before = proc_values();
    // `sysctl -p` reads the file back.
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::SYSCTL)) else {
        return;
    };
    let ns = lab.server();
    let dir = TempDir::new("persist");
    let conf = dir.file("60-deadpeer-keepalive.conf");

    // --dry-run with --persist writes nothing, neither the file nor the kernel.
    let out = ok(&run_in(
        ns,
        &[
            "kernel",
            "set",
            "--idle",
            "300s",
            "--persist",
            &conf,
            "--dry-run",
        ],
    ));
    assert!(
        out.contains(&format!("--persist would write {conf}:")),
        "{out}"
    );
    assert!(dir.names().is_empty(), "{:?}", dir.names());
    assert_eq!(ns_value(ns, "tcp_keepalive_time"), "7200");

    let out = ok(&run_in(
        ns,
        &[
            "kernel",
            "set",
            "--idle",
            "300s",
            "--interval",
            "60s",
            "--probes",
            "30",
            "--retries2",
            "8",
            "--persist",
            &conf,
        ],
    ));
    assert!(out.contains(&format!("persisted to {conf}")), "{out}");
    let text = fs::read_to_string(&conf).unwrap();
    assert!(text.starts_with("# Written by deadpeer"), "{text}");
    let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        settings,
        [
            "net.ipv4.tcp_keepalive_time = 300",
            "net.ipv4.tcp_keepalive_intvl = 60",
            "net.ipv4.tcp_keepalive_probes = 30",
            "net.ipv4.tcp_retries2 = 8",
        ]
    );
    let mode = fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(
        dir.names(),
        ["60-deadpeer-keepalive.conf"],
        "no temporary file left"
    );
    // Applied as well as persisted.
    assert_eq!(ns_value(ns, "tcp_keepalive_time"), "300");
    assert_eq!(ns_value(ns, "tcp_retries2"), "8");

    // The file is one sysctl reads: applying it in a fresh namespace gives the same values.
    let fresh = lab.client();
    assert_eq!(ns_value(fresh, "tcp_keepalive_time"), "7200");
    let o = exec(fresh, "sysctl", &["-p", &conf]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (file, want) in [
        ("tcp_keepalive_time", "300"),
        ("tcp_keepalive_intvl", "60"),
        ("tcp_keepalive_probes", "30"),
        ("tcp_retries2", "8"),
    ] {
        assert_eq!(ns_value(fresh, file), want, "{file}");
    }

    // A file deadpeer wrote is replaced; values not given are kept, retries2 included.
    ok(&run_in(
        ns,
        &["kernel", "set", "--probes", "5", "--persist", &conf],
    ));
    let text = fs::read_to_string(&conf).unwrap();
    assert!(
        text.contains("net.ipv4.tcp_keepalive_probes = 5\n"),
        "{text}"
    );
    assert!(
        text.contains("net.ipv4.tcp_keepalive_time = 300\n"),
        "{text}"
    );
    assert!(text.contains("net.ipv4.tcp_retries2 = 8\n"), "{text}");

    // Bad paths are bad input, refused before anything is written.
    let foreign = dir.file("99-admin.conf");
    fs::write(&foreign, "net.core.somaxconn = 1024\n").unwrap();
    for (path, says) in [
        (foreign.as_str(), "not written by deadpeer"),
        (&dir.file("keepalive.txt"), "*.conf"),
        ("/nonexistent-dir/60-x.conf", "does not exist"),
    ] {
        let line = one_line_error(
            &run_in(ns, &["kernel", "set", "--probes", "7", "--persist", path]),
            2,
        );
        assert!(line.contains(says), "{path}: {line}");
    }
    assert_eq!(
        fs::read_to_string(&foreign).unwrap(),
        "net.core.somaxconn = 1024\n"
    );
    assert_eq!(ns_value(ns, "tcp_keepalive_probes"), "5", "nothing written");
    assert!(!Path::new(&dir.file("keepalive.txt")).exists());

    drop(lab);
    assert_eq!(
        proc_values(),
        host_before,
        "the host's sysctls must not change"
    );
}

#[test]
fn kernel_set_repairs_out_of_range_values() {
    let host_before = proc_values();
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let ns = lab.server();
    // The kernel itself accepts these; no socket could set them.
    ns_write(ns, "tcp_keepalive_time", "0");
    ns_write(ns, "tcp_keepalive_probes", "200");

    let out = ok(&run_in(ns, &["kernel"]));
    assert!(out.contains("OUT OF RANGE (1..=32767)"), "{out}");
    assert!(out.contains("OUT OF RANGE (1..=127)"), "{out}");
    assert!(
        out.contains("warning: net.ipv4.tcp_keepalive_time = 0 is out of range"),
        "{out}"
    );
    assert!(out.contains("--idle"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&ok(&run_in(ns, &["kernel", "--json"]))).unwrap();
    assert_eq!(v["idle_secs"], 0);
    assert_eq!(v["probes"], 200);
    assert_eq!(v["detection_bound"], serde_json::Value::Null);
    assert_eq!(v["problems"].as_array().unwrap().len(), 2);
    assert_eq!(v["sysctls"][0]["in_range"], false);

    // Keeping an out-of-range value is refused, naming the flag that repairs it.
    let line = one_line_error(&run_in(ns, &["kernel", "set", "--interval", "10s"]), 2);
    assert!(
        line.contains("net.ipv4.tcp_keepalive_time = 0 is out of range"),
        "{line}"
    );
    assert!(line.contains("give --idle"), "{line}");
    assert_eq!(ns_value(ns, "tcp_keepalive_intvl"), "75", "nothing written");

    // A full set repairs everything.
    let out = ok(&run_in(
        ns,
        &words("kernel set --idle 300s --interval 60s --probes 30"),
    ));
    assert!(
        out.contains("before: idle=0s interval=75s probes=200, out of range:"),
        "{out}"
    );
    assert!(
        out.contains("after:  idle=300s interval=60s probes=30, dead peer found after 35m"),
        "{out}"
    );

    // So does a preset.
    ns_write(ns, "tcp_keepalive_intvl", "-5");
    let out = ok(&run_in(ns, &["kernel", "set", "--policy", "linux-default"]));
    assert!(
        out.contains("after:  idle=7200s interval=75s probes=9"),
        "{out}"
    );
    assert_eq!(ns_value(ns, "tcp_keepalive_intvl"), "75");

    // tcp_retries2 can be set, within the kernel's 0..=255.
    let out = ok(&run_in(ns, &["kernel", "set", "--retries2", "8"]));
    assert!(out.contains("tcp_retries2=8"), "{out}");
    assert_eq!(ns_value(ns, "tcp_retries2"), "8");
    let line = one_line_error(&run_in(ns, &["kernel", "set", "--retries2", "256"]), 2);
    assert!(line.contains("256"), "{line}");

    drop(lab);
    assert_eq!(
        proc_values(),
        host_before,
        "the host's sysctls must not change"
    );
}
