//! Exports end to end with the real tools, on a host: `vaultctl media init` prepares a disk
//! image, admins sign an export order with `vaultctl order`, `gatekeeper apply-order` accepts
//! it (with the root's export threshold, below a purge's), `gatekeeper export` writes the export
//! onto the medium's files (a directory here: the host has no vfat; QEMU mounts the real disk),
//! and on the other side `vaultctl export verify` checks it without a secret, stock `age`
//! decrypts it, and `vaultctl restore --export` gives back the snapshot byte for byte.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use support::vaultctl_bin;
use vault_core::keys::SigningKey;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn gatekeeper(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatekeeper"));
        cmd.arg("--root").arg(self.path("root.toml")).arg("--state").arg(self.path("state")).arg("--store").arg(self.path("store"));
        cmd
    }

    fn vaultctl(&self) -> Command {
        Command::new(vaultctl_bin())
    }

    fn order(&self, name: &str, args: &[&str], signers: &[&str]) -> PathBuf {
        let path = self.path(&format!("{name}.order"));
        run(self.vaultctl().args(["order", "new", "--root"]).arg(self.path("root.toml")).args(args).arg("--out").arg(&path));
        for signer in signers {
            run(self.vaultctl().args(["order", "sign", "--root"]).arg(self.path("root.toml")).arg("--key").arg(self.path(&format!("{signer}.key"))).arg(&path).arg("--out").arg(&path));
        }
        path
    }

    fn last_event(out: &Output) -> serde_json::Value {
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).next_back().expect("an event")
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

/// Admins, a root that lets one admin order an export but needs two for a purge, a vault with
/// three nights of `db01/pg` sealed and an audit log, and a medium made by `vaultctl media init`.
fn site() -> (Site, String, String) {
    let site = Site { dir: tempfile::tempdir().unwrap() };
    for admin in ["alice", "bob", "carol"] {
        run(site.vaultctl().args(["key", "gen", "--out"]).arg(site.path(admin)));
    }
    let mut init = site.vaultctl();
    init.args(["root", "init", "--vault-id", "vault-01", "--threshold", "2", "--export-threshold", "1", "--out"]).arg(site.path("root.toml"));
    for admin in ["alice", "bob", "carol"] {
        init.arg("--admin").arg(site.path(&format!("{admin}.pub")));
    }
    run(&mut init);
    let vault_key = String::from_utf8(run(site.gatekeeper().args(["identity", "--create"])).stdout).unwrap().trim().to_string();
    let key = SigningKey::from_pkcs8(&std::fs::read(site.path("state").join("vault-identity.key")).unwrap()).unwrap();
    let (store, _) = vault_store::Store::open(&site.path("store")).unwrap();
    for night in 0..3 {
        test_net::seal_nightly(&store, &key, ("db01", "pg"), 1_800_000_000 + night * 86_400, 1_900_000_000);
    }
    let (mut log, _) = vault_store::audit::AuditLog::open(&site.path("store"), &key.public_key()).unwrap();
    log.append(&[br#"{"event":"test"}"#.to_vec()]).unwrap();
    log.sign(&key).unwrap();

    // The medium as `vaultctl media init` makes it; its files copied out with mtools (the
    // host's kernel may have no vfat), as the vault would see them mounted.
    let image = site.path("medium.img");
    let id = String::from_utf8(run(site.vaultctl().args(["media", "init", "--label", "weekly-a", "--size", "64MiB", "--out"]).arg(&image)).stdout).unwrap().trim().to_string();
    std::fs::create_dir(site.path("medium")).unwrap();
    run(Command::new("mcopy").arg("-i").arg(format!("{}@@1M", image.display())).arg("::/vault-medium.json").arg(site.path("medium")));
    (site, vault_key, id)
}

fn age_identity(site: &Site) -> String {
    run(Command::new("age-keygen").arg("-o").arg(site.path("identity.txt")));
    String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(site.path("identity.txt"))).stdout).unwrap().trim().to_string()
}

