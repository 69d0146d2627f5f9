//! `deadpeer plan`: choose a policy from a goal and print it for deadpeer, nginx, HAProxy and sysctl.

use std::time::Duration;

use clap::ArgGroup;
use deadpeer::{KeepalivePolicy, UserTimeout};
use serde::Serialize;

use crate::error::CliError;
use crate::lints::{self, Lint, Subject};
use crate::output::{Out, bound, human, outln, user_timeout};
use crate::parse;
use crate::sysctl::{DEFAULT_CONF, Settings};

/// Arguments of `deadpeer plan`.
#[derive(Debug, clap::Args)]
#[command(
    group(ArgGroup::new("goal").required(true).multiple(true).args(["detect_within", "idle_timeout", "policy"])),
    after_help = "\
Examples:
  deadpeer plan --detect-within 30s                   find a dead peer within 30 s
  deadpeer plan --idle-timeout 350s                   stay open through an AWS NLB (350 s idle timeout)
  deadpeer plan --detect-within 2m --idle-timeout 4m  both: Azure LB, and dead peers within 2 minutes
  deadpeer plan --detect-within 30s --json
  deadpeer plan --policy cloud                        a policy you already have, in every form

--detect-within gives idle half the budget and three probes in the other half.
--idle-timeout puts the idle time at 75% of the middlebox timeout, the interval at 10%, 5 probes.
With both, the idle time also stays at or under 75% of the idle timeout.

The plan warns about the known traps (a user timeout that cancels or stretches the probe count,
a user timeout without keepalive, no user timeout for a peer that stops reading, an HTTP/2 ping
timeout longer than the user timeout), each with why, the source and the fix. A warning does not
change the exit status: 0, or 3 with --strict when any warning is printed; 2 on bad input."
)]
pub(crate) struct Args {
    /// Find a dead peer within this long (the policy's bound, idle + interval × probes).
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    detect_within: Option<Duration>,
    /// Keep idle connections alive through a middlebox (NAT, load balancer, conntrack) that
    /// drops flows idle this long, e.g. 350s for AWS NLB or 4m for Azure LB.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    idle_timeout: Option<Duration>,
    /// No goal: print this policy in every form (cloud, fast, linux-default,
    /// idle=60s,interval=10s,probes=6[,user_timeout=…], or 60:10:6).
    #[arg(long, value_name = "POLICY", value_parser = parse::policy_arg, conflicts_with_all = ["detect_within", "idle_timeout"])]
    policy: Option<KeepalivePolicy>,
    /// The HTTP/2 ping timeout (hyper's keep_alive_timeout, gRPC's keepalive timeout) the
    /// connections also run under, to check against the user timeout.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    http2_ping_timeout: Option<Duration>,
    /// Lint the policy's user timeout as set without SO_KEEPALIVE (libpq's keepalives=0 with
    /// tcp_user_timeout, HAProxy's tcp-ut without clitcpka).
    #[arg(long, conflicts_with_all = ["detect_within", "idle_timeout"])]
    without_keepalive: bool,
    /// Exit with status 3 when the plan has a warning.
    #[arg(long)]
    strict: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `deadpeer plan --json`.
#[derive(Debug, Serialize)]
struct PlanJson {
    policy: KeepalivePolicy,
    idle_secs: u64,
    interval_secs: u64,
    probes: u32,
    detection_bound_secs: u64,
    /// `TCP_USER_TIMEOUT` in milliseconds, or null when off.
    user_timeout_ms: Option<u128>,
    nginx: String,
    haproxy: Vec<String>,
    sysctl_command: String,
    sysctl_conf: String,
    /// The known traps this policy falls into; empty when none.
    lints: Vec<Lint>,
}

/// Runs `deadpeer plan`.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    let policy = match args.policy {
        Some(p) => p,
        None => choose(args.detect_within, args.idle_timeout)?,
    };
    let nginx = nginx(&policy);
    let haproxy = haproxy(&policy);
    // There is no system-wide user timeout: the sysctl forms carry the other three values only.
    let system = Settings::keepalive(&policy.with_user_timeout(UserTimeout::Off)?);
    let command = system.command();
    let conf = system.conf(DEFAULT_CONF);
    let mut subject = Subject::policy(&policy);
    subject.ping_timeout = args.http2_ping_timeout;
    if args.without_keepalive {
        subject.keepalive = None;
    }
    let lints = lints::lints(&subject);
    let strict = if args.strict {
        lints::strict_error(&lints)
    } else {
        None
    };

    if args.json {
        out.json(&PlanJson {
            policy,
            idle_secs: policy.idle().as_secs(),
            interval_secs: policy.interval().as_secs(),
            probes: policy.probes(),
            detection_bound_secs: policy.detection_bound().as_secs(),
            user_timeout_ms: policy.effective_user_timeout().map(|d| d.as_millis()),
            nginx,
            haproxy,
            sysctl_command: command,
            sysctl_conf: conf,
            lints,
        });
        return strict.map_or(Ok(()), Err);
    }

    let mut goals = Vec::new();
    if args.policy.is_some() {
        goals.push("the policy given".to_owned());
    }
    if let Some(d) = args.detect_within {
        goals.push(format!("find a dead peer within {}", human(d)));
    }
    if let Some(t) = args.idle_timeout {
        goals.push(format!(
            "stay open through a middlebox that drops flows idle for {}",
            human(t)
        ));
    }
    outln!(out, "goal:            {}", goals.join("; "));
    outln!(out, "policy:          {policy}");
    outln!(out, "detection bound: {}", bound(&policy));
    let ut = user_timeout(policy.effective_user_timeout());
    match policy.user_timeout() {
        UserTimeout::Auto => outln!(
            out,
            "user timeout:    {ut} (auto: just under the bound, so unacknowledged data is caught within it too)"
        ),
        _ => outln!(out, "user timeout:    {ut}"),
    }
    if !lints.is_empty() {
        outln!(out);
        lints::text(&lints, out);
    }
    outln!(out);
    outln!(
        out,
        "deadpeer (--policy, KeepalivePolicy::from_str, or the nginx form {}:{}:{}):",
        policy.idle().as_secs(),
        policy.interval().as_secs(),
        policy.probes()
    );
    outln!(out, "  {policy}");
    outln!(out);
    outln!(
        out,
        "nginx (listen directive; nginx sets no TCP_USER_TIMEOUT):"
    );
    outln!(out, "  {nginx}");
    outln!(out);
    outln!(
        out,
        "HAProxy (defaults, frontend or backend; clitcpka for clients, srvtcpka for servers):"
    );
    for line in &haproxy {
        outln!(out, "  {line}");
    }
    outln!(out);
    outln!(
        out,
        "sysctl (system-wide default for sockets that set SO_KEEPALIVE; no user timeout):"
    );
    outln!(out, "  {command}");
    for line in conf.lines() {
        outln!(out, "  {line}");
    }
    strict.map_or(Ok(()), Err)
}

