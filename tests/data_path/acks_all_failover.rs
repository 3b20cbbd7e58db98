//! acks=all across a leader kill under load: every batch a leader acknowledged with acks=all
//! is in the new leader's log at the offsets it was acknowledged with, in order, and the old
//! leader comes back with exactly the new leader's log.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::transport::Channel;
use weir_common::now_ms;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_storage::Record;

use crate::common::data::*;
use crate::common::{
    assert_code, broker_client_at, code, code_name, serial, wait_for, Cluster, STARTUP,
};

const DURABLE: &str = "durable";
const PER_BATCH: u64 = 20;
/// Batches acknowledged before the kill, and again by the new leader, before the checks.
const LOAD: usize = 10;

/// A batch the leader acknowledged with acks=all.
#[derive(Debug, Clone)]
struct Acked {
    /// Number of its first record (values are `rec-N`).
    first: u64,
    /// Offset the leader assigned to its first record.
    base_offset: i64,
    /// Address of the broker that acknowledged it.
    addr: String,
}

#[derive(Default)]
struct ProducerState {
    stop: AtomicBool,
    acked: Mutex<Vec<Acked>>,
    unexpected: Mutex<Vec<String>>,
    retries: Mutex<u64>,
}

/// The leader of `DURABLE`-0 according to the first broker in `addrs` that answers.
async fn find_leader(
    addrs: &[String],
    clients: &mut HashMap<String, BrokerClient<Channel>>,
    rotate: usize,
) -> Option<String> {
    for i in 0..addrs.len() {
        let addr = &addrs[(i + rotate) % addrs.len()];
        let client = clients
            .entry(addr.clone())
            .or_insert_with(|| broker_client_at(addr));
        let req = bpb::MetadataRequest {
            topics: vec![DURABLE.into()],
        };
        let Ok(Ok(md)) = tokio::time::timeout(Duration::from_secs(2), client.metadata(req)).await
        else {
            continue;
        };
        if let Some((_, leader)) = leader_of(&md.into_inner(), DURABLE, 0) {
            return Some(leader);
        }
    }
    None
}

