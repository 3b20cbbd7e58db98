//! `weir produce`: one record per line of standard input.
//!
//! Lines are read and handed to the client's batching producer as fast as it takes them (it
//! pushes back when its buffer is full); a separate task awaits the delivery futures, so many
//! batches are in flight while stdin is still being read. When stdin ends the producer is
//! flushed, every outstanding record is awaited, and a summary goes to stderr.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use weir_client::{
    Acks, Admin, Compression, DeliveryFuture, Producer, ProducerConfig, ProducerRecord,
};

use crate::error::{for_topic, CliError, Exit};
use crate::topic::parse_key_value;
use crate::Context;

/// How many failures are spelled out on stderr before the rest are only counted.
const SHOWN_FAILURES: u64 = 5;

/// Arguments of `weir produce`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each line of standard input becomes one record (the trailing newline, and a carriage return
before it, are not part of the record). The command exits once stdin ends and every record is
acknowledged, with a summary on stderr; the exit code is 1 if any record failed.

Examples:
  echo hello | weir produce greetings
  seq 1 1000 | weir produce numbers --acks 1
  seq 1 1000 | weir produce numbers --compression zstd
  printf 'user-1:signed up\\nuser-2:logged in\\n' | weir produce events --key-separator :
  cat events.txt | weir produce events --header source=import --header version=2
  weir produce orders --partition 3 < orders.txt")]
pub struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Acknowledgement to wait for: 0 (none), 1 (the leader's append) or all (every in-sync
    /// replica).
    #[arg(long, default_value = "all", value_name = "0|1|all", value_parser = parse_acks)]
    acks: Acks,
    /// Send every record to this partition, instead of choosing by key (murmur2, as Kafka
    /// does) or spreading keyless records.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Split each line at the first SEP into key and value (a line without SEP fails).
    #[arg(long, value_name = "SEP", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    key_separator: Option<String>,
    /// Add a header KEY=VALUE to every record; repeat for several.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    headers: Vec<(String, String)>,
    /// Compress each batch with this codec: none, gzip, snappy, lz4 or zstd (the broker stores
    /// it compressed; consumers decompress).
    #[arg(long, default_value = "none", value_name = "CODEC", value_parser = parse_compression)]
    compression: Compression,
    /// The codec's level: gzip 1 to 9 (default 6), zstd -131072 to 22 (default 3); snappy and
    /// lz4 take none.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    compression_level: Option<i32>,
    /// Turn the idempotent producer off. It is on with --acks all (the default): a batch
    /// resent after a lost answer or a leader change is stored once, in order. With --acks 0
    /// or 1 it is off anyway.
    #[arg(long)]
    no_idempotence: bool,
    /// A key or value that is exactly this text is sent as null (a null value is a
    /// tombstone). Without it every line and key is sent as the bytes it holds.
    #[arg(long, value_name = "TEXT")]
    null_marker: Option<String>,
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>()
        .map_err(|_| format!("expected none, gzip, snappy, lz4 or zstd, got `{s}`"))
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse::<Acks>()
        .map_err(|_| format!("expected 0, 1 or all, got `{s}`"))
}

