//! `deadpeer demo`: three zombie connections in a network-namespace lab, caught live.
//!
//! A server accepts under a short policy; the client then dies in three ways (it vanishes, it
//! vanishes with data in flight, its host reboots). The timeline shows the kernel's probes and
//! retransmissions from `TCP_INFO`, and the moment deadpeer's `Liveness::dead()` resolves.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deadpeer::{DeadPeer, KeepaliveListener, KeepalivePolicy, KeepaliveStream, SystemKeepalive};
use deadpeer_testkit::Lab;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::CliError;
use crate::output::{Out, human, outln};

/// Arguments of `deadpeer demo`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sudo deadpeer demo
  sudo deadpeer demo --json | jq .
  sudo deadpeer demo --policy idle=1s,interval=1s,probes=3

Needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN): it builds three network namespaces joined by
veth links, and removes them when it ends, also on Ctrl-C.")]
pub(crate) struct Args {
    /// The server's keepalive policy. Keep it short: the demo waits for each death.
    #[arg(long, default_value = "idle=2s,interval=1s,probes=3", value_parser = crate::parse::policy_arg)]
    policy: KeepalivePolicy,
    /// Print the timeline as JSON lines, one event per line, for scripts.
    #[arg(long)]
    json: bool,
}

/// The longest the demo waits for one death before giving up.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Vanished,
    DataInFlight,
    Rebooted,
}

impl Scenario {
    const ALL: [Scenario; 3] = [
        Scenario::Vanished,
        Scenario::DataInFlight,
        Scenario::Rebooted,
    ];

    fn id(self) -> &'static str {
        match self {
            Scenario::Vanished => "idle_client_vanished",
            Scenario::DataInFlight => "data_in_flight",
            Scenario::Rebooted => "peer_rebooted",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Scenario::Vanished => {
                "the client vanishes (blackhole on the router); the connection is idle"
            }
            Scenario::DataInFlight => "the client vanishes while the server is sending it data",
            Scenario::Rebooted => "the client's host reboots and forgets the connection",
        }
    }
}

/// One line of the timeline, also the JSON event.
#[derive(Debug, Serialize)]
struct Event<'a> {
    scenario: &'a str,
    /// Seconds since the fault.
    t: f64,
    event: &'a str,
    text: String,
    /// For `dead` events: the cause, as the `dead peer detected` event names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
}

/// One row of the summary.
#[derive(Debug, Serialize)]
struct Row {
    scenario: &'static str,
    cause: String,
    detected_after_s: f64,
    kernel_default: String,
}

struct Timeline<'o> {
    out: &'o mut Out,
    json: bool,
}

impl Timeline<'_> {
    fn event(&mut self, scenario: Scenario, t: Duration, event: &str, text: String) {
        self.event_with_cause(scenario, t, event, text, None);
    }

    fn event_with_cause(
        &mut self,
        scenario: Scenario,
        t: Duration,
        event: &str,
        text: String,
        cause: Option<&'static str>,
    ) {
        if self.json {
            let e = Event {
                scenario: scenario.id(),
                t: round_ms(t),
                event,
                text,
                cause,
            };
            match serde_json::to_string(&e) {
                Ok(line) => self.out.line(line),
                Err(e) => self.out.line(format_args!("{{\"error\": \"{e}\"}}")),
            }
        } else {
            outln!(
                self.out,
                "  {:>8}  {text}",
                format!("+{:.3}s", t.as_secs_f64())
            );
        }
    }

    fn text(&mut self, line: impl std::fmt::Display) {
        if !self.json {
            self.out.line(line);
        }
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    let lab = Lab::new().map_err(|e| {
        if e.is_skip() {
            CliError::runtime(format!(
                "deadpeer demo needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, to build its network namespaces: {e}"
            ))
        } else {
            CliError::runtime(format!("cannot build the demo's network lab: {e}"))
        }
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the Tokio runtime: {e}")))?;
    let mut timeline = Timeline {
        out,
        json: args.json,
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = demo(&lab, args.policy, &mut timeline) => r,
            _ = tokio::signal::ctrl_c() => Err(CliError::runtime("interrupted; the lab's namespaces were removed")),
        }
    });
    // Dropping the lab removes its namespaces, on success, failure and Ctrl-C alike.
    drop(runtime);
    drop(lab);
    result
}

async fn demo(lab: &Lab, policy: KeepalivePolicy, tl: &mut Timeline<'_>) -> Result<(), CliError> {
    let system = SystemKeepalive::read().ok();
    let default = system.map_or(KeepalivePolicy::LINUX_DEFAULT, |s| s.policy);
    tl.text("deadpeer demo: zombie connections, caught by the kernel and surfaced by deadpeer");
    tl.text(format_args!(
        "lab: client {} -- router -- server {} (network namespaces {}, {}, {})",
        lab.client_addr(),
        lab.server_addr(),
        lab.client().name(),
        lab.router().name(),
        lab.server().name()
    ));
    tl.text(format_args!(
        "server policy {policy}: a dead peer is found within {}",
        human(policy.detection_bound())
    ));
    let mut rows = Vec::new();
    for (n, scenario) in Scenario::ALL.into_iter().enumerate() {
        tl.text("");
        tl.text(format_args!("{}/3  {}", n + 1, scenario.title()));
        let port = 7000 + u16::try_from(n).unwrap_or(0);
        let (dead, after) = run_scenario(lab, policy, scenario, port, tl).await?;
        let kernel_default = match scenario {
            Scenario::Vanished => format!(
                "{} (keepalive off; on: {})",
                "forever",
                human(default.detection_bound())
            ),
            Scenario::DataInFlight => match system {
                Some(s) => format!(
                    "~{} (tcp_retries2={})",
                    human(round_secs(s.retransmit_bound())),
                    s.retries2
                ),
                None => "~15m (tcp_retries2)".to_owned(),
            },
            Scenario::Rebooted => format!(
                "{} (first probe after tcp_keepalive_time)",
                human(default.idle())
            ),
        };
        let comparison = match scenario {
            Scenario::Vanished => format!(
                "with the kernel default this zombie would live {} (and forever with keepalive off, Linux's default)",
                human(default.detection_bound())
            ),
            Scenario::DataInFlight => {
                format!("without a user timeout the kernel would retransmit for {kernel_default}")
            }
            Scenario::Rebooted => format!(
                "with the kernel default the first probe, and so the reset, would come after {}",
                human(default.idle())
            ),
        };
        tl.text(format_args!("            {comparison}"));
        rows.push(Row {
            scenario: scenario.id(),
            cause: dead.cause().to_string(),
            detected_after_s: round_ms(after),
            kernel_default,
        });
        lab.heal()
            .map_err(|e| CliError::runtime(format!("cannot heal the lab: {e}")))?;
    }
    summary(&rows, tl);
    Ok(())
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}

