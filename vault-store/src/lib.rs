//! The vault's store on its data filesystem: write-once and content-addressed.
//!
//! ```text
//! store/
//!   packs/<id>.pack        chunk bytes, back to back           (immutable once indexed)
//!   packs/<id>.idx         which chunk is where, with a hash   (immutable; makes the pack live)
//!   snapshots/<snap>/      manifest + receipt                  (immutable; one atomic rename)
//!   staging/               sessions in flight                  (emptied at every start)
//! ```
//!
//! A push writes its new chunks to one staging pack. Sealing fsyncs the pack, renames it
//! into `packs/`, writes its index (fsync, rename), then writes the snapshot into a staging
//! directory (fsync) and renames that into `snapshots/` in one step: a snapshot is either
//! fully there or not there at all. Every sealed file is marked immutable
//! (FS_IMMUTABLE_FL), so not even the gatekeeper can change it. Nothing here deletes
//! anything sealed.

mod immutable;
mod index;
mod reader;
mod writer;

use std::path::PathBuf;

pub use immutable::{is_immutable, make_immutable, Sealing};
pub use index::ChunkLocation;
pub use reader::{SnapshotInfo, StoreReader};
pub use writer::{SealInput, Sealed, StagingPack, Store};

pub const PACKS_DIR: &str = "packs";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const STAGING_DIR: &str = "staging";
pub const MANIFEST_FILE: &str = "manifest";
pub const RECEIPT_FILE: &str = "receipt.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("disk full while writing {path}: push refused, sealed snapshots untouched")]
    DiskFull { path: PathBuf },
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("no sealed snapshot `{id}` in this store")]
    NoSnapshot { id: String },
    #[error("snapshot `{id}` already exists; refusing to overwrite")]
    SnapshotExists { id: String },
    #[error(transparent)]
    Core(#[from] vault_core::Error),
    #[error(transparent)]
    File(#[from] vault_io::IoError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Maps an I/O error at `path`, singling out a full disk (ENOSPC, EDQUOT).
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> StoreError {
    match source.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => StoreError::DiskFull { path: path.to_path_buf() },
        _ => StoreError::Io { path: path.to_path_buf(), source },
    }
}

/// Random lowercase hex from the OS (names of packs and staging entries).
pub(crate) fn random_hex(bytes: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf).expect("the OS gives randomness");
    vault_core::keys::hex(&buf)
}
