//! `make eval-signals`: how well the vault's ransomware signals (vault-core's
//! `push::signals`) tell attacks from normal nights, on generated datasets pushed night after
//! night exactly as the vault would see them (the pusher's chunking, the vault's dedup and
//! probes, the profiles it seals). Each dataset lives 30 normal nights; on copies of chosen
//! nights, ransomware encrypts 1-100% of the files four ways, each judged against the real
//! history up to that night. Prints the tables (also written to target/eval-signals.md) and
//! exits non-zero when a target is missed:
//!
//! * every attack on 10% or more of the files flagged in every trial;
//! * at least 90% of the 1% attacks flagged;
//! * no normal night of any dataset suspect.
//!
//! Ransom notes are a signal of their own; the detection table is without them, and a
//! second table shows the 1% attacks with notes dropped in every folder touched.
//!
//! `--quick` is the same on smaller datasets, fewer nights and fewer trials (`make test`).
#![forbid(unsafe_code)]

mod attack;
mod content;
mod corpus;
mod report;
mod vault;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use vault_core::push::signals::{Signal, SignalKind};

use attack::{Attack, Variant};
use content::Rand;
use corpus::{Corpus, Scale};
use vault::Dataset;

pub const PERCENTS: [u32; 4] = [1, 10, 50, 100];

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub quick: bool,
    pub scale: Scale,
    /// Trials per attack, by percent of files.
    pub trials: [u32; 4],
    pub note_trials: u32,
    /// Attacks land on nights from this one on (the baseline needs a few snapshots).
    pub first_attack_night: u32,
    pub seed: u64,
}

impl Plan {
    fn full() -> Plan {
        Plan { quick: false, scale: Scale { files: 1.0, bytes: 1.0, nights: 30 }, trials: [20, 8, 3, 3], note_trials: 5, first_attack_night: 5, seed: 20_240_601 }
    }

    fn quick() -> Plan {
        Plan { quick: true, scale: Scale { files: 1.0, bytes: 0.1, nights: 10 }, trials: [10, 2, 1, 1], note_trials: 1, first_attack_night: 4, seed: 20_240_601 }
    }
}

/// One attack trial's verdict.
#[derive(Debug, Clone)]
pub struct Trial {
    pub attack: Attack,
    pub night: u32,
    pub suspect: bool,
    pub signals: Vec<Signal>,
    /// Files encrypted, and how many of them were compressible before (the ones whose
    /// encryption the content signals can see).
    pub victims: usize,
    pub compressible_victims: usize,
}

/// One normal night's verdict.
#[derive(Debug, Clone)]
pub struct Night {
    pub night: u32,
    pub suspect: bool,
    pub signals: Vec<Signal>,
    pub files: usize,
    pub bytes: u64,
    pub bytes_new: u64,
}

pub struct CorpusResult {
    pub name: &'static str,
    pub content_visible: bool,
    pub files: usize,
    pub bytes: u64,
    pub trials: Vec<Trial>,
    pub nights: Vec<Night>,
    pub seconds: f64,
}

fn run_corpus(mut corpus: Box<dyn Corpus>, plan: &Plan, index: u64) -> CorpusResult {
    let started = Instant::now();
    let mut rng = Rand::seed_from_u64(plan.seed ^ (index << 32) ^ 0xa77a);
    let nights = plan.scale.nights;
    let mut schedule: BTreeMap<u32, Vec<(Attack, u64)>> = BTreeMap::new();
    for variant in Variant::ALL {
        for (k, percent) in PERCENTS.iter().enumerate() {
            let attack = Attack { variant, percent: *percent, notes: false };
            for _ in 0..plan.trials[k] {
                schedule.entry(rng.gen_range(plan.first_attack_night..=nights)).or_default().push((attack, rng.gen()));
            }
        }
        for _ in 0..plan.note_trials {
            let attack = Attack { variant, percent: 1, notes: true };
            schedule.entry(rng.gen_range(plan.first_attack_night..=nights)).or_default().push((attack, rng.gen()));
        }
    }
    let (files, bytes) = (corpus.tree().len(), corpus.tree().values().map(|f| f.size).sum());
    let mut dataset = Dataset::default();
    let mut trials = Vec::new();
    let mut normal = Vec::new();
    for n in 0..=nights {
        if n > 0 {
            corpus.night(n);
        }
        for (attack, seed) in schedule.remove(&n).unwrap_or_default() {
            let (attacked, victims) = attack::apply(corpus.tree(), attack, seed);
            let judged = dataset.judge(&attacked);
            let compressible_victims = victims.iter().filter(|p| vault::incompressible_percent(&corpus.tree()[*p]).is_some_and(|share| share <= 50)).count();
            trials.push(Trial { attack, night: n, suspect: judged.assessment.suspect, signals: judged.assessment.signals, victims: victims.len(), compressible_victims });
        }
        let judged = dataset.judge(corpus.tree());
        if n > 0 {
            let tree = corpus.tree();
            normal.push(Night {
                night: n,
                suspect: judged.assessment.suspect,
                signals: judged.assessment.signals.clone(),
                files: tree.len(),
                bytes: tree.values().map(|f| f.size).sum(),
                bytes_new: judged.bytes_new,
            });
        }
        dataset.seal(judged);
    }
    CorpusResult { name: corpus.name(), content_visible: corpus.content_visible(), files, bytes, trials, nights: normal, seconds: started.elapsed().as_secs_f64() }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut plan = Plan::full();
    let mut out = None;
    let mut verbose = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => plan = Plan { seed: plan.seed, ..Plan::quick() },
            "--seed" => plan.seed = it.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| usage()),
            "--out" => out = Some(it.next().cloned().unwrap_or_else(|| usage())),
            "--verbose" => verbose = true,
            _ => usage(),
        }
    }
    let out = out.unwrap_or_else(|| format!("{}/../target/eval-signals{}.md", env!("CARGO_MANIFEST_DIR"), if plan.quick { "-quick" } else { "" }));
    let started = Instant::now();
    let corpora = Mutex::new(corpus::all(plan.scale, plan.seed).into_iter().enumerate().map(Some).collect::<Vec<_>>());
    let count = corpora.lock().expect("not poisoned").len();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(count);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                let (index, corpus) = corpora.lock().expect("not poisoned")[i].take().expect("taken once");
                let result = run_corpus(corpus, &plan, index as u64);
                eprintln!("signals-eval: {} done in {:.1} s", result.name, result.seconds);
                results.lock().expect("not poisoned").push((index, result));
            });
        }
    });
    let mut results = results.into_inner().expect("not poisoned");
    results.sort_by_key(|r| r.0);
    let results: Vec<CorpusResult> = results.into_iter().map(|r| r.1).collect();
    let seconds = started.elapsed().as_secs_f64();
    let (text, missed) = report::render(&plan, &results, seconds, verbose);
    print!("{text}");
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, &text) {
        eprintln!("signals-eval: cannot write {out}: {e}");
        std::process::exit(2);
    }
    eprintln!("signals-eval: written to {out} ({seconds:.0} s)");
    if !missed.is_empty() {
        eprintln!("signals-eval: {} target(s) missed:", missed.len());
        for m in &missed {
            eprintln!("  {m}");
        }
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: signals-eval [--quick] [--seed N] [--out FILE] [--verbose]");
    std::process::exit(2)
}

/// The kinds that fired in a verdict.
pub fn kinds(signals: &[Signal]) -> BTreeSet<SignalKind> {
    signals.iter().map(|s| s.signal).collect()
}

#[cfg(test)]
mod tests;
