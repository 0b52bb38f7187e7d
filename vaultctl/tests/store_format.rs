//! docs/STORE-FORMAT.md against the code: stores sealed by the real vault-store are read back
//! by tools/read-store.py (written from the document alone) and compared byte for byte with
//! what was sealed, and the document's worked examples are re-made by the code and compared.
//! A change to the on-disk format fails here until the document and the reader follow it.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vault_core::keys::{domain_hash, hex, SigningKey};
use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::push::receipt::{snapshot_id, Receipt, SignedReceipt};
use vault_core::units::Timestamp;
use vault_store::{SealInput, Store};

/// A store in a temp dir; clears the immutable flags sealing set so it can be removed.
struct TestStore {
    dir: tempfile::TempDir,
}

impl TestStore {
    fn new() -> TestStore {
        TestStore { dir: tempfile::tempdir().unwrap() }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

/// An Ed25519 key from a fixed seed (PKCS#8 v1 prefix + seed), so receipts are reproducible.
fn key(seed: u8) -> SigningKey {
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend_from_slice(&[seed; 32]);
    SigningKey::from_pkcs8(&der).unwrap()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Whether python3 runs here; the reader tests are skipped (and say so) without it.
fn python3() -> bool {
    let found = Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED: python3 is not installed, so tools/read-store.py cannot be run");
    }
    found
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn read_store(args: &[&str]) -> Run {
    let out = Command::new("python3").arg(repo().join("tools/read-store.py")).args(args).output().unwrap();
    Run { ok: out.status.success(), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
}

#[derive(Clone)]
enum Item {
    /// A file's chunks, in order (every one but the last at least 32 KiB).
    File(Vec<Vec<u8>>),
    Dir,
    Link(&'static str),
    Stream(Vec<Vec<u8>>),
}

struct Node {
    path: &'static str,
    mode: u32,
    mtime: i64,
    item: Item,
}

fn node(path: &'static str, mode: u32, mtime: i64, item: Item) -> Node {
    Node { path, mode, mtime, item }
}

fn chunk_refs(chunks: &[Vec<u8>]) -> (u64, Vec<ChunkRef>) {
    let refs: Vec<ChunkRef> = chunks.iter().map(|c| ChunkRef { id: ChunkId::of(c), len: u32::try_from(c.len()).unwrap() }).collect();
    (refs.iter().map(|c| u64::from(c.len)).sum(), refs)
}

fn manifest_of(nodes: &[Node]) -> Manifest {
    let entries = nodes
        .iter()
        .map(|n| {
            let kind = match &n.item {
                Item::File(chunks) => {
                    let (size, chunks) = chunk_refs(chunks);
                    EntryKind::File { size, chunks }
                }
                Item::Stream(chunks) => {
                    let (size, chunks) = chunk_refs(chunks);
                    EntryKind::Stream { size, chunks }
                }
                Item::Dir => EntryKind::Dir,
                Item::Link(target) => EntryKind::Symlink { target: target.as_bytes().to_vec() },
            };
            Entry { path: n.path.as_bytes().to_vec(), mode: n.mode, mtime: n.mtime, kind }
        })
        .collect();
    Manifest { entries }
}

/// The receipt the vault would sign; `new` is the chunks this seal stored and their bytes.
fn receipt_for(vault: &SigningKey, id: &str, manifest: &Manifest, bytes: &[u8], received_at: Timestamp, new: (u64, u64)) -> SignedReceipt {
    let receipt = Receipt {
        vault_id: "vault-01".into(),
        vault_key: vault.public_key(),
        policy_version: 3,
        snapshot_id: id.into(),
        dataset: "db".into(),
        pusher: "db-backup".into(),
        manifest_sha256: hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()),
        files: manifest.file_count(),
        logical_bytes: manifest.total_size(),
        chunks_total: u64::try_from(manifest.chunk_refs().count()).unwrap(),
        chunks_new: new.0,
        bytes_new: new.1,
        received_at,
        retain_until: Timestamp::parse("2026-12-30T10:15:00Z").unwrap(),
        client_time: received_at.unix() - 1,
        suspect: false,
        signals: Vec::new(),
    };
    let (body, signature) = receipt.sign(vault);
    SignedReceipt { body, signature, audit: None }
}

/// Seals `nodes` as snapshot `id` with the real store: each chunk the store lacks is appended
/// once, in manifest order, to this seal's pack. Returns the manifest bytes.
fn seal(root: &Path, vault: &SigningKey, id: &str, received_at: Timestamp, nodes: &[Node]) -> Vec<u8> {
    let (store, _) = Store::open(root).unwrap();
    let mut pack = store.begin().unwrap();
    let (mut appended, mut new_bytes) = (HashSet::new(), 0u64);
    for n in nodes {
        if let Item::File(chunks) | Item::Stream(chunks) = &n.item {
            for data in chunks {
                let id = ChunkId::of(data);
                if !store.has_chunk(&id) && appended.insert(id) {
                    pack.append(id, data).unwrap();
                    new_bytes += u64::try_from(data.len()).unwrap();
                }
            }
        }
    }
    let manifest = manifest_of(nodes);
    let bytes = manifest.encode().unwrap();
    let receipt = receipt_for(vault, id, &manifest, &bytes, received_at, (u64::try_from(appended.len()).unwrap(), new_bytes));
    store.seal_all(pack, SealInput { snapshot_id: id, manifest: &bytes, receipt: &receipt, profile: None }).unwrap();
    bytes
}

/// Bytes that differ chunk to chunk (so no two chunks dedup by accident).
fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| u8::try_from((i * 7 + usize::from(seed) * 31) % 251).unwrap() ^ seed).collect()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs).unwrap()
}

/// Snapshot 1: files of several chunks (one shared with another file), an empty file, a
/// setuid file (restored without the bit), a read-only file, a file from before 1970, nested
/// directories, a file whose parent directory has no entry, and symlinks.
fn first_tree() -> Vec<Node> {
    let (big1, big2, big3) = (data(40_000, 1), data(35_000, 2), data(123, 3));
    vec![
        node("a-empty", 0o600, 1_790_000_001, Item::File(vec![])),
        node("big", 0o644, 1_790_000_002, Item::File(vec![big1.clone(), big2, big3])),
        node("d", 0o750, 1_790_000_003, Item::Dir),
        node("d/e", 0o4755, 1_790_000_004, Item::File(vec![b"#!/bin/sh\necho setuid bit not restored\n".to_vec()])),
        node("d/link", 0o777, 1_790_000_005, Item::Link("../big")),
        node("d/sub", 0o700, 1_790_000_006, Item::Dir),
        node("d/sub/deep", 0o400, 1_790_000_007, Item::File(vec![data(32 * 1024, 4), vec![0x42]])),
        node("dup", 0o640, 1_790_000_008, Item::File(vec![big1])),
        node("old", 0o644, -86_400, Item::File(vec![b"mtime before 1970".to_vec()])),
        node("x/y", 0o644, 1_790_000_009, Item::File(vec![b"parent has no entry of its own".to_vec()])),
    ]
}

/// Snapshot 2: reuses snapshot 1's chunks (so it spans two packs) and links outside the tree.
fn second_tree() -> Vec<Node> {
    vec![node("again", 0o644, 1_790_100_000, Item::File(vec![data(40_000, 1), data(35_000, 2), data(50_000, 5), b"tail".to_vec()])), node("etc-link", 0o777, 1_790_100_001, Item::Link("/etc/passwd"))]
}

fn stream_tree() -> Vec<Node> {
    vec![node("stream", 0o600, 1_790_200_000, Item::Stream(vec![data(33_000, 6), data(10, 7)]))]
}

/// What a restored tree must hold: path -> (kind and content or target, permission bits,
/// mtime). Directories without an entry of their own have no expected mode or mtime.
fn expected(nodes: &[Node]) -> BTreeMap<String, (String, Option<u32>, Option<i64>)> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let value = match &n.item {
            Item::File(chunks) | Item::Stream(chunks) => (format!("file {}", hex(&chunks.concat())), Some(n.mode & 0o777), Some(n.mtime)),
            Item::Dir => ("dir".to_string(), Some(n.mode & 0o777), Some(n.mtime)),
            Item::Link(target) => (format!("link {target}"), None, None),
        };
        out.insert(n.path.to_string(), value);
        let mut parent = Path::new(n.path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            out.entry(p.display().to_string()).or_insert(("dir".to_string(), None, None));
            parent = p.parent();
        }
    }
    out
}

