//! Review tests (scratch, not part of the project).
use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::keys::SigningKey;
use vault_core::push::chunk::ChunkId;
use vault_core::push::ingest::StagedChunks as _;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::units::Timestamp;
use vault_store::{GcStep, SealInput, Store, StoreReader};

struct TempStore(tempfile::TempDir);
impl TempStore {
    fn root(&self) -> PathBuf { self.0.path().join("store") }
}
impl Drop for TempStore {
    fn drop(&mut self) { let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.0.path()).output(); }
}
fn key() -> SigningKey { SigningKey::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap() }
const T0: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn manifest(files: &[(&str, &[u8])]) -> Vec<u8> {
    let entries = files.iter().map(|(p, d)| Entry { path: p.as_bytes().to_vec(), mode: 0o640, mtime: 1,
        kind: EntryKind::File { size: d.len() as u64, chunks: vec![ChunkRef { id: ChunkId::of(d), len: d.len() as u32 }] } }).collect();
    Manifest { entries }.encode().unwrap()
}

/// A session of pusher `b`, open while a collection that began before its window is still
/// removing a pack, proves chunk X (it sent X's bytes; the store "has" X under another
/// pusher). Its commit then seals a snapshot naming X, and X is gone.
#[test]
fn review_proven_chunk_collected_under_a_session() {
    let tmp = TempStore(tempfile::tempdir().unwrap());
    let k = key();
    let (store, _) = Store::open(&tmp.root()).unwrap();
    let x: &[u8] = b"chunk X: only in pusher a's old snapshot";
    let y: &[u8] = b"chunk Y: in pusher a's newer snapshot";
    // a/old holds X (own pack); a/new holds Y.
    for (id, data, at) in [("old", x, T0), ("new", y, T0 + DAY)] {
        let mut p = store.begin().unwrap();
        p.append(ChunkId::of(data), data).unwrap();
        let m = manifest(&[("f", data)]);
        let r = test_net::signed_receipt_at(&k, id, &m, ("a", "ds"), at, at + DAY);
        store.seal_all(p, SealInput { snapshot_id: id, manifest: &m, receipt: &r, profile: None }).unwrap();
    }
    // Lifecycle run: expiry takes a/old, then GC.
    assert_eq!(store.expire(&["old".to_string()], &|| true).unwrap().expired, vec!["old".to_string()]);
    let session: RefCell<Option<vault_store::StagingPack>> = RefCell::new(None);
    let observe = |step: GcStep, _pack: &str| {
        if step == GcStep::IndexRemoved && session.borrow().is_none() {
            // Window opened meanwhile; pusher b sends X: on_chunk sees owned_len None, sealed_len Some -> Proven.
            let xid = ChunkId::of(x);
            assert_eq!(store.owned_len("b", &xid), None);
            let len = store.chunk_len(&xid).expect("store still offers X while GC removes its pack");
            let mut p = store.begin().unwrap();
            p.prove(xid, len).unwrap();
            *session.borrow_mut() = Some(p);
        }
    };
    let later = Timestamp::from_unix(T0 + 4000 * DAY).unwrap();
    let gc = store.collect_garbage_observed(later, std::time::Duration::ZERO, &|| true, &observe).unwrap();
    println!("gc removed {:?}", gc.packs_removed);
    // Commit (after the lifecycle releases the maintenance lock): check_manifest finds X in the
    // staged table (a proven record) and never asks the store again.
    let mut p = session.into_inner().expect("the session proved X during the collection");
    let (_, table) = p.read_back().unwrap();
    assert!(table.find(&ChunkId::of(x)).is_some(), "check_manifest's staged.find branch accepts X");
    println!("store.has_chunk(X) at commit = {}", store.has_chunk(&ChunkId::of(x)));
    let m = manifest(&[("f", x)]);
    let r = test_net::signed_receipt_at(&k, "b-new", &m, ("b", "ds"), T0 + 2 * DAY, T0 + 90 * DAY);
    let referenced = vec![true; table.count()];
    let sealed = store.seal(p, table, &referenced, SealInput { snapshot_id: "b-new", manifest: &m, receipt: &r, profile: None }).unwrap();
    println!("sealed {:?} warnings {:?}", sealed.snapshot_dir, sealed.warnings);
    let reader = StoreReader::open(&tmp.root()).unwrap();
    let health = reader.snapshot_health("b-new").unwrap();
    println!("health of freshly sealed b-new: {health}");
    println!("read_chunk(X): {:?}", reader.read_chunk(&ChunkId::of(x)).map(|d| d.len()));
    assert!(!health.is_restorable(), "sealed snapshot lost its chunk");
}

