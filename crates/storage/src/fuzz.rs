//! Entry points for the fuzz targets in `fuzz/` (and their corpus replay in
//! `tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must not panic, allocate without
//! bound, or leave behind a log that cannot be opened again.

use bytes::Bytes;

use crate::batch::{self, Batches, RecordBatch};
use crate::{LogConfig, PartitionLog};

/// `good`'s header (the first [`batch::HEADER_LEN`] bytes of a valid batch) over `body`,
/// claiming `count` records, with its length, `lastOffsetDelta` and CRC made consistent: a
/// batch that passes the header checks whatever its body holds. For fuzz seeds and tests of
/// the record checks.
pub fn reframe(good: &[u8], body: &[u8], count: i32) -> Vec<u8> {
    let mut out = good[..batch::HEADER_LEN].to_vec();
    out.extend_from_slice(body);
    let length = (out.len() - batch::LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    out[57..61].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decompressed-size bound used by [`batch`]: the produce path's default (8 × max.message.bytes).
const MAX_DECOMPRESSED: usize = 8 << 20;

/// `data` as a produced batch: validation, the record check, full decoding, and iteration as
/// a log read returns batches.
pub fn batch(data: &[u8]) {
    if let Ok(header) = batch::validate(data, usize::MAX) {
        let _ = batch::check_records(data, &header, MAX_DECOMPRESSED);
        let _ = header.compression();
        let _ = header.next_offset();
    }
    if let Ok(decoded) = RecordBatch::decode(Bytes::copy_from_slice(data)) {
        let _ = decoded.records();
    }
    for item in Batches::new(Bytes::copy_from_slice(data)).take(1024) {
        if item.is_err() {
            break;
        }
    }
}

/// `data` as the only segment of a partition log in the empty directory `dir`, after a crash:
/// recovery, a full read, an append as leader, a clean close, and a second open that must
/// succeed with the same log end.
pub fn recovery(data: &[u8], dir: &std::path::Path) {
    if std::fs::write(dir.join(format!("{:020}.log", 0)), data).is_err() {
        return;
    }
    let config = LogConfig {
        preallocate_bytes: 0,
        ..LogConfig::default()
    };
    let Ok(mut log) = PartitionLog::open(dir, config.clone()) else {
        return;
    };
    let mut offset = log.log_start_offset();
    for _ in 0..1024 {
        if offset >= log.log_end_offset() {
            break;
        }
        let Ok(bytes) = log.read(offset, 1 << 20) else {
            break;
        };
        let next = Batches::new(bytes)
            .map_while(Result::ok)
            .last()
            .map(|b| b.header().next_offset());
        match next {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    let mut b = batch::BatchBuilder::new(crate::Compression::None);
    b.push(&batch::Record {
        value: Some(Bytes::from_static(b"after recovery")),
        ..batch::Record::default()
    });
    if let Ok(appended) = b.build(0) {
        let _ = log.append_as_leader(appended, 0);
    }
    let end = log.log_end_offset();
    if log.close().is_ok() {
        let reopened = PartitionLog::open(dir, config).expect("a cleanly closed log reopens");
        assert_eq!(
            reopened.log_end_offset(),
            end,
            "the log end moved across a clean reopen"
        );
    }
}
