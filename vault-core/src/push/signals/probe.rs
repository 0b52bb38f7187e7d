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
/// every file shorter than FastCDC's minimum is a single chunk (longer files' chunks but the
/// last are at least that long).
pub const NOTE_MAX_BYTES: usize = crate::push::chunk::MIN_CHUNK_BYTES;
/// Of a possible note, this much is read: notes say who to pay and where near their top.
pub const NOTE_SCAN_BYTES: usize = 8 * 1024;

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
    // H = log2(n) - (1/n) * sum(c * log2(c)); c * log2(c) from a table for full windows.
    let table = c_log2_c();
    let mut sum = 0.0;
    let mut seen = 0u32;
    for &c in counts.iter().filter(|c| **c > 0) {
        sum += table.get(c as usize).copied().unwrap_or_else(|| f64::from(c) * f64::from(c).log2());
        seen += 1;
    }
    n.log2() - sum / n + f64::from(seen.saturating_sub(1)) / (2.0 * n * std::f64::consts::LN_2)
}

/// `c * log2(c)` for every count a full window can hold: the probe runs on every chunk that
/// arrives, and a table costs less than 2048 logarithms per chunk.
fn c_log2_c() -> &'static [f64; PROBE_WINDOW_BYTES + 1] {
    static TABLE: std::sync::OnceLock<[f64; PROBE_WINDOW_BYTES + 1]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = [0.0; PROBE_WINDOW_BYTES + 1];
        for (c, slot) in table.iter_mut().enumerate().skip(1) {
            let c = c as f64;
            *slot = c * c.log2();
        }
        table
    })
}

/// Words a note uses, by what they do: say the files are encrypted, demand payment or
/// contact, and name the untraceable channel it goes through (a cryptocurrency, Tor). A note
/// does all three. Ordinary text does the first two often enough (an IT guideline: laptops
/// are encrypted, confirm payments by phone, contact us to restore your files), so the
/// channel is what tells a note; text that explains ransomware to its readers can still
/// read like one.
const LOCKED: u8 = 1;
const DEMAND: u8 = 2;
const CHANNEL: u8 = 4;
/// Every word (lowercase ASCII) with its group, sorted by first byte so that each byte of the
/// text is compared only with the words that start with it.
const NOTE_WORDS: &[(&[u8], u8)] = &[
    (b".onion", CHANNEL),
    (b"@proton", DEMAND),
    (b"bitcoin", CHANNEL),
    (b"btc", CHANNEL),
    (b"contact us", DEMAND),
    (b"decrypt", LOCKED),
    (b"decryption tool", DEMAND),
    (b"decryptor", DEMAND),
    (b"email us", DEMAND),
    (b"encrypted", LOCKED),
    (b"locked", LOCKED),
    (b"monero", CHANNEL),
    (b"pay ", DEMAND),
    (b"payment", DEMAND),
    (b"private key", LOCKED),
    (b"ransom", DEMAND),
    (b"recover your files", DEMAND),
    (b"restore your files", DEMAND),
    (b"telegram", DEMAND),
    (b"tor browser", CHANNEL),
    (b"unique key", LOCKED),
    (b"wallet", DEMAND),
    (b"write to us", DEMAND),
    (b"xmr", CHANNEL),
];

/// For each byte, the range of [`NOTE_WORDS`] that start with it (lowercase).
const NOTE_WORDS_BY_FIRST: [(u8, u8); 256] = {
    let mut table = [(0u8, 0u8); 256];
    // `i` counted as a u8 (no try_from in a const): more than 255 words overflows it and fails the build.
    let mut i = 0u8;
    while (i as usize) < NOTE_WORDS.len() {
        let first = NOTE_WORDS[i as usize].0[0] as usize;
        if table[first].1 == 0 {
            table[first].0 = i;
        }
        table[first].1 = i + 1;
        i += 1;
    }
    table
};

/// A short text that says the files are locked, asks for payment or contact, and names a
/// cryptocurrency or a Tor address. Runs on every short chunk that arrives, so it reads at
/// most [`NOTE_SCAN_BYTES`] once: what is not text (UTF-8, few control bytes) is out at its
/// first invalid byte, and each byte is compared only with the words that start with it.
pub fn reads_like_ransom_note(data: &[u8]) -> bool {
    let text = &data[..data.len().min(NOTE_SCAN_BYTES)];
    // A multi-byte character cut by the scan's end is not a reason to call it binary.
    let valid = match std::str::from_utf8(text) {
        Ok(_) => text.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => return false,
    };
    if valid < 32 || text.iter().filter(|b| b.is_ascii_control() && !b.is_ascii_whitespace()).count() * 100 > text.len() {
        return false;
    }
    let mut found = 0u8;
    for (i, byte) in text.iter().enumerate() {
        let (start, end) = NOTE_WORDS_BY_FIRST[usize::from(byte.to_ascii_lowercase())];
        for (word, group) in &NOTE_WORDS[usize::from(start)..usize::from(end)] {
            // The second byte first: it tells most near misses apart without a call.
            let fits = text.len() - i >= word.len() && text[i + 1].to_ascii_lowercase() == word[1];
            if fits && found & group == 0 && text[i..i + word.len()].eq_ignore_ascii_case(word) {
                found |= group;
                if found == LOCKED | DEMAND | CHANNEL {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_note_words_are_sorted_by_their_first_byte_and_lowercase() {
        assert!(super::NOTE_WORDS.windows(2).all(|w| w[0].0[0] <= w[1].0[0]));
        assert!(super::NOTE_WORDS.iter().all(|(w, _)| w.iter().all(|b| !b.is_ascii_uppercase())));
    }
}
