//! Ransomware, applied to a copy of one night's tree: AES-256-GCM (ring) with a random key,
//! the ciphertext and its tag, a small header for some families and a footer holding the
//! wrapped key, as real ones write. Four ways of laying the result down, and optionally a
//! ransom note in every folder touched.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use crate::content::{random_bytes, Rand};
use crate::vault::{File, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variant {
    /// Each file overwritten with its ciphertext, same name.
    InPlace,
    /// `file.ext` -> `file.ext.<new extension>`, the original deleted.
    RenamedExt,
    /// The ciphertext written to a random name in the same folder, the original deleted.
    NewName,
    /// 1 MiB of every 16 MiB encrypted in place (files under 1 MiB whole).
    Intermittent,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::InPlace, Variant::RenamedExt, Variant::NewName, Variant::Intermittent];

    pub fn label(self) -> &'static str {
        match self {
            Variant::InPlace => "in place",
            Variant::RenamedExt => "renamed extension",
            Variant::NewName => "copy to new name, delete",
            Variant::Intermittent => "intermittent (1 of 16 MiB)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attack {
    pub variant: Variant,
    /// Percent of the files encrypted.
    pub percent: u32,
    pub notes: bool,
}

const MIB: usize = 1024 * 1024;
const NOTE_NAMES: &[&str] = &["README_DECRYPT.txt", "HOW_TO_RESTORE_FILES.txt", "!!!READ_ME!!!.txt", "RECOVER-FILES.txt"];
const NOTE: &str = "---=== YOUR FILES ARE ENCRYPTED ===---\n\nAll your documents, photos, databases and other important files have been encrypted \
with strong military-grade algorithms (AES-256 + RSA-4096). You cannot decrypt them without our private key.\n\nDo not rename encrypted \
files. Do not try to decrypt your data using third party software, it may cause permanent data loss.\n\nTo recover your files you need to \
buy our decryption tool. The price is 0.5 BTC. Send the payment to the bitcoin wallet below and contact us with your personal ID.\n\n\
Wallet: bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el\nContact: Download Tor Browser and open http://lockedfiles4k2n7x3zq.onion/chat\n\
Your personal ID: ";

/// How one trial's ransomware behaves: its extension, header, footer and note name.
struct Family {
    key: LessSafeKey,
    extension: String,
    header: Vec<u8>,
    footer: usize,
    note_name: &'static str,
}

impl Family {
    fn new(rng: &mut Rand) -> Family {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let extension = match rng.gen_range(0..4) {
            0 => "locked".to_string(),
            1 => "crypt".to_string(),
            _ => (0..rng.gen_range(4..9)).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect(),
        };
        let header = if rng.gen_bool(0.5) {
            let mut h = b"LOCKv2\0\0".to_vec();
            h.extend_from_slice(&random_bytes(rng, 24));
            h
        } else {
            Vec::new()
        };
        Family {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("a 32-byte key")),
            extension,
            header,
            footer: [256, 512][rng.gen_range(0..2)],
            note_name: NOTE_NAMES[rng.gen_range(0..NOTE_NAMES.len())],
        }
    }

    fn seal(&self, nonce: u64, data: &mut [u8]) -> [u8; 16] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&nonce.to_be_bytes());
        let tag = self.key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), data).expect("AES-GCM seals any length here");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Header, ciphertext, tag, wrapped key.
    fn whole(&self, rng: &mut Rand, nonce: u64, data: &[u8]) -> Vec<u8> {
        let mut out = self.header.clone();
        let mut body = data.to_vec();
        let tag = self.seal(nonce, &mut body);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&random_bytes(rng, self.footer));
        out
    }

    /// 1 MiB of every 16 in place, then the tags and the wrapped key.
    fn intermittent(&self, rng: &mut Rand, nonce: u64, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let mut tags = Vec::new();
        for (k, start) in (0..out.len()).step_by(16 * MIB).enumerate() {
            let end = (start + MIB).min(out.len());
            tags.extend_from_slice(&self.seal(nonce * 4096 + k as u64, &mut out[start..end]));
        }
        out.extend_from_slice(&tags);
        out.extend_from_slice(&random_bytes(rng, self.footer));
        out
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |p| p.0)
}

/// The tree after the attack, and the files it encrypted: `percent` of the files (at least
/// one), drawn at random.
pub fn apply(tree: &Tree, attack: Attack, seed: u64) -> (Tree, Vec<String>) {
    let mut rng = Rand::seed_from_u64(seed);
    let family = Family::new(&mut rng);
    let mut paths: Vec<&String> = tree.keys().collect();
    paths.shuffle(&mut rng);
    let n = crate::content::whole((paths.len() as f64 * f64::from(attack.percent) / 100.0).round()).clamp(1, paths.len());
    let mut victims: Vec<String> = paths[..n].iter().map(|p| (*p).clone()).collect();
    victims.sort();
    let mut out = tree.clone();
    let mut folders = BTreeSet::new();
    for (i, path) in victims.iter().enumerate() {
        let data = tree[path].content.bytes();
        let nonce = i as u64 + 1;
        folders.insert(parent(path).to_string());
        match attack.variant {
            Variant::InPlace => {
                out.insert(path.clone(), File::new(family.whole(&mut rng, nonce, &data)));
            }
            Variant::Intermittent => {
                out.insert(path.clone(), File::new(family.intermittent(&mut rng, nonce, &data)));
            }
            Variant::RenamedExt => {
                out.remove(path);
                out.insert(format!("{path}.{}", family.extension), File::new(family.whole(&mut rng, nonce, &data)));
            }
            Variant::NewName => {
                out.remove(path);
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                let stem: String = (0..rng.gen_range(10..17)).map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char).collect();
                let dir = parent(path);
                let name = format!("{stem}.{}", family.extension);
                let new = if dir.is_empty() { name } else { format!("{dir}/{name}") };
                out.insert(new, File::new(family.whole(&mut rng, nonce, &data)));
            }
        }
    }
    if attack.notes {
        let id: String = random_bytes(&mut rng, 16).iter().map(|b| format!("{b:02X}")).collect();
        let note = File::new(format!("{NOTE}{id}\n").into_bytes());
        for folder in folders {
            let path = if folder.is_empty() { family.note_name.to_string() } else { format!("{folder}/{}", family.note_name) };
            out.insert(path, note.clone());
        }
    }
    (out, victims)
}
