//! The three-namespace topology and the faults applied on its router.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::socket::{MsgFlags, setsockopt, sockopt::TcpRepair};
use socket2::{SockRef, Socket};

use crate::netns::{NETNS_DIR, Netns};
use crate::{LabError, cmd};

/// Prefix of every namespace a lab creates: `dpk-<pid>-<n>-<c|r|s>`.
pub(crate) const PREFIX: &str = "dpk-";

/// Interface names. They live inside the lab's namespaces, so every lab can use the same ones.
const CLIENT_IF: &str = "c0";
const ROUTER_CLIENT_IF: &str = "r0";
const ROUTER_SERVER_IF: &str = "r1";
const SERVER_IF: &str = "s0";

/// Labs created by this process so far; with the pid, it makes names and subnets unique.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// An isolated network for one test: client — router — server, in three network namespaces.
///
/// ```text
///  client ns               router ns                      server ns
///  c0 10.A.B.1/24 ── veth ── r0 10.A.B.254/24
///                            r1 10.A.(B+1).254/24 ── veth ── s0 10.A.(B+1).1/24
/// ```
///
/// The namespaces are named `dpk-<pid>-<n>-c`, `-r` and `-s`, where `<n>` counts the labs this
/// process created, and the two /24 subnets are derived from `(pid, n)`. The client and the server
/// each have a default route through the router, which forwards (`ip_forward=1`). Nothing is added
/// to the host's own namespace, so traffic never leaves the lab and labs never see each other.
///
/// Faults ([`blackhole`](Lab::blackhole), [`unreachable`](Lab::unreachable),
/// [`cut_link`](Lab::cut_link)) are applied on the router and affect every connection between
/// client and server; [`heal`](Lab::heal) undoes all of them. Faults of one socket
/// ([`forget`](Lab::forget), [`reset`](Lab::reset), [`fin`](Lab::fin)) act on the socket you
/// pass. Dropping the lab deletes its namespaces, also while a panic unwinds.
///
/// `Lab` is `Send + Sync`: share it (e.g. in an `Arc`) between the tasks driving both sides.
///
/// # Example
///
/// ```no_run
/// use std::io::{Read, Write};
/// use std::net::SocketAddr;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lab = deadpeer_testkit::Lab::new()?;
/// let addr = SocketAddr::new(lab.server_addr(), 7000);
/// let listener = lab.server().tcp_listener(addr)?;
/// let mut client = lab.client().tcp_connect(addr)?;
/// let (_server_side, _) = listener.accept()?;
///
/// socket2::SockRef::from(&client).set_tcp_keepalive(
///     &socket2::TcpKeepalive::new()
///         .with_time(Duration::from_secs(1))
///         .with_interval(Duration::from_secs(1))
///         .with_retries(3),
/// )?;
/// lab.blackhole()?;
/// let err = client.read(&mut [0; 16]).unwrap_err();
/// assert_eq!(err.raw_os_error(), Some(110)); // ETIMEDOUT after about 4 s
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Lab {
    client: Netns,
    router: Netns,
    server: Netns,
    addrs: Addrs,
    faults: Mutex<Faults>,
}

/// Which faults are active, so that [`Lab::heal`] undoes exactly those.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// A blackhole or unreachable route pair is installed in [`FAULT_TABLE`].
    routes: bool,
    /// The router–server link was deleted.
    link_cut: bool,
    /// An nftables reject table is loaded on the router.
    pub(crate) nft: bool,
}

/// The router's routing table for faults. Rules send every packet *forwarded* from `r0` or `r1`
/// through it first; packets the router itself emits (its ICMP errors) use only `main`, so an
/// `unreachable` fault can still tell the sender.
const FAULT_TABLE: &str = "100";

/// The lab's IPv4 addressing plan.
#[derive(Debug, Clone, Copy)]
struct Addrs {
    client: Ipv4Addr,
    router_client: Ipv4Addr,
    router_server: Ipv4Addr,
    server: Ipv4Addr,
}

