//! `weir-peer-bench`: one harness driving Weir (through `weir-client`, as users get it) and a
//! peer, NATS JetStream (through `async-nats`), with the same workloads, so the client side is
//! the same language and the same loop for both; and the machine's raw limits, measured in the
//! same run. `scripts/bench-peers.sh` starts the servers, runs every workload on both and
//! prints the table (docs/BENCHMARKS.md).
//!
//! Every command prints one JSON object on stdout: for `produce`, `e2e` and `consume` the same
//! keys as `weir bench` (`records`, `bytes`, `seconds`, `records_per_sec`, `mb_per_sec`,
//! `latency_ms.{p50,p99,p999,max}`, null for `consume`, and `failed`), for `raw` one figure per
//! limit, for `plot` the files it wrote.
//!
//! - `produce weir|jetstream`: N records of S bytes as fast as the client goes (or at
//!   `--rate`), latency from each record's send (or scheduled send) to its acknowledgement.
//!   Weir: one `Producer` (batching, pipelined streams). JetStream: asynchronous publishes with
//!   at most `--in-flight` acknowledgements outstanding.
//! - `e2e weir|jetstream`: a fixed rate, a consumer in the same process; latency from the
//!   scheduled send to the record's arrival at the consumer.
//! - `consume weir|jetstream`: fills the topic with N records (untimed, the `produce` path),
//!   then times one reader reading them all back (`consume`).
//! - `raw --dir D`: sequential write with one fsync, 4 KiB writes each fsynced, loopback TCP,
//!   memcpy.
//! - `plot --dir D`: `throughput.svg` and `latency.svg` from a `scripts/bench-peers.sh` output
//!   directory (`plot`, reading it through `results`).

mod consume;
mod plot;
mod results;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;

