//! Every lab is dual-stack, and IPv6 works the moment `Lab::new` returns.

use std::fs;
use std::net::{IpAddr, SocketAddr};

use deadpeer_testkit::{Family, Lab, Netns, Tool, lab_or_skip};

/// `(neighbour solicitations sent, neighbour advertisements received)` in a namespace, from its
/// `/proc/net/snmp6`.
fn neighbour_discovery(ns: &Netns) -> (u64, u64) {
    let snmp6 = ns
        .run(|| fs::read_to_string("/proc/thread-self/net/snmp6"))
        .unwrap()
        .unwrap();
    let counter = |name: &str| -> u64 {
        snmp6
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in snmp6"))
            .trim()
            .parse()
            .unwrap()
    };
    (
        counter("Icmp6OutNeighborSolicits"),
        counter("Icmp6InNeighborAdvertisements"),
    )
}

/// A connect right after `Lab::new` needs no retry: every neighbour solicitation is answered the
/// first time. Without the lab's IPv6 set-up this fails: the veth end brought up first drops
/// neighbour solicitations until the kernel's link-watch worker configures IPv6 on it (up to
/// 1 s later), the solicitation is repeated after the 1 s retransmission timer, and the connect
/// takes 1.0 s instead of under a millisecond (measured: 6 of 6 labs).
#[tokio::test]
async fn ipv6_works_as_soon_as_the_lab_exists() {
    if lab_or_skip!().is_none() {
        return;
    }
    for round in 0..5 {
        let lab = Lab::new().unwrap();
        let addr = SocketAddr::new(lab.server_addr_for(Family::V6), 7400);
        let listener = lab.server().tokio_listener(addr).unwrap();
        let start = std::time::Instant::now();
        let (client, accepted) = tokio::join!(lab.client().tokio_connect(addr), listener.accept());
        let took = start.elapsed();
        let _client = client.unwrap();
        let (_server, peer) = accepted.unwrap();
        assert_eq!(peer.ip(), lab.client_addr_for(Family::V6));
        assert!(
            neighbour_discovery(lab.client()).0 > 0,
            "IPv6 without neighbour discovery?"
        );
        for ns in lab.namespaces() {
            let (asked, answered) = neighbour_discovery(ns);
            assert_eq!(
                asked,
                answered,
                "round {round}: {} repeated a neighbour solicitation (connect took {took:?})",
                ns.name()
            );
        }
    }
}

#[test]
fn addresses_are_unique_local_and_mirror_ipv4() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let v4 = [
        lab.client_addr(),
        lab.router_addrs().0,
        lab.router_addrs().1,
        lab.server_addr(),
    ];
    let v6 = [
        lab.client_addr_for(Family::V6),
        lab.router_addrs_for(Family::V6).0,
        lab.router_addrs_for(Family::V6).1,
        lab.server_addr_for(Family::V6),
    ];
    assert_eq!(lab.server_addr(), lab.server_addr_for(Family::V4));
    assert_eq!(lab.client_addr(), lab.client_addr_for(Family::V4));
    assert_eq!(lab.router_addrs(), lab.router_addrs_for(Family::V4));
    for (v4, v6) in v4.into_iter().zip(v6) {
        let (IpAddr::V4(v4), IpAddr::V6(v6)) = (v4, v6) else {
            panic!("{v4} {v6}")
        };
        assert_eq!(v6.segments()[0] & 0xff00, 0xfd00, "{v6} is not in fd00::/8");
        let [_, a, b, h] = v4.octets();
        assert_eq!(v6.to_string(), format!("fd64:706b:{a}:{b}::{h}"), "{v4}");
    }
    // Each address sits where the lab says.
    for (ns, addr) in [
        (lab.client(), v6[0]),
        (lab.router(), v6[1]),
        (lab.router(), v6[2]),
        (lab.server(), v6[3]),
    ] {
        let shown = ns.ip(&["-6", "addr", "show"]).unwrap();
        assert!(
            shown.contains(&format!("{addr}/64")),
            "{}: {shown}",
            ns.name()
        );
    }
    // The fault table is consulted by forwarded IPv6 too.
    let rules = lab.router().ip(&["-6", "rule", "show"]).unwrap();
    for iif in ["r0", "r1"] {
        assert!(rules.contains(&format!("iif {iif} lookup 100")), "{rules}");
    }
}

#[test]
fn faults_cover_both_families_and_heal_removes_them() {
    let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
        return;
    };
    let table = |family: &str| {
        lab.router()
            .ip(&[family, "route", "show", "table", "100"])
            .unwrap()
    };
    lab.unreachable().unwrap();
    let (v4, v6) = (table("-4"), table("-6"));
    for family in Family::ALL {
        for addr in [lab.client_addr_for(family), lab.server_addr_for(family)] {
            let routes = if addr.is_ipv4() { &v4 } else { &v6 };
            assert!(
                routes.contains(&format!("unreachable {addr}")),
                "{family}: {routes}"
            );
        }
    }
    lab.reject(deadpeer_testkit::Reject::AdminProhibited)
        .unwrap();
    let rules = lab
        .router()
        .run(|| {
            std::process::Command::new("nft")
                .args(["list", "table", "inet", "deadpeer_lab"])
                .output()
        })
        .unwrap()
        .unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        rules.contains(&format!(
            "ip6 daddr {} meta l4proto tcp reject with icmpv6 admin-prohibited",
            lab.server_addr_for(Family::V6)
        )),
        "{rules}"
    );
    lab.heal().unwrap();
    assert_eq!(table("-4").trim(), "");
    assert_eq!(table("-6").trim(), "");
}
