//! Handlers that stop when their client leaves: a long job and a quiet SSE stream, served by
//! axum over HTTP/1 and HTTP/2 (prior knowledge), each cancelled the moment the kernel shows
//! its client gone.
//!
//! Each handler takes its connection's `Liveness` (`ConnectInfo<Liveness>`) and races its work
//! against `liveness.gone()`, which resolves at the client's FIN (`closed`), its RST
//! (`aborted`) or its death (`vanished`, …), with nothing reading the connection. The job runs on
//! its own task, as real work does, under a `CancellationToken` whose drop guard the handler
//! holds: when hyper drops the handler first (it reads the connection itself and gives up on a
//! request whose connection ended, see `deadpeer::layer::LivenessLayer`), the job stops too.
//!
//! Run it, then leave in the middle of a request (Ctrl-C the curl):
//!
//! ```text
//! cargo run -p examples --example cancel_on_disconnect
//! curl http://ADDR/work                               # HTTP/1.1
//! curl --http2-prior-knowledge -N http://ADDR/events  # HTTP/2, an SSE stream
//! ```
//!
//! Routes: `GET /work` works for 60 s, a stand-in for a long job, then answers `done`;
//! `GET /events` is an SSE stream that sends nothing for 60 s, then one `done` event, and ends.
//! `?secs=N` makes either take N seconds instead.
//!
//! Output, one line each, on stdout: first `listening on ADDR`; then for each request
//! `started GET /work (HTTP/1.1)` and, when it ends, `finished`, or `cancelled after N ms:
//! ENDING`, N counted from its start and ENDING the name of how the client left
//! (`Ending::as_str`: `closed`, `aborted`, …).
//!
//! Environment: `DEADPEER_EXAMPLE_ADDR`, the address to listen on (default `127.0.0.1:0`, a free
//! port); `DEADPEER_EXAMPLE_SECS`, after how many seconds the server ends by itself (default 70).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, RawQuery};
use axum::http::{Method, Uri, Version};
use axum::response::sse::{Event, Sse};
use axum::routing::get;
use deadpeer::{Ending, KeepaliveListener, KeepalivePolicy, Liveness};
use futures_util::{Stream, StreamExt, stream};
use tokio_util::sync::CancellationToken;

/// How long a job (or an event stream's silence) lasts unless `?secs=N` says otherwise.
const JOB_SECS: u64 = 60;

/// Prints how a request ended, exactly once: `finished`, or, when it is dropped unfinished,
/// `cancelled after N ms: ENDING`.
struct Outcome {
    liveness: Liveness,
    started: Instant,
    finished: bool,
}

impl Outcome {
    fn start(liveness: &Liveness, method: &Method, uri: &Uri, version: Version) -> Self {
        println!("started {method} {} ({version:?})", uri.path());
        Outcome {
            liveness: liveness.clone(),
            started: Instant::now(),
            finished: false,
        }
    }

    fn finished(mut self) {
        self.finished = true;
        println!("finished");
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The connection's first ending, however it was seen: by `gone()`, or by hyper's own
        // read of the connection, which deadpeer judges on the way (the stream and its
        // `Liveness` share one latch).
        let ending = self.liveness.ending();
        println!(
            "cancelled after {} ms: {}",
            self.started.elapsed().as_millis(),
            ending.as_ref().map_or("no ending seen", Ending::as_str)
        );
    }
}

/// `?secs=N`, or the default.
fn job_length(query: Option<String>) -> Duration {
    let secs = query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("secs=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(JOB_SECS);
    Duration::from_secs(secs)
}

/// The long job, on a task of its own: it stops when `token` is cancelled.
async fn job(length: Duration, token: CancellationToken, outcome: Outcome) {
    if token
        .run_until_cancelled(tokio::time::sleep(length))
        .await
        .is_some()
    {
        outcome.finished();
    }
    // Cancelled: `outcome` is dropped here and says so.
}

/// `GET /work`: runs the job until it is done or the client leaves.
async fn work(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    method: Method,
    uri: Uri,
    version: Version,
    RawQuery(query): RawQuery,
) -> &'static str {
    let outcome = Outcome::start(&liveness, &method, &uri, version);
    let token = CancellationToken::new();
    // However this handler ends (it returns, or hyper drops it), the job stops with it.
    let _stop_job = token.clone().drop_guard();
    let done = tokio::spawn(job(job_length(query), token.clone(), outcome));
    tokio::select! {
        // The one line: the client left (FIN, RST or death), nothing reading the connection.
        _ = liveness.gone() => "cancelled\n",
        _ = done => "done\n",
    }
}

/// `GET /events`: an SSE stream that says nothing until the job length has passed, then sends
/// `done` and ends; it ends at once when the client leaves.
async fn events(
    ConnectInfo(liveness): ConnectInfo<Liveness>,
    method: Method,
    uri: Uri,
    version: Version,
    RawQuery(query): RawQuery,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let outcome = Outcome::start(&liveness, &method, &uri, version);
    let length = job_length(query);
    let done = stream::once(async move {
        tokio::time::sleep(length).await;
        outcome.finished();
        Ok(Event::default().data("done"))
    });
    // The one line: the stream ends when the client leaves. If hyper drops the stream first,
    // `outcome` is dropped with it and says so.
    Sse::new(done.take_until(liveness.gone()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("DEADPEER_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:0".into());
    let secs: u64 = match std::env::var("DEADPEER_EXAMPLE_SECS") {
        Ok(s) => s
            .parse()
            .map_err(|e| format!("DEADPEER_EXAMPLE_SECS={s:?}: {e}; give whole seconds"))?,
        Err(_) => 70,
    };

    // A client that vanishes without a FIN or RST (its host is gone) is found within FAST's
    // bound; one that closes or is killed, at once.
    let listener = KeepaliveListener::bind(addr.as_str(), KeepalivePolicy::FAST)
        .await
        .map_err(|e| {
            format!("DEADPEER_EXAMPLE_ADDR={addr:?}: {e}; give an address such as 127.0.0.1:0")
        })?;
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new()
        .route("/work", get(work))
        .route("/events", get(events));
    // axum::serve speaks HTTP/1 and, to clients that start with its preface, HTTP/2.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<Liveness>(),
    );
    if let Ok(served) = tokio::time::timeout(Duration::from_secs(secs), server.into_future()).await
    {
        served?;
    }
    Ok(())
}
