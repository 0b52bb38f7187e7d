//! The egress guard's socket on a real kernel: it queues only what the NIC sends, however much
//! arrives, and it says when it had no room for a frame (the guard then closes the window, as
//! `vault_core::link::gate` tests). Namespaces and a veth from the shared test support; root only.

mod support;

use std::net::UdpSocket;
use std::time::Duration;

use gatekeeper::outgoing_frames::OutgoingFrames;
use support::*;
use test_net::{in_netns, sh};

/// A socket on the vault's end of the veth, opened inside its namespace.
fn open_on_vault0(net: &Net, queue_bytes: usize) -> (OutgoingFrames, u32) {
    in_netns(&net.vault_ns, move || {
        // SAFETY: a NUL-terminated literal, only read.
        let index = unsafe { nix::libc::if_nametoindex(c"vault0".as_ptr()) };
        assert_ne!(index, 0, "no vault0");
        (OutgoingFrames::open(index, queue_bytes, Duration::from_millis(100)).expect("open the packet socket"), index)
    })
    .join()
    .unwrap()
}

/// Every frame queued now, until the socket has nothing more (past the ENETDOWN a socket
/// reports once after its NIC went down).
fn read_all(frames: &mut OutgoingFrames) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        match frames.read_next() {
            Ok(frame) => all.push(frame.to_vec()),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENETDOWN) => continue,
            Err(_) => return all,
        }
    }
}

