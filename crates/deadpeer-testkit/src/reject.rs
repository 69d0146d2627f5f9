//! Firewall rejects on the lab's router, with nftables: the path answers with an ICMP error or a
//! TCP reset instead of forwarding.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{Lab, LabError};

/// How the router rejects the lab's traffic in [`Lab::reject`]: nftables' `reject with …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reject {
    /// ICMP port unreachable, `reject`'s default in nftables and iptables. A connection with
    /// unacknowledged data dies at its user timeout with `ECONNREFUSED`.
    PortUnreachable,
    /// ICMP protocol unreachable: `ENOPROTOOPT` at the user timeout.
    ProtocolUnreachable,
    /// ICMP host unreachable: `EHOSTUNREACH` at the user timeout (Linux reverts its
    /// retransmission backoff on it, RFC 6069, which can delay the verdict by up to one RTO).
    HostUnreachable,
    /// ICMP network unreachable: `ENETUNREACH`, like host unreachable.
    NetUnreachable,
    /// ICMP administratively prohibited (a filtering router): `EHOSTUNREACH` at the user
    /// timeout, without the RFC 6069 reversion.
    AdminProhibited,
    /// A TCP reset in the peer's name: `ECONNRESET` at once.
    TcpReset,
}

impl Reject {
    fn nft(self) -> &'static str {
        match self {
            Reject::PortUnreachable => "icmp type port-unreachable",
            Reject::ProtocolUnreachable => "icmp type prot-unreachable",
            Reject::HostUnreachable => "icmp type host-unreachable",
            Reject::NetUnreachable => "icmp type net-unreachable",
            Reject::AdminProhibited => "icmp type admin-prohibited",
            Reject::TcpReset => "tcp reset",
        }
    }
}

/// The nftables table the lab's rejects live in, in the router's namespace.
pub(crate) const TABLE: &str = "deadpeer_lab";

impl Lab {
    /// Makes the router reject every TCP segment it would forward between client and server, in
    /// both directions, with `how`.
    ///
    /// Loads an nftables table `inet deadpeer_lab` into the router's namespace (`ip netns exec
    /// ROUTER nft -f -`) with one forward-hook rule per direction: `ip daddr ADDR meta l4proto
    /// tcp reject with HOW`. Linux treats the ICMP errors as soft errors on an established
    /// connection: an idle one is unaffected until keepalive probes time out (`ETIMEDOUT`), while
    /// one with unacknowledged data dies at its user timeout with the errno of the last ICMP
    /// error. Replaces an earlier reject. Undo with [`Lab::heal`].
    ///
    /// # Errors
    ///
    /// Fails if `nft` (nftables) cannot be run or refuses the ruleset; the error says how to
    /// install it.
    pub fn reject(&self, how: Reject) -> Result<(), LabError> {
        let mut rules =
            format!("table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
        rules.push_str(" chain forward {\n  type filter hook forward priority 0; policy accept;\n");
        for addr in [self.server_addr(), self.client_addr()] {
            rules.push_str(&format!(
                "  ip daddr {addr} meta l4proto tcp reject with {}\n",
                how.nft()
            ));
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
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if stderr.contains("No such file") || stderr.contains("not found") {
            stderr.push_str(" (install nftables: `apt-get install nftables`)");
        }
        Err(LabError::Command {
            command: line,
            status: output.status.to_string(),
            stderr,
        })
    }
}
