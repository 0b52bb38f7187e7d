//! The relay between the session worker and the daemon: the privilege split's one seam.
//!
//! Everything a pusher sends is first handled by the session worker, a process of its own uid
//! with no capabilities and an empty, deleted root directory: it accepts connections, holds
//! strangers to the handshake pool ([`crate::push::admission`]), runs TLS, and reads and decodes
//! every frame. It hands the daemon only what passed: which key a connection proved, and each
//! checked frame body. The daemon, which owns the link and the store, checks every rule again
//! (it treats the worker as hostile: a worker that breaks this protocol is stopped and the
//! window closed) and answers with frames for the worker to send.
//!
//! Framing is the push protocol's own ([`crate::push::protocol::FrameReader`]: a checked u32
//! length prefix, then the body) with a larger cap, [`MAX_RELAY_FRAME`]. A body is
//! `u8 kind | fields`, big-endian, decoded strictly ([`FromWorker::decode`], [`ToWorker::decode`]).
//!
//! Flow control: a session may have at most [`RELAY_CREDIT`] bytes of frames forwarded and not
//! yet taken by the daemon, each frame costing at least [`MIN_FRAME_COST`] ([`credit_cost`]), so
//! at most [`MAX_FRAMES_IN_CREDIT`] frames wait; each [`ToWorker::Consumed`] gives the cost of
//! what the daemon took back. The daemon's queue per session is therefore bounded by the
//! protocol in bytes and in frames, and a worker that overruns it is in breach. Counted in bytes,
//! the credit lets many small frames (small files) flow while never letting more than four
//! chunks at the protocol's maximum wait.

use crate::error::PushError;
use crate::error::{Error, Result};
use crate::push::protocol::{LENGTH_PREFIX, MAX_FRAME_BYTES};
use crate::wire::{Reader, Writer};

/// A relay body: a push frame body and a small header.
pub const MAX_RELAY_FRAME: usize = MAX_FRAME_BYTES + 64;
/// Bytes on the wire a session may have forwarded and not yet taken by the daemon: four chunk
/// frames at the protocol's maximum (4 MiB and their headers).
pub const RELAY_CREDIT: u32 = (4 << 20) + 4096;
/// What a frame smaller than this costs of the credit.
pub const MIN_FRAME_COST: u32 = 64 << 10;
/// Most frames of one session waiting for the daemon.
pub const MAX_FRAMES_IN_CREDIT: usize = (RELAY_CREDIT / MIN_FRAME_COST) as usize;
const _: () = assert!(4 * (MAX_FRAME_BYTES + LENGTH_PREFIX) <= RELAY_CREDIT as usize, "four of the largest frames fit the credit");

/// What a frame of `wire_bytes` costs of its session's [`RELAY_CREDIT`]: its size, at least
/// [`MIN_FRAME_COST`], at most the whole credit (a frame the protocol allows always fits).
pub fn credit_cost(wire_bytes: usize) -> u32 {
    u32::try_from(wire_bytes).unwrap_or(u32::MAX).clamp(MIN_FRAME_COST, RELAY_CREDIT)
}
/// Longest text (a peer address, a reason) the relay carries; longer is cut at a character.
pub const MAX_TEXT: usize = 1024;
/// Most pusher keys a [`ToWorker::Start`] carries (a policy lists fewer).
pub const MAX_PUSHER_KEYS: usize = 256;

/// The daemon's name for one connection, given by the worker. Unique within a window.
pub type SessionNo = u64;

