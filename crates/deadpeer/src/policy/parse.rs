//! `FromStr` and `Display` for policies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{Field, KeepalivePolicy, PolicyError, UserTimeout, fmt_dur};

/// Longest input echoed back in an error message.
const ECHO_MAX: usize = 40;

fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(ECHO_MAX).collect();
        format!("{head:?}…")
    }
}

impl fmt::Display for UserTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserTimeout::Auto => f.write_str("auto"),
            UserTimeout::Off => f.write_str("off"),
            UserTimeout::Fixed(d) => f.write_str(&fmt_dur(*d)),
        }
    }
}

impl FromStr for UserTimeout {
    type Err = PolicyError;

    /// Parses `auto`, `off` or a humantime duration such as `30s` or `1500ms`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "auto" => return Ok(UserTimeout::Auto),
            "off" => return Ok(UserTimeout::Off),
            _ => {}
        }
        let d = duration(Field::UserTimeout, s)?;
        super::builder::check_user_timeout(d)?;
        Ok(UserTimeout::Fixed(d))
    }
}

impl fmt::Display for KeepalivePolicy {
    /// The canonical form: `idle=60s,interval=10s,probes=6,user_timeout=auto`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "idle={}s,interval={}s,probes={},user_timeout={}",
            self.idle().as_secs(),
            self.interval().as_secs(),
            self.probes(),
            self.user_timeout()
        )
    }
}

impl FromStr for KeepalivePolicy {
    type Err = PolicyError;

    /// Parses a preset name (`fast`, `cloud`, `linux-default`), the canonical form
    /// (`idle=60s,interval=10s,probes=6[,user_timeout=…]`) or the nginx form (`60:10:6`); see
    /// [`KeepalivePolicy`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(PolicyError::parse(
                None,
                "empty keepalive policy: expected a preset (fast, cloud, linux-default), \
                 idle=60s,interval=10s,probes=6 or 60:10:6"
                    .into(),
            ));
        }
        if let Some(preset) = KeepalivePolicy::preset(s) {
            return Ok(preset);
        }
        if s.contains('=') {
            parse_keyed(s)
        } else if s.contains(':') {
            parse_nginx(s)
        } else {
            Err(PolicyError::parse(
                None,
                format!(
                    "cannot parse keepalive policy {}: expected a preset (fast, cloud, \
                     linux-default), idle=60s,interval=10s,probes=6 (optionally \
                     ,user_timeout=auto|off|<duration>) or the nginx form 60:10:6",
                    echo(s)
                ),
            ))
        }
    }
}

fn parse_keyed(s: &str) -> Result<KeepalivePolicy, PolicyError> {
    let mut idle = None;
    let mut interval = None;
    let mut probes = None;
    let mut user_timeout = None;
    for part in s.split(',') {
        let part = part.trim();
        let Some((key, value)) = part.split_once('=') else {
            return Err(PolicyError::parse(
                None,
                format!(
                    "expected key=value in keepalive policy, found {}",
                    echo(part)
                ),
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        let field = match key.to_ascii_lowercase().as_str() {
            "idle" => Field::Idle,
            "interval" => Field::Interval,
            "probes" => Field::Probes,
            "user_timeout" => Field::UserTimeout,
            _ => {
                return Err(PolicyError::parse(
                    None,
                    format!(
                        "unknown keepalive policy key {}: expected idle, interval, probes or user_timeout",
                        echo(key)
                    ),
                ));
            }
        };
        let duplicate = match field {
            Field::Idle => idle.replace(duration(field, value)?).is_some(),
            Field::Interval => interval.replace(duration(field, value)?).is_some(),
            Field::Probes => probes.replace(count(field, value)?).is_some(),
            Field::UserTimeout => user_timeout
                .replace(value.parse::<UserTimeout>()?)
                .is_some(),
        };
        if duplicate {
            return Err(PolicyError::parse(
                Some(field),
                format!("{field} is given twice in keepalive policy; give it once"),
            ));
        }
    }
    let missing = |field: Field, example: &str| {
        PolicyError::parse(
            Some(field),
            format!("keepalive policy is missing {field}: add {field}={example}"),
        )
    };
    KeepalivePolicy::builder()
        .idle(idle.ok_or_else(|| missing(Field::Idle, "60s"))?)
        .interval(interval.ok_or_else(|| missing(Field::Interval, "10s"))?)
        .probes(probes.ok_or_else(|| missing(Field::Probes, "6"))?)
        .user_timeout(user_timeout.unwrap_or_default())
        .build()
}

fn parse_nginx(s: &str) -> Result<KeepalivePolicy, PolicyError> {
    let fields: Vec<&str> = s.split(':').map(str::trim).collect();
    let [idle, interval, probes] = fields[..] else {
        return Err(PolicyError::parse(
            None,
            format!(
                "nginx-style keepalive policy {} has {} field(s): expected three, idle:interval:probes \
                 (an empty field means the Linux default), for example 60:10:6",
                echo(s),
                fields.len()
            ),
        ));
    };
    let default = KeepalivePolicy::LINUX_DEFAULT;
    let secs = |field: Field, v: &str, default: Duration| -> Result<Duration, PolicyError> {
        if v.is_empty() {
            Ok(default)
        } else if v.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Duration::from_secs(count(field, v)?.into()))
        } else {
            duration(field, v)
        }
    };
    KeepalivePolicy::builder()
        .idle(secs(Field::Idle, idle, default.idle())?)
        .interval(secs(Field::Interval, interval, default.interval())?)
        .probes(if probes.is_empty() {
            default.probes()
        } else {
            count(Field::Probes, probes)?
        })
        .build()
}

fn duration(field: Field, value: &str) -> Result<Duration, PolicyError> {
    humantime::parse_duration(value).map_err(|e| {
        PolicyError::parse(
            Some(field),
            format!(
                "{field} = {} is not a duration ({e}): write it with a unit, like {field}=60s or {field}=1500ms",
                echo(value)
            ),
        )
    })
}

fn count(field: Field, value: &str) -> Result<u32, PolicyError> {
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u32>() {
        Ok(n) => Ok(n),
        // All digits but too large for u32: out of range rather than unparsable.
        Err(_) if digits => {
            let (range, nearest) = match field {
                Field::Probes => ("1..=127 (TCP_KEEPCNT)", "127"),
                _ => ("1s..=32767s", "32767s"),
            };
            Err(PolicyError::out_of_range(
                field,
                echo(value),
                range,
                nearest.into(),
            ))
        }
        Err(_) => Err(PolicyError::parse(
            Some(field),
            format!(
                "{field} = {} is not a whole number: write it like {field}=6",
                echo(value)
            ),
        )),
    }
}
