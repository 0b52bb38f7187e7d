//! Carrying out the lifecycle rules on the store. The rules are pure
//! ([`vault_core::lifecycle::retention`]); the daemon loop decides when they may run (sealed, a
//! trusted clock, a policy in force) and runs [`run`] on a blocking thread: expiry, then
//! garbage collection, each checking before every snapshot or pack that the vault is still
//! sealed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vault_core::lifecycle::capacity::{self, Level};
use vault_core::lifecycle::retention::{plan_expiry, plan_purge, Holds, Kept, PurgeKept, Retention};
use vault_core::lifecycle::scrub;
use vault_core::units::Timestamp;
use vault_store::Store;

use crate::events::Event;

/// What one expiry run did, for the console, and when the next snapshot falls due.
#[derive(Debug, Default)]
pub struct LifecycleReport {
    pub events: Vec<Event>,
    pub next_due: Option<Timestamp>,
    /// The store's filesystem after the run (the loop says it on the console once a day, and
    /// raises an alarm when it crosses a level).
    pub capacity: Option<Event>,
    pub level: Option<Level>,
    /// A scrub that read the whole store: when it started, and what it found in a line.
    pub scrubbed: Option<(Timestamp, String)>,
    /// A restore drill that finished: when it started, and its summary.
    pub drilled: Option<(Timestamp, String)>,
    /// Purge orders carried out whole (by id): no longer waiting.
    pub purged: Vec<String>,
}

/// Held exclusively by a lifecycle run, and shared by every commit from its chunk check to the
/// end of its seal: nothing is expired or collected while a seal that may rely on it is under
/// way (a seal goes on after its session is aborted at a window's close).
pub type Maintenance = Arc<tokio::sync::RwLock<()>>;

/// What one lifecycle run is asked to do.
#[derive(Debug, Clone)]
pub struct Job {
    /// The vault's time (the gate's).
    pub now: Timestamp,
    pub retention: Retention,
    pub holds: Holds,
    /// No pack younger than this is collected.
    pub gc_grace: std::time::Duration,
    /// Read back and re-hash everything sealed ([`vault_core::lifecycle::scrub`] says it is due).
    pub scrub: bool,
    /// A restore drill is due ([`vault_core::lifecycle::drill`]): what it needs.
    pub drill: Option<DrillJob>,
    /// Purge orders whose cooling-off is over, to carry out first.
    pub purges: Vec<vault_core::policy::orders::PendingPurge>,
    /// A power-cut test hook ([`crate::init::SEAL_STEP_PAUSE_PARAM`]): when set, each step of
    /// the collection is said (`gc_step`) and followed by this pause. Zero otherwise.
    pub step_pause: std::time::Duration,
}

/// A restore drill to run: the random seed that picks its sample, how many older snapshots per
/// dataset, and the vault key (receipts are checked against it; the report is signed with it).
#[derive(Clone)]
pub struct DrillJob {
    pub seed: [u8; 32],
    pub sample: u32,
    pub identity: Arc<crate::identity::VaultIdentity>,
}

impl std::fmt::Debug for DrillJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillJob").field("seed", &vault_core::keys::hex(&self.seed)).field("sample", &self.sample).field("vault_key", &self.identity.public.to_string()).finish()
    }
}

