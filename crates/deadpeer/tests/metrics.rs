//! The metrics (feature `metrics`), read from a global `metrics-util` debugging recorder: real
//! deaths of each cause in namespace labs, churn of watched connections on loopback, and
//! failures to apply a policy. Alone in its binary, because the recorder is process-wide; the
//! tests take turns (`serial`), since each compares the totals before and after
//! (`common::totals`).

// `capture` goes unused: these tests read the recorder, not the events.
#[allow(unused_imports)]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use common::totals::{Series, Totals, serial, series};
use common::{client_pair, deadline, policy, wait_dead};
use deadpeer::layer::ReapLayer;
use deadpeer::metrics::{
    APPLY_FAILURES, DEAD_CONNECTION_DURATION, DEAD_CONNECTION_IDLE_DURATION, DEAD_CONNECTIONS,
    DIRECTION, ENDED_CONNECTIONS, ENDING, ERROR_TYPE, OPENED_CONNECTIONS, WATCHED_CONNECTIONS,
};
use deadpeer::{Cause, DeadPeer, Ending, KeepaliveListener, KeepalivePolicy, KeepaliveStream};
use deadpeer_testkit::{Lab, Reject, Tool, lab_or_skip};
use metrics_util::debugging::DebuggingRecorder;
use tokio::io::AsyncWriteExt;
use tower_layer::Layer;
use tower_service::Service;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn watched() -> Series {
    series(WATCHED_CONNECTIONS, &[])
}

/// The labels of a death's counter and histograms.
fn death_labels(dead: &DeadPeer) -> [(&'static str, &'static str); 2] {
    [
        (ERROR_TYPE, dead.cause().as_str()),
        (ENDING, dead.ending().as_str()),
    ]
}

fn deaths(dead: &DeadPeer) -> Series {
    series(DEAD_CONNECTIONS, &death_labels(dead))
}

fn ended(ending: Ending) -> Series {
    series(ENDED_CONNECTIONS, &[(ENDING, ending.as_str())])
}

fn opened(direction: &str) -> Series {
    series(OPENED_CONNECTIONS, &[(DIRECTION, direction)])
}

/// One real death of `cause` in `lab`: a `deadpeer::connect` client, watched, whose server
/// vanishes, resets, is unreachable, refuses, or stops reading.
async fn die(lab: &Lab, cause: Cause) -> DeadPeer {
    let p = policy(1, 1, 3);
    let (mut client, server) = client_pair(lab, 7601, &p).await;
    let liveness = client.liveness();
    let mut limit = deadline(p) + Duration::from_secs(3);
    let _server = match cause {
        Cause::KeepaliveTimeout => {
            lab.blackhole().unwrap();
            Some(server)
        }
        Cause::RetransmitTimeout => {
            lab.blackhole().unwrap();
            client.write_all(&[7; 1000]).await.unwrap();
            Some(server)
        }
        Cause::Reset => {
            lab.forget(server.into_std().unwrap()).unwrap();
            None
        }
        Cause::Unreachable => {
            lab.unreachable().unwrap();
            client.write_all(&[7; 1000]).await.unwrap();
            // ICMP host unreachable re-arms the timer past the bound by up to one RTO (see
            // tests/icmp.rs).
            limit += Duration::from_secs(3);
            Some(server)
        }
        Cause::Refused => {
            lab.reject(Reject::PortUnreachable).unwrap();
            client.write_all(&[7; 1000]).await.unwrap();
            Some(server)
        }
        Cause::Stalled => {
            // The server never reads: fill both buffers until the write blocks for good.
            let chunk = vec![0x55u8; 64 * 1024];
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(500), client.write(&chunk)).await
            {
            }
            Some(server)
        }
        other => panic!("no recipe for {other:?}"),
    };
    let dead = wait_dead(&liveness, limit).await;
    assert_eq!(dead.cause(), cause, "{dead}");
    dead
}

