//! Metadata: brokers, topics with their partitions' leaders and ISRs, from this broker's copy
//! of the metadata log. The names asked for are deduplicated and bounded
//! ([`super::MAX_METADATA_TOPICS`]) before any work.

use weir_proto::broker::v1 as pb;

use super::{BrokerService, MAX_METADATA_TOPICS};
use crate::error::BrokerError;
use crate::wire::{broker_endpoint, topic_metadata};

impl BrokerService {
    /// The answer to a Metadata request.
    pub(super) fn metadata_answer(&self, req: pb::MetadataRequest) -> pb::MetadataResponse {
        let mut seen = std::collections::HashSet::new();
        let names: Vec<&String> = req
            .topics
            .iter()
            .filter(|n| seen.len() <= MAX_METADATA_TOPICS && seen.insert(n.as_str()))
            .collect();
        if names.len() > MAX_METADATA_TOPICS {
            let e = BrokerError::InvalidRequest(format!(
                "a Metadata request may name at most {MAX_METADATA_TOPICS} distinct topics"
            ));
            return e.answer_plain();
        }
        let state = self.manager.metadata();
        let brokers = state.brokers.values().map(broker_endpoint).collect();
        let topics = if names.is_empty() {
            state.topics.values().map(topic_metadata).collect()
        } else {
            names
                .into_iter()
                .map(|name| match state.topics.get(name) {
                    Some(t) => topic_metadata(t),
                    None => pb::TopicMetadata {
                        name: name.clone(),
                        error: Some(BrokerError::UnknownTopic(name.clone()).to_wire()),
                        ..Default::default()
                    },
                })
                .collect()
        };
        pb::MetadataResponse {
            brokers,
            topics,
            controller_id: self.manager.controller_leader().unwrap_or(0),
            metadata_version: state.version,
            error: None,
        }
    }
}
