//! `deadpeer demo` end to end: three real deaths in a lab, a clean exit, no namespace left.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_deadpeer");

fn require_netns() -> bool {
    std::env::var("DEADPEER_REQUIRE_NETNS").is_ok_and(|v| v == "1")
}

fn can_build_labs() -> bool {
    // CapEff bits 12 (CAP_NET_ADMIN) and 21 (CAP_SYS_ADMIN).
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("CapEff:"))
                .map(str::to_owned)
        })
        .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .unwrap_or(0);
    caps & (1 << 12) != 0 && caps & (1 << 21) != 0
}

fn skip(test: &str, reason: &str) {
    assert!(
        !require_netns(),
        "{test} cannot run (DEADPEER_REQUIRE_NETNS=1): {reason}"
    );
    eprintln!("skipped {test}: {reason}");
}

#[test]
fn demo_catches_three_zombies_and_cleans_up() {
    const TEST: &str = "demo_catches_three_zombies_and_cleans_up";
    if !can_build_labs() {
        return skip(TEST, "needs CAP_NET_ADMIN and CAP_SYS_ADMIN");
    }
    let start = Instant::now();
    let child = Command::new(BIN)
        .args(["demo", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(took < Duration::from_secs(30), "the demo took {took:?}");

    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let deaths: Vec<(&str, &str, f64)> = events
        .iter()
        .filter(|e| e["event"] == "dead")
        .map(|e| {
            (
                e["scenario"].as_str().unwrap(),
                e["cause"].as_str().unwrap(),
                e["t"].as_f64().unwrap(),
            )
        })
        .collect();
    // Policy 2s/1s/3: bound 5 s, plus the kernel's overshoot.
    assert_eq!(deaths.len(), 3, "{stdout}");
    assert_eq!(deaths[0].0, "idle_client_vanished");
    assert_eq!(deaths[0].1, "keepalive_timeout");
    assert!((4.0..=5.3).contains(&deaths[0].2), "{deaths:?}");
    assert_eq!(deaths[1].1, "retransmit_timeout");
    assert!(deaths[1].2 <= 5.3, "{deaths:?}");
    assert_eq!(deaths[2].1, "reset");
    assert!(
        deaths[2].2 < 5.0,
        "the reset comes at the first probe: {deaths:?}"
    );
    assert!(
        events.iter().filter(|e| e["event"] == "probe").count() >= 3,
        "{stdout}"
    );
    assert_eq!(
        events.iter().filter(|e| e.get("summary").is_some()).count(),
        3
    );

    let prefix = format!("dpk-{pid}-");
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "the demo left namespaces behind: {left:?}");
}

#[test]
fn demo_without_privilege_says_what_is_needed() {
    const TEST: &str = "demo_without_privilege_says_what_is_needed";
    if Command::new("setpriv").arg("--version").output().is_err() {
        return skip(TEST, "setpriv (util-linux) is missing");
    }
    if !can_build_labs() {
        return skip(TEST, "needs root to drop to an unprivileged user");
    }
    // A copy the unprivileged user can execute, wherever the target directory lives.
    let dir = std::env::temp_dir().join(format!("deadpeer-demo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("deadpeer");
    std::fs::copy(BIN, &bin).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&bin)
        .arg("demo")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN"),
        "{stderr}"
    );
}
