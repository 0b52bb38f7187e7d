//! The gatekeeper's policy path as a black box: a bundle file in, events on stdout, the
//! state directory changed only by an accepted bundle.

use std::path::{Path, PathBuf};
use std::process::Command;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::keys::SigningKey;
use vault_core::policy::bundle::{Envelope, Payload};
use vault_core::policy::root::{Admin, Caps, TrustRoot};
use vault_core::policy::Policy;
use vault_core::units::{Duration, Timestamp};

fn new_key() -> SigningKey {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    SigningKey::from_pkcs8(der.as_ref()).unwrap()
}

fn root_of(version: u64, keys: &[&SigningKey]) -> TrustRoot {
    TrustRoot {
        vault_id: "vault-01".into(),
        version,
        threshold: 2,
        export_threshold: 2,
        admins: keys.iter().enumerate().map(|(i, k)| Admin::raw(format!("admin{version}-{i}"), k.public_key())).collect(),
        caps: Caps::default(),
    }
}

fn now() -> Timestamp {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    Timestamp::from_unix(secs).unwrap()
}

fn policy(version: u64) -> Policy {
    let issued = now().saturating_sub(Duration::from_secs(60).unwrap());
    Policy::from_toml(&format!(
        r#"
vault_id = "vault-01"
version = {version}
issued = "{issued}"
expires = "{}"
[network]
interface = "eth0"
address = "192.0.2.10/24"
port = 7400
[[window]]
days = ["sun"]
start = "03:00"
duration = "1h"
"#,
        issued.saturating_add(Duration::from_secs(30 * 86_400).unwrap())
    ))
    .unwrap()
}

fn bundle(policy: Policy, signed_for: &TrustRoot, new_root: Option<TrustRoot>, signers: &[&SigningKey]) -> Vec<u8> {
    let mut envelope = Envelope::new(&Payload { signed_for_root: signed_for.digest(), policy, new_root });
    for key in signers {
        envelope.sign(key).unwrap();
    }
    envelope.to_bytes()
}

struct Vault {
    dir: tempfile::TempDir,
}

impl Vault {
    fn new(root: &TrustRoot) -> Vault {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.toml"), root.to_toml()).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        Vault { dir }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn stick_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Runs `gatekeeper apply-bundle`; returns success and the parsed event lines.
    fn apply(&self, bundle: &Path) -> (bool, Vec<serde_json::Value>) {
        let out =
            Command::new(env!("CARGO_BIN_EXE_gatekeeper")).arg("--root").arg(self.dir.path().join("root.toml")).arg("--state").arg(self.state_dir()).arg("apply-bundle").arg(bundle).output().unwrap();
        let events = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (out.status.success(), events)
    }

    /// Every file in the state directory with its bytes, to show a refusal changed nothing.
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(self.state_dir()).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())).collect();
        files.sort();
        files
    }
}

#[test]
fn an_accepted_bundle_is_persisted_and_announced() {
    let (a, b, c) = (new_key(), new_key(), new_key());
    let root = root_of(1, &[&a, &b, &c]);
    let vault = Vault::new(&root);
    let stick = vault.stick_file("policy.bundle", &bundle(policy(4), &root, None, &[&a, &c]));
    let (ok, events) = vault.apply(&stick);
    assert!(ok, "{events:?}");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "policy_accepted");
    assert_eq!(events[0]["seq"], 1);
    assert_eq!(events[0]["version"], 4);
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(vault.state_dir().join("state.json")).unwrap()).unwrap();
    assert_eq!(state["accepted_version"], 4);
    assert_eq!(std::fs::read(vault.state_dir().join("accepted.bundle")).unwrap(), std::fs::read(&stick).unwrap());
}

