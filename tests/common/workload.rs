//! A Jepsen-style workload and checker for the fault tests.
//!
//! **Workload.** Several producers write unique values (`"<producer>-<seq>"`) to the
//! partitions of one topic, one record per Produce request, with acks=all or acks=1, and never
//! retry a send: each send has one outcome in the history — *acked* (with its offset),
//! *failed* (NOT_ENOUGH_REPLICAS: refused before the append), or *unknown* (anything else: a
//! timeout, a lost connection, an error after the append). A consumer per partition reads
//! from offset 0 for the whole run, reconnecting to whichever broker leads, and records every
//! (offset, value) it is served.
//!
//! **Checker**, after the faults are healed and a final full read of every partition:
//! - `lost`: an acks=all value acknowledged but absent from the final read (acks=1 losses are
//!   counted apart: a failover may lose them);
//! - `duplicate`: a value at two offsets (no send is retried, so any copy is an anomaly);
//! - `inconsistent`: one offset, two values — an acknowledged offset holding another value, or
//!   the consumer served a value at an offset the final read disagrees with;
//! - `phantom`: a value whose send was refused before the append, present anyway;
//! - `nonmonotonic` / `skip`: the consumer was served an offset below, or past, the next one it
//!   asked for;
//! - `divergent`: a partition whose replicas' log bytes below the high watermark differ.
//!
//! Every count must be 0. The history (sends, reads, faults with times) is written as JSON lines
//! to `target/tmp/` when a check fails, and the seed is printed first, so a failure can be
//! studied and re-run (`WEIR_FAULT_SEED`).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::sync::MutexExt;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::ErrorCode;
use weir_storage::batch::Batches;

use super::{broker_client_at, Cluster};

/// Milliseconds since the Unix epoch.
pub use weir_common::now_ms;

/// The seed for this run: `WEIR_FAULT_SEED` or the clock; printed so a failure can be re-run.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("WEIR_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64);
    println!("{test}: seed {seed} (re-run with WEIR_FAULT_SEED={seed})");
    seed
}

