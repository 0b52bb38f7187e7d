//! The vault's store on its data filesystem: write-once and content-addressed.
//!
//! ```text
//! store/
//!   packs/<id>.pack        chunk bytes, back to back           (immutable once indexed)
//!   packs/<id>.idx         which chunk is where, with a hash   (immutable; makes the pack live)
//!   snapshots/<snap>/      manifest + receipt + owned          (immutable; one atomic rename)
//!   staging/               sessions in flight                  (emptied at every start)
//!   expired/               snapshots on their way out          (emptied at every start)
//! ```
//!
//! A push writes its new chunks to one staging pack. Sealing ([`Store::seal_observed`], one
//! [`SealStep`] each):
//!
//! 1. writes the snapshot's manifest, receipt and `owned` list (the chunks this seal gives its
//!    pusher) into a staging directory, each fsynced;
//! 2. fsyncs the pack; 3. renames it into `packs/`; 4. writes its index (fsync, rename, fsync
//!    `packs/`): the pack is live;
//! 5. marks pack, index and the snapshot's files immutable (FS_IMMUTABLE_FL), fsyncing each so
//!    the flag is durable;
//! 6. renames the staging directory into `snapshots/`: the snapshot is visible, fully there
//!    or not at all;
//! 7. marks the snapshot directory immutable and fsyncs it and `snapshots/`; only then does
//!    the gatekeeper send the receipt.
//!
//! Linux refuses to rename an immutable inode, so each file is flagged once it has its final
//! name, and the directory right after its rename. An error before step 6 refuses the push
//! and leaves no snapshot; from step 6 on the snapshot exists and a failure is a warning in
//! [`Sealed`], never a refusal. [`Store::open`] removes staging leftovers and packs without an
//! index, and re-applies the flag to every sealed file and directory that lacks it (a power
//! cut between steps 6 and 7, or flags lifted offline), reporting each in [`Recovery`].
//!
//! The store shares its filesystem with the vault's state, so pushes stop short of a full
//! disk: a [`Reserve`] (64 MiB and 1024 inodes by default) that `begin`, every few MiB of
//! staged data and every seal check against statvfs, counting what concurrent pushes were
//! promised. The one way a sealed snapshot leaves is [`Store::expire`] (see `expiry`), which the
//! gatekeeper calls only for what the retention rules of `vault_core::lifecycle` let go.

pub mod audit;
mod direct;
pub mod drill;
mod expiry;
pub mod export;
mod gc;
mod immutable;
mod index;
mod owners;
mod reader;
mod scrub;
mod signals;
mod space;
mod writer;

use std::path::PathBuf;

pub use direct::{cached_pages, CachedPages};
pub use expiry::{Expired, Unreadable};
pub use gc::{Collected, GcStep};
pub use immutable::{ensure_immutable, is_immutable, make_immutable, Sealing};
pub use index::{ChunkLocation, DamagedPack};
pub use reader::{check_store_dir, DamagedChunks, SnapshotHealth, StoreReader, MAX_OPEN_PACKS};
pub use scrub::{BadCopy, Scrubbed};
pub use signals::SignalsHistory;
pub use space::{fs_space, FsSpace, Reserve};
pub use writer::{Recovery, SealInput, SealStep, Sealed, StagedTable, StagingPack, Store};

pub const PACKS_DIR: &str = "packs";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const STAGING_DIR: &str = "staging";
/// Snapshots on their way out (see [`Store::expire`]); emptied at every open.
pub const EXPIRED_DIR: &str = "expired";
pub const MANIFEST_FILE: &str = "manifest";
pub const RECEIPT_FILE: &str = "receipt.json";
/// Copies of chunks a scrub found bad (see `scrub`); at the store's top.
pub const DAMAGED_CHUNKS_FILE: &str = "damaged-chunks";
/// Which chunks the seal gave the snapshot's pusher (see `owners`).
pub const OWNED_FILE: &str = "owned";
/// What the ransomware signals found in the snapshot (see `signals`); absent in snapshots
/// sealed before they existed.
pub const PROFILE_FILE: &str = "profile.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("disk full while writing {path}: push refused, sealed snapshots untouched")]
    DiskFull { path: PathBuf },
    #[error("{path}: corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// A directory given as a store that is none: missing, empty, or something else.
    #[error(
        "{path}: {found}, not a vault store: a store directory holds `snapshots/` and `packs/` (the gatekeeper's --store, /data/store on the vault's data disk); pass that directory, or a copy of it"
    )]
    NotAStore { path: PathBuf, found: &'static str },
    #[error("no sealed snapshot `{id}` in this store")]
    NoSnapshot { id: String },
    #[error("snapshot `{id}` already exists; refusing to overwrite")]
    SnapshotExists { id: String },
    /// A push would leave less than the reserve free (see [`Reserve`]).
    #[error("{}", space::disk_reserve_message(.free, .promised, .need, .reserve))]
    DiskReserve { free: u64, promised: u64, need: u64, reserve: u64 },
    #[error(
        "inode reserve: {free} inodes free on the store's filesystem, this push needs {need} more; pushes stop at {reserve} free so the vault's state can still be written: \
         expire or export snapshots, or give the vault a larger data disk"
    )]
    InodeReserve { free: u64, need: u64, reserve: u64 },
    #[error(transparent)]
    Export(export::ExportError),
    #[error(transparent)]
    Core(#[from] vault_core::Error),
    #[error(transparent)]
    File(#[from] vault_io::IoError),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store's decoders of its own files, for the fuzz targets (a disk restored offline may
/// have been altered by whoever held it). `Err` is the reason a file is refused.
#[doc(hidden)]
pub mod fuzzing {
    /// A pack index, checked whole against a pack of `pack_len` bytes.
    pub fn pack_index(bytes: &[u8], pack_len: u64) -> std::result::Result<(), String> {
        crate::index::check(bytes, pack_len)
    }

    /// A damaged-chunks list: its entries, and the bytes they encode back to.
    pub fn damaged_list(bytes: &[u8]) -> std::result::Result<(usize, Vec<u8>), String> {
        let bad = crate::scrub::decode(bytes)?;
        let again = crate::scrub::encode(&bad).map_err(|e| e.to_string())?;
        Ok((bad.len(), again))
    }

    /// An `owned` list: its ids, and the bytes they encode back to.
    pub fn owned_list(bytes: &[u8]) -> std::result::Result<(usize, Vec<u8>), String> {
        let ids = crate::owners::decode(bytes)?;
        let again = crate::owners::encode(&ids).map_err(|e| e.to_string())?;
        Ok((ids.len(), again))
    }
}

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
