//! Keyspaces and the byte layout of their keys.
//!
//! The layouts are part of the on-disk format: changing one needs a format migration.
//!
//! | keyspace | key layout |
//! | --- | --- |
//! | objects | `partition: u32 BE` ++ `segment: u16 BE` ++ user key |
//! | hints | `len(target): u16 BE` ++ target ++ `partition: u32 BE` ++ user key |
//! | meta | a name (`node_id`, `cluster_state`, ...) |
//!
//! Big-endian partitions make byte order equal numeric order, so one partition is one
//! contiguous range; within it, keys are ordered by their anti-entropy segment ([`segment_of`],
//! the low 16 bits of the key's XXH3-64 hash), so the keys of a range of segments, which
//! a Merkle leaf covers, are one contiguous scan; and the length prefix of a hint's target keeps the target ids of
//! different lengths from interleaving.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// The named keyspaces of a store. Each backend keeps them apart (an LMDB database or a
/// SQLite table each), so a scan of one never sees keys of another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// Replicated objects (encoded DVV sets), keyed by `(partition, key)`.
    Objects,
    /// Hinted-handoff objects held for an unreachable owner, keyed by `(target, partition, key)`.
    Hints,
    /// Small node-local records: identity, persisted cluster state.
    Meta,
}

impl Keyspace {
    /// Every keyspace, in a fixed order (the index backends use).
    pub const ALL: [Self; 3] = [Self::Objects, Self::Hints, Self::Meta];

    /// The keyspace's name: the LMDB database and SQLite table it lives in.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Objects => "objects",
            Self::Hints => "hints",
            Self::Meta => "meta",
        }
    }

    /// The position of the keyspace in [`Self::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Keyspace {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|space| space.name() == s)
            .ok_or_else(|| format!("unknown keyspace `{s}`; accepted values: objects, hints, meta"))
    }
}

/// The length of the partition prefix of an object key.
pub const PARTITION_PREFIX_LEN: usize = 4;
/// The length of the partition and segment prefix of an object key.
pub const OBJECT_PREFIX_LEN: usize = PARTITION_PREFIX_LEN + 2;

/// The prefix shared by every object key of `partition`.
pub const fn partition_prefix(partition: u32) -> [u8; PARTITION_PREFIX_LEN] {
    partition.to_be_bytes()
}

/// The anti-entropy segment of a key: the low 16 bits of its XXH3-64 hash. Part of the
/// on-disk format; `dotkv_merkle::segment_of` is the same function (the replication crate
/// tests that they agree), defined again here because the storage depends on no other
/// dotkv crate.
#[inline]
pub fn segment_of(key: &[u8]) -> u16 {
    (xxhash_rust::xxh3::xxh3_64(key) & 0xffff) as u16
}

/// The prefix of the object keys of `partition` in `segment`.
pub fn segment_prefix(partition: u32, segment: u16) -> [u8; OBJECT_PREFIX_LEN] {
    let mut out = [0; OBJECT_PREFIX_LEN];
    out[..PARTITION_PREFIX_LEN].copy_from_slice(&partition_prefix(partition));
    out[PARTITION_PREFIX_LEN..].copy_from_slice(&segment.to_be_bytes());
    out
}

/// The encoded key of object `key` in `partition`.
pub fn object_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(OBJECT_PREFIX_LEN + key.len());
    out.extend_from_slice(&segment_prefix(partition, segment_of(key)));
    out.extend_from_slice(key);
    out
}

/// Splits an encoded object key into `(partition, key)`.
pub fn split_object_key(encoded: &[u8]) -> Result<(u32, &[u8])> {
    let corrupt = || corrupt_key(Keyspace::Objects, encoded);
    let (prefix, key) = encoded
        .split_first_chunk::<OBJECT_PREFIX_LEN>()
        .ok_or_else(corrupt)?;
    let (partition, segment) = prefix.split_at(PARTITION_PREFIX_LEN);
    let partition = u32::from_be_bytes(partition.try_into().map_err(|_| corrupt())?);
    if segment != segment_of(key).to_be_bytes() {
        return Err(corrupt());
    }
    Ok((partition, key))
}

/// Splits `partition: u32 BE ++ key` (the tail of a hint key).
fn split_partition(encoded: &[u8]) -> Option<(u32, &[u8])> {
    let (prefix, key) = encoded.split_first_chunk::<PARTITION_PREFIX_LEN>()?;
    Some((u32::from_be_bytes(*prefix), key))
}

/// The prefix of every hint held for `target`.
pub fn hint_target_prefix(target: &str) -> Vec<u8> {
    let len = u16::try_from(target.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + target.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(target.as_bytes());
    out
}

/// The key of a hint: which node it is for and which object it carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HintKey {
    /// The node the object is meant for (its node id).
    pub target: String,
    /// The object's partition.
    pub partition: u32,
    /// The object's key.
    pub key: Vec<u8>,
}

impl HintKey {
    /// The encoded key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = hint_target_prefix(&self.target);
        out.extend_from_slice(&partition_prefix(self.partition));
        out.extend_from_slice(&self.key);
        out
    }

    /// Decodes an encoded hint key.
    pub fn decode(encoded: &[u8]) -> Result<Self> {
        let corrupt = || corrupt_key(Keyspace::Hints, encoded);
        let (len, rest) = encoded.split_first_chunk::<2>().ok_or_else(corrupt)?;
        let len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < len {
            return Err(corrupt());
        }
        let (target, rest) = rest.split_at(len);
        let target = std::str::from_utf8(target)
            .map_err(|_| corrupt())?
            .to_owned();
        let (partition, key) = split_partition(rest).ok_or_else(corrupt)?;
        Ok(Self {
            target,
            partition,
            key: key.to_vec(),
        })
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when no
/// such key exists (an empty prefix, or one made only of `0xFF` bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&b| b != u8::MAX)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

fn corrupt_key(space: Keyspace, encoded: &[u8]) -> Error {
    Error::MalformedKey {
        space,
        len: encoded.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
    }

    #[test]
    fn object_keys_of_a_partition_sort_together_by_segment() {
        let a = object_key(1, b"\xff\xff");
        let b = object_key(2, b"");
        assert!(a < b);
        assert_eq!(split_object_key(&a).unwrap(), (1, &b"\xff\xff"[..]));
        assert!(a.starts_with(&segment_prefix(1, segment_of(b"\xff\xff"))));
        // A key whose segment bytes do not match its hash is not an object key.
        let mut forged = a.clone();
        forged[4] ^= 1;
        assert!(split_object_key(&forged).is_err());
    }

    #[test]
    fn hint_keys_round_trip_and_targets_do_not_interleave() {
        let hint = HintKey {
            target: "n1".into(),
            partition: 9,
            key: b"k".to_vec(),
        };
        assert_eq!(HintKey::decode(&hint.encode()).unwrap(), hint);
        let longer = HintKey {
            target: "n10".into(),
            partition: 0,
            key: vec![],
        };
        assert!(!longer.encode().starts_with(&hint_target_prefix("n1")));
        assert!(HintKey::decode(&[0, 5, b'a']).is_err());
    }
}
