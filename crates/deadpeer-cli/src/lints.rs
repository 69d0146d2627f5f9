//! Lints for the known keepalive traps, shared by `plan` (on a policy) and `check` (on the values
//! read back from a live socket, and the running kernel's version).
//!
//! Each lint names the value that bites, why, the source of the evidence, and the fix. A lint is a
//! warning: the command still prints its report and exits 0, unless `--strict` was given (then
//! exit status 3, as for `audit --fail-on`).

use std::fmt::Write as _;
use std::time::Duration;

use deadpeer::KeepalivePolicy;
use serde::Serialize;

use crate::output::{Out, human, outln, user_timeout};

/// The keepalive half of what a socket (or a policy) sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keepalive {
    pub(crate) idle: Duration,
    pub(crate) interval: Duration,
    pub(crate) probes: u32,
}

/// What the lints look at.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Subject {
    /// `None` when `SO_KEEPALIVE` is off.
    pub(crate) keepalive: Option<Keepalive>,
    /// `TCP_USER_TIMEOUT`, `None` when off.
    pub(crate) user_timeout: Option<Duration>,
    /// The HTTP/2 (or gRPC keepalive) ping timeout, when given.
    pub(crate) ping_timeout: Option<Duration>,
    /// The kernel the socket lives on, when known (`check`; `plan` does not know where the
    /// policy will run).
    pub(crate) kernel: Option<Release>,
}

impl Subject {
    /// A policy as `apply` sets it, keepalive on.
    pub(crate) fn policy(p: &KeepalivePolicy) -> Self {
        Self {
            keepalive: Some(Keepalive {
                idle: p.idle(),
                interval: p.interval(),
                probes: p.probes(),
            }),
            user_timeout: p.effective_user_timeout(),
            ..Self::default()
        }
    }
}

/// One trap found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Lint {
    /// A stable name: `user-timeout-cancels-probes`, …
    pub(crate) id: &'static str,
    /// The values that bite, as set.
    pub(crate) value: String,
    /// What happens, and why.
    pub(crate) why: String,
    /// Where the evidence is.
    pub(crate) source: &'static str,
    /// What to set instead.
    pub(crate) fix: String,
}

/// A kernel release, `major.minor.patch` (`6.18.44-…` → 6, 18, 44).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Release(pub(crate) u32, pub(crate) u32, pub(crate) u32);

