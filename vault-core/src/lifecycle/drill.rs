//! Restore drills: "offline backups fail silently: test quarterly". Every `every` (policy;
//! default 90 days) of vault time, while sealed, the vault restores into a null sink, for every
//! dataset, the newest snapshot and a sample of older ones picked by a random seed (recorded,
//! so the choice can be replayed): the whole tree rebuilt in order, every chunk read and
//! re-hashed, sizes and counts checked against the signed receipt. What it found is a
//! [`DrillReport`], signed by the vault key and appended to the audit log.

use serde::{Deserialize, Serialize};

use crate::keys::{hex, PublicKey, SignedDoc, SigningKey};
use crate::push::receipt::Receipt;
use crate::units::{Duration, Timestamp};

pub const DEFAULT_EVERY_DAYS: i64 = 90;
/// Older snapshots per dataset restored besides the newest, by default.
pub const DEFAULT_SAMPLE: u32 = 2;
/// The most older snapshots per dataset a policy may ask for.
pub const MAX_SAMPLE: u32 = 64;
/// Errors kept per snapshot (the count goes on), and the bytes kept of each: with
/// [`MAX_DRILL_SNAPSHOTS`], a report fits one audit log entry (64 KiB) whatever it found.
pub const MAX_ERRORS_KEPT: usize = 2;
pub const MAX_ERROR_BYTES: usize = 200;
/// Snapshots one drill restores at most; past that, a seeded choice among those due, so that
/// drill after drill covers every dataset.
pub const MAX_DRILL_SNAPSHOTS: usize = 48;
const REPORT_CONTEXT: &str = "airgap-vault/drill-report/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drill {
    pub every: Duration,
    pub sample: u32,
}

impl Default for Drill {
    fn default() -> Self {
        Drill { every: Duration::from_secs(DEFAULT_EVERY_DAYS * 86_400).expect("90 days is a duration"), sample: DEFAULT_SAMPLE }
    }
}

/// A sealed snapshot as the drill chooses among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub pusher: String,
    pub dataset: String,
    pub received_at: Timestamp,
}

/// The snapshots a drill restores: for every (pusher, dataset), the newest and `sample` of the
/// older ones, picked by `seed` (the same seed and snapshots give the same choice). Oldest first.
pub fn choose(candidates: &[Candidate], sample: u32, seed: &[u8; 32]) -> Vec<String> {
    let mut by_dataset: std::collections::BTreeMap<(&str, &str), Vec<&Candidate>> = std::collections::BTreeMap::new();
    for c in candidates {
        by_dataset.entry((&c.pusher, &c.dataset)).or_default().push(c);
    }
    let mut chosen: Vec<&Candidate> = Vec::new();
    for ((pusher, dataset), mut list) in by_dataset {
        list.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
        let newest = list.pop().expect("a dataset has a snapshot");
        chosen.push(newest);
        // A partial Fisher-Yates shuffle of the older ones, driven by the seed.
        for round in 0..usize::try_from(sample).unwrap_or(usize::MAX).min(list.len()) {
            let mut input = Vec::with_capacity(64);
            input.extend_from_slice(seed);
            input.extend_from_slice(format!("{pusher}\n{dataset}\n{round}").as_bytes());
            let digest = ring::digest::digest(&ring::digest::SHA256, &input);
            let draw = u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"));
            let remaining = list.len() - round;
            let pick = round + usize::try_from(draw % remaining as u64).expect("below a usize length");
            list.swap(round, pick);
            chosen.push(list[round]);
        }
    }
    if chosen.len() > MAX_DRILL_SNAPSHOTS {
        chosen.sort_by_cached_key(|c| {
            let mut input = seed.to_vec();
            input.extend_from_slice(c.id.as_bytes());
            ring::digest::digest(&ring::digest::SHA256, &input).as_ref().to_vec()
        });
        chosen.truncate(MAX_DRILL_SNAPSHOTS);
    }
    chosen.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    chosen.into_iter().map(|c| c.id.clone()).collect()
}

/// When the next drill is due: at once if none ever ran.
pub fn next_due(last: Option<Timestamp>, drill: Drill) -> Option<Timestamp> {
    crate::lifecycle::scrub::next_after(last, drill.every)
}

pub fn is_due(last: Option<Timestamp>, drill: Drill, now: Timestamp) -> bool {
    next_due(last, drill).is_none_or(|due| now >= due)
}

