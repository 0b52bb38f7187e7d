//! The one canonical byte encoding of signed documents: compact JSON, fields in declaration
//! order, no optional field written when absent, integers and fixed-spelling strings only.
//! Decoding is strict (unknown and duplicate fields refused), and a signed document is only
//! accepted if re-encoding what it decoded to gives back exactly the signed bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// serde_json stops at 128 levels of nesting on its own; our documents need fewer than 8.
/// Inputs are size-capped by the caller before they reach this module.
pub fn encode<T: Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_vec(doc).expect("documents are plain structs, strings and integers")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Malformed { what, reason: e.to_string() })
}

/// Authored TOML (policy.toml, root.toml): bounded, then strictly decoded.
pub fn decode_toml<T: DeserializeOwned>(text: &str, limit: usize, what: &'static str) -> Result<T> {
    check_size(text.len(), limit, what)?;
    toml::from_str(text).map_err(|e| Error::Malformed { what, reason: e.to_string() })
}

/// Refuses `signed` unless it is byte for byte the canonical encoding of `canonical_doc`.
pub fn require_canonical<T: Serialize>(signed: &[u8], canonical_doc: &T, what: &'static str) -> Result<()> {
    if encode(canonical_doc) == signed {
        Ok(())
    } else {
        Err(Error::NonCanonical { what })
    }
}

/// Bounds an input's size before anything looks inside it.
pub fn check_size(bytes_len: usize, limit: usize, what: &'static str) -> Result<()> {
    if bytes_len > limit {
        return Err(Error::TooLarge { what, size: bytes_len, limit });
    }
    Ok(())
}

/// Identifiers (vault ids, admin and pusher names): short, printable, no path or shell
/// metacharacters, so they are safe in logs, file names and console lines.
pub fn check_identifier(field: &str, value: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let reason = if value.is_empty() || value.len() > 64 {
        Some(format!("`{}` must be 1 to 64 characters", value.escape_default()))
    } else if !value.chars().all(ok_char) {
        Some(format!("`{}` may only use letters, digits, `-`, `_` and `.`", value.escape_default()))
    } else if value.starts_with('.') {
        Some(format!("`{value}` may not start with `.`"))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidField { field: field.to_string(), reason }),
        None => Ok(()),
    }
}
