//! The stored object: a DVV set of values and tombstones, and its encoding.
//!
//! Part of the on-disk and wire format: an object is [`dotkv_versioning::encode`] of a
//! `DvvSet<Value>` (a format-version byte, then postcard), where a [`Value`] is either
//! the bytes a client wrote or a tombstone left by a delete.

use bytes::Bytes;
use dotkv_versioning::{DvvSet, VersionVector};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One sibling of a stored object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// The bytes a client wrote. `Bytes` so that merging and sending a set shares the
    /// value instead of copying it.
    Data(Bytes),
    /// A delete: it supersedes what the deleting client had seen, like any write, and
    /// reads skip it. It carries the coordinator's wall-clock time of the delete, so that
    /// every replica reaps it at the same time (`storage.tombstone_grace_s` after it) and
    /// anti-entropy stops spreading it then.
    Tombstone {
        /// When the delete was coordinated, in milliseconds since the Unix epoch.
        deleted_at_ms: u64,
    },
}

/// The stored form of one key: its siblings and their causal history.
pub type Object = DvvSet<Value>;

/// Encodes an object for storage and the wire.
pub fn encode_object(object: &Object) -> Vec<u8> {
    dotkv_versioning::encode(object)
}

/// Decodes a stored or received object. `origin` names where it came from, for the error.
pub fn decode_object(bytes: &[u8], origin: &str) -> Result<Object> {
    dotkv_versioning::decode(bytes)
        .map_err(|error| Error::Internal(format!("undecodable object from {origin}: {error}")))
}

/// What a read shows a client: the live values (tombstones skipped) and the context.
pub(crate) fn live_values(object: &Object) -> Vec<Bytes> {
    object
        .values()
        .into_iter()
        .filter_map(|value| match value {
            Value::Data(bytes) => Some(bytes.clone()),
            Value::Tombstone { .. } => None,
        })
        .collect()
}

/// When `object` is a deleted key (it holds only tombstones): the time of its latest
/// delete, in milliseconds since the Unix epoch; `None` while it holds a value.
pub(crate) fn deleted_at_ms(object: &Object) -> Option<u64> {
    let values = object.values();
    if values.is_empty() {
        return None;
    }
    values.into_iter().try_fold(0, |latest, value| match value {
        Value::Tombstone { deleted_at_ms } => Some(latest.max(*deleted_at_ms)),
        Value::Data(_) => None,
    })
}

/// Merges `incoming` into the `stored` object (replica synchronization). Returns `None`
/// when the stored object already knows everything `incoming` does, so that nothing is
/// written.
pub(crate) fn merge_into(stored: &Object, incoming: &Object) -> Option<Object> {
    let merged = stored.sync(incoming);
    (merged != *stored).then_some(merged)
}

/// Whether a replica holding `held` (or nothing) lacks something of `complete`.
pub(crate) fn is_stale(held: Option<&Object>, complete: &Object) -> bool {
    match held {
        None => complete.size() > 0 || !complete.join().is_empty(),
        Some(held) => held.sync(complete) != *held,
    }
}

/// The context a reply carries: everything the object has seen.
pub(crate) fn context_of(object: &Object) -> VersionVector {
    object.join()
}
