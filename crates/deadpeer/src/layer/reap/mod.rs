//! [`ReapLayer`]: the per-connection service side.

mod future;
mod io;
mod layer;
mod service;

pub use self::future::ResponseFuture;
pub use self::io::ReapIo;
pub use self::layer::ReapLayer;
pub use self::service::Reap;
