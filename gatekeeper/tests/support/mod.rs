//! Shared by the host tests: two network namespaces joined by a veth pair (192.0.2.0/24
//! only), a vault's files (trust root, signed policy, state, store), the gatekeeper daemon
//! running in the vault namespace, and the peer side's probes. Needs root.
#![allow(dead_code)] // each test file uses its own part of this

pub mod raw_client;

#[allow(unused_imports)] // each test file uses its own part of the kit
pub use test_net::{describe, in_netns, is_arp_reply, is_root, pseudo_random_bytes, random_tree, sh, unix_now, unix_now_secs, unix_now_secs_ceil, ProbeSite, Prober, Seen};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::keys::SigningKey;
use vault_core::policy::bundle::{Envelope, Payload};
use vault_core::policy::root::{Admin, Caps, TrustRoot};
use vault_core::policy::Policy;
use vault_core::units::Timestamp;

pub const VAULT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Two namespaces and a veth between them; deleted on drop, even when the test fails.
pub struct Net {
    pub vault_ns: String,
    pub peer_ns: String,
}

impl Net {
    pub fn new(tag: &str) -> Net {
        assert!(is_root(), "these tests create network namespaces and must run as root");
        let id = format!("{tag}-{}", std::process::id());
        let net = Net { vault_ns: format!("gk5v-{id}"), peer_ns: format!("gk5p-{id}") };
        sh(&["ip", "netns", "add", &net.vault_ns]);
        sh(&["ip", "netns", "add", &net.peer_ns]);
        sh(&["ip", "-n", &net.peer_ns, "link", "add", "tp0", "type", "veth", "peer", "name", "vault0", "netns", &net.vault_ns]);
        // The peer side: quiet too, so the capture only holds what the test sends and the vault says.
        sh(&["ip", "netns", "exec", &net.peer_ns, "sysctl", "-qw", "net.ipv6.conf.tp0.disable_ipv6=1"]);
        sh(&["ip", "-n", &net.peer_ns, "addr", "add", "192.0.2.1/24", "dev", "tp0"]);
        sh(&["ip", "-n", &net.peer_ns, "link", "set", "tp0", "up"]);
        net
    }

    pub fn link_json(&self) -> serde_json::Value {
        let out = Command::new("ip").args(["-n", &self.vault_ns, "-j", "addr", "show", "vault0"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    }

    pub fn vault_mac(&self) -> [u8; 6] {
        parse_mac(self.link_json()["address"].as_str().unwrap())
    }

    /// The MAC of the peer side (tp0), where the pusher's frames come from.
    pub fn peer_mac(&self) -> [u8; 6] {
        let out = Command::new("ip").args(["-n", &self.peer_ns, "-j", "link", "show", "tp0"]).output().unwrap();
        parse_mac(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0]["address"].as_str().unwrap())
    }
}

/// `02:00:5e:00:00:10` -> bytes.
pub fn parse_mac(text: &str) -> [u8; 6] {
    vault_core::policy::parse_mac(text).unwrap()
}

impl Net {
    /// From the peer namespace, probing the vault address.
    pub fn probe_site(&self) -> ProbeSite {
        ProbeSite { ns: self.peer_ns.clone(), iface: "tp0".into(), peer_ip: PEER_IP, vault_ip: VAULT_IP }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.vault_ns]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.peer_ns]).status();
    }
}

// ---- the vault's files ----------------------------------------------------------------

pub fn new_key() -> SigningKey {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    SigningKey::from_pkcs8(der.as_ref()).unwrap()
}

pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs).unwrap()
}

pub struct Vault {
    pub dir: tempfile::TempDir,
    /// Where `state/` and `store/` are (the appliance's /data): `dir`, unless moved.
    data: PathBuf,
    /// Pusher name -> its secret key file (vaultctl's format), when made with [`VaultSpec`].
    pub pusher_keys: Vec<(String, PathBuf)>,
    /// The trust root's two admins (its threshold is both).
    pub admins: [SigningKey; 2],
}

/// What a test's vault looks like: one one-shot window and its pushers.
pub struct VaultSpec {
    /// [from, until), Unix seconds.
    pub window: (i64, i64),
    /// (name, quota) of each pusher; keys are made with `vaultctl key gen`.
    pub pushers: Vec<(&'static str, &'static str)>,
    pub early: bool,
    pub grace: &'static str,
    /// (pusher, dataset): the datasets each pusher is expected to commit (early close).
    pub datasets: Vec<(&'static str, &'static str)>,
}

