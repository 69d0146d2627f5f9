//! `deadpeer audit` end to end, in a lab: plain sockets in every state the audit judges, audited
//! with `deadpeer audit --json` in the client namespace, each verdict asserted, and the
//! keepalive, timer, probe and idle fields cross-checked against `ss -tnoi` run in the same
//! namespace right after.
//!
//! The scene, all made by this test process with socket2:
//! - `protected`: SO_KEEPALIVE 30 s / 5 s / 3, to a healthy server;
//! - `unprotected`: no keepalive, to the same server;
//! - `probing`: SO_KEEPALIVE 1 s / 1 s / 30 to a server port the server namespace then drops
//!   (nftables), so its probes go unanswered;
//! - `retransmitting`: no keepalive, to the dropped port, with 1000 bytes written after the drop;
//! - `stalled`: to a server that accepts with a 4 KiB receive buffer and never reads, written to
//!   until the window is zero;
//! - an IPv6 pair on `[::1]` inside the client namespace (both ends unprotected), and its
//!   listener.

mod support;

mod scene;

use std::time::{Duration, Instant};

use deadpeer_testkit::{Lab, Tool, lab_or_skip};
use serde_json::Value;

use scene::{Role, Scene, ss_snapshot};
use support::{TempBin, exec, ok, one_line_error, run_in, stdout};

/// Runs `deadpeer audit --json ARGS` in the client namespace and returns the parsed output.
fn audit(scene: &Scene, args: &[&str]) -> Value {
    let mut full = vec!["audit", "--json"];
    full.extend_from_slice(args);
    let out = ok(&run_in(scene.lab.client(), &full));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn rows(v: &Value) -> &Vec<Value> {
    v["connections"].as_array().expect("a connections array")
}

/// The row whose local address is `role`'s socket.
fn row<'a>(v: &'a Value, scene: &Scene, role: Role) -> &'a Value {
    let local = scene.local(role).to_string();
    rows(v)
        .iter()
        .find(|r| r["local_addr"] == local.as_str())
        .unwrap_or_else(|| panic!("no row for {role:?} ({local}) in {v:#}"))
}

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("{v} is not a number"))
}

