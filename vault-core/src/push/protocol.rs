//! The push protocol's frames. Every frame is `u32 length | u8 version | u8 verb | body`,
//! big-endian, with the length checked against [`MAX_FRAME_BYTES`] before anything is
//! allocated for the body. Both sides read frames through one [`FrameReader`] (check the
//! prefix, then parse the body: mini-redis's `Frame::check` / `Frame::parse`), and every
//! encoder checks its lengths instead of casting them.
//!
//! The pusher has exactly six verbs and the vault exactly four answers, as the two enums
//! below. There is no verb to read, list, overwrite or delete: adding one means adding a
//! variant here, a code in [`ClientFrame::decode`], and a phase rule in
//! [`crate::push::ingest`], all of which a reviewer sees. Any other verb byte is refused and the
//! session closed.

use crate::audit::witness::LogEvidence;
use crate::error::PushError;
use crate::error::{Error, Result};
use crate::push::chunk::{ChunkId, MAX_CHUNK_BYTES};
use crate::wire::{Reader, Writer};

pub const PROTOCOL_VERSION: u8 = 1;
/// The largest frame: a chunk at its maximum size plus its header.
pub const MAX_FRAME_BYTES: usize = MAX_CHUNK_BYTES + 64;
/// Length prefix size.
pub const LENGTH_PREFIX: usize = 4;
/// Most chunk ids one `Have` may ask about.
pub const MAX_HAVE_IDS: usize = 4096;
/// Largest manifest part in one frame.
pub const MAX_MANIFEST_PART: usize = 1024 * 1024;
/// Most chunks one `chunks` frame may carry.
pub const MAX_BATCH_CHUNKS: usize = 1024;
/// A `chunks` frame's body before its first chunk: version, verb, count.
pub const BATCH_HEADER_BYTES: usize = 4;
/// What each chunk adds to a `chunks` frame's body besides its bytes: its id and length.
pub const BATCHED_CHUNK_OVERHEAD: usize = 32 + 4;

// Verb bytes. Pusher verbs are below 0x80, vault answers above.
const VERB_BEGIN: u8 = 0x01;
const VERB_HAVE: u8 = 0x02;
const VERB_CHUNK: u8 = 0x03;
const VERB_MANIFEST: u8 = 0x04;
const VERB_COMMIT: u8 = 0x05;
const VERB_CHUNKS: u8 = 0x06;
const VERB_READY: u8 = 0x81;
const VERB_NEED: u8 = 0x82;
const VERB_RECEIPT: u8 = 0x83;
const VERB_REFUSED: u8 = 0x84;

/// Everything a pusher can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Declares a snapshot of `dataset`. `client_time` is recorded, never trusted.
    /// `audit_size`: the entries of the newest checkpoint of this vault's audit log the pusher
    /// holds (0: none), which the receipt's consistency proof starts from.
    Begin { dataset: String, client_time: i64, audit_size: u64 },
    /// Which of these chunks does the vault still need?
    Have { ids: Vec<ChunkId> },
    /// One chunk; the vault re-hashes it.
    Chunk { id: ChunkId, data: Vec<u8> },
    /// Several chunks in one frame (small files), each exactly as if sent in a `Chunk` of its
    /// own: the vault re-hashes, charges and stages each.
    Chunks { chunks: Vec<(ChunkId, Vec<u8>)> },
    /// The next part of the manifest.
    ManifestPart { bytes: Vec<u8> },
    /// Seal the snapshot whose manifest (all parts together) has this hash and length.
    Commit { manifest_sha256: [u8; 32], manifest_len: u64 },
}

/// Everything the vault can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultFrame {
    /// The snapshot is open; `quota_left` bytes may still be sent in this window.
    Ready { quota_left: u64 },
    /// One flag per id of the matching `Have`: true = send it.
    Need { needed: Vec<bool> },
    /// The signed receipt (see [`crate::push::receipt`]), and the audit log's newest checkpoint
    /// with its proof from the pusher's (see [`crate::audit::witness`]), when the log has one.
    Receipt { body: Vec<u8>, signature: [u8; 64], audit: Option<LogEvidence> },
    /// The session is refused and will be closed; `reason` names the rule and values.
    Refused { reason: String },
}

