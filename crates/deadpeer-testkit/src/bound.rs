//! "Dies within the bound": the one timing assertion a dead-peer test makes.
//!
//! A death is asserted against what the policy promises, never against the machine's speed:
//! [`deadline`] is the policy's detection bound, plus how late the kernel's timers may fire,
//! plus the wake-up of whoever observes the death. Three terms, each explained where it is
//! defined; nothing else is added.

use std::future::Future;
use std::panic::Location;
use std::time::{Duration, Instant};

use deadpeer::KeepalivePolicy;

/// From the kernel's verdict to the test's task running: the wake-up of deadpeer's reaper
/// thread, then of the tokio runtime and the task. Not a property of the kernel, and kept small
/// (it has no business being large on an idle test machine).
pub const WAKE: Duration = Duration::from_millis(100);

/// How long [`dies_within_bound`] keeps waiting after the [`deadline`], only to say how late a
/// death came (or that none came) when it fails.
const LATE_REPORT: Duration = Duration::from_secs(2);

/// The latest a connection under `policy` may be seen dead, counted from the start of the
/// fault: `detection_bound + timer_slack + WAKE`.
///
/// - [`KeepalivePolicy::detection_bound`]: when the kernel declares a silent peer dead at the
///   latest, from the last segment received (idle time plus the probes, or a fixed user
///   timeout where that decides).
/// - [`KeepalivePolicy::timer_slack`]: how late the kernel's keepalive timer may fire. The
///   timer wheel rounds each expiry up to the granularity of its level; the slack sums that
///   worst case over the idle timer and every probe interval, for `HZ` = 100, 250, 300 and
///   1000, and takes the largest.
/// - [`WAKE`]: the observer's wake-up, not a kernel property.
///
/// ```
/// use std::time::Duration;
/// use deadpeer::KeepalivePolicy;
///
/// let p = KeepalivePolicy::new(Duration::from_secs(1), Duration::from_secs(1), 3)?;
/// // 4 s of bound, 360 ms of timer slack, 100 ms of wake-up.
/// assert_eq!(deadpeer_testkit::deadline(p), Duration::from_millis(4_460));
/// # Ok::<(), deadpeer::PolicyError>(())
/// ```
pub fn deadline(policy: KeepalivePolicy) -> Duration {
    policy.detection_bound() + policy.timer_slack() + WAKE
}

/// Asserts that a death seen `elapsed` after the fault is within [`deadline`] of `policy`.
///
/// # Panics
///
/// When `elapsed` exceeds the deadline, with each of its three terms:
/// `died after 4.9s: bound 4s + timer slack 360ms + wake-up 100ms`.
///
/// ```
/// use std::time::Duration;
/// use deadpeer::KeepalivePolicy;
///
/// let p: KeepalivePolicy = "1:1:3".parse()?;
/// deadpeer_testkit::assert_within_bound(Duration::from_millis(4_080), p);
/// let late = std::panic::catch_unwind(|| {
///     deadpeer_testkit::assert_within_bound(Duration::from_millis(4_900), p)
/// });
/// assert!(late.is_err());
/// # Ok::<(), deadpeer::PolicyError>(())
/// ```
#[track_caller]
pub fn assert_within_bound(elapsed: Duration, policy: KeepalivePolicy) {
    assert!(
        elapsed <= deadline(policy),
        "died after {elapsed:?}: {}",
        terms(policy)
    );
}

fn terms(policy: KeepalivePolicy) -> String {
    format!(
        "bound {:?} + timer slack {:?} + wake-up {WAKE:?}",
        policy.detection_bound(),
        policy.timer_slack()
    )
}

/// Awaits `death` (for example deadpeer's `liveness.dead()`, or a read that should fail) and
/// asserts it completes within [`deadline`] of `policy`, counted from `start`, the moment the
/// fault began. Returns what `death` returned.
///
/// It waits a little past the deadline before giving up, so that a failure says how late the
/// death came, or that none came.
///
/// ```no_run
/// use std::time::Instant;
/// use deadpeer::KeepalivePolicy;
/// use deadpeer_testkit::{dies_within_bound, lab_or_skip};
///
/// # async fn demo(liveness: deadpeer::Liveness) {
/// let Some(lab) = lab_or_skip!() else { return };
/// let policy: KeepalivePolicy = "1:1:3".parse().unwrap();
/// // ... a deadpeer connection from lab.client() to lab.server(), its `liveness` ...
/// let start = Instant::now();
/// lab.blackhole().unwrap();
/// let dead = dies_within_bound(policy, start, liveness.dead()).await;
/// # drop(dead);
/// # }
/// ```
///
/// # Panics
///
/// When `death` completes after the deadline or not at all, naming the caller's line and the
/// deadline's terms; when called outside a tokio runtime with its time driver enabled
/// (`#[tokio::test]` enables it).
#[track_caller]
pub fn dies_within_bound<F: Future>(
    policy: KeepalivePolicy,
    start: Instant,
    death: F,
) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    let limit = deadline(policy);
    let terms = terms(policy);
    async move {
        let give_up = tokio::time::Instant::from_std(start + limit + LATE_REPORT);
        match tokio::time::timeout_at(give_up, death).await {
            Ok(output) => {
                let elapsed = start.elapsed();
                assert!(
                    elapsed <= limit,
                    "{caller}: died after {elapsed:?}: {terms}"
                );
                output
            }
            Err(_) => panic!("{caller}: no death within {:?}: {terms}", start.elapsed()),
        }
    }
}