#[test]
fn refusals_leave_the_state_untouched() {
    let (a, b, c) = (new_key(), new_key(), new_key());
    let root = root_of(1, &[&a, &b, &c]);
    let vault = Vault::new(&root);
    let v5 = bundle(policy(5), &root, None, &[&a, &b]);
    let (ok, _) = vault.apply(&vault.stick_file("v5.bundle", &v5));
    assert!(ok);
    let before = vault.snapshot();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("under-threshold", bundle(policy(6), &root, None, &[&b]), "threshold not met for root v1: 1 valid"),
        ("rollback", bundle(policy(3), &root, None, &[&a, &b]), "rollback: version 3 <= accepted 5"),
        ("same version, other bytes", bundle(policy(5), &root, None, &[&a, &c]), "rollback: version 5 <= accepted 5"),
        ("garbage", b"\x00\x01garbage".to_vec(), "malformed bundle"),
        ("huge", vec![b' '; 2 << 20], "over the limit of 1048576"),
    ];
    for (name, bytes, reason) in cases {
        let (ok, events) = vault.apply(&vault.stick_file(name, &bytes));
        assert!(!ok, "{name} was accepted");
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0]["event"], "policy_refused");
        let said = events[0]["reason"].as_str().unwrap();
        assert!(said.contains(reason), "{name}: expected `{reason}` in `{said}`");
        assert_eq!(vault.snapshot(), before, "{name} changed the state directory");
    }
    // The very bytes in force, presented again (a stick left in): nothing to do, and not an
    // error (a fresh `policy(5)` may be issued a second later, so these are v5's own bytes).
    let (ok, events) = vault.apply(&vault.stick_file("replay", &v5));
    assert!(ok, "re-applying the policy in force is not an error: {events:?}");
    assert_eq!((events.len(), &events[0]["event"], &events[0]["version"]), (1, &serde_json::json!("policy_unchanged"), &serde_json::json!(5)), "{events:?}");
    assert_eq!(vault.snapshot(), before, "re-applying changed the state directory");
}

#[test]
fn links_and_device_files_on_the_stick_are_refused() {
    let (a, b) = (new_key(), new_key());
    let root = root_of(1, &[&a, &b]);
    let vault = Vault::new(&root);
    let real = vault.stick_file("real.bundle", &bundle(policy(2), &root, None, &[&a, &b]));
    let link = vault.dir.path().join("link.bundle");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (ok, events) = vault.apply(&link);
    assert!(!ok);
    assert!(events[0]["reason"].as_str().unwrap().contains("link.bundle"), "{events:?}");
    let (ok, events) = vault.apply(Path::new("/dev/zero"));
    assert!(!ok);
    assert!(events[0]["reason"].as_str().unwrap().contains("not a regular file"), "{events:?}");
    assert!(vault.snapshot().is_empty());
}

#[test]
fn rotation_is_persisted_and_then_only_the_new_keys_count() {
    let (a, b) = (new_key(), new_key());
    let (x, y) = (new_key(), new_key());
    let root1 = root_of(1, &[&a, &b]);
    let root2 = root_of(2, &[&x, &y]);
    let vault = Vault::new(&root1);
    let rotation = bundle(policy(2), &root1, Some(root2.clone()), &[&a, &b, &x, &y]);
    let (ok, events) = vault.apply(&vault.stick_file("rotate.bundle", &rotation));
    assert!(ok, "{events:?}");
    assert_eq!(events[0]["event"], "root_rotated");
    assert_eq!(events[0]["to_version"], 2);

    let (ok, events) = vault.apply(&vault.stick_file("old-keys.bundle", &bundle(policy(3), &root2, None, &[&a, &b])));
    assert!(!ok);
    assert!(events[0]["reason"].as_str().unwrap().contains("threshold not met for root v2"), "{events:?}");
    let (ok, events) = vault.apply(&vault.stick_file("new-keys.bundle", &bundle(policy(3), &root2, None, &[&x, &y])));
    assert!(ok, "{events:?}");
}

#[test]
fn what_is_kept_is_what_was_read_even_if_the_stick_changes() {
    let (a, b) = (new_key(), new_key());
    let root = root_of(1, &[&a, &b]);
    let vault = Vault::new(&root);
    let original = bundle(policy(2), &root, None, &[&a, &b]);
    let stick = vault.stick_file("policy.bundle", &original);
    assert!(vault.apply(&stick).0);
    std::fs::write(&stick, bundle(policy(9), &root, None, &[&a])).unwrap();
    assert_eq!(std::fs::read(vault.state_dir().join("accepted.bundle")).unwrap(), original);
}

#[test]
fn a_crash_between_bundle_and_state_is_completed_by_the_same_stick() {
    let (a, b) = (new_key(), new_key());
    let root = root_of(1, &[&a, &b]);
    let vault = Vault::new(&root);
    assert!(vault.apply(&vault.stick_file("v5.bundle", &bundle(policy(5), &root, None, &[&a, &b]))).0);
    // The bundle was written, then the power went before state.json named it.
    let v6 = bundle(policy(6), &root, None, &[&a, &b]);
    std::fs::write(vault.state_dir().join("accepted.bundle"), &v6).unwrap();
    let (ok, events) = vault.apply(&vault.stick_file("v6.bundle", &v6));
    assert!(ok, "the same stick must complete the apply: {events:?}");
    assert_eq!(events[0]["event"], "policy_accepted");
    assert_eq!(events[0]["version"], 6);
    // And now it is in force: the same stick again is nothing to do.
    let (ok, events) = vault.apply(&vault.stick_file("v6-again.bundle", &v6));
    assert!(ok, "{events:?}");
    assert_eq!(events[0]["event"], "policy_unchanged", "{events:?}");
}

