//! The vault's side of one push session, as a sans-IO state machine: the daemon feeds it
//! decoded frames and does what each [`Step`] says (reply, store a verified chunk, seal).
//! Every rule of a session lives here: order of verbs, quota, re-hashing, manifest checks.
//!
//! Phases: `AwaitBegin` -> `Transfer` (have / chunk / manifest parts) -> `Manifest` (only
//! more manifest parts and the commit) -> `Sealing` -> `Done`. Any refusal ends the session;
//! nothing of it becomes visible, because only [`Step::Seal`] makes a snapshot.

use std::collections::HashMap;

use crate::canonical::check_identifier;
use crate::chunk::ChunkId;
use crate::error::{Error, Result};
use crate::keys::hex;
use crate::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::protocol::{ClientFrame, VaultFrame};

/// What the session needs from the vault around it.
pub trait IngestEnv {
    /// Is this chunk already sealed in the store?
    fn has_chunk(&self, id: &ChunkId) -> bool;
    /// Charges `bytes` to this pusher's quota for the current window. On refusal returns
    /// the quota and what the total would have been.
    fn take_quota(&mut self, bytes: u64) -> std::result::Result<u64, (u64, u64)>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitBegin,
    Transfer,
    Manifest,
    Sealing,
    Done,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::AwaitBegin => "before begin",
            Phase::Transfer => "while transferring",
            Phase::Manifest => "after the manifest started",
            Phase::Sealing => "while sealing",
            Phase::Done => "after commit",
        }
    }
}

/// What the daemon must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Reply(VaultFrame),
    /// A chunk whose bytes were verified against its id: write it to staging.
    Store { id: ChunkId, data: Vec<u8> },
    /// Every check passed: seal this snapshot, then call [`IngestSession::sealed`].
    Seal(SealRequest),
    /// Nothing to do (a chunk the vault already had).
    Nothing,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SealRequest {
    pub dataset: String,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_sha256: String,
    pub chunks_new: u64,
    pub bytes_new: u64,
    pub client_time: i64,
}

pub struct IngestSession {
    pusher: String,
    phase: Phase,
    dataset: String,
    client_time: i64,
    /// Chunks stored by this session, with their lengths.
    received: HashMap<ChunkId, u32>,
    bytes_new: u64,
    manifest: Vec<u8>,
}

impl IngestSession {
    pub fn new(pusher: &str) -> IngestSession {
        IngestSession {
            pusher: pusher.to_string(),
            phase: Phase::AwaitBegin,
            dataset: String::new(),
            client_time: 0,
            received: HashMap::new(),
            bytes_new: 0,
            manifest: Vec::new(),
        }
    }