/// Everything under `dir` as [`expected`] spells it, with the mode and mtime found.
fn found(dir: &Path) -> BTreeMap<String, (String, Option<u32>, Option<i64>)> {
    let walked = test_net::walk(dir, |_| false);
    walked
        .into_iter()
        .map(|w| {
            let (mode, mtime) = (Some(w.meta.permissions().mode() & 0o7777), Some(w.meta.mtime()));
            let value = if w.meta.is_symlink() {
                (format!("link {}", std::fs::read_link(&w.path).unwrap().display()), None, None)
            } else if w.meta.is_dir() {
                ("dir".to_string(), mode, mtime)
            } else {
                (format!("file {}", hex(&std::fs::read(&w.path).unwrap())), mode, mtime)
            };
            (w.rel, value)
        })
        .collect()
}

fn assert_restored(dest: &Path, nodes: &[Node]) {
    let mut want = expected(nodes);
    let got = found(dest);
    // Implicit parents: any mode and mtime will do.
    for (path, value) in want.iter_mut() {
        if value.1.is_none() && value.0 == "dir" {
            if let Some(g) = got.get(path) {
                *value = g.clone();
            }
        }
    }
    assert_eq!(got, want, "restored tree differs from what was sealed");
}

/// A store holding the three snapshots; returns it, their ids (sorted) and the vault key.
fn sealed_store() -> (TestStore, Vec<String>, SigningKey) {
    let store = TestStore::new();
    let vault = key(21);
    let ids: Vec<String> =
        [(1_795_601_700, 0x01), (1_795_605_300, 0x02), (1_795_608_900, 0x03)].iter().map(|(secs, suffix)| snapshot_id(at(*secs), "db", [0xab, 0xcd, 0xef, *suffix]).unwrap()).collect();
    seal(&store.root(), &vault, &ids[0], at(1_795_601_700), &first_tree());
    seal(&store.root(), &vault, &ids[1], at(1_795_605_300), &second_tree());
    seal(&store.root(), &vault, &ids[2], at(1_795_608_900), &stream_tree());
    (store, ids, vault)
}

