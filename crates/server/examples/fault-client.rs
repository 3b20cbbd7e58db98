//! `fault-client`: the client side of the compose fault test (`scripts/compose-test.sh`),
//! speaking the broker's gRPC contract (`proto/broker.proto`) directly, so that what the test
//! checks depends on nothing but the wire contract.
//!
//! ```text
//! cargo run --release -p weir-server --example fault-client -- \
//!     --bootstrap 127.0.0.1:9700,127.0.0.1:9710,127.0.0.1:9720 <command> …
//! ```
//!
//! Every request goes to the first `--bootstrap` address that answers (a dead node is skipped),
//! except produce and fetch, which go to the partition's leader as Metadata names it. Every
//! wait is bounded by `--timeout-secs` and polls its condition; the answer is one JSON line on
//! stdout (progress and retries go to stderr), and a command that fails or times out exits
//! non-zero.
//!
//! - `create-topic NAME`: CreateTopic (retried while the quorum has no leader or too few
//!   brokers are registered), then waits until every partition has a leader.
//! - `describe TOPIC`: the topic's partitions (leader, epoch, replicas, ISR) from the
//!   controller.
//! - `wait-leader TOPIC PARTITION --not ID`: until the partition has a leader other than ID.
//! - `wait-isr TOPIC --size N`: until every partition's ISR has N members.
//! - `controller`: the controller leader's node id, the brokers with their state, the voters.
//! - `metadata TOPIC`: the first bootstrap broker's own Metadata view of a topic.
//! - `wait-controller --not ID`: until a controller other than ID leads the quorum.
//! - `wait-fenced NODE`: until the controller has fenced broker NODE.
//! - `wait-rejoin NODE --topic T`: until broker NODE is registered and active again and its own
//!   broker listener answers Metadata that knows topic T (it has replayed the metadata log past
//!   T's creation).
//! - `produce TOPIC --records N --out DIR`: produces records `0..N` (the value of record `n` is
//!   `n` in decimal; record `n` goes to partition `n % partitions`, so each partition gets an
//!   increasing sequence) with acks=all, one batch in flight per partition so that retries
//!   cannot reorder a partition, optionally at `--rate` records/s. A batch that fails with a
//!   retriable error (no leader, not enough replicas, timeout, connection lost) is retried
//!   against the leader Metadata names until `--batch-deadline-secs`, then given up. Writes
//!   `DIR/acked` (every record number whose batch was acknowledged), `DIR/retried` (numbers
//!   sent more than once: these may legitimately appear twice), `DIR/failed` (given up;
//!   unacknowledged, so they may or may not be present), and, while running, the count of
//!   acknowledged records to `--progress FILE` (for the test to time its faults).
//! - `verify TOPIC --records N --out DIR`: reads every partition from its log start to its high
//!   watermark (decoded records) and checks: every acknowledged record is present; a record
//!   appears twice only if it was retried; each partition holds only its own numbers, and the
//!   first occurrences are in increasing order (per-partition order kept); no record outside
//!   `0..N`.

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::now_ms;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::{Error as PbError, ErrorCode};
use weir_proto::controller::v1 as cpb;

/// Errors of this tool: anything, as long as it can cross tasks.
type BoxError = Box<dyn Error + Send + Sync>;
/// Results of this tool.
type BoxResult<T> = Result<T, BoxError>;

/// How often a wait polls its condition.
const POLL: Duration = Duration::from_millis(200);
/// Bound of one admin or Metadata request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes asked for per Fetch answer.
const FETCH_MAX_BYTES: u32 = 1 << 20;

