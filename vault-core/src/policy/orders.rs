//! Orders: signed objects beside the policy bundle that hold or release sealed snapshots, purge
//! them early, or veto a purge. They travel on the same USB stick and are verified by the same
//! rules as a bundle (TUF's): an envelope of the same shape with its own payload type and
//! signing context, distinct admin keys of the root in force counted over the exact payload
//! bytes, a strict and canonical payload, the vault id and the root's digest, a serial above the
//! last accepted one of that kind (rollback), not expired, not issued in the future.
//!
//! How many admins each kind needs follows from what it can cost:
//! - **hold** (one admin): stops expiry of the named snapshots or datasets; keeping data longer
//!   is always safe, so one signature is enough (a legal hold, a suspected incident);
//! - **release** (the quorum): lifts holds;
//! - **purge** (the quorum): deletes the named snapshots before their time, but only after the
//!   root's `purge_delay` (at least 72 hours) counted on the vault's clock from acceptance, and
//!   only if it has not expired by then; a held snapshot is never purged;
//! - **veto** (one admin): cancels a pending purge, named by the SHA-256 of its payload.
//! - **export** (the root's `export_threshold`): copies the named snapshots, encrypted to the
//!   order's `age` recipients, onto the removable medium it names, the next time that medium is
//!   inserted while the vault is sealed (see [`crate::export`]). It deletes nothing, so a root
//!   may ask for fewer signatures than a purge's; it waits until carried out or expired.
//!
//! Research notes (issue 15): S3 Object Lock in compliance mode can only extend; AWS's and
//! Veeam's four-eyes requests expire if not approved in time. A coerced quorum can start a purge,
//! but any one admin has three days to stop it, and everyone can see it on the console.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::canonical::{self, check_identifier};
use crate::error::PolicyError;
use crate::error::{Error, Result};
use crate::keys::hex;
use crate::lifecycle::retention::Holds;
use crate::policy::bundle::{highest_next, require_signers, Envelope, JudgedAt, CLOCK_PLAUSIBLE_AHEAD_SECS, CLOCK_TOLERANCE_SECS};
use crate::policy::root::TrustRoot;
use crate::units::Timestamp;

pub const ORDER_PAYLOAD_TYPE: &str = "application/vnd.airgap-vault.order+json;version=1";
/// What an admin's key signs for an order: never the same message as for a policy bundle.
pub const ORDER_SIGNING_CONTEXT: &str = "airgap-vault/order/v1";
/// Bounds on what one order names.
pub const MAX_ORDER_SNAPSHOTS: usize = 1000;
pub const MAX_ORDER_DATASETS: usize = 64;
pub const MAX_REASON_CHARS: usize = 500;
/// Purges waiting at once (more are refused until some execute, expire or are vetoed).
pub const MAX_PENDING_PURGES: usize = 64;
/// Snapshots and datasets held by orders at once. A hold needs one admin key: without a bound,
/// one key could grow the vault's state past what it reads back.
pub const MAX_HELD_SNAPSHOTS: usize = 1000;
pub const MAX_HELD_DATASETS: usize = 256;
/// The encoded order state at most (holds, waiting purges and exports, suspects): with the
/// rest of the vault's state it stays below [`crate::policy::state::MAX_STATE_BYTES`].
pub const MAX_ORDER_STATE_BYTES: usize = 160 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    Hold,
    Release,
    Purge,
    Veto,
    Export,
}

impl OrderKind {
    pub fn name(self) -> &'static str {
        match self {
            OrderKind::Hold => "hold",
            OrderKind::Release => "release",
            OrderKind::Purge => "purge",
            OrderKind::Veto => "veto",
            OrderKind::Export => "export",
        }
    }

    /// Signatures of distinct admin keys the kind needs under `root`.
    pub fn threshold(self, root: &TrustRoot) -> u32 {
        match self {
            OrderKind::Hold | OrderKind::Veto => 1,
            OrderKind::Release | OrderKind::Purge => root.threshold,
            OrderKind::Export => root.export_threshold,
        }
    }
}