/// Weir and NATS JetStream through one harness.
#[derive(Debug, Parser)]
#[command(
    name = "weir-peer-bench",
    about = "Weir and NATS JetStream through one harness"
)]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The commands, one per measurement (and `plot`, which draws them).
#[derive(Debug, Subcommand)]
enum Command {
    /// Produce N records and report throughput and acknowledgement latency.
    Produce {
        /// Which system.
        system: System,
        #[command(flatten)]
        workload: Workload,
    },
    /// Produce at a fixed rate and consume in the same process: produce-to-consume latency.
    E2e {
        /// Which system.
        system: System,
        #[command(flatten)]
        workload: Workload,
    },
    /// Fill the topic with N records (untimed), then time one reader reading them all back.
    Consume {
        /// Which system.
        system: System,
        #[command(flatten)]
        workload: Workload,
        /// JetStream: messages per pull request (Weir's consumer fetches up to 1 MiB per
        /// answer, its default).
        #[arg(long, default_value_t = 10_000)]
        fetch_batch: usize,
    },
    /// The machine's raw limits: disk, loopback TCP, memory copy.
    Raw {
        /// A directory on the disk under test.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// Draw throughput.svg and latency.svg from a scripts/bench-peers.sh output directory.
    Plot {
        /// The run's directory (`target/bench-peers/<date>`): summary.json and the per-run
        /// `<workload>-<system>.jsonl` files.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Where to write the SVGs (default: the run's directory).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
}

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum System {
    /// Weir, through weir-client.
    Weir,
    /// NATS JetStream, through async-nats.
    Jetstream,
}

/// What to send, where, and how.
#[derive(Debug, Clone, clap::Args)]
struct Workload {
    /// Weir bootstrap addresses, or the NATS server URL(s), comma-separated.
    #[arg(long)]
    server: String,
    /// Topic (Weir) or stream and subject (JetStream); created when missing.
    #[arg(long)]
    topic: String,
    /// Records to send.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Records per second (default: as fast as the client goes; e2e needs one).
    #[arg(long)]
    rate: Option<f64>,
    /// Weir: acks 1 or all.
    #[arg(long, default_value = "1")]
    acks: String,
    /// Weir: batch size, bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    batch_bytes: usize,
    /// Weir: the producer's buffer_memory, bytes: records buffered or in flight at most, the
    /// queue a record may wait behind at full speed (JetStream's is `--in-flight` messages).
    /// 1 MiB by default: four 256 KiB batches, enough to keep a partition's five requests
    /// busy, so the throughput is the same as with 64 MiB (measured: 1 KiB records on one
    /// node, 608-714k records/s with 1 MiB, 621-638k with 64 MiB) while the latency at full
    /// speed is the system's and not a deep client queue's (p99 3 ms against 93-102 ms).
    #[arg(long, default_value_t = 1 << 20)]
    buffer_bytes: usize,
    /// Weir: how long a batch may wait for more records, milliseconds (the client's linger;
    /// JetStream publishes each message at once).
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// JetStream: publish acknowledgements outstanding at once.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Replicas of the topic or stream, when it is created (Weir: replication factor, with
    /// min.insync.replicas 2 when above 1; JetStream: num_replicas).
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Weir: fsync every append (topic config flush.messages=1) when the topic is created.
    /// (JetStream's equivalent, `sync_interval: always`, is a server setting.)
    #[arg(long)]
    fsync: bool,
}

/// Creates the topic (Weir) or stream (JetStream) when it does not exist.
async fn ensure_target(system: System, w: &Workload) -> anyhow::Result<()> {
    match system {
        System::Weir => {
            let client = weir_client::ClientConfig::new(
                weir_client::ClientConfig::parse_bootstrap(&w.server)?,
            );
            let admin = weir_client::Admin::connect(client).await?;
            let mut configs = std::collections::BTreeMap::new();
            if w.replicas > 1 {
                configs.insert("min.insync.replicas".to_owned(), "2".to_owned());
            }
            if w.fsync {
                configs.insert("flush.messages".to_owned(), "1".to_owned());
            }
            match admin
                .create_topic(&w.topic, 1, w.replicas as i32, configs)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code() == Some(weir_client::ErrorCode::TopicAlreadyExists) => {}
                Err(e) => return Err(e.into()),
            }
            // A new topic is led a moment after it is created.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let topic = admin.describe_topic(&w.topic).await?;
                if topic.partitions.iter().all(|p| p.leader.is_some()) {
                    return Ok(());
                }
                anyhow::ensure!(Instant::now() < deadline, "topic {} has no leader", w.topic);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        System::Jetstream => {
            use async_nats::jetstream::stream::{Config, StorageType};
            let client = async_nats::connect(nats_servers(&w.server)?).await?;
            let js = async_nats::jetstream::new(client);
            js.get_or_create_stream(Config {
                name: w.topic.clone(),
                subjects: vec![w.topic.clone()],
                storage: StorageType::File,
                num_replicas: w.replicas as usize,
                ..Config::default()
            })
            .await?;
            Ok(())
        }
    }
}

/// Runs one command and prints its JSON on stdout.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The clients' own log lines (retries, reconnects) on stderr, for finding where a slow
    // record went: e.g. WEIR_BENCH_LOG=weir_client=debug. Off by default.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("WEIR_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let cli = Cli::parse();
    let json = match cli.command {
        Command::Produce { system, workload } => {
            serde_json::to_string(&produce(system, &workload).await?)?
        }
        Command::E2e { system, workload } => serde_json::to_string(&e2e(system, &workload).await?)?,
        Command::Consume {
            system,
            workload,
            fetch_batch,
        } => serde_json::to_string(&consume::consume(system, &workload, fetch_batch).await?)?,
        Command::Raw { dir } => serde_json::to_string(&raw(&dir)?)?,
        Command::Plot { dir, out } => {
            let written = plot::plot(&dir, out.as_deref().unwrap_or(&dir))?;
            serde_json::to_string(&written)?
        }
    };
    println!("{json}");
    Ok(())
}

/// What a run measured (the keys of `weir bench --output json`).
#[derive(Debug, Serialize)]
struct Report {
    /// Records acknowledged (produce) or received (e2e, consume).
    records: u64,
    /// Value bytes of those records.
    bytes: u64,
    /// How long the measured part took.
    seconds: f64,
    /// `records / seconds`.
    records_per_sec: f64,
    /// `bytes / seconds`, in MB (10^6 bytes) per second.
    mb_per_sec: f64,
    /// Latency percentiles; null where the command has none worth comparing (`consume`).
    latency_ms: Option<Latency>,
    /// Records that were not acknowledged or never arrived.
    failed: u64,
}

impl Report {
    /// A throughput-only report (`latency_ms` null).
    fn without_latency(records: u64, bytes: u64, elapsed: Duration, failed: u64) -> Report {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Report {
            records,
            bytes,
            seconds,
            records_per_sec: records as f64 / seconds,
            mb_per_sec: bytes as f64 / seconds / 1e6,
            latency_ms: None,
            failed,
        }
    }
}

/// Latency percentiles of a run, milliseconds.
#[derive(Debug, Serialize)]
struct Latency {
    /// Median.
    p50: f64,
    /// 99th percentile.
    p99: f64,
    /// 99.9th percentile.
    p999: f64,
    /// Largest.
    max: f64,
}

/// A histogram of microseconds, from 1 µs to an hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// A report with the latency percentiles of `h` (microseconds).
fn report(records: u64, bytes: u64, elapsed: Duration, h: &Histogram<u64>, failed: u64) -> Report {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Report {
        latency_ms: Some(Latency {
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
        }),
        ..Report::without_latency(records, bytes, elapsed, failed)
    }
}

/// 64 values of `size` random bytes (incompressible), cycled through.
fn values(size: usize) -> Vec<Bytes> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..64)
        .map(|_| Bytes::from((0..size).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>()))
        .collect()
}

