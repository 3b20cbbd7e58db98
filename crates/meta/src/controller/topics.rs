//! Topics: creation (validated, replicas placed here; the log gets only the outcome), deletion,
//! config changes (validated against the topic-config schema) and linearizable descriptions.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_common::{random_u64, topic_config};

use super::Controller;
use crate::command::{Command, MetaError};
use crate::state::{validate_topic_name, MetadataState, TopicInfo};

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: i32 = 100_000;

/// A random 128-bit topic id in hex: a topic deleted and created again under its name is
/// another topic, and brokers tell the two apart by it.
fn new_topic_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

impl Controller {
    /// Creates topic `name`; returns it as created.
    pub(super) async fn create_topic(
        &self,
        name: String,
        partitions: i32,
        replication_factor: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicInfo, MetaError> {
        validate_topic_name(&name)?;
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(MetaError::InvalidPartitions(partitions.into()));
        }
        if replication_factor < 1 {
            return Err(MetaError::InvalidReplicationFactor {
                factor: replication_factor.into(),
                reason: "must be at least 1".into(),
            });
        }
        topic_config::validate(&configs, replication_factor as u32)?;
        let state = self.state.current();
        if state.topics.contains_key(&name) {
            return Err(MetaError::TopicExists(name));
        }
        let assignment = state.place_replicas(partitions as u32, replication_factor as u32)?;
        state.check_replica_load(&assignment)?;
        self.write(Command::CreateTopic {
            name: name.clone(),
            topic_id: new_topic_id(),
            assignment,
            configs,
        })
        .await?;
        self.state
            .current()
            .topics
            .get(&name)
            .cloned()
            .ok_or(MetaError::UnknownTopic(name))
    }

    /// Deletes topic `name`.
    pub(super) async fn delete_topic(&self, name: String) -> Result<(), MetaError> {
        self.write(Command::DeleteTopic { name }).await.map(|_| ())
    }

    /// Sets and deletes config overrides of topic `name`; the result must be valid as a whole
    /// (`min.insync.replicas` against the replication factor), or nothing changes.
    pub(super) async fn alter_topic_config(
        &self,
        name: String,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<(), MetaError> {
        let state = self.state.current();
        let Some(topic) = state.topics.get(&name) else {
            return Err(MetaError::UnknownTopic(name));
        };
        let rf = topic
            .partitions
            .first()
            .map_or(1, |p| p.replicas.len() as u32);
        let mut merged = topic.configs.clone();
        for key in &delete {
            merged.remove(key);
        }
        merged.extend(set.clone());
        topic_config::validate(&merged, rf)?;
        self.write(Command::AlterTopicConfig { name, set, delete })
            .await
            .map(|_| ())
    }

    /// The topics named (every topic when none is), after a linearizable read; an unknown name
    /// is an error. Returns them with the state they were read from.
    pub(super) async fn describe_topics(
        &self,
        names: &[String],
    ) -> Result<(Arc<MetadataState>, Vec<TopicInfo>), MetaError> {
        let state = self.linearize().await?;
        let topics = if names.is_empty() {
            state.topics.values().cloned().collect()
        } else {
            names
                .iter()
                .map(|name| {
                    state
                        .topics
                        .get(name)
                        .cloned()
                        .ok_or_else(|| MetaError::UnknownTopic(name.clone()))
                })
                .collect::<Result<_, _>>()?
        };
        Ok((state, topics))
    }
}
