//! `weir consume`: read records and print them, one per line.
//!
//! The consumer is assigned the chosen partitions (all of them by default) and its stream is
//! printed through a [`Format`]. Output is buffered, and flushed whenever the stream has
//! nothing ready, so a pipe gets large writes under load and a terminal sees each record as
//! it arrives. A closed stdout (`weir consume t | head`) ends the command quietly.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use futures::{FutureExt, StreamExt};
use serde::Serialize;
use weir_client::{Consumer, ConsumerConfig, ConsumerRecord, Offset};

use crate::error::{for_topic, CliError, Exit};
use crate::output::OutputFormat;
use crate::Context;

/// Arguments of `weir consume`.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads every partition of TOPIC unless --partition is given, from the earliest offset unless
--offset or --from-timestamp says otherwise, and prints one line per record: its value, or
the --format string. Stops after --max-messages records, after --idle-timeout-ms without a new
record, or on Ctrl-C; a count goes to stderr. With --output json (and no --format) each record
is one JSON object per line, with key, value and header values as UTF-8 text.

Format placeholders:
  %v value    %k key    %T topic    %p partition    %o offset
  %t timestamp (ms since the epoch)    %h headers as k1=v1,k2=v2    %% a percent sign
Escapes: \\n newline, \\t tab, \\r carriage return, \\\\ backslash. A null key or value prints
as nothing, or as --null-marker's text. A newline follows each record unless FMT already ends
with one. --from-timestamp and --until-timestamp together read a time range and then stop.

Examples:
  weir consume orders
  weir consume orders --offset latest
  weir consume orders --partition 2 --offset 1500 --max-messages 10
  weir consume orders --from-timestamp 1735689600000 --idle-timeout-ms 5000
  weir consume orders --format '%p/%o %k=%v' --max-messages 100
  weir consume orders --format '%t\\t%h\\t%v' --idle-timeout-ms 2000
  weir consume orders --output json --max-messages 1 | jq .")]
pub struct ConsumeArgs {
    /// Topic to consume.
    topic: String,
    /// Read only this partition.
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Where to start in each partition: earliest, latest (only new records) or an offset.
    #[arg(long, default_value = "earliest", value_name = "earliest|latest|N",
          value_parser = parse_offset, conflicts_with = "from_timestamp")]
    offset: Offset,
    /// Start at the first record whose timestamp is at or after MS (ms since the epoch).
    #[arg(long, value_name = "MS")]
    from_timestamp: Option<i64>,
    /// Stop each partition before its first record whose timestamp is at or after MS, as
    /// found when the command starts (a partition with no such record stops at its end at
    /// start); the command ends once every partition has stopped.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    until_timestamp: Option<i64>,
    /// Print a null key or value as TEXT (`%k`, `%v`; JSON shows null) instead of nothing.
    #[arg(long, value_name = "TEXT")]
    null_marker: Option<String>,
    /// Stop after printing N records.
    #[arg(long, value_name = "N")]
    max_messages: Option<u64>,
    /// Stop after T ms without a new record.
    #[arg(long, value_name = "T")]
    idle_timeout_ms: Option<u64>,
    /// How to print each record (see the placeholders below) [default: %v].
    #[arg(long, short = 'f', value_name = "FMT", value_parser = Format::parse)]
    format: Option<Format>,
}

fn parse_offset(s: &str) -> Result<Offset, String> {
    match s {
        "earliest" | "beginning" => Ok(Offset::Earliest),
        "latest" | "end" => Ok(Offset::Latest),
        n => match n.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Offset::At(n)),
            _ => Err(format!(
                "expected earliest, latest or an offset >= 0, got `{s}`"
            )),
        },
    }
}

