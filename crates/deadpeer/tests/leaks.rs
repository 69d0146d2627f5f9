//! Leaks: once the application drops its streams, no descriptor or task is kept alive by a
//! `Liveness` or a pending `dead()`. Alone in its binary, because it counts the process's
//! descriptors.

use std::time::Duration;

use deadpeer::{KeepaliveListener, KeepalivePolicy, State};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_streams_releases_every_descriptor_and_task() {
    const CONNS: usize = 1000;
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::runtime::Handle::current();
    // Warm up whatever the runtime creates lazily (resolver thread, timer) before the baseline.
    {
        let client = deadpeer::connect(addr, &KeepalivePolicy::FAST)
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let liveness = server.liveness();
        let _ = tokio::time::timeout(Duration::from_millis(1), liveness.dead()).await;
        drop((client, server));
        let _ = tokio::time::timeout(Duration::from_millis(1), liveness.settled()).await;
    }
    let (fds_before, tasks_before) = (open_fds(), handle.metrics().num_alive_tasks());

    let mut clients = Vec::new();
    let mut servers = Vec::new();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        clients.push(
            deadpeer::connect(addr, &KeepalivePolicy::FAST)
                .await
                .unwrap(),
        );
        let (server, _) = listener.accept().await.unwrap();
        let liveness = server.liveness();
        handles.push(liveness.clone());
        // A handler-side watcher: a pending dead() raced against settled().
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                dead = liveness.dead() => panic!("unexpected death: {dead}"),
                state = liveness.settled() => state,
            }
        }));
        servers.push(server);
    }
    // Let every watcher register its duplicate descriptor.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let fds_open = open_fds();
    assert!(
        fds_open >= fds_before + 3 * CONNS,
        "client, server and watcher per connection: {fds_open}"
    );
    assert_eq!(handle.metrics().num_alive_tasks(), tasks_before + CONNS);

    drop(servers);
    drop(clients);
    for task in tasks {
        let state = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(state, State::Closed), "{state:?}");
    }
    // The Liveness handles are still alive, but hold no descriptor.
    assert_eq!(open_fds(), fds_before, "descriptors leaked");
    assert_eq!(
        handle.metrics().num_alive_tasks(),
        tasks_before,
        "tasks leaked"
    );
    assert!(handles.iter().all(|h| matches!(h.state(), State::Closed)));
}
