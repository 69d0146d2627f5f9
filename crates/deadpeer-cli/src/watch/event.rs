//! The tracepoints' records, decoded from the binary ring buffer (`per_cpu/cpuN/trace_pipe_raw`):
//! no text formatting in the kernel, and every field at the offset the kernel's own `format`
//! file gives (docs/kernel.md, "Tracepoints", has them for this kernel).
//!
//! A ring-buffer page (`events/header_page`) is a 64-bit timestamp, a 64-bit commit (the data
//! length in its low 30 bits, flags above), then events: a 32-bit header (`type_len`: 5 bits,
//! `time_delta`: 27 bits, `events/header_event`) and the record. `type_len` 1–28 is a record of
//! `type_len × 4` bytes; 0, a record whose length (with its own 4 bytes) follows; 29 padding
//! (a zero delta ends the page); 30 a time extension; 31 an absolute time stamp. A record starts
//! with `common_type`, the event's id.

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

/// Where a field is in a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    offset: usize,
    size: usize,
}

/// An event's id and fields, from its `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Format {
    pub(crate) id: u16,
    fields: Vec<(String, Field)>,
}

impl Format {
    /// Parses `events/<system>/<event>/format`.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("ID:"))?
            .trim()
            .parse()
            .ok()?;
        let mut fields = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("field:") else {
                continue;
            };
            let mut parts = rest.split(';');
            let decl = parts.next()?;
            let name = decl.rsplit(' ').next()?;
            let name = name.split('[').next()?.to_owned();
            let num = |key: &str, parts: &[&str]| -> Option<usize> {
                parts
                    .iter()
                    .find_map(|p| p.trim().strip_prefix(key))?
                    .parse()
                    .ok()
            };
            let rest: Vec<&str> = parts.collect();
            let offset = num("offset:", &rest)?;
            let size = num("size:", &rest)?;
            fields.push((name, Field { offset, size }));
        }
        Some(Self { id, fields })
    }

    fn field(&self, name: &str, size: usize) -> Result<Field, String> {
        match self.fields.iter().find(|(n, _)| n == name) {
            Some((_, f)) if f.size == size => Ok(*f),
            Some((_, f)) => Err(format!(
                "field {name} of event {} is {} bytes, not {size}",
                self.id, f.size
            )),
            None => Err(format!("event {} has no field {name}", self.id)),
        }
    }
}

/// The address fields every watched event has.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    family: Field,
    sport: Field,
    dport: Field,
    saddr: Field,
    daddr: Field,
    saddr_v6: Field,
    daddr_v6: Field,
}

impl Addrs {
    fn of(f: &Format) -> Result<Self, String> {
        Ok(Self {
            family: f.field("family", 2)?,
            sport: f.field("sport", 2)?,
            dport: f.field("dport", 2)?,
            saddr: f.field("saddr", 4)?,
            daddr: f.field("daddr", 4)?,
            saddr_v6: f.field("saddr_v6", 16)?,
            daddr_v6: f.field("daddr_v6", 16)?,
        })
    }

    fn flow(&self, r: &[u8]) -> Option<Flow> {
        const AF_INET: u16 = 2;
        const AF_INET6: u16 = 10;
        let (s, d): (IpAddr, IpAddr) = match u16_at(r, self.family)? {
            AF_INET => (
                Ipv4Addr::from(<[u8; 4]>::try_from(bytes(r, self.saddr)?).ok()?).into(),
                Ipv4Addr::from(<[u8; 4]>::try_from(bytes(r, self.daddr)?).ok()?).into(),
            ),
            AF_INET6 => (
                Ipv6Addr::from(<[u8; 16]>::try_from(bytes(r, self.saddr_v6)?).ok()?).into(),
                Ipv6Addr::from(<[u8; 16]>::try_from(bytes(r, self.daddr_v6)?).ok()?).into(),
            ),
            _ => return None,
        };
        Some((
            SocketAddr::new(s, u16_at(r, self.sport)?),
            SocketAddr::new(d, u16_at(r, self.dport)?),
        ))
    }
}

/// Decodes the records of the three watched events.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    report: (u16, Addrs, Field),
    state: (u16, Addrs, Field, Field),
    retransmit: (u16, Addrs),
}

impl Decoder {
    /// From the `format` files of `sock:inet_sk_error_report`, `sock:inet_sock_set_state` and
    /// `tcp:tcp_retransmit_skb`; an error names a field this kernel lays out differently.
    pub(crate) fn new(
        report: &Format,
        state: &Format,
        retransmit: &Format,
    ) -> Result<Self, String> {
        Ok(Self {
            report: (report.id, Addrs::of(report)?, report.field("error", 4)?),
            state: (
                state.id,
                Addrs::of(state)?,
                state.field("oldstate", 4)?,
                state.field("newstate", 4)?,
            ),
            retransmit: (retransmit.id, Addrs::of(retransmit)?),
        })
    }