/// A drill is overdue (an alarm) a week past its due time: the vault was never sealed long
/// enough, or drills keep failing to finish.
pub fn is_overdue(last: Option<Timestamp>, drill: Drill, since: Timestamp, now: Timestamp) -> bool {
    let due = next_due(last, drill).unwrap_or(since);
    now.secs_since(due) > 7 * 86_400
}

/// What restoring one snapshot into the null sink found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotDrill {
    pub snapshot: String,
    pub dataset: String,
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    /// What went wrong (each names the path and chunk), the first [`MAX_ERRORS_KEPT`] of them.
    pub errors: Vec<String>,
    pub error_count: u64,
}

impl SnapshotDrill {
    pub fn new(snapshot: &str, dataset: &str) -> SnapshotDrill {
        SnapshotDrill { snapshot: snapshot.to_string(), dataset: dataset.to_string(), files: 0, bytes: 0, chunks: 0, errors: Vec::new(), error_count: 0 }
    }

    pub fn error(&mut self, what: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS_KEPT {
            let mut end = what.len().min(MAX_ERROR_BYTES);
            while !what.is_char_boundary(end) {
                end -= 1;
            }
            self.errors.push(what[..end].to_string());
        }
    }

    /// The rebuilt tree against what the receipt signed: files, bytes and chunks.
    pub fn check_against(&mut self, receipt: &Receipt) {
        for (what, rebuilt, signed) in [("files", self.files, receipt.files), ("bytes", self.bytes, receipt.logical_bytes), ("chunks", self.chunks, receipt.chunks_total)] {
            if rebuilt != signed {
                self.error(format!("{what}: {rebuilt} rebuilt, the receipt signs {signed}"));
            }
        }
    }
}

/// A drill's report, as signed and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillReport {
    pub vault_key: String,
    pub started: String,
    pub took_ms: u64,
    /// Hex of the seed that chose the sample.
    pub seed: String,
    pub snapshots: Vec<SnapshotDrill>,
    pub files: u64,
    pub bytes: u64,
    pub errors: u64,
    /// The restore rate the drill implies, bytes per second (the RTO's measure).
    pub bytes_per_sec: u64,
    /// Set when the vault's window opened mid-drill: what was not reached is not verified.
    pub stopped_early: bool,
}

impl DrillReport {
    pub fn new(vault_key: &PublicKey, started: Timestamp, took: std::time::Duration, seed: &[u8; 32], snapshots: Vec<SnapshotDrill>, stopped_early: bool) -> DrillReport {
        let total = |of: fn(&SnapshotDrill) -> u64| snapshots.iter().map(of).fold(0u64, u64::saturating_add);
        let (files, bytes, errors) = (total(|s| s.files), total(|s| s.bytes), total(|s| s.error_count));
        let millis = u64::try_from(took.as_millis()).unwrap_or(u64::MAX).max(1);
        DrillReport {
            vault_key: vault_key.to_string(),
            started: started.to_string(),
            took_ms: millis,
            seed: hex(seed),
            snapshots,
            files,
            bytes,
            errors,
            bytes_per_sec: bytes.saturating_mul(1000) / millis,
            stopped_early,
        }
    }

    /// Zero errors, and nothing left out.
    pub fn passed(&self) -> bool {
        self.errors == 0 && !self.stopped_early
    }

    /// One line: what was restored and what was found.
    pub fn summary(&self) -> String {
        let verdict = if self.errors == 0 { "no errors".to_string() } else { format!("{} errors", self.errors) };
        let early = if self.stopped_early { " (stopped early: a window opened)" } else { "" };
        format!("{} snapshots, {} files, {} bytes restored into the null sink at {} bytes/s: {verdict}{early}", self.snapshots.len(), self.files, self.bytes, self.bytes_per_sec)
    }

    /// The canonical bytes that are signed, and the signature.
    pub fn sign(&self, key: &SigningKey) -> SignedDoc {
        SignedDoc::sign(self, key, REPORT_CONTEXT)
    }

    /// Checks a signed report against the vault key, then decodes it.
    pub fn verify(signed: &SignedDoc, vault_key: &PublicKey) -> crate::error::Result<DrillReport> {
        signed.verify(vault_key, REPORT_CONTEXT, "drill report")
    }
}

/// The last drill that covered a snapshot: when it started, and whether it found that snapshot
/// whole (zero errors). Only such a drill makes a snapshot "verified by a drill".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastDrill {
    pub started: Timestamp,
    pub clean: bool,
}

