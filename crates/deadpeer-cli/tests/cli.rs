//! End-to-end tests of the `deadpeer` binary.
//!
//! Nothing here writes the host's sysctls: the one test that really writes runs the binary in a
//! throwaway network namespace (the keepalive sysctls are per namespace) and checks that the
//! host's values are unchanged afterwards.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_deadpeer");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the deadpeer binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success with an empty stderr, and returns stdout.
fn ok(o: &Output) -> String {
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
fn one_line_error(o: &Output, code: i32) -> String {
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
fn proc_values() -> (u64, u64, u64) {
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

/// `2h 11m 15s (7200 + 75 × 9)` for the given values.
fn bound_string((t, i, p): (u64, u64, u64)) -> String {
    format!(
        "{} ({t} + {i} × {p})",
        humantime::format_duration(Duration::from_secs(t + i * p))
    )
}

#[test]
fn help_has_examples() {
    let out = ok(&run(&["--help"]));
    assert!(out.contains("Examples:"), "{out}");
    for sub in ["kernel", "check", "plan"] {
        assert!(out.contains(sub), "{out}");
        let sub_help = ok(&run(&[sub, "--help"]));
        assert!(sub_help.contains("Examples:"), "{sub}: {sub_help}");
    }
    assert!(ok(&run(&["kernel", "set", "--help"])).contains("Examples:"));
}

#[test]
fn kernel_shows_paths_names_and_the_bound() {
    let values = proc_values();
    let out = ok(&run(&["kernel"]));
    for file in [
        "tcp_keepalive_time",
        "tcp_keepalive_intvl",
        "tcp_keepalive_probes",
        "tcp_retries2",
    ] {
        assert!(out.contains(&format!("/proc/sys/net/ipv4/{file}")), "{out}");
        assert!(out.contains(&format!("net.ipv4.{file}")), "{out}");
    }
    let bound = bound_string(values);
    assert!(out.contains(&bound), "expected {bound:?} in:\n{out}");
    // The format itself: "<human> (<t> + <i> × <p>)".
    let (t, i, p) = values;
    assert!(out.contains(&format!("({t} + {i} × {p})")), "{out}");
    assert!(out.contains("tcp_retries2 = "), "{out}");
}

#[test]
fn kernel_json_parses() {
    let (t, i, p) = proc_values();
    let out = ok(&run(&["kernel", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["idle_secs"], t);
    assert_eq!(v["interval_secs"], i);
    assert_eq!(v["probes"], p);
    assert_eq!(v["detection_bound_secs"], t + i * p);
    assert_eq!(v["detection_bound"], bound_string((t, i, p)));
    assert!(v["retransmit_bound_secs"].as_f64().unwrap() > 0.0);
    let sysctls = v["sysctls"].as_array().unwrap();
    assert_eq!(sysctls.len(), 4);
    assert_eq!(sysctls[0]["name"], "net.ipv4.tcp_keepalive_time");
    assert_eq!(sysctls[0]["path"], "/proc/sys/net/ipv4/tcp_keepalive_time");
    assert_eq!(sysctls[0]["value"], t);
}

#[test]
fn kernel_set_dry_run_prints_sysctl_lines_and_writes_nothing() {
    let before = proc_values();
    let out = ok(&run(&[
        "kernel",
        "set",
        "--idle",
        "300s",
        "--interval",
        "60s",
        "--probes",
        "30",
        "--dry-run",
    ]));
    assert!(
        out.contains(
            "sysctl -w net.ipv4.tcp_keepalive_time=300 net.ipv4.tcp_keepalive_intvl=60 \
             net.ipv4.tcp_keepalive_probes=30"
        ),
        "{out}"
    );
    assert!(out.contains("/etc/sysctl.d/"), "{out}");
    assert!(out.contains("net.ipv4.tcp_keepalive_time = 300"), "{out}");
    assert!(out.contains("net.ipv4.tcp_keepalive_probes = 30"), "{out}");
    assert!(out.contains(&bound_string(before)), "{out}");
    assert!(out.contains("35m (300 + 60 × 30)"), "{out}");
    assert!(out.contains("nothing written"), "{out}");

    // A flag left out keeps the current value.
    let (_, i, p) = before;
    let out = ok(&run(&["kernel", "set", "--idle", "5m", "--dry-run"]));
    let line = format!(
        "sysctl -w net.ipv4.tcp_keepalive_time=300 net.ipv4.tcp_keepalive_intvl={i} \
         net.ipv4.tcp_keepalive_probes={p}"
    );
    assert!(out.contains(&line), "expected {line:?} in:\n{out}");
    assert_eq!(proc_values(), before, "a dry run must not write");
}

#[test]
fn kernel_set_rejects_bad_values_with_exit_2() {
    let before = proc_values();
    let line = one_line_error(&run(&["kernel", "set", "--probes", "0"]), 2);
    assert_eq!(
        line,
        "error: probes = 0 is out of range: the kernel accepts 1..=127 (TCP_KEEPCNT); use probes=1"
    );
    let line = one_line_error(&run(&["kernel", "set", "--idle", "500ms"]), 2);
    assert!(
        line.contains("idle = 500ms is not a whole number of seconds"),
        "{line}"
    );
    let line = one_line_error(&run(&["kernel", "set", "--interval", "40000s"]), 2);
    assert!(line.contains("out of range"), "{line}");
    let line = one_line_error(&run(&["kernel", "set", "--idle", "abc"]), 2);
    assert!(line.contains("abc"), "{line}");
    one_line_error(&run(&["kernel", "set"]), 2);
    assert_eq!(proc_values(), before);
}

#[test]
fn usage_errors_are_one_line_with_exit_2() {
    one_line_error(&run(&["kernal"]), 2);
    one_line_error(&run(&["check"]), 2);
    one_line_error(&run(&["plan"]), 2);
    one_line_error(&run(&["check", "localhost"]), 2);
    one_line_error(&run(&["check", "127.0.0.1:1", "--timeout", "0s"]), 2);
}

/// A local server that accepts connections and holds them until dropped.
struct Server {
    port: u16,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
        });
        Self { port }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

#[test]
fn check_shows_off_then_on_and_every_value() {
    let server = Server::start();
    let out = ok(&run(&["check", &server.addr()]));
    let line = |prefix: &str| {
        out.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{out}"))
            .to_owned()
    };
    assert!(line("SO_KEEPALIVE before").contains("OFF"), "{out}");
    assert!(line("SO_KEEPALIVE after").contains("ON"), "{out}");
    // The default policy is CLOUD: 180 s, 24 s, 5 probes, bound 5 min.
    assert!(
        out.contains("idle=180s,interval=24s,probes=5,user_timeout=auto"),
        "{out}"
    );
    for option in [
        "TCP_KEEPIDLE",
        "TCP_KEEPINTVL",
        "TCP_KEEPCNT",
        "TCP_USER_TIMEOUT",
    ] {
        let row = line(&format!("  {option}"));
        assert!(row.trim_end().ends_with("ok"), "{row}");
    }
    assert!(line("  TCP_KEEPIDLE").contains("180s"), "{out}");
    assert!(out.contains("5m (180 + 24 × 5)"), "{out}");
    assert!(line("TCP_INFO").contains("ESTABLISHED"), "{out}");
    assert!(line("TCP_INFO").contains("rtt"), "{out}");

    for policy in [
        "fast",
        "60:10:6",
        "idle=20s,interval=2s,probes=4,user_timeout=7s",
    ] {
        let out = ok(&run(&["check", &server.addr(), "--policy", policy]));
        assert!(out.contains("ok: every value read back matches"), "{out}");
    }
    let out = ok(&run(&["check", &server.addr(), "--policy", "fast"]));
    assert!(out.contains("30s (15 + 5 × 3)"), "{out}");
}

#[test]
fn check_closed_port_exits_1() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let line = one_line_error(&run(&["check", &format!("127.0.0.1:{port}")]), 1);
    assert!(line.contains("cannot connect"), "{line}");
    assert!(line.contains("refused"), "{line}");
}

#[test]
fn check_unresolvable_host_exits_1() {
    let line = one_line_error(&run(&["check", "no.such.host.invalid:80"]), 1);
    assert!(
        line.contains("cannot resolve no.such.host.invalid"),
        "{line}"
    );
}

#[test]
fn check_bad_policy_exits_2() {
    // The policy is parsed before anything connects, so the port does not matter.
    let line = one_line_error(&run(&["check", "127.0.0.1:1", "--policy", "idle=abc"]), 2);
    assert!(line.contains("idle = \"abc\" is not a duration"), "{line}");
    let line = one_line_error(&run(&["check", "127.0.0.1:1", "--policy", "60:10"]), 2);
    assert!(line.contains("\"60:10\" has 2 field(s)"), "{line}");
    let line = one_line_error(
        &run(&[
            "check",
            "127.0.0.1:1",
            "--policy",
            "idle=1500ms,interval=1s,probes=3",
        ]),
        2,
    );
    assert!(line.contains("idle=2s"), "{line}");
}

#[test]
fn plan_prints_all_four_forms() {
    let out = ok(&run(&["plan", "--detect-within", "30s"]));
    for want in [
        "idle=15s,interval=5s,probes=3,user_timeout=auto",
        "listen 443 so_keepalive=15:5:3;",
        "clitcpka-idle 15s",
        "clitcpka-intvl 5s",
        "clitcpka-cnt 3",
        "srvtcpka-idle 15s",
        "srvtcpka-intvl 5s",
        "srvtcpka-cnt 3",
        "sysctl -w net.ipv4.tcp_keepalive_time=15 net.ipv4.tcp_keepalive_intvl=5 net.ipv4.tcp_keepalive_probes=3",
        "net.ipv4.tcp_keepalive_probes = 3",
        "detection bound: 30s (15 + 5 × 3)",
        "user timeout:",
    ] {
        assert!(out.contains(want), "expected {want:?} in:\n{out}");
    }
}

#[test]
fn plan_for_middleboxes() {
    let out = ok(&run(&["plan", "--idle-timeout", "350s"]));
    assert!(out.contains("idle=262s,interval=35s,probes=5"), "{out}");
    // Both goals: the idle time stays under 75% of 4 min (180 s) and the bound within 2 min.
    let out = ok(&run(&[
        "plan",
        "--detect-within",
        "2m",
        "--idle-timeout",
        "4m",
    ]));
    assert!(out.contains("idle=60s,interval=20s,probes=3"), "{out}");
    let out = ok(&run(&[
        "plan",
        "--detect-within",
        "1h",
        "--idle-timeout",
        "350s",
    ]));
    assert!(out.contains("idle=262s,interval=35s,probes=5"), "{out}");
    let line = one_line_error(
        &run(&["plan", "--detect-within", "5s", "--idle-timeout", "2s"]),
        2,
    );
    assert!(line.contains("cannot both"), "{line}");
}

#[test]
fn plan_json_parses() {
    let out = ok(&run(&["plan", "--detect-within", "30s", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(
        v["policy"],
        "idle=15s,interval=5s,probes=3,user_timeout=auto"
    );
    assert_eq!(v["detection_bound_secs"], 30);
    assert_eq!(v["nginx"], "listen 443 so_keepalive=15:5:3;");
}

#[test]
fn plan_impossible_goal_exits_2() {
    let line = one_line_error(&run(&["plan", "--detect-within", "1s"]), 2);
    assert!(line.contains("2s"), "{line}");
    one_line_error(&run(&["plan", "--idle-timeout", "1s"]), 2);
}

#[test]
fn closed_stdout_does_not_panic() {
    if !std::path::Path::new("/bin/bash").exists() {
        println!("skipped closed_stdout_does_not_panic: /bin/bash missing");
        return;
    }
    let o = Command::new("/bin/bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            "\"$0\" kernel | true; \"$0\" plan --detect-within 30s | head -c1 >/dev/null",
        ])
        .arg(BIN)
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert_eq!(stderr(&o), "");
}

// ---- the real write path, in a throwaway network namespace ----

/// Whether a missing privilege must fail the test instead of skipping it.
fn require_netns() -> bool {
    std::env::var("DEADPEER_REQUIRE_NETNS").is_ok_and(|v| v == "1")
}

/// Skips (one line) or, under `DEADPEER_REQUIRE_NETNS=1`, fails.
fn skip(test: &str, reason: &str) {
    if require_netns() {
        panic!("{test} needs a network namespace (DEADPEER_REQUIRE_NETNS=1): {reason}");
    }
    println!("skipped {test}: {reason}");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A network namespace deleted on drop, even when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn create(tag: &str) -> Result<Self, String> {
        if !is_root() {
            return Err("not root".into());
        }
        let name = format!("dpcli-{}-{tag}", std::process::id());
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(Self { name })
    }

    /// Runs `program args…` inside the namespace.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

#[test]
fn kernel_set_writes_inside_a_throwaway_netns_only() {
    let host_before = proc_values();
    let ns = match Netns::create("set") {
        Ok(ns) => ns,
        Err(reason) => return skip("kernel_set_writes_inside_a_throwaway_netns_only", &reason),
    };
    let o = ns.exec(
        BIN,
        &[
            "kernel",
            "set",
            "--idle",
            "300s",
            "--interval",
            "60s",
            "--probes",
            "30",
        ],
    );
    let out = ok(&o);
    assert!(out.contains("before: idle="), "{out}");
    assert!(
        out.contains(
            "after:  idle=300s interval=60s probes=30, dead peer found after 35m (300 + 60 × 30)"
        ),
        "{out}"
    );

    // A flag left out keeps the value just written.
    let out = ok(&ns.exec(BIN, &["kernel", "set", "--probes", "5"]));
    assert!(
        out.contains("after:  idle=300s interval=60s probes=5"),
        "{out}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&ok(&ns.exec(BIN, &["kernel", "--json"]))).unwrap();
    assert_eq!(v["idle_secs"], 300);
    assert_eq!(v["interval_secs"], 60);
    assert_eq!(v["probes"], 5);
    assert_eq!(v["detection_bound"], "10m (300 + 60 × 5)");

    drop(ns);
    assert_eq!(
        proc_values(),
        host_before,
        "the host's sysctls must not change"
    );
}

/// A copy of the binary that an unprivileged user can run, removed on drop.
struct TempBin {
    dir: PathBuf,
    bin: PathBuf,
}

impl TempBin {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("dpcli-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let bin = dir.join("deadpeer");
        std::fs::copy(BIN, &bin)?;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir, bin })
    }
}

impl Drop for TempBin {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn kernel_set_without_privilege_exits_1() {
    const TEST: &str = "kernel_set_without_privilege_exits_1";
    let host_before = proc_values();
    // Inside a throwaway namespace, so that even a bug could not touch the host.
    let ns = match Netns::create("noperm") {
        Ok(ns) => ns,
        Err(reason) => return skip(TEST, &reason),
    };
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(TEST, "setpriv (util-linux) is missing");
    }
    let bin = TempBin::new().expect("copy the binary");
    let bin_path = bin.bin.to_str().unwrap().to_owned();
    let o = ns.exec(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &bin_path,
            "kernel",
            "set",
            "--idle",
            "400s",
        ],
    );
    let line = one_line_error(&o, 1);
    assert!(line.contains("needs root"), "{line}");
    assert!(
        line.contains("sysctl -w net.ipv4.tcp_keepalive_time=400"),
        "{line}"
    );
    let out = stdout(&o);
    assert!(out.contains("before: idle="), "{out}");
    assert!(!out.contains("after:"), "{out}");
    drop(ns);
    assert_eq!(proc_values(), host_before);
}
