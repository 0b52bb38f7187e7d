//! The appliance seen from outside, as an operator or an attacker sees it: the real image in
//! QEMU, its NIC on a tap in a namespace of the test's own, the pusher (`vaultctl`) on the
//! other side, an ARP probe every 50 ms and a capture of every frame the vault sends for the
//! whole test. The vault's store is read back from its disk without mounting it and restored
//! with `vaultctl restore`, byte for byte.

use std::path::Path;
use std::time::Duration;

use qemu_tests::{arp_replies, extract_store_with_flags, now_secs, push_summary, restore, rfc3339, snapshots, unsolicited, Appliance, Boot, PolicySpec, Vm, PEER_IP, VAULT_IP, VAULT_PORT};
use test_net::{describe, pseudo_random_bytes, random_tree, unix_now};

const EVENT_WAIT: Duration = Duration::from_secs(90);

/// A tree with nested directories, a symlink and files of several sizes.
fn sample_tree(root: &Path, seed: u64) {
    random_tree(&root.join("db"), 6, 300_000, seed);
    random_tree(&root.join("etc/conf.d"), 4, 2_000, seed + 1);
    std::fs::write(root.join("README"), b"nightly dump\n").unwrap();
    std::os::unix::fs::symlink("db/file-000.bin", root.join("latest")).unwrap();
}

/// ARP replies outside every `[open, close]` interval (Unix seconds, with slack for the
/// guest's whole-second clock and the capture's own latency).
fn replies_outside(replies: &[f64], open: &[(f64, f64)]) -> Vec<f64> {
    replies.iter().copied().filter(|t| !open.iter().any(|(a, b)| *t >= a - 1.0 && *t <= b + 1.0)).collect()
}

/// Powers the vault off, reads its store off the disk, and checks that exactly these pushes
/// are sealed, that each restores to its tree byte for byte, that every sealed file and
/// directory carries the immutable flag on the disk, and that staging is empty.
fn assert_sealed_exactly(box_: &mut Appliance, pushes: &[(&serde_json::Value, &Path)]) {
    let disk = box_.vm.shut_off();
    let expected: Vec<(String, &Path)> = pushes.iter().map(|(summary, tree)| (summary["snapshot"].as_str().unwrap().to_string(), *tree)).collect();
    let (store, flags) = extract_store_with_flags(&disk, &box_.bench.dir.join("extracted"));
    assert_store_holds(box_, &store, &flags, &expected, &[]);
    assert!(std::fs::read_dir(store.join("staging")).map(|d| d.count() == 0).unwrap_or(true), "staging left over");
}

/// Checks a store read off the vault's disk (with its immutable flags, as
/// `extract_store_with_flags` gives them): exactly the `expected` snapshots are visible, each
/// restoring to its tree byte for byte, and every sealed path carries the immutable flag on
/// the disk except the ones in `unflagged` (relative to the store; the start re-flags them).
fn assert_store_holds(box_: &Appliance, store: &Path, flags: &std::collections::BTreeMap<String, bool>, expected: &[(String, &Path)], unflagged: &[String]) {
    let vault_key = box_.vm.vault_key();
    let dir = store.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    let mut sealed = snapshots(&box_.bench, store, &vault_key);
    sealed.sort();
    let mut ids: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    assert_eq!(sealed, ids, "{dir}: the sealed snapshots");
    for (snapshot, tree) in expected {
        let to = box_.bench.dir.join(format!("{dir}-restored-{snapshot}"));
        restore(&box_.bench, store, snapshot, &vault_key, &to);
        assert_eq!(describe(&to), describe(tree), "{dir}: {snapshot} restores to what was pushed");
        let _ = std::fs::remove_dir_all(&to);
    }
    // The audit log on the disk verifies against the vault key, to its last signed entry (after
    // a power cut too: what was written past the checkpoint is not covered, and not in the way).
    let audit = std::process::Command::new(box_.bench.artifacts.vaultctl()).args(["audit", "verify", "--store"]).arg(store).args(["--vault-key", &vault_key]).output().unwrap();
    assert!(audit.status.success(), "{dir}: the audit log: {}{}", String::from_utf8_lossy(&audit.stdout), String::from_utf8_lossy(&audit.stderr));
    // And as the pushers saw it: every receipt's checkpoint consistent with the others.
    let receipts = box_.bench.dir.join("receipts");
    if receipts.exists() {
        let witnessed = std::process::Command::new(box_.bench.artifacts.vaultctl()).args(["audit", "verify", "--receipts"]).arg(&receipts).args(["--vault-key", &vault_key]).output().unwrap();
        assert!(witnessed.status.success(), "{dir}: the receipts' checkpoints: {}{}", String::from_utf8_lossy(&witnessed.stdout), String::from_utf8_lossy(&witnessed.stderr));
    }
    // Sealed: every live pack and index, every snapshot and everything in it.
    let orphans = unindexed_packs(flags);
    let live_pack_file = |path: &str| path.starts_with("packs/") && (path.ends_with(".idx") || (path.ends_with(".pack") && !orphans.iter().any(|o| o == path)));
    let sealed_path = |path: &str| path.starts_with("snapshots/") || live_pack_file(path);
    let lacking: Vec<&String> = flags.iter().filter(|(path, immutable)| sealed_path(path) && !**immutable && !unflagged.contains(*path)).map(|(path, _)| path).collect();
    assert!(lacking.is_empty(), "{dir}: sealed paths without the immutable flag on the disk: {lacking:?}");
}

/// Packs in `packs/` without an index: a seal cut between the pack's rename and its index
/// (the next start removes them).
fn unindexed_packs(flags: &std::collections::BTreeMap<String, bool>) -> Vec<String> {
    flags.keys().filter(|path| path.starts_with("packs/") && path.strip_suffix(".pack").is_some_and(|stem| !flags.contains_key(&format!("{stem}.idx")))).cloned().collect()
}

/// Issue 13, item 1: silent from power-on, firmware included. Booted through OVMF with the
/// vault NIC attached and captured from QEMU's start, the vault sends not one frame while
/// sealed with the shipped firmware settings; the control boot without them shows what they
/// stop (OVMF's IPv6 stack speaking from the vault's MAC before the kernel exists).
#[test]
fn through_the_firmware_the_vault_is_silent_from_power_on() {
    let settle = Duration::from_secs(8);
    let mut shipped = Appliance::boot("fw-silent", Boot::Firmware);
    std::thread::sleep(settle);
    let frames = shipped.finish_capture();
    assert!(frames.is_empty(), "with the shipped firmware settings the vault sent {} frame(s), first: {:02x?}", frames.len(), frames.first().map(|f| &f.frame));
    shipped.vm.pass();

    let mut control = Appliance::boot_configured("fw-control", Boot::Firmware, qemu_tests::VmOptions { firmware_network_on: true, ..Default::default() });
    std::thread::sleep(settle);
    let frames = control.finish_capture();
    println!("control (OVMF network stack on): {} frame(s) from the vault's MAC before a window, first: {:02x?}", frames.len(), frames.first().map(|f| &f.frame));
    assert!(!frames.is_empty(), "the control boot was silent too: the test no longer shows what the settings stop");
    control.vm.pass();
}

