//! ISR changes, one path for both directions. A partition decides *what* to ask for —
//! [`Partition::record_follower_fetch`] an expansion when a follower has caught up inside the
//! leader's epoch, [`Partition::isr_shrink`] a shrink when one has lagged longer than
//! `replica.lag.time.max.ms` — and marks the change in flight (its members count in the high
//! watermark until it is answered, KIP-497). This module sends it to the controller as an
//! AlterPartition (guarded there by leader epoch, partition epoch and, for added members, their
//! broker epochs: KIP-903) and hands the answer back to the partition.

use std::sync::Arc;
use std::time::Duration;

use weir_proto::controller::v1 as cpb;

use crate::manager::ReplicaManager;
use crate::partition::{IsrChange, Partition};

/// How long one AlterPartition may take before the change is given up (and asked again).
const ALTER_PARTITION_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the controller to shrink the ISR of led partitions whose followers lag.
pub fn check_shrink(manager: &Arc<ReplicaManager>) {
    for part in manager.all_partitions() {
        if let Some(change) = part.isr_shrink(manager.replica_lag_time_max()) {
            tracing::info!(topic = %part.topic, partition = part.index, isr = ?change.isr, "shrinking ISR");
            request_change(manager, part, change);
        }
    }
}

/// Sends an ISR change to the controller in the background; the partition adopts the answer
/// (and may ask again at the next fetch or check).
pub fn request_change(manager: &Arc<ReplicaManager>, part: Arc<Partition>, change: IsrChange) {
    let manager = Arc::clone(manager);
    tokio::spawn(async move {
        let Some(mut client) = manager.controller() else {
            part.isr_change_done(None);
            return;
        };
        let req = cpb::AlterPartitionRequest {
            topic: part.topic.clone(),
            partition: part.index,
            leader: manager.broker_id(),
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr.clone(),
            added: change
                .added
                .iter()
                .map(|(id, epoch)| cpb::BrokerEpoch {
                    id: *id,
                    epoch: *epoch,
                })
                .collect(),
        };
        let result =
            tokio::time::timeout(ALTER_PARTITION_TIMEOUT, client.alter_partition(req)).await;
        match result {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                if let Some(e) = &r.error {
                    tracing::info!(topic = %part.topic, partition = part.index, error = %e.message, "ISR change refused");
                }
                let adopted = r
                    .partition
                    .map(|p| (p.leader_epoch, p.partition_epoch, p.isr));
                part.isr_change_done(adopted);
            }
            _ => part.isr_change_done(None),
        }
    });
}
