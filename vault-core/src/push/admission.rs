//! Who may hold a connection before it has proved a pusher key. Anyone on the segment can
//! open TCP connections, so connections that have not finished TLS share a pool of their own
//! and never take a session's place: at most [`MAX_HANDSHAKES`] at once, at most
//! [`MAX_HANDSHAKES_PER_SOURCE`] from one address (a newer one from that address is
//! refused), and when the pool is full a handshake makes way for the newcomer: one picked at
//! random among those of the sources holding the most, so a stranger holding idle connections
//! cannot keep a pusher out, and one opening connections from many addresses as fast as it can
//! evicts a pusher's handshake only by chance (oldest-first would evict it every time the
//! stranger's rate passed the pool's size per handshake time). A handshake also has a
//! short deadline (the daemon's). Sessions (after TLS, pusher known) are counted apart.
//!
//! Sans I/O: the daemon asks [`Admission::admit`] at accept, ends the handshake it is told
//! to evict, and calls [`Admission::finished`] when a handshake ends either way.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Handshakes in flight at once, from every address together.
pub const MAX_HANDSHAKES: usize = 64;
/// Handshakes in flight from one address.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 4;

/// The daemon's name for one accepted connection.
pub type ConnectionId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead with the handshake.
    Yes,
    /// Go ahead, after ending this older handshake (the pool was full).
    YesEvicting(ConnectionId),
    /// Close it at once, saying why.
    No(String),
}

#[derive(Debug, Default)]
pub struct Admission {
    /// Handshakes in flight, oldest first.
    in_flight: VecDeque<(ConnectionId, IpAddr)>,
    per_source: HashMap<IpAddr, usize>,
}

impl Admission {
    /// A connection from `source`: `pick` is a random number, used only to choose which
    /// handshake makes way when the pool is full.
    pub fn admit(&mut self, id: ConnectionId, source: IpAddr, pick: u64) -> Admit {
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= MAX_HANDSHAKES_PER_SOURCE {
            return Admit::No(format!("too many handshakes from {source}: {from_source} in flight, at most {MAX_HANDSHAKES_PER_SOURCE} per address (finish TLS within the handshake deadline)"));
        }
        let evicted = if self.in_flight.len() >= MAX_HANDSHAKES { self.to_evict(pick) } else { None };
        if let Some(oldest) = evicted {
            self.finished(oldest);
        }
        self.in_flight.push_back((id, source));
        *self.per_source.entry(source).or_default() += 1;
        evicted.map_or(Admit::Yes, Admit::YesEvicting)
    }

    /// The handshake of `id` ended (done, failed, timed out or evicted). Unknown ids are
    /// ignored, so calling it twice is harmless.
    pub fn finished(&mut self, id: ConnectionId) {
        let Some(position) = self.in_flight.iter().position(|(c, _)| *c == id) else { return };
        let (_, source) = self.in_flight.remove(position).expect("position is in range");
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The handshake that makes way: among those of the sources with the most in flight, the
    /// `pick`-th (modulo their number).
    fn to_evict(&self, pick: u64) -> Option<ConnectionId> {
        let most = self.per_source.values().copied().max()?;
        let candidates: Vec<ConnectionId> = self.in_flight.iter().filter(|(_, source)| self.per_source.get(source) == Some(&most)).map(|(id, _)| *id).collect();
        let at = usize::try_from(pick % u64::try_from(candidates.len()).ok()?).ok()?;
        candidates.get(at).copied()
    }
}

/// Refusals of strangers (connections that never proved a pusher key) recorded one by one per
/// source in a window; past this they are only counted. Every event is written to the audit
/// log on the data disk and to the console, so without a bound anyone on the segment could
/// fill both by failing handshakes.
pub const MAX_RECORDED_REFUSALS_PER_SOURCE: u32 = 32;
/// Sources tracked in a window; refusals from any further source are counted together.
pub const MAX_REFUSAL_SOURCES: usize = 256;

/// The window's budget of recorded refusals, by source: an IPv4 address, or an IPv6 /64 (one
/// host may hold a whole /64).
#[derive(Debug, Default)]
pub struct RefusalBudget {
    per_source: HashMap<IpAddr, (u32, u64)>,
    others: u64,
}

impl RefusalBudget {
    /// A stranger's connection from `source` was refused: whether to record it (else it is
    /// counted, for [`RefusalBudget::unrecorded`]).
    pub fn record(&mut self, source: Option<IpAddr>) -> bool {
        let tracked = source.map(source_key).filter(|key| self.per_source.contains_key(key) || self.per_source.len() < MAX_REFUSAL_SOURCES);
        let Some(key) = tracked else {
            self.others += 1;
            return false;
        };
        let (recorded, counted) = self.per_source.entry(key).or_default();
        if *recorded < MAX_RECORDED_REFUSALS_PER_SOURCE {
            *recorded += 1;
            return true;
        }
        *counted += 1;
        false
    }