fn wait_listening(vm: &mut Vm) {
    vm.wait_event("listening", EVENT_WAIT);
}

#[test]
fn a_sealed_vault_sends_nothing_at_all() {
    let mut box_ = Appliance::boot("sealed-silent", Boot::Direct);
    std::thread::sleep(Duration::from_secs(8));
    let frames = box_.finish_capture();
    assert!(frames.is_empty(), "the sealed vault sent {} frame(s), first: {:02x?}", frames.len(), frames.first().map(|f| &f.frame));
    box_.vm.pass();
}

#[test]
fn push_receipt_early_close_restore_and_an_incremental_push() {
    let mut box_ = Appliance::boot("push-restore", Boot::Direct);
    let t = now_secs();
    let (w1, w2) = ((t + 20, t + 80), (t + 95, t + 155));
    let spec = PolicySpec { windows: vec![w1, w2], pushers: vec![("db-backup".into(), "1GiB".into())], ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);

    let tree = box_.bench.dir.join("tree");
    sample_tree(&tree, 0x5eed);
    wait_listening(&mut box_.vm);
    // What reads the pushers is the confined worker: its own uid, no capabilities, no files.
    let worker = box_.vm.wait_event("session_worker_started", EVENT_WAIT);
    assert_eq!((worker["uid"].as_u64(), worker["gid"].as_u64()), (Some(64_010), Some(64_010)), "{worker}");
    // A port scan from the pusher's own address first: the ingress filter (this image's kernel
    // must carry nf_tables) drops it before the stack, so no RST or ICMP answers it, nothing
    // unsolicited is on the wire (checked below) and the window stays open for the push.
    let mut ports: Vec<u16> = (1..=100).collect();
    ports.extend([VAULT_PORT - 1, VAULT_PORT + 1]);
    let answered = test_net::port_scan(&box_.net.ns, PEER_IP, VAULT_IP, ports, Duration::from_secs(3));
    assert_eq!(answered, Vec::<(u16, String)>::new(), "ports of the vault answered a scan");
    let first = push_summary(&box_.push("db-backup", "nightly", &tree));
    let first_receipt_at = unix_now();
    let closed = box_.vm.wait_for("early close", EVENT_WAIT, |e| e["event"] == "state_changed" && e["to"] == "closing");
    assert!(closed["reason"].as_str().unwrap().contains("early close: every expected commit arrived"), "{closed}");
    box_.vm.wait_event("link_down", EVENT_WAIT);
    let first_down_seen = unix_now();

    // Second window: one file changed, one added; only their new chunks travel.
    let tree_v1 = box_.bench.dir.join("tree-v1");
    qemu_tests::run_ok(std::process::Command::new("cp").arg("-a").arg(&tree).arg(&tree_v1));
    let changed = tree.join("db/file-002.bin");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[1000..1100].copy_from_slice(&pseudo_random_bytes(100, 42));
    std::fs::write(&changed, bytes).unwrap();
    std::fs::write(tree.join("db/new.bin"), pseudo_random_bytes(50_000, 43)).unwrap();
    wait_listening(&mut box_.vm);
    let second = push_summary(&box_.push("db-backup", "nightly", &tree));
    let second_receipt_at = unix_now();
    box_.vm.wait_event("link_down", EVENT_WAIT);
    let second_down_seen = unix_now();

    let (total, new) = (second["chunks_total"].as_u64().unwrap(), second["chunks_new"].as_u64().unwrap());
    println!("incremental push: {new} of {total} chunks new, {} of {} bytes sent", second["bytes_new"], second["logical_bytes"]);
    assert!(new >= 2 && new * 4 <= total, "the incremental push sent {new} of {total} chunks");
    assert!(second["bytes_new"].as_u64().unwrap() * 5 < second["logical_bytes"].as_u64().unwrap());

    // The wire: nothing unsolicited, ARP answered only inside the windows.
    let frames = box_.finish_capture();
    assert_eq!(unsolicited(&frames), Vec::<String>::new());
    let replies = arp_replies(&frames);
    let open = [(w1.0 as f64, first_down_seen), (w2.0 as f64, second_down_seen)];
    assert_eq!(replies_outside(&replies, &open), Vec::<f64>::new(), "ARP replies outside the windows");
    for (receipt_at, (start, down)) in [(first_receipt_at, open[0]), (second_receipt_at, open[1])] {
        let last = replies.iter().copied().filter(|t| *t >= start - 1.0 && *t <= down + 1.0).fold(f64::MIN, f64::max);
        println!("receipt at the pusher -> last ARP reply: {:+.0} ms", (last - receipt_at) * 1000.0);
    }

    // Back from the disk, byte for byte (the first snapshot too: nothing was overwritten).
    assert_sealed_exactly(&mut box_, &[(&first, &tree_v1), (&second, &tree)]);
}

/// Issue 14, item 4: a panic in the daemon with the link up does not take PID 1 (and with it
/// the box) down. PID 1 starts the daemon again, which seals every NIC before anything else,
/// and the window that is still open serves the pusher: receipt, nothing unsolicited, no
/// reboot. (The panic comes from a test hook on the kernel command line.)
#[test]
fn a_panic_in_the_daemon_restarts_it_sealed_and_the_window_still_serves() {
    let mut box_ = Appliance::boot_with("panic-restart", Boot::Direct, vec![format!("{}=1", "vault.panic_once_open")]);
    let t = now_secs();
    let spec = PolicySpec { windows: vec![(t + 20, t + 120)], pushers: vec![("db-backup".into(), "1GiB".into())], ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);
    let panicked = box_.vm.wait_for("the daemon's panic", EVENT_WAIT, |e| e["event"] == "panicked");
    assert!(panicked["message"].as_str().unwrap_or_default().contains("vault.panic_once_open"), "{panicked}");
    let restarted = box_.vm.wait_event("daemon_restarted", EVENT_WAIT);
    assert_eq!(restarted["restarts_this_hour"], 1, "{restarted}");
    let sealed = box_.vm.wait_for("sealed again", EVENT_WAIT, |e| e["event"] == "link_down" && e["why"].as_str().unwrap_or_default().starts_with("start: sealed"));
    assert_eq!(sealed["confirmation"]["admin_up"], false, "{sealed}");
    wait_listening(&mut box_.vm);
    let tree = box_.bench.dir.join("tree");
    random_tree(&tree, 2, 20_000, 0x9a1c);
    let pushed = push_summary(&box_.push("db-backup", "after-panic", &tree));
    assert_eq!(pushed["files"], 2, "{pushed}");
    let events = box_.vm.events();
    assert_eq!(events.iter().filter(|e| e["event"] == "boot").count(), 1, "the box rebooted");
    assert!(!events.iter().any(|e| e["event"] == "fatal"), "{events:?}");
    let frames = box_.finish_capture();
    assert_eq!(unsolicited(&frames), Vec::<String>::new());
    box_.vm.pass();
}

