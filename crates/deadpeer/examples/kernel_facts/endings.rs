//! The cases of docs/kernel.md "How connections end": which resets look like a peer that forgot
//! the connection (its host rebooted, a NAT lost the flow) and which like a peer application that
//! quit, judged from the errno and `TCP_INFO` at the moment the socket reaches `TCP_CLOSE`; and
//! what an `EPOLLRDHUP | EPOLLET` registration reports (`fin_rdhup`).
//!
//! Raw sockets and raw `TCP_INFO` (this module's own `getsockopt` into `libc::tcp_info`, which on
//! glibc targets goes up to Linux 6.18's ECN counters), no deadpeer engine.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use deadpeer_testkit::{Lab, send_nowait};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use socket2::SockRef;

use super::{P113, error_epoll, nft_forward, pair};

/// The cases of this module, in the order `kernel_facts -- endings` runs them.
pub(super) const CASES: [&str; 11] = [
    "forget_probe",
    "forget_retransmit",
    "forget_data",
    "forget_stalled",
    "fin_forget_probe",
    "abort_idle",
    "abort_unread",
    "abort_in_flight",
    "abort_stalled",
    "abort_retransmit",
    "fin_rdhup",
];

const TCP_CLOSE: u8 = 7;

/// Reads `TCP_INFO`; fields this kernel does not fill stay 0.
#[allow(unsafe_code)]
fn raw_info(sock: &impl AsFd) -> libc::tcp_info {
    let mut raw = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is borrowed for the call; `raw` points to `len` writable bytes, and
    // the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            raw.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    // SAFETY: plain integers, so the zeroed bytes are a valid value, of which the kernel
    // overwrote a prefix with another valid value.
    unsafe { raw.assume_init() }
}

fn show(i: &libc::tcp_info) -> String {
    format!(
        "state={} probes={} retransmits={} backoff={} unacked={} lost={} retrans={} \
         total_retrans={} total_rto={} total_rto_recoveries={} snd_wnd={} last_data_sent={}ms \
         last_data_recv={}ms last_ack_recv={}ms rto={}ms",
        i.tcpi_state,
        i.tcpi_probes,
        i.tcpi_retransmits,
        i.tcpi_backoff,
        i.tcpi_unacked,
        i.tcpi_lost,
        i.tcpi_retrans,
        i.tcpi_total_retrans,
        i.tcpi_total_rto,
        i.tcpi_total_rto_recoveries,
        i.tcpi_snd_wnd,
        i.tcpi_last_data_sent,
        i.tcpi_last_data_recv,
        i.tcpi_last_ack_recv,
        i.tcpi_rto / 1000,
    )
}

fn errno_name(e: Option<i32>) -> String {
    let name = match e {
        None => return "none".into(),
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(_) => "errno",
    };
    format!("{name} {}", e.unwrap_or_default())
}

/// `0x2018 ERR|HUP|RDHUP`.
fn bits(b: u32) -> String {
    let names = [
        (libc::EPOLLIN, "IN"),
        (libc::EPOLLPRI, "PRI"),
        (libc::EPOLLOUT, "OUT"),
        (libc::EPOLLERR, "ERR"),
        (libc::EPOLLHUP, "HUP"),
        (libc::EPOLLRDNORM, "RDNORM"),
        (libc::EPOLLRDBAND, "RDBAND"),
        (libc::EPOLLWRNORM, "WRNORM"),
        (libc::EPOLLWRBAND, "WRBAND"),
        (libc::EPOLLRDHUP, "RDHUP"),
    ];
    let set: Vec<_> = names
        .iter()
        .filter(|(bit, _)| b & *bit as u32 != 0)
        .map(|(_, name)| *name)
        .collect();
    format!("{b:#x} {}", set.join("|"))
}

/// The events waiting on `ep`, as raw bits, without blocking.
fn epoll_bits(ep: &Epoll) -> Vec<u32> {
    let mut evs = [EpollEvent::empty(); 8];
    let n = ep.wait(&mut evs, EpollTimeout::ZERO).unwrap();
    evs[..n].iter().map(|e| e.events().bits() as u32).collect()
}

fn show_events(evs: &[u32]) -> String {
    let v: Vec<_> = evs.iter().map(|&b| bits(b)).collect();
    format!("[{}]", v.join(", "))
}

/// What the client looked like when it reached `TCP_CLOSE`.
struct Death {
    at: Instant,
    errno: Option<i32>,
    last_alive: libc::tcp_info,
    dead: libc::tcp_info,
    /// Events of an `EPOLLET`-only registration, with when they were seen.
    wakes: Vec<(Instant, u32)>,
}

