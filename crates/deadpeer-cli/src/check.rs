//! `deadpeer check HOST:PORT`: apply a policy to a live connection and read back what the kernel set.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use deadpeer::{KeepalivePolicy, SocketKeepalive, TcpInfo};

use crate::error::CliError;
use crate::output::{Out, bound, human, outln, user_timeout};
use crate::parse;

/// Arguments of `deadpeer check`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  deadpeer check 127.0.0.1:8080
  deadpeer check example.com:443 --policy fast
  deadpeer check [::1]:5432 --policy idle=60s,interval=10s,probes=6,user_timeout=30s
  deadpeer check db.internal:5432 --policy 60:10:6 --timeout 2s

Exits 1 when the connection fails or a value read back differs from the policy.")]
pub(crate) struct Args {
    // The help is an attribute, not a doc comment: rustdoc would read `[IPV6]` as a link.
    #[arg(
        value_name = "HOST:PORT",
        help = "Where to connect: HOST:PORT, or [IPV6]:PORT"
    )]
    target: String,
    /// The policy to apply: cloud (the default), fast, linux-default,
    /// idle=60s,interval=10s,probes=6[,user_timeout=auto|off|30s], or the nginx form 60:10:6.
    #[arg(long, value_name = "POLICY", default_value = "cloud")]
    policy: String,
    /// How long to wait for the connection.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse::duration)]
    timeout: Duration,
}

/// Runs `deadpeer check`.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    let policy = parse::policy(&args.policy)?;
    if args.timeout.is_zero() {
        return Err(CliError::usage("--timeout must be more than 0s"));
    }
    let (host, port) = split_target(&args.target)?;
    let (stream, addr, took) = connect(&host, port, args.timeout)?;
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    outln!(
        out,
        "connected to {} ({addr}) from {local} in {:.1}ms",
        args.target,
        took.as_secs_f64() * 1000.0
    );
    outln!(out, "policy: {policy}");

    let inspect = |when: &str| {
        deadpeer::inspect(&stream).map_err(|e| {
            CliError::runtime(format!("cannot read the keepalive options {when}: {e}"))
        })
    };
    let before = inspect("before applying the policy")?;
    outln!(
        out,
        "SO_KEEPALIVE before apply: {}  (idle={}s interval={}s probes={} user_timeout={})",
        on_off(before.enabled),
        before.idle.as_secs(),
        before.interval.as_secs(),
        before.probes,
        user_timeout(before.user_timeout)
    );
    deadpeer::apply(&stream, &policy)
        .map_err(|e| CliError::runtime(format!("cannot apply {policy}: {e}")))?;
    let after = inspect("after applying the policy")?;
    outln!(out, "SO_KEEPALIVE after apply:  {}", on_off(after.enabled));
    outln!(out);

    let rows = compare(&policy, &after);
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
    match deadpeer::tcp_info(&stream) {
        Ok(info) => outln!(out, "{}", tcp_info_line(&info)),
        Err(e) => outln!(out, "TCP_INFO: unavailable ({e})"),
    }

    let differ: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} is {}, wanted {}", r.option, r.effective, r.wanted))
        .collect();
    if differ.is_empty() && after.matches(&policy) {
        outln!(out, "ok: every value read back matches the policy");
        Ok(())
    } else {
        Err(CliError::runtime(format!(
            "the socket's keepalive options differ from the policy: {}",
            differ.join(", ")
        )))
    }
}

/// Splits `HOST:PORT` or `[IPV6]:PORT`.
fn split_target(target: &str) -> Result<(String, u16), CliError> {
    let bad = |why: &str| {
        CliError::usage(format!(
            "{target:?} is not HOST:PORT ({why}); write it like example.com:443, 10.0.0.1:80 or [::1]:8080"
        ))
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = match host.strip_prefix('[') {
        Some(rest) => rest.strip_suffix(']').ok_or_else(|| bad("unclosed ["))?,
        None if host.contains(':') => return Err(bad("put an IPv6 address in brackets")),
        None => host,
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
    Ok((host.to_owned(), port))
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

#[derive(Debug)]
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

fn tcp_info_line(info: &TcpInfo) -> String {
    let state = match info.state {
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
    };
    format!(
        "TCP_INFO: state {state} ({}), rtt {:.3}ms, keepalive probes out {}, retransmits {}, unacked {}",
        info.state,
        info.rtt.as_secs_f64() * 1000.0,
        info.probes,
        info.retransmits,
        info.unacked
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(split_target("a.b:80").unwrap(), ("a.b".into(), 80));
        assert_eq!(split_target("[::1]:8080").unwrap(), ("::1".into(), 8080));
        assert!(split_target("a.b").is_err());
        assert!(split_target("::1:80").is_err());
        assert!(split_target(":80").is_err());
        assert!(split_target("a:99999").is_err());
    }
}
