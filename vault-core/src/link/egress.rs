//! The egress rule: which Ethernet frames the vault NIC may send while a window is open.
//!
//! The vault never speaks first. It may send exactly three kinds of frame:
//! - an ARP reply for its own address (`oper = 2`, sender = our MAC and our IPv4 address);
//! - IPv4 TCP from our address and the policy port that is not a bare SYN, i.e. a segment of a
//!   connection a client opened to the listener (SYN-ACK, data, ACK, FIN, RST);
//! - an ARP probe for a reply: a request (`oper = 1`) from our MAC and our address for a *peer*,
//!   unicast to that peer's MAC. A peer is an address the vault has sent one of those TCP
//!   segments to in this window, and its MAC is the Ethernet destination the last of them went
//!   to. This is the kernel re-checking (STALE -> DELAY -> PROBE) the neighbour it owes a reply;
//!   the target hardware address must be zero (Linux) or that same MAC.
//!
//! Everything else the NIC sends is unsolicited: a broadcast ARP request (even for a peer), a
//! request for an address the vault has replied to no one at, a request before any reply in
//! the window, gratuitous ARP, IPv6 of any kind, ICMP, UDP, TCP from another port, VLAN tags,
//! ... A frame from another source MAC is [`Verdict::NotOurs`]: a capture of the whole wire
//! (the QEMU tests) skips those; the appliance's guard reads only what its NIC sends (the
//! kernel filters by direction), so there another source MAC is one more unsolicited frame.
//!
//! The third kind needs memory, so the rule is applied by an [`EgressJudge`] fed every frame
//! the NIC sends, in order; [`EgressJudge::forget_peers`] ends a window's memory. The rule
//! itself is one function (`judge_frame`), over one frame and the peers known so far.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// How many peers a judge remembers at most.
///
/// A window has a handful of pushers (and the listener at most 16 connections at a time), but
/// anyone on the segment can make the vault send a SYN-ACK, before TLS has authenticated
/// anyone, to as many (forged) addresses as it likes: the memory must be bounded. When it is
/// full, the peer replied to least recently is dropped. A probe follows the reply it is for by
/// seconds (the kernel's `delay_first_probe_time`, 5 s by default), and every segment to a
/// peer makes it the newest again, so the peer being probed is among the newest. A dropped
/// peer only makes its probe unsolicited, which closes the window: a denial of service that
/// someone on the segment can cause more cheaply anyway, never a frame let through.
pub const MAX_PEERS: usize = 256;

/// What the vault NIC is allowed to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressRule {
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not sent by the vault NIC (another source MAC).
    NotOurs,
    /// A frame the vault owes.
    Allowed,
    /// A frame the vault must never send; the text says what it was.
    Unsolicited(String),
}

/// The egress rule applied to the frames the vault NIC sends, in the order it sends them,
/// remembering the peers it has replied to (at most [`MAX_PEERS`], see there).
#[derive(Debug, Clone)]
pub struct EgressJudge {
    rule: EgressRule,
    /// (address, MAC) of each peer, the one replied to least recently first; one entry an address.
    peers: VecDeque<(Ipv4Addr, [u8; 6])>,
}

impl EgressJudge {
    /// A judge that knows no peer yet, as at the start of a window.
    pub fn new(rule: EgressRule) -> EgressJudge {
        EgressJudge { rule, peers: VecDeque::new() }
    }

    pub fn rule(&self) -> &EgressRule {
        &self.rule
    }

    /// Judges the next frame seen on the vault NIC. An allowed listener segment makes its
    /// destination (address and MAC) a peer, for the ARP probes that may follow it.
    pub fn judge(&mut self, frame: &[u8]) -> Verdict {
        let (verdict, replied_to) = judge_frame(frame, &self.rule, &self.peers);
        if let Some(peer) = replied_to {
            self.remember(peer);
        }
        verdict
    }

    /// Forgets every peer: called when the window's reply phase ends, so the next window starts
    /// knowing no one.
    pub fn forget_peers(&mut self) {
        self.peers.clear();
    }

