//! `log-bench`: append and read throughput of a [`PartitionLog`], against raw file writes.
//!
//! ```text
//! cargo run --release -p weir-storage --example log-bench -- \
//!     --total-bytes 2GiB --record-size 1024 --batch-bytes 65536 --runs 3
//! ```
//!
//! One uncompressed batch, as many `--record-size` records (no key, pseudo-random value) as fit
//! in `--batch-bytes`, is built once. Each run then, in this order:
//!
//! 0. **warm-up** (untimed; skipped with `--no-prefault`): writes the same number of bytes to a
//!    scratch file without fsync and deletes it, which drops its pages unwritten. See below.
//! 1. **append**: opens a fresh log with [`LogConfig::default`] (1 GiB segments, no flush
//!    policy) and appends clones of that batch with [`PartitionLog::append_as_leader`] until
//!    `--total-bytes` are written (rounded up to whole batches), then calls
//!    [`PartitionLog::flush`] once. Timed from the first append to the end of the flush, so the
//!    fsync at the 1 GiB segment roll and the final one are included.
//! 2. **read**: reads everything back with [`PartitionLog::read`] in 1 MiB requests from the log
//!    start to the log end, walking the batch headers of each answer to find the next offset.
//!    The data is still in the page cache, so this measures the read path, not the disk.
//! 3. The log is deleted, which also drops its pages from the page cache.
//! 4. **raw**: writes the same number of batch-sized chunks (the same bytes) with
//!    `std::fs::File::write_all` to a new file in the same directory, then one `sync_all`. The
//!    file is deleted afterwards.
//!
//! Deleting the log before the raw write means both writers start with the same page-cache
//! state and no dirty pages left by the other, so the first one does not pay for the second's
//! memory pressure or vice versa.
//!
//! The warm-up is there because on a virtual machine whose free memory goes back to the
//! host (balloon free-page reporting, DAMON reclaim), the first writer to touch a few GiB of
//! fresh page cache pays for the host faulting that memory back in, at a few hundred MB/s,
//! while the second writer reuses the pages the first one just freed. Without the warm-up the
//! log, which writes first, is measured at roughly half its speed. On bare metal it costs
//! one extra pass of memory copies and changes nothing.
//!
//! With `--runs N` the whole sequence is repeated N times and the medians are reported (the
//! append ratio is the median of the per-run ratios). Exactly one JSON line goes to stdout
//! (MB = 10^6 bytes; `total_bytes` is what one run actually wrote); progress and per-run
//! figures go to stderr.

use std::error::Error;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_common::now_ms;

use bytes::Bytes;
use clap::Parser;
use weir_storage::{BatchBuilder, BatchHeader, Compression, LogConfig, PartitionLog};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// Bytes asked for per `PartitionLog::read` call.
const READ_MAX_BYTES: usize = 1 << 20;

