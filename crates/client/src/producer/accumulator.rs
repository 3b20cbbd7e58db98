//! The accumulator: per topic, one open batch per partition taking records as `send`
//! appends them, and the sticky partition for keyless records.
//!
//! A batch is open until it is full (closed by `send`), its linger expires while its partition
//! can send (closed by the sender task), or a flush or shutdown closes everything
//! ([`Shared::close_open`]). Closing gives the batch an id and registers it in
//! `Shared::pending`; the [`Closed`] batch is then encoded outside the accumulator lock and
//! handed to the sender task.
//!
//! The accumulator sits behind a std `Mutex`: every critical section is a few appends or a
//! scan of the open batches, none spans an `.await`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;
use weir_common::sync::MutexExt;

use weir_storage::BatchBuilder;

use super::record::Completion;
use super::Shared;
use crate::partitioner::Sticky;

/// A partition's batch still taking records.
pub(super) struct OpenBatch {
    /// The RecordBatch v2 being built: records are encoded as they are appended, so a
    /// batch is encoded once, however often it is sent. Its uncompressed size decides when
    /// the batch is full (`batch_size`).
    pub(super) builder: BatchBuilder,
    /// The batch's outcome, shared with its records' `DeliveryFuture`s: record `i` (the
    /// builder's `i`th) is stored at the batch's base offset plus `i`.
    pub(super) completion: Completion,
    /// Bytes of `buffer_memory` the batch's records hold; given back when the batch
    /// completes, which is what makes `send` wait once the buffer is full.
    pub(super) permits: usize,
    /// When the first record was appended: the linger counts from here, and so does the
    /// delivery timeout of the batch this becomes.
    pub(super) created: Instant,
}

/// A closed batch not yet encoded (encoding happens outside the accumulator lock).
pub(super) struct Closed {
    /// The batch's id, handed out when it closed (see [`Accumulator::next_batch_id`]).
    pub(super) id: u64,
    /// The topic it goes to.
    pub(super) topic: String,
    /// The partition it goes to.
    pub(super) partition: u32,
    /// The records, as they were when the batch closed.
    pub(super) open: OpenBatch,
}

/// One topic's open batches.
pub(super) struct TopicAcc {
    /// The open batch of each partition, indexed by partition number; `None` until a record
    /// arrives for it and again once its batch closes. The length is the topic's partition
    /// count, read from metadata when `send` first saw the topic; it bounds explicit
    /// partitions and is the modulus for keyed and sticky choices.
    pub(super) partitions: Vec<Option<OpenBatch>>,
    /// Where keyless records go: one partition until a batch of it closes, so keyless
    /// records fill batches instead of spreading one record per partition.
    pub(super) sticky: Sticky,
}

/// The open batches of every topic the producer has sent to.
#[derive(Default)]
pub(super) struct Accumulator {
    /// By topic name; an entry is made the first time `send` sees the topic and kept.
    pub(super) topics: HashMap<String, TopicAcc>,
    /// The id the next closed batch gets. Ids follow closing order, so within a partition
    /// they are send order (retries are requeued by id), and `flush` waits for every id
    /// below the value it read.
    pub(super) next_batch_id: u64,
}

impl Accumulator {
    /// Closes `open` (batch `partition` of `topic`): gives it an id and registers it pending.
    pub(super) fn close(
        &mut self,
        pending: &Mutex<BTreeSet<u64>>,
        topic: &str,
        partition: u32,
        open: OpenBatch,
    ) -> Closed {
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        pending.locked().insert(id);
        Closed {
            id,
            topic: topic.to_owned(),
            partition,
            open,
        }
    }
}

impl Shared {
    /// Closes every open batch (or only those whose linger expired at `now` and whose
    /// partition `can_send` now); returns them and, when `now` is given, the earliest linger
    /// deadline of those left open before it.
    ///
    /// A batch whose linger expired while its partition cannot take another request (its
    /// in-flight requests at the limit, or batches queued before it) stays open and keeps
    /// taking records until it is full or the partition can send, as in Kafka, where linger
    /// makes a batch ready to send, not closed. Closing it at linger instead split a backlog
    /// into many small batches, each a round trip of its own behind the in-flight limit: at
    /// a fixed rate near a partition's acks=all limit, the producer then fell behind for good.
    /// The partition's next answer wakes the sender to look again.
    pub(super) fn close_open(
        &self,
        now: Option<Instant>,
        mut can_send: impl FnMut(&str, u32) -> bool,
    ) -> (Vec<Closed>, Option<Instant>) {
        let linger = self.config.linger;
        let mut out = Vec::new();
        let mut next = None::<Instant>;
        let mut acc = self.acc.locked();
        let acc = &mut *acc;
        let mut taken = Vec::new();
        for (topic, t) in acc.topics.iter_mut() {
            let count = t.partitions.len() as u32;
            for (p, slot) in t.partitions.iter_mut().enumerate() {
                let Some(open) = slot else { continue };
                let due = open.created + linger;
                match now {
                    Some(now) if due > now => {
                        next = Some(next.map_or(due, |n| n.min(due)));
                    }
                    Some(_) if !can_send(topic, p as u32) => {}
                    _ => {
                        if let Some(open) = slot.take() {
                            t.sticky.batch_closed(p as u32, count);
                            taken.push((topic.clone(), p as u32, open));
                        }
                    }
                }
            }
        }
        for (topic, p, open) in taken {
            out.push(acc.close(&self.pending, &topic, p, open));
        }
        (out, next)
    }
}
