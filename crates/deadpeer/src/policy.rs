//! Keepalive policies: what to set on a socket, validated against the kernel's real limits.
//!
//! A [`KeepalivePolicy`] is the triple the kernel understands (idle time, probe interval, probe
//! count) plus a [`UserTimeout`]. Its [`detection_bound`](KeepalivePolicy::detection_bound) is
//! when the kernel declares a silent peer dead: `idle + interval × probes`, unless a fixed user
//! timeout overrides the probe count.
//!
//! Values are never silently changed. The kernel takes idle and interval in whole seconds and the
//! user timeout in whole milliseconds; socket2 truncates anything finer (500 ms of idle becomes
//! `EINVAL`, 500 µs of user timeout becomes 0, which switches it off). deadpeer rejects such values
//! with a [`PolicyError`] that names the field, the value, the limit and the nearest valid value.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use deadpeer::{KeepalivePolicy, UserTimeout};
//!
//! // From the three numbers; the user timeout defaults to `Auto` (derived from the bound).
//! let p = KeepalivePolicy::new(Duration::from_secs(60), Duration::from_secs(10), 6)?;
//! assert_eq!(p.detection_bound(), Duration::from_secs(120));
//! assert_eq!(p.effective_user_timeout(), Some(Duration::from_secs(119)));
//!
//! // From a string, in the canonical form or the nginx form.
//! let q: KeepalivePolicy = "idle=60s,interval=10s,probes=6".parse()?;
//! let r: KeepalivePolicy = "60:10:6".parse()?;
//! assert_eq!(p, q);
//! assert_eq!(q, r);
//! assert_eq!(p.to_string(), "idle=60s,interval=10s,probes=6,user_timeout=auto");
//!
//! // From a goal.
//! let fast = KeepalivePolicy::detect_within(Duration::from_secs(30))?;
//! assert!(fast.detection_bound() <= Duration::from_secs(30));
//! assert_eq!(fast.user_timeout(), UserTimeout::Auto);
//! # Ok::<(), deadpeer::PolicyError>(())
//! ```

mod builder;
mod error;
mod goals;
mod parse;
#[cfg(feature = "serde")]
mod serde_impl;

use std::time::Duration;

pub use self::builder::Builder;
pub use self::error::{Field, PolicyError, PolicyErrorKind};

/// Smallest idle time and probe interval the kernel accepts, in seconds (`TCP_KEEPIDLE`, `TCP_KEEPINTVL`).
pub const MIN_SECS: u32 = 1;
/// Largest idle time and probe interval the kernel accepts, in seconds (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`).
pub const MAX_SECS: u32 = 32767;
/// Smallest probe count the kernel accepts (`TCP_KEEPCNT`).
pub const MIN_PROBES: u32 = 1;
/// Largest probe count the kernel accepts (`MAX_TCP_KEEPCNT`).
pub const MAX_PROBES: u32 = 127;
/// Largest user timeout the kernel accepts, in milliseconds (`TCP_USER_TIMEOUT` is an `int`).
pub const MAX_USER_TIMEOUT_MS: u64 = i32::MAX as u64;

/// The `TCP_USER_TIMEOUT` part of a policy.
///
/// The user timeout is how long transmitted data may stay unacknowledged before the kernel
/// declares the connection dead. While data is unacknowledged keepalive never fires, so without a
/// user timeout such a connection lives until `tcp_retries2` gives up (about 924 s with the
/// default of 15). On an idle socket the user timeout also overrides the probe count: the socket
/// dies once the time since the last received segment reaches it and a probe is outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UserTimeout {
    /// Derived from the policy's [detection bound](KeepalivePolicy::detection_bound), so the user
    /// timeout and the probe count never contradict each other and unacknowledged data is caught
    /// within the same bound. This is what Cloudflare's and gRPC's (A18) advice comes to.
    ///
    /// The value is the bound less half an interval, at most 1 s
    /// ([`auto_user_timeout`](KeepalivePolicy::auto_user_timeout)). The kernel counts the user
    /// timeout from the first retransmission, one RTO (at least 200 ms; 0.42 s measured on a
    /// veth link) after the data was sent, so a user timeout equal to the bound fires that much
    /// after it. On an idle socket nothing changes: the keepalive timer checks only at
    /// `idle + k × interval`, and the first check at or past the user timeout is the bound itself.
    #[default]
    Auto,
    /// Leave `TCP_USER_TIMEOUT` at 0 (off): unacknowledged data fails only after `tcp_retries2`.
    Off,
    /// A fixed user timeout, in whole milliseconds from 1 ms to `i32::MAX` ms.
    Fixed(Duration),
}

