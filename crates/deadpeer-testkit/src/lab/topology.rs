//! Building the three namespaces: veth links, dual-stack addresses, routes, forwarding.

use std::fs;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::addr::{Addrs, Family, prefix_len};
use super::{FAULT_TABLE, Faults, Lab};
use crate::netns::Netns;
use crate::{LabError, cmd};

/// Interface names. They live inside the lab's namespaces, so every lab can use the same ones.
pub(crate) const CLIENT_IF: &str = "c0";
pub(crate) const ROUTER_CLIENT_IF: &str = "r0";
pub(crate) const ROUTER_SERVER_IF: &str = "r1";
pub(crate) const SERVER_IF: &str = "s0";

/// How long [`ipv6_ready`] waits for the kernel to configure IPv6 on an interface. The kernel
/// defers it to its link-watch worker, which runs at most once a second.
const IPV6_READY_WITHIN: Duration = Duration::from_secs(3);

/// Creates the namespaces `names` (client, router, server) and everything in them. On failure,
/// deletes the namespaces it created before returning the error.
pub(crate) fn build(names: &[String; 3], addrs: Addrs) -> Result<Lab, LabError> {
    let mut created = Vec::with_capacity(3);
    let result = build_into(names, addrs, &mut created);
    if result.is_err() {
        for name in created.iter().rev() {
            cmd::ip_quiet(&["netns", "del", name]);
        }
    }
    result
}