#[test]
fn one_admin_orders_an_export_the_vault_writes_it_and_it_restores_byte_for_byte_elsewhere() {
    let (site, vault_key, medium) = site();
    let recipient = age_identity(&site);

    // The root asks one signature of an export, two of a purge.
    let purge = site.order("purge", &["--kind", "purge", "--serial", "1", "--dataset", "db01/pg", "--reason", "one admin alone", "--valid-for", "10d"], &["alice"]);
    let out = site.gatekeeper().arg("apply-order").arg(&purge).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("need 2"), "{}", text(&out));
    let out = site
        .vaultctl()
        .args(["order", "new", "--root"])
        .arg(site.path("root.toml"))
        .args(["--kind", "hold", "--serial", "1", "--dataset", "db01/pg", "--medium", &medium, "--reason", "x", "--out"])
        .arg(site.path("wrong.order"))
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out).contains("belong to export orders; this is a hold"), "{}", text(&out));
    assert!(!site.path("wrong.order").exists());
    let export = site.order(
        "export",
        &["--kind", "export", "--serial", "1", "--dataset", "db01/pg", "--newest", "2", "--medium", &medium, "--recipient", &recipient, "--reason", "weekly off-site copy"],
        &["alice"],
    );
    let shown = text(&run(site.vaultctl().args(["order", "show"]).arg(&export)));
    assert!(shown.contains(&format!("onto medium {medium}")) && shown.contains(&format!("encrypted to {recipient}")) && shown.contains("newest 2 of each dataset"), "{shown}");
    let out = run(site.gatekeeper().arg("apply-order").arg(&export));
    assert_eq!(Site::last_event(&out)["kind"], "export");

    let out = run(site.gatekeeper().arg("export").arg("--medium").arg(site.path("medium")));
    let written = Site::last_event(&out);
    println!("{written}");
    assert_eq!(written["event"], "export_written");
    assert_eq!((written["medium_name"].as_str(), written["adopted"].as_bool(), written["snapshots"].as_array().map(Vec::len)), (Some("weekly-a"), Some(true), Some(2)));
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(site.path("state/state.json")).unwrap()).unwrap();
    assert!(state["orders"]["pending_exports"].is_null(), "carried out once: {state}");
    // Again: nothing is ordered for it any more, and that is said.
    let out = site.gatekeeper().arg("export").arg("--medium").arg(site.path("medium")).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("no export order names it"), "{}", text(&out));

    // The other side: verified without a secret, decrypted by stock age, restored.
    let verified = text(&run(site.vaultctl().args(["export", "verify", "--vault-key", &vault_key]).arg(site.path("medium"))));
    assert!(verified.contains("2 snapshot(s)") && verified.contains("every file as signed"), "{verified}");
    let export_dir = site.path("medium/vault-exports").join(written["export"].as_str().unwrap());
    let snapshot = written["snapshots"][1].as_str().unwrap().to_string();
    let encrypted = export_dir.join("store/snapshots").join(&snapshot).join("manifest.age");
    let plain = run(Command::new("age").arg("-d").arg("-i").arg(site.path("identity.txt")).arg(&encrypted)).stdout;
    assert_eq!(plain, std::fs::read(site.path("store/snapshots").join(&snapshot).join("manifest")).unwrap());
    let to = site.path("restored");
    let out =
        run(site.vaultctl().args(["restore", "--vault-key", &vault_key, "--snapshot", &snapshot, "--identity"]).arg(site.path("identity.txt")).arg("--export").arg(&export_dir).arg("--to").arg(&to));
    println!("{}", text(&out));
    let night: i64 = snapshot.rsplit('-').next().unwrap().parse().unwrap();
    assert_eq!(std::fs::read(to.join("own")).unwrap(), test_net::nightly_content("pg", night));
    assert_eq!(std::fs::read(to.join("shared")).unwrap(), test_net::NIGHTLY_SHARED);
    assert!(!std::fs::read_dir(site.dir.path()).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(".vaultctl-export-")), "the scratch store is gone");

    // The evidence it carries, read from the export alone: the audit log verified and a report.
    let export_store = export_dir.join("store");
    let log = text(&run(site.vaultctl().args(["audit", "verify", "--vault-key", &vault_key, "--store"]).arg(&export_store)));
    assert!(log.contains("audit log verified: 1 entries"), "{log}");
    run(site.vaultctl().args(["report", "--vault-key", &vault_key, "--store"]).arg(&export_store).arg("--out").arg(site.path("report.html")));
    assert!(std::fs::read_to_string(site.path("report.html")).unwrap().contains("<svg"));

    // Someone else's key cannot read it; the wrong vault key does not trust it.
    run(Command::new("age-keygen").arg("-o").arg(site.path("other.txt")));
    let out = site
        .vaultctl()
        .args(["restore", "--vault-key", &vault_key, "--snapshot", &snapshot, "--identity"])
        .arg(site.path("other.txt"))
        .arg("--export")
        .arg(&export_dir)
        .arg("--to")
        .arg(site.path("r2"))
        .output()
        .unwrap();
    assert!(!out.status.success() && text(&out).contains("is this the identity the export was encrypted to?"), "{}", text(&out));
    let stranger = text(&run(site.vaultctl().args(["key", "gen", "--out"]).arg(site.path("stranger"))));
    let stranger_key = stranger.lines().find(|l| l.starts_with("ed25519:")).unwrap_or_else(|| panic!("{stranger}")).trim().to_string();
    let out = site.vaultctl().args(["export", "verify", "--vault-key", &stranger_key]).arg(&export_dir).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("does not verify"), "{}", text(&out));

    // Not an export at all, and a restore from an export without its identity: said so.
    std::fs::create_dir(site.path("empty")).unwrap();
    let out = site.vaultctl().args(["export", "verify", "--vault-key", &vault_key]).arg(site.path("empty")).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("neither an export (no export.json) nor a medium with exports"), "{}", text(&out));
    let out = site.vaultctl().args(["restore", "--vault-key", &vault_key, "--snapshot", &snapshot, "--export"]).arg(&export_dir).arg("--to").arg(site.path("r3")).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("--identity"), "{}", text(&out));

    // A byte changed on the medium is named, file by file.
    let pack = test_net::files_under(&export_dir).into_iter().find(|p| p.to_string_lossy().ends_with(".pack.age")).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let out = site.vaultctl().args(["export", "verify", "--vault-key", &vault_key]).arg(&export_dir).output().unwrap();
    let said = text(&out);
    assert!(!out.status.success() && said.contains("PROBLEM store/packs/") && said.contains("do not match what the vault signed"), "{said}");
}