    /// The peers known now, the one replied to least recently first.
    pub fn peers(&self) -> impl Iterator<Item = (Ipv4Addr, [u8; 6])> + '_ {
        self.peers.iter().copied()
    }

    fn remember(&mut self, (address, mac): (Ipv4Addr, [u8; 6])) {
        if self.peers.back() == Some(&(address, mac)) {
            return;
        }
        // One entry an address, with the MAC of the latest segment: the kernel probes the
        // neighbour entry's current MAC, which is where its last segment went.
        self.peers.retain(|(known, _)| *known != address);
        if self.peers.len() >= MAX_PEERS {
            self.peers.pop_front();
        }
        self.peers.push_back((address, mac));
    }
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

fn ipv4_at(frame: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = frame.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

fn mac_at(frame: &[u8], at: usize) -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Some(b) = frame.get(at..at + 6) {
        mac.copy_from_slice(b);
    }
    mac
}

fn show_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A unicast MAC: the group bit (least significant bit of the first octet) is clear.
fn is_unicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0
}

/// The egress rule, in one place: the verdict on one frame seen on the vault NIC, given the
/// peers replied to so far in this window, and the peer (address, unicast MAC) an allowed
/// listener segment goes to, for the judge to remember.
fn judge_frame(frame: &[u8], rule: &EgressRule, peers: &VecDeque<(Ipv4Addr, [u8; 6])>) -> (Verdict, Option<(Ipv4Addr, [u8; 6])>) {
    if frame.get(6..12) != Some(&rule.mac[..]) {
        return (Verdict::NotOurs, None);
    }
    let Some(ethertype) = be16(frame, 12) else {
        return (Verdict::Unsolicited(format!("runt frame of {} bytes", frame.len())), None);
    };
    let destination = mac_at(frame, 0);
    match ethertype {
        ETHERTYPE_ARP => (judge_arp(&frame[14..], &destination, rule, peers), None),
        ETHERTYPE_IPV4 => judge_ipv4(&frame[14..], &destination, rule),
        ETHERTYPE_IPV6 => (Verdict::Unsolicited(describe_ipv6(&frame[14..])), None),
        ETHERTYPE_VLAN => (Verdict::Unsolicited("802.1Q-tagged frame".into()), None),
        other => (Verdict::Unsolicited(format!("ethertype {other:#06x}")), None),
    }
}

fn judge_arp(arp: &[u8], destination: &[u8; 6], rule: &EgressRule, peers: &VecDeque<(Ipv4Addr, [u8; 6])>) -> Verdict {
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, then oper, sha, spa, tha, tpa.
    if arp.len() < 28 || be16(arp, 0) != Some(1) || be16(arp, 2) != Some(ETHERTYPE_IPV4) || arp[4] != 6 || arp[5] != 4 {
        return Verdict::Unsolicited("malformed ARP".into());
    }
    let oper = be16(arp, 6).unwrap_or(0);
    let sender_mac = mac_at(arp, 8);
    let sender_ip = ipv4_at(arp, 14).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let target_mac = mac_at(arp, 18);
    let target_ip = ipv4_at(arp, 24).unwrap_or(Ipv4Addr::UNSPECIFIED);
    match oper {
        1 => judge_arp_request(rule, peers, destination, (sender_mac, sender_ip), (target_mac, target_ip)),
        2 => {
            if sender_mac != rule.mac || sender_ip != rule.address {
                return Verdict::Unsolicited(format!("ARP reply claiming {sender_ip}, not our {}", rule.address));
            }
            if sender_ip == target_ip {
                return Verdict::Unsolicited(format!("gratuitous ARP reply for {sender_ip}"));
            }
            Verdict::Allowed
        }
        other if sender_ip == target_ip => Verdict::Unsolicited(format!("gratuitous ARP (oper {other}) for {sender_ip}")),
        other => Verdict::Unsolicited(format!("ARP oper {other} {sender_ip} -> {target_ip}")),
    }
}

