//! The requests a node serves for clients and the replies it gives, shared by every
//! transport (they are what the RPC layer puts on the wire).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A write (`value: Some`) or a delete (`value: None`, a tombstone) of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key.
    pub key: Bytes,
    /// The new value; `None` deletes.
    pub value: Option<Bytes>,
    /// The context token of the read this write supersedes; `None` adds a sibling.
    pub context: Option<String>,
    /// Acknowledgements to wait for; `None` takes `replication.w`.
    pub w: Option<usize>,
    /// Of them, how many must come from primaries (the key's owners, not fallbacks
    /// holding hints); `None` takes `replication.pw`, 0 is off (Riak's PW).
    pub pw: Option<usize>,
    /// Set by a node that forwards the request to a preference-list node, so that the
    /// receiver coordinates it instead of forwarding again.
    pub forwarded: bool,
    /// What is left of the client's deadline, in milliseconds, when the node that received
    /// the request forwards it: the forwarded call waits that long (not a peer call's
    /// deadline), so a slow replica cannot make the forwarder give up on a coordinator
    /// that succeeds. Set by the RPC layer.
    pub deadline_ms: Option<u64>,
}

impl PutRequest {
    /// A write of `value` under `key`, with no context and the default W.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: Some(value.into()),
            context: None,
            w: None,
            pw: None,
            forwarded: false,
            deadline_ms: None,
        }
    }

    /// A delete of `key`, with no context and the default W.
    pub fn delete(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            value: None,
            context: None,
            w: None,
            pw: None,
            forwarded: false,
            deadline_ms: None,
        }
    }

    /// With the context of a read.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// With a per-request W.
    pub fn with_w(mut self, w: usize) -> Self {
        self.w = Some(w);
        self
    }

    /// With a per-request PW.
    pub fn with_pw(mut self, pw: usize) -> Self {
        self.pw = Some(pw);
        self
    }
}

/// The answer to a write: the context of the written object, to pass to the next write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The context token.
    pub context: String,
    /// The version of the coordinator's current ring: a token-aware client that knows
    /// an older one refreshes its copy.
    pub ring_version: u64,
}

/// A read of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRequest {
    /// The key.
    pub key: Bytes,
    /// Replies to wait for; `None` takes `replication.r`.
    pub r: Option<usize>,
    /// Of them, how many must come from primaries; `None` takes `replication.pr`, 0 is
    /// off (Riak's PR).
    pub pr: Option<usize>,
}

impl GetRequest {
    /// A read of `key` with the default R.
    pub fn new(key: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            r: None,
            pr: None,
        }
    }

    /// With a per-request R.
    pub fn with_r(mut self, r: usize) -> Self {
        self.r = Some(r);
        self
    }

    /// With a per-request PR.
    pub fn with_pr(mut self, pr: usize) -> Self {
        self.pr = Some(pr);
        self
    }
}

/// The answer to a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReply {
    /// The sibling values; empty when the key is absent or deleted.
    pub values: Vec<Bytes>,
    /// The context token: pass it to the write that resolves these values.
    pub context: String,
    /// The version of the coordinator's current ring (see [`PutReply::ring_version`]).
    pub ring_version: u64,
}

/// What each replica of a key holds (no repair).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicasReply {
    /// One entry per replica asked, preference list first.
    pub replicas: Vec<ReplicaView>,
}

/// What one replica of a key holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    /// The node id.
    pub node: String,
    /// Its address.
    pub addr: String,
    /// `primary` (in the preference list) or `fallback` (holding a hint).
    pub role: String,
    /// Its live values (empty if none, or on error).
    pub values: Vec<Bytes>,
    /// Its context token, when it answered.
    pub context: Option<String>,
    /// Why it did not answer.
    pub error: Option<String>,
}
