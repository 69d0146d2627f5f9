//! reqwest: a [`KeepalivePolicy`] on every connection a [`reqwest::Client`] opens, and the
//! kernel's verdict read back from its errors.
//!
//! ```
//! use deadpeer::KeepalivePolicy;
//! use deadpeer::reqwest::{ClientBuilderExt, PeerDeath};
//!
//! async fn fetch() -> Result<(), reqwest::Error> {
//!     let client = reqwest::Client::builder()
//!         .tcp_keepalive_policy(KeepalivePolicy::FAST) // dead within 30 s
//!         .build()?;
//!
//!     match client.get("http://10.0.0.2:8080/slow").send().await {
//!         Ok(response) => println!("{}", response.status()),
//!         Err(err) => match PeerDeath::find(&err) {
//!             Some(death) => eprintln!("server dead: {death}"), // peer died: timeout (…; os error 110)
//!             None => eprintln!("request failed: {err}"),
//!         },
//!     }
//!     Ok(())
//! }
//! ```
//!
//! # What reqwest users get
//!
//! - **The policy on every connection.** [`ClientBuilderExt::tcp_keepalive_policy`] sets all four
//!   values through reqwest's own setters (`tcp_keepalive`, `tcp_keepalive_interval`,
//!   `tcp_keepalive_retries`, `tcp_user_timeout`), replacing reqwest's defaults (15 s, 15 s,
//!   3 probes, user timeout 30 s: read back from a reqwest 0.13.5 socket). hyper-util's connector sets them on each
//!   new socket before it connects, so a request on a connection to a dead server fails within
//!   the policy's [`detection_bound`](KeepalivePolicy::detection_bound).
//! - **The cause, from the errno.** [`PeerDeath::find`] walks a [`reqwest::Error`]'s
//!   [`source`](std::error::Error::source) chain to the OS error and maps it as deadpeer maps the
//!   errno of a death: `ECONNRESET`/`EPIPE` → [`Reset`](Cause::Reset), `EHOSTUNREACH`/`ENETUNREACH`
//!   → [`Unreachable`](Cause::Unreachable), `ECONNREFUSED`/`ENOPROTOOPT`/`EACCES` →
//!   [`Refused`](Cause::Refused), and `ETIMEDOUT` → [a timeout](PeerDeath::is_timeout).
//!
//! # What they do not get, and why
//!
//! reqwest's connector is sealed: [`ClientBuilder::connector_layer`] hands a layer reqwest's own
//! boxed connection (after TLS) and wants one back. That type exposes no socket, and only reqwest
//! can build one, so a layer can neither reach the socket nor wrap the stream. deadpeer cannot
//! watch reqwest's connections, and none of what a wrapped stream gives is there:
//!
//! - no [`DeadPeer`](crate::DeadPeer) with addresses, `connected_for`, `idle_for` and policy;
//! - no `TCP_INFO` at the moment of death, so an `ETIMEDOUT` cannot be told apart: unanswered
//!   keepalive probes, unacknowledged data, and a peer that stopped reading all give it;
//! - no latch (a later request simply opens a new connection), no `dead peer detected` event, no
//!   [`Liveness`](crate::Liveness) future: reqwest users learn of a death when a request or a
//!   body read fails;
//! - no strict mode: a `setsockopt` that fails is a `WARN` of hyper-util, and the connection
//!   goes on without it;
//! - no cause at all over HTTP/2 (reqwest's `http2` feature, when TLS ALPN or prior knowledge
//!   picks it): h2 keeps only the [`io::ErrorKind`] of the connection's error, inside an
//!   `h2::Error` that has no [`source`](std::error::Error::source), so the errno is gone and
//!   [`PeerDeath::find`] returns `None`. The policy is on the socket all the same.
//!
//! [`ClientBuilder::connector_layer`]: reqwest::ClientBuilder::connector_layer

use std::error::Error;
use std::fmt;
use std::io;

use reqwest::ClientBuilder;

use crate::error::Cause;
use crate::policy::KeepalivePolicy;

mod sealed {
    pub trait Sealed {}
    impl Sealed for reqwest::ClientBuilder {}
}

