//! The programs a lab runs, and the Debian packages that install them.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::LabError;

/// An external program a test runs, with the Debian package that installs it.
///
/// A lab always needs [`Tool::IP`]; [`Lab::reject`](crate::Lab::reject) also needs
/// [`Tool::NFT`]. A test that runs a program of its own (`ss`, `curl`, …) names it with
/// [`LabBuilder::requires`](crate::LabBuilder::requires) (a test without a lab:
/// [`tool_or_skip!`](crate::tool_or_skip!)), so that a machine without it skips the test with one
/// line naming the package, instead of failing half-way:
///
/// ```no_run
/// use deadpeer_testkit::{Lab, Tool, lab_or_skip};
///
/// #[test]
/// fn curl_sees_the_reset() {
///     let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT).requires(Tool::CURL)) else {
///         return;
///     };
///     // ... lab.reject(..), then run curl in lab.client() ...
/// #   drop(lab);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tool {
    program: &'static str,
    package: &'static str,
}

impl Tool {
    /// `ip`, from iproute2: every lab step.
    pub const IP: Tool = Tool::new("ip", "iproute2");
    /// `nft`, from nftables: [`Lab::reject`](crate::Lab::reject).
    pub const NFT: Tool = Tool::new("nft", "nftables");
    /// `ss`, from iproute2.
    pub const SS: Tool = Tool::new("ss", "iproute2");
    /// `sysctl`, from procps.
    pub const SYSCTL: Tool = Tool::new("sysctl", "procps");
    /// `setpriv`, from util-linux.
    pub const SETPRIV: Tool = Tool::new("setpriv", "util-linux");
    /// `curl`, from curl.
    pub const CURL: Tool = Tool::new("curl", "curl");
    /// `python3`, from python3.
    pub const PYTHON3: Tool = Tool::new("python3", "python3");

    /// A program (a name looked up in `PATH`, or a path) and the Debian package that installs it.
    pub const fn new(program: &'static str, package: &'static str) -> Tool {
        Tool { program, package }
    }

    /// The program's name, as run.
    pub const fn program(self) -> &'static str {
        self.program
    }

    /// The Debian package that installs it.
    pub const fn package(self) -> &'static str {
        self.package
    }

    /// Where the program is: the first executable file of that name in `PATH`, the way
    /// `Command` and `ip netns exec` find it (or the path itself, if it has a `/`).
    ///
    /// # Errors
    ///
    /// [`LabError::MissingTool`] when there is none; its message names the package to install.
    pub fn find(self) -> Result<PathBuf, LabError> {
        let found = if self.program.contains('/') {
            is_executable(Path::new(self.program)).then(|| PathBuf::from(self.program))
        } else {
            // Without PATH, glibc's execvp searches its default, "/bin:/usr/bin".
            let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
            std::env::split_paths(&path)
                .map(|dir| dir.join(self.program))
                .find(|candidate| is_executable(candidate))
        };
        found.ok_or_else(|| self.missing(io::Error::new(io::ErrorKind::NotFound, "not in PATH")))
    }

    /// The error for this tool failing to start with `source`.
    pub(crate) fn missing(self, source: io::Error) -> LabError {
        LabError::MissingTool { tool: self, source }
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_is_on_path_and_names_the_package_of_what_is_not() {
        // `sh` is on every machine that can run the test suite.
        assert!(Tool::new("sh", "dash").find().unwrap().ends_with("sh"));
        assert!(Tool::new("/bin/sh", "dash").find().is_ok());
        let err = Tool::new("deadpeer-no-such-program", "no-such-package")
            .find()
            .unwrap_err();
        assert!(err.is_skip());
        assert_eq!(
            err.to_string(),
            "`deadpeer-no-such-program` could not be run (not in PATH); install no-such-package \
             (e.g. `apt-get install no-such-package`)"
        );
        // A directory or a file without an execute bit is not a program.
        assert!(Tool::new("/", "x").find().is_err());
        assert!(Tool::new("/proc/self/status", "x").find().is_err());
    }
}
