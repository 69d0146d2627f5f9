//! KeepalivePolicy: validation, presets, goals, string forms and serde.

use std::time::Duration;

use deadpeer::policy::Field;
use deadpeer::{KeepalivePolicy, PolicyErrorKind, UserTimeout};
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn linux_default_bound_is_2h_11m_15s() {
    let p = KeepalivePolicy::LINUX_DEFAULT;
    assert_eq!(
        (p.idle(), p.interval(), p.probes()),
        (secs(7200), secs(75), 9)
    );
    assert_eq!(p.detection_bound(), secs(7875));
    assert_eq!(
        humantime::format_duration(p.detection_bound()).to_string(),
        "2h 11m 15s"
    );
    assert_eq!(p.user_timeout(), UserTimeout::Off);
}

#[test]
fn presets_are_valid_and_match_their_goals() {
    for p in [
        KeepalivePolicy::LINUX_DEFAULT,
        KeepalivePolicy::CLOUD,
        KeepalivePolicy::FAST,
    ] {
        let rebuilt = KeepalivePolicy::builder()
            .idle(p.idle())
            .interval(p.interval())
            .probes(p.probes())
            .user_timeout(p.user_timeout())
            .build()
            .expect("preset is valid");
        assert_eq!(rebuilt, p);
    }
    assert_eq!(
        KeepalivePolicy::under_idle_timeout(secs(240)).unwrap(),
        KeepalivePolicy::CLOUD
    );
    assert_eq!(
        KeepalivePolicy::detect_within(secs(30)).unwrap(),
        KeepalivePolicy::FAST
    );
    // CLOUD probes before every common middlebox idle timeout.
    for middlebox in [350, 240, 600, 1200] {
        assert!(KeepalivePolicy::CLOUD.idle() < secs(middlebox));
    }
}

#[test]
fn sub_second_values_are_rejected_with_the_nearest_valid_value() {
    let err = KeepalivePolicy::new(Duration::from_millis(1500), secs(1), 3).unwrap_err();
    assert_eq!(err.kind(), PolicyErrorKind::NotWhole);
    assert_eq!(err.field(), Some(Field::Idle));
    let msg = err.to_string();
    assert!(
        msg.contains("idle = 1500ms") && msg.contains("1s..=32767s") && msg.contains("idle=2s"),
        "{msg}"
    );

    let err = KeepalivePolicy::new(secs(1), Duration::from_millis(500), 3).unwrap_err();
    assert!(err.is_not_whole());
    assert!(err.to_string().contains("interval=1s"), "{err}");

    // socket2 would turn 500 µs into 0, which switches the user timeout off.
    let err = KeepalivePolicy::FAST
        .with_user_timeout(UserTimeout::Fixed(Duration::from_micros(500)))
        .unwrap_err();
    assert!(err.is_not_whole());
    assert!(err.to_string().contains("user_timeout=1ms"), "{err}");
}

#[test]
fn out_of_range_values_name_field_limit_and_fix() {
    let cases = [
        ("idle=0s,interval=1s,probes=3", Field::Idle, "use idle=1s"),
        (
            "idle=32768s,interval=1s,probes=3",
            Field::Idle,
            "use idle=32767s",
        ),
        (
            "idle=1s,interval=40000s,probes=3",
            Field::Interval,
            "use interval=32767s",
        ),
        (
            "idle=1s,interval=1s,probes=0",
            Field::Probes,
            "use probes=1",
        ),
        (
            "idle=1s,interval=1s,probes=128",
            Field::Probes,
            "use probes=127",
        ),
        (
            "idle=1s,interval=1s,probes=3,user_timeout=0s",
            Field::UserTimeout,
            "use user_timeout=off",
        ),
        (
            "idle=1s,interval=1s,probes=3,user_timeout=30days",
            Field::UserTimeout,
            "2147483647ms",
        ),
    ];
    for (input, field, fix) in cases {
        let err = input.parse::<KeepalivePolicy>().unwrap_err();
        assert!(err.is_out_of_range(), "{input}: {err}");
        assert_eq!(err.field(), Some(field), "{input}");
        assert!(err.to_string().contains(fix), "{input}: {err}");
    }
}

