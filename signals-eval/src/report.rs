//! The tables, and the targets checked against them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vault_core::push::signals::SignalKind;

use crate::attack::Variant;
use crate::{kinds, CorpusResult, Plan, PERCENTS};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The signals that fired in `trials`, most often first: `name n/N`.
fn most_fired<'a>(verdicts: impl Iterator<Item = &'a [vault_core::push::signals::Signal]>, limit: usize) -> String {
    let mut counts: BTreeMap<SignalKind, u32> = BTreeMap::new();
    let mut total = 0;
    for signals in verdicts {
        total += 1;
        for k in kinds(signals) {
            *counts.entry(k).or_default() += 1;
        }
    }
    let mut v: Vec<(SignalKind, u32)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if v.is_empty() {
        return "none".into();
    }
    v.iter().take(limit).map(|(k, n)| format!("{} {n}/{total}", k.name())).collect::<Vec<_>>().join(", ")
}

/// The report, and the targets it misses.
pub fn render(plan: &Plan, results: &[CorpusResult], seconds: f64, verbose: bool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missed = Vec::new();
    let s = &plan.scale;
    let _ = writeln!(out, "# Ransomware signals: evaluation ({})\n", if plan.quick { "quick" } else { "full" });
    let _ = writeln!(
        out,
        "{} normal nights per dataset; attacks on copies of nights {}-{}, judged against the real history up to then. Seed {}. {:.0} s.\n",
        s.nights, plan.first_attack_night, s.nights, plan.seed, seconds
    );
    let _ = writeln!(out, "| dataset | files (night 0) | MiB (night 0) | nights | attack trials | time |\n|---|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(out, "| {} | {} | {:.0} | {} | {} | {:.0} s |", r.name, r.files, mib(r.bytes), r.nights.len(), r.trials.len(), r.seconds);
    }

    let _ = writeln!(out, "\n## Summary: attacks flagged (trials flagged / trials), without ransom notes\n");
    let _ = writeln!(out, "| dataset | attack | 1% of files | 10% | 50% | 100% |\n|---|---|---:|---:|---:|---:|");
    for r in results {
        for variant in Variant::ALL {
            let cells: Vec<String> = PERCENTS
                .iter()
                .map(|p| {
                    let trials: Vec<_> = r.trials.iter().filter(|t| !t.attack.notes && t.attack.variant == variant && t.attack.percent == *p).collect();
                    format!("{}/{}", trials.iter().filter(|t| t.suspect).count(), trials.len())
                })
                .collect();
            let name = if r.content_visible { r.name.to_string() } else { format!("{} (rates only)", r.name) };
            let _ = writeln!(out, "| {name} | {} | {} |", variant.label(), cells.join(" | "));
        }
    }

    let _ = writeln!(out, "\n## Detection, without ransom notes\n");
    let _ = writeln!(out, "Flagged = the snapshot is suspect. Targets: every attack on 10% or more of the files flagged in every trial, at least 90% of the 1% attacks flagged (on the datasets whose content the probe can see; a restic repository is encrypted already and is judged by its rates alone).\n");
    let _ = writeln!(out, "| dataset | attack | files encrypted | of them compressible (median) | trials | flagged | rate | signals that fired (trials) |\n|---|---|---:|---:|---:|---:|---:|---|");
    for r in results {
        for variant in Variant::ALL {
            for percent in PERCENTS {
                let trials: Vec<_> = r.trials.iter().filter(|t| !t.attack.notes && t.attack.variant == variant && t.attack.percent == percent).collect();
                if trials.is_empty() {
                    continue;
                }
                let flagged = trials.iter().filter(|t| t.suspect).count();
                let rate = flagged as f64 / trials.len() as f64;
                let fired = most_fired(trials.iter().map(|t| t.signals.as_slice()), 3);
                let target = if !r.content_visible {
                    ""
                } else if percent >= 10 && flagged < trials.len() {
                    missed.push(format!("{}: {} {percent}%: {flagged}/{} flagged, target all", r.name, variant.label(), trials.len()));
                    " **(target: all)**"
                } else if percent < 10 && rate < 0.9 {
                    missed.push(format!("{}: {} {percent}%: {flagged}/{} flagged, target 90%", r.name, variant.label(), trials.len()));
                    " **(target: 90%)**"
                } else {
                    ""
                };
                let name = if r.content_visible { r.name.to_string() } else { format!("{} (rates only)", r.name) };
                let mut victims: Vec<(usize, usize)> = trials.iter().map(|t| (t.compressible_victims, t.victims)).collect();
                victims.sort_unstable();
                let (compressible, of) = victims[victims.len() / 2];
                let _ = writeln!(out, "| {name} | {} | {percent}% ({of}) | {compressible} | {} | {flagged} | {:.0}%{target} | {fired} |", variant.label(), trials.len(), rate * 100.0);
                if verbose {
                    for t in trials.iter().filter(|t| !t.suspect) {
                        let _ = writeln!(
                            out,
                            "|  | missed on night {} | {} | {} |  |  |  | {} |",
                            t.night,
                            t.victims,
                            t.compressible_victims,
                            t.signals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                        );
                    }
                }
            }
        }
    }

    let _ = writeln!(out, "\n## The 1% attacks with ransom notes\n");
    let _ = writeln!(out, "The same attacks, a note (typical wording) dropped in every folder touched.\n");
    let _ = writeln!(out, "| dataset | attack | trials | flagged | ransom_note fired | signals that fired (trials) |\n|---|---|---:|---:|---:|---|");
    for r in results {
        for variant in Variant::ALL {
            let trials: Vec<_> = r.trials.iter().filter(|t| t.attack.notes && t.attack.variant == variant).collect();
            if trials.is_empty() {
                continue;
            }
            let flagged = trials.iter().filter(|t| t.suspect).count();
            let notes = trials.iter().filter(|t| kinds(&t.signals).contains(&SignalKind::RansomNote)).count();
            let _ = writeln!(out, "| {} | {} 1% | {} | {flagged} | {notes} | {} |", r.name, variant.label(), trials.len(), most_fired(trials.iter().map(|t| t.signals.as_slice()), 3));
        }
    }

    let _ = writeln!(out, "\n## False alarms on normal nights\n");
    let _ = writeln!(out, "Target: no suspect night. Weak signals need a second one to make a night suspect; those that fired alone are listed with the nights they fired on.\n");
    let _ = writeln!(out, "| dataset | nights | suspect nights | strong signals | weak signals that fired alone (nights) | new bytes per night (median) |\n|---|---:|---:|---|---|---:|");
    for r in results {
        let suspect: Vec<_> = r.nights.iter().filter(|n| n.suspect).collect();
        let strong = most_fired(r.nights.iter().map(|n| n.signals.as_slice()).filter(|s| s.iter().any(|x| x.signal.is_strong())), 4);
        let mut alone: BTreeMap<SignalKind, Vec<u32>> = BTreeMap::new();
        for n in r.nights.iter().filter(|n| !n.suspect) {
            for k in kinds(&n.signals) {
                alone.entry(k).or_default().push(n.night);
            }
        }
        let alone = if alone.is_empty() {
            "none".to_string()
        } else {
            alone.iter().map(|(k, nights)| format!("{} ({})", k.name(), nights.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join("; ")
        };
        let mut new_bytes: Vec<u64> = r.nights.iter().map(|n| n.bytes_new).collect();
        new_bytes.sort_unstable();
        let median = new_bytes.get(new_bytes.len() / 2).copied().unwrap_or(0);
        let _ = writeln!(out, "| {} | {} | {} | {} | {} | {:.1} MiB |", r.name, r.nights.len(), suspect.len(), if strong == "none" { "none".into() } else { strong }, alone, mib(median));
        for n in &suspect {
            missed.push(format!("{}: normal night {} suspect: {}", r.name, n.night, n.signals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")));
        }
    }
    let suspect_nights: Vec<String> = results
        .iter()
        .flat_map(|r| r.nights.iter().filter(|n| n.suspect || (verbose && !n.signals.is_empty())).map(move |n| (r.name, n)))
        .map(|(name, n)| format!("- {name}, night {}{}: {}", n.night, if n.suspect { " (suspect)" } else { "" }, n.signals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")))
        .collect();
    if !suspect_nights.is_empty() {
        let _ = writeln!(out, "\n{}", suspect_nights.join("\n"));
    }
    let _ = writeln!(out, "\n{}\n", if missed.is_empty() { "All targets met.".to_string() } else { format!("{} target(s) missed.", missed.len()) });
    (out, missed)
}
