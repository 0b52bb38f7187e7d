//! The signals' rules, each shown firing and each shown staying quiet where it must.

use proptest::prelude::*;

use super::assess::arrived_file;
use super::probe::{bits_per_byte, reads_like_ransom_note};
use super::profile::{content_key, extension_of, sealed_files, ChangeStats, MAX_PROFILE_BYTES};
use super::*;
use crate::push::chunk::ChunkId;
use crate::push::manifest::{self, ChunkRef, Entry, EntryKind, Manifest};

/// Bytes no compressor shrinks (a keyed stream, as encryption leaves them).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let block = ring::digest::digest(&ring::digest::SHA256, &[seed.to_le_bytes(), counter.to_le_bytes()].concat());
        out.extend_from_slice(block.as_ref());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["the", "vault", "keeps", "every", "night", "backup", "of", "our", "database", "and", "logs", "for", "years", "\n"];
    let mut out = Vec::new();
    let mut i = seed;
    while out.len() < len {
        i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(i >> 33) as usize % words.len()].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

#[test]
fn the_probe_tells_noise_from_text_and_code_and_leaves_short_chunks_unmeasured() {
    assert_eq!(probe_chunk(&noise(128 * 1024, 1)).incompressible_eighths(), Some(8));
    assert_eq!(probe_chunk(&text(128 * 1024, 1)).incompressible_eighths(), Some(0));
    assert_eq!(probe_chunk(&noise(300, 2)).incompressible_eighths(), Some(8), "a short window still tells noise (Miller-Madow corrected)");
    assert_eq!(probe_chunk(&text(300, 2)).incompressible_eighths(), Some(0));
    assert_eq!(probe_chunk(b"tiny").incompressible_eighths(), None);
    // Half encrypted: about half the windows say so.
    let half = [text(64 * 1024, 3), noise(64 * 1024, 3)].concat();
    assert_eq!(probe_chunk(&half).incompressible_eighths(), Some(4));
    assert!(bits_per_byte(&noise(1024, 4)) > 7.9 && bits_per_byte(&text(1024, 4)) < 5.0);
}

#[test]
fn a_ransom_note_needs_the_lock_the_payment_and_the_contact() {
    let note = b"YOUR FILES HAVE BEEN ENCRYPTED!\nTo decrypt them send 0.5 BTC to the wallet below.\nDownload Tor Browser and visit our .onion site to get your unique key.\n";
    assert!(reads_like_ransom_note(note));
    assert!(probe_chunk(note).is_note());
    assert!(!reads_like_ransom_note(b"This library encrypts files with AES-GCM; the private key stays on the token. See the docs for details on decrypting."));
    assert!(!reads_like_ransom_note(b"Invoice: payment by wallet transfer, contact us at accounts@example.com with questions about your order."));
    let binary = [note.as_slice(), &noise(4096, 9)].concat();
    assert!(!reads_like_ransom_note(&binary), "a note is text");
}

#[test]
fn a_staged_probe_byte_is_read_back_only_if_a_probe_could_have_written_it() {
    for data in [noise(4096, 1), text(4096, 1), b"x".to_vec()] {
        let probe = probe_chunk(&data);
        assert_eq!(ChunkProbe::from_byte(probe.to_byte()), Some(probe));
    }
    assert_eq!(ChunkProbe::from_byte(0x09), None, "nine eighths");
    assert_eq!(ChunkProbe::from_byte(0x20), None, "an unused bit");
    assert_eq!(ChunkProbe::from_byte(0x43), None, "unmeasured with a share");
}

#[test]
fn extensions_are_the_last_dot_of_the_name_lowercased() {
    assert_eq!(extension_of(b"docs/Report.DOCX").as_deref(), Some("docx"));
    assert_eq!(extension_of(b"a/b.tar.gz").as_deref(), Some("gz"));
    assert_eq!(extension_of(b"home/.bashrc"), None);
    assert_eq!(extension_of(b"dir.d/Makefile"), None);
    assert_eq!(extension_of(b"x.a-b"), None);
}