/// A chunk rots in pack P (which also holds chunk Y), scrub lists it, a push heals it into a
/// new pack. The store restores everything again, but every export of a snapshot that needs
/// any chunk of P is refused, for as long as P lives.
#[test]
fn review_export_refused_forever_after_a_healed_rot() {
    use vault_core::export::medium::{MediumLabel, LABEL_FILE};
    use vault_core::policy::orders::{ExportSpec, PendingExport};
    use vault_store::audit::AuditLog;
    use vault_store::export::{write_export, ExportJob};
    let tmp = TempStore(tempfile::tempdir().unwrap());
    let k = key();
    let root = tmp.root();
    let (store, _) = Store::open(&root).unwrap();
    let x: Vec<u8> = b"chunk X that will rot on the disk ".repeat(10);
    let y: Vec<u8> = b"chunk Y, a neighbour in the same pack ".repeat(10);
    let mut p = store.begin().unwrap();
    p.append(ChunkId::of(&x), &x).unwrap();
    p.append(ChunkId::of(&y), &y).unwrap();
    let m = manifest(&[("x", &x), ("y", &y)]);
    let r = test_net::signed_receipt_at(&k, "s1", &m, ("a", "ds"), T0, T0 + 900 * DAY);
    store.seal_all(p, SealInput { snapshot_id: "s1", manifest: &m, receipt: &r, profile: None }).unwrap();
    // Rot one byte of X.
    let pack = std::fs::read_dir(root.join("packs")).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "pack")).unwrap();
    Command::new("chattr").arg("-i").arg(&pack).output().unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.windows(x.len()).position(|w| w == &x[..]).unwrap();
    bytes[at] ^= 1;
    std::fs::write(&pack, &bytes).unwrap();
    Command::new("chattr").arg("+i").arg(&pack).output().unwrap();
    let found = store.scrub(&|| true, &|_| {}).unwrap();
    println!("scrub found {:?}", found.found);
    // Heal: the next push carries X again.
    let mut p = store.begin().unwrap();
    assert!(!store.has_chunk(&ChunkId::of(&x)));
    p.append(ChunkId::of(&x), &x).unwrap();
    let m2 = manifest(&[("x", &x)]);
    let r2 = test_net::signed_receipt_at(&k, "s2", &m2, ("a", "ds"), T0 + DAY, T0 + 900 * DAY);
    let sealed = store.seal_all(p, SealInput { snapshot_id: "s2", manifest: &m2, receipt: &r2, profile: None }).unwrap();
    println!("healed {:?}", sealed.healed);
    let reader = StoreReader::open(&root).unwrap();
    for c in [&x, &y] { reader.read_chunk(&ChunkId::of(c)).unwrap(); }
    println!("s1 restorable on the vault: {}", reader.snapshot_health("s1").unwrap());
    // An audit checkpoint and a medium, as the export fixture makes them.
    let (mut log, _) = AuditLog::open(&root, &k.public_key()).unwrap();
    log.append(&[b"{\"event\":\"test\"}".to_vec()]).unwrap();
    log.sign(&k).unwrap();
    let medium = tmp.0.path().join("medium");
    std::fs::create_dir(&medium).unwrap();
    const MEDIUM: &str = "00112233445566778899aabbccddeeff";
    std::fs::write(medium.join(LABEL_FILE), MediumLabel::new(MEDIUM, "weekly-a").unwrap().to_bytes()).unwrap();
    let identity = age::x25519::Identity::generate();
    let order = PendingExport {
        id: "ab".repeat(32), snapshots: vec!["s1".into()], datasets: vec![],
        export: ExportSpec { medium: MEDIUM.into(), recipients: vec![identity.to_public().to_string()], newest: None, since: None },
        reason: "weekly".into(), signers: vec!["alice".into()], accepted_at: "2027-01-20T00:00:00Z".into(), expires: "2027-02-20T00:00:00Z".into(),
    };
    let go = std::sync::atomic::AtomicBool::new(true);
    let out = write_export(&ExportJob { store: &root, medium: &medium, order: &order, vault_id: "vault-01", key: &k,
        now: Timestamp::from_unix(T0 + 2 * DAY).unwrap(), nonce: [1; 4], go_on: &go, after_file: &|_| {} });
    println!("export of healed s1: {:?}", out.as_ref().map(|w| &w.export_id).map_err(|e| e.to_string()));
    assert!(out.is_err());
}

