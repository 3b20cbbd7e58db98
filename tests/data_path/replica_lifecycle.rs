//! Retention and topic deletion observed on every replica of a live 3-node cluster, on disk:
//! followers delete expired segments by the same rule as the leader (each replica enforces
//! the topic's retention on its own log), and a deleted topic's directories are retired and
//! then deleted on every node after `--file-delete-delay-ms`.

use std::time::Duration;

use weir_common::now_ms;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_proto::controller::v1 as pb;

use crate::common::data::*;
use crate::common::{assert_code, code, serial, wait_for, Cluster, STARTUP};

const TOPIC: &str = "aging";
/// Records per batch; every batch has the same size, so segments roll at known offsets.
const PER_BATCH: usize = 20;
/// Batches per segment (segment.bytes is exactly this many batches).
const PER_SEGMENT: usize = 3;
/// Batches stamped two hours ago, then batches stamped now.
const OLD_BATCHES: usize = 6;
const NEW_BATCHES: usize = 2;
/// Retention passes run every 30 s on each broker (with the other checkpoints): the longest
/// wait for one, with room.
const RETENTION_PASS: Duration = Duration::from_secs(70);

/// The batch numbered `b` (values `<prefix><b>-<i>`), stamped `timestamp`.
fn batch(prefix: &str, b: usize, timestamp: i64) -> bytes::Bytes {
    build_batch(&numbered(&format!("{prefix}{b}"), PER_BATCH, timestamp))
}

/// The segment base offsets on every node, in node order.
fn segments_everywhere(cluster: &mut Cluster) -> Vec<Option<Vec<i64>>> {
    (1..=3)
        .map(|id| {
            let dir = cluster.node(id).data_dir.clone();
            segment_bases(&dir, TOPIC, 0)
        })
        .collect()
}