/// Append/read throughput of a partition log, compared to raw `File` writes.
#[derive(Debug, Parser)]
#[command(name = "log-bench")]
struct Args {
    /// Bytes to append per run, rounded up to whole batches (e.g. 2GiB, 512MiB, 1GB, 1000000).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    total_bytes: u64,
    /// Size of each record's value in bytes.
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    record_size: u64,
    /// Largest size of the batch (header included); it holds as many records as fit.
    #[arg(long, default_value = "65536", value_parser = parse_size)]
    batch_bytes: u64,
    /// Directory to work in (a temporary directory is created in it and removed at the end).
    /// Default: the system temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the untimed warm-up write before each run (see the module docs).
    #[arg(long)]
    no_prefault: bool,
    /// Repeat the whole measurement this many times and report medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

/// Parses a byte size: a number with an optional unit. `KB`, `MB`, `GB`, `TB` are powers of
/// 10; `KiB`, `MiB`, `GiB`, `TiB` (and bare `K`, `M`, `G`, `T`) powers of 2. Case-insensitive;
/// `_` separators and a fractional number (`1.5GiB`) are accepted.
fn parse_size(text: &str) -> Result<u64, String> {
    let cleaned: String = text.trim().chars().filter(|&c| c != '_').collect();
    let split = cleaned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(cleaned.len());
    let (number, unit) = cleaned.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    if number.is_empty() {
        return Err(format!("`{text}` is not a size"));
    }
    if number.contains('.') {
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size"))?;
        let bytes = (value * multiplier as f64).round();
        if !(0.0..=u64::MAX as f64).contains(&bytes) {
            return Err(format!("`{text}` is out of range"));
        }
        return Ok(bytes as u64);
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size"))?;
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{text}` is out of range"))
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

/// Builds one uncompressed batch of as many `record_size`-byte records as fit in
/// `batch_bytes`. Returns the batch and its record count.
fn build_batch(record_size: usize, batch_bytes: usize) -> BoxResult<(Bytes, usize)> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut value = vec![0u8; record_size];
    let timestamp = now_ms();
    let mut builder = BatchBuilder::new(Compression::None);
    loop {
        rng.fill(&mut value);
        let mut next = builder.clone();
        next.push_parts(timestamp, None, Some(&value), &[]);
        if next.uncompressed_size() > batch_bytes {
            break;
        }
        builder = next;
    }
    let records = builder.len();
    if records == 0 {
        return Err(format!(
            "a record of {record_size} bytes does not fit in a batch of {batch_bytes} bytes"
        )
        .into());
    }
    let batch = builder.build(0)?;
    Ok((batch, records))
}

/// Timings of one run.
struct RunResult {
    /// Appends and the final flush.
    append: Duration,
    /// Appends alone (before the final flush).
    append_writes: Duration,
    read: Duration,
    /// Writes and the final `sync_all`.
    raw: Duration,
    /// Writes alone.
    raw_writes: Duration,
}

fn mb_per_sec(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// Writes `batches` copies of `batch` to a scratch file without fsync and deletes it, so the
/// memory the timed phases will use as page cache has been touched once. Returns the time.
fn prefault(dir: &Path, batch: &Bytes, batches: u64) -> BoxResult<Duration> {
    let path = dir.join("prefault.bin");
    let start = Instant::now();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    for _ in 0..batches {
        file.write_all(batch)?;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(start.elapsed())
}

fn run(dir: &Path, config: &LogConfig, batch: &Bytes, batches: u64) -> BoxResult<RunResult> {
    let total = batches * batch.len() as u64;

    // 1. Append through the log, then flush once.
    let log_dir = dir.join("bench-0");
    let mut log = PartitionLog::open(&log_dir, config.clone())?;
    let start = Instant::now();
    for _ in 0..batches {
        log.append_as_leader(batch.clone(), 0)?;
    }
    let append_writes = start.elapsed();
    log.flush()?;
    let append = start.elapsed();
    if log.size_bytes() != total {
        return Err(format!("the log holds {} bytes, {total} expected", log.size_bytes()).into());
    }

    // 2. Read it all back from the page cache.
    let start = Instant::now();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut read_bytes = 0u64;
    while offset < end {
        let chunk = log.read(offset, READ_MAX_BYTES)?;
        if chunk.is_empty() {
            return Err(format!("empty read at offset {offset}, before the log end {end}").into());
        }
        let mut position = 0;
        while position < chunk.len() {
            let header = BatchHeader::parse(&chunk[position..])?;
            offset = header.next_offset();
            position += header.total_size();
        }
        read_bytes += chunk.len() as u64;
    }
    let read = start.elapsed();
    if read_bytes != total {
        return Err(format!("read {read_bytes} bytes back, {total} expected").into());
    }

    // 3. Drop the log and its pages before the raw writer starts.
    log.delete()?;

    // 4. The same bytes, raw.
    let raw_path = dir.join("raw.bin");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&raw_path)?;
    let start = Instant::now();
    for _ in 0..batches {
        file.write_all(batch)?;
    }
    let raw_writes = start.elapsed();
    file.sync_all()?;
    let raw = start.elapsed();
    drop(file);
    std::fs::remove_file(&raw_path)?;

    Ok(RunResult {
        append,
        append_writes,
        read,
        raw,
        raw_writes,
    })
}

/// Median of `values` (mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

fn main() -> BoxResult<()> {
    let args = Args::parse();
    let record_size = usize::try_from(args.record_size)?;
    let batch_bytes = usize::try_from(args.batch_bytes)?;

    let (batch, records_per_batch) = build_batch(record_size, batch_bytes)?;
    let batches = args.total_bytes.div_ceil(batch.len() as u64).max(1);
    let total = batches * batch.len() as u64;
    let records = batches * records_per_batch as u64;

    let mut config = LogConfig::default();
    if batch.len() > config.max_message_bytes {
        eprintln!(
            "raising max_message_bytes from {} to the batch size {}",
            config.max_message_bytes,
            batch.len()
        );
        config.max_message_bytes = batch.len();
    }

    let work_dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            tempfile::Builder::new()
                .prefix("log-bench-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("log-bench-").tempdir()?,
    };
    eprintln!(
        "log-bench: {batches} batches of {} bytes ({records_per_batch} records of {record_size} \
         bytes each), {total} bytes per run, {} run(s), in {}",
        batch.len(),
        args.runs,
        work_dir.path().display()
    );

    let mut append = Vec::new();
    let mut raw = Vec::new();
    let mut ratio = Vec::new();
    let mut read = Vec::new();
    for i in 1..=args.runs {
        if !args.no_prefault {
            let took = prefault(work_dir.path(), &batch, batches)?;
            eprintln!(
                "run {i}/{}: untimed warm-up wrote {total} bytes of page cache in {:.2} s",
                args.runs,
                took.as_secs_f64()
            );
        }
        let result = run(work_dir.path(), &config, &batch, batches)?;
        let a = mb_per_sec(total, result.append);
        let w = mb_per_sec(total, result.raw);
        let r = mb_per_sec(total, result.read);
        eprintln!(
            "run {i}/{}: append {a:.1} MB/s ({:.2} s: appends {:.3} s + flush {:.3} s), \
             raw write {w:.1} MB/s ({:.2} s: writes {:.3} s + sync {:.3} s), \
             ratio {:.3}, read {r:.1} MB/s ({:.2} s)",
            args.runs,
            result.append.as_secs_f64(),
            result.append_writes.as_secs_f64(),
            (result.append - result.append_writes).as_secs_f64(),
            result.raw.as_secs_f64(),
            result.raw_writes.as_secs_f64(),
            (result.raw - result.raw_writes).as_secs_f64(),
            a / w,
            result.read.as_secs_f64(),
        );
        append.push(a);
        raw.push(w);
        ratio.push(a / w);
        read.push(r);
    }
    work_dir.close()?;

    // Keys in a fixed order (serde_json's map would sort them).
    let fields: [(&str, serde_json::Value); 9] = [
        ("total_bytes", total.into()),
        ("record_size", record_size.into()),
        ("batch_bytes", batch_bytes.into()),
        ("records", records.into()),
        ("append_mb_per_sec", round_to(median(append), 1).into()),
        ("raw_write_mb_per_sec", round_to(median(raw), 1).into()),
        ("append_ratio", round_to(median(ratio), 3).into()),
        ("read_mb_per_sec", round_to(median(read), 1).into()),
        ("runs", args.runs.into()),
    ];
    let summary = fields
        .iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect::<Vec<_>>()
        .join(",");
    let summary = format!("{{{summary}}}");
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("1000000"), Ok(1_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("64kib"), Ok(65536));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1_000 B"), Ok(1000));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999TiB").is_err());
    }

    #[test]
    fn batch_fits() {
        let (batch, records) = build_batch(1024, 65536).expect("builds");
        assert!(batch.len() <= 65536);
        assert!(records > 60);
        assert!(build_batch(70_000, 65536).is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
