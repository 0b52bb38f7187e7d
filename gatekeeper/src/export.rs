//! Carrying out exports on a medium mounted at a directory (the daemon mounts the USB disk;
//! `gatekeeper export --medium DIR` does the same on a host). The rules are in
//! `vault_core::export`, the writing in `vault_store::export`; this decides what runs, in
//! order, and says what happened as events:
//!
//! 1. the medium is identified (its label, and its seal if it has one: ours, or refused);
//! 2. every export it brought back is verified (signed manifest, every file but the packs, a
//!    rotating share of the packs, its checkpoint a prefix of the vault's log). One problem and
//!    nothing is written or removed: an alarm says what was found;
//! 3. the export orders waiting for it are written, oldest first;
//! 4. if the policy's rotation names it, a rotation export is written, and only once it is
//!    read back are the oldest exports beyond the rotation's `keep` removed.
//!
//! It returns the order state to record (an export order done does not run again; one that
//! failed stays pending for the next time its medium comes) and whether a rotation export was
//! written.

use std::path::Path;

use vault_core::export::medium::MediumLabel;
use vault_core::export::rotation::{beyond_keep, Rotation};
use vault_core::policy::orders::{export_done, exports_for, OrderState, PendingExport};
use vault_core::units::Timestamp;
use vault_store::export::{exports_on, identify, remove_exports, verify_returning, write_export, ExportJob, Share};

use crate::events::Event;
use crate::identity::VaultIdentity;

/// What one medium came to.
pub struct Carried {
    pub events: Vec<Event>,
    /// The order state once the exports done are struck off (and lapsed ones dropped).
    pub orders: OrderState,
    /// Set when a rotation export was written and read back.
    pub rotated: bool,
}

/// Where, as whom and under which policy exports are written.
#[derive(Clone, Copy)]
pub struct MediumJob<'a> {
    pub store: &'a Path,
    /// Where the medium's filesystem is mounted, read-write.
    pub medium: &'a Path,
    /// The device, as events name it.
    pub source: &'a str,
    pub vault_id: &'a str,
    pub identity: &'a VaultIdentity,
    /// The policy's rotation, if it has one.
    pub rotation: Option<&'a Rotation>,
    /// Cleared when the vault leaves Sealed: the export under way is abandoned.
    pub go_on: &'a std::sync::atomic::AtomicBool,
    /// The power-cut test hook's pause: after each file the export says `export_step` and
    /// waits this long, so a test can pull the medium mid-write. Zero otherwise.
    pub step_pause: std::time::Duration,
}

/// Whether anything may be written to a medium with this id: an export order waits for it, or
/// the rotation names it. `Err` says why not.
pub fn wanted(medium_id: &str, orders: &OrderState, rotation: Option<&Rotation>, now: Timestamp) -> Result<(), String> {
    let ordered = !exports_for(orders, medium_id, now).0.is_empty();
    let rotated = rotation.is_some_and(|r| r.names(medium_id));
    if ordered || rotated {
        Ok(())
    } else {
        Err("no export order names it, and it is not in the policy's rotation".into())
    }
}

pub fn carry_out(job: &MediumJob<'_>, orders: &OrderState, now: Timestamp) -> Carried {
    let mut carried = Carried { events: Vec::new(), orders: orders.clone(), rotated: false };
    let label = match identify(job.medium, job.vault_id, &job.identity.public) {
        Ok((label, _)) => label,
        Err(e) => {
            carried.events.push(Event::MediumIgnored { source: job.source.into(), reason: format!("{e}") });
            return carried;
        }
    };
    if let Err(reason) = wanted(&label.medium_id, orders, job.rotation, now) {
        carried.events.push(Event::MediumIgnored { source: job.source.into(), reason: format!("medium {} ({}): {reason}; nothing written", label.name, label.medium_id) });
        return carried;
    }
    if !verify_what_came_back(job, &label, now, &mut carried.events) {
        return carried;
    }
    let (due, next) = exports_for(orders, &label.medium_id, now);
    carried.orders = next;
    for order in due {
        if write_one(job, &label, &order, false, now, &mut carried.events) {
            carried.orders = export_done(&carried.orders, &order.id);
        }
    }
    if let Some(rotation) = job.rotation.filter(|r| r.names(&label.medium_id)) {
        if write_one(job, &label, &rotation.as_export(&label.medium_id, now), true, now, &mut carried.events) {
            carried.rotated = true;
            let old = exports_on(job.medium).map(|ids| beyond_keep(&ids, rotation.keep));
            match old.and_then(|old| remove_exports(job.medium, &old).map(|()| old)) {
                Ok(old) if old.is_empty() => {}
                Ok(old) => carried.events.push(Event::ExportsRemoved { medium: label.medium_id.clone(), medium_name: label.name.clone(), exports: old, keep: rotation.keep }),
                Err(e) => carried.events.push(Event::Alarm {
                    rule: "export_failed".into(),
                    detail: format!("medium {}: the new export is written, but older ones could not be removed ({e}); it may fill up", label.name),
                }),
            }
        }
    }
    carried
}

