//! Causality tracking for dotkv: dotted version vector sets (DVVS) and client contexts.
//!
//! Dynamo (DeCandia et al., SOSP 2007, §4.4) never refuses a write: replicas accept writes
//! concurrently, and the store must tell a write that *replaces* a value from one that is
//! *concurrent* with it, so that concurrent writes come back to the reader as siblings
//! instead of being silently lost. Dynamo used vector clocks per client or per server;
//! dotkv uses dotted version vector sets (Almeida, Baquero, Gonçalves, Preguiça, Fonte,
//! "Scalable and Accurate Causality Tracking for Eventually Consistent Stores", DAIS 2014),
//! the mechanism of Riak KV's `dvv_enabled` and Garage K2V's causality tokens: one entry
//! per *replica* (server) id, however many clients write, and each sibling tagged with the
//! event (dot) that wrote it, so that causality stays exact.
//!
//! # A worked example
//!
//! Two clients write key `k` with no context; coordinator `A` registers both. Each write
//! gets its own dot, `(A,1)` and `(A,2)`, and since neither client had seen the other's
//! write, both survive:
//!
//! ```
//! use dotkv_versioning::{DvvSet, ReplicaId, VersionVector};
//! let a = ReplicaId(0xA);
//! let stored = DvvSet::default();
//! let stored = stored.update(&VersionVector::new(), "red", a);   // client 1, no context
//! let stored = stored.update(&VersionVector::new(), "blue", a);  // client 2, no context
//! assert_eq!(stored.size(), 2);                                   // siblings: red, blue
//!
//! // Client 3 reads both siblings and the context {A:2}, and writes a reconciled value.
//! let context = stored.join();
//! let stored = stored.update(&context, "purple", a);
//! assert_eq!(stored.values(), vec![&"purple"]);                   // both replaced
//!
//! // A client holding a stale context ({A:2}) writes again: the value written since
//! // (purple, dot (A,3)) was not in its context, so it survives as a sibling.
//! let stored = stored.update(&context, "green", a);
//! assert_eq!(stored.size(), 2);
//! ```
//!
//! Replicas exchange whole sets and merge them with [`DvvSet::sync`]; the client sees the
//! [`VersionVector`] of a read as an opaque [`ContextToken`].
//!
//! # Key types
//!
//! - [`ReplicaId`], [`Dot`], [`VersionVector`]: the vocabulary of causality.
//! - [`DvvSet`]: the stored object (generic over the value; dotkv stores an
//!   `Option`-like value so that a delete is a tombstone sibling).
//! - [`ContextToken`]: the context as compact base64url text for clients.
//! - [`encode`] / [`decode`]: the versioned binary encoding for storage and the wire.
//!
//! This crate is pure: no IO, no async. Non-goals: pruning of replica ids (ids are
//! servers, so their number is bounded by the cluster's history), wall-clock time.
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod codec;
mod dvvset;
mod vv;

pub use codec::{ContextToken, DecodeError, MAX_TOKEN_CHARS, decode, encode};
pub use dvvset::DvvSet;
pub use vv::{Dot, ReplicaId, VersionVector};
