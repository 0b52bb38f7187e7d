//! Applying a policy bundle to the vault's state directory: read the file once into memory,
//! verify those bytes, and persist exactly them. The bundle is written before the state that
//! names its version, so a crash in between leaves a newer bundle that verifies again: the
//! next start completes the apply ([`finish_interrupted_apply`]), as the same stick would.

use std::path::Path;

use vault_core::policy::bundle::{self, JudgedAt, Verified, MAX_BUNDLE_BYTES};
use vault_core::policy::root::{TrustRoot, MAX_ROOT_BYTES};
use vault_core::policy::state::{VaultState, MAX_STATE_BYTES, STATE_FILE};

use crate::error::{GatekeeperError, Result};
use crate::events::{Event, EventLog};

/// The last accepted bundle, as verified, inside the state directory.
pub const ACCEPTED_BUNDLE_FILE: &str = "accepted.bundle";

pub fn load_root(path: &Path) -> Result<TrustRoot> {
    let bytes = vault_io::read_bounded(path, MAX_ROOT_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| GatekeeperError::RootNotText { path: path.display().to_string() })?;
    Ok(TrustRoot::from_toml(&text)?)
}

pub fn load_state(state_dir: &Path) -> Result<VaultState> {
    let path = state_dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(VaultState::default());
    }
    Ok(VaultState::from_bytes(&vault_io::read_bounded(&path, MAX_STATE_BYTES)?)?)
}

/// Writes the vault's state atomically, refused (nothing written) if it would be larger than
/// the daemon reads back: the state on disk is always one that loads.
pub fn save_state(state_dir: &Path, state: &VaultState) -> Result<()> {
    Ok(vault_io::write_atomic(&state_dir.join(STATE_FILE), &state.to_bytes_bounded()?, 0o600)?)
}

/// The snapshots sealed in the store at this path (none without a store): what a hold may name.
pub struct StoreSnapshots<'a>(pub Option<&'a Path>);

impl vault_core::policy::orders::SnapshotInventory for StoreSnapshots<'_> {
    fn has_snapshot(&self, id: &str) -> bool {
        // Order decoding checked the id is an identifier: no path separators.
        self.0.is_some_and(|store| store.join(vault_store::SNAPSHOTS_DIR).join(id).is_dir())
    }
}

/// Verifies the bundle at `source` and, if it passes, makes it the vault's policy. Every
/// outcome is an event; a refusal leaves the state directory untouched.
pub fn apply_bundle(baked_root: &TrustRoot, state_dir: &Path, source: &Path, at: JudgedAt, events: &mut EventLog) -> Result<Verified> {
    let now = at.now;
    let label = source.display().to_string();
    // Read once; from here on only these bytes matter, whatever happens to the file.
    match vault_io::read_bounded(source, MAX_BUNDLE_BYTES) {
        Ok(bytes) => apply_bytes(baked_root, state_dir, &label, bytes, at, events),
        Err(e) => {
            let err = GatekeeperError::from(e);
            events.emit(now, &Event::PolicyRefused { source: label, reason: err.to_string() });
            Err(err)
        }
    }
}

/// Verifies bundle bytes that were read once (from a file or a USB stick) and, if they pass,
/// persists exactly them. Every outcome is an event; a refusal changes nothing.
pub fn apply_bytes(baked_root: &TrustRoot, state_dir: &Path, source: &str, bytes: Vec<u8>, at: JudgedAt, events: &mut EventLog) -> Result<Verified> {
    let now = at.now;
    let outcome = verify_bytes(baked_root, state_dir, &bytes, at).and_then(|(verified, previous_root_version)| {
        vault_io::write_atomic(&state_dir.join(ACCEPTED_BUNDLE_FILE), &bytes, 0o600)?;
        save_state(state_dir, &verified.new_state)?;
        Ok((verified, previous_root_version))
    });
    // Said only once it is true: accepted means verified and durable.
    match &outcome {
        Ok((verified, previous_root_version)) => {
            if verified.rotated {
                events.emit(now, &Event::RootRotated { from_version: *previous_root_version, to_version: verified.root.version });
            }
            events.emit(
                now,
                &Event::PolicyAccepted {
                    version: verified.policy.version,
                    payload_sha256: verified.payload_sha256.clone(),
                    signers: verified.signers.clone(),
                    expires: verified.policy.expires.to_string(),
                },
            );
        }
        Err(GatekeeperError::AlreadyInForce { version }) => {
            events.emit(now, &Event::PolicyUnchanged { source: source.to_string(), version: *version });
        }
        Err(err) => {
            events.emit(now, &Event::PolicyRefused { source: source.to_string(), reason: err.to_string() });
        }
    }
    outcome.map(|(verified, _)| verified)
}

fn verify_bytes(baked_root: &TrustRoot, state_dir: &Path, bytes: &[u8], at: JudgedAt) -> Result<(Verified, u64)> {
    let state = load_state(state_dir)?;
    let previous_root_version = state.current_root(baked_root)?.version;
    // The stick left in at the next boot: say so plainly rather than call it a rollback. Only
    // when the state names this very bundle: after a crash between writing the bundle and the
    // state, the same stick must verify and complete the apply.
    let accepted = state_dir.join(ACCEPTED_BUNDLE_FILE);
    let in_force = state.accepted_version > 0
        && vault_io::read_bounded(&accepted, MAX_BUNDLE_BYTES).is_ok_and(|current| current == bytes)
        && bundle::Envelope::from_bytes(bytes).and_then(|e| e.unverified_payload()).is_ok_and(|p| p.policy.version == state.accepted_version);
    if in_force {
        return Err(GatekeeperError::AlreadyInForce { version: state.accepted_version });
    }
    let verified = bundle::verify(bytes, baked_root, &state, at)?;
    Ok((verified, previous_root_version))
}