/// The client side of the compose fault test.
#[derive(Debug, Parser)]
#[command(name = "fault-client")]
struct Cli {
    /// Broker listeners to ask (host:port, comma-separated); the first that answers is used.
    #[arg(
        long,
        env = "WEIR_BOOTSTRAP",
        default_value = "127.0.0.1:9700",
        value_delimiter = ','
    )]
    bootstrap: Vec<String>,
    /// Bound of the whole command, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// The command.
    #[command(subcommand)]
    command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Creates a topic and waits until every partition has a leader.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Partitions.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
        /// Replication factor.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
        /// Config overrides, KEY=VALUE (repeatable).
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// Prints the topic's partitions as the controller knows them.
    Describe {
        /// Topic name.
        topic: String,
    },
    /// Waits until a partition has a leader other than `--not`.
    WaitLeader {
        /// Topic name.
        topic: String,
        /// Partition index.
        partition: u32,
        /// The leader to see replaced.
        #[arg(long)]
        not: i64,
        /// When the fault happened (ms since the epoch), to report the seconds since.
        #[arg(long)]
        since_ms: Option<u64>,
    },
    /// Waits until every partition's ISR has `--size` members.
    WaitIsr {
        /// Topic name.
        topic: String,
        /// ISR size to reach.
        #[arg(long)]
        size: usize,
    },
    /// Prints the controller leader's node id, the brokers and the voters.
    Controller,
    /// Prints the first bootstrap broker's own Metadata view of a topic.
    Metadata {
        /// Topic name.
        topic: String,
    },
    /// Waits until a controller other than `--not` leads the quorum.
    WaitController {
        /// The controller to see replaced.
        #[arg(long)]
        not: u64,
        /// When the fault happened (ms since the epoch), to report the seconds since.
        #[arg(long)]
        since_ms: Option<u64>,
    },
    /// Waits until the controller has fenced broker NODE (its heartbeats stopped).
    WaitFenced {
        /// Node id.
        node: u64,
    },
    /// Waits until broker NODE is active and its own listener knows `--topic`.
    WaitRejoin {
        /// Node id.
        node: u64,
        /// A topic created while the node was away.
        #[arg(long)]
        topic: String,
    },
    /// Produces numbered records with acks=all, recording which were acknowledged.
    Produce {
        /// Topic name (must exist).
        topic: String,
        /// Records to produce, numbered 0..N.
        #[arg(long)]
        records: u64,
        /// Records per batch.
        #[arg(long, default_value_t = 100)]
        batch: u64,
        /// Target records per second over all partitions (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// How long one batch may be retried before it is given up.
        #[arg(long, default_value_t = 90)]
        batch_deadline_secs: u64,
        /// Directory for the acked, retried and failed lists.
        #[arg(long)]
        out: PathBuf,
        /// File to keep the count of acknowledged records in while running.
        #[arg(long)]
        progress: Option<PathBuf>,
    },
    /// Reads the topic back and checks it against what `produce` recorded.
    Verify {
        /// Topic name.
        topic: String,
        /// Records `produce` was asked for.
        #[arg(long)]
        records: u64,
        /// Directory `produce` wrote its lists to.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The code of an answer's error; absent means NONE.
fn code(error: &Option<PbError>) -> i32 {
    error.as_ref().map_or(0, |e| e.code)
}

/// A readable form of an answer's error.
fn describe_error(error: &Option<PbError>) -> String {
    let c = code(error);
    let name = ErrorCode::try_from(c)
        .map(|c| c.as_str_name().to_owned())
        .unwrap_or_else(|_| c.to_string());
    let message = error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    format!("{name}: {message}")
}

/// Produce errors worth another try: the batch was not appended, or may not have been.
fn retriable(code: i32) -> bool {
    ErrorCode::is_retriable_code(code)
}

/// Seconds from `since_ms` (ms since the epoch) to now, to 0.1 s.
fn seconds_since(since_ms: Option<u64>, started: Instant) -> f64 {
    let secs = match since_ms {
        Some(ms) => (now_ms() as u64).saturating_sub(ms) as f64 / 1000.0,
        None => started.elapsed().as_secs_f64(),
    };
    (secs * 10.0).round() / 10.0
}

/// Broker clients by address, one connection each, shared by every task.
struct Cluster {
    /// Addresses to ask when no particular broker is needed.
    bootstrap: Vec<String>,
    /// Cached clients; the lock is never held across an `.await`.
    clients: Mutex<HashMap<String, BrokerClient<Channel>>>,
}

impl Cluster {
    fn new(bootstrap: Vec<String>) -> Self {
        Self {
            bootstrap,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for a broker address, connecting on first use.
    async fn client(&self, addr: &str) -> BoxResult<BrokerClient<Channel>> {
        if let Some(c) = self.cached(addr) {
            return Ok(c);
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(3))
            // Above the 30 s a broker may take to answer acks=all.
            .timeout(Duration::from_secs(40))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let client = BrokerClient::new(channel).max_decoding_message_size(64 << 20);
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(addr.to_owned(), client.clone());
        }
        Ok(client)
    }

    fn cached(&self, addr: &str) -> Option<BrokerClient<Channel>> {
        self.clients.lock().ok()?.get(addr).cloned()
    }

    /// Drops a broker's client after an error, so the next use reconnects.
    fn forget(&self, addr: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(addr);
        }
    }

    /// Runs `call` against the first bootstrap broker that answers it within `ADMIN_TIMEOUT`.
    ///
    /// A broker forwards an admin request to one controller and does not try another, so
    /// while a controller is unreachable some requests fail, or hang until the broker's own
    /// timeout; the short bound here and the polling of every wait keep that from stretching
    /// a wait.
    async fn any<T, F, Fut>(&self, mut call: F) -> BoxResult<T>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut failures = Vec::new();
        for addr in &self.bootstrap {
            match self.client(addr).await {
                Ok(client) => match tokio::time::timeout(ADMIN_TIMEOUT, call(client)).await {
                    Ok(Ok(answer)) => return Ok(answer.into_inner()),
                    Ok(Err(status)) => {
                        self.forget(addr);
                        failures.push(format!("{addr}: {}", status.message()));
                    }
                    Err(_) => failures.push(format!("{addr}: no answer within {ADMIN_TIMEOUT:?}")),
                },
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(format!("no bootstrap broker answered ({})", failures.join("; ")).into())
    }

    async fn metadata(&self, topic: &str) -> BoxResult<bpb::MetadataResponse> {
        let req = bpb::MetadataRequest {
            topics: vec![topic.to_owned()],
        };
        self.any(|mut c| {
            let req = req.clone();
            async move { c.metadata(req).await }
        })
        .await
    }

    async fn describe_cluster(&self) -> BoxResult<cpb::DescribeClusterResponse> {
        let r = self
            .any(|mut c| async move { c.describe_cluster(cpb::DescribeClusterRequest {}).await })
            .await?;
        if code(&r.error) != 0 {
            return Err(format!("DescribeCluster: {}", describe_error(&r.error)).into());
        }
        Ok(r)
    }

    async fn describe_topic(&self, topic: &str) -> BoxResult<cpb::TopicDescription> {
        let req = cpb::DescribeTopicsRequest {
            names: vec![topic.to_owned()],
        };
        let r = self
            .any(|mut c| {
                let req = req.clone();
                async move { c.describe_topics(req).await }
            })
            .await?;
        if code(&r.error) != 0 {
            return Err(format!("DescribeTopics {topic}: {}", describe_error(&r.error)).into());
        }
        let mut topic = r
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| format!("DescribeTopics: no topic {topic} in the answer"))?;
        topic.partitions.sort_by_key(|p| p.partition);
        Ok(topic)
    }

    /// The leader's address of each partition, by index, when every partition has one.
    async fn leaders(&self, topic: &str) -> BoxResult<Option<Vec<String>>> {
        let md = self.metadata(topic).await?;
        let Some(t) = md.topics.iter().find(|t| t.name == topic) else {
            return Ok(None);
        };
        if code(&t.error) != 0 || t.partitions.is_empty() {
            return Ok(None);
        }
        let mut partitions = t.partitions.clone();
        partitions.sort_by_key(|p| p.partition);
        let mut leaders = Vec::new();
        for p in &partitions {
            let leader = u64::try_from(p.leader).ok().and_then(|id| {
                md.brokers.iter().find(|b| {
                    b.id == id && b.state() == weir_proto::common::v1::BrokerState::Active
                })
            });
            match leader {
                Some(b) => leaders.push(b.address.clone()),
                None => return Ok(None),
            }
        }
        Ok(Some(leaders))
    }

    /// The current leader of one partition, waiting (up to 10 s) for one to be known.
    async fn leader(&self, topic: &str, partition: u32) -> BoxResult<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(leaders)) = self.leaders(topic).await {
                if let Some(addr) = leaders.get(partition as usize) {
                    return Ok(addr.clone());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{topic}/{partition}: no leader within 10 s").into());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Polls `check` until it yields a value; `what` names the condition in the timeout error.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> BoxResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BoxResult<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    let mut last = String::from("not yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what} ({last})").into());
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn create_topic(
    cluster: &Cluster,
    limit: Duration,
    name: &str,
    partitions: i32,
    replication_factor: i32,
    configs: &[String],
) -> BoxResult<Value> {
    let mut config_map = HashMap::new();
    for kv in configs {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--config {kv}: expected KEY=VALUE"))?;
        config_map.insert(k.to_owned(), v.to_owned());
    }
    let req = cpb::CreateTopicRequest {
        name: name.to_owned(),
        partitions,
        replication_factor,
        configs: config_map,
    };
    let started = Instant::now();
    let last = Mutex::new(String::new());
    wait_for(&format!("topic {name} to be created"), limit, || {
        let req = req.clone();
        let last = &last;
        async move {
            let r = cluster
                .any(|mut c| {
                    let req = req.clone();
                    async move { c.create_topic(req).await }
                })
                .await?;
            let c = code(&r.error);
            if c == 0 || c == ErrorCode::TopicAlreadyExists as i32 {
                return Ok(Some(()));
            }
            if c == ErrorCode::NotController as i32
                || c == ErrorCode::InvalidReplicationFactor as i32
            {
                // No controller leader yet, or too few brokers registered yet.
                let now = describe_error(&r.error);
                if let Ok(mut last) = last.lock() {
                    if now != *last {
                        eprintln!("CreateTopic {}: {now}; retrying", req.name);
                    }
                    last.clone_from(&now);
                }
                return Err(now.into());
            }
            Err(format!("CreateTopic {}: {}", req.name, describe_error(&r.error)).into())
        }
    })
    .await?;
    wait_for(
        &format!("every partition of {name} to have a leader"),
        limit,
        || async { cluster.leaders(name).await.map(|l| l.map(|_| ())) },
    )
    .await?;
    Ok(json!({
        "topic": name,
        "partitions": partitions,
        "replication_factor": replication_factor,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}

fn topic_json(t: &cpb::TopicDescription) -> Value {
    let partitions: Vec<Value> = t
        .partitions
        .iter()
        .map(|p| {
            json!({
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replicas,
                "isr": p.isr,
            })
        })
        .collect();
    json!({ "name": t.name, "configs": t.configs, "partitions": partitions })
}

// ---- produce ----

/// One partition's producer: its record numbers, sent one batch at a time.
struct PartitionProducer {
    cluster: Arc<Cluster>,
    topic: String,
    partition: u32,
    partitions: u64,
    records: u64,
    batch: u64,
    rate: Option<f64>,
    batch_deadline: Duration,
    /// Acknowledged records over all partitions, for the progress file.
    acked_total: Arc<AtomicU64>,
}

/// What one partition's producer recorded.
#[derive(Default)]
struct PartitionOutcome {
    acked: Vec<u64>,
    retried: Vec<u64>,
    failed: Vec<u64>,
    batches: u64,
    retried_batches: u64,
    /// Longest time between two acknowledgements (or from the start to the first).
    max_stall: Duration,
    /// Errors seen, by kind, for the summary.
    errors: HashMap<String, u64>,
}

impl PartitionProducer {
    /// This partition's record numbers: p, p + P, p + 2P, … below `records`.
    fn numbers(&self) -> Vec<u64> {
        (u64::from(self.partition)..self.records)
            .step_by(self.partitions as usize)
            .collect()
    }

    async fn run(self, start: Instant) -> BoxResult<PartitionOutcome> {
        let mut out = PartitionOutcome::default();
        let mut leader = self.cluster.leader(&self.topic, self.partition).await?;
        let mut last_ack = Instant::now();
        let numbers = self.numbers();
        for chunk in numbers.chunks(self.batch as usize) {
            if let Some(rate) = self.rate.filter(|r| *r > 0.0) {
                // The first record of this batch is due when `rate` records/s over all
                // partitions reach its number.
                let due = start + Duration::from_secs_f64(chunk[0] as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            out.batches += 1;
            let request = bpb::ProduceRequest {
                topic: self.topic.clone(),
                partition: self.partition,
                acks: -1,
                timeout_ms: 30_000,
                records: Some(Records::Plain(bpb::RecordList {
                    records: chunk
                        .iter()
                        .map(|n| bpb::Record {
                            value: Some(Bytes::from(n.to_string())),
                            ..Default::default()
                        })
                        .collect(),
                })),
            };
            let deadline = Instant::now() + self.batch_deadline;
            let mut attempts = 0u32;
            let acked = loop {
                attempts += 1;
                let failure = match self.cluster.client(&leader).await {
                    Ok(mut client) => match client.produce(request.clone()).await {
                        Ok(answer) => {
                            let r = answer.into_inner();
                            let c = code(&r.error);
                            if c == 0 {
                                break true;
                            }
                            if !retriable(c) {
                                return Err(format!(
                                    "produce to {}/{} at {leader}: {}",
                                    self.topic,
                                    self.partition,
                                    describe_error(&r.error)
                                )
                                .into());
                            }
                            if !r.leader_address.is_empty() {
                                leader = r.leader_address.clone();
                            }
                            ErrorCode::try_from(c)
                                .map(|c| c.as_str_name().to_owned())
                                .unwrap_or_else(|_| c.to_string())
                        }
                        Err(status) => {
                            self.cluster.forget(&leader);
                            format!("grpc {:?}", status.code())
                        }
                    },
                    Err(_) => "connect".to_owned(),
                };
                *out.errors.entry(failure.clone()).or_default() += 1;
                if Instant::now() > deadline {
                    eprintln!(
                        "partition {}: giving up a batch after {attempts} attempts: {failure}",
                        self.partition
                    );
                    break false;
                }
                if attempts == 1 || attempts % 10 == 0 {
                    eprintln!(
                        "partition {}: retrying (attempt {attempts}): {failure} at {leader}",
                        self.partition
                    );
                }
                tokio::time::sleep(POLL).await;
                // Follow the leader Metadata names now (it may still name the dead one for a
                // few seconds, until the controller fences it).
                if let Ok(Some(leaders)) = self.cluster.leaders(&self.topic).await {
                    if let Some(addr) = leaders.get(self.partition as usize) {
                        leader = addr.clone();
                    }
                }
            };
            if attempts > 1 {
                out.retried_batches += 1;
                out.retried.extend_from_slice(chunk);
            }
            if acked {
                out.max_stall = out.max_stall.max(last_ack.elapsed());
                last_ack = Instant::now();
                out.acked.extend_from_slice(chunk);
                self.acked_total
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            } else {
                out.failed.extend_from_slice(chunk);
            }
        }
        Ok(out)
    }
}

fn write_numbers(path: &Path, numbers: &[u64]) -> BoxResult<()> {
    let mut text = String::with_capacity(numbers.len() * 7);
    for n in numbers {
        text.push_str(&n.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

fn read_numbers(path: &Path) -> BoxResult<Vec<u64>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<u64>()
                .map_err(|e| format!("{}: bad line `{l}`: {e}", path.display()).into())
        })
        .collect()
}

/// Writes `text` to `path` through a temporary file, so a reader never sees half of it.
fn write_atomically(path: &Path, text: &str) -> BoxResult<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    cluster: Arc<Cluster>,
    topic: &str,
    records: u64,
    batch: u64,
    rate: Option<f64>,
    batch_deadline: Duration,
    out: &Path,
    progress: Option<PathBuf>,
) -> BoxResult<Value> {
    if records == 0 || batch == 0 {
        return Err("--records and --batch must be positive".into());
    }
    std::fs::create_dir_all(out)?;
    let what = format!("every partition of {topic} to have a leader");
    let partitions = wait_for(&what, Duration::from_secs(30), || cluster.leaders(topic))
        .await?
        .len() as u64;
    let acked_total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for partition in 0..partitions {
        let producer = PartitionProducer {
            cluster: cluster.clone(),
            topic: topic.to_owned(),
            partition: partition as u32,
            partitions,
            records,
            batch,
            rate,
            batch_deadline,
            acked_total: acked_total.clone(),
        };
        tasks.push(tokio::spawn(producer.run(start)));
    }
    let reporter = progress.map(|path| {
        let acked_total = acked_total.clone();
        tokio::spawn(async move {
            loop {
                let n = acked_total.load(Ordering::Relaxed);
                if let Err(e) = write_atomically(&path, &format!("{n}\n")) {
                    eprintln!("progress file {}: {e}", path.display());
                }
                tokio::time::sleep(POLL).await;
            }
        })
    });
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await??);
    }
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut all = PartitionOutcome::default();
    let mut stalls = Vec::new();
    for o in outcomes {
        all.acked.extend(o.acked);
        all.retried.extend(o.retried);
        all.failed.extend(o.failed);
        all.batches += o.batches;
        all.retried_batches += o.retried_batches;
        stalls.push((o.max_stall.as_secs_f64() * 10.0).round() / 10.0);
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    all.acked.sort_unstable();
    all.retried.sort_unstable();
    all.failed.sort_unstable();
    write_numbers(&out.join("acked"), &all.acked)?;
    write_numbers(&out.join("retried"), &all.retried)?;
    write_numbers(&out.join("failed"), &all.failed)?;
    Ok(json!({
        "topic": topic,
        "partitions": partitions,
        "records": records,
        "acked": all.acked.len(),
        "failed": all.failed.len(),
        "batches": all.batches,
        "retried_batches": all.retried_batches,
        "errors": all.errors,
        "max_stall_seconds_by_partition": stalls,
        "seconds": (seconds * 10.0).round() / 10.0,
    }))
}

// ---- verify ----

/// Reads `[log start, high watermark)` of one partition from its leader, as record numbers
/// (`None` for a value that is not a number).
async fn read_partition(
    cluster: &Cluster,
    topic: &str,
    partition: u32,
) -> BoxResult<Vec<Option<u64>>> {
    let addr = cluster.leader(topic, partition).await?;
    let mut client = cluster.client(&addr).await?;
    let offsets = |timestamp| bpb::ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        timestamp,
    };
    let start = client.list_offsets(offsets(-2)).await?.into_inner();
    let end = client.list_offsets(offsets(-1)).await?.into_inner();
    for r in [&start, &end] {
        if code(&r.error) != 0 {
            return Err(format!(
                "ListOffsets {topic}/{partition}: {}",
                describe_error(&r.error)
            )
            .into());
        }
    }
    let (start, end) = (start.offset, end.offset);
    let mut values = Vec::with_capacity((end - start).max(0) as usize);
    if end <= start {
        return Ok(values);
    }
    let req = bpb::FetchRequest {
        topic: topic.to_owned(),
        partition,
        offset: start,
        max_bytes: FETCH_MAX_BYTES,
        min_bytes: 1,
        max_wait_ms: 500,
        decode: true,
    };
    let mut stream = client.fetch(req).await?.into_inner();
    let mut next = start;
    while next < end {
        let Some(msg) = stream.message().await? else {
            return Err(
                format!("{topic}/{partition}: Fetch stream ended at {next} of {end}").into(),
            );
        };
        if code(&msg.error) != 0 {
            return Err(
                format!("Fetch {topic}/{partition}: {}", describe_error(&msg.error)).into(),
            );
        }
        for record in msg.records {
            if record.offset < next || record.offset >= end {
                continue;
            }
            next = record.offset + 1;
            let n = record
                .value
                .as_ref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok());
            values.push(n);
        }
        next = next.max(msg.next_offset.min(end));
    }
    Ok(values)
}

async fn verify(
    cluster: &Cluster,
    topic: &str,
    records: u64,
    out: &Path,
) -> BoxResult<(Value, bool)> {
    let acked = read_numbers(&out.join("acked"))?;
    let retried: HashSet<u64> = read_numbers(&out.join("retried"))?.into_iter().collect();
    let partitions = cluster
        .leaders(topic)
        .await?
        .ok_or_else(|| format!("{topic}: not every partition has a leader"))?
        .len() as u64;
    let mut seen: HashSet<u64> = HashSet::new();
    let mut consumed = 0u64;
    let mut violations: Vec<String> = Vec::new();
    let (mut dup_retried, mut dup_bad, mut order_bad, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    for partition in 0..partitions {
        let values = read_partition(cluster, topic, partition as u32).await?;
        consumed += values.len() as u64;
        let mut highest: Option<u64> = None;
        for (i, value) in values.into_iter().enumerate() {
            let Some(n) = value.filter(|n| *n < records && n % partitions == partition) else {
                foreign += 1;
                violations.push(format!(
                    "partition {partition}, record {i}: {value:?} does not belong here"
                ));
                continue;
            };
            if !seen.insert(n) {
                if retried.contains(&n) {
                    dup_retried += 1;
                } else {
                    dup_bad += 1;
                    violations.push(format!(
                        "partition {partition}: record {n} appears twice but was never retried"
                    ));
                }
                continue;
            }
            if highest.is_some_and(|h| n < h) {
                order_bad += 1;
                violations.push(format!(
                    "partition {partition}: record {n} comes after {}",
                    highest.unwrap_or_default()
                ));
            }
            highest = highest.max(Some(n));
        }
    }
    let missing: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !seen.contains(n))
        .collect();
    for n in missing.iter().take(20) {
        violations.push(format!("acknowledged record {n} is missing"));
    }
    let ok = missing.is_empty() && dup_bad == 0 && order_bad == 0 && foreign == 0;
    violations.truncate(40);
    Ok((
        json!({
            "topic": topic,
            "partitions": partitions,
            "consumed": consumed,
            "distinct": seen.len(),
            "acked": acked.len(),
            "acked_missing": missing.len(),
            "duplicates_of_retried": dup_retried,
            "duplicates_not_retried": dup_bad,
            "order_violations": order_bad,
            "foreign_records": foreign,
            "unacked_present": seen.len().saturating_sub(acked.len() - missing.len()),
            "ok": ok,
            "violations": violations,
        }),
        ok,
    ))
}

// ---- the commands ----

async fn run(cli: Cli) -> BoxResult<(Value, bool)> {
    let limit = Duration::from_secs(cli.timeout_secs);
    let cluster = Arc::new(Cluster::new(cli.bootstrap));
    let started = Instant::now();
    let answer = match cli.command {
        Command::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            create_topic(
                &cluster,
                limit,
                &name,
                partitions,
                replication_factor,
                &configs,
            )
            .await?
        }
        Command::Describe { topic } => topic_json(&cluster.describe_topic(&topic).await?),
        Command::WaitLeader {
            topic,
            partition,
            not,
            since_ms,
        } => {
            let what = format!("{topic}/{partition} to get a leader other than {not}");
            let leader = wait_for(&what, limit, || async {
                let t = cluster.describe_topic(&topic).await?;
                Ok(t.partitions
                    .iter()
                    .find(|p| p.partition == partition)
                    .filter(|p| p.leader >= 0 && p.leader != not)
                    .map(|p| (p.leader, p.leader_epoch)))
            })
            .await?;
            json!({
                "partition": partition,
                "old_leader": not,
                "leader": leader.0,
                "leader_epoch": leader.1,
                "seconds": seconds_since(since_ms, started),
            })
        }
        Command::WaitIsr { topic, size } => {
            let what = format!("every ISR of {topic} to have {size} members");
            let t = wait_for(&what, limit, || async {
                let t = cluster.describe_topic(&topic).await?;
                Ok(t.partitions
                    .iter()
                    .all(|p| p.isr.len() >= size)
                    .then_some(t))
            })
            .await?;
            let mut answer = topic_json(&t);
            answer["seconds"] = json!(seconds_since(None, started));
            answer
        }
        Command::Controller => {
            let c = cluster.describe_cluster().await?;
            let brokers: Vec<Value> = c
                .brokers
                .iter()
                .map(|b| json!({ "id": b.id, "address": b.address, "state": b.state }))
                .collect();
            let voters: Vec<Value> = c
                .voters
                .iter()
                .map(|v| json!({ "id": v.id, "address": v.address, "lag": v.lag }))
                .collect();
            json!({
                "controller_leader": c.controller_leader,
                "term": c.term,
                "brokers": brokers,
                "voters": voters,
            })
        }
        Command::Metadata { topic } => {
            let md = cluster.metadata(&topic).await?;
            let topics: Vec<Value> = md
                .topics
                .iter()
                .map(|t| {
                    let leaders: Vec<i64> = t.partitions.iter().map(|p| p.leader).collect();
                    json!({ "name": t.name, "error": code(&t.error), "leaders": leaders })
                })
                .collect();
            json!({
                "controller_id": md.controller_id,
                "metadata_version": md.metadata_version,
                "topics": topics,
            })
        }
        Command::WaitController { not, since_ms } => {
            let what = format!("a controller leader other than {not}");
            let c = wait_for(&what, limit, || async {
                let c = cluster.describe_cluster().await?;
                Ok((c.controller_leader != 0 && c.controller_leader != not).then_some(c))
            })
            .await?;
            json!({
                "old_controller": not,
                "controller_leader": c.controller_leader,
                "term": c.term,
                "seconds": seconds_since(since_ms, started),
            })
        }
        Command::WaitFenced { node } => {
            let what = format!("broker {node} to be fenced");
            wait_for(&what, limit, || async {
                let c = cluster.describe_cluster().await?;
                Ok(c.brokers
                    .iter()
                    .any(|b| {
                        b.id == node && b.state() == weir_proto::common::v1::BrokerState::Fenced
                    })
                    .then_some(()))
            })
            .await?;
            json!({ "node": node, "state": "fenced", "seconds": seconds_since(None, started) })
        }
        Command::WaitRejoin { node, topic } => {
            let what = format!("node {node} to rejoin and learn topic {topic}");
            let (address, version) = wait_for(&what, limit, || async {
                let c = cluster.describe_cluster().await?;
                let Some(b) = c.brokers.iter().find(|b| {
                    b.id == node && b.state() == weir_proto::common::v1::BrokerState::Active
                }) else {
                    return Ok(None);
                };
                // Ask the node's own broker: it must have replayed the metadata log past the
                // topic's creation.
                let mut client = cluster.client(&b.address).await?;
                let req = bpb::MetadataRequest {
                    topics: vec![topic.clone()],
                };
                let md = tokio::time::timeout(ADMIN_TIMEOUT, client.metadata(req))
                    .await
                    .map_err(|_| format!("{}: no Metadata answer", b.address))??
                    .into_inner();
                let knows = md
                    .topics
                    .iter()
                    .any(|t| t.name == topic && code(&t.error) == 0 && !t.partitions.is_empty());
                Ok(knows.then(|| (b.address.clone(), md.metadata_version)))
            })
            .await?;
            json!({
                "node": node,
                "address": address,
                "metadata_version": version,
                "seconds": seconds_since(None, started),
            })
        }
        Command::Produce {
            topic,
            records,
            batch,
            rate,
            batch_deadline_secs,
            out,
            progress,
        } => {
            produce(
                cluster,
                &topic,
                records,
                batch,
                rate,
                Duration::from_secs(batch_deadline_secs),
                &out,
                progress,
            )
            .await?
        }
        Command::Verify {
            topic,
            records,
            out,
        } => return verify(&cluster, &topic, records, &out).await,
    };
    Ok((answer, true))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let cli = Cli::parse();
    let limit = Duration::from_secs(cli.timeout_secs);
    let (answer, ok) = tokio::time::timeout(limit + Duration::from_secs(5), run(cli))
        .await
        .map_err(|_| format!("fault-client did not finish within {limit:?}"))??;
    println!("{answer}");
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
