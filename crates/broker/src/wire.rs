//! The broker's protobuf conversions, in one place: plain protobuf records to and from
//! RecordBatch v2 (the form any language's stub can use; the Rust client sends batches and
//! never comes through here), and metadata in its Metadata-answer form.

use bytes::Bytes;
use weir_meta::wire::{broker_state, partition_to_wire};
use weir_meta::{BrokerInfo, TopicInfo};
use weir_proto::broker::v1 as pb;
use weir_storage::{BatchBuilder, BatchError, Compression, Header, Record};

/// Encodes plain records into one batch; a timestamp of 0 takes `now_ms`.
pub fn encode_plain(records: &[pb::Record], now_ms: i64) -> Result<Bytes, BatchError> {
    let mut builder = BatchBuilder::new(Compression::None);
    let mut headers = Vec::new();
    for r in records {
        headers.clear();
        headers.extend(r.headers.iter().map(|h| Header {
            key: h.key.clone(),
            value: h.value.clone(),
        }));
        let timestamp = if r.timestamp == 0 {
            now_ms
        } else {
            r.timestamp
        };
        builder.push_parts(timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    builder.build(0)
}

/// A decoded record in its wire form.
pub fn record_to_wire(r: Record) -> pb::Record {
    pb::Record {
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|h| pb::Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
        timestamp: r.timestamp,
        offset: r.offset,
    }
}

/// A broker in a Metadata answer.
pub fn broker_endpoint(b: &BrokerInfo) -> pb::BrokerEndpoint {
    pb::BrokerEndpoint {
        id: b.id,
        address: b.address.clone(),
        rack: b.rack.clone().unwrap_or_default(),
        state: broker_state(b) as i32,
    }
}

/// A topic in a Metadata answer: each partition's leader (-1 for none), epoch, replicas, ISR.
pub fn topic_metadata(t: &TopicInfo) -> pb::TopicMetadata {
    pb::TopicMetadata {
        name: t.name.clone(),
        id: t.id.clone(),
        error: None,
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_to_wire(i, p))
            .collect(),
    }
}