/// A TCP keepalive policy: idle time, probe interval, probe count and user timeout.
///
/// Build one with [`new`](Self::new), [`builder`](Self::builder), a goal
/// ([`detect_within`](Self::detect_within), [`under_idle_timeout`](Self::under_idle_timeout)), a
/// preset such as [`CLOUD`](Self::CLOUD), or by parsing a string (see [`FromStr`](std::str::FromStr)
/// below). Every constructor validates against the kernel's limits; a `KeepalivePolicy` value is
/// always valid.
///
/// # String forms
///
/// - A preset's name: `fast`, `cloud`, `linux-default` ([`preset`](Self::preset)).
/// - Canonical: `idle=60s,interval=10s,probes=6[,user_timeout=auto|off|<duration>]`. Durations use
///   [humantime](https://docs.rs/humantime) syntax (`90s`, `1m 30s`, `1500ms`), and keys may come
///   in any order. `Display` prints this form, always with the user timeout.
/// - nginx (`listen … so_keepalive=`): `idle:interval:probes`, in seconds (a unit such as `30m`
///   is also accepted). An empty field means the Linux default for it (7200 s, 75 s, 9), as in
///   nginx where it means "the system default"; the user timeout is `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeepalivePolicy {
    idle: u32,
    interval: u32,
    probes: u32,
    user_timeout: Ut,
}

/// [`UserTimeout`] as a policy stores it: a validated fixed value is whole milliseconds within
/// `i32::MAX`, so it fits a `u32`, and a policy stays 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ut {
    Auto,
    Off,
    FixedMs(u32),
}

impl KeepalivePolicy {
    /// The Linux defaults (`tcp_keepalive_time=7200`, `tcp_keepalive_intvl=75`,
    /// `tcp_keepalive_probes=9`, no user timeout): a dead peer is found after 7875 s (7200 + 75 × 9), that is
    /// 2 h 11 min 15 s. Useful as a reference; it outlives every common middlebox idle timeout.
    pub const LINUX_DEFAULT: Self = Self::from_parts(7200, 75, 9, UserTimeout::Off);

    /// Stays open through common cloud middleboxes and finds dead peers within 5 minutes:
    /// 180 s idle, 24 s interval, 5 probes, user timeout `auto` (bound 300 s).
    ///
    /// It is [`under_idle_timeout(240 s)`](Self::under_idle_timeout): the first probe goes out
    /// 60 s before the tightest common idle timeout, Azure Load Balancer's 4 minutes, and so also
    /// before AWS NLB (350 s), GCP's conntrack (10 min) and GCP Cloud NAT (20 min).
    pub const CLOUD: Self = Self::from_parts(180, 24, 5, UserTimeout::Auto);

    /// Finds dead peers within 30 s, for interactive services and long-lived streams:
    /// 15 s idle, 5 s interval, 3 probes, user timeout `auto`. It is
    /// [`detect_within(30 s)`](Self::detect_within).
    pub const FAST: Self = Self::from_parts(15, 5, 3, UserTimeout::Auto);

    /// A policy from parts the caller validated (a fixed user timeout within 1..=i32::MAX ms,
    /// whole).
    const fn from_parts(idle: u32, interval: u32, probes: u32, user_timeout: UserTimeout) -> Self {
        let user_timeout = match user_timeout {
            UserTimeout::Auto => Ut::Auto,
            UserTimeout::Off => Ut::Off,
            UserTimeout::Fixed(d) => Ut::FixedMs(d.as_millis() as u32),
        };
        Self {
            idle,
            interval,
            probes,
            user_timeout,
        }
    }

