//! Property tests: random batches survive encode → append → read → decode (and a restart)
//! unchanged, and no byte string makes the decoder panic.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use weir_storage::batch::{Batches, HEADER_LEN};

use weir_storage::{
    BatchBuilder, Compression, Header, LogConfig, PartitionLog, Record, RecordBatch,
};

fn codec() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Gzip),
        Just(Compression::Snappy),
        Just(Compression::Lz4),
        Just(Compression::Zstd),
    ]
}

fn bytes(max: usize) -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from))
}

fn record() -> impl Strategy<Value = Record> {
    let header = ("[a-z0-9.-]{0,12}", bytes(24)).prop_map(|(key, value)| Header { key, value });
    (
        0i64..1 << 50,
        bytes(64),
        bytes(600),
        proptest::collection::vec(header, 0..3),
    )
        .prop_map(|(timestamp, key, value, headers)| Record {
            offset: 0,
            timestamp,
            key,
            value,
            headers,
        })
}

fn batches() -> impl Strategy<Value = Vec<(Compression, Vec<Record>)>> {
    proptest::collection::vec((codec(), proptest::collection::vec(record(), 1..20)), 1..12)
}

fn read_back(log: &PartitionLog) -> Vec<Record> {
    common::read_all(log, 0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_batches_round_trip_through_the_log(input in batches(), segment_kib in 2u64..64) {
        let dir = tempfile::tempdir().unwrap();
        // Any timestamp in 0..2^50 must round-trip: no bound on how far ahead of the clock.
        let config = LogConfig { segment_bytes: segment_kib * 1024, index_interval_bytes: 512, timestamp_after_max: None, ..LogConfig::default() };
        let mut log = PartitionLog::open(dir.path(), config.clone()).unwrap();
        let mut expected = Vec::new();
        for (codec, records) in &input {
            let mut builder = BatchBuilder::new(*codec);
            for r in records {
                builder.push(r);
            }
            let info = log.append_as_leader(builder.build(0).unwrap(), 0).unwrap();
            for (i, r) in records.iter().enumerate() {
                expected.push(Record { offset: info.base_offset + i as i64, ..r.clone() });
            }
        }
        prop_assert_eq!(&read_back(&log), &expected);
        log.close().unwrap();
        let log = PartitionLog::open(dir.path(), config).unwrap();
        prop_assert_eq!(&read_back(&log), &expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = RecordBatch::decode(Bytes::from(data.clone()));
        for batch in Batches::new(Bytes::from(data)).flatten() {
            let _ = batch.records();
        }
    }

    #[test]
    fn a_valid_crc_over_random_records_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        count in -2i32..50,
        attributes in 0i16..8,
    ) {
        // A header that passes every check, so the record decoder meets the random bytes.
        let mut buf = BatchBuilder::new(Compression::None).build(0).unwrap().to_vec();
        buf.truncate(HEADER_LEN);
        buf.extend_from_slice(&body);
        let length = (buf.len() - 12) as i32;
        buf[8..12].copy_from_slice(&length.to_be_bytes());
        buf[21..23].copy_from_slice(&attributes.to_be_bytes());
        buf[23..27].copy_from_slice(&(count.max(1) - 1).to_be_bytes());
        buf[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[21..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        if let Ok(batch) = RecordBatch::decode(Bytes::from(buf)) {
            let _ = batch.records();
        }
    }
}
