//! Ransomware signals end to end on a host: a pusher's tree pushed on quiet nights, then a
//! night on which a third of its files were encrypted in place (AES-256-GCM, as ransomware
//! does). That snapshot is sealed all the same, marked suspect in its receipt and the audit
//! log, the dataset's earlier snapshots are held, `vaultctl push` exits 8 and says why, and,
//! as the policy asks, the pusher is refused in every window (across a restart) until the
//! admins' quorum-signed release order is applied. Needs root (network namespaces).

mod support;

use std::process::Command;

use support::{is_root, json_of, refused_stderr, unix_now_secs, unix_now_secs_ceil, vaultctl_push, Daemon, Net, Vault, VaultSpec};
use test_net::{document_share, encrypt_in_place, prose, share_document};
use vault_core::lifecycle::retention::{plan_expiry, Retention};
use vault_core::policy::orders::{self, DatasetDoc, OrderDoc, OrderKind, ORDER_SIGNING_CONTEXT};
use vault_core::policy::state::VaultState;
use vault_core::units::Timestamp;

fn state(vault: &Vault) -> VaultState {
    VaultState::from_bytes(&std::fs::read(vault.state().join("state.json")).unwrap()).unwrap()
}

/// Which of the dataset's snapshots the retention rules would expire two days from now,
/// under the holds the state file records.
fn would_expire(vault: &Vault) -> Vec<String> {
    let (store, _) = vault_store::Store::open(&vault.store()).unwrap();
    let (sealed, _) = store.sealed_snapshots().unwrap();
    let later = Timestamp::from_unix(unix_now_secs() + 2 * 86_400).unwrap();
    let share: Vec<_> = sealed.into_iter().filter(|s| s.dataset == "share").collect();
    plan_expiry(&share, later, Retention { keep_last: 1 }, &state(vault).orders.holds()).expire.into_iter().map(|s| s.id).collect()
}

/// The daemon again, its window open; the peer forgets the vault's old neighbour entry (a
/// stale one delays the first connect by seconds).
fn restart(net: &Net, vault: &Vault) -> Daemon {
    let daemon = Daemon::start(net, vault);
    daemon.wait_for("listening", 8.0);
    support::sh(&["ip", "-n", &net.peer_ns, "neigh", "flush", "all"]);
    daemon
}

