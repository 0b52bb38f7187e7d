//! `vaultctl push`: send a directory tree, a file or stdin into the vault as one snapshot.
//!
//! Files are cut into content-defined chunks (FastCDC), each named by its SHA-256. The
//! vault is asked which chunks it lacks, in batches, and only those are sent; a local cache
//! (device, inode, size, mtime, ctime -> chunk list) means an unchanged file is not even
//! read again. The push ends with the manifest, the commit, and the vault's signed receipt,
//! checked against the vault key the operator pinned and kept on disk.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use fastcdc::v2020::FastCDC;
use serde::{Deserialize, Serialize};
use vault_core::keys::PublicKey;
use vault_core::push::chunk::ChunkId;
use vault_core::push::manifest::{ChunkRef, Entry, EntryKind, Manifest};
use vault_core::push::protocol::{
    ChunkFramePieces, ClientFrame, FrameReader, VaultFrame, BATCHED_CHUNK_OVERHEAD, BATCH_HEADER_BYTES, MAX_BATCH_CHUNKS, MAX_FRAME_BYTES, MAX_HAVE_IDS, MAX_MANIFEST_PART,
};
use vault_core::push::receipt::{Receipt, SignedReceipt};

use crate::witness::{Witness, Witnessed};
use vault_tls::rustls::{ClientConnection, StreamOwned};

use crate::error::{CliError, Result};

// FastCDC sizes: vault-core's, which the evaluation of the signals cuts with too.
use vault_core::push::chunk::{FASTCDC_AVG_BYTES as AVG_CHUNK, FASTCDC_MAX_BYTES as MAX_CHUNK, FASTCDC_MIN_BYTES as MIN_CHUNK};
/// Sources are read this much at a time, and cut in memory: a file up to this size in one read.
const READ_BLOCK: usize = 8 * 1024 * 1024;
const _: () = assert!(READ_BLOCK > MAX_CHUNK as usize);
/// A stream (stdin) is read and cut this much at a time, and its chunks handed to the sender
/// this much at a time: a producer that gives about 1 MiB per 30 s keeps its session (it
/// needed 8 MiB when a stream was read a block at a time).
const STREAM_STEP: usize = MAX_CHUNK as usize;
/// When the chunkers have handed on nothing for this long, the sender sends what they cut
/// before (the vault ends a session that sends nothing for 30 s).
const SLOW_SOURCE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Ask the vault about this much chunk data at a time.
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// `have` batches sent and not yet answered: the vault looks up the next batches while the
/// chunks of an earlier one are on the wire. Its answers are a few KiB each, so they always
/// fit the socket's buffers and neither side can wait on the other.
const HAVE_IN_FLIGHT: usize = 4;
/// Threads that read, cut and hash files at once: one per core (two per core while the
/// source is mostly not in the page cache), at most this many.
const MAX_CHUNKERS: usize = 8;
/// Files whose page cache share is asked about before a push picks how many chunkers: the
/// largest this many, and this many more spread over the rest.
const CACHE_SAMPLE_FILES: usize = 32;
/// A chunker hands its cuts to the sender this many bytes (or [`HAND_OVER_CUTS`] cuts) at a
/// time: a wake-up of each thread per MiB instead of per chunk (6% of the pusher's core was
/// spent waking and switching with a hand-over per chunk).
const HAND_OVER_BYTES: usize = 1024 * 1024;
const HAND_OVER_CUTS: usize = 256;
/// Hand-overs cut and hashed but not yet taken by the sender: how far the chunkers may run
/// ahead (each at most `HAND_OVER_BYTES` + `MAX_CHUNK`, so 12 MiB; one more being filled by
/// each chunker). With the batches above and one file buffer per chunker, a push holds at most
/// about 40 + 12 + 8 x 9.5 MiB of data whatever it sends.
const CUT_QUEUE: usize = 8;
const MAX_CACHE_BYTES: usize = 512 * 1024 * 1024;

pub struct PushArgs {
    pub vault: String,
    pub vault_key: PublicKey,
    pub key_file: PathBuf,
    pub dataset: String,
    /// A directory, a file, or `-` for stdin.
    pub source: PathBuf,
    pub cache: Option<PathBuf>,
    pub receipts: PathBuf,
    pub connect_timeout: Duration,
    pub progress: bool,
    /// What a directory push leaves out.
    pub excludes: crate::exclude::Excludes,
}

#[derive(Debug, Default, Serialize)]
pub struct PushStats {
    pub files: u64,
    pub files_from_cache: u64,
    /// Chunks of changed files cut where they were at the last push, without FastCDC (their
    /// bytes, and the next chunk's, unchanged: [`Previous`]).
    pub cuts_kept: u64,
    pub bytes_read: u64,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    pub skipped_special_files: u64,
    /// Entries left out by an exclude pattern (an excluded directory counts once).
    pub excluded: u64,
    /// Directories on another file system, kept empty (`--one-file-system`).
    pub other_file_systems: u64,
}

pub struct Outcome {
    pub receipt: Receipt,
    pub receipt_path: PathBuf,
    pub stats: PushStats,
    pub elapsed: Duration,
    /// The check of the vault's audit log against this pusher's last checkpoint: an error here
    /// comes after a sealed snapshot, so the caller reports both.
    pub witnessed: Result<Witnessed>,
}

// ---- the connection -----------------------------------------------------------------

struct Conn {
    tls: StreamOwned<ClientConnection, TcpStream>,
    frames: FrameReader,
}

impl Conn {
    fn open(args: &PushArgs) -> Result<Conn> {
        let (secret, public) = crate::keyfile::load_secret_der(&args.key_file)?;
        let config = vault_tls::client_config(&secret, &public, args.vault_key).map_err(|e| CliError::Failed(e.to_string()))?;
        // A closed window gives no answer at all (no ARP reply): a timeout or "host
        // unreachable". Anything else that fails to connect is plain unreachable.
        let connect_failed = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::HostUnreachable => CliError::NoAnswer(format!("{}: {e} (the vault's window is closed, or it is off)", args.vault)),
            _ => CliError::Unreachable(format!("{}: {e}", args.vault)),
        };
        let addrs: Vec<_> = args.vault.to_socket_addrs().map_err(|e| CliError::Failed(format!("--vault {}: {e}", args.vault)))?.collect();
        let addr = addrs.first().ok_or_else(|| CliError::Failed(format!("--vault {}: no address", args.vault)))?;
        let tcp = TcpStream::connect_timeout(addr, args.connect_timeout).map_err(connect_failed)?;
        tcp.set_nodelay(true).ok();
        // The vault closes idle sessions; a stuck vault must not hang the pusher either.
        tcp.set_read_timeout(Some(Duration::from_secs(120))).ok();
        let conn = ClientConnection::new(config, vault_tls::server_name()).map_err(|e| CliError::Failed(e.to_string()))?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).map_err(|e| CliError::Refused(format!("TLS handshake: {}", vault_tls::explain(&e))))?;
        }
        Ok(Conn { tls, frames: FrameReader::default() })
    }

    fn send(&mut self, frame: &ClientFrame) -> Result<()> {
        self.send_encoded(&frame.encode()?)
    }

    fn send_encoded(&mut self, frame: &[u8]) -> Result<()> {
        self.send_pieces(&[frame])
    }

    /// Writes a frame given in pieces (a chunk frame's headers and the chunks' own buffers)
    /// without joining them first: TLS encrypts them into its records straight from there.
    fn send_pieces(&mut self, pieces: &[&[u8]]) -> Result<()> {
        match write_all_vectored(&mut vault_tls::rustls::Stream::new(&mut self.tls.conn, &mut self.tls.sock), pieces) {
            Ok(()) => Ok(()),
            // The vault closes after a refusal; its reason is waiting to be read.
            Err(write_err) => Err(CliError::Refused(self.refusal_after_failed_write().unwrap_or_else(|| format!("connection closed by the vault: {write_err}")))),
        }
    }

    /// The refusal the vault sent before hanging up on a write, if it is in the socket.
    /// Read straight from the socket: the stream's own read first flushes what is still
    /// queued to send, which fails again (broken pipe) before anything is read.
    fn refusal_after_failed_write(&mut self) -> Option<String> {
        let mut plaintext = Vec::new();
        // The peer is gone, so this ends at its close (or reset), without waiting.
        while let Ok(n) = self.tls.conn.read_tls(&mut self.tls.sock) {
            if n == 0 || self.tls.conn.process_new_packets().is_err() {
                break;
            }
            // WouldBlock only means no more plaintext yet; what was read is kept.
            let _ = self.tls.conn.reader().read_to_end(&mut plaintext);
        }
        // Answers to `have`s still in flight may come first: the refusal is the last frame.
        let (mut unread, mut frames) = (plaintext.as_slice(), FrameReader::default());
        while let Ok(Some(frame)) = vault_io::read_frame(&mut unread, &mut frames, VaultFrame::decode) {
            if let VaultFrame::Refused { reason } = frame {
                return Some(reason);
            }
        }
        None
    }

    fn recv(&mut self) -> Result<VaultFrame> {
        let frame = vault_io::read_frame(&mut self.tls, &mut self.frames, VaultFrame::decode)
            .map_err(|e| CliError::Refused(format!("connection to the vault: {e}")))?
            .ok_or_else(|| CliError::Refused("connection closed by the vault".into()))?;
        match frame {
            VaultFrame::Refused { reason } => Err(CliError::Refused(reason)),
            frame => Ok(frame),
        }
    }
}