impl ClientFrame {
    pub fn verb_name(&self) -> &'static str {
        match self {
            ClientFrame::Begin { .. } => "begin",
            ClientFrame::Have { .. } => "have",
            ClientFrame::Chunk { .. } => "chunk",
            ClientFrame::Chunks { .. } => "chunks",
            ClientFrame::ManifestPart { .. } => "manifest",
            ClientFrame::Commit { .. } => "commit",
        }
    }

    /// The frame with its length prefix. What the decoder would refuse (too many ids, a
    /// chunk or manifest part out of range) is refused here too, never cut.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        match self {
            ClientFrame::Begin { dataset, client_time, audit_size } => {
                w.u8(VERB_BEGIN).short_bytes(dataset.as_bytes())?.i64(*client_time).u64(*audit_size);
            }
            ClientFrame::Have { ids } => {
                if ids.len() > MAX_HAVE_IDS {
                    return Err(Error::TooLarge { what: "have ids", size: ids.len(), limit: MAX_HAVE_IDS });
                }
                w.u8(VERB_HAVE).u16(u16::try_from(ids.len()).expect("MAX_HAVE_IDS fits a u16"));
                for id in ids {
                    w.raw(&id.0);
                }
            }
            ClientFrame::Chunk { id, data } => return encode_chunk_frame(id, data),
            ClientFrame::Chunks { chunks } => return encode_chunks_frame(&chunks.iter().map(|(id, data)| (*id, data.as_slice())).collect::<Vec<_>>()),
            ClientFrame::ManifestPart { bytes } => {
                check_range("manifest part", bytes.len(), MAX_MANIFEST_PART)?;
                w.u8(VERB_MANIFEST).raw(bytes);
            }
            ClientFrame::Commit { manifest_sha256, manifest_len } => {
                w.u8(VERB_COMMIT).raw(manifest_sha256).u64(*manifest_len);
            }
        }
        with_prefix(&w.bytes)
    }

    /// Decodes a frame body (after the length prefix). Strict: exact lengths, known verbs.
    pub fn decode(body: &[u8]) -> Result<ClientFrame> {
        Ok(match parse(body)? {
            Parsed::Begin { dataset, client_time, audit_size } => ClientFrame::Begin { dataset, client_time, audit_size },
            Parsed::Have { ids } => ClientFrame::Have { ids },
            Parsed::Chunk { id, data } => ClientFrame::Chunk { id, data: data.to_vec() },
            Parsed::Chunks { chunks } => ClientFrame::Chunks { chunks: chunks.into_iter().map(|(id, data)| (id, data.to_vec())).collect() },
            Parsed::ManifestPart { bytes } => ClientFrame::ManifestPart { bytes: bytes.to_vec() },
            Parsed::Commit { manifest_sha256, manifest_len } => ClientFrame::Commit { manifest_sha256, manifest_len },
        })
    }

    /// Checks a frame body exactly as [`ClientFrame::decode`] does, without copying its chunk or
    /// manifest bytes: what the session worker does to every frame before it relays the body.
    /// Returns whether it is the commit.
    pub fn check(body: &[u8]) -> Result<Checked> {
        Ok(match parse(body)? {
            Parsed::Commit { .. } => Checked::Commit,
            _ => Checked::BeforeCommit,
        })
    }
}

/// What [`ClientFrame::check`] found a frame to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    BeforeCommit,
    /// The pusher's last frame: nothing follows it but the vault's answer.
    Commit,
}

