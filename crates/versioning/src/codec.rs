//! Encodings: the versioned binary form of a [`DvvSet`] (storage and wire), and the
//! client's [`ContextToken`].
//!
//! Both start with a format-version byte, then a postcard (varint) encoding. Decoding
//! checks the version, refuses trailing bytes and re-checks every structural invariant, so
//! malformed, truncated or hostile input gives a [`DecodeError`], never a panic; and it
//! allocates in proportion to the input (serde caps a length prefix's pre-allocation, and
//! each element must be present in the input).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{DvvSet, VersionVector};

/// The format-version byte of an encoded [`DvvSet`].
const SET_FORMAT: u8 = 1;
/// The format-version byte of a context token.
const TOKEN_FORMAT: u8 = 1;
/// The longest token accepted, in characters (about 1 000 replica ids).
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// Why bytes or a token could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// No bytes at all.
    #[error("empty input")]
    Empty,
    /// A format-version byte this build does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// A token longer than [`MAX_TOKEN_CHARS`].
    #[error("context token of {len} characters exceeds the limit of {max}")]
    TooLong {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A token that is not base64url.
    #[error("context token is not base64url: {0}")]
    Base64(String),
    /// Bytes that do not decode (truncated, trailing bytes, wrong types).
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// A structure that decodes but breaks an invariant.
    #[error("invalid structure: {0}")]
    Invalid(&'static str),
}

/// Encodes a set for storage or the wire.
///
/// ```
/// use dotkv_versioning::{DvvSet, ReplicaId, VersionVector, decode, encode};
/// let set = DvvSet::default().update(&VersionVector::new(), b"v".to_vec(), ReplicaId(1));
/// let bytes = encode(&set);
/// assert_eq!(decode::<Vec<u8>>(&bytes).unwrap(), set);
/// ```
pub fn encode<V: Serialize>(set: &DvvSet<V>) -> Vec<u8> {
    let mut out = vec![SET_FORMAT];
    // Serializing plain data into a Vec cannot fail.
    postcard::to_io(set, &mut out).expect("postcard encoding into a Vec");
    out
}

/// Decodes what [`encode`] produced.
///
/// # Errors
///
/// A [`DecodeError`] for anything that is not a well-formed set of this format.
pub fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<DvvSet<V>, DecodeError> {
    let body = versioned_body(bytes, SET_FORMAT)?;
    let set: DvvSet<V> = from_exact_bytes(body)?;
    set.check().map_err(DecodeError::Invalid)?;
    Ok(set)
}

fn versioned_body(bytes: &[u8], format: u8) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        None => Err(DecodeError::Empty),
        Some((&version, body)) if version == format => Ok(body),
        Some((&version, _)) => Err(DecodeError::UnknownVersion(version)),
    }
}

fn from_exact_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// A client's causal context: the [`VersionVector`] of what it read, as opaque,
/// URL-safe text (`base64url` of a versioned binary encoding).
///
/// ```
/// use dotkv_versioning::{ContextToken, ReplicaId, VersionVector};
/// let vv: VersionVector = [(ReplicaId(1), 3), (ReplicaId(9), 1)].into_iter().collect();
/// let token = ContextToken::from(&vv);
/// assert_eq!(token.as_str().parse::<ContextToken>().unwrap().version_vector(), &vv);
/// assert!("not a token!".parse::<ContextToken>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextToken {
    text: String,
    vv: VersionVector,
}

impl ContextToken {
    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The version vector the token carries.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Consumes the token, returning its version vector.
    pub fn into_version_vector(self) -> VersionVector {
        self.vv
    }

    /// Decodes the binary form of a token (after base64).
    pub fn decode_bytes(bytes: &[u8]) -> Result<VersionVector, DecodeError> {
        from_exact_bytes(versioned_body(bytes, TOKEN_FORMAT)?)
    }

    /// The binary form of a token (before base64).
    pub fn encode_bytes(vv: &VersionVector) -> Vec<u8> {
        let mut out = vec![TOKEN_FORMAT];
        postcard::to_io(vv, &mut out).expect("postcard encoding into a Vec");
        out
    }
}

impl From<&VersionVector> for ContextToken {
    fn from(vv: &VersionVector) -> Self {
        Self {
            text: URL_SAFE_NO_PAD.encode(Self::encode_bytes(vv)),
            vv: vv.clone(),
        }
    }
}

impl FromStr for ContextToken {
    type Err = DecodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_TOKEN_CHARS {
            return Err(DecodeError::TooLong {
                len: text.len(),
                max: MAX_TOKEN_CHARS,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| DecodeError::Base64(e.to_string()))?;
        let vv = Self::decode_bytes(&bytes)?;
        Ok(Self {
            text: text.to_owned(),
            vv,
        })
    }
}

impl fmt::Display for ContextToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
