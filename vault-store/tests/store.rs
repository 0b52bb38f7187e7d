//! The store on a real filesystem: sealing, immutability, recovery after a crash, disk full.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::chunk::ChunkId;
use vault_core::keys::SigningKey;
use vault_core::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::receipt::{Receipt, SignedReceipt};
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
    let bytes = manifest.encode();
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
    store.seal(pack, SealInput { snapshot_id: id, manifest: &bytes, receipt: &r }).unwrap().snapshot_dir
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
    let ids: Vec<String> = reader.snapshots().unwrap().into_iter().map(|s| s.id).collect();
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
    let err = store.seal(pack, SealInput { snapshot_id: "s1", manifest: &bytes, receipt: &r }).unwrap_err();
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
    store.seal(pack, SealInput { snapshot_id: "before", manifest: &bytes, receipt: &r }).unwrap();

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
            store.seal(pack, SealInput { snapshot_id: "after", manifest: &bytes, receipt: &r }).unwrap_err()
        }
    };
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    let reader = StoreReader::open(&root).unwrap();
    let ids: Vec<String> = reader.snapshots().unwrap().into_iter().map(|s| s.id).collect();
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
    let sealed = store.seal(pack, SealInput { snapshot_id: "s1", manifest: &bytes, receipt: &r }).unwrap();
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
