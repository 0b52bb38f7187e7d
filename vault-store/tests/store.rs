//! The store on a real filesystem: sealing, immutability, recovery after a crash, disk full.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::push::chunk::ChunkId;
use vault_core::keys::SigningKey;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::push::receipt::{Receipt, SignedReceipt};
use vault_core::units::Timestamp;
use vault_store::{is_immutable, Store, StoreError, StoreReader, SealInput};

/// A temporary store that clears immutable flags before removing itself.
struct TempStore {
    dir: tempfile::TempDir,
}

impl TempStore {
    fn new() -> TempStore {
        TempStore { dir: tempfile::tempdir().unwrap() }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}


fn vault_key() -> SigningKey {
    SigningKey::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap()
}

fn manifest_for(files: &[(&str, &[u8])]) -> (Manifest, Vec<u8>) {
    let entries = files
        .iter()
        .map(|(path, data)| Entry {
            path: path.as_bytes().to_vec(),
            mode: 0o640,
            mtime: 1,
            kind: EntryKind::File { size: data.len() as u64, chunks: vec![ChunkRef { id: ChunkId::of(data), len: data.len() as u32 }] },
        })
        .collect();
    let manifest = Manifest { entries };
    let bytes = manifest.encode().unwrap();
    (manifest, bytes)
}

fn receipt(key: &SigningKey, snapshot_id: &str, manifest: &[u8]) -> SignedReceipt {
    let r = Receipt {
        vault_id: "vault-01".into(),
        vault_key: key.public_key(),
        policy_version: 1,
        snapshot_id: snapshot_id.into(),
        dataset: "db".into(),
        pusher: "p".into(),
        manifest_sha256: vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, manifest).as_ref()),
        files: 1,
        logical_bytes: 0,
        chunks_total: 1,
        chunks_new: 1,
        bytes_new: 0,
        received_at: Timestamp::from_unix(1_800_000_000).unwrap(),
        retain_until: Timestamp::from_unix(1_900_000_000).unwrap(),
        client_time: 0,
    };
    let (body, signature) = r.sign(key);
    SignedReceipt { body, signature }
}

fn seal(store: &Store, key: &SigningKey, id: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let mut pack = store.begin().unwrap();
    for (_, data) in files {
        if !store.has_chunk(&ChunkId::of(data)) {
            pack.append(ChunkId::of(data), data).unwrap();
        }
    }
    let (_, bytes) = manifest_for(files);
    let r = receipt(key, id, &bytes);
    store.seal_all(pack, SealInput { snapshot_id: id, manifest: &bytes, receipt: &r }).unwrap().snapshot_dir
}

#[test]
fn sealed_snapshots_read_back_and_are_immutable() {
    let tmp = TempStore::new();
    let key = vault_key();
    let (store, recovery) = Store::open(&tmp.root()).unwrap();
    assert_eq!(recovery.snapshots, 0);
    let dir = seal(&store, &key, "s1", &[("a", b"alpha"), ("b", b"beta")]);
    assert!(is_immutable(&dir).unwrap() && is_immutable(&dir.join("manifest")).unwrap());
    // Not even root can change or remove a sealed file.
    assert!(std::fs::write(dir.join("manifest"), b"x").is_err());
    assert!(std::fs::remove_dir_all(&dir).is_err());

    seal(&store, &key, "s2", &[("a", b"alpha"), ("c", b"gamma")]);
    let reader = StoreReader::open(&tmp.root()).unwrap();
    let ids: Vec<String> = reader.snapshot_ids().unwrap();
    assert_eq!(ids, ["s1", "s2"]);
    let manifest = reader.manifest("s2").unwrap();
    let data: Vec<Vec<u8>> = manifest.chunk_refs().map(|(_, c)| reader.read_chunk(&c.id).unwrap()).collect();
    assert_eq!(data, vec![b"alpha".to_vec(), b"gamma".to_vec()]);
    assert!(matches!(reader.manifest("nope"), Err(StoreError::NoSnapshot { .. })));
    assert!(matches!(reader.manifest("../s1"), Err(StoreError::Core(_))));
}

#[test]
fn a_snapshot_id_is_never_reused() {
    let tmp = TempStore::new();
    let key = vault_key();
    let (store, _) = Store::open(&tmp.root()).unwrap();
    seal(&store, &key, "s1", &[("a", b"alpha")]);
    let pack = store.begin().unwrap();
    let (_, bytes) = manifest_for(&[]);
    let r = receipt(&key, "s1", &bytes);
    let err = store.seal_all(pack, SealInput { snapshot_id: "s1", manifest: &bytes, receipt: &r }).unwrap_err();
    assert!(matches!(err, StoreError::SnapshotExists { .. }), "{err}");
}

