//! Compression codecs for Kafka RecordBatch v2.
//!
//! In a v2 record batch the whole `records` section is compressed as one blob, and the codec
//! is recorded in bits 0-2 of the batch `attributes` (an `i16`):
//!
//! | id | codec  | wire format                                                          |
//! |----|--------|----------------------------------------------------------------------|
//! | 0  | none   | records as is                                                        |
//! | 1  | gzip   | gzip (RFC 1952) stream; concatenated members are accepted            |
//! | 2  | snappy | xerial-snappy framing (what the Java client writes), see below       |
//! | 3  | lz4    | LZ4 frame format (KIP-57), independent 64 KiB blocks                 |
//! | 4  | zstd   | zstd streaming format (one or more frames), level 3 when compressing |
//!
//! Ids 5..=7 are unknown and rejected.
//!
//! # Snappy framing
//!
//! Kafka's Java client writes snappy data with the framing of xerial's `SnappyOutputStream`:
//! the 8-byte magic `[0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0]`, an `i32` big-endian
//! version (1), an `i32` big-endian compatible version (1), then repeated blocks of
//! `[i32 BE compressed length][raw snappy block]`. [`compress`] writes that framing with
//! blocks of at most 32 KiB of uncompressed input. [`decompress`] accepts the framing
//! (including concatenated framed streams) and also a single raw snappy block without any
//! framing, as librdkafka sometimes produces.
//!
//! # Safety against hostile input
//!
//! [`decompress`] decodes bytes from the network and from disk: it never panics, and it never
//! produces (or allocates much more than) `limit` bytes of output; exceeding the limit yields
//! [`CompressionError::TooLarge`]. Compressed codecs reject empty input as corrupt (every
//! encoder emits at least a header, even for an empty record set).

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// Compression codec of a record batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression (id 0).
    #[default]
    None,
    /// Gzip (id 1).
    Gzip,
    /// Snappy with xerial framing (id 2).
    Snappy,
    /// LZ4 frame format (id 3).
    Lz4,
    /// Zstandard (id 4).
    Zstd,
}

impl Compression {
    /// The 3-bit codec id as stored in batch attributes.
    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Codec from the id; ids 5..=7 (and anything outside 0..=7) are unknown and yield
    /// [`CompressionError::UnknownCodec`]. Callers pass `attributes & 0x07`.
    pub fn from_id(id: i16) -> Result<Self, CompressionError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(CompressionError::UnknownCodec(other)),
        }
    }

    /// Kafka's config name: "none" | "gzip" | "snappy" | "lz4" | "zstd".
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = CompressionError;

    /// Parses a Kafka codec name, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALL: [Compression; 5] = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        ALL.into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| CompressionError::UnknownName(s.to_owned()))
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of compressing or decompressing record batch payloads.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    /// The codec id in the batch attributes is not a known codec.
    #[error("unknown compression codec id {0}")]
    UnknownCodec(i16),
    /// The codec name is not one of "none", "gzip", "snappy", "lz4", "zstd".
    #[error("unknown compression codec name {0:?}")]
    UnknownName(String),
    /// Decompressed output would exceed `limit` bytes (protects against decompression bombs).
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The maximum number of decompressed bytes that was allowed.
        limit: usize,
    },
    /// The compressed bytes are malformed for `codec`; `reason` says how.
    #[error("corrupt {codec} data: {reason}")]
    Corrupt {
        /// The codec the bytes were decoded with.
        codec: Compression,
        /// What is wrong with the bytes.
        reason: String,
    },
    /// An I/O-level failure inside the compressor while *compressing* (should not happen with
    /// `Vec` output).
    #[error("{codec} compression failed: {reason}")]
    Compress {
        /// The codec that failed.
        codec: Compression,
        /// The underlying failure.
        reason: String,
    },
}

