//! The vault's side of one push session, as a sans-IO state machine: the daemon feeds it
//! decoded frames and does what each [`Step`] says (reply, stage a verified chunk or a
//! manifest part, check the manifest, seal). Every rule of a session lives here: order of
//! verbs, the limits of [`crate::push::limits`] charged for every frame before anything is
//! spent on it, re-hashing, manifest checks.
//!
//! Phases: `AwaitBegin` -> `Transfer` (have / chunk / manifest parts) -> `Manifest` (only
//! more manifest parts and the commit) -> `Checking` (the daemon reads back what it staged
//! and calls [`IngestSession::check_manifest`]) -> `Sealing` -> `Done`. Any refusal ends the
//! session; nothing of it becomes visible, because only [`Step`]'s seal makes a snapshot.
//!
//! The session keeps no table of its chunks in memory: the daemon stages each chunk's
//! record beside its bytes, and at commit hands the sorted table back ([`StagedChunks`]).
//! What a session holds is a few counters and a running manifest hash, whatever is sent.
//!
//! Storage is deduplicated across pushers, knowledge is not: `have` and the manifest check
//! count only chunks this pusher owns (ones its own sealed snapshots name). A chunk another
//! pusher stored must be sent in full once; its bytes prove the pusher holds the content, it
//! is recorded as theirs ([`ChunkStep::Proven`]) and not stored twice. So a pusher cannot learn
//! whether guessed content exists in someone else's backups: every answer it gets (`need`,
//! the commit's check, the receipt's new bytes) is the same as if it did not, and so is the
//! disk work behind them (a proven chunk's bytes are staged and sealed as dead bytes, so the
//! commit writes, syncs and publishes a pack of the same size either way).

use crate::canonical::check_identifier;
use crate::error::PushError;
use crate::error::{Error, Result};
use crate::keys::hex;
use crate::push::chunk::ChunkId;
use crate::push::limits::WindowAccount;
use crate::push::manifest::{self, Summary, MAX_MANIFEST_BYTES};
use crate::push::protocol::{ClientFrame, VaultFrame};
use crate::push::receipt::MAX_DATASET_BYTES;
use crate::push::signals::{self, arrived_file, probe_chunk, Arrived, ChunkProbe};

/// What the session needs from the vault around it.
pub trait IngestEnv {
    /// The length of this chunk if it is sealed in the store, by any pusher.
    fn sealed_len(&self, id: &ChunkId) -> Option<u32>;
    /// The length of this chunk if it is sealed and owned by the session's pusher. Never
    /// more than [`IngestEnv::sealed_len`] knows.
    fn owned_len(&self, id: &ChunkId) -> Option<u32>;
    /// Runs `charge` on this pusher's account for the current window (shared by its
    /// concurrent sessions).
    fn account<R>(&mut self, charge: impl FnOnce(&mut WindowAccount) -> R) -> R;
}

/// The chunks a session staged, read back at commit.
pub trait StagedChunks {
    fn count(&self) -> usize;
    /// The position (`0..count`) and length of a staged chunk.
    fn find(&self, id: &ChunkId) -> Option<(usize, u32)>;
    /// What probing the chunk at a position found when it arrived.
    fn probe(&self, index: usize) -> ChunkProbe;
    /// Whether the chunk at a position was proven ([`ChunkStep::Proven`]): staged without
    /// bytes, against a copy the store held then.
    fn is_proven(&self, index: usize) -> bool;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitBegin,
    Transfer,
    Manifest,
    Checking,
    Sealing,
    Done,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::AwaitBegin => "before begin",
            Phase::Transfer => "while transferring",
            Phase::Manifest => "after the manifest started",
            Phase::Checking | Phase::Sealing => "while sealing",
            Phase::Done => "after commit",
        }
    }
}

/// What the daemon must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Reply(VaultFrame),
    /// The chunks of a `chunk` or `chunks` frame, each verified against its id: do what each
    /// says, in order.
    Chunks(Vec<ChunkStep>),
    /// The next part of the manifest: stage it.
    StoreManifest {
        bytes: Vec<u8>,
    },
    /// The commit names the manifest that was received: read back the staged manifest and
    /// chunk table and call [`IngestSession::check_manifest`].
    CheckManifest,
}

/// What to do with one chunk that arrived and matched its id.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkStep {
    /// New to the store: stage it (bytes and record, with its probe).
    Store { id: ChunkId, data: Vec<u8>, probe: ChunkProbe },
    /// Another pusher already sealed it, and it was sent in full: stage its record as proven
    /// (its probe), so that sealing makes it this pusher's too without indexing a second
    /// copy. The bytes are staged too, as dead bytes, so that the commit costs the disk the
    /// same as for a new chunk and its timing does not tell the pusher what others stored.
    Proven { id: ChunkId, data: Vec<u8>, probe: ChunkProbe },
    /// Nothing to do: this pusher already owns it.
    AlreadyOwned,
}