/// `Write::write_all_vectored`, which std has not stabilised: every byte of `pieces`, in order.
fn write_all_vectored(out: &mut impl Write, pieces: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice> = pieces.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let mut rest = slices.as_mut_slice();
    // Leading empty pieces would read as a writer that took nothing.
    std::io::IoSlice::advance_slices(&mut rest, 0);
    while !rest.is_empty() {
        match out.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---- the cache ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CachedFile {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// (hex chunk id, length)
    chunks: Vec<(String, u32)>,
}

#[derive(Default, Serialize, Deserialize)]
struct Cache {
    /// How its chunk lists were cut ([`cut_rule`]): a changed file's old cuts are kept only if
    /// they were FastCDC's with these sizes ([`Previous`]). Absent in caches written before.
    #[serde(default)]
    cuts: String,
    files: BTreeMap<String, CachedFile>,
    /// Every chunk the files above name: all were in the snapshot the vault sealed when this
    /// cache was written.
    #[serde(skip)]
    sealed: HashSet<ChunkId>,
}

/// The chunking a cache's lists were made with: FastCDC (the `fastcdc` crate's v2020) and its
/// three sizes.
fn cut_rule() -> String {
    format!("fastcdc-v2020 {MIN_CHUNK}/{AVG_CHUNK}/{MAX_CHUNK}")
}

fn identity_of(meta: &std::fs::Metadata) -> (u64, u64, u64, i128, i128) {
    let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    (meta.dev(), meta.ino(), meta.size(), ns(meta.mtime(), meta.mtime_nsec()), ns(meta.ctime(), meta.ctime_nsec()))
}

impl Cache {
    fn load(path: Option<&Path>) -> Cache {
        // A cache that is missing or unreadable only costs a re-read.
        let mut cache: Cache = path.and_then(|p| vault_io::read_bounded(p, MAX_CACHE_BYTES).ok()).and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
        cache.sealed = cache.files.values().flat_map(|file| &file.chunks).filter_map(|(id, _)| ChunkId::from_hex(id)).collect();
        cache
    }

    /// Whether the chunk was in the snapshot sealed when this cache was written.
    fn sealed_before(&self, id: &ChunkId) -> bool {
        self.sealed.contains(id)
    }

    fn lookup(&self, rel: &str, meta: &std::fs::Metadata) -> Option<Vec<ChunkRef>> {
        let cached = self.files.get(rel)?;
        let (dev, ino, size, mtime_ns, ctime_ns) = identity_of(meta);
        if (cached.dev, cached.ino, cached.size, cached.mtime_ns, cached.ctime_ns) != (dev, ino, size, mtime_ns, ctime_ns) {
            return None;
        }
        self.chunks(rel)
    }

    /// The chunks the file at `rel` had when this cache was written, whatever it is now.
    fn chunks(&self, rel: &str) -> Option<Vec<ChunkRef>> {
        self.files.get(rel)?.chunks.iter().map(|(id, len)| Some(ChunkRef { id: ChunkId::from_hex(id)?, len: *len })).collect()
    }

    /// [`Cache::chunks`], if they were cut as this pusher cuts: the cuts a changed file may keep.
    fn previous(&self, rel: &str) -> Vec<ChunkRef> {
        if self.cuts == cut_rule() {
            self.chunks(rel).unwrap_or_default()
        } else {
            Vec::new()
        }
    }

    fn record(&mut self, rel: String, meta: &std::fs::Metadata, chunks: &[ChunkRef]) {
        let (dev, ino, size, mtime_ns, ctime_ns) = identity_of(meta);
        let chunks = chunks.iter().map(|c| (c.id.to_hex(), c.len)).collect();
        self.files.insert(rel, CachedFile { dev, ino, size, mtime_ns, ctime_ns, chunks });
    }
}

// ---- batching "have?" and sending chunks ----------------------------------------------

struct Pending {
    id: ChunkId,
    data: Option<Vec<u8>>,
    /// Which file to re-read if the vault needs a chunk the cache named.
    file: usize,
}

/// Asks the vault which chunks it lacks, [`HAVE_IN_FLIGHT`] batches ahead of its answers, and
/// sends those it lacks as each answer comes.
struct Uploader<'a> {
    conn: &'a mut Conn,
    /// Chunks asked about (or sent) in this session: each is asked once.
    asked: HashSet<ChunkId>,
    pending: Vec<Pending>,
    pending_bytes: usize,
    /// Batches asked about, oldest first, whose answers have not been read.
    in_flight: VecDeque<Vec<Pending>>,
    /// Cached files whose chunks the vault turned out not to have.
    reread: HashSet<usize>,
    stats: &'a mut PushStats,
}

impl<'a> Uploader<'a> {
    fn new(conn: &'a mut Conn, stats: &'a mut PushStats) -> Self {
        Uploader { conn, asked: HashSet::new(), pending: vec![], pending_bytes: 0, in_flight: VecDeque::new(), reread: HashSet::new(), stats }
    }

    fn add(&mut self, id: ChunkId, data: Option<Vec<u8>>, file: usize) -> Result<()> {
        if !self.asked.insert(id) {
            return Ok(());
        }
        self.pending_bytes += data.as_ref().map_or(0, Vec::len);
        self.pending.push(Pending { id, data, file });
        if self.pending.len() >= MAX_HAVE_IDS || self.pending_bytes >= BATCH_BYTES {
            self.ask()?;
        }
        Ok(())
    }

    /// Sends the pending batch's `have`; settles the oldest batch once too many are in flight.
    fn ask(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.conn.send(&ClientFrame::Have { ids: batch.iter().map(|p| p.id).collect() })?;
        self.in_flight.push_back(batch);
        while self.in_flight.len() > HAVE_IN_FLIGHT {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Asks about what is pending if fewer than [`HAVE_IN_FLIGHT`] batches are: an early ask
    /// never waits for an answer.
    fn ask_while_none_waits(&mut self) -> Result<()> {
        if self.in_flight.len() < HAVE_IN_FLIGHT {
            self.ask()?;
        }
        Ok(())
    }

    /// Asks about what is pending and settles every batch in flight (at the end, and while the
    /// source is slow).
    fn settle_all(&mut self) -> Result<()> {
        self.ask()?;
        while !self.in_flight.is_empty() {
            self.settle_oldest()?;
        }
        Ok(())
    }

    /// Reads the answer to the oldest `have` and sends the chunks it names, as many to a
    /// frame as fit one (`chunks`): small files cost the vault a frame each no more.
    fn settle_oldest(&mut self) -> Result<()> {
        let Some(batch) = self.in_flight.pop_front() else { return Ok(()) };
        let VaultFrame::Need { needed } = self.conn.recv()? else {
            return Err(CliError::Refused("vault answered `have` with something other than `need`".into()));
        };
        if needed.len() != batch.len() {
            return Err(CliError::Refused(format!("vault answered {} flags for {} ids", needed.len(), batch.len())));
        }
        let mut frame = ChunksFrame::default();
        for (pending, need) in batch.into_iter().zip(needed) {
            match (need, pending.data) {
                (false, _) => {}
                (true, Some(data)) => {
                    if !frame.has_room_for(data.len()) {
                        self.send_chunks(&mut frame)?;
                    }
                    self.stats.chunks_sent += 1;
                    self.stats.bytes_sent += data.len() as u64;
                    frame.push(pending.id, data);
                }
                (true, None) => {
                    // Asked again, with its bytes, when the file is read.
                    self.asked.remove(&pending.id);
                    self.reread.insert(pending.file);
                }
            }
        }
        self.send_chunks(&mut frame)
    }

    /// Sends the chunks gathered (if any) in one frame, and empties it. The chunks' bytes go
    /// from their own buffers into TLS: the frame is never assembled in one.
    fn send_chunks(&mut self, frame: &mut ChunksFrame) -> Result<()> {
        let chunks = std::mem::take(frame).chunks;
        let pieces = match chunks.as_slice() {
            [] => return Ok(()),
            [(id, data)] => ChunkFramePieces::chunk(id, data)?,
            many => ChunkFramePieces::chunks(&many.iter().map(|(id, data)| (*id, data.as_slice())).collect::<Vec<_>>())?,
        };
        self.conn.send_pieces(&pieces.slices())
    }
}

/// How full a `chunks` frame is made: small enough that large files' chunks (128 KiB on
/// average) still flow a frame or two at a time through the vault's pipeline.
const GATHER_BYTES: usize = 256 * 1024;
const _: () = assert!(GATHER_BYTES <= MAX_FRAME_BYTES);

/// Chunks gathered for one `chunks` frame, kept within what the protocol allows in one.
#[derive(Default)]
struct ChunksFrame {
    chunks: Vec<(ChunkId, Vec<u8>)>,
    body_bytes: usize,
}

impl ChunksFrame {
    /// The frame's body with one more chunk of `len` bytes.
    fn body_with(&self, len: usize) -> usize {
        self.body_bytes.max(BATCH_HEADER_BYTES) + BATCHED_CHUNK_OVERHEAD + len
    }

    fn has_room_for(&self, len: usize) -> bool {
        self.chunks.is_empty() || (self.chunks.len() < MAX_BATCH_CHUNKS && self.body_with(len) <= GATHER_BYTES)
    }

    fn push(&mut self, id: ChunkId, data: Vec<u8>) {
        self.body_bytes = self.body_with(data.len());
        self.chunks.push((id, data));
    }
}

// ---- reading the source ---------------------------------------------------------------

/// A chunk just cut, where it was read: the taker hashes it in place, and takes its bytes
/// only if it sends them (a chunk the vault already holds is never copied).
struct CutBytes<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    end: usize,
    /// The chunk is the whole buffer, which was made for this source alone.
    whole: bool,
}

impl CutBytes<'_> {
    fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The chunk's bytes in a buffer of their own: the read buffer itself when it was made
    /// for this source (a small file, its size known), else a copy, since a block's last
    /// chunk, or a file that shrank, would hold the whole block.
    fn into_vec(self) -> Vec<u8> {
        if self.whole {
            std::mem::take(self.buf)
        } else {
            self.buf[self.start..self.end].to_vec()
        }
    }
}

/// Chunks a reader, handing each chunk's id and bytes to `each`; returns the chunk list.
///
/// The source is read into one buffer of a block (at most [`READ_BLOCK`]) and cut there, each
/// chunk hashed as soon as it is cut (while its bytes are in the core's cache); once the
/// buffer has no room left, only the part after its last cut (less than one chunk) moves to
/// its front. A file is read a whole block at a time; a stream (no size) [`STREAM_STEP`] at a
/// time, and cut after each, so a producer that writes slowly has its chunks sent as they
/// come instead of once a whole block has arrived (the vault ends a session that sends
/// nothing for 30 s). A cut is made only where at least `MAX_CHUNK` bytes follow it in the
/// buffer, or the source has ended, so the cuts are FastCDC's over the whole source, whatever
/// the reads return. (fastcdc's own `StreamCDC` moves its whole 512 KiB window and zero-fills
/// it for every chunk, which cost more than the cutting.)
///
/// `previous` holds the source's chunk list when it was last pushed (empty if none): where its
/// bytes are unchanged, those cuts are taken without running FastCDC, and counted there.
fn chunk_reader(source: impl Read, size_hint: Option<u64>, previous: &mut Previous, each: impl FnMut(ChunkId, CutBytes) -> Result<()>) -> Result<Vec<ChunkRef>> {
    chunk_reader_in_blocks(source, size_hint, READ_BLOCK, previous, each)
}

/// [`chunk_reader`], reading `block` bytes at a time (more than `MAX_CHUNK`).
fn chunk_reader_in_blocks(mut source: impl Read, size_hint: Option<u64>, block: usize, previous: &mut Previous, mut each: impl FnMut(ChunkId, CutBytes) -> Result<()>) -> Result<Vec<ChunkRef>> {
    // One byte more than a small file, so its first read also finds its end.
    let first_capacity = size_hint.map_or(block, |size| usize::try_from(size).map_or(block, |size| size.saturating_add(1).min(block)));
    let mut buf: Vec<u8> = Vec::with_capacity(first_capacity);
    let mut refs = Vec::new();
    let mut ended = false;
    // Where `buf[0]` is in the source.
    let mut buf_offset = 0u64;
    // Where in `buf` a chunk starts whose bytes a check of the previous cuts already hashed:
    // (start, length, id).
    let mut hashed: Option<(usize, usize, ChunkId)> = None;
    // Bytes a check of the previous cuts waits for, from the buffer's front.
    let mut wanted: usize = 0;
    // Where in `buf` the next chunk starts: the bytes before it are cut and handed on.
    let mut start = 0;
    loop {
        if buf.capacity() - buf.len() < STREAM_STEP.min(block) {
            buf.drain(..start);
            buf_offset += start as u64;
            hashed = hashed.map(|(at, len, id)| (at - start, len, id));
            wanted = wanted.saturating_sub(start);
            start = 0;
        }
        if buf.capacity() < wanted {
            buf.reserve_exact(wanted - buf.len());
        }
        if buf.len() == buf.capacity() {
            // A file that grew past its size while being read, or a previous cut waiting for
            // the bytes after it: read on in whole blocks.
            buf.reserve_exact(block.saturating_sub(buf.len()).max(1));
        }
        let room = buf.capacity() - buf.len();
        let step = if size_hint.is_some() { room } else { room.min(STREAM_STEP) };
        let read = (&mut source).take(u64::try_from(step).expect("a block fits a u64")).read_to_end(&mut buf).map_err(|e| CliError::Failed(format!("read: {e}")))?;
        ended = ended || read < step;
        let filled = buf.len();
        // (A chunk handed on in the whole buffer took it: then nothing is left.)
        while start < buf.len() {
            let offset = buf_offset + start as u64;
            let known = hashed.take().filter(|(at, _, _)| *at == start).map(|(_, len, id)| (len, id));
            let cut = match previous.unchanged_cut(&buf[start..], offset, ended, known) {
                Unchanged::Cut { len, id, next_len, next_id } => {
                    hashed = Some((start + len, next_len, next_id));
                    Some((start + len, Some(id)))
                }
                Unchanged::ReadMore { need } => {
                    hashed = known.map(|(len, id)| (start, len, id));
                    wanted = start + need;
                    break;
                }
                Unchanged::No(first, then) => next_cut(&buf, start, ended).map(|end| {
                    let id = first.filter(|(len, _)| *len == end - start).map(|(_, id)| id);
                    // FastCDC cut where the old chunk ended: the next chunk's bytes were hashed too.
                    hashed = id.and(then).map(|(len, id)| (end, len, id));
                    (end, id)
                }),
            };
            let Some((end, id)) = cut else { break };
            let whole = ended && start == 0 && end == filled && buf.capacity() <= filled + 1;
            let chunk = CutBytes { buf: &mut buf, start, end, whole };
            let id = id.unwrap_or_else(|| ChunkId::of(chunk.as_slice()));
            refs.push(ChunkRef { id, len: u32::try_from(end - start).expect("FastCDC cuts at most MAX_CHUNK bytes") });
            each(id, chunk)?;
            start = end;
        }
        if ended {
            return Ok(refs);
        }
    }
}

/// The chunk list a file had when it was last pushed, walked by offset as the file is cut
/// again. Where a previous chunk and the one after it both still hash to their ids, the first
/// ends where it did. FastCDC's cut depends only on the chunk's bytes, the byte after it (the
/// next chunk's first), and how much is left: with at least `MAX_CHUNK` left it scans every
/// place the previous cut's scan did, with the same masks. So those cuts are taken
/// without running FastCDC, and only SHA-256 (needed for the ids anyway) reads them. A file
/// changed in place (a database, a disk image) or appended to is cut at the speed of hashing
/// everywhere but around its changes; anywhere else FastCDC cuts, as for a new file. The ids
/// are always the bytes' own, so a wrong list (a stale or damaged cache) costs only time.
struct Previous<'a> {
    chunks: &'a [ChunkRef],
    /// The first chunk at or after `offset`, and where it starts.
    next: usize,
    offset: u64,
    /// Cuts taken from the list.
    kept: u64,
}

