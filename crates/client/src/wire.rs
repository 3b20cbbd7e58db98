//! The client's protobuf conversions, in one place: answers of the admin and metadata APIs into
//! the client's own types. The rest of the client builds requests and reads these types.

use weir_proto::common::v1 as common;
use weir_proto::controller::v1 as cpb;

use crate::admin::{
    BrokerDescription, BrokerState, ConfigEntry, ConfigSource, PartitionDescription, QuorumMember,
    TopicDescription,
};
use crate::metadata::PartitionInfo;

/// A leader id on the wire (-1 for none) as an option.
fn leader(id: i64) -> Option<u64> {
    u64::try_from(id).ok()
}

impl From<common::BrokerState> for BrokerState {
    fn from(state: common::BrokerState) -> Self {
        match state {
            common::BrokerState::Active => BrokerState::Active,
            common::BrokerState::Fenced => BrokerState::Fenced,
            common::BrokerState::Unspecified => BrokerState::Unknown,
        }
    }
}

impl From<cpb::BrokerDescription> for BrokerDescription {
    fn from(b: cpb::BrokerDescription) -> Self {
        BrokerDescription {
            state: b.state().into(),
            id: b.id,
            address: b.address,
            rack: (!b.rack.is_empty()).then_some(b.rack),
        }
    }
}

impl From<cpb::QuorumMember> for QuorumMember {
    fn from(m: cpb::QuorumMember) -> Self {
        QuorumMember {
            id: m.id,
            address: m.address,
            match_index: m.match_index,
            lag: m.lag,
        }
    }
}

/// A topic as the controller describes it, partitions in index order; the offsets are -1 until
/// the partitions' leaders are asked.
impl From<cpb::TopicDescription> for TopicDescription {
    fn from(t: cpb::TopicDescription) -> Self {
        let mut partitions: Vec<PartitionDescription> = t
            .partitions
            .into_iter()
            .map(|p| PartitionDescription {
                partition: p.partition,
                leader: leader(p.leader),
                leader_epoch: p.leader_epoch,
                replicas: p.replicas,
                isr: p.isr,
                log_start_offset: -1,
                high_watermark: -1,
                log_end_offset: -1,
            })
            .collect();
        partitions.sort_by_key(|p| p.partition);
        TopicDescription {
            name: t.name,
            id: t.id,
            configs: t.configs.into_iter().collect(),
            config_entries: t
                .config_entries
                .into_iter()
                .map(|e| ConfigEntry {
                    source: match cpb::ConfigSource::try_from(e.source) {
                        Ok(cpb::ConfigSource::Topic) => ConfigSource::Topic,
                        Ok(cpb::ConfigSource::ServerDefault) => ConfigSource::ServerDefault,
                        Ok(cpb::ConfigSource::BuiltIn) => ConfigSource::BuiltIn,
                        _ => ConfigSource::Unknown,
                    },
                    name: e.name,
                    value: e.value,
                })
                .collect(),
            partitions,
        }
    }
}

/// A partition of a Metadata answer, as the producer and consumer route by it.
impl From<cpb::PartitionState> for PartitionInfo {
    fn from(p: cpb::PartitionState) -> Self {
        PartitionInfo {
            leader: leader(p.leader),
            leader_epoch: p.leader_epoch,
            replicas: p.replicas,
            isr: p.isr,
        }
    }
}