/// Rounds of faults: `default`, or `WEIR_FAULT_ROUNDS` for a long run.
pub fn rounds(default: usize) -> usize {
    std::env::var("WEIR_FAULT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// How one send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged at this offset.
    Acked(i64),
    /// Refused before the append (NOT_ENOUGH_REPLICAS): must not appear.
    Failed,
    /// Anything else: may or may not have been written.
    Unknown(String),
}

/// One send.
#[derive(Debug, Clone)]
pub struct SendOp {
    pub value: String,
    pub partition: u32,
    pub acks: i32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub outcome: Outcome,
}

/// One record the consumer was served.
#[derive(Debug, Clone)]
pub struct ReadOp {
    pub partition: u32,
    pub offset: i64,
    pub value: String,
    pub at_ms: i64,
}

/// Everything that happened.
#[derive(Debug, Default)]
pub struct History {
    pub sends: Vec<SendOp>,
    pub reads: Vec<ReadOp>,
    /// (time, what): faults and heals.
    pub faults: Vec<(i64, String)>,
    /// Consumer offsets served below the next one asked for.
    pub nonmonotonic: Vec<String>,
    /// Consumer offsets served past the next one asked for.
    pub skips: Vec<String>,
}

/// The running workload.
pub struct Workload {
    pub topic: String,
    pub partitions: u32,
    pub history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    bootstrap: Vec<String>,
}

/// Metadata for `topic` from the broker at `addr` (bounded: 2 s); `None` if it did not answer.
async fn metadata_of(addr: &str, topic: &str) -> Option<bpb::MetadataResponse> {
    let mut client = broker_client_at(addr);
    let req = bpb::MetadataRequest {
        topics: vec![topic.to_owned()],
    };
    let md = tokio::time::timeout(Duration::from_secs(2), client.metadata(req))
        .await
        .ok()?
        .ok()?;
    Some(md.into_inner())
}

/// The leader's broker address of every partition of `topic`, asking the brokers in
/// `bootstrap` in turn; `None` for leaderless partitions.
pub async fn leaders(bootstrap: &[String], topic: &str) -> Option<HashMap<u32, String>> {
    for addr in bootstrap {
        let Some(md) = metadata_of(addr, topic).await else {
            continue;
        };
        let Some(t) = md.topics.iter().find(|t| t.name == topic) else {
            continue;
        };
        let mut out = HashMap::new();
        for p in &t.partitions {
            let Ok(leader) = u64::try_from(p.leader) else {
                continue;
            };
            if let Some(b) = md.brokers.iter().find(|b| b.id == leader) {
                out.insert(p.partition, b.address.clone());
            }
        }
        return Some(out);
    }
    None
}

impl Workload {
    /// Starts `acks_all` acks=all producers and `acks_one` acks=1 producers on `topic`
    /// (`partitions` partitions), each sending about `rate` records per second, and one
    /// consumer per partition.
    pub fn start(
        cluster: &mut Cluster,
        topic: &str,
        partitions: u32,
        acks_all: usize,
        acks_one: usize,
        rate: u32,
        seed: u64,
    ) -> Self {
        let bootstrap = cluster.broker_addrs();
        let history = Arc::new(Mutex::new(History::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..acks_all + acks_one {
            let acks = if i < acks_all { -1 } else { 1 };
            tasks.push(tokio::spawn(producer(
                i,
                acks,
                rate,
                seed.wrapping_add(i as u64),
                topic.to_owned(),
                partitions,
                bootstrap.clone(),
                Arc::clone(&history),
                Arc::clone(&stop),
            )));
        }
        for p in 0..partitions {
            tasks.push(tokio::spawn(consumer(
                p,
                topic.to_owned(),
                bootstrap.clone(),
                Arc::clone(&history),
                Arc::clone(&stop),
            )));
        }
        Self {
            topic: topic.to_owned(),
            partitions,
            history,
            stop,
            tasks,
            bootstrap,
        }
    }

    /// Notes a fault (or heal) in the history, and prints it.
    pub fn fault(&self, what: impl Into<String>) {
        let what = what.into();
        println!("fault at {}: {what}", now_ms());
        self.history.locked().faults.push((now_ms(), what));
    }

    /// Acknowledged sends so far.
    pub fn acked(&self) -> usize {
        self.history
            .locked()
            .sends
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Acked(_)))
            .count()
    }

    /// Waits until at least `n` more sends are acknowledged (bounded by `timeout`): the cluster
    /// serves again after a fault.
    pub async fn wait_acks(&self, n: usize, timeout: Duration) -> bool {
        let target = self.acked() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.acked() >= target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stops the producers and consumers.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
        }
    }

    /// Waits until every partition has a leader with a full ISR of `rf`, then reads each
    /// partition whole from its leader and compares its replicas' log bytes on disk. Returns
    /// the checker's report. Bounded by `timeout`.
    pub async fn check(&mut self, cluster: &mut Cluster, rf: usize, timeout: Duration) -> Report {
        self.stop().await;
        let deadline = Instant::now() + timeout;
        // 1. Every partition led with a full ISR, seen by some broker.
        let (replicas, hws) = loop {
            if let Some(state) = agreed_partition_states(&self.bootstrap, &self.topic).await {
                if state.len() == self.partitions as usize
                    && state.values().all(|(_, isr, _)| isr.len() == rf)
                {
                    let mut hws = BTreeMap::new();
                    let mut replicas = BTreeMap::new();
                    let mut ok = true;
                    for (p, (leader, _, reps)) in &state {
                        match high_watermark(leader, &self.topic, *p).await {
                            Some(hw) => {
                                hws.insert(*p, (leader.clone(), hw));
                                replicas.insert(*p, reps.clone());
                            }
                            None => ok = false,
                        }
                    }
                    if ok {
                        break (replicas, hws);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not heal within {timeout:?}: not every partition has a leader, a full ISR and a high watermark at its log end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // 2. The final read.
        let mut final_log: BTreeMap<u32, Vec<(i64, String)>> = BTreeMap::new();
        for (p, (leader, hw)) in &hws {
            final_log.insert(*p, read_all(leader, &self.topic, *p, *hw).await);
        }
        // 3. Replicas on disk, below the HW, byte for byte (waiting for followers to catch up).
        let mut divergent = Vec::new();
        for (p, (_, hw)) in &hws {
            let mut logs = Vec::new();
            for id in &replicas[p] {
                let dir = cluster
                    .node(*id)
                    .data_dir
                    .join("logs")
                    .join(format!("{}-{p}", self.topic));
                let mut batches = disk_batches(&dir, *hw);
                while batches.last().map_or(0, |b| b.0) < *hw && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    batches = disk_batches(&dir, *hw);
                }
                logs.push((*id, batches));
            }
            let (first_id, first) = &logs[0];
            for (id, other) in &logs[1..] {
                if other != first {
                    let at = first
                        .iter()
                        .zip(other.iter())
                        .position(|(a, b)| a != b)
                        .unwrap_or(first.len().min(other.len()));
                    divergent.push(format!(
                        "partition {p}: replicas {first_id} and {id} differ at batch {at} below HW {hw} ({} vs {} batches)",
                        first.len(),
                        other.len()
                    ));
                }
            }
        }
        let history = self.history.locked();
        Report::of(&history, &final_log, divergent)
    }

    /// Writes the history as JSON lines under `target/tmp/`; returns the path.
    pub fn save_history(&self, name: &str, seed: u64) -> String {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("fault-history-{name}-{seed}.jsonl"));
        let history = self.history.locked();
        let mut out = String::new();
        for (at, what) in &history.faults {
            out.push_str(&serde_json::json!({"fault": what, "at_ms": at}).to_string());
            out.push('\n');
        }
        for s in &history.sends {
            let (outcome, offset) = match &s.outcome {
                Outcome::Acked(o) => ("acked".to_owned(), *o),
                Outcome::Failed => ("failed".to_owned(), -1),
                Outcome::Unknown(why) => (format!("unknown: {why}"), -1),
            };
            out.push_str(
                &serde_json::json!({"send": s.value, "partition": s.partition, "acks": s.acks,
                    "start_ms": s.start_ms, "end_ms": s.end_ms, "outcome": outcome, "offset": offset})
                .to_string(),
            );
            out.push('\n');
        }
        for r in &history.reads {
            out.push_str(
                &serde_json::json!({"read": r.value, "partition": r.partition, "offset": r.offset, "at_ms": r.at_ms})
                    .to_string(),
            );
            out.push('\n');
        }
        let _ = std::fs::write(&path, out);
        path.display().to_string()
    }
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    pub acked_all: usize,
    pub acked_one: usize,
    pub unknown: usize,
    pub failed: usize,
    pub lost: Vec<String>,
    pub lost_acks_one: usize,
    pub duplicate: Vec<String>,
    pub inconsistent: Vec<String>,
    pub phantom: Vec<String>,
    pub nonmonotonic: Vec<String>,
    pub skip: Vec<String>,
    pub divergent: Vec<String>,
    /// Per fault: the longest time any partition went without an acknowledged send between it
    /// and the next fault (at most 30 s), in ms.
    pub unavailability: Vec<(String, i64)>,
}

impl Report {
    fn of(
        history: &History,
        final_log: &BTreeMap<u32, Vec<(i64, String)>>,
        divergent: Vec<String>,
    ) -> Self {
        let mut r = Report {
            divergent,
            nonmonotonic: history.nonmonotonic.clone(),
            skip: history.skips.clone(),
            ..Report::default()
        };
        // Where each value is in the final read, and what each offset holds.
        let mut at: HashMap<(u32, &str), Vec<i64>> = HashMap::new();
        let mut by_offset: HashMap<(u32, i64), &str> = HashMap::new();
        for (p, records) in final_log {
            for (offset, value) in records {
                at.entry((*p, value.as_str())).or_default().push(*offset);
                by_offset.insert((*p, *offset), value.as_str());
            }
        }
        for ((p, value), offsets) in &at {
            if offsets.len() > 1 {
                r.duplicate
                    .push(format!("{value} in partition {p} at offsets {offsets:?}"));
            }
        }
        for s in &history.sends {
            let found = at.get(&(s.partition, s.value.as_str()));
            match &s.outcome {
                Outcome::Acked(offset) => {
                    if s.acks == -1 {
                        r.acked_all += 1;
                    } else {
                        r.acked_one += 1;
                    }
                    match found {
                        None if s.acks == -1 => r.lost.push(format!(
                            "{} (partition {}, acked at offset {offset})",
                            s.value, s.partition
                        )),
                        None => r.lost_acks_one += 1,
                        Some(offsets) if !offsets.contains(offset) => r.inconsistent.push(format!(
                            "{} acked at {}/{offset} but read at {offsets:?}",
                            s.value, s.partition
                        )),
                        Some(_) => {}
                    }
                }
                Outcome::Failed => {
                    r.failed += 1;
                    if found.is_some() {
                        r.phantom.push(format!(
                            "{} (partition {}) was refused but is in the log",
                            s.value, s.partition
                        ));
                    }
                }
                Outcome::Unknown(_) => r.unknown += 1,
            }
        }
        for read in &history.reads {
            match by_offset.get(&(read.partition, read.offset)) {
                Some(v) if *v == read.value => {}
                other => r.inconsistent.push(format!(
                    "the consumer read {} at {}/{}, the final read has {other:?}",
                    read.value, read.partition, read.offset
                )),
            }
        }
        // Unavailability after each fault.
        let mut acks: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
        for s in &history.sends {
            if matches!(s.outcome, Outcome::Acked(_)) {
                acks.entry(s.partition).or_default().push(s.end_ms);
            }
        }
        for v in acks.values_mut() {
            v.sort_unstable();
        }
        let last_ack = acks
            .values()
            .filter_map(|v| v.last())
            .copied()
            .max()
            .unwrap_or(0);
        for (i, (t, what)) in history.faults.iter().enumerate() {
            // Until the next fault (at most 30 s): each gap is counted once.
            let end = history
                .faults
                .get(i + 1)
                .map_or(t + 30_000, |(next, _)| *next)
                .min(t + 30_000)
                .min(last_ack);
            let mut worst = 0;
            for times in acks.values() {
                let mut prev = *t;
                for &a in times.iter().filter(|a| **a > *t && **a <= end) {
                    worst = worst.max(a - prev);
                    prev = a;
                }
                // A partition still silent when the window closes was unavailable that long.
                worst = worst.max(end - prev);
            }
            r.unavailability.push((what.clone(), worst));
        }
        r
    }

    /// Anomalies of every kind that must be 0.
    pub fn anomalies(&self) -> usize {
        self.lost.len()
            + self.duplicate.len()
            + self.inconsistent.len()
            + self.phantom.len()
            + self.nonmonotonic.len()
            + self.skip.len()
            + self.divergent.len()
    }

    /// Prints the summary.
    pub fn print(&self, name: &str) {
        println!(
            "{name}: acked {} with acks=all and {} with acks=1, {} unknown, {} refused",
            self.acked_all, self.acked_one, self.unknown, self.failed
        );
        println!(
            "{name}: lost {} · duplicate {} · inconsistent {} · phantom {} · nonmonotonic {} · skip {} · divergent {} · (acks=1 lost {})",
            self.lost.len(),
            self.duplicate.len(),
            self.inconsistent.len(),
            self.phantom.len(),
            self.nonmonotonic.len(),
            self.skip.len(),
            self.divergent.len(),
            self.lost_acks_one
        );
        for (what, ms) in &self.unavailability {
            println!("{name}: after `{what}`: longest gap between acks on a partition until the next fault {ms} ms");
        }
        for list in [
            &self.lost,
            &self.duplicate,
            &self.inconsistent,
            &self.phantom,
            &self.nonmonotonic,
            &self.skip,
            &self.divergent,
        ] {
            for line in list.iter().take(10) {
                println!("  {line}");
            }
        }
    }
}

/// Checks the report: prints it, and on any anomaly saves the history and panics.
pub fn assert_clean(workload: &Workload, report: &Report, name: &str, seed: u64) {
    report.print(name);
    assert!(report.acked_all > 0, "{name}: nothing was acknowledged");
    if report.anomalies() > 0 {
        let path = workload.save_history(name, seed);
        panic!(
            "{name} (seed {seed}): {} anomalies; history kept in {path}",
            report.anomalies()
        );
    }
}

/// (leader address, ISR, replicas) per partition, when every broker in `bootstrap` answers
/// and all agree (leaders, epochs, ISRs). A broker that has just woken from a pause may still
/// believe it leads in an old epoch for a moment; the final read must not trust it.
pub async fn agreed_partition_states(
    bootstrap: &[String],
    topic: &str,
) -> Option<BTreeMap<u32, (String, Vec<u64>, Vec<u64>)>> {
    type View = Vec<(u32, String, i32, Vec<u64>, Vec<u64>)>;
    let mut agreed: Option<View> = None;
    for addr in bootstrap {
        let md = metadata_of(addr, topic).await?;
        let t = md.topics.iter().find(|t| t.name == topic)?;
        let mut view = Vec::new();
        for p in &t.partitions {
            let leader = u64::try_from(p.leader).ok()?;
            let b = md.brokers.iter().find(|b| b.id == leader)?;
            view.push((
                p.partition,
                b.address.clone(),
                p.leader_epoch,
                p.isr.clone(),
                p.replicas.clone(),
            ));
        }
        view.sort();
        match &agreed {
            None => agreed = Some(view),
            Some(first) if *first == view => {}
            Some(_) => return None,
        }
    }
    Some(
        agreed?
            .into_iter()
            .map(|(p, addr, _, isr, replicas)| (p, (addr, isr, replicas)))
            .collect(),
    )
}

/// The partition's high watermark on `leader`, once it has reached the log end (every
/// replica in the ISR has everything; the workload has stopped, so this is where it settles).
async fn high_watermark(leader: &str, topic: &str, partition: u32) -> Option<i64> {
    let mut client = broker_client_at(leader);
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        client.partition_offsets(bpb::PartitionOffsetsRequest {
            topic: topic.to_owned(),
        }),
    )
    .await
    .ok()?
    .ok()?
    .into_inner();
    let p = r.partitions.iter().find(|p| p.partition == partition)?;
    (p.error.is_none() && p.high_watermark >= 0 && p.high_watermark == p.log_end_offset)
        .then_some(p.high_watermark)
}

/// Every record of `[0, hw)` read from `leader` through one Fetch stream (bounded: 60 s).
async fn read_all(leader: &str, topic: &str, partition: u32, hw: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < hw {
        assert!(
            Instant::now() < deadline,
            "final read of {topic}-{partition} stuck at {next} of {hw}"
        );
        let mut client = broker_client_at(leader);
        let req = bpb::FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset: next,
            max_bytes: 1 << 20,
            min_bytes: 1,
            max_wait_ms: 200,
            decode: true,
        };
        let Ok(stream) = client.fetch(req).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while next < hw {
            let Ok(Ok(Some(msg))) =
                tokio::time::timeout(Duration::from_secs(5), stream.message()).await
            else {
                break;
            };
            assert!(msg.error.is_none(), "final read: {:?}", msg.error);
            for r in msg.records {
                if r.offset >= hw {
                    break;
                }
                next = r.offset + 1;
                out.push((r.offset, value_text(&r.value)));
            }
        }
    }
    out
}