/// Retention by the vault's clock, across a reboot: two snapshots of one dataset kept a minute
/// each, the newest one always (`keep_last = 1`). At the window's close neither is due; the box
/// is rebooted; once the older one's minute is past, the vault expires it (and only it), and the
/// newer one still restores byte for byte from the disk.
#[test]
fn a_snapshot_expires_by_the_vaults_clock_across_a_reboot_and_the_newest_stays() {
    let mut box_ = Appliance::boot("expiry-reboot", Boot::Direct);
    let t = now_secs();
    let spec = PolicySpec {
        windows: vec![(t + 20, t + 60)],
        pushers: vec![("db-backup".into(), "1GiB".into())],
        early_close: false,
        retain: "60s".into(),
        keep_last: Some(1),
        ..PolicySpec::new(1, "vault-test")
    };
    box_.apply_policy(&spec);
    wait_listening(&mut box_.vm);
    let (older_tree, newer_tree) = (box_.bench.dir.join("older"), box_.bench.dir.join("newer"));
    random_tree(&older_tree, 3, 30_000, 0xe1);
    random_tree(&newer_tree, 3, 30_000, 0xe2);
    let older = push_summary(&box_.push("db-backup", "nightly", &older_tree));
    // Receipts carry whole seconds: sealed in the same second, which is newer is a tie.
    std::thread::sleep(Duration::from_millis(1100));
    let newer = push_summary(&box_.push("db-backup", "nightly", &newer_tree));
    let at_close = box_.vm.wait_for("the first expiry run, at the close", EVENT_WAIT, |e| e["event"] == "expiry_ran");
    assert_eq!(at_close["expired"], 0, "nothing is a minute old at the close: {at_close}");
    let disk = box_.vm.shut_off();
    box_.reboot_on("expiry-reboot-2", disk);
    let expired = box_.vm.wait_for("the older snapshot's expiry", Duration::from_secs(180), |e| e["event"] == "snapshot_expired");
    assert_eq!(expired["snapshot"], older["snapshot"], "{expired}");
    let ran = box_.vm.wait_for("the run that expired it", EVENT_WAIT, |e| e["event"] == "expiry_ran" && e["expired"] == 1);
    assert!(!box_.vm.events().iter().any(|e| e["event"] == "snapshot_expired" && e["snapshot"] == newer["snapshot"]), "the newest was expired: {ran}");
    // Collected only after a day's grace: the packs are still there, and nothing else went.
    let gc = box_.vm.wait_for("the collection after it", EVENT_WAIT, |e| e["event"] == "garbage_collected");
    assert_eq!(gc["packs_removed"], 0, "{gc}");
    assert_sealed_exactly(&mut box_, &[(&newer, &newer_tree)]);
}

/// Orders on a stick: one admin's hold and the quorum's purge of a dataset are accepted; the
/// purge waits out its 72 hours (the box is rebooted with its clock three days on, as a vault
/// left alone would live them) and then deletes what it names, except what the hold covers;
/// everything else on the disk restores byte for byte.
#[test]
fn a_purge_order_on_a_stick_waits_out_its_cooling_off_and_a_hold_still_wins() {
    let mut box_ = Appliance::boot("purge-order", Boot::Direct);
    let t = now_secs();
    let spec = PolicySpec { windows: vec![(t + 20, t + 70)], pushers: vec![("db-backup".into(), "1GiB".into())], early_close: false, ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);
    wait_listening(&mut box_.vm);
    let trees: Vec<std::path::PathBuf> = (0..3).map(|i| box_.bench.dir.join(format!("tree{i}"))).collect();
    for (i, tree) in trees.iter().enumerate() {
        random_tree(tree, 2, 20_000, 0x0d + i as u64);
    }
    let held = push_summary(&box_.push("db-backup", "pgdump", &trees[0]));
    let purged = push_summary(&box_.push("db-backup", "pgdump", &trees[1]));
    let other = push_summary(&box_.push("db-backup", "etc", &trees[2]));
    box_.vm.wait_for("the window's close", EVENT_WAIT, |e| e["event"] == "state_changed" && e["to"] == "sealed");

    let hold = box_.bench.order("hold", &["--kind", "hold", "--serial", "1", "--snapshot", held["snapshot"].as_str().unwrap(), "--reason", "legal hold"], &["carol"]);
    let purge = box_.bench.order("purge", &["--kind", "purge", "--serial", "1", "--dataset", "db-backup/pgdump", "--reason", "decommissioned"], &["alice", "bob"]);
    let stick = box_.bench.order_stick("orders", &[hold, purge]);
    let id = box_.vm.plug_stick(&stick);
    let first = box_.vm.wait_event("order_accepted", EVENT_WAIT);
    let second = box_.vm.wait_event("order_accepted", EVENT_WAIT);
    box_.vm.unplug_stick(&id);
    assert_eq!((first["kind"].as_str(), second["kind"].as_str()), (Some("hold"), Some("purge")), "{first} {second}");
    assert!(second["executes_at"].is_string(), "{second}");
    assert!(!box_.vm.events().iter().any(|e| e["event"] == "purge_executed" || e["event"] == "snapshot_expired"), "nothing goes before the cooling-off");

    // Three days and an hour on: the purge is due at the first lifecycle run after the start.
    let disk = box_.vm.shut_off();
    let later = qemu_tests::rfc3339(now_secs() + 73 * 3600).trim_end_matches('Z').to_string();
    box_.reboot_with("purge-order-later", disk, vec!["-rtc".into(), format!("base={later}")]);
    let executed = box_.vm.wait_event("purge_executed", Duration::from_secs(180));
    assert_eq!(executed["expired"], serde_json::json!([purged["snapshot"]]), "{executed}");
    assert_eq!(executed["kept_held"], serde_json::json!([held["snapshot"]]), "{executed}");
    assert_eq!(executed["signers"], serde_json::json!(["alice", "bob"]), "{executed}");
    assert_sealed_exactly(&mut box_, &[(&held, &trees[0]), (&other, &trees[2])]);
}

