//! The air gap on a real kernel: the gatekeeper binary in one network namespace owning one
//! end of a veth pair, the test in another. Addresses only from 192.0.2.0/24 (TEST-NET-1).
//! Needs root (network namespaces); `make test` runs as root.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};

use pnet_datalink::{Channel, Config};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use vault_core::bundle::{Envelope, Payload};
use vault_core::egress::{classify, EgressRule, Verdict};
use vault_core::keys::SigningKey;
use vault_core::policy::Policy;
use vault_core::root::{Admin, Caps, TrustRoot};
use vault_core::state::VaultState;
use vault_core::units::Timestamp;

const VAULT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Two namespaces and a veth between them; deleted on drop, even when the test fails.
struct Net {
    vault_ns: String,
    peer_ns: String,
}

impl Net {
    fn new(tag: &str) -> Net {
        assert!(nix_is_root(), "these tests create network namespaces and must run as root");
        let id = format!("{tag}-{}", std::process::id());
        let net = Net { vault_ns: format!("gk5v-{id}"), peer_ns: format!("gk5p-{id}") };
        sh(&["ip", "netns", "add", &net.vault_ns]);
        sh(&["ip", "netns", "add", &net.peer_ns]);
        sh(&["ip", "-n", &net.peer_ns, "link", "add", "tp0", "type", "veth", "peer", "name", "vault0", "netns", &net.vault_ns]);
        // The peer side: quiet too, so the capture only holds what the test sends and the vault says.
        sh(&["ip", "netns", "exec", &net.peer_ns, "sysctl", "-qw", "net.ipv6.conf.tp0.disable_ipv6=1"]);
        sh(&["ip", "-n", &net.peer_ns, "addr", "add", "192.0.2.1/24", "dev", "tp0"]);
        sh(&["ip", "-n", &net.peer_ns, "link", "set", "tp0", "up"]);
        net
    }

    fn link_json(&self) -> serde_json::Value {
        let out = Command::new("ip").args(["-n", &self.vault_ns, "-j", "addr", "show", "vault0"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
    }

    fn vault_mac(&self) -> [u8; 6] {
        let text = self.link_json()["address"].as_str().unwrap().to_string();
        let mut mac = [0u8; 6];
        for (b, part) in mac.iter_mut().zip(text.split(':')) {
            *b = u8::from_str_radix(part, 16).unwrap();
        }
        mac
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.vault_ns]).status();
        let _ = Command::new("ip").args(["netns", "del", &self.peer_ns]).status();
    }
}

fn nix_is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false)
}

/// Runs `f` on a thread inside the namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A frame the peer side received, with its arrival time (Unix seconds).
#[derive(Clone)]
struct Seen {
    at: f64,
    frame: Vec<u8>,
}

/// From the peer namespace: an ARP request for the vault address every 50 ms, and a capture
/// of every frame that arrives on tp0 (everything the vault side sends).
struct Prober {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Seen>>>,
    probes: Arc<Mutex<Vec<f64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(net: &Net) -> Prober {
        let (stop, frames, probes) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (s, f, p) = (stop.clone(), frames.clone(), probes.clone());
        let thread = in_netns(&net.peer_ns, move || {
            let iface = pnet_datalink::interfaces().into_iter().find(|i| i.name == "tp0").unwrap();
            let our_mac = iface.mac.unwrap().octets();
            let config = Config { read_timeout: Some(StdDuration::from_millis(5)), promiscuous: false, ..Config::default() };
            let Ok(Channel::Ethernet(mut tx, mut rx)) = pnet_datalink::channel(&iface, config) else { panic!("no channel") };
            let mut next_probe = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if Instant::now() >= next_probe {
                    // While the vault side is down the veth has no carrier and the kernel refuses
                    // the frame (ENOBUFS): that probe simply goes unanswered.
                    let _ = tx.send_to(&arp_request(our_mac), None);
                    p.lock().unwrap().push(unix_now());
                    next_probe += StdDuration::from_millis(50);
                }
                if let Ok(frame) = rx.next() {
                    if frame.get(6..12) != Some(&our_mac[..]) {
                        f.lock().unwrap().push(Seen { at: unix_now(), frame: frame.to_vec() });
                    }
                }
            }
        });
        Prober { stop, frames, probes, thread: Some(thread) }
    }

    fn finish(mut self) -> (Vec<Seen>, Vec<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (self.frames.lock().unwrap().clone(), self.probes.lock().unwrap().clone())
    }
}