/// The signed drill report in an audit log entry, if the entry is a `drill_finished` line:
/// `Some(Err)` when it is one whose report does not verify under `vault_key`.
pub fn report_in_log_entry(entry: &[u8], vault_key: &PublicKey) -> Option<crate::error::Result<DrillReport>> {
    #[derive(Deserialize)]
    struct Line {
        event: String,
        report: Option<String>,
        signature: Option<String>,
    }
    let line: Line = serde_json::from_slice(entry).ok()?;
    if line.event != "drill_finished" {
        return None;
    }
    let (Some(report), Some(signature)) = (line.report, line.signature) else {
        return Some(Err(crate::error::invalid("drill_finished", "a drill entry without its signed report")));
    };
    Some(DrillReport::verify(&SignedDoc { body: report, signature }, vault_key))
}

/// For every snapshot some report covered, the last drill that did (reports in any order).
pub fn last_drills(reports: &[DrillReport]) -> std::collections::BTreeMap<String, LastDrill> {
    let mut last: std::collections::BTreeMap<String, LastDrill> = std::collections::BTreeMap::new();
    for report in reports {
        let Ok(started) = Timestamp::parse(&report.started) else { continue };
        for s in &report.snapshots {
            if last.get(&s.snapshot).is_none_or(|l| l.started <= started) {
                last.insert(s.snapshot.clone(), LastDrill { started, clean: s.error_count == 0 });
            }
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::test_keys::key;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix(1_800_000_000 + secs).unwrap()
    }

    fn candidates() -> Vec<Candidate> {
        let mut list = Vec::new();
        for (pusher, dataset, count) in [("db-backup", "pgdump", 10), ("db-backup", "etc", 1), ("web", "site", 3)] {
            for n in 0..count {
                list.push(Candidate { id: format!("{n:02}-{dataset}"), pusher: pusher.into(), dataset: dataset.into(), received_at: at(n * 86_400) });
            }
        }
        list
    }

    #[test]
    fn a_drill_takes_every_datasets_newest_and_a_seeded_sample_of_the_older_ones() {
        let list = candidates();
        let chosen = choose(&list, 2, &[7; 32]);
        for newest in ["09-pgdump", "00-etc", "02-site"] {
            assert!(chosen.contains(&newest.to_string()), "{chosen:?}");
        }
        assert_eq!(chosen.len(), 3 + 2 + 2, "{chosen:?}");
        assert_eq!(chosen, choose(&list, 2, &[7; 32]), "the seed replays the choice");
        let others: std::collections::BTreeSet<Vec<String>> = (0..16u8).map(|s| choose(&list, 2, &[s; 32])).collect();
        assert!(others.len() > 4, "different seeds pick different samples: {others:?}");
        assert_eq!(choose(&list, 0, &[7; 32]).len(), 3);
        assert_eq!(choose(&list, 100, &[7; 32]).len(), list.len(), "a sample larger than the history takes all of it");
        let many: Vec<Candidate> = (0..200).map(|n| Candidate { id: format!("{n:03}"), pusher: "p".into(), dataset: format!("d{n}"), received_at: at(n) }).collect();
        let some = choose(&many, 2, &[1; 32]);
        assert_eq!(some.len(), MAX_DRILL_SNAPSHOTS, "a drill is bounded");
        assert_ne!(some, choose(&many, 2, &[2; 32]), "and another seed covers other datasets");
        let mut sorted = chosen.clone();
        sorted.sort_by_key(|id| list.iter().find(|c| &c.id == id).unwrap().received_at);
        assert_eq!(chosen, sorted, "oldest first");
    }

    #[test]
    fn the_largest_report_a_drill_can_make_fits_one_audit_log_entry() {
        let vault = key(70);
        let snapshots = (0..MAX_DRILL_SNAPSHOTS)
            .map(|n| {
                let mut s = SnapshotDrill::new(&format!("{n:0>64}"), &"d".repeat(crate::push::receipt::MAX_DATASET_BYTES));
                (s.files, s.bytes, s.chunks) = (u64::MAX, u64::MAX, u64::MAX);
                for _ in 0..100 {
                    s.error("\"é\\".repeat(500));
                }
                s
            })
            .collect();
        let report = DrillReport::new(&vault.public_key(), at(0), std::time::Duration::from_secs(u64::MAX / 2000), &[0xff; 32], snapshots, true);
        assert!(report.snapshots.iter().all(|s| s.errors.len() == MAX_ERRORS_KEPT && s.errors.iter().all(|e| e.len() <= MAX_ERROR_BYTES) && s.error_count == 100));
        let signed = report.sign(&vault);
        let line = serde_json::json!({ "event": "drill_finished", "time": "2026-12-01T00:00:00Z", "seq": u64::MAX, "report": signed.body, "signature": signed.signature, "snapshots": report.snapshots.iter().map(|s| s.snapshot.clone()).collect::<Vec<_>>() }).to_string();
        assert!(line.len() < crate::audit::tiles::MAX_ENTRY_BYTES, "{} bytes", line.len());
    }

    #[test]
    fn drills_fall_due_every_ninety_days_and_are_overdue_a_week_later() {
        let drill = Drill::default();
        assert!(is_due(None, drill, at(0)));
        assert!(!is_due(Some(at(0)), drill, at(89 * 86_400)));
        assert!(is_due(Some(at(0)), drill, at(90 * 86_400)));
        assert!(!is_overdue(Some(at(0)), drill, at(0), at(96 * 86_400)));
        assert!(is_overdue(Some(at(0)), drill, at(0), at(98 * 86_400)));
        assert!(!is_overdue(None, drill, at(0), at(6 * 86_400)), "a new vault has a week for its first drill");
        assert!(is_overdue(None, drill, at(0), at(8 * 86_400)));
    }

    #[test]
    fn a_report_counts_what_it_found_and_its_signature_binds_it() {
        let vault = key(70);
        let receipt = Receipt {
            vault_id: "v".into(),
            vault_key: vault.public_key(),
            policy_version: 1,
            snapshot_id: "s".into(),
            dataset: "d".into(),
            pusher: "p".into(),
            manifest_sha256: "00".repeat(32),
            files: 2,
            logical_bytes: 100,
            chunks_total: 3,
            chunks_new: 3,
            bytes_new: 100,
            received_at: at(0),
            retain_until: at(1),
            client_time: 0,
            suspect: false,
            signals: Vec::new(),
        };
        let mut clean = SnapshotDrill::new("s", "d");
        (clean.files, clean.bytes, clean.chunks) = (2, 100, 3);
        clean.check_against(&receipt);
        assert!(clean.errors.is_empty());
        let mut short = SnapshotDrill::new("s", "d");
        (short.files, short.bytes, short.chunks) = (2, 99, 3);
        short.error("chunk 00ff of a/b: reads back as 0011".into());
        short.check_against(&receipt);
        assert_eq!(short.error_count, 2);
        assert!(short.errors[1].contains("bytes: 99 rebuilt, the receipt signs 100"), "{:?}", short.errors);

        let report = DrillReport::new(&vault.public_key(), at(0), std::time::Duration::from_millis(500), &[1; 32], vec![clean, short], false);
        assert_eq!((report.files, report.bytes, report.errors, report.bytes_per_sec), (4, 199, 2, 398));
        assert!(!report.passed());
        assert!(report.summary().contains("2 errors"), "{}", report.summary());
        let signed = report.sign(&vault);
        assert_eq!(DrillReport::verify(&signed, &vault.public_key()).unwrap(), report);
        let altered = SignedDoc { body: signed.body.replace("\"errors\":2", "\"errors\":0"), ..signed.clone() };
        assert!(DrillReport::verify(&altered, &vault.public_key()).is_err());
        assert!(DrillReport::verify(&signed, &key(71).public_key()).is_err());

        // As the audit log holds it: found, verified, and the last drill per snapshot kept.
        let line = serde_json::json!({ "event": "drill_finished", "report": signed.body, "signature": signed.signature }).to_string();
        assert_eq!(report_in_log_entry(line.as_bytes(), &vault.public_key()).unwrap().unwrap(), report);
        assert!(report_in_log_entry(line.as_bytes(), &key(71).public_key()).unwrap().is_err());
        assert!(report_in_log_entry(br#"{"event":"committed"}"#, &vault.public_key()).is_none());
        let mut later = report.clone();
        later.started = at(86_400).to_string();
        later.snapshots[1].error_count = 0;
        let last = last_drills(&[later, report]);
        assert_eq!(last["s"], LastDrill { started: at(86_400), clean: true }, "the later drill counts, in any order");
    }
}