/// One death of each cause the kernel can be made to give, at the same time, each in its own
/// lab: each is counted once under its `error.type`, and the histograms hold exactly its age and
/// its idle time.
#[test]
fn each_cause_is_counted_once_with_its_age_and_idle_time() {
    const CAUSES: [Cause; 6] = [
        Cause::KeepaliveTimeout,
        Cause::RetransmitTimeout,
        Cause::Stalled,
        Cause::Reset,
        Cause::Unreachable,
        Cause::Refused,
    ];
    let _serial = serial();
    let mut labs = Vec::new();
    for _ in CAUSES {
        // `Cause::Refused` comes from an nftables reject.
        let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
            return;
        };
        labs.push(lab);
    }
    let before = Totals::read();
    // A thread and a runtime per lab: entering a namespace is per thread.
    let deaths_seen: Vec<DeadPeer> = std::thread::scope(|s| {
        let running: Vec<_> = labs
            .iter()
            .zip(CAUSES)
            .map(|(lab, cause)| s.spawn(move || runtime().block_on(die(lab, cause))))
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let after = Totals::read_until(|now| {
        deaths_seen
            .iter()
            .all(|d| now.counter(&deaths(d)) > before.counter(&deaths(d)))
    });

    let mut total = 0;
    for dead in &deaths_seen {
        let cause = dead.cause();
        // The forgotten connection's RST answered a keepalive probe.
        let ending = match cause {
            Cause::Reset => Ending::Forgot,
            Cause::Stalled => Ending::Stalled,
            Cause::Refused => Ending::Refused,
            _ => Ending::Vanished,
        };
        assert_eq!(dead.ending(), ending, "{dead}");
        let by_cause = death_labels(dead);
        let counted = after.counter(&deaths(dead)) - before.counter(&deaths(dead));
        assert_eq!(counted, 1, "{cause:?}");
        total += counted;
        assert_eq!(
            after.new_values(&before, &series(DEAD_CONNECTION_DURATION, &by_cause)),
            [dead.connected_for().as_secs_f64()],
            "{dead}"
        );
        let idle = dead.idle_for().expect("TCP_INFO on Linux");
        assert_eq!(
            after.new_values(&before, &series(DEAD_CONNECTION_IDLE_DURATION, &by_cause)),
            [idle.as_secs_f64()],
            "{dead}"
        );
    }
    let all = after.counter_sum(DEAD_CONNECTIONS) - before.counter_sum(DEAD_CONNECTIONS);
    assert_eq!(all, total, "a death counted twice, or under another cause");
    let endings: u64 = Ending::ALL
        .iter()
        .map(|e| after.counter(&ended(*e)) - before.counter(&ended(*e)))
        .sum();
    assert_eq!(
        endings, total,
        "each death is one ending, and nothing else ended"
    );
    assert_eq!(
        after.counter(&opened("outbound")) - before.counter(&opened("outbound")),
        CAUSES.len() as u64
    );
    drop(deaths_seen);
    // Every client stream is gone: nothing is watched any more.
    assert_eq!(after.gauge(&watched()), before.gauge(&watched()));
}

async fn pair(listener: &KeepaliveListener) -> (KeepaliveStream, KeepaliveStream, SocketAddr) {
    let client = deadpeer::connect(listener.local_addr().unwrap(), KeepalivePolicy::FAST)
        .await
        .unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    (client, server, peer)
}

/// Resets a client connection: `SO_LINGER` 0, then close.
fn reset(client: KeepaliveStream) {
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);
}