/// A policy with a rotation of `media`, signed by alice and bob and applied.
fn apply_rotation_policy(site: &Site, media: &[&str], recipient: &str) {
    let pusher = text(&run(site.vaultctl().args(["key", "gen", "--out"]).arg(site.path("db01"))));
    let pusher_key = pusher.lines().find(|l| l.starts_with("ed25519:")).unwrap().trim().to_string();
    let expires = vault_core::units::Timestamp::from_unix(vault_io::clock_now().unix() + 30 * 86_400).unwrap();
    let media: Vec<String> = media.iter().map(|m| format!("\"{m}\"")).collect();
    let toml = format!(
        "vault_id = \"vault-01\"\nversion = 1\nexpires = \"{expires}\"\n\n[network]\ninterface = \"eth0\"\naddress = \"192.0.2.10/24\"\nport = 7400\n\n\
         [[window]]\nfrom = \"2030-01-01T00:00:00Z\"\nuntil = \"2030-01-01T01:00:00Z\"\n\n\
         [[pusher]]\nname = \"db01\"\nkey = \"{pusher_key}\"\nquota = \"1GiB\"\nretain = \"30d\"\n\n\
         [rotation]\nmedia = [{}]\nevery = \"1d\"\nrecipients = [\"{recipient}\"]\ndatasets = [\"db01/pg\"]\nkeep = 1\nverify_share = 1\n",
        media.join(", ")
    );
    std::fs::write(site.path("policy.toml"), toml).unwrap();
    run(site
        .vaultctl()
        .args(["policy", "sign", "--root"])
        .arg(site.path("root.toml"))
        .arg("--key")
        .arg(site.path("alice.key"))
        .arg(site.path("policy.toml"))
        .arg("--out")
        .arg(site.path("policy.bundle")));
    run(site
        .vaultctl()
        .args(["policy", "sign", "--root"])
        .arg(site.path("root.toml"))
        .arg("--key")
        .arg(site.path("bob.key"))
        .arg(site.path("policy.bundle"))
        .arg("--out")
        .arg(site.path("policy.bundle")));
    run(site.gatekeeper().arg("apply-bundle").arg(site.path("policy.bundle")));
}