/// Samples `sock` every millisecond until it reaches `TCP_CLOSE` or `limit` passes; `before` is
/// a sample taken before the fault (a reset kills the socket within microseconds).
fn watch(sock: &TcpStream, before: libc::tcp_info, limit: Duration) -> Result<Death, String> {
    let ep = error_epoll(sock);
    let begin = Instant::now();
    let mut wakes = Vec::new();
    let mut last_alive = before;
    loop {
        let now = Instant::now();
        wakes.extend(epoll_bits(&ep).into_iter().map(|b| (now, b)));
        let i = raw_info(sock);
        if i.tcpi_state == TCP_CLOSE {
            let errno = SockRef::from(sock)
                .take_error()
                .unwrap()
                .and_then(|e| e.raw_os_error());
            std::thread::sleep(Duration::from_millis(20));
            let later = Instant::now();
            wakes.extend(epoll_bits(&ep).into_iter().map(|b| (later, b)));
            return Ok(Death {
                at: now,
                errno,
                last_alive,
                dead: i,
                wakes,
            });
        }
        last_alive = i;
        if begin.elapsed() > limit {
            return Err(format!(
                "alive after {:.1}s: {}",
                limit.as_secs_f64(),
                show(&i)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn report(name: &str, death: Result<Death, String>, fault: Instant, extra: &str) -> String {
    let d = match death {
        Ok(d) => d,
        Err(alive) => return format!("{name}: {alive}{extra}"),
    };
    let secs = |t: Instant| t.saturating_duration_since(fault).as_secs_f64();
    let wakes: Vec<_> = d
        .wakes
        .iter()
        .map(|&(t, b)| format!("{:.3}s {}", secs(t), bits(b)))
        .collect();
    format!(
        "{name}: CLOSE at {:.3}s, SO_ERROR {}{extra}\n  last alive: {}\n  at death:   {}\n  \
         epoll (EPOLLET alone): [{}]",
        secs(d.at),
        errno_name(d.errno),
        show(&d.last_alive),
        show(&d.dead),
        wakes.join(", ")
    )
}

/// Runs one case of [`CASES`] in `lab`.
pub(super) fn case(lab: &Lab, name: &str) -> String {
    let port = 7000;
    let limit = Duration::from_secs(10);
    match name {
        "forget_probe" => {
            // Idle; the peer forgets; our first keepalive probe (idle 1 s) meets an RST.
            let (client, server) = pair(lab, port, P113);
            let before = raw_info(&client);
            let fault = Instant::now();
            lab.forget(server).unwrap();
            report(name, watch(&client, before, limit), fault, "")
        }
        "fin_forget_probe" => {
            // The peer sends FIN, we read EOF, then it forgets; our keepalive probe (in
            // CLOSE_WAIT) meets an RST. The wait lets our delayed ACK of the FIN (40 ms) out
            // first: sent after the forget, it meets the RST itself, with no probe counted.
            let (mut client, server) = pair(lab, port, P113);
            server.shutdown(Shutdown::Write).unwrap();
            std::thread::sleep(Duration::from_millis(200));
            assert_eq!(client.read(&mut [0u8; 8]).unwrap(), 0);
            let before = raw_info(&client);
            let fault = Instant::now();
            lab.forget(server).unwrap();
            report(name, watch(&client, before, limit), fault, "")
        }
        "forget_retransmit" => {
            // The peer forgets behind a blackhole; our 1000 B are retransmitted; after 1.5 s
            // the path heals and the next retransmission meets an RST.
            let (client, server) = pair(lab, port, P113);
            lab.blackhole().unwrap();
            lab.forget(server).unwrap();
            let before = raw_info(&client);
            let fault = Instant::now();
            send_nowait(&client, 1000).unwrap();
            let death = std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(1500));
                    lab.heal().unwrap();
                });
                watch(&client, before, limit)
            });
            report(name, death, fault, " (healed at 1.500s)")
        }
        "forget_data" => {
            // The peer forgets; we write before any probe is due: the first transmission meets
            // an RST.
            let (client, server) = pair(lab, port, P113);
            lab.forget(server).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let before = raw_info(&client);
            let fault = Instant::now();
            send_nowait(&client, 1000).unwrap();
            report(name, watch(&client, before, limit), fault, "")
        }
        "abort_idle" => {
            let (client, server) = pair(lab, port, P113);
            std::thread::sleep(Duration::from_millis(100));
            let before = raw_info(&client);
            let fault = Instant::now();
            lab.reset(server).unwrap();
            report(name, watch(&client, before, limit), fault, "")
        }
        "abort_unread" => {
            // Our 1000 B sit unread in the peer's receive queue (its kernel ACKed them); the
            // peer closes normally, and its kernel answers with an RST.
            let (client, server) = pair(lab, port, P113);
            send_nowait(&client, 1000).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let before = raw_info(&client);
            let fault = Instant::now();
            drop(server);
            report(name, watch(&client, before, limit), fault, "")
        }
        "abort_in_flight" => abort_in_flight(lab, port, limit),
        "abort_retransmit" => {
            // Our packets to the peer are dropped (one direction), so our 1000 B are
            // retransmitted; 1 s later the peer aborts, and its RST reaches us.
            let (client, server) = pair(lab, port, P113);
            nft_forward(lab, port, "drop");
            send_nowait(&client, 1000).unwrap();
            std::thread::sleep(Duration::from_millis(1000));
            let before = raw_info(&client);
            let fault = Instant::now();
            lab.reset(server).unwrap();
            report(name, watch(&client, before, limit), fault, "")
        }
        "abort_stalled" | "forget_stalled" => {
            // The peer stops reading; we fill its window and our send buffer (zero-window
            // probes run), then it aborts, or forgets and our next zero-window probe meets an
            // RST.
            let (client, server) = pair(lab, port, P113);
            let mut sent = 0;
            for _ in 0..100 {
                sent += send_nowait(&client, 1 << 20).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            // How often a zero-window probe is outstanding: 1 s of samples, every 5 ms; and
            // how many probes we sent and the peer left unanswered meanwhile.
            let counters = |ns: &deadpeer_testkit::Netns, name: &str| tcp_ext(ns, name);
            let sent_probes = counters(lab.client(), "TCPWinProbe");
            let skipped = counters(lab.server(), "TCPACKSkippedSeq");
            let mut probes = [0u32; 3];
            let mut open_window = 0;
            for _ in 0..200 {
                let i = raw_info(&client);
                probes[usize::from(i.tcpi_probes.min(2))] += 1;
                open_window += u32::from(i.tcpi_snd_wnd > 0);
                std::thread::sleep(Duration::from_millis(5));
            }
            let sent_probes = counters(lab.client(), "TCPWinProbe") - sent_probes;
            let skipped = counters(lab.server(), "TCPACKSkippedSeq") - skipped;
            let before = raw_info(&client);
            let fault = Instant::now();
            if name == "abort_stalled" {
                lab.reset(server).unwrap();
            } else {
                lab.forget(server).unwrap();
            }
            let extra = format!(
                " (sent {sent} B; over 1 s of stall before the fault, 200 samples: probes 0/1/2+ \
                 {}/{}/{}, snd_wnd > 0 in {open_window}; zero-window probes sent \
                 {sent_probes}, answers the peer skipped (TcpExtTCPACKSkippedSeq) {skipped})",
                probes[0], probes[1], probes[2]
            );
            report(name, watch(&client, before, limit), fault, &extra)
        }
        "fin_rdhup" => fin_rdhup(lab, port),
        other => format!("unknown case {other}"),
    }
}

/// A `TcpExt` counter of `/proc/net/netstat` in `ns`.
fn tcp_ext(ns: &deadpeer_testkit::Netns, name: &str) -> u64 {
    // /proc/net follows the process's namespace; thread-self follows this thread's.
    let text = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/netstat"))
        .unwrap()
        .unwrap();
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
    let at = names.split_whitespace().position(|n| n == name).unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// We write 64 KiB chunks from a thread, blocking; the peer reads for 300 ms, then aborts.
fn abort_in_flight(lab: &Lab, port: u16, limit: Duration) -> String {
    let (client, mut server) = pair(lab, port, P113);
    let (death, fault, write_err, received) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let chunk = vec![0x55u8; 64 * 1024];
            let mut sent = 0usize;
            loop {
                match (&client).write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) => return (e.raw_os_error(), sent),
                }
            }
        });
        let peer = s.spawn(move || {
            server
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            let mut received = 0usize;
            let until = Instant::now() + Duration::from_millis(300);
            while Instant::now() < until {
                received += server.read(&mut buf).unwrap_or(0);
            }
            let fault = Instant::now();
            lab.reset(server).unwrap();
            (fault, received)
        });
        let death = watch(&client, raw_info(&client), limit);
        let (fault, received) = peer.join().unwrap();
        (death, fault, writer.join().unwrap(), received)
    });
    let extra = format!(
        " (peer read {received} B; our writer sent {} B, then got {})",
        write_err.1,
        errno_name(write_err.0)
    );
    report("abort_in_flight", death, fault, &extra)
}

