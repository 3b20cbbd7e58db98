//! `weir bench …`: throughput and latency through the real client, as users get it — the same
//! `Producer` and `Consumer` the library ships, records built while the clock runs (Kafka's
//! `kafka-producer-perf-test` / `kafka-consumer-perf-test` and the OpenMessaging Benchmark
//! measure the same way).
//!
//! - `produce`: K producers send N records (or for D seconds) of S bytes; latency is from each
//!   record's send to its acknowledgement, or with `--rate` from its *scheduled* send time, so a
//!   stall counts against every record it delays (no coordinated omission).
//! - `consume`: K consumers read the topic from the earliest offset, partitions split between
//!   them, until N records (default: every record the topic holds when the run starts).
//! - `e2e`: one producer at a fixed rate and one consumer in the same process; latency is from
//!   a record's scheduled send to its arrival at the consumer (the timestamp travels in the
//!   record).
//!
//! Percentiles come from an HDR histogram (microseconds, 3 significant digits). A progress
//! line goes to stderr once a second when it is a terminal; `--output json` prints one JSON
//! object: `records`, `bytes`, `seconds`, `records_per_sec`, `mb_per_sec` and
//! `latency_ms.{p50,p99,p999,max}`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use weir_client::{
    Acks, Admin, Compression, Consumer, ConsumerConfig, DeliveryFuture, ErrorCode, Offset,
    Producer, ProducerConfig, ProducerRecord,
};
use weir_common::sync::MutexExt;

use crate::error::{for_topic, CliError, Exit};
use crate::output::{print_json, print_text, OutputFormat};
use crate::Context;

/// `weir bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce records through the client and report throughput and acknowledgement latency.
    #[command(after_help = "\
Creates the topic when it does not exist (--partitions, --replication-factor). Records are
built while the clock runs; with --rate, latency is counted from each record's scheduled send
time (no coordinated omission).

Examples:
  weir bench produce --topic bench --records 100000 --record-size 1024 --acks 1
  weir bench produce --topic bench --seconds 5 --record-size 100 --producers 2 --output json
  weir bench produce --topic bench-rate --records 20000 --rate 10000 --compression lz4 --payload text")]
    Produce(ProduceBench),
    /// Consume a topic from the earliest offset and report throughput.
    #[command(after_help = "\
Reads every partition from its earliest offset, split between --consumers consumers, until
--records records (default: what the topic holds when the run starts).

Examples:
  weir bench consume --topic bench
  weir bench consume --topic bench --records 100000 --consumers 2 --output json")]
    Consume(ConsumeBench),
    /// Produce at a fixed rate and consume in the same process: produce-to-consume latency.
    #[command(after_help = "\
Examples:
  weir bench e2e --topic bench-e2e --rate 1000 --seconds 3
  weir bench e2e --topic bench-e2e --rate 5000 --seconds 10 --acks all --output json")]
    E2e(E2eBench),
}

/// What a record's value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Payload {
    /// Random bytes: incompressible.
    Random,
    /// Words of English-like text: compressible, as logs and JSON are.
    Text,
}

