//! Exports onto a medium (a directory standing in for the mounted disk): written, read back,
//! checked without the recipients' keys, decrypted by stock `age` and by the restore path, and
//! refused for every medium and store that must not get one.

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::export::manifest::{EXPORTS_DIR, MANIFEST_FILE};
use vault_core::export::medium::{MediumLabel, MediumSeal, LABEL_FILE, SEAL_FILE};
use vault_core::keys::SigningKey;
use vault_core::lifecycle::drill::DrillReport;
use vault_core::policy::orders::{DatasetDoc, ExportSpec, PendingExport};
use vault_core::push::chunk::ChunkId;
use vault_core::units::Timestamp;
use vault_store::audit::AuditLog;
use vault_store::export::{check_export, decrypt_export, write_export, ExportJob, Share, Written};
use vault_store::{Store, StoreError, StoreReader};

const MEDIUM: &str = "00112233445566778899aabbccddeeff";
static GO_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

struct Fixture {
    dir: tempfile::TempDir,
    pkcs8: Vec<u8>,
    key: SigningKey,
    identity: age::x25519::Identity,
    ids: Vec<String>,
}

impl Fixture {
    /// A store with three nights of `db01/pg`, one of `db01/web`, an audit log with a drill
    /// report in it, and an empty medium labelled `weekly-a`.
    fn new() -> Fixture {
        Fixture::with_key(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref().to_vec())
    }

