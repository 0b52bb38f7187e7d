//! Signed policy bundles, verified the way TUF verifies metadata.
//!
//! A bundle is a JSON envelope around one payload (the canonical bytes of the policy, the
//! digest of the trust root it was signed for, and optionally the next trust root) and the
//! admins' Ed25519 signatures. Each signature covers a domain-separated SHA-256 of exactly
//! the payload bytes. [`verify`] checks, in this order, and stops at the first refusal:
//!
//! 1. size, before any parsing;
//! 2. envelope shape and payload type;
//! 3. the current root's threshold, counted by distinct public key, over the raw bytes;
//! 4. only then is the payload parsed: strictly, and it must be canonical;
//! 5. vault id and trust-root binding;
//! 6. a root rotation, if carried: exactly version N+1, same vault, and the new root's own
//!    threshold met too;
//! 7. version strictly above the accepted one (rollback);
//! 8. not expired at the vault's time (raised to its time floor: freeze), not issued in the
//!    future: judged against the clock while the vault trusts it, and against the floor plus
//!    [`CLOCK_PLAUSIBLE_AHEAD_SECS`] while a clock fault is latched (then the quorum-signed
//!    `issued` is the vault's best evidence of the time; see [`JudgedAt`]);
//! 9. the policy within the caps of the root that will be in force.
//!
//! What the caller applies is parsed from the verified bytes alone, so a stick that changes
//! after it was read cannot change what is applied.

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::canonical::{self, check_size};
use crate::error::{Error, Result};
use crate::keys::{domain_hash, hex, PublicKey, SigningKey, SIGNATURE_LEN};
use crate::policy::root::{RootDoc, TrustRoot};
use crate::policy::sshsig::SshSignature;
use crate::policy::state::VaultState;
use crate::policy::{Policy, PolicyDoc};
use crate::units::Timestamp;

/// Everything about a bundle is bounded before it is parsed.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;
pub const MAX_SIGNATURES: usize = 64;
pub const PAYLOAD_TYPE: &str = "application/vnd.airgap-vault.policy+json;version=1";
const SIGNING_CONTEXT: &str = "airgap-vault/policy-bundle/v1";
/// The namespace an admin's `ssh-keygen -Y sign -n` names for a bundle's payload: the same
/// words that separate the raw signatures' domain.
pub const SSH_NAMESPACE: &str = SIGNING_CONTEXT;
/// How far a bundle's `issued` may be ahead of the vault's clock. The same tolerance bounds
/// how far the clock may read behind the time floor before the vault refuses to open.
pub const CLOCK_TOLERANCE_SECS: i64 = 300;
use crate::error::PolicyError;
pub use crate::link::gate::CLOCK_PLAUSIBLE_AHEAD_SECS;

/// The vault's time a bundle is judged at: the clock, and whether the vault believes it (the
/// gate has no clock fault latched: [`crate::link::gate::Gate::clock_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgedAt {
    pub now: Timestamp,
    pub clock_trusted: bool,
}

impl JudgedAt {
    /// A clock the vault believes (vaultctl, and the vault when no clock fault is latched).
    pub fn trusted(now: Timestamp) -> JudgedAt {
        JudgedAt { now, clock_trusted: true }
    }
}

/// The file on the stick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub payload_type: String,
    /// Base64 of the canonical payload bytes: the only bytes anyone signs.
    pub payload: String,
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// Hex SHA-256 of the signer's Ed25519 public key (see [`PublicKey::key_id`]), for raw and
    /// OpenSSH signatures alike.
    pub keyid: String,
    /// Base64 of the 64-byte Ed25519 signature over the domain-separated payload hash: an
    /// admin the root lists as `ed25519:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// Base64 of an SSHSIG blob (PROTOCOL.sshsig) over the payload bytes, in the object's
    /// namespace: an admin the root lists by OpenSSH key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sshsig: Option<String>,
}

/// What the admins sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Digest of the trust root the signers meant ([`TrustRoot::digest`]).
    pub signed_for_root: String,
    pub policy: Policy,
    /// A rotation: the root that takes over once this bundle is accepted.
    pub new_root: Option<TrustRoot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadDoc {
    pub signed_for_root: String,
    pub policy: PolicyDoc,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_root: Option<RootDoc>,
}

impl Payload {
    pub fn to_doc(&self) -> PayloadDoc {
        PayloadDoc { signed_for_root: self.signed_for_root.clone(), policy: self.policy.to_doc(), new_root: self.new_root.as_ref().map(TrustRoot::to_doc) }
    }

    pub fn canonical_bytes(&self) -> Vec<u8> {
        canonical::encode(&self.to_doc())
    }

