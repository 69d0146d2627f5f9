//! Pools never hand out a dead connection: deadpool and bb8 pools of tokio-postgres connections
//! opened through `deadpeer::connect`, against a real PostgreSQL server started in the lab's
//! server namespace (`pg::Cluster`). The database host vanishes (a blackhole on the lab's router)
//! while connections idle in the pool, or while a query is in flight; without deadpeer, the
//! checkout hands out the dead connection and its query hangs.
//!
//! Every test enters the client namespace for its whole body (a current-thread runtime: the
//! pools' connects and their spawned connection tasks all run on this thread), so every socket
//! a pool opens is the client's.

mod pg;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bb8_postgres::bb8;
use deadpeer::liveness::State;
use deadpeer::{Cause, DeadPeer, KeepalivePolicy, Liveness};
use deadpeer_testkit::{deadline, dies_within_bound, lab_or_skip};
use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// 1 s idle, 1 s interval, 3 probes: bound 4 s, deadline 4.46 s.
fn policy() -> KeepalivePolicy {
    "idle=1s,interval=1s,probes=3".parse().unwrap()
}

/// A pooled connection: the client, and the `Liveness` of the socket under it.
struct PgConn {
    client: Client,
    liveness: Liveness,
}

impl PgConn {
    /// The pools' check, two atomic loads: the server is gone (its FIN, or the kernel's
    /// verdict, set by deadpeer's reaper thread with nothing reading), or the connection task
    /// has ended (tokio-postgres gave up on the connection for its own reasons).
    fn is_broken(&self) -> bool {
        self.liveness.is_gone() || self.client.is_closed()
    }
}

/// Opens connections through `deadpeer::connect` and `Config::connect_raw`; counts them, and
/// hands on the error each connection task ended with.
struct Connector {
    config: tokio_postgres::Config,
    addr: SocketAddr,
    policy: KeepalivePolicy,
    opened: AtomicUsize,
    ended: mpsc::UnboundedSender<tokio_postgres::Error>,
}

impl Connector {
    fn new(
        cluster: &pg::Cluster,
        policy: KeepalivePolicy,
    ) -> (Self, mpsc::UnboundedReceiver<tokio_postgres::Error>) {
        let (ended, rx) = mpsc::unbounded_channel();
        let connector = Connector {
            config: cluster.config(),
            addr: cluster.addr(),
            policy,
            opened: AtomicUsize::new(0),
            ended,
        };
        (connector, rx)
    }

    async fn connect(&self) -> Result<PgConn, BoxError> {
        let stream = deadpeer::connect(self.addr, self.policy).await?;
        stream.get_ref().set_nodelay(true)?; // as tokio-postgres's own connect does
        let liveness = stream.liveness();
        let (client, connection) = self.config.connect_raw(stream, NoTls).await?;
        let ended = self.ended.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                let _ = ended.send(err);
            }
        });
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(PgConn { client, liveness })
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

struct DeadpoolManager(Connector);

type Deadpool = deadpool::managed::Pool<DeadpoolManager>;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = PgConn;
    type Error = BoxError;

    async fn create(&self) -> Result<PgConn, BoxError> {
        self.0.connect().await
    }

    async fn recycle(&self, conn: &mut PgConn, _: &Metrics) -> RecycleResult<BoxError> {
        if conn.is_broken() {
            return Err(RecycleError::message("connection dead or closed"));
        }
        Ok(())
    }
}

struct Bb8Manager(Connector);

impl bb8::ManageConnection for Bb8Manager {
    type Connection = PgConn;
    type Error = BoxError;

    async fn connect(&self) -> Result<PgConn, BoxError> {
        self.0.connect().await
    }

    /// bb8 calls this at checkout (`test_on_check_out`, on by default): the same O(1) check,
    /// no round trip.
    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), BoxError> {
        if conn.is_broken() {
            return Err("connection dead or closed".into());
        }
        Ok(())
    }

    /// bb8 calls this when a connection is returned.
    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.is_broken()
    }
}

/// `SELECT 1` works on `client`, within a second.
async fn assert_works(client: &Client) {
    let rows = tokio::time::timeout(Duration::from_secs(1), client.simple_query("SELECT 1"))
        .await
        .expect("SELECT 1 answered within 1 s")
        .expect("SELECT 1 succeeds");
    let value = rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("1"));
}

