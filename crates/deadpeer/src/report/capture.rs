//! Captured events for the library's own unit tests. The testkit has the public version
//! (`deadpeer_testkit::events`), but the testkit depends on this crate, so it is a path-only
//! dev-dependency that cargo strips on publish: unit tests that must build from the published
//! package capture here instead.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One captured event: level, target, message and fields as strings.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub(crate) level: tracing::Level,
    pub(crate) target: String,
    pub(crate) message: String,
    pub(crate) fields: BTreeMap<String, String>,
}

/// The events captured so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    pub(crate) fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn with_message(&self, message: &str) -> Vec<Event> {
        self.all()
            .into_iter()
            .filter(|e| e.message == message)
            .collect()
    }
}

impl Visit for Event {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.message);
        } else {
            self.fields
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
        event.record(&mut e);
        self.0.0.lock().unwrap_or_else(|e| e.into_inner()).push(e);
    }
}

/// Captures every event emitted on this thread until the guard is dropped. A second, idle
/// dispatcher is kept for the process so that tracing combines every dispatcher's interest (a
/// parallel test without a capture must not cache "never" for a callsite).
pub(crate) fn capture() -> (Events, tracing::subscriber::DefaultGuard) {
    static KEEP_INTEREST_COMBINED: OnceLock<tracing::Dispatch> = OnceLock::new();
    KEEP_INTEREST_COMBINED.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
    (events.clone(), tracing::subscriber::set_default(subscriber))
}
