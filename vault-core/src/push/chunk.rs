//! Content addressing: a chunk's id is the SHA-256 of its plaintext bytes. The vault
//! re-hashes every chunk it receives; an id is a claim until then.

use std::fmt;

use crate::keys::hex;

/// The largest chunk either side will handle (FastCDC's maximum is set below this).
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The smallest chunk but a file's (or stream's) last: FastCDC's minimum in `vaultctl push`.
/// Without it a pusher could cut its quota into millions of one-byte chunks, each costing
/// the vault an index entry and memory.
pub const MIN_CHUNK_BYTES: usize = 32 * 1024;
/// FastCDC (v2020) sizes the pusher cuts with: big enough that per-chunk costs vanish, small
/// enough that a small change re-sends little. The minimum is [`MIN_CHUNK_BYTES`].
pub const FASTCDC_MIN_BYTES: u32 = 32 * 1024;
pub const FASTCDC_AVG_BYTES: u32 = 128 * 1024;
pub const FASTCDC_MAX_BYTES: u32 = 512 * 1024;
const _: () = assert!(FASTCDC_MIN_BYTES as usize == MIN_CHUNK_BYTES && FASTCDC_MAX_BYTES as usize <= MAX_CHUNK_BYTES);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    pub fn of(data: &[u8]) -> ChunkId {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        ChunkId(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<ChunkId> {
        crate::keys::unhex(text).map(ChunkId)
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}
