//! The metrics recorded in this test binary, read from a global `metrics-util` debugging
//! recorder (feature `metrics`). The recorder is process-wide and each test binary is its own
//! process; tests that compare totals before and after take turns ([`serial`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// A metric and its labels, as `name{key=value,…}`.
pub type Series = String;

/// `name{key=value,…}`, the labels in the order given (deadpeer records them in that order).
pub fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// Everything recorded since the recorder was installed. The debugging recorder resets counters
/// and gauges and drains histograms at each snapshot, so the totals are kept here.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub counters: HashMap<Series, u64>,
    pub gauges: HashMap<Series, f64>,
    pub histograms: HashMap<Series, Vec<f64>>,
}

impl Totals {
    /// The totals now; the first call installs the recorder (and describes deadpeer's metrics).
    pub fn read() -> Totals {
        static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
        static TOTALS: Mutex<Option<Totals>> = Mutex::new(None);
        let snapshotter = SNAPSHOTTER.get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            recorder
                .install()
                .expect("the only recorder of this binary");
            deadpeer::metrics::describe();
            snapshotter
        });
        let mut totals = TOTALS.lock().unwrap_or_else(|e| e.into_inner());
        let totals = totals.get_or_insert_with(Totals::default);
        for (key, _unit, _description, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            let s = series(key.name(), &labels);
            match value {
                DebugValue::Counter(n) => *totals.counters.entry(s).or_default() += n,
                DebugValue::Gauge(v) => *totals.gauges.entry(s).or_default() += v.into_inner(),
                DebugValue::Histogram(vs) => totals
                    .histograms
                    .entry(s)
                    .or_default()
                    .extend(vs.into_iter().map(|v| v.into_inner())),
            }
        }
        totals.clone()
    }

    /// The totals once `done` holds of them (or after 2 s). A death is counted after its
    /// verdict: when the reaper saw it, `dead()` may resolve a moment before.
    pub fn read_until(done: impl Fn(&Totals) -> bool) -> Totals {
        let until = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let totals = Totals::read();
            if done(&totals) || std::time::Instant::now() >= until {
                return totals;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn counter(&self, s: &Series) -> u64 {
        self.counters.get(s).copied().unwrap_or(0)
    }

    /// The sum of every counter of metric `name`, whatever its labels.
    pub fn counter_sum(&self, name: &str) -> u64 {
        let prefix = format!("{name}{{");
        self.counters
            .iter()
            .filter(|(s, _)| s.starts_with(&prefix))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn gauge(&self, s: &Series) -> f64 {
        self.gauges.get(s).copied().unwrap_or(0.0)
    }

    /// The values of histogram `s` recorded after `before`.
    pub fn new_values(&self, before: &Totals, s: &Series) -> Vec<f64> {
        let old = before.histograms.get(s).map_or(0, Vec::len);
        self.histograms
            .get(s)
            .map_or_else(Vec::new, |v| v[old..].to_vec())
    }
}

/// The tests of a binary that compare totals take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
