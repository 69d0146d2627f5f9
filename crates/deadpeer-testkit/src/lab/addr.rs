//! The lab's addressing plan: two IPv4 /24s and two IPv6 /64s per lab, picked from `(pid, n)`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address family. Every [`Lab`](crate::Lab) is dual-stack: each of its hosts has one
/// address of each family, and every fault acts on both.
///
/// Use it to write a test once and run it for both families:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use deadpeer_testkit::{Family, Lab};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// for family in Family::ALL {
///     let lab = Lab::new()?;
///     let addr = SocketAddr::new(lab.server_addr_for(family), 7000);
///     let listener = lab.server().tokio_listener(addr)?;
///     let _client = lab.client().tokio_connect(addr).await?;
///     let (_server_side, peer) = listener.accept().await?;
///     assert_eq!(peer.ip(), lab.client_addr_for(family));
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4: `10.A.B.H` addresses.
    V4,
    /// IPv6: unique local (`fd00::/8`) addresses, `fd64:706b:A:B::H`.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

impl fmt::Display for Family {
    /// `IPv4` or `IPv6`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The four addresses of a lab in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hosts {
    pub(crate) client: IpAddr,
    pub(crate) router_client: IpAddr,
    pub(crate) router_server: IpAddr,
    pub(crate) server: IpAddr,
}

/// The lab's addressing plan, both families.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    pub(crate) v4: Hosts,
    pub(crate) v6: Hosts,
}

/// The first two groups of every lab IPv6 address: `fd` marks a unique local address (RFC 4193),
/// `64706b` is "dpk" in ASCII.
const V6_HIGH: [u16; 2] = [0xfd64, 0x706b];

/// The host parts: `.1` for the client and the server, `.254` for the router.
const HOST: u8 = 1;
const ROUTER: u8 = 254;

impl Addrs {
    /// Two adjacent /24s, `10.A.B.0/24` and `10.A.(B+1).0/24` with `B` even, picked from
    /// `(pid, n)`, and the matching IPv6 /64s `fd64:706b:A:B::/64` and `fd64:706b:A:(B+1)::/64`.
    /// For a fixed pid, 32768 consecutive labs get distinct subnets.
    pub(crate) fn for_lab(pid: u32, n: u32) -> Self {
        let key = pid.wrapping_mul(40503).wrapping_add(n) & 0x7fff;
        let a = (key >> 7) as u8;
        let b = ((key & 0x7f) << 1) as u8;
        let hosts = |addr: fn(u8, u8, u8) -> IpAddr| Hosts {
            client: addr(a, b, HOST),
            router_client: addr(a, b, ROUTER),
            router_server: addr(a, b + 1, ROUTER),
            server: addr(a, b + 1, HOST),
        };
        Addrs {
            v4: hosts(|a, b, h| IpAddr::V4(Ipv4Addr::new(10, a, b, h))),
            v6: hosts(v6),
        }
    }

    /// The addresses of one family.
    pub(crate) fn of(&self, family: Family) -> Hosts {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }
}

/// The IPv6 twin of `10.a.b.h`: `fd64:706b:a:b::h`, each octet's decimal digits written as a hex
/// group (`10.12.35.254` ↔ `fd64:706b:12:35::254`), so the two are easy to match by eye.
fn v6(a: u8, b: u8, h: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        V6_HIGH[0],
        V6_HIGH[1],
        decimal_as_hex(a),
        decimal_as_hex(b),
        0,
        0,
        0,
        decimal_as_hex(h),
    ))
}

/// `254` → `0x254`.
fn decimal_as_hex(octet: u8) -> u16 {
    let o = u16::from(octet);
    (o / 100) << 8 | (o / 10 % 10) << 4 | (o % 10)
}

/// The prefix length of the lab's subnets in `family`: /24 or /64.
pub(crate) fn prefix_len(family: Family) -> u8 {
    match family {
        Family::V4 => 24,
        Family::V6 => 64,
    }
}

/// `ADDR/32` or `ADDR/128`: the host route of `addr`.
pub(crate) fn host_route(addr: IpAddr) -> String {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    format!("{addr}/{len}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_distinct_within_a_process() {
        let a = Addrs::for_lab(4242, 0);
        let b = Addrs::for_lab(4242, 1);
        for family in Family::ALL {
            assert_ne!(a.of(family).client, b.of(family).client);
            assert_ne!(a.of(family).server, b.of(family).client);
        }
        let IpAddr::V4(client) = a.v4.client else {
            panic!()
        };
        let IpAddr::V4(server) = a.v4.server else {
            panic!()
        };
        assert_eq!(client.octets()[2] + 1, server.octets()[2]);
        let last = Addrs::for_lab(u32::MAX, u32::MAX);
        let IpAddr::V4(server) = last.v4.server else {
            panic!()
        };
        assert_eq!(server.octets()[3], 1);
    }

    #[test]
    fn v6_mirrors_v4() {
        for (pid, n) in [(1, 0), (4242, 7), (4_194_304, 99)] {
            let addrs = Addrs::for_lab(pid, n);
            for (v4, v6) in [
                (addrs.v4.client, addrs.v6.client),
                (addrs.v4.router_client, addrs.v6.router_client),
                (addrs.v4.router_server, addrs.v6.router_server),
                (addrs.v4.server, addrs.v6.server),
            ] {
                let IpAddr::V4(v4) = v4 else { panic!() };
                let [_, a, b, h] = v4.octets();
                let expected = format!("fd64:706b:{a}:{b}::{h}");
                assert_eq!(v6, expected.parse::<IpAddr>().unwrap(), "{v4}");
                let IpAddr::V6(v6) = v6 else { panic!() };
                assert_eq!(v6.octets()[0], 0xfd, "a unique local address");
            }
        }
    }

    #[test]
    fn host_routes() {
        assert_eq!(host_route(IpAddr::from([10, 1, 2, 3])), "10.1.2.3/32");
        assert_eq!(
            host_route("fd64:706b::1".parse().unwrap()),
            "fd64:706b::1/128"
        );
    }
}