#[test]
fn auto_user_timeout_over_the_kernel_limit_is_an_error() {
    let err = KeepalivePolicy::new(secs(32767), secs(32767), 127).unwrap_err();
    assert_eq!(err.field(), Some(Field::UserTimeout));
    assert!(err.to_string().contains("user_timeout=off"), "{err}");
    let ok = KeepalivePolicy::builder()
        .idle(secs(32767))
        .interval(secs(32767))
        .probes(127)
        .user_timeout(UserTimeout::Off)
        .build();
    assert!(ok.is_ok());
}

#[test]
fn both_string_forms_parse() {
    let p: KeepalivePolicy = "idle=60s,interval=10s,probes=6".parse().unwrap();
    assert_eq!(p, KeepalivePolicy::new(secs(60), secs(10), 6).unwrap());
    assert_eq!(p.effective_user_timeout(), Some(secs(119)));
    assert_eq!("60:10:6".parse::<KeepalivePolicy>().unwrap(), p);
    assert_eq!(
        " probes=6 , interval=10s, idle=1m "
            .parse::<KeepalivePolicy>()
            .unwrap(),
        p
    );

    let off: KeepalivePolicy = "idle=60s,interval=10s,probes=6,user_timeout=off"
        .parse()
        .unwrap();
    assert_eq!(off.effective_user_timeout(), None);
    let fixed: KeepalivePolicy = "idle=60s,interval=10s,probes=6,user_timeout=1500ms"
        .parse()
        .unwrap();
    assert_eq!(
        fixed.user_timeout(),
        UserTimeout::Fixed(Duration::from_millis(1500))
    );
    assert_eq!(
        fixed.to_string(),
        "idle=60s,interval=10s,probes=6,user_timeout=1500ms"
    );

    // nginx: empty fields are the Linux defaults, units are allowed.
    let n: KeepalivePolicy = "30m::10".parse().unwrap();
    assert_eq!(
        (n.idle(), n.interval(), n.probes()),
        (secs(1800), secs(75), 10)
    );
    let all_default: KeepalivePolicy = "::".parse().unwrap();
    assert_eq!(all_default.detection_bound(), secs(7875));
}

#[test]
fn bad_strings_give_one_clear_line() {
    let cases = [
        ("", "empty keepalive policy"),
        (
            "idle=abc,interval=10s,probes=6",
            "idle = \"abc\" is not a duration",
        ),
        ("60:10", "has 2 field(s): expected three"),
        ("idle=60s,interval=10s", "missing probes: add probes=6"),
        (
            "idle=60s,idle=60s,interval=1s,probes=1",
            "idle is given twice",
        ),
        (
            "idle=60s,interval=10s,probes=6,color=red",
            "unknown keepalive policy key \"color\"",
        ),
        (
            "idle=60s,interval=10s,probes=six",
            "probes = \"six\" is not a whole number",
        ),
        (
            "slow",
            "cannot parse keepalive policy \"slow\": expected a preset (fast, cloud, linux-default)",
        ),
        ("60:10:x", "probes = \"x\" is not a whole number"),
        ("idle=60,interval=10s,probes=6", "write it with a unit"),
    ];
    for (input, expected) in cases {
        let err = input.parse::<KeepalivePolicy>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expected), "{input:?} gave {msg:?}");
        assert!(!msg.contains('\n'), "{msg}");
    }
}

#[test]
fn goals() {
    let err = KeepalivePolicy::detect_within(Duration::from_millis(1999)).unwrap_err();
    assert!(err.is_unsatisfiable());
    assert!(err.to_string().contains("2s or more"), "{err}");
    let two = KeepalivePolicy::detect_within(secs(2)).unwrap();
    assert_eq!(
        (two.idle(), two.interval(), two.probes()),
        (secs(1), secs(1), 1)
    );

    let nlb = KeepalivePolicy::under_idle_timeout(secs(350)).unwrap();
    assert_eq!(
        nlb.to_string(),
        "idle=262s,interval=35s,probes=5,user_timeout=auto"
    );
    assert!(
        KeepalivePolicy::under_idle_timeout(Duration::from_millis(1300))
            .unwrap_err()
            .is_unsatisfiable()
    );
    assert!(
        KeepalivePolicy::under_idle_timeout(secs(100_000))
            .unwrap_err()
            .is_unsatisfiable()
    );
}

