//! The leader's side of replication: the `Replication` gRPC service — each follower's
//! ReplicaFetch session (its positions checked, recorded, answered with the batches after
//! them and the high watermark) and OffsetForLeaderEpoch, which a follower reconciles with
//! before it fetches ([`super::follower`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, Semaphore};
use tonic::{Request, Response, Status, Streaming};
use weir_proto::broker::v1 as pb;

use weir_meta::NodeId;

use crate::budget::{self, Held};
use crate::error::BrokerError;
use crate::manager::ReplicaManager;
use crate::replication::isr;
use crate::service::BrokerService;

/// Largest replica fetch answer, whatever a follower asks for.
pub const MAX_REPLICA_FETCH_BYTES: usize = 64 * 1024 * 1024;

/// Bytes of replica fetch answers one follower (by the broker id it fetches as) may hold at
/// once: a follower catching up on many partitions, or a stalled one, takes at most this of
/// [`crate::service::REPLICATION_MEMORY_BYTES`], and the others keep replicating.
pub const FOLLOWER_MEMORY_BYTES: usize = 128 * 1024 * 1024;

/// The leader's replication budgets: the node's and each follower's.
#[derive(Debug)]
pub struct ReplicationBudgets {
    /// All replica fetch answers of this node ([`crate::service::REPLICATION_MEMORY_BYTES`]).
    pub node: Arc<Semaphore>,
    /// Each follower's share ([`FOLLOWER_MEMORY_BYTES`]), by broker id; at most one entry
    /// per registered broker (only they may fetch).
    followers: std::sync::Mutex<std::collections::HashMap<NodeId, Arc<Semaphore>>>,
}

impl ReplicationBudgets {
    /// Budgets with `node` bytes for the whole node.
    pub fn new(node: usize) -> Self {
        Self {
            node: Arc::new(Semaphore::new(node)),
            followers: Default::default(),
        }
    }

    /// Follower `id`'s budget.
    fn follower(&self, id: NodeId) -> Arc<Semaphore> {
        use weir_common::sync::MutexExt;
        Arc::clone(
            self.followers
                .locked()
                .entry(id)
                .or_insert_with(|| Arc::new(Semaphore::new(FOLLOWER_MEMORY_BYTES))),
        )
    }
}

type ReplicaStream = Pin<Box<dyn Stream<Item = Result<pb::ReplicaFetchResponse, Status>> + Send>>;

fn replica_error(e: &BrokerError, log_start: i64) -> pb::ReplicaFetchResponse {
    pb::ReplicaFetchResponse {
        log_start_offset: log_start,
        ..e.answer_plain()
    }
}

/// Whether `replica` may fetch as a follower now: a registered broker that the controller has
/// not fenced. (Whether it is a replica of the partition is checked by the partition.) Until
/// brokers authenticate, this is what keeps a stray client from posing as a known follower;
/// the positions it claims are checked against the leader's log either way.
fn check_replica(manager: &ReplicaManager, replica: u64) -> Result<(), BrokerError> {
    let state = manager.metadata();
    match state.brokers.get(&replica) {
        Some(b) if !b.fenced => Ok(()),
        Some(_) => Err(BrokerError::ReplicaNotAvailable {
            replica,
            why: "is fenced; it may fetch again once the controller unfences it",
        }),
        None => Err(BrokerError::ReplicaNotAvailable {
            replica,
            why: "is not registered",
        }),
    }
}

