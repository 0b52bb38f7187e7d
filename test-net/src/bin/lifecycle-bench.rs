//! `lifecycle-bench DIR SNAPSHOTS CHUNKS_PER_SNAPSHOT CHUNK_BYTES`: see
//! `test_net::lifecycle_bench`. Prints one line per measure and the ratio against sha256sum.
#![forbid(unsafe_code)]

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: usize| args.get(i).map_or(default, |a| a.parse().expect("a number"));
    let dir = std::path::PathBuf::from(args.get(1).cloned().unwrap_or_else(|| "/var/tmp/vault-lifecycle-bench".into()));
    // A store left by an earlier run (its sealed files immutable) is removed first.
    if dir.exists() {
        let _ = std::process::Command::new("chattr").args(["-R", "-i"]).arg(&dir).status();
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).expect("the bench directory");
    let m = test_net::lifecycle_bench::run(&dir, number(2, 1000), number(3, 1000), number(4, 1024), true);
    let mb = |secs: f64| m.pack_bytes as f64 / secs / 1e6;
    println!("lifecycle: {} snapshots, {} chunks, {:.1} MiB of packs (sealed in {:.1} s)", m.snapshots, m.chunks, m.pack_bytes as f64 / 1048576.0, m.seal_secs);
    println!("scrub                {:7.2} s  {:7.1} MB/s", m.scrub_secs, mb(m.scrub_secs));
    println!("sha256sum            {:7.2} s  {:7.1} MB/s", m.sha256sum_secs, mb(m.sha256sum_secs));
    println!("restore drill        {:7.2} s  {:7.1} MB/s rebuilt ({:.1} MiB, every snapshot)", m.drill_secs, m.drill_bytes as f64 / m.drill_secs / 1e6, m.drill_bytes as f64 / 1048576.0);
    println!("audit log            {:7.2} s  {:7.0} entries/s ({} entries, a signed checkpoint per 4096)", m.audit_secs, m.audit_entries as f64 / m.audit_secs, m.audit_entries);
    println!("small pushes sealed  {:7.0} /s without the log, {:.0} /s with their ten lines logged and signed", m.seals_per_sec_unlogged, m.seals_per_sec_logged);
    println!("expire half          {:7.2} s", m.expire_secs);
    println!(
        "garbage collection   {:7.2} s  ({} packs removed, {} of them repacked: {} chunks copied; {:.1} MiB freed)",
        m.gc_secs,
        m.packs_removed,
        m.packs_repacked,
        m.chunks_copied,
        m.bytes_freed as f64 / 1048576.0
    );
    println!("RATIO scrub / sha256sum rate            {:.2}x", m.sha256sum_secs / m.scrub_secs);
    println!("RATIO logged / unlogged seal rate       {:.2}x   (the audit log's cost per push)", m.seals_per_sec_logged / m.seals_per_sec_unlogged);
    println!("RATIO drill / sha256sum rate            {:.2}x   (drill bytes / s over sha256sum's pack bytes / s)", (m.drill_bytes as f64 / m.drill_secs) / (m.pack_bytes as f64 / m.sha256sum_secs));
    let _ = std::process::Command::new("chattr").args(["-R", "-i"]).arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
}
