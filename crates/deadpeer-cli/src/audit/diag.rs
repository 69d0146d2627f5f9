//! The kernel's TCP socket table, read through sock_diag netlink (`NETLINK_SOCK_DIAG`, the
//! interface `ss` uses), for IPv4 and IPv6, in the calling thread's network namespace.
//!
//! One dump per address family, with `INET_DIAG_INFO` requested, so each socket comes with its
//! `tcp_info`. Messages are built and parsed by `netlink-packet-sock-diag`; `netlink-sys` owns the
//! socket.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    Parseable,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::nlas::{Nla, TcpInfo};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags, Timer,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NetlinkAddr};

/// The timer the kernel reports for a socket (`idiag_timer`). The kernel reports one timer: the
/// retransmission timer (also loss probe and reordering) before the zero-window probe timer,
/// before `sk_timer`, which for a connection is the keepalive timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SockTimer {
    /// No timer pending (`idiag_timer` 0).
    None,
    /// 1: unacknowledged data; `count` is `idiag_retrans`, the retransmissions so far.
    Retransmit { expires: Duration, count: u8 },
    /// 2: the keepalive timer is armed.
    Keepalive { expires: Duration },
    /// 3: a TIME_WAIT socket.
    TimeWait,
    /// 4: the zero-window probe ("persist") timer: the peer advertises no room.
    Persist { expires: Duration },
}

impl SockTimer {
    /// The name `ss` prints in `timer:(…)`.
    pub(crate) fn name(self) -> Option<&'static str> {
        match self {
            SockTimer::None => None,
            SockTimer::Retransmit { .. } => Some("on"),
            SockTimer::Keepalive { .. } => Some("keepalive"),
            SockTimer::TimeWait => Some("timewait"),
            SockTimer::Persist { .. } => Some("persist"),
        }
    }

    /// When the timer fires, from now.
    pub(crate) fn expires(self) -> Option<Duration> {
        match self {
            SockTimer::Retransmit { expires, .. }
            | SockTimer::Keepalive { expires }
            | SockTimer::Persist { expires } => Some(expires),
            SockTimer::None | SockTimer::TimeWait => None,
        }
    }
}

/// The parts of `tcp_info` (`INET_DIAG_INFO`) the audit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Info {
    /// `tcpi_probes`: keepalive or zero-window probes sent and not answered (`icsk_probes_out`).
    pub(crate) probes: u8,
    /// `tcpi_retransmits`: retransmission timeouts in a row (`icsk_retransmits`).
    pub(crate) retransmits: u8,
    /// `tcpi_backoff`: the exponential backoff of the retransmission timer.
    pub(crate) backoff: u8,
    /// `tcpi_unacked`: segments in flight.
    pub(crate) unacked: u32,
    /// `tcpi_last_data_recv`: milliseconds since data was last received.
    pub(crate) last_data_recv_ms: u32,
    /// `tcpi_last_ack_recv`: milliseconds since the peer last sent anything (a FIN, an ACK, a
    /// probe's answer).
    pub(crate) last_ack_recv_ms: u32,
    /// `tcpi_rtt`: smoothed round-trip time, microseconds.
    pub(crate) rtt_us: u32,
    /// `tcpi_snd_wnd`: the window the peer advertises, bytes.
    pub(crate) snd_wnd: u32,
}

impl From<&TcpInfo> for Info {
    fn from(t: &TcpInfo) -> Self {
        Self {
            probes: t.probes,
            retransmits: t.retransmits,
            backoff: t.backoff,
            unacked: t.unacked,
            last_data_recv_ms: t.last_data_recv,
            last_ack_recv_ms: t.last_ack_recv,
            rtt_us: t.rtt,
            snd_wnd: t.snd_wnd,
        }
    }
}

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sock {
    /// `idiag_state`, a `TCP_*` state number.
    pub(crate) state: u8,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    pub(crate) timer: SockTimer,
    /// `idiag_rqueue`: bytes received and not yet read.
    pub(crate) recv_q: u32,
    /// `idiag_wqueue`: bytes sent and not yet acknowledged, or not yet sent.
    pub(crate) send_q: u32,
    pub(crate) uid: u32,
    /// 0 for sockets no process holds (TIME_WAIT, orphans).
    pub(crate) inode: u32,
    /// `None` when the kernel sent no `tcp_info`, or one this parser cannot read (older kernels
    /// whose `tcp_info` ends before `tcpi_snd_wnd`).
    pub(crate) info: Option<Info>,
}

