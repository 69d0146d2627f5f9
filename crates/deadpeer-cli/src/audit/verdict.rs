//! TCP state names, and the verdict on each connection from what the kernel reports.
//!
//! # Verdicts and their precedence
//!
//! The first rule that matches wins:
//!
//! 1. `stalled`: the zero-window probe timer is armed (`idiag_timer` 4), or the peer advertises
//!    a zero window (`tcpi_snd_wnd` 0) while bytes wait to be sent. The peer is alive but not
//!    reading; only `TCP_USER_TIMEOUT` ends this.
//! 2. `retransmitting`: the retransmission timer is armed and has fired (`idiag_timer` 1,
//!    `idiag_retrans` > 0): unacknowledged data, no answer. Keepalive never fires meanwhile.
//! 3. `probing`: the keepalive timer is armed with probes unanswered (`idiag_timer` 2,
//!    `tcpi_probes` > 0): the peer may be dying now.
//! 4. `leaked`: CLOSE-WAIT. The peer closed its side (FIN) and the application has not closed
//!    the socket. No kernel timer ends this state: it lasts until the application closes, so a
//!    CLOSE-WAIT that lasts is a descriptor leak (how long: `tcpi_last_ack_recv`, the time since
//!    the peer last sent anything, which for a socket that sends nothing is the time since the
//!    FIN).
//! 5. — for a state other than ESTABLISHED: `listening` (LISTEN), `opening` (SYN-SENT, SYN-RECV)
//!    or `closing` (FIN-WAIT-1/2, LAST-ACK, CLOSING, TIME-WAIT: after our own close); the kernel
//!    ends these on its own timers. The rest apply to ESTABLISHED connections:
//! 6. `protected`: the keepalive timer is armed, no probe outstanding.
//! 7. `sending`: data in flight, not yet retransmitted (`idiag_timer` 1, `idiag_retrans` 0). The
//!    kernel reports the retransmission timer in place of the keepalive timer, so whether
//!    keepalive is on cannot be seen at this moment; audit again.
//! 8. `unprotected`: no timer at all. Nothing will notice if the peer vanishes while the
//!    connection is idle.
//!
//! 9. `zombie` is not a rule on a listed socket: it is a socket the kernel has closed (state
//!    CLOSE, so in no table) that a process still holds, found through `/proc/<pid>/fd` (see
//!    `zombie.rs`).
//!
//! The kernel reports one timer per socket (`inet_sk_diag_fill`): retransmission first, then the
//! zero-window probe, then `sk_timer` (keepalive), which is why 1–3 exclude each other.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::diag::{Sock, SockTimer};

/// `TCP_ESTABLISHED`.
pub(crate) const ESTABLISHED: u8 = 1;
/// `TCP_CLOSE_WAIT`.
pub(crate) const CLOSE_WAIT: u8 = 8;

/// TCP states by kernel number (`TCP_ESTABLISHED` = 1 …), named as `ss` names them.
const STATES: [(u8, &str); 11] = [
    (1, "established"),
    (2, "syn-sent"),
    (3, "syn-recv"),
    (4, "fin-wait-1"),
    (5, "fin-wait-2"),
    (6, "time-wait"),
    (7, "closed"),
    (8, "close-wait"),
    (9, "last-ack"),
    (10, "listening"),
    (11, "closing"),
];

/// Every state, as a bit mask of `1 << TCP_*`.
const ALL: u32 = 0xffe;
const fn bit(state: u8) -> u32 {
    1 << state
}
/// `ss`'s default: every state but LISTEN, CLOSE, TIME-WAIT and SYN-RECV.
pub(crate) const CONNECTED: u32 = ALL & !(bit(10) | bit(7) | bit(6) | bit(3));
/// The states of sockets a process can hold (every state but TIME-WAIT and SYN-RECV, whose
/// sockets have no inode): what audit dumps to tell a zombie from a listed socket.
pub(crate) const HELD: u32 = ALL & !(bit(6) | bit(3));
/// CONNECTED without SYN-SENT.
const SYNCHRONIZED: u32 = CONNECTED & !bit(2);

/// The `ss` name of a state number.
pub(crate) fn state_name(state: u8) -> &'static str {
    STATES
        .iter()
        .find(|(n, _)| *n == state)
        .map_or("unknown", |(_, name)| name)
}

