//! Labs clean up after themselves, never touch the host, and explain what is missing when
//! they cannot be built.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use deadpeer_testkit::{Lab, Tool, lab_or_skip, tool_or_skip};

fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn names(lab: &Lab) -> Vec<String> {
    lab.namespaces()
        .iter()
        .map(|ns| ns.name().to_owned())
        .collect()
}

#[test]
fn drop_deletes_every_namespace() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let names = names(&lab);
    assert_eq!(names.len(), 3);
    let pid = std::process::id();
    for name in &names {
        assert!(name.starts_with(&format!("dpk-{pid}-")), "{name}");
        assert!(exists(name), "{name} missing while the lab lives");
    }
    drop(lab);
    let list = netns_list();
    for name in &names {
        assert!(!exists(name), "{name} left in /run/netns");
        assert!(
            !list.contains(name.as_str()),
            "{name} left in `ip netns list`"
        );
    }
}

#[test]
fn panic_unwinding_deletes_every_namespace() {
    if lab_or_skip!().is_none() {
        return;
    }
    let original = fs::read_link("/proc/thread-self/ns/net").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let inner = Arc::clone(&seen);
    let result = std::panic::catch_unwind(move || {
        let lab = Lab::new().unwrap();
        inner.lock().unwrap().extend(names(&lab));
        lab.blackhole().unwrap();
        // Also leave the thread inside a namespace when the panic starts.
        let _guard = lab.server().enter().unwrap();
        panic!("test body panics with a lab alive");
    });
    assert!(result.is_err());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let list = netns_list();
    for name in seen.iter() {
        assert!(!exists(name), "{name} left in /run/netns after a panic");
        assert!(
            !list.contains(name.as_str()),
            "{name} left in `ip netns list`"
        );
    }
    // The guard restored this thread's namespace during unwinding.
    assert_eq!(fs::read_link("/proc/thread-self/ns/net").unwrap(), original);
}

#[test]
fn guard_and_run_restore_the_calling_thread() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let here = || fs::read_link("/proc/thread-self/ns/net").unwrap();
    let host = here();
    let server = lab.server().run(here).unwrap();
    assert_ne!(server, host);
    assert_eq!(here(), host);
    {
        let _outer = lab.client().enter().unwrap();
        let client = here();
        assert_ne!(client, host);
        assert_ne!(client, server);
        {
            let _inner = lab.router().enter().unwrap();
            assert_ne!(here(), client);
        }
        assert_eq!(here(), client, "nested guard restores the outer namespace");
    }
    assert_eq!(here(), host);
    let caught = std::panic::catch_unwind(|| lab.server().run(|| panic!("inside")));
    assert!(caught.is_err());
    assert_eq!(here(), host, "run restores on panic");

    // A listener created inside stays inside: a connection from the host never reaches it
    // (whatever the host's own network does with 10.x addresses), one from the client does.
    let addr = std::net::SocketAddr::new(lab.server_addr(), 7100);
    let listener = lab.server().tcp_listener(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let _from_host =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300));
    std::thread::sleep(std::time::Duration::from_millis(100));
    let err = listener.accept().expect_err("the host reached the lab");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    listener.set_nonblocking(false).unwrap();
    let _client = lab.client().tcp_connect(addr).unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), lab.client_addr());
}

#[test]
fn stale_namespaces_of_dead_processes_are_swept() {
    let Some(_lab) = lab_or_skip!() else {
        return;
    };
    // No pid exceeds 2^22 (the maximum pid_max), so this creator is certainly gone.
    let stale = "dpk-4194305-0-r";
    let status = Command::new("ip")
        .args(["netns", "add", stale])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(exists(stale));
    // Ours, alive: must survive the sweep.
    let alive = Lab::new().unwrap();
    assert!(!exists(stale), "stale namespace not swept");
    for name in names(&alive) {
        assert!(exists(&name));
    }
    // Names that merely start with the prefix are not ours to delete.
    let foreign = "dpk-notalab";
    Command::new("ip")
        .args(["netns", "add", foreign])
        .status()
        .unwrap();
    drop(Lab::new().unwrap());
    assert!(exists(foreign), "a foreign namespace was swept");
    Command::new("ip")
        .args(["netns", "del", foreign])
        .status()
        .unwrap();
}