    /// Refusals counted but not recorded, by source (`other sources` for the rest), most
    /// first: what the window's summary says.
    pub fn unrecorded(&self) -> Vec<(String, u64)> {
        let mut counted: Vec<(String, u64)> = self.per_source.iter().filter(|(_, (_, n))| *n > 0).map(|(key, (_, n))| (key.to_string(), *n)).collect();
        counted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if self.others > 0 {
            counted.push(("other sources".into(), self.others));
        }
        counted
    }
}

/// The source a refusal is counted under: the address, or for IPv6 its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strangers_refusals_are_recorded_up_to_a_budget_per_source_then_counted() {
        let mut budget = RefusalBudget::default();
        let recorded = (0..100).filter(|_| budget.record(Some(ip(66)))).count();
        assert_eq!(recorded, MAX_RECORDED_REFUSALS_PER_SOURCE as usize);
        assert!(budget.record(Some(ip(1))), "another source has its own budget");
        // One IPv6 host hopping through its /64 is one source.
        let host = |low: u16| Some(IpAddr::from([0xfd00, 0, 0, 0x42, 0, 0, 0, low]));
        let recorded = (0..100).filter(|n| budget.record(host(*n))).count();
        assert_eq!(recorded, MAX_RECORDED_REFUSALS_PER_SOURCE as usize);
        // Sources past the bound, and refusals without one, are counted together.
        for n in 0..MAX_REFUSAL_SOURCES * 2 {
            budget.record(Some(IpAddr::from(std::net::Ipv4Addr::from(u32::from_be_bytes([198, 51, 0, 0]) + u32::try_from(n).unwrap()))));
        }
        assert!(!budget.record(None));
        let unrecorded = budget.unrecorded();
        assert_eq!(unrecorded[0], ("192.0.2.66".to_string(), 68));
        assert_eq!(unrecorded[1], ("fd00:0:0:42::".to_string(), 68));
        let others = unrecorded.last().unwrap();
        assert_eq!(others.0, "other sources");
        assert_eq!(others.1, (MAX_REFUSAL_SOURCES * 2 - (MAX_REFUSAL_SOURCES - 3)) as u64 + 1);
        assert!(budget.per_source.len() <= MAX_REFUSAL_SOURCES);
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_others_still_get_in() {
        let mut a = Admission::default();
        for id in 0..MAX_HANDSHAKES_PER_SOURCE as u64 {
            assert_eq!(a.admit(id, ip(66), 0), Admit::Yes);
        }
        let Admit::No(why) = a.admit(99, ip(66), 0) else { panic!("admitted past the per-address cap") };
        assert!(why.starts_with("too many handshakes from 192.0.2.66: 4 in flight, at most 4 per address"), "{why}");
        assert_eq!(a.admit(100, ip(1), 0), Admit::Yes, "the pusher's address is not affected");
        a.finished(0);
        assert_eq!(a.admit(101, ip(66), 0), Admit::Yes, "a place freed is a place again");
    }

    #[test]
    fn a_full_pool_makes_way_for_the_newcomer_at_random_among_the_sources_holding_most() {
        let mut a = Admission::default();
        let mut id = 0;
        // The pusher's handshake first (the oldest), then strangers fill the pool, 4 each.
        assert_eq!(a.admit(id, ip(1), 0), Admit::Yes);
        id += 1;
        while a.in_flight() < MAX_HANDSHAKES {
            let host = 100 + u8::try_from((id - 1) / MAX_HANDSHAKES_PER_SOURCE as u64).unwrap();
            let _ = a.admit(id, ip(host), 0);
            id += 1;
        }
        // Newcomers evict the strangers' handshakes, never the pusher's, whatever is picked.
        for pick in 0..200u64 {
            let Admit::YesEvicting(gone) = a.admit(10_000 + pick, ip(200 + u8::try_from(pick % 50).unwrap()), pick.wrapping_mul(0x9e37_79b9_7f4a_7c15)) else { panic!("the pool is full") };
            assert_ne!(gone, 0, "the pusher's handshake was evicted");
            assert_eq!(a.in_flight(), MAX_HANDSHAKES);
        }
    }

    #[test]
    fn with_one_handshake_per_source_the_one_evicted_is_the_picked_one() {
        let mut a = Admission::default();
        for n in 0..MAX_HANDSHAKES as u64 {
            assert_eq!(a.admit(n, IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + u32::try_from(n).unwrap())), 0), Admit::Yes);
        }
        assert_eq!(a.admit(1000, ip(250), 5), Admit::YesEvicting(5));
        assert_eq!(a.admit(1001, ip(251), 5 + MAX_HANDSHAKES as u64), Admit::YesEvicting(6), "modulo the candidates (one fewer after the first)");
    }

    proptest! {
        /// Whatever arrives and ends in whatever order, the counts stay within both caps and
        /// agree with what is in flight.
        #[test]
        fn the_caps_always_hold(ops in prop::collection::vec((any::<bool>(), 0u64..200, 0u8..20, any::<u64>()), 0..600)) {
            let mut a = Admission::default();
            for (arrive, id, host, pick) in ops {
                if arrive {
                    let _ = a.admit(id, ip(host), pick);
                } else {
                    a.finished(id);
                }
                prop_assert!(a.in_flight() <= MAX_HANDSHAKES);
                prop_assert!(a.per_source.values().all(|n| *n >= 1 && *n <= MAX_HANDSHAKES_PER_SOURCE));
                prop_assert_eq!(a.per_source.values().sum::<usize>(), a.in_flight());
            }
        }
    }
}