/// Two live packs hold chunk X; the copy in the pack that sorts first rotted. Without the
/// damaged-chunks list (absent from a copy, or unusable), the store's reader never tries the
/// good copy. STORE-FORMAT.md section 12 says the list "is not needed to restore".
#[test]
fn review_reader_does_not_fall_back_to_a_second_good_copy() {
    for attempt in 0..20 {
        let tmp = TempStore(tempfile::tempdir().unwrap());
        let k = key();
        let root = tmp.root();
        let (store, _) = Store::open(&root).unwrap();
        let x: Vec<u8> = b"chunk X ".repeat(10);
        let y: Vec<u8> = b"chunk Y ".repeat(10);
        let mut p = store.begin().unwrap();
        p.append(ChunkId::of(&x), &x).unwrap();
        p.append(ChunkId::of(&y), &y).unwrap();
        let m = manifest(&[("x", &x), ("y", &y)]);
        let r = test_net::signed_receipt_at(&k, "s1", &m, ("a", "ds"), T0, T0 + 900 * DAY);
        store.seal_all(p, SealInput { snapshot_id: "s1", manifest: &m, receipt: &r, profile: None }).unwrap();
        let first = std::fs::read_dir(root.join("packs")).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "pack")).unwrap();
        Command::new("chattr").arg("-i").arg(&first).output().unwrap();
        let mut bytes = std::fs::read(&first).unwrap();
        let at = bytes.windows(x.len()).position(|w| w == &x[..]).unwrap();
        bytes[at] ^= 1;
        std::fs::write(&first, &bytes).unwrap();
        store.scrub(&|| true, &|_| {}).unwrap();
        let mut p = store.begin().unwrap();
        p.append(ChunkId::of(&x), &x).unwrap();
        let m2 = manifest(&[("x", &x)]);
        let r2 = test_net::signed_receipt_at(&k, "s2", &m2, ("a", "ds"), T0 + DAY, T0 + 900 * DAY);
        store.seal_all(p, SealInput { snapshot_id: "s2", manifest: &m2, receipt: &r2, profile: None }).unwrap();
        let stems: Vec<String> = { let mut v: Vec<String> = std::fs::read_dir(root.join("packs")).unwrap().flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".pack").map(str::to_string)).collect(); v.sort(); v };
        if stems[0] != first.file_stem().unwrap().to_string_lossy() { continue; }
        assert!(StoreReader::open(&root).unwrap().read_chunk(&ChunkId::of(&x)).is_ok(), "with the list");
        std::fs::remove_file(root.join("damaged-chunks")).unwrap();
        let err = StoreReader::open(&root).unwrap().read_chunk(&ChunkId::of(&x));
        println!("attempt {attempt}: packs {stems:?}, bad copy in {:?}; without the list: {:?}", first.file_stem().unwrap(), err.as_ref().map(|d| d.len()).map_err(|e| e.to_string()));
        assert!(err.is_err());
        return;
    }
    panic!("never got the bad pack sorting first");
}
