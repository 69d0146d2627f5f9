//! The stream's side of a watched connection: what a death report needs, the application's
//! own shutdown, and the [`Latch`] shared with `Liveness` handles, made on first need.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;

use super::{Latch, Meta, Observer};
use crate::error::DeadPeer;
use crate::sys::{self, TcpInfo};

/// Created with the stream; the [`Latch`] only on the first `liveness()` or death, so that
/// wrapping a connection allocates nothing. Dropping it marks the latch closed and stops
/// watching the socket, which must still be open then: whoever holds an `Owner` next to the
/// socket drops the owner first (field order).
pub(crate) struct Owner {
    pub(crate) meta: Meta,
    /// The application shut down its write side: `EPIPE` is then its own doing.
    shut_down: AtomicBool,
    latch: OnceLock<Arc<Latch>>,
}

impl Owner {
    pub(crate) fn new(meta: Meta) -> Self {
        Self {
            meta,
            shut_down: AtomicBool::new(false),
            latch: OnceLock::new(),
        }
    }

    fn latch(&self) -> &Arc<Latch> {
        let latch = self.latch.get_or_init(|| Arc::new(Latch::new(self.meta)));
        // A shutdown racing the latch's creation is told to it either here or there.
        if self.shut_down.load(Ordering::SeqCst) {
            latch.mark_shut_down();
        }
        latch
    }

    /// The latch, watching `socket` (for `KeepaliveStream::liveness`).
    pub(crate) fn watched(&self, socket: &TcpStream) -> Arc<Latch> {
        let latch = self.latch();
        latch.watch(sys::borrow(socket));
        Arc::clone(latch)
    }

    /// The latched death, if any: two loads, for the hot path.
    #[inline]
    pub(crate) fn latched(&self) -> Option<&DeadPeer> {
        self.latch.get()?.latched()
    }

    /// The latched death as the `io::Error` every observer returns, if any.
    #[inline]
    pub(crate) fn latched_error(&self) -> Option<io::Error> {
        self.latched().map(|dead| dead.clone().into())
    }

    /// Records the application's own shutdown of the write side.
    pub(crate) fn shut_down(&self) {
        self.shut_down.store(true, Ordering::SeqCst);
        if let Some(latch) = self.latch.get() {
            latch.mark_shut_down();
        }
    }

    /// An error from the socket: a death becomes the latched `DeadPeer` (as an `io::Error`),
    /// anything else passes through unchanged.
    pub(crate) fn on_error(&self, socket: &TcpStream, err: io::Error) -> io::Error {
        let dead = match err.raw_os_error() {
            Some(errno) => self.verdict(socket, errno),
            None => self.latched().cloned(),
        };
        dead.map_or(err, io::Error::from)
    }

    /// End of file: what follows a death (whose error someone else may have taken), or else
    /// the peer's FIN, which latches [`Ending::Closed`](crate::Ending::Closed) for `gone()`. One
    /// `TCP_INFO` read, under the latch's lock.
    pub(crate) fn on_eof(&self, socket: &TcpStream) -> io::Result<()> {
        if let Some(dead) = self.latched() {
            return Err(dead.clone().into());
        }
        self.latch()
            .verdict(sys::borrow(socket), Observer::Io { seen: None }, None)
            .map_or(Ok(()), |dead| Err(dead.into()))
    }

    /// The verdict after a read or write failed with `errno`.
    fn verdict(&self, socket: &TcpStream, errno: i32) -> Option<DeadPeer> {
        if let Some(dead) = self.latched() {
            return Some(dead.clone());
        }
        // Allocate the latch only for a connection the kernel closed. A closed socket's
        // `TCP_INFO` no longer changes, so the read here is the one the verdict uses.
        let known = match self.latch.get() {
            Some(_) => None,
            None => match sys::tcp_info(socket) {
                Ok(info) if info.state != TcpInfo::CLOSE => return None,
                info => info.ok(),
            },
        };
        self.latch().verdict(
            sys::borrow(socket),
            Observer::Io { seen: Some(errno) },
            known,
        )
    }

    /// Judges a socket the kernel closed before it was wrapped (`info` shows `CLOSE`; `errno`
    /// was pending): the first observer latches its death for every later one, with the
    /// errno's cause, or [`Cause::Aborted`](crate::Cause::Aborted) when someone else took it.
    pub(crate) fn closed_before_wrap(&self, socket: &TcpStream, info: TcpInfo, errno: Option<i32>) {
        self.latch()
            .verdict(sys::borrow(socket), Observer::Wrap { errno }, Some(info));
    }

    /// Ends the watch: `open` is the socket when it lives on, unwrapped.
    pub(crate) fn detach(&self, open: &TcpStream) {
        if let Some(latch) = self.latch.get() {
            latch.close(Some(sys::borrow(open)));
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(latch) = self.latch.get() {
            latch.close(None);
        }
    }
}