/// Every check passed: seal this snapshot, then call [`IngestSession::sealed`].
#[derive(Debug, PartialEq, Eq)]
pub struct SealRequest {
    pub dataset: String,
    pub manifest_sha256: String,
    pub summary: Summary,
    /// One flag per staged chunk (in [`StagedChunks`] order): named by the manifest. Only
    /// those are indexed (or, when proven, owned) when the pack is sealed; the rest are dead
    /// bytes the quota paid for.
    pub referenced: Vec<bool>,
    /// Chunks and bytes new to this pusher (stored or proven): what it sent that counted.
    pub chunks_new: u64,
    pub bytes_new: u64,
    pub client_time: i64,
    /// The audit log size the pusher holds a checkpoint of: the receipt's proof starts there.
    pub audit_size: u64,
    /// Each file as this session measured it, in manifest order: what the ransomware
    /// signals judge ([`crate::push::signals::assess`]).
    pub arrived: Vec<Arrived>,
}

/// A pusher's frame with the SHA-256 of each of its chunks' bytes and their probe for the
/// signals, computed here: made only by [`HashedFrame::of`], so the session compares a
/// chunk's claimed id with a hash the vault computed itself, whoever holds the frame in
/// between. Hashing is most of a session's work and needs nothing of its state, so the daemon
/// hashes the next frame while the session stores this one (at most one frame ahead of the
/// session's charge for it).
pub struct HashedFrame {
    frame: ClientFrame,
    /// One per chunk of a `chunk` or `chunks` frame, in order; empty for any other frame.
    actual: Vec<(ChunkId, ChunkProbe)>,
}

impl HashedFrame {
    pub fn of(frame: ClientFrame) -> HashedFrame {
        let actual = match &frame {
            ClientFrame::Chunk { data, .. } => vec![hash_and_probe(data)],
            ClientFrame::Chunks { chunks } => chunks.iter().map(|(_, data)| hash_and_probe(data)).collect(),
            _ => Vec::new(),
        };
        HashedFrame { frame, actual }
    }
}

/// What the session needs of a chunk's bytes besides storing them. Probed while the bytes are
/// at hand: the signals never read a chunk twice.
fn hash_and_probe(data: &[u8]) -> (ChunkId, ChunkProbe) {
    (ChunkId::of(data), probe_chunk(data))
}

pub struct IngestSession {
    pusher: String,
    quota: u64,
    phase: Phase,
    dataset: String,
    client_time: i64,
    audit_size: u64,
    /// New chunks staged by this session.
    new_chunks: u64,
    manifest_len: usize,
    manifest_hash: ring::digest::Context,
    manifest_sha256: [u8; 32],
}

/// A dataset name: an identifier short enough that the snapshot id made from it is one too.
pub fn check_dataset(name: &str) -> Result<()> {
    check_identifier("dataset", name)?;
    if name.len() > MAX_DATASET_BYTES {
        return Err(Error::InvalidField { field: "dataset".into(), reason: format!("`{name}` is {} characters, at most {MAX_DATASET_BYTES} (it becomes part of the snapshot id)", name.len()) });
    }
    Ok(())
}

