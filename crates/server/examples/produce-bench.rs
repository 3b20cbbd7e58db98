//! `produce-bench`: produce (and optionally consume) throughput and produce latency of a Weir
//! cluster, speaking the broker's gRPC contract (`proto/broker.proto`) directly.
//!
//! ```text
//! cargo run --release -p weir-server --example produce-bench -- \
//!     --bootstrap 127.0.0.1:9700 --topic bench --partitions 3 --replication-factor 3 \
//!     --records 2000000 --record-size 100 --acks -1 --concurrency 4 --consume
//! ```
//!
//! What it does, in order:
//!
//! 1. Asks the bootstrap broker for Metadata of `--topic`; if the topic does not exist it
//!    creates it through the broker's CreateTopic (`--partitions`, `--replication-factor`),
//!    retrying while the controller has no leader or too few brokers are registered yet, and
//!    waits until every partition has a leader. An existing topic keeps its partition count.
//! 2. Builds the batches before the clock starts: uncompressed RecordBatch v2 batches of as
//!    many `--record-size` records (no key, pseudo-random value, one timestamp) as fit in
//!    `--batch-bytes`. `--records` are spread evenly over the partitions; each partition gets
//!    whole batches plus one smaller batch for the remainder. Identical batches share their
//!    bytes (`Bytes` clones), so building costs one batch per distinct size.
//! 3. Notes each partition's latest offset, then sends every batch with Produce (the `batch`
//!    form, `--acks`) to the partition's leader, with `--concurrency` requests in flight per
//!    partition (one task each, taking the next batch from a shared counter). Latency is from
//!    sending a request to its answer; with `--rate` (records/s over all partitions) each batch
//!    has a scheduled send time and latency is counted from that time, so a broker that falls
//!    behind the rate is charged for the queueing it causes (no coordinated omission).
//!    NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT and connection errors are
//!    retried (up to 20 times per batch) against the leader Metadata names; any other error
//!    ends the run.
//! 4. With `--consume`: waits until each partition's high watermark covers what was produced,
//!    then reads it back from the leaders through one Fetch stream per partition
//!    (`decode = false`, 1 MiB answers), counting records from the batch headers only.
//!
//! Exactly one JSON line goes to stdout; progress goes to stderr. MB = 10^6 bytes of record
//! values (`record_size` × records); `bytes` is the batch bytes sent (headers included).
//! `seconds` runs from the first request to the last answer.

use std::collections::HashMap;
use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_common::now_ms;

use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use weir_proto::broker::v1 as bpb;
use weir_proto::broker::v1::broker_client::BrokerClient;
use weir_proto::broker::v1::produce_request::Records;
use weir_proto::common::v1::{Error as PbError, ErrorCode};
use weir_proto::controller::v1 as cpb;
use weir_storage::{BatchBuilder, BatchHeader, Compression};

/// Errors of this tool: anything, as long as it can cross tasks.
type BoxError = Box<dyn Error + Send + Sync>;
/// Results of this tool.
type BoxResult<T> = Result<T, BoxError>;

/// How many times one batch is retried on a retriable error before the run fails.
const MAX_RETRIES: u32 = 20;
/// Bytes asked for per Fetch answer when consuming.
const FETCH_MAX_BYTES: u32 = 1 << 20;