    /// Strict decoding: unknown fields refused, every value valid, `issued` present, and the
    /// bytes must be exactly the canonical encoding of the result.
    pub fn from_bytes(bytes: &[u8]) -> Result<Payload> {
        let doc: PayloadDoc = canonical::decode(bytes, "bundle payload")?;
        let policy = Policy::from_doc(&doc.policy)?;
        if policy.issued.is_none() {
            return Err(Error::InvalidField { field: "issued".into(), reason: "missing in a signed policy".into() });
        }
        let payload = Payload { signed_for_root: doc.signed_for_root.clone(), policy, new_root: doc.new_root.as_ref().map(TrustRoot::from_doc).transpose()? };
        canonical::require_canonical(bytes, &payload.to_doc(), "bundle payload")?;
        Ok(payload)
    }
}

impl Envelope {
    /// A bundle with no signatures yet, ready for the first admin.
    pub fn new(payload: &Payload) -> Envelope {
        Envelope { payload_type: PAYLOAD_TYPE.to_string(), payload: BASE64.encode(payload.canonical_bytes()), signatures: Vec::new() }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope> {
        Envelope::from_bytes_of(bytes, PAYLOAD_TYPE)
    }

    /// An envelope of another signed object (an order) with the same rules: bounded, strict,
    /// of exactly `payload_type`.
    pub fn from_bytes_of(bytes: &[u8], payload_type: &'static str) -> Result<Envelope> {
        check_size(bytes.len(), MAX_BUNDLE_BYTES, "bundle")?;
        let envelope: Envelope = canonical::decode(bytes, "bundle")?;
        if envelope.payload_type != payload_type {
            return Err(Error::Policy(PolicyError::WrongPayloadType { found: envelope.payload_type, expected: payload_type }));
        }
        if envelope.signatures.len() > MAX_SIGNATURES {
            return Err(Error::Policy(PolicyError::TooManySignatures { count: envelope.signatures.len(), limit: MAX_SIGNATURES }));
        }
        Ok(envelope)
    }

    /// Human-friendly (the envelope itself is not signed, only its payload).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("envelopes serialize");
        out.push(b'\n');
        out
    }

    pub fn payload_bytes(&self) -> Result<Vec<u8>> {
        BASE64.decode(&self.payload).map_err(|e| Error::Malformed { what: "bundle payload", reason: format!("not base64 ({e})") })
    }

    /// The payload without any signature check: for display only, never for applying.
    pub fn unverified_payload(&self) -> Result<Payload> {
        Payload::from_bytes(&self.payload_bytes()?)
    }

    /// Adds one admin's signature. A key that already signed is refused, not added twice.
    pub fn sign(&mut self, key: &SigningKey) -> Result<()> {
        self.sign_in(key, SIGNING_CONTEXT)
    }

    /// [`Envelope::sign`] under another object's signing context (an order's).
    pub fn sign_in(&mut self, key: &SigningKey, context: &str) -> Result<()> {
        let keyid = self.new_signer(&key.public_key())?;
        let message = domain_hash(context, &self.payload_bytes()?);
        self.signatures.push(SignatureEntry { keyid, sig: Some(BASE64.encode(key.sign(&message))), sshsig: None });
        Ok(())
    }

    /// Adds an admin's OpenSSH signature of the payload (`ssh-keygen -Y sign`). Whether it
    /// verifies is judged with the root, as for every signature.
    pub fn add_sshsig(&mut self, signature: &SshSignature) -> Result<()> {
        let keyid = self.new_signer(&signature.public_key.key)?;
        self.signatures.push(SignatureEntry { keyid, sig: None, sshsig: Some(BASE64.encode(signature.to_blob())) });
        Ok(())
    }

    /// The key id of a key that has not signed yet: one key signs once.
    fn new_signer(&self, key: &PublicKey) -> Result<String> {
        let keyid = key.key_id();
        if self.signatures.iter().any(|s| s.keyid == keyid) {
            return Err(Error::InvalidField { field: "signatures".into(), reason: format!("already signed by key {keyid}") });
        }
        Ok(keyid)
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.signatures.iter().map(|s| s.keyid.as_str())
    }
}

/// The outcome of counting signatures against one root.
#[derive(Debug, Default)]
struct Tally {
    signers: BTreeSet<PublicKey>,
    invalid: usize,
    unknown: usize,
    repeated: usize,
    /// Why each invalid signature of a known admin failed, for the refusal's message.
    reasons: Vec<String>,
}

