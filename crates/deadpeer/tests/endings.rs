//! How connections end: one real ending of each kind, each in its own namespace lab, all at
//! once (a thread and a current-thread runtime per lab: the binary takes about as long as its
//! longest case, the policy's bound). For each ending: its name, what `gone()` and `dead()`
//! resolve to (`dead()` stays pending at a FIN), when, against the policy's bound, exactly one
//! event at the ending's level with its `deadpeer.ending` field, and its count under that label
//! (a global debugging recorder, `common::totals`: one test compares the totals before and
//! after).

mod common;

use std::time::{Duration, Instant};

use common::totals::{Totals, serial, series};
use common::{WAKE, assert_one_event, capture, client_pair, deadline, policy};
use deadpeer::metrics::{DEAD_CONNECTIONS, ENDED_CONNECTIONS, ENDING, ERROR_TYPE};
use deadpeer::{Cause, DeadPeer, Ending, KeepalivePolicy, KeepaliveStream, TcpInfo};
use deadpeer_testkit::events::Events;
use deadpeer_testkit::{Lab, Reject, Tool, lab_or_skip, send_nowait};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// One way for a connection to end, made for real in a lab. The client is a watched
/// `deadpeer::connect` stream that nothing reads or writes once the fault is made; the server is
/// a plain tokio stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// The server closes cleanly: a FIN.
    CleanClose,
    /// The server closes with our data unread in its receive queue (its kernel ACKed it): its
    /// kernel answers the close with an RST.
    AbortUnread,
    /// The server's host forgets the idle connection (a reboot): our first keepalive probe
    /// meets an RST.
    ForgetProbe,
    /// The server's host forgets the connection behind a blackhole, while our data is
    /// retransmitted; once the path heals, the next retransmission meets an RST.
    ForgetRetransmit,
    /// A blackhole on an idle connection: the keepalive probes go unanswered.
    BlackholeIdle,
    /// A blackhole with our data in flight: the retransmissions go unanswered.
    BlackholeData,
    /// The path answers our data with ICMP port unreachable (an nftables reject).
    IcmpRefusal,
    /// The server stops reading: its window stays 0 until the user timeout.
    ZeroWindow,
}

const CASES: [Case; 8] = [
    Case::CleanClose,
    Case::AbortUnread,
    Case::ForgetProbe,
    Case::ForgetRetransmit,
    Case::BlackholeIdle,
    Case::BlackholeData,
    Case::IcmpRefusal,
    Case::ZeroWindow,
];

/// When the path heals in [`Case::ForgetRetransmit`], from the write: after the first two
/// retransmissions (the RTO is at least 200 ms and doubles: about 0.2 s and 0.6 s after the
/// write), before the third (1.4 s or later), and long before the user timeout.
const HEAL_AFTER: Duration = Duration::from_millis(1000);

/// What a case must give: the ending, the cause and errno of a death, and the window from the
/// fault in which `gone()` resolves.
struct Expect {
    ending: Ending,
    death: Option<(Cause, i32)>,
    earliest: Duration,
    latest: Duration,
}

impl Case {
    fn expect(self, p: KeepalivePolicy) -> Expect {
        let user_timeout = p.effective_user_timeout().expect("`auto` sets one");
        // A FIN or an RST that arrives reaches the watcher at once: the wake-up alone.
        let (ending, death, earliest, latest) = match self {
            Case::CleanClose => (Ending::Closed, None, Duration::ZERO, WAKE),
            Case::AbortUnread => (Ending::Aborted, Some(reset()), Duration::ZERO, WAKE),
            // The first probe, an idle time after the last exchange (before the fault).
            Case::ForgetProbe => {
                let first_probe = p.idle() + p.timer_slack() + WAKE;
                (Ending::Forgot, Some(reset()), Duration::ZERO, first_probe)
            }
            Case::ForgetRetransmit => (Ending::Forgot, Some(reset()), HEAL_AFTER, deadline(p)),
            Case::BlackholeIdle => (
                Ending::Vanished,
                Some((Cause::KeepaliveTimeout, libc::ETIMEDOUT)),
                p.interval() * p.probes(),
                deadline(p),
            ),
            Case::BlackholeData => (
                Ending::Vanished,
                Some((Cause::RetransmitTimeout, libc::ETIMEDOUT)),
                user_timeout,
                deadline(p),
            ),
            Case::IcmpRefusal => (
                Ending::Refused,
                Some((Cause::Refused, libc::ECONNREFUSED)),
                user_timeout,
                deadline(p),
            ),
            // From the first write: the window closes after it, and the user timeout counts
            // from the first zero-window probe, later still.
            Case::ZeroWindow => (
                Ending::Stalled,
                Some((Cause::Stalled, libc::ETIMEDOUT)),
                user_timeout,
                deadline(p),
            ),
        };
        Expect {
            ending,
            death,
            earliest,
            latest,
        }
    }
}