/// Magic bytes opening a xerial-snappy framed stream.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Length of the full xerial header: magic, version, compatible version.
const XERIAL_HEADER_LEN: usize = XERIAL_MAGIC.len() + 8;
/// Version and compatible version written in the xerial header.
const XERIAL_VERSION: i32 = 1;
/// Uncompressed bytes per xerial block (xerial's default block size).
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;
/// Snappy never expands more than ~21x (a 3-byte copy yields at most 64 bytes); a raw block
/// claiming more than this ratio is corrupt, which we detect before allocating for it.
const SNAPPY_MAX_RATIO: usize = 32;
/// zstd level used when compressing.
const ZSTD_LEVEL: i32 = 3;
/// Read chunk size for streaming decoders.
const READ_CHUNK: usize = 32 * 1024;

/// Appends the compressed form of `input` to `out`. Compression::None appends input as is.
pub fn compress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    compress_at(codec, None, input, out)
}

/// The levels a codec takes, as Kafka's `compression.gzip.level` and `compression.zstd.level`
/// (KIP-390) allow them: gzip 1 to 9 (default 6), zstd -131072 to 22 (default 3). Snappy and
/// lz4 (this LZ4 has no high-compression mode) take none.
pub fn level_range(codec: Compression) -> Option<std::ops::RangeInclusive<i32>> {
    match codec {
        Compression::Gzip => Some(1..=9),
        Compression::Zstd => Some(-131_072..=22),
        Compression::None | Compression::Snappy | Compression::Lz4 => None,
    }
}

/// Checks `level` for `codec` ([`level_range`]); the message says what is allowed.
pub fn check_level(codec: Compression, level: i32) -> Result<(), String> {
    match level_range(codec) {
        Some(range) if range.contains(&level) => Ok(()),
        Some(range) => Err(format!(
            "{} levels are {} to {}, not {level}",
            codec.name(),
            range.start(),
            range.end()
        )),
        None => Err(format!("{} has no compression levels", codec.name())),
    }
}

/// [`compress`] at `level` (`None`: the codec's default). A level outside [`level_range`] is
/// an error.
pub fn compress_at(
    codec: Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CompressionError> {
    if let Some(level) = level {
        check_level(codec, level).map_err(|reason| CompressionError::Compress { codec, reason })?;
    }
    let fail = |e: &dyn fmt::Display| CompressionError::Compress {
        codec,
        reason: e.to_string(),
    };
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => {
            let level = level.map_or(flate2::Compression::default(), |l| {
                flate2::Compression::new(l as u32)
            });
            let mut enc = flate2::write::GzEncoder::new(out, level);
            enc.write_all(input).map_err(|e| fail(&e))?;
            enc.finish().map_err(|e| fail(&e))?;
            Ok(())
        }
        Compression::Snappy => compress_snappy_xerial(input, out),
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(input).map_err(|e| fail(&e))?;
            enc.finish().map_err(|e| fail(&e))?;
            Ok(())
        }
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, level.unwrap_or(ZSTD_LEVEL))
                .map_err(|e| fail(&e))?;
            enc.set_pledged_src_size(Some(input.len() as u64))
                .map_err(|e| fail(&e))?;
            enc.write_all(input).map_err(|e| fail(&e))?;
            enc.finish().map_err(|e| fail(&e))?;
            Ok(())
        }
    }
}

/// Decompresses `input`, refusing to produce more than `limit` bytes (returns TooLarge instead,
/// without allocating more than about limit bytes). Compression::None returns a copy of input
/// (still checks limit).
pub fn decompress(
    codec: Compression,
    input: &[u8],
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    if codec == Compression::None {
        if input.len() > limit {
            return Err(CompressionError::TooLarge { limit });
        }
        return Ok(input.to_vec());
    }
    if input.is_empty() {
        return Err(corrupt(codec, "empty input"));
    }
    // Output grows (bounded by `limit`) from a guess of twice the input size.
    let mut out = Vec::with_capacity(input.len().saturating_mul(2).min(limit));
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => read_bounded(
            flate2::read::MultiGzDecoder::new(input),
            codec,
            &mut out,
            limit,
        )?,
        Compression::Snappy => decompress_snappy(input, &mut out, limit)?,
        Compression::Lz4 => {
            // lz4_flex treats a stream cut at a block boundary as a clean end and stops at the
            // end of each frame, so walk the framing first (reporting truncation) and decode
            // frame by frame.
            let frames = split_lz4_frames(input).map_err(|reason| corrupt(codec, reason))?;
            for frame in frames {
                read_bounded(
                    lz4_flex::frame::FrameDecoder::new(frame),
                    codec,
                    &mut out,
                    limit,
                )?;
            }
        }
        Compression::Zstd => {
            let dec =
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| corrupt(codec, e))?;
            read_bounded(dec, codec, &mut out, limit)?;
        }
    }
    Ok(out)
}

