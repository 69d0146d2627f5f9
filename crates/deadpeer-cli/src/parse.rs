//! Parsing of command-line values shared by several subcommands: durations, `--policy`, and
//! `HOST:PORT` targets. Each parser returns an error naming the value, what is accepted and an
//! example, and none of them panics on any input (see the property tests below).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use deadpeer::KeepalivePolicy;

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

/// `--policy` for clap's `value_parser`: a preset name (`fast`, `cloud`, `linux-default`), the
/// canonical form or the nginx form, as the library's `FromStr` takes them; every subcommand parses
/// it the same way, and a bad one is a usage error (exit status 2).
pub(crate) fn policy_arg(s: &str) -> Result<KeepalivePolicy, String> {
    s.parse::<KeepalivePolicy>().map_err(|e| e.to_string())
}

/// A connection target: a host (an IP address or a DNS name, not yet resolved) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// An IP address, or a name that is syntactically a host name; IPv6 without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Longest input echoed back in an error.
const ECHO_MAX: usize = 60;

/// Parses `HOST:PORT` or `[IPV6]:PORT`. Anything that could never resolve — stray brackets,
/// spaces, an IPv6 address without brackets, a label that is not a host name, a dotted number
/// that is not an IPv4 address, a port outside 1..=65535 — is bad input, caught here before any
/// lookup.
pub(crate) fn target(s: &str) -> Result<Target, String> {
    let shown: String = s.chars().take(ECHO_MAX).collect();
    let bad = |why: &str| {
        format!(
            "{shown:?} is not HOST:PORT ({why}); write it like example.com:443, 10.0.0.1:80 or [::1]:8080"
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    };
    let host = if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad("a [ without its closing ]"))?;
        if inner.contains(['[', ']']) {
            return Err(bad("a stray [ or ] in the brackets"));
        }
        let (addr, zone) = match inner.split_once('%') {
            Some((a, z)) => (a, Some(z)),
            None => (inner, None),
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return Err(bad("the part in brackets is not an IPv6 address"));
        }
        if let Some(z) = zone {
            let ok = !z.is_empty()
                && z.len() <= 15
                && z.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(bad("the zone after % is not an interface name"));
            }
        }
        inner.to_owned()
    } else if host.contains(':') {
        return Err(bad("put an IPv6 address in brackets, like [::1]:8080"));
    } else if host.contains(['[', ']']) {
        return Err(bad("a ] without its opening ["));
    } else {
        host_name(host).map_err(|why| bad(&why))?;
        host.to_owned()
    };
    Ok(Target { host, port })
}

/// Checks an unbracketed host: an IPv4 address, or a DNS name of labels of letters, digits, `-`
/// and `_` (1..=63 bytes each, no `-` at either end), at most 253 bytes, an optional final dot.
fn host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("no host".into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() > 253 {
        return Err("the host name is longer than 253 bytes".into());
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        // All digits and dots: only an IPv4 address can be meant.
        return match name.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err("not an IPv4 address: four numbers from 0 to 255".into()),
        };
    }
    for label in labels {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{:?} is not a host name label: letters, digits, - and _, 1 to 63 of them",
                label.chars().take(ECHO_MAX).collect::<String>()
            ));
        }
    }
    Ok(())
}

