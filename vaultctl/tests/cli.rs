//! vaultctl as an operator uses it: each command's success and its refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn vaultctl(dir: &Path, args: &[&str]) -> Run {
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_vaultctl")).args(args).current_dir(dir).output().unwrap();
    Run { ok: status.success(), code: status.code(), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
}

fn ok(dir: &Path, args: &[&str]) -> Run {
    let run = vaultctl(dir, args);
    assert!(run.ok, "vaultctl {args:?} failed: {}", run.stderr);
    run
}

fn refused(dir: &Path, args: &[&str], expected: &str) {
    let run = vaultctl(dir, args);
    assert!(!run.ok, "vaultctl {args:?} should have been refused");
    assert!(run.stderr.contains(expected), "vaultctl {args:?}: expected `{expected}` in: {}", run.stderr);
}

/// Refused with this exit code (`CliError::class`: 1 failed, 2 usage, 3 refused by a rule, ...), saying each of `parts`.
fn refused_with(dir: &Path, args: &[&str], code: i32, parts: &[&str]) -> Run {
    let run = vaultctl(dir, args);
    assert_eq!(run.code, Some(code), "vaultctl {args:?}: {}", run.stderr);
    for part in parts {
        assert!(run.stderr.contains(part), "vaultctl {args:?}: expected `{part}` in: {}", run.stderr);
    }
    run
}

/// A directory's entries, sorted (to see that nothing, not even a temp file, was left).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

const POLICY: &str = r#"
vault_id = "vault-01"
version = VERSION
expires = "EXPIRES"
[network]
mac = "52:54:00:12:34:56"
address = "192.0.2.10/24"
port = 7400
[[window]]
days = ["sat"]
start = "22:00"
duration = "3h"
[[pusher]]
name = "db-backup"
key = "PUSHER"
quota = "10GiB"
retain = "7d"
"#;

