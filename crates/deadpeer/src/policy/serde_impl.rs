//! serde support: a policy serializes as its canonical string and deserializes from that string,
//! the nginx form, or a map such as `{ idle = "60s", interval = "10s", probes = 6 }`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{KeepalivePolicy, UserTimeout};

impl Serialize for KeepalivePolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for UserTimeout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UserTimeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = UserTimeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\", \"off\" or a duration such as \"30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UserTimeout, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A duration given as a humantime string (`"60s"`) or a whole number of seconds (`60`).
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"60s\" or a whole number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                Ok(Secs(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                u64::try_from(v)
                    .map(|v| Secs(Duration::from_secs(v)))
                    .map_err(|_| {
                        E::custom(format_args!(
                            "duration {v} is negative: use a positive number of seconds"
                        ))
                    })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
                humantime::parse_duration(v).map(Secs).map_err(|e| {
                    E::custom(format_args!(
                        "{v:?} is not a duration ({e}): write it like \"60s\""
                    ))
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for KeepalivePolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeepalivePolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a keepalive policy: a preset (\"fast\", \"cloud\", \"linux-default\"), \
                     \"idle=60s,interval=10s,probes=6\", \"60:10:6\", or a map with idle, \
                     interval, probes and optionally user_timeout",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeepalivePolicy, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeepalivePolicy, A::Error> {
                let (mut idle, mut interval, mut probes, mut user_timeout) =
                    (None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let dup = match key.as_str() {
                        "idle" => idle.replace(map.next_value::<Secs>()?.0).is_some(),
                        "interval" => interval.replace(map.next_value::<Secs>()?.0).is_some(),
                        "probes" => probes.replace(map.next_value::<u32>()?).is_some(),
                        "user_timeout" => user_timeout
                            .replace(map.next_value::<UserTimeout>()?)
                            .is_some(),
                        other => {
                            return Err(de::Error::unknown_field(
                                other,
                                &["idle", "interval", "probes", "user_timeout"],
                            ));
                        }
                    };
                    if dup {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                }
                KeepalivePolicy::builder()
                    .idle(idle.ok_or_else(|| de::Error::missing_field("idle"))?)
                    .interval(interval.ok_or_else(|| de::Error::missing_field("interval"))?)
                    .probes(probes.ok_or_else(|| de::Error::missing_field("probes"))?)
                    .user_timeout(user_timeout.unwrap_or_default())
                    .build()
                    .map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_any(V)
    }
}
