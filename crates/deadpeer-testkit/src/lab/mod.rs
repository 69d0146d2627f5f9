//! The three-namespace topology (`topology`, `addr`), how it is named and built (`builder`),
//! and the faults applied on its router (`faults`).

use std::net::IpAddr;
use std::sync::Mutex;

use crate::netns::Netns;
use crate::{LabError, cmd};

mod addr;
mod builder;
mod faults;
mod topology;

pub use addr::Family;
pub use builder::{DEFAULT_PREFIX, LabBuilder, MAX_PREFIX_LEN};
pub use faults::send_nowait;

/// An isolated network for one test: client — router — server, in three network namespaces,
/// dual-stack (IPv4 and IPv6).
///
/// ```text
///  client ns                     router ns                                 server ns
///  c0 10.A.B.1/24 ────── veth ── r0 10.A.B.254/24
///     fd64:706b:A:B::1/64           fd64:706b:A:B::254/64
///                                r1 10.A.(B+1).254/24 ────────── veth ── s0 10.A.(B+1).1/24
///                                   fd64:706b:A:(B+1)::254/64               fd64:706b:A:(B+1)::1/64
/// ```
///
/// The namespaces are named `dpk-<pid>-<n>-c`, `-r` and `-s` (or with the prefix given to
/// [`LabBuilder::prefix`]), where `<n>` counts the labs this process created. The subnets are
/// derived from `(pid, n)`: two IPv4 /24s, and two IPv6 /64s of unique local addresses
/// (`fd00::/8`) that mirror them, `10.12.35.254` ↔ `fd64:706b:12:35::254`. The client and the
/// server each have a default route of each family through the router, which forwards both
/// (`ip_forward=1`, `conf/all/forwarding=1`). IPv6 is usable as soon as the lab is returned (no
/// duplicate address detection, see [`Lab::new`]). Nothing is added to the host's own
/// namespace, so traffic never leaves the lab and labs never see each other.
///
/// Pick a family's addresses with [`server_addr_for`](Lab::server_addr_for) and
/// [`client_addr_for`](Lab::client_addr_for); [`server_addr`](Lab::server_addr) and
/// [`client_addr`](Lab::client_addr) are the IPv4 ones.
///
/// Faults ([`blackhole`](Lab::blackhole), [`unreachable`](Lab::unreachable),
/// [`cut_link`](Lab::cut_link), [`reject`](Lab::reject)) are applied on the router, to both
/// families, and affect every connection between client and server; [`heal`](Lab::heal) undoes
/// all of them. Faults of one socket ([`forget`](Lab::forget), [`reset`](Lab::reset),
/// [`fin`](Lab::fin)) act on the socket you pass. Dropping the lab deletes its namespaces, also
/// while a panic unwinds.
///
/// `Lab` is `Send + Sync`: share it (e.g. in an `Arc`) between the tasks driving both sides.
///
/// # Example
///
/// ```no_run
/// use std::io::{Read, Write};
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use deadpeer_testkit::Family;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let lab = deadpeer_testkit::Lab::new()?;
/// let addr = SocketAddr::new(lab.server_addr_for(Family::V6), 7000);
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
    addrs: addr::Addrs,
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

/// The router's routing table for faults, one per family. Rules send every packet *forwarded*
/// from `r0` or `r1` through it first; packets the router itself emits (its ICMP and ICMPv6
/// errors) use only `main`, so an `unreachable` fault can still tell the sender.
const FAULT_TABLE: &str = "100";

impl Lab {
    /// Builds a fresh lab, named `dpk-<pid>-<n>-<c|r|s>`: three namespaces, two veth links,
    /// IPv4 and IPv6 addresses, routes and forwarding. Same as `Lab::builder().build()`; see
    /// [`LabBuilder::build`] for the errors (it never panics).
    ///
    /// Before that it deletes stale `dpk-*` namespaces of the testkit's naming scheme whose
    /// creating process no longer exists (left behind by a killed test run). If building fails
    /// half-way, whatever was created is deleted again before the error is returned.
    ///
    /// IPv6 needs no settling time: the lab's addresses are added with `nodad`, duplicate
    /// address detection is off in the lab's namespaces (`accept_dad=0`), and `Lab::new` waits
    /// for the kernel to configure IPv6 on each veth end (normally no wait at all; see
    /// `docs/testing.md`), so a connect right after it succeeds at once.
    ///
    /// Takes about 50 ms (34 ms before labs were dual-stack).
    ///
    /// # Errors
    ///
    /// See [`LabBuilder::build`].
    pub fn new() -> Result<Lab, LabError> {
        LabBuilder::default().build()
    }

    /// A builder, to choose the namespaces' prefix ([`LabBuilder::prefix`]).
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The client namespace. Its only interface, `c0`, has [`Lab::client_addr_for`] of both
    /// families.
    pub fn client(&self) -> &Netns {
        &self.client
    }

    /// The router namespace, where the route-based faults are installed. Its interfaces are
    /// `r0` (towards the client) and `r1` (towards the server).
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// The server namespace. Its only interface, `s0`, has [`Lab::server_addr_for`] of both
    /// families.
    pub fn server(&self) -> &Netns {
        &self.server
    }

    /// The three namespaces: client, router, server.
    pub fn namespaces(&self) -> [&Netns; 3] {
        [&self.client, &self.router, &self.server]
    }

    /// The client's IPv4 address, `10.A.B.1`: `client_addr_for(Family::V4)`.
    pub fn client_addr(&self) -> IpAddr {
        self.client_addr_for(Family::V4)
    }

    /// The server's IPv4 address, `10.A.(B+1).1`: `server_addr_for(Family::V4)`. Bind servers
    /// to it (or to `0.0.0.0`) in [`Lab::server`].
    pub fn server_addr(&self) -> IpAddr {
        self.server_addr_for(Family::V4)
    }

    /// The router's IPv4 addresses: `(towards the client, towards the server)`.
    pub fn router_addrs(&self) -> (IpAddr, IpAddr) {
        self.router_addrs_for(Family::V4)
    }

    /// The client's address in `family`: `10.A.B.1` or `fd64:706b:A:B::1`.
    pub fn client_addr_for(&self, family: Family) -> IpAddr {
        self.addrs.of(family).client
    }

    /// The server's address in `family`: `10.A.(B+1).1` or `fd64:706b:A:(B+1)::1`. Bind
    /// servers to it (or to the unspecified address, `0.0.0.0` or `::`) in [`Lab::server`].
    pub fn server_addr_for(&self, family: Family) -> IpAddr {
        self.addrs.of(family).server
    }

    /// The router's addresses in `family`: `(towards the client, towards the server)`.
    pub fn router_addrs_for(&self, family: Family) -> (IpAddr, IpAddr) {
        let hosts = self.addrs.of(family);
        (hosts.router_client, hosts.router_server)
    }

    pub(crate) fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
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
