//! Review scratch: does sealing take measurably longer when a guessed chunk is new to the store
//! than when another pusher already stored it (Proven)? The pusher sees commit->receipt latency.
use std::time::Instant;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::Ed25519KeyPair;
use vault_core::keys::SigningKey;
use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_store::{SealInput, Store};

fn manifest(data: &[u8]) -> Vec<u8> {
    Manifest { entries: vec![Entry { path: b"f".to_vec(), mode: 0o640, mtime: 1, kind: EntryKind::File { size: data.len() as u64, chunks: vec![ChunkRef { id: ChunkId::of(data), len: data.len() as u32 }] } }] }.encode().unwrap()
}

fn push(store: &Store, key: &SigningKey, pusher: &str, id: &str, data: &[u8]) -> f64 {
    let mut pack = store.begin().unwrap();
    match store.chunk_len(&ChunkId::of(data)) {
        Some(len) => pack.prove(ChunkId::of(data), len).unwrap(),
        None => pack.append(ChunkId::of(data), data).unwrap(),
    }
    let m = manifest(data);
    let r = test_net::signed_receipt(key, id, &m, pusher, 1_900_000_000);
    let t = Instant::now();
    store.seal_all(pack, SealInput { snapshot_id: id, manifest: &m, receipt: &r, profile: None }).unwrap();
    t.elapsed().as_secs_f64() * 1000.0
}

#[test]
fn review_seal_latency_reveals_whether_a_guessed_chunk_exists() {
    let dir = tempfile::tempdir_in("/tmp/review-push").unwrap();
    let key = SigningKey::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap().as_ref()).unwrap();
    let (store, _) = Store::open(&dir.path().join("store")).unwrap();
    let rnd = |n: usize| { let mut v = vec![0u8; n]; SystemRandom::new().fill(&mut v).unwrap(); v };
    let secret = rnd(1 << 20);
    push(&store, &key, "alice", "a0", &secret);
    let (mut new, mut proven) = (vec![], vec![]);
    for i in 0..15 {
        new.push(push(&store, &key, &format!("m{i}"), &format!("n{i}"), &rnd(1 << 20)));
        proven.push(push(&store, &key, &format!("m{i}"), &format!("p{i}"), &secret));
    }
    new.sort_by(f64::total_cmp);
    proven.sort_by(f64::total_cmp);
    println!("seal ms, guessed chunk NEW    : median {:.2} min {:.2} max {:.2}", new[7], new[0], new[14]);
    println!("seal ms, guessed chunk EXISTS : median {:.2} min {:.2} max {:.2}", proven[7], proven[0], proven[14]);
    let _ = std::process::Command::new("chattr").args(["-R", "-i"]).arg(dir.path()).output();
}
