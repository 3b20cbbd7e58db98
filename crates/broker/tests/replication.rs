//! Replication rules at the level of one partition replica (DESIGN.md, "Replication rules"),
//! with real partition logs in temp directories: leader epochs, follower reconciliation
//! (KIP-101/279), the high watermark over the maximal ISR (KIP-497), ISR expansion, and
//! follower-side changes fenced by role and epoch. Cluster-level faults are in tests/ at the
//! workspace root.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;

use bytes::Bytes;
use weir_broker::partition::Partition;
use weir_broker::replication::follower::{self as fetcher, truncation_point, FetchError};
use weir_proto::common::v1::ErrorCode;
use weir_storage::batch::{Batches, Record};
use weir_storage::{BatchBuilder, Compression, LogConfig};

/// A replica of `t-0` on broker `id` in a fresh temp dir.
fn replica(id: u64) -> (tempfile::TempDir, Arc<Partition>) {
    let dir = tempfile::tempdir().unwrap();
    let part = Partition::open(dir.path(), "t", 0, "topic-id", id, LogConfig::default()).unwrap();
    (dir, Arc::new(part))
}

/// One batch of `count` records whose values are `tag-i`.
fn batch(tag: &str, count: usize) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..count {
        b.push(&Record {
            timestamp: 1_000 + i as i64,
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            ..Record::default()
        });
    }
    b.build(0).unwrap()
}

/// Broker `me` leads alone (ISR = itself) in `epoch` and appends `count` records tagged `tag`.
fn lead_and_append(part: &Partition, me: u64, epoch: i32, tag: &str, count: usize) {
    part.make_leader(epoch, epoch, &[me], &[me], 1).unwrap();
    part.append_as_leader(batch(tag, count), false).unwrap();
}

/// Every (offset, epoch, value) in the replica's log.
fn contents(part: &Partition) -> Vec<(i64, String)> {
    let bytes = part.read(0, usize::MAX >> 1, i64::MAX).unwrap();
    let mut out = Vec::new();
    for b in Batches::new(bytes) {
        let b = b.unwrap();
        let epoch = b.header().partition_leader_epoch;
        for r in b.records().unwrap() {
            let v = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            out.push((r.offset, format!("e{epoch}:{v}")));
        }
    }
    out
}

/// Reconciles `follower` with `leader` in-process, as the fetcher does over the network.
async fn reconcile(follower: &Arc<Partition>, leader: &Arc<Partition>, leader_id: u64, epoch: i32) {
    let l = Arc::clone(leader);
    fetcher::reconcile(follower, leader_id, epoch, move |asked| {
        let answer = l.end_offset_for_epoch(asked).unwrap_or((-1, -1));
        async move { Ok::<_, FetchError>(answer) }
    })
    .await
    .unwrap();
}

fn assert_prefix(follower: &Partition, leader: &Partition) {
    let f = contents(follower);
    let l = contents(leader);
    assert!(
        l.starts_with(&f),
        "the follower's log must be a prefix of the leader's;\nfollower: {:?}\nleader: {:?}",
        &f[f.len().saturating_sub(5)..],
        &l[l.len().saturating_sub(8)..]
    );
}

#[test]
fn a_new_leader_knows_its_own_epoch_before_it_writes_anything() {
    let (_d, p) = replica(1);
    lead_and_append(&p, 1, 1, "a", 10);
    p.make_leader(3, 3, &[1], &[1], 1).unwrap();
    assert_eq!(p.latest_epoch(), Some(3));
    assert_eq!(p.end_offset_for_epoch(3), Some((3, 10)));
    // A follower whose latest epoch (2) this leader never had is told epoch 1 ended at 10.
    assert_eq!(p.end_offset_for_epoch(2), Some((1, 10)));
}

