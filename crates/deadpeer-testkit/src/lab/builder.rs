//! [`LabBuilder`]: the namespace prefix, its validation, the naming scheme and the stale sweep.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Lab;
use crate::netns::{NAME_MAX, NETNS_DIR};
use crate::{LabError, Tool, cmd};

/// The prefix of every namespace [`Lab::new`] creates: `dpk-<pid>-<n>-<c|r|s>`.
pub const DEFAULT_PREFIX: &str = "dpk-";

/// The longest prefix [`LabBuilder::prefix`] accepts, in bytes: a namespace name is a file name
/// in `/run/netns` (at most `NAME_MAX` = 255 bytes) and the testkit appends up to 23 bytes,
/// `<pid>-<n>-<role>` with two `u32`s.
pub const MAX_PREFIX_LEN: usize = NAME_MAX - SUFFIX_MAX;

/// `u32::MAX` twice, two dashes, one role letter.
const SUFFIX_MAX: usize = 10 + 1 + 10 + 1 + 1;

/// Labs created by this process so far; with the pid, it makes names and subnets unique.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Builds a [`Lab`] with options; [`Lab::new`] is `Lab::builder().build()`.
///
/// ```no_run
/// use deadpeer_testkit::Lab;
///
/// # fn main() -> Result<(), deadpeer_testkit::LabError> {
/// // Namespaces named myapp-<pid>-<n>-c, -r and -s.
/// let lab = Lab::builder().prefix("myapp-").build()?;
/// assert!(lab.client().name().starts_with("myapp-"));
/// # Ok(()) }
/// ```
///
/// In a test, [`lab_or_skip!`](crate::lab_or_skip!) takes a builder too:
/// `let Some(lab) = lab_or_skip!(Lab::builder().prefix("myapp-")) else { return };`.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct LabBuilder {
    prefix: String,
    requires: Vec<Tool>,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder {
            prefix: DEFAULT_PREFIX.to_owned(),
            requires: Vec::new(),
        }
    }
}

impl LabBuilder {
    /// Names the lab's namespaces `<prefix><pid>-<n>-<c|r|s>` instead of `dpk-<pid>-<n>-…`.
    ///
    /// A prefix of your own keeps your labs apart from other projects' in `ip netns list`.
    /// [`build`](Self::build) sweeps stale namespaces **under this prefix only**, and only those
    /// that follow the testkit's scheme exactly (`<prefix><pid>-<n>-<c|r|s>`, canonical decimal
    /// numbers) and whose `<pid>` is no longer running; any other namespace, whatever its name,
    /// is never deleted.
    ///
    /// The prefix is checked by [`build`](Self::build), which returns
    /// [`LabError::InvalidName`] (never a panic) unless it:
    /// - is 1 to [`MAX_PREFIX_LEN`] bytes long;
    /// - consists of ASCII letters, digits, `-`, `_` and `.`;
    /// - starts with a letter or a digit (so `ip` cannot read it as an option);
    /// - does not end with a digit (so `<prefix><pid>` parses back unambiguously, and no two
    ///   prefixes can claim the same namespace).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Names a program the test runs besides `ip`: [`Tool::NFT`] for
    /// [`Lab::reject`](crate::Lab::reject), or one the test runs itself (`ss`, `curl`, …).
    /// [`build`](Self::build) checks that each is in `PATH` before it creates anything, so that
    /// on a machine without it [`lab_or_skip!`](crate::lab_or_skip!) skips the test with one
    /// line naming the package to install (and fails under `DEADPEER_REQUIRE_NETNS=1`).
    pub fn requires(mut self, tool: Tool) -> Self {
        self.requires.push(tool);
        self
    }

    /// Builds the lab: three namespaces, two veth links, IPv4 and IPv6 addresses, routes and
    /// forwarding; see [`Lab`] for the topology.
    ///
    /// Before that it checks the prefix, the privileges and the programs, then deletes stale namespaces of this prefix whose
    /// creating process no longer exists (left behind by a killed test run). If building fails
    /// half-way, whatever was created is deleted again before the error is returned.
    ///
    /// Takes about 50 ms (34 ms before labs were dual-stack).
    ///
    /// # Errors
    ///
    /// - [`LabError::InvalidName`] for a prefix [`prefix`](Self::prefix) does not accept,
    ///   whatever the privileges;
    /// - [`LabError::Privilege`] without `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` (run as root);
    /// - [`LabError::MissingTool`] when `ip` (iproute2) or a program the test
    ///   [requires](Self::requires) is not installed;
    /// - [`LabError::Command`] or [`LabError::Io`] when a step fails; the message holds the
    ///   failing command line and its stderr.
    ///
    /// It never panics.
    pub fn build(self) -> Result<Lab, LabError> {
        validate_prefix(&self.prefix)?;
        super::topology::check_privileges()?;
        cmd::check_ip()?;
        for tool in &self.requires {
            tool.find()?;
        }
        sweep_stale(&self.prefix);

        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let names = ["c", "r", "s"].map(|role| name(&self.prefix, pid, n, role));
        super::topology::build(&names, super::addr::Addrs::for_lab(pid, n))
    }

