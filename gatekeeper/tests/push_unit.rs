//! The packaged push unit, as systemd runs it: `vaultctl-push@nightly.service`'s ExecStart,
//! word for word, with only the unit's system paths pointed into the test (the binary, and the
//! config file in /etc), and the environment systemd gives it (`$STATE_DIRECTORY`,
//! `$CACHE_DIRECTORY`). Started before the vault's window, it waits for the window from the
//! profile's policy copy, pushes the profile's source with its excludes, and keeps the receipt
//! under the state directory, where `vaultctl receipts verify` checks it against the store.
//! Needs root (network namespaces). systemd itself is not PID 1 on the test machines, so the
//! unit file's own syntax is checked by `systemd-analyze verify` in scripts/test-deb.sh, and
//! [`the_installed_package_pushes_from_a_systemd_timer_unit`] (ignored here; `make
//! test-systemd` runs it while the package is installed) boots a real systemd in a container.

mod support;

use std::path::Path;
use std::process::Command;

use support::{is_root, unix_now_secs_ceil, vaultctl_bin, Daemon, Net, Vault, VaultSpec};

/// The profile `nightly` of a vault's pusher `db`: its source (one SQL dump and a `.tmp` file
/// to leave out) and the vault's policy copy, written under `work`; returns the config file.
fn nightly_profile(vault: &Vault, work: &Path) -> std::path::PathBuf {
    let source = work.join("dumps");
    std::fs::create_dir_all(source.join("tmp")).unwrap();
    std::fs::write(source.join("app.sql"), "INSERT INTO t VALUES (1);\n".repeat(1000)).unwrap();
    std::fs::write(source.join("tmp/partial.tmp"), b"half a dump").unwrap();
    let config = work.join("vaultctl.toml");
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
    config
}

/// The one receipt in `receipts`: for dataset `app`, one file (the `.tmp` excluded), and
/// verified by `vaultctl receipts verify` against the vault's store.
fn check_receipt(vault: &Vault, receipts: &Path) {
    let kept: Vec<_> = std::fs::read_dir(receipts).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let signed = vault_core::push::receipt::SignedReceipt::from_file_bytes(&std::fs::read(&kept[0]).unwrap()).unwrap();
    let receipt = vault_core::push::receipt::Receipt::from_bytes(&signed.body).unwrap();
    assert_eq!((receipt.dataset.as_str(), receipt.files), ("app", 1), "one file pushed, the .tmp excluded: {receipt:?}");
    let verify = Command::new(vaultctl_bin()).args(["receipts", "verify", "--receipts"]).arg(receipts).args(["--vault-key", &vault.identity(), "--store"]).arg(vault.store()).output().unwrap();
    assert!(verify.status.success(), "{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
}

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
    let config = nightly_profile(&vault, work.path());
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
    check_receipt(&vault, &state.join("receipts"));
    assert!(std::fs::read_dir(&cache).unwrap().count() == 1, "the chunk cache is under $CACHE_DIRECTORY");
    daemon.stop();
}

