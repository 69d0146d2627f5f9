//! `deadpeer kernel set`: validate, write, read back and optionally persist the keepalive
//! defaults and `tcp_retries2`.

use std::path::PathBuf;
use std::time::Duration;

use deadpeer::KeepalivePolicy;
use serde::Serialize;

use super::{KernelJson, values};
use crate::error::CliError;
use crate::output::{Out, outln};
use crate::parse;
use deadpeer::kernel::Sysctl;

use crate::sysctl::{self, DEFAULT_CONF, Settings, Values};

pub(super) const EXAMPLES: &str = "\
Examples:
  deadpeer kernel set --idle 300s --interval 60s --probes 30 --dry-run
  sudo deadpeer kernel set --idle 300s --interval 60s --probes 30
  sudo deadpeer kernel set --probes 5                 keeps the current idle and interval
  sudo deadpeer kernel set --policy cloud --persist   apply and write /etc/sysctl.d/60-deadpeer-keepalive.conf
  sudo deadpeer kernel set --retries2 8               drop unacknowledged data after ~100s instead of ~925s
  sudo deadpeer kernel set --policy linux-default     restore 7200/75/9, also after an out-of-range value

Writing needs root, or CAP_NET_ADMIN in the network namespace. The values are per network
namespace; to try them without touching the host:
  ip netns add try && ip netns exec try deadpeer kernel set --idle 300s; ip netns del try";

#[derive(Debug, clap::Args)]
pub(crate) struct SetArgs {
    /// Idle time before the first probe (net.ipv4.tcp_keepalive_time), e.g. 300s or 5m.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    idle: Option<Duration>,
    /// Time between unanswered probes (net.ipv4.tcp_keepalive_intvl), e.g. 60s.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    interval: Option<Duration>,
    /// Unanswered probes before the peer is dead (net.ipv4.tcp_keepalive_probes).
    #[arg(long, value_name = "N")]
    probes: Option<u32>,
    /// Retransmissions of unacknowledged data before the connection is dropped, when no
    /// TCP_USER_TIMEOUT is set (net.ipv4.tcp_retries2, 0..=255; Linux default 15, about 924.6s).
    #[arg(long, value_name = "N")]
    retries2: Option<u8>,
    /// Take idle, interval and probes from a policy: cloud, fast, linux-default, or
    /// idle=60s,interval=10s,probes=6 / 60:10:6. --idle, --interval and --probes override it;
    /// its user timeout has no system-wide setting and is not written.
    #[arg(long, value_name = "POLICY", value_parser = parse::policy_arg)]
    policy: Option<KeepalivePolicy>,
    /// Also write the values to a sysctl.d file, atomically, so that they survive a reboot
    /// (default /etc/sysctl.d/60-deadpeer-keepalive.conf). A file deadpeer did not write is not
    /// overwritten.
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        default_missing_value = DEFAULT_CONF
    )]
    persist: Option<PathBuf>,
    /// Print the `sysctl -w` command and the sysctl.d file instead of writing anything.
    #[arg(long)]
    dry_run: bool,
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
    /// The sysctl.d file written (or, with `--dry-run`, that would be written); null without
    /// `--persist`.
    persist: Option<String>,
}

