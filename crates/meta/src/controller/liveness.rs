//! Broker sessions: heartbeats keep a broker's session, a missed session timeout fences it (one
//! log entry), a fenced broker that has caught up with the metadata is unfenced; and, each tick,
//! unclean elections where a topic allows them.

use std::collections::HashMap;
use std::time::Instant;

use openraft::ServerState;
use weir_common::sync::MutexExt;
use weir_common::topic_config;

use super::Controller;
use crate::command::{Command, MetaError};
use crate::types::NodeId;

/// Broker sessions as the current leader sees them.
#[derive(Debug, Default)]
pub(super) struct Liveness {
    /// The term in which this node last started leading; `None` while not leader.
    leading_term: Option<u64>,
    /// Last heartbeat (or grace start) per broker.
    last_seen: HashMap<NodeId, Instant>,
    /// Brokers fenced by their own controlled shutdown, with the incarnation that asked: a
    /// heartbeat of that incarnation (one still in flight when the shutdown was handled) must
    /// not unfence a broker that is stopping. A new registration clears it.
    shut_down: HashMap<NodeId, u64>,
}

impl Liveness {
    /// Drops what is known of a broker's session (unregistered, or shut down).
    pub(super) fn forget(&mut self, broker: NodeId) {
        self.last_seen.remove(&broker);
    }

    /// Broker `id`'s incarnation `incarnation` asked for a controlled shutdown.
    pub(super) fn shutting_down(&mut self, id: NodeId, incarnation: u64) {
        self.forget(id);
        self.shut_down.insert(id, incarnation);
    }

    /// Broker `id` registered (again): a new incarnation may be unfenced.
    pub(super) fn registered(&mut self, id: NodeId) {
        self.shut_down.remove(&id);
    }
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// The broker is fenced: it may lead nothing and is in no ISR.
    pub fenced: bool,
    /// The controller does not know this broker (or this incarnation): register again.
    pub should_register: bool,
}

impl Controller {
    /// Records a sign of life from `broker`.
    pub(super) fn touch(&self, broker: NodeId) {
        let mut liveness = self.liveness.locked();
        liveness.last_seen.insert(broker, Instant::now());
    }

    /// A heartbeat from `broker` (incarnation `incarnation`) that has applied the metadata up
    /// to `metadata_version`: keeps its session, and unfences it once it has caught up with
    /// its own registration.
    pub(super) async fn heartbeat(
        &self,
        broker: NodeId,
        incarnation: u64,
        metadata_version: u64,
    ) -> Result<Beat, MetaError> {
        let state = self.state.current();
        let Some(info) = state
            .brokers
            .get(&broker)
            .filter(|b| b.incarnation == incarnation)
        else {
            return Ok(Beat {
                fenced: true,
                should_register: true,
            });
        };
        if self.liveness.locked().shut_down.get(&broker) == Some(&incarnation) {
            // Stopping: stays fenced until a new incarnation registers (Kafka's
            // in-controlled-shutdown state).
            return Ok(Beat {
                fenced: true,
                should_register: false,
            });
        }
        self.touch(broker);
        let mut fenced = info.fenced;
        if fenced && metadata_version >= info.epoch {
            self.write(Command::UnfenceBroker { id: broker }).await?;
            tracing::info!(broker, "broker caught up; unfenced");
            fenced = false;
        }
        Ok(Beat {
            fenced,
            should_register: false,
        })
    }

    /// One pass of the leader's duties: start a grace period after gaining leadership, fence
    /// brokers whose session expired, and elect leaders uncleanly where a topic allows it.
    pub async fn tick(&self) {
        let (leading, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self.id),
                m.current_term,
            )
        };
        let state = self.state.current();
        let expired: Vec<NodeId> = {
            let mut liveness = self.liveness.locked();
            if !leading {
                liveness.leading_term = None;
                return;
            }
            let now = Instant::now();
            if liveness.leading_term != Some(term) {
                liveness.leading_term = Some(term);
                liveness.last_seen = state.brokers.keys().map(|id| (*id, now)).collect();
                tracing::info!(
                    node = self.id,
                    term,
                    "became controller leader; brokers get a grace period"
                );
            }
            state
                .live_brokers()
                .filter(|b| {
                    let seen = *liveness.last_seen.entry(b.id).or_insert(now);
                    now.duration_since(seen) > self.config.session_timeout
                })
                .map(|b| b.id)
                .collect()
        };
        for id in expired {
            tracing::warn!(broker = id, "broker session expired; fencing it");
            if let Err(e) = self.write(Command::FenceBroker { id }).await {
                tracing::warn!(broker = id, error = %e, "fencing failed");
            }
        }
        for (name, topic) in &state.topics {
            let configs = topic_config::merged(&topic.configs, &self.config.topic_defaults);
            if !topic_config::unclean_leader_election(&configs) {
                continue;
            }
            for (i, p) in topic.partitions.iter().enumerate() {
                let any_live = p
                    .replicas
                    .iter()
                    .any(|r| state.brokers.get(r).is_some_and(|b| !b.fenced));
                if p.leader.is_none() && any_live {
                    let cmd = Command::ElectLeader {
                        topic: name.clone(),
                        partition: i as u32,
                        unclean: true,
                    };
                    if let Err(e) = self.write(cmd).await {
                        tracing::warn!(topic = %name, partition = i, error = %e, "unclean election failed");
                    }
                }
            }
        }
    }

    /// Runs [`Controller::tick`] until `shutdown` fires.
    pub async fn run(self: std::sync::Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.liveness_check_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => self.tick().await,
                _ = shutdown.changed() => break,
            }
        }
    }
}
