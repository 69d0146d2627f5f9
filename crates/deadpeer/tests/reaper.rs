//! Faults around the reaper thread: a subscriber that panics on it, and one that is slow under a
//! burst of deaths. Loopback resets (`SO_LINGER` 0); nothing reads the watched connections, so
//! the reaper is the first to see each death.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpeer::liveness::State;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing_subscriber::layer::SubscriberExt;

/// Records the events of endings other than `closed` (a loopback reset with nothing outstanding
/// is `aborted`: DEBUG `connection ended`); panics at the first event on the reaper thread when
/// `panic_once` is set; sleeps `delay` per event.
#[derive(Clone, Default)]
struct Faulty {
    deaths: Arc<Mutex<Vec<String>>>,
    panic_once: Arc<AtomicBool>,
    panicked: Arc<AtomicUsize>,
    delay: Duration,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Faulty {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        std::thread::sleep(self.delay);
        let on_reaper = std::thread::current().name() == Some("deadpeer-reaper");
        if on_reaper && self.panic_once.swap(false, Ordering::SeqCst) {
            self.panicked.fetch_add(1, Ordering::SeqCst);
            panic!("test layer panics on the reaper thread");
        }
        let mut ending = Ending(None);
        event.record(&mut ending);
        if ending.0.is_some_and(|e| e != "closed") {
            self.deaths
                .lock()
                .unwrap()
                .push(event.metadata().name().to_owned());
        }
    }
}

/// The `deadpeer.ending` field of an event.
struct Ending(Option<String>);

impl tracing::field::Visit for Ending {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "deadpeer.ending" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

async fn pair(listener: &TcpListener) -> (KeepaliveStream, TcpStream) {
    let client = deadpeer::connect(listener.local_addr().unwrap(), KeepalivePolicy::FAST)
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

async fn dead_within(l: &deadpeer::Liveness, limit: Duration) -> DeadPeer {
    tokio::time::timeout(limit, l.dead())
        .await
        .expect("dead() hung")
        .expect("a death")
}

/// Every observer gives the one latched death.
async fn latched_everywhere(stream: &mut KeepaliveStream, dead: &DeadPeer) {
    let l = stream.liveness();
    match l.state() {
        State::Dead(d) => assert_eq!(d.cause(), dead.cause()),
        other => panic!("state {other:?}"),
    }
    let mut b = [0u8; 8];
    let err = stream.read(&mut b).await.unwrap_err();
    assert_eq!(
        DeadPeer::from_io(&err).map(DeadPeer::cause),
        Some(dead.cause()),
        "{err:?}"
    );
    let err = stream.write(b"x").await.unwrap_err();
    assert_eq!(
        DeadPeer::from_io(&err).map(DeadPeer::cause),
        Some(dead.cause()),
        "{err:?}"
    );
    assert_eq!(l.dead().await.map(|d| d.cause()), Some(dead.cause()));
}

#[tokio::test(flavor = "current_thread")]
async fn a_layer_that_panics_on_the_reaper_thread_stops_no_verdict() {
    let layer = Faulty {
        panic_once: Arc::new(AtomicBool::new(true)),
        ..Faulty::default()
    };
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(layer.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();

    let (mut first, first_peer) = pair(&listener).await;
    let (mut second, second_peer) = pair(&listener).await;
    let (l1, l2) = (first.liveness(), second.liveness());
    reset(first_peer);
    let dead = dead_within(&l1, Duration::from_secs(2)).await;
    assert_eq!(dead.cause(), Cause::Reset, "{dead}");
    assert_eq!(dead.raw_os_error(), Some(libc::ECONNRESET));
    // The report that panicked is the one lost; wait for the panic to have happened.
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while layer.panicked.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        layer.panicked.load(Ordering::SeqCst),
        1,
        "the layer did not panic"
    );
    latched_everywhere(&mut first, &dead).await;

    // The reaper lives on: a later death is still seen, and reported.
    reset(second_peer);
    let dead = dead_within(&l2, Duration::from_secs(2)).await;
    assert_eq!(dead.cause(), Cause::Reset, "{dead}");
    latched_everywhere(&mut second, &dead).await;
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while layer.deaths.lock().unwrap().is_empty() && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        layer.deaths.lock().unwrap().len(),
        1,
        "the second death's event"
    );
}

/// A burst of deaths under a subscriber that takes 5 ms per line: every `dead()` resolves, every
/// observer agrees, and each death gives exactly one event (after the verdicts).
#[tokio::test(flavor = "current_thread")]
async fn a_slow_subscriber_under_a_burst_gives_one_event_per_death_and_no_hang() {
    const N: usize = 100;
    let layer = Faulty {
        delay: Duration::from_millis(5),
        ..Faulty::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut streams = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..N {
        let (s, p) = pair(&listener).await;
        streams.push(s);
        peers.push(p);
    }
    let livenesses: Vec<_> = {
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(layer.clone()));
        streams.iter().map(KeepaliveStream::liveness).collect()
    };
    let start = std::time::Instant::now();
    peers.into_iter().for_each(reset);
    for l in &livenesses {
        let dead = dead_within(l, Duration::from_secs(10)).await;
        assert_eq!(dead.cause(), Cause::Reset, "{dead}");
    }
    let verdicts = start.elapsed();
    for s in &mut streams {
        let dead = s.dead_peer().cloned().expect("latched");
        latched_everywhere(s, &dead).await;
    }
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while layer.deaths.lock().unwrap().len() < N && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(layer.deaths.lock().unwrap().len(), N, "one event per death");
    eprintln!(
        "{N} verdicts in {verdicts:?}; events done after {:?}",
        start.elapsed()
    );
}