/// `value` with its first 8 bytes the send time in microseconds since `started`.
fn stamped(value: &Bytes, at: Duration) -> Bytes {
    let mut v = value.to_vec();
    v.resize(v.len().max(8), 0);
    v[..8].copy_from_slice(&(at.as_micros() as u64).to_be_bytes());
    Bytes::from(v)
}

/// The send time `stamped` wrote into `value`; `None` when it is shorter than 8 bytes.
fn stamp_of(value: &[u8]) -> Option<Duration> {
    let at: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(Duration::from_micros(u64::from_be_bytes(at)))
}

/// An acknowledgement to wait for: `Ok` when the record is stored.
type Ack = futures::future::BoxFuture<'static, anyhow::Result<()>>;

/// A connected producer of either system.
enum Sender {
    /// One weir-client `Producer`.
    Weir(weir_client::Producer),
    /// A JetStream context, with a slot per publish acknowledgement allowed outstanding.
    Jetstream(
        Box<async_nats::jetstream::Context>,
        Arc<tokio::sync::Semaphore>,
    ),
}

impl Sender {
    /// Connects a producer for `system` configured from `w`.
    async fn connect(system: System, w: &Workload) -> anyhow::Result<Self> {
        Ok(match system {
            System::Weir => {
                let client = weir_client::ClientConfig::new(
                    weir_client::ClientConfig::parse_bootstrap(&w.server)?,
                );
                let config = weir_client::ProducerConfig {
                    acks: w.acks.parse()?,
                    batch_size: w.batch_bytes,
                    linger: Duration::from_millis(w.linger_ms),
                    buffer_memory: w.buffer_bytes,
                    ..weir_client::ProducerConfig::default()
                };
                Sender::Weir(weir_client::Producer::connect(client, config).await?)
            }
            System::Jetstream => {
                let client = async_nats::connect(nats_servers(&w.server)?).await?;
                let context = async_nats::jetstream::ContextBuilder::new()
                    .max_ack_inflight(w.in_flight.max(1))
                    .build(client);
                Sender::Jetstream(
                    Box::new(context),
                    Arc::new(tokio::sync::Semaphore::new(w.in_flight)),
                )
            }
        })
    }

    /// Sends one record; returns its acknowledgement.
    async fn send(&self, topic: &str, value: Bytes) -> anyhow::Result<Ack> {
        match self {
            Sender::Weir(p) => {
                let delivery = p
                    .send(weir_client::ProducerRecord::new(topic.to_owned(), value))
                    .await?;
                Ok(Box::pin(async move {
                    delivery.await?;
                    Ok(())
                }))
            }
            Sender::Jetstream(js, slots) => {
                let slot = Arc::clone(slots).acquire_owned().await?;
                let ack = js.publish(topic.to_owned(), value).await?;
                Ok(Box::pin(async move {
                    ack.await?;
                    drop(slot);
                    Ok(())
                }))
            }
        }
    }

    /// Flushes and closes the producer (JetStream's acknowledgements were all awaited).
    async fn finish(self) -> anyhow::Result<()> {
        if let Sender::Weir(p) = self {
            p.flush().await?;
            p.close().await?;
        }
        Ok(())
    }
}

