//! Measures what the kernel does when it kills a TCP connection, case by case, in fresh labs:
//! the errno, the time, `TCP_INFO` at the moment of death, and what an error-only epoll
//! registration (event mask 0, edge-triggered) reports. Needs root.
//!
//! ```text
//! cargo run -p deadpeer --example kernel_facts -- [--repeat N] [CASE...]
//! ```
//!
//! Without arguments every case runs, in parallel; `endings` names the cases of
//! docs/kernel.md "How connections end" (module `endings`), and `--repeat N` runs each case N
//! times in a row, each time in a fresh lab. docs/kernel.md quotes its output.
#![allow(missing_docs)]

#[path = "kernel_facts/endings.rs"]
mod endings;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use deadpeer_testkit::{Lab, send_nowait};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::{SockRef, TcpKeepalive};

#[derive(Clone, Copy)]
struct Policy {
    idle: u64,
    interval: u64,
    probes: u32,
    user_timeout_ms: u32,
}

const P113: Policy = Policy {
    idle: 1,
    interval: 1,
    probes: 3,
    user_timeout_ms: 3500,
};

fn show(i: &deadpeer::TcpInfo) -> String {
    format!(
        "state={} probes={} backoff={} retransmits={} unacked={} snd_wnd={} last_data_recv={}ms last_ack_recv={}ms rto={}ms",
        i.state,
        i.probes,
        i.backoff,
        i.retransmits,
        i.unacked,
        i.snd_wnd.map_or("?".into(), |w| w.to_string()),
        i.last_data_recv.as_millis(),
        i.last_ack_recv.as_millis(),
        i.rto.as_millis(),
    )
}

/// An epoll instance with `sock` registered for nothing but ERR/HUP, edge-triggered.
fn error_epoll(sock: &impl AsFd) -> Epoll {
    let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
    ep.add(sock, EpollEvent::new(EpollFlags::EPOLLET, 7))
        .unwrap();
    ep
}

fn epoll_events(ep: &Epoll) -> Vec<String> {
    let mut evs = [EpollEvent::empty(); 8];
    let n = ep.wait(&mut evs, EpollTimeout::ZERO).unwrap();
    evs[..n]
        .iter()
        .map(|ev| {
            let e = ev.events();
            [
                (EpollFlags::EPOLLIN, "IN"),
                (EpollFlags::EPOLLOUT, "OUT"),
                (EpollFlags::EPOLLERR, "ERR"),
                (EpollFlags::EPOLLHUP, "HUP"),
                (EpollFlags::EPOLLRDHUP, "RDHUP"),
            ]
            .iter()
            .filter(|(bit, _)| e.contains(*bit))
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join("|")
        })
        .collect()
}

fn info(sock: &TcpStream) -> deadpeer::TcpInfo {
    deadpeer::tcp_info(sock).unwrap()
}

fn apply(sock: &TcpStream, p: Policy) {
    let s = SockRef::from(sock);
    s.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(p.idle))
            .with_interval(Duration::from_secs(p.interval))
            .with_retries(p.probes),
    )
    .unwrap();
    s.set_tcp_user_timeout(if p.user_timeout_ms == 0 {
        None
    } else {
        Some(Duration::from_millis(p.user_timeout_ms.into()))
    })
    .unwrap();
}

/// A connected pair in a fresh lab, the client with `p` applied, one byte each way.
fn pair(lab: &Lab, port: u16, p: Policy) -> (TcpStream, TcpStream) {
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener = lab.server().tcp_listener(addr).unwrap();
    let mut client = lab.client().tcp_connect(addr).unwrap();
    apply(&client, p);
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    server.read_exact(&mut b).unwrap();
    server.write_all(b"y").unwrap();
    client.read_exact(&mut b).unwrap();
    (client, server)
}

