//! The privilege split, seen from outside the daemon (issue 14, item 5): what holds the vault's
//! listener and reads what pushers send is a process of its own uid with no capabilities and
//! no filesystem, and a worker that cannot be confined never serves. Needs root.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use support::*;

/// The `Key:` line of /proc/<pid>/status, split into its fields.
fn status_field(pid: u32, key: &str) -> Vec<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(&format!("{key}:"))).unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line[key.len() + 1..].split_whitespace().map(str::to_string).collect()
}

/// The socket inodes a process holds, by descriptor number.
fn socket_inodes(pid: u32) -> Vec<(u32, u64)> {
    let mut held = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.display().to_string();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            held.push((entry.file_name().to_string_lossy().parse().unwrap(), inode.parse().unwrap()));
        }
    }
    held
}

/// The inode of the TCP socket listening on `port`, as the process's network namespace shows it.
fn listening_inode(pid: u32, port: u16) -> u64 {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(fields[1].rsplit(':').next().unwrap(), 16).unwrap();
        // State 0A is LISTEN.
        if local_port == port && fields[3] == "0A" {
            return fields[9].parse().unwrap();
        }
    }
    panic!("nothing listens on port {port}:\n{table}");
}

#[test]
fn what_reads_pushers_runs_as_its_own_uid_without_capabilities_or_files_and_still_serves() {
    let net = Net::new("privsep");
    let start = unix_now_secs_ceil();
    let vault = Vault::build(VaultSpec { window: (start + 2, start + 60), pushers: vec![("db", "1GiB")], early: false, grace: "2s", datasets: vec![] });
    let daemon = Daemon::start(&net, &vault);
    daemon.wait_for("listening", 10.0);
    let (_, started) = daemon.wait_for("session_worker_started", 10.0);
    let worker = u32::try_from(started["pid"].as_u64().unwrap()).unwrap();

    // Its own uid and gid (real, effective, saved, filesystem), no groups, no capabilities.
    assert_eq!(status_field(worker, "Uid"), vec!["64010"; 4]);
    assert_eq!(status_field(worker, "Gid"), vec!["64010"; 4]);
    assert!(status_field(worker, "Groups").is_empty());
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(worker, set), vec!["0000000000000000"], "{set}");
    }
    assert_eq!(status_field(worker, "NoNewPrivs"), vec!["1"]);
    // Its root is an empty directory that no longer exists: no /dev, /proc, /data to open.
    let root = std::fs::read_link(format!("/proc/{worker}/root")).unwrap().display().to_string();
    assert!(root.contains("vault-session-jail") && root.ends_with("(deleted)"), "{root}");
    // No core dumps, no file writes.
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    for limit in ["Max core file size", "Max file size"] {
        let line = limits.lines().find(|l| l.starts_with(limit)).unwrap();
        assert_eq!(line.split_whitespace().rev().nth(1), Some("0"), "{line}");
    }
    // No fork, no further thread: nothing of it can outlive the kill at the window's end.
    let processes = limits.lines().find(|l| l.starts_with("Max processes")).unwrap();
    assert_eq!(processes.split_whitespace().nth(2), Some("1"), "{processes}");
    assert_eq!(std::fs::read_to_string(format!("/proc/{worker}/oom_score_adj")).unwrap().trim(), "1000");
    // Nothing of the daemon's leaked in: no netlink socket (a root one would let it change
    // links), no packet socket, no file; its descriptors past the standard three are the three
    // the daemon handed over and the worker's own (its runtime's epoll and eventfd, sockets).
    let netlink_or_packet: BTreeSet<u64> = ["netlink", "packet"]
        .iter()
        .flat_map(|table| std::fs::read_to_string(format!("/proc/{worker}/net/{table}")).unwrap().lines().skip(1).filter_map(|l| l.split_whitespace().last()?.parse().ok()).collect::<Vec<u64>>())
        .collect();
    let held = socket_inodes(worker);
    assert!(held.iter().all(|(_, inode)| !netlink_or_packet.contains(inode)), "the worker holds a netlink or packet socket: {held:?}");
    for entry in std::fs::read_dir(format!("/proc/{worker}/fd")).unwrap().flatten() {
        let fd: u32 = entry.file_name().to_string_lossy().parse().unwrap();
        let target = std::fs::read_link(entry.path()).unwrap().display().to_string();
        let own = target.starts_with("socket:[") || target.starts_with("anon_inode:") || target.starts_with("pipe:[");
        assert!(fd <= 2 || own, "fd {fd} of the worker is {target}");
    }
    assert_eq!(held.iter().filter(|(fd, _)| (3..=5).contains(fd)).count(), 3, "{held:?}");

    // The listener is the worker's alone: the daemon (still root) holds no socket of it.
    let daemon_pid: u32 = status_field(worker, "PPid")[0].parse().unwrap();
    assert_eq!(status_field(daemon_pid, "Uid")[0], "0");
    let listener = listening_inode(worker, 7400);
    assert!(socket_inodes(worker).contains(&(5, listener)), "{:?}", socket_inodes(worker));
    assert!(!socket_inodes(daemon_pid).iter().any(|(_, inode)| *inode == listener), "the daemon holds the listener too");

    // And through it, a push is sealed as before.
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"pushed through the unprivileged worker\n").unwrap();
    let pushed = vaultctl_push(&net, &vault, "db", "db", &tree, work.path());
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    daemon.wait_for("snapshot_sealed", 10.0);
}

#[test]
fn a_worker_that_cannot_confine_itself_never_serves_and_the_window_closes() {
    let net = Net::new("privfail");
    let start = unix_now_secs_ceil();
    let vault = Vault::build(VaultSpec { window: (start + 2, start + 60), pushers: vec![("db", "1GiB")], early: false, grace: "2s", datasets: vec![] });
    let nowhere = tempfile::tempdir().unwrap();
    let missing = nowhere.path().join("no-such-directory");
    let daemon = Daemon::start_with(&net, &vault, &["--session-jail-parent", missing.to_str().unwrap()]);
    let (_, alarm) = daemon.wait_for_matching(|e| e["event"] == "alarm" && e["rule"] == "link_up_failed", 15.0);
    let detail = alarm["detail"].as_str().unwrap();
    // The worker said why over the relay (it has no console of its own).
    assert!(detail.contains("session server: session worker: it could not confine itself: session worker confinement, open the jail's parent directory"), "{detail}");
    let (_, down) = daemon.wait_for_matching(|e| e["event"] == "link_down" && e["why"] == "gate", 10.0);
    assert_eq!(down["confirmation"]["admin_up"], false, "{down}");
    assert_eq!(daemon.count_after(0, "session_worker_started"), 0);
    assert!(!Path::new(&missing).exists());
    // A pusher gets no session: nothing but the worker would ever have served it.
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"x").unwrap();
    let pushed = vaultctl_push_command(&net, &vault.identity(), &vault.pusher_key("db"), "db", &tree, work.path()).args(["--connect-timeout-secs", "2"]).output().unwrap();
    assert!(!pushed.status.success());
    assert_eq!(daemon.count_after(0, "session_accepted"), 0);
    let events = daemon.stop();
    assert!(!events.iter().any(|e| e["event"] == "snapshot_sealed"));
}
