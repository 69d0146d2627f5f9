//! How handlers ended, reported from the handlers themselves, for the tests of
//! `Liveness::gone()` in handlers (gone_http.rs, gone_handlers.rs).
#![allow(dead_code, unreachable_pub)] // each test crate uses a different part

use std::time::{Duration, Instant};

use deadpeer::{Ending, Liveness};
use deadpeer_testkit::WAKE;
use tokio::sync::mpsc;

/// How a handler (or a job, or a response stream) ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    /// It saw its wait resolve (`gone()`, or `dead()`'s ending), with this.
    Gone(Option<Ending>),
    /// It was dropped unfinished: by hyper, or cancelled; the connection's first ending then.
    Dropped(Option<Ending>),
    /// It ran to the end.
    Finished,
}

impl End {
    /// Ended because the client left this way, whoever saw it first.
    pub fn left(self, ending: Ending) -> bool {
        matches!(self, End::Gone(Some(e)) | End::Dropped(Some(e)) if e == ending)
    }
}

#[derive(Debug)]
pub enum Seen {
    Started(String),
    Ended(String, End, Instant),
}

pub type Tx = mpsc::UnboundedSender<Seen>;
pub type Rx = mpsc::UnboundedReceiver<Seen>;

/// Reports a start, then the end, once: with [`Probe::end`], or as `Dropped` when dropped.
pub struct Probe {
    path: String,
    liveness: Liveness,
    tx: Tx,
    ended: bool,
}

impl Probe {
    pub fn start(path: &str, liveness: &Liveness, tx: &Tx) -> Self {
        let _ = tx.send(Seen::Started(path.to_owned()));
        Probe {
            path: path.to_owned(),
            liveness: liveness.clone(),
            tx: tx.clone(),
            ended: false,
        }
    }

    pub fn end(mut self, end: End) {
        self.ended = true;
        let _ = self
            .tx
            .send(Seen::Ended(self.path.clone(), end, Instant::now()));
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.ended {
            let end = End::Dropped(self.liveness.ending());
            let _ = self
                .tx
                .send(Seen::Ended(self.path.clone(), end, Instant::now()));
        }
    }
}

pub async fn started(seen: &mut Rx, path: &str) {
    match tokio::time::timeout(Duration::from_secs(5), seen.recv()).await {
        Ok(Some(Seen::Started(p))) if p == path => {}
        other => panic!("expected {path} to start, got {other:?}"),
    }
}

pub async fn ended(seen: &mut Rx, within: Duration) -> (String, End, Instant) {
    match tokio::time::timeout(within, seen.recv()).await {
        Ok(Some(Seen::Ended(path, end, at))) => (path, end, at),
        other => panic!("expected a handler to end within {within:?}, got {other:?}"),
    }
}

/// Nothing ends for `quiet`.
pub async fn none_ends(seen: &mut Rx, quiet: Duration) {
    if let Ok(got) = tokio::time::timeout(quiet, seen.recv()).await {
        panic!("nothing should have ended yet, got {got:?}");
    }
}

/// A FIN or an RST on loopback arrives at once: the margin is the wake-ups of deadpeer's
/// reaper, the runtime and the handler's task.
pub const PROMPT: Duration = WAKE;
