//! A reaper that cannot start (the process is out of descriptors at the first watch) is retried
//! at the next watch, never cached. Alone in its binary: it lowers `RLIMIT_NOFILE` for the
//! process and needs the reaper not to have started before.

use std::time::Duration;

use deadpeer::{Cause, KeepalivePolicy};
use deadpeer_testkit::events::capture;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::net::{TcpListener, TcpStream};

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn reaper_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            let comm = t.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.trim() == "deadpeer-reaper")
        })
        .count()
}

/// The reaper threads once their count is `n` (a new thread names itself a moment after it was
/// spawned), or after a second.
fn reaper_threads_settled(n: usize) -> usize {
    let until = std::time::Instant::now() + Duration::from_secs(1);
    let mut got = reaper_threads();
    while got != n && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
        got = reaper_threads();
    }
    got
}

fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

#[tokio::test(flavor = "current_thread")]
async fn emfile_at_the_first_watch_is_retried_at_the_next() {
    let (events, _guard) = capture();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let first = deadpeer::connect(addr, KeepalivePolicy::FAST)
        .await
        .unwrap();
    let (first_peer, _) = listener.accept().await.unwrap();
    assert_eq!(reaper_threads(), 0, "the reaper started before the test");

    // Out of descriptors: the limit a few above what is open, and those few filled.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, open_fds() + 4, hard).unwrap();
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    let liveness = metrics::with_local_recorder(&recorder, || first.liveness());
    assert!(
        !liveness.is_watched(),
        "watched without a descriptor to spare"
    );
    let failed = events.with_message(
        "cannot watch connection; dead() resolves only when a read or write sees the death",
    );
    assert_eq!(failed.len(), 1, "{:#?}", events.all());
    assert!(
        failed[0].fields["error"].contains("os error 24"),
        "{failed:#?}"
    );
    let counted: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == deadpeer::metrics::WATCH_FAILURES)
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(
        counted[0].0.key().labels().next().map(|l| l.value()),
        Some("too_many_open_files")
    );
    assert_eq!(counted[0].3, DebugValue::Counter(1));

    // Descriptors freed: the next watch starts the reaper, for a new connection and the old.
    drop(filler);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    assert_eq!(
        reaper_threads(),
        0,
        "a reaper thread without an epoll instance"
    );
    let second = deadpeer::connect(addr, KeepalivePolicy::FAST)
        .await
        .unwrap();
    let (second_peer, _) = listener.accept().await.unwrap();
    let second_liveness = second.liveness();
    assert!(second_liveness.is_watched());
    assert_eq!(reaper_threads_settled(1), 1);
    let again = first.liveness();
    assert!(
        again.is_watched() && liveness.is_watched(),
        "the retry covers the first too"
    );

    for (peer, l) in [(second_peer, &second_liveness), (first_peer, &liveness)] {
        reset(peer);
        let dead = tokio::time::timeout(Duration::from_secs(2), l.dead())
            .await
            .expect("dead() still pending 2 s after the reset")
            .expect("a death");
        assert_eq!(dead.cause(), Cause::Reset, "{dead}");
    }
    assert_eq!(reaper_threads_settled(1), 1);
}
