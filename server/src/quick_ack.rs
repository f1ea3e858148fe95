//! Acknowledging what a client sends at once, rather than after the kernel's delayed-ACK
//! timer, for clients that leave Nagle's algorithm on.
//!
//! A gRPC client writes a call in several small pieces (the headers, then each message, then
//! the end of the stream). With Nagle's algorithm on, the client's TCP stack holds each piece
//! back until the previous one is acknowledged; the server has nothing to send until the
//! request is complete, so its kernel acknowledges only when the delayed-ACK timer fires,
//! and every such call waits for that timer. KurrentDB's Rust client is one such client. [`QuickAck`] wraps each accepted connection and, after every read that returned
//! data, asks the kernel to send the pending acknowledgement now (`TCP_QUICKACK`, which the
//! kernel forgets again, hence after every read). Clients that set `TCP_NODELAY`, as most
//! gRPC libraries do, are unaffected but for the extra acknowledgements.
//!
//! Linux only; elsewhere the wrapper only passes reads and writes through.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection that acknowledges received data at once when `enabled` (see the
/// module docs).
pub(crate) struct QuickAck {
    stream: TcpStream,
    enabled: bool,
}

impl QuickAck {
    pub(crate) fn new(stream: TcpStream, enabled: bool) -> Self {
        QuickAck { stream, enabled }
    }

    #[cfg(target_os = "linux")]
    fn acknowledge_now(&self) {
        // A failure (the peer gone) only leaves the acknowledgement delayed.
        let _ = socket2::SockRef::from(&self.stream).set_tcp_quickack(true);
    }

    #[cfg(not(target_os = "linux"))]
    fn acknowledge_now(&self) {}
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.enabled && matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.acknowledge_now();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Connected for QuickAck {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