/// Parses `--state`: comma-separated state names (`established`, `syn-sent`, `syn-recv`,
/// `fin-wait-1`, `fin-wait-2`, `time-wait`, `closed`, `close-wait`, `last-ack`, `listening`,
/// `closing`; also `estab`, `listen`, `close`, and `_` for `-`) or the groups `all`, `connected`
/// (the default) and `synchronized`. Returns a bit mask of `1 << TCP_*`.
pub(crate) fn parse_states(s: &str) -> Result<u32, String> {
    let mut mask = 0;
    for item in s.split(',') {
        let name = item.trim().to_ascii_lowercase().replace('_', "-");
        mask |= match name.as_str() {
            "all" => ALL,
            "connected" => CONNECTED,
            "synchronized" => SYNCHRONIZED,
            "estab" => bit(ESTABLISHED),
            "listen" => bit(10),
            "close" => bit(7),
            "fin-wait1" => bit(4),
            "fin-wait2" => bit(5),
            _ => match STATES.iter().find(|(_, n)| *n == name) {
                Some((state, _)) => bit(*state),
                None => {
                    let names: Vec<&str> = STATES.iter().map(|(_, n)| *n).collect();
                    return Err(format!(
                        "{:?} is not a TCP state: use {}, or all, connected, synchronized",
                        item.chars().take(40).collect::<String>(),
                        names.join(", ")
                    ));
                }
            },
        };
    }
    Ok(mask)
}

/// What the audit concludes about one connection; see the module docs for the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Stalled,
    Retransmitting,
    Probing,
    Leaked,
    Zombie,
    Protected,
    Sending,
    Unprotected,
    Opening,
    Closing,
    Listening,
}

impl Verdict {
    /// Every verdict, in precedence order.
    pub(crate) const ALL: [Verdict; 11] = [
        Verdict::Stalled,
        Verdict::Retransmitting,
        Verdict::Probing,
        Verdict::Leaked,
        Verdict::Zombie,
        Verdict::Protected,
        Verdict::Sending,
        Verdict::Unprotected,
        Verdict::Opening,
        Verdict::Closing,
        Verdict::Listening,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Verdict::Stalled => "stalled",
            Verdict::Retransmitting => "retransmitting",
            Verdict::Probing => "probing",
            Verdict::Leaked => "leaked",
            Verdict::Zombie => "zombie",
            Verdict::Protected => "protected",
            Verdict::Sending => "sending",
            Verdict::Unprotected => "unprotected",
            Verdict::Opening => "opening",
            Verdict::Closing => "closing",
            Verdict::Listening => "listening",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        Verdict::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Verdict::ALL.iter().map(|v| v.name()).collect();
                format!(
                    "{:?} is not a verdict: use {}",
                    s.chars().take(40).collect::<String>(),
                    names.join(", ")
                )
            })
    }
}

/// Parses one `--fail-on` verdict name (clap splits the commas).
pub(crate) fn parse_verdict(s: &str) -> Result<Verdict, String> {
    s.parse()
}

/// The verdict on one socket.
pub(crate) fn classify(sock: &Sock) -> Verdict {
    let probes = sock.info.map_or(0, |i| i.probes);
    let zero_window = sock.info.is_some_and(|i| i.snd_wnd == 0) && sock.send_q > 0;
    match sock.timer {
        SockTimer::Persist { .. } => return Verdict::Stalled,
        _ if zero_window && sock.state == ESTABLISHED => return Verdict::Stalled,
        SockTimer::Retransmit { count, .. } if count > 0 => return Verdict::Retransmitting,
        SockTimer::Keepalive { .. } if probes > 0 => return Verdict::Probing,
        _ => {}
    }
    match (sock.state, sock.timer) {
        (CLOSE_WAIT, _) => Verdict::Leaked,
        (10, _) => Verdict::Listening,
        (2 | 3, _) => Verdict::Opening,
        (ESTABLISHED, SockTimer::Keepalive { .. }) => Verdict::Protected,
        (ESTABLISHED, SockTimer::Retransmit { .. }) => Verdict::Sending,
        (ESTABLISHED, _) => Verdict::Unprotected,
        _ => Verdict::Closing,
    }
}

