//! Joining the tracepoints into deaths, and classifying them with the library's own rules
//! ([`Cause::from_os_error`]).
//!
//! What the kernel does when it kills a connection (measured, docs/kernel.md "Tracepoints"):
//! `inet_sock_set_state` to `TCP_CLOSE`, then, in the same call, `inet_sk_error_report` with the
//! errno. Neither carries the socket's inode or network namespace; they are joined by the
//! connection's addresses (local, peer), which both carry. So a death is an error report that
//! directly follows its connection's move to `CLOSE`:
//!
//! - an error report on a connection that is not closing (an ICMP error with `IP_RECVERR`) is
//!   no death, as the library's `TCP_INFO` check (state `CLOSE`) says;
//! - the close of a connection that never reached `ESTABLISHED` (`SYN_SENT`, `SYN_RECV`) is a
//!   failed connection attempt, not a dead peer;
//! - the application's own abort (`SO_LINGER` 0, `shutdown` + `close` with unread data)
//!   reports with the peer's address already cleared (`dport=0`), matches no closing
//!   connection and is not reported either.
//!
//! `ETIMEDOUT` is a retransmission timeout when `tcp:tcp_retransmit_skb` fired for the
//! connection within `TCP_RTO_MAX` (120 s, the longest the retransmission timer waits) before
//! its death, and a keepalive timeout otherwise: the tracepoints do not give the `TCP_INFO`
//! figures the library reads. Zero-window probes are not retransmissions, so a `stalled`
//! connection (a peer that stops reading) is reported as `keepalive_timeout`.

use std::collections::HashMap;

use deadpeer::{Cause, Ending, TcpInfo};

use super::event::{CLOSE, ESTABLISHED, Event, Flow, Kind, SYN_RECV, SYN_SENT};

/// `TCP_RTO_MAX`: the retransmission timer never waits longer.
const RTO_MAX_S: f64 = 120.0;
/// How long a closed connection waits for its error report (it comes in the same kernel call).
const CLOSED_KEPT_S: f64 = 1.0;

/// A connection the kernel killed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Death {
    /// The kernel's timestamp of the error report, seconds on CLOCK_MONOTONIC.
    pub(crate) ts: f64,
    pub(crate) flow: Flow,
    pub(crate) errno: i32,
    pub(crate) cause: Cause,
    /// The library's ending for that cause, given the retransmissions seen (no probe is seen:
    /// a reset in answer to a keepalive probe is `aborted` here).
    pub(crate) ending: Ending,
    /// The state the connection left for `CLOSE`.
    pub(crate) state_before: u8,
    /// Retransmissions seen (since watch started) within `TCP_RTO_MAX` before the death.
    pub(crate) retransmits: u32,
    /// When the last of them was sent.
    pub(crate) last_retransmit: Option<f64>,
    /// When the connection reached `ESTABLISHED`, if watch saw it.
    pub(crate) established: Option<f64>,
}

/// What one event changed.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    Nothing,
    /// A connection reached `ESTABLISHED`: the owners' index no longer knows every connection.
    Opened,
    Death(Death),
}

#[derive(Debug, Default, Clone)]
struct State {
    established: Option<f64>,
    retransmits: u32,
    first_retransmit: Option<f64>,
    last_retransmit: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct Flows {
    live: HashMap<Flow, State>,
    /// Connections that just moved to `CLOSE`: when, from which state.
    closed: HashMap<Flow, (f64, u8, State)>,
    latest: f64,
}

impl Flows {
    pub(crate) fn on(&mut self, e: Event) -> Outcome {
        self.latest = self.latest.max(e.ts);
        match e.kind {
            Kind::SetState { new, .. } if new == ESTABLISHED => {
                let st = self.live.entry(e.flow).or_default();
                st.established = Some(e.ts);
                Outcome::Opened
            }
            Kind::SetState { old, new } if new == CLOSE => {
                let st = self.live.remove(&e.flow).unwrap_or_default();
                self.closed.insert(e.flow, (e.ts, old, st));
                Outcome::Nothing
            }
            Kind::SetState { .. } => Outcome::Nothing,
            Kind::Retransmit => {
                let st = self.live.entry(e.flow).or_default();
                // Retransmissions older than TCP_RTO_MAX were answered: start again.
                if st.last_retransmit.is_some_and(|t| e.ts - t > RTO_MAX_S) {
                    st.retransmits = 0;
                    st.first_retransmit = None;
                }
                st.retransmits += 1;
                st.first_retransmit.get_or_insert(e.ts);
                st.last_retransmit = Some(e.ts);
                Outcome::Nothing
            }
            Kind::ErrorReport { errno } => {
                let Some((_, old, st)) = self.closed.remove(&e.flow) else {
                    return Outcome::Nothing;
                };
                if old == SYN_SENT || old == SYN_RECV {
                    return Outcome::Nothing;
                }
                let recent = st.last_retransmit.is_some_and(|t| e.ts - t <= RTO_MAX_S);
                let retransmits = if recent { st.retransmits } else { 0 };
                let mut info = TcpInfo::default();
                info.state = TcpInfo::CLOSE;
                info.retransmits = u8::try_from(retransmits).unwrap_or(u8::MAX);
                let Some(cause) = Cause::from_os_error(errno, Some(&info)) else {
                    return Outcome::Nothing;
                };
                Outcome::Death(Death {
                    ts: e.ts,
                    flow: e.flow,
                    errno,
                    cause,
                    ending: cause.ending(Some(&info)),
                    state_before: old,
                    retransmits,
                    last_retransmit: st.last_retransmit.filter(|_| recent),
                    established: st.established,
                })
            }
        }
    }

