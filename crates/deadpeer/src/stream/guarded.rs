//! Reads and writes through the latch, for [`KeepaliveStream`] and its halves: the latched
//! death first, then the I/O, with its EOF or error judged by the engine ([`Owner`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::KeepaliveStream;
use crate::engine::Owner;

/// The end of a read, shared with [`OwnedReadHalf`](super::OwnedReadHalf): an EOF or an error is judged (after the
/// caller returned the latched death, if any, without reading).
pub(crate) fn read_done(
    owner: &Owner,
    tcp: &TcpStream,
    before: usize,
    buf: &ReadBuf<'_>,
    result: io::Result<()>,
) -> io::Result<()> {
    match result {
        // EOF: a FIN, or what follows a death.
        Ok(()) if buf.filled().len() == before && buf.remaining() > 0 => owner.on_eof(tcp),
        Ok(()) => Ok(()),
        Err(e) => Err(owner.on_error(tcp, e)),
    }
}

/// The end of a write, flush or shutdown, shared with [`OwnedWriteHalf`](super::OwnedWriteHalf).
pub(crate) fn write_done<T>(
    owner: &Owner,
    tcp: &TcpStream,
    result: io::Result<T>,
) -> io::Result<T> {
    result.map_err(|e| owner.on_error(tcp, e))
}

/// `AsyncRead` through the latch, for a type with fields `owner` and `io` (`$tcp` reaches the
/// `TcpStream`): the latched death first, then the read, with its EOF or error judged.
macro_rules! impl_guarded_read {
    ($type:ty, $tcp:expr) => {
        impl AsyncRead for $type {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                if let Some(err) = this.owner.latched_error() {
                    return Poll::Ready(Err(err));
                }
                let before = buf.filled().len();
                let result = ready!(Pin::new(&mut this.io).poll_read(cx, buf));
                let tcp: fn(&Self) -> &TcpStream = $tcp;
                Poll::Ready($crate::stream::guarded::read_done(
                    &this.owner,
                    tcp(this),
                    before,
                    buf,
                    result,
                ))
            }
        }
    };
}
pub(crate) use impl_guarded_read;

impl_guarded_read!(KeepaliveStream, |s| &s.io);

/// `AsyncWrite` through the latch, for a type with fields `owner` (an `Owner`, or an `Arc` of one)
/// and `io` (of type `$io`; `$tcp` reaches the `TcpStream`): the latched death first, then the
/// write, with its error judged; a successful shutdown is recorded as the application's own.
macro_rules! impl_guarded_write {
    ($type:ty, $io:ty, $tcp:expr) => {
        impl $type {
            fn poll_write_with<T>(
                &mut self,
                write: impl FnOnce(Pin<&mut $io>) -> Poll<io::Result<T>>,
            ) -> Poll<io::Result<T>> {
                if let Some(err) = self.owner.latched_error() {
                    return Poll::Ready(Err(err));
                }
                let result = ready!(write(Pin::new(&mut self.io)));
                let tcp: fn(&Self) -> &TcpStream = $tcp;
                Poll::Ready($crate::stream::guarded::write_done(
                    &self.owner,
                    tcp(self),
                    result,
                ))
            }
        }

        impl AsyncWrite for $type {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.get_mut().poll_write_with(|io| io.poll_write(cx, buf))
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.get_mut()
                    .poll_write_with(|io| io.poll_write_vectored(cx, bufs))
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().poll_write_with(|io| io.poll_flush(cx))
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                let this = self.get_mut();
                let r = this.poll_write_with(|io| io.poll_shutdown(cx));
                if let Poll::Ready(Ok(())) = r {
                    this.owner.shut_down();
                }
                r
            }
        }
    };
}
pub(crate) use impl_guarded_write;

impl_guarded_write!(KeepaliveStream, TcpStream, |s| &s.io);