#[test]
fn audit_verdicts_match_the_kernel_and_ss() {
    // The scene drops packets with nftables and reads `ss`.
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT).requires(Tool::SS)) else {
        return;
    };
    let scene = Scene::build(lab);

    // Wait until the kernel has done what each role needs: a keepalive probe sent (at idle,
    // 1 s), a retransmission timeout (≥ 200 ms), a zero window. The deadline is a guard against
    // hanging, not a measurement.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = audit(&scene, &[]);
        let ready = [
            (Role::Probing, "probing"),
            (Role::Retransmitting, "retransmitting"),
            (Role::Stalled, "stalled"),
        ]
        .iter()
        .all(|(role, verdict)| row(&v, &scene, *role)["verdict"] == *verdict);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "verdicts never settled: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Data to the IPv6 client just before the snapshot: its idle time restarts.
    scene.poke_ipv6_client();

    let start = Instant::now();
    let v = audit(&scene, &[]);
    let ss = ss_snapshot(scene.lab.client());
    let window = start.elapsed().as_millis() as i64;
    let text = ok(&run_in(scene.lab.client(), &["audit"]));
    // Shown with --nocapture: what the kernel reported, for docs/audit.md.
    println!("ss -tnoi:\n{}\ndeadpeer audit:\n{text}", ss.raw);
    for r in rows(&v) {
        println!("{r}");
    }

    // Each verdict, and the facts behind it.
    let protected = row(&v, &scene, Role::Protected);
    assert_eq!(protected["verdict"], "protected");
    assert_eq!(protected["keepalive"], true);
    assert_eq!(protected["timer"], "keepalive");
    assert_eq!(protected["probes"], 0);
    // The keepalive timer was armed at the handshake, as was the idle clock: the two add up to
    // the 30 s idle time (one jiffy each of rounding).
    let sum = ms(&protected["timer_expires_ms"]) + ms(&protected["idle_ms"]);
    assert!((29_990..=30_010).contains(&sum), "{protected:#}");

    let unprotected = row(&v, &scene, Role::Unprotected);
    assert_eq!(unprotected["verdict"], "unprotected");
    assert_eq!(unprotected["keepalive"], false);
    assert_eq!(unprotected["timer"], Value::Null);

    let probing = row(&v, &scene, Role::Probing);
    assert_eq!(probing["verdict"], "probing");
    assert_eq!(probing["keepalive"], true);
    assert!(ms(&probing["probes"]) >= 1, "{probing:#}");
    // A probe goes out only after the idle time (1 s) without a received segment.
    assert!(ms(&probing["idle_ms"]) >= 1000, "{probing:#}");
    assert!(ms(&probing["timer_expires_ms"]) <= 1000, "{probing:#}");

    let retrans = row(&v, &scene, Role::Retransmitting);
    assert_eq!(retrans["verdict"], "retransmitting");
    assert_eq!(
        retrans["keepalive"],
        Value::Null,
        "hidden by the retransmission timer"
    );
    assert_eq!(retrans["timer"], "on");
    assert!(ms(&retrans["retransmits"]) >= 1, "{retrans:#}");
    assert!(ms(&retrans["backoff"]) >= 1, "{retrans:#}");
    assert!(ms(&retrans["unacked"]) >= 1, "{retrans:#}");
    assert_eq!(retrans["send_queue"], 1000);

    let stalled = row(&v, &scene, Role::Stalled);
    assert_eq!(stalled["verdict"], "stalled");
    assert_eq!(stalled["timer"], "persist");
    assert_eq!(
        stalled["keepalive"],
        Value::Null,
        "hidden by the persist timer"
    );
    assert_eq!(stalled["snd_wnd"], 0);
    assert!(ms(&stalled["send_queue"]) > 0, "{stalled:#}");

    let v6: Vec<&Value> = rows(&v)
        .iter()
        .filter(|r| r["local_addr"].as_str().unwrap().starts_with("[::1]"))
        .collect();
    assert_eq!(v6.len(), 2, "both ends of the IPv6 pair: {v:#}");
    assert!(v6.iter().all(|r| r["verdict"] == "unprotected"), "{v6:#?}");

    // Every socket is this process's, and the audit says so.
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    for r in rows(&v) {
        assert_eq!(r["pid"], std::process::id(), "{r:#}");
        assert_eq!(r["process"], comm.trim_end(), "{r:#}");
    }

    // Cross-check against ss, taken within `window` ms after the audit started.
    assert_eq!(
        ss.rows.len(),
        rows(&v).len(),
        "ss:\n{}\naudit: {v:#}",
        ss.raw
    );
    for r in rows(&v) {
        ss.cross_check(r, window);
    }

    // Longest idle first; the summary counts what is listed.
    let idles: Vec<i64> = rows(&v).iter().map(|r| ms(&r["idle_ms"])).collect();
    assert!(idles.windows(2).all(|w| w[0] >= w[1]), "{idles:?}");
    let s = &v["summary"];
    assert_eq!(s["connections"], 7);
    for (verdict, n) in [
        ("protected", 1),
        ("unprotected", 3),
        ("probing", 1),
        ("retransmitting", 1),
        ("stalled", 1),
        ("sending", 0),
    ] {
        assert_eq!(s["verdicts"][verdict], n, "{verdict}: {s:#}");
    }
    let longest = rows(&v)
        .iter()
        .filter(|r| r["verdict"] == "unprotected")
        .max_by_key(|r| ms(&r["idle_ms"]))
        .unwrap();
    assert_eq!(
        s["longest_idle_unprotected"]["local_addr"],
        longest["local_addr"]
    );
    assert_eq!(v["notice"], Value::Null, "root sees everything: {v:#}");
    assert!(
        text.contains("7 connections: 1 protected, 3 unprotected, 1 probing, 1 retransmitting, 1 stalled; longest idle unprotected: "),
        "{text}"
    );

    filters(&scene);
    fail_on(&scene);
    unprivileged(&scene, &v);
}

