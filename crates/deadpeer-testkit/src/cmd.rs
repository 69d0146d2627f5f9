//! Running `ip` from iproute2, with errors that carry the command line and stderr.

use std::io;
use std::process::{Command, Stdio};

use crate::{LabError, Tool};

/// The binary every fault and topology step runs.
const IP: &str = Tool::IP.program();

/// Runs `ip ARGS...` and returns its stdout, or an error holding the command line and stderr.
pub(crate) fn ip<S: AsRef<str>>(args: &[S]) -> Result<String, LabError> {
    let line = command_line(args);
    let output = Command::new(IP)
        .args(args.iter().map(AsRef::as_ref))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                Tool::IP.missing(source)
            } else {
                LabError::io(format!("spawning `{line}`"), source)
            }
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip ARGS...` and ignores any failure. For cleanup paths that must not fail loudly.
pub(crate) fn ip_quiet<S: AsRef<str>>(args: &[S]) {
    let _ = Command::new(IP)
        .args(args.iter().map(AsRef::as_ref))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Checks once that `ip` can be run at all (`ip -V`).
pub(crate) fn check_ip() -> Result<(), LabError> {
    ip(&["-V"]).map(drop)
}

fn command_line<S: AsRef<str>>(args: &[S]) -> String {
    let mut line = String::from(IP);
    for arg in args {
        line.push(' ');
        line.push_str(arg.as_ref());
    }
    line
}