/// Puts a [`KeepalivePolicy`] on a [`reqwest::ClientBuilder`]. Sealed.
pub trait ClientBuilderExt: sealed::Sealed + Sized {
    /// Sets all four values of `policy` on every connection the client opens, in one call:
    ///
    /// | policy | reqwest setter | socket option |
    /// |---|---|---|
    /// | [`idle`](KeepalivePolicy::idle) | `tcp_keepalive` | `SO_KEEPALIVE`, `TCP_KEEPIDLE` |
    /// | [`interval`](KeepalivePolicy::interval) | `tcp_keepalive_interval` | `TCP_KEEPINTVL` |
    /// | [`probes`](KeepalivePolicy::probes) | `tcp_keepalive_retries` | `TCP_KEEPCNT` |
    /// | [`effective_user_timeout`](KeepalivePolicy::effective_user_timeout) | `tcp_user_timeout` | `TCP_USER_TIMEOUT` (Linux, Android, Fuchsia) |
    ///
    /// [`UserTimeout::Off`](crate::UserTimeout::Off) passes `None`, so reqwest leaves
    /// `TCP_USER_TIMEOUT` unset, at the kernel's 0 (off), instead of its own 30 s default. The
    /// values are validated by the policy, so nothing is truncated; call this after reqwest's
    /// individual setters, which it overrides.
    ///
    /// ```
    /// use deadpeer::KeepalivePolicy;
    /// use deadpeer::reqwest::ClientBuilderExt;
    ///
    /// # fn main() -> Result<(), reqwest::Error> {
    /// let client = reqwest::Client::builder()
    ///     .tcp_keepalive_policy(KeepalivePolicy::FAST) // dead within 30 s
    ///     .build()?;
    /// # drop(client); Ok(()) }
    /// ```
    fn tcp_keepalive_policy(self, policy: KeepalivePolicy) -> ClientBuilder;
}

impl ClientBuilderExt for ClientBuilder {
    fn tcp_keepalive_policy(self, policy: KeepalivePolicy) -> ClientBuilder {
        let builder = self
            .tcp_keepalive(policy.idle())
            .tcp_keepalive_interval(policy.interval())
            .tcp_keepalive_retries(policy.probes());
        #[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
        let builder = builder.tcp_user_timeout(policy.effective_user_timeout());
        builder
    }
}

/// What the OS error inside a [`reqwest::Error`] says about the connection's peer.
///
/// Only the errno is known: reqwest's connector is sealed, so deadpeer cannot wrap its streams
/// and read `TCP_INFO` at the moment of death, as it does for a [`DeadPeer`](crate::DeadPeer).
/// Hence [`cause`](Self::cause) is `None` for `ETIMEDOUT`, which three causes share, and
/// [`possible_causes`](Self::possible_causes) names them.
///
/// ```
/// use deadpeer::Cause;
/// use deadpeer::reqwest::PeerDeath;
///
/// let reset = PeerDeath::from_raw_os_error(104).expect("ECONNRESET");
/// assert_eq!(reset.cause(), Some(Cause::Reset));
///
/// let timeout = PeerDeath::from_raw_os_error(110).expect("ETIMEDOUT");
/// assert!(timeout.is_timeout());
/// assert_eq!(timeout.cause(), None); // which timeout needs TCP_INFO
/// assert_eq!(
///     timeout.possible_causes(),
///     [Cause::KeepaliveTimeout, Cause::RetransmitTimeout, Cause::Stalled]
/// );
/// assert_eq!(timeout.to_string(), "peer died: timeout (keepalive, retransmit or stalled; os error 110)");
///
/// assert!(PeerDeath::from_raw_os_error(11).is_none()); // EAGAIN is no verdict
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerDeath {
    errno: i32,
    cause: Option<Cause>,
}

const TIMEOUTS: [Cause; 3] = [
    Cause::KeepaliveTimeout,
    Cause::RetransmitTimeout,
    Cause::Stalled,
];

impl PeerDeath {
    /// The death of the peer of an established connection, if `err` carries one.
    ///
    /// Walks `err`'s [`source`](Error::source) chain (reqwest → hyper-util → hyper →
    /// [`io::Error`], looking inside wrapped `io::Error`s too) to the first OS error that is a
    /// kernel's verdict on a connection, as [`from_raw_os_error`](Self::from_raw_os_error) judges
    /// it. Works on errors of [`send`](reqwest::RequestBuilder::send) and of reading a response
    /// body ([`chunk`](reqwest::Response::chunk), [`bytes`](reqwest::Response::bytes), …).
    ///
    /// `None` over HTTP/2, where h2 drops the errno (see the [module](self) docs), and when the
    /// error has no such OS error (a status, a redirect, reqwest's own
    /// [`timeout`](reqwest::ClientBuilder::timeout), a decode error), and for connect errors
    /// ([`is_connect`](reqwest::Error::is_connect)): a connection that was never established has
    /// no peer to lose, even when the errno is the same (`ETIMEDOUT` for an unanswered SYN,
    /// `ECONNREFUSED` for a closed port).
    pub fn find(err: &reqwest::Error) -> Option<PeerDeath> {
        if err.is_connect() {
            return None;
        }
        find_in(err)
    }