/// Three registrations of the same socket: deadpeer's (`EPOLLET` alone), the proposed one
/// (`EPOLLRDHUP | EPOLLET`), and a control that also asks for the data path
/// (`EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET`), which shows that the wake-ups happened.
fn registrations(sock: &TcpStream) -> Vec<(&'static str, Epoll)> {
    let et = EpollFlags::EPOLLET;
    let rdhup = EpollFlags::EPOLLRDHUP;
    let control = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT;
    [
        ("ET", et),
        ("RDHUP|ET", rdhup | et),
        ("control IN|OUT|RDHUP|ET", control | rdhup | et),
    ]
    .into_iter()
    .map(|(name, mask)| {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        ep.add(sock, EpollEvent::new(mask, 7)).unwrap();
        (name, ep)
    })
    .collect()
}

fn step(out: &mut Vec<String>, what: &str, regs: &[(&str, Epoll)], sock: &TcpStream) {
    let evs: Vec<_> = regs
        .iter()
        .map(|(name, ep)| format!("{name} {}", show_events(&epoll_bits(ep))))
        .collect();
    out.push(format!(
        "  {what}: state {}; {}",
        raw_info(sock).tcpi_state,
        evs.join("; ")
    ));
}

/// Reads whatever arrives on `sock` for `d`.
fn drain_for(mut sock: &TcpStream, d: Duration) -> usize {
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    let until = Instant::now() + d;
    while Instant::now() < until {
        n += sock.read(&mut buf).unwrap_or(0);
    }
    n
}

