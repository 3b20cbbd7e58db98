//! The record batch: Kafka's RecordBatch v2 byte layout, encoder and decoder.
//!
//! Every batch Weir stores, replicates and serves has exactly these bytes, so a batch travels
//! from producer to disk to follower to consumer without being re-encoded, and compressed
//! batches stay compressed. All integers in the header are big-endian.
//!
//! ```text
//! offset size field                 meaning
//!      0    8 baseOffset            offset of the first record; assigned by the leader
//!      8    4 batchLength           bytes that follow this field (total size - 12)
//!     12    4 partitionLeaderEpoch  leader epoch of the leader that appended it
//!     16    1 magic                 always 2
//!     17    4 crc                   CRC-32C (Castagnoli) of bytes 21..end
//!     21    2 attributes            bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4,
//!                                   4 zstd), bit 3 timestamp type (0 create, 1 log append),
//!                                   bit 4 transactional, bit 5 control batch,
//!                                   bit 6 has delete-horizon
//!     23    4 lastOffsetDelta       offset of the last record minus baseOffset
//!     27    8 baseTimestamp         timestamp of the first record (ms)
//!     35    8 maxTimestamp          largest record timestamp (ms); with log-append time, the
//!                                   broker's clock, and every record's timestamp
//!     43    8 producerId            idempotent producer id, -1 when none
//!     51    2 producerEpoch         producer epoch, -1 when none
//!     53    4 baseSequence          sequence number of the first record, -1 when none
//!     57    4 recordsCount          number of records
//!     61    … records               compressed as one blob when the codec is not none
//! ```
//!
//! Because the CRC starts at `attributes`, the leader can rewrite `baseOffset` and
//! `partitionLeaderEpoch` (and the length, which it never needs to) without touching the CRC.
//!
//! Each record inside uses zig-zag varints (see [`crate::varint`]):
//!
//! ```text
//! length          varint   bytes of the record after this field
//! attributes      int8     unused, 0
//! timestampDelta  varlong  timestamp - baseTimestamp
//! offsetDelta     varint   offset - baseOffset
//! keyLength       varint   -1 for a null key
//! key             bytes
//! valueLength     varint   -1 for a null value
//! value           bytes
//! headersCount    varint
//! headers         for each: keyLength varint, key (UTF-8), valueLength varint (-1 null), value
//! ```

use bytes::{Buf, Bytes};

use crate::compression::{self, Compression, CompressionError};
use crate::varint::{self, Reader};

/// The only record batch format Weir speaks.
pub const MAGIC: i8 = 2;
/// Size of the fixed batch header, up to the first record.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` plus `batchLength`: the bytes that precede what `batchLength` counts.
pub const LOG_OVERHEAD: usize = 12;
/// Largest base offset a batch (or a segment) may have: far beyond any real log, and far
/// enough below `i64::MAX` that offset arithmetic (base + lastOffsetDelta + 1) cannot wrap.
pub const MAX_OFFSET: i64 = 1 << 62;
/// The smallest legal `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// Limit on the decompressed size of one batch's records, against decompression bombs.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 * 1024 * 1024;
/// `producerId` / `producerEpoch` / `baseSequence` of a batch from a producer without ids.
pub const NO_PRODUCER_ID: i64 = -1;

