//! The example of `docs/testing.md`, kept compiling and passing: a service notices that a client
//! vanished, within its keepalive bound.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use deadpeer::KeepalivePolicy;
use deadpeer_testkit::{Family, dies_within_bound, lab_or_skip};
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

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
    let Some(lab) = lab_or_skip!() else {
        return Ok(());
    };

    // The service's policy: 1 s idle, 1 s between probes, 3 probes => dead within 4 s.
    let policy: KeepalivePolicy = "1:1:3".parse().expect("a valid policy");
    let keepalive = TcpKeepalive::new()
        .with_time(policy.idle())
        .with_interval(policy.interval())
        .with_retries(policy.probes());

    // Once per family: the lab is dual-stack.
    for family in Family::ALL {
        // Server: the listening socket is created inside the server namespace. On Linux,
        // accepted sockets inherit keepalive from the listener.
        let addr = SocketAddr::new(lab.server_addr_for(family), 8080);
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
        let start = Instant::now();
        lab.blackhole()?;

        // Within the policy's bound plus the kernel's timer slack, never the machine's speed.
        let (peer, how) = dies_within_bound(policy, start, ended.recv())
            .await
            .expect("the service stopped");
        eprintln!("{family}: the server noticed after {:?}", start.elapsed());

        assert_eq!(peer.ip(), lab.client_addr_for(family));
        let err = how.expect_err("a vanished client is an error, not EOF");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut); // ETIMEDOUT

        server.abort();
        lab.heal()?;
    }
    Ok(())
}