/// Options shared by the producing benchmarks.
#[derive(Debug, Args)]
pub struct ProducerOptions {
    /// Topic to produce to (created when missing).
    #[arg(long)]
    topic: String,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024, value_name = "BYTES")]
    record_size: usize,
    /// Acknowledgement to wait for: 0, 1 or all.
    #[arg(long, default_value = "1", value_name = "0|1|all", value_parser = parse_acks)]
    acks: Acks,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Replication factor of the topic when it is created.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// Batch size, bytes (the client's batch_size).
    #[arg(long, default_value_t = 256 * 1024, value_name = "BYTES")]
    batch_bytes: usize,
    /// How long a batch may wait for more records, milliseconds (the client's linger).
    #[arg(long, default_value_t = 5, value_name = "MS")]
    linger_ms: u64,
    /// Bytes each producer keeps buffered or in flight at most (the client's buffer_memory):
    /// the queue a record waits behind at full speed. Default: five batches per partition of
    /// the topic (and room for four records), enough to keep each partition's five requests
    /// busy; a deeper queue adds latency, not throughput (1 KiB records on one node, two runs
    /// each: 596-692k records/s and a p99 of 2.8-3.6 ms by default, 609-818k and 80-121 ms
    /// with 64 MiB, the default before).
    #[arg(long, value_name = "BYTES")]
    buffer_bytes: Option<usize>,
    /// Batch codec: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none", value_parser = parse_compression)]
    compression: Compression,
    /// The codec's level: gzip 1 to 9, zstd -131072 to 22 (default: the codec's).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    compression_level: Option<i32>,
    /// Distinct record keys, cycled through (0: records without keys).
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// What the values hold.
    #[arg(long, value_enum, default_value_t = Payload::Random)]
    payload: Payload,
    /// Turn the idempotent producer off (it is on with --acks all, as in `weir produce`).
    #[arg(long)]
    no_idempotence: bool,
}

/// Arguments of `weir bench produce`.
#[derive(Debug, Args)]
pub struct ProduceBench {
    #[command(flatten)]
    producer: ProducerOptions,
    /// Records to send, across all producers.
    #[arg(long, conflicts_with = "seconds")]
    records: Option<u64>,
    /// Send for this long instead of a number of records.
    #[arg(long)]
    seconds: Option<f64>,
    /// Producers, each with its own client and connections.
    #[arg(long, default_value_t = 1)]
    producers: u32,
    /// Records per second across all producers (default: as fast as they go).
    #[arg(long)]
    rate: Option<f64>,
}

/// Arguments of `weir bench consume`.
#[derive(Debug, Args)]
pub struct ConsumeBench {
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Records to read (default: what the topic holds when the run starts).
    #[arg(long)]
    records: Option<u64>,
    /// Consumers, the topic's partitions split between them.
    #[arg(long, default_value_t = 1)]
    consumers: u32,
    /// Consumer group (consumer groups are not built yet: refused).
    #[arg(long)]
    group: Option<String>,
    /// Give up when no record arrives for this long, milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    idle_timeout_ms: u64,
}

/// Arguments of `weir bench e2e`.
#[derive(Debug, Args)]
pub struct E2eBench {
    #[command(flatten)]
    producer: ProducerOptions,
    /// Records per second.
    #[arg(long)]
    rate: f64,
    /// How long to produce.
    #[arg(long)]
    seconds: f64,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse::<Acks>()
        .map_err(|_| format!("expected 0, 1 or all, got `{s}`"))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>()
        .map_err(|_| format!("expected none, gzip, snappy, lz4 or zstd, got `{s}`"))
}