/// What the worker says to the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// The first message: what the worker is once it has confined itself. The daemon refuses
    /// to use a worker that is root, holds a capability, or can see a filesystem.
    Confined { uid: u32, gid: u32, capabilities_permitted: u64, capabilities_effective: u64, no_new_privileges: bool, sees_files: bool },
    /// A connection refused before it proved a pusher key (the pool, a failed handshake).
    Refused { peer: String, reason: String },
    /// A connection proved this key in its TLS handshake; it waits for [`ToWorker::Admit`].
    Authenticated { session: SessionNo, peer: String, key: [u8; 32] },
    /// One checked frame of an admitted session: its body and its size on the wire.
    Frame { session: SessionNo, wire_bytes: u32, body: Vec<u8> },
    /// The connection ended on the worker's side (closed, idle, a frame refused); `told_peer`
    /// if the worker sent the pusher a refusal.
    Ended { session: SessionNo, reason: String, told_peer: bool },
    /// What became of a [`ToWorker::Finish`]: `None` if its last frame was written and the
    /// connection shut down, else why not.
    Finished { session: SessionNo, error: Option<String> },
}

/// What the daemon says to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker {
    /// The window's settings: the vault's public key (its raw-key certificate), the pusher keys
    /// TLS lets through, and the deadlines.
    Start { vault_key: [u8; 32], pushers: Vec<[u8; 32]>, handshake_ms: u32, idle_ms: u32 },
    /// The session may go on: its frames are wanted.
    Admit { session: SessionNo },
    /// Write this (encoded) vault frame to the session's pusher.
    Send { session: SessionNo, frame: Vec<u8> },
    /// The daemon took frames of the session costing `credit` ([`credit_cost`]): that much back.
    Consumed { session: SessionNo, credit: u32 },
    /// Write this last frame (if any), shut the connection down, answer [`FromWorker::Finished`].
    Finish { session: SessionNo, frame: Option<Vec<u8>> },
    /// Close the connection without a word.
    Drop { session: SessionNo },
    /// The window is closing: accept no more connections.
    StopAccepting,
}

const CONFINED: u8 = 1;
const REFUSED: u8 = 2;
const AUTHENTICATED: u8 = 3;
const FRAME: u8 = 4;
const ENDED: u8 = 5;
const FINISHED: u8 = 6;

const START: u8 = 0x81;
const ADMIT: u8 = 0x82;
const SEND: u8 = 0x83;
const CONSUMED: u8 = 0x84;
const FINISH: u8 = 0x85;
const DROP: u8 = 0x86;
const STOP_ACCEPTING: u8 = 0x87;