/// One lifecycle run: [`expire`], then garbage collection of the packs no snapshot needs any
/// more that are older than the grace, then a scrub if one is due, then the capacity outlook.
pub fn run(store: &Store, job: &Job, sealed: &AtomicBool) -> LifecycleReport {
    let now = job.now;
    if !sealed.load(Ordering::SeqCst) {
        return LifecycleReport::default();
    }
    // Every receipt is read (and its signature checked) once a run: purges, expiry and the
    // capacity outlook share the list, less what each took.
    let mut listed = match store.sealed_snapshots() {
        Ok(found) => found,
        Err(e) => {
            let alarm = Event::Alarm { rule: "expiry_failed".into(), detail: format!("listing the sealed snapshots: {e}; nothing expired or purged, tried again in an hour") };
            return LifecycleReport { events: vec![alarm], ..LifecycleReport::default() };
        }
    };
    let (purge_events, purged, purged_ids) = purge(store, &listed.0, &job.purges, &job.holds, (now, sealed));
    listed.0.retain(|s| !purged_ids.contains(&s.id));
    let (mut report, expired_ids) = expire(store, &listed, now, job.retention, &job.holds, sealed);
    listed.0.retain(|s| !expired_ids.contains(&s.id));
    report.events.splice(0..0, purge_events);
    report.purged = purged;
    let started = std::time::Instant::now();
    let pause = job.step_pause;
    let observe = |step: vault_store::GcStep, pack: &str| {
        if !pause.is_zero() {
            crate::events::EventLog::default().emit(now, &Event::GcStep { pack: pack.to_string(), step });
            std::thread::sleep(pause);
        }
    };
    match store.collect_garbage_observed(now, job.gc_grace, &|| sealed.load(Ordering::SeqCst), &observe) {
        Ok(done) => report.events.push(Event::GarbageCollected {
            live_chunks: done.live_chunks,
            packs_removed: done.packs_removed.len(),
            bytes_freed: done.bytes_freed,
            packs_kept_live: done.kept_live,
            packs_kept_young: done.kept_young,
            packs_repacked: done.packs_repacked,
            packs_written: done.packs_written.len(),
            chunks_copied: done.chunks_copied,
            bytes_copied: done.bytes_copied,
            repack_skipped: done.repack_skipped.iter().map(|(pack, why)| format!("{pack}: {why}")).collect(),
            stopped_early: done.stopped_early,
            took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }),
        Err(e) => report.events.push(Event::Alarm { rule: "gc_failed".into(), detail: format!("garbage collection: {e}; nothing more was removed, tried again in an hour") }),
    }
    if job.scrub {
        scrub(store, now, sealed, &mut report);
    }
    if let Some(drill_job) = &job.drill {
        drill(store, drill_job, now, &listed.0, sealed, &mut report);
    }
    if let Ok(space) = vault_store::fs_space(store.root()) {
        let sealed = &listed.0;
        let ingest: Vec<(Timestamp, u64)> = sealed.iter().map(|s| (s.received_at, s.bytes_new)).collect();
        let reserve = store.reserve().bytes;
        let outlook = capacity::outlook(&ingest, now, space.used_bytes, space.free_bytes, reserve);
        report.level = Some(outlook.level);
        report.capacity = Some(Event::Capacity {
            used_bytes: space.used_bytes,
            free_bytes: space.free_bytes,
            reserve_bytes: reserve,
            used_percent: outlook.used_percent,
            ingest_30d_bytes: outlook.ingest_bytes,
            days_until_full: outlook.days_until_full,
            snapshots: sealed.len(),
        });
    }
    report
}

/// Carries out purge orders whose cooling-off is over ([`plan_purge`]): what each names, less
/// what a rule keeps (a hold, the root's `min_retain`, sealed after the order). Returns the
/// events, the ids of the orders carried out whole (one stopped by a window stays waiting, and
/// runs again), and the snapshots that went.
fn purge(
    store: &Store,
    sealed_now: &[vault_core::lifecycle::retention::SealedSnapshot],
    purges: &[vault_core::policy::orders::PendingPurge],
    holds: &Holds,
    (now, sealed): (Timestamp, &AtomicBool),
) -> (Vec<Event>, Vec<String>, Vec<String>) {
    let (mut events, mut done, mut gone_ids) = (Vec::new(), Vec::new(), Vec::new());
    for order in purges {
        // Unreadable times or floor: the order is not carried out (fail closed), and says so.
        let (accepted_at, min_retain) = match (Timestamp::parse(&order.accepted_at), order.min_retain()) {
            (Ok(accepted_at), Ok(min_retain)) => (accepted_at, min_retain),
            (Err(why), _) | (_, Err(why)) => {
                events.push(Event::Alarm { rule: "purge_failed".into(), detail: format!("purge order {}: its record does not read ({why}); nothing was deleted", order.id) });
                continue;
            }
        };
        let plan = plan_purge(sealed_now, |s| order.names(s), accepted_at, min_retain, now, holds);
        let ids: Vec<String> = plan.purge.iter().map(|s| s.id.clone()).collect();
        let kept_held = plan.kept.iter().filter(|(_, why)| matches!(why, PurgeKept::HeldSnapshot | PurgeKept::HeldDataset)).map(|(s, _)| s.id.clone()).collect();
        let kept = plan.kept.iter().map(|(s, why)| format!("{}: {why}", s.id)).collect();
        match store.expire(&ids, &|| sealed.load(Ordering::SeqCst)) {
            Ok(gone) if !gone.stopped_early => {
                for (id, why) in &gone.failed {
                    events.push(Event::Alarm { rule: "purge_failed".into(), detail: format!("purge order {}: snapshot `{id}` stays: {why}", order.id) });
                }
                gone_ids.extend(gone.expired.iter().cloned());
                events.push(Event::PurgeExecuted { order: order.id.clone(), reason: order.reason.clone(), signers: order.signers.clone(), expired: gone.expired, kept_held, kept });
                done.push(order.id.clone());
            }
            Ok(gone) => gone_ids.extend(gone.expired),
            Err(e) => events.push(Event::Alarm { rule: "purge_failed".into(), detail: format!("purge order {}: {e}; it waits for the next run", order.id) }),
        }
    }
    (events, done, gone_ids)
}

