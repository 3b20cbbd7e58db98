//! Choosing a record's partition: Kafka's murmur2 hash for keyed records, a sticky partition
//! for keyless ones.

use rand::Rng;

/// Kafka's `Utils.murmur2`, bit for bit (seed `0x9747b28c`), so a key lands in the partition
/// a Kafka client would choose: `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// ```
/// use weir_client::{murmur2, partition_for_key};
///
/// assert_eq!(murmur2(b"21"), -973932308);
/// assert_eq!(partition_for_key(b"21", 3), ((-973932308i32 & 0x7fffffff) % 3) as u32);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len() as u32;
    let mut h: u32 = SEED ^ length;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record among `partitions` (which must be positive):
/// `(murmur2(key) & 0x7fffffff) % partitions`, as Kafka's default partitioner.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// The sticky choice for one topic's keyless records: one partition until a batch for it is
/// closed, then another (chosen at random, different from the last when there is a choice).
#[derive(Debug, Default, Clone)]
pub(crate) struct Sticky {
    current: Option<u32>,
}

impl Sticky {
    /// The partition for the next keyless record.
    pub fn partition(&mut self, partitions: u32) -> u32 {
        match self.current {
            Some(p) if p < partitions => p,
            _ => {
                let p = rand::thread_rng().gen_range(0..partitions.max(1));
                self.current = Some(p);
                p
            }
        }
    }

    /// A batch of `partition` was closed: move on if it was the sticky one.
    pub fn batch_closed(&mut self, partition: u32, partitions: u32) {
        if self.current != Some(partition) {
            return;
        }
        let next = if partitions <= 1 {
            0
        } else {
            // Uniform among the others.
            let r = rand::thread_rng().gen_range(0..partitions - 1);
            if r >= partition {
                r + 1
            } else {
                r
            }
        };
        self.current = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own vectors (clients' UtilsTest.testMurmur2).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn keyed_partition_is_positive_modulo() {
        let h = murmur2(b"21");
        assert!(h < 0);
        assert_eq!(partition_for_key(b"21", 7), ((h & 0x7fffffff) % 7) as u32);
        for n in 1..20 {
            for k in 0..100 {
                let key = format!("key-{k}");
                assert!(partition_for_key(key.as_bytes(), n) < n);
            }
        }
    }

    #[test]
    fn sticky_stays_until_a_batch_closes() {
        let mut s = Sticky::default();
        let first = s.partition(5);
        for _ in 0..100 {
            assert_eq!(s.partition(5), first);
        }
        // A batch of another partition closing changes nothing.
        s.batch_closed((first + 1) % 5, 5);
        assert_eq!(s.partition(5), first);
        // Its own batch closing moves it elsewhere.
        let mut seen = std::collections::BTreeSet::new();
        let mut current = first;
        for _ in 0..200 {
            s.batch_closed(current, 5);
            let next = s.partition(5);
            assert_ne!(next, current);
            assert!(next < 5);
            seen.insert(next);
            current = next;
        }
        assert_eq!(seen.len(), 5, "every partition gets a turn");
        // One partition: always 0.
        let mut one = Sticky::default();
        assert_eq!(one.partition(1), 0);
        one.batch_closed(0, 1);
        assert_eq!(one.partition(1), 0);
    }
}
