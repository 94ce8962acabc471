//! The key hash and the ring digest.
//!
//! The key hash is part of the on-disk format (objects are stored by partition): it is
//! XXH3-64 with seed 0 (the XXH3 specification, stable since xxHash 0.8.0), and the tests
//! pin known keys to known hashes so that it can never change by accident.

use xxhash_rust::xxh3::{Xxh3, xxh3_64, xxh3_64_with_seed};

use crate::{Member, NodeIndex};

/// The 64-bit hash of a key: XXH3-64, seed 0.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The partition of a key hash in a ring of `2^bits` partitions: the top `bits` bits.
///
/// ```
/// assert_eq!(dotkv_ring::partition_of(u64::MAX, 8), 255);
/// assert_eq!(dotkv_ring::partition_of(0x0123_4567_89ab_cdef, 8), 0x01);
/// ```
#[inline]
pub fn partition_of(hash: u64, bits: u32) -> u32 {
    // `checked_shr` covers bits == 0 (one partition), where a shift by 64 would overflow.
    hash.checked_shr(64 - bits).unwrap_or(0) as u32
}

/// A member's rendezvous score for a partition: uniform over `[0, 2^62)`, independent
/// between members and partitions. Seeded by the member id's hash, so it does not depend
/// on the member's index.
#[inline]
pub(crate) fn score(member_seed: u64, partition: u32) -> i64 {
    (xxh3_64_with_seed(&partition.to_le_bytes(), member_seed) >> 2) as i64
}

/// The seed of a member's scores.
pub(crate) fn member_seed(id: &str) -> u64 {
    xxh3_64_with_seed(id.as_bytes(), 0x646f_746b_762d_7269) // "dotkv-ri"
}

/// A digest of the members and the assignment.
pub(crate) fn digest(members: &[Member], replicas: usize, order: &[NodeIndex]) -> u64 {
    let mut hasher = Xxh3::new();
    for m in members {
        hasher.update(m.id.as_bytes());
        hasher.update(&[0]);
        hasher.update(&m.weight.to_le_bytes());
        hasher.update(m.zone.as_bytes());
        hasher.update(&[0]);
    }
    hasher.update(&(replicas as u64).to_le_bytes());
    for node in order {
        hasher.update(&node.to_le_bytes());
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key hash is on-disk format: these values must never change.
    #[test]
    fn key_hash_is_pinned() {
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(key_hash(b"hello"), 0x9555_e855_5c62_dcfd);
        let pinned: [(&[u8], u64, u32); 3] = [
            (b"user:1", 0x3b57_7afd_7fed_9501, 59),
            (b"user:2", 0x69a0_366b_760b_5c02, 105),
            (b"cart:alice", 0x524a_49c6_e2c2_3e00, 82),
        ];
        for (key, hash, partition) in pinned {
            assert_eq!(key_hash(key), hash, "{key:?}");
            assert_eq!(partition_of(hash, 8), partition, "{key:?} with Q = 256");
            // With more partitions, the top bits extend the same prefix.
            assert_eq!(partition_of(hash, 12) >> 4, partition);
        }
        assert_eq!(partition_of(u64::MAX, 16), 65535);
    }
}
