//! Criterion benchmarks of the RecordBatch v2 codec: what a producer pays to encode a batch,
//! a consumer to decode it, and the leader to CRC-check it on append.
//!
//! ```text
//! cargo bench -p weir-storage --bench codec
//! ```
//!
//! - `encode/{none,lz4}`: [`BatchBuilder`] with 640 records of 100 bytes (no key, no headers).
//!   Throughput is the uncompressed batch size.
//! - `decode/{none,lz4}`: [`RecordBatch::decode`] (which checks the CRC) then
//!   [`RecordBatch::records`] on that batch. Throughput is the uncompressed batch size.
//! - `validate/64KiB`: [`batch::validate`] (header checks and CRC) of an uncompressed batch of
//!   just under 64 KiB (63 records of 1 KiB).
//! - `crc32c/64KiB`: raw `crc32c::crc32c` over 64 KiB, the floor for `validate`.
//!
//! Record values look like small JSON events (compressible, as real payloads usually are).
//! Measurement is kept short (3 s, 20 samples) so the whole run takes well under two minutes.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use weir_storage::{batch, BatchBuilder, Compression, RecordBatch};

const RECORDS: usize = 640;
const RECORD_SIZE: usize = 100;
const TIMESTAMP: i64 = 1_700_000_000_000;

/// Values of `size` bytes that look like small JSON events.
fn values(count: usize, size: usize) -> Vec<Vec<u8>> {
    const EVENTS: [&str; 4] = ["click", "view", "purchase", "scroll"];
    (0..count)
        .map(|i| {
            let mut v = format!(
                r#"{{"id":{i},"user":"user-{:05}","event":"{}","page":"/item/{}","#,
                (i * 7919) % 100_000,
                EVENTS[i % EVENTS.len()],
                (i * 31) % 1000
            )
            .into_bytes();
            v.resize(size, b' ');
            v
        })
        .collect()
}

fn build(values: &[Vec<u8>], compression: Compression) -> Bytes {
    let mut builder = BatchBuilder::new(compression);
    for (i, v) in values.iter().enumerate() {
        builder.push_parts(TIMESTAMP + i as i64, None, Some(v), &[]);
    }
    match builder.build(0) {
        Ok(bytes) => bytes,
        Err(e) => panic!("building the batch failed: {e}"),
    }
}

fn codec(c: &mut Criterion) {
    let small = values(RECORDS, RECORD_SIZE);
    let uncompressed_len = build(&small, Compression::None).len() as u64;

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(uncompressed_len));
    for (name, codec) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        group.bench_function(name, |b| b.iter(|| build(black_box(&small), codec)));
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(uncompressed_len));
    for (name, codec) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let bytes = build(&small, codec);
        eprintln!("decode/{name}: batch of {} bytes", bytes.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                let batch = RecordBatch::decode(black_box(bytes.clone()));
                batch.and_then(|batch| batch.records())
            })
        });
    }
    group.finish();

    let large = values(63, 1024);
    let big = build(&large, Compression::None);
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("64KiB", |b| {
        b.iter(|| batch::validate(black_box(&big), usize::MAX))
    });
    group.finish();

    // The produce-time record walk (batch::check_records), on the same 64 KiB batch of 1 KiB
    // records and on the batch of small records above: what the LogValidator-style check costs
    // next to the CRC.
    let header = batch::validate(&big, usize::MAX).expect("a valid batch");
    let mut group = c.benchmark_group("check_records");
    group.throughput(Throughput::Bytes(big.len() as u64));
    group.bench_function("64KiB-1KiB-records", |b| {
        b.iter(|| batch::check_records(black_box(&big), &header, usize::MAX))
    });
    let plain = build(&small, Compression::None);
    let small_header = batch::validate(&plain, usize::MAX).expect("a valid batch");
    group.throughput(Throughput::Bytes(plain.len() as u64));
    group.bench_function("small-records", |b| {
        b.iter(|| batch::check_records(black_box(&plain), &small_header, usize::MAX))
    });
    group.finish();

    let buf: Vec<u8> = (0..64 * 1024).map(|i| (i * 131 % 251) as u8).collect();
    let mut group = c.benchmark_group("crc32c");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("64KiB", |b| b.iter(|| crc32c::crc32c(black_box(&buf))));
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    codec(&mut criterion);
    criterion.final_summary();
}