/// Whether the keepalive timer is armed: `Some(true)` when the kernel reports it, `Some(false)`
/// when it reports no timer (or TIME-WAIT's), `None` when another timer hides it.
pub(crate) fn keepalive(timer: SockTimer) -> Option<bool> {
    match timer {
        SockTimer::Keepalive { .. } => Some(true),
        SockTimer::None | SockTimer::TimeWait => Some(false),
        SockTimer::Retransmit { .. } | SockTimer::Persist { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::diag::Info;
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn sock(state: u8, timer: SockTimer, probes: u8, snd_wnd: u32, send_q: u32) -> Sock {
        Sock {
            state,
            local: "10.0.0.1:1".parse().unwrap(),
            peer: "10.0.0.2:2".parse().unwrap(),
            timer,
            recv_q: 0,
            send_q,
            uid: 0,
            inode: 1,
            info: Some(Info {
                probes,
                retransmits: 0,
                backoff: 0,
                unacked: 0,
                last_data_recv_ms: 0,
                last_ack_recv_ms: 0,
                rtt_us: 0,
                snd_wnd,
            }),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn precedence() {
        let ka = SockTimer::Keepalive { expires: S };
        let rto = |count| SockTimer::Retransmit { expires: S, count };
        let persist = SockTimer::Persist { expires: S };
        let none = SockTimer::None;
        let v = |state, timer, probes, wnd, q| classify(&sock(state, timer, probes, wnd, q));
        assert_eq!(v(1, persist, 2, 0, 100), Verdict::Stalled);
        assert_eq!(v(1, rto(0), 0, 0, 100), Verdict::Stalled);
        assert_eq!(
            v(1, none, 0, 0, 0),
            Verdict::Unprotected,
            "zero window, nothing to send"
        );
        assert_eq!(v(1, rto(3), 0, 65535, 100), Verdict::Retransmitting);
        assert_eq!(v(1, rto(0), 0, 65535, 100), Verdict::Sending);
        assert_eq!(v(1, ka, 1, 65535, 0), Verdict::Probing);
        assert_eq!(v(1, ka, 0, 65535, 0), Verdict::Protected);
        assert_eq!(v(1, none, 0, 65535, 0), Verdict::Unprotected);
        assert_eq!(v(8, ka, 0, 65535, 0), Verdict::Leaked, "CLOSE-WAIT");
        assert_eq!(v(8, none, 0, 65535, 0), Verdict::Leaked, "CLOSE-WAIT");
        assert_eq!(v(8, rto(2), 0, 65535, 10), Verdict::Retransmitting);
        assert_eq!(v(9, none, 0, 65535, 0), Verdict::Closing, "LAST-ACK");
        assert_eq!(v(4, rto(2), 0, 65535, 1), Verdict::Retransmitting);
        assert_eq!(v(2, rto(0), 0, 0, 0), Verdict::Opening);
        assert_eq!(v(6, SockTimer::TimeWait, 0, 0, 0), Verdict::Closing);
        assert_eq!(v(10, none, 0, 0, 0), Verdict::Listening);
        assert_eq!(keepalive(ka), Some(true));
        assert_eq!(keepalive(none), Some(false));
        assert_eq!(keepalive(rto(0)), None);
    }

    #[test]
    fn state_names() {
        assert_eq!(parse_states("established"), Ok(bit(1)));
        assert_eq!(parse_states("ESTAB,close_wait"), Ok(bit(1) | bit(8)));
        assert_eq!(parse_states("all"), Ok(ALL));
        assert_eq!(parse_states("connected").unwrap() & bit(10), 0);
        assert_eq!(parse_states("synchronized").unwrap() & bit(2), 0);
        let err = parse_states("establish").unwrap_err();
        assert!(err.contains("\"establish\" is not a TCP state"), "{err}");
        assert!(err.contains("close-wait"), "{err}");
        assert!(parse_states("").is_err());
        for (n, name) in STATES {
            assert_eq!(parse_states(name), Ok(bit(n)));
            assert_eq!(state_name(n), name);
        }
        assert_eq!(state_name(12), "unknown");
    }

    #[test]
    fn verdict_names() {
        for v in Verdict::ALL {
            assert_eq!(v.name().parse::<Verdict>(), Ok(v));
            assert_eq!(serde_json::to_value(v).unwrap(), v.name());
        }
        assert_eq!(parse_verdict(" Probing"), Ok(Verdict::Probing));
        let err = parse_verdict("dead").unwrap_err();
        assert!(
            err.starts_with("\"dead\" is not a verdict: use stalled,"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn state_parser_never_panics(s in "\\PC{0,40}") {
            if let Ok(mask) = parse_states(&s) {
                prop_assert!(mask != 0 && mask & !ALL == 0);
            }
        }

        #[test]
        fn verdict_parser_never_panics(s in "\\PC{0,40}") {
            if let Ok(v) = parse_verdict(&s) {
                prop_assert_eq!(v.name(), s.trim().to_ascii_lowercase());
            }
        }

        #[test]
        fn any_state_list_round_trips(states in prop::collection::vec(1u8..=11, 1..6)) {
            let text: Vec<&str> = states.iter().map(|s| state_name(*s)).collect();
            let want = states.iter().fold(0, |m, s| m | bit(*s));
            prop_assert_eq!(parse_states(&text.join(",")), Ok(want));
        }

        #[test]
        fn every_socket_gets_one_verdict(state in 0u8..=12, kind in 0u8..5, count in 0u8..4,
                                          probes in 0u8..4, wnd in 0u32..3, q in 0u32..3) {
            let timer = match kind {
                0 => SockTimer::None,
                1 => SockTimer::Retransmit { expires: S, count },
                2 => SockTimer::Keepalive { expires: S },
                3 => SockTimer::TimeWait,
                _ => SockTimer::Persist { expires: S },
            };
            let v = classify(&sock(state, timer, probes, wnd, q));
            // Unprotected means exactly: established, and no timer the kernel could show.
            prop_assert_eq!(
                v == Verdict::Unprotected,
                state == ESTABLISHED && matches!(timer, SockTimer::None | SockTimer::TimeWait) && !(wnd == 0 && q > 0)
            );
            prop_assert_eq!(v == Verdict::Protected, state == ESTABLISHED && kind == 2 && probes == 0 && !(wnd == 0 && q > 0));
        }
    }
}
