//! Skipping a test, with one line, when the machine cannot host a lab or lacks a program.

use std::io::Write as _;
use std::path::PathBuf;

use crate::{Lab, LabError, REQUIRE_NETNS_ENV, Tool};

/// Creates a [`Lab`] for the enclosing test, or skips the test: the one way to start a lab test.
///
/// - `lab_or_skip!()` builds a default lab ([`Lab::new`]);
/// - `lab_or_skip!(builder)` builds a [`LabBuilder`](crate::LabBuilder), e.g.
///   `lab_or_skip!(Lab::builder().prefix("myapp-"))`.
///
/// It evaluates to `Option<Lab>`: `Some(lab)`, or `None` after printing exactly one line,
/// `skipped <test>: <reason>`, to stderr when the machine cannot host the lab (no
/// `CAP_NET_ADMIN`/`CAP_SYS_ADMIN`, or a missing program: `ip`, or one the builder
/// [requires](crate::LabBuilder::requires); the reason names the Debian package to install).
/// The line is written to fd 2 directly, so the test harness's capture cannot hide it. With `DEADPEER_REQUIRE_NETNS=1` (CI) it panics with
/// the reason instead, so a lost privilege cannot turn lab tests into silent passes. Any other
/// failure (an `ip` command failing on a machine that should support it, an invalid prefix)
/// panics too: it is a bug, not a skip.
///
/// `<test>` is the enclosing function's path without the crate name, as `cargo test` prints
/// it (`blackhole_is_detected`, `tests::blackhole_is_detected`), also inside
/// `#[tokio::test] async fn` and closures. It is read from [`std::any::type_name`] of a
/// function nested at the call site, whose exact format Rust does not guarantee; to name the
/// test yourself, call the function [`lab_or_skip()`](fn@crate::lab_or_skip) (or
/// [`LabBuilder::build_or_skip`](crate::LabBuilder::build_or_skip)), which the macro calls.
///
/// # Example
///
/// ```no_run
/// use deadpeer_testkit::{Lab, lab_or_skip};
///
/// #[test]
/// fn my_service_reaps_dead_clients() {
///     let Some(lab) = lab_or_skip!() else { return };
///     // ... start the service in lab.server(), connect from lab.client(), lab.blackhole() ...
/// #   drop(lab);
/// }
///
/// #[tokio::test]
/// async fn with_my_own_prefix() {
///     let Some(lab) = lab_or_skip!(Lab::builder().prefix("myapp-")) else { return };
///     assert!(lab.server().name().starts_with("myapp-"));
/// }
/// ```
#[macro_export]
macro_rules! lab_or_skip {
    () => {
        $crate::lab_or_skip($crate::__test_name!())
    };
    ($builder:expr $(,)?) => {
        $crate::LabBuilder::build_or_skip($builder, $crate::__test_name!())
    };
}

/// The path of the enclosing function, without the crate name: what `cargo test` calls the test.
#[doc(hidden)]
#[macro_export]
macro_rules! __test_name {
    () => {{
        fn f() {}
        $crate::__private::test_name(::std::any::type_name_of_val(&f))
    }};
}

/// Creates a [`Lab`] for the test `test_name`, or skips the test: what
/// [`lab_or_skip!()`](crate::lab_or_skip!) calls with the enclosing test's name. Use the macro;
/// call this to name the test yourself.
///
/// When the machine cannot host a lab (no `CAP_NET_ADMIN`/`CAP_SYS_ADMIN`, or no `ip`), it
/// prints exactly one line, `skipped <test_name>: <reason>`, to stderr (written to fd 2
/// directly, so visible even when the test harness captures output) and returns `None`; the
/// test then returns early. If `DEADPEER_REQUIRE_NETNS=1` is set it panics with the reason
/// instead.
///
/// # Panics
///
/// - when the lab cannot be created for any other reason (a failing `ip` command on a machine
///   that should support it is a bug, not a skip);
/// - on a privilege or tooling error when `DEADPEER_REQUIRE_NETNS=1`.
///
/// # Example
///
/// ```no_run
/// #[test]
/// fn my_service_reaps_dead_clients() {
///     let Some(lab) = deadpeer_testkit::lab_or_skip("reaping, case 3") else {
///         return;
///     };
/// #   drop(lab);
/// }
/// ```
pub fn lab_or_skip(test_name: &str) -> Option<Lab> {
    or_skip(test_name, Lab::new())
}