const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES: usize = 21;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why a batch was rejected. Every variant means "these bytes are not a valid batch"; none of
/// them is raised for a batch Weir wrote itself unless the disk damaged it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// Fewer bytes than the header or the length field promises.
    #[error("record batch is truncated: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the batch claims to need.
        needed: usize,
        /// Bytes that are there.
        available: usize,
    },
    /// The length field is negative, smaller than a header, or larger than allowed.
    #[error("record batch length {0} is invalid")]
    InvalidLength(i64),
    /// The base offset is negative or past [`MAX_OFFSET`].
    #[error("record batch base offset {0} is outside [0, 2^62]")]
    InvalidOffset(i64),
    /// The magic byte is not 2.
    #[error("record batch magic {0} is not supported (only magic 2)")]
    UnsupportedMagic(i8),
    /// The stored CRC-32C does not match the bytes.
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// `recordsCount` or `lastOffsetDelta` is inconsistent.
    #[error("record batch counts are inconsistent: {0}")]
    InvalidCount(&'static str),
    /// A record inside the batch is malformed.
    #[error("malformed record: {0}")]
    MalformedRecord(&'static str),
    /// The records could not be (de)compressed.
    #[error("record batch compression: {0}")]
    Compression(String),
}

impl From<CompressionError> for BatchError {
    fn from(err: CompressionError) -> Self {
        BatchError::Compression(err.to_string())
    }
}

/// How a batch's timestamps were assigned (attributes bit 3); also the topic config
/// `message.timestamp.type`.
pub use weir_common::topic_config::TimestampType;

/// One header of a record: a string key and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header key.
    pub key: String,
    /// Header value; `None` is a null value, distinct from empty.
    pub value: Option<Bytes>,
}

/// A record as producers write it and consumers read it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Absolute offset. Ignored by [`BatchBuilder`]; set when decoding a stored batch.
    pub offset: i64,
    /// Timestamp in milliseconds since the epoch.
    pub timestamp: i64,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone under compaction).
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

/// The fixed header of a batch, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record.
    pub base_offset: i64,
    /// Bytes after the length field.
    pub batch_length: i32,
    /// Epoch of the leader that appended the batch.
    pub partition_leader_epoch: i32,
    /// Raw attributes.
    pub attributes: i16,
    /// Stored CRC-32C.
    pub crc: u32,
    /// Last offset minus base offset.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Producer id, or -1.
    pub producer_id: i64,
    /// Producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

fn be_i64(buf: &[u8], at: usize) -> i64 {
    (&buf[at..at + 8]).get_i64()
}
fn be_i32(buf: &[u8], at: usize) -> i32 {
    (&buf[at..at + 4]).get_i32()
}
fn be_i16(buf: &[u8], at: usize) -> i16 {
    (&buf[at..at + 2]).get_i16()
}

