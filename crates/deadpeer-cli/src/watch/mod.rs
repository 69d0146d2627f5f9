//! `deadpeer watch`: every TCP connection the kernel kills on this host, in any process and any
//! network namespace, as it happens, classified with the library's causes.
//!
//! The kernel's tracepoints ([`tracefs`]: a tracing instance of its own) give each death's
//! errno and addresses; [`event`] parses `trace_pipe`, [`flows`] joins the events into deaths
//! and classifies them with [`deadpeer::Cause::from_os_error`], [`owners`] finds the process and
//! the network namespace (best effort: the kernel gives neither), [`report`] prints and counts.
//! Why tracefs, and what it costs: docs/cli.md and docs/benchmarks.md.

mod event;
mod flows;
mod owners;
mod report;
mod tracefs;

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use deadpeer::Cause;
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::error::CliError;
use crate::output::Out;

pub(crate) use self::tracefs::cleanup;

const EXAMPLES: &str = "\
Examples:
  sudo deadpeer watch                              every connection death on this host, as it happens
  sudo deadpeer watch --json                       one JSON object per death
  sudo deadpeer watch --port 5432 --cause reset,keepalive_timeout
  sudo deadpeer watch --pid 1234                   the deaths of one process's connections
  sudo deadpeer watch --metrics 0.0.0.0:9464       also serve deadpeer_dead_connections on /metrics

Causes: keepalive_timeout, retransmit_timeout, reset, unreachable, refused, aborted (the
library's; a stalled peer, which needs TCP_INFO, shows as keepalive_timeout). A timeout is a
retransmit_timeout when retransmissions of that connection were seen within 120 s before it.
Each line starts with the library's ending (vanished, refused, forgot, aborted): a reset is
forgot after such retransmissions, else aborted (watch sees no keepalive probe).

Owner (pid/process) and network namespace are best effort: the kernel's tracepoints name
neither, so watch matches the connection's addresses against an index of every namespace's
connections and every process's sockets (/proc), rebuilt after connections open. A connection
that dies within about 100 ms of opening may show no owner.

Needs root (a tracing instance under /sys/kernel/tracing/instances; tracefs is mounted there if
it is not, and unmounted at exit). Stops on Ctrl-C, SIGTERM or SIGHUP, removing its instance.

Exit status: 0 stopped by a signal, 1 no privilege or no tracing support (one line says what is
missing), 2 bad input.";

/// Arguments of `deadpeer watch`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct Args {
    /// Only deaths of connections whose local or peer port is PORT (repeat or separate with
    /// commas).
    #[arg(long, value_name = "PORT", value_delimiter = ',')]
    port: Vec<u16>,
    /// Only deaths of connections held by process PID (repeat or separate with commas); deaths
    /// whose owner is unknown never match.
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pid: Vec<u32>,
    /// Only these causes (repeat or separate with commas), e.g. reset,keepalive_timeout.
    #[arg(long, value_name = "CAUSE", value_delimiter = ',', value_parser = parse_cause)]
    cause: Vec<Cause>,
    /// Serve the counts in Prometheus text format on http://ADDR/metrics, under the library's
    /// names (deadpeer_dead_connections{error_type=...,deadpeer_ending=...}, and
    /// deadpeer_ended_connections{deadpeer_ending=...}).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// One JSON object per death, per line.
    #[arg(long)]
    json: bool,
}

fn parse_cause(s: &str) -> Result<Cause, String> {
    Cause::ALL
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            let names: Vec<&str> = Cause::ALL.iter().map(Cause::as_str).collect();
            format!("{s:?} is not a cause: use one of {}", names.join(", "))
        })
}

impl Args {
    /// Whether the filters let a death through (the metrics count every death).
    fn wants(&self, d: &flows::Death, owner: Option<&owners::Owner>) -> bool {
        let (local, peer) = d.flow;
        (self.port.is_empty()
            || self.port.contains(&local.port())
            || self.port.contains(&peer.port()))
            && (self.pid.is_empty()
                || owner
                    .and_then(|o| o.pid)
                    .is_some_and(|p| self.pid.contains(&p)))
            && (self.cause.is_empty() || self.cause.contains(&d.cause))
    }
}

/// How long the loop sleeps when nothing happens: the longest a signal waits to be noticed.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How often the lost-event counters are read.
const LOST_EVERY: Duration = Duration::from_secs(1);