/// The skip policy of [`lab_or_skip()`] for an attempt to build a lab.
pub(crate) fn or_skip(test_name: &str, built: Result<Lab, LabError>) -> Option<Lab> {
    match built {
        Ok(lab) => Some(lab),
        Err(err) if err.is_skip() => skip(test_name, &err),
        Err(err) => panic!("{test_name}: cannot create the lab: {err}"),
    }
}

/// Skips the test `test_name` for `err` with one line, or panics under
/// `DEADPEER_REQUIRE_NETNS=1`.
fn skip<T>(test_name: &str, err: &LabError) -> Option<T> {
    if std::env::var(REQUIRE_NETNS_ENV).is_ok_and(|v| v == "1") {
        panic!("{test_name}: {err} ({REQUIRE_NETNS_ENV}=1 forbids skipping)");
    }
    // Straight to fd 2, not `eprintln!`: the test harness captures the macros and would
    // hide the skip of a passing test.
    // One write, so that parallel tests cannot split the line.
    let line = format!("skipped {test_name}: {err}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

/// Finds a program for the enclosing test, or skips the test: for a test that runs a program
/// but needs no lab (curl against a server on loopback, say).
///
/// `tool_or_skip!(Tool::CURL)` evaluates to `Option<PathBuf>`: where the program is
/// ([`Tool::find`]), or `None` after printing the one line [`lab_or_skip!`] prints,
/// `` skipped <test>: `curl` could not be run (not in PATH); install curl (e.g. `apt-get install
/// curl`) ``; with `DEADPEER_REQUIRE_NETNS=1` it panics with that reason instead. `<test>` is
/// the enclosing test, named as [`lab_or_skip!`] names it.
///
/// ```no_run
/// use deadpeer_testkit::{Tool, tool_or_skip};
///
/// #[test]
/// fn curl_gets_an_answer() {
///     let Some(curl) = tool_or_skip!(Tool::CURL) else { return };
///     let out = std::process::Command::new(curl).arg("--version").output().unwrap();
///     assert!(out.status.success());
/// }
/// ```
#[macro_export]
macro_rules! tool_or_skip {
    ($tool:expr $(,)?) => {
        $crate::tool_or_skip($crate::__test_name!(), $tool)
    };
}

/// Finds `tool` for the test `test_name`, or skips the test: what
/// [`tool_or_skip!`](crate::tool_or_skip!) calls with the enclosing test's name.
///
/// # Panics
///
/// When `tool` is missing and `DEADPEER_REQUIRE_NETNS=1`.
pub fn tool_or_skip(test_name: &str, tool: Tool) -> Option<PathBuf> {
    match tool.find() {
        Ok(path) => Some(path),
        Err(err) => skip(test_name, &err),
    }
}

/// `crate::module::test::{{closure}}::f` → `module::test`.
pub fn test_name(nested_fn: &'static str) -> &'static str {
    let mut path = nested_fn.strip_suffix("::f").unwrap_or(nested_fn);
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path.split_once("::").map_or(path, |(_crate, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::test_name;

    #[test]
    fn test_names() {
        assert_eq!(test_name("faults::blackhole::f"), "blackhole");
        assert_eq!(test_name("faults::blackhole::{{closure}}::f"), "blackhole");
        assert_eq!(
            test_name("my_crate::tests::case::{{closure}}::{{closure}}::f"),
            "tests::case"
        );
        assert_eq!(test_name("oddity"), "oddity");
        // The real thing, in this crate's unit tests.
        assert_eq!(crate::__test_name!(), "skip::tests::test_names");
        let in_closure = || crate::__test_name!();
        assert_eq!(in_closure(), "skip::tests::test_names");
    }
}
