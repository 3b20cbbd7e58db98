//! Segment preallocation on a live node: a busy partition gets disk blocks reserved ahead of
//! its active segment without its file growing; an idle one reserves nothing.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use weir_common::now_ms;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_storage::Record;

use crate::common::data::*;
use crate::common::{assert_code, serial, wait_for, Cluster, STARTUP};

/// (file length, bytes of disk blocks allocated) of a partition's first segment. A segment
/// that is not there fails the test: a missing file reserves nothing either, but proves
/// nothing.
fn first_segment_usage(data_dir: &Path, topic: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let path = partition_dir(data_dir, topic, 0).join(format!("{:020}.log", 0));
    let m = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.len(), m.blocks() * 512)
}

/// A partition being written to gets disk blocks reserved ahead of its active segment (so its
/// appends don't wait on block allocation during writeback) without its file growing; an
/// idle partition reserves nothing, so many idle partitions cost no disk.
#[tokio::test]
async fn busy_partitions_reserve_disk_ahead_and_idle_ones_do_not() {
    let _serial = serial();
    let mut cluster = Cluster::start(1, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    for topic in ["busy", "idle"] {
        let r = cluster
            .create_topic(1, topic, 1, 1)
            .await
            .expect("CreateTopic");
        assert_code(&r.error, ErrorCode::None, "CreateTopic");
        wait_topic_ready(&mut cluster, topic, 1, 1).await;
    }
    let mut client = cluster.broker_client(1);
    let value = vec![b'x'; 1000];
    let records: Vec<Record> = (0..60)
        .map(|i| Record {
            timestamp: now_ms(),
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(value.clone())),
            ..Record::default()
        })
        .collect();
    let batch = build_batch(&records);
    for _ in 0..50 {
        let r = produce(
            &mut client,
            produce_req("busy", 0, 1, Records::Batch(batch.clone())),
        )
        .await;
        assert_code(&r.error, ErrorCode::None, "produce to busy");
    }
    let data_dir = cluster.node(1).data_dir.clone();
    let (len, allocated) = wait_for(
        "blocks reserved past the end of busy-0's segment",
        Duration::from_secs(10),
        || {
            let usage = first_segment_usage(&data_dir, "busy");
            async move { (usage.1 >= usage.0 + (1 << 20)).then_some(usage) }
        },
    )
    .await;
    assert_eq!(
        len,
        50 * batch.len() as u64,
        "the file holds the batches and nothing more"
    );
    assert!(allocated <= len + (256 << 20), "at most one window ahead");
    let got = fetch_range(&mut client, "busy", 0, 0, 3000, false).await;
    assert_eq!(got.len(), 3000, "every record reads back");
    assert_eq!(
        first_segment_usage(&data_dir, "idle"),
        (0, 0),
        "an idle partition reserves nothing"
    );
}