fn arp_request(src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&PEER_IP.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&VAULT_IP.octets());
    f
}

fn is_arp_reply(frame: &[u8]) -> bool {
    frame.len() >= 22 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2]
}

// ---- the vault's files ----------------------------------------------------------------

fn new_key() -> SigningKey {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    SigningKey::from_pkcs8(der.as_ref()).unwrap()
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs).unwrap()
}

struct Vault {
    dir: tempfile::TempDir,
}

impl Vault {
    /// A vault whose accepted policy has one one-shot window [from, until) (Unix seconds).
    fn with_window(from: i64, until: i64) -> Vault {
        let (a, b) = (new_key(), new_key());
        let root = TrustRoot {
            vault_id: "vault-01".into(),
            version: 1,
            threshold: 2,
            admins: vec![Admin { name: "alice".into(), key: a.public_key() }, Admin { name: "bob".into(), key: b.public_key() }],
            caps: Caps::default(),
        };
        let now = unix_now() as i64;
        let policy = Policy::from_toml(&format!(
            r#"
vault_id = "vault-01"
version = 1
issued = "{}"
expires = "{}"
[network]
interface = "vault0"
address = "192.0.2.10/24"
port = 7400
[[window]]
from = "{}"
until = "{}"
[[pusher]]
name = "db"
key = "{}"
quota = "1GiB"
retain = "1d"
[close]
early = true
grace = "1s"
"#,
            ts(now - 60),
            ts(now + 86_400),
            ts(from),
            ts(until),
            new_key().public_key()
        ))
        .unwrap();
        let mut envelope = Envelope::new(&Payload { signed_for_root: root.digest(), policy, new_root: None });
        envelope.sign(&a).unwrap();
        envelope.sign(&b).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("root.toml"), root.to_toml()).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        std::fs::write(dir.path().join("policy.bundle"), envelope.to_bytes()).unwrap();
        let vault = Vault { dir };
        let out = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .arg("--root")
            .arg(vault.root())
            .arg("--state")
            .arg(vault.state())
            .arg("apply-bundle")
            .arg(vault.dir.path().join("policy.bundle"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
        vault
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root.toml")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// The gatekeeper daemon running in the vault namespace; its events, as they arrive.
struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<(f64, serde_json::Value)>>>,
}

impl Daemon {
    fn start(net: &Net, vault: &Vault) -> Daemon {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &net.vault_ns, env!("CARGO_BIN_EXE_gatekeeper")])
            .arg("--root")
            .arg(vault.root())
            .arg("--state")
            .arg(vault.state())
            .args(["run", "--carrier-timeout-ms", "3000"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                sink.lock().unwrap().push((unix_now(), value));
            }
        });
        let daemon = Daemon { child, events };
        daemon.wait_for("started", 10.0);
        daemon
    }

    fn wait_for(&self, event: &str, within_secs: f64) -> (f64, serde_json::Value) {
        let deadline = unix_now() + within_secs;
        loop {
            if let Some(found) = self.events.lock().unwrap().iter().find(|(_, e)| e["event"] == event) {
                return found.clone();
            }
            assert!(unix_now() < deadline, "no `{event}` event within {within_secs}s: {:#?}", self.events.lock().unwrap());
            std::thread::sleep(StdDuration::from_millis(10));
        }
    }

    fn all(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
    }

    fn stop(mut self) -> Vec<serde_json::Value> {
        sh(&["kill", "-TERM", &self.child.id().to_string()]);
        let _ = self.child.wait();
        std::thread::sleep(StdDuration::from_millis(50));
        self.all()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tcp_connect_from(net: &Net) -> std::io::Result<()> {
    in_netns(&net.peer_ns, || {
        let stream = std::net::TcpStream::connect_timeout(&"192.0.2.10:7400".parse().unwrap(), StdDuration::from_secs(1))?;
        drop(stream);
        Ok(())
    })
    .join()
    .unwrap()
}

#[test]
fn arp_is_answered_only_inside_the_window_and_nothing_unsolicited_is_sent() {
    let net = Net::new("win");
    let start = unix_now().ceil() as i64;
    let (from, until) = (start + 3, start + 6);
    let vault = Vault::with_window(from, until);
    let prober = Prober::start(&net);
    let daemon = Daemon::start(&net, &vault);
    let mac = net.vault_mac();

    daemon.wait_for("listening", 6.0);
    // A TCP session to the listener: its segments are frames the vault owes.
    tcp_connect_from(&net).expect("the listener accepts inside the window");
    daemon.wait_for("session_ended", 2.0);
    // Past the end: the link goes down and stays down.
    while unix_now() < until as f64 + 1.5 {
        std::thread::sleep(StdDuration::from_millis(50));
    }
    assert!(tcp_connect_from(&net).is_err(), "connected after the window");
    let events = daemon.stop();
    let (frames, probes) = prober.finish();

    let replies: Vec<f64> = frames.iter().filter(|s| is_arp_reply(&s.frame)).map(|s| s.at).collect();
    assert!(probes.len() > 100, "only {} probes sent", probes.len());
    assert!(!replies.is_empty(), "no ARP reply inside the window");
    assert!(replies.iter().all(|t| *t >= from as f64), "ARP reply before the window opened at {from}: {replies:?}");
    let last_reply = replies.iter().copied().fold(f64::MIN, f64::max);
    assert!(last_reply < until as f64 + 1.0, "ARP replies continued after the window end {until}: last at {last_reply}");
    let first_reply = replies.iter().copied().fold(f64::MAX, f64::min);
    println!("MEASURE window start -> first ARP reply: {:+.1} ms", (first_reply - from as f64) * 1000.0);
    println!("MEASURE window end -> last ARP reply: {:+.1} ms (negative: before the end)", (last_reply - until as f64) * 1000.0);
    let first_unanswered = probes.iter().copied().filter(|p| *p > last_reply).fold(f64::MAX, f64::min);
    println!("MEASURE window end -> first unanswered probe: {:+.1} ms", (first_unanswered - until as f64) * 1000.0);

    // Every frame from the vault side is a reply it owed: no RS, MLD, DAD, gratuitous ARP.
    let rule = EgressRule { mac, address: VAULT_IP, port: 7400 };
    for seen in &frames {
        match classify(&seen.frame, &rule) {
            Verdict::Allowed => {}
            other => panic!("unsolicited frame from the vault at {}: {other:?} {:02x?}", seen.at, seen.frame),
        }
    }
    assert!(frames.iter().any(|s| s.frame[12..14] == [0x08, 0x00]), "no TCP segment of the session was seen");

    let phases: Vec<String> = events.iter().filter(|e| e["event"] == "state_changed").map(|e| format!("{}>{}", e["from"].as_str().unwrap(), e["to"].as_str().unwrap())).collect();
    assert_eq!(phases, ["sealed>opening", "opening>open", "open>closing", "closing>sealed"], "{events:#?}");
    let up = events.iter().find(|e| e["event"] == "link_up").unwrap();
    assert_eq!(up["confirmation"]["admin_up"], true);
    assert_eq!(up["confirmation"]["carrier"], true);
    assert_eq!(up["confirmation"]["addresses"], serde_json::json!(["192.0.2.10"]));
    let downs: Vec<_> = events.iter().filter(|e| e["event"] == "link_down").collect();
    let closing = downs.iter().find(|e| e["why"] == "gate").expect("the gate took the link down");
    println!("MEASURE link down request -> netlink confirmed down: {} ms", closing["confirmation"]["took_ms"]);
    assert!(downs.iter().all(|e| e["confirmation"]["admin_up"] == false && e["confirmation"]["addresses"] == serde_json::json!([])));
    assert!(!events.iter().any(|e| e["event"] == "alarm"), "{events:#?}");
    let down = net.link_json();
    assert!(!down["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{down}");
}

#[test]
fn the_watchdog_undoes_a_link_brought_up_outside_a_window() {
    let net = Net::new("dog");
    let now = unix_now() as i64;
    let vault = Vault::with_window(now + 3_600, now + 3_700);
    let prober = Prober::start(&net);
    let daemon = Daemon::start(&net, &vault);

    sh(&["ip", "-n", &net.vault_ns, "link", "set", "vault0", "up"]);
    let (_, alarm) = daemon.wait_for("alarm", 3.0);
    assert_eq!(alarm["rule"], "watchdog_link_up", "{alarm}");
    std::thread::sleep(StdDuration::from_millis(200));
    let link = net.link_json();
    assert!(!link["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "still up: {link}");

    // Someone adds the vault address by hand: gone again, with an alarm naming it.
    sh(&["ip", "-n", &net.vault_ns, "addr", "add", "192.0.2.10/24", "dev", "vault0"]);
    let deadline = unix_now() + 3.0;
    while !daemon.all().iter().any(|e| e["rule"] == "watchdog_new_address") {
        assert!(unix_now() < deadline, "no alarm for the new address: {:#?}", daemon.all());
        std::thread::sleep(StdDuration::from_millis(10));
    }
    std::thread::sleep(StdDuration::from_millis(200));
    assert_eq!(net.link_json()["addr_info"], serde_json::json!([]));
    let events = daemon.stop();
    let (frames, _) = prober.finish();
    // With IPv6 off and ARP answering only for an address that is flushed at once, the
    // forced-up link may have answered no probe at all; it must never have spoken first.
    let rule = EgressRule { mac: net.vault_mac(), address: VAULT_IP, port: 7400 };
    for seen in &frames {
        assert!(matches!(classify(&seen.frame, &rule), Verdict::Allowed), "unsolicited: {:02x?}", seen.frame);
    }
    assert!(!events.iter().any(|e| e["event"] == "link_up"));
}

#[test]
fn a_clock_behind_the_floor_keeps_it_sealed_with_an_alarm() {
    let net = Net::new("clk");
    let now = unix_now() as i64;
    let vault = Vault::with_window(now + 2, now + 5);
    // The floor says it is tomorrow: the host clock is a day behind it.
    let state_path = vault.state().join("state.json");
    let mut state = VaultState::from_bytes(&std::fs::read(&state_path).unwrap()).unwrap();
    state.time_floor = ts(now + 86_400);
    std::fs::write(&state_path, state.to_bytes()).unwrap();

    let prober = Prober::start(&net);
    let daemon = Daemon::start(&net, &vault);
    let (_, alarm) = daemon.wait_for("alarm", 3.0);
    assert_eq!(alarm["rule"], "clock_behind_floor");
    let detail = alarm["detail"].as_str().unwrap();
    assert!(detail.contains(&ts(now + 86_400).to_string()) && detail.contains("tolerance 300s"), "{detail}");
    while unix_now() < (now + 6) as f64 {
        std::thread::sleep(StdDuration::from_millis(50));
    }
    let events = daemon.stop();
    let (frames, _) = prober.finish();
    assert!(frames.is_empty(), "the vault said something while sealed: {} frames", frames.len());
    assert!(!events.iter().any(|e| e["event"] == "link_up" || e["event"] == "listening"), "{events:#?}");
}

