//! What the host tests (gatekeeper/tests) and the QEMU suite (qemu-tests) both need to watch
//! the vault from outside: threads inside a network namespace, an ARP prober that also
//! captures every frame the vault side sends, and deterministic test data with a way to
//! compare trees byte for byte. Needs root for the namespaces and packet sockets.
#![forbid(unsafe_code)]

pub mod lifecycle_bench;

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pnet_datalink::{Channel, Config};

/// Runs a command that must succeed.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// [`unix_now`] in whole seconds, the fraction dropped.
pub fn unix_now_secs() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

/// [`unix_now`] in whole seconds, rounded up.
pub fn unix_now_secs_ceil() -> i64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(now.as_secs() + u64::from(now.subsec_nanos() > 0)).unwrap()
}

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs `f` on a thread inside the namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A frame the peer side received, with its arrival time (Unix seconds).
#[derive(Clone)]
pub struct Seen {
    pub at: f64,
    pub frame: Vec<u8>,
}

/// Where the prober stands: its namespace and interface, its address, and the vault's.
#[derive(Debug, Clone)]
pub struct ProbeSite {
    pub ns: String,
    pub iface: String,
    pub peer_ip: Ipv4Addr,
    pub vault_ip: Ipv4Addr,
}

/// From the peer side: an ARP request for the vault address every 50 ms, and a capture of
/// every frame that arrives on the interface that the peer did not send itself (everything
/// the vault side sends).
pub struct Prober {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Seen>>>,
    probes: Arc<Mutex<Vec<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    pub fn start(site: &ProbeSite) -> Prober {
        let (stop, frames, probes) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (s, f, p, site) = (stop.clone(), frames.clone(), probes.clone(), site.clone());
        let thread = in_netns(&site.ns.clone(), move || {
            let iface = pnet_datalink::interfaces().into_iter().find(|i| i.name == site.iface).unwrap_or_else(|| panic!("no {} in {}", site.iface, site.ns));
            let our_mac = iface.mac.unwrap().octets();
            let config = Config { read_timeout: Some(Duration::from_millis(5)), promiscuous: false, ..Config::default() };
            let Ok(Channel::Ethernet(mut tx, mut rx)) = pnet_datalink::channel(&iface, config) else { panic!("no channel") };
            let request = arp_request(our_mac, site.peer_ip, site.vault_ip);
            let mut next_probe = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if Instant::now() >= next_probe {
                    // While the vault side is down the link has no carrier and the kernel refuses
                    // the frame (ENOBUFS): that probe simply goes unanswered.
                    let _ = tx.send_to(&request, None);
                    p.lock().unwrap().push(unix_now());
                    next_probe += Duration::from_millis(50);
                }
                if let Ok(frame) = rx.next() {
                    if frame.get(6..12) != Some(&our_mac[..]) {
                        f.lock().unwrap().push(Seen { at: unix_now(), frame: frame.to_vec() });
                    }
                }
            }
        });
        Prober { stop, frames, probes, thread: Some(thread) }
    }

    /// Frames captured so far.
    pub fn frames(&self) -> Vec<Seen> {
        self.frames.lock().unwrap().clone()
    }

    /// Stops; returns every captured frame and the time of every probe sent.
    pub fn finish(mut self) -> (Vec<Seen>, Vec<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.frames.lock().unwrap().clone(), self.probes.lock().unwrap().clone())
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits above")
}

/// An Ethernet frame carrying an IPv4 TCP SYN with correct checksums, from whatever MAC and
/// address the caller forges.
pub fn tcp_syn_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&dst_port.to_be_bytes());
    tcp.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // sequence
    tcp.extend_from_slice(&[0; 4]); // acknowledgement
    tcp.extend_from_slice(&[0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]); // 5 words, SYN, window, checksum, urgent
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    tcp[16..18].copy_from_slice(&internet_checksum(&pseudo).to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let checksum = internet_checksum(&ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = dst_mac.to_vec();
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&tcp);
    frame
}

/// Sends each frame as it is on `iface` in namespace `ns` (a packet socket: any source MAC,
/// any source address).
pub fn send_frames(ns: &str, iface: &str, frames: Vec<Vec<u8>>) {
    let iface = iface.to_string();
    in_netns(ns, move || {
        let nic = pnet_datalink::interfaces().into_iter().find(|i| i.name == iface).unwrap_or_else(|| panic!("no {iface}"));
        let Ok(Channel::Ethernet(mut tx, _rx)) = pnet_datalink::channel(&nic, Config::default()) else { panic!("no channel on {iface}") };
        for frame in &frames {
            tx.send_to(frame, None).expect("one frame").expect("frame sent");
        }
    })
    .join()
    .unwrap();
}

