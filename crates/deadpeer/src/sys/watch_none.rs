//! Without epoll (every OS but Linux and Android) there is no reaper: `Liveness::dead()`
//! resolves when a read or write on the stream sees the death. Built (`cargo clippy --target`)
//! for macOS, FreeBSD and Windows by this project's CI; not run there.

use std::io;
use std::sync::Weak;

/// What would follow a latched death on the reaper thread (never, here).
pub(crate) type Report = Box<dyn FnOnce() + Send>;

/// What the reaper would call from a thread that died (never, here).
pub(crate) type OnReplaced = fn(Option<&io::Error>);

/// Told when the kernel reports an error on a watched socket (never, here).
pub(crate) trait OnError: Send + Sync {
    #[allow(dead_code)]
    fn on_error(&self) -> Option<Report>;
}

/// Never watching.
#[derive(Debug, Default)]
pub(crate) struct WatchedFd;

impl WatchedFd {
    pub(crate) fn watch(
        &mut self,
        _fd: super::Borrowed<'_>,
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

    pub(crate) fn with<R>(&self, _f: impl FnOnce(super::Borrowed<'_>) -> R) -> Option<R> {
        None
    }

    pub(crate) fn release(&mut self, _open: Option<super::Borrowed<'_>>) {}
}