    /// One record, at `ts` nanoseconds; `None` for other events or a short record. The
    /// protocol (TCP) is filtered in the kernel.
    pub(crate) fn record(&self, ts: u64, r: &[u8]) -> Option<Event> {
        let id = u16::from_ne_bytes(r.get(..2)?.try_into().ok()?);
        let (flow, kind) = if id == self.report.0 {
            let errno = i32_at(r, self.report.2)?;
            (self.report.1.flow(r)?, Kind::ErrorReport { errno })
        } else if id == self.state.0 {
            let old = u8::try_from(i32_at(r, self.state.2)?).ok()?;
            let new = u8::try_from(i32_at(r, self.state.3)?).ok()?;
            (self.state.1.flow(r)?, Kind::SetState { old, new })
        } else if id == self.retransmit.0 {
            (self.retransmit.1.flow(r)?, Kind::Retransmit)
        } else {
            return None;
        };
        Some(Event {
            ts: ts as f64 / 1e9,
            flow,
            kind,
        })
    }
}

fn bytes(r: &[u8], f: Field) -> Option<&[u8]> {
    r.get(f.offset..f.offset.checked_add(f.size)?)
}

fn u16_at(r: &[u8], f: Field) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes(r, f)?.try_into().ok()?))
}

fn i32_at(r: &[u8], f: Field) -> Option<i32> {
    Some(i32::from_ne_bytes(bytes(r, f)?.try_into().ok()?))
}