impl Addrs {
    /// Two adjacent /24s, `10.A.B.0/24` and `10.A.(B+1).0/24` with `B` even, picked from
    /// `(pid, n)`. For a fixed pid, 32768 consecutive labs get distinct subnets.
    fn for_lab(pid: u32, n: u32) -> Self {
        let key = pid.wrapping_mul(40503).wrapping_add(n) & 0x7fff;
        let a = (key >> 7) as u8;
        let b = ((key & 0x7f) << 1) as u8;
        Addrs {
            client: Ipv4Addr::new(10, a, b, 1),
            router_client: Ipv4Addr::new(10, a, b, 254),
            router_server: Ipv4Addr::new(10, a, b + 1, 254),
            server: Ipv4Addr::new(10, a, b + 1, 1),
        }
    }
}

impl Lab {
    /// Builds a fresh lab: three namespaces, two veth links, addresses, routes and forwarding.
    ///
    /// Before that it deletes stale `dpk-*` namespaces whose creating process no longer exists
    /// (left behind by a killed test run). If building fails half-way, whatever was created is
    /// deleted again before the error is returned.
    ///
    /// Takes a few tens of milliseconds.
    ///
    /// # Errors
    ///
    /// - [`LabError::Privilege`] without `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` (run as root);
    /// - [`LabError::MissingTool`] when `ip` (iproute2) is not installed;
    /// - [`LabError::Command`] or [`LabError::Io`] when a step fails; the message holds the
    ///   failing command line and its stderr.
    ///
    /// It never panics.
    pub fn new() -> Result<Lab, LabError> {
        check_privileges()?;
        cmd::check_ip()?;
        sweep_stale();

        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{pid}-{n}");
        let names = [
            format!("{base}-c"),
            format!("{base}-r"),
            format!("{base}-s"),
        ];
        let addrs = Addrs::for_lab(pid, n);

        let mut created = Vec::with_capacity(3);
        match build(&names, addrs, &mut created) {
            Ok(lab) => Ok(lab),
            Err(err) => {
                for name in created.iter().rev() {
                    cmd::ip_quiet(&["netns", "del", name]);
                }
                Err(err)
            }
        }
    }

    /// The client namespace. Its only interface, `c0`, has [`Lab::client_addr`].
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The router namespace, where the route-based faults are installed. Its interfaces are
    /// `r0` (towards the client) and `r1` (towards the server).
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// The server namespace. Its only interface, `s0`, has [`Lab::server_addr`].
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// The three namespaces: client, router, server.
    pub fn namespaces(&self) -> [&Netns; 3] {
        [&self.client, &self.router, &self.server]
    }

    /// The client's address, `10.A.B.1`.
    pub fn client_addr(&self) -> IpAddr {
        IpAddr::V4(self.addrs.client)
    }

    /// The server's address, `10.A.(B+1).1`. Bind servers to it (or to `0.0.0.0`) in
    /// [`Lab::server`].
    pub fn server_addr(&self) -> IpAddr {
        IpAddr::V4(self.addrs.server)
    }

    /// The router's addresses: `(towards the client, towards the server)`.
    pub fn router_addrs(&self) -> (IpAddr, IpAddr) {
        (
            IpAddr::V4(self.addrs.router_client),
            IpAddr::V4(self.addrs.router_server),
        )
    }

    /// Silently drops every packet between client and server, in both directions.
    ///
    /// Runs `ip -n ROUTER route replace blackhole ADDR/32 table 100` for the server's and the
    /// client's address. Table 100 is consulted first by every packet the router *forwards*
    /// (`ip rule iif r0|r1 lookup 100`, installed with the lab), so the fault covers both
    /// directions of every client–server connection. Both sides see a peer that vanished without a word: an idle socket with keepalive
    /// gets `ETIMEDOUT` at the keepalive bound, a socket with unacknowledged data retransmits
    /// until `TCP_USER_TIMEOUT` (or `tcp_retries2`) and then gets `ETIMEDOUT`.
    ///
    /// Replaces [`Lab::unreachable`] if that was active. Undo with [`Lab::heal`].
    ///
    /// # Errors
    ///
    /// Returns the failing `ip` command and its stderr.
    pub fn blackhole(&self) -> Result<(), LabError> {
        self.route_fault("blackhole")
    }