    /// Builds the lab for the test `test_name`, or skips the test: what
    /// [`lab_or_skip!(builder)`](crate::lab_or_skip!) calls.
    ///
    /// See [`lab_or_skip`](crate::lab_or_skip()) for what a skip prints and when it panics
    /// instead. An invalid prefix is a bug in the test, not a reason to skip: it panics.
    pub fn build_or_skip(self, test_name: &str) -> Option<Lab> {
        crate::skip::or_skip(test_name, self.build())
    }
}

/// `<prefix><pid>-<n>-<role>`.
fn name(prefix: &str, pid: u32, n: u32, role: &str) -> String {
    format!("{prefix}{pid}-{n}-{role}")
}

/// Checks a namespace prefix; see [`LabBuilder::prefix`] for the rules.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), LabError> {
    let invalid = |reason: String| {
        Err(LabError::InvalidName {
            what: "namespace prefix",
            value: prefix.to_owned(),
            reason,
        })
    };
    const ALLOWED: &str = "use ASCII letters, digits, '-', '_' and '.' only, e.g. \"myapp-\"";
    if prefix.is_empty() {
        return invalid(format!("it is empty; {ALLOWED}"));
    }
    if prefix.len() > MAX_PREFIX_LEN {
        return invalid(format!(
            "it is {} bytes long, the limit is {MAX_PREFIX_LEN} (a namespace name is at most \
             {NAME_MAX} bytes and the testkit appends up to {SUFFIX_MAX}); shorten it",
            prefix.len()
        ));
    }
    if let Some((at, c)) = prefix
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return invalid(format!("{c:?} at byte {at} is not allowed; {ALLOWED}"));
    }
    if !prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid(
            "it must start with an ASCII letter or digit (ip would read a leading '-' as an \
             option); e.g. \"myapp-\""
                .to_owned(),
        );
    }
    if prefix.ends_with(|c: char| c.is_ascii_digit()) {
        return invalid(format!(
            "it must not end with a digit (the pid follows it, and `{prefix}1-0-c` would be \
             ambiguous); end it with '-', e.g. \"{prefix}-\""
        ));
    }
    Ok(())
}

/// The creating pid of a namespace named exactly `<prefix><pid>-<n>-<c|r|s>`, with both numbers
/// in canonical decimal (what [`name`] writes); `None` for any other name.
pub(crate) fn lab_pid(prefix: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let mut parts = rest.split('-');
    let (pid, n, role) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !matches!(role, "c" | "r" | "s") {
        return None;
    }
    let number = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (pid, n) = (number(pid)?, number(n)?);
    // Rejects leading zeros and anything else `name` would not have written.
    (self::name(prefix, pid, n, role) == name).then_some(pid)
}

