//! Without epoll (every OS but Linux and Android) there is no reaper: `Liveness::dead()`
//! resolves when a read or write on the stream sees the death. Built (`cargo clippy --target`)
//! for macOS, FreeBSD and Windows by this project's CI; not run there.
#![allow(
    clippy::unused_self,
    reason = "the same methods as the epoll watch's, so the engine needs no cfg"
)]

use std::io;
use std::sync::Weak;

use super::{OnError, OnReplaced};
use crate::sys::Borrowed;

/// Never watching.
#[derive(Debug, Default)]
pub(crate) struct WatchedFd;

impl WatchedFd {
    pub(crate) fn watch(
        &mut self,
        _fd: Borrowed<'_>,
        _target: Weak<dyn OnError>,
        _on_replaced: OnReplaced,
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "watching a connection needs epoll (Linux, Android); dead() resolves when a read or \
             write sees the death",
        ))
    }

    pub(crate) fn is_watching(&self) -> bool {
        false
    }

    pub(crate) fn with<R>(&self, _f: impl FnOnce(Borrowed<'_>) -> R) -> Option<R> {
        None
    }

    pub(crate) fn release(&mut self, _open: Option<Borrowed<'_>>) {}
}
