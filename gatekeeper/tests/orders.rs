//! Orders end to end as the admins and the vault see them, with the real tools: `vaultctl
//! order new` and `sign` on the admins' side, `gatekeeper apply-order` on the vault's (the same
//! verification the daemon runs for an order read from a stick), its events on stdout and the
//! state file changed only by an accepted order.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::vaultctl_bin;

struct Admins {
    dir: tempfile::TempDir,
}

impl Admins {
    /// Three admin keys made by `vaultctl key gen`, and a root of them needing two.
    fn new() -> Admins {
        let dir = tempfile::tempdir().unwrap();
        for admin in ["alice", "bob", "carol"] {
            run(Command::new(vaultctl_bin()).args(["key", "gen", "--out"]).arg(dir.path().join(admin)));
        }
        let mut init = Command::new(vaultctl_bin());
        init.args(["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--out"]).arg(dir.path().join("root.toml"));
        for admin in ["alice", "bob", "carol"] {
            init.arg("--admin").arg(dir.path().join(format!("{admin}.pub")));
        }
        run(&mut init);
        // The vault's store has the one snapshot the holds name.
        std::fs::create_dir_all(dir.path().join("store/snapshots").join(SNAPSHOT)).unwrap();
        Admins { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root.toml")
    }

    /// `vaultctl order new` with `args`, then a signature by each of `signers`.
    fn order(&self, name: &str, args: &[&str], signers: &[&str]) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.order"));
        run(Command::new(vaultctl_bin()).args(["order", "new", "--root"]).arg(self.root()).args(args).arg("--out").arg(&path));
        for signer in signers {
            run(Command::new(vaultctl_bin()).args(["order", "sign", "--root"]).arg(self.root()).arg("--key").arg(self.dir.path().join(format!("{signer}.key"))).arg(&path).arg("--out").arg(&path));
        }
        path
    }

    /// `gatekeeper apply-order`: its exit, and the event it printed.
    fn apply(&self, order: &Path) -> (bool, serde_json::Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .arg("--store")
            .arg(self.dir.path().join("store"))
            .arg("apply-order")
            .arg(order)
            .output()
            .unwrap();
        let event = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).next_back().expect("an event");
        (out.status.success(), event)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.path().join("state/state.json")).unwrap()).unwrap()
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

const SNAPSHOT: &str = "20261120T010000Z-pg-1a2b3c4d";