/// Counts the signatures of `root`'s admins over `payload` signed in `context`, once per
/// distinct public key. An admin listed by raw key counts by a raw signature only, one listed
/// by OpenSSH key by an SSHSIG only (a security key's flags are checked there).
fn tally(root: &TrustRoot, context: &str, payload: &[u8], signatures: &[SignatureEntry]) -> Tally {
    let message = domain_hash(context, payload);
    let mut tally = Tally::default();
    for entry in signatures {
        let Some(admin) = root.admin_by_key_id(&entry.keyid) else {
            tally.unknown += 1;
            continue;
        };
        let verdict = match (admin.ssh_key(), &entry.sig, &entry.sshsig) {
            (None, Some(sig), None) => match BASE64.decode(sig) {
                Ok(sig) if sig.len() == SIGNATURE_LEN && admin.key.verify(&message, &sig) => Ok(()),
                _ => Err("its Ed25519 signature does not verify over this payload".to_string()),
            },
            (Some(ssh), None, Some(sshsig)) => {
                let require_uv = admin.ssh.as_ref().is_some_and(|a| a.user_verification);
                SshSignature::from_base64(sshsig).and_then(|signature| signature.verify(&ssh, require_uv, context, payload)).map_err(|e| e.to_string())
            }
            (None, _, _) => Err("the root lists a raw `ed25519:` key for this admin, who signs with `vaultctl policy sign` (one `sig`, no `sshsig`)".to_string()),
            (Some(_), _, _) => Err("the root lists an OpenSSH key for this admin, who signs with `ssh-keygen -Y sign` and `vaultctl policy add-sshsig` (one `sshsig`, no `sig`)".to_string()),
        };
        match verdict {
            Err(reason) => {
                tally.invalid += 1;
                tally.reasons.push(format!("admin `{}`: {reason}", admin.name));
            }
            Ok(()) if !tally.signers.insert(admin.key) => tally.repeated += 1,
            Ok(()) => {}
        }
    }
    tally
}

fn require_threshold(role: String, root: &TrustRoot, payload: &[u8], signatures: &[SignatureEntry]) -> Result<Vec<String>> {
    require_signers(role, root, root.threshold, SIGNING_CONTEXT, payload, signatures)
}

/// At least `threshold` distinct admin keys of `root` signed `payload` in `context`; their names.
pub(crate) fn require_signers(role: String, root: &TrustRoot, threshold: u32, context: &str, payload: &[u8], signatures: &[SignatureEntry]) -> Result<Vec<String>> {
    let t = tally(root, context, payload, signatures);
    if t.signers.len() < threshold as usize {
        return Err(Error::Policy(PolicyError::ThresholdNotMet { role, valid: t.signers.len(), threshold, invalid: t.invalid, unknown: t.unknown, repeated: t.repeated, reasons: t.reasons }));
    }
    Ok(root.admins.iter().filter(|a| t.signers.contains(&a.key)).map(|a| a.name.clone()).collect())
}

/// A bundle that passed every check, and the state the vault moves to by accepting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub policy: Policy,
    /// The root in force after acceptance (the new one, after a rotation).
    pub root: TrustRoot,
    pub rotated: bool,
    /// Names of the admins whose signatures counted (under the root that was in force).
    pub signers: Vec<String>,
    /// Hex SHA-256 of the payload bytes: names exactly what was applied.
    pub payload_sha256: String,
    pub new_state: VaultState,
}

/// The most a policy version or an order serial may rise above the last accepted one. They
/// need only rise, but one at the top of the range would refuse every honest bundle or order
/// after it (a root rotation too); 2^32 leaves room for numbers made from dates or Unix times.
pub const MAX_RISE: u64 = 1 << 32;

/// The highest version or serial accepted after `accepted`.
pub fn highest_next(accepted: u64) -> u64 {
    accepted.saturating_add(MAX_RISE)
}