/// Runs `weir produce`.
pub async fn run(args: ProduceArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    // Ask for the topic first, so an unknown topic or partition is one clear error before any
    // input is read.
    let admin = Admin::connect(ctx.client.clone()).await?;
    let topic = admin
        .describe_topic(&args.topic)
        .await
        .map_err(|e| for_topic(e, &args.topic))?;
    if let Some(p) = args.partition {
        if p as usize >= topic.partitions.len() {
            return Err(CliError::new(
                Exit::NotFound,
                format!(
                    "unknown partition {p} of topic `{}` (it has {} partitions)",
                    args.topic,
                    topic.partitions.len()
                ),
            )
            .into());
        }
    }

    let config = ProducerConfig {
        acks: args.acks,
        compression: args.compression,
        compression_level: args.compression_level,
        idempotence: args.no_idempotence.then_some(false),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(ctx.client.clone(), config).await?;

    let counts = Arc::new(Counts::default());
    let (tx, rx) = mpsc::unbounded_channel::<(u64, DeliveryFuture)>();
    let collector = tokio::spawn(collect(rx, counts.clone()));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| tokio::spawn(show_progress(counts.clone())));

    let headers: Vec<(String, Bytes)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
        .collect();
    let mut stdin = BufReader::with_capacity(1 << 16, tokio::io::stdin());
    let mut line = Vec::new();
    let mut line_no = 0u64;
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line).await? == 0 {
            break;
        }
        line_no += 1;
        trim_newline(&mut line);
        let (key, value) = match &args.key_separator {
            None => (None, Bytes::copy_from_slice(&line)),
            Some(sep) => match split_once(&line, sep.as_bytes()) {
                Some((k, v)) => (Some(Bytes::copy_from_slice(k)), Bytes::copy_from_slice(v)),
                None => {
                    counts.fail(line_no, &format!("no key separator `{sep}` in the line"));
                    continue;
                }
            },
        };
        let null = |b: &Bytes| {
            args.null_marker
                .as_ref()
                .is_some_and(|m| m.as_bytes() == &b[..])
        };
        let mut record = ProducerRecord::new(args.topic.clone(), value);
        if record.value.as_ref().is_some_and(null) {
            record.value = None;
        }
        if let Some(key) = key.filter(|k| !null(k)) {
            record = record.key(key);
        }
        if let Some(p) = args.partition {
            record = record.partition(p);
        }
        for (k, v) in &headers {
            record = record.header(k.clone(), v.clone());
        }
        match producer.send(record).await {
            Ok(delivery) => {
                // The collector lives until this sender is dropped; a send error means it
                // panicked, and the join below reports that.
                let _ = tx.send((line_no, delivery));
            }
            Err(e) if e.code().is_some_and(|c| c == unknown_topic()) => {
                return Err(for_topic(e, &args.topic));
            }
            Err(e) => counts.fail(line_no, &crate::error::bare(&e)),
        }
    }
    drop(tx);
    let flushed = producer.flush().await;
    collector.await?;
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[K");
    }
    producer.close().await?;
    flushed?;

    let ok = counts.ok.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    eprintln!(
        "produced {ok} record{} to {} ({failed} failed)",
        if ok == 1 { "" } else { "s" },
        args.topic
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        Exit::Failure.code()
    })
}

fn unknown_topic() -> weir_proto::common::v1::ErrorCode {
    weir_proto::common::v1::ErrorCode::UnknownTopicOrPartition
}

/// Acknowledged and failed records, shared by the reader, the collector and the progress line.
#[derive(Debug, Default)]
struct Counts {
    /// Records acknowledged.
    ok: AtomicU64,
    /// Records that failed (or lines that could not become records).
    failed: AtomicU64,
}

impl Counts {
    /// Counts a failure and, for the first few, says which line and why.
    fn fail(&self, line_no: u64, why: &str) {
        let n = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= SHOWN_FAILURES {
            eprintln!("error: line {line_no}: {why}");
        } else if n == SHOWN_FAILURES + 1 {
            eprintln!("error: more records failed; counting the rest silently");
        }
    }
}

/// Awaits every delivery future in the order the records were sent.
async fn collect(mut rx: mpsc::UnboundedReceiver<(u64, DeliveryFuture)>, counts: Arc<Counts>) {
    while let Some((line_no, delivery)) = rx.recv().await {
        match delivery.await {
            Ok(_) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => counts.fail(line_no, &crate::error::bare(&e)),
        }
    }
}

/// A progress line on a terminal's stderr, redrawn every half second.
async fn show_progress(counts: Arc<Counts>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprint!(
            "\r\x1b[Kproduced {} records ({} failed)…",
            counts.ok.load(Ordering::Relaxed),
            counts.failed.load(Ordering::Relaxed)
        );
    }
}

/// Drops a trailing `\n` and a `\r` before it.
fn trim_newline(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

/// Splits at the first occurrence of `sep`.
fn split_once<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..at], &line[at + sep.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_lose_their_line_ending_only() {
        for (input, want) in [
            (&b"a\n"[..], &b"a"[..]),
            (b"a\r\n", b"a"),
            (b"a", b"a"),
            (b"\n", b""),
            (b"a\r", b"a\r"),
        ] {
            let mut line = input.to_vec();
            trim_newline(&mut line);
            assert_eq!(line, want);
        }
    }

    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(split_once(b"k1:v:1", b":"), Some((&b"k1"[..], &b"v:1"[..])));
        assert_eq!(split_once(b"k1::v", b"::"), Some((&b"k1"[..], &b"v"[..])));
        assert_eq!(split_once(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_once(b"kv", b":"), None);
    }
}