/// What the previous chunk list says about the cut at a position.
enum Unchanged {
    /// The chunk there is unchanged and so is the one after it: cut `len` bytes on. The next
    /// chunk's `next_len` bytes hash to `next_id` (hashed here).
    Cut { len: usize, id: ChunkId, next_len: usize, next_id: ChunkId },
    /// A previous chunk starts here, but the `need` bytes to check it and the one after (and
    /// at least `MAX_CHUNK`) are not all read yet.
    ReadMore { need: usize },
    /// Cut with FastCDC. What was hashed on the way, as `(len, id)`: the first `len` bytes, and
    /// the `len` bytes after those.
    No(Option<(usize, ChunkId)>, Option<(usize, ChunkId)>),
}

impl<'a> Previous<'a> {
    fn new(chunks: &'a [ChunkRef]) -> Previous<'a> {
        Previous { chunks, next: 0, offset: 0, kept: 0 }
    }

    /// The cut of the chunk at `offset`, whose bytes (and what follows, as read so far) are
    /// `left`; `hashed` is the id of its first bytes, if a check before hashed them.
    fn unchanged_cut(&mut self, left: &[u8], offset: u64, ended: bool, hashed: Option<(usize, ChunkId)>) -> Unchanged {
        while self.offset < offset {
            let Some(chunk) = self.chunks.get(self.next) else { return Unchanged::No(hashed, None) };
            self.offset += u64::from(chunk.len);
            self.next += 1;
        }
        let (Some(this), Some(after)) = (self.chunks.get(self.next), self.chunks.get(self.next + 1)) else { return Unchanged::No(hashed, None) };
        if self.offset != offset || !(MIN_CHUNK..=MAX_CHUNK).contains(&this.len) || !(1..=MAX_CHUNK).contains(&after.len) {
            return Unchanged::No(hashed, None);
        }
        let (len, after_len) = (this.len as usize, after.len as usize);
        let need = (len + after_len).max(MAX_CHUNK as usize);
        if left.len() < need {
            return if ended { Unchanged::No(hashed, None) } else { Unchanged::ReadMore { need } };
        }
        let id = match hashed {
            Some((hashed_len, id)) if hashed_len == len => id,
            _ => ChunkId::of(&left[..len]),
        };
        if id != this.id {
            return Unchanged::No(Some((len, id)), None);
        }
        let next_id = ChunkId::of(&left[len..len + after_len]);
        if next_id != after.id {
            return Unchanged::No(Some((len, id)), Some((after_len, next_id)));
        }
        self.kept += 1;
        Unchanged::Cut { len, id, next_len: after_len, next_id }
    }
}

/// Where FastCDC ends the chunk that begins at `start` in `buf`, if that is known yet: always
/// once the source has `ended`, else only if at least `MAX_CHUNK` bytes follow `start`, since
/// bytes yet unread could move a later cut. `None` when nothing is left to cut.
fn next_cut(buf: &[u8], start: usize, ended: bool) -> Option<usize> {
    let max_chunk = usize::try_from(MAX_CHUNK).expect("MAX_CHUNK fits a usize");
    let left = buf.len().checked_sub(start).filter(|&left| left > 0)?;
    (ended || left >= max_chunk).then(|| FastCDC::new(buf, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).cut(start, left).1)
}

struct FileToRead {
    path: PathBuf,
    rel: String,
    /// Its place in the manifest entries.
    entry: usize,
    meta: std::fs::Metadata,
}

/// Walks `root` depth-first without following symlinks. Returns the manifest entries (in
/// walk order; sorted later) and the regular files to read.
fn walk(root: &Path, excludes: &crate::exclude::Excludes, stats: &mut PushStats) -> Result<(Vec<Entry>, Vec<FileToRead>)> {
    let root_device = std::fs::metadata(root).map_err(|e| CliError::Usage(format!("{}: {e}", root.display())))?.dev();
    let mut entries = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let dir = root.join(&rel_dir);
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| CliError::Failed(format!("{}: {e}", dir.display())))?;
        children.sort_by_key(|c| c.file_name());
        let mut subdirs = Vec::new();
        for child in children {
            let rel = rel_dir.join(child.file_name());
            let path = child.path();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
            let rel_bytes = rel.as_os_str().as_bytes().to_vec();
            let mode = meta.permissions().mode() & 0o7777;
            let kind = meta.file_type();
            if excludes.excludes(&rel, kind.is_dir()) {
                stats.excluded += 1;
                continue;
            }
            if kind.is_dir() {
                entries.push(Entry { path: rel_bytes, mode, mtime: meta.mtime(), kind: EntryKind::Dir });
                if excludes.one_file_system && meta.dev() != root_device {
                    stats.other_file_systems += 1;
                } else {
                    subdirs.push(rel);
                }
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
                entries.push(Entry { path: rel_bytes, mode, mtime: meta.mtime(), kind: EntryKind::Symlink { target: target.as_os_str().as_bytes().to_vec() } });
            } else if kind.is_file() {
                entries.push(Entry { path: rel_bytes, mode, mtime: meta.mtime(), kind: EntryKind::File { size: 0, chunks: vec![] } });
                files.push(FileToRead { path, rel: rel.to_string_lossy().into_owned(), entry: entries.len() - 1, meta });
            } else {
                stats.skipped_special_files += 1;
            }
        }
        // Depth-first, each directory's children in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok((entries, files))
}