/// Names in node `id`'s logs directory that belong to the topic's partition 0 (its live
/// directory and any retired one).
fn partition_entries(cluster: &mut Cluster, id: u64) -> Vec<String> {
    let logs = cluster.node(id).data_dir.join("logs");
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n == &format!("{TOPIC}-0") || n.starts_with(&format!("{TOPIC}-0.deleted-")))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn retention_and_topic_delete_happen_on_every_replica() {
    let _serial = serial();
    let (mut cluster, controller) =
        Cluster::start_ready(3, &[("WEIR_FILE_DELETE_DELAY_MS", "2000")]).await;
    let now = now_ms();
    let old_ts = now - 2 * 3_600_000;
    let size = batch("old", 0, old_ts).len();
    assert_eq!(size, batch("new", 0, now).len(), "every batch has one size");
    let segment_bytes = (PER_SEGMENT * size).to_string();
    // No retention at first: the layout is checked on every replica before anything expires.
    let r = cluster
        .create_topic_with(
            controller,
            TOPIC,
            1,
            3,
            &[("segment.bytes", &segment_bytes), ("retention.ms", "-1")],
        )
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, TOPIC, 1, 3).await;
    let (leader_id, _) = leader_of(&md, TOPIC, 0).unwrap();
    let mut leader = cluster.broker_client(leader_id);
    let stamped = (0..OLD_BATCHES)
        .map(|b| batch("old", b, old_ts))
        .chain((0..NEW_BATCHES).map(|b| batch("new", b, now)));
    for (i, b) in stamped.enumerate() {
        let r = produce(&mut leader, produce_req(TOPIC, 0, -1, Records::Batch(b))).await;
        assert_code(&r.error, ErrorCode::None, &format!("produce batch {i}"));
        assert_eq!(r.base_offset, (i * PER_BATCH) as i64);
    }
    let seg = (PER_SEGMENT * PER_BATCH) as i64;
    let first_new = (OLD_BATCHES * PER_BATCH) as i64;
    let total = ((OLD_BATCHES + NEW_BATCHES) * PER_BATCH) as i64;
    // Old batches fill two segments; the first new one rolls a third.
    let layout = vec![0, seg, first_new];
    assert_eq!(first_new, 2 * seg);
    let every = vec![Some(layout.clone()); 3];
    wait_for(
        "every replica with the leader's three segments",
        Duration::from_secs(15),
        || {
            let done = segments_everywhere(&mut cluster) == every;
            async move { done.then_some(()) }
        },
    )
    .await;
    for id in 1..=3 {
        let dir = cluster.node(id).data_dir.clone();
        assert_eq!(
            disk_records(&dir, TOPIC, 0).len() as i64,
            total,
            "node {id} holds every record"
        );
    }

    // Retention of an hour: the two old segments expire, on every replica.
    let r = cluster
        .client(controller)
        .alter_topic_config(pb::AlterTopicConfigRequest {
            name: TOPIC.into(),
            set: [("retention.ms".to_owned(), "3600000".to_owned())].into(),
            delete: vec![],
        })
        .await
        .expect("AlterTopicConfig RPC")
        .into_inner();
    assert_code(&r.error, ErrorCode::None, "AlterTopicConfig");
    let retained = vec![Some(vec![first_new]); 3];
    wait_for(
        "old segments deleted on every replica",
        RETENTION_PASS,
        || {
            let done = segments_everywhere(&mut cluster) == retained;
            async move { done.then_some(()) }
        },
    )
    .await;
    for id in 1..=3 {
        let dir = cluster.node(id).data_dir.clone();
        let kept = disk_records(&dir, TOPIC, 0);
        assert_eq!(
            kept.first().map(|r| r.offset),
            Some(first_new),
            "node {id}'s log starts at the first new record"
        );
        assert_eq!(kept.len() as i64, total - first_new, "node {id}");
    }
    let offsets = leader
        .partition_offsets(bpb::PartitionOffsetsRequest {
            topic: TOPIC.into(),
        })
        .await
        .expect("PartitionOffsets RPC")
        .into_inner();
    assert_code(&offsets.error, ErrorCode::None, "PartitionOffsets");
    let p = &offsets.partitions[0];
    assert_eq!(
        (p.log_start_offset, p.high_watermark, p.log_end_offset),
        (first_new, total, total)
    );
    let earliest = list_offset(&mut leader, TOPIC, 0, -2).await;
    assert_eq!(earliest.offset, first_new, "ListOffsets earliest");
    let r = first_fetch_answer(&mut leader, TOPIC, 0, 0).await;
    assert_code(
        &r.error,
        ErrorCode::OffsetOutOfRange,
        "fetch below the log start",
    );
    let got = fetch_range(&mut leader, TOPIC, 0, first_new, total, true).await;
    let mut expected = values(&numbered("new0", PER_BATCH, now));
    expected.extend(values(&numbered("new1", PER_BATCH, now)));
    assert_eq!(values(&got), expected);

    // Delete: each node retires its directory at once, then deletes it after the delay.
    let r = cluster
        .client(controller)
        .delete_topic(pb::DeleteTopicRequest { name: TOPIC.into() })
        .await
        .expect("DeleteTopic RPC")
        .into_inner();
    assert_code(&r.error, ErrorCode::None, "DeleteTopic");
    // Each node keeps its retired directory for the 2 s delay: every one must be seen in that
    // state (retired, not yet deleted), so the nodes are watched together.
    let mut seen = [false; 3];
    wait_for(
        "every node's partition directory retired (renamed, kept)",
        STARTUP,
        || {
            for id in 1..=3u64 {
                let names = partition_entries(&mut cluster, id);
                if names.len() == 1 && names[0].starts_with(&format!("{TOPIC}-0.deleted-")) {
                    seen[id as usize - 1] = true;
                }
            }
            let all = seen.iter().all(|s| *s);
            async move { all.then_some(()) }
        },
    )
    .await;
    for id in 1..=3 {
        wait_for(
            &format!("node {id} deleted the retired directory"),
            STARTUP,
            || {
                let names = partition_entries(&mut cluster, id);
                async move { names.is_empty().then_some(()) }
            },
        )
        .await;
        assert!(
            !cluster.log_lines(id, &["kept for 2000 ms"]).is_empty(),
            "node {id} did not say it keeps the log for the delay"
        );
        let md = metadata(&mut cluster, id, TOPIC).await.expect("Metadata");
        let t = md.topics.iter().find(|t| t.name == TOPIC).unwrap();
        assert_eq!(
            code(&t.error),
            ErrorCode::UnknownTopicOrPartition as i32,
            "node {id} still knows the topic"
        );
        assert_eq!(cluster.log_panics(id), "", "node {id}");
    }
}