/// The policy for the goals given; at least one is given (clap enforces it).
fn choose(
    detect_within: Option<Duration>,
    idle_timeout: Option<Duration>,
) -> Result<KeepalivePolicy, CliError> {
    match (detect_within, idle_timeout) {
        (Some(d), None) => Ok(KeepalivePolicy::detect_within(d)?),
        (None, Some(t)) => Ok(KeepalivePolicy::under_idle_timeout(t)?),
        (Some(d), Some(t)) => {
            let fast = KeepalivePolicy::detect_within(d)?;
            let safe = KeepalivePolicy::under_idle_timeout(t)?;
            // The idle time must stay under 75% of the middlebox's timeout, and the bound within
            // the goal. detect_within spends half the goal on idle; when that idles too long,
            // the middlebox policy itself (bound 1.25 × its timeout) usually meets the goal.
            let fits = |p: &KeepalivePolicy| p.idle() <= safe.idle() && p.detection_bound() <= d;
            [fast, safe].into_iter().find(fits).ok_or_else(|| {
                CliError::usage(format!(
                    "cannot both find a dead peer within {} and stay open through a {} idle timeout: \
                     the idle time must stay at or under {}s and the bound within {}; \
                     allow a longer --detect-within (at least {}s) or drop one goal",
                    human(d),
                    human(t),
                    safe.idle().as_secs(),
                    human(d),
                    safe.detection_bound().as_secs()
                ))
            })
        }
        (None, None) => Err(CliError::usage(
            "give --detect-within, --idle-timeout, or both",
        )),
    }
}

fn nginx(p: &KeepalivePolicy) -> String {
    format!(
        "listen 443 so_keepalive={}:{}:{};",
        p.idle().as_secs(),
        p.interval().as_secs(),
        p.probes()
    )
}

fn haproxy(p: &KeepalivePolicy) -> Vec<String> {
    let mut lines = Vec::new();
    for side in ["cli", "srv"] {
        lines.push(format!("option {side}tcpka"));
        lines.push(format!("{side}tcpka-idle {}s", p.idle().as_secs()));
        lines.push(format!("{side}tcpka-intvl {}s", p.interval().as_secs()));
        lines.push(format!("{side}tcpka-cnt {}", p.probes()));
    }
    if let Some(ut) = p.effective_user_timeout() {
        lines.push(format!(
            "# user timeout for clients, on the bind line: bind :443 tcp-ut {}ms",
            ut.as_millis()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn one_goal() {
        assert_eq!(choose(s(30), None).unwrap(), KeepalivePolicy::FAST);
        assert_eq!(choose(None, s(240)).unwrap(), KeepalivePolicy::CLOUD);
        assert!(choose(s(1), None).is_err());
    }

    #[test]
    fn both_goals_meet_both() {
        for (d, t) in [
            (30, 350),
            (600, 350),
            (120, 240),
            (3600, 60),
            (4, 2),
            (7875, 600),
        ] {
            let p = choose(s(d), s(t)).unwrap();
            let safe = KeepalivePolicy::under_idle_timeout(Duration::from_secs(t)).unwrap();
            assert!(p.detection_bound() <= Duration::from_secs(d), "{d} {t} {p}");
            assert!(p.idle() <= safe.idle(), "{d} {t} {p}");
        }
    }
}