/// Samples the client until the kernel kills it (state CLOSE) or `limit` passes; returns a
/// report line.
fn watch(name: &str, client: &TcpStream, start: Instant, limit: Duration) -> String {
    let ep = error_epoll(client);
    let mut samples = Vec::new();
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    loop {
        let evs = epoll_events(&ep);
        if !evs.is_empty() {
            samples.push(format!(
                "  epoll at {:.3}s: {:?}",
                start.elapsed().as_secs_f64(),
                evs
            ));
        }
        let i = info(client);
        if i.state == deadpeer::TcpInfo::CLOSE {
            let err = SockRef::from(client).take_error().unwrap();
            let errno = err.as_ref().and_then(|e| e.raw_os_error());
            // Drain events that came with the death.
            std::thread::sleep(Duration::from_millis(20));
            let evs = epoll_events(&ep);
            return format!(
                "{name}: died at {:.3}s errno={errno:?}\n  at death: {}\n  epoll after: {evs:?}\n{}",
                start.elapsed().as_secs_f64(),
                show(&i),
                samples.join("\n")
            );
        }
        if last_sample.elapsed() >= Duration::from_millis(500) {
            samples.push(format!(
                "  {:.2}s {}",
                start.elapsed().as_secs_f64(),
                show(&i)
            ));
            last_sample = Instant::now();
        }
        if start.elapsed() > limit {
            return format!(
                "{name}: alive after {:.1}s: {}\n{}",
                limit.as_secs_f64(),
                show(&i),
                samples.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn nft_reject(lab: &Lab, port: u16, how: &str) {
    nft_forward(lab, port, &format!("reject with {how}"));
}

/// An nftables rule on the router for the client's packets to the server's `port` (one
/// direction): `verdict` is `drop` or `reject with …`.
fn nft_forward(lab: &Lab, port: u16, verdict: &str) {
    // nft 1.0 wants a newline after a rule inside braces.
    let rules = format!(
        "table inet dp {{\n chain deny {{\n type filter hook forward priority 0;\n \
         ip daddr {} tcp dport {port} {verdict}\n }}\n}}\n",
        lab.server_addr()
    );
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", lab.router().name(), "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(rules.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(status.success(), "nft failed");
}

fn case(name: &str) -> String {
    let lab = Lab::new().unwrap();
    let port = 7000;
    match name {
        "keepalive" => {
            let (client, _server) = pair(&lab, port, P113);
            let start = Instant::now();
            lab.blackhole().unwrap();
            watch(name, &client, start, Duration::from_secs(10))
        }
        "retransmit" => {
            let (client, _server) = pair(&lab, port, P113);
            lab.blackhole().unwrap();
            let start = Instant::now();
            send_nowait(&client, 1000).unwrap();
            watch(name, &client, start, Duration::from_secs(10))
        }
        "route_unreachable" | "route_unreachable_idle" => {
            let (client, _server) = pair(&lab, port, P113);
            lab.unreachable().unwrap();
            let start = Instant::now();
            if name == "route_unreachable" {
                send_nowait(&client, 1000).unwrap();
            }
            watch(name, &client, start, Duration::from_secs(10))
        }
        "stall_then_blackhole" => {
            let (client, _server) = pair(&lab, port, P113);
            for _ in 0..200 {
                send_nowait(&client, 1 << 20).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(500));
            let start = Instant::now();
            lab.blackhole().unwrap();
            watch(name, &client, start, Duration::from_secs(12))
        }
        "stall" | "stall_ut_off" => {
            let mut p = P113;
            if name == "stall_ut_off" {
                p.user_timeout_ms = 0;
            }
            let (client, _server) = pair(&lab, port, p);
            let start = Instant::now();
            let mut sent = 0;
            // Fill the peer's receive buffer and our send buffer: the peer never reads.
            for _ in 0..200 {
                sent += send_nowait(&client, 1 << 20).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            let mut line = watch(name, &client, start, Duration::from_secs(12));
            line.push_str(&format!("\n  sent {sent} bytes"));
            line
        }
        "port_unreachable" | "prot_unreachable" | "admin_prohibited" | "host_unreachable"
        | "net_unreachable" | "tcp_reset" => {
            let (client, _server) = pair(&lab, port, P113);
            let how = match name {
                "port_unreachable" => "icmp type port-unreachable",
                "prot_unreachable" => "icmp type prot-unreachable",
                "admin_prohibited" => "icmp type admin-prohibited",
                "host_unreachable" => "icmp type host-unreachable",
                "net_unreachable" => "icmp type net-unreachable",
                _ => "tcp reset",
            };
            nft_reject(&lab, port, how);
            let start = Instant::now();
            send_nowait(&client, 1000).unwrap();
            watch(name, &client, start, Duration::from_secs(10))
        }
        "fin" => {
            let (mut client, server) = pair(&lab, port, P113);
            let ep = error_epoll(&client);
            lab.fin(server).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let n = client.read(&mut [0u8; 8]).unwrap();
            std::thread::sleep(Duration::from_secs(5));
            let after_fin = epoll_events(&ep);
            client.shutdown(Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let after_shutdown = epoll_events(&ep);
            let i = info(&client);
            let write = client.write(b"z").map_err(|e| e.raw_os_error());
            format!(
                "fin: read {n}; epoll over 5 s after FIN: {after_fin:?}; after our shutdown: \
                 {after_shutdown:?}; then {}; write then: {write:?}; SO_ERROR {:?}",
                show(&i),
                SockRef::from(&client).take_error().unwrap()
            )
        }
        "fin_then_reset" | "fin_then_forget" => {
            let (mut client, server) = pair(&lab, port, P113);
            let ep = error_epoll(&client);
            server.shutdown(Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let n = client.read(&mut [0u8; 8]).unwrap();
            let before = show(&info(&client));
            if name == "fin_then_reset" {
                lab.reset(server).unwrap();
            } else {
                lab.forget(server).unwrap();
                // Our data meets a host that forgot the connection: RST.
                client.write_all(b"hello").unwrap();
            }
            std::thread::sleep(Duration::from_millis(300));
            let evs = epoll_events(&ep);
            let i = info(&client);
            let so_error = SockRef::from(&client).take_error().unwrap();
            let read = client.read(&mut [0u8; 8]).map_err(|e| e.raw_os_error());
            let write = client.write(b"z").map_err(|e| e.raw_os_error());
            format!(
                "{name}: read {n} after FIN ({before}); after the peer's fault: epoll {evs:?}, {}, \
                 SO_ERROR {so_error:?}, read {read:?}, write {write:?}",
                show(&i)
            )
        }
        "fin_then_reset_write" => {
            // The same, but a write consumes the error before SO_ERROR does.
            let (mut client, server) = pair(&lab, port, P113);
            server.shutdown(Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            let _ = client.read(&mut [0u8; 8]).unwrap();
            lab.reset(server).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let write = client.write(b"z").map_err(|e| e.raw_os_error());
            let i = info(&client);
            let so_error = SockRef::from(&client).take_error().unwrap();
            let read = client.read(&mut [0u8; 8]).map_err(|e| e.raw_os_error());
            format!(
                "{name}: write {write:?}, then {}, SO_ERROR {so_error:?}, read {read:?}",
                show(&i)
            )
        }
        shape if shape.starts_with("ut:") => {
            // ut:IDLE:INTVL:PROBES:UT_MS — an idle socket, blackholed.
            let v: Vec<u64> = shape[3..].split(':').map(|x| x.parse().unwrap()).collect();
            let p = Policy {
                idle: v[0],
                interval: v[1],
                probes: v[2] as u32,
                user_timeout_ms: v[3] as u32,
            };
            let (client, _server) = pair(&lab, port, p);
            let start = Instant::now();
            lab.blackhole().unwrap();
            let line = watch(name, &client, start, Duration::from_secs(40));
            line.lines().next().unwrap().to_owned()
        }
        ending if endings::CASES.contains(&ending) => endings::case(&lab, ending),
        other => format!("unknown case {other}"),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut repeat = 1;
    if let Some(at) = args.iter().position(|a| a == "--repeat") {
        repeat = args
            .get(at + 1)
            .and_then(|n| n.parse().ok())
            .expect("--repeat takes a number of runs, e.g. --repeat 3");
        args.drain(at..at + 2);
    }
    let mut cases: Vec<String> = Vec::new();
    for a in args {
        if a == "endings" {
            cases.extend(endings::CASES.map(String::from));
        } else {
            cases.push(a);
        }
    }
    if cases.is_empty() {
        cases = [
            "keepalive",
            "retransmit",
            "stall",
            "stall_ut_off",
            "port_unreachable",
            "prot_unreachable",
            "admin_prohibited",
            "host_unreachable",
            "net_unreachable",
            "tcp_reset",
            "fin",
            "fin_then_reset",
            "fin_then_forget",
            "fin_then_reset_write",
        ]
        .map(String::from)
        .to_vec();
        cases.extend(endings::CASES.map(String::from));
    }
    // Cases run in parallel, the runs of one case one after the other.
    let handles: Vec<_> = cases
        .into_iter()
        .map(|c| std::thread::spawn(move || (1..=repeat).map(|_| case(&c)).collect::<Vec<_>>()))
        .collect();
    for h in handles {
        match h.join() {
            Ok(runs) => {
                for (n, line) in runs.iter().enumerate() {
                    let run = if repeat > 1 {
                        format!("[run {}/{repeat}] ", n + 1)
                    } else {
                        String::new()
                    };
                    println!("{run}{line}\n");
                }
            }
            Err(_) => println!("a case panicked\n"),
        }
    }
}