/// The records of one ring-buffer page, with their timestamps in nanoseconds.
pub(crate) fn page(p: &[u8], mut each: impl FnMut(u64, &[u8])) {
    const COMMIT_MASK: u64 = (1 << 30) - 1;
    let word =
        |i: usize| -> Option<u32> { Some(u32::from_ne_bytes(p.get(i..i + 4)?.try_into().ok()?)) };
    let (Some(ts), Some(commit)) = (
        p.get(..8)
            .and_then(|b| Some(u64::from_ne_bytes(b.try_into().ok()?))),
        p.get(8..16)
            .and_then(|b| Some(u64::from_ne_bytes(b.try_into().ok()?))),
    ) else {
        return;
    };
    let end = 16usize
        .saturating_add(usize::try_from(commit & COMMIT_MASK).unwrap_or(0))
        .min(p.len());
    let mut ts = ts;
    let mut i = 16;
    while i + 4 <= end {
        let Some(h) = word(i) else { return };
        let (type_len, delta) = (h & 0x1f, u64::from(h >> 5));
        let len = match type_len {
            29 => {
                if delta == 0 {
                    return;
                }
                let Some(n) = word(i + 4) else { return };
                4 + n as usize
            }
            30 | 31 => {
                let Some(n) = word(i + 4) else { return };
                let t = (u64::from(n) << 27) | delta;
                ts = if type_len == 30 {
                    ts.wrapping_add(t)
                } else {
                    t
                };
                8
            }
            0 => {
                let Some(n) = word(i + 4) else { return };
                let n = n as usize;
                ts = ts.wrapping_add(delta);
                if let Some(r) = p.get(i + 8..(i + 4 + n).min(end)) {
                    each(ts, r);
                }
                4 + n
            }
            n => {
                ts = ts.wrapping_add(delta);
                let n = n as usize * 4;
                if let Some(r) = p.get(i + 4..(i + 4 + n).min(end)) {
                    each(ts, r);
                }
                4 + n
            }
        };
        if len < 4 {
            return;
        }
        i += len;
    }
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

    const REPORT: &str = "name: inet_sk_error_report\nID: 2286\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\tfield:int error;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:__u16 sport;\toffset:12;\tsize:2;\tsigned:0;\n\tfield:__u16 dport;\toffset:14;\tsize:2;\tsigned:0;\n\tfield:__u16 family;\toffset:16;\tsize:2;\tsigned:0;\n\tfield:__u16 protocol;\toffset:18;\tsize:2;\tsigned:0;\n\tfield:__u8 saddr[4];\toffset:20;\tsize:4;\tsigned:0;\n\tfield:__u8 daddr[4];\toffset:24;\tsize:4;\tsigned:0;\n\tfield:__u8 saddr_v6[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:__u8 daddr_v6[16];\toffset:44;\tsize:16;\tsigned:0;\n\nprint fmt: \"...\"\n";

    fn decoder() -> Decoder {
        let report = Format::parse(REPORT).unwrap();
        let mut state = report.clone();
        state.id = 2287;
        state.fields.push((
            "oldstate".into(),
            Field {
                offset: 60,
                size: 4,
            },
        ));
        state.fields.push((
            "newstate".into(),
            Field {
                offset: 64,
                size: 4,
            },
        ));
        let mut rtx = report.clone();
        rtx.id = 2288;
        Decoder::new(&report, &state, &rtx).unwrap()
    }

    fn record(id: u16, errno: i32) -> Vec<u8> {
        let mut r = vec![0u8; 68];
        r[..2].copy_from_slice(&id.to_ne_bytes());
        r[8..12].copy_from_slice(&errno.to_ne_bytes());
        r[12..14].copy_from_slice(&9000u16.to_ne_bytes());
        r[14..16].copy_from_slice(&55436u16.to_ne_bytes());
        r[16..18].copy_from_slice(&2u16.to_ne_bytes());
        r[20..24].copy_from_slice(&[127, 0, 0, 1]);
        r[24..28].copy_from_slice(&[127, 0, 0, 2]);
        r[60..64].copy_from_slice(&1i32.to_ne_bytes());
        r[64..68].copy_from_slice(&7i32.to_ne_bytes());
        r
    }

    #[test]
    fn formats() {
        let f = Format::parse(REPORT).unwrap();
        assert_eq!(f.id, 2286);
        assert_eq!(
            f.field("saddr_v6", 16).unwrap(),
            Field {
                offset: 28,
                size: 16
            }
        );
        assert!(f.field("sport", 4).unwrap_err().contains("2 bytes, not 4"));
        assert!(
            f.field("skaddr", 8)
                .unwrap_err()
                .contains("no field skaddr")
        );
        assert_eq!(Format::parse("name: x\n"), None);
    }

    #[test]
    fn records() {
        let d = decoder();
        let e = d.record(1_500_000_000, &record(2286, 104)).unwrap();
        assert_eq!(e.ts, 1.5);
        assert_eq!(e.kind, Kind::ErrorReport { errno: 104 });
        assert_eq!(e.flow.0, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(e.flow.1, "127.0.0.2:55436".parse().unwrap());
        let e = d.record(0, &record(2287, 0)).unwrap();
        assert_eq!(
            e.kind,
            Kind::SetState {
                old: ESTABLISHED,
                new: CLOSE
            }
        );
        assert_eq!(
            d.record(0, &record(2288, 0)).unwrap().kind,
            Kind::Retransmit
        );
        assert_eq!(d.record(0, &record(1, 0)), None);
        assert_eq!(d.record(0, &record(2286, 0)[..20]), None);
        let mut v6 = record(2286, 110);
        v6[16..18].copy_from_slice(&10u16.to_ne_bytes());
        v6[28..44].copy_from_slice(&"fd00::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(
            d.record(0, &v6).unwrap().flow.0,
            "[fd00::1]:9000".parse().unwrap()
        );
        assert_eq!(state_name(CLOSE), "close");
        assert_eq!(state_name(8), "close-wait");
        assert_eq!(state_name(0), "state 0");
    }

    /// A page as the kernel writes it: two records, a time extension between them, padding.
    #[test]
    fn pages() {
        let rec = record(2286, 104); // 68 bytes: type_len 17
        let mut data = Vec::new();
        data.extend_from_slice(&((5u32 << 5) | 17).to_ne_bytes());
        data.extend_from_slice(&rec);
        data.extend_from_slice(&((3u32 << 5) | 30).to_ne_bytes());
        data.extend_from_slice(&1u32.to_ne_bytes()); // + 1 << 27 + 3
        data.extend_from_slice(&0u32.to_ne_bytes()); // type_len 0, delta 0
        data.extend_from_slice(&(72u32).to_ne_bytes()); // long form: 4 + 68
        data.extend_from_slice(&rec);
        data.extend_from_slice(&((1u32 << 5) | 29).to_ne_bytes());
        data.extend_from_slice(&(4u32).to_ne_bytes());
        data.extend_from_slice(&[0; 4]);
        let mut p = Vec::new();
        p.extend_from_slice(&1000u64.to_ne_bytes());
        p.extend_from_slice(&(data.len() as u64 | 1 << 31).to_ne_bytes());
        p.extend_from_slice(&data);
        p.resize(4096, 0);
        let mut got = Vec::new();
        page(&p, |ts, r| got.push((ts, r.len())));
        assert_eq!(got, [(1005, 68), (1005 + (1 << 27) + 3, 68)]);
    }

    proptest! {
        #[test]
        fn pages_never_panic(p in prop::collection::vec(any::<u8>(), 0..600)) {
            let d = decoder();
            page(&p, |ts, r| { let _ = d.record(ts, r); });
        }

        #[test]
        fn records_never_panic(r in prop::collection::vec(any::<u8>(), 0..80)) {
            let _ = decoder().record(0, &r);
        }
    }
}