#[test]
fn one_admin_holds_the_quorum_purges_after_the_cooling_off_and_one_admin_vetoes() {
    let admins = Admins::new();
    let hold = admins.order("hold", &["--kind", "hold", "--serial", "1", "--snapshot", SNAPSHOT, "--reason", "legal hold, ticket 4711"], &["carol"]);
    let (ok, event) = admins.apply(&hold);
    assert!(ok, "{event}");
    assert_eq!((event["event"].as_str(), event["kind"].as_str(), event["signers"].clone()), (Some("order_accepted"), Some("hold"), serde_json::json!(["carol"])));
    assert_eq!(admins.state()["orders"]["held_snapshots"], serde_json::json!([SNAPSHOT]));
    // The same hold again is a replay.
    let (ok, event) = admins.apply(&hold);
    assert!(!ok);
    assert!(event["reason"].as_str().unwrap().contains("rollback: hold order serial 1 <= accepted 1"), "{event}");

    // A purge needs the quorum; with it, it waits 72 hours.
    let alone = admins.order("purge-alone", &["--kind", "purge", "--serial", "1", "--dataset", "db/pg", "--reason", "decommissioned"], &["alice"]);
    let (ok, event) = admins.apply(&alone);
    assert!(!ok);
    assert!(event["reason"].as_str().unwrap().contains("threshold not met for a purge order under root v1: 1 valid signature(s) from distinct admin keys, need 2"), "{event}");
    let purge = admins.order("purge", &["--kind", "purge", "--serial", "1", "--dataset", "db/pg", "--reason", "decommissioned"], &["alice", "bob"]);
    let (ok, event) = admins.apply(&purge);
    assert!(ok, "{event}");
    let executes_at = vault_core::units::Timestamp::parse(event["executes_at"].as_str().unwrap()).unwrap();
    let wait = executes_at.unix() - vault_io::clock_now().unix();
    assert!((72 * 3600 - 60..=72 * 3600).contains(&wait), "executes in {wait} s");
    let id = event["order"].as_str().unwrap().to_string();
    assert_eq!(admins.state()["orders"]["pending_purges"][0]["id"], id);
    // `order show` names it by the same id, for whoever writes the veto.
    let shown = String::from_utf8(run(Command::new(vaultctl_bin()).args(["order", "show"]).arg(&purge)).stdout).unwrap();
    assert!(shown.starts_with(&format!("purge order 1 for vault vault-01 (id {id})")) && shown.contains("dataset db/pg"), "{shown}");

    // Any one admin stops it within the cooling-off.
    let veto = admins.order("veto", &["--kind", "veto", "--serial", "1", "--vetoes", &id, "--reason", "not agreed with legal"], &["carol"]);
    let (ok, event) = admins.apply(&veto);
    assert!(ok, "{event}");
    assert!(admins.state()["orders"].get("pending_purges").is_none(), "{}", admins.state());
    // And what a stranger signed changes nothing.
    run(Command::new(vaultctl_bin()).args(["key", "gen", "--out"]).arg(admins.dir.path().join("mallory")));
    let stranger = admins.dir.path().join("stranger.order");
    run(Command::new(vaultctl_bin())
        .args(["order", "new", "--root"])
        .arg(admins.root())
        .args(["--kind", "release", "--serial", "1", "--snapshot", SNAPSHOT, "--reason", "x"])
        .arg("--out")
        .arg(&stranger));
    let refused = Command::new(vaultctl_bin())
        .args(["order", "sign", "--root"])
        .arg(admins.root())
        .arg("--key")
        .arg(admins.dir.path().join("mallory.key"))
        .arg(&stranger)
        .arg("--out")
        .arg(&stranger)
        .output()
        .unwrap();
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("is not an admin of root v1"));
    let before = admins.state();
    let (ok, _) = admins.apply(&stranger);
    assert!(!ok);
    assert_eq!(admins.state(), before);
}

/// One admin key (below the threshold) tries to grow the vault's state with holds on made-up
/// snapshot ids (review finding 2): each is refused, naming the snapshot, and the state stays
/// one the vault reads back.
#[test]
fn one_admin_cannot_hold_made_up_snapshots_or_grow_the_state_past_what_loads() {
    let admins = Admins::new();
    let made_up: Vec<String> = (0..1000).map(|i| format!("20261120T010000Z-pg-{i:08x}")).collect();
    for serial in 1..=5 {
        let mut args = vec!["--kind".to_string(), "hold".into(), "--serial".into(), serial.to_string(), "--reason".into(), "grow the state".into()];
        for id in &made_up {
            args.extend(["--snapshot".to_string(), id.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, event) = admins.apply(&admins.order(&format!("grow{serial}"), &args, &["carol"]));
        assert!(!ok, "{event}");
        assert!(event["reason"].as_str().unwrap().contains("the vault has no snapshot `20261120T010000Z-pg-00000000`"), "{event}");
    }
    assert!(!admins.dir.path().join("state/state.json").exists(), "nothing refused was written");
    // The real one is held, and the state loads.
    let (ok, event) = admins.apply(&admins.order("hold", &["--kind", "hold", "--serial", "6", "--snapshot", SNAPSHOT, "--reason", "legal hold"], &["carol"]));
    assert!(ok, "{event}");
    let status = Command::new(env!("CARGO_BIN_EXE_gatekeeper")).arg("--root").arg(admins.root()).arg("--state").arg(admins.dir.path().join("state")).arg("status").output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}