/// Builds a [`CompressionError::Corrupt`].
fn corrupt(codec: Compression, reason: impl fmt::Display) -> CompressionError {
    CompressionError::Corrupt {
        codec,
        reason: reason.to_string(),
    }
}

/// Makes room in `out` for `additional` more bytes while keeping its capacity at most `limit`
/// (the caller guarantees `out.len() + additional <= limit`).
fn reserve_bounded(out: &mut Vec<u8>, additional: usize, limit: usize) {
    let needed = out.len().saturating_add(additional);
    if needed <= out.capacity() {
        return;
    }
    let target = out
        .capacity()
        .saturating_mul(2)
        .max(needed)
        .min(limit)
        .max(needed);
    out.reserve_exact(target - out.len());
}

/// Reads `reader` to its end, appending to `out` and failing with `TooLarge` as soon as `out`
/// would exceed `limit` bytes. Read errors are reported as corruption of `codec`.
fn read_bounded<R: Read>(
    mut reader: R,
    codec: Compression,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CompressionError> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(codec, e)),
        };
        let chunk = buf
            .get(..n)
            .ok_or_else(|| corrupt(codec, "reader overran its buffer"))?;
        if n > limit.saturating_sub(out.len()) {
            return Err(CompressionError::TooLarge { limit });
        }
        reserve_bounded(out, n, limit);
        out.extend_from_slice(chunk);
    }
}

/// Magic number of an LZ4 frame.
const LZ4_FRAME_MAGIC: u32 = 0x184D_2204;

/// Splits `input` into its concatenated LZ4 frames by walking their structure (header, block
/// sizes, end marks, checksums) without decoding them. Fails if the input is truncated, has
/// trailing bytes, or is not made of standard frames. Content is validated by the decoder.
fn split_lz4_frames(input: &[u8]) -> Result<Vec<&[u8]>, String> {
    /// Takes `n` bytes off the front of `rest`.
    fn take<'a>(rest: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if rest.len() < n {
            return Err(format!("truncated frame: missing {what}"));
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    /// Takes a little-endian u32 off the front of `rest`.
    fn take_u32(rest: &mut &[u8], what: &str) -> Result<u32, String> {
        let (bytes, tail) =
            split_array::<4>(rest).ok_or_else(|| format!("truncated frame: missing {what}"))?;
        *rest = tail;
        Ok(u32::from_le_bytes(bytes))
    }

    let mut frames = Vec::new();
    let mut rest = input;
    while !rest.is_empty() {
        let frame_start = rest;
        let magic = take_u32(&mut rest, "magic number")?;
        if magic != LZ4_FRAME_MAGIC {
            return Err(format!("unsupported or bad frame magic {magic:#010x}"));
        }
        let descriptor = take(&mut rest, 2, "frame descriptor")?;
        let flg = descriptor.first().copied().unwrap_or(0);
        if flg >> 6 != 1 {
            return Err(format!("unsupported frame version {}", flg >> 6));
        }
        let block_checksums = flg & 0x10 != 0;
        let content_checksum = flg & 0x04 != 0;
        let content_size_len = if flg & 0x08 != 0 { 8 } else { 0 };
        let dict_id_len = if flg & 0x01 != 0 { 4 } else { 0 };
        // Optional fields plus the header checksum byte.
        take(
            &mut rest,
            content_size_len + dict_id_len + 1,
            "frame header",
        )?;
        loop {
            let size = take_u32(&mut rest, "block size or end mark")?;
            if size == 0 {
                break;
            }
            let len = (size & 0x7FFF_FFFF) as usize;
            take(&mut rest, len, "block data")?;
            if block_checksums {
                take(&mut rest, 4, "block checksum")?;
            }
        }
        if content_checksum {
            take(&mut rest, 4, "content checksum")?;
        }
        let frame_len = frame_start.len() - rest.len();
        frames.push(frame_start.get(..frame_len).unwrap_or_default());
    }
    Ok(frames)
}

