//! The simulation's own parts: formats as real tools write them, the probe's view of each
//! kind of content, the manifest, dedup, and the attacks' layouts.

use rand::SeedableRng;
use vault_core::push::signals::probe_chunk;

use crate::attack::{self, Attack, Variant};
use crate::content::{self as c, Rand};
use crate::vault::{manifest_of, Dataset, File, Tree};

fn incompressible_eighths(data: &[u8]) -> u8 {
    probe_chunk(data).incompressible_eighths().expect("measured")
}

#[test]
fn containers_are_built_as_real_tools_build_them() {
    assert_eq!(c::crc32(b"123456789"), 0xCBF4_3926);
    let text = c::prose(&mut Rand::seed_from_u64(1), 100_000);
    let gz = c::gzip(text.as_bytes());
    assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
    let inflated = miniz_oxide::inflate::decompress_to_vec(&gz[10..gz.len() - 8]).expect("valid deflate");
    assert_eq!(inflated, text.as_bytes());
    let zip = c::docx(&text, None);
    assert_eq!(&zip[..4], b"PK\x03\x04");
    assert_eq!(&zip[zip.len() - 22..zip.len() - 18], b"PK\x05\x06");
    assert!(c::tar(&[("a".into(), vec![1; 700])]).len() % 512 == 0);
}

#[test]
fn the_probe_sees_text_as_compressible_and_containers_as_not() {
    let rng = &mut Rand::seed_from_u64(2);
    let size = 128 * 1024;
    for text in [c::prose(rng, size), c::csv(rng, size), c::sql_dump(rng, &["t"], size), c::log_text(rng, "app", 1, size), c::code(rng, c::Lang::Rust, size), c::rtf(rng, size)] {
        assert_eq!(incompressible_eighths(&text.as_bytes()[..size]), 0, "{}", &text[..80]);
    }
    let prose = c::prose(rng, 400_000);
    for binary in [c::docx(&prose, None), c::xlsx(&c::csv(rng, 400_000)), c::jpeg(rng, size), c::png(rng, size), c::gzip(prose.as_bytes()), c::pdf(rng, size, true)] {
        assert!(incompressible_eighths(&binary[..size.min(binary.len())]) >= 7, "{:?}", &binary[..8]);
    }
}

fn tree(files: &[(&str, Vec<u8>)]) -> Tree {
    files.iter().map(|(p, d)| (p.to_string(), File::new(d.clone()))).collect()
}

#[test]
fn manifests_follow_the_rules_and_a_second_push_sends_nothing_new() {
    let rng = &mut Rand::seed_from_u64(3);
    let t = tree(&[("a/b/c.txt", c::prose(rng, 300_000).into_bytes()), ("a/b-c.txt", b"x".to_vec()), ("a.txt", vec![]), ("z/y.jpg", c::jpeg(rng, 50_000))]);
    manifest_of(&t).validate().expect("a valid manifest");
    let mut dataset = Dataset::default();
    let first = dataset.judge(&t);
    assert_eq!(first.bytes_new, t.values().map(|f| f.size).sum::<u64>());
    dataset.seal(first);
    let second = dataset.judge(&t);
    assert_eq!(second.bytes_new, 0);
    assert!(second.assessment.signals.is_empty());
}

#[test]
fn attacks_lay_out_their_files_as_ransomware_does() {
    let rng = &mut Rand::seed_from_u64(4);
    let big = c::sql_dump(rng, &["t"], 3 << 20).into_bytes();
    let t = tree(&[("d/dump.sql", big.clone()), ("d/notes.txt", c::prose(rng, 5000).into_bytes())]);
    let (renamed, _) = attack::apply(&t, Attack { variant: Variant::RenamedExt, percent: 100, notes: true }, 9);
    assert!(!renamed.contains_key("d/dump.sql") && !renamed.contains_key("d/notes.txt"));
    assert_eq!(renamed.keys().filter(|p| p.starts_with("d/dump.sql.")).count(), 1);
    assert_eq!(renamed.values().filter(|f| vault_core::push::signals::probe::reads_like_ransom_note(&f.content.bytes())).count(), 1);

    let (partial, _) = attack::apply(&t, Attack { variant: Variant::Intermittent, percent: 100, notes: false }, 9);
    let dump = partial["d/dump.sql"].content.bytes().into_owned();
    assert_ne!(dump[..1 << 20], big[..1 << 20]);
    assert_eq!(dump[1 << 20..big.len()], big[1 << 20..], "only the first MiB of a 3 MiB file");

    let (moved, victims) = attack::apply(&t, Attack { variant: Variant::NewName, percent: 50, notes: false }, 9);
    assert_eq!(moved.len(), 2);
    assert_eq!(victims.len(), 1);
    assert_eq!(moved.keys().filter(|p| t.contains_key(*p)).count(), 1);
}