impl BatchHeader {
    /// Parses the header at the start of `buf`, checking magic and that the length field is
    /// sane (at least a header, at most `i32::MAX`). It does not check that the whole batch is
    /// present nor its CRC: see [`validate`].
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(BatchError::InvalidLength(batch_length.into()));
        }
        let base_offset = be_i64(buf, 0);
        if !(0..=MAX_OFFSET).contains(&base_offset) {
            return Err(BatchError::InvalidOffset(base_offset));
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != MAGIC {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        Ok(Self {
            base_offset: be_i64(buf, 0),
            batch_length,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            crc: (&buf[CRC_AT..CRC_AT + 4]).get_u32(),
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, 43),
            producer_epoch: be_i16(buf, 51),
            base_sequence: be_i32(buf, 53),
            records_count: be_i32(buf, 57),
        })
    }

    /// Total bytes of the batch, header included.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The offset after the last record.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// The compression codec of the records.
    pub fn compression(&self) -> Result<Compression, BatchError> {
        Ok(Compression::from_id(self.attributes & COMPRESSION_MASK)?)
    }

    /// Who assigned the timestamps.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds control records (transaction markers).
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Validates the batch at the start of `buf`: header, length (all of it present, at most
/// `max_size` bytes), magic, CRC, and record counts. Returns the header; bytes after the batch
/// are not looked at.
pub fn validate(buf: &[u8], max_size: usize) -> Result<BatchHeader, BatchError> {
    if buf.len() >= LOG_OVERHEAD {
        let length = be_i32(buf, 8);
        let too_large =
            usize::try_from(length).is_ok_and(|l| l.saturating_add(LOG_OVERHEAD) > max_size);
        if too_large {
            return Err(BatchError::InvalidLength(length.into()));
        }
    }
    let header = BatchHeader::parse(buf)?;
    let size = header.total_size();
    if buf.len() < size {
        return Err(BatchError::Truncated {
            needed: size,
            available: buf.len(),
        });
    }
    let computed = crc32c::crc32c(&buf[ATTRIBUTES..size]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0 {
        return Err(BatchError::InvalidCount("negative record count"));
    }
    if header.last_offset_delta < 0 || header.last_offset_delta < header.records_count - 1 {
        return Err(BatchError::InvalidCount(
            "lastOffsetDelta is smaller than the record count",
        ));
    }
    Ok(header)
}

/// Checks every record of a produced batch, as Kafka's LogValidator does before an append:
/// the body (decompressed first, at most `max_decompressed` bytes) holds exactly `recordsCount`
/// records, each of which decodes whole — attributes, timestamp and offset deltas, key, value,
/// headers, nothing left over — with offset deltas 0, 1, 2, … as a producer writes them. A
/// batch that passes can be decoded by every consumer; one that does not (a compressed body of
/// one byte, a record that is only its attributes byte, a count that lies) is refused before it
/// reaches the log. Walks the records without building them.
///
/// Returns the smallest and largest record timestamp (`None` for an empty batch).
pub fn check_records(
    batch: &[u8],
    header: &BatchHeader,
    max_decompressed: usize,
) -> Result<Option<(i64, i64)>, BatchError> {
    let body = &batch[HEADER_LEN..header.total_size()];
    let decompressed;
    let body = match header.compression()? {
        Compression::None => body,
        codec => {
            decompressed = compression::decompress(codec, body, max_decompressed)?;
            &decompressed[..]
        }
    };
    let mut reader = Reader::new(body);
    let mut timestamps: Option<(i64, i64)> = None;
    for expected_delta in 0..header.records_count {
        let len = reader.varint()?;
        let len = usize::try_from(len)
            .map_err(|_| BatchError::MalformedRecord("negative record length"))?;
        let range = reader.skip(len)?;
        let mut record = Reader::new(&body[range]);
        record.byte()?;
        let timestamp = header
            .base_timestamp
            .checked_add(record.varlong()?)
            .ok_or(BatchError::MalformedRecord("timestamp delta overflows"))?;
        timestamps = Some(match timestamps {
            None => (timestamp, timestamp),
            Some((lo, hi)) => (lo.min(timestamp), hi.max(timestamp)),
        });
        if record.varint()? != expected_delta {
            return Err(BatchError::MalformedRecord(
                "offset deltas are not 0, 1, 2, ... in a produced batch",
            ));
        }
        skip_nullable(&mut record)?;
        skip_nullable(&mut record)?;
        let headers = record.varint()?;
        if headers < 0 {
            return Err(BatchError::MalformedRecord("negative header count"));
        }
        for _ in 0..headers {
            let key = record.varint()?;
            let key = usize::try_from(key)
                .map_err(|_| BatchError::MalformedRecord("negative header key length"))?;
            record.skip(key)?;
            skip_nullable(&mut record)?;
        }
        if record.remaining() != 0 {
            return Err(BatchError::MalformedRecord(
                "a record's length does not match its fields",
            ));
        }
    }
    if reader.remaining() != 0 {
        return Err(BatchError::InvalidCount(
            "records do not fill the batch exactly",
        ));
    }
    Ok(timestamps)
}

fn skip_nullable(reader: &mut Reader<'_>) -> Result<(), BatchError> {
    let len = reader.varint()?;
    if len == -1 {
        return Ok(());
    }
    let len = usize::try_from(len).map_err(|_| BatchError::MalformedRecord("negative length"))?;
    reader.skip(len)?;
    Ok(())
}

/// Rewrites the fields the CRC does not cover: the base offset and the partition leader epoch.
/// `header` must hold at least the first 16 bytes of a batch.
pub fn set_base_offset_and_epoch(header: &mut [u8], base_offset: i64, leader_epoch: i32) {
    header[0..8].copy_from_slice(&base_offset.to_be_bytes());
    header[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Writes the CRC-32C of a whole batch (over everything after the CRC field) into it.
fn seal(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stamps a whole batch with log-append time: sets the timestamp-type bit and `maxTimestamp`
/// to `now_ms` and recomputes the CRC (both fields are covered by it).
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    seal(batch);
}

/// Sets an idempotent producer's id, epoch and base sequence in a whole encoded batch and
/// recomputes the CRC (the fields are covered by it). A producer stamps a batch this way when
/// it first sends it, so sequences follow send order, not encoding order.
pub fn set_producer(batch: &mut [u8], producer_id: i64, producer_epoch: i16, base_sequence: i32) {
    batch[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_ID + 8..PRODUCER_ID + 10].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[PRODUCER_ID + 10..PRODUCER_ID + 14].copy_from_slice(&base_sequence.to_be_bytes());
    seal(batch);
}

/// The records of a batch re-encoded with `codec` at `level`, keeping its producer id, epoch,
/// base sequence and transactional bit (what Kafka's LogValidator does for a topic whose
/// `compression.type` names a codec). The body is decompressed once, at most
/// `max_decompressed` bytes, and records are re-encoded one at a time, so the memory it takes
/// is the decompressed body and the new batch. Offsets are relative as before; the base offset
/// is 0 and the leader epoch -1 until the leader assigns them. Control batches are refused.
pub fn recompress(
    batch: &Bytes,
    codec: Compression,
    level: Option<i32>,
    max_decompressed: usize,
) -> Result<Bytes, BatchError> {
    let decoded = RecordBatch::decode(batch.clone())?;
    let h = *decoded.header();
    if h.is_control() {
        return Err(BatchError::MalformedRecord(
            "a control batch cannot be recompressed",
        ));
    }
    let mut builder = BatchBuilder::new(codec)
        .level(level)
        .producer(h.producer_id, h.producer_epoch, h.base_sequence)
        .transactional(h.is_transactional());
    let body = decoded.body(max_decompressed)?;
    decoded.each_record(&body, |record| {
        builder.push(&record);
        Ok(())
    })?;
    builder.build(0)
}

/// A validated batch that owns its bytes.
#[derive(Debug, Clone)]
pub struct RecordBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RecordBatch {
    /// Takes the first batch off the front of `buf` after [`validate`] (with no size limit
    /// beyond `i32`), leaving `buf` at the next batch.
    pub fn split_from(buf: &mut Bytes) -> Result<Self, BatchError> {
        let header = validate(buf, usize::MAX)?;
        let bytes = buf.split_to(header.total_size());
        Ok(Self { header, bytes })
    }

    /// Validates `bytes` as exactly one batch.
    pub fn decode(mut bytes: Bytes) -> Result<Self, BatchError> {
        let batch = Self::split_from(&mut bytes)?;
        if !bytes.is_empty() {
            return Err(BatchError::InvalidLength(batch.bytes.len() as i64));
        }
        Ok(batch)
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch's bytes, exactly as stored.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives the bytes back.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Decodes every record, decompressing first when the batch is compressed. Keys, values and
    /// header values of an uncompressed batch are slices of the batch's bytes, not copies.
    pub fn records(&self) -> Result<Vec<Record>, BatchError> {
        let body = self.body(MAX_DECOMPRESSED_BYTES)?;
        // Each record takes at least 7 bytes, which bounds what a lying count can allocate.
        let capacity = (self.header.records_count as usize).min(body.len() / 7 + 1);
        let mut records = Vec::with_capacity(capacity);
        self.each_record(&body, |r| {
            records.push(r);
            Ok(())
        })?;
        Ok(records)
    }

    /// The records' bytes, decompressed (at most `limit` bytes).
    fn body(&self, limit: usize) -> Result<Bytes, BatchError> {
        let body = self.bytes.slice(HEADER_LEN..);
        Ok(match self.header.compression()? {
            Compression::None => body,
            codec => Bytes::from(compression::decompress(codec, &body, limit)?),
        })
    }

    /// Calls `f` with each record of `body` (the batch's records, decompressed), in order,
    /// holding one at a time.
    fn each_record(
        &self,
        body: &Bytes,
        mut f: impl FnMut(Record) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        let header = &self.header;
        let log_append_time = header.timestamp_type() == TimestampType::LogAppendTime;
        let mut reader = Reader::new(body);
        for _ in 0..header.records_count {
            let len = reader.varint()?;
            let len = usize::try_from(len)
                .map_err(|_| BatchError::MalformedRecord("negative record length"))?;
            let range = reader.skip(len)?;
            let mut record = decode_record(body.slice(range), header)?;
            if log_append_time {
                record.timestamp = header.max_timestamp;
            }
            f(record)?;
        }
        if reader.remaining() != 0 {
            return Err(BatchError::InvalidCount(
                "records do not fill the batch exactly",
            ));
        }
        Ok(())
    }
}

/// Decodes one record's body (after its length prefix).
fn decode_record(body: Bytes, header: &BatchHeader) -> Result<Record, BatchError> {
    let mut reader = Reader::new(&body);
    let _attributes = reader.byte()?;
    let timestamp_delta = reader.varlong()?;
    let offset_delta = reader.varint()?;
    if offset_delta < 0 || offset_delta > header.last_offset_delta {
        return Err(BatchError::MalformedRecord(
            "offset delta outside the batch",
        ));
    }
    let key = nullable_bytes(&mut reader, &body)?;
    let value = nullable_bytes(&mut reader, &body)?;
    let count = reader.varint()?;
    let count =
        usize::try_from(count).map_err(|_| BatchError::MalformedRecord("negative header count"))?;
    let mut headers = Vec::with_capacity(count.min(reader.remaining() / 2 + 1));
    for _ in 0..count {
        let key_len = reader.varint()?;
        let key_len = usize::try_from(key_len)
            .map_err(|_| BatchError::MalformedRecord("negative header key length"))?;
        let key_range = reader.skip(key_len)?;
        let key = std::str::from_utf8(&body[key_range])
            .map_err(|_| BatchError::MalformedRecord("header key is not UTF-8"))?
            .to_owned();
        let value = nullable_bytes(&mut reader, &body)?;
        headers.push(Header { key, value });
    }
    if reader.remaining() != 0 {
        return Err(BatchError::MalformedRecord(
            "record length does not match its fields",
        ));
    }
    Ok(Record {
        offset: header.base_offset + i64::from(offset_delta),
        timestamp: header.base_timestamp.wrapping_add(timestamp_delta),
        key,
        value,
        headers,
    })
}

fn nullable_bytes(reader: &mut Reader<'_>, body: &Bytes) -> Result<Option<Bytes>, BatchError> {
    let len = reader.varint()?;
    if len == -1 {
        return Ok(None);
    }
    let len = usize::try_from(len).map_err(|_| BatchError::MalformedRecord("negative length"))?;
    let range = reader.skip(len)?;
    Ok(Some(body.slice(range)))
}

/// Iterates the batches in a buffer of whole batches (what a log read returns), validating
/// each. Stops at the first error.
pub struct Batches {
    buf: Bytes,
    failed: bool,
}

impl Batches {
    /// Iterates the batches in `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, failed: false }
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() || self.failed {
            return None;
        }
        let result = RecordBatch::split_from(&mut self.buf);
        self.failed = result.is_err();
        Some(result)
    }
}

/// Builds one batch from records: what a producer does once per batch.
///
/// Records are encoded as they are pushed; [`BatchBuilder::build`] compresses them once,
/// writes the header and computes the CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    compression: Compression,
    level: Option<i32>,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    base_timestamp: i64,
    max_timestamp: i64,
    count: i32,
    records: Vec<u8>,
}

impl BatchBuilder {
    /// An empty batch whose records will be compressed with `compression`.
    pub fn new(compression: Compression) -> Self {
        Self {
            compression,
            level: None,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            base_timestamp: -1,
            max_timestamp: -1,
            count: 0,
            records: Vec::new(),
        }
    }

    /// Compresses at `level` instead of the codec's default (see
    /// [`compression::level_range`]; a level the codec does not take fails [`Self::build`]).
    pub fn level(mut self, level: Option<i32>) -> Self {
        self.level = level;
        self
    }

    /// Sets the idempotent producer's id, epoch and the sequence of the first record.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction.
    pub fn transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch if built now without compression.
    pub fn uncompressed_size(&self) -> usize {
        HEADER_LEN + self.records.len()
    }

    /// Encodes and appends one record; its `offset` field is ignored (the record's position in
    /// the batch is its offset delta).
    pub fn push(&mut self, record: &Record) {
        self.push_parts(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
    }

    /// Like [`BatchBuilder::push`], from borrowed parts.
    pub fn push_parts(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;

        let field_len = |b: Option<&[u8]>| match b {
            Some(b) => varint::varint_len(b.len() as i32) + b.len(),
            None => 1,
        };
        let mut body_len = 1
            + varint::varlong_len(timestamp_delta)
            + varint::varint_len(offset_delta)
            + field_len(key)
            + field_len(value)
            + varint::varint_len(headers.len() as i32);
        for h in headers {
            body_len += field_len(Some(h.key.as_bytes())) + field_len(h.value.as_deref());
        }

        let out = &mut self.records;
        out.reserve(body_len + 5);
        varint::put_varint(out, body_len as i32);
        out.push(0);
        varint::put_varlong(out, timestamp_delta);
        varint::put_varint(out, offset_delta);
        put_nullable(out, key);
        put_nullable(out, value);
        varint::put_varint(out, headers.len() as i32);
        for h in headers {
            put_nullable(out, Some(h.key.as_bytes()));
            put_nullable(out, h.value.as_deref());
        }
        self.count += 1;
    }

    /// Finishes the batch with `base_offset` (producers send 0; the leader assigns the real one)
    /// and leader epoch -1.
    pub fn build(self, base_offset: i64) -> Result<Bytes, BatchError> {
        let mut out = self.build_unsealed(base_offset)?;
        seal(&mut out);
        Ok(Bytes::from(out))
    }

    /// [`Self::build`] without the CRC (left 0), for a batch whose producer fields are set
    /// later by [`set_producer`], which computes it: the idempotent producer stamps a batch
    /// when it first sends it, and the CRC is then computed once, not twice.
    pub fn build_unsealed(self, base_offset: i64) -> Result<Vec<u8>, BatchError> {
        let mut attributes = self.compression.id();
        if self.transactional {
            attributes |= TRANSACTIONAL_BIT;
        }
        let mut out = Vec::with_capacity(HEADER_LEN + self.records.len());
        out.extend_from_slice(&base_offset.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // length, filled below
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(MAGIC as u8);
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        out.extend_from_slice(&attributes.to_be_bytes());
        out.extend_from_slice(&(self.count - 1).max(0).to_be_bytes());
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        compression::compress_at(self.compression, self.level, &self.records, &mut out)?;

        let length = i32::try_from(out.len() - LOG_OVERHEAD)
            .map_err(|_| BatchError::InvalidLength(out.len() as i64))?;
        out[8..12].copy_from_slice(&length.to_be_bytes());
        Ok(out)
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            varint::put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => varint::put_varint(out, -1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                offset: 0,
                timestamp: 1_700_000_000_000 + i as i64,
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: Some(Bytes::from(vec![i as u8; i * 7])),
                headers: vec![Header {
                    key: "h".into(),
                    value: (i % 2 == 0).then(|| Bytes::from_static(b"v")),
                }],
            })
            .collect()
    }

    fn build(records: &[Record], codec: Compression, base: i64) -> Bytes {
        let mut b = BatchBuilder::new(codec);
        for r in records {
            b.push(r);
        }
        b.build(base).unwrap()
    }

    #[test]
    fn encodes_and_decodes_every_codec() {
        let records = sample(50);
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let bytes = build(&records, codec, 100);
            let batch = RecordBatch::decode(bytes).unwrap();
            assert_eq!(batch.header().compression().unwrap(), codec);
            assert_eq!(batch.header().base_offset, 100);
            assert_eq!(batch.header().last_offset(), 149);
            assert_eq!(batch.header().max_timestamp, 1_700_000_000_049);
            let decoded = batch.records().unwrap();
            for (i, (got, want)) in decoded.iter().zip(&records).enumerate() {
                assert_eq!(got.offset, 100 + i as i64);
                assert_eq!(got.timestamp, want.timestamp);
                assert_eq!(got.key, want.key);
                assert_eq!(got.value, want.value);
                assert_eq!(got.headers, want.headers);
            }
            assert_eq!(decoded.len(), 50);
        }
    }

    #[test]
    fn header_fields_sit_where_kafka_puts_them() {
        let bytes = BatchBuilder::new(Compression::None)
            .producer(7, 3, 42)
            .transactional(true)
            .clone();
        let mut b = bytes;
        b.push_parts(5, Some(b"k"), Some(b"v"), &[]);
        let buf = b.build(9).unwrap();
        assert_eq!(&buf[0..8], &9i64.to_be_bytes());
        assert_eq!(be_i32(&buf, 8) as usize, buf.len() - 12);
        assert_eq!(buf[16], 2);
        assert_eq!(be_i64(&buf, 43), 7);
        assert_eq!(be_i16(&buf, 51), 3);
        assert_eq!(be_i32(&buf, 53), 42);
        assert_eq!(be_i32(&buf, 57), 1);
        let header = BatchHeader::parse(&buf).unwrap();
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(crc32c::crc32c(&buf[21..]), header.crc);
    }

    #[test]
    fn rewriting_offset_and_epoch_keeps_the_crc_valid() {
        let bytes = build(&sample(3), Compression::None, 0);
        let mut buf = bytes.to_vec();
        set_base_offset_and_epoch(&mut buf, 1234, 9);
        let batch = RecordBatch::decode(Bytes::from(buf)).unwrap();
        assert_eq!(batch.header().base_offset, 1234);
        assert_eq!(batch.header().partition_leader_epoch, 9);
        assert_eq!(batch.records().unwrap()[2].offset, 1236);
    }

    #[test]
    fn log_append_time_applies_to_every_record() {
        let mut buf = build(&sample(3), Compression::Lz4, 0).to_vec();
        set_log_append_time(&mut buf, 42);
        let batch = RecordBatch::decode(Bytes::from(buf)).unwrap();
        assert_eq!(
            batch.header().timestamp_type(),
            TimestampType::LogAppendTime
        );
        assert!(batch.records().unwrap().iter().all(|r| r.timestamp == 42));
    }

    #[test]
    fn bad_bytes_get_typed_errors() {
        let good = build(&sample(4), Compression::None, 0);
        // Truncated.
        assert!(matches!(
            validate(&good[..good.len() - 1], usize::MAX),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&good[..30], usize::MAX),
            Err(BatchError::Truncated { .. })
        ));
        // Flipped payload byte.
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            validate(&bad, usize::MAX),
            Err(BatchError::CrcMismatch { .. })
        ));
        // Length of 2^31 - 1 and a negative length.
        let mut bad = good.to_vec();
        bad[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            validate(&bad, 1 << 20),
            Err(BatchError::InvalidLength(_))
        ));
        assert!(matches!(
            validate(&bad, usize::MAX),
            Err(BatchError::Truncated { .. })
        ));
        bad[8..12].copy_from_slice(&i32::MIN.to_be_bytes());
        assert!(matches!(
            validate(&bad, usize::MAX),
            Err(BatchError::InvalidLength(_))
        ));
        // Magic.
        let mut bad = good.to_vec();
        bad[16] = 1;
        assert_eq!(
            validate(&bad, usize::MAX),
            Err(BatchError::UnsupportedMagic(1))
        );
        // Too large for the limit.
        assert!(matches!(
            validate(&good, 64),
            Err(BatchError::InvalidLength(_))
        ));
    }

    #[test]
    fn lying_record_lengths_are_caught_despite_a_valid_crc() {
        let good = build(&sample(4), Compression::None, 0);
        let mut bad = good.to_vec();
        // The first record's length varint sits right after the header; make it lie.
        bad[HEADER_LEN] = bad[HEADER_LEN].wrapping_add(2);
        let crc = crc32c::crc32c(&bad[21..]);
        bad[17..21].copy_from_slice(&crc.to_be_bytes());
        let header = validate(&bad, usize::MAX).unwrap();
        assert!(check_records(&bad, &header, usize::MAX).is_err());
        assert!(RecordBatch::decode(Bytes::from(bad))
            .unwrap()
            .records()
            .is_err());
        let header = validate(&good, usize::MAX).unwrap();
        check_records(&good, &header, usize::MAX).unwrap();
    }

    use crate::fuzz::reframe;

    fn checked(batch: &[u8], max_decompressed: usize) -> Result<(), BatchError> {
        let header = validate(batch, usize::MAX)?;
        check_records(batch, &header, max_decompressed).map(|_| ())
    }

    #[test]
    fn poison_batches_are_refused_before_the_log() {
        // A compressed batch whose body is one byte: the CRC and counts are right, the body is
        // not a zstd frame.
        let zstd = build(&sample(3), Compression::Zstd, 0);
        checked(&zstd, 1 << 20).unwrap();
        assert!(checked(&reframe(&zstd, &[0x28], 3), 1 << 20).is_err());
        // An uncompressed record that is only its attributes byte (length 1, body 0x00).
        let plain = build(&sample(1), Compression::None, 0);
        checked(&plain, usize::MAX).unwrap();
        assert!(checked(&reframe(&plain, &[0x02, 0x00], 1), usize::MAX).is_err());
        // A count that lies about a compressed body (2^31 - 1 records claimed, 3 present).
        let body = &zstd[HEADER_LEN..];
        assert!(checked(&reframe(&zstd, body, i32::MAX), 1 << 20).is_err());
        // Offset deltas that are not 0, 1, 2: two records both at delta 0.
        let one = build(&sample(1), Compression::None, 0);
        let record = &one[HEADER_LEN..];
        let twice = [record, record].concat();
        assert!(matches!(
            checked(&reframe(&one, &twice, 2), usize::MAX),
            Err(BatchError::MalformedRecord(_))
        ));
    }

    #[test]
    fn a_compressed_batch_may_not_decompress_past_the_bound() {
        let mut b = BatchBuilder::new(Compression::Zstd);
        b.push(&Record {
            value: Some(Bytes::from(vec![0u8; 4 << 20])),
            ..Record::default()
        });
        let bomb = b.build(0).unwrap();
        assert!(bomb.len() < 4096, "{} bytes", bomb.len());
        assert!(
            checked(&bomb, 1 << 20).is_err(),
            "4 MiB of zeros passed a 1 MiB bound"
        );
        checked(&bomb, 8 << 20).unwrap();
    }

    #[test]
    fn iterates_concatenated_batches() {
        let mut all = Vec::new();
        all.extend_from_slice(&build(&sample(2), Compression::None, 0));
        all.extend_from_slice(&build(&sample(3), Compression::Zstd, 2));
        let batches: Vec<_> = Batches::new(Bytes::from(all))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].header().base_offset, 2);
        assert_eq!(batches[1].records().unwrap().len(), 3);
    }
}