    /// Forgets closed connections whose error report never came (every ordinary close).
    pub(crate) fn prune(&mut self) {
        let latest = self.latest;
        self.closed
            .retain(|_, (t, _, _)| latest - *t <= CLOSED_KEPT_S);
    }

    /// Connections tracked now, for tests of the bookkeeping.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.live.len() + self.closed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        (
            "10.0.0.1:7300".parse().unwrap(),
            "10.0.0.2:5000".parse().unwrap(),
        )
    }

    fn ev(ts: f64, kind: Kind) -> Event {
        Event {
            ts,
            flow: flow(),
            kind,
        }
    }

    fn die(f: &mut Flows, ts: f64, old: u8, errno: i32) -> Outcome {
        f.on(ev(ts, Kind::SetState { old, new: CLOSE }));
        f.on(ev(ts + 0.000_01, Kind::ErrorReport { errno }))
    }

    #[test]
    fn keepalive_and_retransmit_timeouts() {
        let mut f = Flows::default();
        let open = f.on(ev(
            1.0,
            Kind::SetState {
                old: 2,
                new: ESTABLISHED,
            },
        ));
        assert_eq!(open, Outcome::Opened);
        let Outcome::Death(d) = die(&mut f, 5.0, ESTABLISHED, 110) else {
            panic!()
        };
        assert_eq!(d.cause, Cause::KeepaliveTimeout);
        assert_eq!(d.established, Some(1.0));
        assert_eq!(d.retransmits, 0);

        f.on(ev(10.0, Kind::Retransmit));
        f.on(ev(10.5, Kind::Retransmit));
        let Outcome::Death(d) = die(&mut f, 11.5, ESTABLISHED, 110) else {
            panic!()
        };
        assert_eq!(d.cause, Cause::RetransmitTimeout);
        assert_eq!((d.retransmits, d.last_retransmit), (2, Some(10.5)));
        assert_eq!(d.established, None);
        assert_eq!(f.tracked(), 0);
    }

    #[test]
    fn old_retransmissions_do_not_count() {
        let mut f = Flows::default();
        f.on(ev(10.0, Kind::Retransmit));
        let Outcome::Death(d) = die(&mut f, 10.0 + RTO_MAX_S + 1.0, ESTABLISHED, 110) else {
            panic!()
        };
        assert_eq!(d.cause, Cause::KeepaliveTimeout);
        assert_eq!(d.last_retransmit, None);
    }

    #[test]
    fn resets_and_non_deaths() {
        let mut f = Flows::default();
        let Outcome::Death(d) = die(&mut f, 1.0, 8, 32) else {
            panic!()
        };
        assert_eq!(d.cause, Cause::Reset, "EPIPE in CLOSE-WAIT");
        // A refused connection attempt.
        assert_eq!(die(&mut f, 2.0, SYN_SENT, 111), Outcome::Nothing);
        // An error report on a live connection (IP_RECVERR).
        assert_eq!(
            f.on(ev(3.0, Kind::ErrorReport { errno: 113 })),
            Outcome::Nothing
        );
        // An ordinary close is forgotten after a second.
        f.on(ev(4.0, Kind::SetState { old: 9, new: CLOSE }));
        f.on(ev(5.5, Kind::SetState { old: 2, new: 3 }));
        f.prune();
        assert_eq!(f.tracked(), 0);
    }
}