impl FromWorker {
    /// The message with its length prefix.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        match self {
            FromWorker::Confined { uid, gid, capabilities_permitted, capabilities_effective, no_new_privileges, sees_files } => {
                w.u8(CONFINED).u32(*uid).u32(*gid).u64(*capabilities_permitted).u64(*capabilities_effective).u8(u8::from(*no_new_privileges)).u8(u8::from(*sees_files));
            }
            FromWorker::Refused { peer, reason } => {
                w.u8(REFUSED);
                text(&mut w, peer)?;
                text(&mut w, reason)?;
            }
            FromWorker::Authenticated { session, peer, key } => {
                w.u8(AUTHENTICATED).u64(*session);
                text(&mut w, peer)?;
                w.raw(key);
            }
            FromWorker::Frame { session, wire_bytes, body } => return FromWorker::encode_frame(*session, *wire_bytes, body),
            FromWorker::Ended { session, reason, told_peer } => {
                w.u8(ENDED).u64(*session).u8(u8::from(*told_peer));
                text(&mut w, reason)?;
            }
            FromWorker::Finished { session, error } => {
                w.u8(FINISHED).u64(*session);
                optional_text(&mut w, error.as_deref())?;
            }
        }
        with_prefix(w.bytes)
    }

    /// [`FromWorker::Frame`] encoded straight from the bytes the worker read: the pusher's
    /// bytes are copied once, into the message.
    pub fn encode_frame(session: SessionNo, wire_bytes: u32, body: &[u8]) -> Result<Vec<u8>> {
        if body.len() > MAX_FRAME_BYTES {
            return Err(Error::Push(PushError::FrameTooLarge { size: body.len(), limit: MAX_FRAME_BYTES }));
        }
        const HEADER: usize = 1 + 8 + 4;
        let len = HEADER + body.len();
        let mut out = Vec::with_capacity(LENGTH_PREFIX + len);
        out.extend_from_slice(&u32::try_from(len).expect("within MAX_RELAY_FRAME").to_be_bytes());
        out.push(FRAME);
        out.extend_from_slice(&session.to_be_bytes());
        out.extend_from_slice(&wire_bytes.to_be_bytes());
        out.extend_from_slice(body);
        Ok(out)
    }

    /// Decodes a body (after the length prefix). Strict: known kinds, exact lengths, UTF-8 text
    /// within [`MAX_TEXT`].
    pub fn decode(body: &[u8]) -> Result<FromWorker> {
        Ok(match FromWorker::decode_in_place(body)? {
            InPlace::Frame { session, wire_bytes, body } => FromWorker::Frame { session, wire_bytes, body: body.to_vec() },
            InPlace::Message(message) => message,
        })
    }

    /// [`FromWorker::decode`], leaving a pusher's frame where it is, so the daemon decodes it
    /// straight from the relay's buffer.
    pub fn decode_in_place(body: &[u8]) -> Result<InPlace<'_>> {
        let mut r = Reader::new(body, "relay message from the session worker");
        let message = match r.u8("kind")? {
            CONFINED => FromWorker::Confined {
                uid: r.u32("uid")?,
                gid: r.u32("gid")?,
                capabilities_permitted: r.u64("permitted capabilities")?,
                capabilities_effective: r.u64("effective capabilities")?,
                no_new_privileges: flag(&mut r, "no_new_privs")?,
                sees_files: flag(&mut r, "sees files")?,
            },
            REFUSED => FromWorker::Refused { peer: read_text(&mut r, "peer")?, reason: read_text(&mut r, "reason")? },
            AUTHENTICATED => FromWorker::Authenticated { session: r.u64("session")?, peer: read_text(&mut r, "peer")?, key: r.array("key")? },
            FRAME => {
                let (session, wire_bytes) = (r.u64("session")?, r.u32("wire bytes")?);
                let body = r.rest();
                if body.len() > MAX_FRAME_BYTES {
                    return Err(Error::Push(PushError::FrameTooLarge { size: body.len(), limit: MAX_FRAME_BYTES }));
                }
                r.finish()?;
                return Ok(InPlace::Frame { session, wire_bytes, body });
            }
            ENDED => FromWorker::Ended { session: r.u64("session")?, told_peer: flag(&mut r, "told peer")?, reason: read_text(&mut r, "reason")? },
            FINISHED => FromWorker::Finished { session: r.u64("session")?, error: read_optional_text(&mut r, "error")? },
            kind => return Err(r.malformed(format!("unknown kind {kind:#04x}"))),
        };
        r.finish()?;
        Ok(InPlace::Message(message))
    }
}

/// A worker's message as [`FromWorker::decode_in_place`] reads it.
#[derive(Debug)]
pub enum InPlace<'a> {
    /// [`FromWorker::Frame`], its body borrowed.
    Frame {
        session: SessionNo,
        wire_bytes: u32,
        body: &'a [u8],
    },
    Message(FromWorker),
}