fn reset() -> (Cause, i32) {
    (Cause::Reset, libc::ECONNRESET)
}

/// What a case saw, for the summary and the metrics.
struct Seen {
    case: Case,
    ending: Ending,
    cause: Option<Cause>,
    after: Duration,
    latest: Duration,
    event: String,
}

/// Makes the case's fault on the connection; returns when it began, and the server stream if it
/// must stay open.
async fn fault(
    lab: &Lab,
    case: Case,
    client: &mut KeepaliveStream,
    server: TcpStream,
) -> (Instant, Option<TcpStream>) {
    // The client's ACK of the last exchange must be out before the server's host forgets the
    // connection, or that ACK meets the RST (the delayed-ACK timer is at most 200 ms).
    let delayed_ack = Duration::from_millis(200);
    let start = Instant::now();
    match case {
        Case::CleanClose => {
            lab.fin(server.into_std().unwrap()).unwrap();
            (start, None)
        }
        Case::AbortUnread => {
            client.write_all(&[7u8; 1000]).await.unwrap();
            let until = Instant::now() + Duration::from_secs(2);
            while deadpeer::tcp_info(client).unwrap().unacked > 0 {
                assert!(Instant::now() < until, "the server's kernel did not ACK");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let start = Instant::now();
            drop(server);
            (start, None)
        }
        Case::ForgetProbe => {
            tokio::time::sleep(delayed_ack).await;
            let start = Instant::now();
            lab.forget(server.into_std().unwrap()).unwrap();
            (start, None)
        }
        Case::ForgetRetransmit => {
            tokio::time::sleep(delayed_ack).await;
            lab.blackhole().unwrap();
            lab.forget(server.into_std().unwrap()).unwrap();
            let start = Instant::now();
            assert_eq!(send_nowait(&*client, 1000).unwrap(), 1000);
            tokio::time::sleep_until((start + HEAL_AFTER).into()).await;
            lab.heal().unwrap();
            (start, None)
        }
        Case::BlackholeIdle => {
            lab.blackhole().unwrap();
            (start, Some(server))
        }
        Case::BlackholeData => {
            assert_eq!(lab.send_unacked(&*client, 1000).unwrap(), 1000);
            (start, Some(server))
        }
        Case::IcmpRefusal => {
            lab.reject(Reject::PortUnreachable).unwrap();
            let start = Instant::now();
            client.write_all(&[7u8; 1000]).await.unwrap();
            (start, Some(server))
        }
        Case::ZeroWindow => {
            // The server never reads: fill both buffers until a write blocks for good.
            let chunk = vec![0x55u8; 64 * 1024];
            let block = Duration::from_millis(500);
            while let Ok(Ok(_)) = tokio::time::timeout(block, client.write(&chunk)).await {}
            (start, Some(server))
        }
    }
}

/// `future` in a task, with the instant it resolved.
fn resolved<F>(future: F) -> JoinHandle<(F::Output, Instant)>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(async move { (future.await, Instant::now()) })
}

/// The events that report how a connection ended (a death's, an abort's, a FIN's).
fn endings_reported(events: &Events) -> Vec<deadpeer_testkit::events::Event> {
    events
        .all()
        .into_iter()
        .filter(|e| e.target == "deadpeer")
        .filter(|e| e.message == "dead peer detected" || e.message == "connection ended")
        .collect()
}