/// One file of a night, as a session would measure it.
#[derive(Clone)]
struct TestFile {
    path: String,
    size: u64,
    content: [u8; 16],
    measured_bytes: u64,
    incompressible_bytes: u64,
    note: bool,
}

/// A dataset of `n` files, as a session would measure it: `percent` of each incompressible.
struct Files(Vec<TestFile>);

fn file(path: &str, size: u64, content: u64, percent: u64) -> TestFile {
    TestFile { path: path.into(), size, content: content_key(std::iter::once(ChunkId::of(&content.to_le_bytes()))), measured_bytes: size, incompressible_bytes: size * percent / 100, note: false }
}

/// A night's paths laid end to end (standing in for its manifest's bytes), and its files
/// pointing into them.
fn arrive(files: &[TestFile]) -> (Vec<u8>, Vec<Arrived>) {
    let paths: Vec<u8> = files.iter().flat_map(|f| f.path.bytes()).collect();
    let mut start = 0;
    let arrived = files
        .iter()
        .map(|f| {
            let path = PathAt::of(&paths[start..start + f.path.len()], &paths);
            start += f.path.len();
            Arrived { path, size: f.size, content: f.content, measured_bytes: f.measured_bytes, incompressible_bytes: f.incompressible_bytes, note: f.note }
        })
        .collect();
    (paths, arrived)
}

impl Files {
    fn new(n: u64) -> Files {
        let mut files: Vec<TestFile> = (0..n).map(|i| file(&format!("docs/f{i:05}.txt"), 50_000 + i, i, 0)).collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Files(files)
    }

    /// The same files the next night: nothing sent again, so nothing measured.
    fn unchanged(&self) -> Files {
        Files(self.0.iter().map(|f| TestFile { measured_bytes: 0, incompressible_bytes: 0, ..f.clone() }).collect())
    }

    fn set(&mut self, index: usize, size: u64, content: u64, percent: u64) {
        let path = self.0[index].path.clone();
        self.0[index] = file(&path, size, content, percent);
    }

    fn sorted(mut self) -> Files {
        self.0.sort_by(|a, b| a.path.cmp(&b.path));
        self
    }
}

/// Seals `nights` one after another, each judged against the ones before (as the store keeps
/// them), and returns the last verdict.
fn judge(nights: &[Files]) -> Assessment {
    let mut profiles: Vec<Profile> = Vec::new();
    let mut previous: Option<Previous> = None;
    let mut last = None;
    for night in nights {
        let history = History::from_profiles(&profiles, previous.take());
        let bytes_new = night.0.iter().map(|f| f.measured_bytes).sum();
        let (paths, arrived) = arrive(&night.0);
        let assessment = assess(&arrived, &paths, bytes_new, &history);
        let files = arrived.iter().zip(&assessment.profile.marks).map(|(f, m)| FileFacts { path: f.path, size: f.size, content: f.content, mark: *m }).collect();
        previous = Some(Previous { manifest: paths, files });
        profiles.push(assessment.profile.clone());
        last = Some(assessment);
    }
    last.expect("at least one night")
}

fn fired(a: &Assessment) -> Vec<SignalKind> {
    a.signals.iter().map(|s| s.signal).collect()
}

#[test]
fn files_encrypted_in_place_turn_incompressible_and_make_the_snapshot_suspect() {
    let first = Files::new(1000);
    let mut attacked = first.unchanged();
    for i in 0..10 {
        attacked.set(i * 97, 50_016 + i as u64, 10_000 + i as u64, 100);
    }
    let verdict = judge(&[first, attacked]);
    assert!(verdict.suspect);
    assert_eq!(fired(&verdict), vec![SignalKind::TurnedIncompressible]);
    assert_eq!(verdict.signals[0].value, 10);
    assert_eq!(verdict.profile.stats.changed, 10);
}