/// The gauge follows watches exactly, through every way a stream ends (dropped, unwrapped,
/// split, dead, watched twice, never watched), and returns to where it was.
#[test]
fn the_watched_gauge_returns_to_zero_after_churn() {
    const N: usize = 200;
    let _serial = serial();
    let before = Totals::read();
    let watched_now = |totals: &Totals| totals.gauge(&watched()) - before.gauge(&watched());
    runtime().block_on(async {
        let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
            .await
            .unwrap();
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..N {
            let (client, server, _) = pair(&listener).await;
            clients.push(client);
            servers.push(server);
        }
        let after_accept = Totals::read();
        assert_eq!(
            after_accept.counter(&opened("inbound")) - before.counter(&opened("inbound")),
            N as u64
        );
        assert_eq!(
            after_accept.counter(&opened("outbound")) - before.counter(&opened("outbound")),
            N as u64
        );
        assert_eq!(watched_now(&after_accept), 0.0, "nothing watched yet");

        // Servers by i % 5: 0 watched, 1 watched twice, 2 watched then unwrapped, 3 watched then
        // split, 4 never watched. Every client is watched.
        let mut livenesses = Vec::new();
        for (i, server) in servers.iter().enumerate() {
            if i % 5 != 4 {
                livenesses.push(server.liveness());
            }
            if i % 5 == 1 {
                livenesses.push(server.liveness());
            }
        }
        livenesses.extend(clients.iter().map(KeepaliveStream::liveness));
        let expected = N + 4 * N / 5;
        assert_eq!(watched_now(&Totals::read()), expected as f64);

        let mut kept = Vec::new();
        let mut unwrapped = Vec::new();
        for (i, server) in servers.into_iter().enumerate() {
            match i % 5 {
                2 => unwrapped.push(server.into_inner()),
                3 => drop(server.into_split()),
                _ => kept.push((i, server)),
            }
        }
        let expected = expected - 2 * N / 5;
        assert_eq!(watched_now(&Totals::read()), expected as f64);

        // The clients of the watched servers 0 reset: those servers die (seen by the reaper),
        // and stay counted until the application drops them.
        let mut doomed = Vec::new();
        let mut rest = Vec::new();
        for (i, client) in clients.into_iter().enumerate() {
            if i % 5 == 0 {
                doomed.push(client)
            } else {
                rest.push(client)
            }
        }
        let doomed_count = doomed.len();
        doomed.into_iter().for_each(reset);
        let expected = expected - doomed_count;
        for (i, server) in &kept {
            if i % 5 == 0 {
                let dead = wait_dead(&server.liveness(), Duration::from_secs(5)).await;
                assert_eq!(dead.cause(), Cause::Reset);
                assert_eq!(dead.ending(), Ending::Aborted, "{dead}");
            }
        }
        // An RST with nothing of ours outstanding: the client application quit. An ending,
        // not a death.
        let aborted = ended(Ending::Aborted);
        let now = Totals::read_until(|now| {
            now.counter(&aborted) - before.counter(&aborted) >= doomed_count as u64
        });
        assert_eq!(watched_now(&now), expected as f64);
        assert_eq!(
            now.counter(&aborted) - before.counter(&aborted),
            doomed_count as u64
        );
        assert_eq!(
            now.counter_sum(DEAD_CONNECTIONS),
            before.counter_sum(DEAD_CONNECTIONS),
            "an abort counted as a death"
        );

        // Servers first (their FIN is no death), then the clients.
        drop(kept);
        drop(unwrapped);
        drop(rest);
    });
    let after = Totals::read();
    assert_eq!(watched_now(&after), 0.0, "the gauge did not return to zero");
}

/// A policy that cannot be applied (the socket is not TCP) is counted as a failure under its
/// `error.type`, and the connection is not counted as opened under a policy.
#[test]
fn a_failed_apply_is_counted_by_error_type() {
    let _serial = serial();
    let before = Totals::read();
    runtime().block_on(async {
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        unix.set_nonblocking(true).unwrap();
        let not_tcp = std::net::TcpStream::from(OwnedFd::from(unix));
        let not_tcp = tokio::net::TcpStream::from_std(not_tcp).unwrap();
        let handler = tower::service_fn(|stream: KeepaliveStream| async move {
            assert_eq!(stream.policy(), None, "kept without a policy");
            Ok::<_, std::convert::Infallible>(())
        });
        let mut reap = ReapLayer::new(KeepalivePolicy::FAST).layer(handler);
        reap.call(not_tcp).await.unwrap();
    });
    let after = Totals::read();
    let failures = series(APPLY_FAILURES, &[(ERROR_TYPE, "invalid_input")]);
    assert_eq!(after.counter(&failures) - before.counter(&failures), 1);
    assert_eq!(
        after.counter(&opened("inbound")),
        before.counter(&opened("inbound"))
    );
    assert_eq!(after.gauge(&watched()), before.gauge(&watched()));
}

/// `describe` gives the recorder each metric's unit.
#[test]
fn units_are_described() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        deadpeer::metrics::describe();
        metrics::counter!(DEAD_CONNECTIONS).increment(0);
        metrics::histogram!(DEAD_CONNECTION_IDLE_DURATION).record(0.0);
        metrics::gauge!(WATCHED_CONNECTIONS).set(0.0);
    });
    let units: HashMap<String, Option<metrics::Unit>> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, unit, _, _)| (k.key().name().to_owned(), unit))
        .collect();
    assert_eq!(units[DEAD_CONNECTIONS], Some(metrics::Unit::Count));
    assert_eq!(
        units[DEAD_CONNECTION_IDLE_DURATION],
        Some(metrics::Unit::Seconds)
    );
    assert_eq!(units[WATCHED_CONNECTIONS], Some(metrics::Unit::Count));
}
