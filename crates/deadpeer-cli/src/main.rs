//! The `deadpeer` command: show and set the kernel's TCP keepalive defaults, check that a
//! keepalive policy takes effect on a live connection, plan a policy from a goal, demo zombie
//! connections being caught, and audit the host's connections for the ones nothing protects.
//!
//! Exit status: 0 on success, 1 on a runtime failure (no privilege, a host that does not resolve,
//! a refused connection, a socket whose read-back values differ from the policy), 2 on bad input
//! (a usage error, a value the kernel would not accept, a malformed target), 3 when
//! `audit --fail-on` matches or `plan`/`check --strict` warns. Errors are one line on stderr.
//!
//! `kernel`, `check`, `demo`, `audit` and `watch` run on Linux only; elsewhere they say so in one line
//! (`linux_only`), and `plan` works everywhere.
//!
//! Each subcommand lives in its own module with an `Args` struct and a `run` function; adding one
//! means adding a module, a variant to [`Command`] and an arm to [`Command::run`].
#![forbid(unsafe_code)]
// Off Linux only `plan` is built; the helpers of the Linux-only commands stay unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

#[cfg(target_os = "linux")]
mod audit;
#[cfg(target_os = "linux")]
mod check;
#[cfg(target_os = "linux")]
mod demo;
mod error;
#[cfg(target_os = "linux")]
mod kernel;
mod lints;
#[cfg(not(target_os = "linux"))]
mod linux_only;
#[cfg(not(target_os = "linux"))]
use linux_only::{audit, check, demo, kernel, watch};
mod output;
mod parse;
mod plan;
mod sysctl;
#[cfg(target_os = "linux")]
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::CliError;
use crate::output::Out;

const EXAMPLES: &str = "\
Examples:
  deadpeer kernel                                  show the kernel defaults and their detection bound
  deadpeer kernel --json                           the same, as JSON
  deadpeer kernel set --idle 300s --dry-run        print the sysctl lines instead of writing
  sudo deadpeer kernel set --idle 300s --interval 60s --probes 30
  sudo deadpeer kernel set --policy cloud --persist  set, and keep it across reboots in /etc/sysctl.d
  deadpeer check example.com:443 --policy fast     apply a policy to a live connection and read it back
  deadpeer plan --detect-within 30s                a policy, as nginx, HAProxy and sysctl settings
  deadpeer plan --idle-timeout 350s                stay open through an AWS NLB
  sudo deadpeer demo                               watch three zombie connections get caught (about 15 s)
  deadpeer audit                                   every TCP connection: keepalive, idle time, owner, verdict
  deadpeer audit --fail-on unprotected             a monitoring check: exit 3 if any connection is unprotected
  sudo deadpeer watch --json                       every connection death on this host, as it happens

Exit status: 0 ok (warnings included), 1 runtime failure, 2 bad input, 3 an audit --fail-on match
or a plan/check --strict warning.";

/// Find dead TCP peers within a bound you choose: inspect, set, plan and audit TCP keepalive.
#[derive(Debug, Parser)]
#[command(
    name = "deadpeer",
    version,
    after_help = EXAMPLES,
    arg_required_else_help = true,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show (or set) the kernel's keepalive defaults and how long they take to find a dead peer.
    Kernel(kernel::Args),
    /// Connect to HOST:PORT, apply a policy, and read back what the kernel really set.
    Check(check::Args),
    /// Choose a policy from a goal and print it for deadpeer, nginx, HAProxy and sysctl.
    Plan(plan::Args),
    /// Watch three zombie connections get caught, live, in a network-namespace lab (needs root).
    Demo(demo::Args),
    /// List this network namespace's TCP connections: keepalive, idle time, owner and a verdict.
    Audit(audit::Args),
    /// Stream every TCP connection death on this host, any process, classified (needs root).
    Watch(watch::Args),
}

impl Command {
    fn run(self, out: &mut Out) -> Result<(), CliError> {
        match self {
            Command::Kernel(args) => kernel::run(args, out),
            Command::Check(args) => check::run(args, out),
            Command::Plan(args) => plan::run(args, out),
            Command::Demo(args) => demo::run(args, out),
            Command::Audit(args) => audit::run(args, out),
            Command::Watch(args) => watch::run(args, out),
        }
    }
}

fn main() -> ExitCode {
    error::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::clap_error(e),
    };
    let mut out = Out::stdout();
    match cli.command.run(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
