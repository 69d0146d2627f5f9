//! Policies from a goal: [`KeepalivePolicy::detect_within`] and
//! [`KeepalivePolicy::under_idle_timeout`].

use std::time::Duration;

use super::{KeepalivePolicy, MAX_SECS, MAX_USER_TIMEOUT_MS, MIN_SECS, PolicyError, UserTimeout};

impl KeepalivePolicy {
    /// A policy that finds a dead peer within `within`.
    ///
    /// The result satisfies every kernel limit, its [bound](Self::detection_bound) is at most
    /// `within` (counted in whole seconds), it sends at least 3 probes whenever `within` leaves room
    /// for them (4 s or more), and its user timeout is [`Auto`](UserTimeout::Auto), so unacknowledged
    /// data is caught within the same bound. Half of the budget goes to the idle time and half to
    /// the probes. Goals beyond `i32::MAX` ms (about 24.8 days) are capped there, the user timeout's limit.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] of kind [`Unsatisfiable`](PolicyErrorKind::Unsatisfiable) when `within`
    /// is under 2 s, the smallest bound the kernel can do (1 s idle, one probe 1 s later).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::KeepalivePolicy;
    ///
    /// let p = KeepalivePolicy::detect_within(Duration::from_secs(30))?;
    /// assert_eq!(p, KeepalivePolicy::FAST);
    /// assert!(KeepalivePolicy::detect_within(Duration::from_millis(1500)).is_err());
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn detect_within(within: Duration) -> Result<Self, PolicyError> {
        let cap = MAX_USER_TIMEOUT_MS / 1000;
        let budget = within.as_secs().min(cap);
        if budget < 2 {
            return Err(PolicyError::unsatisfiable(format!(
                "cannot detect a dead peer within {}: the shortest bound the kernel allows is 2s \
                 (idle=1s, interval=1s, probes=1); ask for 2s or more",
                humantime::format_duration(within)
            )));
        }
        let probes = (budget - 1).min(3);
        let interval = ((budget / 2) / probes).clamp(1, u64::from(MAX_SECS));
        let idle = (budget - interval * probes).min(u64::from(MAX_SECS));
        // Every value fits: idle <= 32767, interval <= 32767, probes <= 3.
        Ok(Self::from_parts(
            idle as u32,
            interval as u32,
            probes as u32,
            UserTimeout::Auto,
        ))
    }

    /// A policy that keeps a connection open through a middlebox that drops flows idle for
    /// `idle_timeout` (a NAT gateway, a load balancer, a firewall's conntrack).
    ///
    /// The idle time is 75 % of `idle_timeout`, rounded down to whole seconds: the 25 % margin
    /// absorbs timer slack, the probe's transit, and middleboxes that count from their own
    /// clock. The interval is 10 % of `idle_timeout` (at least 1 s), so a lost first probe is
    /// retried well before the middlebox forgets the flow, with 5 probes and user timeout `Auto`.
    ///
    /// | middlebox | idle timeout | policy |
    /// |---|---|---|
    /// | Azure Load Balancer | 4 min | `idle=180s,interval=24s,probes=5` ([`CLOUD`](Self::CLOUD)) |
    /// | AWS NLB | 350 s | `idle=262s,interval=35s,probes=5` |
    /// | GCP conntrack | 10 min | `idle=450s,interval=60s,probes=5` |
    /// | GCP Cloud NAT | 20 min | `idle=900s,interval=120s,probes=5` |
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] when `idle_timeout` is under 2 s (75 % of it must be at least 1 s) or
    /// so long that the idle time would exceed the kernel's 32767 s.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use deadpeer::KeepalivePolicy;
    ///
    /// let nlb = KeepalivePolicy::under_idle_timeout(Duration::from_secs(350))?;
    /// assert!(nlb.idle() < Duration::from_secs(350));
    /// assert_eq!(nlb.to_string(), "idle=262s,interval=35s,probes=5,user_timeout=auto");
    /// # Ok::<(), deadpeer::PolicyError>(())
    /// ```
    pub fn under_idle_timeout(idle_timeout: Duration) -> Result<Self, PolicyError> {
        let ms = idle_timeout.as_millis();
        let idle = ms * 3 / 4 / 1000;
        let shown = humantime::format_duration(idle_timeout);
        if idle < u128::from(MIN_SECS) {
            return Err(PolicyError::unsatisfiable(format!(
                "idle timeout {shown} is too short: the idle time must stay 25% below it and the \
                 kernel's smallest idle time is 1s; use an idle timeout of 2s or more"
            )));
        }
        if idle > u128::from(MAX_SECS) {
            return Err(PolicyError::unsatisfiable(format!(
                "idle timeout {shown} is too long: 75% of it exceeds the kernel's largest idle \
                 time of 32767s; use an idle timeout of at most 12h 8m 9s, or set idle=32767s directly"
            )));
        }
        let interval = (ms / 10 / 1000).clamp(1, u128::from(MAX_SECS));
        Self::builder()
            .idle(Duration::from_secs(idle as u64))
            .interval(Duration::from_secs(interval as u64))
            .probes(5)
            .build()
    }
}