fn value_text(v: &Option<Bytes>) -> String {
    v.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

/// (next offset after the batch, batch bytes) of every whole batch on disk in `dir` that ends
/// at or below `hw`, in offset order.
fn disk_batches(dir: &std::path::Path, hw: i64) -> Vec<(i64, Bytes)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        for batch in Batches::new(Bytes::from(bytes)) {
            let Ok(batch) = batch else { break };
            let next = batch.header().next_offset();
            if next > hw {
                return out;
            }
            out.push((next, batch.into_bytes()));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn producer(
    id: usize,
    acks: i32,
    rate: u32,
    seed: u64,
    topic: String,
    partitions: u32,
    bootstrap: Vec<String>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let pause = Duration::from_micros(1_000_000 / u64::from(rate.max(1)));
    let mut routes: HashMap<u32, String> = HashMap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let partition = rng.gen_range(0..partitions);
        let Some(addr) = routes.get(&partition).cloned() else {
            if let Some(found) = leaders(&bootstrap, &topic).await {
                routes = found;
            }
            if !routes.contains_key(&partition) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let value = format!("{id}-{seq}");
        seq += 1;
        let req = bpb::ProduceRequest {
            topic: topic.clone(),
            partition,
            acks,
            timeout_ms: 2_000,
            records: Some(Records::Plain(bpb::RecordList {
                records: vec![bpb::Record {
                    value: Some(Bytes::from(value.clone())),
                    ..Default::default()
                }],
            })),
        };
        let start_ms = now_ms();
        let mut client = broker_client_at(&addr);
        let answer = tokio::time::timeout(Duration::from_secs(3), client.produce(req)).await;
        let outcome = match answer {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                match r.error {
                    None => Outcome::Acked(r.base_offset),
                    Some(e) if e.code == ErrorCode::NotEnoughReplicas as i32 => Outcome::Failed,
                    Some(e) => {
                        routes.remove(&partition);
                        if !r.leader_address.is_empty() {
                            routes.insert(partition, r.leader_address.clone());
                        }
                        let code = ErrorCode::try_from(e.code)
                            .map(|c| c.as_str_name().to_owned())
                            .unwrap_or_else(|_| e.code.to_string());
                        Outcome::Unknown(code)
                    }
                }
            }
            Ok(Err(status)) => {
                routes.remove(&partition);
                Outcome::Unknown(format!("rpc: {}", status.code()))
            }
            Err(_) => {
                routes.remove(&partition);
                Outcome::Unknown("client timeout".into())
            }
        };
        let failed = !matches!(outcome, Outcome::Acked(_));
        history.locked().sends.push(SendOp {
            value,
            partition,
            acks,
            start_ms,
            end_ms: now_ms(),
            outcome,
        });
        tokio::time::sleep(if failed {
            Duration::from_millis(50)
        } else {
            pause
        })
        .await;
    }
}

async fn consumer(
    partition: u32,
    topic: String,
    bootstrap: Vec<String>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) {
    let mut next = 0i64;
    while !stop.load(Ordering::SeqCst) {
        let Some(addr) = leaders(&bootstrap, &topic)
            .await
            .and_then(|l| l.get(&partition).cloned())
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut client = broker_client_at(&addr);
        let req = bpb::FetchRequest {
            topic: topic.clone(),
            partition,
            offset: next,
            max_bytes: 256 * 1024,
            min_bytes: 1,
            max_wait_ms: 200,
            decode: true,
        };
        let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(3), client.fetch(req)).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while !stop.load(Ordering::SeqCst) {
            let Ok(Ok(Some(msg))) =
                tokio::time::timeout(Duration::from_secs(3), stream.message()).await
            else {
                break;
            };
            if msg.error.is_some() {
                break;
            }
            let mut h = history.locked();
            for r in msg.records {
                if r.offset < next {
                    h.nonmonotonic.push(format!(
                        "partition {partition}: served offset {} after asking for {next}",
                        r.offset
                    ));
                } else if r.offset > next {
                    h.skips.push(format!(
                        "partition {partition}: served offset {} after asking for {next}",
                        r.offset
                    ));
                }
                next = next.max(r.offset + 1);
                h.reads.push(ReadOp {
                    partition,
                    offset: r.offset,
                    value: value_text(&r.value),
                    at_ms: now_ms(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