#[test]
fn a_suspect_push_is_sealed_and_marked_holds_the_dataset_and_closes_the_pusher_until_a_signed_release() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let net = Net::new("signals");
    let start = unix_now_secs_ceil();
    let spec = VaultSpec { window: (start + 1, start + 600), pushers: vec![("files", "1GiB"), ("db", "1GiB")], early: false, grace: "5s", datasets: vec![] };
    let vault = Vault::build_with(spec, "[signals]\nclose_windows = true\n");
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("share");
    document_share(&tree, 120);
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);

    // Three quiet nights: a few documents edited each time.
    let mut quiet = Vec::new();
    for night in 0..3u64 {
        for i in 0..4u64 {
            std::fs::write(share_document(&tree, night * 4 + i), prose(9_000, 1_000 + night * 10 + i)).unwrap();
        }
        let out = json_of(&vaultctl_push(&net, &vault, "files", "share", &tree, work.path()));
        assert_eq!(out["suspect"], false, "{out:#}");
        quiet.push(out["snapshot"].as_str().unwrap().to_string());
    }

    // The attack: a third of the documents encrypted in place.
    for i in (0..120u64).step_by(3) {
        encrypt_in_place(&share_document(&tree, i), u8::try_from(i).unwrap());
    }
    let out = vaultctl_push(&net, &vault, "files", "share", &tree, work.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "a suspect push exits 8: {stderr}");
    assert!(stderr.contains("judged it suspect") && stderr.contains("turned_incompressible: 40 files") && stderr.contains("release order"), "{stderr}");
    // Sealed all the same, and the receipt (signed by the vault) says so.
    let sealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sealed["suspect"], true, "{sealed:#}");
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(sealed["receipt"].as_str().unwrap()).unwrap()).unwrap();
    let body: serde_json::Value = serde_json::from_str(receipt["receipt"].as_str().unwrap()).unwrap();
    assert_eq!((body["suspect"].as_bool(), body["signals"][0]["signal"].as_str(), body["signals"][0]["value"].as_u64()), (Some(true), Some("turned_incompressible"), Some(40)), "{body:#}");
    let suspect_id = sealed["snapshot"].as_str().unwrap().to_string();
    let (_, event) = daemon.wait_for("snapshot_suspect", 10.0);
    assert_eq!((event["snapshot"].as_str(), event["closed"].as_bool()), (Some(suspect_id.as_str()), Some(true)), "{event}");
    let (_, alarm) = daemon.wait_for_matching(|e| e["event"] == "alarm" && e["rule"] == "anomaly", 10.0);
    assert!(alarm["detail"].as_str().unwrap().contains(&suspect_id), "{alarm}");

    // The pusher is refused from now on, with the reason, and nothing of it is staged; the
    // other pusher is served as before (were it suspect too, the window would shut: gate tests).
    let mark = daemon.mark();
    let refused = refused_stderr(&vaultctl_push(&net, &vault, "files", "share", &tree, work.path()));
    assert!(refused.contains("judged suspect by the ransomware signals") && refused.contains("release order"), "{refused}");
    assert_eq!(daemon.count_after(mark, "snapshot_sealed"), 0);
    let dump = work.path().join("dump.sql");
    std::fs::write(&dump, prose(50_000, 77)).unwrap();
    assert_eq!(json_of(&vaultctl_push(&net, &vault, "db", "pg", &dump, work.path()))["suspect"], false);
    let events = daemon.stop();
    // The audit log has the mark too.
    let vault_key = vault_core::keys::PublicKey::parse(&vault.identity(), "vault key").unwrap();
    let verified = vault_store::audit::verify(&vault.store(), &vault_key).unwrap();
    let logged = vault_store::audit::read_entries(&vault.store(), 0, verified.entries).unwrap();
    assert!(logged.iter().any(|e| String::from_utf8_lossy(e).contains("\"snapshot_suspect\"")), "{events:#?}");

    // The listing says which snapshot is suspect.
    let listing = Command::new(support::vaultctl_bin()).args(["snapshots", "--vault-key", &vault.identity(), "--store"]).arg(vault.store()).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    let suspect_lines: Vec<&str> = listing.lines().filter(|l| l.contains("SUSPECT")).collect();
    assert!(suspect_lines.len() == 1 && suspect_lines[0].contains(&suspect_id), "{listing}");

    // Every earlier snapshot is held: two days on, none of them would expire.
    let held = state(&vault).orders;
    assert_eq!((held.suspects.len(), held.suspects[0].snapshot.as_str(), held.suspects[0].dataset.as_deref()), (1, suspect_id.as_str(), Some("share")));
    assert_eq!(would_expire(&vault), Vec::<String>::new());

    // Across a restart (the next window), still refused.
    let daemon = restart(&net, &vault);
    refused_stderr(&vaultctl_push(&net, &vault, "files", "share", &tree, work.path()));
    daemon.stop();

    // One admin is not the quorum a release needs; both are.
    let release = |serial: u64, signers: &[usize]| {
        let root = vault_core::policy::root::TrustRoot::from_toml(&std::fs::read_to_string(vault.root()).unwrap()).unwrap();
        let now = Timestamp::from_unix(unix_now_secs()).unwrap();
        let doc = OrderDoc {
            vault_id: "vault-01".into(),
            kind: OrderKind::Release,
            serial,
            issued: now.to_string(),
            expires: Timestamp::from_unix(now.unix() + 86_400).unwrap().to_string(),
            signed_for_root: root.digest(),
            snapshots: vec![],
            datasets: vec![DatasetDoc { pusher: "files".into(), dataset: "share".into() }],
            vetoes: None,
            export: None,
            reason: "checked: the file server was restored from the last clean snapshot".into(),
        };
        let mut envelope = orders::unsigned(&doc);
        for i in signers {
            envelope.sign_in(&vault.admins[*i], ORDER_SIGNING_CONTEXT).unwrap();
        }
        let path = work.path().join(format!("release-{serial}.order"));
        std::fs::write(&path, envelope.to_bytes()).unwrap();
        Command::new(env!("CARGO_BIN_EXE_gatekeeper")).arg("--root").arg(vault.root()).arg("--state").arg(vault.state()).arg("apply-order").arg(&path).output().unwrap()
    };
    let alone = release(1, &[0]);
    assert!(!alone.status.success() && String::from_utf8_lossy(&alone.stdout).contains("need 2"), "{}", String::from_utf8_lossy(&alone.stdout));
    assert_eq!(state(&vault).orders.suspects.len(), 1);
    let both = release(1, &[0, 1]);
    assert!(both.status.success(), "{}", String::from_utf8_lossy(&both.stdout));
    assert!(state(&vault).orders.suspects.is_empty());
    // Released: all but the newest may expire again (pushed within a second or so here, the
    // newest is the one ranked first).
    let expiring = would_expire(&vault);
    assert_eq!(expiring.len(), quiet.len(), "{expiring:?}");

    // And the pusher is served again: its tree as it is now is the new normal.
    let daemon = restart(&net, &vault);
    let again = json_of(&vaultctl_push(&net, &vault, "files", "share", &tree, work.path()));
    assert_eq!(again["suspect"], false, "{again:#}");
    daemon.stop();
}
