//! Consumer fetch streams: answers as committed batches arrive (at least `min_bytes`, at most
//! `max_bytes`), heartbeats with the high watermark every `max_wait`, each answer holding its
//! share of the node's fetch memory ([`super::FETCH_MEMORY_BYTES`]) until the transport takes it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, Semaphore};
use tonic::Status;
use weir_proto::broker::v1 as pb;
use weir_storage::batch::{BatchHeader, Batches};

use super::{BrokerService, MAX_FETCH_BYTES};
use crate::budget::{self, Held};
use crate::error::BrokerError;
use crate::partition::Partition;
use crate::wire::record_to_wire;

pub(super) type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::FetchResponse, Status>> + Send>>;

/// A fetch answer and its share of [`super::FETCH_MEMORY_BYTES`].
type FetchItem = budget::Item<pb::FetchResponse>;

/// The offset after the last batch in `bytes`.
fn next_offset_after(bytes: &Bytes, fallback: i64) -> i64 {
    let mut next = fallback;
    let mut rest: &[u8] = bytes;
    while let Ok(h) = BatchHeader::parse(rest) {
        next = h.next_offset();
        if h.total_size() > rest.len() {
            break;
        }
        rest = &rest[h.total_size()..];
    }
    next
}

/// One consumer fetch stream: answers as committed batches arrive, heartbeats (empty answers
/// with the high watermark) every `max_wait`, ends on error or disconnect.
async fn fetch_loop(
    part: Arc<Partition>,
    req: pb::FetchRequest,
    tx: mpsc::Sender<FetchItem>,
    memory: Arc<Semaphore>,
) {
    let max_bytes = (req.max_bytes as usize).clamp(1, MAX_FETCH_BYTES);
    let max_bytes = if req.max_bytes == 0 {
        1024 * 1024
    } else {
        max_bytes
    };
    let max_wait = Duration::from_millis(u64::from(req.max_wait_ms.clamp(1, 30_000)));
    // A wait for more than one answer can hold would never end early and would re-read up to
    // `max_bytes` on every append (`min_bytes: u32::MAX`): at most `max_bytes`.
    let min_bytes = (req.min_bytes as usize).min(max_bytes);
    let mut offset = req.offset;
    let mut views = part.subscribe();
    loop {
        // This answer's slot first: it is read only once the last one was taken.
        let Ok(slot) = tx.reserve().await else {
            return; // the consumer went away
        };
        let deadline = tokio::time::Instant::now() + max_wait;
        // Wait for committed data past `offset` (and min_bytes of it), up to max_wait. An
        // answer too small to send is dropped while waiting (it would otherwise sit outside
        // the budget), and read again when more arrives or the wait ends.
        let mut waited = false;
        let (bytes, held) = loop {
            let view = *views.borrow_and_update();
            if let Err(e) = part.check_fetch(&view, offset) {
                slot.send(budget::unheld(e.answer()));
                return;
            }
            if view.high_watermark > offset {
                // Room for a whole answer first.
                let Some(room) = budget::room(&memory, max_bytes, tx.closed()).await else {
                    return;
                };
                let bytes = match part.read(offset, max_bytes, view.high_watermark) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        slot.send(budget::unheld(e.answer()));
                        return;
                    }
                };
                if !bytes.is_empty() && (bytes.len() >= min_bytes || waited) {
                    let held = Held::of([budget::keep(room, bytes.len())]);
                    break (bytes, held);
                }
            }
            if waited {
                // The wait is over and nothing is committed past `offset`: a heartbeat.
                break (Bytes::new(), Held::default());
            }
            match tokio::time::timeout_at(deadline, views.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => waited = true,
            }
        };
        let view = part.view();
        let next = next_offset_after(&bytes, offset);
        let mut response = pb::FetchResponse {
            error: None,
            high_watermark: view.high_watermark,
            log_start_offset: view.log_start,
            next_offset: next,
            ..Default::default()
        };
        if req.decode {
            for batch in Batches::new(bytes) {
                let records = batch.and_then(|b| b.records());
                match records {
                    Ok(records) => response.records.extend(
                        records
                            .into_iter()
                            .filter(|r| r.offset >= offset)
                            .map(record_to_wire),
                    ),
                    Err(e) => {
                        let e = BrokerError::CorruptMessage(e.to_string());
                        slot.send(budget::unheld(e.answer()));
                        return;
                    }
                }
            }
        } else {
            response.batches = bytes;
        }
        slot.send((Ok(response), held));
        offset = next;
    }
}

impl BrokerService {
    /// The answers to one fetch request: an error answer at once when this broker does not
    /// lead the partition, otherwise a stream fed by [`fetch_loop`]; their budget shares go
    /// through `handoff` when the service is wrapped in [`crate::limits::Limited`].
    pub(super) async fn fetch_answers(
        &self,
        req: pb::FetchRequest,
        handoff: Option<budget::Handoff>,
    ) -> FetchStream {
        let (tx, rx) = mpsc::channel(1);
        match self.leader(&req.topic, req.partition) {
            Ok(part) => {
                tokio::spawn(fetch_loop(part, req, tx, Arc::clone(&self.fetch_memory)));
            }
            Err(e) => {
                budget::send_unheld(&tx, e.answer()).await;
            }
        }
        Box::pin(budget::Budgeted::new(rx, handoff))
    }
}
