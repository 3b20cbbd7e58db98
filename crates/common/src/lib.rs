//! What every Weir crate shares and none of them owns: the wall clock record timestamps are
//! read from ([`now_ms`]), locks that survive a panicked holder ([`sync`]), and the topic-config
//! schema ([`topic_config`]) — the names, types, defaults and validation of every per-topic
//! setting, which the metadata quorum checks before it stores an override and the storage
//! engine and broker apply. It depends on nothing of Weir's, so the quorum can validate a
//! topic's configs without knowing anything of partition logs.

pub mod sync;
pub mod topic_config;

/// Milliseconds since the Unix epoch by the wall clock, the unit of record timestamps (as in
/// Kafka). A clock set before 1970 reads 0.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A random 64-bit number from the standard library's per-process random hash keys and the
/// clock: unpredictable enough for incarnations, election jitter and request ids, not for
/// secrets.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_and_random_numbers_move() {
        assert!(super::now_ms() > 1_600_000_000_000);
        let draws: std::collections::HashSet<u64> = (0..64).map(|_| super::random_u64()).collect();
        assert!(draws.len() > 60, "{} distinct of 64", draws.len());
    }
}