/// Verifies a bundle read once into memory. `baked_root` is the image's root; `state` may
/// hold a newer, rotated one. `now` is the vault's clock.
pub fn verify(bundle: &[u8], baked_root: &TrustRoot, state: &VaultState, at: JudgedAt) -> Result<Verified> {
    let root = state.current_root(baked_root)?;
    let envelope = Envelope::from_bytes(bundle)?;
    let payload_bytes = envelope.payload_bytes()?;
    let signers = require_threshold(format!("root v{}", root.version), &root, &payload_bytes, &envelope.signatures)?;

    let payload = Payload::from_bytes(&payload_bytes)?;
    let policy = payload.policy;
    if policy.vault_id != root.vault_id {
        return Err(Error::Policy(PolicyError::WrongVault { bundle: policy.vault_id, vault: root.vault_id }));
    }
    let vault_root_digest = root.digest();
    if payload.signed_for_root != vault_root_digest {
        return Err(Error::Policy(PolicyError::WrongTrustRoot { bundle: payload.signed_for_root, vault: vault_root_digest }));
    }

    let next_root = match payload.new_root {
        None => root,
        Some(new_root) => {
            let expected = root.version + 1;
            if new_root.version != expected {
                return Err(Error::Policy(PolicyError::RotationVersion { current: root.version, expected, found: new_root.version }));
            }
            if new_root.vault_id != root.vault_id {
                return Err(Error::Policy(PolicyError::RotationVault { found: new_root.vault_id, vault: root.vault_id }));
            }
            require_threshold(format!("new root v{}", new_root.version), &new_root, &payload_bytes, &envelope.signatures)?;
            new_root
        }
    };
    let rotated = next_root.version != state.current_root(baked_root)?.version;

    let highest = highest_next(state.accepted_version);
    if policy.version <= state.accepted_version {
        return Err(Error::Policy(PolicyError::Rollback { version: policy.version, accepted: state.accepted_version }));
    }
    if policy.version > highest {
        return Err(Error::Policy(PolicyError::VersionLeap { version: policy.version, accepted: state.accepted_version, highest }));
    }
    // A distrusted clock counts for nothing: the floor is the vault's time.
    let vault_now = if at.clock_trusted { at.now.max(state.time_floor) } else { state.time_floor };
    if policy.expires <= vault_now {
        return Err(Error::Policy(PolicyError::Expired { expires: policy.expires, now: vault_now }));
    }
    let issued = policy.issued.expect("Payload::from_bytes requires issued");
    let ahead = if at.clock_trusted { CLOCK_TOLERANCE_SECS } else { CLOCK_PLAUSIBLE_AHEAD_SECS };
    if issued.secs_since(vault_now) > ahead {
        return Err(Error::Policy(PolicyError::IssuedInFuture { issued, now: vault_now, tolerance_secs: ahead }));
    }
    policy.check_against_root(&next_root)?;

    let new_state = VaultState {
        accepted_version: policy.version,
        time_floor: state.time_floor.max(issued),
        rotated_root: if rotated { Some(next_root.clone()) } else { state.rotated_root.clone() },
        last_scrub: state.last_scrub,
        last_drill: state.last_drill.clone(),
        orders: state.orders.clone(),
        last_rotation: state.last_rotation,
        accepted_keep_last: Some(policy.retention.keep_last),
        keep_last_floor: crate::lifecycle::retention::keep_last_floor(state.accepted_keep_last, state.keep_last_floor, policy.retention.keep_last, vault_now, next_root.caps.purge_delay),
    };
    Ok(Verified { policy, root: next_root, rotated, signers, payload_sha256: hex(ring::digest::digest(&ring::digest::SHA256, &payload_bytes).as_ref()), new_state })
}

/// Verifies again, at every start, the bundle the vault accepted earlier, against the root in
/// force now (the image's, or the one a rotation installed): a re-imaged vault with a new root
/// must not keep obeying a policy the old root's admins signed. Every check of [`verify`]
/// that does not depend on what happened since applies: the vault id, the signatures and
/// threshold of the root in force, `signed_for_root` naming it, the root's caps, and the
/// version the state names. A bundle that rotated to the root in force is signed by that
/// root's own threshold (its old root is no longer known). Expiry is the gate's to judge.
pub fn reverify_accepted(bundle: &[u8], baked_root: &TrustRoot, state: &VaultState) -> Result<Policy> {
    let root = state.current_root(baked_root)?;
    let envelope = Envelope::from_bytes(bundle)?;
    let payload_bytes = envelope.payload_bytes()?;
    let payload = Payload::from_bytes(&payload_bytes)?;
    let policy = payload.policy;
    if policy.vault_id != root.vault_id {
        return Err(Error::Policy(PolicyError::WrongVault { bundle: policy.vault_id, vault: root.vault_id }));
    }
    let rotated_here = payload.new_root.as_ref() == Some(&root);
    if !rotated_here && payload.signed_for_root != root.digest() {
        return Err(Error::Policy(PolicyError::WrongTrustRoot { bundle: payload.signed_for_root, vault: root.digest() }));
    }
    require_threshold(format!("root v{} (in force)", root.version), &root, &payload_bytes, &envelope.signatures)?;
    if policy.version != state.accepted_version {
        return Err(Error::Policy(PolicyError::AcceptedVersion { found: policy.version, expected: state.accepted_version }));
    }
    policy.check_against_root(&root)?;
    Ok(policy)
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
