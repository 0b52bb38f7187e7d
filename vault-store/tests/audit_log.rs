//! The audit log on disk: it grows in tiles, signs checkpoints that each extend the last, opens
//! again where it stopped (finishing what a cut left), and names what was altered.

use std::path::{Path, PathBuf};
use std::process::Command;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::audit::checkpoint::Checkpoint;
use vault_core::audit::merkle;
use vault_core::keys::SigningKey;
use vault_store::audit::{self, AuditLog, LOG_DIR};

struct TempLog(tempfile::TempDir);

impl TempLog {
    fn new() -> TempLog {
        TempLog(tempfile::tempdir().unwrap())
    }
    fn store(&self) -> PathBuf {
        self.0.path().join("store")
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.0.path()).output();
    }
}

fn key() -> SigningKey {
    SigningKey::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap()
}

fn entry(i: u64) -> Vec<u8> {
    format!("{{\"event\":\"test\",\"n\":{i}}}").into_bytes()
}

fn is_immutable(path: &Path) -> bool {
    vault_store::is_immutable(path).unwrap()
}

#[test]
fn the_log_grows_in_tiles_each_checkpoint_extends_the_last_and_entries_read_back() {
    let tmp = TempLog::new();
    let key = key();
    let (mut log, recovery) = AuditLog::open(&tmp.store(), &key.public_key()).unwrap();
    assert_eq!(recovery, Default::default());
    assert_eq!(log.sign(&key).unwrap().map(|n| n.contains("\n0\n")), Some(true), "the empty log's checkpoint");
    let mut checkpoints = Vec::new();
    let mut n = 0u64;
    for batch in [1u64, 5, 250, 1, 300, 2] {
        let entries: Vec<Vec<u8>> = (n..n + batch).map(entry).collect();
        log.append(&entries).unwrap();
        n += batch;
        let note = log.sign(&key).unwrap().unwrap();
        checkpoints.push(Checkpoint::open(note.as_bytes(), &key.public_key()).unwrap());
        assert_eq!(log.sign(&key).unwrap(), None, "nothing new: no new checkpoint");
    }
    assert_eq!(log.size(), 559);
    // Each checkpoint is a prefix of the last, by a proof made from the tiles.
    let last = checkpoints.last().unwrap();
    for c in &checkpoints {
        let proof = audit::consistency_proof(&tmp.store(), c.size, last.size).unwrap();
        c.check_extended_by(last, &proof).unwrap();
    }
    // The root is the RFC 6962 tree of the entries.
    let leaves = merkle::Leaves((0..559).map(|i| merkle::leaf_hash(&entry(i))).collect());
    assert_eq!(last.root, merkle::tree_hash(559, &leaves).unwrap());
    assert_eq!(audit::read_entries(&tmp.store(), 250, 260).unwrap(), (250..260).map(entry).collect::<Vec<_>>());
    let dir = tmp.store().join(LOG_DIR);
    // Full tiles and bundles are sealed; partial ones are only the newest width.
    for full in ["tile/0/000", "tile/0/001", "tile/entries/000", "tile/entries/001"] {
        assert!(is_immutable(&dir.join(full)), "{full}");
    }
    assert_eq!(std::fs::read_dir(dir.join("tile/0/002.p")).unwrap().count(), 1);
    assert!(dir.join("tile/0/002.p/47").exists() && dir.join("tile/1/000.p/2").exists());
    assert_eq!(audit::verify(&tmp.store(), &key.public_key()).unwrap().entries, 559);

    // Opened again: where it stopped, and it keeps growing consistently.
    drop(log);
    let (mut log, recovery) = AuditLog::open(&tmp.store(), &key.public_key()).unwrap();
    assert_eq!((recovery.signed, recovery.appended_again, log.size()), (559, 0, 559));
    log.append(&[entry(559)]).unwrap();
    let note = log.sign(&key).unwrap().unwrap();
    let newer = Checkpoint::open(note.as_bytes(), &key.public_key()).unwrap();
    last.check_extended_by(&newer, &audit::consistency_proof(&tmp.store(), 559, 560).unwrap()).unwrap();
}

#[test]
fn entries_written_before_a_cut_and_never_signed_are_appended_again_at_open() {
    let tmp = TempLog::new();
    let key = key();
    let (mut log, _) = AuditLog::open(&tmp.store(), &key.public_key()).unwrap();
    log.append(&(0..300).map(entry).collect::<Vec<_>>()).unwrap();
    log.sign(&key).unwrap();
    // Written, then the power went before the checkpoint (crossing a full tile).
    log.append(&(300..600).map(entry).collect::<Vec<_>>()).unwrap();
    drop(log);
    let (mut log, recovery) = AuditLog::open(&tmp.store(), &key.public_key()).unwrap();
    assert_eq!((recovery.signed, recovery.appended_again, log.size()), (300, 300, 600));
    log.sign(&key).unwrap();
    assert_eq!(audit::verify(&tmp.store(), &key.public_key()).unwrap().entries, 600);
    assert_eq!(audit::read_entries(&tmp.store(), 590, 600).unwrap(), (590..600).map(entry).collect::<Vec<_>>());
}

#[test]
fn an_altered_entry_or_tile_is_named_and_a_log_of_another_key_is_refused() {
    let tmp = TempLog::new();
    let key = key();
    let (mut log, _) = AuditLog::open(&tmp.store(), &key.public_key()).unwrap();
    log.append(&(0..300).map(entry).collect::<Vec<_>>()).unwrap();
    log.sign(&key).unwrap();
    drop(log);
    let dir = tmp.store().join(LOG_DIR);
    // Another vault's key: not its log.
    assert!(AuditLog::open(&tmp.store(), &self::key().public_key()).is_err());
    // Entry 260 changed in its (partial) bundle: verify names it.
    let bundle = dir.join("tile/entries/001.p/44");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(4).position(|w| w == b"260}").unwrap();
    bytes[at] = b'9';
    std::fs::write(&bundle, &bytes).unwrap();
    let err = audit::verify(&tmp.store(), &key.public_key()).unwrap_err().to_string();
    assert!(err.contains("entry 260"), "{err}");
    bytes[at] = b'2';
    std::fs::write(&bundle, &bytes).unwrap();
    audit::verify(&tmp.store(), &key.public_key()).unwrap();
    // A leaf hash changed in a sealed tile (flags lifted, as someone with the disk could).
    let tile = dir.join("tile/0/000");
    Command::new("chattr").arg("-i").arg(&tile).output().unwrap();
    let mut hashes = std::fs::read(&tile).unwrap();
    hashes[7 * 32] ^= 1;
    std::fs::write(&tile, &hashes).unwrap();
    let err = audit::verify(&tmp.store(), &key.public_key()).unwrap_err().to_string();
    assert!(err.contains("entry 7"), "{err}");
    // And the writer refuses to go on from a log whose tiles no longer make its checkpoint.
    let err = AuditLog::open(&tmp.store(), &key.public_key()).err().unwrap().to_string();
    assert!(err.contains("altered"), "{err}");
}

#[test]
fn an_entry_too_large_for_a_bundle_is_refused_before_anything_is_written() {
    let tmp = TempLog::new();
    let key = key();
    let (mut log, _) = AuditLog::open(&tmp.store(), &key.public_key()).unwrap();
    assert!(log.append(&[entry(0), vec![b'x'; 70_000]]).is_err());
    assert_eq!(log.size(), 0);
    assert!(audit::read_entries(&tmp.store(), 0, 1).is_err());
}