fn fin_rdhup(lab: &Lab, port: u16) -> String {
    let ms = Duration::from_millis;
    let mut out = vec!["fin_rdhup:".to_owned()];
    let (mut client, mut server) = pair(lab, port, P113);
    let regs = registrations(&client);
    step(&mut out, "registered", &regs, &client);
    for _ in 0..5 {
        server.write_all(&[1u8; 100]).unwrap();
        std::thread::sleep(ms(20));
    }
    step(&mut out, "5 writes of 100 B by the peer", &regs, &client);
    client.read_exact(&mut [0u8; 500]).unwrap();
    step(&mut out, "we read them", &regs, &client);
    // Window updates: fill our send buffer (the peer is not reading), then let the peer read.
    let mut queued = 0;
    for _ in 0..50 {
        queued += send_nowait(&client, 1 << 20).unwrap();
        std::thread::sleep(ms(5));
    }
    std::thread::sleep(ms(200));
    step(&mut out, &format!("we queued {queued} B"), &regs, &client);
    let read = drain_for(&server, ms(1000));
    let what = format!("the peer read {read} B (window updates)");
    step(&mut out, &what, &regs, &client);
    server.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(ms(200));
    step(&mut out, "the peer's FIN", &regs, &client);
    let eof = client.read(&mut [0u8; 8]).unwrap();
    for _ in 0..3 {
        client.write_all(&[2u8; 100]).unwrap();
        std::thread::sleep(ms(20));
    }
    let read = drain_for(&server, ms(1000));
    let what = format!("we read {eof} B (EOF), wrote 3 x 100 B, the peer read {read} B");
    step(&mut out, &what, &regs, &client);
    lab.reset(server).unwrap();
    std::thread::sleep(ms(200));
    step(&mut out, "the peer's RST", &regs, &client);
    let so_error = SockRef::from(&client).take_error().unwrap();
    out.push(format!(
        "  SO_ERROR {}",
        errno_name(so_error.and_then(|e| e.raw_os_error()))
    ));

    // Our own shutdown first, then the peer's FIN.
    let (client, server) = pair(lab, port + 1, P113);
    let regs = registrations(&client);
    out.push("fin_rdhup, our shutdown first:".to_owned());
    step(&mut out, "registered", &regs, &client);
    client.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(ms(200));
    step(&mut out, "our shutdown(SHUT_WR), ACKed", &regs, &client);
    lab.fin(server).unwrap();
    std::thread::sleep(ms(200));
    step(&mut out, "the peer's FIN", &regs, &client);
    let so_error = SockRef::from(&client).take_error().unwrap();
    out.push(format!(
        "  SO_ERROR {}",
        errno_name(so_error.and_then(|e| e.raw_os_error()))
    ));
    out.join("\n")
}