/// A client frame's body parsed in place: the one parser behind [`ClientFrame::decode`] and
/// [`ClientFrame::check`].
enum Parsed<'a> {
    Begin { dataset: String, client_time: i64, audit_size: u64 },
    Have { ids: Vec<ChunkId> },
    Chunk { id: ChunkId, data: &'a [u8] },
    Chunks { chunks: Vec<(ChunkId, &'a [u8])> },
    ManifestPart { bytes: &'a [u8] },
    Commit { manifest_sha256: [u8; 32], manifest_len: u64 },
}

fn parse(body: &[u8]) -> Result<Parsed<'_>> {
    let mut r = Reader::new(body, "frame");
    let verb = check_header(&mut r)?;
    let frame = match verb {
        VERB_BEGIN => {
            let dataset = String::from_utf8(r.short_bytes("dataset")?.to_vec()).map_err(|_| Error::Push(PushError::BadName { name: "(not UTF-8)".into(), reason: "dataset names are UTF-8" }))?;
            Parsed::Begin { dataset, client_time: r.i64("client time")?, audit_size: r.u64("audit size")? }
        }
        VERB_HAVE => {
            let n = usize::from(r.u16("id count")?);
            if n > MAX_HAVE_IDS {
                return Err(r.malformed(format!("{n} ids in one have, at most {MAX_HAVE_IDS}")));
            }
            let ids = (0..n).map(|_| r.array("chunk id").map(ChunkId)).collect::<Result<Vec<_>>>()?;
            Parsed::Have { ids }
        }
        VERB_CHUNK => {
            let id = ChunkId(r.array("chunk id")?);
            let data = r.rest();
            check_chunk_len(&r, data.len())?;
            Parsed::Chunk { id, data }
        }
        VERB_CHUNKS => {
            let n = usize::from(r.u16("chunk count")?);
            if n == 0 || n > MAX_BATCH_CHUNKS {
                return Err(r.malformed(format!("{n} chunks in one chunks frame, must be 1..={MAX_BATCH_CHUNKS}")));
            }
            let mut chunks = Vec::with_capacity(n);
            for _ in 0..n {
                let id = ChunkId(r.array("chunk id")?);
                let len = r.len_u32("chunk length")?;
                check_chunk_len(&r, len)?;
                chunks.push((id, r.take(len, "chunk")?));
            }
            Parsed::Chunks { chunks }
        }
        VERB_MANIFEST => {
            let bytes = r.rest();
            if bytes.is_empty() || bytes.len() > MAX_MANIFEST_PART {
                return Err(r.malformed(format!("manifest part of {} bytes, must be 1..={MAX_MANIFEST_PART}", bytes.len())));
            }
            Parsed::ManifestPart { bytes }
        }
        VERB_COMMIT => Parsed::Commit { manifest_sha256: r.array("manifest hash")?, manifest_len: r.u64("manifest length")? },
        verb => return Err(Error::Push(PushError::UnknownVerb { verb })),
    };
    r.finish()?;
    Ok(frame)
}

/// A chunk's length as a decoder meets it (in a `chunk` or a `chunks` frame): 1..=[`MAX_CHUNK_BYTES`].
fn check_chunk_len(r: &Reader<'_>, len: usize) -> Result<()> {
    if len == 0 || len > MAX_CHUNK_BYTES {
        return Err(r.malformed(format!("chunk of {len} bytes, must be 1..={MAX_CHUNK_BYTES}")));
    }
    Ok(())
}

/// A `chunk` frame, straight from a borrowed chunk.
pub fn encode_chunk_frame(id: &ChunkId, data: &[u8]) -> Result<Vec<u8>> {
    Ok(ChunkFramePieces::chunk(id, data)?.concat())
}

/// A `chunks` frame straight from borrowed slices: 1..=[`MAX_BATCH_CHUNKS`] chunks, each
/// 1..=[`MAX_CHUNK_BYTES`], the whole within [`MAX_FRAME_BYTES`] (refused, never cut).
pub fn encode_chunks_frame(chunks: &[(ChunkId, &[u8])]) -> Result<Vec<u8>> {
    Ok(ChunkFramePieces::chunks(chunks)?.concat())
}

/// A `chunk` or `chunks` frame as the pieces a vectored write sends without copying the
/// chunks' bytes: the frame's own bytes (length prefix, version, verb, and each chunk's header)
/// and the chunks' data, borrowed. The one encoder of both verbs; [`encode_chunk_frame`] and
/// [`encode_chunks_frame`] join its pieces.
#[derive(Debug)]
pub struct ChunkFramePieces<'a> {
    /// Every byte of the frame that is not chunk data, in order.
    own: Vec<u8>,
    /// Each chunk's data, after `own[..end]`.
    data: Vec<(usize, &'a [u8])>,
}

impl<'a> ChunkFramePieces<'a> {
    /// One chunk of 1..=[`MAX_CHUNK_BYTES`] as a `chunk` frame.
    pub fn chunk(id: &ChunkId, data: &'a [u8]) -> Result<Self> {
        check_range("chunk", data.len(), MAX_CHUNK_BYTES)?;
        let body_len = 2 + 32 + data.len();
        let mut own = Vec::with_capacity(LENGTH_PREFIX + 2 + 32);
        own.extend_from_slice(&prefix_of(body_len)?);
        own.extend_from_slice(&[PROTOCOL_VERSION, VERB_CHUNK]);
        own.extend_from_slice(&id.0);
        Ok(ChunkFramePieces { data: vec![(own.len(), data)], own })
    }

    /// 1..=[`MAX_BATCH_CHUNKS`] chunks, each 1..=[`MAX_CHUNK_BYTES`], as one `chunks` frame
    /// within [`MAX_FRAME_BYTES`] (refused, never cut).
    pub fn chunks(chunks: &[(ChunkId, &'a [u8])]) -> Result<Self> {
        if chunks.is_empty() || chunks.len() > MAX_BATCH_CHUNKS {
            return Err(Error::Malformed { what: "frame", reason: format!("{} chunks in one chunks frame, must be 1..={MAX_BATCH_CHUNKS}", chunks.len()) });
        }
        let mut body_len = BATCH_HEADER_BYTES;
        for (_, data) in chunks {
            check_range("chunk", data.len(), MAX_CHUNK_BYTES)?;
            body_len = body_len.saturating_add(BATCHED_CHUNK_OVERHEAD + data.len());
        }
        let mut own = Vec::with_capacity(LENGTH_PREFIX + BATCH_HEADER_BYTES + chunks.len() * BATCHED_CHUNK_OVERHEAD);
        own.extend_from_slice(&prefix_of(body_len)?);
        own.extend_from_slice(&[PROTOCOL_VERSION, VERB_CHUNKS]);
        own.extend_from_slice(&u16::try_from(chunks.len()).expect("MAX_BATCH_CHUNKS fits a u16").to_be_bytes());
        let mut data = Vec::with_capacity(chunks.len());
        for (id, bytes) in chunks {
            own.extend_from_slice(&id.0);
            own.extend_from_slice(&u32::try_from(bytes.len()).expect("MAX_CHUNK_BYTES fits a u32").to_be_bytes());
            data.push((own.len(), *bytes));
        }
        Ok(ChunkFramePieces { own, data })
    }

    /// The frame's bytes in order, as slices (headers and data alternating).
    pub fn slices(&self) -> Vec<&[u8]> {
        let mut slices = Vec::with_capacity(2 * self.data.len());
        let mut from = 0;
        for (end, data) in &self.data {
            slices.push(&self.own[from..*end]);
            slices.push(*data);
            from = *end;
        }
        slices
    }

    /// The frame in one buffer.
    pub fn concat(&self) -> Vec<u8> {
        self.slices().concat()
    }
}

/// `len` must be 1..=`max`.
fn check_range(what: &'static str, len: usize, max: usize) -> Result<()> {
    if len == 0 || len > max {
        return Err(Error::Malformed { what: "frame", reason: format!("{what} of {len} bytes, must be 1..={max}") });
    }
    Ok(())
}

/// The length prefix of a body of `body_len` bytes, refused past [`MAX_FRAME_BYTES`].
fn prefix_of(body_len: usize) -> Result<[u8; LENGTH_PREFIX]> {
    if body_len > MAX_FRAME_BYTES {
        return Err(Error::Push(PushError::FrameTooLarge { size: body_len, limit: MAX_FRAME_BYTES }));
    }
    Ok(u32::try_from(body_len).expect("MAX_FRAME_BYTES fits a u32").to_be_bytes())
}

impl VaultFrame {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        match self {
            VaultFrame::Ready { quota_left } => {
                w.u8(VERB_READY).u64(*quota_left);
            }
            VaultFrame::Need { needed } => {
                if needed.len() > MAX_HAVE_IDS {
                    return Err(Error::TooLarge { what: "need flags", size: needed.len(), limit: MAX_HAVE_IDS });
                }
                w.u8(VERB_NEED).u16(u16::try_from(needed.len()).expect("MAX_HAVE_IDS fits a u16"));
                for byte in needed.chunks(8) {
                    w.u8(byte.iter().enumerate().fold(0u8, |acc, (i, need)| acc | (u8::from(*need) << i)));
                }
            }
            VaultFrame::Receipt { body, signature, audit } => {
                w.u8(VERB_RECEIPT).len_u32(body.len(), "receipt")?.raw(body).raw(signature);
                match audit {
                    None => {
                        w.u8(0);
                    }
                    Some(evidence) => {
                        w.u8(1);
                        evidence.encode(&mut w)?;
                    }
                }
            }
            VaultFrame::Refused { reason } => {
                let reason = truncate_utf8(reason, 1024);
                w.u8(VERB_REFUSED).short_bytes(reason.as_bytes())?;
            }
        }
        with_prefix(&w.bytes)
    }

    pub fn decode(body: &[u8]) -> Result<VaultFrame> {
        let mut r = Reader::new(body, "vault frame");
        let verb = check_header(&mut r)?;
        let frame = match verb {
            VERB_READY => VaultFrame::Ready { quota_left: r.u64("quota")? },
            VERB_NEED => {
                let n = usize::from(r.u16("id count")?);
                let bits = r.take(n.div_ceil(8), "need flags")?;
                VaultFrame::Need { needed: (0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect() }
            }
            VERB_RECEIPT => {
                let len = r.len_u32("receipt length")?;
                let body = r.take(len, "receipt")?.to_vec();
                let signature = r.array("receipt signature")?;
                let audit = match r.u8("audit evidence flag")? {
                    0 => None,
                    1 => Some(LogEvidence::decode(&mut r)?),
                    flag => return Err(r.malformed(format!("audit evidence flag {flag}, must be 0 or 1"))),
                };
                VaultFrame::Receipt { body, signature, audit }
            }
            VERB_REFUSED => VaultFrame::Refused { reason: String::from_utf8_lossy(r.short_bytes("reason")?).into_owned() },
            verb => return Err(Error::Push(PushError::UnknownVerb { verb })),
        };
        r.finish()?;
        Ok(frame)
    }
}

fn check_header(r: &mut Reader<'_>) -> Result<u8> {
    let version = r.u8("version")?;
    if version != PROTOCOL_VERSION {
        return Err(Error::Push(PushError::ProtocolVersion { found: version, supported: PROTOCOL_VERSION }));
    }
    r.u8("verb")
}

fn with_prefix(body_after_version: &[u8]) -> Result<Vec<u8>> {
    let body_len = 1 + body_after_version.len();
    let mut out = Vec::with_capacity(LENGTH_PREFIX + body_len);
    out.extend_from_slice(&prefix_of(body_len)?);
    out.push(PROTOCOL_VERSION);
    out.extend_from_slice(body_after_version);
    Ok(out)
}

/// Checks a length prefix: refused over the cap or under a header, before the body is read.
pub fn frame_len(prefix: [u8; LENGTH_PREFIX]) -> Result<usize> {
    frame_len_within(prefix, MAX_FRAME_BYTES)
}

/// [`frame_len`] against another cap (the relay's frames carry a push frame and a header).
pub fn frame_len_within(prefix: [u8; LENGTH_PREFIX], limit: usize) -> Result<usize> {
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len > limit {
        return Err(Error::Push(PushError::FrameTooLarge { size: len, limit }));
    }
    if len < 2 {
        return Err(Error::Malformed { what: "frame", reason: format!("length {len} is shorter than a header") });
    }
    Ok(len)
}

/// Reads frames off a byte stream for either side, sans-IO: the caller reads into
/// [`FrameReader::unfilled`] and reports with [`FrameReader::filled`]. The prefix is checked
/// ([`frame_len`]) the moment it is whole, before any room is made for the body, and a
/// complete body is handed back for [`ClientFrame::decode`] or [`VaultFrame::decode`].
#[derive(Debug)]
pub struct FrameReader {
    /// Kept at the largest part read so far: a frame's body is read over the last one's
    /// bytes, not into freshly zeroed memory (which cost a pass over every byte received).
    buf: Vec<u8>,
    /// How many bytes of `buf` the current part (prefix or body) takes.
    part_len: usize,
    filled: usize,
    part: Part,
    /// The largest body a prefix may announce.
    limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Prefix,
    Body,
    /// The body was handed out; the next read starts a new frame.
    Done,
}

/// What a read brought.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled<'a> {
    /// More bytes of the same part are needed.
    More,
    /// The prefix is whole and checked; a body of `len` bytes comes next.
    BodyNext { len: usize },
    /// A whole frame: its body (after the prefix) and its size on the wire.
    Frame { body: &'a [u8], wire_bytes: usize },
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::with_limit(MAX_FRAME_BYTES)
    }
}

impl FrameReader {
    /// A reader whose prefixes may announce at most `limit` bytes (the same framing, another cap).
    pub fn with_limit(limit: usize) -> FrameReader {
        FrameReader { buf: vec![0; LENGTH_PREFIX], part_len: LENGTH_PREFIX, filled: 0, part: Part::Prefix, limit }
    }

    /// Where the next bytes go: the rest of the prefix, or the rest of the body. Never more
    /// than the current part, so a read never takes bytes of the next frame.
    pub fn unfilled(&mut self) -> &mut [u8] {
        if self.part == Part::Done {
            self.part_len = LENGTH_PREFIX;
            self.filled = 0;
            self.part = Part::Prefix;
        }
        &mut self.buf[self.filled..self.part_len]
    }

    /// Nothing of a next frame has been read: a place where the peer may cleanly stop.
    pub fn at_frame_boundary(&self) -> bool {
        self.part == Part::Done || (self.part == Part::Prefix && self.filled == 0)
    }

    /// `n` bytes were read into [`FrameReader::unfilled`].
    pub fn filled(&mut self, n: usize) -> Result<Filled<'_>> {
        self.filled = self.filled.checked_add(n).filter(|f| *f <= self.part_len).expect("filled() reports at most what unfilled() offered");
        if self.filled < self.part_len {
            return Ok(Filled::More);
        }
        match self.part {
            Part::Prefix => {
                let len = frame_len_within(self.buf[..LENGTH_PREFIX].try_into().expect("prefix"), self.limit)?;
                // Room is made only now, after the check, and only once for the largest body.
                if self.buf.len() < len {
                    self.buf.resize(len, 0);
                }
                self.part_len = len;
                self.filled = 0;
                self.part = Part::Body;
                Ok(Filled::BodyNext { len })
            }
            Part::Body | Part::Done => {
                self.part = Part::Done;
                Ok(Filled::Frame { body: &self.buf[..self.part_len], wire_bytes: LENGTH_PREFIX + self.part_len })
            }
        }
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip_client(frame: ClientFrame) {
        let bytes = frame.encode().unwrap();
        let len = frame_len(bytes[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, bytes.len() - 4);
        assert_eq!(ClientFrame::decode(&bytes[4..]).unwrap(), frame);
    }

    #[test]
    fn client_frames_round_trip() {
        round_trip_client(ClientFrame::Begin { dataset: "db".into(), client_time: -5, audit_size: 0 });
        round_trip_client(ClientFrame::Have { ids: vec![ChunkId::of(b"a"), ChunkId::of(b"b")] });
        round_trip_client(ClientFrame::Chunk { id: ChunkId::of(b"a"), data: b"a".to_vec() });
        round_trip_client(ClientFrame::ManifestPart { bytes: vec![1, 2, 3] });
        round_trip_client(ClientFrame::Chunks { chunks: vec![(ChunkId::of(b"a"), b"a".to_vec()), (ChunkId::of(b"bc"), b"bc".to_vec())] });
        round_trip_client(ClientFrame::Commit { manifest_sha256: [7; 32], manifest_len: 99 });
    }

    #[test]
    fn vault_frames_round_trip() {
        for frame in [
            VaultFrame::Ready { quota_left: 5 },
            VaultFrame::Need { needed: vec![true, false, true, true, false, false, false, false, true] },
            VaultFrame::Receipt { body: b"{}".to_vec(), signature: [3; 64], audit: None },
            VaultFrame::Receipt {
                body: b"{}".to_vec(),
                signature: [3; 64],
                audit: Some(LogEvidence { checkpoint: "airgap-vault/00\n1\nAA==\n\n- sig\n".into(), proof_from: 7, proof: vec![[1; 32], [2; 32]] }),
            },
            VaultFrame::Refused { reason: "no".into() },
        ] {
            let bytes = frame.encode().unwrap();
            assert_eq!(VaultFrame::decode(&bytes[4..]).unwrap(), frame);
        }
    }

    #[test]
    fn no_verb_reads_lists_overwrites_or_deletes() {
        // Every verb byte a pusher could send: only the six known ones decode to a frame.
        let mut accepted = vec![];
        for verb in 0..=255u8 {
            match ClientFrame::decode(&[PROTOCOL_VERSION, verb]) {
                Err(Error::Push(PushError::UnknownVerb { verb: v })) => assert_eq!(v, verb),
                _ => accepted.push(verb),
            }
        }
        assert_eq!(accepted, vec![VERB_BEGIN, VERB_HAVE, VERB_CHUNK, VERB_MANIFEST, VERB_COMMIT, VERB_CHUNKS]);
        let err = ClientFrame::decode(&[PROTOCOL_VERSION, 0x10, b'x']).unwrap_err();
        assert_eq!(err.to_string(), "unknown verb 0x10: a pusher may only begin, ask have, send chunks and commit");
    }

    #[test]
    fn a_chunks_frame_is_bounded_in_count_size_and_layout() {
        let one = |len: usize| (ChunkId::of(b"x"), vec![1u8; len]);
        let encode = |chunks: Vec<(ChunkId, Vec<u8>)>| ClientFrame::Chunks { chunks }.encode();
        // What fits: as many small chunks as allowed, or as many bytes as a frame holds.
        assert!(encode(vec![one(1); MAX_BATCH_CHUNKS]).is_ok());
        let fill = MAX_FRAME_BYTES - BATCH_HEADER_BYTES - 2 * BATCHED_CHUNK_OVERHEAD;
        let full = encode(vec![one(MAX_CHUNK_BYTES / 2), one(fill - MAX_CHUNK_BYTES / 2)]).unwrap();
        assert_eq!(full.len(), LENGTH_PREFIX + MAX_FRAME_BYTES);
        // What does not: refused by the encoder, never cut.
        assert!(encode(vec![]).unwrap_err().to_string().contains("0 chunks in one chunks frame, must be 1..=1024"));
        assert!(encode(vec![one(1); MAX_BATCH_CHUNKS + 1]).unwrap_err().to_string().contains("1025 chunks"));
        assert!(encode(vec![one(1), one(0)]).unwrap_err().to_string().contains("chunk of 0 bytes"));
        assert!(matches!(encode(vec![one(MAX_CHUNK_BYTES / 2), one(fill - MAX_CHUNK_BYTES / 2 + 1)]), Err(Error::Push(PushError::FrameTooLarge { .. }))));
        // And the decoder refuses the same, naming where.
        let body = |count: u16, chunks: &[(&[u8; 32], u32, &[u8])]| {
            let mut b = vec![PROTOCOL_VERSION, VERB_CHUNKS];
            b.extend_from_slice(&count.to_be_bytes());
            for (id, len, data) in chunks {
                b.extend_from_slice(*id);
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(data);
            }
            b
        };
        let id = ChunkId::of(b"a").0;
        assert_eq!(ClientFrame::decode(&body(1, &[(&id, 1, b"a")])).unwrap(), ClientFrame::Chunks { chunks: vec![(ChunkId(id), b"a".to_vec())] });
        let refused = |b: Vec<u8>| ClientFrame::decode(&b).unwrap_err().to_string();
        assert!(refused(body(0, &[])).contains("0 chunks in one chunks frame"));
        assert!(refused(body(1025, &[])).contains("1025 chunks in one chunks frame"));
        assert!(refused(body(1, &[(&id, 0, b"")])).contains("chunk of 0 bytes"));
        assert!(refused(body(1, &[(&id, u32::MAX, b"a")])).contains("chunk of 4294967295 bytes"));
        assert!(refused(body(2, &[(&id, 1, b"a")])).contains("truncated in chunk id"));
        assert!(refused(body(1, &[(&id, 2, b"a")])).contains("truncated in chunk: need 2 bytes, 1 left"));
        assert!(refused(body(1, &[(&id, 1, b"ab")])).contains("1 trailing bytes"));
    }

    #[test]
    fn oversize_prefix_and_other_versions_are_refused() {
        let err = frame_len(u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_be_bytes()).unwrap_err();
        assert_eq!(err, Error::Push(PushError::FrameTooLarge { size: MAX_FRAME_BYTES + 1, limit: MAX_FRAME_BYTES }));
        assert!(frame_len(u32::MAX.to_be_bytes()).is_err());
        assert_eq!(ClientFrame::decode(&[2, VERB_BEGIN]).unwrap_err(), Error::Push(PushError::ProtocolVersion { found: 2, supported: 1 }));
        assert_eq!(ClientFrame::decode(&[0, VERB_BEGIN]).unwrap_err(), Error::Push(PushError::ProtocolVersion { found: 0, supported: 1 }));
    }

    #[test]
    fn bodies_must_be_exact() {
        let mut begin = ClientFrame::Begin { dataset: "db".into(), client_time: 0, audit_size: 0 }.encode().unwrap();
        begin.push(0);
        assert!(ClientFrame::decode(&begin[4..]).unwrap_err().to_string().contains("trailing"));
        let empty_chunk = [PROTOCOL_VERSION, VERB_CHUNK].iter().copied().chain([0u8; 32]).collect::<Vec<_>>();
        assert!(ClientFrame::decode(&empty_chunk).is_err());
    }

    #[test]
    fn encoders_refuse_what_decoders_would_refuse() {
        let too_many = ClientFrame::Have { ids: vec![ChunkId::of(b"x"); MAX_HAVE_IDS + 1] };
        assert!(matches!(too_many.encode(), Err(Error::TooLarge { what: "have ids", .. })));
        assert!(encode_chunk_frame(&ChunkId::of(b""), b"").is_err());
        assert!(encode_chunk_frame(&ChunkId::of(b"x"), &vec![0; MAX_CHUNK_BYTES + 1]).is_err());
        let long_name = ClientFrame::Begin { dataset: "d".repeat(70_000), client_time: 0, audit_size: 0 };
        assert!(matches!(long_name.encode(), Err(Error::TooLarge { what: "short field", .. })));
        assert!(VaultFrame::Need { needed: vec![true; MAX_HAVE_IDS + 1] }.encode().is_err());
    }

    /// Feeds `wire` to a reader `step` bytes at a time; returns the frames' bodies.
    fn read_all(wire: &[u8], step: usize) -> Result<Vec<(Vec<u8>, usize)>> {
        let mut reader = FrameReader::default();
        let mut frames = vec![];
        let mut pos = 0;
        while pos < wire.len() {
            let space = reader.unfilled();
            let n = space.len().min(step).min(wire.len() - pos);
            space[..n].copy_from_slice(&wire[pos..pos + n]);
            pos += n;
            if let Filled::Frame { body, wire_bytes } = reader.filled(n)? {
                frames.push((body.to_vec(), wire_bytes));
            }
        }
        assert!(reader.at_frame_boundary(), "a frame was left half read");
        Ok(frames)
    }

    #[test]
    fn the_frame_reader_splits_a_stream_into_frames_however_it_arrives() {
        let frames = [
            ClientFrame::Begin { dataset: "db".into(), client_time: 1, audit_size: 0 },
            ClientFrame::Chunk { id: ChunkId::of(b"abc"), data: b"abc".to_vec() },
            ClientFrame::Commit { manifest_sha256: [1; 32], manifest_len: 3 },
        ];
        let wire: Vec<u8> = frames.iter().flat_map(|f| f.encode().unwrap()).collect();
        for step in [1, 3, 7, 4096] {
            let read = read_all(&wire, step).unwrap();
            let decoded: Vec<ClientFrame> = read.iter().map(|(body, _)| ClientFrame::decode(body).unwrap()).collect();
            assert_eq!(decoded, frames);
            let sizes: Vec<usize> = read.iter().map(|(_, wire_bytes)| *wire_bytes).collect();
            assert_eq!(sizes, frames.iter().map(|f| f.encode().unwrap().len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_short_frame_after_a_long_one_is_only_its_own_bytes() {
        let long = ClientFrame::Chunk { id: ChunkId::of(&[7; 5000]), data: vec![7; 5000] };
        let short = ClientFrame::Commit { manifest_sha256: [1; 32], manifest_len: 3 };
        let begin = ClientFrame::Begin { dataset: "d".into(), client_time: 0, audit_size: 0 };
        let wire: Vec<u8> = [&long, &short, &begin, &long].iter().flat_map(|f| f.encode().unwrap()).collect();
        let read = read_all(&wire, 4096).unwrap();
        let decoded: Vec<ClientFrame> = read.iter().map(|(body, _)| ClientFrame::decode(body).unwrap()).collect();
        assert_eq!(decoded, vec![long.clone(), short, begin, long]);
    }

    #[test]
    fn the_frame_reader_refuses_an_oversize_prefix_before_making_room_for_it() {
        let mut reader = FrameReader::default();
        reader.unfilled().copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(reader.filled(4), Err(Error::Push(PushError::FrameTooLarge { .. }))));
        assert!(reader.unfilled().len() <= LENGTH_PREFIX, "no room was made for the body");
    }

    proptest! {
        #[test]
        fn the_frame_reader_never_panics_and_never_holds_more_than_a_frame(wire in prop::collection::vec(any::<u8>(), 0..600), step in 1usize..50) {
            let mut reader = FrameReader::default();
            let mut pos = 0;
            while pos < wire.len() {
                let space = reader.unfilled();
                prop_assert!(space.len() <= MAX_FRAME_BYTES);
                let n = space.len().min(step).min(wire.len() - pos);
                space[..n].copy_from_slice(&wire[pos..pos + n]);
                pos += n;
                if reader.filled(n).is_err() {
                    break;
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = ClientFrame::decode(&bytes);
            let _ = VaultFrame::decode(&bytes);
        }

        /// The worker's check and the daemon's decode refuse the same bodies alike.
        #[test]
        fn the_check_passes_exactly_what_decodes(verb in prop::sample::select(vec![VERB_BEGIN, VERB_HAVE, VERB_CHUNK, VERB_MANIFEST, VERB_COMMIT, VERB_CHUNKS, 0x7f]), rest in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut body = vec![PROTOCOL_VERSION, verb];
            body.extend_from_slice(&rest);
            match (ClientFrame::decode(&body), ClientFrame::check(&body)) {
                (Ok(frame), Ok(checked)) => prop_assert_eq!(checked == Checked::Commit, matches!(frame, ClientFrame::Commit { .. })),
                (Err(decoded), Err(checked)) => prop_assert_eq!(decoded.to_string(), checked.to_string()),
                (decoded, checked) => prop_assert!(false, "decode {:?}, check {:?}", decoded.map(|f| f.verb_name()), checked),
            }
        }

        /// The pieces a vectored write sends are the frame, byte for byte, and decode back to its chunks.
        #[test]
        fn a_frames_pieces_are_the_frame(datas in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..200), 1..20)) {
            let chunks: Vec<(ChunkId, &[u8])> = datas.iter().map(|d| (ChunkId::of(d), d.as_slice())).collect();
            let pieces = ChunkFramePieces::chunks(&chunks).unwrap();
            let wire: Vec<u8> = pieces.slices().concat();
            prop_assert_eq!(&wire, &pieces.concat());
            // The data pieces are the chunks themselves, borrowed, never copied.
            let data_pieces: Vec<*const u8> = pieces.slices().iter().skip(1).step_by(2).map(|s| s.as_ptr()).collect();
            prop_assert_eq!(data_pieces, chunks.iter().map(|(_, d)| d.as_ptr()).collect::<Vec<_>>());
            let owned: Vec<(ChunkId, Vec<u8>)> = datas.iter().map(|d| (ChunkId::of(d), d.clone())).collect();
            prop_assert_eq!(ClientFrame::decode(&wire[LENGTH_PREFIX..]).unwrap(), ClientFrame::Chunks { chunks: owned });
            let single = ChunkFramePieces::chunk(&chunks[0].0, chunks[0].1).unwrap().concat();
            prop_assert_eq!(ClientFrame::decode(&single[LENGTH_PREFIX..]).unwrap(), ClientFrame::Chunk { id: chunks[0].0, data: datas[0].clone() });
            prop_assert_eq!(frame_len(single[..LENGTH_PREFIX].try_into().unwrap()).unwrap(), single.len() - LENGTH_PREFIX);
        }
    }
}
