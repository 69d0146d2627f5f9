//! The audit's rows, summary and notice, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use serde::Serialize;

use super::diag::{Sock, SockTimer};
use super::procs::Owner;
use super::verdict::{self, Verdict};
use super::zombie::Zombie;
use crate::output::{Out, outln};

/// One connection, as `audit --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The `ss` name of the TCP state: `established`, `close-wait`, …
    pub(crate) state: &'static str,
    pub(crate) local_addr: SocketAddr,
    pub(crate) peer_addr: SocketAddr,
    pub(crate) verdict: Verdict,
    /// True when the keepalive timer is armed; false when no timer is; null when the
    /// retransmission or zero-window probe timer hides it.
    pub(crate) keepalive: Option<bool>,
    /// The timer the kernel reports, named as `ss` names it: `on` (retransmission),
    /// `keepalive`, `timewait`, `persist` (zero-window probe); null when none.
    pub(crate) timer: Option<&'static str>,
    /// Milliseconds until that timer fires.
    pub(crate) timer_expires_ms: Option<u128>,
    /// Keepalive or zero-window probes sent and unanswered (`tcpi_probes`).
    pub(crate) probes: Option<u8>,
    /// Retransmission timeouts in a row (`tcpi_retransmits`, `idiag_retrans` for timer `on`).
    pub(crate) retransmits: u8,
    /// Exponential backoff of the retransmission timer (`tcpi_backoff`).
    pub(crate) backoff: Option<u8>,
    /// Segments in flight (`tcpi_unacked`).
    pub(crate) unacked: Option<u32>,
    /// Milliseconds since data was last received (`tcpi_last_data_recv`).
    pub(crate) idle_ms: Option<u32>,
    /// For `leaked` (CLOSE-WAIT): milliseconds since the peer last sent anything
    /// (`tcpi_last_ack_recv`), which for a socket that sends nothing is the time since the
    /// peer's FIN: how long the leak has lasted. Null for other verdicts.
    pub(crate) leaked_for_ms: Option<u32>,
    /// Smoothed round-trip time in microseconds (`tcpi_rtt`).
    pub(crate) rtt_us: Option<u32>,
    /// The window the peer advertises, in bytes (`tcpi_snd_wnd`).
    pub(crate) snd_wnd: Option<u32>,
    /// Bytes not yet acknowledged or not yet sent.
    pub(crate) send_queue: u32,
    /// Bytes received and not yet read.
    pub(crate) recv_queue: u32,
    pub(crate) uid: u32,
    pub(crate) inode: u32,
    /// The owning process, null when unknown or not visible.
    pub(crate) pid: Option<u32>,
    /// Its command (`/proc/<pid>/comm`), null when unknown or not visible.
    pub(crate) process: Option<String>,
}

impl Row {
    pub(crate) fn new(sock: &Sock, owner: Option<&Owner>) -> Self {
        let info = sock.info;
        let retransmits = match (info, sock.timer) {
            (Some(i), _) => i.retransmits,
            (None, SockTimer::Retransmit { count, .. }) => count,
            (None, _) => 0,
        };
        let verdict = verdict::classify(sock);
        Self {
            state: verdict::state_name(sock.state),
            local_addr: sock.local,
            peer_addr: sock.peer,
            verdict,
            keepalive: verdict::keepalive(sock.timer),
            timer: sock.timer.name(),
            timer_expires_ms: sock.timer.expires().map(|d| d.as_millis()),
            probes: info.map(|i| i.probes),
            retransmits,
            backoff: info.map(|i| i.backoff),
            unacked: info.map(|i| i.unacked),
            idle_ms: info.map(|i| i.last_data_recv_ms),
            leaked_for_ms: info
                .filter(|_| verdict == Verdict::Leaked)
                .map(|i| i.last_ack_recv_ms),
            rtt_us: info.map(|i| i.rtt_us),
            snd_wnd: info.map(|i| i.snd_wnd),
            send_queue: sock.send_q,
            recv_queue: sock.recv_q,
            uid: sock.uid,
            inode: sock.inode,
            pid: owner.map(|o| o.pid),
            process: owner.map(|o| o.command.clone()),
        }
    }
}

/// The longest-idle unprotected connection, in the summary.
#[derive(Debug, Serialize)]
struct Longest {
    local_addr: SocketAddr,
    peer_addr: SocketAddr,
    idle_ms: Option<u32>,
    pid: Option<u32>,
    process: Option<String>,
}