#[test]
fn ordinary_edits_and_always_incompressible_data_stay_quiet() {
    let first = Files::new(1000);
    let mut edited = first.unchanged();
    for i in 0..50 {
        edited.set(i * 13, 50_100, 20_000 + i as u64, 0);
    }
    assert!(judge(&[first, edited]).signals.is_empty());

    // A restic repository: every file incompressible, packs added and pruned.
    let packs = |range: std::ops::Range<u64>| Files(range.map(|i| file(&format!("data/{:02x}/{i:064x}", i % 256), 4 << 20, i, 100)).collect()).sorted();
    let nights: Vec<Files> = (0..10).map(|n| packs(n * 20..n * 20 + 400)).collect();
    let verdict = judge(&nights);
    assert!(!verdict.suspect, "{:?}", verdict.signals);
    assert!(!fired(&verdict).contains(&SignalKind::TurnedIncompressible) && !fired(&verdict).contains(&SignalKind::ReplacedByIncompressible));
}

#[test]
fn files_replaced_by_encrypted_copies_are_caught_with_or_without_a_new_extension() {
    let first = Files::new(500);
    let mut attacked = first.unchanged();
    let victims: Vec<usize> = (0..5).map(|i| i * 50).collect();
    for (n, &i) in victims.iter().enumerate() {
        let old = attacked.0[i].clone();
        let locked = format!("{}.locked", old.path);
        attacked.0.push(file(&locked, old.size + 16, 90_000 + n as u64, 100));
    }
    let mut kept: Vec<TestFile> = attacked.0.into_iter().enumerate().filter(|(i, _)| !victims.contains(i)).map(|(_, f)| f).collect();
    kept.sort_by(|a, b| a.path.cmp(&b.path));
    let verdict = judge(&[first, Files(kept)]);
    assert!(verdict.suspect);
    assert!(fired(&verdict).contains(&SignalKind::ReplacedByIncompressible), "{:?}", verdict.signals);

    // Compressing a file in place is not encrypting it: far smaller than the original.
    let first = Files::new(500);
    let mut gzipped = first.unchanged();
    for i in 0..5 {
        let old = gzipped.0[i * 50].clone();
        gzipped.0[i * 50] = file(&format!("{}.gz", old.path), old.size / 5, 70_000 + i as u64, 100);
    }
    let verdict = judge(&[first, gzipped.sorted()]);
    assert!(!verdict.suspect, "{:?}", verdict.signals);
}

#[test]
fn intermittent_encryption_shows_as_a_rise_in_a_plain_file() {
    let first = Files(vec![file("db/dump.sql", 64 << 20, 1, 0)]);
    let mut nights = vec![first];
    for n in 0..2 {
        nights.push(Files(vec![file("db/dump.sql", 64 << 20, 2 + n, 0)]));
    }
    // 1 MiB of every 16 encrypted: about 6 % of the file.
    nights.push(Files(vec![file("db/dump.sql", 64 << 20, 9, 6)]));
    let verdict = judge(&nights);
    assert!(fired(&verdict).contains(&SignalKind::TurnedIncompressible), "{:?}", verdict.signals);
}

#[test]
fn a_ransom_note_is_strong_and_one_weak_signal_alone_is_not() {
    let first = Files::new(100);
    let mut noted = first.unchanged();
    noted.0.push(TestFile { note: true, ..file("docs/README_DECRYPT.txt", 900, 5, 0) });
    let verdict = judge(&[first, noted.sorted()]);
    assert!(verdict.suspect);
    assert_eq!(fired(&verdict), vec![SignalKind::RansomNote]);

    // 25 never-seen extensions alone: observed, not suspect.
    let first = Files::new(100);
    let mut exotic = first.unchanged();
    for i in 0..25 {
        exotic.0.push(file(&format!("new/f{i}.x{i}"), 1000, 500 + i, 0));
    }
    let verdict = judge(&[first, exotic.sorted()]);
    assert_eq!(fired(&verdict), vec![SignalKind::NewExtensions]);
    assert!(!verdict.suspect);
}

