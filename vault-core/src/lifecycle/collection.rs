//! Which packs garbage collection may touch, and which it rewrites: the rules, as arithmetic on
//! sizes and times. The store carries them out (`vault_store`'s `gc`).
//!
//! - A pack no live snapshot needs goes whole; one that still holds a needed chunk is kept, or
//!   **repacked** when most of its bytes are dead: its needed chunks are copied into a new pack,
//!   which is made durable, indexed and flagged before the old one goes.
//! - Nothing younger than the grace is touched: a day (Proxmox Backup Server's), or the longest
//!   window if that is longer, so a push sealing across a collection never loses a chunk it was
//!   told the vault holds.

use crate::units::Duration;

/// The least grace: a day.
pub const MIN_GRACE_SECS: i64 = 24 * 3600;

/// A pack is repacked once at least this share (in percent) of its bytes is dead: rewriting it
/// then frees at least as much as it copies.
pub const REPACK_DEAD_PERCENT: u64 = 50;

/// A repack fills new packs up to about this many bytes (each old pack is copied whole into one
/// new pack, so a new pack may pass it by one old pack's live bytes).
pub const REPACK_TARGET_BYTES: u64 = 256 << 20;
/// And up to this many chunks (a session's most), so its index stays as small as a push's.
pub const REPACK_TARGET_CHUNKS: usize = 1 << 20;

/// Does a new pack holding `chunks` chunks of `bytes` have room for `more_chunks` of
/// `more_bytes` more? An empty one always does (an old pack is never split).
pub fn repack_has_room(chunks: usize, bytes: u64, more_chunks: usize, more_bytes: u64) -> bool {
    chunks == 0 || (chunks.saturating_add(more_chunks) <= REPACK_TARGET_CHUNKS && bytes.saturating_add(more_bytes) <= REPACK_TARGET_BYTES)
}

/// The grace of garbage collection: no pack written less than this long ago is collected or
/// repacked.
pub fn grace(longest_window: Option<Duration>) -> Duration {
    let day = Duration::from_secs(MIN_GRACE_SECS).expect("a day is a duration");
    longest_window.map_or(day, |window| window.max(day))
}

/// Is a pack of `pack_bytes` whose needed chunks take `live_bytes` worth rewriting? Only when it
/// holds something needed (otherwise it goes whole) and at least [`REPACK_DEAD_PERCENT`] of it
/// is dead.
pub fn worth_repacking(pack_bytes: u64, live_bytes: u64) -> bool {
    if live_bytes == 0 || pack_bytes == 0 {
        return false;
    }
    let dead = pack_bytes.saturating_sub(live_bytes);
    // dead / pack >= percent / 100, without overflow for any u64 sizes.
    u128::from(dead) * 100 >= u128::from(pack_bytes) * u128::from(REPACK_DEAD_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_grace_is_a_day_or_the_longest_window() {
        assert_eq!(grace(None).secs(), 86_400);
        assert_eq!(grace(Some(Duration::from_secs(3600).unwrap())).secs(), 86_400);
        assert_eq!(grace(Some(Duration::from_secs(2 * 86_400).unwrap())).secs(), 2 * 86_400);
    }

    #[test]
    fn half_dead_is_the_line() {
        assert!(worth_repacking(100, 50));
        assert!(!worth_repacking(100, 51));
        assert!(worth_repacking(100, 1));
        // Nothing needed: the pack goes whole, it is not rewritten.
        assert!(!worth_repacking(100, 0));
        assert!(!worth_repacking(0, 0));
        // Live bytes past the pack's size (a chunk listed twice) are never dead bytes.
        assert!(!worth_repacking(100, 150));
        assert!(worth_repacking(u64::MAX, 1));
        assert!(!worth_repacking(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_new_pack_closes_at_its_target_but_takes_any_first_pack_whole() {
        assert!(repack_has_room(0, 0, REPACK_TARGET_CHUNKS * 2, REPACK_TARGET_BYTES * 2));
        assert!(repack_has_room(1, 1, 1, REPACK_TARGET_BYTES - 1));
        assert!(!repack_has_room(1, 1, 1, REPACK_TARGET_BYTES));
        assert!(!repack_has_room(REPACK_TARGET_CHUNKS, 1, 1, 1));
    }

    proptest! {
        #[test]
        fn a_repack_frees_at_least_what_it_copies(pack in 0u64..u64::MAX, live in 0u64..u64::MAX) {
            if worth_repacking(pack, live) {
                prop_assert!(live > 0 && live <= pack);
                prop_assert!(pack - live >= live);
            }
        }
    }
}