    pub fn pusher(&self) -> &str {
        &self.pusher
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Applies one frame. An `Err` is a refusal: send it and close the session.
    pub fn on_frame(&mut self, frame: ClientFrame, env: &mut impl IngestEnv) -> Result<Step> {
        let out_of_order = |phase: Phase, frame: &ClientFrame| Error::OutOfOrder { verb: frame.verb_name(), phase: phase.describe() };
        match (self.phase, frame) {
            (Phase::AwaitBegin, ClientFrame::Begin { dataset, client_time }) => {
                check_identifier("dataset", &dataset)?;
                self.dataset = dataset;
                self.client_time = client_time;
                self.phase = Phase::Transfer;
                let quota_left = env.take_quota(0).unwrap_or(0);
                Ok(Step::Reply(VaultFrame::Ready { quota_left }))
            }
            (Phase::Transfer, ClientFrame::Have { ids }) => {
                let needed = ids.iter().map(|id| !self.received.contains_key(id) && !env.has_chunk(id)).collect();
                Ok(Step::Reply(VaultFrame::Need { needed }))
            }
            (Phase::Transfer, ClientFrame::Chunk { id, data }) => {
                // Every byte counts against the quota, even a chunk the vault already has:
                // the quota bounds what a pusher may send, not what it may store.
                let len = data.len() as u64;
                env.take_quota(len).map_err(|(quota, would_be)| Error::QuotaExceeded {
                    pusher: self.pusher.clone(),
                    quota,
                    would_be,
                })?;
                let actual = ChunkId::of(&data);
                if actual != id {
                    return Err(Error::ChunkHashMismatch { claimed: id.to_hex(), actual: actual.to_hex() });
                }
                if self.received.contains_key(&id) || env.has_chunk(&id) {
                    return Ok(Step::Nothing);
                }
                self.received.insert(id, data.len() as u32);
                self.bytes_new += len;
                Ok(Step::Store { id, data })
            }
            (Phase::Transfer | Phase::Manifest, ClientFrame::ManifestPart { bytes }) => {
                let total = self.manifest.len() + bytes.len();
                if total > MAX_MANIFEST_BYTES {
                    return Err(Error::TooLarge { what: "manifest", size: total, limit: MAX_MANIFEST_BYTES });
                }
                self.manifest.extend_from_slice(&bytes);
                self.phase = Phase::Manifest;
                Ok(Step::Nothing)
            }
            (Phase::Transfer | Phase::Manifest, ClientFrame::Commit { manifest_sha256, manifest_len }) => {
                let actual = ring::digest::digest(&ring::digest::SHA256, &self.manifest);
                if actual.as_ref() != manifest_sha256 || manifest_len != self.manifest.len() as u64 {
                    return Err(Error::ManifestHashMismatch {
                        claimed: format!("{} ({manifest_len} bytes)", hex(&manifest_sha256)),
                        actual: format!("{} ({} bytes)", hex(actual.as_ref()), self.manifest.len()),
                    });
                }
                let manifest = Manifest::decode(&self.manifest)?;
                for (entry, chunk) in manifest.chunk_refs() {
                    let present = match self.received.get(&chunk.id) {
                        Some(len) => *len == chunk.len,
                        None => env.has_chunk(&chunk.id),
                    };
                    if !present {
                        return Err(Error::MissingChunk { id: chunk.id.to_hex(), path: entry.display_path() });
                    }
                }
                self.phase = Phase::Sealing;
                Ok(Step::Seal(SealRequest {
                    dataset: self.dataset.clone(),
                    manifest,
                    manifest_bytes: std::mem::take(&mut self.manifest),
                    manifest_sha256: hex(actual.as_ref()),
                    chunks_new: self.received.len() as u64,
                    bytes_new: self.bytes_new,
                    client_time: self.client_time,
                }))
            }
            (phase, frame) => Err(out_of_order(phase, &frame)),
        }
    }

    /// The daemon sealed the snapshot; the session accepts nothing more.
    pub fn sealed(&mut self) {
        self.phase = Phase::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ChunkRef, Entry, EntryKind};
    use std::collections::HashSet;

    #[derive(Default)]
    struct Env {
        sealed: HashSet<ChunkId>,
        used: u64,
        quota: u64,
    }

    impl IngestEnv for Env {
        fn has_chunk(&self, id: &ChunkId) -> bool {
            self.sealed.contains(id)
        }
        fn take_quota(&mut self, bytes: u64) -> std::result::Result<u64, (u64, u64)> {
            if self.used + bytes > self.quota {
                return Err((self.quota, self.used + bytes));
            }
            self.used += bytes;
            Ok(self.quota - self.used)
        }
    }

    fn env() -> Env {
        Env { quota: 1 << 20, ..Env::default() }
    }

    fn manifest_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let entries = files
            .iter()
            .map(|(path, data)| Entry {
                path: path.as_bytes().to_vec(),
                mode: 0o644,
                mtime: 0,
                kind: EntryKind::File { size: data.len() as u64, chunks: vec![ChunkRef { id: ChunkId::of(data), len: data.len() as u32 }] },
            })
            .collect();
        Manifest { entries }.encode()
    }

    fn commit_frame(manifest: &[u8]) -> ClientFrame {
        let digest = ring::digest::digest(&ring::digest::SHA256, manifest);
        ClientFrame::Commit { manifest_sha256: digest.as_ref().try_into().unwrap(), manifest_len: manifest.len() as u64 }
    }

    fn begun(env: &mut Env) -> IngestSession {
        let mut s = IngestSession::new("db-backup");
        let step = s.on_frame(ClientFrame::Begin { dataset: "db".into(), client_time: 0 }, env).unwrap();
        assert!(matches!(step, Step::Reply(VaultFrame::Ready { .. })));
        s
    }