/// Sends `w.records` records (paced by `w.rate`), stamped when `stamp`; acknowledgements are
/// awaited in send order by a task of their own. Returns the acknowledgement latencies,
/// records and bytes acknowledged, failures, and the time it took.
async fn send_all(
    system: System,
    w: &Workload,
    stamp: bool,
) -> anyhow::Result<(Histogram<u64>, u64, u64, u64, Duration)> {
    let sender = Sender::connect(system, w).await?;
    let values = values(w.record_size.max(if stamp { 8 } else { 0 }));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Ack, u64, Instant)>();
    let collector = tokio::spawn(async move {
        let (mut h, mut records, mut bytes, mut failed) = (histogram(), 0u64, 0u64, 0u64);
        while let Some((ack, len, at)) = rx.recv().await {
            match ack.await {
                Ok(()) => {
                    h.saturating_record((at.elapsed().as_micros() as u64).max(1));
                    records += 1;
                    bytes += len;
                }
                Err(_) => failed += 1,
            }
        }
        (h, records, bytes, failed)
    });
    let started = Instant::now();
    for i in 0..w.records {
        let scheduled = match w.rate {
            Some(r) => {
                let at = started + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(at.into()).await;
                at
            }
            None => Instant::now(),
        };
        let mut value = values[(i % values.len() as u64) as usize].clone();
        if stamp {
            value = stamped(&value, scheduled.duration_since(started));
        }
        let len = value.len() as u64;
        let ack = sender.send(&w.topic, value).await?;
        let _ = tx.send((ack, len, scheduled));
    }
    drop(tx);
    let (h, records, bytes, failed) = collector.await?;
    sender.finish().await?;
    Ok((h, records, bytes, failed, started.elapsed()))
}

/// `produce`: sends the workload's records and reports acknowledgement latency.
async fn produce(system: System, w: &Workload) -> anyhow::Result<Report> {
    ensure_target(system, w).await?;
    let (h, records, bytes, failed, elapsed) = send_all(system, w, false).await?;
    Ok(report(records, bytes, elapsed, &h, failed))
}

/// A stream of record values from the end of the topic (Weir) or stream (JetStream).
async fn subscribe(
    system: System,
    w: &Workload,
) -> anyhow::Result<futures::stream::BoxStream<'static, anyhow::Result<Bytes>>> {
    Ok(match system {
        System::Weir => {
            let client = weir_client::ClientConfig::new(
                weir_client::ClientConfig::parse_bootstrap(&w.server)?,
            );
            let admin = weir_client::Admin::connect(client.clone()).await?;
            let topic = admin.describe_topic(&w.topic).await?;
            let mut consumer = weir_client::Consumer::connect(
                client,
                weir_client::ConsumerConfig {
                    max_wait: Duration::from_millis(100),
                    ..weir_client::ConsumerConfig::default()
                },
            )
            .await?;
            for p in &topic.partitions {
                consumer
                    .assign(&w.topic, p.partition, weir_client::Offset::Latest)
                    .await?;
            }
            // The stream borrows the consumer: move both into a task and forward the values.
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                let mut stream = consumer.stream();
                while let Some(r) = stream.next().await {
                    let item = r.map(|r| r.value.unwrap_or_default()).map_err(Into::into);
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
            tokio_stream_of(rx)
        }
        System::Jetstream => {
            use async_nats::jetstream::consumer::pull::OrderedConfig;
            use async_nats::jetstream::consumer::DeliverPolicy;
            let client = async_nats::connect(nats_servers(&w.server)?).await?;
            let js = async_nats::jetstream::new(client);
            let stream = js.get_stream(&w.topic).await?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::New,
                    ..OrderedConfig::default()
                })
                .await?;
            let messages = consumer.messages().await?;
            messages
                .map(|m| m.map(|m| m.payload.clone()).map_err(anyhow::Error::from))
                .boxed()
        }
    })
}

/// The NATS server URLs of a comma-separated list.
fn nats_servers(list: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    list.split(',')
        .map(|s| {
            s.trim()
                .parse::<async_nats::ServerAddr>()
                .map_err(Into::into)
        })
        .collect()
}