impl IngestSession {
    /// An authenticated session of `pusher`, whose window quota is `quota` bytes: counted
    /// against the sessions it may start in this window.
    pub fn start(pusher: &str, quota: u64, env: &mut impl IngestEnv) -> Result<IngestSession> {
        env.account(|a| a.start_session(pusher))?;
        Ok(IngestSession {
            pusher: pusher.to_string(),
            quota,
            phase: Phase::AwaitBegin,
            dataset: String::new(),
            client_time: 0,
            audit_size: 0,
            new_chunks: 0,
            manifest_len: 0,
            manifest_hash: ring::digest::Context::new(&ring::digest::SHA256),
            manifest_sha256: [0; 32],
        })
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

    /// Applies one frame that took `wire_bytes` on the wire: [`IngestSession::on_hashed`] with
    /// its chunks hashed here.
    pub fn on_frame(&mut self, frame: ClientFrame, wire_bytes: usize, env: &mut impl IngestEnv) -> Result<Step> {
        self.on_hashed(HashedFrame::of(frame), wire_bytes, env)
    }

    /// Applies one frame that took `wire_bytes` on the wire, its chunks already hashed (so
    /// the daemon can hash the next frame while this one is stored). Every frame is charged
    /// to the pusher's quota first, whatever it is, before anything is stored or answered. An
    /// `Err` is a refusal: send it and close.
    pub fn on_hashed(&mut self, hashed: HashedFrame, wire_bytes: usize, env: &mut impl IngestEnv) -> Result<Step> {
        let HashedFrame { frame, actual } = hashed;
        let mut actual = actual.into_iter();
        let (pusher, quota) = (self.pusher.as_str(), self.quota);
        let wire_bytes = u64::try_from(wire_bytes).unwrap_or(u64::MAX);
        let quota_left = env.account(|a| a.charge_bytes(pusher, quota, wire_bytes))?;
        let out_of_order = |phase: Phase, frame: &ClientFrame| Error::Push(PushError::OutOfOrder { verb: frame.verb_name(), phase: phase.describe() });
        match (self.phase, frame) {
            (Phase::AwaitBegin, ClientFrame::Begin { dataset, client_time, audit_size }) => {
                check_dataset(&dataset)?;
                self.dataset = dataset;
                self.client_time = client_time;
                self.audit_size = audit_size;
                self.phase = Phase::Transfer;
                Ok(Step::Reply(VaultFrame::Ready { quota_left }))
            }
            (Phase::Transfer, ClientFrame::Have { ids }) => {
                let needed = ids.iter().map(|id| env.owned_len(id).is_none()).collect();
                Ok(Step::Reply(VaultFrame::Need { needed }))
            }
            (Phase::Transfer, ClientFrame::Chunk { id, data }) => Ok(Step::Chunks(vec![self.on_chunk(id, data, actual.next(), env)?])),
            (Phase::Transfer, ClientFrame::Chunks { chunks }) => {
                let mut steps = Vec::with_capacity(chunks.len());
                for (id, data) in chunks {
                    steps.push(self.on_chunk(id, data, actual.next(), env)?);
                }
                Ok(Step::Chunks(steps))
            }
            (Phase::Transfer | Phase::Manifest, ClientFrame::ManifestPart { bytes }) => {
                let total = self.manifest_len.saturating_add(bytes.len());
                if total > MAX_MANIFEST_BYTES {
                    return Err(Error::TooLarge { what: "manifest", size: total, limit: MAX_MANIFEST_BYTES });
                }
                self.manifest_len = total;
                self.manifest_hash.update(&bytes);
                self.phase = Phase::Manifest;
                Ok(Step::StoreManifest { bytes })
            }
            (Phase::Transfer | Phase::Manifest, ClientFrame::Commit { manifest_sha256, manifest_len }) => {
                let actual = self.manifest_hash.clone().finish();
                if actual.as_ref() != manifest_sha256 || u64::try_from(self.manifest_len).ok() != Some(manifest_len) {
                    return Err(Error::Push(PushError::ManifestHashMismatch {
                        claimed: format!("{} ({manifest_len} bytes)", hex(&manifest_sha256)),
                        actual: format!("{} ({} bytes)", hex(actual.as_ref()), self.manifest_len),
                    }));
                }
                self.manifest_sha256 = manifest_sha256;
                self.phase = Phase::Checking;
                Ok(Step::CheckManifest)
            }
            (phase, frame) => Err(out_of_order(phase, &frame)),
        }
    }

    /// One chunk (of a `chunk` frame, or one of a `chunks` frame's), its frame already charged:
    /// its bytes' hash (from [`HashedFrame::of`]) checked against its id, then charged a
    /// new-chunk place unless this pusher owns it.
    fn on_chunk(&mut self, id: ChunkId, data: Vec<u8>, hashed: Option<(ChunkId, ChunkProbe)>, env: &mut impl IngestEnv) -> Result<ChunkStep> {
        // `HashedFrame::of` hashed every chunk of the frame, in order: never `None`, but
        // hashed here rather than trusted if it were.
        let (actual, probe) = hashed.unwrap_or_else(|| hash_and_probe(&data));
        if actual != id {
            return Err(Error::Push(PushError::ChunkHashMismatch { claimed: id.to_hex(), actual: actual.to_hex() }));
        }
        if env.owned_len(&id).is_some() {
            return Ok(ChunkStep::AlreadyOwned);
        }
        // New to this pusher: a record is staged either way, so either way it takes a
        // new-chunk place.
        let (pusher, in_session) = (self.pusher.as_str(), self.new_chunks);
        env.account(|a| a.charge_new_chunk(pusher, in_session))?;
        self.new_chunks += 1;
        Ok(match env.sealed_len(&id) {
            Some(_) => ChunkStep::Proven { id, data, probe },
            None => ChunkStep::Store { id, data, probe },
        })
    }

    /// The staged manifest and chunk table, read back: the manifest must be the one the
    /// commit named, follow every manifest rule, and name only chunks that were staged
    /// (stored or proven) or that this pusher owns, at their true lengths. A proven chunk is
    /// asked of the store again: collection may have removed the copy it was proven against
    /// while the session ran, and the daemon calls this where no collection can run until
    /// the seal is done.
    pub fn check_manifest(&mut self, manifest_bytes: &[u8], staged: &impl StagedChunks, env: &mut impl IngestEnv) -> Result<SealRequest> {
        if self.phase != Phase::Checking {
            return Err(Error::Push(PushError::OutOfOrder { verb: "commit", phase: self.phase.describe() }));
        }
        let actual = ring::digest::digest(&ring::digest::SHA256, manifest_bytes);
        if actual.as_ref() != self.manifest_sha256 {
            return Err(Error::Push(PushError::ManifestHashMismatch {
                claimed: hex(&self.manifest_sha256),
                actual: format!("{} as read back from staging ({} bytes)", hex(actual.as_ref()), manifest_bytes.len()),
            }));
        }
        let mut referenced = vec![false; staged.count()];
        let (mut chunks_new, mut bytes_new) = (0u64, 0u64);
        // Room for every file the manifest could hold, taken up only as files come (pages not
        // written are not memory): no growth by doubling, which would hold two copies at once.
        let mut arrived = Vec::with_capacity(manifest_bytes.len() / manifest::MIN_FILE_ENTRY_BYTES);
        let summary = manifest::walk(manifest_bytes, |entry| {
            for chunk in entry.chunks().iter().flat_map(|c| c.iter()) {
                let present_len = match staged.find(&chunk.id) {
                    Some((index, len)) => {
                        let first = !std::mem::replace(&mut referenced[index], true);
                        if first {
                            if staged.is_proven(index) && env.sealed_len(&chunk.id) != Some(len) {
                                return Err(Error::Push(PushError::ProvenChunkCollected { id: chunk.id.to_hex(), path: entry.display_path() }));
                            }
                            chunks_new += 1;
                            bytes_new += u64::from(len);
                        }
                        Some(len)
                    }
                    None => env.owned_len(&chunk.id),
                };
                match present_len {
                    Some(len) if len == chunk.len => {}
                    Some(len) => return Err(Error::Malformed { what: "manifest", reason: format!("`{}` names chunk {} as {} bytes, it is {len}", entry.display_path(), chunk.id, chunk.len) }),
                    None => return Err(Error::Push(PushError::MissingChunk { id: chunk.id.to_hex(), path: entry.display_path() })),
                }
            }
            if signals::ENABLED {
                arrived.extend(arrived_file(entry, manifest_bytes, |chunk| staged.find(&chunk.id).map(|(index, _)| staged.probe(index))));
            }
            Ok(())
        })?;
        self.phase = Phase::Sealing;
        Ok(SealRequest {
            dataset: self.dataset.clone(),
            manifest_sha256: hex(&self.manifest_sha256),
            summary,
            referenced,
            chunks_new,
            bytes_new,
            client_time: self.client_time,
            audit_size: self.audit_size,
            arrived,
        })
    }

    /// The daemon sealed the snapshot; the session accepts nothing more.
    pub fn sealed(&mut self) {
        self.phase = Phase::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::chunk::MIN_CHUNK_BYTES;
    use crate::push::limits::{MAX_SESSIONS_PER_WINDOW, MAX_SESSION_NEW_CHUNKS};
    use crate::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
    use std::collections::HashMap;

    /// A store holding chunks this session's pusher owns and chunks only others own.
    #[derive(Default)]
    struct Env {
        owned: HashMap<ChunkId, u32>,
        others: HashMap<ChunkId, u32>,
        account: WindowAccount,
    }

    impl IngestEnv for Env {
        fn sealed_len(&self, id: &ChunkId) -> Option<u32> {
            self.owned.get(id).or(self.others.get(id)).copied()
        }
        fn owned_len(&self, id: &ChunkId) -> Option<u32> {
            self.owned.get(id).copied()
        }
        fn account<R>(&mut self, charge: impl FnOnce(&mut WindowAccount) -> R) -> R {
            charge(&mut self.account)
        }
    }

    /// What the daemon stages, as it reads it back at commit: sorted by id.
    #[derive(Default)]
    struct Staged(Vec<(ChunkId, u32, ChunkProbe, bool)>);

    impl StagedChunks for Staged {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn find(&self, id: &ChunkId) -> Option<(usize, u32)> {
            self.0.binary_search_by(|(c, _, _, _)| c.cmp(id)).ok().map(|i| (i, self.0[i].1))
        }
        fn probe(&self, index: usize) -> ChunkProbe {
            self.0[index].2
        }
        fn is_proven(&self, index: usize) -> bool {
            self.0[index].3
        }
    }

    /// A session driven the way the daemon drives it: stages what it is told to.
    struct Driver {
        session: IngestSession,
        staged: Staged,
        manifest: Vec<u8>,
    }

    const QUOTA: u64 = 1 << 30;

    impl Driver {
        fn send(&mut self, frame: ClientFrame, env: &mut Env) -> Result<Step> {
            let wire = frame.encode().unwrap().len();
            let step = self.session.on_frame(frame, wire, env)?;
            match &step {
                Step::Chunks(steps) => {
                    for chunk in steps {
                        match chunk {
                            ChunkStep::Store { id, data, probe } => self.staged.0.push((*id, u32::try_from(data.len()).unwrap(), *probe, false)),
                            ChunkStep::Proven { id, data, probe } => self.staged.0.push((*id, u32::try_from(data.len()).unwrap(), *probe, true)),
                            ChunkStep::AlreadyOwned => {}
                        }
                    }
                }
                Step::StoreManifest { bytes } => self.manifest.extend_from_slice(bytes),
                _ => {}
            }
            Ok(step)
        }

        fn commit(&mut self, env: &mut Env) -> Result<SealRequest> {
            let manifest = self.manifest.clone();
            assert_eq!(self.send(commit_frame(&manifest), env)?, Step::CheckManifest);
            self.staged.0.sort_by_key(|(id, _, _, _)| *id);
            self.session.check_manifest(&manifest, &self.staged, env)
        }
    }

    fn manifest_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let entries = files
            .iter()
            .map(|(path, data)| Entry {
                path: path.as_bytes().to_vec(),
                mode: 0o644,
                mtime: 0,
                kind: EntryKind::File { size: data.len() as u64, chunks: vec![ChunkRef { id: ChunkId::of(data), len: u32::try_from(data.len()).unwrap() }] },
            })
            .collect();
        Manifest { entries }.encode().unwrap()
    }

    fn commit_frame(manifest: &[u8]) -> ClientFrame {
        let digest = ring::digest::digest(&ring::digest::SHA256, manifest);
        ClientFrame::Commit { manifest_sha256: digest.as_ref().try_into().unwrap(), manifest_len: manifest.len() as u64 }
    }

    fn chunk(data: &[u8]) -> ClientFrame {
        ClientFrame::Chunk { id: ChunkId::of(data), data: data.to_vec() }
    }

    fn begun(env: &mut Env) -> Driver {
        let session = IngestSession::start("db-backup", QUOTA, env).unwrap();
        let mut driver = Driver { session, staged: Staged::default(), manifest: vec![] };
        let step = driver.send(ClientFrame::Begin { dataset: "db".into(), client_time: 0, audit_size: 0 }, env).unwrap();
        assert!(matches!(step, Step::Reply(VaultFrame::Ready { .. })));
        driver
    }

    #[test]
    fn a_full_session_seals() {
        let mut env = Env::default();
        env.owned.insert(ChunkId::of(b"old"), 3);
        let mut s = begun(&mut env);
        let have = s.send(ClientFrame::Have { ids: vec![ChunkId::of(b"old"), ChunkId::of(b"new")] }, &mut env).unwrap();
        assert_eq!(have, Step::Reply(VaultFrame::Need { needed: vec![false, true] }));
        let store = s.send(chunk(b"new"), &mut env).unwrap();
        assert_eq!(store, Step::Chunks(vec![ChunkStep::Store { id: ChunkId::of(b"new"), data: b"new".to_vec(), probe: probe_chunk(b"new") }]));
        let manifest = manifest_of(&[("a", b"old"), ("b", b"new")]);
        s.send(ClientFrame::ManifestPart { bytes: manifest.clone() }, &mut env).unwrap();
        let seal = s.commit(&mut env).unwrap();
        assert_eq!((seal.chunks_new, seal.bytes_new, seal.summary.entries, seal.referenced), (1, 3, 2, vec![true]));
        s.session.sealed();
        let err = s.send(ClientFrame::Have { ids: vec![] }, &mut env).unwrap_err();
        assert_eq!(err.to_string(), "out of order: `have` is not allowed after commit");
    }

    #[test]
    fn another_pushers_chunks_are_neither_confirmed_nor_usable_until_sent_in_full() {
        let theirs = b"content someone else backed up".as_slice();
        let mut env = Env::default();
        env.others.insert(ChunkId::of(theirs), u32::try_from(theirs.len()).unwrap());
        // `have` answers as if the vault had never seen it.
        let mut s = begun(&mut env);
        let have = s.send(ClientFrame::Have { ids: vec![ChunkId::of(theirs), ChunkId::of(b"unknown")] }, &mut env).unwrap();
        assert_eq!(have, Step::Reply(VaultFrame::Need { needed: vec![true, true] }));
        // Naming it in a manifest without sending it is refused exactly like an unknown chunk.
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("guess", theirs)]) }, &mut env).unwrap();
        let err = s.commit(&mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::MissingChunk { ref path, .. }) if path == "guess"), "{err}");

        // Sent in full, it is proven (recorded, not stored again), and counts as new to this
        // pusher in the receipt, the same as a chunk the vault never had.
        let mut s = begun(&mut env);
        assert_eq!(s.send(chunk(theirs), &mut env).unwrap(), Step::Chunks(vec![ChunkStep::Proven { id: ChunkId::of(theirs), data: theirs.to_vec(), probe: probe_chunk(theirs) }]));
        assert_eq!(s.session.new_chunks, 1, "a proven chunk takes a new-chunk place");
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("mine now", theirs)]) }, &mut env).unwrap();
        let seal = s.commit(&mut env).unwrap();
        assert_eq!((seal.chunks_new, seal.bytes_new, seal.referenced), (1, theirs.len() as u64, vec![true]));
    }

    #[test]
    fn a_proven_chunk_whose_copy_was_collected_meanwhile_is_refused_at_commit() {
        let theirs = b"content someone else backed up, expiring".as_slice();
        let mut env = Env::default();
        env.others.insert(ChunkId::of(theirs), u32::try_from(theirs.len()).unwrap());
        let mut s = begun(&mut env);
        let step = s.send(chunk(theirs), &mut env).unwrap();
        assert!(matches!(step, Step::Chunks(ref steps) if matches!(steps[..], [ChunkStep::Proven { .. }])), "{step:?}");
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("kept?", theirs)]) }, &mut env).unwrap();
        // Collection removes the only copy before the commit is checked.
        env.others.clear();
        let err = s.commit(&mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::ProvenChunkCollected { ref id, ref path }) if *id == ChunkId::of(theirs).to_hex() && path == "kept?"), "{err}");
        assert!(err.to_string().contains("push again"), "{err}");

        // Pushed again, the chunk is new to the store: stored, and the snapshot seals.
        let mut s = begun(&mut env);
        assert!(matches!(s.send(chunk(theirs), &mut env).unwrap(), Step::Chunks(ref steps) if matches!(steps[..], [ChunkStep::Store { .. }])));
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("kept?", theirs)]) }, &mut env).unwrap();
        assert_eq!(s.commit(&mut env).unwrap().referenced, vec![true]);
    }

    #[test]
    fn a_chunks_frame_is_each_of_its_chunks_sent_alone() {
        let theirs = b"content someone else backed up".as_slice();
        let mut env = Env::default();
        env.owned.insert(ChunkId::of(b"old"), 3);
        env.others.insert(ChunkId::of(theirs), u32::try_from(theirs.len()).unwrap());
        let mut s = begun(&mut env);
        let batch = ClientFrame::Chunks { chunks: [b"new".as_slice(), b"old", theirs].iter().map(|d| (ChunkId::of(d), d.to_vec())).collect() };
        let (wire, before) = (batch.encode().unwrap().len() as u64, env.account.bytes);
        let step = s.send(batch, &mut env).unwrap();
        assert_eq!(
            step,
            Step::Chunks(vec![
                ChunkStep::Store { id: ChunkId::of(b"new"), data: b"new".to_vec(), probe: probe_chunk(b"new") },
                ChunkStep::AlreadyOwned,
                ChunkStep::Proven { id: ChunkId::of(theirs), data: theirs.to_vec(), probe: probe_chunk(theirs) },
            ])
        );
        // The whole frame is charged to the quota; each new chunk takes its own place.
        assert_eq!(s.session.new_chunks, 2);
        assert_eq!(env.account.bytes - before, wire);
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("a", b"new"), ("b", b"old"), ("c", theirs)]) }, &mut env).unwrap();
        let seal = s.commit(&mut env).unwrap();
        assert_eq!((seal.chunks_new, seal.bytes_new, seal.summary.entries), (2, 3 + theirs.len() as u64, 3));
    }

    #[test]
    fn one_bad_chunk_refuses_its_whole_chunks_frame_and_the_limits_count_each_chunk() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        let forged = ClientFrame::Chunks { chunks: vec![(ChunkId::of(b"fine"), b"fine".to_vec()), (ChunkId::of(b"claimed"), b"actual".to_vec())] };
        let err = s.send(forged, &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::ChunkHashMismatch { ref claimed, .. }) if *claimed == ChunkId::of(b"claimed").to_hex()), "{err}");

        let mut s = begun(&mut env);
        s.session.new_chunks = MAX_SESSION_NEW_CHUNKS - 1;
        let two = ClientFrame::Chunks { chunks: vec![(ChunkId::of(b"last"), b"last".to_vec()), (ChunkId::of(b"one too many"), b"one too many".to_vec())] };
        let err = s.send(two, &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::Limit { limit: "new_chunks_per_session", .. })), "{err}");
        // And a chunks frame is a chunk verb: out of order after the manifest started.
        let mut s = begun(&mut env);
        s.send(ClientFrame::ManifestPart { bytes: vec![1] }, &mut env).unwrap();
        let late = ClientFrame::Chunks { chunks: vec![(ChunkId::of(b"x"), b"x".to_vec())] };
        assert_eq!(s.send(late, &mut env).unwrap_err(), Error::Push(PushError::OutOfOrder { verb: "chunks", phase: "after the manifest started" }));
    }

    #[test]
    fn staged_chunks_the_manifest_does_not_name_are_not_indexed() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        s.send(chunk(b"named"), &mut env).unwrap();
        s.send(chunk(b"stray"), &mut env).unwrap();
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("a", b"named")]) }, &mut env).unwrap();
        let seal = s.commit(&mut env).unwrap();
        let named = s.staged.find(&ChunkId::of(b"named")).unwrap().0;
        assert!(seal.referenced[named] && seal.referenced.iter().filter(|r| **r).count() == 1);
        assert_eq!((seal.chunks_new, seal.bytes_new), (1, 5));
    }

    #[test]
    fn verbs_out_of_order_are_refused() {
        let mut env = Env::default();
        let mut s = Driver { session: IngestSession::start("p", QUOTA, &mut env).unwrap(), staged: Staged::default(), manifest: vec![] };
        let err = s.send(chunk(b"x"), &mut env).unwrap_err();
        assert_eq!(err, Error::Push(PushError::OutOfOrder { verb: "chunk", phase: "before begin" }));
        let mut s = begun(&mut env);
        let err = s.send(ClientFrame::Begin { dataset: "again".into(), client_time: 0, audit_size: 0 }, &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::OutOfOrder { verb: "begin", .. })));
        s.send(ClientFrame::ManifestPart { bytes: vec![1] }, &mut env).unwrap();
        let err = s.send(chunk(b"x"), &mut env).unwrap_err();
        assert_eq!(err, Error::Push(PushError::OutOfOrder { verb: "chunk", phase: "after the manifest started" }));
    }

    #[test]
    fn a_chunk_whose_bytes_do_not_match_its_hash_is_refused() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        let err = s.send(ClientFrame::Chunk { id: ChunkId::of(b"claimed"), data: b"actual".to_vec() }, &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::ChunkHashMismatch { ref claimed, ref actual }) if *claimed == ChunkId::of(b"claimed").to_hex() && *actual == ChunkId::of(b"actual").to_hex()));
    }

    #[test]
    fn a_manifest_naming_a_missing_chunk_or_a_wrong_length_is_refused() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("a", b"never sent")]) }, &mut env).unwrap();
        let err = s.commit(&mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::MissingChunk { ref path, .. }) if path == "a"), "{err}");

        env.owned.insert(ChunkId::of(b"sealed"), 99);
        let mut s = begun(&mut env);
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("a", b"sealed")]) }, &mut env).unwrap();
        let err = s.commit(&mut env).unwrap_err().to_string();
        assert!(err.contains("names chunk") && err.contains("as 6 bytes, it is 99"), "{err}");
    }

    #[test]
    fn a_manifest_with_hostile_names_is_refused() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        s.send(chunk(b"x"), &mut env).unwrap();
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[("../escape", b"x")]) }, &mut env).unwrap();
        let err = s.commit(&mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::BadName { reason: "`..` component", .. })), "{err}");
    }

    #[test]
    fn a_manifest_changed_in_staging_is_refused() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        let manifest = manifest_of(&[]);
        s.send(ClientFrame::ManifestPart { bytes: manifest.clone() }, &mut env).unwrap();
        s.send(commit_frame(&manifest), &mut env).unwrap();
        let err = s.session.check_manifest(b"other bytes", &Staged::default(), &mut env).unwrap_err().to_string();
        assert!(err.contains("as read back from staging"), "{err}");
    }

    #[test]
    fn a_commit_with_the_wrong_manifest_hash_is_refused() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        s.send(ClientFrame::ManifestPart { bytes: manifest_of(&[]) }, &mut env).unwrap();
        let err = s.send(commit_frame(b"something else"), &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::ManifestHashMismatch { .. })), "{err}");
    }

    #[test]
    fn every_frame_counts_against_the_quota() {
        let mut env = Env::default();
        env.owned.insert(ChunkId::of(b"old"), 3);
        let mut s = begun(&mut env);
        // `have`, a chunk the vault already has, manifest parts: each costs its wire size.
        for frame in [ClientFrame::Have { ids: vec![ChunkId::of(b"x"); 100] }, chunk(b"old"), ClientFrame::ManifestPart { bytes: vec![0; 1000] }] {
            let before = env.account.bytes;
            let wire = frame.encode().unwrap().len() as u64;
            s.send(frame, &mut env).unwrap();
            assert_eq!(env.account.bytes - before, wire);
        }

        let mut env = Env::default();
        let mut s = Driver { session: IngestSession::start("db-backup", 100, &mut env).unwrap(), staged: Staged::default(), manifest: vec![] };
        s.send(ClientFrame::Begin { dataset: "db".into(), client_time: 0, audit_size: 0 }, &mut env).unwrap();
        let err = s.send(ClientFrame::ManifestPart { bytes: vec![0; 200] }, &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::QuotaExceeded { quota: 100, .. })), "{err}");
        assert!(s.manifest.is_empty(), "nothing was staged for a refused frame");
    }

    #[test]
    fn sessions_and_new_chunks_are_bounded() {
        let mut env = Env::default();
        for _ in 0..MAX_SESSIONS_PER_WINDOW {
            IngestSession::start("p", QUOTA, &mut env).unwrap();
        }
        assert!(matches!(IngestSession::start("p", QUOTA, &mut env), Err(Error::Push(PushError::Limit { limit: "sessions_per_window", .. }))));

        let mut env = Env::default();
        let mut s = begun(&mut env);
        s.session.new_chunks = MAX_SESSION_NEW_CHUNKS;
        let err = s.send(chunk(b"one more"), &mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::Limit { limit: "new_chunks_per_session", .. })), "{err}");
        // A chunk the vault already has costs bytes, not a new-chunk place.
        env.owned.insert(ChunkId::of(b"old"), 3);
        assert_eq!(s.send(chunk(b"old"), &mut env).unwrap(), Step::Chunks(vec![ChunkStep::AlreadyOwned]));
    }

    #[test]
    fn short_chunks_are_refused_except_at_a_files_end() {
        let mut env = Env::default();
        let mut s = begun(&mut env);
        let big = vec![7u8; MIN_CHUNK_BYTES];
        let small = b"tail".to_vec();
        s.send(chunk(&big), &mut env).unwrap();
        s.send(chunk(&small), &mut env).unwrap();
        let file = |chunks: Vec<&Vec<u8>>| Entry {
            path: b"f".to_vec(),
            mode: 0o600,
            mtime: 0,
            kind: EntryKind::File { size: chunks.iter().map(|c| c.len() as u64).sum(), chunks: chunks.iter().map(|c| ChunkRef { id: ChunkId::of(c), len: u32::try_from(c.len()).unwrap() }).collect() },
        };
        let bad = Manifest { entries: vec![file(vec![&small, &big])] }.encode().unwrap();
        s.send(ClientFrame::ManifestPart { bytes: bad }, &mut env).unwrap();
        let err = s.commit(&mut env).unwrap_err();
        assert!(matches!(err, Error::Push(PushError::ShortChunk { index: 0, len: 4, .. })), "{err}");

        let mut s = begun(&mut env);
        s.send(chunk(&big), &mut env).unwrap();
        s.send(chunk(&small), &mut env).unwrap();
        s.send(ClientFrame::ManifestPart { bytes: Manifest { entries: vec![file(vec![&big, &small])] }.encode().unwrap() }, &mut env).unwrap();
        assert_eq!(s.commit(&mut env).unwrap().chunks_new, 2);
    }

    #[test]
    fn an_oversize_manifest_and_bad_dataset_names_are_refused_at_begin() {
        let mut env = Env::default();
        for (name, says) in [("../x", "`dataset`"), (&"d".repeat(MAX_DATASET_BYTES + 1)[..], "at most 38")] {
            let mut s = IngestSession::start("p", QUOTA, &mut env).unwrap();
            let err = s.on_frame(ClientFrame::Begin { dataset: name.into(), client_time: 0, audit_size: 0 }, 10, &mut env).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        let longest = "d".repeat(MAX_DATASET_BYTES);
        let mut s = IngestSession::start("p", QUOTA, &mut env).unwrap();
        s.on_frame(ClientFrame::Begin { dataset: longest.clone(), client_time: 0, audit_size: 0 }, 10, &mut env).unwrap();
        crate::push::receipt::snapshot_id(crate::units::Timestamp::from_unix(4_102_444_799).unwrap(), &longest, [0xff; 4]).unwrap();

        let mut s = begun(&mut env);
        let part = vec![0u8; 1024 * 1024];
        for _ in 0..16 {
            s.send(ClientFrame::ManifestPart { bytes: part.clone() }, &mut env).unwrap();
        }
        let err = s.send(ClientFrame::ManifestPart { bytes: vec![0] }, &mut env).unwrap_err();
        assert!(matches!(err, Error::TooLarge { what: "manifest", .. }));
    }
}