/// Connects a client to a fresh listener, kills the client the scenario's way, and waits for
/// the server's `Liveness::dead()`, printing the kernel's progress from `TCP_INFO`.
async fn run_scenario(
    lab: &Lab,
    policy: KeepalivePolicy,
    scenario: Scenario,
    port: u16,
    tl: &mut Timeline<'_>,
) -> Result<(DeadPeer, Duration), CliError> {
    let rt = |e: std::io::Error| CliError::runtime(format!("demo setup failed: {e}"));
    let addr = SocketAddr::new(lab.server_addr(), port);
    let listener = KeepaliveListener::new(lab.server().tokio_listener(addr).map_err(rt)?, policy)
        .map_err(rt)?;
    let mut client = Some(lab.client().tokio_connect(addr).await.map_err(rt)?);
    let (mut server, _) = listener.accept().await.map_err(rt)?;
    if let Some(c) = client.as_mut() {
        c.write_all(b"hello").await.map_err(rt)?;
    }
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).await.map_err(rt)?;
    // Let the server's ACK reach the client, so only the fault's effects remain.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let liveness = server.liveness();

    let start = Instant::now();
    let lab_err =
        |e: deadpeer_testkit::LabError| CliError::runtime(format!("cannot inject the fault: {e}"));
    match scenario {
        Scenario::Vanished => {
            lab.blackhole().map_err(lab_err)?;
            tl.event(
                scenario,
                start.elapsed(),
                "fault",
                "client blackholed: it can no longer answer".into(),
            );
        }
        Scenario::DataInFlight => {
            lab.blackhole().map_err(lab_err)?;
            server.write_all(&[b'x'; 1024]).await.map_err(rt)?;
            tl.event(
                scenario,
                start.elapsed(),
                "fault",
                "client blackholed; the server sends it 1 KiB".into(),
            );
        }
        Scenario::Rebooted => {
            if let Some(c) = client.take() {
                lab.forget(c.into_std().map_err(rt)?).map_err(lab_err)?;
            }
            tl.event(
                scenario,
                start.elapsed(),
                "fault",
                "client host forgot the connection (TCP_REPAIR close)".into(),
            );
        }
    }
    let dead = watch(&server, liveness.dead(), scenario, start, tl).await?;
    let after = start.elapsed();
    tl.event_with_cause(
        scenario,
        after,
        "dead",
        format!(
            "dead peer detected ({}) after {:.1} s",
            dead.cause(),
            after.as_secs_f64()
        ),
        Some(dead.cause().as_str()),
    );
    drop(client);
    Ok((dead, after))
}

/// Waits for the death, printing each new probe or retransmission the kernel reports.
async fn watch(
    server: &KeepaliveStream,
    dead: deadpeer::liveness::Dead,
    scenario: Scenario,
    start: Instant,
    tl: &mut Timeline<'_>,
) -> Result<DeadPeer, CliError> {
    tokio::pin!(dead);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let (mut probes, mut retransmits) = (0u8, 0u8);
    loop {
        tokio::select! {
            dead = &mut dead => {
                return dead.ok_or_else(|| CliError::runtime("the connection closed without a death"));
            }
            _ = tick.tick() => {
                if start.elapsed() > MAX_WAIT {
                    return Err(CliError::runtime(format!("no death within {}; the kernel did not give up", human(MAX_WAIT))));
                }
                let Ok(info) = deadpeer::tcp_info(&server) else { continue };
                if info.probes > probes {
                    probes = info.probes;
                    tl.event(scenario, start.elapsed(), "probe", format!("keepalive probe {probes} unanswered (tcpi_probes={probes})"));
                }
                if info.retransmits > retransmits {
                    retransmits = info.retransmits;
                    tl.event(scenario, start.elapsed(), "retransmit", format!(
                        "retransmission {retransmits} unacknowledged (tcpi_backoff={})",
                        info.backoff
                    ));
                }
            }
        }
    }
}

fn summary(rows: &[Row], tl: &mut Timeline<'_>) {
    if tl.json {
        for row in rows {
            match serde_json::to_string(&serde_json::json!({ "summary": row })) {
                Ok(line) => tl.out.line(line),
                Err(e) => tl.out.line(format_args!("{{\"error\": \"{e}\"}}")),
            }
        }
        return;
    }
    tl.text("");
    tl.text("summary");
    tl.text(format_args!(
        "  {:<22} {:<20} {:<16} {}",
        "scenario", "cause", "detected after", "kernel default"
    ));
    for row in rows {
        tl.text(format_args!(
            "  {:<22} {:<20} {:<16} {}",
            row.scenario,
            row.cause,
            format!("{:.1}s", row.detected_after_s),
            row.kernel_default
        ));
    }
}
