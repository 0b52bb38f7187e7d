//! Ransomware signals at ingest. The vault is the one place that sees every night's data
//! from outside a network that may be compromised; these rules notice when what arrives
//! looks like last night's files encrypted. In the order data flows: each arriving chunk is
//! [`probe`]d as the session holds it; at commit its files are [`assess`]ed against the
//! dataset's history, and the snapshot's [`profile`] is sealed beside its manifest for the
//! next one. A suspect snapshot is still sealed (the vault never drops data): it is marked
//! in its receipt and the audit log, and the daemon holds the dataset's earlier snapshots.

/// Off only in `make bench`'s comparison build (the `without-signals` feature): then no chunk
/// is probed, no snapshot judged and no profile sealed.
pub const ENABLED: bool = !cfg!(feature = "without-signals");

pub mod assess;
pub mod probe;
pub mod profile;

#[cfg(test)]
mod tests;

pub use assess::{arrived_file, assess, Arrived, Assessment, History, Signal, SignalKind};
pub use probe::{probe_chunk, ChunkProbe};
pub use profile::{FileFacts, FileMark, PathAt, Previous, Profile};
