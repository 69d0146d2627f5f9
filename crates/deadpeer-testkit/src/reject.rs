//! Firewall rejects on the lab's router, with nftables: the path answers with an ICMP error or a
//! TCP reset instead of forwarding.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Family, Lab, LabError, Tool};

/// How the router rejects the lab's traffic in [`Lab::reject`]: nftables' `reject with …`, with
/// an ICMP error on IPv4 and its ICMPv6 counterpart on IPv6.
///
/// Each variant says what a connection with unacknowledged data gets, on each family, when it
/// dies at its user timeout (an idle connection ignores ICMP errors and dies of its keepalive
/// probes, `ETIMEDOUT`). IPv6 errnos come from the kernel's `icmpv6_err_convert`, and were
/// measured with `tests/faults.rs` (`rejects_kill_unacked_data_with_their_errno_*`, see
/// `docs/testing.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// ICMP port unreachable, `reject`'s default in nftables and iptables: `ECONNREFUSED`.
    ///
    /// IPv6: ICMPv6 port unreachable, `ECONNREFUSED`.
    PortUnreachable,
    /// ICMP protocol unreachable: `ENOPROTOOPT`.
    ///
    /// IPv6 has no such destination-unreachable code (RFC 4443 signals an unknown protocol with
    /// a Parameter Problem, which nftables' `reject` cannot send): IPv6 traffic is rejected with
    /// ICMPv6 port unreachable instead, so it gets `ECONNREFUSED`, not `ENOPROTOOPT`.
    ProtocolUnreachable,
    /// ICMP host unreachable: `EHOSTUNREACH` (Linux reverts its retransmission backoff on it,
    /// RFC 6069, which can delay the verdict by up to one RTO).
    ///
    /// IPv6: ICMPv6 address unreachable, `EHOSTUNREACH`.
    HostUnreachable,
    /// ICMP network unreachable: `ENETUNREACH`, like host unreachable.
    ///
    /// IPv6: ICMPv6 no route to destination, `ENETUNREACH`, also with the RFC 6069 reversion.
    NetUnreachable,
    /// ICMP administratively prohibited (a filtering router): `EHOSTUNREACH`, without the
    /// RFC 6069 reversion.
    ///
    /// IPv6: ICMPv6 administratively prohibited, **`EACCES`** (a permission error, not an
    /// unreachable one).
    AdminProhibited,
    /// A TCP reset in the peer's name: `ECONNRESET` at once, on both families.
    TcpReset,
}

impl Reject {
    /// The `reject with …` argument for `family`.
    fn nft(self, family: Family) -> &'static str {
        match (self, family) {
            (Reject::PortUnreachable, Family::V4) => "icmp type port-unreachable",
            (Reject::ProtocolUnreachable, Family::V4) => "icmp type prot-unreachable",
            (Reject::HostUnreachable, Family::V4) => "icmp type host-unreachable",
            (Reject::NetUnreachable, Family::V4) => "icmp type net-unreachable",
            (Reject::AdminProhibited, Family::V4) => "icmp type admin-prohibited",
            (Reject::PortUnreachable | Reject::ProtocolUnreachable, Family::V6) => {
                "icmpv6 type port-unreachable"
            }
            (Reject::HostUnreachable, Family::V6) => "icmpv6 type addr-unreachable",
            (Reject::NetUnreachable, Family::V6) => "icmpv6 type no-route",
            (Reject::AdminProhibited, Family::V6) => "icmpv6 type admin-prohibited",
            (Reject::TcpReset, _) => "tcp reset",
        }
    }
}

/// The nftables table the lab's rejects live in, in the router's namespace.
pub(crate) const TABLE: &str = "deadpeer_lab";

impl Lab {
    /// Makes the router reject every TCP segment it would forward between client and server, in
    /// both directions and both families, with `how`.
    ///
    /// Loads an nftables table `inet deadpeer_lab` into the router's namespace (`ip netns exec
    /// ROUTER nft -f -`) with one forward-hook rule per direction and family: `ip daddr ADDR
    /// meta l4proto tcp reject with icmp type …` and `ip6 daddr ADDR meta l4proto tcp reject
    /// with icmpv6 type …` (see [`Reject`] for each variant's ICMPv6 counterpart). Linux treats
    /// the ICMP errors as soft errors on an established connection: an idle one is unaffected
    /// until keepalive probes time out (`ETIMEDOUT`), while one with unacknowledged data dies
    /// at its user timeout with the errno of the last ICMP error. Replaces an earlier reject.
    /// Undo with [`Lab::heal`].
    ///
    /// # Errors
    ///
    /// [`LabError::MissingTool`] if `nft` (nftables) is not installed: build the lab with
    /// [`requires(Tool::NFT)`](crate::LabBuilder::requires) to skip the test instead;
    /// [`LabError::Command`] if `nft` refuses the ruleset.
    pub fn reject(&self, how: Reject) -> Result<(), LabError> {
        let mut rules =
            format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
        rules.push_str(" chain forward {\n  type filter hook forward priority 0; policy accept;\n");
        for family in Family::ALL {
            let ip = match family {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            for addr in [self.server_addr_for(family), self.client_addr_for(family)] {
                rules.push_str(&format!(
                    "  {ip} daddr {addr} meta l4proto tcp reject with {}\n",
                    how.nft(family)
                ));
            }
        }
        rules.push_str(" }\n}\n");
        self.nft(&rules)?;
        self.faults().nft = true;
        Ok(())
    }

    /// Removes the reject table (for [`Lab::heal`]).
    pub(crate) fn clear_rejects(&self) -> Result<(), LabError> {
        self.nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))
    }

    fn nft(&self, rules: &str) -> Result<(), LabError> {
        // `ip netns exec` would only say `exec of "nft" failed`.
        Tool::NFT.find()?;
        let line = format!("ip netns exec {} nft -f -", self.router().name());
        let mut child = Command::new("ip")
            .args(["netns", "exec", self.router().name(), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| LabError::io(format!("spawning `{line}`"), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(|e| LabError::io(format!("writing the ruleset to `{line}`"), e))?;
        }
        let output = child
            .wait_with_output()
            .map_err(|e| LabError::io(format!("waiting for `{line}`"), e))?;
        if output.status.success() {
            return Ok(());
        }
        Err(LabError::Command {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