/// What a directory push would send, found without reading a file: for `--dry-run`.
#[derive(Debug, Default)]
pub struct Survey {
    pub files: u64,
    pub bytes: u64,
    pub excluded: u64,
    pub other_file_systems: u64,
}

pub fn survey(source: &Path, excludes: &crate::exclude::Excludes) -> Result<Survey> {
    if source.as_os_str() == "-" {
        return Ok(Survey::default());
    }
    let meta = std::fs::symlink_metadata(source).map_err(|e| CliError::Usage(format!("{}: {e}", source.display())))?;
    if meta.is_file() {
        std::fs::File::open(source).map_err(|e| CliError::Usage(format!("{}: {e}", source.display())))?;
        return Ok(Survey { files: 1, bytes: meta.len(), ..Survey::default() });
    }
    if !meta.is_dir() {
        return Err(CliError::Usage(format!("{}: not a directory, a regular file or `-`", source.display())));
    }
    let mut stats = PushStats::default();
    let (_, files) = walk(source, excludes, &mut stats)?;
    Ok(Survey { files: files.len() as u64, bytes: files.iter().map(|f| f.meta.len()).sum(), excluded: stats.excluded, other_file_systems: stats.other_file_systems })
}

// ---- cutting files on every core --------------------------------------------------------

/// What a chunker hands the sending thread.
enum Cut {
    /// A chunk of a file, with its bytes, or without them when the cache named it (the file
    /// was not read, or the chunk was in a snapshot sealed before).
    Chunk {
        file: usize,
        id: ChunkId,
        data: Option<Vec<u8>>,
        /// Bytes read from the file for it: its length, or 0 when the file was not read.
        read: usize,
    },
    /// A file's whole chunk list, after its last chunk.
    File {
        file: usize,
        chunks: Vec<ChunkRef>,
        from_cache: bool,
        /// Its chunks cut where they were at the last push ([`PushStats::cuts_kept`]).
        cuts_kept: u64,
    },
    Failed(CliError),
}