/// Produce/consume throughput and produce latency of a Weir cluster over gRPC.
#[derive(Debug, Parser)]
#[command(name = "produce-bench")]
struct Args {
    /// A broker listener to ask for Metadata (host:port).
    #[arg(long, env = "WEIR_BOOTSTRAP", default_value = "127.0.0.1:9700")]
    bootstrap: String,
    /// Topic to produce to (created when missing).
    #[arg(long, default_value = "produce-bench")]
    topic: String,
    /// Partitions of the topic when this tool creates it.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Replication factor of the topic when this tool creates it.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// Records to produce, over all partitions.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Size of each record's value in bytes.
    #[arg(long, default_value_t = 100)]
    record_size: usize,
    /// Largest batch size (header included); a batch holds as many records as fit.
    #[arg(long, default_value_t = 65536)]
    batch_bytes: usize,
    /// 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true, value_parser = parse_acks)]
    acks: i32,
    /// Produce requests in flight per partition.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// After producing, read everything produced back through Fetch (raw batches).
    #[arg(long)]
    consume: bool,
    /// Target records per second over all partitions (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// Parses `--acks`: 0, 1, -1 or `all`.
fn parse_acks(text: &str) -> Result<i32, String> {
    match text {
        "0" => Ok(0),
        "1" => Ok(1),
        "-1" | "all" => Ok(-1),
        other => Err(format!("acks must be 0, 1, -1 or all, not `{other}`")),
    }
}

/// The code of an answer's error; absent means NONE.
fn code(error: &Option<PbError>) -> i32 {
    error.as_ref().map_or(0, |e| e.code)
}

/// A readable form of an answer's error.
fn describe(error: &Option<PbError>) -> String {
    let c = code(error);
    let name = ErrorCode::try_from(c)
        .map(|c| c.as_str_name().to_owned())
        .unwrap_or_else(|_| c.to_string());
    let message = error.as_ref().map(|e| e.message.as_str()).unwrap_or("");
    format!("{name}: {message}")
}

/// Errors worth another try against a fresh leader.
fn retriable(code: i32) -> bool {
    ErrorCode::is_retriable_code(code)
}

/// A broker client for `addr`, connected.
async fn connect(addr: &str) -> BoxResult<BrokerClient<Channel>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .connect()
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    Ok(BrokerClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

/// Shared state of a run: where to ask for Metadata and one client per broker address.
struct Ctx {
    bootstrap: String,
    topic: String,
    acks: i32,
    clients: Mutex<HashMap<String, BrokerClient<Channel>>>,
}

impl Ctx {
    /// The client for a broker address (one HTTP/2 connection per broker, shared).
    async fn client(&self, addr: &str) -> BoxResult<BrokerClient<Channel>> {
        if let Some(c) = self.lock_clients()?.get(addr) {
            return Ok(c.clone());
        }
        let c = connect(addr).await?;
        self.lock_clients()?.insert(addr.to_owned(), c.clone());
        Ok(c)
    }

    /// Forgets a broker's client (after a connection error).
    fn forget(&self, addr: &str) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.remove(addr);
        }
    }

