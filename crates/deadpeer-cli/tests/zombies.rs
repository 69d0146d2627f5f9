//! `deadpeer audit` finds `leaked` and `zombie` sockets of a real Python 3 process, in a lab:
//!
//! - a Python server that never closes after its client's FIN: its socket stays in CLOSE-WAIT,
//!   `leaked`, with how long and the Python process as owner;
//! - a Python client with keepalive 1 s / 1 s / 2 whose server is blackholed: the kernel closes
//!   its socket (`ETIMEDOUT`), and audit lists it as a `zombie` of the Python process, found
//!   through `/proc/PID/fd` and `pidfd_getfd`;
//! - afterwards the Python process still reads `ETIMEDOUT` from its socket: audit took nothing.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use deadpeer_testkit::{Netns, lab_or_skip};
use serde_json::Value;
use support::{Python, ok, one_line_error, run_in};

/// Accepts one connection and never closes it, whatever the peer does.
const LEAKY_SERVER: &str = r#"
import os, socket, sys
print(os.getpid())
l = socket.socket()
l.bind((ADDR, 7300)); l.listen()
print("listening")
c, _ = l.accept()
print("accepted")
sys.stdin.readline()
"#;

/// Connects with keepalive 1 s / 1 s / 2, then waits; on "read", reads and prints the errno.
const KEEPALIVE_CLIENT: &str = r#"
import os, socket, sys
print(os.getpid())
s = socket.create_connection((ADDR, 7301))
s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
print(s.getsockname()[1])
sys.stdin.readline()
try:
    s.recv(1)
    print("no error")
except OSError as e:
    print(e.errno)
"#;

fn audit(ns: &Netns, args: &[&str]) -> Value {
    let mut full = vec!["audit", "--json"];
    full.extend_from_slice(args);
    let out = ok(&run_in(ns, &full));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn python_leaks_and_zombies() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let saddr = lab.server_addr();
    let with_addr = |script: &str| script.replace("ADDR", &format!("'{saddr}'"));

    // The leak: our client connects to the Python server, then closes.
    let Some(mut server) = Python::start("zombies", lab.server(), &with_addr(LEAKY_SERVER)) else {
        return;
    };
    assert_eq!(server.line(), "listening");
    let client = lab
        .client()
        .run(|| TcpStream::connect(SocketAddr::new(saddr, 7300)))
        .unwrap()
        .unwrap();
    assert_eq!(server.line(), "accepted");
    drop(client);
    let closed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let v = audit(lab.server(), &[]);
    let waited = closed_at.elapsed().as_millis() as i64;
    let rows = v["connections"].as_array().unwrap();
    let leak = rows
        .iter()
        .find(|r| r["local_addr"] == format!("{saddr}:7300"))
        .unwrap_or_else(|| panic!("no leak row: {v:#}"));
    assert_eq!(leak["state"], "close-wait", "{leak:#}");
    assert_eq!(leak["verdict"], "leaked", "{leak:#}");
    assert_eq!(leak["pid"], server.pid, "{leak:#}");
    assert_eq!(leak["process"], server.comm().as_str(), "{leak:#}");
    // How long: since the FIN, to a jiffy or two (4 ms at HZ=250).
    let leaked_for = leak["leaked_for_ms"].as_i64().unwrap();
    assert!(
        (1400..=waited + 8).contains(&leaked_for),
        "leaked for {leaked_for} ms, FIN {waited} ms ago: {leak:#}"
    );
    assert_eq!(v["summary"]["verdicts"]["leaked"], 1, "{v:#}");
    let text = ok(&run_in(lab.server(), &["audit"]));
    // Shown with --nocapture, for docs/audit.md.
    println!("{text}{leak:#}");
    assert!(text.contains("leaked (FIN 1."), "{text}");
    let line = one_line_error(&run_in(lab.server(), &["audit", "--fail-on", "leaked"]), 3);
    assert_eq!(line, "error: 1 connection matches --fail-on leaked");

    // The zombie: a Python client with keepalive, its server blackholed.
    let listener = lab
        .server()
        .tcp_listener(SocketAddr::new(saddr, 7301))
        .unwrap();
    let Some(mut py) = Python::start("zombies", lab.client(), &with_addr(KEEPALIVE_CLIENT)) else {
        return;
    };
    let port: u16 = py.line().parse().unwrap();
    let (_held, _) = listener.accept().unwrap();
    let before = audit(lab.client(), &[]);
    assert_eq!(before["zombies"], Value::Array(vec![]), "{before:#}");
    lab.blackhole().unwrap();
    // Keepalive 1 + 1 × 2: the kernel closes it after about 3 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = audit(lab.client(), &[]);
        if !v["zombies"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(Instant::now() < deadline, "no zombie after 10 s: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let zombies = v["zombies"].as_array().unwrap();
    assert_eq!(zombies.len(), 1, "{v:#}");
    let z = &zombies[0];
    assert_eq!(z["state"], "closed");
    assert_eq!(z["pid"], py.pid, "{z:#}");
    assert_eq!(z["process"], py.comm().as_str(), "{z:#}");
    assert_eq!(
        z["local_addr"],
        format!("{}:{port}", lab.client_addr()),
        "{z:#}"
    );
    assert_eq!(
        z["probes"], 2,
        "two keepalive probes went unanswered: {z:#}"
    );
    assert!(z["idle_ms"].as_i64().unwrap() >= 3000, "{z:#}");
    // The socket table no longer lists it.
    let rows = v["connections"].as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["local_addr"] != z["local_addr"]),
        "{v:#}"
    );
    assert_eq!(v["summary"]["verdicts"]["zombie"], 1, "{v:#}");
    let text = ok(&run_in(lab.client(), &["audit"]));
    println!("{text}{z:#}");
    assert!(
        text.contains("zombies: closed by the kernel, still held by a process"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}/{}", py.pid, py.comm())),
        "{text}"
    );
    let line = one_line_error(&run_in(lab.client(), &["audit", "--fail-on", "zombie"]), 3);
    assert_eq!(line, "error: 1 connection matches --fail-on zombie");
    assert!(
        audit(lab.client(), &["--pid", "1"])["zombies"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Audit took nothing: Python still reads ETIMEDOUT.
    py.say("read");
    assert_eq!(py.line(), "110", "the Python process reads ETIMEDOUT");
    server.say("done");
}