fn send_from(ns: &str, from: &'static str, to: &'static str, count: usize) {
    in_netns(ns, move || {
        let socket = UdpSocket::bind(from).unwrap();
        for i in 0..count {
            // The queue may be full for a moment (the kernel's own, not the guard's).
            let mut tries = 0;
            while let Err(e) = socket.send_to(&u32::try_from(i).unwrap().to_be_bytes(), to) {
                tries += 1;
                assert!(tries < 1_000, "sending from {from}: {e}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    })
    .join()
    .unwrap();
}

fn vault_side_up(net: &Net) {
    sh(&["ip", "netns", "exec", &net.vault_ns, "sysctl", "-qw", "net.ipv6.conf.vault0.disable_ipv6=1"]);
    sh(&["ip", "-n", &net.vault_ns, "addr", "add", "192.0.2.10/24", "dev", "vault0"]);
    sh(&["ip", "-n", &net.vault_ns, "link", "set", "vault0", "up"]);
    vault_knows_peer(net);
}

/// The peer's MAC, known to the vault's side without asking. Its datagrams then leave at once,
/// in the counts the tests expect: an ARP exchange right after the link came up can lose its
/// reply (the peer's just-carried link drops what it sends until the kernel's link watcher
/// attaches its queue), and the vault would send only a second later. The entry goes with
/// every link down.
fn vault_knows_peer(net: &Net) {
    let mac = net.peer_mac().map(|b| format!("{b:02x}")).join(":");
    sh(&["ip", "-n", &net.vault_ns, "neigh", "replace", "192.0.2.1", "lladdr", &mac, "dev", "vault0", "nud", "permanent"]);
}

#[test]
fn a_flood_towards_the_vault_never_enters_the_guards_queue() {
    let net = Net::new("ofl");
    vault_side_up(&net);
    let vault_mac = net.vault_mac();
    let (mut frames, _) = open_on_vault0(&net, 64 << 10);
    // A sink, so the vault's kernel answers the flood with nothing but the ARP reply.
    let _sink = in_netns(&net.vault_ns, || UdpSocket::bind("192.0.2.10:9").unwrap()).join().unwrap();

    send_from(&net.peer_ns, "192.0.2.1:0", "192.0.2.10:9", 5_000);
    std::thread::sleep(Duration::from_millis(300));
    let seen = read_all(&mut frames);
    assert!(seen.iter().all(|f| f.len() >= 14 && f[6..12] == vault_mac), "a frame the vault did not send was queued: {:02x?}", seen.iter().find(|f| f[6..12] != vault_mac));
    assert!(seen.len() <= 4, "{} frames queued for 5000 that came in", seen.len());
    assert_eq!(frames.take_counts().unwrap().dropped, 0, "frames dropped while the vault sent next to nothing");

    // What the vault sends is there, in order.
    send_from(&net.vault_ns, "192.0.2.10:0", "192.0.2.1:9", 20);
    assert_eq!(read_datagrams(&mut frames, 20), (0..20).collect::<Vec<u32>>());
    println!("MEASURE frames queued while 5000 came in: {}", seen.len());
}

#[test]
fn frames_the_guard_had_no_room_for_are_counted_once() {
    let net = Net::new("ofd");
    vault_side_up(&net);
    // The smallest queue the kernel allows, and a guard that is not reading.
    let (mut frames, _) = open_on_vault0(&net, 1);
    send_from(&net.vault_ns, "192.0.2.10:0", "192.0.2.1:9", 500);
    std::thread::sleep(Duration::from_millis(200));
    let counts = frames.take_counts().unwrap();
    let queued = u32::try_from(read_all(&mut frames).len()).unwrap();
    println!("MEASURE a full queue: {} frames sent, {queued} queued, {} dropped and counted", counts.sent, counts.dropped);
    assert!(counts.dropped > 0 && queued > 0, "{counts:?}, {queued} queued");
    // Every frame the NIC sent is either read or counted as dropped, none twice.
    assert_eq!(counts.sent, queued + counts.dropped, "{counts:?}, {queued} queued");
    assert!(counts.sent >= 400, "{counts:?}: the vault sent fewer frames than expected");
    // The kernel's count starts again from zero once reported.
    assert_eq!(frames.take_counts().unwrap().dropped, 0);
}

/// The vault's own datagrams among `frames`, by the number each carries.
fn datagram_numbers(frames: &[Vec<u8>]) -> Vec<u32> {
    frames.iter().filter(|f| f.len() >= 46 && f[12..14] == [0x08, 0x00] && f[23] == 17).map(|f| u32::from_be_bytes(f[42..46].try_into().unwrap())).collect()
}

/// The numbers of the vault's datagrams the socket queues, read until `count` came or 5 s
/// passed: a wait, not a guess at how long the kernel takes.
fn read_datagrams(frames: &mut OutgoingFrames, count: usize) -> Vec<u32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut numbers = Vec::new();
    while numbers.len() < count && std::time::Instant::now() < deadline {
        numbers.extend(datagram_numbers(&read_all(frames)));
    }
    numbers
}

#[test]
fn the_socket_follows_its_nic_down_and_up_and_says_when_the_nic_is_gone() {
    let net = Net::new("ofu");
    sh(&["ip", "netns", "exec", &net.vault_ns, "sysctl", "-qw", "net.ipv6.conf.vault0.disable_ipv6=1"]);
    // Opened while the NIC is down, as every guard started while sealed is.
    let (mut frames, index) = open_on_vault0(&net, 64 << 10);
    sh(&["ip", "-n", &net.vault_ns, "addr", "add", "192.0.2.10/24", "dev", "vault0"]);
    sh(&["ip", "-n", &net.vault_ns, "link", "set", "vault0", "up"]);
    vault_knows_peer(&net);
    send_from(&net.vault_ns, "192.0.2.10:0", "192.0.2.1:9", 3);
    assert_eq!(read_datagrams(&mut frames, 3), vec![0, 1, 2], "bound while down, then up");

    sh(&["ip", "-n", &net.vault_ns, "link", "set", "vault0", "down"]);
    sh(&["ip", "-n", &net.vault_ns, "link", "set", "vault0", "up"]);
    sh(&["ip", "-n", &net.vault_ns, "addr", "replace", "192.0.2.10/24", "dev", "vault0"]);
    vault_knows_peer(&net);
    send_from(&net.vault_ns, "192.0.2.10:0", "192.0.2.1:9", 3);
    assert_eq!(read_datagrams(&mut frames, 3), vec![0, 1, 2], "after a down and up");
    assert_eq!(frames.bound_ifindex().unwrap(), index as i32);

    // Gone: the socket stays bound to nothing, which only asking shows.
    sh(&["ip", "-n", &net.vault_ns, "link", "del", "vault0"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(frames.bound_ifindex().unwrap(), -1);
}
