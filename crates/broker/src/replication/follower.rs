//! The follower's side of replication: one partition, from its leader.
//!
//! 1. Reconcile with the leader (Kafka's OffsetForLeaderEpoch, KIP-101/279): ask where this
//!    replica's latest epoch ended on the leader, truncate to min(the leader's end offset, this
//!    replica's own end offset for the epoch the leader answered), and repeat until both agree
//!    on the epoch. A replica never keeps records the leader does not have.
//! 2. Open a ReplicaFetch stream, send the local log end offset, append what comes back
//!    (batches keep the leader's offsets and epochs), adopt the leader's high watermark, send
//!    the new log end offset, and so on.
//!
//! Every change to the local log names the leader and epoch it was computed for, and the
//! partition refuses it once the replica no longer follows that leader in that epoch
//! ([`Partition::truncate_to`] and friends check under the partition's lock), so a session
//! still running after a leader change cannot cut records the new role needs.
//!
//! Any error ends the session; it starts over after a short backoff ([`Backoff`]), for as
//! long as this replica follows the same leader in the same epoch (the replica manager aborts
//! the task when that changes).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weir_meta::NodeId;
use weir_proto::broker::v1 as pb;
use weir_proto::broker::v1::replication_client::ReplicationClient;
use weir_proto::common::v1::ErrorCode;

use crate::error::BrokerError;
use crate::manager::ReplicaManager;
use crate::partition::Partition;

/// Bytes asked per replica fetch answer.
const FETCH_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// How long the leader may hold an answer waiting for new batches.
const FETCH_MAX_WAIT_MS: u32 = 500;
/// A fetch round (answer received to next position sent) slower than this is logged at debug
/// level with where the time went.
const SLOW_ROUND: Duration = Duration::from_millis(5);
/// Rounds of OffsetForLeaderEpoch in one reconciliation. Each round that does not finish
/// drops at least one epoch from the local cache, so this only bounds a pathological history;
/// the next session goes on from where this one stopped.
const MAX_RECONCILE_ROUNDS: usize = 64;

/// Why a fetch session ended.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The leader's address is not in the metadata (yet), or is malformed.
    #[error("leader {0} has no usable address in the metadata")]
    LeaderAddress(NodeId),
    /// The RPC itself failed (connection, timeout, stream reset).
    #[error("{call}: {status}")]
    Rpc {
        /// Which call.
        call: &'static str,
        /// What tonic said.
        status: tonic::Status,
    },
    /// The leader answered an error code.
    #[error("{call} answered {code:?}: {message}")]
    Leader {
        /// Which call.
        call: &'static str,
        /// The wire code.
        code: ErrorCode,
        /// The leader's message.
        message: String,
    },
    /// The leader knows no epoch at or below the one asked: nothing to reconcile against yet.
    #[error("the leader knows no epoch at or below {0}")]
    UndefinedEpoch(i32),
    /// Reconciliation did not converge within a bounded number of rounds (64).
    #[error("epochs still disagree after {0} rounds of OffsetForLeaderEpoch")]
    NoAgreement(usize),
    /// The local partition refused the change (role changed, log offline, bad batch).
    #[error("local log: {0}")]
    Local(#[from] BrokerError),
    /// A blocking task died.
    #[error("blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The leader closed the stream, or our request stream closed.
    #[error("the fetch stream closed")]
    Closed,
}

impl FetchError {
    fn leader(call: &'static str, e: weir_proto::common::v1::Error) -> Self {
        Self::Leader {
            call,
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::UnknownServerError),
            message: e.message,
        }
    }
}

/// The wait before a session starts over, after a failed one: [`Backoff::FIRST`], doubling
/// up to [`Backoff::MAX`] while sessions keep failing at once.
///
/// The first retry is short on purpose. The commonest failure is a race, not an outage: when
/// a partition is created or its leader changes, each broker applies the metadata on its own,
/// so a follower often asks before its leader knows it leads (UNKNOWN_TOPIC_OR_PARTITION,
/// NOT_LEADER_OR_FOLLOWER, a newer leader epoch), and every acks=all produce waits for the
/// follower meanwhile. A first retry at 100 ms (as before) put a 100 ms stall at the start of
/// every new topic, which alone made the RF 3 fixed-rate p99 about 60 ms (docs/BENCHMARKS.md).
/// A leader that is really down costs a handful of quick retries before the backoff reaches
/// its one-second ceiling (Kafka's `replica.fetch.backoff.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff(Duration);

