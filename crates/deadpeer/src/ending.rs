//! How a connection ended, from the peer's side of the story: [`Ending`].

use std::fmt;

/// How a watched connection ended, decided from what the kernel showed at that moment: the
/// errno, `TCP_INFO`, and whether our keepalive probes or retransmissions were outstanding.
///
/// Where a [`Cause`](crate::Cause) says *how the kernel found out* (a timeout, a reset, an ICMP
/// error), an `Ending` says *what happened to the peer*, and whether it is an alarm:
///
/// | ending | what the kernel showed | what it means | [`is_death`](Self::is_death) | event |
/// |---|---|---|---|---|
/// | [`Closed`](Self::Closed) | a FIN: EOF, state `CLOSE_WAIT`, no error | the peer closed its side cleanly | no | DEBUG `connection ended` |
/// | [`Aborted`](Self::Aborted) | an RST (`ECONNRESET`, or `EPIPE` after a FIN) with no probe or retransmission of ours outstanding; or the kernel aborted it for a reason it did not name (`Cause::Aborted`) | the peer application quit: closed with unread data, `SO_LINGER` 0, a killed process | no | DEBUG `connection ended` |
/// | [`Forgot`](Self::Forgot) | an RST while a retransmission (`tcpi_retransmits` > 0) or a keepalive probe (`tcpi_probes` > 0, the peer's window open) was outstanding | the peer host no longer knows the connection: it rebooted, or a NAT or load balancer lost the flow | yes | WARN `dead peer detected` |
/// | [`Vanished`](Self::Vanished) | `ETIMEDOUT` with probes or retransmissions unanswered, or ICMP host or network unreachable | the peer host or the path is gone | yes | WARN `dead peer detected` |
/// | [`Refused`](Self::Refused) | ICMP port or protocol unreachable, administratively prohibited | something on the path rejects the connection's packets | yes | WARN `dead peer detected` |
/// | [`Stalled`](Self::Stalled) | `ETIMEDOUT` with the peer's window at 0 and its probes answered | the peer is alive but stopped reading, past the user timeout | yes | WARN `dead peer detected` |
///
/// Only the four deaths count in `deadpeer.dead_connections`; every ending counts in
/// `deadpeer.ended_connections` under the label `deadpeer.ending` ([`as_str`](Self::as_str)).
/// The measurements behind each row are in docs/kernel.md, "How connections end".
///
/// # Limits
///
/// The RST itself does not say why it was sent; what was outstanding when it came does, and
/// not always (all measured, docs/kernel.md):
///
/// - A peer that forgot the connection and is told so by the first transmission of our data
///   (rather than by a probe or a retransmission) answers it with an RST that looks exactly
///   like an application's abort: it is [`Aborted`](Self::Aborted). So is a peer that forgot
///   while stalled (window 0): its probes are zero-window probes, outstanding most of the time
///   while a peer stalls, so they cannot tell a forgotten connection from an abort.
/// - An application that aborts while one of our retransmissions is outstanding (a lossy path)
///   looks like a forgotten connection: [`Forgot`](Self::Forgot).
/// - Without `TCP_INFO` (off Linux and Android) nothing says whether a probe was outstanding:
///   every RST is [`Aborted`](Self::Aborted), and every timeout [`Vanished`](Self::Vanished).
///
/// ```
/// use deadpeer::{Cause, Ending};
///
/// // An RST with nothing of ours outstanding: the peer application quit.
/// assert_eq!(Cause::Reset.ending(None), Ending::Aborted);
/// assert!(!Ending::Aborted.is_death());
/// assert_eq!(Cause::KeepaliveTimeout.ending(None), Ending::Vanished);
/// assert_eq!(Ending::Vanished.as_str(), "vanished");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ending {
    /// The peer closed its side cleanly (a FIN). The connection can still carry our data to the
    /// peer (a half-close), but the peer will send nothing more.
    Closed,
    /// The peer's application aborted the connection (an RST with nothing of ours outstanding),
    /// or the kernel aborted it for a reason it did not name.
    Aborted,
    /// The peer's host answered a keepalive probe or a retransmission with an RST: it no longer
    /// knows the connection (it rebooted, or a NAT or load balancer on the path lost the flow).
    Forgot,
    /// Keepalive probes or retransmissions went unanswered, or the network said the host or
    /// network cannot be reached: the peer's host or the path is gone.
    Vanished,
    /// Something on the path refused the connection's packets (ICMP port or protocol
    /// unreachable, administratively prohibited), as a firewall's `reject` does.
    Refused,
    /// The peer is alive but stopped reading: its window stayed at 0 until the user timeout.
    Stalled,
}

impl Ending {
    /// Every ending, in declaration order.
    pub const ALL: [Ending; 6] = [
        Ending::Closed,
        Ending::Aborted,
        Ending::Forgot,
        Ending::Vanished,
        Ending::Refused,
        Ending::Stalled,
    ];

    /// The ending in snake case: the `deadpeer.ending` field of the events and label of the
    /// [metrics](crate#features).
    pub fn as_str(&self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::Aborted => "aborted",
            Ending::Forgot => "forgot",
            Ending::Vanished => "vanished",
            Ending::Refused => "refused",
            Ending::Stalled => "stalled",
        }
    }

    /// Whether the ending means something is wrong with the peer's host or the path: `true`
    /// for [`Forgot`](Self::Forgot), [`Vanished`](Self::Vanished), [`Refused`](Self::Refused)
    /// and [`Stalled`](Self::Stalled), which are WARN and count in
    /// `deadpeer.dead_connections`; `false` for a clean close and an application's abort.
    pub fn is_death(&self) -> bool {
        !matches!(self, Ending::Closed | Ending::Aborted)
    }

    /// The ending from its index in [`ALL`](Self::ALL), as the latch keeps it.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn from_index(i: u8) -> Option<Ending> {
        Self::ALL.get(usize::from(i)).copied()
    }

    /// The ending's index in [`ALL`](Self::ALL).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub(crate) fn index(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_names_are_distinct() {
        for (i, e) in Ending::ALL.iter().enumerate() {
            assert_eq!(Ending::from_index(e.index()), Some(*e));
            assert_eq!(usize::from(e.index()), i);
        }
        assert_eq!(Ending::from_index(6), None);
        let names: std::collections::HashSet<_> = Ending::ALL.iter().map(Ending::as_str).collect();
        assert_eq!(names.len(), 6);
        let deaths = Ending::ALL.iter().filter(|e| e.is_death()).count();
        assert_eq!(deaths, 4);
    }
}