/// A (pusher, dataset) an order names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDoc {
    pub pusher: String,
    pub dataset: String,
}

/// The signed payload, as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderDoc {
    pub vault_id: String,
    pub kind: OrderKind,
    /// Above the last accepted order of this kind.
    pub serial: u64,
    pub issued: String,
    pub expires: String,
    pub signed_for_root: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetDoc>,
    /// A veto: the SHA-256 (hex) of the purge order's payload it cancels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vetoes: Option<String>,
    /// An export: where to and for whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportSpec>,
    pub reason: String,
}

/// What an export order adds to the snapshots and datasets it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// The medium's id (`vaultctl media init` prints it): the export goes onto that disk only.
    pub medium: String,
    /// `age` X25519 recipients (`age1...`): every file that holds data is encrypted to all of them.
    pub recipients: Vec<String>,
    /// Of each named dataset, the newest this many snapshots (absent: 1, or every one since
    /// `since` when that is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u32>,
    /// Of each named dataset, only snapshots received at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// An order that parsed and passed every check of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub doc: OrderDoc,
    pub issued: Timestamp,
    pub expires: Timestamp,
}

impl Order {
    /// Strict decoding: every field checked, the bytes exactly the canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Order> {
        let doc: OrderDoc = canonical::decode(bytes, "order payload")?;
        canonical::require_canonical(bytes, &doc, "order payload")?;
        Order::from_doc(doc)
    }

    pub fn from_doc(doc: OrderDoc) -> Result<Order> {
        let invalid = |field: &str, reason: String| Error::InvalidField { field: field.to_string(), reason };
        check_identifier("vault_id", &doc.vault_id)?;
        if doc.serial == 0 {
            return Err(invalid("serial", "order serials start at 1".into()));
        }
        let issued = Timestamp::parse(&doc.issued).map_err(|r| invalid("issued", r))?;
        let expires = Timestamp::parse(&doc.expires).map_err(|r| invalid("expires", r))?;
        if expires <= issued {
            return Err(invalid("expires", format!("{expires} is not after issued {issued}")));
        }
        if doc.snapshots.len() > MAX_ORDER_SNAPSHOTS {
            return Err(invalid("snapshots", format!("{} snapshots, at most {MAX_ORDER_SNAPSHOTS}", doc.snapshots.len())));
        }
        if doc.datasets.len() > MAX_ORDER_DATASETS {
            return Err(invalid("datasets", format!("{} datasets, at most {MAX_ORDER_DATASETS}", doc.datasets.len())));
        }
        for (i, id) in doc.snapshots.iter().enumerate() {
            check_identifier(&format!("snapshots[{i}]"), id)?;
        }
        for (i, d) in doc.datasets.iter().enumerate() {
            check_identifier(&format!("datasets[{i}].pusher"), &d.pusher)?;
            check_identifier(&format!("datasets[{i}].dataset"), &d.dataset)?;
        }
        let unique = |n: usize, set: usize| n == set;
        if !unique(doc.snapshots.len(), doc.snapshots.iter().collect::<BTreeSet<_>>().len()) || !unique(doc.datasets.len(), doc.datasets.iter().collect::<BTreeSet<_>>().len()) {
            return Err(invalid("snapshots", "a snapshot or dataset is named twice".into()));
        }
        let reason_chars = doc.reason.chars().count();
        if doc.reason.trim().is_empty() || reason_chars > MAX_REASON_CHARS || doc.reason.chars().any(char::is_control) {
            return Err(invalid("reason", format!("must say why in 1 to {MAX_REASON_CHARS} characters of one line")));
        }
        match (doc.kind, &doc.export) {
            (OrderKind::Export, Some(spec)) => crate::export::check_spec(spec, doc.datasets.is_empty())?,
            (OrderKind::Export, None) => return Err(invalid("export", "an export order says onto which medium and for which recipients".into())),
            (_, Some(_)) => return Err(invalid("export", format!("only an export order names a medium; this is a {}", doc.kind.name()))),
            _ => {}
        }
        let targets = doc.snapshots.len() + doc.datasets.len();
        match (doc.kind, targets, &doc.vetoes) {
            (OrderKind::Veto, 0, Some(id)) if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {}
            (OrderKind::Veto, _, _) => return Err(invalid("vetoes", "a veto names one purge order by the hex SHA-256 of its payload, and nothing else".into())),
            (_, _, Some(_)) => return Err(invalid("vetoes", format!("only a veto names a purge order; this is a {}", doc.kind.name()))),
            (_, 0, None) => return Err(invalid("snapshots", format!("a {} order names at least one snapshot or dataset", doc.kind.name()))),
            _ => {}
        }
        Ok(Order { doc, issued, expires })
    }

    pub fn kind(&self) -> OrderKind {
        self.doc.kind
    }
}