/// Writes `input` as a xerial-framed snappy stream onto `out`.
fn compress_snappy_xerial(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    out.reserve(XERIAL_HEADER_LEN + snap::raw::max_compress_len(input.len()));
    out.extend_from_slice(&XERIAL_MAGIC);
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
    let mut encoder = snap::raw::Encoder::new();
    for block in input.chunks(XERIAL_BLOCK_SIZE) {
        let len_pos = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(block.len()), 0);
        let written = match out.get_mut(start..) {
            Some(dst) => encoder.compress(block, dst),
            None => Err(snap::Error::BufferTooSmall {
                given: 0,
                min: snap::raw::max_compress_len(block.len()) as u64,
            }),
        };
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                out.truncate(len_pos);
                return Err(CompressionError::Compress {
                    codec,
                    reason: e.to_string(),
                });
            }
        };
        out.truncate(start + written);
        let len = i32::try_from(written).map_err(|e| CompressionError::Compress {
            codec,
            reason: e.to_string(),
        })?;
        if let Some(slot) = out.get_mut(len_pos..start) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
    }
    Ok(())
}

/// Decodes snappy data, xerial-framed or a single raw block.
fn decompress_snappy(
    input: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CompressionError> {
    let mut decoder = snap::raw::Decoder::new();
    if !input.starts_with(&XERIAL_MAGIC) {
        return decode_snappy_block(&mut decoder, input, out, limit);
    }
    let codec = Compression::Snappy;
    let mut rest = input;
    while !rest.is_empty() {
        // A (possibly concatenated) stream header. A block length never starts with 0x82
        // (that would be negative), so the magic is unambiguous at a block boundary.
        if rest.starts_with(&XERIAL_MAGIC) {
            rest = rest
                .get(XERIAL_HEADER_LEN..)
                .ok_or_else(|| corrupt(codec, "truncated xerial header"))?;
            continue;
        }
        let (len_bytes, tail) = split_array::<4>(rest)
            .ok_or_else(|| corrupt(codec, "truncated xerial block length"))?;
        let len = i32::from_be_bytes(len_bytes);
        let len = usize::try_from(len)
            .map_err(|_| corrupt(codec, format!("negative xerial block length {len}")))?;
        if len > tail.len() {
            return Err(corrupt(
                codec,
                format!("xerial block of {len} bytes but only {} remain", tail.len()),
            ));
        }
        let (block, next) = tail.split_at(len);
        decode_snappy_block(&mut decoder, block, out, limit)?;
        rest = next;
    }
    Ok(())
}

/// Splits the first `N` bytes off `bytes`, if there are that many.
fn split_array<const N: usize>(bytes: &[u8]) -> Option<([u8; N], &[u8])> {
    if bytes.len() < N {
        return None;
    }
    let (head, tail) = bytes.split_at(N);
    let head: [u8; N] = head.try_into().ok()?;
    Some((head, tail))
}

/// Decodes one raw snappy block, appending it to `out`, keeping `out` within `limit` bytes.
fn decode_snappy_block(
    decoder: &mut snap::raw::Decoder,
    block: &[u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), CompressionError> {
    let codec = Compression::Snappy;
    let len = snap::raw::decompress_len(block).map_err(|e| corrupt(codec, e))?;
    if len > limit.saturating_sub(out.len()) {
        return Err(CompressionError::TooLarge { limit });
    }
    if len > block.len().saturating_mul(SNAPPY_MAX_RATIO) {
        return Err(corrupt(
            codec,
            format!(
                "block of {} bytes claims {len} decompressed bytes",
                block.len()
            ),
        ));
    }
    let start = out.len();
    reserve_bounded(out, len, limit);
    out.resize(start + len, 0);
    let result = match out.get_mut(start..) {
        Some(dst) => decoder.decompress(block, dst),
        None => Err(snap::Error::BufferTooSmall {
            given: 0,
            min: len as u64,
        }),
    };
    match result {
        Ok(n) if n == len => Ok(()),
        Ok(n) => {
            out.truncate(start);
            Err(corrupt(
                codec,
                format!("block decoded to {n} bytes, header said {len}"),
            ))
        }
        Err(e) => {
            out.truncate(start);
            Err(corrupt(codec, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    const BIG: usize = 1 << 30;

    #[test]
    fn levels_round_trip_and_higher_ones_compress_more() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("event {} from host-{} status ok; ", i % 97, i % 7).into_bytes())
            .collect();
        for (codec, low, high) in [(Compression::Gzip, 1, 9), (Compression::Zstd, 1, 19)] {
            let mut sizes = Vec::new();
            for level in [low, high] {
                let mut out = Vec::new();
                compress_at(codec, Some(level), &text, &mut out).unwrap();
                assert_eq!(
                    decompress(codec, &out, BIG).unwrap(),
                    text,
                    "{codec} {level}"
                );
                sizes.push(out.len());
            }
            assert!(
                sizes[1] < sizes[0],
                "{codec}: level {high} not smaller than {low}: {sizes:?}"
            );
        }
        assert!(check_level(Compression::Gzip, 0)
            .unwrap_err()
            .contains("1 to 9"));
        assert!(check_level(Compression::Zstd, 23).is_err());
        for codec in [Compression::None, Compression::Snappy, Compression::Lz4] {
            assert!(check_level(codec, 1)
                .unwrap_err()
                .contains("no compression levels"));
            assert!(compress_at(codec, Some(1), &text, &mut Vec::new()).is_err());
        }
    }

    /// Small deterministic PRNG (xorshift64*), so tests need no extra crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// ~1 MiB of mixed data: runs, text, and random bytes.
    fn mixed(n: usize) -> Vec<u8> {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut v = Vec::with_capacity(n + 4096);
        while v.len() < n {
            match rng.next() % 3 {
                0 => {
                    let byte = rng.next() as u8;
                    let run = 1 + (rng.next() % 3000) as usize;
                    v.resize(v.len() + run, byte);
                }
                1 => v.extend_from_slice(b"{\"key\":\"user-42\",\"value\":\"hello weir\"} "),
                _ => {
                    let n = 1 + (rng.next() % 500) as usize;
                    v.extend(rng.bytes(n));
                }
            }
        }
        v.truncate(n);
        v
    }

    fn roundtrip(codec: Compression, data: &[u8]) {
        let mut out = b"prefix".to_vec();
        compress(codec, data, &mut out).unwrap();
        assert_eq!(&out[..6], b"prefix", "{codec}: compress must append");
        let back = decompress(codec, &out[6..], data.len()).unwrap();
        assert_eq!(back, data, "{codec}");
    }

    #[test]
    fn roundtrip_all_codecs() {
        let big = mixed(1 << 20);
        for codec in ALL {
            roundtrip(codec, b"");
            roundtrip(codec, b"a");
            roundtrip(codec, b"hello hello hello hello weir");
            roundtrip(codec, &big);
        }
    }

    #[test]
    fn compressed_output_is_smaller_for_compressible_data() {
        let data = vec![7u8; 100_000];
        for codec in ALL.into_iter().skip(1) {
            let mut out = Vec::new();
            compress(codec, &data, &mut out).unwrap();
            assert!(out.len() < data.len() / 10, "{codec}: {}", out.len());
        }
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        let mut rng = Rng(42);
        for codec in ALL.into_iter().skip(1) {
            assert!(decompress(codec, b"", BIG).is_err(), "{codec} empty");
            assert!(
                decompress(codec, b"this is not compressed at all!!", BIG).is_err(),
                "{codec}"
            );
            for _ in 0..300 {
                let len = (rng.next() % 200) as usize + 1;
                let junk = rng.bytes(len);
                let _ = decompress(codec, &junk, 1 << 20);
            }
        }
        // Garbage that looks like each codec's header.
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[
            0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        assert!(decompress(Compression::Snappy, &xerial, BIG).is_err());
        assert!(decompress(
            Compression::Gzip,
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1, 2],
            BIG
        )
        .is_err());
        assert!(decompress(
            Compression::Lz4,
            &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82, 9, 9],
            BIG
        )
        .is_err());
        assert!(decompress(
            Compression::Zstd,
            &[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 1, 2, 3],
            BIG
        )
        .is_err());
    }

    #[test]
    fn truncated_and_corrupted_streams_never_panic() {
        let data = mixed(100_000);
        let mut rng = Rng(7);
        for codec in ALL.into_iter().skip(1) {
            let mut packed = Vec::new();
            compress(codec, &data, &mut packed).unwrap();
            for cut in [1, 2, 5, 10, 17, 30, packed.len() / 2, packed.len() - 1] {
                let cut = cut.min(packed.len() - 1);
                assert!(
                    decompress(codec, &packed[..cut], BIG).is_err(),
                    "{codec} cut {cut}"
                );
            }
            for _ in 0..100 {
                let mut bad = packed.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let i = (rng.next() as usize) % bad.len();
                    bad[i] ^= 1 << (rng.next() % 8);
                }
                if let Ok(v) = decompress(codec, &bad, 200_000) {
                    assert!(v.len() <= 200_000);
                }
            }
        }
    }

    #[test]
    fn too_large_when_limit_is_below_real_size() {
        let data = mixed(300_000);
        for codec in ALL {
            let mut packed = Vec::new();
            compress(codec, &data, &mut packed).unwrap();
            for limit in [0, 1, 1000, data.len() - 1] {
                match decompress(codec, &packed, limit) {
                    Err(CompressionError::TooLarge { limit: l }) => assert_eq!(l, limit),
                    other => panic!("{codec} limit {limit}: {other:?}"),
                }
            }
            assert_eq!(decompress(codec, &packed, data.len()).unwrap(), data);
        }
    }

    #[test]
    fn bomb_is_stopped() {
        let zeros = vec![0u8; 8 << 20];
        for codec in ALL.into_iter().skip(1) {
            let mut packed = Vec::new();
            compress(codec, &zeros, &mut packed).unwrap();
            assert!(matches!(
                decompress(codec, &packed, 64 * 1024),
                Err(CompressionError::TooLarge { limit: 65536 })
            ));
        }
    }

    #[test]
    fn xerial_hand_built_frame() {
        let a = b"hello xerial ".repeat(10);
        let b = b"second block";
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes());
        framed.extend_from_slice(&1i32.to_be_bytes());
        for part in [&a[..], &b[..]] {
            let block = snap::raw::Encoder::new().compress_vec(part).unwrap();
            framed.extend_from_slice(&(block.len() as i32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        let mut want = a.clone();
        want.extend_from_slice(b);
        assert_eq!(decompress(Compression::Snappy, &framed, BIG).unwrap(), want);

        // Concatenated framed streams decode as one.
        let mut twice = framed.clone();
        twice.extend_from_slice(&framed);
        let mut want2 = want.clone();
        want2.extend_from_slice(&want);
        assert_eq!(decompress(Compression::Snappy, &twice, BIG).unwrap(), want2);

        // Header only: empty payload.
        assert_eq!(
            decompress(Compression::Snappy, &framed[..16], BIG).unwrap(),
            b""
        );
        // Truncated header, negative length, overlong length, trailing partial length.
        assert!(decompress(Compression::Snappy, &framed[..12], BIG).is_err());
        let mut neg = framed[..16].to_vec();
        neg.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(decompress(Compression::Snappy, &neg, BIG).is_err());
        let mut long = framed[..16].to_vec();
        long.extend_from_slice(&1000i32.to_be_bytes());
        long.extend_from_slice(&[0; 10]);
        assert!(decompress(Compression::Snappy, &long, BIG).is_err());
        let mut partial = framed.clone();
        partial.extend_from_slice(&[0, 0]);
        assert!(decompress(Compression::Snappy, &partial, BIG).is_err());
        // Limit applies across blocks.
        assert!(matches!(
            decompress(Compression::Snappy, &framed, want.len() - 1),
            Err(CompressionError::TooLarge { .. })
        ));
    }

    #[test]
    fn xerial_compress_layout() {
        let data = mixed(100_000);
        let mut out = Vec::new();
        compress(Compression::Snappy, &data, &mut out).unwrap();
        assert_eq!(&out[..8], &XERIAL_MAGIC);
        assert_eq!(&out[8..16], &[0, 0, 0, 1, 0, 0, 0, 1]);
        let mut rest = &out[16..];
        let mut blocks = 0;
        while !rest.is_empty() {
            let len = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = &rest[4..4 + len];
            assert!(snap::raw::decompress_len(block).unwrap() <= XERIAL_BLOCK_SIZE);
            rest = &rest[4 + len..];
            blocks += 1;
        }
        assert_eq!(blocks, data.len().div_ceil(XERIAL_BLOCK_SIZE));
    }

    #[test]
    fn lz4_frames_as_kafka_expects() {
        let data = mixed(200_000);
        let mut packed = Vec::new();
        compress(Compression::Lz4, &data, &mut packed).unwrap();
        // Magic, FLG = version 01 + block independence, BD = 64 KiB max block size.
        assert_eq!(&packed[..6], &[0x04, 0x22, 0x4d, 0x18, 0x60, 0x40]);

        // Frames with content size and checksums (as other producers may write) decode too.
        let info = lz4_flex::frame::FrameInfo::new()
            .content_size(Some(data.len() as u64))
            .block_checksums(true)
            .content_checksum(true);
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&data).unwrap();
        let other = enc.finish().unwrap();
        let got = decompress(Compression::Lz4, &other, BIG).unwrap();
        assert!(
            got == data,
            "content-size frame: {} vs {}",
            got.len(),
            data.len()
        );

        // Concatenated frames decode as one; trailing junk is rejected.
        let mut both = packed.clone();
        both.extend_from_slice(&other);
        let mut want = data.clone();
        want.extend_from_slice(&data);
        let got = decompress(Compression::Lz4, &both, BIG).unwrap();
        assert!(got == want, "concatenated: {} vs {}", got.len(), want.len());
        let mut junk = packed.clone();
        junk.push(0);
        assert!(decompress(Compression::Lz4, &junk, BIG).is_err());
        // Missing end mark.
        assert!(decompress(Compression::Lz4, &packed[..packed.len() - 4], BIG).is_err());
    }

    #[test]
    fn raw_snappy_block() {
        let data = b"raw snappy block from librdkafka, raw snappy block".to_vec();
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(Compression::Snappy, &raw, BIG).unwrap(), data);
        assert!(matches!(
            decompress(Compression::Snappy, &raw, 10),
            Err(CompressionError::TooLarge { limit: 10 })
        ));
        // A block claiming a huge size is refused before allocating.
        let claims_huge = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        assert!(decompress(Compression::Snappy, &claims_huge, usize::MAX).is_err());
    }

    #[test]
    fn ids_and_names() {
        for codec in ALL {
            assert_eq!(Compression::from_id(codec.id()).unwrap(), codec);
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
            assert_eq!(
                codec.name().to_uppercase().parse::<Compression>().unwrap(),
                codec
            );
            assert_eq!(codec.to_string(), codec.name());
        }
        assert_eq!(Compression::default(), Compression::None);
        assert_eq!(Compression::Zstd.id(), 4);
        assert_eq!(
            "Snappy".parse::<Compression>().unwrap(),
            Compression::Snappy
        );
        for id in [5, 6, 7, -1, 8, i16::MAX] {
            assert!(
                matches!(Compression::from_id(id), Err(CompressionError::UnknownCodec(i)) if i == id)
            );
        }
        for name in ["", "lzma", "gzip ", "zstd2"] {
            assert!(
                matches!(name.parse::<Compression>(), Err(CompressionError::UnknownName(n)) if n == name)
            );
        }
        let msg = CompressionError::Corrupt {
            codec: Compression::Lz4,
            reason: "bad".into(),
        }
        .to_string();
        assert_eq!(msg, "corrupt lz4 data: bad");
    }
}
