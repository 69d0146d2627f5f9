//! `plan` and `check` warn about the known keepalive traps: each warning names the value, why it
//! bites, the source and the fix; a warning exits 0, or 3 with `--strict`; `--json` carries them.

use std::net::TcpListener;

mod support;

use serde_json::Value;
use support::{ok, one_line_error, run, stdout};

/// reqwest's defaults: 15 s idle, 15 s interval, 3 probes, 30 s user timeout.
const REQWEST: &str = "idle=15s,interval=15s,probes=3,user_timeout=30s";

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ids(v: &Value) -> Vec<&str> {
    v["lints"]
        .as_array()
        .expect("a lints array")
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect()
}

#[test]
fn plan_warns_about_reqwest_defaults_and_exits_0() {
    let out = ok(&run(&["plan", "--policy", REQWEST]));
    assert!(
        out.contains(
            "detection bound: 30s (15 + 15 × 1: the user timeout ends it after 1 probe, not 3)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "warning [user-timeout-cancels-probes]: user_timeout=30s with idle=15s,interval=15s,probes=3\n"
        ),
        "{out}"
    );
    assert!(out.contains("after 1 of 3 probes"), "{out}");
    assert!(out.contains("  source: grpc-go#6250"), "{out}");
    assert!(
        out.contains(
            "  fix:    set user_timeout=auto (59s, just under the probe bound) or at least 1m: \
             idle=15s,interval=15s,probes=3,user_timeout=auto\n"
        ),
        "{out}"
    );
    // The fix it names is clean.
    let fixed = ok(&run(&[
        "plan",
        "--policy",
        "idle=15s,interval=15s,probes=3,user_timeout=auto",
        "--strict",
    ]));
    assert!(!fixed.contains("warning"), "{fixed}");
}

#[test]
fn plan_strict_exits_3_after_printing() {
    let o = run(&["plan", "--policy", REQWEST, "--strict"]);
    let line = one_line_error(&o, 3);
    assert_eq!(
        line,
        "error: 1 warning with --strict: user-timeout-cancels-probes"
    );
    assert!(stdout(&o).contains("warning [user-timeout-cancels-probes]"));
    // JSON too: printed, then exit 3.
    let o = run(&["plan", "--policy", REQWEST, "--strict", "--json"]);
    one_line_error(&o, 3);
    assert_eq!(ids(&json(&stdout(&o))), ["user-timeout-cancels-probes"]);
}

#[test]
fn plan_json_carries_every_lint() {
    let v = json(&ok(&run(&["plan", "--policy", REQWEST, "--json"])));
    let l = &v["lints"][0];
    assert_eq!(l["id"], "user-timeout-cancels-probes");
    assert_eq!(
        l["value"],
        "user_timeout=30s with idle=15s,interval=15s,probes=3"
    );
    for field in ["why", "source", "fix"] {
        assert!(l[field].as_str().is_some_and(|s| s.len() > 20), "{l:#}");
    }

    assert!(
        ids(&json(&ok(&run(&[
            "plan",
            "--detect-within",
            "30s",
            "--json"
        ]))))
        .is_empty()
    );
    assert_eq!(
        ids(&json(&ok(&run(&[
            "plan",
            "--policy",
            "linux-default",
            "--json"
        ])))),
        ["stall-unbounded"]
    );
    assert_eq!(
        ids(&json(&ok(&run(&[
            "plan",
            "--policy",
            "idle=1s,interval=1s,probes=3,user_timeout=20s",
            "--json"
        ])))),
        ["user-timeout-extends-probes"]
    );
    assert_eq!(
        ids(&json(&ok(&run(&[
            "plan",
            "--policy",
            "fast",
            "--without-keepalive",
            "--http2-ping-timeout",
            "60s",
            "--json"
        ])))),
        [
            "user-timeout-without-keepalive",
            "ping-timeout-over-user-timeout"
        ]
    );
    // --without-keepalive lints a policy given, not a goal.
    one_line_error(
        &run(&["plan", "--detect-within", "30s", "--without-keepalive"]),
        2,
    );
}

#[test]
fn check_lints_the_values_read_back() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().take(3) {
            held.push(s.unwrap());
        }
        held
    });
    let v = json(&ok(&run(&["check", &addr, "--policy", REQWEST, "--json"])));
    assert_eq!(v["ok"], true, "the values are set as asked: {v:#}");
    assert_eq!(v["after"]["user_timeout_ms"], 30000);
    assert_eq!(ids(&v), ["user-timeout-cancels-probes"]);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(v["kernel"], kernel.trim());

    let text = ok(&run(&[
        "check",
        &addr,
        "--policy",
        "fast",
        "--http2-ping-timeout",
        "1m",
    ]));
    assert!(
        text.contains(
            "warning [ping-timeout-over-user-timeout]: HTTP/2 ping timeout 1m with user_timeout=29s"
        ),
        "{text}"
    );
    assert!(
        text.ends_with("ok: every value read back matches the policy\n"),
        "{text}"
    );

    let o = run(&["check", &addr, "--policy", REQWEST, "--strict"]);
    assert_eq!(
        one_line_error(&o, 3),
        "error: 1 warning with --strict: user-timeout-cancels-probes"
    );
    drop(held);
}