/// Step 2: false (and an alarm) when what the medium brought back is not what the vault wrote.
fn verify_what_came_back(job: &MediumJob<'_>, label: &MediumLabel, now: Timestamp, events: &mut Vec<Event>) -> bool {
    // A medium of the rotation comes back often: a share of its packs each time. Any other
    // comes back rarely, and is read whole.
    let share = match job.rotation.filter(|r| r.names(&label.medium_id)).map_or(1, |r| r.verify_share) {
        1 => Share::All,
        of => Share::Rotating { turn: Rotation::share_turn(now), of: u64::from(of) },
    };
    let returned = match verify_returning(job.medium, &label.medium_id, job.store, &job.identity.public, share, job.go_on) {
        Ok(returned) => returned,
        Err(e) => {
            let detail = format!(
                "medium {} ({}): its exports could not be read ({e}): its filesystem may be damaged (pulled while being written?). Nothing was written or removed; \
                 repair it on another machine (fsck.vfat -a on its partition) and insert it again, or keep it as evidence and prepare another with vaultctl media init",
                label.name, label.medium_id
            );
            events.push(Event::Alarm { rule: "medium_refused".into(), detail });
            return false;
        }
    };
    if returned.is_empty() {
        return true;
    }
    let problems: Vec<String> = returned.iter().flat_map(|r| r.problems.iter().map(move |p| format!("{}/{}: {}", r.export_id, p.path, p.reason))).collect();
    events.push(Event::MediumVerified {
        medium: label.medium_id.clone(),
        medium_name: label.name.clone(),
        exports: returned.iter().map(|r| r.export_id.clone()).collect(),
        files: returned.iter().map(|r| r.files_checked).sum(),
        bytes: returned.iter().map(|r| r.bytes_checked).sum(),
        problems: problems.clone(),
    });
    if problems.is_empty() {
        return true;
    }
    events.push(Event::Alarm {
        rule: "medium_tampered".into(),
        detail: format!(
            "medium {} ({}) came back not as the vault wrote it: {}; nothing on it was overwritten or removed, and nothing new was written. Keep it as evidence, and restore from another copy",
            label.name,
            label.medium_id,
            problems.join("; ")
        ),
    });
    false
}

/// Writes one export; true once it is written and read back.
fn write_one(job: &MediumJob<'_>, label: &MediumLabel, order: &PendingExport, rotation: bool, now: Timestamp, events: &mut Vec<Event>) -> bool {
    let step_pause = job.step_pause;
    let after_file = |file: &str| {
        if !step_pause.is_zero() {
            crate::events::EventLog::default().emit(now, &Event::ExportStep { file: file.to_string() });
            std::thread::sleep(step_pause);
        }
    };
    let started = std::time::Instant::now();
    let mut nonce = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
    match write_export(&ExportJob { store: job.store, medium: job.medium, order, vault_id: job.vault_id, key: &job.identity.key, now, nonce, go_on: job.go_on, after_file: &after_file }) {
        Ok(written) => {
            events.push(Event::ExportWritten {
                order: order.id.clone(),
                rotation,
                export: written.export_id,
                medium: written.medium.medium_id,
                medium_name: written.medium.name,
                adopted: written.adopted,
                snapshots: written.snapshots,
                missing: written.missing,
                packs: written.packs,
                files: written.files,
                bytes: written.bytes,
                took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                removed_unfinished: written.removed_partial,
            });
            true
        }
        Err(e) => {
            let reason = e.to_string();
            let what = if rotation { "rotation export".to_string() } else { format!("export order {}", order.id) };
            events.push(Event::ExportFailed { order: order.id.clone(), medium: format!("{} ({})", label.name, label.medium_id), reason: reason.clone() });
            events.push(Event::Alarm { rule: "export_failed".into(), detail: format!("{what} onto medium {}: {reason}; it is tried again the next time the medium is inserted", label.name) });
            false
        }
    }
}
