//! SystemKeepalive: reads the real sysctls, and writes them only inside a private namespace.

use std::time::Duration;

use deadpeer::{KeepalivePolicy, SystemKeepalive};
use deadpeer_testkit::lab_or_skip;

#[test]
fn read_matches_procfs() {
    let sys = SystemKeepalive::read().unwrap();
    let proc = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(sys.policy.idle().as_secs(), proc("tcp_keepalive_time"));
    assert_eq!(sys.policy.interval().as_secs(), proc("tcp_keepalive_intvl"));
    assert_eq!(u64::from(sys.policy.probes()), proc("tcp_keepalive_probes"));
    assert_eq!(u64::from(sys.retries2), proc("tcp_retries2"));
    let expected = sys.policy.idle() + sys.policy.interval() * sys.policy.probes();
    assert_eq!(sys.detection_bound(), expected);
}

#[test]
fn write_changes_only_the_private_namespace() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let host_before = SystemKeepalive::read().unwrap();
    let wanted =
        KeepalivePolicy::new(Duration::from_secs(300), Duration::from_secs(60), 30).unwrap();
    let inside = lab
        .client()
        .run(|| {
            SystemKeepalive::write(wanted).unwrap();
            SystemKeepalive::read().unwrap()
        })
        .unwrap();
    assert_eq!(inside.policy.idle(), Duration::from_secs(300));
    assert_eq!(inside.policy.interval(), Duration::from_secs(60));
    assert_eq!(inside.policy.probes(), 30);
    assert_eq!(
        SystemKeepalive::read().unwrap(),
        host_before,
        "the host's sysctls changed"
    );
}

/// `Sysctl`, the one model of the four sysctls: each reads what procfs holds, refuses a value
/// outside its range before touching the file, and writes inside a private namespace only.
#[test]
fn sysctl_reads_writes_and_refuses_out_of_range() {
    use deadpeer::kernel::Sysctl;
    for s in Sysctl::ALL {
        let text = std::fs::read_to_string(s.path()).unwrap();
        assert_eq!(s.read().unwrap(), text.trim().parse::<i64>().unwrap());
        let above = *s.range().end() + 1;
        let err = s.write(above).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains(s.name()) && err.to_string().contains(&above.to_string()),
            "{err}"
        );
    }
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let host = Sysctl::RETRIES2.read().unwrap();
    let inside = lab
        .client()
        .run(|| {
            Sysctl::RETRIES2.write(8).unwrap();
            Sysctl::RETRIES2.read().unwrap()
        })
        .unwrap();
    assert_eq!(inside, 8);
    assert_eq!(
        Sysctl::RETRIES2.read().unwrap(),
        host,
        "the host's sysctl changed"
    );
}