#[test]
fn host_namespace_is_untouched() {
    let Some(probe) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    drop(probe);
    let snapshot = || {
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        (
            run(&["-o", "link", "show"])
                .lines()
                .map(|l| l.split(':').nth(1).unwrap().trim().to_owned())
                .collect::<Vec<_>>(),
            [
                run(&["-4", "route", "show", "table", "all"]),
                run(&["-6", "route", "show", "table", "all"]),
                run(&["-4", "rule", "show"]),
                run(&["-6", "rule", "show"]),
            ],
            [
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/net/ipv6/conf/all/forwarding",
                "/proc/sys/net/ipv6/conf/default/accept_dad",
            ]
            .map(|f| fs::read_to_string(f).unwrap()),
        )
    };
    let before = snapshot();
    let lab = Lab::new().unwrap();
    lab.blackhole().unwrap();
    lab.unreachable().unwrap();
    lab.cut_link().unwrap();
    lab.reject(deadpeer_testkit::Reject::AdminProhibited)
        .unwrap();
    assert_eq!(snapshot(), before, "a lab changed the host namespace");
    lab.heal().unwrap();
    drop(lab);
    assert_eq!(snapshot(), before);
}

/// Runs only as the child of `unprivileged_lab_new_explains_what_is_missing`.
#[test]
fn unprivileged_child() {
    if std::env::var_os("DPK_UNPRIVILEGED_CHILD").is_none() {
        return;
    }
    let err = Lab::new().expect_err("no capabilities, yet a lab was created");
    println!("LAB_NEW_ERROR={err}");
    println!("IS_SKIP={}", err.is_skip());
    assert!(lab_or_skip!().is_none());
    // Bad input is reported as such, whatever the privileges, before anything is tried.
    let bad = Lab::builder().prefix("no spaces").build().unwrap_err();
    println!("INVALID_PREFIX={}", bad.is_invalid_name());
}

#[test]
fn unprivileged_lab_new_explains_what_is_missing() {
    if lab_or_skip!().is_none() {
        return;
    }
    // Re-run this test binary with every capability dropped (still uid 0).
    let exe = std::env::current_exe().unwrap();
    let run = |require: Option<&str>| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set", "-all", "--inh-caps", "-all", "--"])
            .arg(&exe)
            .args([
                "--exact",
                "unprivileged_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DPK_UNPRIVILEGED_CHILD", "1")
            .env("RUST_BACKTRACE", "0")
            .env_remove("DEADPEER_REQUIRE_NETNS");
        if let Some(v) = require {
            cmd.env("DEADPEER_REQUIRE_NETNS", v);
        }
        cmd.output()
    };
    let Ok(out) = run(None) else {
        eprintln!("skipped unprivileged_lab_new_explains_what_is_missing: setpriv not available");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "LAB_NEW_ERROR=missing CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root or grant \
             CAP_NET_ADMIN and CAP_SYS_ADMIN"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("IS_SKIP=true"), "{stdout}");
    assert!(stdout.contains("INVALID_PREFIX=true"), "{stdout}");
    let skips: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("skipped "))
        .collect();
    assert_eq!(
        skips,
        [
            "skipped unprivileged_child: missing CAP_NET_ADMIN and CAP_SYS_ADMIN: run as root or \
          grant CAP_NET_ADMIN and CAP_SYS_ADMIN"
        ],
        "{stderr}"
    );

    let strict = run(Some("1")).unwrap();
    let stdout = String::from_utf8_lossy(&strict.stdout);
    assert!(
        !strict.status.success(),
        "DEADPEER_REQUIRE_NETNS=1 must turn the skip into a failure"
    );
    assert!(
        stdout.contains("DEADPEER_REQUIRE_NETNS=1 forbids skipping")
            || String::from_utf8_lossy(&strict.stderr)
                .contains("DEADPEER_REQUIRE_NETNS=1 forbids skipping")
    );
}

/// A program no machine has, with its (made-up) package.
const NO_SUCH_PROGRAM: Tool = Tool::new("deadpeer-no-such-program", "no-such-package");

/// Runs only as the child of `a_missing_program_skips_with_one_line_naming_its_package`.
#[test]
fn missing_program_child() {
    if std::env::var_os("DPK_MISSING_PROGRAM_CHILD").is_none() {
        return;
    }
    let err = Lab::builder()
        .requires(NO_SUCH_PROGRAM)
        .build()
        .expect_err("a lab without a program it requires");
    println!("IS_SKIP={}", err.is_skip());
    assert!(lab_or_skip!(Lab::builder().requires(NO_SUCH_PROGRAM)).is_none());
}