/// The socket table of the calling thread's network namespace.
#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) socks: Vec<Sock>,
    /// Sockets whose `tcp_info` could not be read.
    pub(crate) without_info: usize,
}

/// Dumps every TCP socket in `states` (a bit mask of `1 << TCP_*`), IPv4 then IPv6.
pub(crate) fn dump(states: u32) -> io::Result<Table> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let mut table = Table::default();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    for (seq, family) in [AF_INET, AF_INET6].into_iter().enumerate() {
        request(&socket, family, states, seq as u32 + 1)?;
        while !receive(&socket, &mut buf, &mut table)? {}
    }
    Ok(table)
}

fn request(socket: &Socket, family: u8, states: u32, seq: u32) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states: StateFlags::from_bits_truncate(states),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut bytes = vec![0; packet.buffer_len()];
    packet.serialize(&mut bytes);
    socket.send(&bytes, 0)?;
    Ok(())
}

/// Reads one datagram of the dump into `table`; true once the dump is done.
fn receive(socket: &Socket, buf: &mut Vec<u8>, table: &mut Table) -> io::Result<bool> {
    buf.clear();
    let n = socket.recv(buf, 0)?;
    if n > buf.len() {
        return Err(invalid(format!(
            "a sock_diag message of {n} bytes does not fit the {} byte buffer",
            buf.len()
        )));
    }
    parse(&buf[..n], table)
}

/// Parses the netlink messages of one datagram into `table`; true once the dump is done.
fn parse(datagram: &[u8], table: &mut Table) -> io::Result<bool> {
    let mut offset = 0;
    while offset < datagram.len() {
        let bytes = &datagram[offset..];
        let len = NetlinkBuffer::new_checked(bytes)
            .map_err(|e| invalid(format!("malformed netlink message: {e}")))?
            .length() as usize;
        let bytes = &bytes[..len];
        match NetlinkMessage::<SockDiagMessage>::deserialize(bytes) {
            Ok(msg) => match msg.payload {
                NetlinkPayload::Done(_) => return Ok(true),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!(
                        "the kernel refused the sock_diag dump: {}",
                        e.to_io()
                    )));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let info = r.nlas.iter().find_map(|nla| match nla {
                        Nla::TcpInfo(t) => Some(Info::from(t)),
                        _ => None,
                    });
                    if info.is_none() {
                        table.without_info += 1;
                    }
                    table.socks.push(sock(&r.header, info));
                }
                _ => {}
            },
            Err(e) => {
                // A response whose tcp_info is shorter than this parser expects (an older
                // kernel): keep the socket without it, from the header alone.
                let nl = NetlinkBuffer::new(bytes);
                let header = (nl.message_type() == SOCK_DIAG_BY_FAMILY)
                    .then(|| InetResponseHeader::parse(nl.payload()).ok())
                    .flatten()
                    .ok_or_else(|| invalid(format!("cannot parse a sock_diag message: {e}")))?;
                table.without_info += 1;
                table.socks.push(sock(&header, None));
            }
        }
        offset += len.next_multiple_of(4);
    }
    Ok(false)
}