#[test]
fn a_crash_before_sealing_leaves_nothing_visible() {
    let tmp = TempStore::new();
    let key = vault_key();
    {
        let (store, _) = Store::open(&tmp.root()).unwrap();
        seal(&store, &key, "kept", &[("a", b"alpha")]);
        let mut pack = store.begin().unwrap();
        pack.append(ChunkId::of(b"half"), b"half").unwrap();
        // The process dies here: simulate by leaking the staging pack.
        std::mem::forget(pack);
        // And a seal that died between renaming the pack and writing its index.
        std::fs::write(tmp.root().join("packs/deadbeef.pack"), b"orphan").unwrap();
        std::fs::create_dir(tmp.root().join("staging/snapshot-x")).unwrap();
    }
    let (store, recovery) = Store::open(&tmp.root()).unwrap();
    assert_eq!((recovery.staging_removed, recovery.orphan_packs_removed, recovery.snapshots), (2, 1, 1));
    assert!(!store.has_chunk(&ChunkId::of(b"half")));
    assert!(store.has_chunk(&ChunkId::of(b"alpha")));
    assert_eq!(std::fs::read_dir(tmp.root().join("staging")).unwrap().count(), 0);
    let reader = StoreReader::open(&tmp.root()).unwrap();
    assert_eq!(reader.read_chunk(&ChunkId::of(b"alpha")).unwrap(), b"alpha");
}