/// The Debian package installed on this host, its timer unit started by a real systemd: the
/// host's own system booted in a container (`systemd-nspawn --volatile=yes`: a tmpfs root, the
/// host's /usr read-only, so the package's /usr/bin/vaultctl and units), in the pusher's network
/// namespace, with the profile in /etc/vaultctl. A test target starts `vaultctl-push@nightly.timer`
/// and waits for the service it triggers (the timer's schedule is a drop-in with a calendar a
/// second away, as `vaultctl schedule --systemd` writes them), then records its result and powers
/// off. Run by `make test-systemd` (root, the package installed, systemd-container).
#[test]
#[ignore = "needs the package installed and systemd-nspawn: make test-systemd"]
fn the_installed_package_pushes_from_a_systemd_timer_unit() {
    assert!(is_root(), "needs root");
    assert!(Path::new("/usr/bin/vaultctl").exists() && Path::new("/lib/systemd/system/vaultctl-push@.service").exists(), "install the package first (make test-systemd does)");
    let net = Net::new("sysd");
    let start = unix_now_secs_ceil();
    let spec = VaultSpec { window: (start, start + 900), pushers: vec![("db", "1GiB")], early: false, grace: "5s", datasets: vec![] };
    let vault = Vault::build(spec);
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);

    let work = tempfile::tempdir().unwrap();
    let etc = work.path().join("etc-vaultctl");
    std::fs::create_dir(&etc).unwrap();
    // Inside, the test's directories are under /srv (the container's /tmp, and the unit's
    // PrivateTmp=, hide the host's /tmp), and the profile names them there.
    const WORK: &str = "/srv/push-test/work";
    const VAULT: &str = "/srv/push-test/vault";
    let profile = std::fs::read_to_string(nightly_profile(&vault, work.path())).unwrap();
    let profile = profile.replace(&work.path().display().to_string(), WORK).replace(&vault.dir.path().display().to_string(), VAULT);
    std::fs::write(etc.join("vaultctl.toml"), profile).unwrap();
    let (state, results, units) = (work.path().join("var-lib-vaultctl"), work.path().join("results"), work.path().join("units"));
    for dir in [&state, &results, &units] {
        std::fs::create_dir(dir).unwrap();
    }
    // The timer's schedule, as an admin would install it; a calendar a few seconds from now.
    let soon = vault_core::units::Timestamp::from_unix(unix_now_secs_ceil() + 20).unwrap().to_string();
    std::fs::create_dir(units.join("vaultctl-push@nightly.timer.d")).unwrap();
    std::fs::write(units.join("vaultctl-push@nightly.timer.d/windows.conf"), format!("[Timer]\nOnCalendar=\nOnCalendar={} UTC\n", soon.trim_end_matches('Z').replacen('T', " ", 1))).unwrap();
    std::fs::write(units.join("vault-test.target"), "[Unit]\nDescription=the push test\nWants=vaultctl-push@nightly.timer vault-test-done.service\n").unwrap();
    std::fs::write(
        units.join("vault-test-done.service"),
        "[Unit]\nDescription=record the push's result, then power off\n[Service]\nType=oneshot\n\
         ExecStart=/bin/sh -c 'until systemctl show -p ExecMainExitTimestampMonotonic vaultctl-push@nightly.service | grep -q \"=[1-9]\"; do sleep 1; done; \
         systemctl show -p Result -p ExecMainStatus vaultctl-push@nightly.service > /results/status; journalctl -u vaultctl-push@nightly.service --no-pager > /results/journal; systemctl poweroff --no-block'\n",
    )
    .unwrap();

    let mut nspawn = Command::new("systemd-nspawn");
    nspawn.args(["--quiet", "--register=no", "--keep-unit", "--directory=/", "--volatile=yes"]).arg(format!("--network-namespace-path=/run/netns/{}", net.peer_ns));
    let bind = |from: &Path, to: &str, ro: bool| format!("--bind{}={}:{to}", if ro { "-ro" } else { "" }, from.display());
    nspawn.arg(bind(&etc, "/etc/vaultctl", true)).arg(bind(&state, "/var/lib/vaultctl", false)).arg(bind(&results, "/results", false));
    nspawn.arg(bind(work.path(), WORK, true)).arg(bind(vault.dir.path(), VAULT, true));
    for unit in ["vault-test.target", "vault-test-done.service", "vaultctl-push@nightly.timer.d"] {
        nspawn.arg(bind(&units.join(unit), &format!("/etc/systemd/system/{unit}"), true));
    }
    nspawn.args(["--boot", "systemd.unit=vault-test.target", "systemd.firstboot=off"]);
    let booted = Command::new("timeout").arg("180").arg(nspawn.get_program()).args(nspawn.get_args()).output().unwrap();
    let status = std::fs::read_to_string(results.join("status")).unwrap_or_default();
    let journal = std::fs::read_to_string(results.join("journal")).unwrap_or_default();
    assert!(status.contains("Result=success") && status.contains("ExecMainStatus=0"), "the unit's push: {status}\n{journal}\n{}", String::from_utf8_lossy(&booted.stdout));
    assert!(journal.contains("sealed "), "{journal}");
    check_receipt(&vault, &state.join("receipts"));
    daemon.stop();
}