/// Three admins (a, b, c), a pusher, a 2-of-3 root; returns the temp dir.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c", "pusher"] {
        ok(dir.path(), &["key", "gen", "--out", name]);
    }
    ok(dir.path(), &["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "b.pub", "--admin", "c.pub", "--out", "root.toml"]);
    write_policy(dir.path(), "policy.toml", 3);
    dir
}

/// When the fixture's bundles are issued and expire, for the tests that judge them at a given
/// time (`--at`, `--from`, `--issued`): fixed, so what those print can be compared.
const ISSUED: &str = "2026-11-20T00:00:00Z";
const EXPIRES: &str = "2027-01-31T00:00:00Z";

/// The real clock, `offset_secs` from now: for the bundles of the commands that judge a bundle
/// by today's date (push, `usb write`, signing without `--issued`), which a fixed date would
/// expire under once the calendar passes it.
fn today(offset_secs: i64) -> String {
    let now: i64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().try_into().unwrap();
    vault_core::units::Timestamp::from_unix(now + offset_secs).unwrap().to_string()
}

/// Within the trust root's 90-day maximum validity from [`today`]'s issue time.
const TODAY_VALID_SECS: i64 = 30 * 86_400;

/// The fixture policy, expiring at [`EXPIRES`].
fn write_policy(dir: &Path, name: &str, version: u64) {
    write_policy_expiring(dir, name, version, EXPIRES);
}

/// The fixture policy, valid for a month from today.
fn write_policy_for_today(dir: &Path, name: &str, version: u64) {
    write_policy_expiring(dir, name, version, &today(TODAY_VALID_SECS));
}

fn write_policy_expiring(dir: &Path, name: &str, version: u64, expires: &str) {
    let pusher = std::fs::read_to_string(dir.join("pusher.pub")).unwrap();
    let text = POLICY.replace("VERSION", &version.to_string()).replace("PUSHER", pusher.trim()).replace("EXPIRES", expires);
    std::fs::write(dir.join(name), text).unwrap();
}

/// The first signer starts the bundle from the policy (issued at [`ISSUED`]); the others each
/// add their signature to it.
fn sign_bundle(dir: &Path, policy: &str, out: &str, signers: &[&str]) {
    sign_bundle_issued(dir, ISSUED, policy, out, signers);
}

/// [`sign_bundle`] of a policy written by [`write_policy_for_today`], issued a minute ago.
fn sign_bundle_for_today(dir: &Path, policy: &str, out: &str, signers: &[&str]) {
    sign_bundle_issued(dir, &today(-60), policy, out, signers);
}

fn sign_bundle_issued(dir: &Path, issued: &str, policy: &str, out: &str, signers: &[&str]) {
    for (i, signer) in signers.iter().enumerate() {
        let key = format!("{signer}.key");
        let mut args = vec!["policy", "sign", "--root", "root.toml", "--key", &key];
        if i == 0 {
            args.extend(["--issued", issued, policy]);
        } else {
            args.push(out);
        }
        args.extend(["--out", out]);
        ok(dir, &args);
    }
}

#[test]
fn key_gen_writes_private_secret_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let run = ok(dir.path(), &["key", "gen", "--out", "alice"]);
    assert!(run.stdout.starts_with("ed25519:"));
    assert_eq!(std::fs::read_to_string(dir.path().join("alice.pub")).unwrap().trim(), run.stdout.trim());
    let mode = std::fs::metadata(dir.path().join("alice.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    refused(dir.path(), &["key", "gen", "--out", "alice"], "already exists; refusing to overwrite");
}

#[test]
fn a_secret_key_readable_by_others_is_refused() {
    let dir = setup();
    std::fs::set_permissions(dir.path().join("a.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    refused(dir.path(), &["policy", "sign", "--root", "root.toml", "--key", "a.key", "policy.toml", "--out", "p.bundle"], "readable by others (mode 0644)");
}

#[test]
fn root_init_refuses_a_bad_threshold_and_a_repeated_key() {
    let dir = setup();
    refused(
        dir.path(),
        &["root", "init", "--vault-id", "v", "--threshold", "3", "--admin", "a.pub", "--admin", "b.pub", "--out", "r.toml"],
        "threshold 3 must be between 1 and the number of admin keys (2)",
    );
    std::fs::copy(dir.path().join("a.pub"), dir.path().join("a2.pub")).unwrap();
    refused(dir.path(), &["root", "init", "--vault-id", "v", "--threshold", "1", "--admin", "a.pub", "--admin", "a2.pub", "--out", "r.toml"], "is listed more than once (as `a` and `a2`)");
}

#[test]
fn sign_and_verify_with_state_and_time() {
    let dir = setup();
    let d = dir.path();
    refused(d, &["policy", "sign", "--key", "a.key", "policy.toml", "--out", "p.bundle"], "--root is needed to start a bundle");
    refused(d, &["policy", "sign", "--root", "root.toml", "--key", "pusher.key", "--issued", ISSUED, "policy.toml", "--out", "p.bundle"], "is not an admin of root v1");
    sign_bundle(d, "policy.toml", "p.bundle", &["a", "b"]);
    refused(d, &["policy", "sign", "--root", "root.toml", "--key", "b.key", "p.bundle", "--out", "p.bundle"], "already signed by key");

    let run = ok(d, &["policy", "verify", "--root", "root.toml", "--at", "2026-11-25T00:00:00Z", "p.bundle"]);
    assert!(run.stdout.contains("signed by a, b (threshold 2)"), "{}", run.stdout);
    refused(d, &["policy", "verify", "--root", "root.toml", "--at", "2027-02-01T00:00:00Z", "p.bundle"], "expired: bundle expired at 2027-01-31T00:00:00Z, vault time is 2027-02-01T00:00:00Z");

    // A vault that has accepted version 5 refuses version 3.
    let state = d.join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("state.json"), r#"{"accepted_version":5,"time_floor":"2026-11-21T00:00:00Z"}"#).unwrap();
    refused(d, &["policy", "verify", "--root", "root.toml", "--state", "state", "--at", "2026-11-25T00:00:00Z", "p.bundle"], "rollback: version 3 <= accepted 5");
}

#[test]
fn show_and_schedule_read_a_bundle() {
    let dir = setup();
    let d = dir.path();
    sign_bundle(d, "policy.toml", "p.bundle", &["a", "c"]);
    let run = ok(d, &["policy", "show", "p.bundle"]);
    assert!(run.stdout.starts_with("NOT VERIFIED"), "{}", run.stdout);
    assert!(run.stdout.contains("network: NIC with MAC 52:54:00:12:34:56 address 192.0.2.10/24 port 7400"), "{}", run.stdout);
    let json: serde_json::Value = serde_json::from_str(&ok(d, &["policy", "show", "--json", "p.bundle"]).stdout).unwrap();
    assert_eq!(json["policy"]["version"], 3);
    assert_eq!(json["signature_key_ids"].as_array().unwrap().len(), 2);

    // Saturday 22:00 for 3h crosses midnight into Sunday; 2026-11-28 is a Saturday.
    let run = ok(d, &["schedule", "--policy", "p.bundle", "--from", "2026-11-28T23:00:00Z", "--days", "8"]);
    assert!(run.stdout.contains("at 2026-11-28T23:00:00Z: OPEN until 2026-11-29T01:00:00Z"), "{}", run.stdout);
    assert!(run.stdout.contains("2026-12-05T22:00:00Z .. 2026-12-06T01:00:00Z  (3h)"), "{}", run.stdout);

    // The same windows as a timer drop-in; systemd itself parses each calendar expression.
    let run = ok(d, &["schedule", "--policy", "p.bundle", "--root", "root.toml", "--from", "2026-11-28T23:00:00Z", "--systemd"]);
    assert!(run.stderr.contains("verified against root.toml"), "{}", run.stderr);
    let calendars: Vec<&str> = run.stdout.lines().filter_map(|l| l.strip_prefix("OnCalendar=")).collect();
    assert_eq!(calendars, ["", "Sat *-*-* 22:00:00 UTC"], "{}", run.stdout);
    assert!(run.stdout.contains("[Timer]\n"), "{}", run.stdout);
    let parsed = Command::new("systemd-analyze").args(["calendar", calendars[1]]).output().expect("systemd-analyze (scripts/ensure-tools.sh installs systemd)");
    assert!(parsed.status.success(), "systemd refuses `{}`: {}", calendars[1], String::from_utf8_lossy(&parsed.stderr));
    assert!(String::from_utf8_lossy(&parsed.stdout).contains("Normalized form: Sat *-*-* 22:00:00 UTC"), "{}", String::from_utf8_lossy(&parsed.stdout));
}

#[test]
fn a_policy_beyond_the_caps_is_refused_at_signing() {
    let dir = setup();
    let d = dir.path();
    let text = std::fs::read_to_string(d.join("policy.toml")).unwrap().replace("duration = \"3h\"", "duration = \"5h\"");
    std::fs::write(d.join("policy.toml"), text).unwrap();
    refused(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "p.bundle"],
        "cap exceeded: window[0] length is 5h, the trust root allows at most 4h",
    );
}

#[test]
fn root_rotation_through_the_cli() {
    let dir = setup();
    let d = dir.path();
    for name in ["x", "y"] {
        ok(d, &["key", "gen", "--out", name]);
    }
    ok(d, &["root", "init", "--version", "2", "--vault-id", "vault-01", "--threshold", "2", "--admin", "x.pub", "--admin", "y.pub", "--out", "root2.toml"]);
    ok(d, &["policy", "sign", "--root", "root.toml", "--new-root", "root2.toml", "--issued", ISSUED, "--key", "a.key", "policy.toml", "--out", "rot.bundle"]);
    for signer in ["b", "x"] {
        ok(d, &["policy", "sign", "--root", "root.toml", "--key", &format!("{signer}.key"), "rot.bundle", "--out", "rot.bundle"]);
    }
    // Old threshold met, new one not yet.
    refused(d, &["policy", "verify", "--root", "root.toml", "--at", "2026-11-25T00:00:00Z", "rot.bundle"], "threshold not met for new root v2: 1 valid");
    ok(d, &["policy", "sign", "--root", "root.toml", "--key", "y.key", "rot.bundle", "--out", "rot.bundle"]);
    let run = ok(d, &["policy", "verify", "--root", "root.toml", "--at", "2026-11-25T00:00:00Z", "rot.bundle"]);
    assert!(run.stdout.contains("rotates the trust root to v2 (2 of 2 admins)"), "{}", run.stdout);
}

// ---- offline restore and listing: only the pinned vault key is trusted ------------------

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::keys::SigningKey;
use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_store::{SealInput, Store};

/// A vault store in a temp dir; clears the immutable flags sealing set so it can be removed.
struct TestStore {
    dir: tempfile::TempDir,
}

impl TestStore {
    fn new() -> TestStore {
        let store = TestStore { dir: tempfile::tempdir().unwrap() };
        Store::open(&store.root()).unwrap();
        store
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn root_arg(&self) -> String {
        self.root().display().to_string()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

fn signing_key() -> SigningKey {
    SigningKey::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap()
}

/// One snapshot's tree: files (one chunk each), a directory and a symlink.
#[derive(Clone, Copy)]
enum Item {
    File(&'static [u8]),
    /// A file whose manifest gives its one chunk (and so the file) this length instead of
    /// the chunk's own.
    MisSized(&'static [u8], u32),
    Dir,
    Link(&'static str),
}

/// Seals `items` (sorted by path) as snapshot `id`, its receipt signed by `key`, retained
/// until `retain_until`.
fn seal_snapshot(store: &TestStore, key: &SigningKey, id: &str, retain_until: i64, items: &[(&str, Item)]) {
    seal_snapshot_of(store, key, id, None, retain_until, items);
}

/// [`seal_snapshot`] of `(dataset, received_at)` instead of test-net's defaults.
fn seal_snapshot_of(store: &TestStore, key: &SigningKey, id: &str, dataset_at: Option<(&str, i64)>, retain_until: i64, items: &[(&str, Item)]) {
    let (vault, _) = Store::open(&store.root()).unwrap();
    let mut pack = vault.begin().unwrap();
    let mut entries = Vec::new();
    for (path, item) in items {
        let kind = match item {
            Item::File(data) => {
                let id = ChunkId::of(data);
                if !vault.has_chunk(&id) {
                    pack.append(id, data).unwrap();
                }
                EntryKind::File { size: u64::try_from(data.len()).unwrap(), chunks: vec![ChunkRef { id, len: u32::try_from(data.len()).unwrap() }] }
            }
            Item::MisSized(data, len) => {
                pack.append(ChunkId::of(data), data).unwrap();
                EntryKind::File { size: u64::from(*len), chunks: vec![ChunkRef { id: ChunkId::of(data), len: *len }] }
            }
            Item::Dir => EntryKind::Dir,
            Item::Link(target) => EntryKind::Symlink { target: target.as_bytes().to_vec() },
        };
        entries.push(Entry { path: path.as_bytes().to_vec(), mode: if matches!(item, Item::Dir) { 0o750 } else { 0o640 }, mtime: 1_700_000_000, kind });
    }
    let manifest = Manifest { entries }.encode().unwrap();
    let receipt = match dataset_at {
        None => test_net::signed_receipt(key, id, &manifest, "db-backup", retain_until),
        Some((dataset, at)) => test_net::signed_receipt_at(key, id, &manifest, ("db-backup", dataset), at, retain_until),
    };
    vault.seal_all(pack, SealInput { snapshot_id: id, manifest: &manifest, receipt: &receipt, profile: None }).unwrap();
}

const RETAINED: i64 = 1_900_000_000; // 2030-03-17
const TREE: [(&str, Item); 6] = [
    ("a", Item::File(b"alpha: kept whole")),
    ("b", Item::File(b"bravo: the chunk that goes bad")),
    ("c", Item::File(b"charlie")),
    ("d", Item::Dir),
    ("d/e", Item::File(b"echo, inside a directory")),
    ("link", Item::Link("a")),
];

/// What a restored tree must hold: path -> file content or `-> target`; the marker must be gone.
fn expected_tree() -> BTreeMap<String, String> {
    TREE.iter()
        .filter_map(|(path, item)| match item {
            Item::File(data) => Some((path.to_string(), String::from_utf8_lossy(data).into_owned())),
            Item::Link(target) => Some((path.to_string(), format!("-> {target}"))),
            Item::Dir | Item::MisSized(..) => None,
        })
        .collect()
}

/// Files and symlinks under `dir` (not the marker), as [`expected_tree`] spells them.
fn tree_of(dir: &Path) -> BTreeMap<String, String> {
    let walked = test_net::walk(dir, |rel| rel == ".vault-restore");
    walked
        .into_iter()
        .filter(|w| !w.meta.is_dir())
        .map(|w| {
            let what = match w.meta.is_symlink() {
                true => format!("-> {}", std::fs::read_link(&w.path).unwrap().display()),
                false => String::from_utf8_lossy(&std::fs::read(&w.path).unwrap()).into_owned(),
            };
            (w.rel, what)
        })
        .collect()
}

/// Flips one byte of `data` where it lies in a pack (lifting the seal first, as someone with
/// the disk could); flipping again repairs it.
fn flip_in_pack(store: &TestStore, data: &[u8]) -> (PathBuf, usize) {
    for entry in std::fs::read_dir(store.root().join("packs")).unwrap() {
        let pack = entry.unwrap().path();
        let bytes = std::fs::read(&pack).unwrap();
        if let Some(pos) = bytes.windows(data.len()).position(|w| w == data) {
            flip_at(&pack, pos);
            return (pack, pos);
        }
    }
    panic!("no pack holds the chunk");
}

fn flip_at(pack: &Path, pos: usize) {
    Command::new("chattr").arg("-i").arg(pack).output().unwrap();
    std::fs::set_permissions(pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    bytes[pos] ^= 0x20;
    std::fs::write(pack, bytes).unwrap();
}

/// A store with snapshot `s1` of [`TREE`] sealed by the vault; returns it, the vault's
/// public key as `--vault-key` takes it, and the key.
fn sealed_store() -> (TestStore, String, SigningKey) {
    let store = TestStore::new();
    let vault = signing_key();
    seal_snapshot(&store, &vault, "s1", RETAINED, &TREE);
    let public = vault.public_key().to_string();
    (store, public, vault)
}

#[test]
fn restore_and_snapshots_need_the_pinned_vault_key() {
    let (store, vault_key, _) = sealed_store();
    let d = store.path();
    let root = store.root_arg();
    for args in [vec!["restore", "--store", &root, "--snapshot", "s1", "--to", "out"], vec!["snapshots", "--store", &root]] {
        let run = vaultctl(d, &args);
        assert_eq!(run.code, Some(2), "{args:?}: a usage error, as clap's: {}", run.stderr);
        for part in ["needs --vault-key", "`ed25519:...`, or a file holding it", "pass --insecure-any-vault-key instead"] {
            assert!(run.stderr.contains(part), "{args:?}: `{part}` in {}", run.stderr);
        }
    }
    assert!(!d.join("out").exists(), "nothing is written without a key");
    let both = vaultctl(d, &["snapshots", "--store", &root, "--vault-key", &vault_key, "--insecure-any-vault-key"]);
    assert_eq!(both.code, Some(2), "{}", both.stderr);

    // The opt-out works, loudly.
    let run = ok(d, &["snapshots", "--store", &root, "--insecure-any-vault-key"]);
    assert!(run.stderr.contains("WARNING: --insecure-any-vault-key"), "{}", run.stderr);
    assert!(run.stdout.contains("receipts NOT checked against a pinned key"), "{}", run.stdout);

    // The key as a string or as a file.
    std::fs::write(d.join("vault.pub"), format!("{vault_key}\n")).unwrap();
    let run = ok(d, &["snapshots", "--store", &root, "--vault-key", "vault.pub"]);
    assert!(run.stdout.contains("  s1  db by db-backup: 4 files, 78 bytes, retain until 2030-03-17T17:46:40Z  ok"), "{}", run.stdout);
    let run = ok(d, &["restore", "--store", &root, "--snapshot", "s1", "--to", "out", "--vault-key", &vault_key]);
    assert!(run.stdout.contains("restored s1 to out: 4 files written, 0 kept"), "{}", run.stdout);
    assert_eq!(tree_of(&d.join("out")), expected_tree());
    assert!(!d.join("out/.vault-restore").exists(), "a whole restore leaves no marker");
    assert_eq!(std::fs::metadata(d.join("out/d")).unwrap().permissions().mode() & 0o777, 0o750);
    // Done is done: the same directory is no longer new, empty or unfinished.
    refused(d, &["restore", "--store", &root, "--snapshot", "s1", "--to", "out", "--vault-key", &vault_key], "out: must be a new or empty directory");
}

#[test]
fn a_store_signed_by_another_key_is_refused_by_restore_and_flagged_by_snapshots() {
    let (store, vault_key, vault) = sealed_store();
    let d = store.path();
    let root = store.root_arg();
    // Someone with the disk seals a snapshot of their own, claiming a longer retention.
    let forger = signing_key();
    seal_snapshot(&store, &forger, "s2", 4_000_000_000, &TREE);

    let run = vaultctl(d, &["restore", "--store", &root, "--snapshot", "s2", "--to", "out", "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let expected = format!("snapshot s2: its receipt is signed by vault key id {}, not the pinned vault key id {}", forger.public_key().key_id(), vault.public_key().key_id());
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(!d.join("out").exists(), "nothing is written for an untrusted snapshot");

    let run = vaultctl(d, &["snapshots", "--store", &root, "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert!(run.stdout.contains("  s1  db by db-backup") && run.stdout.contains("  s2  NOT VERIFIED: "), "{}", run.stdout);
    assert!(!run.stdout.contains("2096"), "the forged retention date is not shown: {}", run.stdout);
    assert!(run.stderr.contains("1 of 2 snapshot(s) are NOT VERIFIED or UNRESTORABLE"), "{}", run.stderr);
    let json: serde_json::Value = serde_json::from_str(&vaultctl(d, &["snapshots", "--json", "--store", &root, "--vault-key", &vault_key]).stdout).unwrap();
    assert_eq!((json[0]["verified"].as_bool(), json[0]["restorable"].as_bool()), (Some(true), Some(true)), "{json}");
    assert_eq!(json[1]["verified"], false, "{json}");
    assert!(json[1]["error"].as_str().unwrap().contains(&expected) && json[1].get("retain_until").is_none(), "{json}");
}

#[test]
fn keep_going_restores_the_rest_reports_and_leaves_nothing_partial() {
    let (store, vault_key, _) = sealed_store();
    let d = store.path();
    let root = store.root_arg();
    flip_in_pack(&store, b"bravo: the chunk that goes bad");

    // Without --keep-going: the first bad chunk stops it, and b is not there even in part.
    let run = vaultctl(d, &["restore", "--store", &root, "--snapshot", "s1", "--to", "plain", "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    for part in ["restore of snapshot s1 stopped at `b`: ", "reads back as", "Nothing partial was left", "Pass --keep-going"] {
        assert!(run.stderr.contains(part), "`{part}` in {}", run.stderr);
    }
    assert!(!d.join("plain/b").exists());
    assert_eq!(std::fs::read_dir(d.join("plain/.vault-restore")).unwrap().count(), 1, "only the marker's snapshot file, no temp left");

    // With it: everything else, a report, exit 6.
    let run = vaultctl(d, &["restore", "--json", "--keep-going", "--store", &root, "--snapshot", "s1", "--to", "kept", "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!((report["complete"].as_bool(), report["files"].as_u64(), report["symlinks"].as_u64()), (Some(false), Some(3), Some(1)), "{report}");
    let missing = report["not_restored"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "{report}");
    assert_eq!(missing[0]["path"], "b");
    assert!(missing[0]["reason"].as_str().unwrap().contains("reads back as"), "{report}");
    assert!(run.stderr.contains("1 file(s) of snapshot s1 could not be restored"), "{}", run.stderr);
    let mut expected = expected_tree();
    expected.remove("b");
    assert_eq!(tree_of(&d.join("kept")), expected, "every other file whole, b absent");

    let run = vaultctl(d, &["restore", "--keep-going", "--store", &root, "--snapshot", "s1", "--to", "text", "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert!(run.stdout.contains("NOT RESTORED: 1 file(s), left out whole:\n  b: "), "{}", run.stdout);
}

#[test]
fn a_chunk_of_another_length_than_the_manifest_says_is_not_restored() {
    // The bytes hash to the id, but the signed manifest gives another length: the file would
    // come back at a size the manifest does not say, so it is left out and reported.
    let store = TestStore::new();
    let vault = signing_key();
    seal_snapshot(&store, &vault, "s1", RETAINED, &[("long", Item::MisSized(b"twelve bytes", 5)), ("ok", Item::File(b"fine"))]);
    let (d, root, vault_key) = (store.path(), store.root_arg(), vault.public_key().to_string());
    let run = vaultctl(d, &["restore", "--json", "--keep-going", "--store", &root, "--snapshot", "s1", "--to", "out", "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let missing = report["not_restored"].as_array().unwrap();
    assert_eq!((missing.len(), missing[0]["path"].as_str()), (1, Some("long")), "{report}");
    assert!(missing[0]["reason"].as_str().unwrap().ends_with("is 12 bytes, the manifest says 5"), "{report}");
    assert!(!d.join("out/long").exists());
    assert_eq!(std::fs::read(d.join("out/ok")).unwrap(), b"fine");
}

#[test]
fn an_unfinished_restore_resumes_into_the_same_directory() {
    let (store, vault_key, vault) = sealed_store();
    seal_snapshot(&store, &vault, "s2", RETAINED, &TREE[..1]);
    let d = store.path();
    let root = store.root_arg();
    let (pack, pos) = flip_in_pack(&store, b"bravo: the chunk that goes bad");
    let restore = |to: &str, snapshot: &str| vaultctl(d, &["restore", "--json", "--keep-going", "--store", &root, "--snapshot", snapshot, "--to", to, "--vault-key", &vault_key]);
    assert_eq!(restore("out", "s1").code, Some(6));
    let out = d.join("out");

    // Since then: a temp file of a run that was killed, a restored file altered in place, and
    // one replaced by a symlink pointing out of the target.
    std::fs::write(out.join(".vault-restore/9.partial"), b"half").unwrap();
    std::fs::write(out.join("a"), b"ALPHA: kept whole").unwrap();
    std::fs::write(d.join("outside"), b"not to be touched").unwrap();
    std::fs::remove_file(out.join("c")).unwrap();
    std::os::unix::fs::symlink(d.join("outside"), out.join("c")).unwrap();
    let untouched = std::fs::metadata(out.join("d/e")).unwrap().ino();

    // Another snapshot, or a directory without the marker, is refused.
    let run = restore("out", "s2");
    assert!(run.stderr.contains("out: holds an unfinished restore of snapshot s1, not s2"), "{}", run.stderr);
    std::fs::create_dir(d.join("other")).unwrap();
    std::fs::write(d.join("other/x"), b"x").unwrap();
    let run = restore("other", "s1");
    assert!(run.stderr.contains("other: must be a new or empty directory, or one holding an unfinished restore of snapshot s1"), "{}", run.stderr);

    // The store is repaired; the same command finishes the job.
    flip_at(&pack, pos);
    let run = restore("out", "s1");
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("resuming the earlier restore of s1"), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!((report["files_kept"].as_u64(), report["files"].as_u64()), (Some(1), Some(3)), "d/e kept; a, b, c written: {report}");
    assert_eq!(tree_of(&out), expected_tree());
    assert_eq!(std::fs::metadata(out.join("d/e")).unwrap().ino(), untouched, "a verified file is kept as it is");
    assert_eq!(std::fs::read(d.join("outside")).unwrap(), b"not to be touched");
    assert!(!out.join(".vault-restore").exists(), "the marker goes once the restore is whole");
}

// --- admins who sign with OpenSSH: stock ssh-keygen, and FIDO2 security keys -----------------

fn ssh_keygen(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("ssh-keygen").args(args).current_dir(dir).output().expect("ssh-keygen (openssh-client) is installed by scripts/ensure-tools.sh");
    assert!(out.status.success(), "ssh-keygen {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `a` starts a bundle of policy.toml under `root` (2 of 2) and writes its payload for the
/// OpenSSH admin to sign.
fn bundle_for_ssh_admin(d: &Path, root: &str) {
    ok(d, &["policy", "sign", "--root", root, "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "p.bundle"]);
    let run = ok(d, &["policy", "payload", "p.bundle", "--out", "p.payload"]);
    assert!(run.stderr.contains("ssh-keygen -Y sign -f ~/.ssh/id_ed25519_sk -n airgap-vault/policy-bundle/v1 p.payload"), "{}", run.stderr);
}

#[test]
fn an_admin_signs_with_stock_ssh_keygen_and_the_namespace_is_checked() {
    let dir = setup();
    let d = dir.path();
    ssh_keygen(d, &["-q", "-t", "ed25519", "-N", "", "-C", "alice@desk", "-f", "alice"]);
    ok(d, &["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "alice.pub", "--out", "root-ssh.toml"]);
    assert!(std::fs::read_to_string(d.join("root-ssh.toml")).unwrap().contains("key = \"ssh-ed25519 AAAA"), "the root lists the OpenSSH key");
    bundle_for_ssh_admin(d, "root-ssh.toml");
    refused(d, &["policy", "verify", "--root", "root-ssh.toml", "--at", "2026-11-25T00:00:00Z", "p.bundle"], "1 valid signature(s) from distinct admin keys, need 2");

    // Signed in an order's namespace: refused before it is added, with the command to use.
    ssh_keygen(d, &["-Y", "sign", "-f", "alice", "-n", "airgap-vault/order/v1", "p.payload"]);
    refused(
        d,
        &["policy", "add-sshsig", "--root", "root-ssh.toml", "--sig", "p.payload.sig", "p.bundle", "--out", "p.bundle"],
        "signed in namespace `airgap-vault/order/v1`, this object is signed in `airgap-vault/policy-bundle/v1`: sign again with `ssh-keygen -Y sign -n airgap-vault/policy-bundle/v1`",
    );
    std::fs::remove_file(d.join("p.payload.sig")).unwrap();
    // A key the root does not list.
    ssh_keygen(d, &["-q", "-t", "ed25519", "-N", "", "-f", "mallory"]);
    ssh_keygen(d, &["-Y", "sign", "-f", "mallory", "-n", "airgap-vault/policy-bundle/v1", "p.payload"]);
    refused(d, &["policy", "add-sshsig", "--root", "root-ssh.toml", "--sig", "p.payload.sig", "p.bundle", "--out", "p.bundle"], "which is no admin of root v1");
    std::fs::remove_file(d.join("p.payload.sig")).unwrap();

    ssh_keygen(d, &["-Y", "sign", "-f", "alice", "-n", "airgap-vault/policy-bundle/v1", "p.payload"]);
    let run = ok(d, &["policy", "add-sshsig", "--root", "root-ssh.toml", "--sig", "p.payload.sig", "p.bundle", "--out", "p.bundle"]);
    assert!(run.stderr.contains("added admin `alice`'s OpenSSH signature (SHA256:"), "{}", run.stderr);
    let run = ok(d, &["policy", "verify", "--root", "root-ssh.toml", "--at", "2026-11-25T00:00:00Z", "p.bundle"]);
    assert!(run.stdout.contains("signed by a, alice (threshold 2)"), "{}", run.stdout);
    refused(d, &["policy", "add-sshsig", "--root", "root-ssh.toml", "--sig", "p.payload.sig", "p.bundle", "--out", "p.bundle"], "already signed by key");
}

/// Plays a FIDO2 token holding `sk-ssh-ed25519@openssh.com` key `seed`: its public key line,
/// and an armored SSHSIG over `payload` with the authenticator `flags` it reports.
struct Token(ring::signature::Ed25519KeyPair);

impl Token {
    fn new(seed: u8) -> Token {
        Token(ring::signature::Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap())
    }

    fn public(&self) -> vault_core::policy::sshsig::SshPublicKey {
        use ring::signature::KeyPair as _;
        let key = vault_core::keys::PublicKey::from_bytes(self.0.public_key().as_ref().try_into().unwrap());
        vault_core::policy::sshsig::SshPublicKey { key, kind: vault_core::policy::sshsig::SshKeyKind::SecurityKey { application: "ssh:".into() } }
    }

    fn sign(&self, namespace: &str, payload: &[u8], flags: u8) -> String {
        use vault_core::policy::sshsig::{security_key_signed_bytes, signed_data, SshSignature};
        let signed = signed_data(namespace, "sha512", ring::digest::digest(&ring::digest::SHA512, payload).as_ref());
        let sig = self.0.sign(&security_key_signed_bytes("ssh:", flags, 7, &signed));
        SshSignature::from_parts(self.public(), namespace, "sha512", sig.as_ref().try_into().unwrap(), Some((flags, 7))).to_armored()
    }
}

#[test]
fn a_security_key_signature_needs_a_touch_and_a_pin_where_the_root_asks() {
    let dir = setup();
    let d = dir.path();
    let token = Token::new(9);
    std::fs::write(d.join("carol.pub"), format!("{} carol@desk\n", token.public().to_line())).unwrap();
    ok(d, &["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "carol.pub", "--out", "root-sk.toml"]);
    refused(d, &["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "b.pub", "--user-verification", "b", "--out", "r.toml"], "only a security key");
    ok(d, &["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "carol.pub", "--user-verification", "carol", "--out", "root-uv.toml"]);
    bundle_for_ssh_admin(d, "root-sk.toml");
    let payload = std::fs::read(d.join("p.payload")).unwrap();
    let ns = "airgap-vault/policy-bundle/v1";

    // Stock OpenSSH accepts these vectors, so they are what a real token's signature looks like.
    std::fs::write(d.join("allowed_signers"), format!("carol {}\n", token.public().to_line())).unwrap();
    std::fs::write(d.join("touched.sig"), token.sign(ns, &payload, 0x01)).unwrap();
    let verify = Command::new("sh").arg("-c").arg(format!("ssh-keygen -Y verify -f allowed_signers -I carol -n {ns} -s touched.sig < p.payload")).current_dir(d).output().unwrap();
    assert!(verify.status.success(), "ssh-keygen -Y verify: {}", String::from_utf8_lossy(&verify.stderr));

    // No touch (flags 0x00): malware with the token plugged in. Refused by the vault's rule.
    std::fs::write(d.join("untouched.sig"), token.sign(ns, &payload, 0x00)).unwrap();
    refused(
        d,
        &["policy", "add-sshsig", "--root", "root-sk.toml", "--sig", "untouched.sig", "p.bundle", "--out", "p.bundle"],
        "admin `carol`: the security key signed without user presence (flags 0x00): sign again and touch the key when it blinks",
    );
    let mut bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("p.bundle")).unwrap()).unwrap();
    let blob = vault_core::policy::sshsig::SshSignature::from_armored(token.sign(ns, &payload, 0x00).as_bytes()).unwrap().to_blob();
    let key_id = token.public().key.key_id();
    use base64::Engine as _;
    bundle["signatures"].as_array_mut().unwrap().push(serde_json::json!({ "keyid": key_id, "sshsig": base64::engine::general_purpose::STANDARD.encode(blob) }));
    std::fs::write(d.join("forced.bundle"), serde_json::to_vec(&bundle).unwrap()).unwrap();
    refused(d, &["policy", "verify", "--root", "root-sk.toml", "--at", "2026-11-25T00:00:00Z", "forced.bundle"], "admin `carol`: the security key signed without user presence");

    // A touch: counted. Under the root that asks for a PIN, a touch alone is not enough.
    refused(
        d,
        &["policy", "add-sshsig", "--root", "root-uv.toml", "--sig", "touched.sig", "p.bundle", "--out", "p-uv.bundle"],
        "without user verification (flags 0x01), which the trust root requires of this admin",
    );
    std::fs::write(d.join("pin.sig"), token.sign(ns, &payload, 0x05)).unwrap();
    ok(d, &["policy", "add-sshsig", "--root", "root-uv.toml", "--sig", "pin.sig", "p.bundle", "--out", "p-uv.bundle"]);
    ok(d, &["policy", "add-sshsig", "--root", "root-sk.toml", "--sig", "touched.sig", "p.bundle", "--out", "p.bundle"]);
    let run = ok(d, &["policy", "verify", "--root", "root-sk.toml", "--at", "2026-11-25T00:00:00Z", "p.bundle"]);
    assert!(run.stdout.contains("signed by a, carol (threshold 2)"), "{}", run.stdout);
}

// --- push settings: profiles, the environment, --dry-run, the window ---------------------------

fn vaultctl_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let Output { status, stdout, stderr } = Command::new(env!("CARGO_BIN_EXE_vaultctl")).args(args).envs(env.iter().copied()).env("XDG_CONFIG_HOME", dir).current_dir(dir).output().unwrap();
    Run { ok: status.success(), code: status.code(), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
}

/// A source tree, the vault's key, a signed policy copy (a, b), and vaultctl/vaultctl.toml under
/// the test's XDG_CONFIG_HOME with profile `db` pointing at them, plus `extra` lines.
fn profile_setup(extra: &str) -> tempfile::TempDir {
    let dir = setup();
    let d = dir.path();
    ok(d, &["key", "gen", "--out", "vault"]);
    // Push judges the policy copy by today's date.
    write_policy_for_today(d, "today.toml", 3);
    sign_bundle_for_today(d, "today.toml", "p.bundle", &["a", "b"]);
    for (rel, bytes) in [("src/db.dump", &b"rows"[..]), ("src/scratch.tmp", b"x"), ("src/cache/blob", b"cached"), ("src/keep/notes", b"notes")] {
        std::fs::create_dir_all(d.join(rel).parent().unwrap()).unwrap();
        std::fs::write(d.join(rel), bytes).unwrap();
    }
    std::fs::create_dir_all(d.join("vaultctl")).unwrap();
    let config = format!(
        "[profile.db]\nvault = \"127.0.0.1:9\"\nvault_key = \"{}\"\nkey = \"{}\"\ndataset = \"pg\"\nsource = \"{}\"\npolicy = \"{}\"\nroot = \"{}\"\nexclude = [\"*.tmp\"]\n{extra}",
        d.join("vault.pub").display(),
        d.join("pusher.key").display(),
        d.join("src").display(),
        d.join("p.bundle").display(),
        d.join("root.toml").display()
    );
    std::fs::write(d.join("vaultctl/vaultctl.toml"), config).unwrap();
    dir
}

#[test]
fn a_profile_gives_every_setting_and_flags_and_the_environment_override_it() {
    let dir = profile_setup("exclude_file = [\"excludes\"]\n");
    let d = dir.path();
    std::fs::write(d.join("excludes"), "# caches\ncache/\n").unwrap();
    let run = vaultctl_env(d, &["push", "--profile", "db", "--dry-run"], &[]);
    assert!(run.ok, "{}", run.stderr);
    assert!(run.stdout.contains("dry run: nothing sent"), "{}", run.stdout);
    assert!(run.stdout.contains("dataset `pg`"), "{}", run.stdout);
    assert!(run.stdout.contains("2 files, 9 bytes; 2 entries excluded by 2 pattern(s)"), "*.tmp and cache/ are left out: {}", run.stdout);
    assert!(run.stdout.contains("window: ") && run.stdout.contains("(policy v3)"), "{}", run.stdout);
    let run = vaultctl_env(d, &["push", "--profile", "db", "--dry-run"], &[("VAULTCTL_DATASET", "from-env")]);
    assert!(run.stdout.contains("dataset `from-env`"), "{}", run.stdout);
    let run = vaultctl_env(d, &["push", "--profile", "db", "--dry-run", "--dataset", "from-flag"], &[("VAULTCTL_DATASET", "from-env")]);
    assert!(run.stdout.contains("dataset `from-flag`"), "{}", run.stdout);
    let run = vaultctl_env(d, &["push", "--dry-run"], &[("VAULTCTL_PROFILE", "db"), ("VAULTCTL_DATASET", "bad name!")]);
    assert!(!run.ok && run.stderr.contains("bad name!"), "a bad dataset name is refused offline: {}", run.stderr);
}

#[test]
fn a_missing_setting_or_profile_says_the_three_ways_to_give_it() {
    let dir = profile_setup("");
    let d = dir.path();
    let config = std::fs::read_to_string(d.join("vaultctl/vaultctl.toml")).unwrap().replace("dataset = \"pg\"\n", "");
    std::fs::write(d.join("vaultctl/vaultctl.toml"), config).unwrap();
    let run = vaultctl_env(d, &["push", "--profile", "db", "--dry-run"], &[]);
    assert!(run.stderr.contains("no dataset: give --dataset, set VAULTCTL_DATASET, or put `dataset = ...` in [profile.db] of"), "{}", run.stderr);
    let run = vaultctl_env(d, &["push", "--profile", "nope", "--dry-run"], &[]);
    assert!(run.stderr.contains("profile `nope` is not in") && run.stderr.contains("it has: db"), "{}", run.stderr);
    std::fs::write(d.join("vaultctl/vaultctl.toml"), "[profile.db]\ndatset = \"pg\"\n").unwrap();
    let run = vaultctl_env(d, &["push", "--profile", "db", "--dry-run"], &[]);
    assert!(run.stderr.contains("unknown field `datset`"), "a typo is refused, not ignored: {}", run.stderr);
}

#[test]
fn a_pusher_the_policy_does_not_list_is_told_before_anything_is_sent() {
    let dir = profile_setup("");
    let run = vaultctl_env(dir.path(), &["push", "--profile", "db", "--dry-run", "--key", "a.key"], &[]);
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(run.stderr.contains("is not in vault vault-01's policy v3: the vault refuses its sessions"), "{}", run.stderr);
}

/// Policy v`version` with one window, once, from `from` to `until` (seconds from now).
fn one_shot_policy(d: &Path, version: u64, from: i64, until: i64) {
    write_policy_for_today(d, "once.toml", version);
    let text =
        std::fs::read_to_string(d.join("once.toml")).unwrap().replace("days = [\"sat\"]\nstart = \"22:00\"\nduration = \"3h\"", &format!("from = \"{}\"\nuntil = \"{}\"", today(from), today(until)));
    std::fs::write(d.join("once.toml"), text).unwrap();
    sign_bundle_for_today(d, "once.toml", "once.bundle", &["a", "b"]);
}

#[test]
fn a_stream_is_not_started_while_the_window_is_closed() {
    let dir = profile_setup("");
    let d = dir.path();
    one_shot_policy(d, 4, 3600, 7200);
    let config = std::fs::read_to_string(d.join("vaultctl/vaultctl.toml")).unwrap().replace("exclude = [\"*.tmp\"]\n", "");
    std::fs::write(d.join("vaultctl/vaultctl.toml"), config).unwrap();
    let run = vaultctl_env(d, &["push", "--profile", "db", "--policy", "once.bundle", "-"], &[]);
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("the window is closed (vault vault-01 policy v4): the next opens at") && run.stderr.contains("nothing was sent"), "{}", run.stderr);
    let run = vaultctl_env(d, &["push", "--profile", "db", "--policy", "once.bundle", "--exclude", "x", "-"], &[]);
    assert!(run.stderr.contains("apply to a directory; the source is a stream"), "{}", run.stderr);
}

#[test]
fn wait_for_window_waits_for_the_opening_then_retries_until_it_closes() {
    let dir = profile_setup("");
    let d = dir.path();
    one_shot_policy(d, 4, 2, 8);
    let started = std::time::Instant::now();
    // Port 9 on loopback: nothing listens, as when the vault's link is not up yet.
    let run = vaultctl_env(d, &["push", "--profile", "db", "--policy", "once.bundle", "--wait-for-window"], &[]);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "it waited for the opening");
    assert_eq!(run.code, Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("the window is closed; waiting until"), "{}", run.stderr);
    assert!(run.stderr.contains("retrying in 2s"), "{}", run.stderr);
    assert!(run.stderr.contains("retried until the window closed at"), "{}", run.stderr);
    let run = vaultctl_env(d, &["push", "--vault", "127.0.0.1:9", "--vault-key", "vault.pub", "--key", "pusher.key", "--dataset", "pg", "--wait-for-window", "src"], &[]);
    assert!(run.stderr.contains("--wait-for-window needs the vault's policy: give --policy BUNDLE and --root root.toml"), "{}", run.stderr);
}

// ---- what a new operator runs into: each refusal names the rule, the value, what to do ----

#[test]
fn a_public_key_given_as_the_secret_key_is_named_as_one() {
    let dir = setup();
    let d = dir.path();
    sign_bundle(d, "policy.toml", "p.bundle", &["a"]);
    std::fs::write(d.join("id_ed25519.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1eUm6Nm0GG0y8M0V8oF7dHk2uw2vZ3pQm9S8o1Tn3R admin@laptop\n").unwrap();
    ok(d, &["order", "new", "--root", "root.toml", "--kind", "hold", "--serial", "1", "--snapshot", "s1", "--reason", "legal hold", "--out", "hold.order"]);
    let ours = ["a.pub: this is a public key (`ed25519:...`, as NAME.pub holds it), not a secret key", "--key wants the secret key, NAME.key as `vaultctl key gen --out NAME` writes it"];
    for args in [
        vec!["policy", "sign", "--root", "root.toml", "--key", "a.pub", "policy.toml", "--out", "q.bundle"],
        vec!["policy", "sign", "--key", "a.pub", "p.bundle", "--out", "p.bundle"],
        vec!["order", "sign", "--root", "root.toml", "--key", "a.pub", "hold.order", "--out", "hold.order"],
        vec!["push", "--vault", "127.0.0.1:9", "--vault-key", "c.pub", "--key", "a.pub", "--dataset", "db", "--receipts", "receipts", "--no-cache", "policy.toml"],
    ] {
        let run = refused_with(d, &args, 2, &ours);
        assert!(!run.stderr.contains("chmod") && !run.stderr.contains("malformed"), "{args:?}: {}", run.stderr);
    }
    refused_with(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "id_ed25519.pub", "policy.toml", "--out", "q.bundle"],
        2,
        &["id_ed25519.pub: this is an OpenSSH public key line (`ssh-ed25519 AAAA...`), not a secret key, and vaultctl keys are not SSH keys", "--key wants the secret key, NAME.key"],
    );
    // And the other way round: a secret key where a public one is wanted.
    refused_with(
        d,
        &["root", "init", "--vault-id", "v", "--threshold", "1", "--admin", "a.key", "--out", "r.toml"],
        2,
        &["a.key: this is a secret key (PEM), where a public key is wanted: give NAME.pub"],
    );
    assert!(!d.join("q.bundle").exists() && !d.join("r.toml").exists());
}

#[test]
fn key_gen_refuses_a_directory_for_a_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("keys")).unwrap();
    for out in ["keys/", "keys", "new/"] {
        refused_with(
            d,
            &["key", "gen", "--out", out],
            2,
            &[&format!("--out {out}: is a directory; --out takes a name, e.g. {0}/alice, which writes {0}/alice.key and {0}/alice.pub", out.trim_end_matches('/'))],
        );
    }
    assert!(listing(&d.join("keys")).is_empty() && !d.join("new").exists(), "no hidden .key or .pub written");
    ok(d, &["key", "gen", "--out", "keys/alice"]);
    assert_eq!(listing(&d.join("keys")), ["alice.key", "alice.pub"]);
}

#[test]
fn key_show_prints_the_public_key_and_its_id_never_the_secret() {
    let dir = setup();
    let d = dir.path();
    let public = std::fs::read_to_string(d.join("a.pub")).unwrap().trim().to_string();
    let secret = std::fs::read_to_string(d.join("a.key")).unwrap();
    let secret_body = secret.lines().nth(1).unwrap();
    for file in ["a.pub", "a.key"] {
        let run = ok(d, &["key", "show", file]);
        let key_id = run.stdout.lines().nth(1).and_then(|l| l.strip_prefix("key id: ")).unwrap_or_default().to_string();
        assert_eq!(run.stdout, format!("public key: {public}\nkey id: {key_id}\n"), "{file}");
        assert_eq!(key_id.len(), 64, "{file}: {}", run.stdout);
        assert!(!run.stdout.contains(secret_body) && !run.stderr.contains(secret_body), "{file}: the secret is never shown");
    }
    assert!(ok(d, &["key", "show", "a.key"]).stderr.contains("secret key file; its public key (the secret is not shown)"));
    std::fs::write(d.join("junk"), "hello\n").unwrap();
    refused_with(d, &["key", "show", "junk"], 3, &["invalid field `junk`: key must start with `ed25519:`"]);
}

#[test]
fn root_init_labels_its_digest_and_signers_are_named_from_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["a", "b", "pusher"] {
        ok(d, &["key", "gen", "--out", name]);
    }
    let run = ok(d, &["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "b.pub", "--out", "root.toml"]);
    let digest = run.stdout.strip_prefix("root digest: ").unwrap_or_else(|| panic!("{}", run.stdout)).trim();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "{}", run.stdout);
    write_policy(d, "policy.toml", 3);
    let id = |name: &str| ok(d, &["key", "show", &format!("{name}.pub")]).stdout.lines().nth(1).unwrap().trim_start_matches("key id: ").to_string();
    let run = ok(d, &["policy", "sign", "--root", "root.toml", "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "p.bundle"]);
    assert!(run.stderr.contains(&format!("signed vault vault-01 policy v3 as a (key id {})", id("a"))), "{}", run.stderr);
    let run = ok(d, &["policy", "sign", "--key", "b.key", "p.bundle", "--out", "p.bundle"]);
    assert!(run.stderr.contains(&format!("as key id {} (give --root to see the admin's name)", id("b"))), "{}", run.stderr);
    ok(d, &["order", "new", "--root", "root.toml", "--kind", "hold", "--serial", "1", "--snapshot", "s1", "--reason", "legal hold", "--out", "hold.order"]);
    let run = ok(d, &["order", "sign", "--root", "root.toml", "--key", "b.key", "hold.order", "--out", "hold.order"]);
    assert!(run.stderr.contains(&format!("signed hold order 1 as b (key id {})", id("b"))), "{}", run.stderr);
    let run = refused_with(
        d,
        &["order", "sign", "--root", "root.toml", "--key", "pusher.key", "hold.order", "--out", "hold.order"],
        1,
        &[&format!("--key pusher.key: key {} is not an admin of root v1 (root.toml, admins a, b)", id("pusher")), "sign with one of their NAME.key files, or check --root"],
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn a_failed_write_names_the_file_asked_for_and_leaves_nothing_behind() {
    let dir = setup();
    let d = dir.path();
    std::fs::create_dir(d.join("out")).unwrap();
    // --out a directory: said with the flag, before anything is signed.
    refused_with(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "out"],
        2,
        &["--out out: is a directory; --out names the file to write, e.g. out/policy.bundle"],
    );
    // A directory that is not there: the error names the bundle asked for, not a temp file.
    let run = refused_with(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "missing/p.bundle"],
        1,
        &["missing/p.bundle: cannot write it: No such file or directory", "it is written to a temporary file in missing first and renamed; that directory must exist and be writable"],
    );
    assert!(!run.stderr.contains(".p.bundle.tmp"), "{}", run.stderr);
    let run = refused_with(d, &["key", "gen", "--out", "missing/alice"], 1, &["missing/alice.key: cannot write it: "]);
    assert!(!run.stderr.contains(".alice.key.tmp"), "{}", run.stderr);
    assert!(listing(&d.join("out")).is_empty());
    assert!(!listing(d).iter().any(|name| name.ends_with(".tmp")), "{:?}", listing(d));
}

#[test]
fn signing_an_expired_policy_is_refused_with_when_it_expired() {
    let dir = setup();
    let d = dir.path();
    let text = std::fs::read_to_string(d.join("policy.toml")).unwrap();
    std::fs::write(d.join("policy.toml"), text.replace(EXPIRES, "2026-11-10T00:00:00Z")).unwrap();
    refused_with(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "p.bundle"],
        3,
        &[
            "policy.toml: expires 2026-11-10T00:00:00Z, which is not after 2026-11-20T00:00:00Z (the --issued time): the vault refuses an expired bundle",
            "Set `expires` in policy.toml to a later time (at most 90d after the issue time, the trust root's max_validity)",
        ],
    );
    // Without --issued it is judged now.
    std::fs::write(d.join("policy.toml"), text.replace(EXPIRES, "2020-01-01T00:00:00Z")).unwrap();
    refused_with(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "a.key", "policy.toml", "--out", "p.bundle"],
        3,
        &["policy.toml: expires 2020-01-01T00:00:00Z, which is not after ", " (now): the vault refuses an expired bundle"],
    );
    assert!(!d.join("p.bundle").exists());
}

#[test]
fn overlapping_weekly_windows_are_said_by_weekday_not_a_1970_date() {
    let dir = setup();
    let d = dir.path();
    let text = std::fs::read_to_string(d.join("policy.toml")).unwrap();
    let overlapping = text.replace("[[pusher]]", "[[window]]\ndays = [\"sun\"]\nstart = \"00:30\"\nduration = \"1h\"\n[[pusher]]");
    std::fs::write(d.join("policy.toml"), overlapping).unwrap();
    let run = refused_with(
        d,
        &["policy", "sign", "--root", "root.toml", "--key", "a.key", "policy.toml", "--out", "p.bundle"],
        3,
        &["invalid field `window[1]`: overlaps window[0] (both open every sun at 00:30 UTC): move or shorten one of them"],
    );
    assert!(!run.stderr.contains("1970"), "{}", run.stderr);
}

#[test]
fn policy_verify_refuses_a_state_directory_that_is_not_there() {
    let dir = setup();
    let d = dir.path();
    sign_bundle(d, "policy.toml", "p.bundle", &["a", "b"]);
    fn verify(state: &str) -> Vec<&str> {
        vec!["policy", "verify", "--root", "root.toml", "--state", state, "--at", "2026-11-25T00:00:00Z", "p.bundle"]
    }
    let run = refused_with(
        d,
        &verify("/nonexistent/state"),
        2,
        &["--state /nonexistent/state: no such directory; give the vault's state directory (the gatekeeper's --state, /data/state on the appliance, holding state.json), or leave --state out"],
    );
    assert!(!run.stdout.contains("OK"), "{}", run.stdout);
    refused_with(d, &verify("policy.toml"), 2, &["--state policy.toml: not a directory"]);
    // A state directory without a state file is a new vault's.
    std::fs::create_dir(d.join("state")).unwrap();
    assert!(ok(d, &verify("state")).stdout.starts_with("OK: p.bundle verifies against root v1"));
}

#[test]
fn schedule_says_when_it_is_unverified_verifies_with_root_and_bounds_days() {
    let dir = setup();
    let d = dir.path();
    sign_bundle(d, "policy.toml", "under.bundle", &["a"]);
    sign_bundle(d, "policy.toml", "p.bundle", &["a", "b"]);
    fn schedule<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["schedule", "--policy"][..], extra, &["--from", "2026-11-28T23:00:00Z"]].concat()
    }
    let run = ok(d, &schedule(&["p.bundle"]));
    assert!(run.stdout.starts_with("NOT VERIFIED: what p.bundle says, its signatures unchecked (give --root to verify it first)\n"), "{}", run.stdout);
    assert!(ok(d, &schedule(&["policy.toml"])).stdout.starts_with("NOT SIGNED: what the policy.toml policy.toml says\n"));
    let run = ok(d, &schedule(&["p.bundle", "--root", "root.toml"]));
    assert!(run.stdout.starts_with("verified against root.toml (root v1) as of 2026-11-28T23:00:00Z: signed by a, b\n"), "{}", run.stdout);
    assert!(!run.stdout.contains("NOT VERIFIED"), "{}", run.stdout);
    let run = refused_with(
        d,
        &schedule(&["under.bundle", "--root", "root.toml"]),
        3,
        &["under.bundle: does not verify against the trust root root.toml: threshold not met for root v1: 1 valid signature(s)"],
    );
    assert!(run.stdout.is_empty(), "no schedule from a bundle that does not verify: {}", run.stdout);
    refused_with(d, &schedule(&["policy.toml", "--root", "root.toml"]), 2, &["--root verifies a signed bundle, and policy.toml is a policy.toml"]);
    // Judged as of --from: before the bundle was issued, it was not in force.
    refused_with(
        d,
        &["schedule", "--policy", "p.bundle", "--root", "root.toml", "--from", "2026-11-01T00:00:00Z"],
        3,
        &["p.bundle: does not verify against the trust root root.toml: issued in the future: issued 2026-11-20T00:00:00Z, vault time is 2026-11-01T00:00:00Z", "it is judged as of --from"],
    );

    // --days is bounded, and a long listing lists every opening up to the expiry: 10 Saturdays.
    for days in ["0", "3661", "50000"] {
        refused_with(d, &[&schedule(&["p.bundle"])[..], &["--days", days]].concat(), 2, &[&format!("invalid value '{days}' for '--days <DAYS>': a whole number of days from 1 to 3660")]);
    }
    let run = ok(d, &[&schedule(&["p.bundle"])[..], &["--days", "3660"]].concat());
    assert!(run.stdout.contains("10 opening(s) in the 3660 day(s) from 2026-11-28T23:00:00Z"), "{}", run.stdout);
}

#[test]
fn usb_write_verifies_the_bundle_and_orders_against_the_root() {
    let dir = setup();
    let d = dir.path();
    // Valid today, which is when a stick is checked.
    write_policy_for_today(d, "today.toml", 3);
    sign_bundle_for_today(d, "today.toml", "under.bundle", &["a"]);
    sign_bundle_for_today(d, "today.toml", "p.bundle", &["a", "c"]);
    let bundle = std::fs::read_to_string(d.join("p.bundle")).unwrap();
    let mut tampered: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    let payload = tampered["payload"].as_str().unwrap().replacen('A', "B", 1);
    tampered["payload"] = payload.into();
    std::fs::write(d.join("tampered.bundle"), tampered.to_string()).unwrap();

    refused_with(d, &["usb", "write", "p.bundle", "--out", "s.img"], 2, &["the following required arguments were not provided", "--root <ROOT>"]);
    for bad in ["under.bundle", "tampered.bundle"] {
        refused_with(
            d,
            &["usb", "write", "--root", "root.toml", bad, "--out", "s.img"],
            3,
            &[&format!("{bad}: does not verify against the trust root root.toml: threshold not met for root v1:"), "The vault would refuse it", "no stick image was written"],
        );
        assert!(!d.join("s.img").exists());
    }
    // An order one admin short of its threshold is refused too; the bundle beside it is fine.
    ok(d, &["order", "new", "--root", "root.toml", "--kind", "purge", "--serial", "1", "--snapshot", "s1", "--reason", "decommissioned", "--out", "purge.order"]);
    ok(d, &["order", "sign", "--root", "root.toml", "--key", "a.key", "purge.order", "--out", "purge.order"]);
    refused_with(
        d,
        &["usb", "write", "--root", "root.toml", "p.bundle", "--order", "purge.order", "--out", "s.img"],
        3,
        &["purge.order: does not verify against the trust root root.toml: threshold not met for a purge order under root v1: 1 valid signature(s)"],
    );
    assert!(!d.join("s.img").exists());
    // Whole, with a veto (its purge is the vault's to find waiting): written, and said so.
    ok(d, &["order", "sign", "--root", "root.toml", "--key", "b.key", "purge.order", "--out", "purge.order"]);
    ok(d, &["order", "new", "--root", "root.toml", "--kind", "veto", "--serial", "1", "--vetoes", &"0".repeat(64), "--reason", "no", "--out", "veto.order"]);
    ok(d, &["order", "sign", "--root", "root.toml", "--key", "c.key", "veto.order", "--out", "veto.order"]);
    let run = ok(d, &["usb", "write", "--root", "root.toml", "p.bundle", "--order", "purge.order", "--order", "veto.order", "--out", "s.img"]);
    assert!(run.stdout.contains("a bundle, 2 order(s), verified against --root"), "{}", run.stdout);
    // --unchecked still writes anything, for testing the vault's refusals.
    let run = ok(d, &["usb", "write", "--unchecked", "under.bundle", "--out", "u.img"]);
    assert!(run.stdout.contains("NOT verified (--unchecked)"), "{}", run.stdout);
}

#[test]
fn snapshots_and_restore_say_a_store_directory_is_missing_or_empty_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("empty")).unwrap();
    std::fs::create_dir_all(d.join("other/stuff")).unwrap();
    let key = signing_key().public_key().to_string();
    for (store, found) in [("missing", "no such directory"), ("empty", "an empty directory"), ("other", "a directory without `snapshots/`")] {
        for args in [
            vec!["snapshots", "--store", store, "--vault-key", &key],
            vec!["restore", "--store", store, "--snapshot", "s1", "--to", "out", "--vault-key", &key],
            vec!["audit", "verify", "--store", store, "--vault-key", &key],
            vec!["report", "--store", store, "--vault-key", &key, "--out", "report.html"],
        ] {
            let run = refused_with(
                d,
                &args,
                1,
                &[
                    &format!("{store}: {found}, not a vault store: a store directory holds `snapshots/` and `packs/`"),
                    "(the gatekeeper's --store, /data/store on the vault's data disk); pass that directory, or a copy of it",
                ],
            );
            assert!(!run.stderr.contains("corrupt") && !run.stderr.contains("not trusted"), "{args:?}: {}", run.stderr);
        }
    }
    assert!(!d.join("out").exists() && !d.join("report.html").exists());
}

#[test]
fn receipts_are_listed_shown_and_verified_against_the_pinned_key_and_the_store() {
    let (store, vault_key, vault) = sealed_store();
    let d = store.path();
    let root = store.root_arg();
    let kept = d.join("receipts");
    std::fs::create_dir(&kept).unwrap();
    let reader = vault_store::StoreReader::open(&store.root()).unwrap();
    std::fs::write(kept.join("s1.json"), reader.receipt("s1").unwrap().to_file_bytes()).unwrap();
    let kept_arg = kept.display().to_string();

    let run = ok(d, &["receipts", "list", "--receipts", &kept_arg, "--vault-key", &vault_key]);
    assert!(run.stdout.starts_with("s1  ") && run.stderr.contains("1 receipt(s) in"), "{}{}", run.stdout, run.stderr);
    let run = ok(d, &["receipts", "show", "--receipts", &kept_arg, "--vault-key", &vault_key, "s1"]);
    assert!(run.stdout.contains("dataset") && run.stdout.contains("manifest_sha256"), "{}", run.stdout);
    let run = ok(d, &["receipts", "verify", "--receipts", &kept_arg, "--vault-key", &vault_key, "--store", &root]);
    assert!(run.stdout.contains("OK      s1") && run.stderr.contains("verify against vault key"), "{}{}", run.stdout, run.stderr);

    // A receipt the same vault signed for a snapshot this store does not hold (a lost disk, a
    // swapped one), and one a forger signed.
    let other = TestStore::new();
    seal_snapshot(&other, &vault, "s9", RETAINED, &TREE);
    std::fs::write(kept.join("s9.json"), vault_store::StoreReader::open(&other.root()).unwrap().receipt("s9").unwrap().to_file_bytes()).unwrap();
    let run = vaultctl(d, &["receipts", "verify", "--receipts", &kept_arg, "--vault-key", &vault_key, "--store", &root]);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert!(run.stdout.contains("FAILED") && run.stdout.contains("s9.json: the store has no receipt for it"), "{}", run.stdout);
    assert!(run.stderr.contains("1 of 2 receipt(s) do not verify"), "{}", run.stderr);
    ok(d, &["receipts", "verify", "--receipts", &kept_arg, "--vault-key", &vault_key]);

    let forger = signing_key();
    seal_snapshot(&other, &forger, "s8", RETAINED, &TREE);
    std::fs::write(kept.join("s8.json"), vault_store::StoreReader::open(&other.root()).unwrap().receipt("s8").unwrap().to_file_bytes()).unwrap();
    let run = vaultctl(d, &["receipts", "list", "--receipts", &kept_arg, "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(6), "{}", run.stderr);
    assert!(run.stdout.contains("s8.json  NOT VERIFIED: receipt signature does not verify"), "{}", run.stdout);
    let run = vaultctl(d, &["receipts", "show", "--receipts", &kept_arg, "--vault-key", &vault_key, "s8"]);
    assert!(!run.ok && run.stderr.contains("receipt signature does not verify"), "{}", run.stderr);
}

#[test]
fn restore_takes_latest_and_only_the_included_paths() {
    let (store, vault_key, vault) = sealed_store();
    let d = store.path();
    let root = store.root_arg();
    seal_snapshot_of(&store, &vault, "s2", Some(("db", 1_800_000_050)), RETAINED, &[("a", Item::File(b"alpha, the newer one")), ("d", Item::Dir), ("d/e", Item::File(b"echo 2"))]);
    seal_snapshot_of(&store, &vault, "s3", Some(("etc", 1_800_000_100)), RETAINED, &[("hosts", Item::File(b"127.0.0.1 localhost"))]);

    refused(d, &["restore", "--store", &root, "--snapshot", "latest", "--to", "all", "--vault-key", &vault_key], "`latest` of which dataset? The store holds db, etc: give --dataset");
    let run = ok(d, &["restore", "--store", &root, "--snapshot", "latest", "--dataset", "db", "--include", "d", "--to", "only-d", "--vault-key", &vault_key]);
    assert!(run.stdout.contains("s2") || run.stderr.contains("s2"), "{}{}", run.stdout, run.stderr);
    assert_eq!(tree_of(&d.join("only-d")), BTreeMap::from([("d/e".to_string(), "echo 2".to_string())]), "only d/ of the newest db snapshot");
    ok(d, &["restore", "--store", &root, "--snapshot", "s1", "--include", "./a", "--include", "link", "--to", "two", "--vault-key", &vault_key]);
    assert_eq!(tree_of(&d.join("two")), BTreeMap::from([("a".to_string(), "alpha: kept whole".to_string()), ("link".to_string(), "-> a".to_string())]));
    let run = vaultctl(d, &["restore", "--store", &root, "--snapshot", "s1", "--include", "d/nope", "--to", "none", "--vault-key", &vault_key]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("--include `d/nope` matches nothing in snapshot s1; nothing was written") && !d.join("none").exists(), "{}", run.stderr);
    refused(d, &["restore", "--store", &root, "--snapshot", "s1", "--include", "../etc", "--to", "x", "--vault-key", &vault_key], "without `..` or empty parts");
    refused(
        d,
        &["restore", "--store", &root, "--snapshot", "latest", "--dataset", "www", "--to", "x", "--vault-key", &vault_key],
        "no verified snapshot of dataset `www` in the store (the store holds: db, etc)",
    );
}

#[test]
fn with_json_an_error_is_one_json_line_with_its_class_and_exit_code() {
    let dir = setup();
    let d = dir.path();
    sign_bundle(d, "policy.toml", "p.bundle", &["a"]);
    let cases: [(&[&str], &str, i32, &str); 4] = [
        (&["--json", "policy", "verify", "--root", "root.toml", "p.bundle"], "refused", 3, "threshold not met for root v1"),
        (&["policy", "verify", "--json", "--root", "root.toml", "nope.bundle"], "failed", 1, "nope.bundle"),
        (&["--json", "policy", "verify", "--root", "root.toml"], "usage", 2, "the following required arguments were not provided"),
        (&["--json", "policy", "sign", "--root", "root.toml", "--key", "a.pub", "policy.toml", "--out", "q.bundle"], "usage", 2, "this is a public key"),
    ];
    for (args, class, code, message) in cases {
        let run = vaultctl(d, args);
        assert_eq!(run.code, Some(code), "{args:?}: {}", run.stderr);
        let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).unwrap_or_else(|e| panic!("{args:?}: stderr is not one JSON value ({e}): {}", run.stderr));
        assert_eq!(error["error"]["class"], class, "{args:?}: {error}");
        assert_eq!(error["error"]["exit_code"], code, "{args:?}: {error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(message), "{args:?}: {error}");
        assert!(run.stdout.is_empty(), "{args:?}: stdout holds only a command's own JSON: {}", run.stdout);
    }
}

#[test]
fn with_json_every_command_prints_one_json_value() {
    let dir = setup();
    let d = dir.path();
    let json = |args: &[&str]| -> serde_json::Value {
        let run = ok(d, &[&["--json"], args].concat());
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON value ({e}): {}", run.stdout))
    };
    assert!(json(&["key", "gen", "--out", "dave"])["public_key"].as_str().unwrap().starts_with("ed25519:"));
    assert_eq!(json(&["key", "show", "dave.key"])["key_id"].as_str().unwrap().len(), 64);
    assert_eq!(json(&["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--admin", "a.pub", "--admin", "b.pub", "--out", "r2.toml"])["admins"], serde_json::json!(["a", "b"]));
    assert_eq!(json(&["policy", "sign", "--root", "root.toml", "--key", "a.key", "--issued", ISSUED, "policy.toml", "--out", "p.bundle"])["signatures"], 1);
    assert_eq!(json(&["policy", "sign", "--root", "root.toml", "--key", "b.key", "p.bundle", "--out", "p.bundle"])["signatures"], 2);
    let verified = json(&["policy", "verify", "--root", "root.toml", "--at", "2026-11-25T00:00:00Z", "p.bundle"]);
    assert_eq!((verified["verified"].as_bool(), verified["policy"]["version"].as_u64()), (Some(true), Some(3)), "{verified}");
    let schedule = json(&["schedule", "--policy", "p.bundle", "--root", "root.toml", "--from", "2026-11-28T23:00:00Z", "--days", "8"]);
    assert_eq!((schedule["open_until"].as_str(), schedule["openings"].as_array().map(Vec::len)), (Some("2026-11-29T01:00:00Z"), Some(2)), "{schedule}");
    assert_eq!(json(&["policy", "payload", "p.bundle", "--out", "p.payload"])["namespace"], "airgap-vault/policy-bundle/v1");
    // A stick is checked at today's date.
    write_policy_for_today(d, "today.toml", 3);
    sign_bundle_for_today(d, "today.toml", "today.bundle", &["a", "b"]);
    assert_eq!(json(&["usb", "write", "--root", "root.toml", "today.bundle", "--out", "stick.img"])["verified"], true);
    json(&["order", "new", "--root", "root.toml", "--kind", "hold", "--serial", "1", "--snapshot", "s1", "--reason", "legal hold", "--out", "hold.order"]);
    assert_eq!(json(&["order", "sign", "--root", "root.toml", "--key", "a.key", "hold.order", "--out", "hold.order"])["signatures"], 1);
    assert_eq!(json(&["order", "show", "hold.order"])["order"]["kind"], "hold");
    assert!(json(&["media", "init", "--out", "medium.img", "--size", "64MiB", "--label", "offsite-1"])["medium_id"].is_string());
    assert!(json(&["generate", "--out", "gen"])["man"].is_string());
}

#[test]
fn one_file_system_keeps_a_mount_point_empty() {
    if !test_net::is_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let dir = profile_setup("");
    let d = dir.path();
    let mnt = d.join("src/mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(mounted.success());
    std::fs::write(mnt.join("other-fs.dat"), b"on another file system").unwrap();
    let crossing = vaultctl_env(d, &["push", "--profile", "db", "--dry-run"], &[]);
    let staying = vaultctl_env(d, &["push", "--profile", "db", "--dry-run", "--one-file-system"], &[]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(crossing.stdout.contains("4 files") && crossing.stdout.contains("0 directories on other file systems"), "{}", crossing.stdout);
    assert!(staying.stdout.contains("3 files") && staying.stdout.contains("1 directories on other file systems"), "{}", staying.stdout);
}