/// The measured loss (issue 14): C missed the first batches of epoch 2; B had them. C is
/// elected in epoch 3; B must cut what C never had, or its claimed position completes acks=all
/// for records that die with C's successor.
#[tokio::test]
async fn a_follower_truncates_a_tail_the_new_leader_never_had() {
    let (_a, leader_c) = replica(3);
    let (_b, follower_b) = replica(2);
    for (p, me) in [(&leader_c, 3), (&follower_b, 2)] {
        lead_and_append(p, me, 1, "old", 100);
        p.make_follower(Some(1), 2);
    }
    // Epoch 2 (leader 1) reached B only: B leads briefly to write it as epoch 2.
    follower_b.make_leader(2, 2, &[2], &[2], 1).unwrap();
    follower_b
        .append_as_leader(batch("lost", 10), false)
        .unwrap();
    follower_b.make_follower(Some(3), 3);
    leader_c.make_leader(3, 4, &[3], &[3], 1).unwrap();

    reconcile(&follower_b, &leader_c, 3, 3).await;
    assert_eq!(follower_b.view().log_end, 100, "B keeps only what C has");
    assert_prefix(&follower_b, &leader_c);
}

/// KIP-279: A (epoch 2, records [95, 97)) rejoins B (epoch 3), which answers (1, 100) for
/// epoch 2. A must truncate to its own end of epoch 1 (95), not to min(100, its end) = 97.
#[tokio::test]
async fn a_follower_truncates_to_its_own_end_of_the_epoch_the_leader_answers() {
    let (_a, a) = replica(1);
    let (_b, b) = replica(2);
    lead_and_append(&a, 1, 1, "x", 95);
    a.make_leader(2, 2, &[1], &[1], 1).unwrap();
    a.append_as_leader(batch("a-only", 2), false).unwrap();
    lead_and_append(&b, 2, 1, "x", 95);
    b.append_as_leader(batch("b", 5), false).unwrap();
    b.make_leader(3, 3, &[2], &[2], 1).unwrap();
    assert_eq!(b.end_offset_for_epoch(2), Some((1, 100)));

    a.make_follower(Some(2), 3);
    reconcile(&a, &b, 2, 3).await;
    assert_eq!(a.view().log_end, 95);
    assert_prefix(&a, &b);
}

#[test]
fn the_truncation_rule_follows_kip_279() {
    // Same epoch: min of both ends and the log end; done.
    assert_eq!(truncation_point((3, 120), Some((3, 130)), 130), (120, true));
    // The follower's largest epoch at or below the answer differs: cut to its end, ask again.
    assert_eq!(truncation_point((2, 120), Some((1, 90)), 130), (90, false));
    // Never past the local log end.
    assert_eq!(truncation_point((3, 500), Some((3, 130)), 130), (130, true));
}

#[test]
fn follower_changes_are_refused_once_the_replica_leads() {
    let (_d, p) = replica(1);
    lead_and_append(&p, 1, 1, "a", 10);
    p.make_follower(Some(2), 2);
    // The fetcher of epoch 2 computed a truncation; meanwhile the replica became leader of 3.
    p.make_leader(3, 3, &[1, 2], &[1, 2], 1).unwrap();
    let err = p.truncate_to(0, 2, 2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::FencedLeaderEpoch);
    let err = p.reset_to(50, 2, 2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::FencedLeaderEpoch);
    let err = p.append_as_follower(Bytes::new(), 10, 2, 2).unwrap_err();
    assert_eq!(err.code(), ErrorCode::FencedLeaderEpoch);
    assert_eq!(p.view().log_end, 10, "nothing was cut");
    // A change for a different leader or epoch than the one followed is refused too.
    p.make_follower(Some(2), 4);
    assert!(p.truncate_to(0, 2, 3).is_err());
    assert!(p.truncate_to(0, 3, 4).is_err());
    assert_eq!(p.view().log_end, 10);
    p.truncate_to(0, 2, 4).unwrap();
    assert_eq!(p.view().log_end, 0, "the current role may truncate");
}