/// What the audit could not see.
#[derive(Debug, Default, Serialize)]
pub(crate) struct NotVisible {
    /// User processes whose descriptors could not be read (other users', without root).
    pub(crate) processes: usize,
    /// Connections listed with no owner (held by a hidden process, or by none).
    pub(crate) connections_without_owner: usize,
    /// Connections whose `tcp_info` could not be read (idle time unknown).
    pub(crate) connections_without_tcp_info: usize,
    /// TCP sockets held by processes and missing from the kernel's tables (closed, or never
    /// connected) that could not be inspected: `pidfd_getfd` needs root.
    pub(crate) unconfirmed_zombies: usize,
}

#[derive(Debug, Serialize)]
struct Summary {
    connections: usize,
    /// How many connections got each verdict (every verdict listed, zeros included).
    verdicts: BTreeMap<&'static str, usize>,
    longest_idle_unprotected: Option<Longest>,
}

/// `deadpeer audit --json`.
#[derive(Debug, Serialize)]
struct AuditJson<'a> {
    connections: &'a [Row],
    /// Sockets the kernel closed that a process still holds (verdict `zombie`).
    zombies: &'a [Zombie],
    summary: Summary,
    not_visible: &'a NotVisible,
    /// The one-line notice about what could not be seen; null when everything was visible.
    notice: Option<String>,
}

fn summary(rows: &[Row], zombies: &[Zombie]) -> Summary {
    let mut verdicts: BTreeMap<&'static str, usize> =
        Verdict::ALL.iter().map(|v| (v.name(), 0)).collect();
    for r in rows {
        *verdicts.entry(r.verdict.name()).or_default() += 1;
    }
    verdicts.insert(Verdict::Zombie.name(), zombies.len());
    let longest = rows
        .iter()
        .filter(|r| r.verdict == Verdict::Unprotected)
        .max_by_key(|r| r.idle_ms)
        .map(|r| Longest {
            local_addr: r.local_addr,
            peer_addr: r.peer_addr,
            idle_ms: r.idle_ms,
            pid: r.pid,
            process: r.process.clone(),
        });
    Summary {
        connections: rows.len() + zombies.len(),
        verdicts,
        longest_idle_unprotected: longest,
    }
}

/// The one line about what could not be seen, or `None`.
fn notice(nv: &NotVisible) -> Option<String> {
    let mut parts = Vec::new();
    if nv.processes > 0 {
        parts.push(format!(
            "{} processes of other users could not be read, so the owner of {} of these connections is unknown; run as root to see every owner",
            nv.processes, nv.connections_without_owner
        ));
    }
    if nv.unconfirmed_zombies > 0 {
        parts.push(format!(
            "{} TCP sockets held by processes are missing from the kernel's tables (closed by the kernel, or never connected) and could not be inspected; run as root to confirm zombies with pidfd_getfd",
            nv.unconfirmed_zombies
        ));
    }
    if nv.connections_without_tcp_info > 0 {
        parts.push(format!(
            "the kernel gave no readable tcp_info for {} connections (an older kernel), so their idle time and probes are unknown",
            nv.connections_without_tcp_info
        ));
    }
    (!parts.is_empty()).then(|| format!("not visible: {}", parts.join("; ")))
}

pub(crate) fn json(rows: &[Row], zombies: &[Zombie], nv: &NotVisible, out: &mut Out) {
    out.json(&AuditJson {
        connections: rows,
        zombies,
        summary: summary(rows, zombies),
        not_visible: nv,
        notice: notice(nv),
    });
}

