//! [`KeepaliveLayer`]: the connector side.

mod future;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::KeepaliveLayer;
pub use self::service::Keepalive;