/// Runs a `weir bench` subcommand.
pub async fn run(cmd: BenchCommand, ctx: &Context) -> anyhow::Result<ExitCode> {
    let report = match cmd {
        BenchCommand::Produce(args) => produce(args, ctx).await?,
        BenchCommand::Consume(args) => consume(args, ctx).await?,
        BenchCommand::E2e(args) => e2e(args, ctx).await?,
    };
    match ctx.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Table => print_text(&report.render())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What a run measured.
#[derive(Debug, Serialize)]
struct Report {
    /// `produce`, `consume` or `e2e`.
    bench: &'static str,
    records: u64,
    bytes: u64,
    seconds: f64,
    records_per_sec: f64,
    mb_per_sec: f64,
    /// Acknowledgement (produce) or produce-to-consume (e2e) latency; absent for consume.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<Latency>,
    /// Records that were not acknowledged (produce, e2e).
    failed: u64,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        let ms = |us: u64| us as f64 / 1000.0;
        (!h.is_empty()).then(|| Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

impl Report {
    fn new(
        bench: &'static str,
        records: u64,
        bytes: u64,
        elapsed: Duration,
        latency: Option<&Histogram<u64>>,
        failed: u64,
    ) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Report {
            bench,
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mb_per_sec: bytes as f64 / seconds / 1e6,
            latency_ms: latency.and_then(Latency::of),
            failed,
        }
    }

    fn render(&self) -> String {
        let mut out = format!(
            "{} records, {:.1} MB in {:.2} s: {:.0} records/s, {:.1} MB/s\n",
            self.records,
            self.bytes as f64 / 1e6,
            self.seconds,
            self.records_per_sec,
            self.mb_per_sec
        );
        if let Some(l) = &self.latency_ms {
            out.push_str(&format!(
                "latency ms: p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}\n",
                l.p50, l.p99, l.p999, l.max
            ));
        }
        if self.failed > 0 {
            out.push_str(&format!("{} records not acknowledged\n", self.failed));
        }
        out
    }
}

/// Counters the progress line reads.
#[derive(Debug, Default)]
struct Progress {
    records: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

/// Prints `what`'s progress on stderr once a second while it is a terminal, until dropped.
fn show_progress(what: &'static str, progress: Arc<Progress>) -> Option<ProgressLine> {
    std::io::stderr().is_terminal().then(|| {
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let records = progress.records.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprint!(
                    "\r{what}: {records} records, {:.0} records/s, {:.1} MB/s, {} failed   ",
                    records as f64 / secs,
                    progress.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
                    progress.failed.load(Ordering::Relaxed)
                );
            }
        });
        ProgressLine(task)
    })
}

/// The progress task; ends (and clears the line) when dropped.
struct ProgressLine(tokio::task::JoinHandle<()>);

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.0.abort();
        eprint!("\r\x1b[K");
    }
}

/// A latency histogram of microseconds up to an hour, 3 significant digits (values past the
/// hour are recorded as the hour).
fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds and precision")
}

/// Creates `topic` when it does not exist.
async fn ensure_topic(ctx: &Context, options: &ProducerOptions) -> anyhow::Result<()> {
    let admin = Admin::connect(ctx.client.clone()).await?;
    match admin
        .create_topic(
            &options.topic,
            options.partitions,
            options.replication_factor,
            BTreeMap::new(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
        Err(e) => Err(for_topic(e, &options.topic)),
    }
}

/// Values to cycle through: 64 distinct ones of `size` bytes, built before the clock starts
/// only in the sense that a pool of values is (each record still copies nothing: a `Bytes`
/// clone), as Kafka's perf test reuses one payload.
fn payloads(size: usize, payload: Payload) -> Vec<Bytes> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    const WORDS: &[&str] = &[
        "the",
        "broker",
        "appends",
        "a",
        "batch",
        "to",
        "its",
        "log",
        "and",
        "every",
        "replica",
        "follows",
        "record",
        "offset",
        "partition",
        "leader",
        "commit",
        "of",
        "with",
        "stream",
    ];
    (0..64)
        .map(|_| {
            let mut v = Vec::with_capacity(size);
            match payload {
                Payload::Random => v.extend((0..size).map(|_| rng.gen::<u8>())),
                Payload::Text => {
                    while v.len() < size {
                        v.extend_from_slice(WORDS[rng.gen_range(0..WORDS.len())].as_bytes());
                        v.push(b' ');
                    }
                    v.truncate(size);
                }
            }
            Bytes::from(v)
        })
        .collect()
}

fn producer_config(options: &ProducerOptions) -> ProducerConfig {
    ProducerConfig {
        acks: options.acks,
        batch_size: options.batch_bytes.max(1),
        linger: Duration::from_millis(options.linger_ms),
        compression: options.compression,
        compression_level: options.compression_level,
        buffer_memory: options.buffer_bytes.unwrap_or_else(|| {
            let partitions = usize::try_from(options.partitions.max(1)).unwrap_or(1);
            let batches = options.batch_bytes.max(1).saturating_mul(5 * partitions);
            // Room for a few records however large they are (key and headers included).
            batches.max(options.record_size.saturating_add(4096).saturating_mul(4))
        }),
        // With more than 5 batches in flight the default would turn idempotence off silently.
        max_in_flight_per_partition: 5,
        idempotence: options.no_idempotence.then_some(false),
        ..ProducerConfig::default()
    }
}