#[test]
fn outside_the_window_no_answer_inside_it_strangers_are_refused_and_it_closes_on_time() {
    let mut box_ = Appliance::boot("window-refusals", Boot::Direct);
    let t = now_secs();
    let window = (t + 25, t + 70);
    let spec = PolicySpec { windows: vec![window], pushers: vec![("db-backup".into(), "1GiB".into())], ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);
    let tree = box_.bench.dir.join("tree");
    random_tree(&tree, 2, 10_000, 7);

    let before = box_.push("db-backup", "early", &tree);
    assert_eq!(before.status.code(), Some(5), "before the window: {}", String::from_utf8_lossy(&before.stderr));

    wait_listening(&mut box_.vm);
    // A key the policy does not list.
    let stranger = box_.push("log-backup", "intruder", &tree);
    assert_eq!(stranger.status.code(), Some(3), "unknown key: {}", String::from_utf8_lossy(&stranger.stderr));
    let refused = box_.vm.wait_event("session_refused", EVENT_WAIT);
    println!("unknown pusher key: {}", refused["reason"]);
    // A pusher that pins the wrong vault key talks to nobody.
    let alice = std::fs::read_to_string(box_.bench.artifacts.keys.join("alice.pub")).unwrap();
    let wrong = qemu_tests::push(&box_.net, &box_.bench, "db-backup", alice.trim(), "misled", &tree);
    assert_eq!(wrong.status.code(), Some(3), "wrong vault key: {}", String::from_utf8_lossy(&wrong.stderr));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("TLS"), "{}", String::from_utf8_lossy(&wrong.stderr));

    // No valid push: the window closes at its end, and then nobody answers again.
    let closing = box_.vm.wait_for("the window's end", EVENT_WAIT, |e| e["event"] == "state_changed" && e["to"] == "closing");
    let down = box_.vm.wait_event("link_down", EVENT_WAIT);
    let down_seen = unix_now();
    let after = box_.push("db-backup", "late", &tree);
    assert_eq!(after.status.code(), Some(5), "after the window: {}", String::from_utf8_lossy(&after.stderr));

    let frames = box_.finish_capture();
    assert_eq!(unsolicited(&frames), Vec::<String>::new());
    let replies = arp_replies(&frames);
    assert!(!replies.is_empty(), "the vault never answered inside its window");
    // In-flight sessions may hold the link up to close.grace past the end: until link_down.
    assert_eq!(replies_outside(&replies, &[(window.0 as f64, down_seen.max(window.1 as f64))]), Vec::<f64>::new());
    let last = replies.iter().copied().fold(f64::MIN, f64::max);
    println!("window end -> last ARP reply: {:+.0} ms (link_down seen by the harness {:+.0} ms)", (last - window.1 as f64) * 1000.0, (down_seen - window.1 as f64) * 1000.0);
    // On time by the vault's own clock, the one its policy runs on. The guest's clock lags
    // the host's by up to a second (the RTC it starts from counts whole seconds), so the
    // wire is held to the link_down the vault printed, not to the host's window end.
    assert_eq!(closing["time"], rfc3339(window.1), "the window closed by the vault's clock: {closing}");
    assert!([rfc3339(window.1), rfc3339(window.1 + 1)].contains(&down["time"].as_str().unwrap_or_default().to_string()), "the link went down within a second of the window end: {down}");
    box_.vm.pass();
}

#[test]
fn two_pushers_within_their_quotas_and_one_over_it() {
    let mut box_ = Appliance::boot("quotas", Boot::Direct);
    let t = now_secs();
    let window = (t + 20, t + 80);
    let pushers = vec![("db-backup".into(), "1GiB".into()), ("web-backup".into(), "1GiB".into()), ("log-backup".into(), "200KiB".into())];
    box_.apply_policy(&PolicySpec { windows: vec![window], pushers, ..PolicySpec::new(1, "vault-test") });
    let (db, web, logs) = (box_.bench.dir.join("db"), box_.bench.dir.join("web"), box_.bench.dir.join("logs"));
    random_tree(&db, 3, 200_000, 1);
    random_tree(&web, 3, 50_000, 2);
    random_tree(&logs, 1, 1 << 20, 3);

    wait_listening(&mut box_.vm);
    let a = push_summary(&box_.push("db-backup", "db", &db));
    let b = push_summary(&box_.push("web-backup", "web", &web));
    let over = box_.push("log-backup", "logs", &logs);
    assert_eq!(over.status.code(), Some(3), "over quota: {}", String::from_utf8_lossy(&over.stderr));
    let refused = box_.vm.wait_for("the quota refusal", EVENT_WAIT, |e| e["event"] == "session_refused" && e["reason"].as_str().is_some_and(|r| r.contains("quota")));
    println!("over quota: {}", refused["reason"]);
    // log-backup never committed, so no early close: the window runs to its end.
    box_.vm.wait_event("link_down", EVENT_WAIT);
    let down_seen = unix_now();
    assert!(down_seen >= window.1 as f64 - 1.0, "closed before the window end");
    let frames = box_.finish_capture();
    assert_eq!(unsolicited(&frames), Vec::<String>::new());
    // In-flight sessions may hold the link up to close.grace past the end: until link_down.
    assert_eq!(replies_outside(&arp_replies(&frames), &[(window.0 as f64, down_seen)]), Vec::<f64>::new());

    assert_sealed_exactly(&mut box_, &[(&a, &db), (&b, &web)]);
}

/// The gatekeeper's pause after each seal step (a kernel command line test hook): the
/// harness cuts the power inside it, right after the step it waited for.
const SEAL_STEP_PAUSE: &str = "vault.seal_step_pause_ms=1000";

