//! The quorum's protobuf conversions, in one place: metadata to its wire form, and refusals to
//! wire errors. Everything else in the crate speaks its own types.

use weir_proto::common::v1::{BrokerState, Error as WireError};
use weir_proto::controller::v1 as pb;

use crate::command::MetaError;
use crate::state::{BrokerInfo, PartitionInfo, TopicInfo};

/// A partition's wire form.
pub fn partition_to_wire(index: usize, p: &PartitionInfo) -> pb::PartitionState {
    pb::PartitionState {
        partition: index as u32,
        replicas: p.replicas.clone(),
        leader: p.leader.map_or(-1, |l| l as i64),
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        isr: p.isr.clone(),
    }
}

/// A topic's wire form, with every config's effective value over the server's `defaults`.
pub fn topic_to_wire(
    t: &TopicInfo,
    defaults: &std::collections::BTreeMap<String, String>,
) -> pb::TopicDescription {
    use weir_common::topic_config::{effective, ConfigSource};
    let config_entries = effective(&t.configs, defaults)
        .into_iter()
        .map(|(name, value, source)| pb::ConfigEntry {
            name: name.to_owned(),
            value,
            source: match source {
                ConfigSource::Topic => pb::ConfigSource::Topic,
                ConfigSource::ServerDefault => pb::ConfigSource::ServerDefault,
                ConfigSource::BuiltIn => pb::ConfigSource::BuiltIn,
            } as i32,
        })
        .collect();
    pb::TopicDescription {
        name: t.name.clone(),
        id: t.id.clone(),
        configs: t.configs.clone().into_iter().collect(),
        config_entries,
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_to_wire(i, p))
            .collect(),
    }
}

/// A broker's state on the wire.
pub fn broker_state(b: &BrokerInfo) -> BrokerState {
    if b.fenced {
        BrokerState::Fenced
    } else {
        BrokerState::Active
    }
}

/// A broker's wire form in DescribeCluster.
pub fn broker_to_wire(b: &BrokerInfo) -> pb::BrokerDescription {
    pb::BrokerDescription {
        id: b.id,
        address: b.address.clone(),
        rack: b.rack.clone().unwrap_or_default(),
        state: broker_state(b) as i32,
        epoch: b.epoch,
    }
}

impl MetaError {
    /// The wire form: [`MetaError::code`] and the message.
    pub fn to_wire(&self) -> WireError {
        WireError {
            code: self.code(),
            message: self.to_string(),
        }
    }
}
