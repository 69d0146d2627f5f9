//! `deadpeer check HOST:PORT`: apply a policy to a live connection and read back what the kernel set.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use deadpeer::{KeepalivePolicy, SocketKeepalive, TcpInfo};
use serde::Serialize;

use crate::error::CliError;
use crate::lints::{self, Keepalive, Lint, Release, Subject};
use crate::output::{Out, bound, human, outln, user_timeout};
use crate::parse::{self, Target};

/// Arguments of `deadpeer check`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  deadpeer check 127.0.0.1:8080
  deadpeer check example.com:443 --policy fast
  deadpeer check [::1]:5432 --policy idle=60s,interval=10s,probes=6,user_timeout=30s
  deadpeer check db.internal:5432 --policy 60:10:6 --timeout 2s
  deadpeer check 127.0.0.1:8080 --json

The values read back, and the running kernel's version, are checked for the known traps (see
deadpeer plan --help); each warning names the value, why it bites, the source and the fix.

Exits 1 when the connection fails or a value read back differs from the policy, 2 on a malformed
target or policy, 3 with --strict when there is a warning; a warning alone exits 0.")]
pub(crate) struct Args {
    // The help is an attribute, not a doc comment: rustdoc would read `[IPV6]` as a link.
    #[arg(
        value_name = "HOST:PORT",
        value_parser = parse::target,
        help = "Where to connect: HOST:PORT, or [IPV6]:PORT"
    )]
    target: Target,
    /// The policy to apply: cloud (the default), fast, linux-default,
    /// idle=60s,interval=10s,probes=6[,user_timeout=auto|off|30s], or the nginx form 60:10:6.
    #[arg(long, value_name = "POLICY", default_value = "cloud", value_parser = parse::policy_arg)]
    policy: KeepalivePolicy,
    /// How long to wait for the connection.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    timeout: Duration,
    /// The HTTP/2 ping timeout (hyper's keep_alive_timeout, gRPC's keepalive timeout) the
    /// connection also runs under, to check against the user timeout read back.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    http2_ping_timeout: Option<Duration>,
    /// Exit with status 3 when there is a warning (after a clean read-back).
    #[arg(long)]
    strict: bool,
    /// Print JSON instead of text (the exit status is the same).
    #[arg(long)]
    json: bool,
}

/// The socket's keepalive options, in `check --json`.
#[derive(Debug, Serialize)]
struct OptionsJson {
    enabled: bool,
    idle_secs: u64,
    interval_secs: u64,
    probes: u32,
    /// `TCP_USER_TIMEOUT` in milliseconds, or null when off.
    user_timeout_ms: Option<u128>,
}

impl From<&SocketKeepalive> for OptionsJson {
    fn from(k: &SocketKeepalive) -> Self {
        Self {
            enabled: k.enabled,
            idle_secs: k.idle.as_secs(),
            interval_secs: k.interval.as_secs(),
            probes: k.probes,
            user_timeout_ms: k.user_timeout.map(|d| d.as_millis()),
        }
    }
}

/// `TCP_INFO` after applying the policy, in `check --json`.
#[derive(Debug, Serialize)]
struct TcpInfoJson {
    state: &'static str,
    rtt_us: u128,
    probes: u8,
    retransmits: u8,
    unacked: u32,
}

/// `deadpeer check --json`.
#[derive(Debug, Serialize)]
struct CheckJson {
    target: String,
    addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    connect_ms: f64,
    policy: KeepalivePolicy,
    detection_bound_secs: u64,
    /// The `TCP_USER_TIMEOUT` the policy sets, in milliseconds, or null when off.
    user_timeout_ms: Option<u128>,
    before: OptionsJson,
    after: OptionsJson,
    options: Vec<Row>,
    tcp_info: Option<TcpInfoJson>,
    /// The running kernel (`/proc/sys/kernel/osrelease`).
    kernel: Option<String>,
    /// The known traps the values read back fall into; empty when none.
    lints: Vec<Lint>,
    /// True when every value read back matches the policy (the exit status is then 0, or 3
    /// with `--strict` and a lint).
    ok: bool,
}

