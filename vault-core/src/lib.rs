//! The pure core of the air-gap vault.
//!
//! Everything that decides *whether* the vault may open and *who* may push lives here, as
//! plain functions over bytes and values: no sockets, no files, no clocks, no netlink. Time
//! is always passed in. The daemon (`gatekeeper`) and the CLI (`vaultctl`) do the I/O and
//! call into this crate, so every rule can be read top to bottom and tested without root.
//!
//! Reading order:
//! - [`units`]: timestamps, durations and byte sizes as people write them.
//! - [`keys`]: Ed25519 public keys, key ids, signature checks (ring).
//! - [`root`]: the trust root baked into the image: admin keys, threshold, hard caps.
//! - [`policy`]: the policy people author in TOML, validated into typed rules.
//! - [`schedule`]: when the link may be up, as a pure function of (policy, time).
//! - [`bundle`]: the signed bundle and its verification, following TUF's rules.
//! - [`egress`]: which frames the vault NIC may send while open (ARP replies, listener TCP,
//!   unicast ARP probes for the peers it replies to).
//! - [`gate`]: the gatekeeper state machine (Sealed, Opening, Open, Closing), sans I/O.
//! - [`state`]: what the vault remembers between bundles (version floor, time floor, root).
//! - [`chunk`], [`manifest`], [`protocol`]: the push protocol's data and frames.
//! - [`ingest`]: the vault's side of a push session, as a sans-IO state machine.
//! - [`receipt`]: what the vault signs when it seals a snapshot.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod canonical;
pub mod chunk;
pub mod egress;
pub mod error;
pub mod gate;
pub mod ingest;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod protocol;
pub mod receipt;
pub mod root;
pub mod schedule;
pub mod state;
pub mod units;
pub mod wire;

pub use error::Error;