    fn lock_clients(
        &self,
    ) -> BoxResult<std::sync::MutexGuard<'_, HashMap<String, BrokerClient<Channel>>>> {
        self.clients
            .lock()
            .map_err(|_| "client cache poisoned".into())
    }

    /// Metadata of the topic from the bootstrap broker.
    async fn metadata(&self) -> BoxResult<bpb::MetadataResponse> {
        let mut client = self.client(&self.bootstrap).await?;
        let req = bpb::MetadataRequest {
            topics: vec![self.topic.clone()],
        };
        Ok(client.metadata(req).await?.into_inner())
    }

    /// Leader addresses by partition, when every partition has a leader.
    async fn leaders(&self) -> BoxResult<Option<Vec<String>>> {
        let md = self.metadata().await?;
        let Some(topic) = md.topics.iter().find(|t| t.name == self.topic) else {
            return Ok(None);
        };
        if code(&topic.error) != 0 || topic.partitions.is_empty() {
            return Ok(None);
        }
        let mut partitions = topic.partitions.clone();
        partitions.sort_by_key(|p| p.partition);
        let mut leaders = Vec::new();
        for p in &partitions {
            let Ok(id) = u64::try_from(p.leader) else {
                return Ok(None);
            };
            let Some(b) = md.brokers.iter().find(|b| b.id == id) else {
                return Ok(None);
            };
            leaders.push(b.address.clone());
        }
        Ok(Some(leaders))
    }

    /// The current leader of one partition, waiting (up to 30 s) for one to be known.
    async fn leader(&self, partition: u32) -> BoxResult<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(leaders)) = self.leaders().await {
                if let Some(addr) = leaders.get(partition as usize) {
                    return Ok(addr.clone());
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no leader for partition {partition} within 30 s").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The latest offset (high watermark) of a partition, from its leader.
    async fn latest(&self, partition: u32) -> BoxResult<i64> {
        let addr = self.leader(partition).await?;
        let mut client = self.client(&addr).await?;
        let r = client
            .list_offsets(bpb::ListOffsetsRequest {
                topic: self.topic.clone(),
                partition,
                timestamp: -1,
            })
            .await?
            .into_inner();
        if code(&r.error) != 0 {
            return Err(format!("ListOffsets {partition}: {}", describe(&r.error)).into());
        }
        Ok(r.offset)
    }
}

/// Makes sure the topic exists and every partition has a leader; returns the leaders.
async fn ensure_topic(ctx: &Ctx, args: &Args) -> BoxResult<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut created = false;
    let mut last = String::new();
    loop {
        match ctx.metadata().await {
            Ok(md) => {
                let topic = md.topics.iter().find(|t| t.name == args.topic);
                let exists = topic.is_some_and(|t| code(&t.error) == 0);
                if exists {
                    if let Some(leaders) = ctx.leaders().await? {
                        if leaders.len() != args.partitions as usize && !created {
                            eprintln!(
                                "topic {} exists with {} partitions; using them",
                                args.topic,
                                leaders.len()
                            );
                        }
                        return Ok(leaders);
                    }
                    last = "partitions without a leader".into();
                } else if !created {
                    let mut client = ctx.client(&ctx.bootstrap).await?;
                    let r = client
                        .create_topic(cpb::CreateTopicRequest {
                            name: args.topic.clone(),
                            partitions: args.partitions as i32,
                            replication_factor: args.replication_factor,
                            configs: Default::default(),
                        })
                        .await?
                        .into_inner();
                    let c = code(&r.error);
                    if c == 0 || c == ErrorCode::TopicAlreadyExists as i32 {
                        created = true;
                    } else if c == ErrorCode::NotController as i32
                        || c == ErrorCode::InvalidReplicationFactor as i32
                    {
                        // No controller leader yet, or not every broker registered yet.
                        let now = describe(&r.error);
                        if now != last {
                            eprintln!("CreateTopic {}: {now}; retrying", args.topic);
                        }
                        last = now;
                    } else {
                        return Err(format!("CreateTopic: {}", describe(&r.error)).into());
                    }
                }
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(format!("topic {} not ready within 60 s: {last}", args.topic).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tiny xorshift generator: record values only need to be non-trivial bytes.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Builds batches of `count` records of `value_len` bytes, caching one per distinct count.
struct BatchFactory {
    value: Vec<u8>,
    timestamp: i64,
    cache: HashMap<u64, Bytes>,
}

impl BatchFactory {
    fn new(value_len: usize) -> Self {
        let mut value = vec![0u8; value_len];
        XorShift(0x9E37_79B9_7F4A_7C15).fill(&mut value);
        Self {
            value,
            timestamp: now_ms(),
            cache: HashMap::new(),
        }
    }

    /// How many records fit in `batch_bytes` (at least one).
    fn records_per_batch(&self, batch_bytes: usize) -> u64 {
        let mut builder = BatchBuilder::new(Compression::None);
        let mut count = 0u64;
        loop {
            builder.push_parts(self.timestamp, None, Some(&self.value), &[]);
            if builder.uncompressed_size() > batch_bytes {
                return count.max(1);
            }
            count += 1;
        }
    }

    fn batch(&mut self, count: u64) -> BoxResult<Bytes> {
        if let Some(b) = self.cache.get(&count) {
            return Ok(b.clone());
        }
        let mut builder = BatchBuilder::new(Compression::None);
        for _ in 0..count {
            builder.push_parts(self.timestamp, None, Some(&self.value), &[]);
        }
        let bytes = builder.build(0)?;
        self.cache.insert(count, bytes.clone());
        Ok(bytes)
    }
}

/// One partition's share of the run.
struct PartitionJob {
    partition: u32,
    /// Batches with their record counts, in sending order.
    batches: Vec<(Bytes, u64)>,
    /// Index of the next batch to send.
    next: AtomicUsize,
    /// Records of this partition.
    records: u64,
    /// Records per full batch (for the send schedule).
    per_batch: u64,
    /// The leader's address as last known.
    leader: Mutex<String>,
}

impl PartitionJob {
    fn leader(&self) -> String {
        self.leader.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn set_leader(&self, addr: String) {
        if let Ok(mut l) = self.leader.lock() {
            *l = addr;
        }
    }
}

/// What one producer task measured.
struct WorkerResult {
    latency_us: Histogram<u64>,
    bytes: u64,
    records: u64,
}

fn new_histogram() -> BoxResult<Histogram<u64>> {
    // 1 µs to 1 h, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// Sends batches of one partition until none is left.
async fn producer_task(
    ctx: Arc<Ctx>,
    job: Arc<PartitionJob>,
    start: Instant,
    rate: Option<f64>,
    total_records: u64,
) -> BoxResult<WorkerResult> {
    let mut result = WorkerResult {
        latency_us: new_histogram()?,
        bytes: 0,
        records: 0,
    };
    // This partition's share of the target rate.
    let rate = rate.map(|r| r * job.records as f64 / total_records.max(1) as f64);
    loop {
        let i = job.next.fetch_add(1, Ordering::Relaxed);
        let Some((batch, count)) = job.batches.get(i) else {
            break;
        };
        let scheduled = match rate {
            Some(r) if r > 0.0 => {
                let at = start + Duration::from_secs_f64((i as u64 * job.per_batch) as f64 / r);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            _ => Instant::now(),
        };
        let mut attempts = 0;
        loop {
            let addr = job.leader();
            let answer = match ctx.client(&addr).await {
                Ok(mut client) => {
                    let req = bpb::ProduceRequest {
                        topic: ctx.topic.clone(),
                        partition: job.partition,
                        acks: ctx.acks,
                        timeout_ms: 30_000,
                        records: Some(Records::Batch(batch.clone())),
                    };
                    client
                        .produce(req)
                        .await
                        .map(|r| r.into_inner())
                        .map_err(|s| s.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let failure = match answer {
                Ok(r) if code(&r.error) == 0 => break,
                Ok(r) if retriable(code(&r.error)) => {
                    if !r.leader_address.is_empty() {
                        job.set_leader(r.leader_address.clone());
                    } else if let Ok(leader) = ctx.leader(job.partition).await {
                        job.set_leader(leader);
                    }
                    describe(&r.error)
                }
                Ok(r) => {
                    return Err(format!(
                        "produce to partition {} at {addr}: {}",
                        job.partition,
                        describe(&r.error)
                    )
                    .into())
                }
                Err(e) => {
                    ctx.forget(&addr);
                    if let Ok(leader) = ctx.leader(job.partition).await {
                        job.set_leader(leader);
                    }
                    e
                }
            };
            attempts += 1;
            if attempts > MAX_RETRIES {
                return Err(format!(
                    "produce to partition {}: giving up after {MAX_RETRIES} retries: {failure}",
                    job.partition
                )
                .into());
            }
            eprintln!("partition {}: retrying: {failure}", job.partition);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let micros = scheduled.elapsed().as_micros().max(1) as u64;
        result.latency_us.saturating_record(micros);
        result.bytes += batch.len() as u64;
        result.records += count;
    }
    Ok(result)
}

/// Counts the records in `[*next, end)` of a buffer of whole batches, advancing `*next`.
fn count_records(buf: &[u8], next: &mut i64, end: i64) -> BoxResult<u64> {
    let mut pos = 0;
    let mut counted = 0u64;
    while pos < buf.len() {
        let header = BatchHeader::parse(&buf[pos..])?;
        let size = header.total_size();
        if size == 0 || pos + size > buf.len() {
            return Err("a fetched batch is cut short".into());
        }
        let from = header.base_offset.max(*next);
        let to = header.next_offset().min(end);
        if to > from {
            counted += (to - from) as u64;
            *next = to;
        }
        pos += size;
    }
    Ok(counted)
}

/// Reads `[start, end)` of one partition from its leader; returns records and bytes read.
async fn consume_partition(
    ctx: Arc<Ctx>,
    partition: u32,
    start: i64,
    end: i64,
) -> BoxResult<(u64, u64)> {
    let addr = ctx.leader(partition).await?;
    let mut client = ctx.client(&addr).await?;
    let req = bpb::FetchRequest {
        topic: ctx.topic.clone(),
        partition,
        offset: start,
        max_bytes: FETCH_MAX_BYTES,
        min_bytes: 1,
        max_wait_ms: 500,
        decode: false,
    };
    let mut stream = client.fetch(req).await?.into_inner();
    let mut next = start;
    let (mut records, mut bytes) = (0u64, 0u64);
    while next < end {
        let Some(msg) = stream.message().await? else {
            return Err(format!("partition {partition}: Fetch stream ended at {next}").into());
        };
        if code(&msg.error) != 0 {
            return Err(format!("fetch partition {partition}: {}", describe(&msg.error)).into());
        }
        bytes += msg.batches.len() as u64;
        records += count_records(&msg.batches, &mut next, end)?;
    }
    Ok((records, bytes))
}

/// Formats `fields` as one JSON object, keys in the given order.
fn json_line(fields: &[(&str, serde_json::Value)]) -> BoxResult<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        parts.push(format!(
            "{}:{}",
            serde_json::to_string(k)?,
            serde_json::to_string(v)?
        ));
    }
    Ok(format!("{{{}}}", parts.join(",")))
}

fn round_to(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

async fn run(args: Args) -> BoxResult<String> {
    if args.concurrency == 0 || args.records == 0 || args.record_size == 0 {
        return Err("--concurrency, --records and --record-size must be positive".into());
    }
    let ctx = Arc::new(Ctx {
        bootstrap: args.bootstrap.clone(),
        topic: args.topic.clone(),
        acks: args.acks,
        clients: Mutex::new(HashMap::new()),
    });
    let leaders = ensure_topic(&ctx, &args).await?;
    let partitions = leaders.len() as u64;

    let mut factory = BatchFactory::new(args.record_size);
    let per_batch = factory.records_per_batch(args.batch_bytes);
    let mut jobs = Vec::new();
    let mut starts = Vec::new();
    for (p, leader) in leaders.iter().enumerate() {
        let records = args.records / partitions + u64::from((p as u64) < args.records % partitions);
        let mut batches = Vec::new();
        let mut left = records;
        while left > 0 {
            let count = left.min(per_batch);
            batches.push((factory.batch(count)?, count));
            left -= count;
        }
        starts.push(ctx.latest(p as u32).await?);
        jobs.push(Arc::new(PartitionJob {
            partition: p as u32,
            batches,
            next: AtomicUsize::new(0),
            records,
            per_batch,
            leader: Mutex::new(leader.clone()),
        }));
    }
    eprintln!(
        "producing {} records of {} bytes to {} ({} partitions), {per_batch} per batch, \
         acks={}, {} in flight per partition{}",
        args.records,
        args.record_size,
        args.topic,
        partitions,
        args.acks,
        args.concurrency,
        args.rate
            .map(|r| format!(", at {r} records/s"))
            .unwrap_or_default()
    );

    let start = Instant::now();
    let mut tasks = Vec::new();
    for job in &jobs {
        for _ in 0..args.concurrency {
            tasks.push(tokio::spawn(producer_task(
                ctx.clone(),
                job.clone(),
                start,
                args.rate,
                args.records,
            )));
        }
    }
    let mut latency = new_histogram()?;
    let (mut bytes, mut records) = (0u64, 0u64);
    for task in tasks {
        let r = task.await??;
        latency.add(&r.latency_us)?;
        bytes += r.bytes;
        records += r.records;
    }
    let seconds = start.elapsed().as_secs_f64();
    eprintln!("produced {records} records in {seconds:.2} s");

    let mut consume = None;
    if args.consume {
        // Everything produced must be committed before it can be read.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ranges = Vec::new();
        for (job, start) in jobs.iter().zip(&starts) {
            let end = start + job.records as i64;
            loop {
                let latest = ctx.latest(job.partition).await?;
                if latest >= end {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "partition {}: high watermark {latest} never reached {end}",
                        job.partition
                    )
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ranges.push((job.partition, *start, end));
        }
        let consume_start = Instant::now();
        let mut tasks = Vec::new();
        for (partition, start, end) in ranges {
            tasks.push(tokio::spawn(consume_partition(
                ctx.clone(),
                partition,
                start,
                end,
            )));
        }
        let (mut c_records, mut c_bytes) = (0u64, 0u64);
        for task in tasks {
            let (r, b) = task.await??;
            c_records += r;
            c_bytes += b;
        }
        let c_seconds = consume_start.elapsed().as_secs_f64();
        eprintln!("consumed {c_records} records in {c_seconds:.2} s");
        consume = Some((c_records, c_bytes, c_seconds));
    }

    let ms = |q: f64| round_to(latency.value_at_quantile(q) as f64 / 1000.0, 3);
    let value_mb = (records * args.record_size as u64) as f64 / 1e6;
    let null = serde_json::Value::Null;
    let fields: Vec<(&str, serde_json::Value)> = vec![
        ("bench", "produce".into()),
        ("topic", args.topic.clone().into()),
        ("partitions", partitions.into()),
        ("acks", args.acks.into()),
        ("record_size", (args.record_size as u64).into()),
        ("batch_records", per_batch.into()),
        ("concurrency", (args.concurrency as u64).into()),
        ("target_rate", args.rate.map_or(null.clone(), Into::into)),
        ("records", records.into()),
        ("bytes", bytes.into()),
        ("seconds", round_to(seconds, 3).into()),
        (
            "records_per_sec",
            round_to(records as f64 / seconds, 0).into(),
        ),
        ("mb_per_sec", round_to(value_mb / seconds, 1).into()),
        ("p50_ms", ms(0.5).into()),
        ("p99_ms", ms(0.99).into()),
        ("max_ms", round_to(latency.max() as f64 / 1000.0, 3).into()),
        (
            "consume_records",
            consume.map_or(null.clone(), |(r, _, _)| r.into()),
        ),
        (
            "consume_records_per_sec",
            consume.map_or(null.clone(), |(r, _, s)| round_to(r as f64 / s, 0).into()),
        ),
        (
            "consume_mb_per_sec",
            consume.map_or(null, |(r, _, s)| {
                round_to((r * args.record_size as u64) as f64 / 1e6 / s, 1).into()
            }),
        ),
    ];
    json_line(&fields)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout_secs);
    let line = tokio::time::timeout(limit, run(args))
        .await
        .map_err(|_| format!("produce-bench did not finish within {limit:?}"))??;
    println!("{line}");
    Ok(())
}