fn events_of(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).collect()
}

#[test]
fn a_rotation_medium_is_verified_when_it_returns_replaced_only_after_and_refused_when_tampered() {
    let (site, vault_key, medium) = site();
    let recipient = age_identity(&site);
    apply_rotation_policy(&site, &[&medium], &recipient);
    let exports = || -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(site.path("medium/vault-exports")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        ids.sort();
        ids
    };

    // First use: no order, the rotation names it; the newest night goes.
    let out = run(site.gatekeeper().arg("export").arg("--medium").arg(site.path("medium")));
    let first = Site::last_event(&out);
    assert_eq!((first["event"].as_str(), first["rotation"].as_bool(), first["snapshots"].as_array().map(Vec::len)), (Some("export_written"), Some(true), Some(1)), "{first}");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(site.path("state/state.json")).unwrap()).unwrap();
    assert!(state["last_rotation"].is_string(), "{state}");

    // It comes back: verified whole, a new export written, and only then the old one removed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = run(site.gatekeeper().arg("export").arg("--medium").arg(site.path("medium")));
    let events = events_of(&out);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, vec!["medium_verified", "export_written", "exports_removed"], "{events:?}");
    assert_eq!(events[0]["problems"], serde_json::json!([]), "{}", events[0]);
    assert_eq!(events[0]["exports"], serde_json::json!([first["export"]]));
    assert_eq!(events[2]["exports"], serde_json::json!([first["export"]]));
    assert_eq!(exports(), vec![events[1]["export"].as_str().unwrap().to_string()]);
    let verified = text(&run(site.vaultctl().args(["export", "verify", "--vault-key", &vault_key]).arg(site.path("medium"))));
    assert!(verified.contains("every file as signed"), "{verified}");

    // Tampered while away (one byte of a pack, and a file planted): refused with an alarm,
    // nothing overwritten, removed or added.
    let before = exports();
    let dir = site.path("medium/vault-exports").join(&before[0]);
    let pack = test_net::files_under(&dir).into_iter().find(|p| p.to_string_lossy().ends_with(".pack.age")).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[60] ^= 0x80;
    std::fs::write(&pack, &bytes).unwrap();
    std::fs::write(dir.join("store/README.txt"), b"run me").unwrap();
    let out = site.gatekeeper().arg("export").arg("--medium").arg(site.path("medium")).output().unwrap();
    assert!(!out.status.success());
    let events = events_of(&out);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, vec!["medium_verified", "alarm"], "{events:?}");
    let problems = events[0]["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains(".pack.age: hashes to")), "{problems:?}");
    assert!(problems.iter().any(|p| p.as_str().unwrap().contains("store/README.txt: is not in the signed manifest")), "{problems:?}");
    assert_eq!(events[1]["rule"], "medium_tampered");
    assert!(events[1]["detail"].as_str().unwrap().contains("nothing on it was overwritten or removed"), "{}", events[1]);
    assert_eq!(exports(), before);
    assert_eq!(std::fs::read(&pack).unwrap(), bytes, "the evidence is left as it came");

    // A medium sealed by another vault (same label copied onto it) is refused the same way.
    std::fs::write(&pack, {
        let mut b = bytes.clone();
        b[60] ^= 0x80;
        b
    })
    .unwrap();
    std::fs::remove_file(dir.join("store/README.txt")).unwrap();
    let stranger = SigningKey::from_pkcs8(ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap().as_ref()).unwrap();
    let label = vault_core::export::medium::MediumLabel::from_bytes(&std::fs::read(site.path("medium/vault-medium.json")).unwrap()).unwrap();
    std::fs::write(site.path("medium/vault-medium.seal"), vault_core::export::medium::MediumSeal::sign("vault-01", &label, vault_core::units::Timestamp::EPOCH, &stranger).to_file_bytes()).unwrap();
    let out = site.gatekeeper().arg("export").arg("--medium").arg(site.path("medium")).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("its signature does not verify"), "{}", text(&out));
    assert_eq!(exports(), before);
}