    /// Makes the router answer every packet between client and server with ICMP host
    /// unreachable, in both directions.
    ///
    /// Runs `ip -n ROUTER route replace unreachable ADDR/32 table 100` for both addresses. The
    /// routes sit in the table for forwarded packets only (see [`Lab::blackhole`]): with a plain
    /// `unreachable` route to the client's address in `main`, the router could not send the
    /// ICMP error for the client–server direction back to the client. Linux treats
    /// ICMP unreachable as a soft error for established connections: an idle socket with
    /// keepalive still gets `ETIMEDOUT` at the bound, while a socket with unacknowledged data and
    /// a `TCP_USER_TIMEOUT` gets `EHOSTUNREACH`.
    ///
    /// Replaces [`Lab::blackhole`] if that was active. Undo with [`Lab::heal`].
    ///
    /// # Errors
    ///
    /// Returns the failing `ip` command and its stderr.
    pub fn unreachable(&self) -> Result<(), LabError> {
        self.route_fault("unreachable")
    }

    fn route_fault(&self, kind: &str) -> Result<(), LabError> {
        let mut faults = self.faults();
        faults.routes = true;
        for addr in [self.addrs.server, self.addrs.client] {
            let dst = format!("{addr}/32");
            self.router
                .ip(&["route", "replace", kind, &dst, "table", FAULT_TABLE])?;
        }
        Ok(())
    }

    pub(crate) fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deletes the router–server veth link (`r1` in the router, and with it `s0` in the server).
    ///
    /// What each side sees:
    /// - the **client** still reaches the router, which no longer has a route to the server's
    ///   subnet and answers with ICMP network unreachable: like [`Lab::unreachable`], an idle
    ///   keepalive socket gets `ETIMEDOUT` at the bound;
    /// - the **server** loses its interface, its address and its default route: its sockets
    ///   cannot send anything (their probes fail locally) and an idle keepalive socket gets
    ///   `ETIMEDOUT` at the bound.
    ///
    /// Measured with 1/1/3 on both sides: both get `ETIMEDOUT` 4.08 s after the cut.
    ///
    /// [`Lab::heal`] recreates the link with the same addresses and routes; connections
    /// that have not died yet resume.
    ///
    /// # Errors
    ///
    /// Returns the failing `ip` command and its stderr.
    pub fn cut_link(&self) -> Result<(), LabError> {
        let mut faults = self.faults();
        if !faults.link_cut {
            self.router.ip(&["link", "del", ROUTER_SERVER_IF])?;
            faults.link_cut = true;
        }
        Ok(())
    }

    /// Undoes every fault of the lab: removes the blackhole or unreachable routes and the
    /// [`reject`](Lab::reject) rules, and recreates the router–server link if [`Lab::cut_link`]
    /// deleted it.
    ///
    /// Connections that have not been declared dead yet carry on (their retransmissions and
    /// probes get through again). Healing a healthy lab does nothing.
    ///
    /// # Errors
    ///
    /// Returns the failing `ip` command and its stderr.
    pub fn heal(&self) -> Result<(), LabError> {
        let mut faults = self.faults();
        if faults.routes {
            for addr in [self.addrs.server, self.addrs.client] {
                let dst = format!("{addr}/32");
                // Ignore "No such process": the route may already be gone (a failed fault).
                if let Err(err) = self
                    .router
                    .ip(&["route", "del", &dst, "table", FAULT_TABLE])
                {
                    if !matches!(&err, LabError::Command { stderr, .. } if stderr.contains("No such process"))
                    {
                        return Err(err);
                    }
                }
            }
            faults.routes = false;
        }
        if faults.link_cut {
            server_link(&self.router, &self.server, self.addrs)?;
            faults.link_cut = false;
        }
        if faults.nft {
            drop(faults);
            self.clear_rejects()?;
            self.faults().nft = false;
        }
        Ok(())
    }