/// Runs `deadpeer kernel set`.
pub(super) fn run(args: SetArgs, json: bool, out: &mut Out) -> Result<(), CliError> {
    let base = args.policy;
    let idle = args.idle.or(base.map(|p| p.idle()));
    let interval = args.interval.or(base.map(|p| p.interval()));
    let probes = args.probes.or(base.map(|p| p.probes()));
    if idle.is_none() && interval.is_none() && probes.is_none() && args.retries2.is_none() {
        return Err(CliError::usage(
            "nothing to set: give at least one of --idle, --interval, --probes, --retries2, --policy",
        ));
    }
    // Validate what was given before touching /proc, filling the gaps with the Linux defaults;
    // the real gaps are filled from the current values below.
    let d = KeepalivePolicy::LINUX_DEFAULT;
    sysctl::validate(
        idle.unwrap_or(d.idle()),
        interval.unwrap_or(d.interval()),
        probes.unwrap_or(d.probes()),
    )?;
    if let Some(path) = &args.persist {
        sysctl::check_persist_path(path)?;
    }

    let before = Values::read()?;
    let keep = |given: Option<Duration>, s: &Sysctl| -> Result<Duration, CliError> {
        match given {
            Some(v) => Ok(v),
            None => current(&before, s).map(|v| Duration::from_secs(v as u64)),
        }
    };
    let policy = sysctl::validate(
        keep(idle, &Sysctl::TIME)?,
        keep(interval, &Sysctl::INTVL)?,
        match probes {
            Some(p) => p,
            None => current(&before, &Sysctl::PROBES)? as u32,
        },
    )?;
    let settings = Settings {
        policy,
        retries2: args.retries2,
    };
    // The file holds all four values, retries2 as it will be once written.
    let persisted = Settings {
        retries2: args.retries2.or(before.retries2()),
        ..settings
    };
    let planned = Values {
        time: policy.idle().as_secs() as i64,
        intvl: policy.interval().as_secs() as i64,
        probes: policy.probes().into(),
        retries2: args.retries2.map_or(before.retries2, i64::from),
    };
    let command = settings.command();
    let conf_path = args
        .persist
        .as_ref()
        .map_or(DEFAULT_CONF.to_owned(), |p| p.display().to_string());
    let conf = match args.persist {
        Some(_) => persisted.persisted(),
        None => settings.conf(&conf_path),
    };
    let report = |after: &Values| SetJson {
        dry_run: args.dry_run,
        before: KernelJson::new(&before),
        after: KernelJson::new(after),
        sysctl_command: command.clone(),
        sysctl_conf: conf.clone(),
        persist: args.persist.as_ref().map(|p| p.display().to_string()),
    };

    if args.dry_run {
        if json {
            out.json(&report(&planned));
            return Ok(());
        }
        outln!(out, "current: {}", values(&before));
        outln!(out, "new:     {}", values(&planned));
        outln!(out);
        outln!(out, "dry run, nothing written. To set it now (as root):");
        outln!(out, "  {command}");
        match &args.persist {
            Some(p) => outln!(out, "--persist would write {}:", p.display()),
            None => outln!(
                out,
                "To keep it across reboots, add --persist, which writes {conf_path}:"
            ),
        }
        for line in conf.lines() {
            outln!(out, "  {line}");
        }
        return Ok(());
    }

    if !json {
        outln!(out, "before: {}", values(&before));
    }
    settings.write()?;
    let after = Values::read()?;
    if !json {
        outln!(out, "after:  {}", values(&after));
    }
    if after != planned {
        if json {
            out.json(&report(&after));
        }
        return Err(CliError::runtime(format!(
            "the kernel holds {} after writing {}",
            values(&after),
            values(&planned)
        )));
    }
    if let Some(path) = &args.persist {
        sysctl::write_atomically(path, &conf).map_err(|e| {
            CliError::runtime(format!(
                "the values are set in this network namespace, but cannot write {}: {e}; \
                 they will not survive a reboot",
                path.display()
            ))
        })?;
    }
    if json {
        out.json(&report(&after));
    } else if let Some(path) = &args.persist {
        outln!(
            out,
            "written to this network namespace and persisted to {} (applied at boot by systemd-sysctl)",
            path.display()
        );
    } else {
        outln!(
            out,
            "written to this network namespace; not persistent across reboots (add --persist to write {DEFAULT_CONF})"
        );
    }
    Ok(())
}

/// The current value of a sysctl that was not given, or bad input naming the flag that repairs
/// it when the kernel holds a value out of range.
fn current(v: &Values, s: &Sysctl) -> Result<i64, CliError> {
    let value = v.get(s);
    if sysctl::in_range(s, value) {
        Ok(value)
    } else {
        Err(CliError::usage(format!(
            "{} = {value} is out of range ({}..={}), so it cannot be kept: give {} to repair it, \
             or --policy linux-default to restore the Linux defaults",
            s.name(),
            s.range().start(),
            s.range().end(),
            sysctl::flag(s)
        )))
    }
}