/// Runs one case in `lab` and checks everything but the metrics.
async fn run(lab: &Lab, case: Case, port: u16, events: &Events) -> Seen {
    let p = policy(1, 1, 3);
    let expect = case.expect(p);
    let (mut client, server) = client_pair(lab, port, &p).await;
    let liveness = client.liveness();
    assert!(liveness.is_watched());
    assert!(!liveness.is_gone());
    let mut gone = resolved(liveness.gone());
    let mut dead = resolved(liveness.dead());
    let (start, _server) = fault(lab, case, &mut client, server).await;

    let limit = start + expect.latest + Duration::from_secs(2);
    let (ending, at) = tokio::time::timeout_at(limit.into(), &mut gone)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{case:?}: gone() pending {:?} after the fault",
                start.elapsed()
            )
        })
        .unwrap();
    let after = at.duration_since(start);
    assert_eq!(ending, Some(expect.ending), "{case:?}: gone()");
    assert_eq!(liveness.ending(), Some(expect.ending), "{case:?}");
    assert!(liveness.is_gone(), "{case:?}");
    assert!(
        after >= expect.earliest && after <= expect.latest,
        "{case:?}: gone() after {after:?}, expected within [{:?}, {:?}] of the fault",
        expect.earliest,
        expect.latest
    );

    let Some((cause, errno)) = expect.death else {
        // A FIN is no death: `dead()` stays pending over the whole bound (the server's kernel
        // answers our probes), and resolves to `None` once the stream is dropped.
        let pending = tokio::time::timeout_at((start + deadline(p)).into(), &mut dead).await;
        assert!(pending.is_err(), "{case:?}: dead() resolved: {pending:?}");
        assert!(!liveness.is_dead());
        let got = events.settled("connection ended", 1);
        assert_eq!(endings_reported(events).len(), 1, "{:#?}", events.all());
        assert_eq!(got[0].level, tracing::Level::DEBUG);
        assert_eq!(got[0].fields["deadpeer.ending"], "closed");
        assert!(!got[0].fields.contains_key("error.type"), "{got:#?}");
        drop(client);
        assert!(dead.await.unwrap().0.is_none(), "dead() after the drop");
        assert_eq!(
            liveness.gone().await,
            Some(Ending::Closed),
            "the ending stays"
        );
        let event = summary(&got[0]);
        return Seen {
            case,
            ending: expect.ending,
            cause: None,
            after,
            latest: expect.latest,
            event,
        };
    };

    let (d, _) = tokio::time::timeout(Duration::from_secs(2), &mut dead)
        .await
        .unwrap_or_else(|_| panic!("{case:?}: gone() resolved, dead() did not"))
        .unwrap();
    let d: DeadPeer = d.expect("a death, not a dropped stream");
    assert_eq!(d.ending(), expect.ending, "{d}");
    assert_eq!((d.cause(), d.raw_os_error()), (cause, Some(errno)), "{d}");
    let info = *d.tcp_info().expect("TCP_INFO at death, on Linux");
    assert_eq!(info.state, TcpInfo::CLOSE, "{info:?}");
    // What told the endings apart, as TCP_INFO showed it at death.
    match case {
        Case::AbortUnread => assert_eq!((info.probes, info.retransmits), (0, 0), "{info:?}"),
        Case::ForgetProbe => assert!(info.probes > 0, "{info:?}"),
        Case::ForgetRetransmit => assert!(info.retransmits > 0, "{info:?}"),
        Case::ZeroWindow => assert_eq!(info.snd_wnd, Some(0), "{info:?}"),
        _ => {}
    }
    assert_one_event(events, &d);
    let reported = endings_reported(events);
    assert_eq!(reported.len(), 1, "{case:?}: {reported:#?}");
    let warned = events.all().iter().any(|e| e.level == tracing::Level::WARN);
    assert_eq!(warned, expect.ending.is_death(), "{:#?}", events.all());
    Seen {
        case,
        ending: expect.ending,
        cause: Some(cause),
        after,
        latest: expect.latest,
        event: summary(&reported[0]),
    }
}