impl Target {
    /// The host as an IP address, when it is one.
    #[cfg(test)]
    fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(duration("abc").is_err());
        assert!(duration("").is_err());
        assert!(duration("99999999999999999999999").is_err());
    }

    #[test]
    fn presets_and_forms() {
        assert_eq!(policy_arg("FAST"), Ok(KeepalivePolicy::FAST));
        assert_eq!(
            policy_arg("linux_default"),
            Ok(KeepalivePolicy::LINUX_DEFAULT)
        );
        assert_eq!(policy_arg(" cloud "), Ok(KeepalivePolicy::CLOUD));
        assert_eq!(policy_arg("15:5:3"), Ok(KeepalivePolicy::FAST));
        assert!(policy_arg("60:10").is_err());
        assert!(policy_arg("idle=abc").is_err());
        assert!(
            policy_arg("quick")
                .unwrap_err()
                .contains("a preset (fast, cloud, linux-default)")
        );
    }

    #[test]
    fn targets() {
        let t = |s: &str| target(s).map(|t| (t.host, t.port));
        assert_eq!(t("a.b:80"), Ok(("a.b".into(), 80)));
        assert_eq!(t("[::1]:8080"), Ok(("::1".into(), 8080)));
        assert_eq!(t("[fe80::1%eth0]:22"), Ok(("fe80::1%eth0".into(), 22)));
        assert_eq!(t("10.0.0.1:1"), Ok(("10.0.0.1".into(), 1)));
        assert_eq!(
            t("db_1.internal.:5432"),
            Ok(("db_1.internal.".into(), 5432))
        );
        for bad in [
            "a.b",
            "::1:80",
            ":80",
            "a:99999",
            "a:0",
            "a:+80",
            "[::1]]:80",
            "[[::1]:80",
            "[::1:80",
            "::1]:80",
            "[10.0.0.1]:80",
            "[]:80",
            "[::1%]:80",
            "999.1.1.1:80",
            "1.2.3:80",
            "a b:80",
            "-a.com:80",
            "a..b:80",
            "exa$mple.com:80",
            "[::1]:",
        ] {
            let err = target(bad).expect_err(bad);
            assert!(err.contains("is not HOST:PORT"), "{bad}: {err}");
        }
    }

    proptest! {
        #[test]
        fn duration_never_panics(s in "\\PC{0,40}") {
            let _ = duration(&s);
        }

        #[test]
        fn durations_round_trip(secs in 0u64..10_000_000, ms in 0u64..1000) {
            let d = Duration::from_secs(secs) + Duration::from_millis(ms);
            let text = humantime::format_duration(d).to_string();
            prop_assert_eq!(duration(&text), Ok(d));
            prop_assert_eq!(duration(&secs.to_string()), Ok(Duration::from_secs(secs)));
        }

        #[test]
        fn policy_never_panics(s in "\\PC{0,60}") {
            let _ = policy_arg(&s);
        }

        #[test]
        fn policy_display_round_trips(idle in 1u64..=32767, interval in 1u64..=32767, probes in 1u32..=127) {
            let p = KeepalivePolicy::builder()
                .idle(Duration::from_secs(idle))
                .interval(Duration::from_secs(interval))
                .probes(probes)
                .user_timeout(deadpeer::UserTimeout::Off)
                .build()
                .unwrap();
            prop_assert_eq!(policy_arg(&p.to_string()), Ok(p));
        }

        #[test]
        fn target_never_panics(s in "\\PC{0,80}") {
            if let Ok(t) = target(&s) {
                // Whatever is accepted is a port in range and a host without stray syntax.
                prop_assert!(t.port > 0);
                prop_assert!(!t.host.is_empty());
                prop_assert!(!t.host.contains(['[', ']', ' ']));
            }
        }

        #[test]
        fn ip_targets_round_trip(ip in any::<std::net::IpAddr>(), port in 1u16..) {
            let text = std::net::SocketAddr::new(ip, port).to_string();
            let t = target(&text).unwrap();
            prop_assert_eq!(t.ip(), Some(ip));
            prop_assert_eq!(t.port, port);
        }

        #[test]
        fn names_round_trip(labels in prop::collection::vec("[a-z0-9]([a-z0-9_-]{0,20}[a-z0-9])?", 1..5), port in 1u16..) {
            let host = labels.join(".");
            prop_assume!(!labels.iter().all(|l| l.bytes().all(|b| b.is_ascii_digit())));
            let t = target(&format!("{host}:{port}")).unwrap();
            prop_assert_eq!(t.host, host);
            prop_assert_eq!(t.port, port);
        }

        #[test]
        fn extra_brackets_are_bad_input(ip in any::<std::net::Ipv6Addr>(), port in 1u16..) {
            for s in [format!("[{ip}]]:{port}"), format!("[[{ip}]:{port}"), format!("{ip}]:{port}"), format!("[{ip}:{port}")] {
                prop_assert!(target(&s).is_err(), "{}", s);
            }
        }
    }
}
