//! The pure core of the air-gap vault.
//!
//! Everything that decides *whether* the vault may open and *who* may push lives here, as
//! plain functions over bytes and values: no sockets, no files, no clocks, no netlink. Time
//! is always passed in. The daemon (`gatekeeper`) and the CLI (`vaultctl`) do the I/O and
//! call into this crate, so every rule can be read top to bottom and tested without root.
//!
//! Reading order, as the data flows:
//! - [`units`]: timestamps, durations and byte sizes as people write them.
//! - [`keys`]: Ed25519 public keys, key ids, signature checks (ring).
//! - [`policy`]: what admins decide and sign. [`policy::root`] (the trust root baked into the
//!   image: admin keys, threshold, hard caps), the policy people author in TOML ([`policy`]
//!   itself), [`policy::schedule`] (when the link may be up, as a pure function of policy and
//!   time), [`policy::bundle`] (the signed bundle and its verification, following TUF's rules),
//!   [`policy::state`] (what the vault remembers between bundles: version floor, time floor,
//!   rotated root).
//! - [`link`]: the vault NIC. [`link::gate`] (the gatekeeper state machine: Sealed, Opening,
//!   Open, Closing, sans I/O) and [`link::egress`] (which frames the NIC may send while open:
//!   ARP replies, listener TCP, unicast ARP probes for the peers it replies to).
//! - [`gpt`]: the type of one GPT partition entry, which the appliance checks before it
//!   mounts its data partition.
//! - [`push`]: a push, in the order its data flows: [`push::chunk`] and [`push::manifest`]
//!   (what is sent), [`push::protocol`] (the frames, checked then parsed), [`push::limits`]
//!   (every bound a session and a window are held to), [`push::ingest`] (the vault's side of a
//!   session, sans-IO), [`push::receipt`] (what the vault signs when it seals), [`push::relay`]
//!   (how the unprivileged session worker hands the daemon what it read).
//! - [`lifecycle`]: what becomes of sealed snapshots over the years: [`lifecycle::retention`].
//! - [`audit`]: the evidence: every event a leaf of a Merkle tree ([`audit::merkle`]) kept as
//!   tiles ([`audit::tiles`]), summed up in signed checkpoints ([`audit::checkpoint`],
//!   [`audit::note`]) that leave the vault in every receipt.
//! - [`export`]: data leaving on removable media, encrypted to recipients: the medium
//!   ([`export::medium`]), what an export order selects ([`export::selection`]), and the signed
//!   export manifest ([`export::manifest`]).
#![forbid(unsafe_code)]

pub mod audit;
pub mod canonical;
pub mod error;
pub mod export;
pub mod gpt;
pub mod keys;
pub mod lifecycle;
pub mod link;
pub mod policy;
pub mod push;
pub mod units;
pub mod wire;

pub use error::{Error, PolicyError, PushError};