/// When the run stops sending.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Records(u64),
    After(Duration),
}

/// One producer's share of a run: sends until `stop`, paced by `rate` (records/s) when given;
/// records each acknowledgement's latency from the send (or its scheduled time) in `latency`.
#[allow(clippy::too_many_arguments)]
async fn produce_share(
    ctx: Context,
    options: Arc<ProducerOptions>,
    stop: Stop,
    rate: Option<f64>,
    values: Arc<Vec<Bytes>>,
    progress: Arc<Progress>,
    latency: Arc<Mutex<Histogram<u64>>>,
    started: Instant,
    stamp: bool,
) -> anyhow::Result<()> {
    let producer = Producer::connect(ctx.client.clone(), producer_config(&options)).await?;
    // Deliveries are awaited by a task of their own, in send order (they resolve in that order
    // within a partition), so sending never waits on them; the producer's buffer bounds how
    // many are outstanding.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(DeliveryFuture, u64, Instant)>();
    let collector = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut local = histogram();
            while let Some((delivery, len, scheduled)) = rx.recv().await {
                tally(
                    delivery.await.map(|_| len),
                    scheduled,
                    &mut local,
                    &progress,
                );
            }
            local
        })
    };
    let mut sent = 0u64;
    loop {
        let now = Instant::now();
        match stop {
            Stop::Records(n) if sent >= n => break,
            Stop::After(d) if now.duration_since(started) >= d => break,
            _ => {}
        }
        // With a rate, this record's scheduled time; waits until then.
        let scheduled = match rate {
            Some(r) => {
                let at = started + Duration::from_secs_f64(sent as f64 / r);
                if at > now {
                    tokio::time::sleep_until(at.into()).await;
                }
                at
            }
            None => now,
        };
        let mut value = values[(sent % values.len() as u64) as usize].clone();
        if stamp {
            value = stamped(&value, scheduled.duration_since(started));
        }
        let len = value.len() as u64;
        let mut record = ProducerRecord::new(options.topic.clone(), value);
        if options.keys > 0 {
            record = record.key(format!("key-{}", sent % options.keys));
        }
        let delivery = producer.send(record).await?;
        let _ = tx.send((delivery, len, scheduled));
        sent += 1;
    }
    drop(tx);
    producer.flush().await?;
    let local = collector.await?;
    producer.close().await?;
    let _ = latency.locked().add(&local);
    Ok(())
}