    /// [`Fixture::new`] with this vault key (PKCS#8).
    fn with_key(pkcs8: Vec<u8>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_pkcs8(&pkcs8).unwrap();
        let store_root = dir.path().join("store");
        let (store, _) = Store::open(&store_root).unwrap();
        let mut ids = Vec::new();
        for night in 0..3 {
            ids.push(test_net::seal_nightly(&store, &key, ("db01", "pg"), 1_800_000_000 + night * 86_400, 1_900_000_000));
        }
        ids.push(test_net::seal_nightly(&store, &key, ("db01", "web"), 1_800_000_000, 1_900_000_000));
        let (mut log, _) = AuditLog::open(&store_root, &key.public_key()).unwrap();
        let report = DrillReport::new(&key.public_key(), Timestamp::from_unix(1_800_100_000).unwrap(), std::time::Duration::from_secs(2), &[7; 32], vec![], false).sign(&key);
        let drill = serde_json::json!({ "event": "drill_finished", "report": report.body, "signature": report.signature }).to_string();
        let entries: Vec<Vec<u8>> = (0..300).map(|i| format!("{{\"event\":\"test\",\"n\":{i}}}").into_bytes()).chain([drill.into_bytes()]).collect();
        log.append(&entries).unwrap();
        log.sign(&key).unwrap();
        let medium = dir.path().join("medium");
        std::fs::create_dir(&medium).unwrap();
        std::fs::write(medium.join(LABEL_FILE), MediumLabel::new(MEDIUM, "weekly-a").unwrap().to_bytes()).unwrap();
        Fixture { dir, pkcs8, key, identity: age::x25519::Identity::generate(), ids }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn medium(&self) -> PathBuf {
        self.dir.path().join("medium")
    }

    fn order(&self, newest: u32) -> PendingExport {
        PendingExport {
            id: "ab".repeat(32),
            snapshots: vec![self.ids[3].clone()],
            datasets: vec![DatasetDoc { pusher: "db01".into(), dataset: "pg".into() }],
            export: ExportSpec { medium: MEDIUM.into(), recipients: vec![self.identity.to_public().to_string()], newest: Some(newest), since: None },
            reason: "weekly".into(),
            signers: vec!["alice".into()],
            accepted_at: "2027-01-20T00:00:00Z".into(),
            expires: "2027-02-20T00:00:00Z".into(),
        }
    }

    fn export(&self, order: &PendingExport, nonce: u8) -> Result<Written, StoreError> {
        write_export(&ExportJob {
            store: &self.store(),
            medium: &self.medium(),
            order,
            vault_id: "vault-01",
            key: &self.key,
            now: Timestamp::from_unix(1_800_500_000).unwrap(),
            nonce: [nonce; 4],
            go_on: &GO_ON,
            after_file: &|_| {},
        })
    }

    fn export_dir(&self, written: &Written) -> PathBuf {
        self.medium().join(EXPORTS_DIR).join(&written.export_id)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

#[test]
fn an_export_is_written_read_back_checked_and_restored_and_stock_age_decrypts_it() {
    let fx = Fixture::new();
    let written = fx.export(&fx.order(2), 1).unwrap();
    println!("{written:?}");
    assert_eq!(written.snapshots, vec![fx.ids[1].clone(), fx.ids[2].clone(), fx.ids[3].clone()], "the newest two of db01/pg and the one named");
    assert!(written.adopted && written.missing.is_empty() && written.removed_partial.is_empty());
    assert!(fx.medium().join(SEAL_FILE).exists(), "the medium is sealed on first use");
    let dir = fx.export_dir(&written);
    let on_medium = test_net::files_under(&dir);
    assert_eq!(on_medium.len(), written.files);
    assert!(on_medium.iter().any(|p| p.ends_with("drill-report.json")), "the last drill report goes along");
    assert!(on_medium.iter().any(|p| p.ends_with("store/log/checkpoint")));
    // Nothing that holds data is on the medium in the clear.
    for path in &on_medium {
        let name = path.to_string_lossy();
        if name.contains("/packs/") || name.ends_with("/manifest.age") || name.ends_with("manifest") && !name.ends_with(MANIFEST_FILE) {
            assert!(name.ends_with(".age"), "{name} is not encrypted");
        }
        if name.ends_with(".age") {
            assert!(std::fs::read(path).unwrap().starts_with(b"age-encryption.org/v1\n"), "{name}");
        }
    }

    let all = check_export(&dir, &fx.key.public_key(), Share::All).unwrap();
    assert!(all.problems.is_empty(), "{:?}", all.problems);
    assert_eq!(all.files_checked, all.manifest.files.len());
    assert_eq!(all.manifest.snapshots.len(), 3);

    // Stock age decrypts a pack to exactly the store's pack.
    let identity_file = fx.dir.path().join("identity.txt");
    std::fs::write(&identity_file, format!("{}\n", secrecy_text(&fx.identity))).unwrap();
    let pack = on_medium.iter().find(|p| p.to_string_lossy().ends_with(".pack.age")).unwrap();
    let out = Command::new("age").arg("-d").arg("-i").arg(&identity_file).arg(pack).output().expect("stock age is installed (scripts/ensure-tools.sh)");
    assert!(out.status.success(), "age -d: {}", String::from_utf8_lossy(&out.stderr));
    let stem = pack.file_name().unwrap().to_string_lossy().trim_end_matches(".pack.age").to_string();
    assert_eq!(out.stdout, std::fs::read(fx.store().join("packs").join(format!("{stem}.pack"))).unwrap());

    // The restore path: decrypted into a scratch store and read like any store.
    let identities: Vec<Box<dyn age::Identity>> = vec![Box::new(age::x25519::Identity::from_str(&secrecy_text(&fx.identity)).unwrap())];
    let scratch = fx.dir.path().join("scratch");
    decrypt_export(&dir, &all.manifest, &identities, &[fx.ids[2].clone()], &scratch).unwrap();
    let reader = StoreReader::open(&scratch).unwrap();
    let manifest = reader.manifest(&fx.ids[2]).unwrap();
    let original = StoreReader::open(&fx.store()).unwrap();
    for (_, chunk) in manifest.chunk_refs() {
        assert_eq!(reader.read_chunk(&chunk.id).unwrap(), original.read_chunk(&chunk.id).unwrap());
    }
    let wrong: Vec<Box<dyn age::Identity>> = vec![Box::new(age::x25519::Identity::generate())];
    let err = decrypt_export(&dir, &all.manifest, &wrong, &[fx.ids[2].clone()], &fx.dir.path().join("scratch2")).unwrap_err().to_string();
    assert!(err.contains("is this the identity the export was encrypted to?"), "{err}");

    // The same medium again: already ours, a second export beside the first.
    let again = fx.export(&fx.order(1), 2).unwrap();
    assert!(!again.adopted && again.snapshots.len() == 2);
    assert_eq!(std::fs::read_dir(fx.medium().join(EXPORTS_DIR)).unwrap().count(), 2);
}

fn secrecy_text(identity: &age::x25519::Identity) -> String {
    use age::secrecy::ExposeSecret as _;
    identity.to_string().expose_secret().to_string()
}

#[test]
fn a_tampered_export_is_named_file_by_file_and_a_rotating_share_checks_part_of_it() {
    let fx = Fixture::new();
    let written = fx.export(&fx.order(3), 1).unwrap();
    let dir = fx.export_dir(&written);
    let share = check_export(&dir, &fx.key.public_key(), Share::Rotating { turn: 0, of: 2 }).unwrap();
    let all = check_export(&dir, &fx.key.public_key(), Share::All).unwrap();
    assert!(share.files_checked < all.files_checked && share.problems.is_empty(), "{} of {}", share.files_checked, all.files_checked);

    let pack = test_net::files_under(&dir).into_iter().find(|p| p.to_string_lossy().ends_with(".pack.age")).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    std::fs::write(dir.join("store/extra"), b"planted").unwrap();
    std::fs::remove_file(dir.join("store/snapshots").join(&fx.ids[0]).join("receipt.json")).unwrap();
    let checked = check_export(&dir, &fx.key.public_key(), Share::All).unwrap();
    let named: Vec<String> = checked.problems.iter().map(|p| format!("{} {}", p.path, p.reason)).collect();
    println!("{named:#?}");
    assert!(named.iter().any(|p| p.contains(".pack.age hashes to")), "{named:?}");
    assert!(named.iter().any(|p| p.starts_with("store/extra is not in the signed manifest")), "{named:?}");
    assert!(named.iter().any(|p| p.contains(&format!("{}/receipt.json cannot be read", fx.ids[0]))), "{named:?}");

    // A manifest that does not verify is not an export at all.
    let manifest = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\\\"format\\\":1"), "{text}");
    std::fs::write(&manifest, text.replacen("\\\"format\\\":1", "\\\"format\\\":2", 1)).unwrap();
    let err = check_export(&dir, &fx.key.public_key(), Share::All).unwrap_err().to_string();
    assert!(err.contains("does not verify"), "{err}");
}

#[test]
fn media_that_are_not_ours_or_not_named_are_refused_and_nothing_is_written() {
    let fx = Fixture::new();
    let nothing_written = |fx: &Fixture| !fx.medium().join(EXPORTS_DIR).exists();
    let mut other_medium = fx.order(1);
    other_medium.export.medium = "ffffffffffffffffffffffffffffffff".into();
    let err = fx.export(&other_medium, 1).unwrap_err().to_string();
    assert!(err.contains("names medium ffffffffffffffffffffffffffffffff, this is 00112233445566778899aabbccddeeff (weekly-a)"), "{err}");
    assert!(nothing_written(&fx));

    // Sealed by another vault.
    let stranger = SigningKey::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap();
    let label = MediumLabel::new(MEDIUM, "weekly-a").unwrap();
    std::fs::write(fx.medium().join(SEAL_FILE), MediumSeal::sign("vault-01", &label, Timestamp::EPOCH, &stranger).to_file_bytes()).unwrap();
    let err = fx.export(&fx.order(1), 1).unwrap_err().to_string();
    assert!(err.contains("medium: weekly-a (00112233445566778899aabbccddeeff): invalid field `medium seal`: its signature does not verify"), "{err}");
    assert!(nothing_written(&fx));
    std::fs::remove_file(fx.medium().join(SEAL_FILE)).unwrap();

    // No label, a symlinked label, a huge label.
    std::fs::remove_file(fx.medium().join(LABEL_FILE)).unwrap();
    let err = fx.export(&fx.order(1), 1).unwrap_err().to_string();
    assert!(err.contains("not a medium `vaultctl media init` made"), "{err}");
    std::os::unix::fs::symlink("/etc/hostname", fx.medium().join(LABEL_FILE)).unwrap();
    assert!(fx.export(&fx.order(1), 1).is_err());
    std::fs::remove_file(fx.medium().join(LABEL_FILE)).unwrap();
    std::fs::write(fx.medium().join(LABEL_FILE), vec![b'{'; 1 << 20]).unwrap();
    let err = fx.export(&fx.order(1), 1).unwrap_err().to_string();
    assert!(err.contains("vault-medium.json"), "{err}");
    assert!(nothing_written(&fx));
}

#[test]
fn an_unfinished_export_is_removed_next_time_and_a_damaged_chunk_stops_the_export() {
    let fx = Fixture::new();
    let partial = fx.medium().join(EXPORTS_DIR).join(".20270101T000000Z-01010101.partial");
    std::fs::create_dir_all(partial.join("store/packs")).unwrap();
    std::fs::write(partial.join("store/packs/x.pack.age"), b"half").unwrap();
    let written = fx.export(&fx.order(1), 1).unwrap();
    assert_eq!(written.removed_partial, vec![".20270101T000000Z-01010101.partial".to_string()]);
    assert!(!partial.exists());

    // One byte flipped in a pack the next export needs: it stops, naming the chunk, and
    // leaves only an unfinished directory; the store is not touched.
    let packs: Vec<PathBuf> = test_net::files_under(&fx.store().join("packs")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "pack")).collect();
    for pack in &packs {
        let _ = Command::new("chattr").arg("-i").arg(pack).output();
        let mut bytes = std::fs::read(pack).unwrap();
        bytes[0] ^= 0x20;
        std::fs::set_permissions(pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::fs::write(pack, bytes).unwrap();
    }
    let err = fx.export(&fx.order(1), 2).unwrap_err().to_string();
    assert!(err.contains("reads back as") && err.contains("run the scrub"), "{err}");
    let left: Vec<String> = std::fs::read_dir(fx.medium().join(EXPORTS_DIR)).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left.len(), 2, "the finished export and one unfinished one: {left:?}");
    assert!(left.iter().any(|n| n.ends_with(".partial")));
}