#[test]
fn surges_are_judged_against_the_datasets_own_baseline() {
    let mut nights = vec![Files::new(1000)];
    for n in 0..4u64 {
        let mut night = nights.last().unwrap().unchanged();
        for i in 0..10 {
            night.set(i * 7 + usize::try_from(n).unwrap(), 50_000, 1_000_000 + n * 100 + i as u64, 0);
        }
        nights.push(night);
    }
    // A night that rewrites 60 % of the files (still plain text: two weak signals, churn and
    // new bytes, make it suspect together).
    let mut storm = nights.last().unwrap().unchanged();
    for i in 0..600 {
        storm.set(i, 50_000, 2_000_000 + i as u64, 0);
    }
    nights.push(storm);
    let verdict = judge(&nights);
    assert!(fired(&verdict).contains(&SignalKind::ChurnSurge) && fired(&verdict).contains(&SignalKind::NewBytesSurge), "{:?}", verdict.signals);
    assert!(verdict.suspect);
}

#[test]
fn unchanged_files_keep_their_measure_from_the_snapshot_before() {
    let first = Files(vec![file("a.txt", 1000, 1, 0), file("b.bin", 1000, 2, 100)]);
    let second = first.unchanged();
    let verdict = judge(&[first, second]);
    assert_eq!(verdict.profile.marks.iter().map(|m| m.incompressible_percent()).collect::<Vec<_>>(), vec![Some(0), Some(100)]);
}

#[test]
fn a_profile_round_trips_and_a_doctored_one_is_refused() {
    let verdict = judge(&[Files::new(20)]);
    let bytes = verdict.profile.to_bytes();
    assert_eq!(Profile::from_bytes(&bytes).unwrap(), verdict.profile);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(Profile::from_bytes(text.replace("\"version\":1", "\"version\":2").as_bytes()).unwrap_err().to_string().contains("version"));
    assert!(Profile::from_bytes(text.replace("\"txt\"", "\"TXT\"").as_bytes()).unwrap_err().to_string().contains("extension"));
    assert!(Profile::from_bytes(text.replace(",\"files_before\"", " ,\"files_before\"").as_bytes()).unwrap_err().to_string().contains("non-canonical"));
    assert!(Profile::from_bytes(&vec![b' '; MAX_PROFILE_BYTES + 1]).unwrap_err().to_string().contains("too large"));
    assert_eq!(ChangeStats::default().churn_per_mille(0), 0);
}

#[test]
fn a_sealed_snapshot_is_read_back_from_its_manifest_and_profile() {
    let chunk = |seed: u64| ChunkRef { id: ChunkId::of(&seed.to_le_bytes()), len: 40_000 };
    let manifest = Manifest {
        entries: vec![
            Entry { path: b"d".to_vec(), mode: 0o755, mtime: 0, kind: EntryKind::Dir },
            Entry { path: b"d/a.txt".to_vec(), mode: 0o644, mtime: 0, kind: EntryKind::File { size: 80_000, chunks: vec![chunk(1), chunk(2)] } },
            Entry { path: b"d/b.jpg".to_vec(), mode: 0o644, mtime: 0, kind: EntryKind::File { size: 40_000, chunks: vec![chunk(3)] } },
        ],
    };
    let bytes = manifest.encode().unwrap();
    let mut arrived = Vec::new();
    let probes = [probe_chunk(&text(40_000, 1)), probe_chunk(&text(40_000, 2)), probe_chunk(&noise(40_000, 3))];
    manifest::walk(&bytes, |entry| {
        arrived.extend(arrived_file(entry, &bytes, |c| [chunk(1), chunk(2), chunk(3)].iter().position(|k| k.id == c.id).map(|i| probes[i])));
        Ok(())
    })
    .unwrap();
    let verdict = assess(&arrived, &bytes, 120_000, &History::default());
    let files = sealed_files(&bytes, &verdict.profile).unwrap();
    assert_eq!(files.iter().map(|f| (f.path.get(&bytes), f.mark.incompressible_percent())).collect::<Vec<_>>(), vec![(&b"d/a.txt"[..], Some(0)), (&b"d/b.jpg"[..], Some(100))]);
    let short = Profile { marks: verdict.profile.marks[..1].to_vec(), ..verdict.profile.clone() };
    assert!(sealed_files(&bytes, &short).unwrap_err().to_string().contains("marks"));
}

