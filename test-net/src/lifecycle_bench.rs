//! The lifecycle on a store of many snapshots and chunks: scrub's read rate against
//! `sha256sum` on the same pack files, and garbage collection's time (mark, sweep and repack)
//! once half the snapshots have expired. Each snapshot of the newer half also names a tenth of
//! the chunks of one of the older half, so every expired snapshot's pack is nine tenths dead and
//! is repacked. `make bench` runs it big (1000 snapshots, 1 M chunks);
//! `make test` runs [`run`] small, so the code keeps working.

use std::path::Path;
use std::time::Instant;

use vault_core::keys::SigningKey;
use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::units::Timestamp;

/// What one bench run measured.
#[derive(Debug)]
pub struct Measured {
    pub snapshots: usize,
    pub chunks: u64,
    pub pack_bytes: u64,
    pub seal_secs: f64,
    pub scrub_secs: f64,
    pub sha256sum_secs: f64,
    /// A restore drill of every snapshot (rebuilt into a null sink, every chunk re-hashed).
    pub drill_secs: f64,
    pub drill_bytes: u64,
    /// Appending `audit_entries` event lines of about 200 bytes to the audit log, in batches of
    /// 4096 with a signed checkpoint after each (as the daemon's writer does).
    pub audit_entries: u64,
    pub audit_secs: f64,
    /// Small pushes sealed per second without and with their event lines logged (about ten a
    /// push, each batch appended and signed as the daemon's writer does): the log's cost.
    pub seals_per_sec_unlogged: f64,
    pub seals_per_sec_logged: f64,
    pub expire_secs: f64,
    pub gc_secs: f64,
    pub packs_removed: usize,
    pub packs_repacked: usize,
    pub chunks_copied: u64,
    pub bytes_freed: u64,
}