#[test]
fn an_export_stops_when_the_vault_leaves_sealed_and_leaves_only_an_unfinished_directory() {
    let fx = Fixture::new();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let order = fx.order(2);
    let result = write_export(&ExportJob {
        store: &fx.store(),
        medium: &fx.medium(),
        order: &order,
        vault_id: "vault-01",
        key: &fx.key,
        now: Timestamp::from_unix(1_800_500_000).unwrap(),
        nonce: [3; 4],
        go_on: &stop,
        after_file: &|_| {},
    });
    let err = result.unwrap_err().to_string();
    assert!(err.contains("the vault left Sealed"), "{err}");
    let left: Vec<String> = std::fs::read_dir(fx.medium().join(EXPORTS_DIR)).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(left.len() == 1 && left[0].ends_with(".partial"), "{left:?}");
    assert!(fx.export(&order, 4).unwrap().removed_partial.len() == 1);
}

#[test]
fn a_medium_without_room_is_refused_before_anything_is_written() {
    if !test_net::is_root() {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    }
    let fx = Fixture::new();
    let small = fx.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&small).status().unwrap().success());
    std::fs::write(small.join(LABEL_FILE), MediumLabel::new(MEDIUM, "weekly-a").unwrap().to_bytes()).unwrap();
    let order = fx.order(3);
    let result = write_export(&ExportJob {
        store: &fx.store(),
        medium: &small,
        order: &order,
        vault_id: "vault-01",
        key: &fx.key,
        now: Timestamp::from_unix(1_800_500_000).unwrap(),
        nonce: [1; 4],
        go_on: &GO_ON,
        after_file: &|_| {},
    });
    let err = result.unwrap_err().to_string();
    let exports_exist = small.join(EXPORTS_DIR).exists();
    let _ = Command::new("umount").arg(&small).status();
    assert!(err.contains("bytes free, the export needs") && err.contains("use a larger medium"), "{err}");
    assert!(!exports_exist);
}

