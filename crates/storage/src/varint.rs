//! Zig-zag variable-length integers, as the records inside a RecordBatch v2 use them
//! (the protobuf encoding: 7 bits a byte, least significant group first, high bit set on every
//! byte but the last; signed values zig-zag encoded so small negatives stay short).
//!
//! Decoding is bounded: a varint longer than 5 bytes (varlong: 10) or one cut short by the end of
//! the buffer is an error, never a panic.

use crate::batch::BatchError;

/// Appends `value` as a zig-zag varint (at most 5 bytes).
pub fn put_varint(out: &mut Vec<u8>, value: i32) {
    put_unsigned(out, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends `value` as a zig-zag varlong (at most 10 bytes).
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    put_unsigned(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_unsigned(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The number of bytes `put_varint(value)` writes.
pub fn varint_len(value: i32) -> usize {
    unsigned_len(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// The number of bytes `put_varlong(value)` writes.
pub fn varlong_len(value: i64) -> usize {
    unsigned_len(((value << 1) ^ (value >> 63)) as u64)
}

fn unsigned_len(v: u64) -> usize {
    // 1 byte for 0..=127, then one more for every further 7 bits.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A cursor that decodes varints from a byte slice.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn unsigned(&mut self, max_bytes: usize) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(BatchError::MalformedRecord(
                    "varint runs past the end of the data",
                ));
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::MalformedRecord("varint is too long"))
    }

    /// Reads a zig-zag varint.
    pub fn varint(&mut self) -> Result<i32, BatchError> {
        let raw = self.unsigned(5)?;
        let raw = u32::try_from(raw)
            .map_err(|_| BatchError::MalformedRecord("varint overflows 32 bits"))?;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    /// Reads a zig-zag varlong.
    pub fn varlong(&mut self) -> Result<i64, BatchError> {
        let raw = self.unsigned(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    /// Reads one byte.
    pub fn byte(&mut self) -> Result<u8, BatchError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(BatchError::MalformedRecord("record ends early"))?;
        self.pos += 1;
        Ok(byte)
    }

    /// Skips `len` bytes and returns the range they occupy.
    pub fn skip(&mut self, len: usize) -> Result<std::ops::Range<usize>, BatchError> {
        if len > self.remaining() {
            return Err(BatchError::MalformedRecord(
                "a length runs past the end of the record",
            ));
        }
        let start = self.pos;
        self.pos += len;
        Ok(start..self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edge_values_with_the_predicted_length() {
        for v in [0, 1, -1, 63, -64, 64, i32::MAX, i32::MIN, 300, -300] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "length of {v}");
            assert_eq!(Reader::new(&out).varint().unwrap(), v);
        }
        for v in [0, 1, -1, i64::MAX, i64::MIN, 1 << 40, -(1 << 40)] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "length of {v}");
            assert_eq!(Reader::new(&out).varlong().unwrap(), v);
        }
    }

    #[test]
    fn kafka_reference_encodings() {
        // Values from Kafka's ByteUtilsTest.
        let mut out = Vec::new();
        put_varint(&mut out, -1);
        assert_eq!(out, [0x01]);
        out.clear();
        put_varint(&mut out, 1);
        assert_eq!(out, [0x02]);
        out.clear();
        put_varint(&mut out, 64);
        assert_eq!(out, [0x80, 0x01]);
    }

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 6]).varint().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0x7f])
            .varint()
            .is_err());
        assert!(Reader::new(&[0xff; 11]).varlong().is_err());
        assert!(Reader::new(&[]).byte().is_err());
        assert!(Reader::new(&[1, 2]).skip(3).is_err());
    }
}
