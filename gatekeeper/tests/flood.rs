//! A stolen pusher key against the daemon's memory (issue 12, item 1): a session of the most
//! new chunks it may stage, each as small as a chunk can be, then one more; a maximal
//! manifest; several such sessions at once. The daemon refuses past each limit by name, and
//! its peak RSS (VmHWM) stays under the targets. `make bench` runs the full version
//! (FLOOD_SESSIONS=16, release build) and prints the figures; `make test` a shorter one.

mod support;

use std::net::TcpStream;

use support::raw_client::RawClient;
use support::*;
use vault_core::push::chunk::ChunkId;
use vault_core::push::limits::MAX_SESSION_NEW_CHUNKS;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest, MAX_MANIFEST_BYTES};
use vault_core::push::protocol::{encode_chunk_frame, ClientFrame, VaultFrame, MAX_MANIFEST_PART};

const MIB: u64 = 1024 * 1024;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The daemon's peak resident memory so far, in bytes.
fn peak_rss(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/pid/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn connect(net: &Net, vault: &Vault, pusher: &str, vault_key: &str) -> RawClient<TcpStream> {
    RawClient::handshake(peer_connect(net).unwrap(), &vault.pusher_key(pusher), vault_key).unwrap()
}

/// Sends `count` distinct 4-byte chunks (`seed` keeps sessions' chunks apart), many frames
/// per write.
fn send_tiny_chunks(client: &mut RawClient<TcpStream>, seed: u32, count: u64) -> std::io::Result<()> {
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..count {
        let data = [seed.to_be_bytes(), u32::try_from(i).unwrap().to_be_bytes()].concat();
        batch.extend_from_slice(&encode_chunk_frame(&ChunkId::of(&data), &data).unwrap());
        if batch.len() >= 1 << 20 {
            client.send_bytes(&batch)?;
            batch.clear();
        }
    }
    client.send_bytes(&batch)
}

/// A valid manifest as close to the size limit as file entries make it, every file naming
/// one chunk the vault has sealed.
fn maximal_manifest(sealed: &[u8]) -> Vec<u8> {
    let chunk = ChunkRef { id: ChunkId::of(sealed), len: u32::try_from(sealed.len()).unwrap() };
    let entry = |i: usize| Entry { path: format!("f{i:08}").into_bytes(), mode: 0o600, mtime: 0, kind: EntryKind::File { size: u64::from(chunk.len), chunks: vec![chunk.clone()] } };
    let per_entry = Manifest { entries: vec![entry(0)] }.encode().unwrap().len() - 9;
    let count = (MAX_MANIFEST_BYTES - 9) / per_entry;
    let bytes = Manifest { entries: (0..count).map(entry).collect() }.encode().unwrap();
    assert!(bytes.len() <= MAX_MANIFEST_BYTES && bytes.len() > MAX_MANIFEST_BYTES - per_entry);
    bytes
}

fn commit(client: &mut RawClient<TcpStream>, manifest: &[u8]) {
    for part in manifest.chunks(MAX_MANIFEST_PART) {
        client.send(&ClientFrame::ManifestPart { bytes: part.to_vec() });
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, manifest);
    client.send(&ClientFrame::Commit { manifest_sha256: digest.as_ref().try_into().unwrap(), manifest_len: manifest.len() as u64 });
}

/// One hostile session: the most new chunks a session may stage, then a commit of a maximal
/// manifest (all of it must be read back and checked), then a session that stages one
/// chunk too many.
fn hostile_session(mut client: RawClient<TcpStream>, seed: u32, chunks: u64, manifest: &[u8], vault_key: &str) {
    client.begin("flood", 0);
    send_tiny_chunks(&mut client, seed, chunks).unwrap();
    commit(&mut client, manifest);
    let receipt = client.receipt(vault_key);
    assert_eq!(receipt.chunks_new, 0, "staged chunks no manifest names are not indexed");
}

#[test]
fn a_flood_of_tiny_chunks_and_maximal_manifests_is_bounded_and_refused_by_name() {
    let sessions = env_or("FLOOD_SESSIONS", 2);
    let chunks = env_or("FLOOD_CHUNKS", MAX_SESSION_NEW_CHUNKS);
    let net = Net::new("flood");
    let now = unix_now_secs();
    let names: Vec<&'static str> = (0..sessions).map(|i| &*Box::leak(format!("p{i}").into_boxed_str())).collect();
    let vault = Vault::build(VaultSpec { window: (now + 1, now + 900), pushers: names.iter().map(|n| (*n, "64GiB")).collect(), early: false, grace: "1s", datasets: vec![] });
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);
    let vault_key = vault.identity();
    let baseline = peak_rss(&daemon);

    // A sealed chunk for the manifests to name, owned by every pusher (a manifest may name
    // only its own pusher's chunks without sending them).
    let sealed = b"sealed tail".to_vec();
    for name in &names {
        connect(&net, &vault, name, &vault_key).push("seed", 0, &[(b"seed".as_slice(), sealed.as_slice())], &vault_key);
    }
    let manifest = maximal_manifest(&sealed);

    let started = std::time::Instant::now();
    // Connected one after another (the vault lets an address have only 4 TLS handshakes in
    // flight), then all flooding at once.
    let clients: Vec<RawClient<TcpStream>> = names.iter().map(|name| connect(&net, &vault, name, &vault_key)).collect();
    let flooded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        std::thread::scope(|scope| {
            for (i, client) in clients.into_iter().enumerate() {
                let (manifest, vault_key) = (&manifest, &vault_key);
                scope.spawn(move || hostile_session(client, u32::try_from(i).unwrap(), chunks, manifest, vault_key));
            }
        });
    }));
    if let Err(panic) = flooded {
        // A session the vault ended early: say why, from the vault's own events.
        let telling = |name: &str| ["refused", "failed", "alarm", "closed"].iter().any(|word| name.contains(word));
        for event in daemon.all().iter().filter(|e| telling(e["event"].as_str().unwrap_or(""))) {
            eprintln!("vault: {event}");
        }
        std::panic::resume_unwind(panic);
    }
    let flood_secs = started.elapsed().as_secs_f64();
    let peak = peak_rss(&daemon);

    // One chunk past the session's limit is refused by name, and the session's staging goes.
    let mut client = connect(&net, &vault, names[0], &vault_key);
    client.begin("over", 0);
    let _ = send_tiny_chunks(&mut client, 9999, MAX_SESSION_NEW_CHUNKS + 1);
    let reason = client.refusal();
    assert!(reason.starts_with("limit `new_chunks_per_session`"), "{reason}");
    // Commits are checked one at a time, so two hostile sessions are held to one's target.
    let target = if sessions <= 2 { 128 * MIB } else { 256 * MIB };
    println!(
        "flood: {sessions} session(s) x {chunks} chunks of 4 bytes + a {} byte manifest each, in {flood_secs:.1} s; gatekeeper peak RSS {:.1} MiB (at start {:.1} MiB, target {} MiB)",
        manifest.len(),
        peak as f64 / MIB as f64,
        baseline as f64 / MIB as f64,
        target / MIB
    );
    assert!(peak <= target, "peak RSS {peak} over the target {target}");
    let peak_after = peak_rss(&daemon);
    assert!(peak_after <= target, "peak RSS {peak_after} over the target {target} after the over-limit session");
    daemon.stop();
}

#[test]
fn sessions_past_the_window_limit_are_refused_by_name() {
    let net = Net::new("sessions");
    let now = unix_now_secs();
    let vault = Vault::build(VaultSpec { window: (now + 1, now + 300), pushers: vec![("p", "1GiB")], early: false, grace: "1s", datasets: vec![] });
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 8.0);
    let vault_key = vault.identity();
    for _ in 0..vault_core::push::limits::MAX_SESSIONS_PER_WINDOW {
        let mut client = connect(&net, &vault, "p", &vault_key);
        client.begin("empty", 0);
    }
    let mut client = connect(&net, &vault, "p", &vault_key);
    client.send(&ClientFrame::Begin { dataset: "one-more".into(), client_time: 0, audit_size: 0 });
    match client.recv() {
        Ok(VaultFrame::Refused { reason }) => assert!(reason.starts_with("limit `sessions_per_window`"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    daemon.stop();
}