#[test]
fn a_corrupted_chunk_is_refused_on_read() {
    let tmp = TempStore::new();
    let key = vault_key();
    let (store, _) = Store::open(&tmp.root()).unwrap();
    seal(&store, &key, "s1", &[("a", b"alpha")]);
    // Someone with the disk flips a byte in the pack (after lifting the flag).
    let pack = std::fs::read_dir(tmp.root().join("packs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "pack")).unwrap();
    Command::new("chattr").arg("-i").arg(&pack).output().unwrap();
    std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&pack, b"alphA").unwrap();
    let reader = StoreReader::open(&tmp.root()).unwrap();
    let err = reader.read_chunk(&ChunkId::of(b"alpha")).unwrap_err();
    assert!(err.to_string().contains("reads back as"), "{err}");
}

/// A small tmpfs, so the disk fills. Needs root (CI and the developers' machines are).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(dir.path()).status().unwrap();
        assert!(ok.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn disk_full_refuses_the_push_and_keeps_what_was_sealed() {
    let disk = SmallDisk::mount("2m");
    let root = disk.path().join("store");
    let key = vault_key();
    let (store, _) = Store::open(&root).unwrap();
    let mut pack = store.begin().unwrap();
    pack.append(ChunkId::of(b"small"), b"small").unwrap();
    let (_, bytes) = manifest_for(&[("a", b"small")]);
    let r = receipt(&key, "before", &bytes);
    store.seal_all(pack, SealInput { snapshot_id: "before", manifest: &bytes, receipt: &r }).unwrap();

    let mut pack = store.begin().unwrap();
    let big = vec![7u8; 1024 * 1024];
    let err = (0..4).try_for_each(|i| {
        let mut chunk = big.clone();
        chunk[0] = i;
        pack.append(ChunkId::of(&chunk), &chunk)
    });
    let err = match err {
        Err(e) => e,
        Ok(()) => {
            let (_, bytes) = manifest_for(&[]);
            let r = receipt(&key, "after", &bytes);
            store.seal_all(pack, SealInput { snapshot_id: "after", manifest: &bytes, receipt: &r }).unwrap_err()
        }
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    let reader = StoreReader::open(&root).unwrap();
    let ids: Vec<String> = reader.snapshot_ids().unwrap();
    assert_eq!(ids, ["before"]);
    assert_eq!(reader.read_chunk(&ChunkId::of(b"small")).unwrap(), b"small");
}

#[test]
fn where_the_filesystem_refuses_immutability_files_are_made_read_only_and_it_is_said() {
    // ramfs has no FS_IOC_SETFLAGS (tmpfs and ext4 do).
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount").args(["-t", "ramfs", "ramfs"]).arg(dir.path()).status().unwrap();
    assert!(mounted.success(), "mounting ramfs needs root");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let key = vault_key();
    let (store, _) = Store::open(&dir.path().join("store")).unwrap();
    let mut pack = store.begin().unwrap();
    pack.append(ChunkId::of(b"x"), b"x").unwrap();
    let (_, bytes) = manifest_for(&[("a", b"x")]);
    let r = receipt(&key, "s1", &bytes);
    let sealed = store.seal_all(pack, SealInput { snapshot_id: "s1", manifest: &bytes, receipt: &r }).unwrap();
    assert!(!sealed.fallbacks.is_empty());
    assert!(sealed.fallbacks.iter().all(|(_, reason)| reason.contains("made read-only instead")), "{:?}", sealed.fallbacks);
    let mode = std::fs::metadata(sealed.snapshot_dir.join("manifest")).unwrap().permissions().mode();
    assert_eq!(mode & 0o222, 0, "no write bit left: {mode:o}");
}

#[test]
fn a_manifest_changed_on_disk_is_refused_against_its_signed_receipt() {
    let tmp = TempStore::new();
    let key = vault_key();
    let (store, _) = Store::open(&tmp.root()).unwrap();
    let dir = seal(&store, &key, "s1", &[("a", b"alpha")]);
    // Someone with the disk swaps in a manifest that would write outside the target.
    Command::new("chattr").args(["-R", "-i"]).arg(&dir).output().unwrap();
    std::fs::set_permissions(dir.join("manifest"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, evil) = manifest_for(&[("a", b"alpha")]);
    let evil = evil.iter().map(|b| if *b == b'a' { b'b' } else { *b }).collect::<Vec<u8>>();
    std::fs::write(dir.join("manifest"), evil).unwrap();
    let err = StoreReader::open(&tmp.root()).unwrap().manifest("s1").unwrap_err();
    assert!(err.to_string().contains("receipt says"), "{err}");
}

// ---- one damaged pack costs only the snapshots that need its chunks ---------------------

/// Lifts what sealing put on a file (the immutable flag, or read-only mode bits where the
/// filesystem refused the flag), as someone with the disk could.
fn unseal(path: &Path) {
    Command::new("chattr").arg("-i").arg(path).output().unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
}

fn pack_files(root: &Path) -> Vec<PathBuf> {
    let mut packs: Vec<PathBuf> =
        std::fs::read_dir(root.join("packs")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "pack")).collect();
    packs.sort();
    packs
}

/// Seals a snapshot and returns the one new pack it made.
fn seal_one_pack(store: &Store, key: &SigningKey, id: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let before = pack_files(store.root());
    seal(store, key, id, files);
    let mut new: Vec<PathBuf> = pack_files(store.root()).into_iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(new.len(), 1, "{id} made one pack");
    new.remove(0)
}

/// Reads every chunk of a snapshot back, as a restore would.
fn restores(reader: &StoreReader, id: &str) -> bool {
    let manifest = reader.manifest(id).unwrap();
    let all_read = manifest.chunk_refs().all(|(_, c)| reader.read_chunk(&c.id).is_ok());
    all_read
}

/// s1 (alpha), s2 (alpha again and beta, in a pack of its own), s3 (gamma); `damage` harms
/// s2's pack or index. Then every snapshot but s2 restores, s2 is named with the pack and the
/// reason, and a later push of beta makes s2 whole again.
fn only_the_snapshot_that_needs_a_damaged_pack_is_lost(damage: impl FnOnce(&Path, &Path), reason: &str) {
    let tmp = TempStore::new();
    let key = vault_key();
    let (store, _) = Store::open(&tmp.root()).unwrap();
    seal(&store, &key, "s1", &[("a", b"alpha")]);
    let pack = seal_one_pack(&store, &key, "s2", &[("a", b"alpha"), ("b", b"beta")]);
    seal(&store, &key, "s3", &[("c", b"gamma")]);
    drop(store);
    let index = pack.with_extension("idx");
    damage(&pack, &index);

    let (store, recovery) = Store::open(&tmp.root()).expect("one damaged pack never fails the whole store");
    assert_eq!(recovery.damaged_packs.len(), 1, "{:?}", recovery.damaged_packs);
    assert_eq!(recovery.damaged_packs[0].0, pack);
    assert!(recovery.damaged_packs[0].1.contains(reason), "{:?}", recovery.damaged_packs);
    // Its chunks are not counted as held, so the next push sends them again.
    assert!(!store.has_chunk(&ChunkId::of(b"beta")) && store.has_chunk(&ChunkId::of(b"alpha")));
    drop(store);

    let reader = StoreReader::open(&tmp.root()).unwrap();
    assert_eq!(reader.damaged_packs().len(), 1);
    for id in ["s1", "s3"] {
        assert!(reader.snapshot_health(id).unwrap().is_restorable(), "{id}");
        assert!(restores(&reader, id), "{id} restores");
    }
    let health = reader.snapshot_health("s2").unwrap();
    assert_eq!((health.chunks, health.unavailable_chunks()), (2, 1), "{health:?}");
    let said = health.to_string();
    assert!(said.starts_with("UNRESTORABLE: 1 chunk(s) in ") && said.contains(&pack.display().to_string()) && said.contains(reason), "{said}");
    let beta = ChunkId::of(b"beta");
    let err = reader.read_chunk(&beta).unwrap_err().to_string();
    for part in [beta.to_string(), pack.display().to_string(), reason.to_string()] {
        assert!(err.contains(&part), "`{part}` in: {err}");
    }

    // The pusher sends beta again (the store no longer counts it): s2 restores from the new pack.
    let (store, _) = Store::open(&tmp.root()).unwrap();
    seal(&store, &key, "s4", &[("b", b"beta")]);
    let reader = StoreReader::open(&tmp.root()).unwrap();
    assert!(reader.snapshot_health("s2").unwrap().is_restorable() && restores(&reader, "s2"));
}

#[test]
fn a_corrupted_index_costs_only_the_snapshots_that_need_its_chunks() {
    only_the_snapshot_that_needs_a_damaged_pack_is_lost(
        |_, index| {
            unseal(index);
            let mut bytes = std::fs::read(index).unwrap();
            bytes[20] ^= 0x01;
            std::fs::write(index, bytes).unwrap();
        },
        "index checksum does not match",
    );
}

#[test]
fn a_truncated_pack_costs_only_the_snapshots_that_need_its_chunks() {
    only_the_snapshot_that_needs_a_damaged_pack_is_lost(
        |pack, _| {
            unseal(pack);
            let len = std::fs::metadata(pack).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(pack).unwrap().set_len(len - 1).unwrap();
        },
        "pack truncated",
    );
}

#[test]
fn an_oversized_index_costs_only_the_snapshots_that_need_its_chunks() {
    only_the_snapshot_that_needs_a_damaged_pack_is_lost(
        |_, index| {
            unseal(index);
            // Sparse: past the 512 MiB cap without writing it.
            std::fs::OpenOptions::new().write(true).open(index).unwrap().set_len(513 * 1024 * 1024).unwrap();
        },
        "over the 536870912-byte limit of an index",
    );
}

#[test]
fn a_missing_pack_costs_only_the_snapshots_that_need_its_chunks() {
    only_the_snapshot_that_needs_a_damaged_pack_is_lost(
        |pack, _| {
            unseal(pack);
            std::fs::remove_file(pack).unwrap();
        },
        "pack file is missing",
    );
}

const WIDE_STORE_ENV: &str = "VAULT_STORE_WIDE_FIXTURE";
const WIDE_PACKS: usize = 10_000;

fn wide_chunk(i: usize) -> Vec<u8> {
    format!("chunk number {i:05}").into_bytes()
}

/// Before the reader bounded its open packs, a snapshot over ~1000 packs failed with "Too
/// many open files". The store is built here; the restore runs in a child process whose
/// descriptor limit is 1024 (lowering it here would touch every test in this process).
#[test]
fn a_snapshot_spanning_10000_packs_restores_under_1024_descriptors() {
    // tmpfs: 10 000 seals without 60 000 fsyncs of a real disk.
    let disk = SmallDisk::mount("1g");
    let root = disk.path().join("store");
    let key = vault_key();
    let (store, _) = Store::open(&root).unwrap();
    let chunks: Vec<Vec<u8>> = (0..WIDE_PACKS).map(wide_chunk).collect();
    for (i, data) in chunks.iter().enumerate() {
        seal(&store, &key, &format!("seed-{i:05}"), &[("c", data)]);
    }
    let names: Vec<String> = (0..WIDE_PACKS).map(|i| format!("f{i:05}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().zip(&chunks).map(|(n, c)| (n.as_str(), c.as_slice())).collect();
    seal(&store, &key, "wide", &files);
    assert_eq!(pack_files(&root).len(), WIDE_PACKS, "one pack per chunk");

    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "restore_the_wide_snapshot_with_1024_descriptors", "--ignored", "--nocapture"])
        .env(WIDE_STORE_ENV, &root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(child.status.success() && stdout.contains("1 passed"), "child: {stdout}\n{}", String::from_utf8_lossy(&child.stderr));
}

#[test]
#[ignore = "the child half of a_snapshot_spanning_10000_packs_restores_under_1024_descriptors"]
fn restore_the_wide_snapshot_with_1024_descriptors() {
    let root = PathBuf::from(std::env::var_os(WIDE_STORE_ENV).expect("run by its parent test, which builds the store"));
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the rlimit struct passed, which lives
    // for the call; this process runs this one test only.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = 1024;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    let reader = StoreReader::open(&root).unwrap();
    assert!(reader.snapshot_health("wide").unwrap().is_restorable());
    let manifest = reader.manifest("wide").unwrap();
    assert_eq!(manifest.entries.len(), WIDE_PACKS);
    for (i, (_, chunk)) in manifest.chunk_refs().enumerate() {
        assert_eq!(reader.read_chunk(&chunk.id).unwrap(), wide_chunk(i), "chunk {i}");
    }
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
    assert!(open <= vault_store::MAX_OPEN_PACKS + 16, "{open} descriptors open after the restore");
}
