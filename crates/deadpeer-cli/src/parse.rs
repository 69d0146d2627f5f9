//! Parsing of command-line values shared by several subcommands.

use std::time::Duration;

use deadpeer::{KeepalivePolicy, PolicyError};

/// Parses a duration for clap: a bare number is seconds (`300`), anything else uses humantime
/// (`300s`, `5m`, `1500ms`). Sub-second values pass through, so that the library, not the parser,
/// explains why the kernel would reject them.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|e| format!("{s:?} is not a number of seconds: {e}"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}): write it like 30s, 5m, 1m 30s or 1500ms")
    })
}

/// Parses `--policy`: a preset name (`cloud`, `fast`, `linux-default`), the canonical form
/// (`idle=60s,interval=10s,probes=6[,user_timeout=…]`) or the nginx form (`60:10:6`).
pub(crate) fn policy(s: &str) -> Result<KeepalivePolicy, PolicyError> {
    match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
        "cloud" => Ok(KeepalivePolicy::CLOUD),
        "fast" => Ok(KeepalivePolicy::FAST),
        "linux-default" => Ok(KeepalivePolicy::LINUX_DEFAULT),
        _ => s.parse(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(duration("abc").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn presets_and_forms() {
        assert_eq!(policy("FAST"), Ok(KeepalivePolicy::FAST));
        assert_eq!(policy("linux_default"), Ok(KeepalivePolicy::LINUX_DEFAULT));
        assert_eq!(policy("15:5:3"), Ok(KeepalivePolicy::FAST));
        assert!(policy("60:10").is_err());
        assert!(policy("idle=abc").is_err());
    }
}
