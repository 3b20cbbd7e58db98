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
//! - A connection on which no request or answer moves (no HTTP/2 HEADERS, DATA or
//!   CONTINUATION frame either way) for the listener's idle timeout is closed, as Kafka's
//!   `connections.max.idle.ms` (default 10 minutes, [`IDLE_TIMEOUT`]): a peer that only answers
//!   keep-alive pings would otherwise hold its slot for ever. Open streams keep a connection
//!   busy as long as they carry anything (a fetch stream answers at least every `max_wait`);
//!   clients reconnect on their next request. The frames are followed by their 9-byte headers
//!   only, counted, with no clock read per frame: the check runs when the timer fires, so a
//!   connection goes between one and two idle timeouts after its last request.

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

/// Default idle timeout of a connection (Kafka's `connections.max.idle.ms`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Follows the HTTP/2 frames of one direction of a connection by their headers, counting the
/// frames that carry requests or answers.
#[derive(Debug, Default)]
struct FrameWatch {
    /// Bytes to pass over before the next frame header: the client preface, or the rest of
    /// the current frame's payload.
    skip: usize,
    /// The next frame header, as far as it has arrived.
    header: [u8; 9],
    have: usize,
}

impl FrameWatch {
    /// Passes `bytes` (the next bytes of this direction); returns how many HEADERS, DATA or
    /// CONTINUATION frames began in them.
    fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut busy = 0;
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (9 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 9 {
                let h = self.header;
                self.skip = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                // DATA 0x0, HEADERS 0x1, CONTINUATION 0x9.
                if matches!(h[3], 0x0 | 0x1 | 0x9) {
                    busy += 1;
                }
                self.have = 0;
            }
        }
        busy
    }
}

/// The idle timer of a connection.
#[derive(Debug)]
struct Idle {
    /// The listener's idle timeout.
    after: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Request and answer frames seen so far, both ways.
    busy: u64,
    /// `busy` when the timer was last armed.
    armed_at: u64,
    reads: FrameWatch,
    writes: FrameWatch,
}

/// An accepted connection; its slot among the listener's connections is freed when it drops.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    /// Until the preface is in: bytes read so far and when the connection is given up.
    preface: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
    idle: Idle,
}

impl Connection {
    /// Whether nothing but keep-alive moved for a whole idle period (then the read side fails
    /// and the connection closes); re-arms the timer when something did.
    fn idle_for_good(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = &mut self.idle;
        if idle.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if idle.busy == idle.armed_at {
            return true;
        }
        idle.armed_at = idle.busy;
        idle.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + idle.after);
        // Register the re-armed timer's wake-up.
        let _ = idle.timer.as_mut().poll(cx);
        false
    }
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
        if let Poll::Ready(Ok(())) = &read {
            this.idle.busy += this.idle.reads.feed(&buf.filled()[before..]);
        }
        if let (Poll::Ready(Ok(())), Some((seen, _))) = (&read, &mut this.preface) {
            *seen += buf.filled().len() - before;
            if *seen >= PREFACE_LEN {
                this.preface = None;
            }
        }
        if read.is_pending() && this.idle_for_good(cx) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no request on the connection for {:?}", this.idle.after),
            )));
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
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            let busy = self.idle.writes.feed(&buf[..*n]);
            self.idle.busy += busy;
        }
        written
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
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &written {
            let mut left = *n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                let busy = self.idle.writes.feed(&b[..take]);
                self.idle.busy += busy;
                left -= take;
            }
        }
        written
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

/// The connections `listener` accepts, at most `max_connections` open at once, each closed
/// after `idle` without a request, for the listener named `what` (in log lines). Never ends and
/// never yields an error.
pub fn incoming(
    listener: TcpListener,
    what: &'static str,
    max_connections: usize,
    idle: Duration,
) -> impl futures::Stream<Item = Result<Connection, std::io::Error>> + Send + 'static {
    let state = State {
        listener,
        slots: Arc::new(Semaphore::new(max_connections.max(1))),
        what,
        last_warning: None,
    };
    futures::stream::unfold(state, move |mut state| async move {
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
                        idle: Idle {
                            after: idle,
                            timer: Box::pin(tokio::time::sleep(idle)),
                            busy: 0,
                            armed_at: 0,
                            reads: FrameWatch {
                                skip: PREFACE_LEN,
                                ..FrameWatch::default()
                            },
                            writes: FrameWatch::default(),
                        },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            0,
            0,
            0,
            0,
            1,
        ];
        f.resize(9 + payload, 0xAB);
        f
    }

    #[test]
    fn only_request_and_answer_frames_count_however_the_bytes_are_cut() {
        let mut bytes = vec![b'P'; PREFACE_LEN];
        bytes.extend(frame(0x4, 6)); // SETTINGS
        bytes.extend(frame(0x6, 8)); // PING
        bytes.extend(frame(0x1, 30)); // HEADERS
        bytes.extend(frame(0x0, 70_000)); // DATA, longer than one read
        bytes.extend(frame(0x8, 4)); // WINDOW_UPDATE
        bytes.extend(frame(0x9, 3)); // CONTINUATION
        for cut in [1, 2, 7, 9, 10, 4096, bytes.len()] {
            let mut w = FrameWatch {
                skip: PREFACE_LEN,
                ..FrameWatch::default()
            };
            let busy: u64 = bytes.chunks(cut).map(|c| w.feed(c)).sum();
            assert_eq!(busy, 3, "cut every {cut} bytes");
        }
        let mut pings = FrameWatch::default();
        let only_keepalive: Vec<u8> = [frame(0x6, 8), frame(0x6, 8), frame(0x8, 4)].concat();
        assert_eq!(pings.feed(&only_keepalive), 0);
    }
}