/// Seals `snapshots` snapshots of `chunks_per` new chunks of `chunk_bytes` each into a store
/// under `dir`, scrubs it, runs `sha256sum` over its packs, expires the older half and
/// collects. `cold`: drop the page cache before each timed read (root; the whole machine's).
/// Panics on any failure (a bench has no other way to say it).
pub fn run(dir: &Path, snapshots: usize, chunks_per: usize, chunk_bytes: usize, cold: bool) -> Measured {
    const T0: i64 = 1_800_000_000;
    let key = SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("a key").as_ref()).expect("a key");
    let (store, _) = vault_store::Store::open_with(&dir.join("store"), vault_store::Reserve { bytes: 0, inodes: 0 }).expect("a store");
    let started = Instant::now();
    let mut ids = Vec::with_capacity(snapshots);
    let mut data = vec![0u8; chunk_bytes];
    let len = u32::try_from(chunk_bytes).expect("small");
    let half = snapshots / 2;
    let mut chunk_of = |s: usize, c: usize| {
        data[..8].copy_from_slice(&(s as u64).to_be_bytes());
        data[8..16].copy_from_slice(&(c as u64).to_be_bytes());
        (ChunkId::of(&data), data.clone())
    };
    for s in 0..snapshots {
        let mut pack = store.begin().expect("staging");
        let mut entries = Vec::with_capacity(chunks_per + chunks_per / 10);
        let file = |name: String, id: ChunkId| Entry { path: name.into_bytes(), mode: 0o640, mtime: 1, kind: EntryKind::File { size: u64::from(len), chunks: vec![ChunkRef { id, len }] } };
        for c in 0..chunks_per {
            let (id, bytes) = chunk_of(s, c);
            pack.append(id, &bytes).expect("staged");
            entries.push(file(format!("f{c:07}"), id));
        }
        // A tenth of an older snapshot's chunks, already stored.
        if s >= half {
            for c in 0..chunks_per / 10 {
                let (id, _) = chunk_of(s - half, c);
                pack.prove(id, len).expect("proven");
                entries.push(file(format!("older/f{c:07}"), id));
            }
        }
        let manifest = Manifest { entries }.encode().expect("a manifest");
        let id = format!("bench-{s:05}");
        let day = i64::try_from(s).expect("small");
        let receipt = crate::signed_receipt_at(&key, &id, &manifest, ("bench", "data"), T0 + day * 3600, T0 + day * 3600 + 86_400);
        store.seal_all(pack, vault_store::SealInput { snapshot_id: &id, manifest: &manifest, receipt: &receipt, profile: None }).expect("sealed");
        ids.push(id);
    }
    let seal_secs = started.elapsed().as_secs_f64();
    let packs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("store/packs")).expect("packs").flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "pack")).collect();
    let pack_bytes: u64 = packs.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();

    if cold {
        drop_caches();
    }
    let started = Instant::now();
    let scrubbed = store.scrub(&|| true, &|_| {}).expect("scrub");
    let scrub_secs = started.elapsed().as_secs_f64();
    assert!(scrubbed.found.is_empty(), "{:?}", scrubbed.found);

    if cold {
        drop_caches();
    }
    let started = Instant::now();
    let ok = std::process::Command::new("sha256sum").args(&packs).stdout(std::process::Stdio::null()).status().expect("sha256sum runs").success();
    assert!(ok, "sha256sum failed");
    let sha256sum_secs = started.elapsed().as_secs_f64();

    if cold {
        drop_caches();
    }
    let started = Instant::now();
    let reader = vault_store::StoreReader::open(&dir.join("store")).expect("a reader");
    let mut drill_bytes = 0;
    for id in &ids {
        let drilled = vault_store::drill::drill_snapshot(&reader, id, "data", &key.public_key(), &|| true, &|_| {}).expect("not stopped");
        assert_eq!(drilled.error_count, 0, "{drilled:?}");
        drill_bytes += drilled.bytes;
    }
    let drill_secs = started.elapsed().as_secs_f64();

    // The audit log: a tenth as many event lines as chunks, appended and signed as the daemon's
    // writer does (batches of at most 4096, a checkpoint after each).
    let audit_entries = (snapshots * chunks_per / 10).max(1) as u64;
    let (mut log, _) = vault_store::audit::AuditLog::open(&dir.join("store"), &key.public_key()).expect("a log");
    let started = Instant::now();
    let mut written = 0;
    while written < audit_entries {
        let batch: Vec<Vec<u8>> = (written..(written + 4096).min(audit_entries)).map(|n| format!(r#"{{"event":"session_refused","seq":{n},"time":"2027-01-15T08:00:00Z","peer":"192.0.2.77:41234","reason":"TLS handshake: the client certificate is not one the policy lists (key 0123456789abcdef)"}}"#).into_bytes()).collect();
        written += batch.len() as u64;
        log.append(&batch).expect("appended");
        log.sign(&key).expect("signed");
    }
    let audit_secs = started.elapsed().as_secs_f64();

    // The log's cost per push: small pushes sealed alone, then each with the ten lines a push
    // prints (session, seal, commit, ...) appended and signed.
    let small = (snapshots / 5).max(2);
    let mut seal_small = |n: usize, log: Option<&mut vault_store::audit::AuditLog>| {
        let (id, bytes) = chunk_of(snapshots + n, 0);
        let mut pack = store.begin().expect("staging");
        pack.append(id, &bytes).expect("staged");
        let entry = Entry { path: b"small".to_vec(), mode: 0o640, mtime: 1, kind: EntryKind::File { size: u64::from(len), chunks: vec![ChunkRef { id, len }] } };
        let manifest = Manifest { entries: vec![entry] }.encode().expect("a manifest");
        let snapshot = format!("small-{n:05}");
        let receipt = crate::signed_receipt_at(&key, &snapshot, &manifest, ("bench", "small"), T0, T0 + 86_400);
        store.seal_all(pack, vault_store::SealInput { snapshot_id: &snapshot, manifest: &manifest, receipt: &receipt, profile: None }).expect("sealed");
        if let Some(log) = log {
            let lines: Vec<Vec<u8>> =
                (0..10).map(|i| format!(r#"{{"event":"seal_line_{i}","time":"2027-01-15T08:00:00Z","snapshot":"{snapshot}","pusher":"bench","dataset":"small","bytes":1024}}"#).into_bytes()).collect();
            log.append(&lines).expect("appended");
            log.sign(&key).expect("signed");
        }
    };
    let started = Instant::now();
    for n in 0..small {
        seal_small(n, None);
    }
    let seals_per_sec_unlogged = small as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for n in small..2 * small {
        seal_small(n, Some(&mut log));
    }
    let seals_per_sec_logged = small as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let expired = store.expire(&ids[..half], &|| true).expect("expiry");
    assert_eq!(expired.expired.len(), half);
    let expire_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let later = Timestamp::from_unix(T0 + 3650 * 86_400).expect("a time");
    let collected = store.collect_garbage(later, std::time::Duration::ZERO, &|| true).expect("collection");
    let gc_secs = started.elapsed().as_secs_f64();
    Measured {
        snapshots,
        chunks: scrubbed.chunks,
        pack_bytes,
        seal_secs,
        scrub_secs,
        sha256sum_secs,
        drill_secs,
        drill_bytes,
        audit_entries,
        audit_secs,
        seals_per_sec_unlogged,
        seals_per_sec_logged,
        expire_secs,
        gc_secs,
        packs_removed: collected.packs_removed.len(),
        packs_repacked: collected.packs_repacked,
        chunks_copied: collected.chunks_copied,
        bytes_freed: collected.bytes_freed,
    }
}

/// Reads start from the disk, not the page cache, when we may say so (root); else as they are.
fn drop_caches() {
    let _ = std::process::Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_small_lifecycle_bench_scrubs_everything_and_collects_the_expired_half() {
        let dir = tempfile::tempdir().unwrap();
        let measured = super::run(dir.path(), 20, 50, 256, false);
        assert_eq!((measured.snapshots, measured.chunks), (20, 1000));
        // Every expired snapshot's pack was nine tenths dead: each rewritten, its tenth copied.
        assert_eq!((measured.packs_removed, measured.packs_repacked, measured.chunks_copied), (10, 10, 10 * 5), "{measured:?}");
        assert!(measured.bytes_freed >= 10 * 45 * 256, "{measured:?}");
        // The drill rebuilt every byte every snapshot names (its own and the older tenth).
        assert_eq!(measured.drill_bytes, (20 * 50 + 10 * 5) * 256, "{measured:?}");
        assert_eq!(measured.audit_entries, 100);
        assert!(measured.seals_per_sec_unlogged > 0.0 && measured.seals_per_sec_logged > 0.0, "{measured:?}");
        let _ = std::process::Command::new("chattr").args(["-R", "-i"]).arg(dir.path()).status();
    }
}