/// Reads back and re-hashes every chunk, at most [`scrub::RATE_BYTES_PER_SEC`]; a scrub that
/// read the whole store is recorded (`report.scrubbed`), one that was stopped is not.
fn scrub(store: &Store, now: Timestamp, sealed: &AtomicBool, report: &mut LifecycleReport) {
    let started = std::time::Instant::now();
    let read = std::sync::atomic::AtomicU64::new(0);
    let pace = |bytes: u64| {
        let total = read.fetch_add(bytes, Ordering::SeqCst) + bytes;
        std::thread::sleep(scrub::pause_for(total, started.elapsed(), scrub::RATE_BYTES_PER_SEC));
    };
    match store.scrub(&|| sealed.load(Ordering::SeqCst), &pace) {
        Ok(done) => {
            let found: Vec<String> = done.found.iter().map(|(pack, id, why)| format!("pack {pack}, chunk {id}: {why}")).collect();
            let result = match (found.len(), done.unrecoverable_chunks) {
                (0, 0) => format!("{} chunks in {} packs read back whole", done.chunks, done.packs),
                (_, 0) => format!("{} bad copies found, each chunk still has a good one", found.len()),
                (_, lost) => format!("{lost} chunks have no good copy; snapshots needing them: {}", done.snapshots_affected.join(", ")),
            };
            if done.unrecoverable_chunks > 0 || !found.is_empty() {
                let detail = format!(
                    "scrub: {result} ({}). The vault asks pushers for these chunks again: the next push that carries the same data heals the store. Until then restore the named snapshots from another copy",
                    found.join("; ")
                );
                report.events.push(Event::Alarm { rule: "scrub_found_damage".into(), detail });
            }
            report.events.push(Event::ScrubFinished {
                packs: done.packs,
                chunks: done.chunks,
                bytes: done.bytes,
                found,
                unrecoverable_chunks: done.unrecoverable_chunks,
                snapshots_affected: done.snapshots_affected,
                stopped_early: done.stopped_early,
                took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
            if !done.stopped_early {
                report.scrubbed = Some((now, result));
            }
        }
        Err(e) => report.events.push(Event::Alarm { rule: "scrub_failed".into(), detail: format!("scrub: {e}; tried again in an hour") }),
    }
}

/// A restore drill ([`vault_core::lifecycle::drill`]): the chosen snapshots rebuilt into a null
/// sink at most at the scrub's rate, the report signed and said (`drill_finished`, so it is in
/// the audit log), an alarm naming every snapshot and chunk that failed. A drill a window
/// stopped is said but not recorded: it is due again.
fn drill(store: &Store, job: &DrillJob, now: Timestamp, listed: &[vault_core::lifecycle::retention::SealedSnapshot], sealed: &AtomicBool, report: &mut LifecycleReport) {
    use vault_core::lifecycle::drill::{choose, Candidate, DrillReport};
    let started = std::time::Instant::now();
    let candidates: Vec<Candidate> = listed.iter().map(|s| Candidate { id: s.id.clone(), pusher: s.pusher.clone(), dataset: s.dataset.clone(), received_at: s.received_at }).collect();
    let chosen = choose(&candidates, job.sample, &job.seed);
    let reader = match vault_store::StoreReader::open(store.root()) {
        Ok(reader) => reader,
        Err(e) => {
            report.events.push(Event::Alarm { rule: "drill_failed".into(), detail: format!("restore drill: the store cannot be read ({e}); tried again in an hour") });
            return;
        }
    };
    let read = std::sync::atomic::AtomicU64::new(0);
    let pace = |bytes: u64| {
        let total = read.fetch_add(bytes, Ordering::SeqCst) + bytes;
        std::thread::sleep(scrub::pause_for(total, started.elapsed(), scrub::RATE_BYTES_PER_SEC));
    };
    let (mut drilled, mut stopped_early) = (Vec::new(), false);
    for id in &chosen {
        let dataset = candidates.iter().find(|c| &c.id == id).map(|c| c.dataset.as_str()).unwrap_or_default();
        match vault_store::drill::drill_snapshot(&reader, id, dataset, &job.identity.public, &|| sealed.load(Ordering::SeqCst), &pace) {
            Some(found) => drilled.push(found),
            None => {
                stopped_early = true;
                break;
            }
        }
    }
    let drill_report = DrillReport::new(&job.identity.public, now, started.elapsed(), &job.seed, drilled, stopped_early);
    let signed_report = drill_report.sign(&job.identity.key);
    let summary = drill_report.summary();
    if drill_report.errors > 0 {
        let failed: Vec<String> = drill_report.snapshots.iter().filter(|s| s.error_count > 0).map(|s| format!("snapshot {}: {}", s.snapshot, s.errors.join("; "))).collect();
        let detail =
            format!("restore drill: {summary}. {}. Those snapshots would not restore whole: restore them from another copy, and let the scrub and the next push heal the store", failed.join(" | "));
        report.events.push(Event::Alarm { rule: "drill_failed".into(), detail });
    }
    report.events.push(Event::DrillFinished {
        snapshots: drill_report.snapshots.iter().map(|s| s.snapshot.clone()).collect(),
        files: drill_report.files,
        bytes: drill_report.bytes,
        errors: drill_report.errors,
        bytes_per_sec: drill_report.bytes_per_sec,
        took_ms: drill_report.took_ms,
        seed: drill_report.seed.clone(),
        stopped_early,
        report: signed_report.body,
        signature: signed_report.signature,
    });
    if !stopped_early {
        report.drilled = Some((now, summary));
    }
}

/// Expires, at vault time `now`, every snapshot the retention rules let go; stops between two
/// snapshots as soon as `sealed` turns false.
/// Also returns the ids of the snapshots that went.
fn expire(
    store: &Store,
    (snapshots, unreadable): &(Vec<vault_core::lifecycle::retention::SealedSnapshot>, vault_store::Unreadable),
    now: Timestamp,
    retention: Retention,
    holds: &Holds,
    sealed: &AtomicBool,
) -> (LifecycleReport, Vec<String>) {
    let mut events = Vec::new();
    let plan = plan_expiry(snapshots, now, retention, holds);
    let ids: Vec<String> = plan.expire.iter().map(|s| s.id.clone()).collect();
    let done = match store.expire(&ids, &|| sealed.load(Ordering::SeqCst)) {
        Ok(done) => done,
        Err(e) => {
            events.push(Event::Alarm { rule: "expiry_failed".into(), detail: format!("{e}; tried again in an hour") });
            return (LifecycleReport { events, next_due: plan.next_due, ..LifecycleReport::default() }, Vec::new());
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
    (LifecycleReport { events, next_due: plan.next_due, ..LifecycleReport::default() }, done.expired)
}

/// Runs `work` on this thread at the idle I/O priority class (`ioprio_set`, what `ionice -c 3`
/// does): the disk serves it only when nothing else wants the disk, so maintenance never slows a
/// push. The thread's previous priority is put back afterwards (a pool thread is reused). Where
/// the kernel refuses (no CFQ/BFQ-style scheduler honours classes), the work runs anyway.
pub fn with_idle_io<T>(work: impl FnOnce() -> T) -> T {
    // linux/ioprio.h: IOPRIO_WHO_PROCESS with 0 is the calling thread; class in the top bits.
    const IOPRIO_WHO_PROCESS: nix::libc::c_long = 1;
    const IOPRIO_CLASS_SHIFT: nix::libc::c_long = 13;
    const IOPRIO_CLASS_IDLE: nix::libc::c_long = 3;
    // SAFETY: ioprio_get takes two integers and returns one; it reads and writes no memory.
    let previous = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0 as nix::libc::c_long) };
    // SAFETY: as above, ioprio_set takes three integers and touches no memory of ours.
    let lowered = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0 as nix::libc::c_long, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) } == 0;
    let result = work();
    if lowered && previous >= 0 {
        // SAFETY: as above.
        let _ = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0 as nix::libc::c_long, previous) };
    }
    result
}

