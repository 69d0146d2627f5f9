//! One line of `trace_pipe`, parsed: which tracepoint fired, when (the instance's `mono`
//! clock, CLOCK_MONOTONIC), and the fields watch uses. The lines look like
//!
//! ```text
//! python3-14013 [000] ..s2. 11428.153454: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=9000 dport=55436 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 error=104
//! ```
//!
//! (docs/kernel.md, "Tracepoints", has every field on this kernel). The fields never hold
//! `": "`, so a line splits from the right into prefix, event name and fields; the task name in
//! the prefix (the process that happened to be on the CPU, not the socket's owner) may hold
//! anything and is ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A connection as the kernel's tracepoints name it: from the socket's side, local then peer.
pub(crate) type Flow = (SocketAddr, SocketAddr);

/// TCP states, as `include/net/tcp_states.h` numbers them.
pub(crate) const ESTABLISHED: u8 = 1;
pub(crate) const SYN_SENT: u8 = 2;
pub(crate) const SYN_RECV: u8 = 3;
pub(crate) const CLOSE: u8 = 7;

/// What a line says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// `sock:inet_sk_error_report` of a TCP socket: the error the socket reports.
    ErrorReport { errno: i32 },
    /// `sock:inet_sock_set_state` of a TCP socket.
    SetState { old: u8, new: u8 },
    /// `tcp:tcp_retransmit_skb`.
    Retransmit,
}

/// One tracepoint hit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// Seconds on CLOCK_MONOTONIC (the instance's `trace_clock` is `mono`).
    pub(crate) ts: f64,
    pub(crate) flow: Flow,
    pub(crate) kind: Kind,
}

/// Parses one line; `None` for lines of other events, other protocols, or shapes this
/// version does not know (which are then skipped, never guessed).
pub(crate) fn parse(line: &str) -> Option<Event> {
    let mut parts = line.trim_end().rsplitn(3, ": ");
    let fields = parts.next()?;
    let name = parts.next()?;
    let ts: f64 = parts.next()?.rsplit(' ').next()?.parse().ok()?;
    let get = |key: &str| {
        fields
            .split(' ')
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
    };
    if matches!(name, "inet_sk_error_report" | "inet_sock_set_state")
        && get("protocol")? != "IPPROTO_TCP"
    {
        return None;
    }
    let kind = match name {
        "inet_sk_error_report" => Kind::ErrorReport {
            errno: get("error")?.parse().ok()?,
        },
        "inet_sock_set_state" => Kind::SetState {
            old: state(get("oldstate")?)?,
            new: state(get("newstate")?)?,
        },
        "tcp_retransmit_skb" => Kind::Retransmit,
        _ => return None,
    };
    let (saddr, daddr): (IpAddr, IpAddr) = match get("family")? {
        "AF_INET" => (
            get("saddr")?.parse::<Ipv4Addr>().ok()?.into(),
            get("daddr")?.parse::<Ipv4Addr>().ok()?.into(),
        ),
        "AF_INET6" => (
            get("saddrv6")?.parse::<Ipv6Addr>().ok()?.into(),
            get("daddrv6")?.parse::<Ipv6Addr>().ok()?.into(),
        ),
        _ => return None,
    };
    let sport = get("sport")?.parse().ok()?;
    let dport = get("dport")?.parse().ok()?;
    Some(Event {
        ts,
        flow: (SocketAddr::new(saddr, sport), SocketAddr::new(daddr, dport)),
        kind,
    })
}

const STATES: [&str; 12] = [
    "TCP_ESTABLISHED",
    "TCP_SYN_SENT",
    "TCP_SYN_RECV",
    "TCP_FIN_WAIT1",
    "TCP_FIN_WAIT2",
    "TCP_TIME_WAIT",
    "TCP_CLOSE",
    "TCP_CLOSE_WAIT",
    "TCP_LAST_ACK",
    "TCP_LISTEN",
    "TCP_CLOSING",
    "TCP_NEW_SYN_RECV",
];

fn state(s: &str) -> Option<u8> {
    let i = STATES.iter().position(|n| *n == s)?;
    u8::try_from(i + 1).ok()
}

/// A state's name as `ss` prints it: `established`, `close-wait`.
pub(crate) fn state_name(state: u8) -> String {
    STATES.get(usize::from(state).wrapping_sub(1)).map_or_else(
        || format!("state {state}"),
        |n| {
            n.trim_start_matches("TCP_")
                .to_lowercase()
                .replace('_', "-")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REPORT: &str = "         python3-14013   [000] ..s2. 11428.153454: inet_sk_error_report: family=AF_INET protocol=IPPROTO_TCP sport=9000 dport=55436 saddr=127.0.0.1 daddr=127.0.0.2 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.2 error=104\n";

    #[test]
    fn error_report() {
        let e = parse(REPORT).unwrap();
        assert_eq!(e.ts, 11428.153454);
        assert_eq!(e.kind, Kind::ErrorReport { errno: 104 });
        assert_eq!(e.flow.0, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(e.flow.1, "127.0.0.2:55436".parse().unwrap());
    }

    #[test]
    fn set_state_ipv6_and_odd_task_names() {
        let line = " a: b [c]-77 [001] b..1. 5.000001: inet_sock_set_state: family=AF_INET6 protocol=IPPROTO_TCP sport=443 dport=5000 saddr=0.0.0.0 daddr=0.0.0.0 saddrv6=fd00::1 daddrv6=fd00::2 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE";
        let e = parse(line).unwrap();
        assert_eq!(
            e.kind,
            Kind::SetState {
                old: ESTABLISHED,
                new: CLOSE
            }
        );
        assert_eq!(e.flow.1, "[fd00::2]:5000".parse().unwrap());
        assert_eq!(state_name(CLOSE), "close");
        assert_eq!(state_name(8), "close-wait");
        assert_eq!(state_name(0), "state 0");
    }

    #[test]
    fn retransmit_and_others() {
        let line = " r-1 [001] ..s1. 11434.808031: tcp_retransmit_skb: skbaddr=0000000029debfb8 skaddr=000000005720e3ef family=AF_INET sport=50936 dport=7401 saddr=10.196.58.1 daddr=10.196.59.1 saddrv6=::ffff:10.196.58.1 daddrv6=::ffff:10.196.59.1 state=TCP_FIN_WAIT1 err=-113";
        assert_eq!(parse(line).unwrap().kind, Kind::Retransmit);
        let sctp = REPORT.replace("IPPROTO_TCP", "IPPROTO_SCTP");
        assert_eq!(parse(&sctp), None);
        assert_eq!(parse("# tracer: nop"), None);
        assert_eq!(parse(""), None);
    }

    proptest! {
        #[test]
        fn never_panics(line in ".{0,300}") {
            let _ = parse(&line);
        }

        #[test]
        fn truncated_lines_never_panic(cut in 0usize..REPORT.len()) {
            let _ = parse(&REPORT[..cut]);
        }
    }
}