/// A port scan of `target` from `source`, from namespace `ns`: a SYN to every port in `ports`
/// at once, then a datagram to each. Returns the ports whose connection was answered (refused
/// by a RST, or accepted) within `wait`, with what the answer was.
pub fn port_scan(ns: &str, source: Ipv4Addr, target: Ipv4Addr, ports: Vec<u16>, wait: Duration) -> Vec<(u16, String)> {
    in_netns(ns, move || {
        let pending: Vec<(u16, socket2::Socket)> = ports
            .iter()
            .map(|&port| {
                let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                socket.bind(&std::net::SocketAddr::from((source, 0)).into()).unwrap();
                socket.set_nonblocking(true).unwrap();
                let _ = socket.connect(&std::net::SocketAddr::from((target, port)).into());
                (port, socket)
            })
            .collect();
        let udp = std::net::UdpSocket::bind((source, 0)).unwrap();
        for &port in &ports {
            udp.send_to(b"scan", (target, port)).unwrap();
        }
        std::thread::sleep(wait);
        pending
            .into_iter()
            .filter_map(|(port, socket)| match (socket.take_error().unwrap(), socket.peer_addr()) {
                (Some(e), _) => Some((port, e.to_string())),
                (None, Ok(_)) => Some((port, "connected".into())),
                (None, Err(_)) => None,
            })
            .collect()
    })
    .join()
    .unwrap()
}

pub fn is_arp_reply(frame: &[u8]) -> bool {
    frame.len() >= 22 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2]
}

/// Deterministic incompressible bytes (xorshift64); different seeds share no chunks.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Deterministic prose (compressible, like documents and dumps), different per seed.
pub fn prose(len: usize, seed: u64) -> Vec<u8> {
    let words = ["backup", "ledger", "invoice", "customer", "order", "shipment", "the", "of", "and", "quarterly", "report", "account", "balance", "\n"];
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(words[usize::try_from(x % words.len() as u64).expect("below words.len()")].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// What ransomware does to a file: AES-256-GCM under a key nobody keeps, written in place.
pub fn encrypt_in_place(path: &Path, seed: u8) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[seed; 32]).expect("a 32-byte key"));
    let mut data = std::fs::read(path).unwrap();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key([seed; 12]), Aad::empty(), &mut data).expect("sealed");
    std::fs::write(path, data).unwrap();
}

/// A file share of `files` prose documents in 6 department folders (`dept-N/doc-NNN.txt`,
/// 8-38 KB each): what the ransomware tests push, quietly edit and then encrypt.
pub fn document_share(root: &Path, files: u64) {
    for i in 0..files {
        let dir = root.join(format!("dept-{}", i % 6));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("doc-{i:03}.txt")), prose(8_000 + usize::try_from(i % 7).expect("below 7") * 5_000, i)).unwrap();
    }
}

/// The path of document `i` of a [`document_share`].
pub fn share_document(root: &Path, i: u64) -> PathBuf {
    root.join(format!("dept-{}/doc-{i:03}.txt", i % 6))
}

/// A directory holding `files` pseudo-random files of `each` bytes, seeded from `seed`.
pub fn random_tree(root: &Path, files: usize, each: usize, seed: u64) {
    std::fs::create_dir_all(root).unwrap();
    for i in 0..files {
        std::fs::write(root.join(format!("file-{i:03}.bin")), pseudo_random_bytes(each, seed.wrapping_add(i as u64 * 7919))).unwrap();
    }
}

/// One path found by [`walk`]: relative to the root, full, and its own metadata (a symlink's,
/// never its target's).
pub struct Walked {
    pub rel: String,
    pub path: std::path::PathBuf,
    pub meta: std::fs::Metadata,
}

/// Every path under `root` (directories included, symlinks not followed), sorted by relative
/// path. `skip` is asked about each relative path; a skipped directory is not entered.
pub fn walk(root: &Path, skip: impl Fn(&str) -> bool) -> Vec<Walked> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if skip(&rel) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push(Walked { rel, path, meta });
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    out
}

/// Every path under `root` with its kind, permission bits and content (or link target).
pub fn describe(root: &Path) -> Vec<(String, String)> {
    walk(root, |_| false)
        .into_iter()
        .map(|Walked { rel, path, meta }| {
            let what = if meta.is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                format!("dir {:o}", meta.mode() & 0o777)
            } else {
                let data = std::fs::read(&path).unwrap();
                let digest = ring::digest::digest(&ring::digest::SHA256, &data);
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                format!("file {:o} {} bytes sha256 {hex}", meta.mode() & 0o777, data.len())
            };
            (rel, what)
        })
        .collect()
}

/// A receipt for `manifest` as the vault signs it at sealing, with `key` as the vault key: the
/// test fixture the store's and the CLI's tests seal snapshots with (dataset `db`, received
/// 2027-01-15, its counts those of `manifest` when it decodes, as a drill checks them).
pub fn signed_receipt(key: &vault_core::keys::SigningKey, snapshot_id: &str, manifest: &[u8], pusher: &str, retain_until_unix: i64) -> vault_core::push::receipt::SignedReceipt {
    signed_receipt_at(key, snapshot_id, manifest, (pusher, "db"), 1_800_000_000, retain_until_unix)
}