impl ToWorker {
    /// The message with its length prefix.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::default();
        match self {
            ToWorker::Start { vault_key, pushers, handshake_ms, idle_ms } => {
                if pushers.len() > MAX_PUSHER_KEYS {
                    return Err(Error::TooLarge { what: "pusher keys", size: pushers.len(), limit: MAX_PUSHER_KEYS });
                }
                w.u8(START).raw(vault_key).u32(*handshake_ms).u32(*idle_ms).u16(u16::try_from(pushers.len()).expect("MAX_PUSHER_KEYS fits a u16"));
                for key in pushers {
                    w.raw(key);
                }
            }
            ToWorker::Admit { session } => {
                w.u8(ADMIT).u64(*session);
            }
            ToWorker::Send { session, frame } => {
                if frame.len() > MAX_FRAME_BYTES {
                    return Err(Error::Push(PushError::FrameTooLarge { size: frame.len(), limit: MAX_FRAME_BYTES }));
                }
                w.u8(SEND).u64(*session).raw(frame);
            }
            ToWorker::Consumed { session, credit } => {
                w.u8(CONSUMED).u64(*session).u32(*credit);
            }
            ToWorker::Finish { session, frame } => {
                w.u8(FINISH).u64(*session);
                match frame {
                    Some(frame) if frame.len() > MAX_FRAME_BYTES => return Err(Error::Push(PushError::FrameTooLarge { size: frame.len(), limit: MAX_FRAME_BYTES })),
                    Some(frame) => w.u8(1).raw(frame),
                    None => w.u8(0),
                };
            }
            ToWorker::Drop { session } => {
                w.u8(DROP).u64(*session);
            }
            ToWorker::StopAccepting => {
                w.u8(STOP_ACCEPTING);
            }
        }
        with_prefix(w.bytes)
    }

    /// Decodes a body (after the length prefix), as strictly as [`FromWorker::decode`].
    pub fn decode(body: &[u8]) -> Result<ToWorker> {
        let mut r = Reader::new(body, "relay message from the daemon");
        let message = match r.u8("kind")? {
            START => {
                let (vault_key, handshake_ms, idle_ms) = (r.array("vault key")?, r.u32("handshake ms")?, r.u32("idle ms")?);
                let n = usize::from(r.u16("pusher count")?);
                if n > MAX_PUSHER_KEYS {
                    return Err(r.malformed(format!("{n} pusher keys, at most {MAX_PUSHER_KEYS}")));
                }
                let pushers = (0..n).map(|_| r.array("pusher key")).collect::<Result<Vec<_>>>()?;
                ToWorker::Start { vault_key, pushers, handshake_ms, idle_ms }
            }
            ADMIT => ToWorker::Admit { session: r.u64("session")? },
            SEND => {
                let session = r.u64("session")?;
                let frame = r.rest();
                if frame.len() > MAX_FRAME_BYTES {
                    return Err(Error::Push(PushError::FrameTooLarge { size: frame.len(), limit: MAX_FRAME_BYTES }));
                }
                ToWorker::Send { session, frame: frame.to_vec() }
            }
            CONSUMED => ToWorker::Consumed { session: r.u64("session")?, credit: r.u32("credit")? },
            FINISH => {
                let session = r.u64("session")?;
                let frame = match flag(&mut r, "has frame")? {
                    true => Some(r.rest().to_vec()),
                    false => None,
                };
                ToWorker::Finish { session, frame }
            }
            DROP => ToWorker::Drop { session: r.u64("session")? },
            STOP_ACCEPTING => ToWorker::StopAccepting,
            kind => return Err(r.malformed(format!("unknown kind {kind:#04x}"))),
        };
        r.finish()?;
        Ok(message)
    }
}

