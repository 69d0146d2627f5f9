//! [`Builder`]: the one place a [`KeepalivePolicy`] is validated against the kernel's limits.

use std::time::Duration;

use super::{
    Field, KeepalivePolicy, MAX_PROBES, MAX_SECS, MAX_USER_TIMEOUT_MS, MIN_PROBES, MIN_SECS,
    PolicyError, PolicyErrorKind, UserTimeout, fmt_dur,
};

/// Builds a [`KeepalivePolicy`]; see [`KeepalivePolicy::builder`].
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Builder {
    idle: Duration,
    interval: Duration,
    probes: u32,
    user_timeout: UserTimeout,
}

impl From<KeepalivePolicy> for Builder {
    fn from(p: KeepalivePolicy) -> Self {
        Self {
            idle: p.idle(),
            interval: p.interval(),
            probes: p.probes(),
            user_timeout: p.user_timeout(),
        }
    }
}

impl Builder {
    /// Sets the idle time (`TCP_KEEPIDLE`): whole seconds, 1 s to 32767 s.
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Sets the probe interval (`TCP_KEEPINTVL`): whole seconds, 1 s to 32767 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the probe count (`TCP_KEEPCNT`): 1 to 127.
    pub fn probes(mut self, probes: u32) -> Self {
        self.probes = probes;
        self
    }

    /// Sets the user timeout (`TCP_USER_TIMEOUT`).
    pub fn user_timeout(mut self, user_timeout: UserTimeout) -> Self {
        self.user_timeout = user_timeout;
        self
    }

    /// Validates and builds the policy.
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] naming the field, the value, the allowed range and the nearest valid
    /// value when:
    /// - idle or interval is not a whole number of seconds, or is outside 1 s..=32767 s;
    /// - probes is outside 1..=127;
    /// - a fixed user timeout is not a whole number of milliseconds, or is outside 1 ms..=`i32::MAX` ms
    ///   (use [`UserTimeout::Off`] for none);
    /// - `Auto` would make the user timeout (the bound) larger than `i32::MAX` ms.
    pub fn build(self) -> Result<KeepalivePolicy, PolicyError> {
        let idle = whole_secs(Field::Idle, self.idle)?;
        let interval = whole_secs(Field::Interval, self.interval)?;
        if !(MIN_PROBES..=MAX_PROBES).contains(&self.probes) {
            let nearest = self.probes.clamp(MIN_PROBES, MAX_PROBES);
            return Err(PolicyError::out_of_range(
                Field::Probes,
                self.probes.to_string(),
                "1..=127 (TCP_KEEPCNT)",
                nearest.to_string(),
            ));
        }
        let policy = KeepalivePolicy::from_parts(idle, interval, self.probes, self.user_timeout);
        match self.user_timeout {
            UserTimeout::Off => {}
            UserTimeout::Fixed(d) => check_user_timeout(d)?,
            UserTimeout::Auto => {
                let auto = policy.auto_user_timeout();
                if auto.as_millis() > u128::from(MAX_USER_TIMEOUT_MS) {
                    return Err(PolicyError::new(
                        PolicyErrorKind::OutOfRange,
                        Some(Field::UserTimeout),
                        format!(
                            "user_timeout=auto would be {}ms (from the detection bound of {}s), above \
                             the kernel's limit of {MAX_USER_TIMEOUT_MS}ms (TCP_USER_TIMEOUT, about 24.8 days); \
                             use user_timeout=off, a fixed user_timeout, or a shorter policy",
                            auto.as_millis(),
                            policy.detection_bound().as_secs()
                        ),
                    ));
                }
            }
        }
        Ok(policy)
    }
}

fn whole_secs(field: Field, d: Duration) -> Result<u32, PolicyError> {
    let sockopt = match field {
        Field::Idle => "TCP_KEEPIDLE",
        _ => "TCP_KEEPINTVL",
    };
    // Round to the nearest whole second for the suggestion, then clamp into range.
    let rounded = (d.as_millis() + 500) / 1000;
    let nearest = rounded.clamp(u128::from(MIN_SECS), u128::from(MAX_SECS));
    if d.subsec_nanos() != 0 {
        return Err(PolicyError::new(
            PolicyErrorKind::NotWhole,
            Some(field),
            format!(
                "{field} = {} is not a whole number of seconds: the kernel sets {sockopt} in \
                 whole seconds (1s..=32767s) and would truncate it; use {field}={nearest}s",
                fmt_dur(d)
            ),
        ));
    }
    let secs = d.as_secs();
    if !(u64::from(MIN_SECS)..=u64::from(MAX_SECS)).contains(&secs) {
        return Err(PolicyError::out_of_range(
            field,
            format!("{secs}s"),
            &format!("1s..=32767s ({sockopt})"),
            format!("{nearest}s"),
        ));
    }
    Ok(secs as u32)
}

pub(super) fn check_user_timeout(d: Duration) -> Result<(), PolicyError> {
    let field = Field::UserTimeout;
    if d.subsec_nanos() % 1_000_000 != 0 {
        let nearest = ((d.as_micros() + 500) / 1000).clamp(1, u128::from(MAX_USER_TIMEOUT_MS));
        return Err(PolicyError::new(
            PolicyErrorKind::NotWhole,
            Some(field),
            format!(
                "user_timeout = {} is not a whole number of milliseconds: the kernel sets \
                 TCP_USER_TIMEOUT in milliseconds and would truncate it (below 1ms, to 0, which \
                 switches it off); use user_timeout={nearest}ms",
                fmt_dur(d)
            ),
        ));
    }
    let ms = d.as_millis();
    if ms == 0 {
        return Err(PolicyError::out_of_range(
            field,
            "0ms".into(),
            "1ms..=2147483647ms (TCP_USER_TIMEOUT); 0 means off",
            "off".into(),
        ));
    }
    if ms > u128::from(MAX_USER_TIMEOUT_MS) {
        return Err(PolicyError::out_of_range(
            field,
            format!("{ms}ms"),
            "1ms..=2147483647ms (TCP_USER_TIMEOUT)",
            format!("{MAX_USER_TIMEOUT_MS}ms"),
        ));
    }
    Ok(())
}