/// An ARP request is allowed only as a probe for a reply: ours, for a peer, unicast to the
/// peer's MAC.
fn judge_arp_request(rule: &EgressRule, peers: &VecDeque<(Ipv4Addr, [u8; 6])>, destination: &[u8; 6], sender: ([u8; 6], Ipv4Addr), target: ([u8; 6], Ipv4Addr)) -> Verdict {
    let ((sender_mac, sender_ip), (target_mac, target_ip)) = (sender, target);
    let what = format!("who-has {target_ip} tell {sender_ip}");
    if sender_ip == target_ip {
        return Verdict::Unsolicited(format!("gratuitous ARP (oper 1) {what}"));
    }
    if sender_mac != rule.mac || sender_ip != rule.address {
        return Verdict::Unsolicited(format!("ARP request {what} from {}, not our {} at {}", show_mac(&sender_mac), show_mac(&rule.mac), rule.address));
    }
    let Some((_, peer_mac)) = peers.iter().find(|(peer, _)| *peer == target_ip) else {
        let why = if peers.is_empty() { "the vault has replied to no one in this window".to_string() } else { format!("{target_ip} is not a peer the vault replied to in this window") };
        return Verdict::Unsolicited(format!("ARP request {what}: {why}"));
    };
    if !is_unicast(destination) {
        return Verdict::Unsolicited(format!("broadcast ARP request {what} (to {}): a probe for a peer goes only to its MAC {}", show_mac(destination), show_mac(peer_mac)));
    }
    if destination != peer_mac {
        return Verdict::Unsolicited(format!("ARP request {what} sent to {}, not to the peer's MAC {}", show_mac(destination), show_mac(peer_mac)));
    }
    if target_mac != [0; 6] && target_mac != *peer_mac {
        return Verdict::Unsolicited(format!("ARP request {what} naming target MAC {}, neither zero nor the peer's {}", show_mac(&target_mac), show_mac(peer_mac)));
    }
    Verdict::Allowed
}

fn judge_ipv4(ip: &[u8], destination: &[u8; 6], rule: &EgressRule) -> (Verdict, Option<(Ipv4Addr, [u8; 6])>) {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return (Verdict::Unsolicited("malformed IPv4".into()), None);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    let protocol = ip[9];
    let src = ipv4_at(ip, 12).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dst = ipv4_at(ip, 16).unwrap_or(Ipv4Addr::UNSPECIFIED);
    // Flags and fragment offset: the vault's TCP never fragments (Linux sets DF on TCP), and a
    // later fragment's "ports" would be payload bytes.
    let fragment = be16(ip, 6).unwrap_or(0);
    if fragment & 0x3fff != 0 {
        return (Verdict::Unsolicited(format!("fragmented IPv4 {src} -> {dst} (flags/offset {fragment:#06x})")), None);
    }
    if protocol != IPPROTO_TCP {
        let name = match protocol {
            1 => "ICMP".to_string(),
            2 => "IGMP".to_string(),
            17 => "UDP".to_string(),
            other => format!("IP protocol {other}"),
        };
        return (Verdict::Unsolicited(format!("{name} {src} -> {dst}")), None);
    }
    let Some(tcp) = ip.get(header_len..).filter(|t| t.len() >= 14 && header_len >= 20) else {
        return (Verdict::Unsolicited(format!("truncated TCP {src} -> {dst}")), None);
    };
    let src_port = be16(tcp, 0).unwrap_or(0);
    let dst_port = be16(tcp, 2).unwrap_or(0);
    let flags = tcp[13];
    if src != rule.address || src_port != rule.port {
        return (Verdict::Unsolicited(format!("TCP {src}:{src_port} -> {dst}:{dst_port}, not from the listener {}:{}", rule.address, rule.port)), None);
    }
    if flags & TCP_SYN != 0 && flags & TCP_ACK == 0 {
        return (Verdict::Unsolicited(format!("TCP SYN {src}:{src_port} -> {dst}:{dst_port}: the vault opening a connection")), None);
    }
    // A segment to a group MAC makes no peer: a probe "unicast" to it would be a broadcast.
    let peer = is_unicast(destination).then_some((dst, *destination));
    (Verdict::Allowed, peer)
}