/// Runs `deadpeer check`.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    let policy = args.policy;
    if args.timeout.is_zero() {
        return Err(CliError::usage(
            "--timeout 0s: the connection needs more than 0s; use e.g. --timeout 5s",
        ));
    }
    let Target { host, port } = &args.target;
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (stream, addr, took) = connect(host, *port, args.timeout)?;
    let local = stream.local_addr().ok();

    let inspect = |when: &str| {
        deadpeer::inspect(&stream).map_err(|e| {
            CliError::runtime(format!("cannot read the keepalive options {when}: {e}"))
        })
    };
    let before = inspect("before applying the policy")?;
    deadpeer::apply(&stream, policy)
        .map_err(|e| CliError::runtime(format!("cannot apply {policy}: {e}")))?;
    let after = inspect("after applying the policy")?;
    let rows = compare(&policy, &after);
    let info = deadpeer::tcp_info(&stream);
    let differ: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} is {}, wanted {}", r.option, r.effective, r.wanted))
        .collect();
    let ok = differ.is_empty() && after.matches(policy);
    let kernel = Release::running();
    let lints = lints::lints(&Subject {
        keepalive: after.enabled.then_some(Keepalive {
            idle: after.idle,
            interval: after.interval,
            probes: after.probes,
        }),
        user_timeout: after.user_timeout,
        ping_timeout: args.http2_ping_timeout,
        kernel: kernel.as_ref().map(|(r, _)| *r),
    });

    if args.json {
        out.json(&CheckJson {
            target: shown,
            addr,
            local_addr: local,
            connect_ms: (took.as_secs_f64() * 10_000.0).round() / 10.0,
            policy,
            detection_bound_secs: policy.detection_bound().as_secs(),
            user_timeout_ms: policy.effective_user_timeout().map(|d| d.as_millis()),
            before: (&before).into(),
            after: (&after).into(),
            options: rows,
            tcp_info: info.as_ref().ok().map(|i| TcpInfoJson {
                state: state_name(i.state),
                rtt_us: i.rtt.as_micros(),
                probes: i.probes,
                retransmits: i.retransmits,
                unacked: i.unacked,
            }),
            kernel: kernel.map(|(_, text)| text),
            lints: lints.clone(),
            ok,
        });
    } else {
        let local = local.map_or_else(|| "?".into(), |a| a.to_string());
        outln!(
            out,
            "connected to {shown} ({addr}) from {local} in {:.1}ms",
            took.as_secs_f64() * 1000.0
        );
        outln!(out, "policy: {policy}");
        outln!(
            out,
            "SO_KEEPALIVE before apply: {}  (idle={}s interval={}s probes={} user_timeout={})",
            on_off(before.enabled),
            before.idle.as_secs(),
            before.interval.as_secs(),
            before.probes,
            user_timeout(before.user_timeout)
        );
        outln!(out, "SO_KEEPALIVE after apply:  {}", on_off(after.enabled));
        outln!(out);
        outln!(out, "  {:<18}{:<12}{}", "option", "wanted", "effective");
        for row in &rows {
            let verdict = if row.ok { "ok" } else { "DIFFERS" };
            outln!(
                out,
                "  {:<18}{:<12}{:<12}{verdict}",
                row.option,
                row.wanted,
                row.effective
            );
        }
        outln!(out);
        outln!(
            out,
            "detection bound: {}, a dead idle peer is found within it",
            bound(&policy)
        );
        match policy.effective_user_timeout() {
            Some(ut) => outln!(
                out,
                "unacknowledged data: dropped after {} (TCP_USER_TIMEOUT)",
                user_timeout(Some(ut))
            ),
            None => outln!(
                out,
                "unacknowledged data: no TCP_USER_TIMEOUT, dropped only after tcp_retries2 (about 924.6s with 15)"
            ),
        }
        match &info {
            Ok(info) => outln!(out, "{}", tcp_info_line(info)),
            Err(e) => outln!(out, "TCP_INFO: unavailable ({e})"),
        }
        if !lints.is_empty() {
            outln!(out);
            lints::text(&lints, out);
        }
        if ok {
            outln!(out, "ok: every value read back matches the policy");
        }
    }
    if ok {
        match args.strict.then(|| lints::strict_error(&lints)).flatten() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    } else {
        Err(CliError::runtime(format!(
            "the socket's keepalive options differ from the policy: {}",
            differ.join(", ")
        )))
    }
}

fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr, Duration), CliError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| CliError::runtime(format!("cannot resolve {host}: {e}")))?
        .collect();
    let mut last: Option<(SocketAddr, io::Error)> = None;
    for addr in addrs {
        let start = Instant::now();
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok((stream, addr, start.elapsed())),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        None => CliError::runtime(format!("cannot resolve {host}: no addresses")),
        Some((addr, e)) if e.kind() == io::ErrorKind::TimedOut => CliError::runtime(format!(
            "cannot connect to {host}:{port} ({addr}): no answer within {}",
            human(timeout)
        )),
        Some((addr, e)) => {
            CliError::runtime(format!("cannot connect to {host}:{port} ({addr}): {e}"))
        }
    })
}

fn on_off(enabled: bool) -> &'static str {
    if enabled { "ON" } else { "OFF" }
}

#[derive(Debug, Serialize)]
struct Row {
    option: &'static str,
    wanted: String,
    effective: String,
    ok: bool,
}

fn compare(policy: &KeepalivePolicy, got: &SocketKeepalive) -> Vec<Row> {
    let secs = |d: Duration| format!("{}s", d.as_secs());
    let row = |option, wanted: String, effective: String| Row {
        option,
        ok: wanted == effective,
        wanted,
        effective,
    };
    let mut rows = vec![
        row(
            "SO_KEEPALIVE",
            on_off(true).into(),
            on_off(got.enabled).into(),
        ),
        row("TCP_KEEPIDLE", secs(policy.idle()), secs(got.idle)),
        row("TCP_KEEPINTVL", secs(policy.interval()), secs(got.interval)),
        row(
            "TCP_KEEPCNT",
            policy.probes().to_string(),
            got.probes.to_string(),
        ),
    ];
    if cfg!(any(target_os = "linux", target_os = "android")) {
        let ms = |d: Option<Duration>| match d {
            Some(d) => format!("{}ms", d.as_millis()),
            None => "off".into(),
        };
        rows.push(row(
            "TCP_USER_TIMEOUT",
            ms(policy.effective_user_timeout()),
            ms(got.user_timeout),
        ));
    }
    rows
}

/// The name of a `tcpi_state` value.
fn state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "?",
    }
}

fn tcp_info_line(info: &TcpInfo) -> String {
    let state = state_name(info.state);
    format!(
        "TCP_INFO: state {state} ({}), rtt {:.3}ms, keepalive probes out {}, retransmits {}, unacked {}",
        info.state,
        info.rtt.as_secs_f64() * 1000.0,
        info.probes,
        info.retransmits,
        info.unacked
    )
}
