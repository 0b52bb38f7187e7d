//! Every bound a push is held to, and the per-window account that enforces the shared ones.
//!
//! The attacker may hold any pusher key (THREATS.md), so nothing a session spends may be
//! unbounded: each frame is charged to its pusher's window account *before* the vault acts
//! on it, and the values below are chosen so that one hostile session, or sixteen at once,
//! fit in the daemon's memory and cannot use up the disk's inodes. README's "Limits" table
//! lists each with its reason.

use crate::error::PushError;
use crate::error::{Error, Result};

/// New chunks one session may stage. At commit the vault reads the session's chunk table
/// back (44 bytes a chunk, 44 MiB at this bound) to check the manifest against it; with
/// FastCDC's 128 KiB average this is a 128 GiB snapshot of new data.
pub const MAX_SESSION_NEW_CHUNKS: u64 = 1 << 20;
/// New chunks one pusher may stage in one window, over all its sessions. Sealed chunks stay
/// in the daemon's chunk index (about 64 bytes each), so this bounds what one window of a
/// hostile pusher can add to it (256 MiB at most, and each non-final chunk costs at least
/// 32 KiB of quota).
pub const MAX_WINDOW_NEW_CHUNKS: u64 = 4 << 20;
/// Sessions one pusher may start in one window (after authenticating). Each sealed session
/// costs at most [`INODES_PER_SESSION`] inodes, so this bounds a pusher's inodes per window.
pub const MAX_SESSIONS_PER_WINDOW: u32 = 16;
/// Files and directories one sealed session adds: its pack and pack index, the snapshot
/// directory, its manifest and its receipt.
pub const INODES_PER_SESSION: u32 = 5;

/// The session places one pusher may hold at once, of `places` shared by `pushers`: an even
/// share, at least one. Places are few (the daemon's `max_connections`), and one pusher key
/// in hostile hands must not keep the others out for a whole window.
pub fn places_per_pusher(places: usize, pushers: usize) -> usize {
    (places / pushers.max(1)).max(1)
}

/// The least a session must send per minute (frame bytes, charged to its quota like any):
/// a session that holds a place must use it. Low, so that a push reading a slow source whose
/// data the vault has already still passes (a `have` names 128 KiB of data in 32 bytes: this
/// is 16 MiB of data a minute); what it ends is a session kept alive only by the idle
/// deadline (an empty `have` every half minute is 80 bytes a minute).
pub const MIN_SESSION_BYTES_PER_MINUTE: u64 = 4 * 1024;

/// A session's progress, measured minute by minute from its start. Sans clock: the daemon
/// passes the time since the session started with each frame (frames come at least every idle
/// deadline, well inside a minute, so every minute is judged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Start of the minute being counted (since the session started).
    minute_started: std::time::Duration,
    bytes_this_minute: u64,
}

impl Progress {
    /// A frame of `bytes` arrived `elapsed` after the session started: `Err` if the minute that
    /// just ended carried less than [`MIN_SESSION_BYTES_PER_MINUTE`].
    pub fn on_frame(&mut self, pusher: &str, elapsed: std::time::Duration, bytes: u64) -> Result<()> {
        const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);
        if elapsed.saturating_sub(self.minute_started) >= MINUTE {
            if self.bytes_this_minute < MIN_SESSION_BYTES_PER_MINUTE {
                let (sent, since) = (self.bytes_this_minute, elapsed.saturating_sub(self.minute_started).as_secs());
                return Err(Error::Push(PushError::Limit {
                    limit: "session_progress",
                    detail: format!(
                        "pusher `{pusher}` sent {sent} bytes in the last {since} s of this session, at least {MIN_SESSION_BYTES_PER_MINUTE} a minute: a session holds one of the vault's few places and must use it; push again"
                    ),
                }));
            }
            self.minute_started = elapsed;
            self.bytes_this_minute = 0;
        }
        self.bytes_this_minute = self.bytes_this_minute.saturating_add(bytes);
        Ok(())
    }
}

/// What one pusher has spent in the current window, shared by its concurrent sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowAccount {
    /// Every frame byte received from this pusher (length prefixes included).
    pub bytes: u64,
    pub sessions: u32,
    pub new_chunks: u64,
}

impl WindowAccount {
    /// A new authenticated session; refused past [`MAX_SESSIONS_PER_WINDOW`].
    pub fn start_session(&mut self, pusher: &str) -> Result<()> {
        below(u64::from(self.sessions), u64::from(MAX_SESSIONS_PER_WINDOW), "sessions_per_window", || {
            format!("pusher `{pusher}` already started {} sessions in this window (at most {MAX_SESSIONS_PER_WINDOW}); push again in the next window", self.sessions)
        })?;
        self.sessions += 1;
        Ok(())
    }

