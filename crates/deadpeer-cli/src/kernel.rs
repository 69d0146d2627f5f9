//! `deadpeer kernel` and `deadpeer kernel set`: the kernel's keepalive defaults.

use std::time::Duration;

use clap::Subcommand;
use deadpeer::SystemKeepalive;
use deadpeer::kernel::{self as k, Sysctl};
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Out, bound, outln, secs_f64, secs_tenths};
use crate::parse;

const SET_EXAMPLES: &str = "\
Examples:
  deadpeer kernel set --idle 300s --interval 60s --probes 30 --dry-run
  sudo deadpeer kernel set --idle 300s --interval 60s --probes 30
  sudo deadpeer kernel set --probes 5        keeps the current idle and interval

Writing needs root, or CAP_NET_ADMIN in the network namespace. The values are per network
namespace; to try them without touching the host:
  ip netns add try && ip netns exec try deadpeer kernel set --idle 300s; ip netns del try";

/// Arguments of `deadpeer kernel`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  deadpeer kernel
  deadpeer kernel --json
  deadpeer kernel set --idle 300s --interval 60s --probes 30 --dry-run")]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Set the kernel's keepalive defaults (tcp_keepalive_time, _intvl, _probes).
    ///
    /// A flag left out keeps the current value. Values are validated like a policy: idle and
    /// interval in whole seconds from 1s to 32767s, probes from 1 to 127.
    #[command(after_help = SET_EXAMPLES)]
    Set(SetArgs),
}

#[derive(Debug, clap::Args)]
struct SetArgs {
    /// Idle time before the first probe (net.ipv4.tcp_keepalive_time), e.g. 300s or 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    idle: Option<Duration>,
    /// Time between unanswered probes (net.ipv4.tcp_keepalive_intvl), e.g. 60s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    interval: Option<Duration>,
    /// Unanswered probes before the peer is dead (net.ipv4.tcp_keepalive_probes).
    #[arg(long, value_name = "N")]
    probes: Option<u32>,
    /// Print the `sysctl -w` command and a /etc/sysctl.d snippet instead of writing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `deadpeer kernel [set]`.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    match args.action {
        None => show(args.json, out),
        Some(Action::Set(set_args)) => set(set_args, args.json, out),
    }
}

/// One sysctl in the JSON output.
#[derive(Debug, Serialize)]
struct SysctlJson {
    name: &'static str,
    path: String,
    value: u64,
}

/// `deadpeer kernel --json`.
#[derive(Debug, Serialize)]
struct KernelJson {
    idle_secs: u64,
    interval_secs: u64,
    probes: u32,
    retries2: u32,
    /// `idle + interval × probes`, in seconds.
    detection_bound_secs: u64,
    /// `2h 11m 15s (7200 + 75 × 9)`.
    detection_bound: String,
    /// How long unacknowledged data is retransmitted under `tcp_retries2`, in seconds.
    retransmit_bound_secs: f64,
    sysctls: Vec<SysctlJson>,
}

impl KernelJson {
    fn new(sys: &SystemKeepalive) -> Self {
        let p = &sys.policy;
        let entry = |s: Sysctl, value: u64| SysctlJson {
            name: s.name,
            path: s.path().display().to_string(),
            value,
        };
        Self {
            idle_secs: p.idle().as_secs(),
            interval_secs: p.interval().as_secs(),
            probes: p.probes(),
            retries2: sys.retries2,
            detection_bound_secs: sys.detection_bound().as_secs(),
            detection_bound: sys.to_string(),
            retransmit_bound_secs: secs_f64(sys.retransmit_bound()),
            sysctls: vec![
                entry(Sysctl::TIME, p.idle().as_secs()),
                entry(Sysctl::INTVL, p.interval().as_secs()),
                entry(Sysctl::PROBES, p.probes().into()),
                entry(Sysctl::RETRIES2, sys.retries2.into()),
            ],
        }
    }
}

/// `deadpeer kernel set --json`.
#[derive(Debug, Serialize)]
struct SetJson {
    dry_run: bool,
    before: KernelJson,
    /// The values after writing; with `--dry-run`, the values that would be written.
    after: KernelJson,
    sysctl_command: String,
    sysctl_conf: String,
}

fn read() -> Result<SystemKeepalive, CliError> {
    SystemKeepalive::read().map_err(CliError::runtime)
}