impl Release {
    /// Parses `uname -r`: digits separated by dots, anything after the third number ignored.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let mut nums = s.trim().split(|c: char| !c.is_ascii_digit());
        let major = nums.next()?.parse().ok()?;
        let minor = nums.next()?.parse().ok()?;
        let patch = nums.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self(major, minor, patch))
    }

    /// The running kernel (`/proc/sys/kernel/osrelease`), `None` off Linux.
    pub(crate) fn running() -> Option<(Self, String)> {
        let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        let text = text.trim().to_owned();
        Some((Self::parse(&text)?, text))
    }

    /// Whether the kernel has "tcp: fix TCP_USER_TIMEOUT with zero window" (Linux 5.11,
    /// backported to 5.4.93): `Some(false)` when it cannot have it, `None` when the version alone
    /// does not tell (a stable branch between 5.5 and 5.10, or a distribution's backport).
    pub(crate) fn has_zero_window_fix(self) -> Option<bool> {
        let Self(major, minor, patch) = self;
        match (major, minor) {
            (6.., _) | (5, 11..) => Some(true),
            (5, 4) if patch >= 93 => Some(true),
            (5, 5..=10) => None,
            _ => Some(false),
        }
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The keepalive tick at which the kernel ends a silent idle connection
/// ([`deadpeer::kernel::probe_ticks`], the library's one formula). Returns `k`.
pub(crate) fn probe_ticks(k: &Keepalive, user_timeout: Option<Duration>) -> u64 {
    deadpeer::kernel::probe_ticks(k.idle, k.interval, k.probes, user_timeout)
}

fn policy_text(k: &Keepalive) -> String {
    format!(
        "idle={}s,interval={}s,probes={}",
        k.idle.as_secs(),
        k.interval.as_secs(),
        k.probes
    )
}

/// Every lint that applies, most serious first.
pub(crate) fn lints(s: &Subject) -> Vec<Lint> {
    let mut out = Vec::new();
    let ut = s.user_timeout;
    match (s.keepalive, ut) {
        (Some(k), Some(u)) => {
            let ticks = probe_ticks(&k, Some(u));
            let probe_bound = k.idle + k.interval * k.probes;
            let died_at = k.idle + k.interval * ticks as u32;
            let auto = KeepalivePolicy::new(k.idle, k.interval, k.probes)
                .map(|p| user_timeout(Some(p.auto_user_timeout())))
                .unwrap_or_else(|_| "auto".into());
            if ticks < u64::from(k.probes) {
                let lost = if ticks == 1 {
                    "so a single lost probe resets a healthy connection".to_owned()
                } else {
                    format!("so {ticks} lost probes in a row reset a healthy connection")
                };
                out.push(Lint {
                    id: "user-timeout-cancels-probes",
                    value: format!("user_timeout={} with {}", user_timeout(Some(u)), policy_text(&k)),
                    why: format!(
                        "the user timeout is shorter than idle + interval × probes ({}): on an idle \
                         connection the kernel ends it at the first keepalive tick at or past the \
                         user timeout with a probe unanswered, ignoring the probe count; here after \
                         {ticks} of {} probes ({} after the last data). Keepalive probes are never \
                         retransmitted (RFC 1122 4.2.3.6), {lost}",
                        human(probe_bound),
                        k.probes,
                        human(died_at),
                    ),
                    source: "grpc-go#6250 (reqwest's defaults, 15s/15s/3 with a 30s user timeout, \
                             are such a policy); measured in docs/kernel.md, \"The user timeout \
                             replaces the probe count\"",
                    fix: format!(
                        "set user_timeout=auto ({auto}, just under the probe bound) or at least {}: \
                         {},user_timeout=auto",
                        human(probe_bound),
                        policy_text(&k)
                    ),
                });
            } else if ticks > u64::from(k.probes) {
                out.push(Lint {
                    id: "user-timeout-extends-probes",
                    value: format!("user_timeout={} with {}", user_timeout(Some(u)), policy_text(&k)),
                    why: format!(
                        "the user timeout is longer than idle + interval × probes ({}): the kernel \
                         ignores the probe count and keeps probing until the user timeout, so a \
                         dead idle peer is found after {} ({ticks} probes), not {}",
                        human(probe_bound),
                        human(died_at),
                        human(probe_bound)
                    ),
                    source: "measured in docs/kernel.md, \"The user timeout replaces the probe count\" \
                             (1/1/3 with a 20s user timeout died after 20.5s)",
                    fix: format!(
                        "set user_timeout=auto ({auto}) or at most {}, or raise the probes to {ticks} \
                         if the longer bound is what you want",
                        human(probe_bound)
                    ),
                });
            }
        }
        (None, Some(u)) => {
            let suggest = KeepalivePolicy::detect_within(u.max(Duration::from_secs(3)))
                .map(|p| p.to_string())
                .unwrap_or_else(|_| "idle=15s,interval=5s,probes=3,user_timeout=auto".into());
            out.push(Lint {
                id: "user-timeout-without-keepalive",
                value: format!(
                    "user_timeout={} with SO_KEEPALIVE off",
                    user_timeout(Some(u))
                ),
                why:
                    "the user timeout only counts while something sent is unacknowledged; an idle \
                      connection without keepalive sends nothing, so a peer that vanished while it \
                      was idle is never found (until the application writes)"
                        .into(),
                source: "tcp(7) TCP_USER_TIMEOUT; measured in docs/kernel.md, \"A user timeout \
                         without keepalive\"",
                fix: format!(
                    "turn keepalive on as well, e.g. --policy {suggest} (libpq: keepalives=1; \
                     HAProxy: option clitcpka next to tcp-ut)"
                ),
            });
        }
        _ => {}
    }

    match ut {
        None => out.push(Lint {
            id: "stall-unbounded",
            value: "user_timeout=off".into(),
            why:
                "a peer that stops reading while its kernel still answers zero-window probes keeps \
                  the connection open forever: the probes are answered, so neither keepalive (data \
                  is queued) nor tcp_retries2 ever ends it; only a user timeout does"
                    .into(),
            source: "RFC 1122 4.2.2.17; measured in docs/kernel.md, \"How connections die\" \
                     (stall_ut_off: alive after 12s)",
            fix: match s.keepalive {
                Some(k) => format!(
                    "set a user timeout: --policy {},user_timeout=auto",
                    policy_text(&k)
                ),
                None => "set a user timeout (TCP_USER_TIMEOUT) and keepalive".into(),
            },
        }),
        Some(u) => {
            if let Some(kernel) = s.kernel {
                let fixed = kernel.has_zero_window_fix();
                if fixed != Some(true) {
                    let why = match fixed {
                        Some(_) => format!(
                            "this kernel ({kernel}) predates \"tcp: fix TCP_USER_TIMEOUT with zero \
                             window\": each answered zero-window probe restarts the user timeout, so \
                             a peer that stops reading but answers probes is never ended by the \
                             {} user timeout",
                            user_timeout(Some(u))
                        ),
                        None => format!(
                            "the version of this kernel ({kernel}) does not tell whether it has \"tcp: \
                             fix TCP_USER_TIMEOUT with zero window\" (5.11, 5.4.93); without it a peer \
                             that stops reading but answers zero-window probes is never ended by the \
                             {} user timeout",
                            user_timeout(Some(u))
                        ),
                    };
                    out.push(Lint {
                        id: "stall-kernel-unfixed",
                        value: format!("user_timeout={} on Linux {kernel}", user_timeout(Some(u))),
                        why,
                        source: "Linux commit 9d9b1ee0b2d1 \"tcp: fix TCP_USER_TIMEOUT with zero \
                                 window\" (5.11; stable 5.4.93)",
                        fix: "run Linux 5.11 or later (or 5.4.93+, or a distribution kernel whose \
                              changelog lists the fix), or end stalled peers in the application \
                              with a write deadline"
                            .into(),
                    });
                }
            }
        }
    }

    if let (Some(p), Some(u)) = (s.ping_timeout, ut) {
        if p > u {
            out.push(Lint {
                id: "ping-timeout-over-user-timeout",
                value: format!(
                    "HTTP/2 ping timeout {} with user_timeout={}",
                    human(p),
                    user_timeout(Some(u))
                ),
                why: format!(
                    "a PING is data: when it goes unacknowledged the kernel ends the connection at \
                     the user timeout ({}, with ETIMEDOUT), before the ping timeout ({}) can decide; \
                     the ping timeout you set never fires, and the error is an I/O error, not the \
                     ping timeout",
                    user_timeout(Some(u)),
                    human(p)
                ),
                source: "gRPC proposal A18 (TCP_USER_TIMEOUT is set to the keepalive timeout)",
                fix: format!(
                    "make the ping timeout at most the user timeout ({}), or set user_timeout to the \
                     ping timeout ({}ms) as gRPC does",
                    user_timeout(Some(u)),
                    p.as_millis()
                ),
            });
        }
    }
    out
}

/// Prints the lints as text: one `warning [id]: value` line each, then why, source and fix.
pub(crate) fn text(lints: &[Lint], out: &mut Out) {
    for l in lints {
        outln!(out, "warning [{}]: {}", l.id, l.value);
        outln!(out, "  why:    {}", l.why);
        outln!(out, "  source: {}", l.source);
        outln!(out, "  fix:    {}", l.fix);
    }
}

/// The `--strict` error: exit status 3, naming each lint.
pub(crate) fn strict_error(lints: &[Lint]) -> Option<crate::error::CliError> {
    if lints.is_empty() {
        return None;
    }
    let mut ids = String::new();
    for (i, l) in lints.iter().enumerate() {
        let _ = write!(ids, "{}{}", if i == 0 { "" } else { ", " }, l.id);
    }
    let noun = if lints.len() == 1 {
        "warning"
    } else {
        "warnings"
    };
    Some(crate::error::CliError::matched(format!(
        "{} {noun} with --strict: {ids}",
        lints.len()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn ids(l: &[Lint]) -> Vec<&'static str> {
        l.iter().map(|l| l.id).collect()
    }

    #[test]
    fn reqwest_defaults_cancel_the_probe_count() {
        let p: KeepalivePolicy = "idle=15s,interval=15s,probes=3,user_timeout=30s"
            .parse()
            .unwrap();
        let l = lints(&Subject::policy(&p));
        assert_eq!(ids(&l), ["user-timeout-cancels-probes"]);
        assert!(
            l[0].why.contains("after 1 of 3 probes (30s after"),
            "{:?}",
            l[0]
        );
        assert!(l[0].why.contains("single lost probe"), "{:?}", l[0]);
        assert!(l[0].fix.contains("user_timeout=auto (59s"), "{:?}", l[0]);
        assert!(l[0].fix.contains("at least 1m"), "{:?}", l[0]);
    }

    #[test]
    fn presets_are_clean_but_linux_default_cannot_end_a_stall() {
        for p in [KeepalivePolicy::FAST, KeepalivePolicy::CLOUD] {
            assert!(lints(&Subject::policy(&p)).is_empty(), "{p}");
        }
        let l = lints(&Subject::policy(&KeepalivePolicy::LINUX_DEFAULT));
        assert_eq!(ids(&l), ["stall-unbounded"]);
    }

    #[test]
    fn longer_user_timeout_extends_the_bound() {
        let p: KeepalivePolicy = "idle=1s,interval=1s,probes=3,user_timeout=20s"
            .parse()
            .unwrap();
        let l = lints(&Subject::policy(&p));
        assert_eq!(ids(&l), ["user-timeout-extends-probes"]);
        assert!(l[0].why.contains("after 20s (19 probes)"), "{:?}", l[0]);
    }

    #[test]
    fn user_timeout_alone() {
        let l = lints(&Subject {
            user_timeout: Some(s(30)),
            ..Subject::default()
        });
        assert_eq!(ids(&l), ["user-timeout-without-keepalive"]);
        assert!(
            l[0].fix.contains("--policy idle=15s,interval=5s,probes=3"),
            "{:?}",
            l[0]
        );
    }

    #[test]
    fn kernel_versions() {
        let r = |s| Release::parse(s).unwrap();
        assert_eq!(r("6.18.44-fc-v1098"), Release(6, 18, 44));
        assert_eq!(r("5.4.0-150-generic"), Release(5, 4, 0));
        assert_eq!(r("4.19"), Release(4, 19, 0));
        assert_eq!(Release::parse("linux"), None);
        assert_eq!(r("6.18.44").has_zero_window_fix(), Some(true));
        assert_eq!(r("5.11.0").has_zero_window_fix(), Some(true));
        assert_eq!(r("5.4.93").has_zero_window_fix(), Some(true));
        assert_eq!(r("5.4.92").has_zero_window_fix(), Some(false));
        assert_eq!(r("5.10.200").has_zero_window_fix(), None);
        assert_eq!(r("4.19.300").has_zero_window_fix(), Some(false));

        let mut subject = Subject::policy(&KeepalivePolicy::FAST);
        subject.kernel = Some(r("5.4.92"));
        assert_eq!(ids(&lints(&subject)), ["stall-kernel-unfixed"]);
        subject.kernel = Some(r("6.1.0"));
        assert!(lints(&subject).is_empty());
    }

    #[test]
    fn ping_timeout() {
        let mut subject = Subject::policy(&KeepalivePolicy::FAST);
        subject.ping_timeout = Some(s(20));
        assert!(
            lints(&subject).is_empty(),
            "20s is within the 29s user timeout"
        );
        subject.ping_timeout = Some(s(60));
        let l = lints(&subject);
        assert_eq!(ids(&l), ["ping-timeout-over-user-timeout"]);
        assert!(l[0].fix.contains("60000ms"), "{:?}", l[0]);
    }

    proptest! {
        /// The tick the lints compute is the library's detection bound, for every policy.
        #[test]
        fn ticks_agree_with_the_library(
            idle in 1u64..5000, interval in 1u64..500, probes in 1u32..=127,
            ut in prop::option::of(1u64..100_000_000),
        ) {
            let mut spec = format!("idle={idle}s,interval={interval}s,probes={probes}");
            match ut {
                Some(ms) => spec.push_str(&format!(",user_timeout={ms}ms")),
                None => spec.push_str(",user_timeout=off"),
            }
            let p: KeepalivePolicy = spec.parse().unwrap();
            let subject = Subject::policy(&p);
            let k = subject.keepalive.unwrap();
            let ticks = probe_ticks(&k, subject.user_timeout);
            prop_assert_eq!(k.idle + k.interval * ticks as u32, p.detection_bound());
            // A lint says whether the probe count holds; never both directions.
            let l = lints(&subject);
            let cancels = l.iter().any(|l| l.id == "user-timeout-cancels-probes");
            let extends = l.iter().any(|l| l.id == "user-timeout-extends-probes");
            prop_assert_eq!(cancels, ticks < u64::from(probes));
            prop_assert_eq!(extends, ticks > u64::from(probes));
        }
    }
}