/// An order ready for its first signature ([`Envelope::sign_in`] with [`ORDER_SIGNING_CONTEXT`]).
pub fn unsigned(doc: &OrderDoc) -> Envelope {
    use base64::Engine as _;
    Envelope { payload_type: ORDER_PAYLOAD_TYPE.to_string(), payload: base64::engine::general_purpose::STANDARD.encode(canonical::encode(doc)), signatures: Vec::new() }
}

/// A purge accepted and waiting out its cooling-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingPurge {
    /// Hex SHA-256 of its payload: what a veto names.
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetDoc>,
    pub reason: String,
    pub signers: Vec<String>,
    pub accepted_at: String,
    /// Not before this (acceptance plus the root's purge_delay).
    pub executes_at: String,
    /// Not at or after this: then it lapses, having deleted nothing.
    pub expires: String,
    /// The root's `min_retain` when it was accepted: nothing younger goes. Absent in purges
    /// accepted before the rule existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retain: Option<String>,
}

impl PendingPurge {
    /// The root's `min_retain` it carries (zero when absent); `Err` for a value that does not
    /// parse, and then the purge must not run.
    pub fn min_retain(&self) -> std::result::Result<crate::units::Duration, String> {
        self.min_retain.as_deref().map_or(Ok(crate::units::Duration::ZERO), crate::units::Duration::parse)
    }

    /// Whether it names the snapshot, by id or by its (pusher, dataset).
    pub fn names(&self, snapshot: &crate::lifecycle::retention::SealedSnapshot) -> bool {
        self.snapshots.contains(&snapshot.id) || self.datasets.iter().any(|d| d.pusher == snapshot.pusher && d.dataset == snapshot.dataset)
    }
}

/// What the vault remembers of orders: the serial floor of each kind, the holds in force, the
/// purges waiting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderState {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub serials: BTreeMap<OrderKind, u64>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub held_snapshots: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub held_datasets: BTreeSet<DatasetDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_purges: Vec<PendingPurge>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_exports: Vec<PendingExport>,
    /// Datasets the ransomware signals held (see [`OrderState::hold_suspect`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<SuspectHold>,
}

/// A hold the vault placed itself when a snapshot was judged suspect: every snapshot of the
/// dataset (of every dataset of the pusher, when `dataset` is absent) is kept until a
/// release order names the dataset or the suspect snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuspectHold {
    pub pusher: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The first suspect snapshot: its receipt and the audit log say which signals fired.
    pub snapshot: String,
    pub at: String,
}

/// Datasets of one pusher held by their own suspect holds; past this the pusher's holds
/// become one hold on all its datasets, so a pusher key cannot grow the state file.
pub const MAX_SUSPECT_DATASETS_PER_PUSHER: usize = 8;

/// An export accepted and waiting for its medium.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingExport {
    /// Hex SHA-256 of its payload: what the export's manifest names as its order.
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetDoc>,
    pub export: ExportSpec,
    pub reason: String,
    pub signers: Vec<String>,
    pub accepted_at: String,
    /// Not carried out at or after this: then it lapses.
    pub expires: String,
}

/// Exports waiting at once.
pub const MAX_PENDING_EXPORTS: usize = 16;

impl OrderState {
    pub fn is_empty(&self) -> bool {
        *self == OrderState::default()
    }