/// Sends numbered records with acks=all, one batch at a time, to the current leader; retries
/// the same batch until it is acknowledged (so a batch may land twice, never out of order).
async fn producer_loop(addrs: Vec<String>, st: Arc<ProducerState>) {
    let mut clients: HashMap<String, BrokerClient<Channel>> = HashMap::new();
    let mut leader: Option<String> = None;
    let mut next = 0u64;
    let mut rotate = 0usize;
    'batches: while !st.stop.load(Ordering::SeqCst) {
        let records: Vec<Record> = (next..next + PER_BATCH)
            .map(|n| Record {
                key: Some(Bytes::from(format!("k{}", n % 7))),
                value: Some(Bytes::from(format!("rec-{n}"))),
                timestamp: now_ms(),
                ..Record::default()
            })
            .collect();
        let batch = build_batch(&records);
        loop {
            if st.stop.load(Ordering::SeqCst) {
                break 'batches; // an unacknowledged batch is abandoned (it may have landed)
            }
            let addr = match leader.clone() {
                Some(addr) => addr,
                None => {
                    rotate += 1;
                    match find_leader(&addrs, &mut clients, rotate).await {
                        Some(addr) => {
                            leader = Some(addr.clone());
                            addr
                        }
                        None => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
            };
            let mut client = clients
                .entry(addr.clone())
                .or_insert_with(|| broker_client_at(&addr))
                .clone();
            let mut req = produce_req(DURABLE, 0, -1, Records::Batch(batch.clone()));
            req.timeout_ms = 5000;
            let answer = tokio::time::timeout(Duration::from_secs(8), client.produce(req)).await;
            let r = match answer {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(_)) | Err(_) => {
                    // Connection refused or reset, or no answer: ask Metadata again.
                    *st.retries.lock().unwrap() += 1;
                    leader = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let c = code(&r.error);
            if c == ErrorCode::None as i32 {
                st.acked.lock().unwrap().push(Acked {
                    first: next,
                    base_offset: r.base_offset,
                    addr,
                });
                next += PER_BATCH;
                continue 'batches;
            }
            *st.retries.lock().unwrap() += 1;
            if c == ErrorCode::NotLeaderOrFollower as i32 {
                leader = (!r.leader_address.is_empty() && r.leader_address != addr)
                    .then_some(r.leader_address);
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else if c == ErrorCode::NotEnoughReplicas as i32
                || c == ErrorCode::NotEnoughReplicasAfterAppend as i32
                || c == ErrorCode::RequestTimedOut as i32
            {
                leader = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                st.unexpected.lock().unwrap().push(format!(
                    "{} from {addr}: {:?}",
                    code_name(c),
                    r.error
                ));
                leader = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Parses `rec-N`.
fn number(r: &Record) -> u64 {
    text(&r.value)
        .strip_prefix("rec-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "unexpected value at offset {}: {}",
                r.offset,
                text(&r.value)
            )
        })
}

/// Checks a partition read from offset 0: offsets consecutive, every acknowledged batch at
/// the offsets it was acknowledged with, first appearances of numbers increasing.
#[track_caller]
fn check_durable_log(log: &[Record], acked: &[Acked]) {
    for (i, r) in log.iter().enumerate() {
        assert_eq!(r.offset, i as i64, "no gap or duplicate offset");
    }
    for a in acked {
        for i in 0..PER_BATCH {
            let offset = a.base_offset + i as i64;
            let r = log.get(offset as usize).unwrap_or_else(|| {
                panic!(
                    "acked batch {a:?}: offset {offset} missing (log ends at {})",
                    log.len()
                )
            });
            assert_eq!(
                number(r),
                a.first + i,
                "acked batch {a:?} at offset {offset}"
            );
        }
    }
    let mut seen = BTreeSet::new();
    let mut last_first: Option<u64> = None;
    for r in log {
        let n = number(r);
        if seen.insert(n) {
            assert!(
                !matches!(last_first, Some(l) if n <= l),
                "first appearance of {n} at offset {} after {last_first:?}",
                r.offset
            );
            last_first = Some(n);
        }
    }
}

#[tokio::test]
async fn acked_records_survive_leader_kill_under_acks_all_load() {
    let _serial = serial();
    let started = Instant::now();
    let mut cluster = Cluster::start(3, 0, &[]);
    cluster.wait_healthy(STARTUP).await;
    let controller = cluster.wait_leader(STARTUP).await;
    cluster.wait_active_brokers(controller, 3, STARTUP).await;
    let r = cluster
        .create_topic_with(controller, DURABLE, 1, 3, &[("min.insync.replicas", "2")])
        .await
        .unwrap();
    assert_code(&r.error, ErrorCode::None, "CreateTopic");
    let md = wait_topic_ready(&mut cluster, DURABLE, 1, 3).await;
    let (old_leader, old_addr) = leader_of(&md, DURABLE, 0).unwrap();

    let addrs: Vec<String> = (1..=3).map(|id| cluster.node(id).broker_addr()).collect();
    let state = Arc::new(ProducerState::default());
    let producer = tokio::spawn(producer_loop(addrs, state.clone()));

    // Load first: the kill must land while batches are being acknowledged.
    let st = state.clone();
    wait_for(
        &format!("{LOAD} acks=all acks before the kill"),
        Duration::from_secs(20),
        || {
            let n = st.acked.lock().unwrap().len();
            async move { (n >= LOAD).then_some(()) }
        },
    )
    .await;
    let before_kill = state.acked.lock().unwrap().len();
    cluster.kill(old_leader);
    let killed = Instant::now();

    let st = state.clone();
    let old = old_addr.clone();
    wait_for(
        "an acks=all ack from a new leader",
        Duration::from_secs(25),
        || {
            let ok = st.acked.lock().unwrap().iter().any(|a| a.addr != old);
            async move { ok.then_some(()) }
        },
    )
    .await;
    let failover = killed.elapsed();
    // Load under the new leader too, before the producer stops.
    let st = state.clone();
    wait_for(
        &format!("{LOAD} acks=all acks from the new leader"),
        Duration::from_secs(20),
        || {
            let n = st
                .acked
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.addr != old)
                .count();
            async move { (n >= LOAD).then_some(()) }
        },
    )
    .await;
    state.stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(15), producer)
        .await
        .expect("the producer stops")
        .unwrap();

    let acked = state.acked.lock().unwrap().clone();
    let unexpected = state.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "unexpected produce errors: {unexpected:?}"
    );
    let after_kill = acked.iter().filter(|a| a.addr != old_addr).count();
    assert!(
        after_kill >= LOAD,
        "{after_kill} batches acknowledged by the new leader"
    );

    let (new_leader, new_addr) = wait_leader_of(&mut cluster, DURABLE, 0, Some(old_leader)).await;
    let mut client = broker_client_at(&new_addr);
    // The producer has stopped; a batch it gave up on may still be committing. The log is
    // settled once the high watermark reaches the log end: from then on neither moves.
    let hw = wait_for(
        "the new leader's HW at its log end",
        Duration::from_secs(15),
        || {
            let mut c = client.clone();
            async move {
                let r = c
                    .partition_offsets(bpb::PartitionOffsetsRequest {
                        topic: DURABLE.into(),
                    })
                    .await
                    .ok()?
                    .into_inner();
                let p = r.partitions.iter().find(|p| p.partition == 0)?;
                (code(&r.error) == 0 && p.high_watermark == p.log_end_offset)
                    .then_some(p.high_watermark)
            }
        },
    )
    .await;
    let latest = list_offset(&mut client, DURABLE, 0, -1).await;
    assert_code(
        &latest.error,
        ErrorCode::None,
        "ListOffsets latest on the new leader",
    );
    assert_eq!(latest.offset, hw, "ListOffsets latest is the HW");
    let log = fetch_range(&mut client, DURABLE, 0, 0, hw, false).await;
    check_durable_log(&log, &acked);
    let numbers: BTreeSet<u64> = log.iter().map(number).collect();
    let acked_count = acked.len() as u64 * PER_BATCH;
    assert!((0..acked_count).all(|n| numbers.contains(&n)));
    eprintln!(
        "acked {} batches ({before_kill} before the kill, {after_kill} by the new leader \
         {new_leader}), failover {failover:?}, {} retries, log of {hw} records",
        acked.len(),
        *state.retries.lock().unwrap()
    );

    // The old leader comes back, truncates what it had past the new leader's epoch, catches up
    // and rejoins the ISR.
    cluster.spawn(old_leader);
    wait_for(
        "the old leader back in the ISR",
        Duration::from_secs(30),
        || {
            let fut = metadata(&mut cluster, new_leader, DURABLE);
            async move {
                let md = fut.await?;
                let p = partition_md(&md, DURABLE, 0)?;
                (p.isr.len() == 3 && p.leader >= 0).then_some(())
            }
        },
    )
    .await;
    let (_, leader_addr) = wait_leader_of(&mut cluster, DURABLE, 0, None).await;
    let mut client = broker_client_at(&leader_addr);
    let end = list_offset(&mut client, DURABLE, 0, -1).await.offset;
    assert_eq!(
        end, hw,
        "the settled log changed when the old leader came back"
    );
    let again = fetch_range(&mut client, DURABLE, 0, 0, end, true).await;
    check_durable_log(&again, &acked);
    for (a, b) in log.iter().zip(&again) {
        assert_eq!(
            (a.offset, &a.value),
            (b.offset, &b.value),
            "committed records changed"
        );
    }

    // Its log on disk is the leader's, record for record: the divergent tail it had when it
    // was killed is gone.
    let data_dir = cluster.node(old_leader).data_dir.clone();
    wait_for(
        "the old leader's log equal to the leader's",
        Duration::from_secs(15),
        || {
            let disk = disk_records(&data_dir, DURABLE, 0);
            let same = disk.len() == again.len()
                && disk
                    .iter()
                    .zip(&again)
                    .all(|(d, l)| d.offset == l.offset && d.value == l.value);
            async move { same.then_some(()) }
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}