#[test]
fn a_folder_renamed_moves_its_files_and_only_new_names_count_as_renames() {
    let named = |dir: &str, stem: &str| Files((0..300).map(|i| file(&format!("{dir}/{stem}{i:04}.pdf"), 90_000, i, 100)).collect()).sorted();
    let first = named("scans", "scan-");
    // The folder renamed: every file keeps its name (ordinary churn, not renames).
    let verdict = judge(&[first, named("scans-2023", "scan-").unchanged()]);
    assert!(!fired(&verdict).contains(&SignalKind::RenamesInFolder), "{:?}", verdict.signals);
    assert_eq!(verdict.profile.stats.renamed, 300);
    // The same files given new names in their folder are renames.
    let verdict = judge(&[named("scans", "scan-"), named("scans", "x").unchanged()]);
    assert!(fired(&verdict).contains(&SignalKind::RenamesInFolder), "{:?}", verdict.signals);
}

#[test]
fn a_text_about_encryption_payments_and_whom_to_contact_is_no_note_without_the_channel() {
    let guideline =
        b"All company laptops are encrypted. Never send payment details by e-mail. If you lose a device, contact us at the helpdesk and we will help you restore your files from the backup.";
    assert!(!reads_like_ransom_note(guideline));
    let note = b"Your files are encrypted. To get the decryption tool contact us: download Tor Browser and open our .onion chat.";
    assert!(reads_like_ransom_note(note), "no payment word, but the lock, the contact and the channel");
}

proptest! {
    #[test]
    fn hostile_profile_bytes_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Profile::from_bytes(&bytes);
    }

    #[test]
    fn any_chunk_probes_to_a_byte_that_reads_back(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let probe = probe_chunk(&data);
        prop_assert_eq!(ChunkProbe::from_byte(probe.to_byte()), Some(probe));
    }
}

#[test]
fn the_fuzzers_seed_profile_is_one_the_vault_reads() {
    let seed = include_bytes!("../../../../scripts/fuzz-seeds/snapshot.profile.json");
    assert_eq!(Profile::from_bytes(seed).unwrap().to_bytes(), seed);
}

#[test]
fn a_write_once_dataset_that_rewrites_files_in_place_is_suspect_and_a_quiet_share_is_not() {
    // A restic repository: packs only come (nightly) and go (weekly prune), never change.
    let packs = |range: std::ops::Range<u64>| Files(range.map(|i| file(&format!("data/{:02x}/{i:064x}", i % 256), 4 << 20, i, 100)).collect()).sorted();
    let mut nights: Vec<Files> = (0..9).map(|n| packs(n * 5..n * 5 + 400)).collect();
    let mut attacked = packs(45..445).unchanged();
    for i in 0..4 {
        attacked.set(i * 90, (4 << 20) + 64, 77_000 + i as u64, 100);
    }
    nights.push(attacked);
    let verdict = judge(&nights);
    assert!(verdict.suspect, "{:?}", verdict.signals);
    assert_eq!(fired(&verdict), vec![SignalKind::RewrittenInPlace]);

    // A share with three quiet nights is not yet write-once: Monday's edits are ordinary.
    let mut nights = vec![Files::new(1000)];
    for _ in 0..3 {
        let quiet = nights.last().unwrap().unchanged();
        nights.push(quiet);
    }
    let mut monday = nights.last().unwrap().unchanged();
    for i in 0..30 {
        monday.set(i * 30, 50_100, 3_000_000 + i as u64, 0);
    }
    nights.push(monday);
    assert!(!judge(&nights).suspect);
}

#[test]
fn an_empty_snapshot_after_full_ones_is_suspect() {
    // THREATS.md: a compromised pusher sends empty snapshots night after night.
    let mut nights = vec![Files::new(1000)];
    for _ in 0..4 {
        let quiet = nights.last().unwrap().unchanged();
        nights.push(quiet);
    }
    nights.push(Files(Vec::new()));
    let verdict = judge(&nights);
    assert!(verdict.suspect, "{:?}", verdict.signals);
    assert!(fired(&verdict).contains(&SignalKind::ChurnSurge) && fired(&verdict).contains(&SignalKind::SizeTrend), "{:?}", verdict.signals);
}
