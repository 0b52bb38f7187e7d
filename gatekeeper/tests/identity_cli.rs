//! `gatekeeper identity` as an operator runs it, without root: a mistyped --state is refused
//! and makes nothing; the key is made only when asked (`--create`), and printed the same after.

use std::path::Path;
use std::process::{Command, Output};

fn identity(state: &Path, create: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
    cmd.arg("--state").arg(state).arg("identity");
    if create {
        cmd.arg("--create");
    }
    cmd.output().unwrap()
}

#[test]
fn identity_refuses_a_state_without_a_key_unless_asked_to_create_one() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("stat");
    let out = identity(&typo, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for part in [
        &format!("gatekeeper: vault identity key {}: not there (no such --state directory)", typo.join("vault-identity.key").display()),
        "is --state the vault's state directory (/data/state on the appliance, where the daemon makes the key on first start)?",
        &format!("`gatekeeper --state {} identity --create` makes its key", typo.display()),
    ] {
        assert!(stderr.contains(part), "`{part}` in {stderr}");
    }
    assert!(out.stdout.is_empty() && !typo.exists(), "nothing printed, nothing made");

    // A directory that exists but holds no key: refused the same way, and left empty.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = identity(&empty, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{}: not there: is --state the vault's state directory", empty.join("vault-identity.key").display())), "{stderr}");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // Asked for: made once, then the same key every time, with or without --create.
    let state = dir.path().join("state");
    let made = identity(&state, true);
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let key = String::from_utf8(made.stdout).unwrap();
    assert!(key.starts_with("ed25519:"), "{key}");
    for create in [false, true] {
        let again = identity(&state, create);
        assert_eq!((again.status.code(), String::from_utf8(again.stdout).unwrap()), (Some(0), key.clone()), "--create {create}");
    }
}
