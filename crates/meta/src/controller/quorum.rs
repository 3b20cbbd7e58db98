//! The quorum itself: learners joining (bounded, never re-pointing a voter), elections
//! triggered on request (rate-limited), and the quorum's description.

use std::time::{Duration, Instant};

use openraft::BasicNode;
use weir_common::sync::MutexExt;
use weir_proto::controller::v1 as pb;

use super::{brokers, Controller};
use crate::command::MetaError;
use crate::state::MetadataState;
use crate::types::NodeId;
use crate::wire::broker_to_wire;

/// Least time between two elections triggered on one node through TriggerElection.
pub const ELECTION_TRIGGER_INTERVAL: Duration = Duration::from_secs(5);

impl Controller {
    /// Adds node `id` at `address` as a learner (a node that replicates the metadata and does
    /// not vote). Joining again at the same address is a no-op.
    pub(super) async fn join_quorum(&self, id: NodeId, address: String) -> Result<(), MetaError> {
        brokers::check_registration(&address, "")?;
        let (known, voter, members) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            (
                membership.get_node(&id).map(|n| n.addr.clone()),
                membership.voter_ids().any(|v| v == id),
                membership.nodes().count(),
            )
        };
        if known.as_deref() == Some(address.as_str()) {
            return Ok(());
        }
        // A voter's address is part of the quorum's configuration: JoinQuorum (open to anyone
        // until security lands) must not re-point it.
        if voter || id == 0 {
            return Err(MetaError::InvalidRequest(format!(
                "node {id} is a voter (or 0) and cannot join as a learner"
            )));
        }
        if known.is_none() && members >= brokers::MAX_BROKERS {
            return Err(MetaError::InvalidRequest(format!(
                "the quorum already has {} members",
                brokers::MAX_BROKERS
            )));
        }
        self.raft
            .add_learner(id, BasicNode { addr: address }, false)
            .await
            .map(|_| ())
            .map_err(|e| MetaError::Internal(format!("adding learner failed: {e}")))
    }

    /// Starts an election on this node, at most once per [`ELECTION_TRIGGER_INTERVAL`] (open
    /// to anyone until security lands, and each one deposes the leader; a hand-over at
    /// shutdown needs one).
    pub(super) async fn trigger_election(&self) -> Result<(), MetaError> {
        {
            let mut last = self.last_election_trigger.locked();
            if last.is_some_and(|t| t.elapsed() < ELECTION_TRIGGER_INTERVAL) {
                return Err(MetaError::ElectionThrottled {
                    interval_secs: ELECTION_TRIGGER_INTERVAL.as_secs(),
                });
            }
            *last = Some(Instant::now());
        }
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| MetaError::Internal(e.to_string()))
    }

    /// The cluster as this leader sees it: brokers, voters and learners with their replication
    /// lag, the metadata version and the term.
    pub(super) fn describe_cluster(&self, state: &MetadataState) -> pb::DescribeClusterResponse {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let last = m.last_log_index.unwrap_or(0);
        let member = |id: &NodeId| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(if *id == self.id { last } else { 0 }, |l| l.index);
            pb::QuorumMember {
                id: *id,
                address: membership
                    .get_node(id)
                    .map(|n| n.addr.clone())
                    .unwrap_or_default(),
                match_index: matched,
                lag: last.saturating_sub(matched),
            }
        };
        pb::DescribeClusterResponse {
            error: None,
            controller_leader: m.current_leader.unwrap_or(0),
            brokers: state.brokers.values().map(broker_to_wire).collect(),
            voters: membership.voter_ids().map(|id| member(&id)).collect(),
            learners: membership.learner_ids().map(|id| member(&id)).collect(),
            metadata_version: state.version,
            term: m.current_term,
        }
    }
}
