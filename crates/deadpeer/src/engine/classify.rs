//! The classifier: what the kernel did to a connection, from its errno and `TCP_INFO`, as a
//! [`Cause`]. Built without feature `tokio` too, for [`Cause::from_os_error`]. The per-OS errno
//! tables (`sys::code`) are its vocabulary.

use crate::ending::Ending;
use crate::error::Cause;
use crate::sys::{Code, TcpInfo, code};

/// The kernel's verdict on a connection that reported `errno`: `Some(cause)` when the kernel
/// closed it, `None` when the error leaves the connection alive (a transient error, or one of the
/// application's own making).
///
/// With `TCP_INFO` (Linux), a connection is dead when its state is `CLOSE`; the errno then names
/// the cause (docs/kernel.md, "How connections die"):
///
/// | errno | cause |
/// |---|---|
/// | `ETIMEDOUT` | [`Stalled`](Cause::Stalled) when the peer's window is 0 and its last probe was answered; [`RetransmitTimeout`](Cause::RetransmitTimeout) with retransmissions, backoff, unacknowledged data or a zero window; otherwise [`KeepaliveTimeout`](Cause::KeepaliveTimeout) |
/// | `ECONNRESET`, `EPIPE` | [`Reset`](Cause::Reset) (`EPIPE`: reset after the peer's FIN) |
/// | `EHOSTUNREACH`, `ENETUNREACH`, `EHOSTDOWN`, `ENONET`, `EOPNOTSUPP` | [`Unreachable`](Cause::Unreachable) |
/// | `ECONNREFUSED`, `ENOPROTOOPT`, `EACCES` | [`Refused`](Cause::Refused) |
/// | anything else | [`Aborted`](Cause::Aborted) |
///
/// Without `TCP_INFO`, only the errnos that a closed connection alone returns count.
pub(crate) fn classify(errno: i32, info: Option<&TcpInfo>) -> Option<Cause> {
    match info {
        Some(info) if info.state != TcpInfo::CLOSE => None,
        Some(info) => Some(cause_of(errno, Some(info))),
        None => match code(errno) {
            Code::Pipe | Code::NotConnected | Code::Other => None,
            _ => Some(cause_of(errno, None)),
        },
    }
}

/// The cause `errno` names (`Aborted` when it names none), with `TCP_INFO` at the moment of
/// death where there is one. Without it (off Linux), a timeout is reported as a keepalive
/// timeout: the OS does not say whether probes or retransmissions went unanswered.
pub(crate) fn cause_of(errno: i32, info: Option<&TcpInfo>) -> Cause {
    match code(errno) {
        Code::TimedOut => match info {
            Some(i) if i.snd_wnd == Some(0) && i.probes == 0 => Cause::Stalled,
            Some(i)
                if i.retransmits > 0 || i.backoff > 0 || i.unacked > 0 || i.snd_wnd == Some(0) =>
            {
                Cause::RetransmitTimeout
            }
            _ => Cause::KeepaliveTimeout,
        },
        Code::KeepaliveFailed => Cause::KeepaliveTimeout,
        Code::Reset | Code::Pipe => Cause::Reset,
        Code::Unreachable => Cause::Unreachable,
        Code::Refused => Cause::Refused,
        Code::Aborted | Code::NotConnected | Code::Other => Cause::Aborted,
    }
}

/// What happened to the peer, from the cause of a death and `TCP_INFO` at that moment (the
/// table is on [`Ending`]). An RST is [`Ending::Forgot`] when it met a retransmission of ours
/// (`tcpi_retransmits` > 0) or a keepalive probe (`tcpi_probes` > 0 with the peer's window
/// open: with the window at 0 the probes are zero-window probes, outstanding most of the time
/// while a peer stalls), else [`Ending::Aborted`]. `tcp_reset` purges the write queue
/// (`tcpi_unacked` and `tcpi_backoff` read 0) but leaves both counters (docs/kernel.md, "How
/// connections end").
pub(crate) fn ending_of(cause: Cause, info: Option<&TcpInfo>) -> Ending {
    match cause {
        Cause::KeepaliveTimeout | Cause::RetransmitTimeout | Cause::Unreachable => Ending::Vanished,
        Cause::Stalled => Ending::Stalled,
        Cause::Refused => Ending::Refused,
        Cause::Reset => match info {
            Some(i) if i.retransmits > 0 || (i.probes > 0 && i.snd_wnd != Some(0)) => {
                Ending::Forgot
            }
            _ => Ending::Aborted,
        },
        Cause::Aborted => Ending::Aborted,
    }
}

/// Whether `errno` is the kernel giving up waiting on the peer (`ETIMEDOUT`, `WSAETIMEDOUT`).
#[cfg(feature = "reqwest")]
pub(crate) fn is_timeout(errno: i32) -> bool {
    code(errno) == Code::TimedOut
}

/// Whether `errno` is what a socket returns *after* the kernel closed it, rather than the reason
/// it closed: the reason, if still pending, is in `SO_ERROR`.
#[cfg(feature = "tokio")]
pub(crate) fn is_aftermath(errno: i32) -> bool {
    matches!(code(errno), Code::Pipe | Code::NotConnected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_death(probes: u8, retransmits: u8, snd_wnd: Option<u32>) -> TcpInfo {
        TcpInfo {
            state: TcpInfo::CLOSE,
            probes,
            retransmits,
            snd_wnd,
            ..TcpInfo::default()
        }
    }

    /// The rows of docs/kernel.md, "How connections end".
    #[test]
    fn a_reset_is_forgot_only_when_it_met_a_probe_or_retransmission() {
        let reset = |i: TcpInfo| ending_of(Cause::Reset, Some(&i));
        assert_eq!(
            reset(at_death(1, 0, Some(65536))),
            Ending::Forgot,
            "forget_probe"
        );
        assert_eq!(
            reset(at_death(0, 3, Some(65536))),
            Ending::Forgot,
            "forget_retransmit"
        );
        assert_eq!(
            reset(at_death(0, 0, Some(65536))),
            Ending::Aborted,
            "abort_idle"
        );
        assert_eq!(
            reset(at_death(1, 0, Some(0))),
            Ending::Aborted,
            "abort_stalled"
        );
        assert_eq!(
            reset(at_death(1, 0, None)),
            Ending::Forgot,
            "no window before 6.2"
        );
        assert_eq!(
            ending_of(Cause::Reset, None),
            Ending::Aborted,
            "no TCP_INFO"
        );
        assert_eq!(ending_of(Cause::Stalled, None), Ending::Stalled);
        assert_eq!(ending_of(Cause::Unreachable, None), Ending::Vanished);
        assert_eq!(ending_of(Cause::Refused, None), Ending::Refused);
        assert_eq!(ending_of(Cause::Aborted, None), Ending::Aborted);
    }
}
