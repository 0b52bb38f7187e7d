//! The air gap on a real kernel: the gatekeeper binary in one network namespace owning one
//! end of a veth pair, the test in another. Addresses only from 192.0.2.0/24 (TEST-NET-1).
//! Needs root (network namespaces); `make test` runs as root.

mod support;

use std::time::Duration as StdDuration;

use support::*;
use vault_core::egress::{classify, EgressRule, Verdict};
use vault_core::state::VaultState;

#[test]
fn arp_is_answered_only_inside_the_window_and_nothing_unsolicited_is_sent() {
    let net = Net::new("win");
    let start = unix_now().ceil() as i64;
    let (from, until) = (start + 3, start + 6);
    let vault = Vault::with_window(from, until);
    let prober = Prober::start(&net.probe_site());
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
    let prober = Prober::start(&net.probe_site());
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

    let prober = Prober::start(&net.probe_site());
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