    /// The death an OS error names, or `None` if the errno is not one the kernel reports when it
    /// kills a connection (the table of [`Cause`], docs/kernel.md):
    ///
    /// | errno | [`cause`](Self::cause) |
    /// |---|---|
    /// | `ETIMEDOUT` | `None`: one of [`KeepaliveTimeout`](Cause::KeepaliveTimeout), [`RetransmitTimeout`](Cause::RetransmitTimeout), [`Stalled`](Cause::Stalled) |
    /// | `ECONNRESET`, `EPIPE` | [`Reset`](Cause::Reset) |
    /// | `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`, `ENONET`, `EOPNOTSUPP` | [`Unreachable`](Cause::Unreachable) |
    /// | `ECONNREFUSED`, `ENOPROTOOPT`, `EACCES` | [`Refused`](Cause::Refused) |
    ///
    /// Any other errno gives `None`.
    pub fn from_raw_os_error(errno: i32) -> Option<PeerDeath> {
        let cause = match crate::engine::classify::cause_of(errno, None) {
            Cause::Aborted => return None,
            _ if crate::engine::classify::is_timeout(errno) => None,
            cause => Some(cause),
        };
        Some(PeerDeath { errno, cause })
    }

    /// The OS error: `ETIMEDOUT` (110 on Linux), `ECONNRESET` (104), `EHOSTUNREACH` (113), ….
    pub fn raw_os_error(&self) -> i32 {
        self.errno
    }

    /// The cause, where the errno names one; `None` for `ETIMEDOUT` (see
    /// [`possible_causes`](Self::possible_causes)).
    pub fn cause(&self) -> Option<Cause> {
        self.cause
    }

    /// Whether the kernel gave up waiting on the peer (`ETIMEDOUT`): its probes went unanswered,
    /// sent data stayed unacknowledged, or the peer stopped reading, for the policy's user
    /// timeout. Telling these apart takes `TCP_INFO` at the moment of death, which only a
    /// deadpeer-wrapped connection has.
    pub fn is_timeout(&self) -> bool {
        crate::engine::classify::is_timeout(self.errno)
    }

    /// The causes the errno leaves possible: the one [`cause`](Self::cause), or the three
    /// timeouts for `ETIMEDOUT`.
    pub fn possible_causes(&self) -> &'static [Cause] {
        match self.cause {
            Some(cause) => {
                let i = Cause::ALL.iter().position(|c| *c == cause).unwrap_or(0);
                &Cause::ALL[i..=i]
            }
            None => &TIMEOUTS,
        }
    }

    /// The [`io::ErrorKind`] the errno carries (`TimedOut`, `ConnectionReset`, …).
    pub fn io_error_kind(&self) -> io::ErrorKind {
        io::Error::from_raw_os_error(self.errno).kind()
    }
}

impl fmt::Display for PeerDeath {
    /// `peer died: reset (os error 104)`, or for `ETIMEDOUT`
    /// `peer died: timeout (keepalive, retransmit or stalled; os error 110)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cause {
            Some(cause) => write!(f, "peer died: {cause} (os error {})", self.errno),
            None => write!(
                f,
                "peer died: timeout (keepalive, retransmit or stalled; os error {})",
                self.errno
            ),
        }
    }
}

/// The first death in `err`'s chain, looking inside `io::Error`s, whose `source` skips the error
/// they wrap.
fn find_in(err: &(dyn Error + 'static)) -> Option<PeerDeath> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            let found = match io.raw_os_error() {
                Some(errno) => PeerDeath::from_raw_os_error(errno),
                None => io.get_ref().and_then(|inner| find_in(inner)),
            };
            if found.is_some() {
                return found;
            }
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::tests::Outer;

    #[test]
    fn every_errno_of_the_table_maps_as_the_library_does() {
        for (errno, cause) in [
            (libc::ECONNRESET, Cause::Reset),
            (libc::EPIPE, Cause::Reset),
            (libc::EHOSTUNREACH, Cause::Unreachable),
            (libc::ENETUNREACH, Cause::Unreachable),
            (libc::ECONNREFUSED, Cause::Refused),
            (libc::ENOPROTOOPT, Cause::Refused),
            (libc::EACCES, Cause::Refused),
        ] {
            let death = PeerDeath::from_raw_os_error(errno).expect("a verdict");
            assert_eq!(death.cause(), Some(cause), "errno {errno}");
            assert_eq!(death.possible_causes(), [cause]);
            assert!(!death.is_timeout());
        }
        let timeout = PeerDeath::from_raw_os_error(libc::ETIMEDOUT).expect("a verdict");
        assert_eq!(timeout.io_error_kind(), io::ErrorKind::TimedOut);
        for errno in [0, -1, libc::EAGAIN, libc::EINTR, libc::ENOMEM, i32::MAX] {
            assert_eq!(PeerDeath::from_raw_os_error(errno), None, "errno {errno}");
        }
    }

    #[test]
    fn the_chain_is_walked_into_wrapped_io_errors() {
        let os = io::Error::from_raw_os_error(libc::ECONNRESET);
        let wrapped = io::Error::other(Outer(os));
        let found = find_in(&Outer(wrapped)).expect("found");
        assert_eq!(found.cause(), Some(Cause::Reset));
        assert_eq!(found.to_string(), "peer died: reset (os error 104)");
        let kind_only = Outer(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(find_in(&kind_only), None);
    }
}