    /// The holds in force, as the retention rules take them: the orders' and the suspects'.
    pub fn holds(&self) -> Holds {
        let mut datasets: BTreeSet<(String, String)> = self.held_datasets.iter().map(|d| (d.pusher.clone(), d.dataset.clone())).collect();
        let mut pushers = BTreeSet::new();
        for hold in &self.suspects {
            match &hold.dataset {
                Some(dataset) => datasets.insert((hold.pusher.clone(), dataset.clone())),
                None => pushers.insert(hold.pusher.clone()),
            };
        }
        Holds { snapshots: self.held_snapshots.clone(), datasets, pushers }
    }

    /// Holds `pusher`'s `dataset` because `snapshot` was judged suspect at `at`. A dataset
    /// already held keeps its first suspect; a pusher with
    /// [`MAX_SUSPECT_DATASETS_PER_PUSHER`] held datasets gets one hold on all of them.
    pub fn hold_suspect(&mut self, pusher: &str, dataset: &str, snapshot: &str, at: Timestamp) {
        let covered = |h: &SuspectHold| h.pusher == pusher && h.dataset.as_deref().is_none_or(|d| d == dataset);
        if self.suspects.iter().any(covered) {
            return;
        }
        let hold = SuspectHold { pusher: pusher.to_string(), dataset: Some(dataset.to_string()), snapshot: snapshot.to_string(), at: at.to_string() };
        if self.suspects.iter().filter(|h| h.pusher == pusher).count() >= MAX_SUSPECT_DATASETS_PER_PUSHER {
            self.suspects.retain(|h| h.pusher != pusher);
            self.suspects.push(SuspectHold { dataset: None, ..hold });
        } else {
            self.suspects.push(hold);
        }
    }

    /// Pushers with a suspect hold: refused in every window when the policy says so.
    pub fn suspect_pushers(&self) -> BTreeSet<String> {
        self.suspects.iter().map(|h| h.pusher.clone()).collect()
    }
}

impl OrderState {
    /// A release naming a held dataset, or a suspect snapshot, ends its suspect hold.
    fn release_suspects(&mut self, snapshots: &[String], datasets: &[DatasetDoc]) {
        self.suspects.retain(|h| {
            let named = |d: &DatasetDoc| d.pusher == h.pusher && h.dataset.as_deref() == Some(d.dataset.as_str());
            !snapshots.contains(&h.snapshot) && !datasets.iter().any(named)
        });
    }
}

/// An order that passed, what it changes, and the state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub kind: OrderKind,
    /// Hex SHA-256 of the payload.
    pub id: String,
    pub signers: Vec<String>,
    pub reason: String,
    pub state: OrderState,
    /// For a purge: when it may execute.
    pub executes_at: Option<Timestamp>,
}

/// Whether a snapshot id names a sealed snapshot of this vault: a hold may name only those
/// (ids are the vault's own, never predictable, so one not there now never will be).
pub trait SnapshotInventory {
    fn has_snapshot(&self, id: &str) -> bool;
}

/// For checks made away from the vault (`vaultctl order check`), which cannot know: every
/// snapshot is taken to exist, and the vault checks again when the order arrives.
pub struct AnySnapshot;

impl SnapshotInventory for AnySnapshot {
    fn has_snapshot(&self, _id: &str) -> bool {
        true
    }
}

