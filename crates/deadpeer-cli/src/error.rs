//! Errors and exit codes: 1 for runtime failures, 2 for bad input, 3 for `--fail-on` matches,
//! always one line on stderr.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

use deadpeer::PolicyError;

/// Exit status for a runtime failure.
pub(crate) const RUNTIME: u8 = 1;
/// Exit status for bad input.
pub(crate) const USAGE: u8 = 2;
/// Exit status when `audit --fail-on` found a matching connection.
pub(crate) const MATCHED: u8 = 3;

/// A failure to report: a one-line message and an exit status.
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// Bad input: exit status 2.
    pub(crate) fn usage(message: impl fmt::Display) -> Self {
        Self {
            code: USAGE,
            message: message.to_string(),
        }
    }

    /// A runtime failure: exit status 1.
    pub(crate) fn runtime(message: impl fmt::Display) -> Self {
        Self {
            code: RUNTIME,
            message: message.to_string(),
        }
    }

    /// A check that found what it was told to fail on: exit status 3.
    pub(crate) fn matched(message: impl fmt::Display) -> Self {
        Self {
            code: MATCHED,
            message: message.to_string(),
        }
    }

    /// Prints `error: <message>` as one line on stderr and returns the exit status.
    pub(crate) fn report(&self) -> ExitCode {
        let _ = writeln!(io::stderr().lock(), "error: {}", one_line(&self.message));
        ExitCode::from(self.code)
    }
}

impl From<PolicyError> for CliError {
    /// A policy the kernel would not accept is bad input.
    fn from(e: PolicyError) -> Self {
        Self::usage(e)
    }
}

/// Collapses a message onto one line.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reports a clap error. Help and version go to stdout with status 0; a usage error becomes one
/// line on stderr (clap's first paragraph plus any tip) with status 2.
pub(crate) fn clap_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(USAGE)
        }
        _ => {
            let text = e.render().to_string();
            let mut paragraphs = text.split("\n\n");
            let mut line = paragraphs.next().unwrap_or_default().to_owned();
            for p in paragraphs {
                let p = p.trim();
                if p.starts_with("tip:") {
                    line.push_str("; ");
                    line.push_str(p);
                }
            }
            let line = one_line(line.trim_start_matches("error:"));
            let _ = writeln!(io::stderr().lock(), "error: {line} (see --help)");
            ExitCode::from(USAGE)
        }
    }
}

/// Replaces Rust's panic message and backtrace with one line, and exits with status 1.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".to_owned());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            io::stderr().lock(),
            "error: internal error{at}: {}; this is a bug in deadpeer, please report it",
            one_line(&what)
        );
        // `deadpeer watch`'s tracing instance must not outlive it.
        #[cfg(target_os = "linux")]
        crate::watch::cleanup();
        #[allow(
            clippy::exit,
            reason = "a panic hook: the process ends here with the CLI's runtime-error status"
        )]
        std::process::exit(RUNTIME.into());
    }));
}