/// The leader's side of one follower's fetch session.
async fn replica_session(
    manager: Arc<ReplicaManager>,
    mut inbound: Streaming<pb::ReplicaFetchRequest>,
    tx: mpsc::Sender<budget::Item<pb::ReplicaFetchResponse>>,
    budgets: Arc<ReplicationBudgets>,
) {
    let Ok(Some(first)) = inbound.message().await else {
        return;
    };
    let Some(part) = manager.partition(&first.topic, first.partition) else {
        let e = BrokerError::unknown(&first.topic, first.partition);
        budget::send_unheld(&tx, replica_error(&e, -1)).await;
        return;
    };
    let replica = first.replica_id;
    // The stream fetches as one follower for its whole life: its budget, looked up once.
    let follower_budget = budgets.follower(replica);
    let mut request = first;
    let mut views = part.subscribe();
    loop {
        if let Err(e) = check_replica(&manager, replica) {
            budget::send_unheld(&tx, replica_error(&e, part.view().log_start)).await;
            return;
        }
        match part.record_follower_fetch(
            replica,
            request.leader_epoch,
            request.fetch_offset,
            request.replica_epoch,
        ) {
            Ok(Some(change)) => isr::request_change(&manager, Arc::clone(&part), change),
            Ok(None) => {}
            Err(e) => {
                budget::send_unheld(&tx, replica_error(&e, part.view().log_start)).await;
                return;
            }
        }
        // This answer's slot before it is read: the last one has been taken (the follower
        // asks again only once it has it, so this is at once). The fetch is recorded first,
        // so the high watermark never waits on the transport.
        let Ok(slot) = tx.reserve().await else {
            return;
        };
        let offset = request.fetch_offset;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(u64::from(request.max_wait_ms.clamp(1, 5000)));
        loop {
            let view = *views.borrow_and_update();
            if let Err(e) = part.check_fetch(&view, offset) {
                slot.send(budget::unheld(replica_error(&e, view.log_start)));
                return;
            }
            if view.log_end > offset {
                break;
            }
            match tokio::time::timeout_at(deadline, views.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
        let max_bytes = (request.max_bytes as usize).clamp(1, MAX_REPLICA_FETCH_BYTES);
        let (view, batches, held) = if part.view().log_end > offset {
            // Room for a whole answer first: this follower's share, then the node's.
            let Some(mine) = budget::room(&follower_budget, max_bytes, tx.closed()).await else {
                return;
            };
            let Some(node) = budget::room(&budgets.node, max_bytes, tx.closed()).await else {
                return;
            };
            // The view as of the read, not of before the wait: the follower's progress is
            // recorded against it.
            let view = part.view();
            match part.read(offset, max_bytes, i64::MAX) {
                Ok(b) => {
                    let held = Held::of([budget::keep(mine, b.len()), budget::keep(node, b.len())]);
                    (view, b, held)
                }
                Err(e) => {
                    slot.send(budget::unheld(replica_error(&e, view.log_start)));
                    return;
                }
            }
        } else {
            (part.view(), Bytes::new(), Held::default())
        };
        part.record_answer(replica, view.log_end);
        let response = pb::ReplicaFetchResponse {
            error: None,
            batches,
            high_watermark: view.high_watermark,
            log_start_offset: view.log_start,
        };
        slot.send((Ok(response), held));
        request = match inbound.message().await {
            Ok(Some(next)) => next,
            _ => return,
        };
    }
}

#[tonic::async_trait]
impl pb::replication_server::Replication for BrokerService {
    type ReplicaFetchStream = ReplicaStream;

    async fn replica_fetch(
        &self,
        req: Request<Streaming<pb::ReplicaFetchRequest>>,
    ) -> Result<Response<Self::ReplicaFetchStream>, Status> {
        // One answer queued: with the one the transport holds, at most two per stream (the
        // next is read only once it has the slot), each counted in the replication budgets.
        let handoff = req.extensions().get::<budget::Handoff>().cloned();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(replica_session(
            Arc::clone(self.manager()),
            req.into_inner(),
            tx,
            Arc::clone(self.replication_budgets()),
        ));
        Ok(Response::new(Box::pin(budget::Budgeted::new(rx, handoff))))
    }

    async fn offset_for_leader_epoch(
        &self,
        req: Request<pb::OffsetForLeaderEpochRequest>,
    ) -> Result<Response<pb::OffsetForLeaderEpochResponse>, Status> {
        let req = req.into_inner();
        let result = self.leader(&req.topic, req.partition).and_then(|part| {
            let current = part.leader_epoch().unwrap_or(-1);
            if req.current_leader_epoch != current {
                return Err(BrokerError::LeaderEpoch {
                    asked: req.current_leader_epoch,
                    current,
                });
            }
            Ok(part
                .end_offset_for_epoch(req.leader_epoch)
                .unwrap_or((-1, -1)))
        });
        let response = match result {
            Ok((leader_epoch, end_offset)) => pb::OffsetForLeaderEpochResponse {
                error: None,
                leader_epoch,
                end_offset,
            },
            Err(e) => e.answer_plain(),
        };
        Ok(Response::new(response))
    }
}