fn filters(scene: &Scene) {
    let v = audit(scene, &["--port", &scene::DROPPED.to_string()]);
    let mut verdicts: Vec<&str> = rows(&v)
        .iter()
        .map(|r| r["verdict"].as_str().unwrap())
        .collect();
    verdicts.sort();
    assert_eq!(verdicts, ["probing", "retransmitting"], "{v:#}");

    let v = audit(scene, &["--state", "listening"]);
    assert_eq!(rows(&v).len(), 1, "{v:#}");
    assert_eq!(rows(&v)[0]["verdict"], "listening");
    assert_eq!(
        rows(&v)[0]["local_addr"],
        scene.local(Role::Ipv6Listener).to_string()
    );
    assert_eq!(
        rows(&audit(scene, &["--state", "established,listening"])).len(),
        8
    );

    let me = std::process::id().to_string();
    assert_eq!(rows(&audit(scene, &["--pid", &me])).len(), 7);
    assert!(rows(&audit(scene, &["--pid", "1"])).is_empty());
    let text = ok(&run_in(scene.lab.client(), &["audit", "--pid", "1"]));
    assert!(
        text.starts_with("no TCP connection matches\n0 connections: "),
        "{text}"
    );

    // The IPv6 client receives data just before the audit; every other socket has been idle
    // > 1 s. On a loaded machine the audit can return more than 500 ms after the poke, and then
    // the scene is not the one meant (the IPv6 client may be idle > 500 ms too): poke again.
    let mut attempts = 0;
    let v = loop {
        scene.poke_ipv6_client();
        let poked = Instant::now();
        let v = audit(scene, &["--idle-over", "500ms"]);
        if poked.elapsed() < Duration::from_millis(500) {
            break v;
        }
        attempts += 1;
        assert!(
            attempts < 10,
            "no audit returned within 500 ms of the poke in 10 tries"
        );
    };
    assert_eq!(rows(&v).len(), 6, "{v:#}");
    assert!(rows(&v).iter().all(|r| ms(&r["idle_ms"]) > 500), "{v:#}");
    assert!(rows(&audit(scene, &["--idle-over", "1h"])).is_empty());
}

fn fail_on(scene: &Scene) {
    let ns = scene.lab.client();
    let o = run_in(ns, &["audit", "--fail-on", "unprotected"]);
    let line = one_line_error(&o, 3);
    assert_eq!(line, "error: 3 connections match --fail-on unprotected");
    assert!(
        stdout(&o).contains("7 connections:"),
        "the report is printed too"
    );
    let line = one_line_error(
        &run_in(ns, &["audit", "--fail-on", "probing,retransmitting"]),
        3,
    );
    assert_eq!(
        line,
        "error: 2 connections match --fail-on probing,retransmitting"
    );
    let plain = scene::PLAIN.to_string();
    ok(&run_in(
        ns,
        &["audit", "--fail-on", "stalled", "--port", &plain],
    ));
}

fn unprivileged(scene: &Scene, as_root: &Value) {
    if exec(scene.lab.client(), "setpriv", &["--version"])
        .status
        .code()
        != Some(0)
    {
        return support::skip("audit unprivileged", "setpriv (util-linux) is missing");
    }
    let bin = TempBin::new("audit").expect("copy the binary");
    let o = bin.run_as_nobody(scene.lab.client(), &["audit", "--json"]);
    let v: Value = serde_json::from_str(&ok(&o)).unwrap();
    // The socket table is the same; the owners (root's processes) are not visible.
    assert_eq!(rows(&v).len(), rows(as_root).len(), "{v:#}");
    for r in rows(&v) {
        assert_eq!(r["pid"], Value::Null, "{r:#}");
        assert_eq!(r["process"], Value::Null, "{r:#}");
        let same = rows(as_root)
            .iter()
            .find(|x| x["local_addr"] == r["local_addr"])
            .unwrap();
        assert_eq!(r["verdict"], same["verdict"], "{r:#}");
    }
    assert!(ms(&v["not_visible"]["processes"]) >= 1, "{v:#}");
    assert_eq!(v["not_visible"]["connections_without_owner"], 7);
    let notice = v["notice"].as_str().expect("a notice");
    assert!(notice.starts_with("not visible: "), "{notice}");
    assert!(
        notice.contains("processes of other users could not be read"),
        "{notice}"
    );
    assert!(
        notice.contains("owner of 7 of these connections is unknown"),
        "{notice}"
    );

    // The text report ends with the same one line (the number of processes may differ: other
    // processes come and go between the two runs).
    let text = ok(&bin.run_as_nobody(scene.lab.client(), &["audit"]));
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("not visible: "), "{text}");
    assert!(
        last.ends_with(
            "the owner of 7 of these connections is unknown; run as root to see every owner"
        ),
        "{text}"
    );
}
