//! The one error type of the core. Each refusal is its own variant, and its message names
//! the rule that refused and the values that broke it, so an operator reading a console line
//! knows what to fix without reading code. Refusals are nested by subsystem, as rustls nests
//! `Error::InvalidMessage(InvalidMessage)`: [`Error::Policy`] for the trust root, bundles and
//! orders, [`Error::Push`] for push sessions, [`Error::Audit`] for the audit log; what any
//! decoder can say (too large, malformed, not canonical, an invalid field) stays at the top.

use crate::units::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // --- input that cannot even be read -------------------------------------------------
    #[error("too large: {what} is {size} bytes, limit {limit}")]
    TooLarge { what: &'static str, size: usize, limit: usize },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("non-canonical {what}: the signed bytes are not the canonical encoding of what they decode to")]
    NonCanonical { what: &'static str },
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },

    // --- signed policy: the trust root, bundles and orders, verified as TUF verifies ------
    #[error(transparent)]
    Policy(#[from] PolicyError),

    // --- push sessions: each is also a refusal the vault sends before closing -------------
    #[error(transparent)]
    Push(#[from] PushError),

    // --- the audit log --------------------------------------------------------------------
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}

/// Refusals of the policy subsystem (`policy/`): the trust root, bundles and orders, each
/// naming the rule and the values that broke it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    // --- trust root -----------------------------------------------------------------------
    #[error("root: admin key {key_id} is listed more than once (as `{first}` and `{second}`)")]
    DuplicateAdminKey { key_id: String, first: String, second: String },
    #[error("root: threshold {threshold} must be between 1 and the number of admin keys ({admins})")]
    BadThreshold { threshold: u32, admins: usize },
    #[error("state: stored trust root v{stored} and baked trust root v{baked} differ at the same version")]
    RootConflict { stored: u64, baked: u64 },

    // --- bundle verification, in the order the checks run ---------------------------------
    #[error("wrong payload type: `{found}`, expected `{expected}`")]
    WrongPayloadType { found: String, expected: &'static str },
    #[error("too many signatures: {count}, limit {limit}")]
    TooManySignatures { count: usize, limit: usize },
    #[error("threshold not met for {role}: {valid} valid signature(s) from distinct admin keys, need {threshold} ({invalid} invalid, {unknown} from unknown key ids, {repeated} repeated){}", why_invalid(.reasons))]
    ThresholdNotMet {
        role: String,
        valid: usize,
        threshold: u32,
        invalid: usize,
        unknown: usize,
        repeated: usize,
        /// Why each known admin's invalid signature failed (a security key without user
        /// presence, a wrong namespace...): at most one per signature, and signatures are bounded.
        reasons: Vec<String>,
    },
    #[error("wrong vault: bundle is for vault `{bundle}`, this is vault `{vault}`")]
    WrongVault { bundle: String, vault: String },
    #[error("wrong trust root: bundle was signed for root {bundle}, this vault trusts root {vault}")]
    WrongTrustRoot { bundle: String, vault: String },
    #[error("the accepted bundle carries policy version {found}, the vault's state names version {expected}")]
    AcceptedVersion { found: u64, expected: u64 },
    #[error("root rotation: must go from version {current} to exactly {expected}, bundle carries version {found}")]
    RotationVersion { current: u64, expected: u64, found: u64 },
    #[error("root rotation: new root is for vault `{found}`, this is vault `{vault}`")]
    RotationVault { found: String, vault: String },
    #[error("rollback: version {version} <= accepted {accepted}")]
    Rollback { version: u64, accepted: u64 },
    #[error("version {version} leaps too far: the accepted version is {accepted}, and a new one may be at most {highest} (2^32 above it), so that no version can freeze the ones after it; sign it with a version in that range")]
    VersionLeap { version: u64, accepted: u64, highest: u64 },
    #[error("expired: bundle expired at {expires}, vault time is {now}")]
    Expired { expires: Timestamp, now: Timestamp },
    #[error("issued in the future: issued {issued}, vault time is {now} (tolerance {tolerance_secs}s)")]
    IssuedInFuture { issued: Timestamp, now: Timestamp, tolerance_secs: i64 },
    #[error("cap exceeded: {what} is {value}, the trust root allows at most {cap}")]
    CapExceeded { what: String, value: String, cap: String },
    #[error("rollback: {kind} order serial {serial} <= accepted {accepted}; sign a new {kind} order with a serial above {accepted}")]
    OrderRollback { kind: &'static str, serial: u64, accepted: u64 },
    #[error("{kind} order serial {serial} leaps too far: the last accepted is {accepted}, and a new one may be at most {highest} (2^32 above it), so that no serial can freeze the ones after it; sign it with a serial in that range")]
    OrderSerialLeap { kind: &'static str, serial: u64, accepted: u64, highest: u64 },
    #[error("pusher `{pusher}` keeps snapshots for {retain}, shorter than the trust root's min_retain {min_retain}: raise its `retain` (the root's floor can only be lowered by rotating the root)")]
    RetainBelowMinimum { pusher: String, retain: String, min_retain: String },
    #[error("pusher `{pusher}` uses admin key `{admin}`: admin keys may not push")]
    PusherIsAdmin { pusher: String, admin: String },
}

/// Refusals of a push session (`push/`): each is also what the vault sends the pusher before
/// it closes the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("unsupported protocol version {found}, this vault speaks {supported}")]
    ProtocolVersion { found: u8, supported: u8 },
    #[error("unknown verb 0x{verb:02x}: a pusher may only begin, ask have, send chunks and commit")]
    UnknownVerb { verb: u8 },
    #[error("frame of {size} bytes is over the limit of {limit}")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("out of order: `{verb}` is not allowed {phase}")]
    OutOfOrder { verb: &'static str, phase: &'static str },
    #[error("invalid name `{name}`: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("chunk hash mismatch: claimed {claimed}, bytes hash to {actual}")]
    ChunkHashMismatch { claimed: String, actual: String },
    #[error("quota exceeded: pusher `{pusher}` may send {quota} bytes per window, this chunk would make {would_be}")]
    QuotaExceeded { pusher: String, quota: u64, would_be: u64 },
    #[error("short chunk: chunk {index} of `{path}` is {len} bytes; every chunk but a file's last must be at least {min} bytes (cut with FastCDC's minimum, as vaultctl push does)")]
    ShortChunk { path: String, index: usize, len: u32, min: usize },
    #[error("limit `{limit}`: {detail}")]
    Limit { limit: &'static str, detail: String },
    #[error("manifest names chunk {id} ({path}), which this pusher has not sent: a chunk counts only once this pusher has sent it, in this session or one it sealed before; send it")]
    MissingChunk { id: String, path: String },
    /// A chunk this session proved against another pusher's copy, which collection has
    /// removed since: the snapshot would name bytes the store no longer holds.
    #[error("chunk {id} ({path}) was proven against a copy the store held when it arrived, and that copy has since been collected (its snapshots expired): nothing was sealed; push again, and the chunk is stored this time")]
    ProvenChunkCollected { id: String, path: String },
    #[error("manifest hash mismatch: commit says {claimed}, received manifest hashes to {actual}")]
    ManifestHashMismatch { claimed: String, actual: String },
    #[error("receipt signature does not verify against vault key {vault_key}")]
    BadReceiptSignature { vault_key: String },
}

pub type Result<T> = std::result::Result<T, Error>;

fn why_invalid(reasons: &[String]) -> String {
    reasons.iter().map(|r| format!("; {r}")).collect()
}

/// Shorthand for the most common refusal: a field with a bad value.
pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidField { field: field.into(), reason: reason.into() }
}
