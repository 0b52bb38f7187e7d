//! The push path on a real kernel: the gatekeeper in one network namespace, `vaultctl push`
//! in the other, across a veth pair (192.0.2.0/24). Then the store is read offline with
//! `vaultctl restore` and compared byte for byte with what was pushed. Needs root.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

/// A small mixed tree: nested dirs, an empty file, a multi-chunk file, a symlink, odd modes.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/conf.d")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/db")).unwrap();
    std::fs::write(root.join("etc/hosts"), b"192.0.2.10 vault\n").unwrap();
    std::fs::write(root.join("etc/conf.d/empty"), b"").unwrap();
    std::fs::set_permissions(root.join("etc/hosts"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(root.join("var/lib/db/data.bin"), pseudo_random_bytes(3 << 20, 0x9e37_79b9_7f4a_7c15)).unwrap();
    for i in 0..50 {
        std::fs::write(root.join(format!("var/lib/db/small-{i:02}.txt")), format!("row {i}\n").repeat(i + 1)).unwrap();
    }
    std::os::unix::fs::symlink("../etc/hosts", root.join("var/hosts-link")).unwrap();
}

#[test]
fn push_incremental_push_early_close_and_byte_exact_restore() {
    let net = Net::new("push");
    let start = unix_now_secs_ceil();
    let vault = Vault::build(VaultSpec { window: (start + 2, start + 60), pushers: vec![("db", "1GiB"), ("logs", "1GiB")], early: true, grace: "5s", datasets: vec![] });
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);
    let daemon = Daemon::start(&net, &vault);
    // Before the window: no answer at all, which vaultctl reports as such (exit 5).
    let early = vaultctl_push_command(&net, &vault.identity(), &vault.pusher_key("db"), "db", &tree, work.path()).args(["--connect-timeout-secs", "1"]).output().unwrap();
    assert_eq!(early.status.code(), Some(5), "{}", String::from_utf8_lossy(&early.stderr));
    assert!(String::from_utf8_lossy(&early.stderr).contains("window is closed"));
    daemon.wait_for("listening", 8.0);

    // First push: everything is new.
    let first = json_of(&vaultctl_push(&net, &vault, "db", "db", &tree, work.path()));
    assert_eq!(first["files"], 53);
    assert_eq!(first["chunks_new"], first["chunks_total"]);
    assert_eq!(first["stats"]["files_from_cache"], 0);

    // Change one file: the second push reads only it and sends only its new chunks.
    std::fs::write(tree.join("var/lib/db/small-07.txt"), b"changed\n").unwrap();
    let second = json_of(&vaultctl_push(&net, &vault, "db", "db", &tree, work.path()));
    assert_eq!(second["stats"]["files_from_cache"], 52, "{second:#}");
    assert_eq!(second["chunks_new"], 1, "{second:#}");
    assert_eq!(second["bytes_new"], 8);

    // A large file changed in place: cut again with its cached chunk list (where its chunks
    // still hash to their ids, their cuts are kept without FastCDC), only the chunks around
    // the change are new, and it restores byte for byte (below). (The second push's changed
    // file was one chunk: nothing to keep.)
    let data = tree.join("var/lib/db/data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1 << 20..(1 << 20) + 4096].copy_from_slice(&pseudo_random_bytes(4096, 99));
    std::fs::write(&data, &bytes).unwrap();
    let third = json_of(&vaultctl_push(&net, &vault, "db", "db", &tree, work.path()));
    assert_eq!(third["stats"]["files_from_cache"], 52, "{third:#}");
    assert!(third["stats"]["cuts_kept"].as_u64().unwrap() > 0, "the unchanged parts kept their cuts: {third:#}");
    assert_eq!(second["stats"]["cuts_kept"], 0, "{second:#}");
    assert!((1..=3).contains(&third["chunks_new"].as_u64().unwrap()), "{third:#}");
    assert!(third["bytes_new"].as_u64().unwrap() <= 3 * 512 * 1024, "{third:#}");

    // Each receipt carries the vault's audit checkpoint; the pusher keeps the newest and the
    // next receipt proves the log grew from it.
    assert_eq!(first["audit_log"]["consistent"], true, "{first:#}");
    assert_eq!((second["audit_log"]["consistent"].clone(), second["audit_log"]["from"].clone()), (serde_json::json!(true), first["audit_log"]["entries"].clone()), "{second:#}");
    assert!(second["audit_log"]["entries"].as_u64() > first["audit_log"]["entries"].as_u64(), "{second:#}");

    // The receipt is the vault's, and retention counts from the vault's clock.
    let receipt_file = second["receipt"].as_str().unwrap();
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(receipt_file).unwrap()).unwrap();
    let body: serde_json::Value = serde_json::from_str(receipt["receipt"].as_str().unwrap()).unwrap();
    assert_eq!(body["vault_key"].as_str().unwrap(), vault.identity());
    let received = vault_core::units::Timestamp::parse(body["received_at"].as_str().unwrap()).unwrap();
    let retain = vault_core::units::Timestamp::parse(body["retain_until"].as_str().unwrap()).unwrap();
    assert_eq!(retain.secs_since(received), 86_400);
    assert!((received.unix() - unix_now_secs()).abs() < 30);

    // A stream from stdin (`tar c ... | vaultctl push ... -`) is one snapshot too.
    let dump = pseudo_random_bytes(1 << 20, 7);
    let mut piped = vaultctl_push_command(&net, &vault.identity(), &vault.pusher_key("db"), "dump", Path::new("-"), work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut piped.stdin.take().unwrap(), &dump).unwrap();
    let stream = json_of(&piped.wait_with_output().unwrap());
    assert_eq!(stream["logical_bytes"], dump.len());

    // The link stays up for the other pusher, then closes early once it has committed.
    assert!(!daemon.all().iter().any(|e| e["event"] == "link_down" && e["why"] == "gate"));
    let logs = work.path().join("logs.txt");
    std::fs::write(&logs, b"one log line\n").unwrap();
    json_of(&vaultctl_push(&net, &vault, "logs", "syslog", &logs, work.path()));
    let (committed_at, _) = daemon.events.lock().unwrap().iter().rfind(|(_, e)| e["event"] == "committed").cloned().unwrap();
    let (down_at, _) = daemon.wait_for_matching(|e| e["event"] == "link_down" && e["why"] == "gate", 5.0);
    println!("MEASURE last commit -> link down (event times): {:.1} ms", (down_at - committed_at) * 1000.0);
    assert!(unix_now() < (start + 60) as f64, "closed early, well before the window end");
    let events = daemon.stop();
    assert_eq!(events.iter().filter(|e| e["event"] == "snapshot_sealed").count(), 5);
    // Each seal reports its steps in order, the last before the receipt went out; nothing
    // needed fixing at start; every sealed file and directory carries the flag.
    let first_id = first["snapshot"].as_str().unwrap();
    let steps: Vec<&str> = events.iter().filter(|e| e["event"] == "seal_step" && e["snapshot"] == first_id).map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["staged_files", "pack_durable", "pack_renamed", "index_written", "files_immutable", "snapshot_visible", "dir_synced"]);
    let seq_of = |event: &str| events.iter().find(|e| e["event"] == event && e["snapshot"] == first_id).map(|e| e["seq"].as_u64().unwrap()).unwrap();
    assert!(seq_of("seal_step") < seq_of("snapshot_sealed"));
    let opened = events.iter().find(|e| e["event"] == "store_opened").unwrap();
    assert_eq!(opened["immutable_fixed"], serde_json::json!([]), "{opened}");
    for dir in ["packs", "snapshots"] {
        for entry in std::fs::read_dir(vault.store().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            assert!(vault_store::is_immutable(&path).unwrap(), "{} is not immutable", path.display());
        }
    }
    assert!(!events.iter().any(|e| e["event"] == "session_refused"), "{events:#?}");

    // The audit log holds what the console said, in order (all but progress lines), under
    // checkpoints the vault signed: verified from the disk to the last entry.
    let vault_key = vault_core::keys::PublicKey::parse(&vault.identity(), "vault key").unwrap();
    let verified = vault_store::audit::verify(&vault.store(), &vault_key).unwrap();
    let logged: Vec<serde_json::Value> = vault_store::audit::read_entries(&vault.store(), 0, verified.entries).unwrap().iter().map(|e| serde_json::from_slice(e).unwrap()).collect();
    let printed: Vec<&serde_json::Value> = events.iter().filter(|e| !gatekeeper::audit::NOT_LOGGED.contains(&e["event"].as_str().unwrap())).collect();
    // The daemon's last act is to wait for the writer: the whole console is in the log, its
    // last words (`stopped`) included.
    assert!(logged.len() == printed.len() && logged.iter().zip(&printed).all(|(a, b)| a == *b), "the log is what the console said:\n{logged:#?}\n{printed:#?}");
    assert_eq!(logged.last().map(|e| e["event"].clone()), Some(serde_json::json!("stopped")));
    assert!(logged.iter().filter(|e| e["event"] == "committed").count() == 5, "every commit is in the log: {logged:#?}");
    assert!(logged.iter().any(|e| e["event"] == "started"), "and what came before the store was open");
    let checkpoints: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "audit_checkpoint").collect();
    assert!(checkpoints.len() >= 2 && checkpoints.windows(2).all(|w| w[0]["entries"].as_u64() < w[1]["entries"].as_u64()), "{checkpoints:#?}");

    // Offline: list and restore each snapshot from the store, compare with the source.
    let store = vault.store();
    assert_eq!(vaultctl_snapshots(&store, &vault.identity()).len(), 5);
    let restored = work.path().join("restored");
    let out = vaultctl_restore(&store, third["snapshot"].as_str().unwrap(), &vault.identity(), &restored);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(describe(&restored), describe(&tree));
    let restored_stream = work.path().join("restored-stream");
    let out = vaultctl_restore(&store, stream["snapshot"].as_str().unwrap(), &vault.identity(), &restored_stream);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(restored_stream.join("stream")).unwrap(), dump);
    // Restoring into a non-empty directory (a finished restore) is refused.
    let again = vaultctl_restore(&store, third["snapshot"].as_str().unwrap(), &vault.identity(), &restored);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("must be a new or empty directory"));

    // The audit log, from the pusher's receipts alone.
    let from_receipts = Command::new(vaultctl_bin()).args(["audit", "verify", "--receipts"]).arg(work.path().join("receipts")).args(["--vault-key", &vault.identity()]).output().unwrap();
    assert!(from_receipts.status.success(), "{}", String::from_utf8_lossy(&from_receipts.stderr));
    assert!(String::from_utf8_lossy(&from_receipts.stdout).starts_with("audit log consistent across 5 receipts"), "{}", String::from_utf8_lossy(&from_receipts.stdout));

    // The report a person reads: one page from the log, opened in headless Chromium, which
    // shows the five snapshots, the three datasets and the window; a screenshot is kept.
    let page = work.path().join("report.html");
    let made = Command::new(vaultctl_bin()).args(["report", "--store"]).arg(&store).args(["--vault-key", &vault.identity(), "--out"]).arg(&page).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("<script") && !html.contains("src="), "self-contained, no script");
    let logs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let shot = logs.join("audit-report.png");
    let _ = std::fs::remove_file(&shot);
    let chromium = |args: &[String]| {
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", work.path().join("chromium").display()))
            .args(args)
            .output()
            .expect("chromium (scripts/ensure-tools.sh installs it)")
    };
    let url = format!("file://{}", page.display());
    let dom = chromium(&["--dump-dom".into(), url.clone()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for shown in ["Pushes per dataset", "<td>db</td>", "<td>dump</td>", "<td>syslog</td>", "id=\"sealed\">5<", "class=\"window\"", "Capacity"] {
        assert!(dom.contains(shown), "the rendered page shows `{shown}`:\n{dom}");
    }
    let screenshot = chromium(&[format!("--screenshot={}", shot.display()), "--window-size=1100,1600".into(), url]);
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot at {}: {}", shot.display(), String::from_utf8_lossy(&screenshot.stderr));
    println!("report screenshot kept at {}", shot.display());

    // The audit log, offline: verified, shown by kind, and an altered entry named by its index.
    let audit = |args: &[&str]| Command::new(vaultctl_bin()).arg("audit").args(args).arg("--store").arg(&store).args(["--vault-key", &vault.identity()]).output().unwrap();
    let verified = audit(&["verify"]);
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert!(String::from_utf8_lossy(&verified.stdout).starts_with(&format!("audit log verified: {} entries", logged.len())), "{}", String::from_utf8_lossy(&verified.stdout));
    let commits = audit(&["show", "--kind", "committed", "--json"]);
    let shown: Vec<serde_json::Value> = String::from_utf8_lossy(&commits.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(shown, logged.iter().filter(|e| e["event"] == "committed").cloned().collect::<Vec<_>>());
    let committed_index = logged.iter().position(|e| e["event"] == "committed").unwrap();
    let entries_dir = store.join("log/tile/entries");
    // The widest bundle holding it (a narrower one, or a temporary file, may be left from the
    // daemon's last moment: readers use the widest).
    let bundle = test_net::walk(&entries_dir, |_| false)
        .into_iter()
        .map(|w| entries_dir.join(w.rel))
        .filter(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .filter(|p| std::fs::read(p).unwrap().windows(11).any(|w| w == b"\"committed\""))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    Command::new("chattr").arg("-i").arg(&bundle).status().unwrap();
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(11).position(|w| w == b"\"committed\"").unwrap();
    bytes[at + 1] = b'C';
    std::fs::set_permissions(&bundle, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&bundle, &bytes).unwrap();
    let altered = audit(&["verify"]);
    assert_eq!(altered.status.code(), Some(3), "{}", String::from_utf8_lossy(&altered.stdout));
    assert!(String::from_utf8_lossy(&altered.stderr).contains(&format!("entry {committed_index} ")), "{}", String::from_utf8_lossy(&altered.stderr));
}

/// A stream whose producer writes slowly keeps its session: the pusher cuts it as its bytes
/// arrive and, while it waits for more, sends what it cut, so no gap between its frames reaches
/// the vault's idle deadline (3 s here) though the stream takes more than twice that. Read a
/// block (8 MiB) at a time, as before, it sent nothing until the stream ended and was refused.
#[test]
fn a_slowly_written_stream_keeps_its_session() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let net = Net::new("slowstream");
    let start = unix_now_secs_ceil();
    let vault = Vault::build(VaultSpec { window: (start + 2, start + 300), pushers: vec![("db", "1GiB")], early: false, grace: "5s", datasets: vec![] });
    let work = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(&net, &vault, &["--idle-timeout-ms", "3000"]);
    daemon.wait_for("listening", 8.0);
    let dump = pseudo_random_bytes(3 << 20, 9);
    let mut pusher = vaultctl_push_command(&net, &vault.identity(), &vault.pusher_key("db"), "slow", Path::new("-"), work.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = pusher.stdin.take().unwrap();
    // 64 KiB every 150 ms: about 430 KB/s, 7.2 s for the 3 MiB.
    let began = Instant::now();
    for piece in dump.chunks(64 * 1024) {
        stdin.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    drop(stdin);
    let out = pusher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(began.elapsed() > Duration::from_secs(6), "the stream took {:?}: not slow enough to test anything", began.elapsed());
    let stream = json_of(&out);
    assert_eq!(stream["logical_bytes"], dump.len());
    let events = daemon.stop();
    assert!(!events.iter().any(|e| e["event"] == "session_refused"), "{events:#?}");

    let restored = work.path().join("restored");
    let out = vaultctl_restore(&vault.store(), stream["snapshot"].as_str().unwrap(), &vault.identity(), &restored);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(restored.join("stream")).unwrap(), dump);
}

/// A cache that names chunks the vault does not hold (it was written for another vault, or a
/// purge took them since) costs re-reads, never a snapshot. The pusher asks about the chunks
/// its cache names without their bytes: those of unchanged files, and the unchanged chunks of
/// a changed file. When the vault says it lacks them, those files are read again and sent,
/// and the snapshot restores byte for byte.
#[test]
fn chunks_the_cache_names_but_the_vault_lacks_are_read_again() {
    let net = Net::new("reread");
    let start = unix_now_secs_ceil();
    let spec = || VaultSpec { window: (start + 2, start + 300), pushers: vec![("db", "1GiB")], early: false, grace: "5s", datasets: vec![] };
    let (first_vault, second_vault) = (Vault::build(spec()), Vault::build(spec()));
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);
    let (to_first, to_second) = (work.path().join("first"), work.path().join("second"));

    // The first vault gets the tree, and the pusher's cache names every chunk of it.
    let daemon = Daemon::start(&net, &first_vault);
    daemon.wait_for("listening", 8.0);
    let first = json_of(&vaultctl_push(&net, &first_vault, "db", "db", &tree, &to_first));
    daemon.stop();
    let total_bytes: u64 = test_net::walk(&tree, |_| false).iter().filter(|w| w.meta.is_file()).map(|w| w.meta.len()).sum();
    assert_eq!(first["stats"]["bytes_read"], total_bytes);

    // 4 KiB changed in the middle of the 3 MiB file: its other chunks are as they were.
    let data = tree.join("var/lib/db/data.bin");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1 << 20..(1 << 20) + 4096].fill(0x5a);
    std::fs::write(&data, &bytes).unwrap();

    // The same cache, pushing to a vault that holds none of those chunks.
    std::fs::create_dir_all(&to_second).unwrap();
    let cache_name = |vault: &Vault| format!("{}-db.cache", vault.pusher_key("db").file_stem().unwrap().to_string_lossy());
    std::fs::copy(to_first.join(cache_name(&first_vault)), to_second.join(cache_name(&second_vault))).unwrap();
    // This pusher still holds the first vault's neighbour entry; the second learns the
    // pusher's MAC only from its ARP request.
    assert!(Command::new("ip").args(["-n", &net.peer_ns, "neigh", "flush", "all"]).status().unwrap().success());
    let daemon = Daemon::start(&net, &second_vault);
    daemon.wait_for("listening", 8.0);
    let second = json_of(&vaultctl_push(&net, &second_vault, "db", "db", &tree, &to_second));
    daemon.stop();
    // Every file but the changed one came from the cache; the vault needed every chunk, so
    // every file was read again after the changed one was read once.
    assert_eq!(second["stats"]["files_from_cache"], 52, "{second:#}");
    assert_eq!(second["chunks_new"], second["chunks_total"], "{second:#}");
    assert_eq!(second["stats"]["bytes_read"], total_bytes + bytes.len() as u64, "{second:#}");
    assert_eq!(second["stats"]["bytes_sent"], total_bytes, "{second:#}");

    let restored = work.path().join("restored");
    let out = vaultctl_restore(&second_vault.store(), second["snapshot"].as_str().unwrap(), &second_vault.identity(), &restored);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(describe(&restored), describe(&tree));
}

/// Issue 16: the log leaves the vault in every receipt, so every pusher is a witness. An older
/// copy of the log put back on the disk (what an intruder with the disk would do to hide what
/// the vault recorded) is found by the next push, at the pusher: exit 7, "audit log not
/// consistent", the snapshot sealed all the same, and the pusher's receipts say which one.
#[test]
fn a_rewound_audit_log_fails_the_next_push_at_the_pusher() {
    let net = Net::new("rewind");
    let start = unix_now_secs_ceil();
    let vault = Vault::build(VaultSpec { window: (start + 2, start + 300), pushers: vec![("db", "1GiB")], early: false, grace: "5s", datasets: vec![] });
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);
    let log = vault.store().join("log");
    let older = work.path().join("older-log");

    // A first run writes a log; a copy of it is kept.
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);
    daemon.stop();
    let copied = Command::new("cp").arg("-a").arg(&log).arg(&older).status().unwrap();
    assert!(copied.success());

    // A second run: a push, whose receipt leaves with the checkpoint.
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);
    let pushed = json_of(&vaultctl_push(&net, &vault, "db", "db", &tree, work.path()));
    let held = pushed["audit_log"]["entries"].as_u64().unwrap();
    daemon.stop();
    let witness_file = std::fs::read_dir(work.path().join("receipts")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "checkpoint")).unwrap();
    let witnessed = std::fs::read(&witness_file).unwrap();

    // The older copy goes back, and the vault starts from it: to the vault, it verifies.
    Command::new("chattr").args(["-R", "-i"]).arg(&log).status().unwrap();
    std::fs::remove_dir_all(&log).unwrap();
    assert!(Command::new("cp").arg("-a").arg(&older).arg(&log).status().unwrap().success());
    // The vault learns a pusher's MAC only from the pusher's own ARP request (it never asks
    // the segment), and this pusher still holds the vault's from a minute ago: forget it, as a
    // night between windows would.
    assert!(Command::new("ip").args(["-n", &net.peer_ns, "neigh", "flush", "all"]).status().unwrap().success());
    let daemon = Daemon::start(&net, &vault);
    let (_, opened) = daemon.wait_for("audit_log_opened", 8.0);
    assert!(opened["entries"].as_u64().unwrap() < held, "{opened}");
    daemon.wait_for("listening", 8.0);
    std::fs::write(tree.join("var/lib/db/small-07.txt"), b"changed\n").unwrap();
    let next = vaultctl_push(&net, &vault, "db", "db", &tree, work.path());
    let events = daemon.stop();
    let stderr = String::from_utf8_lossy(&next.stderr);
    println!("the pusher said: {stderr}");
    assert_eq!(next.status.code(), Some(7), "{stderr}\n{events:#?}");
    assert!(stderr.contains("audit log not consistent") && stderr.contains(&format!("the {held} ")), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&next.stdout).unwrap();
    assert_eq!(report["audit_log"]["consistent"], false);
    assert!(events.iter().any(|e| e["event"] == "snapshot_sealed" && e["snapshot"] == report["snapshot"]), "sealed all the same");
    assert_eq!(std::fs::read(&witness_file).unwrap(), witnessed, "the pusher keeps the checkpoint it held");

    // The receipts alone say which one shows it.
    let from_receipts = Command::new(vaultctl_bin()).args(["audit", "verify", "--receipts"]).arg(work.path().join("receipts")).args(["--vault-key", &vault.identity()]).output().unwrap();
    assert_eq!(from_receipts.status.code(), Some(7), "{}", String::from_utf8_lossy(&from_receipts.stdout));
    let said = String::from_utf8_lossy(&from_receipts.stderr);
    assert!(said.contains("audit log not consistent") && said.contains(&format!(" {}", report["snapshot"].as_str().unwrap())), "{said}\n{report:#}");
}