/// [`signed_receipt`] for `(pusher, dataset)`, sealed at `received_at_unix`.
pub fn signed_receipt_at(
    key: &vault_core::keys::SigningKey,
    snapshot_id: &str,
    manifest: &[u8],
    (pusher, dataset): (&str, &str),
    received_at_unix: i64,
    retain_until_unix: i64,
) -> vault_core::push::receipt::SignedReceipt {
    use vault_core::units::Timestamp;
    let summary = vault_core::push::manifest::walk(manifest, |_| Ok(())).unwrap_or(vault_core::push::manifest::Summary { entries: 1, files: 1, total_size: 0, chunk_refs: 1 });
    let receipt = vault_core::push::receipt::Receipt {
        vault_id: "vault-01".into(),
        vault_key: key.public_key(),
        policy_version: 1,
        snapshot_id: snapshot_id.into(),
        dataset: dataset.into(),
        pusher: pusher.into(),
        manifest_sha256: vault_core::keys::hex(ring::digest::digest(&ring::digest::SHA256, manifest).as_ref()),
        files: summary.files,
        logical_bytes: summary.total_size,
        chunks_total: summary.chunk_refs,
        chunks_new: summary.chunk_refs,
        bytes_new: summary.total_size,
        received_at: Timestamp::from_unix(received_at_unix).expect("in range"),
        retain_until: Timestamp::from_unix(retain_until_unix).expect("in range"),
        client_time: 0,
        suspect: false,
        signals: Vec::new(),
    };
    let (body, signature) = receipt.sign(key);
    vault_core::push::receipt::SignedReceipt { body, signature, audit: None }
}

/// Seals one nightly snapshot of `(pusher, dataset)` sealed at vault time `received_at_unix`,
/// kept until `retain_until_unix`, into `store`: a file of its own (`"<dataset> night
/// <received_at_unix>"`) and one every night shares. Returns its id.
pub fn seal_nightly(store: &vault_store::Store, key: &vault_core::keys::SigningKey, (pusher, dataset): (&str, &str), received_at_unix: i64, retain_until_unix: i64) -> String {
    use vault_core::push::chunk::ChunkId;
    use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
    let id = format!("{dataset}-night-{received_at_unix}");
    let own = nightly_content(dataset, received_at_unix);
    let files: [(&str, &[u8]); 2] = [("own", &own), ("shared", NIGHTLY_SHARED)];
    let mut pack = store.begin().expect("a staging pack");
    let mut entries = Vec::new();
    for (path, data) in files {
        let chunk = ChunkId::of(data);
        match store.chunk_len(&chunk) {
            Some(len) => pack.prove(chunk, len).expect("proven"),
            None => pack.append(chunk, data).expect("staged"),
        }
        let len = u32::try_from(data.len()).expect("small");
        entries.push(Entry { path: path.as_bytes().to_vec(), mode: 0o640, mtime: 1, kind: EntryKind::File { size: u64::from(len), chunks: vec![ChunkRef { id: chunk, len }] } });
    }
    let manifest = Manifest { entries }.encode().expect("a manifest");
    let receipt = signed_receipt_at(key, &id, &manifest, (pusher, dataset), received_at_unix, retain_until_unix);
    store.seal_all(pack, vault_store::SealInput { snapshot_id: &id, manifest: &manifest, receipt: &receipt, profile: None }).expect("sealed");
    id
}

/// Every file under `dir` (recursively, symlinks not followed), sorted.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory").flatten() {
        if entry.file_type().expect("a file type").is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push(entry.path());
        }
    }
    out.sort();
    out
}

/// The file every [`seal_nightly`] snapshot shares.
pub const NIGHTLY_SHARED: &[u8] = b"the same every night";

/// The file only the [`seal_nightly`] snapshot of that night holds.
pub fn nightly_content(dataset: &str, received_at_unix: i64) -> Vec<u8> {
    format!("{dataset} night {received_at_unix}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksums verify the way a receiver checks them: summed with the checksum field in
    /// place, the header comes to zero.
    #[test]
    fn a_forged_syn_carries_checksums_a_receiver_accepts() {
        let (src, dst) = (Ipv4Addr::new(192, 0, 2, 150), Ipv4Addr::new(192, 0, 2, 10));
        let frame = tcp_syn_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], src, dst, 40_000, 7400);
        assert_eq!(internet_checksum(&frame[14..34]), 0);
        let mut pseudo = [src.octets(), dst.octets()].concat();
        pseudo.extend_from_slice(&[0, 6, 0, 20]);
        pseudo.extend_from_slice(&frame[34..54]);
        assert_eq!(internet_checksum(&pseudo), 0);
        assert_eq!(internet_checksum(&[0x45, 0x00, 0x00, 0x73]), !(0x4500u16 + 0x0073));
    }
}