/// Power cuts after every step of the seal (`POWER_CUT_ROUNDS` rounds of one cut per step:
/// 2 in `make test`, 14 cuts, which keeps it within its hour; 10 in `make soak`), then one in the middle of a big push. After each cut
/// the disk holds exactly the snapshots sealed so far, each restoring byte for byte, with
/// every sealed file immutable on the disk; the next start removes what the cut left half
/// done and re-flags the one directory a cut can catch between its rename and its flag.
#[test]
fn power_cuts_at_every_seal_step_and_mid_push_lose_nothing_sealed() {
    let rounds: usize = std::env::var("POWER_CUT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let mut box_ = Appliance::boot_with("power-cut", Boot::Direct, vec![SEAL_STEP_PAUSE.into()]);
    let hook = box_.vm.wait_anywhere("the test hook's notice", EVENT_WAIT, |e| e["event"] == "alarm" && e["rule"] == "test_hook_enabled");
    assert!(hook["detail"].as_str().unwrap().contains("each seal and collection step pauses 1000 ms"), "{hook}");
    let t = now_secs();
    // One long window, no early close, so every boot finds it open.
    let spec = PolicySpec { windows: vec![(t + 20, t + 20 + 7200)], pushers: vec![("db-backup".into(), "64GiB".into())], early_close: false, ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);
    let vault_key = box_.vm.vault_key();
    let trees = box_.bench.dir.join("trees");

    wait_listening(&mut box_.vm);
    let first_tree = trees.join("first");
    random_tree(&first_tree, 3, 100_000, 11);
    let first = push_summary(&box_.push("db-backup", "first", &first_tree));
    let mut sealed: Vec<(String, std::path::PathBuf)> = vec![(first["snapshot"].as_str().unwrap().to_string(), first_tree)];

    let mut cuts = 0u64;
    for _ in 0..rounds {
        for step in vault_store::SealStep::ALL {
            cuts += 1;
            let case = format!("cut {cuts} after {}", step.name());
            // New content each time, so the seal has a pack to rename and index.
            let tree = trees.join(format!("cut-{cuts}"));
            random_tree(&tree, 2, 80_000, 100 + cuts);
            let mut pushing = qemu_tests::push_command(&box_.net, &box_.bench, "db-backup", &vault_key, &format!("cut{cuts}"), &tree).spawn().unwrap();
            // This push's seal (its snapshot id holds its dataset), not an earlier one's.
            let dataset = format!("-cut{cuts}-");
            let reached = box_.vm.wait_for(&case, EVENT_WAIT, |e| e["event"] == "seal_step" && e["step"] == step.name() && e["snapshot"].as_str().is_some_and(|id| id.contains(&dataset)));
            let disk = box_.vm.power_cut();
            let _ = pushing.kill();
            let _ = pushing.wait();
            let snapshot = reached["snapshot"].as_str().unwrap().to_string();

            // The disk as the cut left it. A rename is durable only at the next fsync, so a
            // cut right after one (the pack's, the snapshot's) may find it done or not: the
            // disk says which, and either must be whole.
            let extracted = box_.bench.dir.join(format!("disk-{cuts}"));
            let (store, flags) = extract_store_with_flags(&disk, &extracted);
            let visible = store.join("snapshots").join(&snapshot).is_dir();
            match step.cmp(&vault_store::SealStep::SnapshotVisible) {
                std::cmp::Ordering::Less => assert!(!visible, "{case}: visible before its rename"),
                std::cmp::Ordering::Equal => {}
                std::cmp::Ordering::Greater => assert!(visible, "{case}: not on the disk after its directory's fsync"),
            }
            if visible {
                sealed.push((snapshot.clone(), tree));
            }
            // Two places a cut can find sealed paths not yet flagged, both re-flagged at the next
            // start: a pack and index live (indexed) but cut before the flags, and a snapshot
            // directory cut between its rename and its flag.
            let unflagged: Vec<String> = match step {
                vault_store::SealStep::IndexWritten => {
                    let new_pack: Vec<String> = flags.iter().filter(|(path, immutable)| path.starts_with("packs/") && !**immutable).map(|(path, _)| path.clone()).collect();
                    assert_eq!(new_pack.len(), 2, "{case}: the cut pack and its index: {new_pack:?}");
                    new_pack
                }
                vault_store::SealStep::SnapshotVisible if visible => vec![format!("snapshots/{snapshot}")],
                _ => vec![],
            };
            let orphans = unindexed_packs(&flags);
            assert!(orphans.is_empty() || step == vault_store::SealStep::PackRenamed, "{case}: packs without an index: {orphans:?}");
            let expected: Vec<(String, &Path)> = sealed.iter().map(|(id, tree)| (id.clone(), tree.as_path())).collect();
            assert_store_holds(&box_, &store, &flags, &expected, &unflagged);
            let _ = std::fs::remove_dir_all(&extracted);

            box_.reboot_on(&format!("power-cut-{cuts}"), disk);
            let opened = box_.vm.wait_event("store_opened", EVENT_WAIT);
            println!("{case}: {opened}");
            assert_eq!(opened["snapshots"], sealed.len(), "{case}: {opened}");
            assert_eq!(opened["immutable_fixed"], serde_json::json!(unflagged), "{case}: the start re-flags what the cut left unflagged");
            assert_eq!(opened["orphan_packs_removed"], orphans.len(), "{case}: the start removes the pack the cut left without an index: {opened}");
            wait_listening(&mut box_.vm);
        }
    }

    // A cut in the middle of a big push.
    let big = trees.join("big");
    random_tree(&big, 8, 4 << 20, 12);
    let mut pushing = qemu_tests::push_command(&box_.net, &box_.bench, "db-backup", &vault_key, "big", &big).spawn().unwrap();
    box_.vm.wait_event("session_accepted", EVENT_WAIT);
    std::thread::sleep(Duration::from_secs(3));
    box_.power_cut_and_reboot("power-cut-mid-push");
    let _ = pushing.kill();
    let _ = pushing.wait();
    let opened = box_.vm.wait_event("store_opened", EVENT_WAIT);
    assert_eq!(opened["snapshots"], sealed.len(), "the interrupted push is not visible: {opened}");
    println!("after {cuts} seal-step cuts and one mid-push cut: {opened}");

    // The vault takes pushes again, and everything sealed restores.
    wait_listening(&mut box_.vm);
    let last_tree = trees.join("last");
    random_tree(&last_tree, 2, 50_000, 13);
    let last = push_summary(&box_.push("db-backup", "last", &last_tree));
    // Every boot on one wire: nothing the egress rule forbids, ever.
    assert_eq!(unsolicited(&box_.finish_capture()), Vec::<String>::new());
    let summaries: Vec<serde_json::Value> = sealed.iter().map(|(id, _)| serde_json::json!({ "snapshot": id })).collect();
    let mut pushes: Vec<(&serde_json::Value, &Path)> = summaries.iter().zip(&sealed).map(|(summary, (_, tree))| (summary, tree.as_path())).collect();
    pushes.push((&last, &last_tree));
    assert_sealed_exactly(&mut box_, &pushes);
}

/// Rebooting with the vault's clock a day and an hour past now: retention and the collection's
/// grace have run out for everything pushed so far.
fn a_day_later() -> Vec<String> {
    vec!["-rtc".into(), format!("base={}", rfc3339(now_secs() + 25 * 3600).trim_end_matches('Z'))]
}

/// Writes `files` (name, bytes) as a tree at `root`.
fn tree_of(root: &Path, files: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(root).unwrap();
    for (name, bytes) in files {
        std::fs::write(root.join(name), bytes).unwrap();
    }
}

/// Power cuts inside garbage collection and repack, at the steps that matter, one per boot: the
/// index of a dead pack removed, the dead pack removed, the new pack of a repack fsynced in
/// staging, renamed into place without its index, indexed (not yet flagged), then the old packs
/// it replaces losing their index and their pack. Eleven snapshots of one dataset are pushed,
/// then all but the newest expire (`keep_last = 1`) once the box's clock is a day on: five left
/// only dead packs, five left packs mostly dead whose small file the newest still needs. After
/// every cut the disk holds the newest snapshot whole (it restores byte for byte, every live
/// pack flagged but the one the cut caught), and the next start cleans what the cut left; the
/// last boot finishes the collection, leaving two packs.
#[test]
fn power_cuts_inside_garbage_collection_and_repack_lose_no_live_snapshot() {
    let mut box_ = Appliance::boot("gc-power-cut", Boot::Direct);
    let t = now_secs();
    let spec = PolicySpec {
        windows: vec![(t + 20, t + 170)],
        pushers: vec![("db-backup".into(), "1GiB".into())],
        early_close: false,
        retain: "60s".into(),
        keep_last: Some(1),
        ..PolicySpec::new(1, "vault-test")
    };
    box_.apply_policy(&spec);
    wait_listening(&mut box_.vm);
    let trees = box_.bench.dir.join("trees");
    let small = |k: u64| (format!("small-{k}.bin"), pseudo_random_bytes(20_000, 0x5a00 + k));
    let big = |k: u64| (format!("big-{k}.bin"), pseudo_random_bytes(300_000, 0xb100 + k));
    for k in 0..5 {
        // A pack only expired snapshots need, and one the newest still needs a twentieth of.
        for (name, files) in [(format!("dead-{k}"), vec![big(k)]), (format!("mostly-dead-{k}"), vec![big(10 + k), small(k)])] {
            tree_of(&trees.join(&name), &files);
            push_summary(&box_.push("db-backup", "nightly", &trees.join(&name)));
        }
    }
    // Receipts carry whole seconds: the newest must be newer by one.
    std::thread::sleep(Duration::from_millis(1100));
    let newest_tree = trees.join("newest");
    tree_of(&newest_tree, &[(0..5).map(small).collect::<Vec<_>>(), vec![(String::from("own.bin"), pseudo_random_bytes(40_000, 0x0e))]].concat());
    let newest = push_summary(&box_.push("db-backup", "nightly", &newest_tree));
    let newest_id = newest["snapshot"].as_str().unwrap().to_string();
    box_.vm.wait_for("the window's close", Duration::from_secs(240), |e| e["event"] == "state_changed" && e["to"] == "sealed");
    box_.vm.wait_event("garbage_collected", EVENT_WAIT);

    // From here every boot is a day on, and pauses a second after each collection step.
    box_.cmdline_extra = vec![SEAL_STEP_PAUSE.into()];
    let disk = box_.vm.shut_off();
    box_.reboot_with("gc-power-cut-1", disk, a_day_later());
    let plan = ["index_removed", "pack_removed", "index_removed", "pack_removed", "copy_durable", "copy_renamed", "copy_indexed", "index_removed", "pack_removed", "index_removed", "pack_removed"];
    for (n, step) in plan.iter().enumerate() {
        let case = format!("cut {} after {step}", n + 1);
        let reached = box_.vm.wait_for(&case, Duration::from_secs(180), |e| e["event"] == "gc_step" || e["event"] == "garbage_collected");
        assert_eq!(reached["event"], "gc_step", "{case}: the collection ended before it: {reached}");
        // Steps of this boot before the planned one pass; the cut comes at the first of its kind.
        let reached =
            if reached["step"] == *step { reached } else { box_.vm.wait_for(&case, Duration::from_secs(60), |e| (e["event"] == "gc_step" && e["step"] == *step) || e["event"] == "garbage_collected") };
        assert_eq!(reached["step"], *step, "{case}: {reached}");
        let disk = box_.vm.power_cut();

        let extracted = box_.bench.dir.join(format!("gc-disk-{}", n + 1));
        let (store, flags) = extract_store_with_flags(&disk, &extracted);
        let pack = reached["pack"].as_str().unwrap().to_string();
        // Indexed but not yet flagged: the new pack the cut caught (the next start flags it).
        let unflagged: Vec<String> = if *step == "copy_indexed" { vec![format!("packs/{pack}.pack"), format!("packs/{pack}.idx")] } else { vec![] };
        // A pack whose index is gone (durably: `packs/` is fsynced after the unlink), or a new
        // pack renamed in: a rename is durable only at the next fsync, so the cut may find it
        // still in staging.
        let orphans = unindexed_packs(&flags);
        let orphan = vec![format!("packs/{pack}.pack")];
        match *step {
            "index_removed" => assert_eq!(orphans, orphan, "{case}"),
            "copy_renamed" => assert!(orphans.is_empty() || orphans == orphan, "{case}: {orphans:?}"),
            _ => assert_eq!(orphans, Vec::<String>::new(), "{case}"),
        }
        assert_store_holds(&box_, &store, &flags, &[(newest_id.clone(), newest_tree.as_path())], &unflagged);
        let _ = std::fs::remove_dir_all(&extracted);

        box_.reboot_with(&format!("gc-power-cut-{}", n + 2), disk, a_day_later());
        let opened = box_.vm.wait_event("store_opened", EVENT_WAIT);
        println!("{case} ({pack}): {opened}");
        assert_eq!(opened["snapshots"], 1, "{case}: {opened}");
        assert_eq!(opened["orphan_packs_removed"], orphans.len(), "{case}: the start removes the pack without an index: {opened}");
        let mut fixed: Vec<String> = opened["immutable_fixed"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
        fixed.sort();
        let mut expected_fixed = unflagged.clone();
        expected_fixed.sort();
        assert_eq!(fixed, expected_fixed, "{case}: {opened}");
        assert!(!box_.vm.events().iter().any(|e| e["event"] == "alarm" && e["rule"] == "pack_index_lost"), "{case}: no false alarm");
    }
    let done = box_.vm.wait_for("the collection's end", Duration::from_secs(180), |e| e["event"] == "garbage_collected");
    println!("after {} cuts: {done}", plan.len());
    assert!(done["repack_skipped"].as_array().unwrap().is_empty(), "{done}");
    let disk = box_.vm.shut_off();
    let (store, flags) = extract_store_with_flags(&disk, &box_.bench.dir.join("gc-final"));
    assert_store_holds(&box_, &store, &flags, &[(newest_id.clone(), newest_tree.as_path())], &[]);
    let packs: Vec<&String> = flags.keys().filter(|p| p.starts_with("packs/") && p.ends_with(".pack")).collect();
    // The newest's own pack, and the one the repack wrote with the five small files.
    assert_eq!(packs.len(), 2, "{packs:?}");
    let pack_bytes: u64 = packs.iter().map(|p| std::fs::metadata(store.join(p)).unwrap().len()).sum();
    assert!(pack_bytes < 200_000, "every big file is gone: {pack_bytes} bytes of packs");
}

/// Rot on the disk: one bit of a pack flipped on the disk image itself, past the filesystem and
/// its immutable flag, while the box is off. A day later (the policy scrubs daily) the scrub
/// names the pack, the chunk and the snapshot that has no good copy of it; the next push of the
/// same data in a new window stores the chunk again (`chunks_healed`), and both snapshots then
/// restore byte for byte from the disk.
#[test]
fn a_bit_flipped_on_the_disk_is_named_by_scrub_and_healed_by_the_next_push() {
    let mut box_ = Appliance::boot("scrub-heal", Boot::Direct);
    let t = now_secs();
    let spec = PolicySpec {
        windows: vec![(t + 20, t + 60)],
        pushers: vec![("db-backup".into(), "1GiB".into())],
        early_close: true,
        scrub_every: Some("1d".into()),
        drill: Some(("1d".into(), 2)),
        ..PolicySpec::new(1, "vault-test")
    };
    box_.apply_policy(&spec);
    wait_listening(&mut box_.vm);
    let tree = box_.bench.dir.join("tree");
    random_tree(&tree, 4, 200_000, 0x5c);
    let first = push_summary(&box_.push("db-backup", "files", &tree));
    box_.vm.wait_for("the early close", EVENT_WAIT, |e| e["event"] == "state_changed" && e["to"] == "sealed");
    let disk = box_.vm.shut_off();

    // The biggest pack, one bit in its middle.
    let store = qemu_tests::extract_store(&disk, &box_.bench.dir.join("before-rot"));
    let (pack, len) = std::fs::read_dir(store.join("packs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .max_by_key(|(_, len)| *len)
        .unwrap();
    let stem = pack.trim_end_matches(".pack").to_string();
    let rotten = qemu_tests::flip_byte_in_store(&disk, &box_.bench.dir.join("rot"), &format!("packs/{pack}"), len / 2, 0x10);
    box_.reboot_with("scrub-heal-2", rotten, a_day_later());
    let alarm = box_.vm.wait_for("the scrub's alarm", Duration::from_secs(180), |e| e["event"] == "alarm" && e["rule"] == "scrub_found_damage");
    let scrubbed = box_.vm.wait_event("scrub_finished", EVENT_WAIT);
    println!("{alarm}\n{scrubbed}");
    let found = scrubbed["found"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{scrubbed}");
    assert!(found[0].as_str().unwrap().contains(&format!("pack {stem}")), "the pack is named: {scrubbed}");
    assert_eq!(scrubbed["unrecoverable_chunks"], 1, "{scrubbed}");
    assert_eq!(scrubbed["snapshots_affected"], serde_json::json!([first["snapshot"]]), "the snapshot is named: {scrubbed}");
    assert!(alarm["detail"].as_str().unwrap().contains(first["snapshot"].as_str().unwrap()), "{alarm}");
    // The day's restore drill rebuilds the snapshot and fails on the same chunk: the report (in
    // the audit log, signed) and the alarm name the snapshot and the chunk.
    let drill_alarm = box_.vm.wait_for("the drill's alarm", EVENT_WAIT, |e| e["event"] == "alarm" && e["rule"] == "drill_failed");
    let drilled = box_.vm.wait_event("drill_finished", EVENT_WAIT);
    println!("{drill_alarm}\n{drilled}");
    assert_eq!((drilled["snapshots"].clone(), drilled["errors"].as_u64() > Some(0)), (serde_json::json!([first["snapshot"]]), true), "{drilled}");
    let bad_chunk = found[0].as_str().unwrap().split("chunk ").nth(1).and_then(|rest| rest.split(':').next()).unwrap().to_string();
    let detail = drill_alarm["detail"].as_str().unwrap();
    assert!(detail.contains(first["snapshot"].as_str().unwrap()) && detail.contains(&bad_chunk), "{drill_alarm} names {bad_chunk}");

    // A new window a day on (the box's clock), the same data pushed again: the chunk is sent.
    let later = now_secs() + 25 * 3600;
    let again = PolicySpec { version: 2, windows: vec![(later + 20, later + 90)], ..spec.clone() };
    box_.apply_policy(&again);
    wait_listening(&mut box_.vm);
    let second = push_summary(&box_.push("db-backup", "files", &tree));
    let healed = box_.vm.wait_event("chunks_healed", EVENT_WAIT);
    assert_eq!(healed["snapshot"], second["snapshot"], "{healed}");
    assert_eq!(healed["chunks"].as_array().unwrap().len(), 1, "{healed}");
    box_.vm.wait_for("the early close", EVENT_WAIT, |e| e["event"] == "state_changed" && e["to"] == "sealed");
    // The receipt carried the vault's audit checkpoint across the reboot, proven to extend the
    // one the first receipt brought out.
    assert_eq!((second["audit_log"]["consistent"].clone(), second["audit_log"]["from"].clone()), (serde_json::json!(true), first["audit_log"]["entries"].clone()), "{second:#}");
    assert_sealed_exactly(&mut box_, &[(&first, &tree), (&second, &tree)]);
    // Offline, the listing says which snapshot the last drill found broken (from the signed
    // report in the audit log), though the push has since healed it.
    let listing = std::process::Command::new(box_.bench.artifacts.vaultctl())
        .args(["snapshots", "--json", "--store"])
        .arg(box_.bench.dir.join("extracted/store"))
        .args(["--vault-key", &box_.vm.vault_key()])
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&listing.stdout).unwrap();
    let first_row = rows.iter().find(|r| r["snapshot"] == first["snapshot"]).unwrap();
    assert_eq!(first_row["last_drill"]["clean"], false, "{first_row}");

    // The disk as it was after the first push, booted again (an older image put back): its
    // audit log is older than the checkpoint the pusher now holds. The vault cannot tell; the
    // next push is sealed, and the pusher says the log is not consistent (exit 7).
    box_.reboot_with("scrub-heal-rewound", disk, a_day_later());
    let later = now_secs() + 25 * 3600;
    box_.apply_policy(&PolicySpec { version: 2, windows: vec![(later + 20, later + 90)], ..spec.clone() });
    wait_listening(&mut box_.vm);
    let rewound = box_.push("db-backup", "files", &tree);
    let said = String::from_utf8_lossy(&rewound.stderr);
    println!("the pusher said: {said}");
    assert_eq!(rewound.status.code(), Some(7), "{said}");
    assert!(said.contains("audit log not consistent") && said.contains(&format!("the {} ", second["audit_log"]["entries"])), "{said}");
}

/// The files of an export medium image's FAT partition, copied out with mtools (no mount).
fn medium_files(image: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    qemu_tests::run_ok(std::process::Command::new("mcopy").args(["-s", "-n", "-i"]).arg(format!("{}@@1M", image.display())).arg("::/vault-exports").arg(into));
}

#[test]
fn an_export_order_writes_an_encrypted_copy_onto_a_usb_disk_that_survives_a_pull_and_restores_on_the_host() {
    // The seal-step hook also pauses after each file of an export, so the disk can be pulled mid-write.
    let mut box_ = Appliance::boot_with("export", Boot::Direct, vec!["vault.seal_step_pause_ms=600".into()]);
    let t = now_secs();
    let spec = PolicySpec { windows: vec![(t + 20, t + 80)], pushers: vec![("db-backup".into(), "1GiB".into())], ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);
    wait_listening(&mut box_.vm);
    let tree = box_.bench.dir.join("tree");
    sample_tree(&tree, 0x17);
    let pushed = push_summary(&box_.push("db-backup", "pgdump", &tree));
    box_.vm.wait_for("the window's close", Duration::from_secs(120), |e| e["event"] == "state_changed" && e["to"] == "sealed");

    // The admins' side: a medium, a recipient, an export order on a stick.
    let vaultctl = box_.bench.artifacts.vaultctl();
    let medium = box_.bench.dir.join("medium.img");
    let medium_id = qemu_tests::run_ok(std::process::Command::new(&vaultctl).args(["media", "init", "--label", "weekly-a", "--size", "64MiB", "--out"]).arg(&medium)).trim().to_string();
    let identity = box_.bench.dir.join("identity.txt");
    qemu_tests::run_ok(std::process::Command::new("age-keygen").arg("-o").arg(&identity));
    let recipient = qemu_tests::run_ok(std::process::Command::new("age-keygen").arg("-y").arg(&identity)).trim().to_string();
    let order = box_.bench.order(
        "export",
        &["--kind", "export", "--serial", "1", "--dataset", "db-backup/pgdump", "--medium", &medium_id, "--recipient", &recipient, "--reason", "weekly off-site copy"],
        &["alice", "bob"],
    );
    let stick = box_.bench.order_stick("orders", &[order]);
    let id = box_.vm.plug_stick(&stick);
    let accepted = box_.vm.wait_event("order_accepted", EVENT_WAIT);
    box_.vm.unplug_stick(&id);
    assert_eq!(accepted["kind"], "export", "{accepted}");

    // Pulled while the vault writes to it: the export is abandoned, the vault goes on sealed.
    let disk = box_.vm.plug_usb_disk(&medium, true);
    let step = box_.vm.wait_event("export_step", EVENT_WAIT);
    println!("pulled after {}", step["file"]);
    box_.vm.unplug_stick(&disk);
    let failed = box_.vm.wait_event("export_failed", EVENT_WAIT);
    println!("export_failed: {}", failed["reason"]);
    box_.vm.wait_for("the alarm", EVENT_WAIT, |e| e["event"] == "alarm" && e["rule"] == "export_failed");
    box_.vm.wait_for("a sealed status after the pull", EVENT_WAIT, |e| e["event"] == "status" && e["state"] == "sealed");

    // Inserted again: the order is still pending; the unfinished export is removed first.
    let disk = box_.vm.plug_usb_disk(&medium, true);
    let written = box_.vm.wait_event("export_written", Duration::from_secs(240));
    box_.vm.unplug_stick(&disk);
    println!("export_written: {written}");
    assert_eq!(written["snapshots"], serde_json::json!([pushed["snapshot"]]), "{written}");
    assert_eq!(written["medium_name"], "weekly-a");
    assert_eq!(written["removed_unfinished"].as_array().map(Vec::len), Some(1), "{written}");

    // On the host: the medium verified without a secret, a pack decrypted by stock age, the
    // snapshot restored byte for byte.
    let copied = box_.bench.dir.join("medium-files");
    medium_files(&medium, &copied);
    let vault_key = box_.vm.vault_key();
    let verified = qemu_tests::run_ok(std::process::Command::new(&vaultctl).args(["export", "verify", "--vault-key", &vault_key]).arg(&copied));
    println!("{verified}");
    assert!(verified.contains("every file as signed"), "{verified}");
    let export_dir = copied.join("vault-exports").join(written["export"].as_str().unwrap());
    let pack = std::fs::read_dir(export_dir.join("store/packs")).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(".pack.age")).expect("an encrypted pack");
    let plain = std::process::Command::new("age").arg("-d").arg("-i").arg(&identity).arg(&pack).output().unwrap();
    assert!(plain.status.success() && !plain.stdout.is_empty(), "{}", String::from_utf8_lossy(&plain.stderr));
    let to = box_.bench.dir.join("restored");
    let snapshot = pushed["snapshot"].as_str().unwrap();
    qemu_tests::run_ok(
        std::process::Command::new(&vaultctl).args(["restore", "--vault-key", &vault_key, "--snapshot", snapshot, "--identity"]).arg(&identity).arg("--export").arg(&export_dir).arg("--to").arg(&to),
    );
    assert_eq!(describe(&to), describe(&tree), "the export restores the pushed tree byte for byte");

    // Tampered with while away (one byte of a pack changed on the disk), then brought back
    // for another export: refused with an alarm, nothing written or removed.
    let image = format!("{}@@1M", medium.display());
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let on_medium = format!("::/vault-exports/{}/store/packs/{pack_name}", written["export"].as_str().unwrap());
    let mut bytes = std::fs::read(&pack).unwrap();
    bytes[200] ^= 0x01;
    let tampered = box_.bench.dir.join("tampered.age");
    std::fs::write(&tampered, &bytes).unwrap();
    qemu_tests::run_ok(std::process::Command::new("mcopy").args(["-o", "-i", &image]).arg(&tampered).arg(&on_medium));
    let again = box_.bench.order(
        "export2",
        &["--kind", "export", "--serial", "2", "--dataset", "db-backup/pgdump", "--medium", &medium_id, "--recipient", &recipient, "--reason", "next week"],
        &["alice", "bob"],
    );
    let stick = box_.bench.order_stick("orders2", &[again]);
    let id = box_.vm.plug_stick(&stick);
    box_.vm.wait_event("order_accepted", EVENT_WAIT);
    box_.vm.unplug_stick(&id);
    let disk = box_.vm.plug_usb_disk(&medium, true);
    let verified = box_.vm.wait_event("medium_verified", Duration::from_secs(240));
    let alarm = box_.vm.wait_for("the tamper alarm", EVENT_WAIT, |e| e["event"] == "alarm" && e["rule"] == "medium_tampered");
    box_.vm.unplug_stick(&disk);
    println!("medium_verified: {verified}");
    assert!(verified["problems"].as_array().is_some_and(|p| p.iter().any(|p| p.as_str().unwrap_or_default().contains(&format!("{pack_name}: hashes to")))), "{verified}");
    assert!(alarm["detail"].as_str().unwrap_or_default().contains("nothing on it was overwritten or removed"), "{alarm}");
    assert!(!box_.vm.events().iter().any(|e| e["event"] == "export_written" && e["order"] != written["order"]), "nothing new was written");
    let after = box_.bench.dir.join("medium-files-after");
    medium_files(&medium, &after);
    let listed = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("vault-exports")).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        names
    };
    assert_eq!(listed(&after), listed(&copied), "the medium holds what it held");
    box_.vm.pass();
}

/// Issue 18: quiet nights of a document share, then a night on which a third of it was
/// encrypted in place. The real image seals that push all the same, marks its receipt
/// suspect with the signals that fired, says so on the console (`snapshot_suspect` and the
/// `anomaly` alarm), holds the dataset in its state, and `vaultctl push` exits 8.
#[test]
fn an_encrypted_night_is_sealed_marked_suspect_in_its_receipt_and_alarmed_on_the_console() {
    let mut box_ = Appliance::boot("signals", Boot::Direct);
    let t = now_secs();
    let spec = PolicySpec { windows: vec![(t + 20, t + 600)], pushers: vec![("db-backup".into(), "1GiB".into())], early_close: false, ..PolicySpec::new(1, "vault-test") };
    box_.apply_policy(&spec);
    let share = box_.bench.dir.join("share");
    test_net::document_share(&share, 60);
    wait_listening(&mut box_.vm);
    for night in 0..3u64 {
        for i in 0..3 {
            std::fs::write(test_net::share_document(&share, night * 3 + i), test_net::prose(9_000, 500 + night * 10 + i)).unwrap();
        }
        let quiet = push_summary(&box_.push("db-backup", "share", &share));
        assert_eq!(quiet["suspect"], false, "{quiet:#}");
    }
    for i in (0..60).step_by(3) {
        test_net::encrypt_in_place(&test_net::share_document(&share, i), u8::try_from(i).unwrap());
    }
    let out = box_.push("db-backup", "share", &share);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("judged it suspect") && stderr.contains("turned_incompressible: 20 files"), "{stderr}");
    let sealed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(sealed["receipt"].as_str().unwrap()).unwrap()).unwrap();
    let body: serde_json::Value = serde_json::from_str(receipt["receipt"].as_str().unwrap()).unwrap();
    assert_eq!((body["suspect"].as_bool(), body["signals"][0]["signal"].as_str()), (Some(true), Some("turned_incompressible")), "{body:#}");
    let snapshot = sealed["snapshot"].as_str().unwrap();
    let suspect = box_.vm.wait_event("snapshot_suspect", EVENT_WAIT);
    assert_eq!((suspect["snapshot"].as_str(), suspect["dataset"].as_str()), (Some(snapshot), Some("share")), "{suspect}");
    let alarm = box_.vm.wait_for("anomaly alarm", EVENT_WAIT, |e| e["event"] == "alarm" && e["rule"] == "anomaly");
    assert!(alarm["detail"].as_str().unwrap().contains("release order"), "{alarm}");
    box_.vm.pass();
}
