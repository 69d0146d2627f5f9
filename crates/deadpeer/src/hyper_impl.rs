//! hyper's `rt::Read`/`rt::Write` and hyper-util's `Connection` for [`KeepaliveStream`], so a
//! connector wrapped in [`KeepaliveLayer`](crate::layer::KeepaliveLayer) works with hyper-util's
//! `Client` and tonic's `Endpoint::connect_with_connector`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

use crate::stream::{AsTcpStream, KeepaliveStream, Latch};

fn map<S: AsTcpStream>(io: Pin<&mut S>, shared: &Latch, e: io::Error) -> io::Error {
    shared.on_error(io.as_ref().get_ref().as_tcp_stream(), e)
}

impl<S: Read + AsTcpStream> Read for KeepaliveStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let (mut io, shared) = self.io_pin_mut();
        if let Some(dead) = shared.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        match ready!(io.as_mut().poll_read(cx, buf)) {
            // The cursor is consumed, so an EOF cannot be told from data here: check for a death
            // that a `Liveness` latched meanwhile (two atomic loads).
            Ok(()) => match shared.latched() {
                Some(dead) => Poll::Ready(Err(dead.clone().into())),
                None => Poll::Ready(Ok(())),
            },
            Err(e) => Poll::Ready(Err(map(io, shared, e))),
        }
    }
}

impl<S: Write + AsTcpStream> Write for KeepaliveStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (mut io, shared) = self.io_pin_mut();
        if let Some(dead) = shared.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        match ready!(io.as_mut().poll_write(cx, buf)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(map(io, shared, e))),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let (mut io, shared) = self.io_pin_mut();
        if let Some(dead) = shared.latched() {
            return Poll::Ready(Err(dead.clone().into()));
        }
        match ready!(io.as_mut().poll_write_vectored(cx, bufs)) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => Poll::Ready(Err(map(io, shared, e))),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (mut io, shared) = self.io_pin_mut();
        match ready!(io.as_mut().poll_flush(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(map(io, shared, e))),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (mut io, shared) = self.io_pin_mut();
        match ready!(io.as_mut().poll_shutdown(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(map(io, shared, e))),
        }
    }
}

impl<S: Connection> Connection for KeepaliveStream<S> {
    fn connected(&self) -> Connected {
        self.get_ref().connected()
    }
}