/// Runs `weir consume`.
pub async fn run(args: ConsumeArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let mut consumer = Consumer::connect(ctx.client.clone(), ConsumerConfig::default()).await?;
    let all = consumer
        .partitions_for(&args.topic)
        .await
        .map_err(|e| for_topic(e, &args.topic))?;
    if all.is_empty() {
        return Err(CliError::unknown_topic(&args.topic).into());
    }
    let partitions = match args.partition {
        None => all,
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(CliError::new(
                Exit::NotFound,
                format!(
                    "unknown partition {p} of topic `{}` (it has {} partitions)",
                    args.topic,
                    all.len()
                ),
            )
            .into())
        }
    };
    let start = match args.from_timestamp {
        Some(ms) => Offset::Timestamp(ms),
        None => args.offset,
    };
    // Where each partition stops with --until-timestamp: the first offset at or after it
    // (ListOffsets by time, or the end when no record is that new yet).
    let mut ends = HashMap::new();
    if let Some(until) = args.until_timestamp {
        for p in &partitions {
            consumer
                .assign(&args.topic, *p, Offset::Timestamp(until))
                .await
                .map_err(|e| for_topic(e, &args.topic))?;
            ends.insert(*p, consumer.position(&args.topic, *p).unwrap_or(0));
        }
    }
    for p in &partitions {
        consumer
            .assign(&args.topic, *p, start)
            .await
            .map_err(|e| for_topic(e, &args.topic))?;
    }
    // Partitions still to read up to their end (all of them without --until-timestamp).
    let mut open: HashSet<u32> = partitions
        .iter()
        .copied()
        .filter(|p| {
            ends.get(p).is_none_or(|end| {
                consumer
                    .position(&args.topic, *p)
                    .is_some_and(|at| at < *end)
            })
        })
        .collect();

    let null = args.null_marker.clone().unwrap_or_default().into_bytes();
    let printer = match (&args.format, ctx.output) {
        (Some(format), _) => Printer::Format(format.clone().with_null(null)),
        (None, OutputFormat::Json) => Printer::Json,
        (None, OutputFormat::Table) => Printer::Format(Format::default().with_null(null)),
    };
    let idle = args.idle_timeout_ms.map(Duration::from_millis);
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut line = Vec::new();
    let mut count = 0u64;
    let stream = consumer.stream();
    futures::pin_mut!(stream);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    while !open.is_empty() && !matches!(args.max_messages, Some(max) if count >= max) {
        // Take what is ready without waiting; before waiting, hand what was printed to stdout.
        let item = match stream.next().now_or_never() {
            Some(item) => Some(item),
            None => {
                if flush(&mut out)? {
                    break;
                }
                let next = async {
                    match idle {
                        Some(idle) => tokio::time::timeout(idle, stream.next()).await.ok(),
                        None => Some(stream.next().await),
                    }
                };
                tokio::select! {
                    item = next => item,
                    _ = &mut ctrl_c => break,
                }
            }
        };
        let record = match item {
            None | Some(None) => break, // idle for too long, or the stream ended
            Some(Some(Ok(record))) => record,
            Some(Some(Err(e))) => {
                let _ = flush(&mut out);
                eprintln!("consumed {count} records from {}", args.topic);
                return Err(for_topic(e, &args.topic));
            }
        };
        if let Some(end) = ends.get(&record.partition) {
            if record.offset >= *end {
                open.remove(&record.partition);
                continue;
            }
            if record.offset + 1 >= *end {
                open.remove(&record.partition);
            }
        }
        line.clear();
        printer.write(&record, &mut line)?;
        match out.write_all(&line) {
            Ok(()) => count += 1,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e.into()),
        }
    }
    let _ = flush(&mut out);
    eprintln!(
        "consumed {count} record{} from {}",
        if count == 1 { "" } else { "s" },
        args.topic
    );
    Ok(ExitCode::SUCCESS)
}

/// Flushes stdout; `true` when the reader has gone away (a broken pipe), which ends the
/// command quietly.
fn flush(out: &mut impl Write) -> anyhow::Result<bool> {
    match out.flush() {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// How records are printed.
#[derive(Debug, Clone)]
enum Printer {
    /// Through a format string.
    Format(Format),
    /// As one JSON object per line.
    Json,
}

impl Printer {
    /// Appends one record's line (with its newline) to `out`.
    fn write(&self, record: &ConsumerRecord, out: &mut Vec<u8>) -> anyhow::Result<()> {
        match self {
            Printer::Format(format) => format.write(record, out),
            Printer::Json => {
                serde_json::to_writer(&mut *out, &RecordJson::from(record))?;
                out.push(b'\n');
            }
        }
        Ok(())
    }
}

/// One piece of a parsed `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text printed as is (escapes already resolved).
    Text(Vec<u8>),
    /// `%v`
    Value,
    /// `%k`
    Key,
    /// `%T`
    Topic,
    /// `%p`
    Partition,
    /// `%o`
    Offset,
    /// `%t`
    Timestamp,
    /// `%h`
    Headers,
}

/// A parsed `--format` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The pieces, in order; the last is a newline.
    pieces: Vec<Piece>,
    /// What a null key or value prints as (`--null-marker`; nothing by default).
    null: Vec<u8>,
}