/// Awaits the deaths of `watched` (connections idle in a pool), each within the deadline from
/// `start`, each a keepalive timeout; returns when the last was seen.
async fn all_die(watched: &[Liveness], start: Instant) -> Duration {
    for liveness in watched {
        let dead = dies_within_bound(policy(), start, liveness.dead())
            .await
            .expect("a death, not a close");
        assert_eq!(dead.cause(), Cause::KeepaliveTimeout, "{dead}");
    }
    start.elapsed()
}

/// The next error a connection task ended with, with the typed `DeadPeer` in its chain.
async fn task_death(ended: &mut mpsc::UnboundedReceiver<tokio_postgres::Error>) -> DeadPeer {
    let err = tokio::time::timeout(Duration::from_secs(1), ended.recv())
        .await
        .expect("the connection task ended within 1 s of the death")
        .expect("an error");
    DeadPeer::find(&err)
        .unwrap_or_else(|| panic!("no DeadPeer in the connection's error {err:?}"))
        .clone()
}

#[tokio::test(flavor = "current_thread")]
async fn deadpool_checkout_after_the_host_vanished_is_a_fresh_connection() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let test = "deadpool_checkout_after_the_host_vanished_is_a_fresh_connection";
    let Some(cluster) = pg::Cluster::start_or_skip(&lab, test) else {
        return;
    };
    let _inside = lab.client().enter().unwrap();
    let (connector, mut ended) = Connector::new(&cluster, policy());
    let pool = Deadpool::builder(DeadpoolManager(connector))
        .max_size(2)
        .build()
        .unwrap();

    // Two connections, used, then idle in the pool.
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    assert_works(&a.client).await;
    assert_works(&b.client).await;
    let watched = [a.liveness.clone(), b.liveness.clone()];
    let old: Vec<_> = watched.iter().map(Liveness::local_addr).collect();
    drop((a, b));
    assert_eq!(pool.status().available, 2);

    let start = Instant::now();
    lab.blackhole().unwrap();
    let dead_after = all_die(&watched, start).await;
    for _ in &watched {
        assert_eq!(
            task_death(&mut ended).await.cause(),
            Cause::KeepaliveTimeout
        );
    }
    // Which check sees it: both, once the connection tasks have run.
    let mut seen = Vec::new();
    let _ = pool.retain(|conn, _| {
        seen.push((conn.liveness.is_gone(), conn.client.is_closed()));
        true
    });
    assert_eq!(seen, [(true, true), (true, true)]);

    lab.heal().unwrap();
    let healed = Instant::now();
    let conn = tokio::time::timeout(Duration::from_secs(5), pool.get())
        .await
        .expect("a checkout within 5 s")
        .expect("a fresh connection");
    assert_works(&conn.client).await;
    let fresh_after = healed.elapsed();
    assert!(matches!(conn.liveness.state(), State::Alive));
    assert!(
        !old.contains(&conn.liveness.local_addr()),
        "the checkout handed out an old connection"
    );
    assert_eq!(pool.manager().0.opened(), 3, "two at first, one fresh");
    eprintln!(
        "deadpool: idle connections dead after {dead_after:?} (deadline {:?}); fresh \
         connection and SELECT 1 in {fresh_after:?} after heal",
        deadline(policy())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn bb8_checkout_after_the_host_vanished_is_a_fresh_connection() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let test = "bb8_checkout_after_the_host_vanished_is_a_fresh_connection";
    let Some(cluster) = pg::Cluster::start_or_skip(&lab, test) else {
        return;
    };
    let _inside = lab.client().enter().unwrap();
    let (connector, mut ended) = Connector::new(&cluster, policy());
    let pool = bb8::Pool::builder()
        .max_size(2)
        .build(Bb8Manager(connector))
        .await
        .unwrap();

    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    assert_works(&a.client).await;
    assert_works(&b.client).await;
    let watched = [a.liveness.clone(), b.liveness.clone()];
    let old: Vec<_> = watched.iter().map(Liveness::local_addr).collect();
    drop((a, b));
    assert_eq!(pool.state().idle_connections, 2);

    let start = Instant::now();
    lab.blackhole().unwrap();
    let dead_after = all_die(&watched, start).await;
    for _ in &watched {
        assert_eq!(
            task_death(&mut ended).await.cause(),
            Cause::KeepaliveTimeout
        );
    }

    lab.heal().unwrap();
    let healed = Instant::now();
    let conn = tokio::time::timeout(Duration::from_secs(5), pool.get())
        .await
        .expect("a checkout within 5 s")
        .expect("a fresh connection");
    assert_works(&conn.client).await;
    let fresh_after = healed.elapsed();
    assert!(matches!(conn.liveness.state(), State::Alive));
    assert!(
        !old.contains(&conn.liveness.local_addr()),
        "the checkout handed out an old connection"
    );
    assert_eq!(
        pool.state().statistics.connections_closed_invalid,
        2,
        "is_valid turned both dead connections away"
    );
    drop(conn);
    let opened = pool.dedicated_connection().await.is_ok();
    assert!(opened, "the restored server takes new connections");
    eprintln!(
        "bb8: idle connections dead after {dead_after:?} (deadline {:?}); fresh connection \
         and SELECT 1 in {fresh_after:?} after heal",
        deadline(policy())
    );
}