impl Backoff {
    /// The wait after a session that failed (or after one that ran long, then failed).
    pub const FIRST: Duration = Duration::from_millis(5);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(1);

    /// A fresh backoff.
    pub fn new() -> Self {
        Self(Self::FIRST)
    }

    /// The wait after a session that lasted `ran`: a session that ran at least [`Self::MAX`]
    /// made progress, so the backoff starts over; one that failed at once waits twice as long
    /// as the last.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= Self::MAX {
            self.0 = Self::FIRST;
        }
        let wait = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        wait
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Replicates `part` from `leader` in `epoch` until aborted or no longer following it.
pub async fn run(manager: Arc<ReplicaManager>, part: Arc<Partition>, leader: NodeId, epoch: i32) {
    let mut backoff = Backoff::new();
    loop {
        if part.following() != Some((Some(leader), epoch)) {
            return;
        }
        let started = Instant::now();
        if let Err(reason) = session(&manager, &part, leader, epoch).await {
            tracing::debug!(topic = %part.topic, partition = part.index, leader, %reason, "replica fetch session ended");
        }
        tokio::time::sleep(backoff.next(started.elapsed())).await;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, FetchError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// Where to truncate after one OffsetForLeaderEpoch answer, Kafka's rule (KIP-279):
/// `leader` is the answer (the largest epoch the leader knows at or below the one asked, and
/// where it ended there), `ours` this replica's own end for that epoch (the largest local
/// epoch at or below it, and where that ended), `log_end` this replica's log end offset.
/// Returns the offset to truncate to and whether the epochs now agree; when they do not, the
/// truncation drops the local epoch the leader does not know and the caller asks again.
pub fn truncation_point(leader: (i32, i64), ours: Option<(i32, i64)>, log_end: i64) -> (i64, bool) {
    let (leader_epoch, leader_end) = leader;
    match ours {
        Some((epoch, end)) if epoch == leader_epoch => (leader_end.min(end).min(log_end), true),
        Some((_, end)) => (end.min(log_end), false),
        None => (leader_end.min(log_end), true),
    }
}

/// Reconciles `part` (following `leader` in `epoch`) with its leader, asking the leader with
/// `ask(latest local epoch)` for `(epoch, end offset)` until both agree (see the module docs).
pub async fn reconcile<F, Fut>(
    part: &Arc<Partition>,
    leader: NodeId,
    epoch: i32,
    mut ask: F,
) -> Result<(), FetchError>
where
    F: FnMut(i32) -> Fut,
    Fut: Future<Output = Result<(i32, i64), FetchError>>,
{
    for _ in 0..MAX_RECONCILE_ROUNDS {
        let Some(latest) = part.latest_epoch() else {
            return Ok(()); // nothing written under any epoch: nothing can diverge
        };
        let (leader_epoch, leader_end) = ask(latest).await?;
        if leader_epoch < 0 || leader_end < 0 {
            return Err(FetchError::UndefinedEpoch(latest));
        }
        let ours = part.end_offset_for_epoch(leader_epoch);
        let log_end = part.view().log_end;
        let (to, agreed) = truncation_point((leader_epoch, leader_end), ours, log_end);
        if to < log_end || !agreed {
            if to < log_end {
                tracing::info!(topic = %part.topic, partition = part.index, from = log_end, to, leader_epoch, "truncating divergent tail");
            }
            let p = Arc::clone(part);
            blocking(move || p.truncate_to(to, leader, epoch)).await?;
        }
        if agreed {
            return Ok(());
        }
    }
    Err(FetchError::NoAgreement(MAX_RECONCILE_ROUNDS))
}

async fn session(
    manager: &Arc<ReplicaManager>,
    part: &Arc<Partition>,
    leader: NodeId,
    epoch: i32,
) -> Result<(), FetchError> {
    let channel = manager
        .broker_address(leader)
        .and_then(|addr| manager.leader_channel(&addr))
        .ok_or(FetchError::LeaderAddress(leader))?;
    let mut client = ReplicationClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);

    // 1. Reconcile: truncate whatever the leader does not have.
    let asker = client.clone();
    reconcile(part, leader, epoch, |latest| {
        let mut client = asker.clone();
        let req = pb::OffsetForLeaderEpochRequest {
            topic: part.topic.clone(),
            partition: part.index,
            leader_epoch: latest,
            current_leader_epoch: epoch,
        };
        async move {
            let r = client
                .offset_for_leader_epoch(req)
                .await
                .map_err(|status| FetchError::Rpc {
                    call: "OffsetForLeaderEpoch",
                    status,
                })?
                .into_inner();
            match r.error {
                Some(e) => Err(FetchError::leader("OffsetForLeaderEpoch", e)),
                None => Ok((r.leader_epoch, r.end_offset)),
            }
        }
    })
    .await?;

    // 2. Fetch.
    let (tx, rx) = mpsc::channel(2);
    let replica_epoch = manager.broker_epoch();
    let position = |fetch_offset: i64| pb::ReplicaFetchRequest {
        topic: part.topic.clone(),
        partition: part.index,
        replica_id: manager.broker_id(),
        leader_epoch: epoch,
        fetch_offset,
        max_bytes: FETCH_MAX_BYTES,
        max_wait_ms: FETCH_MAX_WAIT_MS,
        replica_epoch,
    };
    tx.send(position(part.view().log_end))
        .await
        .map_err(|_| FetchError::Closed)?;
    let rpc = |status| FetchError::Rpc {
        call: "ReplicaFetch",
        status,
    };
    let mut responses = client
        .replica_fetch(ReceiverStream::new(rx))
        .await
        .map_err(rpc)?
        .into_inner();
    loop {
        let Some(r) = responses.message().await.map_err(rpc)? else {
            return Err(FetchError::Closed);
        };
        if let Some(e) = r.error {
            if e.code == ErrorCode::OffsetOutOfRange as i32
                && part.view().log_end < r.log_start_offset
            {
                // The leader's log starts past ours: start over empty at its log start.
                let p = Arc::clone(part);
                let start = r.log_start_offset;
                blocking(move || p.reset_to(start, leader, epoch)).await?;
            }
            return Err(FetchError::leader("ReplicaFetch", e));
        }
        if part.following() != Some((Some(leader), epoch)) {
            return Ok(());
        }
        let p = Arc::clone(part);
        let hw = r.high_watermark;
        let received = Instant::now();
        let bytes = r.batches.len();
        let (started, appended) = blocking(move || {
            let started = Instant::now();
            p.append_as_follower(r.batches, hw, leader, epoch)?;
            Ok((started, Instant::now()))
        })
        .await?;
        if tx.send(position(part.view().log_end)).await.is_err() {
            return Err(FetchError::Closed);
        }
        let sent = Instant::now();
        if sent.duration_since(received) >= SLOW_ROUND {
            let ms =
                |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
            tracing::debug!(
                topic = %part.topic,
                partition = part.index,
                bytes,
                total_ms = ms(received, sent),
                blocking_queue_ms = ms(received, started),
                append_ms = ms(started, appended),
                send_ms = ms(appended, sent),
                "slow replica fetch round"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_retries_a_failed_session_within_milliseconds_then_backs_off_to_a_second() {
        let mut b = Backoff::new();
        let waits: Vec<_> = (0..10).map(|_| b.next(Duration::ZERO)).collect();
        // The race with the leader's own metadata costs one short wait, not 100 ms.
        assert!(
            waits[0] <= Duration::from_millis(10),
            "first retry after {:?}",
            waits[0]
        );
        assert!(waits.windows(2).all(|w| w[1] >= w[0]), "{waits:?}");
        assert_eq!(
            *waits.last().unwrap_or(&Duration::ZERO),
            Backoff::MAX,
            "{waits:?}"
        );
    }

    #[test]
    fn a_session_that_ran_long_starts_the_backoff_over() {
        let mut b = Backoff::new();
        for _ in 0..10 {
            b.next(Duration::ZERO);
        }
        assert_eq!(b.next(Duration::from_secs(5)), Backoff::FIRST);
        assert_eq!(b.next(Duration::ZERO), Backoff::FIRST * 2);
    }
}
