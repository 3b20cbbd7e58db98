//! ProduceStream and OffsetForLeaderEpoch called directly over gRPC (`weir_proto::broker::v1`),
//! as another language's stub would: what `proto/broker.proto` promises of each, exactly.

use std::time::Duration;

use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;

use crate::common::data::*;
use crate::common::{assert_code, code_name, serial, wait_for, Cluster, STARTUP};

/// The next answer of a ProduceStream, within 15 s.
async fn next_answer(
    answers: &mut tonic::Streaming<bpb::ProduceResponse>,
    what: &str,
) -> bpb::ProduceResponse {
    match tokio::time::timeout(Duration::from_secs(15), answers.message()).await {
        Ok(Ok(Some(answer))) => answer,
        Ok(Ok(None)) => panic!("{what}: the answers ended early"),
        Ok(Err(status)) => panic!("{what}: the stream failed: {status}"),
        Err(_) => panic!("{what}: none within 15 s"),
    }
}

/// ProduceStream: requests sent back to back on one stream (none answered before the next is
/// sent) are appended in stream order and answered in that order, one answer per request,
/// whatever each one's acks or outcome; a bad request in the middle gets its error at its
/// position and stops nothing; the answers end when the requests do.
#[tokio::test]
async fn produce_stream_appends_and_answers_in_stream_order() {
    let _serial = serial();
    let (mut cluster, controller) = Cluster::start_ready(3, &[]).await;
    let r = cluster
        .create_topic(controller, "piped", 2, 3)
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, "piped", 2, 3).await;
    let (leader, _) = leader_of(&md, "piped", 0).unwrap();
    let (other, other_addr) = leader_of(&md, "piped", 1).unwrap();
    assert_ne!(
        leader, other,
        "the two partitions lead on different brokers"
    );

    let batch = |prefix: &str, n: usize| Records::Batch(build_batch(&numbered(prefix, n, 0)));
    let plain_n = |prefix: &str, n: usize| plain(&numbered(prefix, n, 0));
    // (request, expected code, expected base offset); the records that land, in order.
    let steps: Vec<(bpb::ProduceRequest, ErrorCode, i64)> = vec![
        (
            produce_req("piped", 0, 1, plain_n("p", 3)),
            ErrorCode::None,
            0,
        ),
        (
            produce_req("piped", 0, -1, batch("q", 4)),
            ErrorCode::None,
            3,
        ),
        (
            produce_req("piped", 0, 5, plain_n("bad", 1)),
            ErrorCode::InvalidRequiredAcks,
            -1,
        ),
        (
            produce_req("no-such-topic", 0, 1, plain_n("bad", 1)),
            ErrorCode::UnknownTopicOrPartition,
            -1,
        ),
        (
            produce_req("piped", 1, 1, plain_n("bad", 1)),
            ErrorCode::NotLeaderOrFollower,
            -1,
        ),
        (
            produce_req("piped", 0, -1, plain_n("r", 2)),
            ErrorCode::None,
            7,
        ),
        (
            produce_req("piped", 0, 1, batch("s", 1)),
            ErrorCode::None,
            9,
        ),
    ];
    let expected_values: Vec<String> = [("p", 3), ("q", 4), ("r", 2), ("s", 1)]
        .iter()
        .flat_map(|(p, n)| values(&numbered(p, *n, 0)))
        .collect();
    let requests: Vec<bpb::ProduceRequest> = steps.iter().map(|(r, _, _)| r.clone()).collect();
    let mut client = cluster.broker_client(leader);
    let mut answers = client
        .produce_stream(futures::stream::iter(requests))
        .await
        .expect("ProduceStream RPC")
        .into_inner();
    for (i, (req, expected, base)) in steps.iter().enumerate() {
        let what = format!(
            "answer {i} ({}-{} acks={})",
            req.topic, req.partition, req.acks
        );
        let answer = next_answer(&mut answers, &what).await;
        assert_code(&answer.error, *expected, &what);
        assert_eq!(answer.base_offset, *base, "{what}: base offset");
        let hint = if *expected == ErrorCode::NotLeaderOrFollower {
            other_addr.as_str()
        } else {
            ""
        };
        assert_eq!(answer.leader_address, hint, "{what}: leader address");
    }
    let end = tokio::time::timeout(Duration::from_secs(15), answers.message())
        .await
        .expect("the answers end when the requests do")
        .expect("ProduceStream answers");
    assert!(end.is_none(), "an answer past the last request: {end:?}");

    let mut leader_client = cluster.broker_client(leader);
    let got = fetch_range(&mut leader_client, "piped", 0, 0, 10, true).await;
    assert_eq!(values(&got), expected_values, "appended in stream order");
    let latest = list_offset(&mut leader_client, "piped", 0, -1).await;
    assert_eq!(latest.offset, 10, "nothing else appended");
    let latest = list_offset(&mut cluster.broker_client(other), "piped", 1, -1).await;
    assert_eq!(
        latest.offset, 0,
        "nothing appended to the partition led elsewhere"
    );
}

