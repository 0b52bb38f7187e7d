//! Carrying out the lifecycle rules on the store. The rules are pure
//! ([`vault_core::lifecycle::retention`]); the daemon loop decides when they may run (sealed, a
//! trusted clock, a policy in force) and runs this on a blocking thread, which checks before
//! each snapshot that the vault is still sealed.

use std::sync::atomic::{AtomicBool, Ordering};

use vault_core::lifecycle::retention::{plan_expiry, Holds, Kept, Retention};
use vault_core::units::Timestamp;
use vault_store::Store;

use crate::events::Event;

/// What one expiry run did, for the console, and when the next snapshot falls due.
#[derive(Debug)]
pub struct ExpiryReport {
    pub events: Vec<Event>,
    pub next_due: Option<Timestamp>,
}

/// Expires, at vault time `now`, every snapshot the retention rules let go; stops between two
/// snapshots as soon as `sealed` turns false.
pub fn expire(store: &Store, now: Timestamp, retention: Retention, holds: &Holds, sealed: &AtomicBool) -> ExpiryReport {
    let mut events = Vec::new();
    let (snapshots, unreadable) = match store.sealed_snapshots() {
        Ok(found) => found,
        Err(e) => {
            events.push(Event::Alarm { rule: "expiry_failed".into(), detail: format!("listing the sealed snapshots: {e}; nothing expired, tried again in an hour") });
            return ExpiryReport { events, next_due: None };
        }
    };
    let plan = plan_expiry(&snapshots, now, retention, holds);
    let ids: Vec<String> = plan.expire.iter().map(|s| s.id.clone()).collect();
    let done = match store.expire(&ids, &|| sealed.load(Ordering::SeqCst)) {
        Ok(done) => done,
        Err(e) => {
            events.push(Event::Alarm { rule: "expiry_failed".into(), detail: format!("{e}; tried again in an hour") });
            return ExpiryReport { events, next_due: plan.next_due };
        }
    };
    for snapshot in plan.expire.iter().filter(|s| done.expired.contains(&s.id)) {
        events.push(Event::SnapshotExpired {
            snapshot: snapshot.id.clone(),
            pusher: snapshot.pusher.clone(),
            dataset: snapshot.dataset.clone(),
            received_at: snapshot.received_at.to_string(),
            retain_until: snapshot.retain_until.to_string(),
        });
    }
    for (id, why) in &done.failed {
        events.push(Event::Alarm { rule: "expiry_failed".into(), detail: format!("snapshot `{id}` is past its retention but stays: {why}; tried again in an hour") });
    }
    let count = |matches: fn(&Kept) -> bool| plan.kept.iter().filter(|(_, why)| matches(why)).count();
    events.push(Event::ExpiryRan {
        at: now.to_string(),
        expired: done.expired.len(),
        kept_as_newest: count(|why| matches!(why, Kept::Newest { .. })),
        kept_by_hold: count(|why| matches!(why, Kept::HeldSnapshot | Kept::HeldDataset)),
        unreadable_kept: unreadable.iter().map(|(path, why)| format!("{}: {why}", path.display())).collect(),
        stopped_early: done.stopped_early,
        next_due: plan.next_due.map(|t| t.to_string()),
    });
    ExpiryReport { events, next_due: plan.next_due }
}