    /// Makes the kernel forget the connection of `sock` without telling the other side, as if
    /// the peer's host rebooted.
    ///
    /// Sets `TCP_REPAIR=1` on the socket (needs `CAP_NET_ADMIN`) and closes it: in repair mode,
    /// close sends neither FIN nor RST. The other side's next segment (a keepalive probe, or
    /// data) reaches a host that has no such connection and is answered with RST, so it gets
    /// `ECONNRESET` about one keepalive idle time after the last exchange, well before the
    /// keepalive bound.
    ///
    /// Pass the peer-side socket by value: a std `TcpStream`, a `socket2::Socket`, or an
    /// `OwnedFd`. For a tokio stream, pass `stream.into_std()?`.
    ///
    /// # Errors
    ///
    /// Fails if `TCP_REPAIR` cannot be set (the socket is then closed normally).
    pub fn forget(&self, sock: impl Into<OwnedFd>) -> Result<(), LabError> {
        let fd: OwnedFd = sock.into();
        setsockopt(&fd, TcpRepair, &1)
            .map_err(|e| LabError::io("setting TCP_REPAIR=1", e.into()))?;
        drop(fd);
        Ok(())
    }

    /// Resets the connection of `sock` at once: sets `SO_LINGER` to `{on, 0 s}` and closes it,
    /// which sends RST. The other side's next read gets `ECONNRESET` immediately.
    ///
    /// # Errors
    ///
    /// Fails if `SO_LINGER` cannot be set (the socket is then closed normally).
    pub fn reset(&self, sock: impl Into<OwnedFd>) -> Result<(), LabError> {
        let socket = Socket::from(sock.into());
        socket
            .set_linger(Some(std::time::Duration::ZERO))
            .map_err(|e| LabError::io("setting SO_LINGER {1, 0}", e))?;
        drop(socket);
        Ok(())
    }

    /// Closes `sock` cleanly, as the control case: this is *not* a death.
    ///
    /// Reads and discards whatever is unread (closing with unread data would send RST), shuts
    /// down the write side (FIN) and closes. The other side reads EOF (`Ok(0)`), and has no
    /// pending socket error.
    ///
    /// # Errors
    ///
    /// Fails if the socket cannot be made non-blocking or shut down.
    pub fn fin(&self, sock: impl Into<OwnedFd>) -> Result<(), LabError> {
        let socket = Socket::from(sock.into());
        socket
            .set_nonblocking(true)
            .map_err(|e| LabError::io("setting O_NONBLOCK", e))?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match io::Read::read(&mut &socket, &mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: nothing left unread
            }
        }
        socket
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| LabError::io("shutdown(SHUT_WR)", e))?;
        drop(socket);
        Ok(())
    }

    /// Leaves `len` bytes unacknowledged in the send queue of `sock`, in one line: applies
    /// [`Lab::blackhole`], then [`send_nowait`]s the bytes.
    ///
    /// Returns how many bytes were queued (fewer than `len` if the send buffer filled up). While
    /// they stay unacknowledged keepalive never fires: only `TCP_USER_TIMEOUT` (or
    /// `tcp_retries2`, about 924 s by default) ends the connection.
    ///
    /// # Errors
    ///
    /// Fails if the blackhole cannot be installed or the send fails with anything but
    /// `EWOULDBLOCK`.
    pub fn send_unacked(&self, sock: &impl AsFd, len: usize) -> Result<usize, LabError> {
        self.blackhole()?;
        send_nowait(sock, len).map_err(|e| LabError::io("sending unacknowledged data", e))
    }
}

