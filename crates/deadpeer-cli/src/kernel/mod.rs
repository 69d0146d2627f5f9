//! `deadpeer kernel` and `deadpeer kernel set`: the kernel's keepalive defaults.
//!
//! The values are read raw from `/proc/sys/net/ipv4`, so that values out of the range a socket
//! could set (say `tcp_keepalive_time = 0`) are shown, and repaired by `kernel set`, instead of
//! making the command fail.

mod set;

use clap::Subcommand;
use serde::Serialize;

use crate::error::CliError;
use crate::output::{Out, bound, outln, secs_f64, secs_tenths};
use deadpeer::kernel::Sysctl;

use crate::sysctl::{self, Values};

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
    /// Set the kernel's keepalive defaults (tcp_keepalive_time, _intvl, _probes) and
    /// tcp_retries2, and optionally persist them in a sysctl.d file.
    ///
    /// A value left out keeps the current one. Values are validated like a policy: idle and
    /// interval in whole seconds from 1s to 32767s, probes from 1 to 127; retries2 from 0 to 255.
    /// Values already out of range in the kernel (e.g. after `sysctl -w
    /// net.ipv4.tcp_keepalive_time=0`) must be given, and are repaired.
    #[command(after_help = set::EXAMPLES)]
    Set(set::SetArgs),
}

/// Runs `deadpeer kernel [set]`.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    match args.action {
        None => show(args.json, out),
        Some(Action::Set(set_args)) => set::run(set_args, args.json, out),
    }
}

/// One sysctl in the JSON output.
#[derive(Debug, Serialize)]
struct SysctlJson {
    name: &'static str,
    path: String,
    value: i64,
    /// False when the value is outside what deadpeer accepts (see `problems`).
    in_range: bool,
}

/// `deadpeer kernel --json`.
#[derive(Debug, Serialize)]
pub(crate) struct KernelJson {
    idle_secs: i64,
    interval_secs: i64,
    probes: i64,
    retries2: i64,
    /// `idle + interval × probes`, in seconds; null when a value is out of range.
    detection_bound_secs: Option<u64>,
    /// `2h 11m 15s (7200 + 75 × 9)`; null when a value is out of range.
    detection_bound: Option<String>,
    /// How long unacknowledged data is retransmitted under `tcp_retries2`, in seconds.
    retransmit_bound_secs: Option<f64>,
    sysctls: Vec<SysctlJson>,
    /// One line per value out of range, with the fix; empty when all are in range.
    problems: Vec<String>,
}

impl KernelJson {
    pub(crate) fn new(v: &Values) -> Self {
        let policy = v.policy();
        Self {
            idle_secs: v.time,
            interval_secs: v.intvl,
            probes: v.probes,
            retries2: v.retries2,
            detection_bound_secs: policy.map(|p| p.detection_bound().as_secs()),
            detection_bound: policy.as_ref().map(bound),
            retransmit_bound_secs: retransmit_bound(v).map(secs_f64),
            sysctls: Sysctl::ALL
                .iter()
                .map(|s| SysctlJson {
                    name: s.name(),
                    path: s.path().display().to_string(),
                    value: v.get(s),
                    in_range: sysctl::in_range(s, v.get(s)),
                })
                .collect(),
            problems: problems(v),
        }
    }
}

/// The kernel's model of how long unacknowledged data is retransmitted under `tcp_retries2`.
fn retransmit_bound(v: &Values) -> Option<std::time::Duration> {
    Some(deadpeer::kernel::retransmit_bound(v.retries2()?.into()))
}

fn problems(v: &Values) -> Vec<String> {
    v.out_of_range()
        .iter()
        .map(|s| sysctl::problem(s, v.get(s)))
        .collect()
}

fn show(json: bool, out: &mut Out) -> Result<(), CliError> {
    let v = Values::read()?;
    if json {
        out.json(&KernelJson::new(&v));
        return Ok(());
    }
    outln!(out, "TCP keepalive defaults of this network namespace:");
    print_values(&v, out);
    outln!(out);
    match v.policy() {
        Some(p) => outln!(out, "dead idle peer found after:        {}", bound(&p)),
        None => outln!(
            out,
            "dead idle peer found after:        unknown: a keepalive value is out of range"
        ),
    }
    if let Some(d) = retransmit_bound(&v) {
        outln!(
            out,
            "unacknowledged data dropped after: ~{} (tcp_retries2 = {}, when no TCP_USER_TIMEOUT is set)",
            secs_tenths(d),
            v.retries2
        );
    }
    outln!(
        out,
        "Keepalive is off unless a socket sets SO_KEEPALIVE; these defaults apply to sockets that set it without their own values."
    );
    for line in problems(&v) {
        outln!(out, "warning: {line}");
    }
    Ok(())
}

fn print_values(v: &Values, out: &mut Out) {
    for s in Sysctl::ALL {
        let value = v.get(&s);
        let unit = if matches!(s, Sysctl::TIME | Sysctl::INTVL) {
            "s"
        } else {
            ""
        };
        let label = sysctl::flag(&s).trim_start_matches('-');
        let flag = if sysctl::in_range(&s, value) {
            String::new()
        } else {
            format!(
                "  OUT OF RANGE ({}..={})",
                s.range().start(),
                s.range().end()
            )
        };
        outln!(
            out,
            "  {label:<9}{:>6}  {:<31}{}{flag}",
            format!("{value}{unit}"),
            s.name(),
            s.path().display()
        );
    }
}

/// `idle=300s interval=60s probes=30, dead peer found after 35m (300 + 60 × 30); tcp_retries2=15`.
pub(crate) fn values(v: &Values) -> String {
    let bound = match v.policy() {
        Some(p) => format!("dead peer found after {}", bound(&p)),
        None => {
            let names: Vec<&str> = v.out_of_range().iter().map(|s| s.name()).collect();
            format!("out of range: {}", names.join(", "))
        }
    };
    format!(
        "idle={}s interval={}s probes={}, {bound}; tcp_retries2={}",
        v.time, v.intvl, v.probes, v.retries2
    )
}
