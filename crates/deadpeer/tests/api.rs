//! The public surface a user needs, named once each, checked by the compiler; and a remote
//! dead-peer report (a tonic `Status` carrying one's text) that must not be taken for ours.
#![allow(dead_code, clippy::no_effect_underscore_binding)]

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use deadpeer::layer::{BoxError, Keepalive, KeepaliveIo, KeepaliveLayer, Reap, ReapLayer};
use deadpeer::liveness::{Dead, State};
use deadpeer::policy::{Builder, Field};
use deadpeer::stream::{OwnedReadHalf, OwnedWriteHalf, ReuniteError};
use deadpeer::{
    Cause, DeadPeer, KeepaliveListener, KeepalivePolicy, KeepaliveStream, Liveness, PolicyError,
    PolicyErrorKind, SocketKeepalive, SystemKeepalive, TcpInfo, UserTimeout,
};

/// Every item a service uses, in the signatures it would use them in. Compiling is the test.
#[allow(clippy::too_many_arguments)]
fn surface(
    _policy: KeepalivePolicy,
    _ut: UserTimeout,
    _builder: Builder,
    _err: PolicyError,
    _kind: PolicyErrorKind,
    _field: Field,
    _sys: SystemKeepalive,
    _sock: SocketKeepalive,
    _info: TcpInfo,
    _listener: KeepaliveListener,
    _stream: KeepaliveStream,
    _halves: (OwnedReadHalf, OwnedWriteHalf),
    _reunite: ReuniteError,
    _liveness: Liveness,
    _dead: Dead,
    _state: State,
    _peer: DeadPeer,
    _cause: Cause,
    _klayer: KeepaliveLayer,
    _rlayer: ReapLayer,
    _ksvc: Keepalive<()>,
    _rsvc: Reap<()>,
    _boxed: BoxError,
) {
}

fn keepalive_io<T: KeepaliveIo>() {}

/// The integration modules' items, by the names a user writes.
#[allow(clippy::too_many_arguments)]
fn integrations(
    _tls: deadpeer::tls::TlsListener,
    _tls_stream: deadpeer::tls::TlsStream,
    _make: deadpeer::axum::IntoMakeServiceWithLiveness<axum::Router>,
    _layer: deadpeer::layer::LivenessLayer,
    _add: deadpeer::layer::AddLiveness<()>,
    _incoming: deadpeer::tonic::Incoming,
) {
    fn router_ext<T: deadpeer::axum::RouterExt>() {}
    fn endpoint_ext<T: deadpeer::tonic::EndpointExt>() {}
    fn as_liveness<T: deadpeer::liveness::AsLiveness>() {}
    router_ext::<axum::Router>();
    endpoint_ext::<tonic::transport::Endpoint>();
    as_liveness::<KeepaliveStream>();
    as_liveness::<deadpeer::tls::TlsStream>();
    as_liveness::<hyper_util::rt::TokioIo<KeepaliveStream>>();
}

#[test]
fn the_layers_take_tokio_and_hyper_connections() {
    keepalive_io::<tokio::net::TcpStream>();
    keepalive_io::<KeepaliveStream>();
    keepalive_io::<hyper_util::rt::TokioIo<tokio::net::TcpStream>>();
}

#[tokio::test(flavor = "current_thread")]
async fn the_free_functions_take_any_socket() -> io::Result<()> {
    let listener = KeepaliveListener::bind("127.0.0.1:0", KeepalivePolicy::FAST).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let client = deadpeer::connect(addr, KeepalivePolicy::CLOUD).await?;
    let (server, _) = listener.accept().await?;
    let std_stream = std::net::TcpStream::connect(addr)?;
    deadpeer::apply(&std_stream, KeepalivePolicy::FAST)?;
    for got in [
        deadpeer::inspect(&client)?,
        deadpeer::inspect(&server)?,
        deadpeer::inspect(&std_stream)?,
        deadpeer::inspect(client.get_ref())?,
    ] {
        assert!(got.enabled);
    }
    assert_eq!(deadpeer::tcp_info(&server)?.state, TcpInfo::ESTABLISHED);
    assert_eq!(
        "fast"
            .parse::<KeepalivePolicy>()
            .map_err(io::Error::other)?,
        listener.policy()
    );
    assert_eq!(client.policy(), Some(KeepalivePolicy::CLOUD));
    assert!(KeepalivePolicy::FAST.detection_bound() <= Duration::from_secs(30));
    Ok(())
}

/// A remote server's own report of a dead peer, relayed in a tonic `Status`, is text: it is not
/// found as a `DeadPeer` (typed only), and not recovered as one of ours (no death of this process
/// has that text, with our local end in it).
#[test]
fn a_forged_dead_peer_message_in_a_tonic_status_is_not_a_dead_peer() {
    let forged = tonic::Status::unavailable(
        "dead peer 10.0.0.2:443 from 10.0.0.1:50000: keepalive timeout (os error 110)",
    );
    assert!(DeadPeer::find(&forged).is_none());
    assert!(DeadPeer::recover(&forged).is_none());
    let wrapped = io::Error::new(io::ErrorKind::TimedOut, forged.message().to_owned());
    assert!(DeadPeer::find(&wrapped).is_none());
    assert!(DeadPeer::recover(&wrapped).is_none());
}