/// Writes up to `len` bytes (`0x55`) to `sock` without blocking (`MSG_DONTWAIT | MSG_NOSIGNAL`)
/// and returns how many the kernel accepted.
///
/// Stops early, without an error, when the send buffer is full. Combined with a fault
/// ([`Lab::unreachable`], say) this leaves data unacknowledged; [`Lab::send_unacked`] does it
/// with a blackhole.
///
/// # Errors
///
/// Any send error other than `EWOULDBLOCK`/`EINTR`.
pub fn send_nowait(sock: &impl AsFd, len: usize) -> io::Result<usize> {
    let sock = SockRef::from(sock);
    let chunk = [0x55u8; 16 * 1024];
    let flags = (MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL).bits();
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        match sock.send_with_flags(&chunk[..n], flags) {
            Ok(0) => break,
            Ok(k) => sent += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

impl Drop for Lab {
    /// Deletes the three namespaces (`ip netns del`), ignoring errors.
    ///
    /// A namespace lives on while a socket or thread still uses it; the kernel frees it when the
    /// last one is gone.
    fn drop(&mut self) {
        for ns in [&self.server, &self.router, &self.client] {
            cmd::ip_quiet(&["netns", "del", ns.name()]);
        }
    }
}

/// Creates namespaces and links, pushing each namespace name on `created` as soon as it exists.
fn build(names: &[String; 3], addrs: Addrs, created: &mut Vec<String>) -> Result<Lab, LabError> {
    for name in names {
        cmd::ip(&["netns", "add", name]).map_err(|err| match err {
            LabError::Command { stderr, .. }
                if stderr.contains("Operation not permitted")
                    || stderr.contains("Permission denied") =>
            {
                LabError::Privilege {
                    reason: format!(
                        "cannot create network namespace {name} ({stderr}): run as root or \
                         grant CAP_NET_ADMIN and CAP_SYS_ADMIN"
                    ),
                }
            }
            other => other,
        })?;
        created.push(name.clone());
    }
    let [client, router, server] = names.each_ref().map(|n| Netns::open(n));
    let (client, router, server) = (client?, router?, server?);
    for ns in [&client, &router, &server] {
        ns.ip(&["link", "set", "lo", "up"])?;
    }

    // client <-> router
    cmd::ip(&[
        "link",
        "add",
        CLIENT_IF,
        "netns",
        client.name(),
        "type",
        "veth",
        "peer",
        "name",
        ROUTER_CLIENT_IF,
        "netns",
        router.name(),
    ])?;
    client.ip(&[
        "addr",
        "add",
        &format!("{}/24", addrs.client),
        "dev",
        CLIENT_IF,
    ])?;
    client.ip(&["link", "set", CLIENT_IF, "up"])?;
    router.ip(&[
        "addr",
        "add",
        &format!("{}/24", addrs.router_client),
        "dev",
        ROUTER_CLIENT_IF,
    ])?;
    router.ip(&["link", "set", ROUTER_CLIENT_IF, "up"])?;
    client.ip(&[
        "route",
        "add",
        "default",
        "via",
        &addrs.router_client.to_string(),
    ])?;

    // router <-> server
    server_link(&router, &server, addrs)?;

    // Forwarded packets consult the (normally empty) fault table first.
    for (iif, pref) in [(ROUTER_CLIENT_IF, "100"), (ROUTER_SERVER_IF, "101")] {
        router.ip(&[
            "rule",
            "add",
            "iif",
            iif,
            "lookup",
            FAULT_TABLE,
            "pref",
            pref,
        ])?;
    }

    router
        .run(|| fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
        .and_then(|r| r)
        .map_err(|e| LabError::io(format!("enabling ip_forward in {}", router.name()), e))?;

    Ok(Lab {
        client,
        router,
        server,
        addrs,
        faults: Mutex::new(Faults::default()),
    })
}

/// Creates (or recreates) the router–server veth with its addresses and the server's route.
fn server_link(router: &Netns, server: &Netns, addrs: Addrs) -> Result<(), LabError> {
    cmd::ip(&[
        "link",
        "add",
        SERVER_IF,
        "netns",
        server.name(),
        "type",
        "veth",
        "peer",
        "name",
        ROUTER_SERVER_IF,
        "netns",
        router.name(),
    ])?;
    server.ip(&[
        "addr",
        "add",
        &format!("{}/24", addrs.server),
        "dev",
        SERVER_IF,
    ])?;
    server.ip(&["link", "set", SERVER_IF, "up"])?;
    router.ip(&[
        "addr",
        "add",
        &format!("{}/24", addrs.router_server),
        "dev",
        ROUTER_SERVER_IF,
    ])?;
    router.ip(&["link", "set", ROUTER_SERVER_IF, "up"])?;
    server.ip(&[
        "route",
        "add",
        "default",
        "via",
        &addrs.router_server.to_string(),
    ])?;
    Ok(())
}

/// `CAP_NET_ADMIN` is bit 12 and `CAP_SYS_ADMIN` bit 21 of `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

fn check_privileges() -> Result<(), LabError> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| LabError::io("reading /proc/self/status", e))?;
    match missing_caps(&status) {
        Some(missing) if missing.is_empty() => Ok(()),
        Some(missing) => Err(LabError::Privilege {
            reason: format!(
                "missing {}: run as root or grant CAP_NET_ADMIN and CAP_SYS_ADMIN",
                missing.join(" and ")
            ),
        }),
        None => Err(LabError::Privilege {
            reason: "cannot read CapEff from /proc/self/status: run as root or grant \
                     CAP_NET_ADMIN and CAP_SYS_ADMIN"
                .to_owned(),
        }),
    }
}

/// The capabilities a lab needs that `CapEff` in a `/proc/<pid>/status` text lacks; `None` if
/// the line is missing or malformed.
fn missing_caps(status: &str) -> Option<Vec<&'static str>> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    let mut missing = Vec::new();
    if caps & (1 << CAP_NET_ADMIN) == 0 {
        missing.push("CAP_NET_ADMIN");
    }
    if caps & (1 << CAP_SYS_ADMIN) == 0 {
        missing.push("CAP_SYS_ADMIN");
    }
    Some(missing)
}

