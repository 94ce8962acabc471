//! The errors of a request, as clients see them (they cross the wire unchanged).

use serde::{Deserialize, Serialize};

/// Why a request failed. It is serializable because a forwarded request's error travels
/// back through the node that forwarded it, and on to the client, unchanged.
///
/// Every variant maps to one of the contract's error kinds ([`Error::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is wrong (key or value too large, bad R/W, malformed context).
    /// Nothing was stored.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A key already holds too many concurrent values for a write that does not resolve
    /// them. Nothing was stored.
    #[error(
        "key {key:?} would hold {count} sibling values, more than limits.max_siblings = {max}; \
         read it and write back with its context to resolve them"
    )]
    TooManySiblings {
        /// The key (lossy UTF-8).
        key: String,
        /// The siblings the write would have left.
        count: usize,
        /// `limits.max_siblings`.
        max: usize,
    },
    /// Fewer replicas than required answered within the deadline. For a write, the
    /// replicas that did acknowledge keep it (the write is not undone).
    #[error("quorum not reached: {required} {what} required, {succeeded} obtained{}", fmt_errors(.errors))]
    QuorumNotReached {
        /// `acknowledgements` (writes) or `replies` (reads).
        what: String,
        /// R or W.
        required: usize,
        /// How many succeeded.
        succeeded: usize,
        /// What went wrong with the others, one line per replica.
        errors: Vec<String>,
    },
    /// No node that could serve the request was reachable, or the node has no ring yet.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A node did not answer in time.
    #[error("timeout: {0}")]
    Timeout(String),
    /// A failure inside a node (storage, a corrupt stored object).
    #[error("internal error: {0}")]
    Internal(String),
}

fn fmt_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    }
}

impl Error {
    /// The contract's error kind: `invalid_argument`, `quorum_not_reached`, `timeout`,
    /// `unavailable` or `internal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) | Self::TooManySiblings { .. } => "invalid_argument",
            Self::QuorumNotReached { .. } => "quorum_not_reached",
            Self::Unavailable(_) => "unavailable",
            Self::Timeout(_) => "timeout",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<dotkv_storage::Error> for Error {
    fn from(error: dotkv_storage::Error) -> Self {
        Self::Internal(format!("storage: {error}"))
    }
}

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