/// ProduceStream with acks=0 requests among the others: "appended strictly in the order they
/// arrive" holds for them too.
///
/// It did not: the stream's appender started an acks=0 append on a blocking thread and went on
/// to the next request without waiting for it, so the next append could take the log first
/// (seen in 5 of 8 runs before the fix: the acks=1 request at stream position 39 landed at
/// offset 38, before the acks=0 request sent ahead of it). A race, so one passing run proves
/// little; it passed 8 of 8 after the fix.
#[tokio::test]
async fn produce_stream_keeps_acks_0_requests_in_stream_order() {
    let _serial = serial();
    let (mut cluster, controller) = Cluster::start_ready(1, &[]).await;
    let r = cluster
        .create_topic(controller, "mixed", 1, 1)
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    wait_topic_ready(&mut cluster, "mixed", 1, 1).await;
    const PAIRS: usize = 400;
    let mut requests = Vec::new();
    let mut expected = Vec::new();
    for i in 0..PAIRS {
        for acks in [0, 1] {
            let records = numbered(&format!("acks{acks}-{i:04}"), 1, 0);
            expected.extend(values(&records));
            requests.push(produce_req("mixed", 0, acks, plain(&records)));
        }
    }
    let mut client = cluster.broker_client(1);
    let mut answers = client
        .produce_stream(futures::stream::iter(requests))
        .await
        .expect("ProduceStream RPC")
        .into_inner();
    for i in 0..2 * PAIRS {
        let answer = next_answer(&mut answers, &format!("answer {i}")).await;
        assert_code(&answer.error, ErrorCode::None, &format!("answer {i}"));
        // acks=0 answers carry no offset; acks=1 answers name where the record landed.
        let want = if i % 2 == 0 { -1 } else { i as i64 };
        assert_eq!(answer.base_offset, want, "answer {i}: base offset");
    }
    let n = 2 * PAIRS as i64;
    wait_for("every record appended", Duration::from_secs(10), || {
        let mut c = client.clone();
        async move { (list_offset(&mut c, "mixed", 0, -1).await.offset == n).then_some(()) }
    })
    .await;
    let got = fetch_range(&mut client, "mixed", 0, 0, n, true).await;
    assert_eq!(values(&got), expected, "appended in stream order");
}

