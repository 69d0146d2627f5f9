//! Leaks: a watched connection costs exactly its own descriptor, and once the application drops
//! its streams no descriptor or task is kept by a `Liveness` or a pending `dead()`. Alone in its
//! binary, because it counts the process's descriptors and tasks.

use std::time::Duration;

use deadpeer::liveness::State;
use deadpeer::{KeepaliveListener, KeepalivePolicy};

mod common;
use common::{loopback_pair as pair, nofile_or_skip, open_fds};

#[tokio::test(flavor = "current_thread")]
async fn a_watched_connection_costs_one_descriptor_and_releases_everything() {
    const CONNS: usize = 1000;
    if !nofile_or_skip(
        "a_watched_connection_costs_one_descriptor_and_releases_everything",
        2 * CONNS as u64 + 64,
    ) {
        return;
    }
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST)
        .await
        .unwrap();
    let handle = tokio::runtime::Handle::current();
    // Warm up whatever is created lazily (the reaper's epoll instance and thread) first.
    {
        let (client, server) = pair(&listener).await;
        let liveness = server.liveness();
        drop((client, server));
        assert!(liveness.dead().await.is_none());
    }
    let (fds_before, tasks_before) = (open_fds(), handle.metrics().num_alive_tasks());

    let mut clients = Vec::new();
    let mut servers = Vec::new();
    let mut handles = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..CONNS {
        let (client, server) = pair(&listener).await;
        let liveness = server.liveness();
        handles.push(liveness.clone());
        // A handler-side watcher, as a user writes it first: a task awaiting dead().
        tasks.push(tokio::spawn(async move { liveness.dead().await }));
        clients.push(client);
        servers.push(server);
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        open_fds(),
        fds_before + 2 * CONNS,
        "a client and a server descriptor per connection, nothing for watching"
    );
    assert_eq!(handle.metrics().num_alive_tasks(), tasks_before + CONNS);

    drop(servers);
    drop(clients);
    for task in tasks {
        let outcome = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(outcome.is_none(), "{outcome:?}");
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
