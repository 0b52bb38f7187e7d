//! vaultctl as an operator uses it: each command's success and its refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn vaultctl(dir: &Path, args: &[&str]) -> Run {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_vaultctl")).args(args).current_dir(dir).output().unwrap();
    Run { ok: status.success(), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
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

const POLICY: &str = r#"
vault_id = "vault-01"
version = VERSION
expires = "2027-01-31T00:00:00Z"
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

fn write_policy(dir: &Path, name: &str, version: u64) {
    let pusher = std::fs::read_to_string(dir.join("pusher.pub")).unwrap();
    let text = POLICY.replace("VERSION", &version.to_string()).replace("PUSHER", pusher.trim());
    std::fs::write(dir.join(name), text).unwrap();
}

/// The first signer starts the bundle from the policy (issued at a fixed time); the others
/// each add their signature to it.
fn sign_bundle(dir: &Path, policy: &str, out: &str, signers: &[&str]) {
    for (i, signer) in signers.iter().enumerate() {
        let key = format!("{signer}.key");
        let mut args = vec!["policy", "sign", "--root", "root.toml", "--key", &key];
        if i == 0 {
            args.extend(["--issued", "2026-11-20T00:00:00Z", policy]);
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
    refused(dir.path(), &["root", "init", "--vault-id", "v", "--threshold", "3", "--admin", "a.pub", "--admin", "b.pub", "--out", "r.toml"], "threshold 3 must be between 1 and the number of admin keys (2)");
    std::fs::copy(dir.path().join("a.pub"), dir.path().join("a2.pub")).unwrap();
    refused(dir.path(), &["root", "init", "--vault-id", "v", "--threshold", "1", "--admin", "a.pub", "--admin", "a2.pub", "--out", "r.toml"], "is listed more than once (as `a` and `a2`)");
}

#[test]
fn sign_and_verify_with_state_and_time() {
    let dir = setup();
    let d = dir.path();
    refused(d, &["policy", "sign", "--key", "a.key", "policy.toml", "--out", "p.bundle"], "--root is needed to start a bundle");
    refused(d, &["policy", "sign", "--root", "root.toml", "--key", "pusher.key", "policy.toml", "--out", "p.bundle"], "is not an admin of root v1");
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
}

#[test]
fn a_policy_beyond_the_caps_is_refused_at_signing() {
    let dir = setup();
    let d = dir.path();
    let text = std::fs::read_to_string(d.join("policy.toml")).unwrap().replace("duration = \"3h\"", "duration = \"5h\"");
    std::fs::write(d.join("policy.toml"), text).unwrap();
    refused(d, &["policy", "sign", "--root", "root.toml", "--key", "a.key", "policy.toml", "--out", "p.bundle"], "cap exceeded: window[0] length is 5h, the trust root allows at most 4h");
}

#[test]
fn root_rotation_through_the_cli() {
    let dir = setup();
    let d = dir.path();
    for name in ["x", "y"] {
        ok(d, &["key", "gen", "--out", name]);
    }
    ok(d, &["root", "init", "--version", "2", "--vault-id", "vault-01", "--threshold", "2", "--admin", "x.pub", "--admin", "y.pub", "--out", "root2.toml"]);
    ok(d, &["policy", "sign", "--root", "root.toml", "--new-root", "root2.toml", "--issued", "2026-11-20T00:00:00Z", "--key", "a.key", "policy.toml", "--out", "rot.bundle"]);
    for signer in ["b", "x"] {
        ok(d, &["policy", "sign", "--root", "root.toml", "--key", &format!("{signer}.key"), "rot.bundle", "--out", "rot.bundle"]);
    }
    // Old threshold met, new one not yet.
    refused(d, &["policy", "verify", "--root", "root.toml", "--at", "2026-11-25T00:00:00Z", "rot.bundle"], "threshold not met for new root v2: 1 valid");
    ok(d, &["policy", "sign", "--root", "root.toml", "--key", "y.key", "rot.bundle", "--out", "rot.bundle"]);
    let run = ok(d, &["policy", "verify", "--root", "root.toml", "--at", "2026-11-25T00:00:00Z", "rot.bundle"]);
    assert!(run.stdout.contains("rotates the trust root to v2 (2 of 2 admins)"), "{}", run.stdout);
}
