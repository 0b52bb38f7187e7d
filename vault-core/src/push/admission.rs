//! Who may hold a connection before it has proved a pusher key. Anyone on the segment can
//! open TCP connections, so connections that have not finished TLS share a pool of their own
//! and never take a session's place: at most [`MAX_HANDSHAKES`] at once, at most
//! [`MAX_HANDSHAKES_PER_SOURCE`] from one address (a newer one from that address is
//! refused), and when the pool is full the oldest handshake in it makes way for the newcomer,
//! so a stranger holding idle connections cannot keep a pusher out. A handshake also has a
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
    pub fn admit(&mut self, id: ConnectionId, source: IpAddr) -> Admit {
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source >= MAX_HANDSHAKES_PER_SOURCE {
            return Admit::No(format!("too many handshakes from {source}: {from_source} in flight, at most {MAX_HANDSHAKES_PER_SOURCE} per address (finish TLS within the handshake deadline)"));
        }
        let evicted = if self.in_flight.len() >= MAX_HANDSHAKES { self.in_flight.front().map(|(oldest, _)| *oldest) } else { None };
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_address_holds_at_most_its_share_and_others_still_get_in() {
        let mut a = Admission::default();
        for id in 0..MAX_HANDSHAKES_PER_SOURCE as u64 {
            assert_eq!(a.admit(id, ip(66)), Admit::Yes);
        }
        let Admit::No(why) = a.admit(99, ip(66)) else { panic!("admitted past the per-address cap") };
        assert!(why.starts_with("too many handshakes from 192.0.2.66: 4 in flight, at most 4 per address"), "{why}");
        assert_eq!(a.admit(100, ip(1)), Admit::Yes, "the pusher's address is not affected");
        a.finished(0);
        assert_eq!(a.admit(101, ip(66)), Admit::Yes, "a place freed is a place again");
    }

    #[test]
    fn a_full_pool_makes_way_for_the_newcomer_oldest_first() {
        let mut a = Admission::default();
        let mut id = 0;
        for host in 0..u8::try_from(MAX_HANDSHAKES / MAX_HANDSHAKES_PER_SOURCE).unwrap() {
            for _ in 0..MAX_HANDSHAKES_PER_SOURCE {
                assert_eq!(a.admit(id, ip(100 + host)), Admit::Yes);
                id += 1;
            }
        }
        assert_eq!(a.in_flight(), MAX_HANDSHAKES);
        assert_eq!(a.admit(1000, ip(1)), Admit::YesEvicting(0));
        assert_eq!(a.admit(1001, ip(1)), Admit::YesEvicting(1));
        assert_eq!(a.in_flight(), MAX_HANDSHAKES);
    }

    proptest! {
        /// Whatever arrives and ends in whatever order, the counts stay within both caps and
        /// agree with what is in flight.
        #[test]
        fn the_caps_always_hold(ops in prop::collection::vec((any::<bool>(), 0u64..200, 0u8..20), 0..600)) {
            let mut a = Admission::default();
            for (arrive, id, host) in ops {
                if arrive {
                    let _ = a.admit(id, ip(host));
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
