//! End-to-end tests of the `deadpeer` binary.
//!
//! Nothing here writes the host's sysctls: the one test that really writes runs the binary in a
//! throwaway network namespace (the keepalive sysctls are per namespace) and checks that the
//! host's values are unchanged afterwards.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

mod support;

use support::{
    BIN, TempBin, ok, one_line_error, proc_values, run, run_in, skip, stderr, stdout, words,
};

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
    for sub in ["kernel", "check", "plan", "audit"] {
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
    let out = ok(&run(&words(
        "kernel set --idle 300s --interval 60s --probes 30 --dry-run",
    )));
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
    // Malformed targets are bad input, caught before any lookup.
    for target in [
        "[::1]]:80",
        "[::1:80",
        "::1:80",
        "a b:80",
        "999.1.1.1:80",
        "host:0",
    ] {
        let line = one_line_error(&run(&["check", target]), 2);
        assert!(line.contains("is not HOST:PORT"), "{target}: {line}");
    }
    let line = one_line_error(&run(&["audit", "--fail-on", "dead"]), 2);
    assert!(line.contains("\"dead\" is not a verdict"), "{line}");
    let line = one_line_error(&run(&["audit", "--state", "establish"]), 2);
    assert!(line.contains("\"establish\" is not a TCP state"), "{line}");
    one_line_error(&run(&["audit", "--idle-over", "soon"]), 2);
    one_line_error(&run(&["audit", "--port", "70000"]), 2);
}

#[test]
fn every_policy_flag_takes_presets() {
    let server = Server::start();
    let out = ok(&run(&["check", &server.addr(), "--policy", "FAST"]));
    assert!(out.contains("idle=15s,interval=5s,probes=3"), "{out}");
    let out = ok(&run(&["plan", "--policy", "linux_default"]));
    assert!(out.contains("listen 443 so_keepalive=7200:75:9;"), "{out}");
    let out = ok(&run(&["kernel", "set", "--policy", "cloud", "--dry-run"]));
    assert!(
        out.contains("net.ipv4.tcp_keepalive_time=180 net.ipv4.tcp_keepalive_intvl=24 net.ipv4.tcp_keepalive_probes=5"),
        "{out}"
    );
    // A flag overrides the policy's value.
    let out = ok(&run(&words(
        "kernel set --policy fast --probes 9 --dry-run",
    )));
    assert!(out.contains("net.ipv4.tcp_keepalive_probes=9"), "{out}");
    for sub in [&["check", "127.0.0.1:1"][..], &["plan"], &["kernel", "set"]] {
        let mut args = sub.to_vec();
        args.extend(["--policy", "quick"]);
        let line = one_line_error(&run(&args), 2);
        assert!(
            line.contains("expected a preset (fast, cloud, linux-default)"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn check_json_reports_every_value() {
    let server = Server::start();
    let out = ok(&run(&[
        "check",
        &server.addr(),
        "--policy",
        "fast",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["target"], server.addr());
    assert_eq!(v["addr"], server.addr());
    assert_eq!(
        v["policy"],
        "idle=15s,interval=5s,probes=3,user_timeout=auto"
    );
    assert_eq!(v["detection_bound_secs"], 30);
    assert_eq!(v["before"]["enabled"], false);
    assert_eq!(v["after"]["enabled"], true);
    assert_eq!(v["after"]["idle_secs"], 15);
    assert_eq!(v["after"]["interval_secs"], 5);
    assert_eq!(v["after"]["probes"], 3);
    assert_eq!(v["after"]["user_timeout_ms"], v["user_timeout_ms"]);
    let options = v["options"].as_array().unwrap();
    assert!(options.len() >= 4, "{out}");
    assert!(options.iter().all(|o| o["ok"] == true), "{out}");
    assert_eq!(v["tcp_info"]["state"], "ESTABLISHED");
    // A failure to connect is still one line on stderr and no JSON.
    let line = one_line_error(&run(&["check", "127.0.0.1:1", "--json"]), 1);
    assert!(line.contains("cannot connect"), "{line}");
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

#[test]
fn kernel_set_writes_inside_a_throwaway_netns_only() {
    let host_before = proc_values();
    let Some(lab) = deadpeer_testkit::lab_or_skip!() else {
        return;
    };
    let ns = lab.server();
    let o = run_in(
        ns,
        &words("kernel set --idle 300s --interval 60s --probes 30"),
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
    let out = ok(&run_in(ns, &["kernel", "set", "--probes", "5"]));
    assert!(
        out.contains("after:  idle=300s interval=60s probes=5"),
        "{out}"
    );

    let v: serde_json::Value =
        serde_json::from_str(&ok(&run_in(ns, &["kernel", "--json"]))).unwrap();
    assert_eq!(v["idle_secs"], 300);
    assert_eq!(v["interval_secs"], 60);
    assert_eq!(v["probes"], 5);
    assert_eq!(v["detection_bound"], "10m (300 + 60 × 5)");

    drop(lab);
    assert_eq!(
        proc_values(),
        host_before,
        "the host's sysctls must not change"
    );
}

#[test]
fn kernel_set_without_privilege_exits_1() {
    const TEST: &str = "kernel_set_without_privilege_exits_1";
    let host_before = proc_values();
    // Inside a throwaway namespace, so that even a bug could not touch the host.
    let Some(lab) = deadpeer_testkit::lab_or_skip(TEST) else {
        return;
    };
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(TEST, "setpriv (util-linux) is missing");
    }
    let bin = TempBin::new("noperm").expect("copy the binary");
    let o = bin.run_as_nobody(lab.server(), &["kernel", "set", "--idle", "400s"]);
    let line = one_line_error(&o, 1);
    assert!(line.contains("needs root"), "{line}");
    assert!(
        line.contains("sysctl -w net.ipv4.tcp_keepalive_time=400"),
        "{line}"
    );
    let out = stdout(&o);
    assert!(out.contains("before: idle="), "{out}");
    assert!(!out.contains("after:"), "{out}");
    drop(lab);
    assert_eq!(proc_values(), host_before);
}