fn describe_ipv6(ip: &[u8]) -> String {
    // Next header at 6; ICMPv6 type right after the 40-byte header (no extension headers) or
    // after one hop-by-hop header (MLD reports carry router alert).
    let next = ip.get(6).copied();
    let icmp_type = match next {
        Some(58) => ip.get(40).copied(),
        Some(0) => ip.get(40).and_then(|nh| (*nh == 58).then(|| ip.get(40 + 8 * (1 + usize::from(*ip.get(41)?)))).flatten().copied()),
        _ => None,
    };
    let what = match icmp_type {
        Some(133) => "router solicitation",
        Some(135) => "neighbour solicitation (DAD or lookup)",
        Some(136) => "neighbour advertisement",
        Some(131 | 143) => "MLD report",
        Some(_) => "ICMPv6",
        None => "packet",
    };
    format!("IPv6 {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUR_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 0x10];
    const PEER_MAC: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 0x01];
    const BROADCAST: [u8; 6] = [0xff; 6];
    const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

    fn rule() -> EgressRule {
        EgressRule { mac: OUR_MAC, address: US, port: 7400 }
    }

    /// One frame judged with no peer known, as the first frame of a window.
    fn classify(frame: &[u8]) -> Verdict {
        EgressJudge::new(rule()).judge(frame)
    }

    fn unsolicited(verdict: Verdict) -> String {
        match verdict {
            Verdict::Unsolicited(what) => what,
            other => panic!("{other:?}"),
        }
    }

    fn eth_to(dst: [u8; 6], src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn eth(src: [u8; 6], ethertype: u16, body: &[u8]) -> Vec<u8> {
        eth_to(PEER_MAC, src, ethertype, body)
    }

    /// An ARP frame from us: `dst` is the Ethernet destination, `tha` the target hardware address.
    fn arp_frame(dst: [u8; 6], oper: u16, sender: Ipv4Addr, tha: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&oper.to_be_bytes());
        a.extend_from_slice(&OUR_MAC);
        a.extend_from_slice(&sender.octets());
        a.extend_from_slice(&tha);
        a.extend_from_slice(&target.octets());
        eth_to(dst, OUR_MAC, ETHERTYPE_ARP, &a)
    }

    fn arp(oper: u16, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        arp_frame(PEER_MAC, oper, sender, PEER_MAC, target)
    }

    /// What Linux sends in NUD_PROBE: unicast to the neighbour's MAC, target MAC zero.
    fn probe_for(dst: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
        arp_frame(dst, 1, US, [0; 6], target)
    }

    fn tcp_to(dst_mac: [u8; 6], dst: Ipv4Addr, src_port: u16, flags: u8) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, IPPROTO_TCP, 0, 0];
        ip.extend_from_slice(&US.octets());
        ip.extend_from_slice(&dst.octets());
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&src_port.to_be_bytes());
        t[2..4].copy_from_slice(&50_000u16.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        ip.extend_from_slice(&t);
        eth_to(dst_mac, OUR_MAC, ETHERTYPE_IPV4, &ip)
    }

    fn tcp(src_port: u16, flags: u8) -> Vec<u8> {
        tcp_to(PEER_MAC, PEER, src_port, flags)
    }

    fn syn_ack_to(dst_mac: [u8; 6], dst: Ipv4Addr) -> Vec<u8> {
        tcp_to(dst_mac, dst, 7400, TCP_SYN | TCP_ACK)
    }

    /// A judge that has sent a SYN-ACK to the peer.
    fn replying_to_the_peer() -> EgressJudge {
        let mut judge = EgressJudge::new(rule());
        assert_eq!(judge.judge(&syn_ack_to(PEER_MAC, PEER)), Verdict::Allowed);
        judge
    }

    #[test]
    fn replies_and_listener_segments_are_allowed() {
        assert_eq!(classify(&arp(2, US, PEER)), Verdict::Allowed);
        for flags in [TCP_SYN | TCP_ACK, TCP_ACK, 0x18, 0x11, 0x04, 0x14] {
            assert_eq!(classify(&tcp(7400, flags)), Verdict::Allowed, "flags {flags:#x}");
        }
    }

    #[test]
    fn frames_from_other_macs_are_not_ours() {
        let mut frame = arp(1, PEER, US);
        frame[6..12].copy_from_slice(&PEER_MAC);
        assert_eq!(classify(&frame), Verdict::NotOurs);
        // And they teach the judge nothing: a segment from another MAC makes no peer.
        let mut judge = EgressJudge::new(rule());
        let mut segment = syn_ack_to(PEER_MAC, PEER);
        segment[6..12].copy_from_slice(&PEER_MAC);
        assert_eq!(judge.judge(&segment), Verdict::NotOurs);
        assert_eq!(judge.peers().count(), 0);
    }

    #[test]
    fn everything_else_is_unsolicited_and_named() {
        let named = |frame: Vec<u8>| unsolicited(classify(&frame));
        assert!(named(arp(1, US, PEER)).starts_with("ARP request"));
        assert!(named(arp(1, US, US)).starts_with("gratuitous ARP"));
        assert!(named(arp(3, US, PEER)).starts_with("ARP oper 3"));
        assert!(named(arp(2, US, US)).starts_with("gratuitous ARP reply"));
        assert!(named(arp(2, Ipv4Addr::new(192, 0, 2, 99), PEER)).contains("not our 192.0.2.10"));
        assert!(named(tcp(7400, TCP_SYN)).contains("the vault opening a connection"));
        assert!(named(tcp(22, TCP_ACK)).contains("not from the listener"));
        // A listener segment split into fragments: more-fragments set, or a later fragment.
        for (flags, offset) in [(0x20u8, 0u8), (0x00, 0x01)] {
            let mut fragment = tcp(7400, TCP_ACK);
            fragment[14 + 6] = flags;
            fragment[14 + 7] = offset;
            assert!(named(fragment).starts_with("fragmented IPv4 192.0.2.10 -> 192.0.2.1"));
        }
        let mut rs = vec![0x60, 0, 0, 0, 0, 8, 58, 255];
        rs.extend_from_slice(&[0u8; 32]);
        rs.extend_from_slice(&[133, 0, 0, 0]);
        assert_eq!(named(eth(OUR_MAC, ETHERTYPE_IPV6, &rs)), "IPv6 router solicitation");
        let mut udp = tcp(7400, 0);
        udp[14 + 9] = 17;
        assert!(named(udp).starts_with("UDP 192.0.2.10 -> 192.0.2.1"));
        assert!(named(eth(OUR_MAC, 0x88cc, &[0; 30])).contains("0x88cc"));
        assert!(named(PEER_MAC.iter().chain(OUR_MAC.iter()).copied().collect()).starts_with("runt frame"));
    }

    #[test]
    fn a_unicast_probe_for_a_peer_after_a_syn_ack_to_it_is_allowed() {
        let mut judge = replying_to_the_peer();
        assert_eq!(judge.peers().collect::<Vec<_>>(), [(PEER, PEER_MAC)]);
        assert_eq!(judge.judge(&probe_for(PEER_MAC, PEER)), Verdict::Allowed);
        // Again (PROBE sends up to ucast_solicit of them), and with the peer's MAC as target MAC.
        assert_eq!(judge.judge(&probe_for(PEER_MAC, PEER)), Verdict::Allowed);
        assert_eq!(judge.judge(&arp_frame(PEER_MAC, 1, US, PEER_MAC, PEER)), Verdict::Allowed);
        // Any listener segment makes a peer, not only a SYN-ACK.
        let mut judge = EgressJudge::new(rule());
        assert_eq!(judge.judge(&tcp(7400, TCP_ACK)), Verdict::Allowed);
        assert_eq!(judge.judge(&probe_for(PEER_MAC, PEER)), Verdict::Allowed);
    }

    #[test]
    fn the_same_probe_before_any_tcp_is_unsolicited() {
        let mut judge = EgressJudge::new(rule());
        // An ARP reply to the peer makes no peer: only a listener segment does.
        assert_eq!(judge.judge(&arp(2, US, PEER)), Verdict::Allowed);
        let what = unsolicited(judge.judge(&probe_for(PEER_MAC, PEER)));
        assert_eq!(what, "ARP request who-has 192.0.2.1 tell 192.0.2.10: the vault has replied to no one in this window");
        // A segment that is not allowed makes no peer either.
        assert!(matches!(judge.judge(&tcp(22, TCP_ACK)), Verdict::Unsolicited(_)));
        assert!(matches!(judge.judge(&tcp(7400, TCP_SYN)), Verdict::Unsolicited(_)));
        assert!(matches!(judge.judge(&probe_for(PEER_MAC, PEER)), Verdict::Unsolicited(_)));
    }

    #[test]
    fn a_broadcast_request_for_the_peer_is_unsolicited() {
        let mut judge = replying_to_the_peer();
        let what = unsolicited(judge.judge(&probe_for(BROADCAST, PEER)));
        assert_eq!(what, "broadcast ARP request who-has 192.0.2.1 tell 192.0.2.10 (to ff:ff:ff:ff:ff:ff): a probe for a peer goes only to its MAC 02:00:5e:00:00:01");
        // Any group address counts as broadcast.
        assert!(unsolicited(judge.judge(&probe_for([0x01, 0, 0x5e, 0, 0, 1], PEER))).starts_with("broadcast ARP request"));
    }

    #[test]
    fn a_request_to_the_peers_mac_for_another_address_is_unsolicited() {
        let mut judge = replying_to_the_peer();
        let what = unsolicited(judge.judge(&probe_for(PEER_MAC, OTHER)));
        assert_eq!(what, "ARP request who-has 192.0.2.77 tell 192.0.2.10: 192.0.2.77 is not a peer the vault replied to in this window");
        // Nor for the peer but to another MAC, with a stray target MAC, or claiming another sender.
        let what = unsolicited(judge.judge(&probe_for([0x02, 0, 0, 0, 0, 0x99], PEER)));
        assert_eq!(what, "ARP request who-has 192.0.2.1 tell 192.0.2.10 sent to 02:00:00:00:00:99, not to the peer's MAC 02:00:5e:00:00:01");
        assert!(unsolicited(judge.judge(&arp_frame(PEER_MAC, 1, US, [0x02, 0, 0, 0, 0, 0x99], PEER))).contains("neither zero nor the peer's 02:00:5e:00:00:01"));
        assert!(unsolicited(judge.judge(&probe_for(PEER_MAC, PEER).into_iter().enumerate().map(|(i, b)| if i == 31 { 99 } else { b }).collect::<Vec<_>>()))
            .contains("not our 02:00:5e:00:00:10 at 192.0.2.10"));
        // And a gratuitous request stays gratuitous, peers or not.
        assert!(unsolicited(judge.judge(&probe_for(PEER_MAC, US))).starts_with("gratuitous ARP (oper 1)"));
    }

    #[test]
    fn the_peer_has_the_mac_its_last_segment_went_to() {
        let mut judge = replying_to_the_peer();
        let new_mac = [0x02, 0, 0, 0, 0, 0x42];
        assert_eq!(judge.judge(&syn_ack_to(new_mac, PEER)), Verdict::Allowed);
        assert_eq!(judge.peers().collect::<Vec<_>>(), [(PEER, new_mac)]);
        assert_eq!(judge.judge(&probe_for(new_mac, PEER)), Verdict::Allowed);
        assert!(matches!(judge.judge(&probe_for(PEER_MAC, PEER)), Verdict::Unsolicited(_)));
        // A listener segment to a group MAC is judged as before but makes no peer.
        let mut judge = EgressJudge::new(rule());
        assert_eq!(judge.judge(&syn_ack_to(BROADCAST, OTHER)), Verdict::Allowed);
        assert_eq!(judge.peers().count(), 0);
        assert!(matches!(judge.judge(&probe_for(BROADCAST, OTHER)), Verdict::Unsolicited(_)));
    }

    #[test]
    fn after_forget_peers_the_probe_is_unsolicited() {
        let mut judge = replying_to_the_peer();
        judge.forget_peers();
        assert_eq!(judge.peers().count(), 0);
        assert!(unsolicited(judge.judge(&probe_for(PEER_MAC, PEER))).ends_with("the vault has replied to no one in this window"));
    }

    #[test]
    fn at_most_max_peers_are_remembered_the_least_recently_replied_to_dropped() {
        let peer = |i: usize| {
            let i = u16::try_from(i).unwrap();
            let [hi, lo] = i.to_be_bytes();
            (Ipv4Addr::new(198, 51, 100, 0) | Ipv4Addr::from(u32::from(i)), [0x02, 0, 0, 0, hi, lo])
        };
        let mut judge = replying_to_the_peer();
        for i in 0..MAX_PEERS - 1 {
            let (ip, mac) = peer(i);
            assert_eq!(judge.judge(&syn_ack_to(mac, ip)), Verdict::Allowed);
        }
        assert_eq!(judge.peers().count(), MAX_PEERS);
        // Full: a segment to the first peer makes it the newest again, so the next new peer
        // drops peer(0), the least recently replied to, not the first one.
        assert_eq!(judge.judge(&tcp(7400, TCP_ACK)), Verdict::Allowed);
        let (ip, mac) = peer(MAX_PEERS);
        assert_eq!(judge.judge(&syn_ack_to(mac, ip)), Verdict::Allowed);
        assert_eq!(judge.peers().count(), MAX_PEERS);
        assert_eq!(judge.judge(&probe_for(PEER_MAC, PEER)), Verdict::Allowed);
        assert_eq!(judge.judge(&probe_for(mac, ip)), Verdict::Allowed);
        let (dropped_ip, dropped_mac) = peer(0);
        assert!(unsolicited(judge.judge(&probe_for(dropped_mac, dropped_ip))).contains("is not a peer"));
        let (kept_ip, kept_mac) = peer(1);
        assert_eq!(judge.judge(&probe_for(kept_mac, kept_ip)), Verdict::Allowed);
    }

    /// A frame for the property test: arbitrary bytes, or one of the frames the rule is about
    /// with arbitrary addresses (so peers are made and probed).
    fn frame_strategy() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let mac = prop_oneof![4 => Just(PEER_MAC), 1 => Just(BROADCAST), 1 => Just([0x02, 0, 0, 0, 0, 7]), 1 => any::<[u8; 6]>()];
        let ip = prop_oneof![4 => Just(PEER), 1 => Just(OTHER), 1 => Just(US), 1 => any::<[u8; 4]>().prop_map(Ipv4Addr::from)];
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..120),
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..120)).prop_map(|(ethertype, body)| eth(OUR_MAC, ethertype, &body)),
            (mac.clone(), ip.clone(), prop_oneof![3 => Just(7400u16), 1 => any::<u16>()], any::<u8>()).prop_map(|(m, a, port, flags)| tcp_to(m, a, port, flags)),
            (mac.clone(), ip.clone()).prop_map(|(m, a)| probe_for(m, a)),
            (mac, any::<u16>(), ip.clone(), any::<[u8; 6]>(), ip).prop_map(|(m, oper, s, tha, t)| arp_frame(m, oper % 4, s, tha, t)),
        ]
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(proptest::num::u8::ANY, 0..120), ethertype in proptest::num::u16::ANY) {
            let _ = classify(&eth(OUR_MAC, ethertype, &body));
            let _ = classify(&body);
        }

        /// Over any sequence: no panic, the memory stays bounded, and an ARP request is only
        /// ever allowed unicast to the MAC the latest allowed listener segment to its target went to.
        #[test]
        fn the_judge_never_panics_and_allows_only_probes_for_peers(frames in proptest::collection::vec(frame_strategy(), 0..60)) {
            let mut judge = EgressJudge::new(rule());
            let mut replied: std::collections::HashMap<Ipv4Addr, [u8; 6]> = std::collections::HashMap::new();
            for (i, frame) in frames.iter().enumerate() {
                if i % 17 == 16 {
                    judge.forget_peers();
                    replied.clear();
                }
                let verdict = judge.judge(frame);
                proptest::prop_assert!(judge.peers().count() <= MAX_PEERS);
                if verdict != Verdict::Allowed {
                    continue;
                }
                let dst: [u8; 6] = frame[0..6].try_into().unwrap();
                match be16(frame, 12) {
                    Some(ETHERTYPE_IPV4) if is_unicast(&dst) => {
                        replied.insert(ipv4_at(frame, 30).unwrap(), dst);
                    }
                    Some(ETHERTYPE_ARP) if be16(frame, 20) == Some(1) => {
                        let target = ipv4_at(frame, 38).unwrap();
                        proptest::prop_assert!(is_unicast(&dst));
                        proptest::prop_assert_eq!(replied.get(&target), Some(&dst));
                        proptest::prop_assert_eq!(ipv4_at(frame, 28), Some(US));
                    }
                    _ => {}
                }
            }
        }
    }
}
