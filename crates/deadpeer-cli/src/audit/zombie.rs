//! Zombies: TCP sockets the kernel has closed (state `CLOSE`, after a keepalive or retransmission
//! timeout, a reset, an ICMP error) that a process still holds.
//!
//! Once closed, a connection leaves the tables sock_diag dumps, so it is found the other way
//! round: a socket descriptor in `/proc/<pid>/fd` whose inode no table lists
//! ([`procs::Unlisted`](super::procs::Unlisted)). `system.sockprotoname`, an extended attribute
//! of every socket, keeps the TCP ones. Then, with privilege, `pidfd_open` + `pidfd_getfd` give
//! this process a duplicate of the descriptor, and `TCP_INFO` on the duplicate confirms it: state
//! `CLOSE`, with a round-trip time measured (so it was once connected; a socket never connected
//! is also `CLOSE`, with no RTT). The duplicate is closed at once; closing it does not close the
//! application's socket.
//!
//! `SO_ERROR` is never read: reading it clears it, and the application would lose the errno that
//! says why its connection died. The cause is therefore not named here; `TCP_INFO`'s figures are.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags, pidfd_getfd, pidfd_open};
use serde::Serialize;

use super::procs::Unlisted;

/// One zombie, as `audit --json` prints it in `zombies`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Zombie {
    /// Always `closed`.
    pub(crate) state: &'static str,
    /// The local address (`getsockname` on the duplicate; the kernel keeps it after the close).
    pub(crate) local_addr: Option<SocketAddr>,
    /// The owner, and the descriptor number that holds the socket.
    pub(crate) pid: u32,
    pub(crate) process: String,
    pub(crate) fd: i32,
    pub(crate) inode: u32,
    /// `tcpi_last_data_recv`: milliseconds since data was last received.
    pub(crate) idle_ms: u64,
    /// `tcpi_last_ack_recv`: milliseconds since the peer last sent anything, an upper bound of
    /// how long the socket has been dead.
    pub(crate) last_ack_recv_ms: u64,
    /// `tcpi_probes` at the close: keepalive or zero-window probes unanswered.
    pub(crate) probes: u8,
    /// `tcpi_retransmits` at the close.
    pub(crate) retransmits: u8,
    /// `tcpi_backoff` at the close.
    pub(crate) backoff: u8,
    /// `tcpi_snd_wnd`: the peer's last advertised window.
    pub(crate) snd_wnd: Option<u32>,
    /// `tcpi_rtt`, microseconds.
    pub(crate) rtt_us: u128,
}

/// What the zombie search found and could not see.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) zombies: Vec<Zombie>,
    /// TCP sockets no table lists whose descriptor could not be duplicated (no privilege:
    /// `pidfd_getfd` needs ptrace access to the owner, i.e. root or `CAP_SYS_PTRACE`).
    pub(crate) unconfirmed: usize,
}

/// Whether a socket descriptor of another process is TCP, from `system.sockprotoname`
/// (`TCP`, `TCPv6`, `UNIX`, `UDP`, …) read through its `/proc/<pid>/fd/<fd>` link.
fn is_tcp(pid: u32, fd: i32) -> bool {
    let path = format!("/proc/{pid}/fd/{fd}");
    let mut buf = [0u8; 32];
    match rustix::fs::getxattr(path.as_str(), "system.sockprotoname", &mut buf) {
        Ok(n) => {
            let name = buf[..n].strip_suffix(b"\0").unwrap_or(&buf[..n]);
            name == b"TCP" || name == b"TCPv6"
        }
        Err(_) => false,
    }
}

/// A duplicate of `fd` of process `pid`.
fn duplicate(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    let pidfd = pidfd_open(pid, PidfdFlags::empty())?;
    Ok(pidfd_getfd(pidfd.as_fd(), fd, PidfdGetfdFlags::empty())?)
}

/// The zombies among the unlisted socket descriptors.
pub(crate) fn find(unlisted: &[Unlisted]) -> Found {
    let mut found = Found::default();
    for u in unlisted {
        if !is_tcp(u.owner.pid, u.fd) {
            continue;
        }
        let dup = match duplicate(u.owner.pid, u.fd) {
            Ok(dup) => dup,
            // The process or the descriptor went away meanwhile.
            Err(e) if matches!(e.raw_os_error(), Some(3 | 9)) => continue,
            Err(_) => {
                found.unconfirmed += 1;
                continue;
            }
        };
        if let Some(z) = confirm(u, &dup) {
            found.zombies.push(z);
        }
    }
    found.zombies.sort_by_key(|z| (z.pid, z.fd));
    found
}

/// A zombie when the duplicate is TCP in state `CLOSE` and was once connected.
fn confirm(u: &Unlisted, dup: &OwnedFd) -> Option<Zombie> {
    let info = deadpeer::tcp_info(dup).ok()?;
    if info.state != deadpeer::TcpInfo::CLOSE || info.rtt.is_zero() {
        return None;
    }
    let local_addr = socket2::SockRef::from(dup)
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket());
    Some(Zombie {
        state: "closed",
        local_addr,
        pid: u.owner.pid,
        process: u.owner.command.clone(),
        fd: u.fd,
        inode: u.inode,
        idle_ms: info.last_data_recv.as_millis() as u64,
        last_ack_recv_ms: info.last_ack_recv.as_millis() as u64,
        probes: info.probes,
        retransmits: info.retransmits,
        backoff: info.backoff,
        snd_wnd: info.snd_wnd,
        rtt_us: info.rtt.as_micros(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::procs::Owner;
    use super::*;
    use std::os::fd::AsRawFd;

    fn unlisted(fd: &impl AsRawFd) -> Unlisted {
        Unlisted {
            owner: Owner {
                pid: std::process::id(),
                command: "self".into(),
            },
            fd: fd.as_raw_fd(),
            inode: 0,
        }
    }

    #[test]
    fn never_connected_and_live_sockets_are_not_zombies() {
        let never =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(is_tcp(std::process::id(), never.as_raw_fd()));
        assert!(!is_tcp(std::process::id(), udp.as_raw_fd()));
        let found = find(&[unlisted(&never), unlisted(&udp), unlisted(&live)]);
        assert!(found.zombies.is_empty(), "{:?}", found.zombies);
    }

    #[test]
    fn a_reset_connection_is_a_zombie_and_keeps_its_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // Linger 0: the server's close sends a reset, and the client's socket is closed.
        socket2::SockRef::from(&server)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(server);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while deadpeer::tcp_info(&client).unwrap().state != deadpeer::TcpInfo::CLOSE {
            assert!(std::time::Instant::now() < deadline, "no reset");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let found = find(&[unlisted(&client)]);
        assert_eq!(found.unconfirmed, 0, "pidfd_getfd on this process itself");
        assert_eq!(found.zombies.len(), 1, "{found:?}");
        let z = &found.zombies[0];
        assert_eq!(z.local_addr, Some(client.local_addr().unwrap()));
        assert_eq!(z.fd, client.as_raw_fd());
        // The application still reads its error: audit did not take it.
        assert_eq!(
            client.take_error().unwrap().unwrap().raw_os_error(),
            Some(104)
        );
    }
}
