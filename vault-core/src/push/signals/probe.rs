//! What the vault learns of one chunk while it arrives, at a cost that does not show in
//! ingest: how much of it no compressor could shrink, and whether it reads like a ransom
//! note. Both are measured on the bytes the session already holds; nothing is read twice.
//!
//! The compression probe is an order-0 entropy estimate over a few evenly spread windows:
//! the size an ideal byte-wise coder would reach. It cannot tell compressed data from
//! encrypted data (both sit near 8 bits per byte), and it is not meant to: the signals judge
//! the *change* of a path from compressible to incompressible, against the dataset's history.

/// Windows measured per chunk, spread evenly over it.
pub const PROBE_WINDOWS: usize = 8;
pub const PROBE_WINDOW_BYTES: usize = 1024;
/// Shorter than this, a window's estimate is too noisy to judge: the chunk is not measured.
pub const MIN_PROBE_BYTES: usize = 128;
/// Bits per byte (Miller-Madow corrected) above which a window counts as incompressible.
/// Random or encrypted 1 KiB windows measure 7.9-8.0; text 4-5.5; machine code 5-6.5.
pub const INCOMPRESSIBLE_BITS_PER_BYTE: f64 = 7.0;
/// Only chunks this short are read as possible notes: a note is a small text file, and
/// every file shorter than FastCDC's minimum is a single chunk.
pub const NOTE_MAX_BYTES: usize = 64 * 1024;

/// The probe of one chunk, one byte as it is staged: bits 0-3 the eighths of the chunk found
/// incompressible (0-8), bit 6 set when the chunk was too short to measure, bit 7 when it
/// reads like a ransom note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChunkProbe(u8);

const UNMEASURED_BIT: u8 = 0x40;
const NOTE_BIT: u8 = 0x80;
const EIGHTHS_MASK: u8 = 0x0f;

impl ChunkProbe {
    pub const UNMEASURED: ChunkProbe = ChunkProbe(UNMEASURED_BIT);

    /// Eighths of the chunk measured incompressible; `None` when it was too short to measure.
    pub fn incompressible_eighths(self) -> Option<u8> {
        (self.0 & UNMEASURED_BIT == 0).then_some(self.0 & EIGHTHS_MASK)
    }

    pub fn is_note(self) -> bool {
        self.0 & NOTE_BIT != 0
    }

    pub fn to_byte(self) -> u8 {
        self.0
    }

    /// A staged byte read back; `None` for a byte no probe writes.
    pub fn from_byte(byte: u8) -> Option<ChunkProbe> {
        let eighths = byte & EIGHTHS_MASK;
        let unused = byte & !(EIGHTHS_MASK | UNMEASURED_BIT | NOTE_BIT);
        (unused == 0 && eighths <= 8 && !(byte & UNMEASURED_BIT != 0 && eighths != 0)).then_some(ChunkProbe(byte))
    }
}

/// Probes one chunk's bytes.
pub fn probe_chunk(data: &[u8]) -> ChunkProbe {
    if !super::ENABLED {
        return ChunkProbe::UNMEASURED;
    }
    let note = if data.len() <= NOTE_MAX_BYTES && reads_like_ransom_note(data) { NOTE_BIT } else { 0 };
    if data.len() < MIN_PROBE_BYTES {
        return ChunkProbe(UNMEASURED_BIT | note);
    }
    let window = PROBE_WINDOW_BYTES.min(data.len());
    let windows = PROBE_WINDOWS.min(data.len() / window).max(1);
    let stride = if windows > 1 { (data.len() - window) / (windows - 1) } else { 0 };
    let incompressible = (0..windows).filter(|i| bits_per_byte(&data[i * stride..i * stride + window]) > INCOMPRESSIBLE_BITS_PER_BYTE).count();
    // Rounded to eighths of the windows measured (at most 8, so this fits a nibble).
    let eighths = u8::try_from((incompressible * 8 + windows / 2) / windows).expect("at most 8");
    ChunkProbe(eighths | note)
}

/// Order-0 entropy in bits per byte with the Miller-Madow correction, which removes most of
/// the bias a short window has towards looking compressible.
pub fn bits_per_byte(window: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in window {
        counts[usize::from(b)] += 1;
    }
    let n = window.len() as f64;
    let mut entropy = 0.0;
    let mut seen = 0u32;
    for &c in counts.iter().filter(|c| **c > 0) {
        let p = f64::from(c) / n;
        entropy -= p * p.log2();
        seen += 1;
    }
    entropy + f64::from(seen.saturating_sub(1)) / (2.0 * n * std::f64::consts::LN_2)
}

/// Words a note uses, by what they do: say the files are encrypted, demand payment or
/// contact, and name the untraceable channel it goes through (a cryptocurrency, Tor). A note
/// does all three. Ordinary text does the first two often enough (an IT guideline: laptops
/// are encrypted, confirm payments by phone, contact us to restore your files), so the
/// channel is what tells a note; text that explains ransomware to its readers can still
/// read like one.
const NOTE_LOCKED: &[&[u8]] = &[b"encrypted", b"decrypt", b"locked", b"private key", b"unique key"];
const NOTE_DEMAND: &[&[u8]] = &[b"ransom", b"wallet", b"payment", b"pay ", b"contact us", b"write to us", b"email us", b"telegram", b"@proton", b"recover your files", b"restore your files", b"decryption tool", b"decryptor"];
const NOTE_CHANNEL: &[&[u8]] = &[b"bitcoin", b"btc", b"monero", b"xmr", b".onion", b"tor browser"];

/// A short text that says the files are locked, asks for payment or contact, and names a
/// cryptocurrency or a Tor address.
pub fn reads_like_ransom_note(data: &[u8]) -> bool {
    let printable = data.iter().filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || **b >= 0x80).count();
    if data.len() < 32 || printable * 10 < data.len() * 9 {
        return false;
    }
    let lower = data.to_ascii_lowercase();
    let has_any = |words: &[&[u8]]| words.iter().any(|w| lower.windows(w.len()).any(|win| win == *w));
    has_any(NOTE_LOCKED) && has_any(NOTE_DEMAND) && has_any(NOTE_CHANNEL)
}
