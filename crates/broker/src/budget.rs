//! Node-wide memory budgets for stream answers: an answer takes its bytes from a budget before
//! it is read from the log, and gives them back only when the transport asks for the next one
//! (an answer handed to a reader that does not read stays in the HTTP/2 send buffer, and is
//! still counted). Streams whose readers never read therefore cost the node at most the
//! budget, not their number times their answers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::Status;

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

/// Sends an answer that holds nothing of the budgets (an error, an empty answer); a stream
/// whose reader went away is not an error here (the sender ends at its next send).
pub async fn send_unheld<T>(tx: &mpsc::Sender<Item<T>>, answer: T) {
    let _ = tx.send((Ok(answer), Held::default())).await;
}

/// The answers of one stream, each holding its share of the budget until the transport asks
/// for the next one.
pub struct Budgeted<T> {
    rx: mpsc::Receiver<Item<T>>,
    held: Held,
}

impl<T> Budgeted<T> {
    /// The stream of what `rx` receives.
    pub fn new(rx: mpsc::Receiver<Item<T>>) -> Self {
        Self {
            rx,
            held: Held::default(),
        }
    }
}

impl<T> Stream for Budgeted<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Asked for the next answer: the transport has taken the last one.
        self.held = Held::default();
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((answer, held))) => {
                self.held = held;
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