#[test]
fn a_replica_cannot_claim_records_the_leader_does_not_have() {
    let (_d, p) = replica(1);
    p.make_leader(1, 1, &[1, 2, 3], &[1, 2], 2).unwrap();
    p.append_as_leader(batch("a", 10), true).unwrap();
    assert_eq!(p.view().high_watermark, 0);
    let err = p.record_follower_fetch(2, 1, 1_000_000, 7).unwrap_err();
    assert_eq!(err.code(), ErrorCode::OffsetOutOfRange);
    let err = p.record_follower_fetch(2, 1, -1, 7).unwrap_err();
    assert_eq!(err.code(), ErrorCode::OffsetOutOfRange);
    assert_eq!(p.view().high_watermark, 0, "a refused claim moves nothing");
    p.record_follower_fetch(2, 1, 10, 7).unwrap();
    assert_eq!(p.view().high_watermark, 10);
}

/// KIP-497: while an expansion is in flight the controller may already have committed it and
/// may elect the new member, so the HW must not pass it.
#[test]
fn the_high_watermark_counts_a_pending_isr_member() {
    let (_d, p) = replica(1);
    p.make_leader(1, 1, &[1, 2, 3], &[1, 2], 1).unwrap();
    p.append_as_leader(batch("a", 10), false).unwrap();
    p.record_follower_fetch(2, 1, 10, 7).unwrap();
    let change = p.record_follower_fetch(3, 1, 10, 7).unwrap();
    let change = change.expect("3 caught up");
    assert_eq!(change.isr, vec![1, 2, 3]);
    assert_eq!(
        change.added,
        vec![(3, 7)],
        "with the broker epoch it fetched with"
    );
    p.append_as_leader(batch("b", 10), false).unwrap();
    p.record_follower_fetch(2, 1, 20, 7).unwrap();
    assert_eq!(
        p.view().high_watermark,
        10,
        "broker 3 may be elected as soon as the controller commits it: it holds the HW"
    );
    p.record_follower_fetch(3, 1, 20, 7).unwrap();
    assert_eq!(p.view().high_watermark, 20);
}

/// KAFKA-7128: a follower at or past the HW but short of the leader's epoch start may still
/// hold an older epoch's tail; it must not join the ISR yet.
#[tokio::test]
async fn a_follower_joins_the_isr_only_inside_the_leaders_epoch() {
    let (_d, p) = replica(1);
    lead_and_append(&p, 1, 1, "a", 5);
    // Broker 2 stays in the ISR but never fetches: the HW stays at 5 from here on.
    p.make_leader(2, 2, &[1, 2, 3], &[1, 2], 1).unwrap();
    p.record_follower_fetch(2, 2, 5, 7).unwrap();
    p.append_as_leader(batch("b", 5), false).unwrap();
    p.make_follower(Some(2), 3);
    p.make_leader(4, 4, &[1, 2, 3], &[1, 2], 1).unwrap();
    assert_eq!(p.view().high_watermark, 5);
    assert_eq!(p.view().log_end, 10);
    let change = p.record_follower_fetch(3, 4, 7, 7).unwrap();
    assert!(
        change.is_none(),
        "7 is past the HW but before epoch 4 starts at 10"
    );
    let change = p.record_follower_fetch(3, 4, 10, 7).unwrap();
    assert_eq!(change.map(|c| c.isr), Some(vec![1, 2, 3]));
}

/// Issue 14 item 6: a restarted replica's HW starts at its checkpoint, not at the log start.
#[test]
fn the_high_watermark_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Partition::open(dir.path(), "t", 0, "topic-id", 1, LogConfig::default()).unwrap();
    let p = open();
    p.make_leader(1, 1, &[1, 2], &[1, 2], 1).unwrap();
    p.append_as_leader(batch("a", 10), false).unwrap();
    p.record_follower_fetch(2, 1, 10, 7).unwrap();
    assert_eq!(p.view().high_watermark, 10);
    p.close().unwrap();
    drop(p);
    let p = open();
    assert_eq!(p.view().high_watermark, 10);
    p.make_leader(2, 2, &[1, 2], &[1, 2], 1).unwrap();
    assert_eq!(
        p.view().high_watermark,
        10,
        "a restarted leader serves what was committed before"
    );
}
