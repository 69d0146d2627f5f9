use std::fmt;

/// A field of a [`KeepalivePolicy`](super::KeepalivePolicy), as named in its string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `idle` (`TCP_KEEPIDLE`).
    Idle,
    /// `interval` (`TCP_KEEPINTVL`).
    Interval,
    /// `probes` (`TCP_KEEPCNT`).
    Probes,
    /// `user_timeout` (`TCP_USER_TIMEOUT`).
    UserTimeout,
}

impl Field {
    /// The field's name in the string form.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Idle => "idle",
            Field::Interval => "interval",
            Field::Probes => "probes",
            Field::UserTimeout => "user_timeout",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with a policy; see [`PolicyError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// A value lies outside the range the kernel accepts.
    OutOfRange,
    /// A duration is finer than the kernel's granularity (seconds, or milliseconds for the user
    /// timeout) and would be truncated.
    NotWhole,
    /// A policy string could not be parsed.
    Parse,
    /// A goal (`detect_within`, `under_idle_timeout`) cannot be met within the kernel's limits.
    Unsatisfiable,
}

/// An invalid keepalive policy, with a message that names the value, the limit and the fix.
///
/// ```
/// use deadpeer::{KeepalivePolicy, PolicyErrorKind, policy::Field};
///
/// let err = "idle=60s,interval=10s,probes=0".parse::<KeepalivePolicy>().unwrap_err();
/// assert_eq!(err.kind(), PolicyErrorKind::OutOfRange);
/// assert_eq!(err.field(), Some(Field::Probes));
/// assert_eq!(
///     err.to_string(),
///     "probes = 0 is out of range: the kernel accepts 1..=127 (TCP_KEEPCNT); use probes=1"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    kind: PolicyErrorKind,
    field: Option<Field>,
    message: String,
}

impl PolicyError {
    pub(crate) fn new(kind: PolicyErrorKind, field: Option<Field>, message: String) -> Self {
        Self {
            kind,
            field,
            message,
        }
    }

    pub(crate) fn out_of_range(field: Field, value: String, range: &str, nearest: String) -> Self {
        Self::new(
            PolicyErrorKind::OutOfRange,
            Some(field),
            format!(
                "{field} = {value} is out of range: the kernel accepts {range}; use {field}={nearest}"
            ),
        )
    }

    pub(crate) fn parse(field: Option<Field>, message: String) -> Self {
        Self::new(PolicyErrorKind::Parse, field, message)
    }

    pub(crate) fn unsatisfiable(message: String) -> Self {
        Self::new(PolicyErrorKind::Unsatisfiable, None, message)
    }

    /// What went wrong.
    pub fn kind(&self) -> PolicyErrorKind {
        self.kind
    }

    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<Field> {
        self.field
    }

    /// Whether a value lies outside the kernel's range.
    pub fn is_out_of_range(&self) -> bool {
        self.kind == PolicyErrorKind::OutOfRange
    }

    /// Whether a duration is finer than the kernel's granularity.
    pub fn is_not_whole(&self) -> bool {
        self.kind == PolicyErrorKind::NotWhole
    }

    /// Whether a policy string could not be parsed.
    pub fn is_parse(&self) -> bool {
        self.kind == PolicyErrorKind::Parse
    }

    /// Whether a goal cannot be met.
    pub fn is_unsatisfiable(&self) -> bool {
        self.kind == PolicyErrorKind::Unsatisfiable
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

impl From<PolicyError> for std::io::Error {
    fn from(e: PolicyError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}