/// Review (suspected): a power cut between the bundle's write and the state's dropped the
/// policy until the stick came back. The next start now completes the apply, verifying the
/// bundle again in full; one that no longer verifies is not obeyed.
#[test]
fn a_crash_between_bundle_and_state_is_completed_at_the_next_start() {
    use gatekeeper::events::EventLog;
    use gatekeeper::policy_store::{finish_interrupted_apply, load_accepted};
    use vault_core::policy::bundle::JudgedAt;
    let (a, b) = (new_key(), new_key());
    let root = root_of(1, &[&a, &b]);
    let vault = Vault::new(&root);
    assert!(vault.apply(&vault.stick_file("v5.bundle", &bundle(policy(5), &root, None, &[&a, &b]))).0);
    std::fs::write(vault.state_dir().join("accepted.bundle"), bundle(policy(6), &root, None, &[&a, &b])).unwrap();
    assert!(load_accepted(&root, &vault.state_dir()).is_err(), "as it was: the state names v5, the bundle is v6");
    let done = finish_interrupted_apply(&root, &vault.state_dir(), JudgedAt::trusted(now()), &mut EventLog::default()).unwrap();
    assert_eq!(done.map(|v| v.policy.version), Some(6));
    assert_eq!(load_accepted(&root, &vault.state_dir()).unwrap().map(|p| p.version), Some(6));
    assert!(finish_interrupted_apply(&root, &vault.state_dir(), JudgedAt::trusted(now()), &mut EventLog::default()).unwrap().is_none(), "nothing left to complete");
    // A newer bundle that does not verify (one signature of two) is not completed: fail closed.
    std::fs::write(vault.state_dir().join("accepted.bundle"), bundle(policy(7), &root, None, &[&a])).unwrap();
    let err = finish_interrupted_apply(&root, &vault.state_dir(), JudgedAt::trusted(now()), &mut EventLog::default()).unwrap_err();
    assert!(err.to_string().contains("threshold not met"), "{err}");
    assert!(load_accepted(&root, &vault.state_dir()).is_err());
}

/// Issue 13, item 3: re-imaged with a new root (the way out of a suspected admin-key
/// compromise), the vault stops obeying the policy the old root's admins signed, and a policy
/// signed for the new root is taken.
#[test]
fn a_re_imaged_root_is_obeyed_and_the_old_roots_policy_dropped() {
    let (a, b, c) = (new_key(), new_key(), new_key());
    let old_root = root_of(1, &[&a, &b, &c]);
    let vault = Vault::new(&old_root);
    let (ok, events) = vault.apply(&vault.stick_file("old.bundle", &bundle(policy(4), &old_root, None, &[&a, &b])));
    assert!(ok, "{events:?}");
    let status = |vault: &Vault| {
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper")).arg("--root").arg(vault.dir.path().join("root.toml")).arg("--state").arg(vault.state_dir()).arg("status").output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    };
    assert!(status(&vault).1.contains("policy v4:"), "{:?}", status(&vault));

    // The image is rebuilt with new admins' keys: the stored policy is not theirs.
    let (x, y, z) = (new_key(), new_key(), new_key());
    let new_root = root_of(2, &[&x, &y, &z]);
    std::fs::write(vault.dir.path().join("root.toml"), new_root.to_toml()).unwrap();
    let (ok, said) = status(&vault);
    assert!(!ok, "{said}");
    for part in [
        "policy v4 accepted earlier does not verify under the trust root in force (wrong trust root: bundle was signed for root",
        "present a stick with a policy signed for this root, version above 4",
    ] {
        assert!(said.contains(part), "`{part}` in {said}");
    }
    // The new root's admins sign the next version: taken.
    let (ok, events) = vault.apply(&vault.stick_file("new.bundle", &bundle(policy(5), &new_root, None, &[&x, &z])));
    assert!(ok, "{events:?}");
    assert!(status(&vault).1.contains("policy v5:"), "{:?}", status(&vault));
}