#[test]
fn a_returning_medium_is_checked_against_the_vaults_own_log_and_bounded() {
    use vault_store::export::verify_returning;
    let fx = Fixture::new();
    let written = fx.export(&fx.order(1), 1).unwrap();
    let returned = verify_returning(&fx.medium(), MEDIUM, &fx.store(), &fx.key.public_key(), Share::Rotating { turn: 3, of: 2 }, &GO_ON).unwrap();
    assert_eq!((returned.len(), returned[0].export_id.as_str(), returned[0].problems.len()), (1, written.export_id.as_str(), 0));

    // The same vault key, but a log the medium's checkpoint is not part of (rewound, or
    // another log): named.
    for (entries, said) in [(400, "the log was forked"), (10, "the vault's log was rewound")] {
        let other = fx.dir.path().join(format!("other-{entries}"));
        let (mut log, _) = AuditLog::open(&other, &fx.key.public_key()).unwrap();
        log.append(&(0..entries).map(|i| format!("{{\"event\":\"other\",\"n\":{i}}}").into_bytes()).collect::<Vec<_>>()).unwrap();
        log.sign(&fx.key).unwrap();
        let returned = verify_returning(&fx.medium(), MEDIUM, &other, &fx.key.public_key(), Share::All, &GO_ON).unwrap();
        let problems: Vec<String> = returned[0].problems.iter().map(|p| format!("{}: {}", p.path, p.reason)).collect();
        assert!(problems.iter().any(|p| p.contains("store/log/checkpoint") && p.contains(said)), "{said}: {problems:?}");
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(&other).output();
    }
    // The same key and the same log, rebuilt elsewhere: a prefix, no problem.
    let twin = Fixture::with_key(fx.pkcs8.clone());
    assert!(verify_returning(&fx.medium(), MEDIUM, &twin.store(), &fx.key.public_key(), Share::All, &GO_ON).unwrap()[0].problems.is_empty());
    // Written for another medium (its directory copied onto this one): named.
    let returned = verify_returning(&fx.medium(), "ffffffffffffffffffffffffffffffff", &fx.store(), &fx.key.public_key(), Share::All, &GO_ON).unwrap();
    assert!(returned[0].problems.iter().any(|p| p.reason.contains("was written for medium")), "{:?}", returned[0].problems);
    // A window opening stops the check.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let err = verify_returning(&fx.medium(), MEDIUM, &fx.store(), &fx.key.public_key(), Share::All, &stop).unwrap_err().to_string();
    assert!(err.contains("the vault left Sealed"), "{err}");
    // More exports than any medium of this vault holds: not read at all.
    for i in 0..65 {
        std::fs::create_dir(fx.medium().join(EXPORTS_DIR).join(format!("20270101T0000{i:02}Z-00000000"))).unwrap();
    }
    let err = verify_returning(&fx.medium(), MEDIUM, &fx.store(), &fx.key.public_key(), Share::All, &GO_ON).unwrap_err().to_string();
    assert!(err.contains("more than 64 exports"), "{err}");
}