#[cfg(feature = "serde")]
#[test]
fn serde_round_trips_and_accepts_maps() {
    let p = KeepalivePolicy::FAST;
    let json = serde_json::to_string(&p).unwrap();
    assert_eq!(json, "\"idle=15s,interval=5s,probes=3,user_timeout=auto\"");
    assert_eq!(serde_json::from_str::<KeepalivePolicy>(&json).unwrap(), p);
    let map: KeepalivePolicy =
        serde_json::from_str(r#"{"idle":"15s","interval":5,"probes":3,"user_timeout":"auto"}"#)
            .unwrap();
    assert_eq!(map, p);
    let err = serde_json::from_str::<KeepalivePolicy>(r#"{"idle":"15s","interval":5,"probes":0}"#)
        .unwrap_err();
    assert!(
        err.to_string().contains("probes = 0 is out of range"),
        "{err}"
    );
    let err = serde_json::from_str::<KeepalivePolicy>(r#"{"idle":"15s","probes":3}"#).unwrap_err();
    assert!(
        err.to_string().contains("missing field `interval`"),
        "{err}"
    );
}

fn valid_policy() -> impl Strategy<Value = KeepalivePolicy> {
    let ut = prop_oneof![
        Just(UserTimeout::Auto),
        Just(UserTimeout::Off),
        (1u64..=i32::MAX as u64).prop_map(|ms| UserTimeout::Fixed(Duration::from_millis(ms))),
    ];
    (1u64..=32767, 1u64..=32767, 1u32..=127, ut).prop_filter_map(
        "auto within limit",
        |(i, n, k, ut)| {
            KeepalivePolicy::builder()
                .idle(secs(i))
                .interval(secs(n))
                .probes(k)
                .user_timeout(ut)
                .build()
                .ok()
        },
    )
}

proptest! {
    #[test]
    fn display_from_str_round_trips(p in valid_policy()) {
        let s = p.to_string();
        prop_assert_eq!(s.parse::<KeepalivePolicy>().unwrap(), p);
    }

    #[test]
    fn nginx_form_round_trips(i in 1u32..=32767, n in 1u32..=32767, k in 1u32..=127) {
        let p = format!("{i}:{n}:{k}").parse::<KeepalivePolicy>();
        if let Ok(p) = p {
            prop_assert_eq!((p.idle().as_secs(), p.interval().as_secs(), p.probes()), (i.into(), n.into(), k));
        } else {
            // Only an `auto` user timeout beyond i32::MAX ms can fail.
            prop_assert!(u64::from(i) + u64::from(n) * u64::from(k) > i32::MAX as u64 / 1000);
        }
    }

    #[test]
    fn any_string_parses_or_errors_without_panicking(s in ".{0,80}") {
        if let Err(e) = s.parse::<KeepalivePolicy>() {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn policy_like_strings_never_panic(
        i in "[0-9a-z]{0,12}", n in "[0-9a-z.]{0,12}", k in "-?[0-9]{0,25}", u in "(auto|off|[0-9]{0,12}(ms|us|ns|s|h|days)?)"
    ) {
        for s in [format!("idle={i},interval={n},probes={k},user_timeout={u}"), format!("{i}:{n}:{k}")] {
            if let Err(e) = s.parse::<KeepalivePolicy>() {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn detect_within_respects_its_contract(ms in 0u64..=10_000_000_000u64) {
        let d = Duration::from_millis(ms);
        match KeepalivePolicy::detect_within(d) {
            Ok(p) => {
                prop_assert!(d >= secs(2));
                prop_assert!(p.detection_bound() <= d);
                prop_assert!((1..=32767).contains(&p.idle().as_secs()));
                prop_assert!((1..=32767).contains(&p.interval().as_secs()));
                let whole = d.as_secs().min(i32::MAX as u64 / 1000);
                prop_assert!(p.probes() >= 3 || whole < 4, "{p} for {d:?}");
                prop_assert_eq!(p.user_timeout(), UserTimeout::Auto);
                let ut = p.effective_user_timeout().unwrap();
                prop_assert!(ut.as_millis() <= i32::MAX as u128);
                // A valid policy: it rebuilds.
                prop_assert_eq!(p.to_string().parse::<KeepalivePolicy>().unwrap(), p);
            }
            Err(e) => {
                prop_assert!(d < secs(2));
                prop_assert!(e.is_unsatisfiable());
            }
        }
    }

    #[test]
    fn out_of_range_numbers_never_panic(i in any::<u64>(), n in any::<u64>(), k in any::<u32>(), ns in 0u32..1_000_000_000) {
        let r = KeepalivePolicy::new(Duration::new(i, ns), Duration::from_secs(n), k);
        if let Ok(p) = r {
            prop_assert!(p.idle().subsec_nanos() == 0 && p.probes() >= 1 && p.probes() <= 127);
        }
    }
}

/// The shapes measured in docs/kernel.md ("The user timeout replaces the probe count").
#[test]
fn detection_bound_follows_the_kernel_under_a_fixed_user_timeout() {
    for (text, bound) in [
        ("idle=1s,interval=1s,probes=3,user_timeout=20s", 20),
        ("idle=1s,interval=1s,probes=3,user_timeout=4s", 4),
        ("idle=1s,interval=1s,probes=3,user_timeout=1500ms", 2),
        ("idle=2s,interval=2s,probes=10,user_timeout=3s", 4),
        ("idle=2s,interval=1s,probes=5,user_timeout=4500ms", 5),
        ("idle=5s,interval=1s,probes=3,user_timeout=2s", 6),
        ("idle=3s,interval=2s,probes=2,user_timeout=off", 7),
        ("idle=1s,interval=1s,probes=3,user_timeout=auto", 4),
    ] {
        let p: KeepalivePolicy = text.parse().unwrap();
        assert_eq!(p.detection_bound(), secs(bound), "{text}");
    }
    let p: KeepalivePolicy = "idle=1s,interval=1s,probes=3,user_timeout=20s"
        .parse()
        .unwrap();
    assert_eq!(p.timer_slack(), Duration::from_millis(1800));
    // HZ=300: the 15 s idle timer lands at level 3 (513 jiffies late), each 5 s interval at level 2
    // (65 jiffies): (513 + 3 × 65) / 300 s.
    assert_eq!(
        KeepalivePolicy::FAST.timer_slack(),
        Duration::from_millis(2360)
    );
}

proptest! {
    /// With a fixed user timeout the bound is the first probe tick (`k ≥ 1`) at or past it; with
    /// `auto` or `off`, `idle + interval × probes`. The slack is positive and at most 12.7 % of
    /// each timer plus a jiffy (≤ 10 ms) per timer.
    #[test]
    fn detection_bound_is_the_first_qualifying_tick(p in valid_policy()) {
        let (idle, interval) = (p.idle(), p.interval());
        let bound = p.detection_bound();
        prop_assert!(bound >= idle + interval);
        prop_assert_eq!((bound - idle).as_nanos() % interval.as_nanos(), 0);
        match p.user_timeout() {
            UserTimeout::Fixed(ut) => {
                prop_assert!(bound >= ut);
                prop_assert!(bound - interval < ut.max(idle + interval));
            }
            UserTimeout::Auto | UserTimeout::Off => {
                prop_assert_eq!(bound, idle + interval * p.probes());
            }
        }
        let ticks = ((bound - idle).as_secs() / interval.as_secs()) as u32 + 1;
        let slack = p.timer_slack();
        prop_assert!(slack > Duration::ZERO);
        prop_assert!(slack <= bound.mul_f64(8.0 / 63.0) + Duration::from_millis(20) * ticks, "{slack:?} for {p}");
    }
}

proptest! {
    /// The bound of the values read back from a socket is the policy's own: one formula serves
    /// both (`SocketKeepalive::detection_bound`, `KeepalivePolicy::detection_bound`).
    #[test]
    fn read_back_values_give_the_policys_bound(p in valid_policy()) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        deadpeer::apply(&stream, p).unwrap();
        let got = deadpeer::inspect(&stream).unwrap();
        prop_assert!(got.matches(p));
        prop_assert_eq!(got.detection_bound(), p.detection_bound(), "{}", p);
    }
}