/// Creates namespaces and links, pushing each namespace name on `created` as soon as it exists.
fn build_into(
    names: &[String; 3],
    addrs: Addrs,
    created: &mut Vec<String>,
) -> Result<Lab, LabError> {
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
        // Before any interface exists, so that the veths inherit it from `default`.
        ipv6_sysctls(ns)?;
    }
    sysctl(&router, "net/ipv4/ip_forward", "1")?;
    sysctl(&router, "net/ipv6/conf/all/forwarding", "1")?;

    // client <-> router
    link(&client, CLIENT_IF, &router, ROUTER_CLIENT_IF)?;
    for family in Family::ALL {
        let hosts = addrs.of(family);
        add_addr(&client, CLIENT_IF, hosts.client, family)?;
        add_addr(&router, ROUTER_CLIENT_IF, hosts.router_client, family)?;
    }
    client.ip(&["link", "set", CLIENT_IF, "up"])?;
    router.ip(&["link", "set", ROUTER_CLIENT_IF, "up"])?;
    for family in Family::ALL {
        default_route(&client, addrs.of(family).router_client)?;
    }

    // router <-> server
    server_link(&router, &server, addrs)?;

    // Forwarded packets consult the (normally empty) fault table first.
    for (iif, pref) in [(ROUTER_CLIENT_IF, "100"), (ROUTER_SERVER_IF, "101")] {
        for family in ["-4", "-6"] {
            router.ip(&[
                family,
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
    }

    ipv6_ready(&client, CLIENT_IF)?;
    ipv6_ready(&router, ROUTER_CLIENT_IF)?;

    Ok(Lab {
        client,
        router,
        server,
        addrs,
        faults: Mutex::new(Faults::default()),
    })
}

/// Creates (or recreates) the router–server veth with its addresses and the server's default
/// routes, and waits until IPv6 is usable on both ends.
pub(crate) fn server_link(router: &Netns, server: &Netns, addrs: Addrs) -> Result<(), LabError> {
    link(server, SERVER_IF, router, ROUTER_SERVER_IF)?;
    for family in Family::ALL {
        let hosts = addrs.of(family);
        add_addr(server, SERVER_IF, hosts.server, family)?;
        add_addr(router, ROUTER_SERVER_IF, hosts.router_server, family)?;
    }
    server.ip(&["link", "set", SERVER_IF, "up"])?;
    router.ip(&["link", "set", ROUTER_SERVER_IF, "up"])?;
    for family in Family::ALL {
        default_route(server, addrs.of(family).router_server)?;
    }
    ipv6_ready(server, SERVER_IF)?;
    ipv6_ready(router, ROUTER_SERVER_IF)
}

/// `ip link add A netns NS_A type veth peer name B netns NS_B`.
fn link(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), LabError> {
    cmd::ip(&[
        "link",
        "add",
        a_if,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_if,
        "netns",
        b.name(),
    ])
    .map(drop)
}

/// Adds `addr` with the lab's prefix length to `dev`. IPv6 addresses get `nodad`: usable at
/// once, without the second of duplicate address detection (no other host can claim them).
fn add_addr(ns: &Netns, dev: &str, addr: std::net::IpAddr, family: Family) -> Result<(), LabError> {
    let cidr = format!("{addr}/{}", prefix_len(family));
    let mut args = vec!["addr", "add", &cidr, "dev", dev];
    if family == Family::V6 {
        args.push("nodad");
    }
    ns.ip(&args).map(drop)
}

/// `ip route add default via GATEWAY` (`ip -6` for an IPv6 gateway).
fn default_route(ns: &Netns, gateway: std::net::IpAddr) -> Result<(), LabError> {
    let via = gateway.to_string();
    let family = if gateway.is_ipv4() { "-4" } else { "-6" };
    ns.ip(&[family, "route", "add", "default", "via", &via])
        .map(drop)
}

/// Makes IPv6 usable at once in `ns`: on (a host may disable it by default) and without
/// duplicate address detection, for the lab's addresses and for the kernel's own link-local
/// ones, which are the source of the router's neighbour solicitations.
fn ipv6_sysctls(ns: &Netns) -> Result<(), LabError> {
    for conf in ["all", "default"] {
        sysctl(ns, &format!("net/ipv6/conf/{conf}/disable_ipv6"), "0")?;
        sysctl(ns, &format!("net/ipv6/conf/{conf}/accept_dad"), "0")?;
    }
    Ok(())
}

/// Writes `value` to `/proc/sys/<key>` inside `ns` (sysctls under `net/` are per namespace).
fn sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{key}");
    ns.run(|| fs::write(&path, value))
        .and_then(|r| r)
        .map_err(|e| {
            let hint = if key.starts_with("net/ipv6") && e.kind() == std::io::ErrorKind::NotFound {
                " (IPv6 is off in this kernel: boot without ipv6.disable=1)"
            } else {
                ""
            };
            LabError::io(
                format!("writing {value} to {path} in {}{hint}", ns.name()),
                e,
            )
        })
}

/// Waits until the kernel has configured IPv6 on `dev` (its link-local address exists, and with
/// it the multicast route that neighbour discovery needs).
///
/// The kernel configures IPv6 on an interface when it gets a carrier. The veth end brought up
/// first gets it when its peer comes up, through the link-watch worker, which runs up to a
/// second later; until then it drops neighbour solicitations, and a connect right after
/// [`Lab::new`] stalls for the SYN's 1 s retransmission (measured: 1.01–1.03 s in 6 of 6 runs
/// without this wait). `ip link show dev X` (`RTM_GETLINK`) makes the kernel process that
/// pending event at once, so the wait is normally one read of `/proc/thread-self/net/if_inet6`.
fn ipv6_ready(ns: &Netns, dev: &str) -> Result<(), LabError> {
    let has_link_local = || -> Result<bool, LabError> {
        let table = ns
            .run(|| fs::read_to_string("/proc/thread-self/net/if_inet6"))
            .and_then(|r| r)
            .map_err(|e| LabError::io(format!("reading /proc/net/if_inet6 in {}", ns.name()), e))?;
        Ok(table.lines().any(|line| {
            let mut fields = line.split_whitespace();
            fields.next().is_some_and(|a| a.starts_with("fe80")) && fields.last() == Some(dev)
        }))
    };
    if has_link_local()? {
        return Ok(());
    }
    ns.ip(&["link", "show", "dev", dev])?;
    let start = Instant::now();
    while !has_link_local()? {
        if start.elapsed() > IPV6_READY_WITHIN {
            return Err(LabError::io(
                format!(
                    "IPv6 on {dev} in {} is not configured after {IPV6_READY_WITHIN:?} (no \
                     link-local address in /proc/net/if_inet6, and the kernel configures one \
                     within a second): check that new namespaces get IPv6 link-local addresses \
                     (net.ipv6.conf.default.addr_gen_mode = 0, the kernel's default)",
                    ns.name()
                ),
                std::io::ErrorKind::TimedOut.into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// `CAP_NET_ADMIN` is bit 12 and `CAP_SYS_ADMIN` bit 21 of `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

pub(crate) fn check_privileges() -> Result<(), LabError> {
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
}