fn show(json: bool, out: &mut Out) -> Result<(), CliError> {
    let sys = read()?;
    if json {
        out.json(&KernelJson::new(&sys));
        return Ok(());
    }
    outln!(out, "TCP keepalive defaults of this network namespace:");
    print_values(&sys, out);
    outln!(out);
    outln!(out, "dead idle peer found after:        {sys}");
    outln!(
        out,
        "unacknowledged data dropped after: ~{} (tcp_retries2 = {}, when no TCP_USER_TIMEOUT is set)",
        secs_tenths(sys.retransmit_bound()),
        sys.retries2
    );
    outln!(
        out,
        "Keepalive is off unless a socket sets SO_KEEPALIVE; these defaults apply to sockets that set it without their own values."
    );
    Ok(())
}

fn print_values(sys: &SystemKeepalive, out: &mut Out) {
    let p = &sys.policy;
    let rows = [
        ("idle", format!("{}s", p.idle().as_secs()), Sysctl::TIME),
        (
            "interval",
            format!("{}s", p.interval().as_secs()),
            Sysctl::INTVL,
        ),
        ("probes", p.probes().to_string(), Sysctl::PROBES),
        ("retries2", sys.retries2.to_string(), Sysctl::RETRIES2),
    ];
    for (label, value, sysctl) in rows {
        outln!(
            out,
            "  {label:<9}{value:>6}  {:<31}{}",
            sysctl.name,
            sysctl.path().display()
        );
    }
}

fn set(args: SetArgs, json: bool, out: &mut Out) -> Result<(), CliError> {
    if args.idle.is_none() && args.interval.is_none() && args.probes.is_none() {
        return Err(CliError::usage(
            "nothing to set: give at least one of --idle, --interval, --probes",
        ));
    }
    // Validate what was given before touching /proc, filling the gaps with the Linux defaults;
    // the real gaps are filled from the current values below.
    let d = deadpeer::KeepalivePolicy::LINUX_DEFAULT;
    k::validate(
        args.idle.unwrap_or(d.idle()),
        args.interval.unwrap_or(d.interval()),
        args.probes.unwrap_or(d.probes()),
    )?;
    let before = read()?;
    let cur = before.policy;
    let policy = k::validate(
        args.idle.unwrap_or(cur.idle()),
        args.interval.unwrap_or(cur.interval()),
        args.probes.unwrap_or(cur.probes()),
    )?;
    let command = k::sysctl_command(&policy);
    let conf = k::sysctl_conf(&policy);
    let planned = SystemKeepalive { policy, ..before };

    if args.dry_run {
        if json {
            out.json(&SetJson {
                dry_run: true,
                before: KernelJson::new(&before),
                after: KernelJson::new(&planned),
                sysctl_command: command,
                sysctl_conf: conf,
            });
            return Ok(());
        }
        outln!(out, "current: {}", values(&before));
        outln!(out, "new:     {}", values(&planned));
        outln!(out);
        outln!(out, "dry run, nothing written. To set it now (as root):");
        outln!(out, "  {command}");
        outln!(
            out,
            "To keep it across reboots, write /etc/sysctl.d/60-keepalive.conf:"
        );
        for line in conf.lines() {
            outln!(out, "  {line}");
        }
        return Ok(());
    }

    if !json {
        outln!(out, "before: {}", values(&before));
    }
    SystemKeepalive::write(&policy).map_err(CliError::runtime)?;
    let after = read()?;
    if json {
        out.json(&SetJson {
            dry_run: false,
            before: KernelJson::new(&before),
            after: KernelJson::new(&after),
            sysctl_command: command,
            sysctl_conf: conf,
        });
    } else {
        outln!(out, "after:  {}", values(&after));
    }
    if after.policy != policy {
        return Err(CliError::runtime(format!(
            "the kernel holds {} after writing {}",
            values(&after),
            values(&planned)
        )));
    }
    if !json {
        outln!(
            out,
            "written to this network namespace; not persistent across reboots (see --dry-run for a /etc/sysctl.d snippet)"
        );
    }
    Ok(())
}

/// `idle=300s interval=60s probes=30, bound 35m (300 + 60 × 30)`.
fn values(sys: &SystemKeepalive) -> String {
    let p = &sys.policy;
    format!(
        "idle={}s interval={}s probes={}, dead peer found after {}",
        p.idle().as_secs(),
        p.interval().as_secs(),
        p.probes(),
        bound(p)
    )
}