/// This thread's I/O priority class (`IOPRIO_PRIO_CLASS` of `ioprio_get`).
#[cfg(test)]
fn io_priority_class() -> Option<i64> {
    // SAFETY: ioprio_get takes two integers and returns one; it reads and writes no memory.
    let value = unsafe { nix::libc::syscall(nix::libc::SYS_ioprio_get, 1 as nix::libc::c_long, 0 as nix::libc::c_long) };
    (value >= 0).then_some(value >> 13)
}

#[cfg(test)]
mod tests {
    #[test]
    fn maintenance_runs_at_the_idle_io_class_and_the_thread_gets_its_class_back() {
        let before = io_priority_class();
        let during = with_idle_io(io_priority_class);
        assert_eq!(during, Some(3), "the idle class");
        assert_eq!(io_priority_class(), before);
    }

    use super::*;
    use std::process::Command;
    use vault_core::keys::{SignedDoc, SigningKey};
    use vault_core::push::chunk::ChunkId;
    use vault_store::{Reserve, StoreError};

    const DAY: i64 = 86_400;
    const T0: i64 = 1_800_000_000;
    const MIB: u64 = 1 << 20;

    /// A small tmpfs, so the disk fills (needs root, as the host tests do).
    struct SmallDisk(tempfile::TempDir);

