//! The audit test's scene: plain sockets in a lab, one per verdict, and `ss -tnoi` parsed for
//! the cross-check.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::Duration;

use deadpeer_testkit::{Lab, Netns, send_nowait};
use serde_json::Value;
use socket2::{Domain, Socket, TcpKeepalive, Type};

use crate::support::exec;

/// The healthy server port.
pub(crate) const PLAIN: u16 = 7001;
/// The port the server namespace drops every packet to (nftables), after the handshakes.
pub(crate) const DROPPED: u16 = 7002;
/// The server that accepts and never reads.
pub(crate) const DEAF: u16 = 7003;
/// The IPv6 listener inside the client namespace.
const V6: u16 = 7010;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Protected,
    Unprotected,
    Probing,
    Retransmitting,
    Stalled,
    Ipv6Client,
    Ipv6Server,
    Ipv6Listener,
}

/// The lab and every socket of the scene, held until the end of the test.
pub(crate) struct Scene {
    pub(crate) lab: Lab,
    sockets: HashMap<Role, Socket>,
    /// Server-side sockets and listeners, only held.
    _held: Vec<Socket>,
}

impl Scene {
    pub(crate) fn build(lab: Lab) -> Self {
        let server = lab.server();
        let client = lab.client();
        let saddr = lab.server_addr();
        let listen = |ns: &Netns, addr: SocketAddr, rcvbuf: Option<usize>| {
            let s = ns.socket(Domain::for_address(addr), Type::STREAM).unwrap();
            if let Some(size) = rcvbuf {
                s.set_recv_buffer_size(size).unwrap();
            }
            s.bind(&addr.into()).unwrap();
            s.listen(16).unwrap();
            s
        };
        let connect = |ns: &Netns, addr: SocketAddr, keepalive: Option<(u64, u64, u32)>| {
            let s = ns.socket(Domain::for_address(addr), Type::STREAM).unwrap();
            if let Some((idle, interval, probes)) = keepalive {
                s.set_tcp_keepalive(
                    &TcpKeepalive::new()
                        .with_time(Duration::from_secs(idle))
                        .with_interval(Duration::from_secs(interval))
                        .with_retries(probes),
                )
                .unwrap();
            }
            s.connect_timeout(&addr.into(), Duration::from_secs(5))
                .unwrap();
            s
        };

        let mut held = Vec::new();
        let mut sockets = HashMap::new();
        let plain = listen(server, SocketAddr::new(saddr, PLAIN), None);
        let dropped = listen(server, SocketAddr::new(saddr, DROPPED), None);
        let deaf = listen(server, SocketAddr::new(saddr, DEAF), Some(4096));
        let v6_addr = SocketAddr::new(Ipv6Addr::LOCALHOST.into(), V6);
        let v6 = listen(client, v6_addr, None);
        for (role, port, keepalive) in [
            (Role::Protected, PLAIN, Some((30, 5, 3))),
            (Role::Unprotected, PLAIN, None),
            (Role::Probing, DROPPED, Some((1, 1, 30))),
            (Role::Retransmitting, DROPPED, None),
            (Role::Stalled, DEAF, None),
        ] {
            sockets.insert(
                role,
                connect(client, SocketAddr::new(saddr, port), keepalive),
            );
        }
        sockets.insert(Role::Ipv6Client, connect(client, v6_addr, None));
        for l in [&plain, &plain, &dropped, &dropped, &deaf] {
            held.push(l.accept().unwrap().0);
        }
        sockets.insert(Role::Ipv6Server, v6.accept().unwrap().0);
        sockets.insert(Role::Ipv6Listener, v6);
        held.extend([plain, dropped, deaf]);

        // From now on the server namespace drops everything sent to DROPPED.
        for cmd in [
            "add table inet dptest",
            "add chain inet dptest input { type filter hook input priority 0; policy accept; }",
            &format!("add rule inet dptest input tcp dport {DROPPED} drop"),
        ] {
            let o = exec(server, "nft", &[cmd]);
            assert!(
                o.status.success(),
                "nft {cmd}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        (&sockets[&Role::Retransmitting])
            .write_all(&[0x55; 1000])
            .unwrap();

        // Fill the deaf server's window and our send buffer.
        let stalled = &sockets[&Role::Stalled];
        stalled.set_nonblocking(true).unwrap();
        for _ in 0..20 {
            if send_nowait(stalled, 1 << 20).unwrap() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            lab,
            sockets,
            _held: held,
        }
    }

    /// The local address of a role's socket: the key of its row.
    pub(crate) fn local(&self, role: Role) -> SocketAddr {
        self.sockets[&role]
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap()
    }

    /// Sends one byte from the IPv6 server side to the IPv6 client, which reads it.
    pub(crate) fn poke_ipv6_client(&self) {
        (&self.sockets[&Role::Ipv6Server]).write_all(b"!").unwrap();
        let mut buf = [std::mem::MaybeUninit::new(0u8); 1];
        assert_eq!(self.sockets[&Role::Ipv6Client].recv(&mut buf).unwrap(), 1);
    }
}

/// A timer as `ss` prints it: `timer:(keepalive,28sec,0)`.
#[derive(Debug)]
pub(crate) struct SsTimer {
    name: String,
    ms: i64,
    /// ss dropped the milliseconds (values of 10 s and more).
    coarse: bool,
    /// `idiag_retrans`: probes out (keepalive, persist) or retransmissions (on).
    count: i64,
}

#[derive(Debug)]
pub(crate) struct SsRow {
    timer: Option<SsTimer>,
    /// `lastrcv:` in ms; ss omits it when 0.
    lastrcv: i64,
}

/// `ss -tnoiH` in a namespace, raw and parsed by (local, peer).
pub(crate) struct Ss {
    pub(crate) raw: String,
    pub(crate) rows: HashMap<(String, String), SsRow>,
}

pub(crate) fn ss_snapshot(ns: &Netns) -> Ss {
    let o = exec(ns, "ss", &["-tnoiH"]);
    assert!(
        o.status.success(),
        "ss: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let raw = String::from_utf8(o.stdout).unwrap();
    let mut rows = HashMap::new();
    let mut last = None;
    for line in raw.lines() {
        if line.starts_with(char::is_whitespace) {
            let Some(key) = &last else { continue };
            let row: &mut SsRow = rows.get_mut(key).unwrap();
            for field in line.split_whitespace() {
                if let Some(v) = field.strip_prefix("lastrcv:") {
                    row.lastrcv = v.parse().unwrap();
                }
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() >= 5, "unexpected ss line {line:?}");
        let key = (f[3].to_owned(), f[4].to_owned());
        let timer = f[5..]
            .iter()
            .find_map(|x| x.strip_prefix("timer:(")?.strip_suffix(')'))
            .map(parse_timer);
        rows.insert(key.clone(), SsRow { timer, lastrcv: 0 });
        last = Some(key);
    }
    Ss { raw, rows }
}

/// `keepalive,28sec,0`, `on,204ms,1`, `persist,1.204ms,3` (iproute2 prints seconds with an "ms"
/// label: 1.204ms is 1 s 204 ms), `keepalive,1min29sec,0`.
fn parse_timer(s: &str) -> SsTimer {
    let parts: Vec<&str> = s.split(',').collect();
    assert_eq!(parts.len(), 3, "timer {s:?}");
    let mut rest = parts[1];
    let (mut ms, mut coarse) = (0i64, false);
    if let Some((m, r)) = rest.split_once("min") {
        ms += m.parse::<i64>().unwrap() * 60_000;
        coarse = true;
        rest = r;
    }
    if let Some(secs) = rest.strip_suffix("sec") {
        ms += secs.parse::<i64>().unwrap() * 1000;
        coarse = true;
    } else if let Some(v) = rest.strip_suffix("ms") {
        ms += match v.split_once('.') {
            Some((secs, millis)) => {
                secs.parse::<i64>().unwrap() * 1000 + millis.parse::<i64>().unwrap()
            }
            None => v.parse::<i64>().unwrap(),
        };
    } else {
        assert!(rest.is_empty(), "timer {s:?}");
    }
    SsTimer {
        name: parts[0].to_owned(),
        ms,
        coarse,
        count: parts[2].parse().unwrap(),
    }
}

/// One jiffy at HZ=250 is 4 ms; allow two of rounding.
const JIFFIES: i64 = 8;

impl Ss {
    /// Asserts that an audit row agrees with ss, which ran at most `window` ms after the audit
    /// started.
    pub(crate) fn cross_check(&self, r: &Value, window: i64) {
        let key = (
            r["local_addr"].as_str().unwrap().to_owned(),
            r["peer_addr"].as_str().unwrap().to_owned(),
        );
        let ss = self
            .rows
            .get(&key)
            .unwrap_or_else(|| panic!("ss has no {key:?}:\n{}", self.raw));
        let ctx = format!("{r:#}\nss: {ss:?}");
        // Idle time: tcpi_last_data_recv, which ss prints as lastrcv, a little later.
        let idle = r["idle_ms"].as_i64().unwrap();
        assert!(
            ss.lastrcv >= idle - JIFFIES && ss.lastrcv <= idle + window + JIFFIES,
            "idle {idle} vs lastrcv {} (window {window} ms): {ctx}",
            ss.lastrcv
        );
        // The timer and what it means for keepalive.
        assert_eq!(
            r["timer"].as_str(),
            ss.timer.as_ref().map(|t| t.name.as_str()),
            "{ctx}"
        );
        let want_keepalive = match ss.timer.as_ref().map(|t| t.name.as_str()) {
            Some("keepalive") => Value::Bool(true),
            None | Some("timewait") => Value::Bool(false),
            Some(_) => Value::Null,
        };
        assert_eq!(r["keepalive"], want_keepalive, "{ctx}");
        let Some(t) = &ss.timer else { return };
        let count = match t.name.as_str() {
            "on" => r["retransmits"].as_i64().unwrap(),
            _ => r["probes"].as_i64().unwrap(),
        };
        // A timer may fire between the two snapshots: then its count grows by one and it is
        // re-armed. Otherwise ss sees it a little closer to expiry.
        assert!(
            (0..=1).contains(&(t.count - count)),
            "count {count} vs ss {}: {ctx}",
            t.count
        );
        if t.count == count {
            let expires = r["timer_expires_ms"].as_i64().unwrap();
            let slack = if t.coarse { 1000 } else { 0 };
            assert!(
                t.ms <= expires + JIFFIES && t.ms >= expires - window - slack - JIFFIES,
                "expires {expires} vs ss {} (window {window} ms): {ctx}",
                t.ms
            );
        }
    }
}