/// Milliseconds the way an operator reads an idle time: `850ms`, `12.3s`, `4m 05s`, `3h 02m`,
/// `2d 04h`.
pub(crate) fn idle(ms: u32) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{}.{}s", s, (ms % 1000) / 100),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn keepalive_cell(r: &Row) -> String {
    match (r.keepalive, r.timer_expires_ms) {
        (Some(true), Some(ms)) => format!("on, {}", idle(ms.min(u32::MAX.into()) as u32)),
        (Some(true), None) => "on".into(),
        (Some(false), _) => "off".into(),
        (None, _) => format!("? ({})", r.timer.unwrap_or("-")),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub(crate) fn text(rows: &[Row], zombies: &[Zombie], nv: &NotVisible, out: &mut Out) {
    if rows.is_empty() && zombies.is_empty() {
        outln!(out, "no TCP connection matches");
    } else {
        let header = [
            "STATE",
            "LOCAL",
            "PEER",
            "VERDICT",
            "KEEPALIVE",
            "IDLE",
            "PROBES",
            "RETRANS",
            "PROCESS",
        ];
        let cells: Vec<[String; 9]> = rows
            .iter()
            .map(|r| {
                [
                    r.state.to_owned(),
                    r.local_addr.to_string(),
                    r.peer_addr.to_string(),
                    match r.leaked_for_ms {
                        Some(ms) => format!("{} (FIN {} ago)", r.verdict, idle(ms)),
                        None => r.verdict.to_string(),
                    },
                    keepalive_cell(r),
                    r.idle_ms.map_or_else(|| "-".into(), idle),
                    opt(r.probes),
                    r.retransmits.to_string(),
                    match (&r.process, r.pid) {
                        (Some(c), Some(p)) => format!("{p}/{c}"),
                        _ => "-".into(),
                    },
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: &[&str]| {
            let mut s = String::new();
            for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
                if i + 1 == cols.len() {
                    s.push_str(c);
                } else {
                    let _ = write!(s, "{c:<w$}  ");
                }
            }
            s
        };
        if !rows.is_empty() {
            outln!(out, "{}", line(&header));
            for row in &cells {
                let cols: Vec<&str> = row.iter().map(String::as_str).collect();
                outln!(out, "{}", line(&cols));
            }
            outln!(out);
        }
        if !zombies.is_empty() {
            zombie_table(zombies, out);
        }
    }
    outln!(out, "{}", summary_line(rows, zombies));
    if let Some(n) = notice(nv) {
        outln!(out, "{n}");
    }
}

/// The zombies, apart: the kernel has closed them, so they have no peer address, timer or
/// verdict rule, only their owner and the `TCP_INFO` left at the close.
fn zombie_table(zombies: &[Zombie], out: &mut Out) {
    outln!(
        out,
        "zombies: closed by the kernel, still held by a process (errno left unread for its owner)"
    );
    let header = [
        "LOCAL",
        "PROCESS",
        "FD",
        "IDLE",
        "LAST-RECV",
        "PROBES",
        "RETRANS",
    ];
    let cells: Vec<[String; 7]> = zombies
        .iter()
        .map(|z| {
            [
                z.local_addr.map_or_else(|| "-".into(), |a| a.to_string()),
                format!("{}/{}", z.pid, z.process),
                z.fd.to_string(),
                idle(z.idle_ms.min(u32::MAX.into()) as u32),
                idle(z.last_ack_recv_ms.min(u32::MAX.into()) as u32),
                z.probes.to_string(),
                z.retransmits.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: &[&str]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            if i + 1 == cols.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        s
    };
    outln!(out, "{}", line(&header));
    for row in &cells {
        let cols: Vec<&str> = row.iter().map(String::as_str).collect();
        outln!(out, "{}", line(&cols));
    }
    outln!(out);
}

/// `6 connections: 1 protected, 2 unprotected, …; longest idle unprotected: A -> B, idle 12.3s (pid/cmd)`.
fn summary_line(rows: &[Row], zombies: &[Zombie]) -> String {
    let s = summary(rows, zombies);
    // The five every reader looks for, always; the others when present.
    let order = [
        (Verdict::Protected, true),
        (Verdict::Unprotected, true),
        (Verdict::Probing, true),
        (Verdict::Retransmitting, true),
        (Verdict::Stalled, true),
        (Verdict::Leaked, false),
        (Verdict::Zombie, false),
        (Verdict::Sending, false),
        (Verdict::Opening, false),
        (Verdict::Closing, false),
        (Verdict::Listening, false),
    ];
    let counts: Vec<String> = order
        .iter()
        .filter(|(v, always)| *always || s.verdicts[v.name()] > 0)
        .map(|(v, _)| v)
        .map(|v| format!("{} {v}", s.verdicts[v.name()]))
        .collect();
    let noun = if s.connections == 1 {
        "connection"
    } else {
        "connections"
    };
    let mut line = format!("{} {noun}: {}", s.connections, counts.join(", "));
    if let Some(l) = s.longest_idle_unprotected {
        let _ = write!(
            line,
            "; longest idle unprotected: {} -> {}, idle {}",
            l.local_addr,
            l.peer_addr,
            l.idle_ms.map_or_else(|| "unknown".into(), idle)
        );
        if let (Some(pid), Some(cmd)) = (l.pid, l.process) {
            let _ = write!(line, " ({pid}/{cmd})");
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_times() {
        assert_eq!(idle(850), "850ms");
        assert_eq!(idle(12_345), "12.3s");
        assert_eq!(idle(245_000), "4m 05s");
        assert_eq!(idle(3 * 3_600_000), "3h 00m");
        assert_eq!(idle(10_920_000), "3h 02m");
        assert_eq!(idle(187_200_000), "2d 04h");
    }

    #[test]
    fn notice_says_what_was_not_seen() {
        assert_eq!(notice(&NotVisible::default()), None);
        let n = notice(&NotVisible {
            processes: 3,
            connections_without_owner: 2,
            connections_without_tcp_info: 0,
            unconfirmed_zombies: 0,
        })
        .unwrap();
        assert!(
            n.starts_with("not visible: 3 processes of other users"),
            "{n}"
        );
        assert!(
            n.contains("owner of 2 of these connections is unknown"),
            "{n}"
        );
        assert!(!n.contains('\n'));
    }
}