impl Default for Format {
    fn default() -> Self {
        Self {
            pieces: vec![Piece::Value, Piece::Text(b"\n".to_vec())],
            null: Vec::new(),
        }
    }
}

impl Format {
    /// The format with null keys and values printed as `null`.
    fn with_null(self, null: Vec<u8>) -> Self {
        Self { null, ..self }
    }

    /// Parses a format string; an unknown `%x` placeholder or `\x` escape is an error.
    pub fn parse(s: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut text = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let piece = match chars.next() {
                        Some('v') => Piece::Value,
                        Some('k') => Piece::Key,
                        Some('T') => Piece::Topic,
                        Some('p') => Piece::Partition,
                        Some('o') => Piece::Offset,
                        Some('t') => Piece::Timestamp,
                        Some('h') => Piece::Headers,
                        Some('%') => {
                            text.push(b'%');
                            continue;
                        }
                        Some(other) => {
                            return Err(format!(
                                "unknown placeholder `%{other}` (use %v %k %T %p %o %t %h or %%)"
                            ))
                        }
                        None => {
                            return Err("a lone `%` at the end (write %% for a percent sign)".into())
                        }
                    };
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(piece);
                }
                '\\' => match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('r') => text.push(b'\r'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        return Err(format!(
                            "unknown escape `\\{other}` (use \\n \\t \\r or \\\\)"
                        ))
                    }
                    None => {
                        return Err("a lone `\\` at the end (write \\\\ for a backslash)".into())
                    }
                },
                c => {
                    let mut buf = [0; 4];
                    text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if text.last() != Some(&b'\n') {
            text.push(b'\n');
        }
        pieces.push(Piece::Text(text));
        Ok(Format {
            pieces,
            null: Vec::new(),
        })
    }

    /// Appends one record, formatted, to `out`.
    fn write(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or(&self.null)),
                Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or(&self.null)),
                Piece::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Piece::Headers => {
                    for (i, (k, v)) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(k.as_bytes());
                        if let Some(v) = v {
                            out.push(b'=');
                            out.extend_from_slice(v);
                        }
                    }
                }
            }
        }
    }
}

/// Text for JSON: the bytes as UTF-8, invalid sequences replaced.
fn text_of(b: &Option<bytes::Bytes>) -> Option<String> {
    b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

/// A record as `--output json` prints it.
#[derive(Debug, Serialize)]
struct RecordJson {
    /// Topic.
    topic: String,
    /// Partition.
    partition: u32,
    /// Offset.
    offset: i64,
    /// Timestamp, ms since the epoch.
    timestamp: i64,
    /// Key, null for none.
    key: Option<String>,
    /// Value, null for none.
    value: Option<String>,
    /// Headers in order.
    headers: Vec<HeaderJson>,
}

/// One header.
#[derive(Debug, Serialize)]
struct HeaderJson {
    /// Header key.
    key: String,
    /// Header value, null for none.
    value: Option<String>,
}

impl From<&ConsumerRecord> for RecordJson {
    fn from(r: &ConsumerRecord) -> Self {
        Self {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: text_of(&r.key),
            value: text_of(&r.value),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| HeaderJson {
                    key: k.clone(),
                    value: text_of(v),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_placeholders_and_escapes() {
        let f = Format::parse("%p/%o\\t%k=%v %%").unwrap();
        assert_eq!(
            f.pieces,
            vec![
                Piece::Partition,
                Piece::Text(b"/".to_vec()),
                Piece::Offset,
                Piece::Text(b"\t".to_vec()),
                Piece::Key,
                Piece::Text(b"=".to_vec()),
                Piece::Value,
                Piece::Text(b" %\n".to_vec()),
            ]
        );
        // A format that ends in a newline gets no second one.
        assert_eq!(Format::parse("%v\\n").unwrap(), Format::default());
    }

    #[test]
    fn bad_formats_are_refused_with_the_reason() {
        assert!(Format::parse("%x").unwrap_err().contains("`%x`"));
        assert!(Format::parse("%").is_err());
        assert!(Format::parse("\\q").unwrap_err().contains("`\\q`"));
    }

    #[test]
    fn offsets_parse() {
        assert!(matches!(parse_offset("earliest"), Ok(Offset::Earliest)));
        assert!(matches!(parse_offset("latest"), Ok(Offset::Latest)));
        assert!(matches!(parse_offset("42"), Ok(Offset::At(42))));
        assert!(parse_offset("-1").is_err());
        assert!(parse_offset("soon").is_err());
    }
}
