//! Connection liveness for Tokio: find dead TCP peers within a bound you choose, and hear about it.
//!
//! Linux leaves TCP keepalive off, and with its defaults on it finds a dead peer only after
//! 2 h 11 min 15 s. deadpeer applies a validated [`KeepalivePolicy`] to the sockets a service
//! accepts or opens, and turns the kernel's verdict into a typed [`DeadPeer`] error, one tracing
//! event, and a future that resolves even when nothing is reading.
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | [`KeepaliveListener`], [`KeepaliveStream`], [`connect`], [`Liveness`] |
//! | `tower` | yes | `layer::{KeepaliveLayer, ReapLayer}` |
//! | `tracing` | yes | the events listed in the guide (no subscriber is installed) |
//! | `axum` | no | `axum::serve::Listener` for [`KeepaliveListener`] |
//! | `hyper` | no | hyper's `rt::Read`/`rt::Write` and hyper-util's `Connection` on wrapped connections |
//! | `tonic` | no | tonic's `Connected` for [`KeepaliveStream`] and [`KeepaliveListener::incoming`] for `serve_with_incoming` |
//! | `serde` | no | `Serialize`/`Deserialize` for [`KeepalivePolicy`] and [`UserTimeout`] |
//! | `reqwest` | no | `reqwest::ClientBuilderExt::tcp_keepalive_policy` (the policy on every connection of a `reqwest::Client`) and `reqwest::PeerDeath` (the cause from the errno in its errors) |
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod kernel;
pub mod policy;
mod sys;
mod trace;

pub use error::{Cause, DeadPeer};
pub use kernel::SystemKeepalive;
pub use policy::{KeepalivePolicy, PolicyError, PolicyErrorKind, UserTimeout};
pub use sys::{SocketKeepalive, TcpInfo, apply, inspect, tcp_info};

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
#[path = "axum_impl.rs"]
pub mod axum;
#[cfg(feature = "tonic")]
mod tonic_impl;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod layer;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
#[path = "reqwest_impl.rs"]
pub mod reqwest;
