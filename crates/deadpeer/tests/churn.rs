//! Churn: 100,000 watched connections, each with a watcher task, leave nothing behind. Alone in
//! its binary, because it counts the process's descriptors, tasks and resident memory.

use std::time::Duration;

use deadpeer::{KeepaliveListener, KeepalivePolicy};

mod common;
use common::{loopback_pair as pair, nofile_or_skip, open_fds};
use tokio::io::AsyncReadExt;

/// Resident memory, from /proc/self/statm (pages).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The runtime's live tasks, once every task that has finished has been released: on the
/// multi-thread runtime a finished, joined task can stay counted until its worker drops its last
/// reference a moment later. Waits for the count to stop falling (at most 1 s), then returns it.
async fn settled_tasks(handle: &tokio::runtime::Handle) -> usize {
    let mut last = handle.metrics().num_alive_tasks();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = handle.metrics().num_alive_tasks();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// 100,000 connections, each with a spawned watcher task, in batches; the server closes first
/// in even batches, the client in odd ones (the server then reads EOF and drops its stream).
/// Tasks, descriptors and resident memory return to their baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_100k_watched_connections_returns_to_baseline() {
    const TOTAL: usize = 100_000;
    const BATCH: usize = 2_000;
    if !nofile_or_skip(
        "churn_of_100k_watched_connections_returns_to_baseline",
        2 * BATCH as u64 + 256,
    ) {
        return;
    }
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap();
    let handle = tokio::runtime::Handle::current();

    let run_batch = |server_closes: bool| {
        let listener = &listener;
        async move {
            let mut watchers = Vec::with_capacity(BATCH);
            let mut pairs = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                let (client, server) = pair(listener).await;
                let liveness = server.liveness();
                watchers.push(tokio::spawn(async move { liveness.dead().await }));
                pairs.push((client, server));
            }
            let mut readers = Vec::new();
            for (client, mut server) in pairs {
                if server_closes {
                    drop(server);
                    drop(client);
                } else {
                    drop(client);
                    readers.push(tokio::spawn(async move {
                        let mut buf = [0u8; 8];
                        let n = server.read(&mut buf).await.unwrap();
                        assert_eq!(n, 0, "EOF from the client's FIN");
                    }));
                }
            }
            for reader in readers {
                reader.await.unwrap();
            }
            for watcher in watchers {
                let outcome = tokio::time::timeout(Duration::from_secs(10), watcher)
                    .await
                    .expect("a watcher did not end")
                    .unwrap();
                assert!(outcome.is_none(), "{outcome:?}");
            }
        }
    };

    // One warm-up batch of each kind: the allocator and the runtime reach their working size.
    run_batch(true).await;
    run_batch(false).await;
    let (fds, tasks, rss) = (open_fds(), settled_tasks(&handle).await, rss_bytes());
    for i in 0..TOTAL / BATCH {
        run_batch(i % 2 == 0).await;
    }
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert_eq!(settled_tasks(&handle).await, tasks, "tasks leaked");
    // A leak of one watcher's state per connection would be ≥ 100 bytes × 100,000 = 10 MB.
    let grown = rss_bytes().saturating_sub(rss);
    eprintln!("after {TOTAL} connections: fds {fds}, tasks {tasks}, rss grew {grown} bytes");
    assert!(
        grown < 4 << 20,
        "resident memory grew by {grown} bytes over {TOTAL} connections"
    );
}