/// A chunker's cuts on their way to the sender, handed over `limit` bytes (files:
/// [`HAND_OVER_BYTES`], a stream: [`STREAM_STEP`]) or [`HAND_OVER_CUTS`] cuts at a time, in the
/// order they were cut.
struct HandOver<'a> {
    tx: &'a SyncSender<Vec<Cut>>,
    limit: usize,
    cuts: Vec<Cut>,
    bytes: usize,
}

impl<'a> HandOver<'a> {
    fn new(tx: &'a SyncSender<Vec<Cut>>, limit: usize) -> Self {
        HandOver { tx, limit, cuts: Vec::new(), bytes: 0 }
    }

    fn push(&mut self, cut: Cut) -> Result<()> {
        if let Cut::Chunk { data: Some(data), .. } = &cut {
            self.bytes += data.len();
        }
        let failed = matches!(cut, Cut::Failed(_));
        self.cuts.push(cut);
        if failed || self.bytes >= self.limit || self.cuts.len() >= HAND_OVER_CUTS {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands over what is gathered (a chunker's last act, so nothing is left behind).
    fn flush(&mut self) -> Result<()> {
        if self.cuts.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        // The sender stopped (it failed, and says why itself): this chunker stops too.
        self.tx.send(std::mem::take(&mut self.cuts)).map_err(|_| CliError::Failed("the push stopped".into()))
    }
}

/// Takes what the chunkers cut and hands it to the uploader, until every chunker is done.
/// Returns each file's chunk list. On an error, returning drops the receiver: the chunkers
/// stop at their next chunk.
fn send_cuts(rx: &Receiver<Vec<Cut>>, uploader: &mut Uploader, progress: &indicatif::ProgressBar) -> Result<HashMap<usize, Vec<ChunkRef>>> {
    let mut file_chunks = HashMap::new();
    let mut read = 0u64;
    loop {
        let cuts = match rx.try_recv() {
            Ok(cuts) => cuts,
            Err(TryRecvError::Empty) => {
                // Nothing cut yet: ask about what is pending now if that waits on no answer,
                // so the vault looks it up (and takes what it lacks) while the chunkers work. A
                // push that finds most chunks sealed before would otherwise fill its first
                // batch only near its end.
                uploader.ask_while_none_waits()?;
                match rx.recv_timeout(SLOW_SOURCE_WAIT) {
                    Ok(cuts) => cuts,
                    Err(RecvTimeoutError::Timeout) => {
                        // The source is slow (a producer that writes little at a time): what
                        // was cut goes now (every answer read, its chunks sent), so the
                        // session keeps sending while it waits for more.
                        uploader.settle_all()?;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            Err(TryRecvError::Disconnected) => break,
        };
        for cut in cuts {
            match cut {
                Cut::Chunk { file, id, data, read: chunk_read } => {
                    read += chunk_read as u64;
                    uploader.add(id, data, file)?;
                }
                Cut::File { file, chunks, from_cache, cuts_kept } => {
                    uploader.stats.files_from_cache += u64::from(from_cache);
                    uploader.stats.cuts_kept += cuts_kept;
                    file_chunks.insert(file, chunks);
                }
                Cut::Failed(e) => return Err(e),
            }
        }
        progress.set_position(read);
    }
    uploader.stats.bytes_read += read;
    Ok(file_chunks)
}

/// One file's chunks, from the cache if it names the file as it is, else read and cut.
fn chunk_file(file: &FileToRead, index: usize, cache: &Cache, out: &mut HandOver) -> Result<Cut> {
    if let Some(chunks) = cache.lookup(&file.rel, &file.meta) {
        for c in &chunks {
            out.push(Cut::Chunk { file: index, id: c.id, data: None, read: 0 })?;
        }
        return Ok(Cut::File { file: index, chunks, from_cache: true, cuts_kept: 0 });
    }
    // Changed since the last push: its unchanged parts keep their cuts.
    let previous = cache.previous(&file.rel);
    let mut previous = Previous::new(&previous);
    let chunks = read_and_cut(file, &mut previous, |id, chunk| {
        let read = chunk.as_slice().len();
        // A chunk of a snapshot sealed before is asked about without its bytes: the vault
        // almost always still has it (only a purge after that snapshot expired takes it away),
        // and if it does not, the file is read again.
        let data = (!cache.sealed_before(&id)).then(|| chunk.into_vec());
        out.push(Cut::Chunk { file: index, id, data, read })
    })?;
    Ok(Cut::File { file: index, chunks, from_cache: false, cuts_kept: previous.kept })
}

/// Opens a file and cuts it, handing each chunk to `each`; returns its chunk list. `previous`:
/// its chunks when it was last pushed, if known.
fn read_and_cut(file: &FileToRead, previous: &mut Previous, each: impl FnMut(ChunkId, CutBytes) -> Result<()>) -> Result<Vec<ChunkRef>> {
    let f = std::fs::File::open(&file.path).map_err(|e| CliError::Failed(format!("{}: {e}", file.path.display())))?;
    chunk_reader(f, Some(file.meta.size()), previous, each)
}

/// The order the chunkers take files in: largest first, ties in walk order. A large file
/// taken last would be cut on one core while the others wait for it; taken first, the small
/// files fill the other cores meanwhile (longest-processing-time-first scheduling).
fn largest_first(files: &[FileToRead]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].meta.size()));
    order
}

/// How many chunkers cut `files` (in `order`, largest first): one per core, and one more per
/// core when most of their bytes are not in the page cache. A chunker then spends much of its
/// time waiting for the device, and another one keeps its core busy meanwhile (the bench's
/// dataset, not cached: 5.12 s against 5.70 s with one per core, four pushes each); when the
/// bytes are cached, more chunkers only switch more (4.34 s against 4.20 s).
fn chunkers_for(files: &[FileToRead], order: &[usize], cache: &Cache) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let readers = if mostly_not_cached(files, order, cache) == Some(true) { cores.saturating_mul(2) } else { cores };
    readers.clamp(1, MAX_CHUNKERS).min(files.len().max(1))
}

/// Whether most bytes of a sample of `files` (the largest, and some spread over the rest) that
/// will be read (the chunk cache does not name them) are not in the page cache; `None` if the
/// kernel cannot say.
fn mostly_not_cached(files: &[FileToRead], order: &[usize], cache: &Cache) -> Option<bool> {
    let (largest, rest) = order.split_at(order.len().min(CACHE_SAMPLE_FILES));
    let stride = (rest.len() / CACHE_SAMPLE_FILES).max(1);
    let (mut cached, mut pages) = (0u64, 0u64);
    for &index in largest.iter().chain(rest.iter().step_by(stride)) {
        let file = &files[index];
        if cache.lookup(&file.rel, &file.meta).is_some() {
            continue;
        }
        // A file that cannot be opened now is reported when it is read.
        let Ok(open) = std::fs::File::open(&file.path) else { continue };
        let share = vault_store::cached_pages(&open, file.meta.size())?;
        cached += share.cached;
        pages += share.of;
    }
    Some(cached.saturating_mul(2) < pages)
}

/// Reads, cuts and hashes `files` on a bounded pool of threads ([`chunkers_for`]) while this
/// thread talks to the vault. Files are taken largest first; a file's chunks stay in order.
fn chunk_in_parallel(files: &[FileToRead], cache: &Cache, uploader: &mut Uploader, progress: &indicatif::ProgressBar) -> Result<HashMap<usize, Vec<ChunkRef>>> {
    let order = largest_first(files);
    let chunkers = chunkers_for(files, &order, cache);
    let next = AtomicUsize::new(0);
    let (tx, rx) = sync_channel(CUT_QUEUE);
    std::thread::scope(|scope| {
        for _ in 0..chunkers {
            let (tx, next, order) = (tx.clone(), &next, &order);
            scope.spawn(move || {
                let mut out = HandOver::new(&tx, HAND_OVER_BYTES);
                while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let done = chunk_file(&files[index], index, cache, &mut out).unwrap_or_else(Cut::Failed);
                    let failed = matches!(done, Cut::Failed(_));
                    if out.push(done).is_err() || failed {
                        return;
                    }
                }
                let _ = out.flush();
            });
        }
        drop(tx);
        let cut = send_cuts(&rx, uploader, progress);
        // Before the scope waits for the chunkers: a chunker blocked on a full queue wakes
        // to a closed one and stops.
        drop(rx);
        cut
    })
}

pub fn push(args: &PushArgs) -> Result<Outcome> {
    let started = Instant::now();
    let mut stats = PushStats::default();
    let mut witness = Witness::load(&args.receipts, &args.vault_key)?;
    let mut conn = Conn::open(args)?;
    conn.send(&ClientFrame::Begin { dataset: args.dataset.clone(), client_time: vault_io::clock_now().unix(), audit_size: witness.held_size() })?;
    let VaultFrame::Ready { .. } = conn.recv()? else {
        return Err(CliError::Refused("vault did not answer `begin` with `ready`".into()));
    };
    let progress = progress_bar(args.progress);
    let mut fresh_cache = Cache { cuts: cut_rule(), ..Cache::default() };

    let manifest = if args.source.as_os_str() == "-" {
        let mut uploader = Uploader::new(&mut conn, &mut stats);
        let (tx, rx) = sync_channel(CUT_QUEUE);
        // One stream has one chunker: it cuts ahead while this thread sends. Not joined on an
        // error: it may be blocked reading a producer that writes nothing more for hours, and
        // the refusal is said now (it stops at its next chunk; a stream is never retried).
        let chunker = std::thread::spawn(move || {
            let mut out = HandOver::new(&tx, STREAM_STEP);
            let result = chunk_reader(std::io::stdin().lock(), None, &mut Previous::new(&[]), |id, chunk| {
                let read = chunk.as_slice().len();
                out.push(Cut::Chunk { file: 0, id, data: Some(chunk.into_vec()), read })
            });
            let _ = out.push(result.map_or_else(Cut::Failed, |chunks| Cut::File { file: 0, chunks, from_cache: false, cuts_kept: 0 }));
            let _ = out.flush();
        });
        let mut chunks = send_cuts(&rx, &mut uploader, &progress)?;
        // Every cut was taken, so the chunker has ended.
        let _ = chunker.join();
        uploader.settle_all()?;
        stats.files = 1;
        let chunks = chunks.remove(&0).ok_or_else(|| CliError::Failed("stdin: the chunker ended without the stream's chunk list".into()))?;
        let size = chunks.iter().map(|c| u64::from(c.len)).sum();
        Manifest { entries: vec![Entry { path: b"stream".to_vec(), mode: 0o600, mtime: vault_io::clock_now().unix(), kind: EntryKind::Stream { size, chunks } }] }
    } else {
        let meta = std::fs::symlink_metadata(&args.source).map_err(|e| CliError::Failed(format!("{}: {e}", args.source.display())))?;
        let (mut entries, files, cache) = if meta.is_dir() {
            // The cache is parsed while the tree is walked.
            let cache_path = args.cache.clone();
            let cache_loader = std::thread::spawn(move || Cache::load(cache_path.as_deref()));
            let walked = walk(&args.source, &args.excludes, &mut stats);
            let cache = cache_loader.join().map_err(|_| CliError::Failed("the chunk cache's loader panicked".into()))?;
            let (entries, files) = walked?;
            (entries, files, cache)
        } else if meta.is_file() {
            let name = args.source.file_name().ok_or_else(|| CliError::Failed(format!("{}: no file name", args.source.display())))?;
            let entry = Entry { path: name.as_bytes().to_vec(), mode: meta.permissions().mode() & 0o7777, mtime: meta.mtime(), kind: EntryKind::File { size: 0, chunks: vec![] } };
            (vec![entry], vec![FileToRead { path: args.source.clone(), rel: name.to_string_lossy().into_owned(), entry: 0, meta }], Cache::load(args.cache.as_deref()))
        } else {
            return Err(CliError::Failed(format!("{}: not a directory, a regular file or `-`", args.source.display())));
        };
        let mut uploader = Uploader::new(&mut conn, &mut stats);
        let mut file_chunks = chunk_in_parallel(&files, &cache, &mut uploader, &progress)?;
        uploader.settle_all()?;
        // Files with chunks the vault lacks that were asked about without their bytes, since
        // the cache named them (another vault, a lost store, or a purge since): read them
        // now, and insist they still cut into the same chunks.
        let mut read = 0u64;
        for index in std::mem::take(&mut uploader.reread) {
            let file = &files[index];
            let previous = cache.previous(&file.rel);
            let chunks = read_and_cut(file, &mut Previous::new(&previous), |id, chunk| {
                let data = chunk.into_vec();
                read += data.len() as u64;
                uploader.add(id, Some(data), index)
            })?;
            if chunks != file_chunks[&index] {
                return Err(CliError::Failed(format!("{}: changed while being pushed; push again", file.path.display())));
            }
        }
        uploader.settle_all()?;
        stats.bytes_read += read;
        for (index, file) in files.iter().enumerate() {
            let chunks = file_chunks.remove(&index).expect("every file was chunked");
            fresh_cache.record(file.rel.clone(), &file.meta, &chunks);
            let size = chunks.iter().map(|c| u64::from(c.len)).sum();
            entries[file.entry].kind = EntryKind::File { size, chunks };
        }
        stats.files = files.len() as u64;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Manifest { entries }
    };
    progress.finish_and_clear();
    manifest.validate()?;

    let bytes = manifest.encode()?;
    for part in bytes.chunks(MAX_MANIFEST_PART) {
        conn.send(&ClientFrame::ManifestPart { bytes: part.to_vec() })?;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    conn.send(&ClientFrame::Commit { manifest_sha256: digest.as_ref().try_into().expect("32 bytes"), manifest_len: u64::try_from(bytes.len()).expect("manifest fits a u64") })?;
    let VaultFrame::Receipt { body, signature, audit } = conn.recv()? else {
        return Err(CliError::Refused("vault did not answer the commit with a receipt".into()));
    };
    let signed = SignedReceipt { body, signature, audit };
    let receipt = signed.verify(&args.vault_key)?;
    let expected_manifest = vault_core::keys::hex(digest.as_ref());
    if receipt.manifest_sha256 != expected_manifest || receipt.dataset != args.dataset {
        return Err(CliError::Refused(format!("receipt is for another push (manifest {}, dataset {})", receipt.manifest_sha256, receipt.dataset)));
    }
    std::fs::create_dir_all(&args.receipts).map_err(|e| CliError::Failed(format!("{}: {e}", args.receipts.display())))?;
    let receipt_path = args.receipts.join(format!("{}.json", receipt.snapshot_id));
    vault_io::write_atomic(&receipt_path, &signed.to_file_bytes(), 0o644)?;
    // Sealed and kept whatever the log says; a log that fails the check is still an error.
    let witnessed = witness.check(signed.audit.as_ref(), &receipt_path);
    if let Some(cache_path) = &args.cache {
        if let Some(parent) = cache_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        vault_io::write_atomic(cache_path, &serde_json::to_vec(&fresh_cache).expect("cache serializes"), 0o600)?;
    }
    Ok(Outcome { receipt, receipt_path, stats, elapsed: started.elapsed(), witnessed })
}

fn progress_bar(wanted: bool) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {bytes} read ({bytes_per_sec}) [{elapsed}]").expect("valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gathers chunks of these sizes as `settle_oldest` does; returns each frame's chunk count.
    fn gathered(sizes: &[usize]) -> Vec<usize> {
        let mut frames = vec![];
        let mut frame = ChunksFrame::default();
        let mut flush = |frame: &mut ChunksFrame| {
            let chunks = std::mem::take(frame).chunks;
            if chunks.is_empty() {
                return;
            }
            let refs: Vec<(ChunkId, &[u8])> = chunks.iter().map(|(id, data)| (*id, data.as_slice())).collect();
            let encoded = ChunkFramePieces::chunks(&refs).expect("every gathered frame is one the protocol allows").concat();
            let decoded = ClientFrame::decode(&encoded[4..]).unwrap();
            assert_eq!(decoded, ClientFrame::Chunks { chunks: chunks.clone() });
            frames.push(chunks.len());
        };
        for (i, len) in sizes.iter().enumerate() {
            if !frame.has_room_for(*len) {
                flush(&mut frame);
            }
            let data = vec![u8::try_from(i % 251).unwrap(); *len];
            frame.push(ChunkId::of(&data), data);
        }
        flush(&mut frame);
        frames
    }

    /// A reader that returns what it holds in pieces of the given sizes (in turn), with an
    /// interruption before every third.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        calls: usize,
    }

