//! Protobuf records to and from RecordBatch v2: the plain-record form any language's stub can
//! use. The Rust client sends batches and never comes through here.

use bytes::Bytes;
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