    impl Drop for SmallDisk {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0.path()).status();
        }
    }

    /// One night's push of a 1 MiB file of its own: sealed, or the store's refusal.
    fn push_night(store: &Store, key: &SigningKey, night: i64) -> Result<String, StoreError> {
        use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
        let mut data = vec![0u8; usize::try_from(MIB).unwrap()];
        data[..8].copy_from_slice(&night.to_be_bytes());
        let id = format!("pg-night-{night:04}");
        let mut pack = store.begin()?;
        pack.append(ChunkId::of(&data), &data)?;
        let entry = Entry { path: b"dump".to_vec(), mode: 0o600, mtime: 1, kind: EntryKind::File { size: MIB, chunks: vec![ChunkRef { id: ChunkId::of(&data), len: u32::try_from(MIB).unwrap() }] } };
        let manifest = Manifest { entries: vec![entry] }.encode().unwrap();
        let receipt = test_net::signed_receipt_at(key, &id, &manifest, ("db", "pg"), T0 + night * DAY, T0 + (night + 7) * DAY);
        store.seal_all(pack, vault_store::SealInput { snapshot_id: &id, manifest: &manifest, receipt: &receipt, profile: None })?;
        Ok(id)
    }

    /// Issue 16: a drill rebuilds the newest night and a seeded sample of the older ones into a
    /// null sink, signs what it found, and names the snapshot and the chunk a flipped byte broke.
    #[test]
    fn a_drill_reports_a_clean_store_with_figures_and_names_the_snapshot_and_chunk_a_flipped_byte_broke() {
        use vault_core::lifecycle::drill::DrillReport;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(&dir.path().join("store")).unwrap();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref().to_vec();
        let key = SigningKey::from_pkcs8(&pkcs8).unwrap();
        let identity = Arc::new(crate::identity::VaultIdentity { public: key.public_key(), key: SigningKey::from_pkcs8(&pkcs8).unwrap(), pkcs8 });
        let ids: Vec<String> = (0..5).map(|night| push_night(&store, &key, night).unwrap()).collect();
        let sealed = AtomicBool::new(true);
        let now = Timestamp::from_unix(T0 + 5 * DAY).unwrap();
        let job = |sample: u32| Job {
            now,
            retention: Retention { keep_last: 10 },
            holds: Holds::default(),
            gc_grace: std::time::Duration::from_secs(86_400 * 365),
            scrub: false,
            drill: Some(DrillJob { seed: [9; 32], sample, identity: identity.clone() }),
            purges: vec![],
            step_pause: std::time::Duration::ZERO,
        };
        let drilled = |report: &LifecycleReport| {
            report
                .events
                .iter()
                .find_map(|e| match e {
                    Event::DrillFinished { report, signature, .. } => Some((report.clone(), signature.clone())),
                    _ => None,
                })
                .expect("a drill ran")
        };

        let clean = run(&store, &job(2), &sealed);
        let (body, signature) = drilled(&clean);
        let report = DrillReport::verify(&SignedDoc { body, signature }, &identity.public).unwrap();
        println!("clean drill: {}", report.summary());
        assert_eq!((report.snapshots.len(), report.files, report.bytes, report.errors), (3, 3, 3 * MIB, 0), "{report:?}");
        assert!(report.snapshots.iter().any(|s| s.snapshot == ids[4]), "the newest is always drilled");
        assert!(report.bytes_per_sec > 0 && report.passed());
        assert!(clean.drilled.as_ref().is_some_and(|(at, summary)| *at == now && summary.contains("no errors")), "{:?}", clean.drilled);
        assert!(!clean.events.iter().any(|e| matches!(e, Event::Alarm { .. })), "{:?}", clean.events);

        // One byte flipped in the middle of one pack, past its immutable flag.
        let pack = std::fs::read_dir(store.root().join("packs")).unwrap().flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "pack")).min().unwrap();
        assert!(Command::new("chattr").arg("-i").arg(&pack).status().unwrap().success());
        let mut bytes = std::fs::read(&pack).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::write(&pack, &bytes).unwrap();
        let broken = run(&store, &job(10), &sealed);
        let (body, signature) = drilled(&broken);
        let report = DrillReport::verify(&SignedDoc { body, signature }, &identity.public).unwrap();
        println!("drill over a flipped byte: {}", report.summary());
        assert_eq!(report.snapshots.len(), 5);
        let failed: Vec<_> = report.snapshots.iter().filter(|s| s.error_count > 0).collect();
        assert_eq!(failed.len(), 1, "{report:?}");
        let night: i64 = failed[0].snapshot.trim_start_matches("pg-night-").parse().unwrap();
        let mut data = vec![0u8; usize::try_from(MIB).unwrap()];
        data[..8].copy_from_slice(&night.to_be_bytes());
        let chunk = ChunkId::of(&data).to_string();
        assert!(failed[0].errors[0].contains(&chunk) && failed[0].errors[0].contains("dump"), "{:?}", failed[0].errors);
        let alarm = broken
            .events
            .iter()
            .find_map(|e| match e {
                Event::Alarm { rule, detail } if rule == "drill_failed" => Some(detail.clone()),
                _ => None,
            })
            .expect("an alarm");
        assert!(alarm.contains(&failed[0].snapshot) && alarm.contains(&chunk), "{alarm}");
        assert!(broken.drilled.as_ref().is_some_and(|(_, summary)| summary.contains("errors")), "a failed drill is still a drill that ran: {:?}", broken.drilled);
    }

    #[test]
    fn a_full_vault_recovers_by_expiry_and_collection_and_takes_the_next_nights_push() {
        let disk = SmallDisk(tempfile::tempdir().unwrap());
        assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(disk.0.path()).status().unwrap().success(), "mounting a tmpfs needs root");
        let (store, _) = Store::open_with(&disk.0.path().join("store"), Reserve { bytes: 4 * MIB, inodes: 64 }).unwrap();
        let key = SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
        // Nightly pushes, kept a week each, until the vault refuses one: today's vault, full.
        let mut night = 0;
        let refusal = loop {
            match push_night(&store, &key, night) {
                Ok(_) => night += 1,
                Err(e) => break e,
            }
            assert!(night < 64, "a 24 MiB disk never filled");
        };
        assert!(matches!(refusal, StoreError::DiskReserve { .. }), "{refusal}");
        let full_at = night;
        assert!(full_at > 10, "only {full_at} nights fit");
        // The vault's time: the night it filled. A run expires what is past its week, keeps the
        // newest 3, and collects their packs (all older than the grace of 0 here).
        let sealed = AtomicBool::new(true);
        let now = Timestamp::from_unix(T0 + full_at * DAY).unwrap();
        let job =
            Job { now, retention: Retention::default(), holds: Holds::default(), gc_grace: std::time::Duration::ZERO, scrub: true, drill: None, purges: vec![], step_pause: std::time::Duration::ZERO };
        let report = run(&store, &job, &sealed);
        assert!(report.scrubbed.is_some(), "a whole scrub ran: {:?}", report.events);
        let expired = report.events.iter().filter(|e| matches!(e, Event::SnapshotExpired { .. })).count() as i64;
        // Nights before full_at - 7 are past their week (night full_at - 7 is due at exactly now).
        assert_eq!(expired, full_at - 7, "{:?}", report.events);
        let freed = report
            .events
            .iter()
            .find_map(|e| match e {
                Event::GarbageCollected { packs_removed, bytes_freed, .. } => Some((*packs_removed, *bytes_freed)),
                _ => None,
            })
            .unwrap();
        assert_eq!(freed.0 as i64, expired);
        assert!(freed.1 >= expired as u64 * MIB, "{freed:?}");
        // The filesystem is far from full again, and the run says so.
        let Some(Event::Capacity { used_percent, snapshots, .. }) = report.capacity else { panic!("no capacity: {:?}", report.events) };
        assert_eq!((snapshots, report.level), (7, Some(vault_core::lifecycle::capacity::Level::Fine)));
        assert!(used_percent < 50, "{used_percent} % used after the run");
        // The next night's push goes in, and every night still held restores.
        push_night(&store, &key, full_at).unwrap();
        let reader = vault_store::StoreReader::open(store.root()).unwrap();
        let held = reader.snapshot_ids().unwrap();
        assert_eq!(held.len(), 8, "the 7 nights within their week and the new one");
        for id in held {
            let manifest = reader.manifest(&id).unwrap();
            for (_, chunk) in manifest.chunk_refs() {
                assert_eq!(reader.read_chunk(&chunk.id).unwrap().len() as u64, MIB);
            }
        }
    }

    /// Night `night`'s push: a 64 KiB dump of its own, and the week's 8 KiB of configuration
    /// (the same all week, new each week), kept 30 days.
    fn push_week_night(store: &Store, key: &SigningKey, night: i64) -> String {
        use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
        let mut dump = vec![0u8; 64 << 10];
        dump[..8].copy_from_slice(&night.to_be_bytes());
        let mut config = vec![1u8; 8 << 10];
        config[..8].copy_from_slice(&(night / 7).to_be_bytes());
        let id = format!("pg-night-{night:04}");
        let mut pack = store.begin().unwrap();
        let mut entries = Vec::new();
        for (name, data) in [("config", &config), ("dump", &dump)] {
            let chunk = ChunkId::of(data);
            match store.chunk_len(&chunk) {
                Some(len) => pack.prove(chunk, len).unwrap(),
                None => pack.append(chunk, data).unwrap(),
            }
            let len = u32::try_from(data.len()).unwrap();
            entries.push(Entry { path: name.as_bytes().to_vec(), mode: 0o600, mtime: 1, kind: EntryKind::File { size: u64::from(len), chunks: vec![ChunkRef { id: chunk, len }] } });
        }
        let manifest = Manifest { entries }.encode().unwrap();
        let receipt = test_net::signed_receipt_at(key, &id, &manifest, ("db", "pg"), T0 + night * DAY, T0 + (night + 30) * DAY);
        store.seal_all(pack, vault_store::SealInput { snapshot_id: &id, manifest: &manifest, receipt: &receipt, profile: None }).unwrap();
        id
    }

    /// Three years of nightly pushes on a 16 MiB disk they would fill in seven months, a
    /// lifecycle run an hour after each, in injected time. Every night, exactly: the 30 nights
    /// within their `retain` are held and nothing else; the night that expires takes its pack
    /// with it, or, on the first night of a week (its pack also holds the week's configuration,
    /// still needed), has that pack repacked into one holding only the configuration, which goes
    /// in turn when the week's last night expires. The disk never holds more than 30 nights' worth,
    /// a monthly scrub finds nothing, and every night held at the end restores.
    #[test]
    fn three_years_of_nightly_pushes_expire_collect_and_repack_to_a_steady_disk() {
        let disk = SmallDisk(tempfile::tempdir().unwrap());
        assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(disk.0.path()).status().unwrap().success(), "mounting a tmpfs needs root");
        let (store, _) = Store::open_with(&disk.0.path().join("store"), Reserve { bytes: MIB, inodes: 64 }).unwrap();
        let key = SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
        let sealed = AtomicBool::new(true);
        let pack_count = || std::fs::read_dir(store.root().join("packs")).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pack")).count();
        let (mut repacked_total, mut most_bytes) = (0usize, 0u64);
        const NIGHTS: i64 = 3 * 365;
        for night in 0..NIGHTS {
            push_week_night(&store, &key, night);
            let now = Timestamp::from_unix(T0 + night * DAY + 3600).unwrap();
            let job = Job {
                now,
                retention: Retention::default(),
                holds: Holds::default(),
                gc_grace: std::time::Duration::ZERO,
                scrub: night % 30 == 29,
                drill: None,
                purges: vec![],
                step_pause: std::time::Duration::ZERO,
            };
            let report = run(&store, &job, &sealed);
            let expired: Vec<String> = report
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::SnapshotExpired { snapshot, .. } => Some(snapshot.clone()),
                    _ => None,
                })
                .collect();
            // Night n - 30's retain ran out at exactly n's midnight: it goes in the run an hour later.
            let due = night - 30;
            assert_eq!(expired, if due >= 0 { vec![format!("pg-night-{due:04}")] } else { vec![] }, "night {night}");
            let Some(Event::GarbageCollected { packs_removed, packs_repacked, packs_written, chunks_copied, bytes_copied, repack_skipped, .. }) =
                report.events.iter().find(|e| matches!(e, Event::GarbageCollected { .. })).cloned()
            else {
                panic!("night {night}: no collection: {:?}", report.events)
            };
            assert!(repack_skipped.is_empty(), "night {night}: {repack_skipped:?}");
            // The first night of a week leaves its configuration behind, rewritten; the week's last
            // night takes the rewritten pack along.
            let first_of_week = due >= 0 && due % 7 == 0;
            let last_of_week = due >= 6 && due % 7 == 6;
            let expected = match (due >= 0, first_of_week, last_of_week) {
                (false, _, _) => (0, 0, 0, 0, 0),
                (true, true, _) => (1, 1, 1, 1, 8 << 10),
                (true, false, true) => (2, 0, 0, 0, 0),
                (true, false, false) => (1, 0, 0, 0, 0),
            };
            assert_eq!((packs_removed, packs_repacked, packs_written, chunks_copied, bytes_copied), expected, "night {night}");
            repacked_total += packs_repacked;
            if job.scrub {
                assert!(report.events.iter().any(|e| matches!(e, Event::ScrubFinished { found, unrecoverable_chunks: 0, .. } if found.is_empty())), "night {night}: {:?}", report.events);
            }
            // Held: nights n-29..=n; packs: theirs, and the rewritten configuration of the week of
            // the oldest held night when that night is not the week's first.
            let oldest_held = (night - 29).max(0);
            let rewritten = usize::from(night >= 30 && oldest_held % 7 != 0);
            assert_eq!(std::fs::read_dir(store.root().join("snapshots")).unwrap().count() as i64, night - oldest_held + 1, "night {night}");
            assert_eq!(pack_count(), usize::try_from(night - oldest_held + 1).unwrap() + rewritten, "night {night}");
            let bytes: u64 = std::fs::read_dir(store.root().join("packs")).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
            most_bytes = most_bytes.max(bytes);
        }
        // 156 weeks, the last five still whole or partly held.
        assert_eq!(repacked_total as i64, (NIGHTS - 30 + 6) / 7, "one repack for each week whose first night expired");
        assert!(most_bytes < 31 * (72 << 10) + (8 << 10) + 31 * 200, "at most 30 nights and a week's configuration on the disk: {most_bytes}");
        let reader = vault_store::StoreReader::open(store.root()).unwrap();
        let held = reader.snapshot_ids().unwrap();
        assert_eq!(held.first().map(String::as_str), Some(format!("pg-night-{:04}", NIGHTS - 30).as_str()));
        for id in held {
            let manifest = reader.manifest(&id).unwrap();
            for (_, chunk) in manifest.chunk_refs() {
                assert_eq!(ChunkId::of(&reader.read_chunk(&chunk.id).unwrap()), chunk.id, "{id}");
            }
        }
    }
}
