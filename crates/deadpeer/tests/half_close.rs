//! The confusion matrix, half-closed connections: a peer that sends its FIN and then resets or
//! forgets the connection. The FIN alone is an EOF and the ending `closed` (`gone()` resolves,
//! `dead()` does not); the reset that follows kills the connection (the kernel reports
//! `EPIPE`), which must surface as `Reset`, never as EOF or a bare `EPIPE`. Nothing of ours was
//! outstanding when the RST came, so its ending is `aborted`: no alarm.

mod common;

use std::time::Duration;

use common::*;
use deadpeer::{Cause, DeadPeer, Ending};
use deadpeer_testkit::lab_or_skip;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "current_thread")]
async fn fin_then_reset_is_reset_for_a_watcher() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, mut server) = client_pair(&lab, 7501, &p).await;
    let liveness = client.liveness();
    let gone = liveness.gone();
    server.shutdown().await.unwrap();
    // Nothing reads yet: the watcher alone sees the FIN.
    let ending = tokio::time::timeout(Duration::from_secs(2), gone).await;
    assert_eq!(ending.expect("gone() at the FIN"), Some(Ending::Closed));
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "the FIN is an EOF");
    assert!(!liveness.is_dead());
    assert_eq!(liveness.ending(), Some(Ending::Closed));

    lab.reset(server.into_std().unwrap()).unwrap();
    // Nothing reads or writes: the watcher alone learns it, at once.
    let dead = wait_dead(&liveness, Duration::from_secs(2)).await;
    assert_cause(&dead, Cause::Reset, libc::EPIPE);
    assert_eq!(dead.ending(), Ending::Aborted);
    assert_eq!(
        liveness.ending(),
        Some(Ending::Closed),
        "the first ending stays"
    );
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
    let closed = events_settled(&events, "connection ended", 2);
    assert_eq!(
        closed.len(),
        2,
        "one for the FIN, one for the RST: {closed:#?}"
    );
    assert_eq!(closed[0].fields["deadpeer.ending"], "closed");
}

#[tokio::test(flavor = "current_thread")]
async fn fin_then_forget_is_reset_for_the_stream_alone() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, mut server) = client_pair(&lab, 7502, &p).await;
    server.shutdown().await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0, "the FIN is an EOF");

    // The peer's host forgets the connection; our data meets an RST. No Liveness: the writes
    // alone must see the death.
    lab.forget(server.into_std().unwrap()).unwrap();
    client.write_all(b"hello").await.unwrap();
    let err = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match client.write(b"again").await {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let dead = DeadPeer::from_io(&err)
        .unwrap_or_else(|| panic!("a bare {err:?} instead of a DeadPeer"))
        .clone();
    assert_cause(&dead, Cause::Reset, libc::EPIPE);
    // The first transmission of our data met the RST: nothing tells it from an abort.
    assert_eq!(dead.ending(), Ending::Aborted);
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    // The read side, which saw the FIN's EOF, now reports the death too.
    let liveness = client.liveness();
    assert_latched_everywhere(&mut client, &liveness, &dead).await;
    assert_one_event(&events, &dead);
}

/// Our own shutdown is not a death: after it, `EPIPE` on a write is the application's mistake
/// and passes through as it is.
#[tokio::test(flavor = "current_thread")]
async fn epipe_after_our_own_shutdown_is_not_a_death() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let (events, _guard) = capture();
    let p = policy(1, 1, 3);
    let (mut client, server) = client_pair(&lab, 7503, &p).await;
    let liveness = client.liveness();
    client.shutdown().await.unwrap();
    lab.fin(server.into_std().unwrap()).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = client.write(b"late").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
    assert!(DeadPeer::from_io(&err).is_none(), "{err:?}");
    assert!(!liveness.is_dead());
    assert!(events.with_message("dead peer detected").is_empty());
}
