//! A metrics recorder and a waker that panic on the reaper thread: the verdict was latched
//! before either ran, the other waiters are still woken, and later deaths are still detected and
//! counted. Its own binary: it installs the process's global recorder (the reaper thread records
//! through the global one).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use deadpeer::liveness::State;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, KeepaliveStream};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Counts `deadpeer.ended_connections` (a loopback reset with nothing outstanding is the ending
/// `aborted`, counted there and not as a death); panics at the first ending counted on the
/// reaper thread.
struct PanicOnce {
    armed: AtomicBool,
    panicked: AtomicBool,
    deaths: Arc<AtomicU64>,
}

struct Count(Arc<AtomicU64>);
impl metrics::CounterFn for Count {
    fn increment(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }
    fn absolute(&self, _: u64) {}
}

impl Recorder for PanicOnce {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != deadpeer::metrics::ENDED_CONNECTIONS {
            return Counter::noop();
        }
        let on_reaper = std::thread::current().name() == Some("deadpeer-reaper");
        if on_reaper && self.armed.swap(false, Ordering::SeqCst) {
            self.panicked.store(true, Ordering::SeqCst);
            panic!("test recorder panics on the reaper thread");
        }
        Counter::from_arc(Arc::new(Count(Arc::clone(&self.deaths))))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn recorder() -> &'static PanicOnce {
    static RECORDER: std::sync::OnceLock<&'static PanicOnce> = std::sync::OnceLock::new();
    RECORDER.get_or_init(|| {
        let r: &'static PanicOnce = Box::leak(Box::new(PanicOnce {
            armed: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            deaths: Arc::default(),
        }));
        metrics::set_global_recorder(r).expect("the only recorder of this binary");
        r
    })
}

/// The tests of this binary take turns: they share the recorder.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

async fn dead_within(l: &deadpeer::Liveness) -> DeadPeer {
    tokio::time::timeout(Duration::from_secs(2), l.dead())
        .await
        .expect("dead() hung")
        .expect("a death")
}

async fn settled(count: &AtomicU64, n: u64) -> u64 {
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while count.load(Ordering::SeqCst) < n && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    count.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "current_thread")]
async fn a_recorder_that_panics_on_the_reaper_thread_stops_no_verdict() {
    let _serial = SERIAL.lock().await;
    let r = recorder();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (mut first, first_peer) = pair(&listener).await;
    let (second, second_peer) = pair(&listener).await;
    let (l1, l2) = (first.liveness(), second.liveness());
    let before = r.deaths.load(Ordering::SeqCst);

    r.armed.store(true, Ordering::SeqCst);
    reset(first_peer);
    let dead = dead_within(&l1).await;
    assert_eq!(dead.cause(), Cause::Reset, "{dead}");
    let until = std::time::Instant::now() + Duration::from_secs(2);
    while !r.panicked.load(Ordering::SeqCst) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        r.panicked.load(Ordering::SeqCst),
        "the recorder did not panic"
    );
    assert!(matches!(l1.state(), State::Dead(d) if d.cause() == Cause::Reset));
    let err = first.read(&mut [0u8; 4]).await.unwrap_err();
    assert_eq!(
        DeadPeer::from_io(&err).map(DeadPeer::cause),
        Some(Cause::Reset)
    );

    reset(second_peer);
    assert_eq!(dead_within(&l2).await.cause(), Cause::Reset);
    // The panicking call lost its own count only.
    assert_eq!(settled(&r.deaths, before + 1).await, before + 1);
}

/// Wakes by panicking.
struct PanickingWaker;
impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("test waker panics");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_waker_that_panics_stops_no_other_waiter_and_no_later_death() {
    let _serial = SERIAL.lock().await;
    let r = recorder();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (first, first_peer) = pair(&listener).await;
    let (second, second_peer) = pair(&listener).await;
    let (l1, l2) = (first.liveness(), second.liveness());
    let before = r.deaths.load(Ordering::SeqCst);

    // A waiter whose waker panics, registered before a waiter of the runtime's.
    let mut bad = Box::pin(l1.dead());
    let waker = Waker::from(Arc::new(PanickingWaker));
    assert!(
        bad.as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    let good = tokio::spawn({
        let l1 = l1.clone();
        async move { l1.dead().await }
    });
    tokio::task::yield_now().await;

    reset(first_peer);
    let dead = tokio::time::timeout(Duration::from_secs(2), good)
        .await
        .expect("the second waiter was not woken")
        .unwrap()
        .expect("a death");
    assert_eq!(dead.cause(), Cause::Reset);
    match bad.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Some(d)) => assert_eq!(d.cause(), Cause::Reset),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        settled(&r.deaths, before + 1).await,
        before + 1,
        "counted once"
    );

    reset(second_peer);
    assert_eq!(dead_within(&l2).await.cause(), Cause::Reset);
    assert_eq!(settled(&r.deaths, before + 2).await, before + 2);
    drop((first, second));
}
