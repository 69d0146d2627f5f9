//! Namespace names: a prefix of the user's choosing, opening a namespace the testkit does not
//! own, and a stale sweep that only ever deletes the testkit's own leftovers.

use std::path::Path;
use std::process::Command;

use deadpeer_testkit::{Lab, LabError, MAX_PREFIX_LEN, Netns, lab_or_skip};

fn exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn ip_netns(verb: &str, name: &str) {
    let status = Command::new("ip")
        .args(["netns", verb, name])
        .status()
        .unwrap();
    assert!(status.success(), "ip netns {verb} {name}");
}

/// Deletes the namespace `name` when dropped, so that a failing test leaves nothing behind.
struct Created(&'static str);

impl Created {
    fn new(name: &'static str) -> Self {
        ip_netns("add", name);
        Created(name)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn a_custom_prefix_names_every_namespace() {
    let Some(lab) = lab_or_skip!(Lab::builder().prefix("dpk-custom.")) else {
        return;
    };
    let pid = std::process::id();
    for ns in lab.namespaces() {
        assert!(
            ns.name().starts_with(&format!("dpk-custom.{pid}-")),
            "{}",
            ns.name()
        );
        assert!(exists(ns.name()));
    }
    let names: Vec<String> = lab.namespaces().map(|ns| ns.name().to_owned()).to_vec();
    drop(lab);
    for name in names {
        assert!(!exists(&name), "{name} left behind");
    }
}

#[test]
fn invalid_prefixes_are_errors_not_panics() {
    for (prefix, says) in [
        ("", "it is empty"),
        ("my app-", "' ' at byte 2 is not allowed"),
        ("app/", "'/' at byte 3 is not allowed"),
        ("-app", "must start with an ASCII letter or digit"),
        ("app7", "must not end with a digit"),
    ] {
        let err = Lab::builder().prefix(prefix).build().unwrap_err();
        assert!(err.is_invalid_name(), "{prefix:?}: {err}");
        assert!(
            !err.is_skip(),
            "{prefix:?}: an invalid prefix is a bug, not a skip"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("invalid namespace prefix {prefix:?}: ")),
            "{msg}"
        );
        assert!(msg.contains(says), "{prefix:?}: {msg}");
    }
    let long = "p".repeat(MAX_PREFIX_LEN + 1);
    let err = Lab::builder().prefix(long).build().unwrap_err();
    assert!(err.to_string().contains("the limit is 232"), "{err}");
}

#[test]
fn the_sweep_of_a_prefix_deletes_only_its_own_dead_labs() {
    let Some(_lab) = lab_or_skip!() else {
        return;
    };
    // No pid exceeds 2^22 (the maximum pid_max), so this creator is certainly gone.
    let stale = Created::new("dpk-sweep.4194305-0-r");
    // Dead pid, the same scheme, but another prefix's: not this sweep's to delete.
    let other_prefix = Created::new("dpk-sweep.x-4194305-0-r");
    // Dead pid, but not the testkit's own spelling of it.
    let plus = Created::new("dpk-sweep.+4194305-0-r");
    let zero = Created::new("dpk-sweep.04194305-0-r");
    // A live process's lab: ours.
    let alive = format!("dpk-sweep.{}-999-r", std::process::id());
    ip_netns("add", &alive);

    let lab = Lab::builder().prefix("dpk-sweep.").build().unwrap();
    assert!(!exists(stale.0), "stale namespace not swept");
    for kept in [other_prefix.0, plus.0, zero.0, alive.as_str()] {
        assert!(exists(kept), "{kept} was swept");
    }
    drop(lab);
    ip_netns("del", &alive);
}

#[test]
fn an_opened_namespace_is_usable_and_never_deleted() {
    let Some(_lab) = lab_or_skip!() else {
        return;
    };
    let mine = Created::new("dpk-test-not-a-lab");
    let ns = Netns::open(mine.0).unwrap();
    assert_eq!(ns.name(), mine.0);
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    // A socket inside works over the namespace's own loopback.
    let listener = ns.tcp_listener("127.0.0.1:7300".parse().unwrap()).unwrap();
    let _client = ns.tcp_connect("127.0.0.1:7300".parse().unwrap()).unwrap();
    listener.accept().unwrap();
    drop(ns);
    assert!(exists(mine.0), "dropping an opened Netns deleted it");
    // Nor does building and dropping labs (and their sweep) touch it.
    drop(Lab::new().unwrap());
    assert!(
        exists(mine.0),
        "a lab's sweep deleted a namespace it does not own"
    );
}

#[test]
fn opening_a_missing_or_invalid_namespace_is_an_error() {
    if lab_or_skip!().is_none() {
        return;
    }
    let err = Netns::open("dpk-no-such-namespace").unwrap_err();
    assert!(matches!(err, LabError::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/run/netns/dpk-no-such-namespace")
            && msg.contains("ip netns list")
            && msg.contains("ip netns add dpk-no-such-namespace"),
        "{msg}"
    );
    for name in ["", ".", "..", "a/b", "../etc", "nul\0"] {
        let err = Netns::open(name).unwrap_err();
        assert!(err.is_invalid_name(), "{name:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("invalid namespace name {name:?}: ")),
            "{err}"
        );
    }
    let long = "n".repeat(256);
    let err = Netns::open(&long).unwrap_err();
    assert!(err.to_string().contains("the limit is 255"), "{err}");
}

/// `lab_or_skip!()` names the test as `cargo test` does: the function's path in the test crate,
/// from a plain `#[test]`, a `#[tokio::test] async fn`, a closure, or a nested module.
#[test]
fn the_skip_line_names_a_plain_test() {
    assert_eq!(
        deadpeer_testkit::__test_name!(),
        "the_skip_line_names_a_plain_test"
    );
    let in_a_closure = || deadpeer_testkit::__test_name!();
    assert_eq!(in_a_closure(), "the_skip_line_names_a_plain_test");
}

#[tokio::test]
async fn the_skip_line_names_an_async_test() {
    assert_eq!(
        deadpeer_testkit::__test_name!(),
        "the_skip_line_names_an_async_test"
    );
    let in_a_task = tokio::spawn(async { deadpeer_testkit::__test_name!() });
    assert_eq!(
        in_a_task.await.unwrap(),
        "the_skip_line_names_an_async_test"
    );
}

mod nested {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_a_module() {
        assert_eq!(deadpeer_testkit::__test_name!(), "nested::in_a_module");
    }
}