/// An event as the summary shows it: level, message, and the fields that tell endings apart.
fn summary(event: &deadpeer_testkit::events::Event) -> String {
    let fields = [
        "deadpeer.ending",
        "error.type",
        "tcp.probes",
        "tcp.retransmits",
        "tcp.snd_wnd",
    ];
    let shown: Vec<String> = fields
        .iter()
        .filter_map(|f| Some(format!("{f}={}", event.fields.get(*f)?)))
        .collect();
    format!("{} `{}` {}", event.level, event.message, shown.join(" "))
}

/// Every ending at once, each in its own lab: each is its ending for `gone()`, a death (or, at
/// a FIN, nothing) for `dead()`, within its window of the policy's bound, reported by exactly
/// one event at its level, and counted once under its `deadpeer.ending` label, as a death under
/// `error.type` too when it is one.
#[test]
fn each_ending_is_named_timed_reported_and_counted() {
    let _serial = serial();
    let mut labs = Vec::new();
    for _ in CASES {
        // `IcmpRefusal` comes from an nftables reject.
        let Some(lab) = lab_or_skip!(Lab::builder().requires(Tool::NFT)) else {
            return;
        };
        labs.push(lab);
    }
    let before = Totals::read();
    let results: Vec<std::thread::Result<Seen>> = std::thread::scope(|s| {
        let running: Vec<_> = labs
            .iter()
            .zip(CASES)
            .zip(7801..)
            .map(|((lab, case), port)| {
                std::thread::Builder::new()
                    .name(format!("{case:?}"))
                    .spawn_scoped(s, move || {
                        // Before the connection is watched: the reaper reports where it was.
                        let (events, _guard) = capture();
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .unwrap();
                        runtime.block_on(run(lab, case, port, &events))
                    })
                    .unwrap()
            })
            .collect();
        running.into_iter().map(|t| t.join()).collect()
    });
    let failed: Vec<_> = CASES
        .iter()
        .zip(&results)
        .filter(|(_, r)| r.is_err())
        .map(|(c, _)| c)
        .collect();
    assert!(
        failed.is_empty(),
        "failed (see their panics above): {failed:?}"
    );
    let seen: Vec<Seen> = results.into_iter().map(Result::unwrap).collect();

    let ended = |e: Ending| series(ENDED_CONNECTIONS, &[(ENDING, e.as_str())]);
    let dead = |c: Cause, e: Ending| {
        series(
            DEAD_CONNECTIONS,
            &[(ERROR_TYPE, c.as_str()), (ENDING, e.as_str())],
        )
    };
    let expected = |e: Ending| seen.iter().filter(|s| s.ending == e).count() as u64;
    let after = Totals::read_until(|now| {
        Ending::ALL
            .iter()
            .all(|&e| now.counter(&ended(e)) - before.counter(&ended(e)) >= expected(e))
    });
    for s in &seen {
        let label = match s.cause {
            Some(c) if s.ending.is_death() => {
                let n = seen
                    .iter()
                    .filter(|o| (o.cause, o.ending) == (s.cause, s.ending))
                    .count();
                let got = after.counter(&dead(c, s.ending)) - before.counter(&dead(c, s.ending));
                assert_eq!(got, n as u64, "{:?}: {}", s.case, dead(c, s.ending));
                format!("{} + {}", ended(s.ending), dead(c, s.ending))
            }
            _ => ended(s.ending),
        };
        eprintln!(
            "{:?}: {} after {:?} (at most {:?}); {}; {label}",
            s.case, s.ending, s.after, s.latest, s.event
        );
    }
    for e in Ending::ALL {
        let got = after.counter(&ended(e)) - before.counter(&ended(e));
        assert_eq!(got, expected(e), "{}", ended(e));
    }
    let deaths = seen.iter().filter(|s| s.ending.is_death()).count() as u64;
    assert_eq!(
        after.counter_sum(DEAD_CONNECTIONS) - before.counter_sum(DEAD_CONNECTIONS),
        deaths,
        "a clean close or an abort counted as a death, or a death twice"
    );
}