/// A stream of what arrives on `rx`.
fn tokio_stream_of(
    mut rx: mpsc::Receiver<anyhow::Result<Bytes>>,
) -> futures::stream::BoxStream<'static, anyhow::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// `e2e`: produces at a fixed rate and reports each record's produce-to-consume latency.
async fn e2e(system: System, w: &Workload) -> anyhow::Result<Report> {
    anyhow::ensure!(w.rate.is_some(), "e2e needs --rate");
    ensure_target(system, w).await?;
    let mut values = subscribe(system, w).await?;
    let started_guess = Instant::now();
    let producing = {
        let w = w.clone();
        tokio::spawn(async move { send_all(system, &w, true).await })
    };
    // The producer's clock starts a moment after ours: stamps are relative to its start, so
    // take ours as close to it as possible and correct by the offset measured on the first
    // record (it can only make latencies look lower by the spawn delay, microseconds).
    let mut h = histogram();
    let (mut received, mut bytes) = (0u64, 0u64);
    let deadline =
        Duration::from_secs_f64(w.records as f64 / w.rate.unwrap_or(1.0)) + Duration::from_secs(30);
    while received < w.records && started_guess.elapsed() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), values.next()).await {
            Ok(Some(Ok(value))) => {
                let Some(sent) = stamp_of(&value) else {
                    continue;
                };
                let us = started_guess.elapsed().saturating_sub(sent).as_micros() as u64;
                h.saturating_record(us.max(1));
                received += 1;
                bytes += value.len() as u64;
            }
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) | Err(_) => break,
        }
    }
    let (_, _, _, failed, elapsed) = producing.await??;
    Ok(report(
        received,
        bytes,
        elapsed,
        &h,
        failed + w.records.saturating_sub(received),
    ))
}

/// The machine's limits, measured here and now.
#[derive(Debug, Serialize)]
struct Raw {
    /// 1 GiB written sequentially in 1 MiB writes, then one fsync: MB/s.
    sequential_write_mb_per_sec: f64,
    /// 4 KiB writes, each followed by fdatasync: writes per second.
    fsynced_4k_writes_per_sec: f64,
    /// 1 GiB through one loopback TCP connection: MB/s.
    loopback_tcp_mb_per_sec: f64,
    /// 1 GiB memcpy in 1 MiB blocks: MB/s.
    memcpy_mb_per_sec: f64,
}

/// `raw`: measures the machine's limits, with its test files in `dir`.
fn raw(dir: &std::path::Path) -> anyhow::Result<Raw> {
    const TOTAL: usize = 1 << 30;
    let block = vec![0x5au8; 1 << 20];
    std::fs::create_dir_all(dir)?;
    let path = dir.join("raw-sequential");
    let started = Instant::now();
    {
        let mut f = std::fs::File::create(&path).context("raw: creating the test file")?;
        for _ in 0..TOTAL / block.len() {
            f.write_all(&block)?;
        }
        f.sync_all()?;
    }
    let sequential = TOTAL as f64 / started.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(&path)?;

    let path = dir.join("raw-fsync");
    let small = vec![0x5au8; 4096];
    let mut f = std::fs::File::create(&path)?;
    let started = Instant::now();
    let mut writes = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        f.write_all(&small)?;
        f.sync_data()?;
        writes += 1;
    }
    let fsynced = writes as f64 / started.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < TOTAL {
            let n = std::io::Read::read(&mut s, &mut buf)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(())
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let started = Instant::now();
    for _ in 0..TOTAL / block.len() {
        s.write_all(&block)?;
    }
    drop(s);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let tcp = TOTAL as f64 / started.elapsed().as_secs_f64() / 1e6;

    let src = vec![1u8; 1 << 20];
    let mut dst = vec![0u8; 1 << 20];
    let started = Instant::now();
    for i in 0..TOTAL / src.len() {
        dst.copy_from_slice(&src);
        let at = i % dst.len();
        dst[at] ^= 1;
        std::hint::black_box(&dst);
    }
    let memcpy = TOTAL as f64 / started.elapsed().as_secs_f64() / 1e6;
    Ok(Raw {
        sequential_write_mb_per_sec: sequential,
        fsynced_4k_writes_per_sec: fsynced,
        loopback_tcp_mb_per_sec: tcp,
        memcpy_mb_per_sec: memcpy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let v = stamped(
            &Bytes::from_static(b"abcdefghij"),
            Duration::from_micros(1234),
        );
        assert_eq!(stamp_of(&v), Some(Duration::from_micros(1234)));
        assert_eq!(stamp_of(b"short"), None);
    }
}
