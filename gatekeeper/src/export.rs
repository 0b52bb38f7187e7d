//! Carrying out export orders on a medium mounted at a directory (the daemon mounts the USB
//! disk; `gatekeeper export --medium DIR` does the same on a host). The rules are in
//! `vault_core::export`, the writing in `vault_store::export`; this decides which orders run,
//! and says what happened as events. It returns the order state to record: an export done does
//! not run again, one that failed stays pending for the next time its medium comes.

use std::path::Path;

use vault_core::policy::orders::{export_done, exports_for, OrderState};
use vault_core::units::Timestamp;
use vault_store::export::{identify, write_export, ExportJob};

use crate::events::Event;
use crate::identity::VaultIdentity;

/// What carrying out the exports for one medium came to.
pub struct Carried {
    pub events: Vec<Event>,
    /// The order state once the exports done are struck off (and lapsed ones dropped).
    pub orders: OrderState,
}

/// Where and as whom exports are written.
#[derive(Clone, Copy)]
pub struct MediumJob<'a> {
    pub store: &'a Path,
    /// Where the medium's filesystem is mounted, read-write.
    pub medium: &'a Path,
    /// The device, as events name it.
    pub source: &'a str,
    pub vault_id: &'a str,
    pub identity: &'a VaultIdentity,
    /// Cleared when the vault leaves Sealed: the export under way is abandoned.
    pub go_on: &'a std::sync::atomic::AtomicBool,
    /// The power-cut test hook's pause: after each file the export says `export_step` and
    /// waits this long, so a test can pull the medium mid-write. Zero otherwise.
    pub step_pause: std::time::Duration,
}

/// Writes every export order pending for the medium (oldest accepted first).
pub fn carry_out(job: &MediumJob<'_>, orders: &OrderState, now: Timestamp) -> Carried {
    let MediumJob { store, medium, source, vault_id, identity, go_on, step_pause } = *job;
    let after_file = |file: &str| {
        if !step_pause.is_zero() {
            crate::events::EventLog::default().emit(now, &Event::ExportStep { file: file.to_string() });
            std::thread::sleep(step_pause);
        }
    };
    let mut events = Vec::new();
    let label = match identify(medium, vault_id, &identity.public) {
        Ok((label, _)) => label,
        Err(e) => {
            events.push(Event::MediumIgnored { source: source.into(), reason: format!("{e}") });
            return Carried { events, orders: orders.clone() };
        }
    };
    let (due, mut next) = exports_for(orders, &label.medium_id, now);
    if due.is_empty() {
        events.push(Event::MediumIgnored { source: source.into(), reason: format!("medium {} ({}): no export order names it; nothing written", label.name, label.medium_id) });
    }
    for order in due {
        let started = std::time::Instant::now();
        let mut nonce = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        match write_export(&ExportJob { store, medium, order: &order, vault_id, key: &identity.key, now, nonce, go_on, after_file: &after_file }) {
            Ok(written) => {
                next = export_done(&next, &order.id);
                events.push(Event::ExportWritten {
                    order: order.id.clone(),
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
            }
            Err(e) => {
                let reason = e.to_string();
                events.push(Event::ExportFailed { order: order.id.clone(), medium: format!("{} ({})", label.name, label.medium_id), reason: reason.clone() });
                events.push(Event::Alarm { rule: "export_failed".into(), detail: format!("export order {} onto medium {}: {reason}; the order stays pending: insert the medium again once this is fixed", order.id, label.name) });
            }
        }
    }
    Carried { events, orders: next }
}