    /// A policy with the given idle time, probe interval and probe count, and
    /// [`UserTimeout::Auto`].
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] when `idle` or `interval` is not a whole number of seconds in
    /// `1..=32767`, or `probes` is not in `1..=127`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::KeepalivePolicy;
    ///
    /// let p = KeepalivePolicy::new(Duration::from_secs(1), Duration::from_secs(1), 3)?;
    /// assert_eq!(p.detection_bound(), Duration::from_secs(4));
    ///
    /// let err = KeepalivePolicy::new(Duration::from_millis(1500), Duration::from_secs(1), 3).unwrap_err();
    /// assert!(err.is_not_whole());
    /// assert!(err.to_string().contains("idle=2s"));
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn new(idle: Duration, interval: Duration, probes: u32) -> Result<Self, PolicyError> {
        Self::builder()
            .idle(idle)
            .interval(interval)
            .probes(probes)
            .build()
    }

    /// A builder, starting from the Linux defaults (7200 s, 75 s, 9) with [`UserTimeout::Auto`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::{KeepalivePolicy, UserTimeout};
    ///
    /// let p = KeepalivePolicy::builder()
    ///     .idle(Duration::from_secs(30))
    ///     .interval(Duration::from_secs(5))
    ///     .probes(4)
    ///     .user_timeout(UserTimeout::Fixed(Duration::from_secs(20)))
    ///     .build()?;
    /// assert_eq!(p.to_string(), "idle=30s,interval=5s,probes=4,user_timeout=20s");
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn builder() -> Builder {
        Builder::from(Self::LINUX_DEFAULT.with_auto())
    }

    /// Time without traffic before the first probe (`TCP_KEEPIDLE`).
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle.into())
    }

    /// Time between unanswered probes (`TCP_KEEPINTVL`).
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval.into())
    }

    /// Unanswered probes before the peer is declared dead (`TCP_KEEPCNT`).
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// The user timeout setting, as given.
    pub fn user_timeout(&self) -> UserTimeout {
        match self.user_timeout {
            Ut::Auto => UserTimeout::Auto,
            Ut::Off => UserTimeout::Off,
            Ut::FixedMs(ms) => UserTimeout::Fixed(Duration::from_millis(ms.into())),
        }
    }

    /// The `TCP_USER_TIMEOUT` value that [`apply`](crate::apply) sets: [`auto_user_timeout`](Self::auto_user_timeout) for `Auto`, the
    /// duration for `Fixed`, and `None` (0, off) for `Off`.
    pub fn effective_user_timeout(&self) -> Option<Duration> {
        match self.user_timeout() {
            UserTimeout::Auto => Some(self.auto_user_timeout()),
            UserTimeout::Off => None,
            UserTimeout::Fixed(d) => Some(d),
        }
    }

    /// The user timeout that [`UserTimeout::Auto`] stands for: the probe bound
    /// (`idle + interval × probes`) less half an interval, at most 1 s less. Unacknowledged data
    /// then fails within the bound even though the kernel starts counting one RTO late, and idle
    /// detection still happens at the bound.
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::KeepalivePolicy;
    ///
    /// let p = KeepalivePolicy::new(Duration::from_secs(1), Duration::from_secs(1), 3)?;
    /// assert_eq!(p.auto_user_timeout(), Duration::from_millis(3500));
    /// assert_eq!(KeepalivePolicy::FAST.auto_user_timeout(), Duration::from_secs(29));
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn auto_user_timeout(&self) -> Duration {
        let margin = (self.interval() / 2).min(Duration::from_secs(1));
        self.probe_bound() - margin
    }

    /// `idle + interval × probes`: when the probe count alone would end a silent connection.
    fn probe_bound(&self) -> Duration {
        Duration::from_secs(
            u64::from(self.idle) + u64::from(self.interval) * u64::from(self.probes),
        )
    }

    /// How many probe intervals pass before the kernel declares a silent idle peer dead.
    ///
    /// Without a user timeout (and with `Auto`, which is chosen to agree), that is `probes`. A
    /// fixed user timeout replaces the probe count (Linux's `tcp_keepalive_timer`): the socket
    /// dies at the first probe tick, `idle + k × interval`, where at least one probe is
    /// outstanding (`k ≥ 1`) and the time since the last received segment has reached the user
    /// timeout.
    fn probe_ticks(&self) -> u64 {
        crate::kernel::probe_ticks(
            self.idle(),
            self.interval(),
            self.probes,
            self.effective_user_timeout(),
        )
    }

    /// When the kernel declares a silent peer of an idle connection dead, counted from the last
    /// segment received: `idle + interval × probes`, unless a fixed user timeout overrides the
    /// probe count (see below). The kernel decides at that timer tick, up to
    /// [`timer_slack`](Self::timer_slack) later.
    ///
    /// - With [`UserTimeout::Off`] or [`Auto`](UserTimeout::Auto): `idle + interval × probes`.
    /// - With a [`Fixed`](UserTimeout::Fixed) user timeout, the kernel ignores the probe count:
    ///   the socket dies at the first probe tick `idle + k × interval` with `k ≥ 1` that is at or
    ///   past the user timeout. `1/1/3` with a 20 s user timeout dies after 20 s, not 4 s;
    ///   `2/2/10` with 3 s dies after 4 s, not 22 s (both measured: docs/kernel.md).
    ///
    /// With data in flight, keepalive never fires: the user timeout, counted from the first
    /// retransmission (one RTO, at least 200 ms, after the write), decides instead. `Auto`
    /// leaves half an interval (at most 1 s) for that RTO, so a silent peer is still found within
    /// this bound. One exception: ICMP host or network unreachable answers make Linux revert its
    /// retransmission backoff (RFC 6069) and re-arm the timer without clamping it to the user
    /// timeout, which can delay the verdict by up to one RTO (measured 0.4–1.0 s past the bound
    /// of `1/1/3`). With `Off`, data in flight fails only after `tcp_retries2` (about 924.6 s by
    /// default; see [`SystemKeepalive::retransmit_bound`](crate::SystemKeepalive::retransmit_bound)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::{KeepalivePolicy, UserTimeout};
    ///
    /// let bound = KeepalivePolicy::LINUX_DEFAULT.detection_bound();
    /// assert_eq!(bound.as_secs(), 7875);
    /// assert_eq!(humantime::format_duration(bound).to_string(), "2h 11m 15s");
    ///
    /// let p: KeepalivePolicy = "idle=1s,interval=1s,probes=3,user_timeout=20s".parse()?;
    /// assert_eq!(p.detection_bound(), Duration::from_secs(20));
    /// let q: KeepalivePolicy = "idle=2s,interval=2s,probes=10,user_timeout=3s".parse()?;
    /// assert_eq!(q.detection_bound(), Duration::from_secs(4));
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn detection_bound(&self) -> Duration {
        Duration::from_secs(u64::from(self.idle) + u64::from(self.interval) * self.probe_ticks())
    }

    /// How much later than [`detection_bound`](Self::detection_bound) the kernel may declare the
    /// peer dead, because its timers fire late.
    ///
    /// Linux's timer wheel rounds each expiry up to the granularity of the wheel level the delay
    /// falls in: 1 jiffy below 63 jiffies, then 8ⁿ jiffies for delays from 63·8ⁿ⁻¹ jiffies (at
    /// most 12.7 % of the delay), plus up to one jiffy to the next tick. The keepalive timer is
    /// armed once for the idle time and once per probe interval; this sums their worst case and
    /// takes the largest over the common kernel clock rates, `HZ` = 100, 250, 300 and 1000.
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::KeepalivePolicy;
    ///
    /// let p = KeepalivePolicy::new(Duration::from_secs(1), Duration::from_secs(1), 3)?;
    /// // At HZ=100 each 1 s timer can be 80 ms + 10 ms late: 4 × 90 ms.
    /// assert_eq!(p.timer_slack(), Duration::from_millis(360));
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn timer_slack(&self) -> Duration {
        const HZ: [u64; 4] = [100, 250, 300, 1000];
        let ticks = u128::from(self.probe_ticks());
        HZ.iter()
            .map(|&hz| {
                let late = |secs: u32| u128::from(wheel_granularity(u64::from(secs) * hz) + 1);
                let jiffies = late(self.idle) + ticks * late(self.interval);
                Duration::from_nanos((jiffies * 1_000_000_000 / u128::from(hz)) as u64)
            })
            .max()
            .unwrap_or_default()
    }

    /// The preset called `name`: `fast`, `cloud` or `linux-default` (any case; `_` for `-`).
    ///
    /// ```
    /// use deadpeer::KeepalivePolicy;
    ///
    /// assert_eq!(KeepalivePolicy::preset("fast"), Some(KeepalivePolicy::FAST));
    /// assert_eq!("Linux_Default".parse(), Ok(KeepalivePolicy::LINUX_DEFAULT));
    /// assert_eq!(KeepalivePolicy::preset("slow"), None);
    /// ```
    pub fn preset(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "fast" => Some(Self::FAST),
            "cloud" => Some(Self::CLOUD),
            "linux-default" => Some(Self::LINUX_DEFAULT),
            _ => None,
        }
    }

    const fn with_auto(mut self) -> Self {
        self.user_timeout = Ut::Auto;
        self
    }

    /// This policy with another user timeout.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] when the user timeout is out of range (see [`Builder::build`]).
    pub fn with_user_timeout(self, user_timeout: UserTimeout) -> Result<Self, PolicyError> {
        Builder::from(self).user_timeout(user_timeout).build()
    }
}

impl Default for KeepalivePolicy {
    /// [`KeepalivePolicy::CLOUD`].
    fn default() -> Self {
        Self::CLOUD
    }
}

/// The granularity, in jiffies, of the timer-wheel level that a timer `delay` jiffies out lands
/// in (`calc_wheel_index` in kernel/time/timer.c): level 0 below 63 jiffies, level n for
/// `63·8ⁿ⁻¹ ≤ delay < 63·8ⁿ`, with granularity 8ⁿ; at most 8 levels deep.
fn wheel_granularity(delay: u64) -> u64 {
    let mut level = 0;
    while level < 8 && delay >= 63 << (3 * level) {
        level += 1;
    }
    1 << (3 * level)
}

/// Formats a duration the way the canonical string form writes it: whole seconds as `Ns`,
/// anything finer as `Nms`, `Nus` or `Nns`, so that it parses back exactly and has no spaces.
pub(crate) fn fmt_dur(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_nanos() % 1_000 == 0 {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}
