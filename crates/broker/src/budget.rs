//! Node-wide memory budgets for stream answers: an answer takes its bytes from a budget before
//! it is read from the log, and gives them back only when the transport asks for the next one
//! (an answer handed to a reader that does not read stays in the HTTP/2 send buffer, and is
//! still counted). Streams whose readers never read therefore cost the node at most the
//! budget, not their number times their answers.
//!
//! "Taken by the transport" is not "sent": tonic encodes an answer into a chunk that HTTP/2
//! writes out frame by frame as the reader's window allows, and asks for the next answer while
//! the last part of the chunk is still queued. Where [`crate::limits::Limited`] wraps the
//! service, it hands each stream a [`Handoff`] in the request's extensions: the stream leaves every
//! answer's shares there and the response body fastens them to the chunk that carries the
//! answer, so they are given back when HTTP/2 has written (or dropped) its last byte. Without
//! the wrapper an answer's shares are given back when the next one is asked for.
//!
//! A stream's next answer is read only once it has a slot in its queue ([`mpsc::Sender::reserve`]
//! before the read): with a queue of one, a stream holds at most two answers, the one queued and
//! the one the transport took last, never a third read and waiting for room.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use http_body::{Body, Frame};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::body::BoxBody;
use tonic::Status;
use weir_common::sync::MutexExt;

/// An answer and its shares of the budgets it counts against (none for an empty answer).
pub type Item<T> = (Result<T, Status>, Held);

/// What an answer holds of its budgets until the transport takes it (the permits are only
/// held: dropping them gives the bytes back).
#[derive(Debug, Default)]
pub struct Held(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

impl Held {
    /// Holding these shares.
    pub fn of(shares: impl IntoIterator<Item = OwnedSemaphorePermit>) -> Self {
        Held(shares.into_iter().collect())
    }
}

/// An answer that holds nothing of the budgets (an error, an empty answer).
pub fn unheld<T>(answer: T) -> Item<T> {
    (Ok(answer), Held::default())
}

/// Sends an answer that holds nothing of the budgets (an error, an empty answer); a stream
/// whose reader went away is not an error here (the sender ends at its next send).
pub async fn send_unheld<T>(tx: &mpsc::Sender<Item<T>>, answer: T) {
    let _ = tx.send(unheld(answer)).await;
}

/// The answers of one stream, each holding its share of the budget until it is written out
/// (with a [`Handoff`]) or until the transport asks for the next one (without).
pub struct Budgeted<T> {
    rx: mpsc::Receiver<Item<T>>,
    release: Release,
}

/// When a [`Budgeted`] stream's answers give their shares back.
enum Release {
    /// Once written: left for the response body ([`crate::limits::Limited`]).
    Written(Handoff),
    /// When the next answer is asked for (the service is not wrapped): the last answer's.
    NextAsked(Held),
}

impl<T> Budgeted<T> {
    /// The stream of what `rx` receives, leaving each answer's shares in `handoff` when there
    /// is one (the request's, from [`crate::limits::Limited`]).
    pub fn new(rx: mpsc::Receiver<Item<T>>, handoff: Option<Handoff>) -> Self {
        let release = match handoff {
            Some(h) => Release::Written(h),
            None => Release::NextAsked(Held::default()),
        };
        Self { rx, release }
    }
}

impl<T> Stream for Budgeted<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Asked for the next answer: the transport has taken the last one.
        if let Release::NextAsked(last) = &mut self.release {
            *last = Held::default();
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((answer, held))) => {
                match &mut self.release {
                    Release::Written(handoff) => handoff.leave(held),
                    Release::NextAsked(last) => *last = held,
                }
                Poll::Ready(Some(answer))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Room for an answer of up to `bytes` (at most `u32::MAX`) from `budget`, waiting while the
/// budget is used up; `None` once `closed` resolves first (the reader went away) or the budget
/// is closed. Give back what the answer does not use with [`OwnedSemaphorePermit::split`].
pub async fn room(
    budget: &Arc<Semaphore>,
    bytes: usize,
    closed: impl std::future::Future<Output = ()>,
) -> Option<OwnedSemaphorePermit> {
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    tokio::select! {
        room = Arc::clone(budget).acquire_many_owned(bytes) => room.ok(),
        _ = closed => None,
    }
}

/// Keeps of `room` what an answer of `len` bytes holds and gives the rest back at once.
pub fn keep(mut room: OwnedSemaphorePermit, len: usize) -> OwnedSemaphorePermit {
    room.split(len).unwrap_or(room)
}

/// Where one stream's answers leave their budget shares for the response body to fasten to the
/// chunks that carry them ([`crate::limits::Limited`]).
#[derive(Debug, Clone, Default)]
pub struct Handoff(Arc<std::sync::Mutex<Vec<Held>>>);

impl Handoff {
    /// Leaves an answer's shares (none for an empty answer: nothing is kept).
    fn leave(&self, held: Held) {
        if !held.0.is_empty() {
            self.0.locked().push(held);
        }
    }

    /// Everything left since the last take.
    fn take(&self) -> Vec<Held> {
        std::mem::take(&mut *self.0.locked())
    }
}

/// Response bodies of [`crate::limits::Limited`]'s budgeted methods: `inner` with the shares
/// left in `handoff` fastened to each data chunk it yields.
pub(crate) fn carrying(inner: BoxBody, handoff: Handoff) -> BoxBody {
    tonic::body::boxed(HeldBody { inner, handoff })
}

/// A response body whose data chunks carry the budget shares of the answers in them.
struct HeldBody {
    inner: BoxBody,
    handoff: Handoff,
}

/// A chunk and the shares of the answers it carries, given back when HTTP/2 drops the chunk's
/// last piece.
struct Carried {
    chunk: Bytes,
    _held: Vec<Held>,
}

impl AsRef<[u8]> for Carried {
    fn as_ref(&self) -> &[u8] {
        &self.chunk
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            return polled;
        }
        // Every answer left so far is in this chunk (tonic yields a chunk once it has encoded
        // an answer), or went with an earlier one.
        let held = self.handoff.take();
        match polled {
            Poll::Ready(Some(Ok(frame))) if !held.is_empty() => match frame.into_data() {
                Ok(chunk) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(Carried {
                    chunk,
                    _held: held,
                }))))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
