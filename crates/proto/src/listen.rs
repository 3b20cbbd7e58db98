//! How every Weir gRPC listener accepts connections: [`incoming`], a stream of accepted
//! sockets for tonic's `serve_with_incoming_shutdown`.
//!
//! - An accept error never ends the listener. tonic's own `TcpIncoming` ends its stream on the
//!   first error, and a node that ran out of file descriptors (`EMFILE`: idle connections, many
//!   segments) then stopped serving for good while still looking alive. Here the error is logged
//!   (at most once a second) and accepting resumes after a short back-off.
//! - At most `max_connections` connections are open at once; the next is accepted only when one
//!   closes (the kernel's backlog holds it meanwhile), so idle connections cannot use up every
//!   descriptor.
//! - Accepted sockets get `TCP_NODELAY` (replies must not wait on Nagle and delayed ACKs) and TCP
//!   keep-alive, so a peer that vanished without a FIN is noticed.
//! - A connection must send the HTTP/2 client preface (24 bytes) within [`PREFACE_TIMEOUT`], or
//!   it is closed: connections that open and then send nothing (or a byte a minute) would
//!   otherwise hold connection slots for as long as they like. Once the preface is in, HTTP/2
//!   keep-alive pings (set on each server) find a peer that stopped answering.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Default bound on a listener's open connections.
pub const MAX_CONNECTIONS: usize = 4096;

/// Idle time before TCP keep-alive probes start on an accepted socket.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long an accepted connection has to send the HTTP/2 client preface.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const PREFACE_LEN: usize = 24;

/// An accepted connection; its slot among the listener's connections is freed when it drops.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface is in: bytes read so far and when the connection is given up.
    preface: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some((seen, _))) = (&read, &mut this.preface) {
            *seen += buf.filled().len() - before;
            if *seen >= PREFACE_LEN {
                this.preface = None;
            }
        }
        // Nothing to read yet: past the deadline, the connection is given up (checked only
        // then, so bytes that arrived in time are never refused for a late poll).
        if let (Poll::Pending, Some((_, deadline))) = (&read, &mut this.preface) {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no HTTP/2 preface within {PREFACE_TIMEOUT:?}"),
                )));
            }
        }
        read
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

struct State {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    what: &'static str,
    last_warning: Option<Instant>,
}

/// The connections `listener` accepts, at most `max_connections` open at once, for the
/// listener named `what` (in log lines). Never ends and never yields an error.
pub fn incoming(
    listener: TcpListener,
    what: &'static str,
    max_connections: usize,
) -> impl futures::Stream<Item = Result<Connection, std::io::Error>> + Send + 'static {
    let state = State {
        listener,
        slots: Arc::new(Semaphore::new(max_connections.max(1))),
        what,
        last_warning: None,
    };
    futures::stream::unfold(state, |mut state| async move {
        let Ok(slot) = Arc::clone(&state.slots).acquire_owned().await else {
            return None;
        };
        loop {
            match state.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let sock = socket2::SockRef::from(&stream);
                    let _ = sock
                        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE));
                    let connection = Connection {
                        stream,
                        _slot: slot,
                        preface: Some((0, Box::pin(tokio::time::sleep(PREFACE_TIMEOUT)))),
                    };
                    return Some((Ok(connection), state));
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, a connection reset before it was accepted: none
                    // of them is a reason to stop listening.
                    if state
                        .last_warning
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        state.last_warning = Some(Instant::now());
                        tracing::warn!(listener = state.what, error = %e, "accepting a connection failed; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}