/// Verifies an order read once into memory against the root in force and the vault's order
/// state, and applies it: checks in the order a bundle's are made, stopping at the first.
/// Holds may name only snapshots `inventory` has.
pub fn verify(bytes: &[u8], root: &TrustRoot, state: &OrderState, at: JudgedAt, time_floor: Timestamp, inventory: &impl SnapshotInventory) -> Result<Accepted> {
    let envelope = Envelope::from_bytes_of(bytes, ORDER_PAYLOAD_TYPE)?;
    let payload = envelope.payload_bytes()?;
    // Who signed is counted before the payload is parsed; how many it takes depends on the
    // kind, so the least any kind needs (one) is required first, then the kind's own.
    require_signers(format!("root v{}", root.version), root, 1, ORDER_SIGNING_CONTEXT, &payload, &envelope.signatures)?;
    let order = Order::from_bytes(&payload)?;
    let kind = order.kind();
    let signers = require_signers(format!("a {} order under root v{}", kind.name(), root.version), root, kind.threshold(root), ORDER_SIGNING_CONTEXT, &payload, &envelope.signatures)?;
    if order.doc.vault_id != root.vault_id {
        return Err(Error::Policy(PolicyError::WrongVault { bundle: order.doc.vault_id, vault: root.vault_id.clone() }));
    }
    if order.doc.signed_for_root != root.digest() {
        return Err(Error::Policy(PolicyError::WrongTrustRoot { bundle: order.doc.signed_for_root, vault: root.digest() }));
    }
    // A veto is not held to the serial floor: it names one purge by the hash of its payload,
    // and every purge's payload is new (purge serials rise), so a replayed veto can only cancel
    // the purge it was signed for. A veto is then never refused for a serial spent before.
    let floor = state.serials.get(&kind).copied().unwrap_or(0);
    if kind != OrderKind::Veto {
        let (serial, highest) = (order.doc.serial, highest_next(floor));
        if serial <= floor {
            return Err(Error::Policy(PolicyError::OrderRollback { kind: kind.name(), serial, accepted: floor }));
        }
        if serial > highest {
            return Err(Error::Policy(PolicyError::OrderSerialLeap { kind: kind.name(), serial, accepted: floor, highest }));
        }
    }
    let now = if at.clock_trusted { at.now.max(time_floor) } else { time_floor };
    if order.expires <= now {
        return Err(Error::Policy(PolicyError::Expired { expires: order.expires, now }));
    }
    let ahead = if at.clock_trusted { CLOCK_TOLERANCE_SECS } else { CLOCK_PLAUSIBLE_AHEAD_SECS };
    if order.issued.secs_since(now) > ahead {
        return Err(Error::Policy(PolicyError::IssuedInFuture { issued: order.issued, now, tolerance_secs: ahead }));
    }
    let id = hex(ring::digest::digest(&ring::digest::SHA256, &payload).as_ref());
    let mut next = state.clone();
    if kind != OrderKind::Veto {
        next.serials.insert(kind, order.doc.serial);
    }
    let mut executes_at = None;
    match kind {
        OrderKind::Hold => {
            if let Some(missing) = order.doc.snapshots.iter().find(|id| !inventory.has_snapshot(id)) {
                return Err(Error::InvalidField {
                    field: "snapshots".into(),
                    reason: format!("the vault has no snapshot `{missing}`: a hold names sealed snapshots (the console's snapshot lines and the receipts give their ids), or datasets"),
                });
            }
            next.held_snapshots.extend(order.doc.snapshots.iter().cloned());
            next.held_datasets.extend(order.doc.datasets.iter().cloned());
            for (field, held, limit) in [("snapshots", next.held_snapshots.len(), MAX_HELD_SNAPSHOTS), ("datasets", next.held_datasets.len(), MAX_HELD_DATASETS)] {
                if held > limit {
                    return Err(Error::InvalidField {
                        field: field.into(),
                        reason: format!("the hold would make {held} held {field}, at most {limit}: hold whole datasets instead of their snapshots, or have the quorum release holds no longer needed"),
                    });
                }
            }
        }
        OrderKind::Release => {
            for id in &order.doc.snapshots {
                next.held_snapshots.remove(id);
            }
            for d in &order.doc.datasets {
                next.held_datasets.remove(d);
            }
            next.release_suspects(&order.doc.snapshots, &order.doc.datasets);
        }
        OrderKind::Purge => {
            let at = now.saturating_add(root.caps.purge_delay);
            if order.expires <= at {
                return Err(Error::InvalidField {
                    field: "expires".into(),
                    reason: format!("the purge would lapse ({}) before its cooling-off ends ({at}, {} after acceptance): sign one that expires later", order.expires, root.caps.purge_delay),
                });
            }
            if next.pending_purges.len() >= MAX_PENDING_PURGES {
                return Err(Error::InvalidField { field: "purge".into(), reason: format!("{MAX_PENDING_PURGES} purges are already waiting; veto or wait for some first") });
            }
            next.pending_purges.push(PendingPurge {
                id: id.clone(),
                snapshots: order.doc.snapshots.clone(),
                datasets: order.doc.datasets.clone(),
                reason: order.doc.reason.clone(),
                signers: signers.clone(),
                accepted_at: now.to_string(),
                executes_at: at.to_string(),
                expires: order.expires.to_string(),
                min_retain: Some(root.caps.min_retain.to_string()),
            });
            executes_at = Some(at);
        }
        OrderKind::Export => {
            if next.pending_exports.len() >= MAX_PENDING_EXPORTS {
                return Err(Error::InvalidField {
                    field: "export".into(),
                    reason: format!("{MAX_PENDING_EXPORTS} exports are already waiting for their media; insert those or let them expire first"),
                });
            }
            next.pending_exports.push(PendingExport {
                id: id.clone(),
                snapshots: order.doc.snapshots.clone(),
                datasets: order.doc.datasets.clone(),
                export: order.doc.export.clone().expect("an export order names its medium (checked)"),
                reason: order.doc.reason.clone(),
                signers: signers.clone(),
                accepted_at: now.to_string(),
                expires: order.expires.to_string(),
            });
        }
        OrderKind::Veto => {
            let vetoed = order.doc.vetoes.as_deref().expect("a veto names a purge (checked)");
            let before = next.pending_purges.len();
            next.pending_purges.retain(|p| p.id != vetoed);
            if next.pending_purges.len() == before {
                return Err(Error::InvalidField { field: "vetoes".into(), reason: format!("no purge order {vetoed} is waiting (it executed, lapsed or was vetoed already)") });
            }
        }
    }
    let encoded = canonical::encode(&next).len();
    if encoded > MAX_ORDER_STATE_BYTES {
        return Err(Error::InvalidField {
            field: kind.name().into(),
            reason: format!(
                "accepting it would make the vault's order state {encoded} bytes, at most {MAX_ORDER_STATE_BYTES}: name fewer snapshots (datasets instead), or wait until waiting purges and exports are done or released holds free room"
            ),
        });
    }
    Ok(Accepted { kind, id, signers, reason: order.doc.reason, state: next, executes_at })
}