/// Deletes the namespaces of `prefix`'s scheme whose creating process is gone. Errors are
/// ignored (another process may be sweeping the same names).
fn sweep_stale(prefix: &str) {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(pid) = lab_pid(prefix, name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                cmd::ip_quiet(&["netns", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        assert_eq!(lab_pid("dpk-", "dpk-4242-7-r"), Some(4242));
        assert_eq!(lab_pid("dpk-", "dpk-4242-7-x"), None);
        assert_eq!(lab_pid("dpk-", "dpk-4242-r"), None);
        assert_eq!(lab_pid("dpk-", "kac"), None);
        assert_eq!(lab_pid("dpk-", "dpk-4242-7-r-extra"), None);
        assert_eq!(
            lab_pid("dpk-", "dpk-+42-7-r"),
            None,
            "u32::from_str takes '+'"
        );
        assert_eq!(lab_pid("dpk-", "dpk-042-7-r"), None, "not canonical");
        assert_eq!(lab_pid("dpk-", "dpk-42-07-r"), None, "not canonical");
        assert_eq!(lab_pid("dpk-", "dpk-99999999999-0-c"), None, "beyond u32");
        assert_eq!(lab_pid("myapp.", "myapp.42-0-s"), Some(42));
        assert_eq!(lab_pid("dpk-", "myapp.42-0-s"), None);
        assert_eq!(
            lab_pid("dpk-", "dpk-x-42-0-s"),
            None,
            "another prefix's lab"
        );
        assert_eq!(lab_pid("dpk-x-", "dpk-42-0-s"), None);
    }

    #[test]
    fn the_default_prefix_is_valid() {
        validate_prefix(DEFAULT_PREFIX).unwrap();
    }

    #[test]
    fn messages_name_the_value_the_limit_and_the_fix() {
        let msg = |p: &str| validate_prefix(p).unwrap_err().to_string();
        assert_eq!(
            msg("my app-"),
            "invalid namespace prefix \"my app-\": ' ' at byte 2 is not allowed; use ASCII \
             letters, digits, '-', '_' and '.' only, e.g. \"myapp-\""
        );
        assert_eq!(
            msg("app1"),
            "invalid namespace prefix \"app1\": it must not end with a digit (the pid follows \
             it, and `app11-0-c` would be ambiguous); end it with '-', e.g. \"app1-\""
        );
        let long = "a".repeat(MAX_PREFIX_LEN + 1);
        assert!(
            msg(&long).contains("is 233 bytes long, the limit is 232"),
            "{}",
            msg(&long)
        );
        assert!(msg("").contains("it is empty"));
        assert!(msg("-x").contains("must start with an ASCII letter or digit"));
        assert!(msg("a/b").contains("'/' at byte 1"));
    }

    /// What `ip netns` accepts (iproute2's `invalid_name`), plus a NUL, which no path can hold.
    fn valid_for_ip_netns(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= NAME_MAX
            && !name.contains(['/', '\0'])
            && name != "."
            && name != ".."
    }

    fn any_prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            // Mostly near-valid prefixes, so that every rule gets exercised.
            "[A-Za-z0-9][A-Za-z0-9._-]{0,12}",
            "[a-z0-9._/ +-]{0,8}",
            ".{0,300}",
            "a{230,234}-?",
        ]
    }

    proptest! {
        /// Never panics; whatever it accepts gives names `ip netns` accepts, for any pid and
        /// counter, that parse back to their pid.
        #[test]
        fn accepted_prefixes_make_valid_names(prefix in any_prefix(), pid: u32, n: u32) {
            if validate_prefix(&prefix).is_ok() {
                for role in ["c", "r", "s"] {
                    let name = name(&prefix, pid, n, role);
                    prop_assert!(valid_for_ip_netns(&name), "{name}");
                    prop_assert_eq!(lab_pid(&prefix, &name), Some(pid));
                }
            } else {
                let msg = validate_prefix(&prefix).unwrap_err().to_string();
                prop_assert!(msg.starts_with("invalid namespace prefix "), "{}", msg);
            }
        }

        /// The sweep of one valid prefix never claims a namespace another valid prefix made.
        #[test]
        fn prefixes_never_claim_each_others_namespaces(
            ours in "[a-z0-9][a-z0-9._-]{0,6}",
            theirs in "[a-z0-9][a-z0-9._-]{0,6}",
            pid: u32,
            n: u32,
        ) {
            prop_assume!(ours != theirs);
            prop_assume!(validate_prefix(&ours).is_ok() && validate_prefix(&theirs).is_ok());
            for role in ["c", "r", "s"] {
                let theirs = name(&theirs, pid, n, role);
                prop_assert_eq!(lab_pid(&ours, &theirs), None, "{} claimed by {}", theirs, ours);
            }
        }

        /// Related prefixes are where a claim could hide: one a prefix of the other.
        #[test]
        fn extended_prefixes_never_claim_each_others_namespaces(
            base in "[a-z][a-z0-9._-]{0,4}[a-z._-]",
            ext in "[a-z0-9._-]{0,6}[a-z._-]",
            pid: u32,
            n: u32,
        ) {
            let longer = format!("{base}{ext}");
            prop_assume!(validate_prefix(&base).is_ok() && validate_prefix(&longer).is_ok());
            for role in ["c", "r", "s"] {
                prop_assert_eq!(lab_pid(&base, &name(&longer, pid, n, role)), None);
                prop_assert_eq!(lab_pid(&longer, &name(&base, pid, n, role)), None);
            }
        }
    }
}
