//! A follower's replication of one partition from its leader.
//!
//! 1. Ask the leader where this replica's latest epoch ended (OffsetForLeaderEpoch) and
//!    truncate anything past it: a replica never keeps records the leader does not have.
//! 2. Open a ReplicaFetch stream, send the local log end offset, append what comes back
//!    (batches keep the leader's offsets and epochs), adopt the leader's high watermark, send
//!    the new log end offset, and so on.
//!
//! Any error ends the session; it starts over after a short backoff, for as long as this
//! replica follows the same leader in the same epoch (the replica manager aborts the task when
//! that changes).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weir_meta::NodeId;
use weir_proto::broker::v1 as pb;
use weir_proto::broker::v1::replication_client::ReplicationClient;
use weir_proto::common::v1::ErrorCode;

use crate::manager::ReplicaManager;
use crate::partition::Partition;

/// Bytes asked per replica fetch answer.
const FETCH_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// How long the leader may hold an answer waiting for new batches.
const FETCH_MAX_WAIT_MS: u32 = 500;

/// Replicates `part` from `leader` in `epoch` until aborted or no longer following it.
pub async fn run(manager: Arc<ReplicaManager>, part: Arc<Partition>, leader: NodeId, epoch: i32) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if part.following() != Some((Some(leader), epoch)) {
            return;
        }
        match session(&manager, &part, leader, epoch).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(reason) => {
                tracing::debug!(topic = %part.topic, partition = part.index, leader, %reason, "replica fetch session ended");
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| e.to_string())
}

async fn session(
    manager: &Arc<ReplicaManager>,
    part: &Arc<Partition>,
    leader: NodeId,
    epoch: i32,
) -> Result<(), String> {
    let addr = manager
        .broker_address(leader)
        .ok_or("leader address unknown")?;
    let channel = manager.channel(&addr).ok_or("bad leader address")?;
    let mut client = ReplicationClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);

    // 1. Truncate to where our latest epoch ended on the leader.
    if let Some(latest) = part.latest_epoch() {
        let req = pb::OffsetForLeaderEpochRequest {
            topic: part.topic.clone(),
            partition: part.index,
            leader_epoch: latest,
            current_leader_epoch: epoch,
        };
        let r = client
            .offset_for_leader_epoch(req)
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        if let Some(e) = r.error {
            return Err(format!("OffsetForLeaderEpoch: {}", e.message));
        }
        let leo = part.view().log_end;
        if r.end_offset >= 0 && r.end_offset < leo {
            tracing::info!(topic = %part.topic, partition = part.index, from = leo, to = r.end_offset, "truncating divergent tail");
            let p = Arc::clone(part);
            let to = r.end_offset;
            blocking(move || p.truncate_to(to))
                .await?
                .map_err(|e| e.to_string())?;
        }
    }

    // 2. Fetch.
    let (tx, rx) = mpsc::channel(2);
    let position = |fetch_offset: i64| pb::ReplicaFetchRequest {
        topic: part.topic.clone(),
        partition: part.index,
        replica_id: manager.broker_id(),
        leader_epoch: epoch,
        fetch_offset,
        max_bytes: FETCH_MAX_BYTES,
        max_wait_ms: FETCH_MAX_WAIT_MS,
    };
    tx.send(position(part.view().log_end))
        .await
        .map_err(|e| e.to_string())?;
    let mut responses = client
        .replica_fetch(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    loop {
        let Some(r) = responses.message().await.map_err(|e| e.to_string())? else {
            return Err("leader closed the stream".into());
        };
        if let Some(e) = r.error {
            if e.code == ErrorCode::OffsetOutOfRange as i32
                && part.view().log_end < r.log_start_offset
            {
                // The leader's log starts past ours: start over empty at its log start.
                let p = Arc::clone(part);
                let start = r.log_start_offset;
                blocking(move || p.reset_to(start))
                    .await?
                    .map_err(|e| e.to_string())?;
            }
            return Err(format!("ReplicaFetch: {}", e.message));
        }
        if part.following() != Some((Some(leader), epoch)) {
            return Ok(());
        }
        let p = Arc::clone(part);
        let hw = r.high_watermark;
        blocking(move || p.append_as_follower(r.batches, hw))
            .await?
            .map_err(|e| e.to_string())?;
        if tx.send(position(part.view().log_end)).await.is_err() {
            return Err("request stream closed".into());
        }
    }
}