/// What the waiting purges come to at vault time `now`: those whose cooling-off is over (to
/// carry out), and those that lapsed. Both leave the state returned.
pub fn purges_due(state: &OrderState, now: Timestamp) -> (Vec<PendingPurge>, Vec<PendingPurge>, OrderState) {
    let (mut due, mut lapsed) = (Vec::new(), Vec::new());
    let mut next = state.clone();
    next.pending_purges.clear();
    for purge in &state.pending_purges {
        let (Ok(executes_at), Ok(expires)) = (Timestamp::parse(&purge.executes_at), Timestamp::parse(&purge.expires)) else {
            lapsed.push(purge.clone());
            continue;
        };
        if now >= expires {
            lapsed.push(purge.clone());
        } else if now >= executes_at {
            due.push(purge.clone());
        } else {
            next.pending_purges.push(purge.clone());
        }
    }
    (due, lapsed, next)
}

/// The exports waiting for `medium` at vault time `now` (oldest accepted first), and the state
/// without those that lapsed.
pub fn exports_for(state: &OrderState, medium: &str, now: Timestamp) -> (Vec<PendingExport>, OrderState) {
    let mut next = state.clone();
    next.pending_exports.retain(|e| Timestamp::parse(&e.expires).is_ok_and(|expires| now < expires));
    let due = next.pending_exports.iter().filter(|e| e.export.medium == medium).cloned().collect();
    (due, next)
}

/// The state once export `id` is carried out: it does not run again.
pub fn export_done(state: &OrderState, id: &str) -> OrderState {
    let mut next = state.clone();
    next.pending_exports.retain(|e| e.id != id);
    next
}

#[cfg(test)]
#[path = "orders_tests.rs"]
mod tests;