/// vaultctl, built beside the gatekeeper by `cargo test --workspace` (the Makefile builds
/// every binary first).
pub fn vaultctl_bin() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_gatekeeper")).with_file_name("vaultctl");
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

impl Vault {
    /// A vault whose accepted policy has one one-shot window [from, until) (Unix seconds)
    /// and one pusher nobody holds the key of.
    pub fn with_window(from: i64, until: i64) -> Vault {
        Vault::build(VaultSpec { window: (from, until), pushers: vec![], early: true, grace: "1s", datasets: vec![] })
    }

    pub fn build(spec: VaultSpec) -> Vault {
        Vault::build_with(spec, "")
    }

    /// [`Vault::build`], with `policy_toml` appended to the policy (more sections).
    pub fn build_with(spec: VaultSpec, policy_toml: &str) -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (new_key(), new_key());
        let root = TrustRoot {
            vault_id: "vault-01".into(),
            version: 1,
            threshold: 2,
            export_threshold: 2,
            admins: vec![Admin::raw("alice", a.public_key()), Admin::raw("bob", b.public_key())],
            caps: Caps::default(),
        };
        let mut pusher_keys = Vec::new();
        let mut pushers_toml = String::new();
        for (name, quota) in &spec.pushers {
            let base = dir.path().join(name);
            let public = vaultctl_key_gen(&base);
            let datasets: Vec<String> = spec.datasets.iter().filter(|(p, _)| p == name).map(|(_, d)| format!("\"{d}\"")).collect();
            pushers_toml += &format!("[[pusher]]\nname = \"{name}\"\nkey = \"{public}\"\nquota = \"{quota}\"\nretain = \"1d\"\ndatasets = [{}]\n", datasets.join(", "));
            pusher_keys.push((name.to_string(), base.with_extension("key")));
        }
        if spec.pushers.is_empty() {
            pushers_toml = format!("[[pusher]]\nname = \"db\"\nkey = \"{}\"\nquota = \"1GiB\"\nretain = \"1d\"\n", new_key().public_key());
        }
        let now = unix_now_secs();
        let policy = Policy::from_toml(&format!(
            r#"
vault_id = "vault-01"
version = 1
issued = "{}"
expires = "{}"
[network]
interface = "vault0"
address = "192.0.2.10/24"
port = 7400
[[window]]
from = "{}"
until = "{}"
{pushers_toml}
[close]
early = {}
grace = "{}"
{policy_toml}
"#,
            ts(now - 60),
            ts(now + 86_400),
            ts(spec.window.0),
            ts(spec.window.1),
            spec.early,
            spec.grace,
        ))
        .unwrap();
        let mut envelope = Envelope::new(&Payload { signed_for_root: root.digest(), policy, new_root: None });
        envelope.sign(&a).unwrap();
        envelope.sign(&b).unwrap();
        std::fs::write(dir.path().join("root.toml"), root.to_toml()).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("policy.bundle"), envelope.to_bytes()).unwrap();
        let data = dir.path().to_path_buf();
        let vault = Vault { dir, data, pusher_keys, admins: [a, b] };
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .arg("--root")
            .arg(vault.root())
            .arg("--state")
            .arg(vault.state())
            .arg("apply-bundle")
            .arg(vault.dir.path().join("policy.bundle"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        vault
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root.toml")
    }

    pub fn state(&self) -> PathBuf {
        self.data.join("state")
    }

    pub fn store(&self) -> PathBuf {
        self.data.join("store")
    }

    /// Moves the state directory (and from now on the store) under `data`: both on one
    /// filesystem, as on the appliance.
    pub fn move_data_to(&mut self, data: &Path) {
        let state = data.join("state");
        std::fs::create_dir_all(&state).unwrap();
        for entry in std::fs::read_dir(self.state()).unwrap() {
            let from = entry.unwrap().path();
            std::fs::copy(&from, state.join(from.file_name().unwrap())).unwrap();
        }
        self.data = data.to_path_buf();
    }

    pub fn pusher_key(&self, name: &str) -> PathBuf {
        self.pusher_keys.iter().find(|(n, _)| n == name).map(|(_, p)| p.clone()).expect("a pusher of this vault")
    }

    /// The vault's public key (made now if this is its first use), as pushers pin it.
    pub fn identity(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper")).arg("--state").arg(self.state()).args(["identity", "--create"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        // Sealed files are immutable: lift that so the temporary directory can go.
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

/// The gatekeeper daemon running in the vault namespace; its events, as they arrive.
pub struct Daemon {
    pub child: Child,
    pub events: Arc<Mutex<Vec<(f64, serde_json::Value)>>>,
}

impl Daemon {
    pub fn start(net: &Net, vault: &Vault) -> Daemon {
        Daemon::start_with(net, vault, &[])
    }

    /// `extra`: more `gatekeeper run` flags (limits).
    pub fn start_with(net: &Net, vault: &Vault, extra: &[&str]) -> Daemon {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.vault_ns, env!("CARGO_BIN_EXE_gatekeeper")])
            .arg("--root")
            .arg(vault.root())
            .arg("--state")
            .arg(vault.state())
            .arg("--store")
            .arg(vault.store())
            .args(["run", "--carrier-timeout-ms", "3000"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                sink.lock().unwrap().push((unix_now(), value));
            }
        });
        let daemon = Daemon { child, events };
        daemon.wait_for("started", 10.0);
        daemon
    }

    pub fn wait_for(&self, event: &str, within_secs: f64) -> (f64, serde_json::Value) {
        let deadline = unix_now() + within_secs;
        loop {
            if let Some(found) = self.events.lock().unwrap().iter().find(|(_, e)| e["event"] == event) {
                return found.clone();
            }
            assert!(unix_now() < deadline, "no `{event}` event within {within_secs}s: {:#?}", self.events.lock().unwrap());
            std::thread::sleep(StdDuration::from_millis(10));
        }
    }

    pub fn wait_for_matching(&self, matches: impl Fn(&serde_json::Value) -> bool, within_secs: f64) -> (f64, serde_json::Value) {
        self.wait_for_matching_after(0, matches, within_secs)
    }

    /// How many events have arrived so far: pass it to the `_after` waits to look only at
    /// what a later action caused.
    pub fn mark(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn wait_for_matching_after(&self, mark: usize, matches: impl Fn(&serde_json::Value) -> bool, within_secs: f64) -> (f64, serde_json::Value) {
        let deadline = unix_now() + within_secs;
        loop {
            if let Some(found) = self.events.lock().unwrap().iter().skip(mark).find(|(_, e)| matches(e)) {
                return found.clone();
            }
            assert!(unix_now() < deadline, "no matching event within {within_secs}s: {:#?}", &self.events.lock().unwrap()[mark..]);
            std::thread::sleep(StdDuration::from_millis(10));
        }
    }

    /// The reason of the first `session_refused` event after `mark`.
    pub fn refusal_after(&self, mark: usize, within_secs: f64) -> String {
        let (_, event) = self.wait_for_matching_after(mark, |e| e["event"] == "session_refused", within_secs);
        event["reason"].as_str().unwrap().to_string()
    }

    /// Events named `event` after `mark`.
    pub fn count_after(&self, mark: usize, event: &str) -> usize {
        self.events.lock().unwrap().iter().skip(mark).filter(|(_, e)| e["event"] == event).count()
    }

    pub fn all(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
    }

    pub fn stop(mut self) -> Vec<serde_json::Value> {
        sh(&["kill", "-TERM", &self.child.id().to_string()]);
        let _ = self.child.wait();
        std::thread::sleep(StdDuration::from_millis(50));
        self.all()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An alarm a test raises or forbids: any but the capacity alarms. The tests' stores sit on the
/// host's disk, and those alarms report its fill truthfully (a CI machine 80 % full raises
/// `capacity_warning`); their rule is judged with set figures in vault-core and the lifecycle tests.
pub fn is_alarm(event: &serde_json::Value) -> bool {
    event["event"] == "alarm" && !event["rule"].as_str().is_some_and(gatekeeper::daemon::is_capacity_alarm)
}

/// A TCP connection from the peer namespace to the vault's listener. The socket stays in
/// that namespace, so the caller may use it from any thread.
pub fn peer_connect(net: &Net) -> std::io::Result<std::net::TcpStream> {
    in_netns(&net.peer_ns, || std::net::TcpStream::connect_timeout(&"192.0.2.10:7400".parse().unwrap(), StdDuration::from_secs(2))).join().unwrap()
}

pub fn tcp_connect_from(net: &Net) -> std::io::Result<()> {
    in_netns(&net.peer_ns, || {
        let stream = std::net::TcpStream::connect_timeout(&"192.0.2.10:7400".parse().unwrap(), StdDuration::from_secs(1))?;
        drop(stream);
        Ok(())
    })
    .join()
    .unwrap()
}

// ---- vaultctl, as operators run it ------------------------------------------------------

/// `vaultctl key gen --out BASE`: writes BASE.key and BASE.pub, returns the public key.
pub fn vaultctl_key_gen(base: &Path) -> String {
    let out = Command::new(vaultctl_bin()).args(["key", "gen", "--out"]).arg(base).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs vaultctl in the peer namespace.
pub fn vaultctl_in(net: &Net, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", &net.peer_ns]).arg(vaultctl_bin()).args(args).output().unwrap()
}

/// `vaultctl push --json` from the peer namespace with any pinned vault key and secret key
/// file; receipts and the chunk cache go under `work`. Not yet started.
pub fn vaultctl_push_command(net: &Net, vault_key: &str, key_file: &Path, dataset: &str, source: &Path, work: &Path) -> Command {
    let cache_name = format!("{}-{dataset}.cache", key_file.file_stem().unwrap().to_string_lossy());
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &net.peer_ns])
        .arg(vaultctl_bin())
        .args(["push", "--vault", "192.0.2.10:7400", "--vault-key", vault_key, "--key"])
        .arg(key_file)
        .args(["--dataset", dataset, "--receipts"])
        .arg(work.join("receipts"))
        .arg("--cache")
        .arg(work.join(cache_name))
        .arg("--json")
        .arg(source);
    command
}

/// A push by one of the vault's pushers, pinning the vault's real key.
pub fn vaultctl_push(net: &Net, vault: &Vault, pusher: &str, dataset: &str, source: &Path, work: &Path) -> Output {
    vaultctl_push_command(net, &vault.identity(), &vault.pusher_key(pusher), dataset, source, work).output().unwrap()
}

/// stdout of a vaultctl run that must have succeeded, as JSON.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "vaultctl failed ({:?}): {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts vaultctl exited with 3 (the vault refused) and returns its stderr.
pub fn refused_stderr(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(3), "expected a refusal (exit 3); stderr: {stderr}");
    stderr
}