    impl Read for Pieces {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = self.sizes[self.calls % self.sizes.len()].min(out.len()).min(self.data.len() - self.at);
            out[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    /// Bytes that FastCDC cuts as it would real data (a counter hashed: no repeats, no runs).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut counter = seed;
        while out.len() < len {
            out.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &counter.to_le_bytes()).as_ref());
            counter += 1;
        }
        out.truncate(len);
        out
    }

    /// Chunks `data` read in pieces of `sizes`, `block` bytes at a time; returns what `each`
    /// was handed, and the chunk list.
    fn chunked(data: &[u8], size_hint: Option<u64>, block: usize, sizes: Vec<usize>) -> (Handed, Vec<ChunkRef>) {
        let (handed, refs, _) = chunked_after(data, size_hint, block, sizes, &[]);
        (handed, refs)
    }

    /// The chunks handed on (id and bytes), in order.
    type Handed = Vec<(ChunkId, Vec<u8>)>;

    /// [`chunked`], with the chunk list the source had when it was last pushed; also returns how
    /// many of its cuts were kept.
    fn chunked_after(data: &[u8], size_hint: Option<u64>, block: usize, sizes: Vec<usize>, previous: &[ChunkRef]) -> (Handed, Vec<ChunkRef>, u64) {
        let mut handed = vec![];
        let source = Pieces { data: data.to_vec(), at: 0, sizes, calls: 0 };
        let mut previous = Previous::new(previous);
        let refs = chunk_reader_in_blocks(source, size_hint, block, &mut previous, |id, chunk| {
            handed.push((id, chunk.into_vec()));
            Ok(())
        })
        .unwrap();
        (handed, refs, previous.kept)
    }

    fn fastcdc_refs(data: &[u8]) -> Vec<ChunkRef> {
        FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).map(|c| ChunkRef { id: ChunkId::of(&data[c.offset..c.offset + c.length]), len: u32::try_from(c.length).unwrap() }).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// However the source is read (pieces of any size, a block barely larger than a chunk
        /// or many, a size hint that is right, short, long or absent), the chunks are
        /// FastCDC's over the whole source, and each is handed on with its own bytes.
        #[test]
        fn the_chunks_are_fastcdcs_over_the_whole_source_however_it_is_read(
            len in 0usize..(3 << 20),
            seed in 0u64..1000,
            block_extra in 1usize..(1 << 20),
            sizes in proptest::collection::vec(1usize..(1 << 20), 1..6),
            hint in 0u8..4,
        ) {
            let data = noise(len, seed);
            let expected: Vec<(ChunkId, Vec<u8>)> = FastCDC::new(&data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
                .map(|c| (ChunkId::of(&data[c.offset..c.offset + c.length]), data[c.offset..c.offset + c.length].to_vec()))
                .collect();
            let size_hint = match hint {
                0 => None,
                1 => Some(len as u64),
                2 => Some(len as u64 / 2),
                _ => Some(len as u64 * 2 + 1),
            };
            let (handed, refs) = chunked(&data, size_hint, MAX_CHUNK as usize + block_extra, sizes);
            proptest::prop_assert_eq!(refs, expected.iter().map(|(id, chunk)| ChunkRef { id: *id, len: u32::try_from(chunk.len()).unwrap() }).collect::<Vec<_>>());
            proptest::prop_assert!(handed == expected, "the chunks handed on differ from FastCDC's");
            // No chunk holds more memory than its bytes (and the byte a small file's read
            // buffer has for seeing its end): the queues' bounds count chunks by their length.
            for (_, chunk) in &handed {
                proptest::prop_assert!(chunk.capacity() <= chunk.len() + 1, "a {} byte chunk holds {} bytes", chunk.len(), chunk.capacity());
            }
        }

        /// A file cut again with the chunk list it had when last pushed (changed in place,
        /// appended to, truncated, with bytes inserted or removed, a chunk's first byte changed,
        /// or not at all) is cut exactly as FastCDC cuts it from scratch, however it is read.
        #[test]
        fn a_changed_file_cut_with_its_previous_cuts_is_cut_as_fastcdc_cuts_it(
            len in 0usize..(3 << 20),
            seed in 0u64..1000,
            change in 0u8..7,
            at_permille in 0usize..1000,
            span in 1usize..(1 << 20),
            block_extra in 1usize..(2 << 20),
            sizes in proptest::collection::vec(1usize..(1 << 20), 1..6),
        ) {
            let old = noise(len, seed);
            let at = len * at_permille / 1000;
            let fresh = noise(span, seed + 1_000_000);
            let new: Vec<u8> = match change {
                0 => old.clone(),
                1 => { let mut new = old.clone(); let end = (at + span).min(len); new[at..end].copy_from_slice(&fresh[..end - at]); new }
                2 => [old.as_slice(), &fresh].concat(),
                3 => old[..at].to_vec(),
                4 => [&old[..at], fresh.as_slice(), &old[at..]].concat(),
                5 => [&old[..at], &old[(at + span).min(len)..]].concat(),
                // The first byte of a chunk changed: the cut before it may move, though the
                // chunk before is unchanged.
                _ => {
                    let mut new = old.clone();
                    let starts: Vec<usize> = FastCDC::new(&old, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).map(|c| c.offset).skip(1).collect();
                    if let Some(&start) = starts.get(starts.len() * at_permille / 1000) {
                        new[start] ^= 0x5a;
                    }
                    new
                }
            };
            let (handed, refs, kept) = chunked_after(&new, Some(new.len() as u64), MAX_CHUNK as usize + block_extra, sizes, &fastcdc_refs(&old));
            proptest::prop_assert_eq!(&refs, &fastcdc_refs(&new));
            // The old cuts were taken, not cut again (an unchanged file's, but near its end).
            if change == 0 && len >= 2 << 20 {
                proptest::prop_assert!(kept >= (refs.len() as u64).saturating_sub(12), "kept {kept} of {} cuts", refs.len());
            }
            let mut offset = 0;
            for ((id, chunk), r) in handed.iter().zip(&refs) {
                proptest::prop_assert!(*id == r.id && chunk.as_slice() == &new[offset..offset + r.len as usize]);
                offset += r.len as usize;
            }
            proptest::prop_assert_eq!(handed.len(), refs.len());
        }
    }

    /// The previous cuts are taken where the bytes still hash to them, without FastCDC: a list
    /// FastCDC would never make (even 200 000-byte pieces) is followed wherever it holds, and
    /// every id is still the bytes' own.
    #[test]
    fn previous_cuts_are_taken_where_the_bytes_still_hash_to_them() {
        let mut data = noise(3 << 20, 11);
        let piece = 200_000;
        let pieces = |data: &[u8]| -> Vec<ChunkRef> { data.chunks(piece).map(|c| ChunkRef { id: ChunkId::of(c), len: u32::try_from(c.len()).unwrap() }).collect() };
        let previous = pieces(&data);
        let (_, refs, kept) = chunked_after(&data, Some(data.len() as u64), READ_BLOCK, vec![1 << 16], &previous);
        // Every piece but the last few: those within MAX_CHUNK of the end are FastCDC's.
        let followed = refs.iter().zip(&previous).take_while(|(a, b)| a == b).count();
        assert_eq!(kept, followed as u64);
        let near_end = (MAX_CHUNK as usize).div_ceil(piece) + 1;
        assert!(followed >= previous.len() - near_end, "followed {followed} of {} pieces", previous.len());
        assert_ne!(refs, fastcdc_refs(&data), "FastCDC cuts elsewhere: the pieces were taken from the list");
        // One byte changed in piece 5: pieces 4 (its next byte changed) and 5 are cut anew.
        data[5 * piece + 10] ^= 1;
        let (handed, refs, _) = chunked_after(&data, Some(data.len() as u64), READ_BLOCK, vec![1 << 16], &previous);
        assert_eq!(refs[..4], previous[..4]);
        assert_ne!(refs[4], previous[4]);
        assert_eq!(handed.iter().flat_map(|(_, chunk)| chunk.iter().copied()).collect::<Vec<u8>>(), data);
        assert!(handed.iter().all(|(id, chunk)| *id == ChunkId::of(chunk)));
    }

    #[test]
    fn a_source_mostly_out_of_the_page_cache_gets_a_second_chunker_per_core() {
        use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
        let dir = tempfile::tempdir().unwrap();
        for n in 0..2 * MAX_CHUNKERS {
            let file = std::fs::File::create(dir.path().join(format!("f{n}"))).unwrap();
            std::io::Write::write_all(&mut &file, &noise(64 * 1024 + n, n as u64)).unwrap();
            file.sync_all().unwrap();
        }
        let (_, files) = walk(dir.path(), &crate::exclude::Excludes::default(), &mut PushStats::default()).unwrap();
        let order = largest_first(&files);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        if mostly_not_cached(&files, &order, &Cache::default()).is_none() {
            eprintln!("the kernel cannot say what is cached (no cachestat(2), no preadv2 RWF_NOWAIT here): one chunker per core, nothing to check");
            assert_eq!(chunkers_for(&files, &order, &Cache::default()), cores.min(MAX_CHUNKERS));
            return;
        }
        if nix::sys::statfs::statfs(dir.path()).unwrap().filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("the temporary directory is on tmpfs, whose pages are the files: nothing to drop");
            return;
        }
        assert_eq!(mostly_not_cached(&files, &order, &Cache::default()), Some(false), "just written, so cached");
        assert_eq!(chunkers_for(&files, &order, &Cache::default()), cores.min(MAX_CHUNKERS));
        for file in &files {
            posix_fadvise(std::fs::File::open(&file.path).unwrap(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        }
        assert_eq!(mostly_not_cached(&files, &order, &Cache::default()), Some(true), "dropped from the cache");
        assert_eq!(chunkers_for(&files, &order, &Cache::default()), (2 * cores).min(MAX_CHUNKERS));
        // Files the chunk cache names are not read, so their pages do not count.
        let mut named = Cache::default();
        for file in &files {
            named.record(file.rel.clone(), &file.meta, &[]);
        }
        assert_eq!(mostly_not_cached(&files, &order, &named), Some(false), "every file named by the chunk cache");
        // Read again, they are cached again.
        for file in &files {
            std::fs::read(&file.path).unwrap();
        }
        assert_eq!(chunkers_for(&files, &order, &Cache::default()), cores.min(MAX_CHUNKERS));
    }

    /// Old cuts are kept only from a cache that says they are this pusher's FastCDC cuts (a
    /// cache written before it said so, or with other sizes, is still used for unchanged files).
    #[test]
    fn only_a_cache_cut_as_this_pusher_cuts_lends_its_cuts() {
        let list = vec![(ChunkId::of(b"a").to_hex(), 1)];
        let file = CachedFile { dev: 1, ino: 2, size: 1, mtime_ns: 3, ctime_ns: 4, chunks: list };
        let with = |cuts: &str| Cache { cuts: cuts.into(), files: BTreeMap::from([("f".to_string(), file.clone())]), sealed: HashSet::new() };
        assert_eq!(with(&cut_rule()).previous("f"), vec![ChunkRef { id: ChunkId::of(b"a"), len: 1 }]);
        assert!(with("").previous("f").is_empty());
        assert!(with("fastcdc-v2020 16384/65536/262144").previous("f").is_empty());
        assert!(with(&cut_rule()).previous("other").is_empty());
        let old: Cache = serde_json::from_str(r#"{"files":{"f":{"dev":1,"ino":2,"size":1,"mtime_ns":3,"ctime_ns":4,"chunks":[]}}}"#).unwrap();
        assert!(old.cuts.is_empty() && old.files.contains_key("f"));
    }

    /// A stream is cut as its bytes arrive: each chunk is handed on once FastCDC can cut it
    /// (`MAX_CHUNK` bytes ahead, read [`STREAM_STEP`] at a time), not once a whole block has
    /// been read, so a producer that writes slowly is not left silent past the vault's idle
    /// deadline. A file is still read a block at a time. The cuts are FastCDC's either way.
    #[test]
    fn a_stream_is_cut_as_its_bytes_arrive() {
        use std::cell::Cell;
        use std::rc::Rc;
        /// Gives 64 KiB a read (a pipe's most) and counts what it gave.
        struct Counted {
            data: Vec<u8>,
            given: Rc<Cell<usize>>,
        }
        impl Read for Counted {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let at = self.given.get();
                let n = out.len().min(64 * 1024).min(self.data.len() - at);
                out[..n].copy_from_slice(&self.data[at..at + n]);
                self.given.set(at + n);
                Ok(n)
            }
        }
        let data = noise(6 << 20, 11);
        for size_hint in [None, Some(data.len() as u64)] {
            let given = Rc::new(Cell::new(0));
            // For each chunk handed on: how far it ends in the source, and how much had been read.
            let mut handed = vec![];
            let mut end = 0;
            let source = Counted { data: data.clone(), given: Rc::clone(&given) };
            let refs = chunk_reader(source, size_hint, &mut Previous::new(&[]), |_, chunk| {
                end += chunk.as_slice().len();
                handed.push((end, given.get()));
                Ok(())
            })
            .unwrap();
            assert_eq!(refs, fastcdc_refs(&data));
            let furthest_read_ahead = handed.iter().map(|(end, read)| read - end).max().unwrap();
            if size_hint.is_none() {
                assert!(furthest_read_ahead <= MAX_CHUNK as usize + STREAM_STEP, "a stream was read {furthest_read_ahead} bytes ahead of a chunk handed on");
            } else {
                assert_eq!(handed[0].1, data.len().min(READ_BLOCK), "a file is read a block at a time");
            }
        }
    }

    #[test]
    fn a_source_of_one_chunk_is_handed_on_in_the_buffer_it_was_read_into() {
        let data = noise(20_000, 7);
        let (handed, refs) = chunked(&data, Some(20_000), READ_BLOCK, vec![4096]);
        assert_eq!(refs, vec![ChunkRef { id: ChunkId::of(&data), len: 20_000 }]);
        assert_eq!(handed[0].1, data);
        // Its buffer was made for the file and a byte more (to see its end), and kept.
        assert_eq!(handed[0].1.capacity(), 20_001);
        // An empty source has no chunks.
        assert_eq!(chunked(&[], Some(0), READ_BLOCK, vec![1]).1, vec![]);
    }

    /// A writer that takes at most 3 bytes a call, of the first slice only (as `Write`'s
    /// default `write_vectored` does), and is interrupted every other call.
    struct Trickle {
        taken: Vec<u8>,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3);
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_vectored_write_sends_every_piece_in_order_however_little_each_call_takes() {
        let mut out = Trickle { taken: vec![], calls: 0 };
        write_all_vectored(&mut out, &[b"", b"head", b"", b"a", b"data of a chunk", b""]).unwrap();
        assert_eq!(out.taken, b"headadata of a chunk");
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert_eq!(write_all_vectored(&mut Full, &[b"x"]).unwrap_err().kind(), std::io::ErrorKind::WriteZero);
        write_all_vectored(&mut Full, &[b"", b""]).unwrap();
    }

    #[test]
    fn chunks_are_gathered_into_as_few_frames_as_the_protocol_allows() {
        // Small files: up to the count limit per frame.
        assert_eq!(gathered(&vec![10; MAX_BATCH_CHUNKS + 5]), vec![MAX_BATCH_CHUNKS, 5]);
        // Up to GATHER_BYTES: 32 KiB chunks, 7 to a frame (8 do not fit with their headers).
        let per_frame = (GATHER_BYTES - BATCH_HEADER_BYTES) / (BATCHED_CHUNK_OVERHEAD + 32 * 1024);
        assert_eq!(per_frame, 7);
        assert_eq!(gathered(&[32 * 1024; 20]), vec![7, 7, 6]);
        // A chunk larger than that goes alone (a frame holds at least one chunk, whatever its size).
        let max = usize::try_from(MAX_CHUNK).unwrap();
        assert_eq!(gathered(&[max, max, 100, 100]), vec![1, 1, 2]);
    }
}
