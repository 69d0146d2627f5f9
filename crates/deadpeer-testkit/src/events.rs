//! Capture tracing events in a test (feature `events`), to assert on what a service logged, such
//! as deadpeer's `dead peer detected`.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (events, _guard) = deadpeer_testkit::events::capture();
//! tracing::warn!(error.type = "keepalive_timeout", "dead peer detected");
//! let dead = events.with_message("dead peer detected");
//! assert_eq!(dead.len(), 1);
//! assert_eq!(dead[0].fields["error.type"], "keepalive_timeout");
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One captured event: level, target, message and fields rendered as strings.
#[derive(Debug, Clone)]
pub struct Event {
    /// The event's level.
    pub level: tracing::Level,
    /// The event's target (the emitting module path, unless set).
    pub target: String,
    /// The message.
    pub message: String,
    /// Every other field, `Display`ed or `Debug`ged to a string (string values unquoted).
    pub fields: BTreeMap<String, String>,
}

/// The events captured so far; cheap to clone, shared with the capturing subscriber.
#[derive(Debug, Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// Every event captured so far.
    pub fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The events with this message.
    pub fn with_message(&self, message: &str) -> Vec<Event> {
        self.all()
            .into_iter()
            .filter(|e| e.message == message)
            .collect()
    }

    /// The events with this message once there are at least `n` of them, or after 2 s,
    /// whichever comes first (then the events so far; assert on their number).
    ///
    /// A death's event follows its verdict: when deadpeer's reaper thread saw the death,
    /// `Liveness::dead()` may resolve a moment before the event is written there.
    pub fn settled(&self, message: &str, n: usize) -> Vec<Event> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let got = self.with_message(message);
            if got.len() >= n || std::time::Instant::now() >= until {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

struct Visitor<'a>(&'a mut Event);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.0.message = v;
        } else {
            self.0.fields.insert(field.name().to_owned(), v);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.message = value.to_owned();
        } else {
            self.0
                .fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }
}

struct Capture(Events);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut e = Event {
            level: *meta.level(),
            target: meta.target().to_owned(),
            message: String::new(),
            fields: BTreeMap::new(),
        };
        event.record(&mut Visitor(&mut e));
        self.0.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
}

/// Captures every event emitted on this thread until the guard is dropped.
///
/// The subscriber is the thread's default, so use a current-thread runtime
/// (`#[tokio::test]`'s default) for events emitted by tasks to be seen.
pub fn capture() -> (Events, tracing::subscriber::DefaultGuard) {
    // tracing-core caches each callsite's interest. While exactly one dispatcher is registered,
    // it asks only the registering thread's default: a test thread without a capture that hits
    // a callsite first (a parallel test) would cache "never" and hide the event from this
    // capture. A second, idle dispatcher kept for the whole process makes tracing combine the
    // interest of every dispatcher instead.
    static KEEP_INTEREST_COMBINED: std::sync::OnceLock<tracing::Dispatch> =
        std::sync::OnceLock::new();
    KEEP_INTEREST_COMBINED.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    (events, guard)
}