/// As `missing_program_child`, for a test that needs the program and no lab.
#[test]
fn missing_tool_child() {
    if std::env::var_os("DPK_MISSING_PROGRAM_CHILD").is_none() {
        return;
    }
    println!("IS_SKIP={}", NO_SUCH_PROGRAM.find().unwrap_err().is_skip());
    assert!(tool_or_skip!(NO_SUCH_PROGRAM).is_none());
}

#[test]
fn a_missing_program_skips_with_one_line_naming_its_package() {
    // As root: a skip for want of privileges would hide the one for the program.
    if lab_or_skip!().is_none() {
        return;
    }
    // With a lab (`lab_or_skip!`) and without one (`tool_or_skip!`): the same line.
    for child in ["missing_program_child", "missing_tool_child"] {
        a_missing_program_skips_in(child);
    }
}

fn a_missing_program_skips_in(child: &str) {
    let run = |require: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", child, "--nocapture", "--test-threads=1"])
            .env("DPK_MISSING_PROGRAM_CHILD", "1")
            .env("RUST_BACKTRACE", "0")
            .env_remove("DEADPEER_REQUIRE_NETNS");
        if let Some(v) = require {
            cmd.env("DEADPEER_REQUIRE_NETNS", v);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("IS_SKIP=true"), "{stdout}");
    let skips: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("skipped "))
        .collect();
    assert_eq!(
        skips,
        [format!(
            "skipped {child}: `deadpeer-no-such-program` could not be run (not in PATH); \
                 install no-such-package (e.g. `apt-get install no-such-package`)"
        )],
        "{stderr}"
    );

    let strict = run(Some("1"));
    assert!(
        !strict.status.success(),
        "DEADPEER_REQUIRE_NETNS=1 must turn the skip into a failure"
    );
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&strict.stdout),
        String::from_utf8_lossy(&strict.stderr)
    );
    assert!(
        output.contains("install no-such-package")
            && output.contains("DEADPEER_REQUIRE_NETNS=1 forbids skipping"),
        "{output}"
    );
}

/// Runs only as the child of `half_built_lab_is_cleaned_up`, with a failing `ip` in PATH.
#[test]
fn half_built_child() {
    if std::env::var_os("DPK_HALF_BUILT_CHILD").is_none() {
        return;
    }
    let err = Lab::new().expect_err("veth creation was made to fail");
    println!("LAB_NEW_ERROR={err}");
    println!("IS_SKIP={}", err.is_skip());
    // Checked here, while this process is alive: once it exits, any `Lab::new` elsewhere would
    // sweep its leftovers and hide them.
    println!("LEFTOVERS={:?}", own_namespaces(std::process::id()));
}

fn own_namespaces(pid: u32) -> Vec<String> {
    let prefix = format!("dpk-{pid}-");
    fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

#[test]
fn half_built_lab_is_cleaned_up() {
    if lab_or_skip!().is_none() {
        return;
    }
    // A wrapper `ip` that fails when asked to create a veth, after the namespaces exist.
    let out = Command::new("sh")
        .args(["-c", "command -v ip"])
        .output()
        .unwrap();
    let real_ip = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let dir = std::env::temp_dir().join(format!("dpk-fake-ip-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("ip");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *\"type veth\"*) echo 'injected failure' >&2; exit 1;; \
             esac\nexec {real_ip} \"$@\"\n"
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "half_built_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DPK_HALF_BUILT_CHILD", "1")
        .env("PATH", path)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    fs::remove_dir_all(&dir).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("type veth"),
        "error names the command: {stdout}"
    );
    assert!(
        stdout.contains("injected failure"),
        "error has ip's stderr: {stdout}"
    );
    assert!(stdout.contains("IS_SKIP=false"), "{stdout}");
    assert!(
        stdout.contains("LEFTOVERS=[]"),
        "half-built lab left namespaces: {stdout}"
    );
}

/// The pattern of docs/testing.md for services that create their own sockets: a thread that
/// lives in the namespace and runs its own runtime there.
#[test]
fn a_thread_can_live_in_a_namespace() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let lab = Arc::new(lab);
    let addr = std::net::SocketAddr::new(lab.server_addr(), 7200);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let inside = Arc::clone(&lab);
    let service = std::thread::spawn(move || {
        let _guard = inside.server().enter().expect("enter the server namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // Plain tokio bind: the service knows nothing about namespaces.
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            ready_tx.send(()).unwrap();
            let (_sock, peer) = listener.accept().await.unwrap();
            peer
        })
    });
    ready_rx.recv().unwrap();
    let _client = lab.client().tcp_connect(addr).unwrap();
    assert_eq!(service.join().unwrap().ip(), lab.client_addr());
}
