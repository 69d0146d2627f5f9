//! Connection liveness for Tokio: find dead TCP peers within a bound you choose, and hear about it.
//!
//! Linux leaves TCP keepalive off, and with its defaults on it finds a dead peer only after
//! 2 h 11 min 15 s. deadpeer applies a validated [`KeepalivePolicy`] to the sockets a service
//! accepts or opens, and turns the kernel's verdict into a typed [`DeadPeer`] error, one tracing
//! event, and a future that resolves even when nothing is reading.
//!
//! # Where to start
//!
//! | you have | use |
//! |---|---|
//! | a tokio accept loop | [`KeepaliveListener`] instead of `TcpListener`; [`KeepaliveStream::liveness`] in handlers that do not read |
//! | an outgoing connection | [`connect`] instead of `TcpStream::connect` |
//! | axum | `axum::serve(KeepaliveListener, app.into_make_service_with_liveness())` (`axum::RouterExt`) |
//! | axum over TLS | `KeepaliveListener::bind(..).await?.tls(config)` (`tls::TlsListener`) |
//! | a hyper-util client | `layer::KeepaliveLayer` around the connector (under hyper-rustls's for TLS) |
//! | a hyper server | `KeepaliveListener`, and `layer::LivenessLayer::new(stream.liveness())` around each connection's service |
//! | a tonic client | `endpoint.connect_with_keepalive(policy)` (`tonic::EndpointExt`) |
//! | a tonic server | `listener.incoming()`, with `incoming.liveness_layer()` for handlers' `Liveness` |
//! | handlers that stop when their client leaves | `liveness.gone()`, the `Liveness` from `ConnectInfo<Liveness>` (axum) or the request's extensions (`layer::LivenessLayer`: hyper, tonic) |
//! | a per-connection tower service | `layer::ReapLayer` |
//! | reqwest | `reqwest::ClientBuilderExt::tcp_keepalive_policy` |
//! | any socket | [`apply`], [`inspect`], [`tcp_info`] |
//!
//! A death surfaces as a [`DeadPeer`] whose [`Cause`] says what the kernel did and whose
//! [`Ending`] says what happened to the peer (closed, aborted, forgot, vanished, refused,
//! stalled: only the last four are alarms); the events are described on [`DeadPeer`], the causes
//! and endings on [`Cause`] and [`Ending`]. `Liveness::gone()` resolves when a client leaves,
//! a clean close included. The
//! guide (`docs/guide.md` in the repository) walks through each stack.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | `KeepaliveListener`, `KeepaliveStream`, `connect`, `Liveness`, `connections::Connections` (a live view of tracked connections with `TCP_INFO`) |
//! | `tower` | yes | `layer::{KeepaliveLayer, ReapLayer}` |
//! | `tracing` | yes | the events (target `deadpeer`; no subscriber is installed) |
//! | `axum` | no | `axum::serve::Listener` for `KeepaliveListener`; `Liveness` as connect info; `axum::RouterExt` |
//! | `hyper` | no | `layer::KeepaliveLayer` over hyper-util's `HttpConnector` (`TokioIo<KeepaliveStream>`), hyper-util's `Connection` for `KeepaliveStream`, `layer::LivenessLayer` (each request's `Liveness` in its extensions) |
//! | `tonic` | no | tonic's `Connected` for `KeepaliveStream`, `KeepaliveListener::incoming` for `serve_with_incoming`, `Incoming::liveness_layer` (handlers get their connection's `Liveness`), `tonic::EndpointExt` (channels under a policy, tonic's own connector settings kept) |
//! | `rustls` | no | `tls::TlsListener`: TLS (tokio-rustls) over a `KeepaliveListener`, an `axum::serve::Listener` with `axum`; no crypto provider chosen |
//! | `serde` | no | `Serialize`/`Deserialize` for `KeepalivePolicy` and `UserTimeout` |
//! | `reqwest` | no | `reqwest::ClientBuilderExt::tcp_keepalive_policy`, `reqwest::PeerDeath` |
//! | `metrics` | no | `metrics`: dead connections by cause, endings by name, watched connections, connections opened and apply failures through the `metrics` facade (no recorder is installed) |
//!
// Without `tokio`, the items above that it gates link to docs.rs (as `docs_rs!` writes elsewhere;
// these attributes come before it).
#![cfg_attr(not(feature = "tokio"), doc = concat!("[`KeepaliveListener`]: https://docs.rs/deadpeer/", env!("CARGO_PKG_VERSION"), "/deadpeer/listener/struct.KeepaliveListener.html"))]
#![cfg_attr(not(feature = "tokio"), doc = concat!("[`KeepaliveStream::liveness`]: https://docs.rs/deadpeer/", env!("CARGO_PKG_VERSION"), "/deadpeer/stream/struct.KeepaliveStream.html#method.liveness"))]
#![cfg_attr(not(feature = "tokio"), doc = concat!("[`connect`]: https://docs.rs/deadpeer/", env!("CARGO_PKG_VERSION"), "/deadpeer/stream/fn.connect.html"))]
#![cfg_attr(not(feature = "tokio"), doc = concat!("[`Liveness::dead`]: https://docs.rs/deadpeer/", env!("CARGO_PKG_VERSION"), "/deadpeer/liveness/struct.Liveness.html#method.dead"))]
#![cfg_attr(not(feature = "tokio"), doc = concat!("[`Liveness::gone`]: https://docs.rs/deadpeer/", env!("CARGO_PKG_VERSION"), "/deadpeer/liveness/struct.Liveness.html#method.gone"))]
//!
//! # Platforms
//!
#![doc = include_str!("docs/platforms.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `[NAME]: URL`, a link reference definition to PAGE in this version's docs on docs.rs, for docs
/// that link to an item a disabled feature leaves out: `#[cfg_attr(not(feature = "F"), doc =
/// docs_rs!("`Item`", "module/struct.Item.html"))]`, beside the intra-doc definition when it is on.
#[allow(unused_macros, reason = "unused when every feature is on")]
macro_rules! docs_rs {
    ($name:literal, $page:literal) => {
        concat!(
            "[",
            $name,
            "]: https://docs.rs/deadpeer/",
            env!("CARGO_PKG_VERSION"),
            "/deadpeer/",
            $page
        )
    };
}

#[cfg(not(any(unix, windows)))]
compile_error!(
    "deadpeer supports Unix and Windows targets (it sets TCP options on sockets through socket2); \
     this target is neither"
);

mod ending;
mod engine;
pub mod error;
pub mod kernel;
pub mod policy;
#[cfg(feature = "tokio")]
mod report;
mod sys;

pub use ending::Ending;
pub use error::{Cause, DeadPeer};
pub use kernel::SystemKeepalive;
pub use policy::{KeepalivePolicy, PolicyError, PolicyErrorKind, UserTimeout};
pub use sys::{AsSocketDescriptor, SocketKeepalive, TcpInfo, apply, inspect, tcp_info};

#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod connections;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod listener;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod liveness;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod stream;

#[cfg(feature = "tokio")]
pub use listener::KeepaliveListener;
#[cfg(feature = "tokio")]
pub use liveness::Liveness;
#[cfg(feature = "tokio")]
pub use stream::{KeepaliveStream, connect};

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub mod tls;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

#[cfg(feature = "hyper")]
mod hyper;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod layer;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