fn sock(h: &InetResponseHeader, info: Option<Info>) -> Sock {
    let id = &h.socket_id;
    let timer = match h.timer {
        None => SockTimer::None,
        Some(Timer::Retransmit(expires, count)) => SockTimer::Retransmit { expires, count },
        Some(Timer::KeepAlive(expires)) => SockTimer::Keepalive { expires },
        Some(Timer::TimeWait) => SockTimer::TimeWait,
        Some(Timer::Probe(expires)) => SockTimer::Persist { expires },
    };
    Sock {
        state: h.state,
        local: SocketAddr::new(id.source_address, id.source_port),
        peer: SocketAddr::new(id.destination_address, id.destination_port),
        timer,
        recv_q: h.recv_queue,
        send_q: h.send_queue,
        uid: h.uid,
        inode: h.inode,
        info,
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DefaultNla, DoneMessage, ErrorMessage};
    use netlink_packet_sock_diag::constants::INET_DIAG_INFO;
    use netlink_packet_sock_diag::inet::{InetResponse, InetResponseHeader};

    fn datagram(payloads: Vec<NetlinkPayload<SockDiagMessage>>) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            let mut msg = NetlinkMessage::new(NetlinkHeader::default(), payload);
            msg.finalize();
            let mut bytes = vec![0; msg.buffer_len()];
            msg.serialize(&mut bytes);
            out.extend(bytes);
        }
        out
    }

    /// A response for 10.0.0.1:4000 -> 10.0.0.2:80, ESTABLISHED, keepalive timer, with a
    /// tcp_info attribute of `info_len` bytes: 3 probes out, 1234 ms since data was received.
    fn response(info_len: usize) -> NetlinkPayload<SockDiagMessage> {
        let mut socket_id = SocketId::new_v4();
        socket_id.source_address = [10, 0, 0, 1].into();
        socket_id.source_port = 4000;
        socket_id.destination_address = [10, 0, 0, 2].into();
        socket_id.destination_port = 80;
        let mut info = vec![0u8; info_len];
        info[3] = 3; // tcpi_probes
        info[52..56].copy_from_slice(&1234u32.to_ne_bytes()); // tcpi_last_data_recv
        SockDiagMessage::InetResponse(Box::new(InetResponse {
            header: InetResponseHeader {
                family: AF_INET,
                state: 1,
                timer: Some(Timer::KeepAlive(Duration::from_millis(750))),
                socket_id,
                recv_queue: 0,
                send_queue: 0,
                uid: 0,
                inode: 42,
            },
            nlas: vec![Nla::Other(DefaultNla::new(INET_DIAG_INFO, info))].into(),
        }))
        .into()
    }

    #[test]
    fn parses_responses_then_done() {
        let mut table = Table::default();
        let bytes = datagram(vec![response(320), response(320)]);
        assert!(!parse(&bytes, &mut table).unwrap());
        assert_eq!(table.socks.len(), 2);
        assert_eq!(table.without_info, 0);
        let s = &table.socks[0];
        assert_eq!(s.local, "10.0.0.1:4000".parse().unwrap());
        assert_eq!(s.peer, "10.0.0.2:80".parse().unwrap());
        assert_eq!(
            s.timer,
            SockTimer::Keepalive {
                expires: Duration::from_millis(750)
            }
        );
        assert_eq!(s.inode, 42);
        let info = s.info.unwrap();
        assert_eq!(info.probes, 3);
        assert_eq!(info.last_data_recv_ms, 1234);

        let done = datagram(vec![NetlinkPayload::Done(DoneMessage::default())]);
        assert!(parse(&done, &mut table).unwrap());
    }

    #[test]
    fn a_short_tcp_info_keeps_the_socket_without_it() {
        let mut table = Table::default();
        // 104 bytes: a tcp_info that ends long before tcpi_snd_wnd.
        let bytes = datagram(vec![response(104), response(320)]);
        assert!(!parse(&bytes, &mut table).unwrap());
        assert_eq!(table.socks.len(), 2);
        assert_eq!(table.without_info, 1);
        assert_eq!(table.socks[0].info, None);
        assert_eq!(table.socks[0].local, "10.0.0.1:4000".parse().unwrap());
        assert!(table.socks[1].info.is_some());
    }

    #[test]
    fn errors_are_errors() {
        let mut error = ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(-1); // -EPERM
        let bytes = datagram(vec![NetlinkPayload::Error(error)]);
        let err = parse(&bytes, &mut Table::default()).unwrap_err();
        assert!(
            err.to_string().contains("refused the sock_diag dump"),
            "{err}"
        );
        assert!(parse(&[1, 2, 3], &mut Table::default()).is_err());
        let mut truncated = datagram(vec![response(320)]);
        truncated.truncate(40);
        assert!(parse(&truncated, &mut Table::default()).is_err());
    }
}
