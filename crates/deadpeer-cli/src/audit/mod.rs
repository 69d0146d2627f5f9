//! `deadpeer audit`: every TCP connection of this network namespace, whether keepalive protects
//! it, how long it has been idle, which process owns it, and a verdict.
//!
//! The socket table comes from sock_diag netlink ([`diag`]), owners from `/proc` ([`procs`]),
//! verdicts from the kernel's timers and `tcp_info` ([`verdict`], where the rules and their
//! precedence are written down).

mod diag;
mod procs;
mod report;
mod verdict;
mod zombie;

use std::collections::HashSet;
use std::time::Duration;

use crate::error::CliError;
use crate::output::Out;
use crate::parse;

use self::report::{NotVisible, Row};
use self::verdict::Verdict;

const EXAMPLES: &str = "\
Examples:
  deadpeer audit                                every TCP connection, longest idle first
  deadpeer audit --state established --idle-over 10m
  deadpeer audit --port 5432 --json             connections to or from port 5432, as JSON
  deadpeer audit --pid 1234                     the connections of one process
  deadpeer audit --fail-on unprotected          a monitoring check: exit 3 if any is unprotected
  ip netns exec NS deadpeer audit               another network namespace

Verdicts, first match wins:
  stalled         the peer advertises a zero window (persist timer): alive, not reading
  retransmitting  unacknowledged data is being retransmitted; keepalive cannot fire
  probing         keepalive probes are unanswered: the peer may be dying now
  leaked          CLOSE-WAIT: the peer closed, the application never did; no timer ends this
  listening, opening, closing   the kernel ends these on its own timers
  protected       ESTABLISHED, keepalive timer armed
  sending         ESTABLISHED, data in flight: the retransmission timer hides keepalive
  unprotected     ESTABLISHED, no timer: nothing notices if the peer vanishes
  zombie          closed by the kernel (keepalive or retransmission timeout, reset, ICMP) and
                  still held by a process: listed apart, found through /proc/PID/fd and
                  confirmed with pidfd_getfd + TCP_INFO (needs root); SO_ERROR is never read

Without root, other users' processes are not visible: their connections are listed without an
owner, zombies cannot be confirmed, and one line says how many of each could not be seen.

Exit status: 0 ok, 1 the socket table cannot be read, 2 bad input, 3 a --fail-on match.";

/// Arguments of `deadpeer audit`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    /// Only connections whose local or peer port is PORT (repeat or separate with commas).
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    port: Vec<u16>,
    /// Only connections owned by process PID (repeat or separate with commas).
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pid: Vec<u32>,
    /// Only connections idle (no data received) for longer than DURATION, e.g. 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    idle_over: Option<Duration>,
    /// Only these TCP states: established, syn-sent, syn-recv, fin-wait-1, fin-wait-2,
    /// time-wait, closed, close-wait, last-ack, listening, closing, or the groups all, connected
    /// (the default: all but listening, closed, time-wait, syn-recv) and synchronized.
    #[arg(long, value_name = "STATE", value_delimiter = ',', value_parser = verdict::parse_states)]
    state: Vec<u32>,
    /// Exit with status 3 when a listed connection has this verdict (repeat or separate with
    /// commas), e.g. unprotected or probing,retransmitting,stalled.
    #[arg(long, value_name = "VERDICT", value_delimiter = ',', value_parser = verdict::parse_verdict)]
    fail_on: Vec<Verdict>,
    /// Print JSON: an object with `connections`, `summary`, `not_visible` and `notice`.
    #[arg(long)]
    json: bool,
}

/// Runs `deadpeer audit`.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    let states = if args.state.is_empty() {
        verdict::CONNECTED
    } else {
        args.state.iter().fold(0, |m, s| m | s)
    };
    // Every socket a process can hold, so that a held socket missing from the tables is a zombie
    // candidate; the states asked for are filtered below.
    let zombies_wanted = args.state.is_empty() || states & (1 << 7) != 0;
    let table = diag::dump(states | verdict::HELD).map_err(|e| {
        CliError::runtime(format!(
            "cannot read the TCP socket table through sock_diag netlink: {e}; \
             deadpeer audit needs Linux with the inet_diag and tcp_diag modules"
        ))
    })?;
    let listed: HashSet<u32> = table.socks.iter().map(|s| s.inode).collect();
    let socks: Vec<_> = table
        .socks
        .into_iter()
        .filter(|s| states & (1 << s.state) != 0)
        .filter(|s| {
            args.port.is_empty()
                || args.port.contains(&s.local.port())
                || args.port.contains(&s.peer.port())
        })
        .collect();
    let inodes: HashSet<u32> = socks.iter().map(|s| s.inode).filter(|i| *i != 0).collect();
    let owners = procs::scan(&inodes, zombies_wanted.then_some(&listed));
    let idle_over = args.idle_over.map(|d| d.as_millis());
    let found = zombie::find(&owners.unlisted);
    let zombies: Vec<zombie::Zombie> = found
        .zombies
        .into_iter()
        .filter(|z| {
            args.port.is_empty() || z.local_addr.is_some_and(|a| args.port.contains(&a.port()))
        })
        .filter(|z| args.pid.is_empty() || args.pid.contains(&z.pid))
        .filter(|z| idle_over.is_none_or(|min| u128::from(z.idle_ms) > min))
        .collect();
    let mut rows: Vec<Row> = socks
        .iter()
        .map(|s| Row::new(s, owners.get(s.inode)))
        .filter(|r| args.pid.is_empty() || r.pid.is_some_and(|p| args.pid.contains(&p)))
        .filter(|r| idle_over.is_none_or(|min| r.idle_ms.is_some_and(|i| u128::from(i) > min)))
        .collect();
    // Longest idle first; unknown idle times last; then by address, for a stable order.
    rows.sort_by(|a, b| {
        b.idle_ms
            .cmp(&a.idle_ms)
            .then_with(|| a.local_addr.cmp(&b.local_addr))
            .then_with(|| a.peer_addr.cmp(&b.peer_addr))
    });
    let not_visible = NotVisible {
        processes: owners.hidden,
        connections_without_owner: rows.iter().filter(|r| r.pid.is_none()).count(),
        connections_without_tcp_info: rows.iter().filter(|r| r.idle_ms.is_none()).count(),
        unconfirmed_zombies: found.unconfirmed,
    };

    if args.json {
        report::json(&rows, &zombies, &not_visible, out);
    } else {
        report::text(&rows, &zombies, &not_visible, out);
    }

    let matched = rows
        .iter()
        .filter(|r| args.fail_on.contains(&r.verdict))
        .count()
        + if args.fail_on.contains(&Verdict::Zombie) {
            zombies.len()
        } else {
            0
        };
    if matched > 0 {
        let names: Vec<&str> = args.fail_on.iter().map(|v| v.name()).collect();
        let noun = if matched == 1 {
            "connection matches"
        } else {
            "connections match"
        };
        return Err(CliError::matched(format!(
            "{matched} {noun} --fail-on {}",
            names.join(",")
        )));
    }
    Ok(())
}