/// OffsetForLeaderEpoch, asked of the leader after one leader change: where each epoch ended
/// in its log (the largest epoch at or below the one asked), refusals for a current epoch
/// that is behind (FENCED_LEADER_EPOCH) or ahead (UNKNOWN_LEADER_EPOCH), and for the wrong
/// broker or partition.
#[tokio::test]
async fn offset_for_leader_epoch_answers_where_each_epoch_ended() {
    let _serial = serial();
    let (mut cluster, controller) = Cluster::start_ready(3, &[]).await;
    let r = cluster
        .create_topic(controller, "epochs", 1, 3)
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, "epochs", 1, 3).await;
    let (first, _) = leader_of(&md, "epochs", 0).unwrap();
    let p = partition_md(&md, "epochs", 0).unwrap();
    assert_eq!(p.leader_epoch, 0);
    let r = produce(
        &mut cluster.broker_client(first),
        produce_req("epochs", 0, -1, plain(&numbered("e0", 5, 0))),
    )
    .await;
    assert_code(&r.error, ErrorCode::None, "produce in epoch 0");

    // The leader dies; the controller fences it and the next ISR member leads in epoch 1.
    cluster.kill(first);
    let second = wait_for("a leader in epoch 1", STARTUP, || {
        let fut = metadata(
            &mut cluster,
            controller_or_other(controller, first),
            "epochs",
        );
        async move {
            let p = partition_md(&fut.await?, "epochs", 0)?;
            (p.leader >= 0 && p.leader as u64 != first && p.leader_epoch == 1)
                .then_some(p.leader as u64)
        }
    })
    .await;
    let follower = (1..=3).find(|id| *id != first && *id != second).unwrap();
    let produced = wait_for("produce in epoch 1", STARTUP, || {
        let mut c = cluster.broker_client(second);
        async move {
            let req = produce_req("epochs", 0, -1, plain(&numbered("e1", 3, 0)));
            let r = c.produce(req).await.ok()?.into_inner();
            r.error.is_none().then_some(r)
        }
    })
    .await;
    assert_eq!(produced.base_offset, 5);

    let ask = |topic: &str, partition: u32, leader_epoch: i32, current_leader_epoch: i32| {
        bpb::OffsetForLeaderEpochRequest {
            topic: topic.into(),
            partition,
            leader_epoch,
            current_leader_epoch,
        }
    };
    let leader_addr = cluster.node(second).direct_broker_addr();
    let follower_addr = cluster.node(follower).direct_broker_addr();
    // (what, to the leader or the follower, request, code, (epoch, end offset)).
    let cases = [
        (
            "epoch 0 ended where epoch 1 began",
            true,
            ask("epochs", 0, 0, 1),
            ErrorCode::None,
            (0, 5),
        ),
        (
            "the current epoch ends at the log end",
            true,
            ask("epochs", 0, 1, 1),
            ErrorCode::None,
            (1, 8),
        ),
        (
            "an epoch past every known one",
            true,
            ask("epochs", 0, 7, 1),
            ErrorCode::None,
            (-1, -1),
        ),
        (
            "a current epoch behind the leader's",
            true,
            ask("epochs", 0, 0, 0),
            ErrorCode::FencedLeaderEpoch,
            (-1, -1),
        ),
        (
            "a current epoch ahead of the leader's",
            true,
            ask("epochs", 0, 1, 2),
            ErrorCode::UnknownLeaderEpoch,
            (-1, -1),
        ),
        (
            "asked of a follower",
            false,
            ask("epochs", 0, 0, 1),
            ErrorCode::NotLeaderOrFollower,
            (-1, -1),
        ),
        (
            "an unknown partition",
            true,
            ask("epochs", 4, 0, 1),
            ErrorCode::UnknownTopicOrPartition,
            (-1, -1),
        ),
        (
            "an unknown topic",
            true,
            ask("no-such-topic", 0, 0, 1),
            ErrorCode::UnknownTopicOrPartition,
            (-1, -1),
        ),
    ];
    for (what, to_leader, req, expected, (epoch, end)) in cases {
        let addr = if to_leader {
            &leader_addr
        } else {
            &follower_addr
        };
        let r = replication_client_at(addr)
            .offset_for_leader_epoch(req)
            .await
            .expect("OffsetForLeaderEpoch RPC")
            .into_inner();
        assert_code(&r.error, expected, what);
        assert_eq!(
            (r.leader_epoch, r.end_offset),
            (epoch, end),
            "{what} ({})",
            code_name(expected as i32)
        );
    }
}

/// A node to read Metadata from that is not `dead`: the controller, unless it is the dead one.
fn controller_or_other(controller: u64, dead: u64) -> u64 {
    if controller != dead {
        controller
    } else {
        (1..=3).find(|id| *id != dead).unwrap()
    }
}