    /// Charges `bytes` of frames against `quota`; returns what is left. The quota bounds
    /// everything a pusher sends (chunks, resent chunks, `have`, manifest parts), so it also
    /// bounds the disk a window of it can take.
    pub fn charge_bytes(&mut self, pusher: &str, quota: u64, bytes: u64) -> Result<u64> {
        let would_be = self.bytes.saturating_add(bytes);
        if would_be > quota {
            return Err(Error::Push(PushError::QuotaExceeded { pusher: pusher.to_string(), quota, would_be }));
        }
        self.bytes = would_be;
        Ok(quota - would_be)
    }

    /// What is left of `quota` (for `ready`).
    pub fn quota_left(&self, quota: u64) -> u64 {
        quota.saturating_sub(self.bytes)
    }

    /// One more new chunk staged by a session that has staged `in_session` so far.
    pub fn charge_new_chunk(&mut self, pusher: &str, in_session: u64) -> Result<()> {
        below(in_session, MAX_SESSION_NEW_CHUNKS, "new_chunks_per_session", || {
            format!("pusher `{pusher}` sent {in_session} new chunks in this session (at most {MAX_SESSION_NEW_CHUNKS}); commit and push the rest in another snapshot")
        })?;
        below(self.new_chunks, MAX_WINDOW_NEW_CHUNKS, "new_chunks_per_window", || {
            format!("pusher `{pusher}` sent {} new chunks in this window (at most {MAX_WINDOW_NEW_CHUNKS}); push the rest in the next window", self.new_chunks)
        })?;
        self.new_chunks += 1;
        Ok(())
    }
}

/// `Ok` while `count` is below `max`; else the named limit, with `detail` saying what to do.
fn below(count: u64, max: u64, limit: &'static str, detail: impl FnOnce() -> String) -> Result<()> {
    if count >= max {
        return Err(Error::Push(PushError::Limit { limit, detail: detail() }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_counted_per_window() {
        let mut account = WindowAccount::default();
        for _ in 0..MAX_SESSIONS_PER_WINDOW {
            account.start_session("p").unwrap();
        }
        let err = account.start_session("p").unwrap_err().to_string();
        assert!(err.starts_with("limit `sessions_per_window`: pusher `p` already started 16 sessions"), "{err}");
    }

    #[test]
    fn places_are_shared_evenly_and_every_pusher_has_one() {
        assert_eq!(places_per_pusher(16, 1), 16);
        assert_eq!(places_per_pusher(16, 3), 5);
        assert_eq!(places_per_pusher(16, 40), 1);
        assert_eq!(places_per_pusher(16, 0), 16);
    }

    #[test]
    fn a_session_that_trickles_is_refused_once_a_minute_of_it_carried_too_little() {
        use std::time::Duration;
        let secs = Duration::from_secs;
        // An honest session: plenty each minute, however the frames fall.
        let mut busy = Progress::default();
        for second in 0..600 {
            busy.on_frame("p", secs(second), 4096).unwrap();
        }
        // An empty `have` (about 40 bytes) every 29 s: the first whole minute ends it.
        let mut trickle = Progress::default();
        trickle.on_frame("p", secs(0), 40).unwrap();
        trickle.on_frame("p", secs(29), 40).unwrap();
        trickle.on_frame("p", secs(58), 40).unwrap();
        let err = trickle.on_frame("p", secs(87), 40).unwrap_err().to_string();
        assert_eq!(
            err,
            "limit `session_progress`: pusher `p` sent 120 bytes in the last 87 s of this session, at least 4096 a minute: a session holds one of the vault's few places and must use it; push again"
        );
        // Exactly the floor in a minute is enough.
        let mut floor = Progress::default();
        floor.on_frame("p", secs(1), MIN_SESSION_BYTES_PER_MINUTE).unwrap();
        floor.on_frame("p", secs(61), 1).unwrap();
    }

    #[test]
    fn bytes_are_charged_until_the_quota() {
        let mut account = WindowAccount::default();
        assert_eq!(account.charge_bytes("p", 10, 6).unwrap(), 4);
        let err = account.charge_bytes("p", 10, 5).unwrap_err();
        assert_eq!(err, Error::Push(PushError::QuotaExceeded { pusher: "p".into(), quota: 10, would_be: 11 }));
        assert_eq!(account.bytes, 6, "a refused charge spends nothing");
        assert_eq!(account.quota_left(10), 4);
    }

    #[test]
    fn new_chunks_are_bounded_per_session_and_per_window() {
        let mut account = WindowAccount::default();
        let err = account.charge_new_chunk("p", MAX_SESSION_NEW_CHUNKS).unwrap_err().to_string();
        assert!(err.starts_with("limit `new_chunks_per_session`"), "{err}");
        account.new_chunks = MAX_WINDOW_NEW_CHUNKS;
        let err = account.charge_new_chunk("p", 0).unwrap_err().to_string();
        assert!(err.starts_with("limit `new_chunks_per_window`"), "{err}");
        let mut account = WindowAccount::default();
        account.charge_new_chunk("p", MAX_SESSION_NEW_CHUNKS - 1).unwrap();
        assert_eq!(account.new_chunks, 1);
    }
}
