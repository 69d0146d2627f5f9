//! The example of `docs/testing.md`, kept compiling and passing: a service notices that a client
//! vanished, within its keepalive bound.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// The service under test: an echo server that reports how each connection ended.
async fn serve(listener: TcpListener, ended: mpsc::UnboundedSender<(SocketAddr, io::Result<()>)>) {
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            return;
        };
        let ended = ended.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let how = loop {
                match sock.read(&mut buf).await {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if let Err(err) = sock.write_all(&buf[..n]).await {
                            break Err(err);
                        }
                    }
                    Err(err) => break Err(err),
                }
            };
            let _ = ended.send((peer, how));
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reaps_a_vanished_client() -> io::Result<()> {
    let Some(lab) = deadpeer_testkit::lab_or_skip("server_reaps_a_vanished_client") else {
        return Ok(());
    };

    // The service's policy: 1 s idle, 1 s between probes, 3 probes => dead within 4 s.
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(1))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let bound = Duration::from_secs(1 + 3);

    // Server: the listening socket is created inside the server namespace. On Linux, accepted
    // sockets inherit keepalive from the listener.
    let addr = SocketAddr::new(lab.server_addr(), 8080);
    let listener = lab.server().tokio_listener(addr)?;
    SockRef::from(&listener).set_tcp_keepalive(&keepalive)?;
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let server = tokio::spawn(serve(listener, ended_tx));

    // Client: created inside the client namespace, driven from the same runtime.
    let mut client = lab.client().tokio_connect(addr).await?;
    client.write_all(b"hello").await?;
    let mut echo = [0u8; 5];
    client.read_exact(&mut echo).await?;
    assert_eq!(&echo, b"hello");

    // The client vanishes: every packet between the two is now silently dropped.
    lab.blackhole()?;
    let start = Instant::now();

    let (peer, how) = timeout(bound + Duration::from_secs(2), ended.recv())
        .await
        .expect("the server did not notice the dead client")
        .expect("the service stopped");
    let elapsed = start.elapsed();
    eprintln!("server noticed after {elapsed:?}");

    assert_eq!(peer.ip(), lab.client_addr());
    let err = how.expect_err("a vanished client is an error, not EOF");
    assert_eq!(err.kind(), io::ErrorKind::TimedOut); // ETIMEDOUT
    // Against the policy's bound plus the kernel's timer overshoot, never the machine's speed.
    assert!(elapsed <= bound + Duration::from_millis(300), "{elapsed:?}");

    server.abort();
    Ok(())
}
