//! `consume weir|jetstream`: how fast one reader catches up on records already stored.
//!
//! First the topic (Weir) or stream (JetStream) is filled with N records of S bytes through
//! the path `produce` measures (Weir's `Producer` at the given acks, JetStream's asynchronous
//! publishes), untimed. Then the clock runs while one reader reads every acknowledged record
//! back, from where the log ended before the fill:
//!
//! - Weir: one `weir_client::Consumer`, each partition assigned at its end offset as it was
//!   before the fill, records taken from `Consumer::stream()` (one Fetch stream per partition,
//!   answers of up to `ConsumerConfig::max_bytes`, 1 MiB by default: what users get).
//! - JetStream: an ephemeral pull consumer without acknowledgements (`AckPolicy::None`, as
//!   async-nats's ordered consumer uses) starting at the stream's next sequence before the
//!   fill, read through `messages()` with `--fetch-batch` messages per pull request
//!   (async-nats's default is 200 and its ordered consumer's 500; a larger batch keeps more in
//!   flight, which favours the peer if anything).
//!
//! The clock starts just before the reader opens its fetch streams (Weir) or sends its first
//! pull request (JetStream), after both consumers are connected, and stops at the last record.
//!
//! The report carries no latency (`latency_ms` is null): records read back after they were
//! stored have no send-to-arrival latency worth comparing, and the gaps between deliveries
//! would measure each client's batch size rather than its speed.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};

use crate::{ensure_target, nats_servers, send_all, Report, System, Workload};

/// How long the reader waits for the next record before it reports what arrived.
const SILENCE: Duration = Duration::from_secs(10);

/// What the untimed fill stored.
#[derive(Debug, Clone, Copy)]
struct Fill {
    /// Records acknowledged: the ones the reader must find.
    acknowledged: u64,
    /// Records whose send or acknowledgement failed.
    failed: u64,
}

/// Fills the target with `w.records` records through the `produce` path, untimed.
async fn fill(system: System, w: &Workload) -> anyhow::Result<Fill> {
    let (_, acknowledged, _, failed, elapsed) = send_all(system, w, false).await?;
    eprintln!(
        "consume: filled {acknowledged} records in {:.2} s ({failed} failed); reading them back",
        elapsed.as_secs_f64()
    );
    Ok(Fill {
        acknowledged,
        failed,
    })
}

/// Fills the target, then times one reader reading every acknowledged record back.
/// `fetch_batch` is JetStream's messages per pull request.
pub(crate) async fn consume(
    system: System,
    w: &Workload,
    fetch_batch: usize,
) -> anyhow::Result<Report> {
    anyhow::ensure!(fetch_batch > 0, "--fetch-batch must be at least 1");
    ensure_target(system, w).await?;
    match system {
        System::Weir => consume_weir(w).await,
        System::Jetstream => consume_jetstream(w, fetch_batch).await,
    }
}

/// Weir: a `Consumer` assigned at each partition's end before the fill.
async fn consume_weir(w: &Workload) -> anyhow::Result<Report> {
    let client =
        weir_client::ClientConfig::new(weir_client::ClientConfig::parse_bootstrap(&w.server)?);
    let mut consumer =
        weir_client::Consumer::connect(client, weir_client::ConsumerConfig::default()).await?;
    for partition in consumer.partitions_for(&w.topic).await? {
        consumer
            .assign(&w.topic, partition, weir_client::Offset::Latest)
            .await?;
    }
    let fill = fill(System::Weir, w).await?;
    let started = Instant::now();
    let lengths = consumer.stream().map(|record| {
        record
            .map(|r| r.value.map_or(0, |v| v.len()))
            .map_err(anyhow::Error::from)
    });
    read(lengths, fill, started).await
}

/// JetStream: a pull consumer from the stream's next sequence before the fill.
async fn consume_jetstream(w: &Workload, fetch_batch: usize) -> anyhow::Result<Report> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let client = async_nats::connect(nats_servers(&w.server)?).await?;
    let js = async_nats::jetstream::new(client);
    let next = js
        .get_stream(&w.topic)
        .await?
        .cached_info()
        .state
        .last_sequence
        + 1;
    let fill = fill(System::Jetstream, w).await?;
    // Made after the fill, so that an ephemeral consumer is not removed as inactive while a
    // slow fill runs.
    let consumer = js
        .get_stream(&w.topic)
        .await?
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            ack_policy: AckPolicy::None,
            ..pull::Config::default()
        })
        .await?;
    let started = Instant::now();
    let messages = consumer
        .stream()
        .max_messages_per_batch(fetch_batch)
        .messages()
        .await?;
    let lengths = messages.map(|message| {
        message
            .map(|m| m.payload.len())
            .map_err(anyhow::Error::from)
    });
    read(lengths, fill, started).await
}

/// Reads value lengths from `lengths` until the fill's acknowledged records have all arrived,
/// or none has for [`SILENCE`]; the time counts from `started` to the last record read, and
/// records that never arrived count as failed.
async fn read(
    lengths: impl Stream<Item = anyhow::Result<usize>>,
    fill: Fill,
    started: Instant,
) -> anyhow::Result<Report> {
    let mut lengths = std::pin::pin!(lengths);
    let (mut records, mut bytes, mut last) = (0u64, 0u64, started);
    while records < fill.acknowledged {
        match tokio::time::timeout(SILENCE, lengths.next()).await {
            Ok(Some(Ok(len))) => {
                records += 1;
                bytes += len as u64;
                last = Instant::now();
            }
            Ok(Some(Err(e))) => return Err(e.context(format!("after {records} records"))),
            Ok(None) => {
                eprintln!(
                    "consume: the stream ended after {records} of {} records",
                    fill.acknowledged
                );
                break;
            }
            Err(_) => {
                eprintln!(
                    "consume: no record for {SILENCE:?} after {records} of {}; reporting what arrived",
                    fill.acknowledged
                );
                break;
            }
        }
    }
    let missing = fill.acknowledged - records;
    Ok(Report::without_latency(
        records,
        bytes,
        last.duration_since(started),
        fill.failed + missing,
    ))
}
