//! The audit log: every event the vault records, as the leaves of an append-only Merkle tree
//! (RFC 6962 / RFC 9162 hashing, [`merkle`]), stored in the C2SP `tlog-tiles` layout ([`tiles`]),
//! summed up by C2SP `tlog-checkpoint` checkpoints ([`checkpoint`]) that the vault signs as C2SP
//! `signed-note`s ([`note`]) with its own key. A checkpoint travels out in every receipt with a
//! proof that it extends the one the pusher last saw, so every pusher is a witness: a log that was
//! rewound or forked cannot prove it.
//!
//! All of it is pure: the daemon reads and writes the files; these functions only hash, encode,
//! parse and check.

pub mod checkpoint;
pub mod merkle;
pub mod note;
pub mod tiles;
pub mod witness;

/// Why a log, a proof, a tile, a checkpoint or a note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("audit log not consistent: {0}")]
    Inconsistent(String),
    #[error("audit log: entry {index} is not in the tree: {reason}")]
    NotIncluded { index: u64, reason: String },
    #[error("audit log: {what} is missing: {reason}")]
    Missing { what: String, reason: String },
    #[error("audit log: malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("audit log: {what} is {size} bytes, limit {limit}")]
    TooLarge { what: &'static str, size: usize, limit: usize },
    #[error("audit log: signature on the checkpoint does not verify against {key}")]
    BadSignature { key: String },
    #[error("audit log: tile {path} does not match the tree: {reason}")]
    TileMismatch { path: String, reason: String },
}