/// Counts one delivery: its bytes and latency, or a failure.
fn tally(
    result: weir_client::Result<u64>,
    scheduled: Instant,
    latency: &mut Histogram<u64>,
    progress: &Progress,
) {
    match result {
        Ok(len) => {
            let us = u64::try_from(scheduled.elapsed().as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record(us.max(1));
            progress.records.fetch_add(1, Ordering::Relaxed);
            progress.bytes.fetch_add(len, Ordering::Relaxed);
        }
        Err(_) => {
            progress.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `value` with its first 8 bytes replaced by `at` in microseconds (big-endian): the e2e
/// benchmark's send time, read back by its consumer.
fn stamped(value: &Bytes, at: Duration) -> Bytes {
    let mut v = value.to_vec();
    v.resize(v.len().max(8), 0);
    let us = u64::try_from(at.as_micros()).unwrap_or(u64::MAX);
    v[..8].copy_from_slice(&us.to_be_bytes());
    Bytes::from(v)
}

async fn produce(args: ProduceBench, ctx: &Context) -> anyhow::Result<Report> {
    let stop = match (args.records, args.seconds) {
        (Some(n), _) => Stop::Records(n),
        (None, Some(s)) if s > 0.0 => Stop::After(Duration::from_secs_f64(s)),
        _ => {
            return Err(CliError::new(Exit::Usage, "give --records N or --seconds D (> 0)").into())
        }
    };
    if args.rate.is_some_and(|r| r <= 0.0) || args.producers == 0 {
        return Err(CliError::new(Exit::Usage, "--rate and --producers must be > 0").into());
    }
    ensure_topic(ctx, &args.producer).await?;
    let options = Arc::new(args.producer);
    let values = Arc::new(payloads(options.record_size, options.payload));
    let progress = Arc::new(Progress::default());
    let latency = Arc::new(Mutex::new(histogram()));
    let _line = show_progress("produce", progress.clone());
    let k = u64::from(args.producers);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let share = match stop {
            // The first producers take the remainder.
            Stop::Records(n) => Stop::Records(n / k + u64::from(i < n % k)),
            after => after,
        };
        tasks.push(tokio::spawn(produce_share(
            ctx.clone(),
            options.clone(),
            share,
            args.rate.map(|r| r / k as f64),
            values.clone(),
            progress.clone(),
            latency.clone(),
            started,
            false,
        )));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let h = latency.locked();
    Ok(Report::new(
        "produce",
        progress.records.load(Ordering::Relaxed),
        progress.bytes.load(Ordering::Relaxed),
        elapsed,
        Some(&h),
        progress.failed.load(Ordering::Relaxed),
    ))
}

async fn consume(args: ConsumeBench, ctx: &Context) -> anyhow::Result<Report> {
    if args.group.is_some() {
        return Err(CliError::new(
            Exit::Usage,
            "consumer groups are not built yet: leave out --group (partitions are split between --consumers)",
        )
        .into());
    }
    if args.consumers == 0 {
        return Err(CliError::new(Exit::Usage, "--consumers must be > 0").into());
    }
    let admin = Admin::connect(ctx.client.clone()).await?;
    let topic = admin
        .describe_topic(&args.topic)
        .await
        .map_err(|e| for_topic(e, &args.topic))?;
    let held: u64 = topic
        .partitions
        .iter()
        .map(|p| (p.high_watermark - p.log_start_offset).max(0) as u64)
        .sum();
    let target = args.records.unwrap_or(held);
    let progress = Arc::new(Progress::default());
    let _line = show_progress("consume", progress.clone());
    let idle = Duration::from_millis(args.idle_timeout_ms);
    let k = args.consumers as usize;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..k {
        let partitions: Vec<u32> = topic
            .partitions
            .iter()
            .map(|p| p.partition)
            .filter(|p| *p as usize % k == i)
            .collect();
        if partitions.is_empty() {
            continue;
        }
        let (client, name, progress) = (ctx.client.clone(), args.topic.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let config = ConsumerConfig {
                max_bytes: 4 << 20,
                ..ConsumerConfig::default()
            };
            let mut consumer = Consumer::connect(client, config).await?;
            for p in partitions {
                consumer.assign(&name, p, Offset::Earliest).await?;
            }
            let mut stream = consumer.stream();
            while progress.records.load(Ordering::Relaxed) < target {
                match tokio::time::timeout(idle, stream.next()).await {
                    Ok(Some(Ok(r))) => {
                        let len = r.value.as_ref().map_or(0, |v| v.len())
                            + r.key.as_ref().map_or(0, |k| k.len());
                        progress.records.fetch_add(1, Ordering::Relaxed);
                        progress.bytes.fetch_add(len as u64, Ordering::Relaxed);
                    }
                    Ok(Some(Err(e))) => return Err(anyhow::Error::from(e)),
                    Ok(None) | Err(_) => break,
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let records = progress.records.load(Ordering::Relaxed);
    if records < target {
        return Err(CliError::new(
            Exit::Failure,
            format!("read {records} of {target} records: nothing arrived for {idle:?}"),
        )
        .into());
    }
    Ok(Report::new(
        "consume",
        records,
        progress.bytes.load(Ordering::Relaxed),
        elapsed,
        None,
        0,
    ))
}

async fn e2e(args: E2eBench, ctx: &Context) -> anyhow::Result<Report> {
    if args.rate <= 0.0 || args.seconds <= 0.0 {
        return Err(CliError::new(Exit::Usage, "--rate and --seconds must be > 0").into());
    }
    ensure_topic(ctx, &args.producer).await?;
    let admin = Admin::connect(ctx.client.clone()).await?;
    let topic = admin
        .describe_topic(&args.producer.topic)
        .await
        .map_err(|e| for_topic(e, &args.producer.topic))?;
    let expected = (args.rate * args.seconds).ceil() as u64;
    // The consumer starts at the end of every partition before the first record is sent.
    let mut consumer = Consumer::connect(
        ctx.client.clone(),
        ConsumerConfig {
            max_wait: Duration::from_millis(100),
            ..ConsumerConfig::default()
        },
    )
    .await?;
    for p in &topic.partitions {
        consumer
            .assign(&args.producer.topic, p.partition, Offset::Latest)
            .await?;
    }
    let options = Arc::new(args.producer);
    let values = Arc::new(payloads(options.record_size.max(8), options.payload));
    let progress = Arc::new(Progress::default());
    let acked = Arc::new(Mutex::new(histogram()));
    let _line = show_progress("e2e", progress.clone());
    let started = Instant::now();
    let producing = tokio::spawn(produce_share(
        ctx.clone(),
        options.clone(),
        Stop::Records(expected),
        Some(args.rate),
        values,
        Arc::new(Progress::default()),
        acked,
        started,
        true,
    ));
    let mut latency = histogram();
    let mut stream = consumer.stream();
    let mut received = 0u64;
    let deadline = Duration::from_secs_f64(args.seconds) + Duration::from_secs(30);
    while received < expected && started.elapsed() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(r))) => {
                let Some(value) = r.value.filter(|v| v.len() >= 8) else {
                    continue;
                };
                let mut at = [0u8; 8];
                at.copy_from_slice(&value[..8]);
                let sent = Duration::from_micros(u64::from_be_bytes(at));
                let us = started.elapsed().saturating_sub(sent).as_micros();
                latency.saturating_record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                received += 1;
                progress.records.fetch_add(1, Ordering::Relaxed);
                progress
                    .bytes
                    .fetch_add(value.len() as u64, Ordering::Relaxed);
            }
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) | Err(_) => break,
        }
    }
    drop(stream);
    producing.await??;
    let elapsed = started.elapsed();
    Ok(Report::new(
        "e2e",
        received,
        progress.bytes.load(Ordering::Relaxed),
        elapsed,
        Some(&latency),
        expected.saturating_sub(received),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_travel_in_the_first_eight_bytes() {
        let v = stamped(
            &Bytes::from_static(b"0123456789"),
            Duration::from_micros(42),
        );
        assert_eq!(v.len(), 10);
        assert_eq!(u64::from_be_bytes(v[..8].try_into().expect("8 bytes")), 42);
        assert_eq!(&v[8..], b"89");
        assert_eq!(stamped(&Bytes::new(), Duration::from_micros(1)).len(), 8);
    }

    #[test]
    fn payloads_have_the_size_asked_and_text_compresses() {
        for p in [Payload::Random, Payload::Text] {
            assert!(payloads(100, p).iter().all(|v| v.len() == 100));
        }
        let text = payloads(1000, Payload::Text);
        assert!(text[0].iter().all(|b| b.is_ascii_lowercase() || *b == b' '));
    }

    #[test]
    fn latency_percentiles_are_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000u64 {
            h.saturating_record(us * 10);
        }
        let l = Latency::of(&h).expect("a non-empty histogram");
        assert!((l.p50 - 5.0).abs() < 0.05, "{l:?}");
        assert!((l.max - 10.0).abs() < 0.05, "{l:?}");
        assert!(Latency::of(&histogram()).is_none());
    }
}
