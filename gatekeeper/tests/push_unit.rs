//! The packaged push unit, as systemd runs it: `vaultctl-push@nightly.service`'s ExecStart,
//! word for word, with only the unit's system paths pointed into the test (the binary, and the
//! config file in /etc), and the environment systemd gives it (`$STATE_DIRECTORY`,
//! `$CACHE_DIRECTORY`). Started before the vault's window, it waits for the window from the
//! profile's policy copy, pushes the profile's source with its excludes, and keeps the receipt
//! under the state directory, where `vaultctl receipts verify` checks it against the store.
//! Needs root (network namespaces). systemd itself is not PID 1 on the test machines, so the
//! unit file's own syntax is checked by `systemd-analyze verify` in scripts/test-deb.sh.

mod support;

use std::path::Path;
use std::process::Command;

use support::{is_root, unix_now_secs_ceil, vaultctl_bin, Daemon, Net, Vault, VaultSpec};

/// The unit's ExecStart for instance `instance`, split into words, its system paths replaced.
fn exec_start(instance: &str, config: &Path) -> Vec<String> {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/systemd/vaultctl-push@.service")).unwrap();
    let line = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("the unit has an ExecStart line");
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| match w {
            "/usr/bin/vaultctl" => vaultctl_bin().display().to_string(),
            "/etc/vaultctl/vaultctl.toml" => config.display().to_string(),
            other => other.replace("%i", instance),
        })
        .collect();
    assert!(words.windows(2).any(|w| w == ["--profile", instance]) && words.iter().any(|w| w == "--wait-for-window"), "{words:?}");
    words
}

#[test]
fn the_packaged_unit_waits_for_the_window_and_pushes_its_profile() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let net = Net::new("pushunit");
    let start = unix_now_secs_ceil();
    let spec = VaultSpec { window: (start + 4, start + 600), pushers: vec![("db", "1GiB")], early: false, grace: "5s", datasets: vec![] };
    let vault = Vault::build(spec);
    let daemon = Daemon::start(&net, &vault);

    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("dumps");
    std::fs::create_dir_all(source.join("tmp")).unwrap();
    std::fs::write(source.join("app.sql"), "INSERT INTO t VALUES (1);\n".repeat(1000)).unwrap();
    std::fs::write(source.join("tmp/partial.tmp"), b"half a dump").unwrap();
    let config = work.path().join("vaultctl.toml");
    std::fs::write(
        &config,
        format!(
            "[profile.nightly]\nvault = \"192.0.2.10:7400\"\nvault_key = \"{}\"\nkey = \"{}\"\ndataset = \"app\"\nsource = \"{}\"\nexclude = [\"*.tmp\"]\npolicy = \"{}\"\nroot = \"{}\"\n",
            vault.identity(),
            vault.pusher_key("db").display(),
            source.display(),
            vault.dir.path().join("policy.bundle").display(),
            vault.root().display()
        ),
    )
    .unwrap();
    let (state, cache) = (work.path().join("var/lib/vaultctl"), work.path().join("var/cache/vaultctl"));
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&cache).unwrap();

    let words = exec_start("nightly", &config);
    let out = Command::new("ip").args(["netns", "exec", &net.peer_ns]).args(&words).env("STATE_DIRECTORY", &state).env("CACHE_DIRECTORY", &cache).env_remove("XDG_CONFIG_HOME").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the unit's push failed ({:?}): {stderr}", out.status.code());
    assert!(stderr.contains("the window is closed; waiting until"), "started before the window, it waited: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sealed ") && stdout.contains(" in vault "), "{stdout}");

    // The receipt under $STATE_DIRECTORY, the cache under $CACHE_DIRECTORY, the excluded file left out.
    let receipts = state.join("receipts");
    let kept: Vec<_> = std::fs::read_dir(&receipts).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(std::fs::read_dir(&cache).unwrap().count() == 1, "the chunk cache is under $CACHE_DIRECTORY");
    let signed = vault_core::push::receipt::SignedReceipt::from_file_bytes(&std::fs::read(&kept[0]).unwrap()).unwrap();
    let receipt = vault_core::push::receipt::Receipt::from_bytes(&signed.body).unwrap();
    assert_eq!((receipt.dataset.as_str(), receipt.files), ("app", 1), "one file pushed, the .tmp excluded: {receipt:?}");
    let verify = Command::new(vaultctl_bin()).args(["receipts", "verify", "--receipts"]).arg(&receipts).args(["--vault-key", &vault.identity(), "--store"]).arg(vault.store()).output().unwrap();
    assert!(verify.status.success(), "{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    daemon.stop();
}