/// A query in flight when the host vanishes fails within the bound. tokio-postgres gives the
/// query only `Error::closed()` ("connection closed", no source); the typed `DeadPeer` is in
/// the chain of the error the connection task ended with, and in the connection's `Liveness`.
#[tokio::test(flavor = "current_thread")]
async fn a_query_in_flight_when_the_host_vanishes_fails_within_the_bound() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let test = "a_query_in_flight_when_the_host_vanishes_fails_within_the_bound";
    let Some(cluster) = pg::Cluster::start_or_skip(&lab, test) else {
        return;
    };
    let _inside = lab.client().enter().unwrap();
    let (connector, mut ended) = Connector::new(&cluster, policy());
    let pool = Deadpool::builder(DeadpoolManager(connector))
        .max_size(1)
        .build()
        .unwrap();

    // The server has the query (acknowledged) and sleeps on it: the socket is idle, and the
    // keepalive probes find the vanished host.
    let conn = pool.get().await.unwrap();
    let err = {
        let query = conn.client.simple_query("SELECT pg_sleep(60)");
        tokio::pin!(query);
        tokio::select! {
            r = &mut query => panic!("pg_sleep(60) returned early: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let start = Instant::now();
        lab.blackhole().unwrap();
        let err = dies_within_bound(policy(), start, query)
            .await
            .expect_err("the query fails");
        eprintln!(
            "query in flight (acknowledged): failed after {:?}",
            start.elapsed()
        );
        err
    };
    assert_query_error_and_death(&err, &conn, &mut ended, Cause::KeepaliveTimeout).await;
    drop(conn);

    // The query leaves after the host vanished: its bytes are never acknowledged, and the
    // policy's user timeout ends the connection within the same bound.
    lab.heal().unwrap();
    let conn = pool.get().await.unwrap();
    assert_eq!(
        pool.manager().0.opened(),
        2,
        "the dead connection was not reused"
    );
    assert_works(&conn.client).await;
    let start = Instant::now();
    lab.blackhole().unwrap();
    let err = dies_within_bound(policy(), start, conn.client.simple_query("SELECT 1"))
        .await
        .expect_err("the query fails");
    eprintln!(
        "query sent after the host vanished: failed after {:?}",
        start.elapsed()
    );
    assert_query_error_and_death(&err, &conn, &mut ended, Cause::RetransmitTimeout).await;
}

async fn assert_query_error_and_death(
    err: &tokio_postgres::Error,
    conn: &PgConn,
    ended: &mut mpsc::UnboundedReceiver<tokio_postgres::Error>,
    cause: Cause,
) {
    assert!(err.is_closed(), "{err:?}");
    assert!(
        DeadPeer::find(err).is_none() && DeadPeer::recover(err).is_none(),
        "tokio-postgres now keeps the connection's error for the query: {err:?}"
    );
    let State::Dead(dead) = conn.liveness.state() else {
        panic!("liveness {:?}", conn.liveness.state());
    };
    assert_eq!(dead.cause(), cause, "{dead}");
    let from_task = task_death(ended).await;
    assert_eq!(
        from_task.connected_for(),
        dead.connected_for(),
        "one latched death"
    );
    assert!(conn.is_broken());
}

/// Without deadpeer (tokio-postgres's own connect, deadpool-postgres's own manager with its
/// O(1) `RecyclingMethod::Fast`), the pool hands out the dead connection after the bound, and
/// its query is still hanging three deadlines later: only `tcp_retries2` (about 924.6 s, see
/// docs/kernel.md) would end it.
#[tokio::test(flavor = "current_thread")]
async fn without_deadpeer_the_checkout_hands_out_the_dead_connection_and_its_query_hangs() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let test = "without_deadpeer_the_checkout_hands_out_the_dead_connection_and_its_query_hangs";
    let Some(cluster) = pg::Cluster::start_or_skip(&lab, test) else {
        return;
    };
    let _inside = lab.client().enter().unwrap();
    // tokio-postgres's defaults: keepalive on, idle 2 h, the kernel's interval and count.
    let manager = deadpool_postgres::Manager::from_config(
        cluster.config(),
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .unwrap();
    let client = pool.get().await.unwrap();
    assert_works(&client).await;
    drop(client);

    let start = Instant::now();
    lab.blackhole().unwrap();
    tokio::time::sleep(deadline(policy())).await;
    let client = tokio::time::timeout(Duration::from_secs(1), pool.get())
        .await
        .expect("the checkout returns at once")
        .expect("a connection");
    assert_eq!(
        deadpool_postgres::Object::metrics(&client).recycle_count,
        1,
        "the old connection, recycled"
    );
    assert!(!client.is_closed());
    let hang = 3 * deadline(policy());
    let query = tokio::time::timeout(hang, client.simple_query("SELECT 1")).await;
    assert!(query.is_err(), "the query ended: {query:?}");
    eprintln!(
        "without deadpeer: the dead connection was handed out {:?} after the host vanished; \
         its query still hangs after {hang:?}",
        deadline(policy())
    );
    assert!(start.elapsed() >= deadline(policy()) + hang);
}

/// The server closing a pooled connection (`pg_terminate_backend`: a FATAL error message, then
/// a FIN, not a death) is caught by `client.is_closed()`: tokio-postgres ends its connection
/// task at the error message and drops the stream, which races the FIN (measured: about one run
/// in six, the reaper saw the FIN first and the ending is `closed`; else the stream was dropped
/// first and there is no ending). `is_dead()` stays false either way. The checkout then opens a
/// fresh connection.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_the_server_closed_is_caught_by_is_closed() {
    let Some(lab) = lab_or_skip!() else {
        return;
    };
    let test = "a_connection_the_server_closed_is_caught_by_is_closed";
    let Some(cluster) = pg::Cluster::start_or_skip(&lab, test) else {
        return;
    };
    let _inside = lab.client().enter().unwrap();
    let (connector, mut ended) = Connector::new(&cluster, policy());
    let pool = Deadpool::builder(DeadpoolManager(connector))
        .max_size(1)
        .build()
        .unwrap();

    let victim = pool.get().await.unwrap();
    let rows = victim
        .client
        .simple_query("SELECT pg_backend_pid()")
        .await
        .unwrap();
    let pid = rows
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a pid");
    let watched = victim.liveness.clone();
    drop(victim);

    let other = pool.manager().0.connect().await.unwrap();
    other
        .client
        .simple_query(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(2), ended.recv())
        .await
        .expect("the victim's connection task ended")
        .expect("with an error");
    assert!(DeadPeer::find(&err).is_none(), "not a death: {err:?}");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::ADMIN_SHUTDOWN),
        "{err:?}"
    );
    let mut seen = Vec::new();
    let _ = pool.retain(|conn, _| {
        seen.push((
            conn.liveness.is_dead(),
            conn.liveness.is_gone(),
            conn.client.is_closed(),
            conn.is_broken(),
        ));
        true
    });
    let gone = watched.ending().is_some();
    assert_eq!(
        seen,
        [(false, gone, true, true)],
        "(is_dead, is_gone, is_closed, is_broken)"
    );
    assert!(
        matches!(watched.ending(), None | Some(deadpeer::Ending::Closed)),
        "{:?}",
        watched.ending()
    );
    // The connection task dropped the stream: settled, without a death.
    assert!(matches!(watched.state(), State::Closed));

    let conn = pool.get().await.unwrap();
    assert_works(&conn.client).await;
    assert_ne!(conn.liveness.local_addr(), watched.local_addr());
    assert_eq!(pool.manager().0.opened(), 3, "victim, other, fresh");
}