fn with_prefix(body: Vec<u8>) -> Result<Vec<u8>> {
    if body.len() > MAX_RELAY_FRAME {
        return Err(Error::Push(PushError::FrameTooLarge { size: body.len(), limit: MAX_RELAY_FRAME }));
    }
    let mut out = Vec::with_capacity(LENGTH_PREFIX + body.len());
    out.extend_from_slice(&u32::try_from(body.len()).expect("MAX_RELAY_FRAME fits a u32").to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Text as a u16 length and UTF-8 bytes, cut (at a character) to [`MAX_TEXT`]: a reason is
/// for the console, and a long one is not worth refusing the message for.
fn text(w: &mut Writer, value: &str) -> Result<()> {
    let mut end = value.len().min(MAX_TEXT);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    w.short_bytes(&value.as_bytes()[..end])?;
    Ok(())
}

fn optional_text(w: &mut Writer, value: Option<&str>) -> Result<()> {
    match value {
        Some(value) => {
            w.u8(1);
            text(w, value)
        }
        None => {
            w.u8(0);
            Ok(())
        }
    }
}

fn read_text(r: &mut Reader<'_>, field: &str) -> Result<String> {
    let bytes = r.short_bytes(field)?;
    if bytes.len() > MAX_TEXT {
        return Err(r.malformed(format!("{field} of {} bytes, at most {MAX_TEXT}", bytes.len())));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| r.malformed(format!("{field} is not UTF-8")))
}

fn read_optional_text(r: &mut Reader<'_>, field: &str) -> Result<Option<String>> {
    match flag(r, field)? {
        true => read_text(r, field).map(Some),
        false => Ok(None),
    }
}

fn flag(r: &mut Reader<'_>, field: &str) -> Result<bool> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(r.malformed(format!("{field} is {other}, must be 0 or 1"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::protocol::{Filled, FrameReader};
    use proptest::prelude::*;

    fn body(encoded: &[u8]) -> &[u8] {
        &encoded[LENGTH_PREFIX..]
    }

    fn from_worker() -> Vec<FromWorker> {
        vec![
            FromWorker::Confined { uid: 64_010, gid: 64_010, capabilities_permitted: 0, capabilities_effective: 0, no_new_privileges: true, sees_files: false },
            FromWorker::Refused { peer: "192.0.2.7:40000".into(), reason: "TLS handshake failed: unknown pusher key".into() },
            FromWorker::Authenticated { session: 7, peer: "192.0.2.7:40001".into(), key: [9; 32] },
            FromWorker::Frame { session: 7, wire_bytes: 12, body: vec![1, 5, 0, 0] },
            FromWorker::Ended { session: 7, reason: "idle: no frame within 30s".into(), told_peer: true },
            FromWorker::Finished { session: 7, error: None },
            FromWorker::Finished { session: 8, error: Some("write failed: broken pipe".into()) },
        ]
    }

    fn to_worker() -> Vec<ToWorker> {
        vec![
            ToWorker::Start { vault_key: [1; 32], pushers: vec![[2; 32], [3; 32]], handshake_ms: 5000, idle_ms: 30_000 },
            ToWorker::Admit { session: 1 },
            ToWorker::Send { session: 1, frame: vec![0, 0, 0, 2, 1, 0x81] },
            ToWorker::Consumed { session: 1, credit: MIN_FRAME_COST },
            ToWorker::Finish { session: 1, frame: Some(vec![0, 0, 0, 2, 1, 0x84]) },
            ToWorker::Finish { session: 2, frame: None },
            ToWorker::Drop { session: 3 },
            ToWorker::StopAccepting,
        ]
    }

    #[test]
    fn every_message_survives_the_round_trip_through_the_shared_frame_reader() {
        let mut stream = Vec::new();
        for m in from_worker() {
            stream.extend(m.encode().unwrap());
        }
        let mut reader = FrameReader::with_limit(MAX_RELAY_FRAME);
        let mut decoded = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let room = reader.unfilled();
            let n = room.len().min(stream.len() - at);
            room[..n].copy_from_slice(&stream[at..at + n]);
            at += n;
            if let Filled::Frame { body, .. } = reader.filled(n).unwrap() {
                decoded.push(FromWorker::decode(body).unwrap());
            }
        }
        assert_eq!(decoded, from_worker());
        for m in to_worker() {
            assert_eq!(ToWorker::decode(body(&m.encode().unwrap())).unwrap(), m);
        }
    }

    #[test]
    fn a_chunk_frame_at_the_protocol_maximum_fits_a_relay_frame() {
        let frame = vec![0u8; MAX_FRAME_BYTES];
        let relayed = FromWorker::Frame { session: u64::MAX, wire_bytes: u32::MAX, body: frame.clone() }.encode().unwrap();
        assert!(relayed.len() - LENGTH_PREFIX <= MAX_RELAY_FRAME);
        let sent = ToWorker::Send { session: 1, frame }.encode().unwrap();
        assert!(sent.len() - LENGTH_PREFIX <= MAX_RELAY_FRAME);
        let over = vec![0u8; MAX_FRAME_BYTES + 1];
        assert!(matches!(FromWorker::Frame { session: 1, wire_bytes: 0, body: over.clone() }.encode(), Err(Error::Push(PushError::FrameTooLarge { .. }))));
        assert!(matches!(ToWorker::Send { session: 1, frame: over }.encode(), Err(Error::Push(PushError::FrameTooLarge { .. }))));
    }

    #[test]
    fn the_credit_bounds_both_bytes_and_frames() {
        assert_eq!(credit_cost(0), MIN_FRAME_COST);
        assert_eq!(credit_cost(40_000), MIN_FRAME_COST);
        assert_eq!(credit_cost(700_000), 700_000);
        assert_eq!(credit_cost(usize::MAX), RELAY_CREDIT);
        // Four chunks at the protocol's maximum fit, a fifth does not.
        let largest = credit_cost(MAX_FRAME_BYTES + LENGTH_PREFIX);
        assert!(4 * largest <= RELAY_CREDIT && 5 * largest > RELAY_CREDIT);
        assert_eq!(MAX_FRAMES_IN_CREDIT, 64);
    }

    #[test]
    fn a_relay_prefix_over_the_cap_is_refused_before_any_room_is_made() {
        let mut reader = FrameReader::with_limit(MAX_RELAY_FRAME);
        let prefix = u32::try_from(MAX_RELAY_FRAME + 1).unwrap().to_be_bytes();
        reader.unfilled()[..4].copy_from_slice(&prefix);
        assert!(matches!(reader.filled(4), Err(Error::Push(PushError::FrameTooLarge { size, limit })) if size == MAX_RELAY_FRAME + 1 && limit == MAX_RELAY_FRAME));
    }

    #[test]
    fn strict_decoding_names_what_is_wrong() {
        let err = FromWorker::decode(&[0x42]).unwrap_err().to_string();
        assert!(err.contains("unknown kind 0x42"), "{err}");
        let mut trailing = body(&FromWorker::Finished { session: 1, error: None }.encode().unwrap()).to_vec();
        trailing.push(0);
        assert!(FromWorker::decode(&trailing).is_err());
        let mut bad_flag = body(&FromWorker::Ended { session: 1, reason: "x".into(), told_peer: false }.encode().unwrap()).to_vec();
        bad_flag[9] = 2;
        let err = FromWorker::decode(&bad_flag).unwrap_err().to_string();
        assert!(err.contains("told peer is 2, must be 0 or 1"), "{err}");
        let mut not_utf8 = body(&FromWorker::Refused { peer: "p".into(), reason: "r".into() }.encode().unwrap()).to_vec();
        *not_utf8.last_mut().unwrap() = 0xff;
        assert!(FromWorker::decode(&not_utf8).unwrap_err().to_string().contains("reason is not UTF-8"));
        let authenticated = FromWorker::Authenticated { session: 1, peer: "p".into(), key: [0; 32] }.encode().unwrap();
        assert!(FromWorker::decode(&body(&authenticated)[..20]).unwrap_err().to_string().contains("truncated"));
    }

    #[test]
    fn long_text_is_cut_at_a_character_not_refused() {
        let reason = "é".repeat(MAX_TEXT);
        let decoded = FromWorker::decode(body(&FromWorker::Ended { session: 1, reason, told_peer: false }.encode().unwrap())).unwrap();
        let FromWorker::Ended { reason, .. } = decoded else { panic!() };
        assert!(reason.len() <= MAX_TEXT && reason.chars().all(|c| c == 'é'));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics_and_what_decodes_encodes_back(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = FromWorker::decode(&bytes) {
                let encoded = m.encode().unwrap();
                prop_assert_eq!(body(&encoded), &bytes[..]);
                if let FromWorker::Frame { session, wire_bytes, body } = &m {
                    prop_assert_eq!(FromWorker::encode_frame(*session, *wire_bytes, body).unwrap(), encoded);
                }
            }
            if let Ok(m) = ToWorker::decode(&bytes) {
                let encoded = m.encode().unwrap();
                prop_assert_eq!(body(&encoded), &bytes[..]);
            }
        }
    }
}