/// Review finding 6: a chunk rots in a pack that also holds a chunk still needed, a scrub lists
/// the bad copy, a push heals it into a new pack. Exports of snapshots needing that pack were
/// then refused for as long as it lived; now the listed copy goes out as dead bytes its
/// exported index does not name, the healed copy goes with it, and the export restores.
#[test]
fn an_export_after_a_healed_rot_carries_the_good_copy_and_restores() {
    let fx = Fixture::new();
    let night0 = fx.ids[0].clone();
    let own = test_net::nightly_content("pg", 1_800_000_000);
    let x = ChunkId::of(&own);
    let pack =
        test_net::files_under(&fx.store().join("packs")).into_iter().find(|p| p.extension().is_some_and(|e| e == "pack") && std::fs::read(p).unwrap().windows(own.len()).any(|w| w == own)).unwrap();
    assert!(std::fs::read(&pack).unwrap().windows(test_net::NIGHTLY_SHARED.len()).any(|w| w == test_net::NIGHTLY_SHARED), "the rotting pack also holds the shared chunk");
    let _ = Command::new("chattr").arg("-i").arg(&pack).output();
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.windows(own.len()).position(|w| w == own).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(&pack, &bytes).unwrap();
    let _ = Command::new("chattr").arg("+i").arg(&pack).output();
    let (store, _) = Store::open(&fx.store()).unwrap();
    assert_eq!(store.scrub(&|| true, &|_| {}).unwrap().found.len(), 1);
    // The next push carrying the same bytes heals it.
    let mut staged = store.begin().unwrap();
    staged.append(x, &own).unwrap();
    let manifest = vault_core::push::manifest::Manifest {
        entries: vec![vault_core::push::manifest::Entry {
            path: b"own".to_vec(),
            mode: 0o640,
            mtime: 1,
            kind: vault_core::push::manifest::EntryKind::File { size: own.len() as u64, chunks: vec![vault_core::push::manifest::ChunkRef { id: x, len: u32::try_from(own.len()).unwrap() }] },
        }],
    }
    .encode()
    .unwrap();
    let receipt = test_net::signed_receipt_at(&fx.key, "heal", &manifest, ("db01", "pg"), 1_800_300_000, 1_900_000_000);
    assert_eq!(store.seal_all(staged, vault_store::SealInput { snapshot_id: "heal", manifest: &manifest, receipt: &receipt, profile: None }).unwrap().healed, vec![x]);
    drop(store);

    let order = PendingExport { snapshots: vec![night0.clone()], datasets: vec![], ..fx.order(1) };
    let written = fx.export(&order, 7).unwrap_or_else(|e| panic!("the export of the healed night is refused: {e}"));
    assert_eq!(written.snapshots, vec![night0.clone()]);
    let dir = fx.export_dir(&written);
    let all = check_export(&dir, &fx.key.public_key(), Share::All).unwrap();
    assert!(all.problems.is_empty(), "{:?}", all.problems);
    let identities: Vec<Box<dyn age::Identity>> = vec![Box::new(age::x25519::Identity::from_str(&secrecy_text(&fx.identity)).unwrap())];
    let scratch = fx.dir.path().join("scratch");
    decrypt_export(&dir, &all.manifest, &identities, std::slice::from_ref(&night0), &scratch).unwrap();
    let reader = StoreReader::open(&scratch).unwrap();
    assert!(reader.snapshot_health(&night0).unwrap().is_restorable());
    assert_eq!(reader.read_chunk(&x).unwrap(), own);
    assert_eq!(reader.read_chunk(&ChunkId::of(test_net::NIGHTLY_SHARED)).unwrap(), test_net::NIGHTLY_SHARED);
}