/// Offline `vaultctl restore` of one snapshot into `to`, checked against the vault key.
pub fn vaultctl_restore(store: &Path, snapshot: &str, vault_key: &str, to: &Path) -> Output {
    Command::new(vaultctl_bin()).args(["restore", "--store"]).arg(store).args(["--snapshot", snapshot, "--vault-key", vault_key, "--to"]).arg(to).output().unwrap()
}

/// The ids of the sealed snapshots, as offline `vaultctl snapshots` lists them (every receipt
/// verified under the vault key, every snapshot restorable, or this fails).
pub fn vaultctl_snapshots(store: &Path, vault_key: &str) -> Vec<String> {
    let out = Command::new(vaultctl_bin()).args(["snapshots", "--json", "--vault-key", vault_key, "--store"]).arg(store).output().unwrap();
    let list = json_of(&out);
    let mut ids: Vec<String> = list.as_array().unwrap().iter().map(|s| s["snapshot"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

// ---- the store, seen from outside -------------------------------------------------------

/// Every file under the store (path -> size), except `staging/` and the audit log (which grows
/// with every event, a refusal's included): what a refused session must leave exactly as it was.
pub fn store_listing(store: &Path) -> BTreeMap<String, u64> {
    test_net::walk(store, |rel| rel == vault_store::STAGING_DIR || rel == vault_store::audit::LOG_DIR).into_iter().filter(|w| !w.meta.is_dir()).map(|w| (w.rel, w.meta.len())).collect()
}

/// What is left in `staging/` (nothing, once every session has ended).
pub fn staging_entries(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join(vault_store::STAGING_DIR)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// The store is as `before` (at least one sealed snapshot in it) and staging is empty.
pub fn assert_store_unchanged(store: &Path, before: &BTreeMap<String, u64>, case: &str) {
    assert!(before.keys().any(|path| path.starts_with(vault_store::SNAPSHOTS_DIR)), "{case}: compare against a store with a sealed snapshot");
    assert_eq!(&store_listing(store), before, "{case}: the store changed");
    assert_eq!(staging_entries(store), Vec::<String>::new(), "{case}: staging is not empty");
}

/// A small tmpfs mounted at a directory (made if missing), unmounted on drop.
pub struct TmpfsMount {
    pub path: PathBuf,
}

impl TmpfsMount {
    pub fn new(path: &Path, size: &str) -> TmpfsMount {
        std::fs::create_dir_all(path).unwrap();
        sh(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path.to_str().unwrap()]);
        TmpfsMount { path: path.to_path_buf() }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.path).status();
        if !status.is_ok_and(|s| s.success()) {
            // Still busy (a test failed with the daemon running): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