/// Completes an apply that a power cut or crash stopped between its two writes: the bundle
/// in the state directory is newer than the version the state names. It is verified again in
/// full, as from a stick (`at`), and only then named by the state; one that no longer passes
/// (expired meanwhile, say) stays unobeyed, and the previous policy is dropped as before.
/// `Ok(None)` when there was nothing to complete.
pub fn finish_interrupted_apply(baked_root: &TrustRoot, state_dir: &Path, at: JudgedAt, events: &mut EventLog) -> Result<Option<Verified>> {
    let state = load_state(state_dir)?;
    let path = state_dir.join(ACCEPTED_BUNDLE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = vault_io::read_bounded(&path, MAX_BUNDLE_BYTES)?;
    let newer = bundle::Envelope::from_bytes(&bytes).and_then(|e| e.unverified_payload()).is_ok_and(|p| p.policy.version > state.accepted_version);
    if !newer {
        return Ok(None);
    }
    let source = format!("{} (an apply a restart interrupted)", path.display());
    apply_bytes(baked_root, state_dir, &source, bytes, at, events).map(Some)
}

/// The policy of the accepted bundle in the state directory, or `None` before the first.
/// Verified again in full against the root in force at every call (see
/// [`bundle::reverify_accepted`]): a vault re-imaged with a new root obeys only what that
/// root's admins signed. `Err(Dropped)` says why it is not obeyed.
pub fn load_accepted(baked_root: &TrustRoot, state_dir: &Path) -> Result<Option<vault_core::policy::Policy>> {
    let state = load_state(state_dir)?;
    let path = state_dir.join(ACCEPTED_BUNDLE_FILE);
    if state.accepted_version == 0 || !path.exists() {
        return Ok(None);
    }
    let bytes = vault_io::read_bounded(&path, MAX_BUNDLE_BYTES)?;
    bundle::reverify_accepted(&bytes, baked_root, &state).map(Some).map_err(|source| GatekeeperError::PolicyDropped { version: state.accepted_version, source })
}

/// Verifies order bytes read once (from a stick, or a file) against the root in force, the
/// vault's order state and the snapshots of the store at `dirs.1` and, if they pass, records
/// the new order state in the state directory `dirs.0`. Every outcome is an
/// event (`order_accepted` once durable, or `order_refused`); a refusal changes nothing.
pub fn apply_order(baked_root: &TrustRoot, dirs: (&Path, Option<&Path>), source: &str, bytes: &[u8], at: JudgedAt, events: &mut EventLog) -> Result<vault_core::policy::orders::Accepted> {
    let (state_dir, store) = dirs;
    let outcome = (|| -> Result<vault_core::policy::orders::Accepted> {
        let mut state = load_state(state_dir)?;
        let root = state.current_root(baked_root)?;
        let accepted = vault_core::policy::orders::verify(bytes, &root, &state.orders, at, state.time_floor, &StoreSnapshots(store))?;
        state.orders = accepted.state.clone();
        save_state(state_dir, &state)?;
        Ok(accepted)
    })();
    match &outcome {
        Ok(accepted) => events.emit(
            at.now,
            &Event::OrderAccepted {
                source: source.to_string(),
                kind: accepted.kind.name().into(),
                order: accepted.id.clone(),
                signers: accepted.signers.clone(),
                reason: accepted.reason.clone(),
                executes_at: accepted.executes_at.map(|t| t.to_string()),
            },
        ),
        Err(e) => events.emit(at.now, &Event::OrderRefused { source: source.to_string(), reason: e.to_string() }),
    };
    outcome
}

/// Carries out what is waiting for the medium mounted at `medium` (export orders, the policy's
/// rotation) and records the state it leaves (see [`crate::export`]). Fails when anything
/// failed or was refused (its events say why).
pub fn carry_out_exports(
    baked_root: &TrustRoot,
    state_dir: &Path,
    store: &Path,
    medium: &Path,
    identity: &crate::identity::VaultIdentity,
    now: vault_core::units::Timestamp,
    events: &mut EventLog,
) -> Result<()> {
    let mut state = load_state(state_dir)?;
    let root = state.current_root(baked_root)?;
    let policy = load_accepted(baked_root, state_dir)?;
    let (source, go_on) = (medium.display().to_string(), std::sync::atomic::AtomicBool::new(true));
    let rotation = policy.as_ref().and_then(|p| p.rotation.as_ref());
    let job = crate::export::MediumJob { store, medium, source: &source, vault_id: &root.vault_id, identity, rotation, go_on: &go_on, step_pause: std::time::Duration::ZERO };
    let carried = crate::export::carry_out(&job, &state.orders, now);
    if carried.orders != state.orders || carried.rotated {
        state.orders = carried.orders;
        if carried.rotated {
            state.last_rotation = Some(now);
        }
        save_state(state_dir, &state)?;
    }
    let mut failed = None;
    for event in &carried.events {
        events.emit(now, event);
        match event {
            Event::ExportFailed { reason, .. } | Event::MediumIgnored { reason, .. } => failed = Some(reason.clone()),
            Event::Alarm { detail, .. } => failed = Some(detail.clone()),
            _ => {}
        }
    }
    match failed {
        Some(reason) => Err(GatekeeperError::Export(reason)),
        None => Ok(()),
    }
}