fn arg(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn the_python_reader_lists_and_restores_what_the_vault_sealed() {
    if !python3() {
        return;
    }
    let (store, ids, vault) = sealed_store();
    let packs = std::fs::read_dir(store.root().join("packs")).unwrap().count();
    assert_eq!(packs, 6, "three seals, each with new chunks: a pack and an index each");
    let list = read_store(&["list", &arg(&store.root())]);
    assert!(list.ok, "list failed: {}", list.stderr);
    assert_eq!(list.stdout, ids.iter().map(|id| format!("{id}\n")).collect::<String>());

    let key = vault.public_key().to_string();
    for (id, tree) in ids.iter().zip([first_tree(), second_tree(), stream_tree()]) {
        let dest = store.path().join(format!("restored-{id}"));
        let run = read_store(&["restore", &arg(&store.root()), id, &arg(&dest), "--vault-key", &key]);
        assert!(run.ok, "restore of {id} failed: {}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("signature: verified") || run.stdout.contains("signature: SKIPPED"), "{}", run.stdout);
        assert_restored(&dest, &tree);
        // vaultctl restores the same tree: the document describes what the code does.
        let by_vaultctl = store.path().join(format!("vaultctl-{id}"));
        let out = Command::new(env!("CARGO_BIN_EXE_vaultctl")).args(["restore", "--store", &arg(&store.root()), "--snapshot", id, "--to", &arg(&by_vaultctl), "--vault-key", &key]).output().unwrap();
        assert!(out.status.success(), "vaultctl restore of {id}: {}", String::from_utf8_lossy(&out.stderr));
        assert_restored(&by_vaultctl, &tree);
    }
}

#[test]
fn the_python_reader_refuses_a_wrong_key_an_altered_chunk_and_hostile_names() {
    if !python3() {
        return;
    }
    let (store, ids, _) = sealed_store();
    let root = arg(&store.root());
    // Refused with or without `cryptography`: the receipt names another key than the pinned one.
    let other = key(22).public_key().to_string();
    let run = read_store(&["restore", &root, &ids[1], &arg(&store.path().join("wrong-key")), "--vault-key", &other]);
    assert!(!run.ok && run.stderr.contains("not the pinned vault key"), "a receipt signed by another key must be refused: {}{}", run.stdout, run.stderr);
    assert!(!store.path().join("wrong-key").exists(), "nothing is written for an untrusted snapshot");

    // One byte of snapshot 2's newest chunk flipped where it lies in its pack.
    let tail = data(50_000, 5);
    let pack = std::fs::read_dir(store.root().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "pack") && std::fs::read(p).unwrap().windows(tail.len()).any(|w| w == tail))
        .unwrap();
    Command::new("chattr").arg("-i").arg(&pack).output().unwrap();
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let pos = bytes.windows(tail.len()).position(|w| w == tail).unwrap() + 100;
    bytes[pos] ^= 1;
    std::fs::write(&pack, bytes).unwrap();
    let dest = store.path().join("altered");
    let run = read_store(&["restore", &root, &ids[1], &arg(&dest)]);
    assert!(!run.ok && run.stderr.contains(&ChunkId::of(&tail).to_hex()), "an altered chunk must be refused: {}{}", run.stdout, run.stderr);
    assert!(!dest.join("again").exists(), "a file whose chunk fails is not left behind");

    // Manifests the vault would never accept, sealed anyway (seal_all does not check names).
    let vault = key(21);
    for (n, path) in ["../escape", "/abs", "a/../b"].iter().enumerate() {
        let id = format!("hostile-{n}");
        let nodes = [Node { path, mode: 0o644, mtime: 0, item: Item::File(vec![b"x".to_vec()]) }];
        seal(&store.root(), &vault, &id, at(1_795_700_000), &nodes);
        let dest = store.path().join(format!("hostile-out-{n}"));
        let run = read_store(&["restore", &root, &id, &arg(&dest)]);
        assert!(!run.ok && run.stderr.contains("refus"), "{path:?} must be refused: {}{}", run.stdout, run.stderr);
        assert!(!store.path().join("escape").exists() && !Path::new("/abs").exists());
    }
}

// ---- the document's worked example, re-made by the code ----------------------------------

/// The example snapshot of docs/STORE-FORMAT.md: two one-chunk files and a symlink in a
/// directory, appended in manifest order (so `world\n` lies first in the pack).
fn example_tree() -> Vec<Node> {
    vec![
        node("g", 0o755, 1_790_000_000, Item::Dir),
        node("g/link", 0o777, 1_790_000_000, Item::Link("planet")),
        node("g/planet", 0o644, 1_790_000_000, Item::File(vec![b"world\n".to_vec()])),
        node("hello", 0o600, 1_790_000_000, Item::File(vec![b"hello\n".to_vec()])),
    ]
}

const EXAMPLE_ID: &str = "20261125T101500Z-db-1a2b3c4d";

/// `bytes` as the document shows them: one field a line, `offset  hex  | what` (offsets decimal).
fn dump(bytes: &[u8], fields: &[(usize, String)]) -> String {
    let width = fields.iter().map(|(n, _)| n * 3 - 1).max().unwrap_or(0);
    let mut out = String::new();
    let mut at = 0;
    for (len, what) in fields {
        let hex: Vec<String> = bytes[at..at + len].iter().map(|b| format!("{b:02x}")).collect();
        out += &format!("{at:04}  {:<width$}  | {what}\n", hex.join(" "));
        at += len;
    }
    assert_eq!(at, bytes.len(), "the fields cover the bytes");
    out
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn name_of(id: &[u8]) -> String {
    let known = [&b"hello\n"[..], b"world\n"];
    match known.iter().find(|d| ChunkId::of(d).0 == id) {
        Some(d) => format!("chunk id: SHA-256 of {:?}", String::from_utf8_lossy(d)),
        None => "chunk id".into(),
    }
}

fn index_fields(bytes: &[u8]) -> Vec<(usize, String)> {
    let count = be32(bytes, 5) as usize;
    let mut fields = vec![(4, "magic \"VIDX\"".into()), (1, "version 1".into()), (4, format!("entry count {count} (u32)"))];
    for i in 0..count {
        let e = 9 + i * 44;
        let offset = u64::from_be_bytes(bytes[e + 32..e + 40].try_into().unwrap());
        fields.push((32, format!("entry {i}: {}", name_of(&bytes[e..e + 32]))));
        fields.push((8, format!("entry {i}: offset {offset} in the pack (u64)")));
        fields.push((4, format!("entry {i}: length {} (u32)", be32(bytes, e + 40))));
    }
    fields.push((32, format!("SHA-256 of bytes 0..{}", bytes.len() - 32)));
    fields
}

fn owned_fields(bytes: &[u8]) -> Vec<(usize, String)> {
    let count = be32(bytes, 5) as usize;
    let mut fields = vec![(4, "magic \"VOWN\"".into()), (1, "version 1".into()), (4, format!("id count {count} (u32)"))];
    for i in 0..count {
        fields.push((32, format!("id {i}: {}", name_of(&bytes[9 + i * 32..9 + i * 32 + 32]))));
    }
    fields.push((32, format!("SHA-256 of bytes 0..{}", bytes.len() - 32)));
    fields
}

fn manifest_fields(manifest: &Manifest) -> Vec<(usize, String)> {
    let mut fields = vec![(4, "magic \"VMAN\"".into()), (1, "version 1".into()), (4, format!("entry count {} (u32)", manifest.entries.len()))];
    for e in &manifest.entries {
        let p = e.display_path();
        let kind = match e.kind {
            EntryKind::File { .. } => "1 file",
            EntryKind::Dir => "2 directory",
            EntryKind::Symlink { .. } => "3 symlink",
            EntryKind::Stream { .. } => "4 stream",
        };
        fields.push((1, format!("{p}: kind {kind}")));
        fields.push((2, format!("{p}: path length {} (u16)", e.path.len())));
        fields.push((e.path.len(), format!("{p}: path {p:?}")));
        fields.push((4, format!("{p}: mode 0o{:o} (u32)", e.mode)));
        fields.push((8, format!("{p}: mtime {} (i64)", e.mtime)));
        match &e.kind {
            EntryKind::File { size, chunks } | EntryKind::Stream { size, chunks } => {
                fields.push((8, format!("{p}: size {size} (u64)")));
                fields.push((4, format!("{p}: chunk count {} (u32)", chunks.len())));
                for c in chunks {
                    fields.push((32, format!("{p}: {}", name_of(&c.id.0))));
                    fields.push((4, format!("{p}: chunk length {} (u32)", c.len)));
                }
            }
            EntryKind::Symlink { target } => {
                fields.push((2, format!("{p}: target length {} (u16)", target.len())));
                fields.push((target.len(), format!("{p}: target {:?}", String::from_utf8_lossy(target))));
            }
            EntryKind::Dir => {}
        }
    }
    fields
}

/// The fenced block after `<!-- example:NAME -->` in the document.
fn doc_block(doc: &str, name: &str) -> String {
    let marker = format!("<!-- example:{name} -->");
    let after = &doc[doc.find(&marker).unwrap_or_else(|| panic!("docs/STORE-FORMAT.md has no `{marker}`")) + marker.len()..];
    let open = after.find("```").unwrap();
    let body = &after[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// The bytes a hex block spells (left of each `|`, after the offset), checking each offset.
fn block_bytes(block: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        let left = line.split('|').next().unwrap();
        let mut tokens = left.split_whitespace();
        let offset: usize = tokens.next().unwrap().parse().unwrap();
        assert_eq!(offset, bytes.len(), "offset of line `{line}`");
        bytes.extend(tokens.map(|t| u8::from_str_radix(t, 16).unwrap()));
    }
    bytes
}

/// Notes in `drift` the example `name` if the document's bytes are not `actual`, with the block
/// the code makes now (so one run shows every block to update).
fn check_example(doc: &str, name: &str, actual: &[u8], made: &str, drift: &mut Vec<String>) {
    if block_bytes(&doc_block(doc, name)) != actual {
        drift.push(format!("<!-- example:{name} -->\n```text\n{made}```"));
    }
}

#[test]
fn the_documents_worked_example_is_what_the_code_writes() {
    let doc = std::fs::read_to_string(repo().join("docs/STORE-FORMAT.md")).unwrap();
    let store = TestStore::new();
    let vault = key(7);
    let manifest_bytes = seal(&store.root(), &vault, EXAMPLE_ID, Timestamp::parse("2026-11-25T10:15:00Z").unwrap(), &example_tree());
    let file = |ext: &str| {
        let path = std::fs::read_dir(store.root().join("packs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == ext)).unwrap();
        std::fs::read(path).unwrap()
    };
    let snapshot = store.root().join("snapshots").join(EXAMPLE_ID);

    let pack = file("pack");
    let index = file("idx");
    let mut drift = Vec::new();
    check_example(&doc, "pack", &pack, &dump(&pack, &[(pack.len(), "\"world\\n\" then \"hello\\n\"".into())]), &mut drift);
    check_example(&doc, "index", &index, &dump(&index, &index_fields(&index)), &mut drift);
    let owned = std::fs::read(snapshot.join("owned")).unwrap();
    check_example(&doc, "owned", &owned, &dump(&owned, &owned_fields(&owned)), &mut drift);
    let manifest = manifest_of(&example_tree());
    check_example(&doc, "manifest", &manifest_bytes, &dump(&manifest_bytes, &manifest_fields(&manifest)), &mut drift);
    let receipt = std::fs::read(snapshot.join("receipt.json")).unwrap();
    let body = SignedReceipt::from_file_bytes(&receipt).unwrap().body;
    let texts = [
        ("receipt.json", String::from_utf8(receipt).unwrap()),
        ("signed-digest", format!("{}\n", hex(&domain_hash("airgap-vault/receipt/v1", &body)))),
        ("vault-key", format!("{}\n", vault.public_key())),
        ("manifest-sha256", format!("{}\n", hex(ring::digest::digest(&ring::digest::SHA256, &manifest_bytes).as_ref()))),
    ];
    for (name, text) in &texts {
        if doc_block(&doc, name) != *text {
            drift.push(format!("<!-- example:{name} -->\n```text\n{text}```"));
        }
    }
    for said in [format!("manifest` ({} bytes)", manifest_bytes.len()), format!("(unescaped, {} bytes)", body.len())] {
        if !doc.contains(&said) {
            drift.push(format!("the text should say `{said}`"));
        }
    }
    assert!(drift.is_empty(), "docs/STORE-FORMAT.md's worked example no longer matches the code; the code makes:\n\n{}", drift.join("\n\n"));
    let vault_key = texts[2].1.trim();

    // And the reader, given the example and its key, restores it.
    if python3() {
        let dest = store.path().join("example");
        let run = read_store(&["restore", &arg(&store.root()), EXAMPLE_ID, &arg(&dest), "--vault-key", vault_key]);
        assert!(run.ok, "{}{}", run.stdout, run.stderr);
        assert_restored(&dest, &example_tree());
    }
}
