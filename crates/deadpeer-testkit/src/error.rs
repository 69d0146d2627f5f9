//! The error type returned when a lab cannot be built or a fault cannot be applied.

use std::fmt;
use std::io;

use crate::Tool;

/// Why a [`Lab`](crate::Lab) could not be created, or why a fault could not be applied or undone.
///
/// [`LabError::is_skip`] tells apart the errors that mean "this machine cannot run lab tests"
/// (missing privileges, missing `ip`), which [`lab_or_skip!`](crate::lab_or_skip!) turns into a
/// skipped test, from real failures, which should fail the test.
///
/// Its `Display` is one line that names the value, what went wrong and how to fix it.
#[derive(Debug)]
#[non_exhaustive]
pub enum LabError {
    /// The process lacks the capabilities needed to create network namespaces and veth links.
    Privilege {
        /// What is missing and how to fix it, in one line.
        reason: String,
    },
    /// A program the lab runs could not be found or run: `ip` (iproute2), `nft` (nftables) for
    /// [`Lab::reject`](crate::Lab::reject), or one the test named with
    /// [`LabBuilder::requires`](crate::LabBuilder::requires).
    MissingTool {
        /// The program, and the Debian package that installs it.
        tool: Tool,
        /// Why it could not be run: not in `PATH`, or the error from spawning it.
        source: io::Error,
    },
    /// An `ip` command ran and failed.
    Command {
        /// The full command line, e.g. `ip -n dpk-42-0-r route replace blackhole 10.1.3.1/32`.
        command: String,
        /// The exit status, as printed by the standard library (`exit status: 2`).
        status: String,
        /// What the command wrote to stderr, trimmed.
        stderr: String,
    },
    /// A name the testkit was given is not valid: a namespace prefix
    /// ([`LabBuilder::prefix`](crate::LabBuilder::prefix)) or a namespace name
    /// ([`Netns::open`](crate::Netns::open)). Bad input is reported here, never by a panic.
    InvalidName {
        /// What was given: `"namespace prefix"` or `"namespace name"`.
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it, the limit it breaks, and how to fix it.
        reason: String,
    },
    /// Another I/O operation failed (opening a namespace handle, `setns(2)`, a socket option, ...).
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl LabError {
    /// True when the error means the environment cannot host the lab a test asked for (missing
    /// privileges, or a missing program: iproute2, or one the test
    /// [requires](crate::LabBuilder::requires)), as opposed to a failure while building or
    /// faulting it.
    ///
    /// These are the errors [`lab_or_skip!`](crate::lab_or_skip!) turns into a skip.
    pub fn is_skip(&self) -> bool {
        matches!(
            self,
            LabError::Privilege { .. } | LabError::MissingTool { .. }
        )
    }

    /// True for a name the testkit does not accept ([`LabError::InvalidName`]): a bug in the
    /// caller, never a reason to skip.
    pub fn is_invalid_name(&self) -> bool {
        matches!(self, LabError::InvalidName { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Privilege { reason } => f.write_str(reason),
            LabError::MissingTool { tool, source } => write!(
                f,
                "`{}` could not be run ({source}); install {} (e.g. `apt-get install {}`)",
                tool.program(),
                tool.package(),
                tool.package()
            ),
            LabError::Command {
                command,
                status,
                stderr,
            } => {
                write!(f, "`{command}` failed ({status})")?;
                if !stderr.is_empty() {
                    write!(f, ": {stderr}")?;
                }
                Ok(())
            }
            LabError::InvalidName {
                what,
                value,
                reason,
            } => write!(f, "invalid {what} {value:?}: {reason}"),
            LabError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for LabError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LabError::MissingTool { source, .. } | LabError::Io { source, .. } => Some(source),
            LabError::Privilege { .. }
            | LabError::Command { .. }
            | LabError::InvalidName { .. } => None,
        }
    }
}

impl From<LabError> for io::Error {
    /// Converts into an `io::Error`, keeping the original error as the inner error.
    ///
    /// Privilege errors become [`io::ErrorKind::PermissionDenied`], a missing program becomes
    /// [`io::ErrorKind::NotFound`], an invalid name becomes [`io::ErrorKind::InvalidInput`], I/O
    /// errors keep their kind, and the rest become
    /// [`io::ErrorKind::Other`].
    fn from(err: LabError) -> Self {
        let kind = match &err {
            LabError::Privilege { .. } => io::ErrorKind::PermissionDenied,
            LabError::MissingTool { .. } => io::ErrorKind::NotFound,
            LabError::InvalidName { .. } => io::ErrorKind::InvalidInput,
            LabError::Io { source, .. } => source.kind(),
            LabError::Command { .. } => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}
