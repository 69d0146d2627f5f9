//! [`OwnedReadHalf`] and [`OwnedWriteHalf`]: a [`KeepaliveStream`] split for two tasks, both
//! halves on one latch.

use std::error::Error;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, tcp};

use super::{KeepaliveStream, Owner};
use crate::error::DeadPeer;
use crate::liveness::Liveness;

pub(super) fn split(owner: Owner, io: tokio::net::TcpStream) -> (OwnedReadHalf, OwnedWriteHalf) {
    let owner = Arc::new(owner);
    let (read, write) = io.into_split();
    (
        OwnedReadHalf {
            owner: Arc::clone(&owner),
            io: read,
        },
        OwnedWriteHalf { owner, io: write },
    )
}

/// The read half of a [`KeepaliveStream`], from [`KeepaliveStream::into_split`].
///
/// A death surfaces here as on the whole stream: the latched [`DeadPeer`], shared with the write
/// half and every [`Liveness`].
pub struct OwnedReadHalf {
    // First: the last half dropped releases the watch before its half of the socket closes
    // (fields drop in order; the invariant of `sys::WatchedFd`).
    owner: Arc<Owner>,
    io: tcp::OwnedReadHalf,
}

/// The write half of a [`KeepaliveStream`], from [`KeepaliveStream::into_split`]. Dropping it
/// shuts down the write side, as tokio's does (no death: after that only reads remain, and an
/// orderly close reads as EOF).
pub struct OwnedWriteHalf {
    owner: Arc<Owner>,
    io: tcp::OwnedWriteHalf,
}

impl OwnedReadHalf {
    /// A [`Liveness`] handle on the connection (see [`KeepaliveStream::liveness`]).
    pub fn liveness(&self) -> Liveness {
        Liveness::new(self.owner.watched(self.io.as_ref()))
    }

    /// The latched death, if one has been seen.
    pub fn dead_peer(&self) -> Option<&DeadPeer> {
        self.owner.latched()
    }

    /// Puts the halves back together.
    ///
    /// # Errors
    ///
    /// [`ReuniteError`], holding both halves, when they come from different streams.
    pub fn reunite(self, other: OwnedWriteHalf) -> Result<KeepaliveStream, ReuniteError> {
        if !Arc::ptr_eq(&self.owner, &other.owner) {
            return Err(ReuniteError(self, other));
        }
        let OwnedReadHalf { owner, io: read } = self;
        let OwnedWriteHalf {
            owner: other_owner,
            io: write,
        } = other;
        drop(other_owner);
        let io = read
            .reunite(write)
            .expect("the halves share a latch, so they share a socket");
        let owner = Arc::into_inner(owner).expect("both halves' latch references are here");
        Ok(KeepaliveStream { owner, io })
    }
}

impl OwnedWriteHalf {
    /// A [`Liveness`] handle on the connection (see [`KeepaliveStream::liveness`]).
    pub fn liveness(&self) -> Liveness {
        Liveness::new(self.owner.watched(self.io.as_ref()))
    }
}

super::impl_guarded_read!(OwnedReadHalf, |s| s.io.as_ref());

super::impl_guarded_write!(OwnedWriteHalf, tcp::OwnedWriteHalf, |s| s.io.as_ref());

impl fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedReadHalf")
            .field("peer_addr", &self.owner.meta.peer_addr)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedWriteHalf")
            .field("peer_addr", &self.owner.meta.peer_addr)
            .finish_non_exhaustive()
    }
}

/// The halves given to [`OwnedReadHalf::reunite`] came from different streams; both are here.
#[derive(Debug)]
pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

impl fmt::Display for ReuniteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tried to reunite halves that are not from the same KeepaliveStream")
    }
}

impl Error for ReuniteError {}
