//! The faults: routes on the router (blackhole, unreachable), a cut link, and what one socket
//! can do to its connection (forget, reset, fin, unacknowledged data).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{MsgFlags, setsockopt, sockopt::TcpRepair};
use socket2::{SockRef, Socket};

use super::addr::{Family, host_route};
use super::topology::{ROUTER_SERVER_IF, server_link};
use super::{FAULT_TABLE, Lab};
use crate::LabError;

impl Lab {
    /// Silently drops every packet between client and server, in both directions and both
    /// families.
    ///
    /// Runs `ip -n ROUTER route replace blackhole ADDR/32 table 100` for the server's and the
    /// client's IPv4 address, and the same with `/128` for their IPv6 addresses. Table 100 is
    /// consulted first by every packet the router *forwards* (`ip rule iif r0|r1 lookup 100`,
    /// `ip -6 rule` likewise, installed with the lab), so the fault covers both directions of
    /// every client–server connection. Both sides see a peer that vanished without a word: an
    /// idle socket with keepalive gets `ETIMEDOUT` at the keepalive bound, a socket with
    /// unacknowledged data retransmits until `TCP_USER_TIMEOUT` (or `tcp_retries2`) and then
    /// gets `ETIMEDOUT`. The same on IPv6.
    ///
    /// Replaces [`Lab::unreachable`] if that was active. Undo with [`Lab::heal`].
    ///
    /// # Errors
    ///
    /// Returns the failing `ip` command and its stderr.
    pub fn blackhole(&self) -> Result<(), LabError> {
        self.route_fault("blackhole")
    }

    /// Makes the router answer every packet between client and server with an ICMP error, in
    /// both directions and both families: ICMP host unreachable on IPv4, ICMPv6 "no route to
    /// destination" on IPv6.
    ///
    /// Runs `ip -n ROUTER route replace unreachable ADDR/32 table 100` for both IPv4 addresses
    /// and the same with `/128` for both IPv6 ones. The routes sit in the table for forwarded
    /// packets only (see [`Lab::blackhole`]): with a plain `unreachable` route to the client's
    /// address in `main`, the router could not send the ICMP error for the client–server
    /// direction back to the client. Linux treats these errors as soft errors for established
    /// connections: an idle socket with keepalive still gets `ETIMEDOUT` at the bound, while a
    /// socket with unacknowledged data and a `TCP_USER_TIMEOUT` gets `EHOSTUNREACH` on IPv4 and
    /// `ENETUNREACH` on IPv6 (the kernel's `icmpv6_err_convert` maps "no route" to it).
    ///
    /// Replaces [`Lab::blackhole`] if that was active. Undo with [`Lab::heal`].
    ///
    /// # Errors
    ///
    /// Returns the failing `ip` command and its stderr.
    pub fn unreachable(&self) -> Result<(), LabError> {
        self.route_fault("unreachable")
    }

    /// The host routes of the client's and the server's addresses, both families.
    fn fault_routes(&self) -> Vec<String> {
        Family::ALL
            .into_iter()
            .flat_map(|f| [self.server_addr_for(f), self.client_addr_for(f)])
            .map(host_route)
            .collect()
    }

    fn route_fault(&self, kind: &str) -> Result<(), LabError> {
        let mut faults = self.faults();
        faults.routes = true;
        for dst in self.fault_routes() {
            self.router
                .ip(&["route", "replace", kind, &dst, "table", FAULT_TABLE])?;
        }
        Ok(())
    }

    /// Deletes the router–server veth link (`r1` in the router, and with it `s0` in the server).
    ///
    /// What each side sees:
    /// - the **client** still reaches the router, which no longer has a route to the server's
    ///   subnet and answers with ICMP network unreachable (ICMPv6 no route): like
    ///   [`Lab::unreachable`], an idle keepalive socket gets `ETIMEDOUT` at the bound, on both
    ///   families;
    /// - the **server** loses its interface, its addresses and its default routes: its sockets
    ///   cannot send anything (their probes fail locally) and an idle keepalive socket dies at
    ///   the bound, with `ETIMEDOUT` on IPv4 but **`ENETUNREACH` on IPv6**: IPv6 records each
    ///   failed route lookup as the socket's soft error (`inet6_csk_xmit`), and the keepalive
    ///   timeout reports that error.
    ///
    /// Measured with 1/1/3 on both sides: both die 4.04–4.06 s after the cut, on both families.
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
            for dst in self.fault_routes() {
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
    /// keepalive bound. The same on IPv6.
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
    /// which sends RST. The other side's next read gets `ECONNRESET` immediately. The same on
    /// IPv6.
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
                // Data, or EINTR: read on.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}