    #[test]
    fn a_full_session_seals() {
        let mut env = env();
        env.sealed.insert(ChunkId::of(b"old"));
        let mut s = begun(&mut env);
        let have = s.on_frame(ClientFrame::Have { ids: vec![ChunkId::of(b"old"), ChunkId::of(b"new")] }, &mut env).unwrap();
        assert_eq!(have, Step::Reply(VaultFrame::Need { needed: vec![false, true] }));
        let store = s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"new"), data: b"new".to_vec() }, &mut env).unwrap();
        assert_eq!(store, Step::Store { id: ChunkId::of(b"new"), data: b"new".to_vec() });
        let manifest = manifest_of(&[("a", b"old"), ("b", b"new")]);
        s.on_frame(ClientFrame::ManifestPart { bytes: manifest.clone() }, &mut env).unwrap();
        let Step::Seal(seal) = s.on_frame(commit_frame(&manifest), &mut env).unwrap() else { panic!("no seal") };
        assert_eq!((seal.chunks_new, seal.bytes_new, seal.manifest.entries.len()), (1, 3, 2));
        s.sealed();
        let err = s.on_frame(ClientFrame::Have { ids: vec![] }, &mut env).unwrap_err();
        assert_eq!(err.to_string(), "out of order: `have` is not allowed after commit");
    }

    #[test]
    fn verbs_out_of_order_are_refused() {
        let mut env = env();
        let mut s = IngestSession::new("p");
        let err = s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"x"), data: b"x".to_vec() }, &mut env).unwrap_err();
        assert_eq!(err, Error::OutOfOrder { verb: "chunk", phase: "before begin" });
        let mut s = begun(&mut env);
        let err = s.on_frame(ClientFrame::Begin { dataset: "again".into(), client_time: 0 }, &mut env).unwrap_err();
        assert!(matches!(err, Error::OutOfOrder { verb: "begin", .. }));
        s.on_frame(ClientFrame::ManifestPart { bytes: vec![1] }, &mut env).unwrap();
        let err = s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"x"), data: b"x".to_vec() }, &mut env).unwrap_err();
        assert_eq!(err, Error::OutOfOrder { verb: "chunk", phase: "after the manifest started" });
    }

    #[test]
    fn a_chunk_whose_bytes_do_not_match_its_hash_is_refused() {
        let mut env = env();
        let mut s = begun(&mut env);
        let err = s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"claimed"), data: b"actual".to_vec() }, &mut env).unwrap_err();
        assert!(matches!(err, Error::ChunkHashMismatch { ref claimed, ref actual } if *claimed == ChunkId::of(b"claimed").to_hex() && *actual == ChunkId::of(b"actual").to_hex()));
    }

    #[test]
    fn a_manifest_naming_a_missing_chunk_is_refused() {
        let mut env = env();
        let mut s = begun(&mut env);
        let manifest = manifest_of(&[("a", b"never sent")]);
        s.on_frame(ClientFrame::ManifestPart { bytes: manifest.clone() }, &mut env).unwrap();
        let err = s.on_frame(commit_frame(&manifest), &mut env).unwrap_err();
        assert!(matches!(err, Error::MissingChunk { ref path, .. } if path == "a"), "{err}");
    }

    #[test]
    fn a_manifest_with_hostile_names_is_refused() {
        let mut env = env();
        let mut s = begun(&mut env);
        s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"x"), data: b"x".to_vec() }, &mut env).unwrap();
        let manifest = manifest_of(&[("../escape", b"x")]);
        s.on_frame(ClientFrame::ManifestPart { bytes: manifest.clone() }, &mut env).unwrap();
        let err = s.on_frame(commit_frame(&manifest), &mut env).unwrap_err();
        assert!(matches!(err, Error::BadName { reason: "`..` component", .. }), "{err}");
    }

    #[test]
    fn a_commit_with_the_wrong_manifest_hash_is_refused() {
        let mut env = env();
        let mut s = begun(&mut env);
        s.on_frame(ClientFrame::ManifestPart { bytes: manifest_of(&[]) }, &mut env).unwrap();
        let err = s.on_frame(commit_frame(b"something else"), &mut env).unwrap_err();
        assert!(matches!(err, Error::ManifestHashMismatch { .. }), "{err}");
    }

    #[test]
    fn quota_is_enforced_on_every_byte_sent() {
        let mut env = Env { quota: 10, ..Env::default() };
        let mut s = begun(&mut env);
        s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"123456"), data: b"123456".to_vec() }, &mut env).unwrap();
        // Resending the same chunk still costs quota.
        s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"123456"), data: b"123456".to_vec() }, &mut env).unwrap_err();
        let err = s.on_frame(ClientFrame::Chunk { id: ChunkId::of(b"abcde"), data: b"abcde".to_vec() }, &mut env).unwrap_err();
        assert_eq!(err.to_string(), "quota exceeded: pusher `db-backup` may send 10 bytes per window, this chunk would make 11");
    }

    #[test]
    fn an_oversize_manifest_and_a_bad_dataset_name_are_refused() {
        let mut env = env();
        let mut s = IngestSession::new("p");
        let err = s.on_frame(ClientFrame::Begin { dataset: "../x".into(), client_time: 0 }, &mut env).unwrap_err();
        assert!(err.to_string().contains("`dataset`"), "{err}");
        let mut s = begun(&mut env);
        let part = vec![0u8; 1024 * 1024];
        for _ in 0..16 {
            s.on_frame(ClientFrame::ManifestPart { bytes: part.clone() }, &mut env).unwrap();
        }
        let err = s.on_frame(ClientFrame::ManifestPart { bytes: vec![0] }, &mut env).unwrap_err();
        assert!(matches!(err, Error::TooLarge { what: "manifest", .. }));
    }
}