/// Issue 13, item 4, with the README's own example: one pusher, a database dump and /etc as
/// two pushes. Listing both datasets, the first commit does not close the window (it used to,
/// aborting the second push); the second does.
#[test]
fn early_close_waits_for_every_dataset_a_pusher_lists() {
    let net = Net::new("datasets");
    let start = unix_now_secs_ceil();
    let spec = VaultSpec { window: (start + 1, start + 60), pushers: vec![("db-backup", "1GiB")], early: true, grace: "5s", datasets: vec![("db-backup", "pgdump"), ("db-backup", "etc")] };
    let vault = Vault::build(spec);
    let work = tempfile::tempdir().unwrap();
    let (dump, etc) = (work.path().join("dump.sql"), work.path().join("etc"));
    std::fs::write(&dump, pseudo_random_bytes(200_000, 1)).unwrap();
    make_tree(&etc);
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);

    json_of(&vaultctl_push(&net, &vault, "db-backup", "pgdump", &dump, work.path()));
    let (_, committed) = daemon.wait_for("committed", 5.0);
    assert_eq!((committed["pusher"].as_str(), committed["dataset"].as_str()), (Some("db-backup"), Some("pgdump")));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!daemon.all().iter().any(|e| e["event"] == "state_changed" && e["to"] == "closing"), "closed after the first of two datasets");

    json_of(&vaultctl_push(&net, &vault, "db-backup", "etc", &etc, work.path()));
    let (_, closing) = daemon.wait_for_matching(|e| e["event"] == "state_changed" && e["to"] == "closing", 5.0);
    assert_eq!(closing["reason"], "early close: every expected commit arrived (db-backup/pgdump, db-backup/etc)");
    daemon.wait_for_matching(|e| e["event"] == "link_down" && e["why"] == "gate", 5.0);
    assert!(unix_now() < (start + 60) as f64, "closed early, well before the window end");
    daemon.stop();
}