/// Parses the creating pid out of a lab namespace name `dpk-<pid>-<n>-<c|r|s>`.
fn lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let _n: u32 = parts.next()?.parse().ok()?;
    let role = parts.next()?;
    (matches!(role, "c" | "r" | "s") && parts.next().is_none()).then_some(pid)
}

/// Deletes lab namespaces whose creating process is gone. Errors are ignored (another process
/// may be sweeping the same names).
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(pid) = lab_pid(name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                cmd::ip_quiet(&["netns", "del", name]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_parsing() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(missing_caps(root), Some(vec![]));
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(
            missing_caps(none),
            Some(vec!["CAP_NET_ADMIN", "CAP_SYS_ADMIN"])
        );
        let net_only = format!("CapEff:\t{:016x}\n", 1u64 << 12);
        assert_eq!(missing_caps(&net_only), Some(vec!["CAP_SYS_ADMIN"]));
        assert_eq!(missing_caps("Name:\tx\n"), None);
    }

    #[test]
    fn names() {
        assert_eq!(lab_pid("dpk-4242-7-r"), Some(4242));
        assert_eq!(lab_pid("dpk-4242-7-x"), None);
        assert_eq!(lab_pid("dpk-4242-r"), None);
        assert_eq!(lab_pid("kac"), None);
        assert_eq!(lab_pid("dpk-4242-7-r-extra"), None);
    }

    #[test]
    fn subnets_are_distinct_within_a_process() {
        let a = Addrs::for_lab(4242, 0);
        let b = Addrs::for_lab(4242, 1);
        assert_ne!(a.client, b.client);
        assert_ne!(a.server, b.client);
        assert_eq!(a.client.octets()[2] + 1, a.server.octets()[2]);
        let last = Addrs::for_lab(u32::MAX, u32::MAX);
        assert_eq!(last.server.octets()[3], 1);
    }
}