/// Runs `deadpeer watch` until a signal.
pub(crate) fn run(args: Args, out: &mut Out) -> Result<(), CliError> {
    let stop = on_signals()?;
    if let Some(addr) = args.metrics {
        serve_metrics(addr)?;
    }
    let instance = tracefs::Instance::create()?;
    let decoder = instance.decoder()?;
    let pipes = instance.raw_pipes()?;
    let owners = owners::Owners::start();
    let events: Vec<String> = tracefs::EVENTS
        .iter()
        .map(|(e, _)| e.replace('/', ":"))
        .collect();
    eprintln!(
        "watching every TCP death on this host through {} ({}); owners and network namespaces \
         are best effort, from /proc",
        instance.dir().display(),
        events.join(", ")
    );

    let mut flows = flows::Flows::default();
    let mut page = vec![0u8; instance.page_size()];
    let mut batch: Vec<event::Event> = Vec::new();
    let mut lost_reported = 0;
    let mut lost_checked = Instant::now();
    let timeout = Timespec::try_from(IDLE_POLL).unwrap_or_default();
    while !stop.load(Ordering::Acquire) && !out.is_broken() {
        let mut fds: Vec<PollFd<'_>> = pipes
            .iter()
            .map(|p| PollFd::new(p, PollFlags::IN))
            .collect();
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(CliError::runtime(format!(
                    "cannot poll trace_pipe_raw: {e}"
                )));
            }
        }
        drop(fds);
        for pipe in &pipes {
            read_pages(pipe, &mut page, |p| {
                event::page(p, |ts, r| batch.extend(decoder.record(ts, r)));
            })?;
        }
        // Each CPU's pages are in order; across CPUs, the timestamps order them.
        batch.sort_by(|a, b| a.ts.total_cmp(&b.ts));
        for e in batch.drain(..) {
            match flows.on(e) {
                flows::Outcome::Nothing => {}
                flows::Outcome::Opened => owners.stale(),
                flows::Outcome::Death(d) => {
                    let owner = owners.get(&d.flow);
                    let wanted = args.wants(&d, owner.as_ref());
                    if !wanted && args.metrics.is_none() {
                        continue;
                    }
                    let (mono, wall) = (monotonic(), SystemTime::now());
                    let r = report::Record::new(&d, owner, mono, wall);
                    r.count();
                    if !wanted {
                        continue;
                    }
                    if args.json {
                        match serde_json::to_string(&r) {
                            Ok(s) => out.line(s),
                            Err(e) => out.line(format_args!("{{\"error\":\"{e}\"}}")),
                        }
                    } else {
                        out.line(r.line());
                    }
                }
            }
        }
        flows.prune();
        if lost_checked.elapsed() >= LOST_EVERY {
            lost_checked = Instant::now();
            let lost = instance.lost();
            if lost > lost_reported {
                eprintln!(
                    "warning: the kernel's ring buffer lost {} trace events ({lost} since start): \
                     deaths may be missing",
                    lost - lost_reported
                );
                lost_reported = lost;
            }
        }
    }
    drop(pipes);
    drop(instance);
    Ok(())
}

/// Reads every page a CPU's `trace_pipe_raw` has now.
fn read_pages(
    mut pipe: &File,
    page: &mut [u8],
    mut each: impl FnMut(&[u8]),
) -> Result<(), CliError> {
    loop {
        match pipe.read(page) {
            Ok(0) => return Ok(()),
            Ok(n) => each(&page[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(CliError::runtime(format!(
                    "cannot read trace_pipe_raw: {e}"
                )));
            }
        }
    }
}
/// CLOCK_MONOTONIC in seconds: the clock of the instance's timestamps (`trace_clock` `mono`).
fn monotonic() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// A flag set on SIGINT, SIGTERM or SIGHUP, by a thread that waits for them; the handlers are
/// installed before this returns, so that no signal can end the process before the instance is
/// removed.
fn on_signals() -> Result<Arc<AtomicBool>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let (ready, installed) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return drop(ready.send(Err(e))),
            };
            rt.block_on(async {
                let kinds = [
                    SignalKind::interrupt(),
                    SignalKind::terminate(),
                    SignalKind::hangup(),
                ];
                let mut streams = Vec::new();
                for k in kinds {
                    match signal(k) {
                        Ok(s) => streams.push(s),
                        Err(e) => return drop(ready.send(Err(e))),
                    }
                }
                let _ = ready.send(Ok(()));
                let [a, b, c] = &mut streams[..] else { return };
                tokio::select! {
                    _ = a.recv() => {}
                    _ = b.recv() => {}
                    _ = c.recv() => {}
                }
                flag.store(true, Ordering::Release);
            });
        })
        .map_err(|e| CliError::runtime(format!("cannot start the signal thread: {e}")))?;
    match installed.recv() {
        Ok(Ok(())) => Ok(stop),
        Ok(Err(e)) => Err(CliError::runtime(format!("cannot handle signals: {e}"))),
        Err(_) => Err(CliError::runtime(
            "cannot handle signals: the signal thread ended",
        )),
    }
}

/// Installs metrics-exporter-prometheus's recorder with its HTTP listener on `addr`.
fn serve_metrics(addr: SocketAddr) -> Result<(), CliError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Prefix("deadpeer.dead_connection.".into()),
            deadpeer::metrics::DURATION_BUCKETS,
        )
        .and_then(PrometheusBuilder::install)
        .map_err(|e| {
            CliError::runtime(format!(
                "cannot serve metrics on {addr}: {e}; pick a free address for --metrics, e.g. 127.0.0.1:9464"
            ))
        })?;
    deadpeer::metrics::describe();
    Ok(())
}
