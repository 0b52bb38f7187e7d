//! Every event the console prints is also an entry of the audit log on the data disk
//! (`vault_store::audit`): the exact JSON line, in the order printed. Printing never waits for
//! the disk: [`record`] queues the line, and one writer thread appends what has queued, signs a
//! checkpoint with the vault key, and prints it (`audit_checkpoint`) whenever the log grew.
//!
//! Lines printed before the data disk is open (the boot, the policy) queue until the writer
//! starts, up to [`MAX_QUEUED`] lines and [`MAX_QUEUED_BYTES`]; past that, and while the log cannot be written, lines are
//! counted as dropped and the count is an alarm. Progress lines that say nothing new (`status`,
//! `seal_step`, `gc_step`) and the checkpoint lines themselves are not logged.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use vault_core::audit::checkpoint::Checkpoint;
use vault_core::audit::witness::LogEvidence;
use vault_core::keys::PublicKey;

use crate::events::{Event, EventLog};
use crate::identity::VaultIdentity;

/// Lines waiting for the writer, at most, and their bytes at most (a line can be 64 KiB).
pub const MAX_QUEUED: usize = 16_384;
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
/// Lines appended (and covered by one checkpoint) at most at once.
const MAX_BATCH: usize = 4096;

/// Event kinds that are not logged: progress and heartbeat lines, and the log's own checkpoints.
pub const NOT_LOGGED: [&str; 5] = ["status", "seal_step", "gc_step", "export_step", "audit_checkpoint"];

#[derive(Default)]
struct Queue {
    /// Whether this process keeps an audit log at all (the daemon does; tools and tests do not).
    on: bool,
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped: u64,
    /// Lines taken by the writer and not yet in the log (see [`flush`]).
    writing: usize,
}

impl Queue {
    /// Queues `line`, or counts it dropped when a bound would be passed.
    fn offer(&mut self, line: &str) {
        if self.lines.len() >= MAX_QUEUED || self.bytes + line.len() > MAX_QUEUED_BYTES || line.len() > vault_core::audit::tiles::MAX_ENTRY_BYTES {
            self.dropped += 1;
        } else {
            self.bytes += line.len();
            self.lines.push_back(line.as_bytes().to_vec());
        }
    }
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue { on: false, lines: VecDeque::new(), bytes: 0, dropped: 0, writing: 0 });
static WAKE: Condvar = Condvar::new();
static WRITER: OnceLock<()> = OnceLock::new();

/// From now on this process logs its events (the daemon calls this first thing).
pub fn keep_from_now() {
    QUEUE.lock().expect("audit queue").on = true;
}

/// Queues a printed line of kind `kind` for the log.
pub fn record(kind: &str, line: &str) {
    if NOT_LOGGED.contains(&kind) {
        return;
    }
    let mut queue = QUEUE.lock().expect("audit queue");
    if !queue.on {
        return;
    }
    queue.offer(line);
    drop(queue);
    WAKE.notify_one();
}

/// Waits (at most `within`) until every line queued so far is in the log: the daemon's last act
/// before it exits, so its last words are evidence too. Returns at once where no writer runs.
pub fn flush(within: std::time::Duration) {
    if WRITER.get().is_none() {
        return;
    }
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        let queue = QUEUE.lock().expect("audit queue");
        if queue.lines.is_empty() && queue.writing == 0 {
            return;
        }
        drop(queue);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Starts the writer for the log under `store` (once per process: a daemon restarted after a
/// panic keeps the writer it had). What opening found is said on `events`.
pub fn start(store: &Path, identity: Arc<VaultIdentity>, mut events: EventLog) {
    if WRITER.set(()).is_err() {
        return;
    }
    let store: PathBuf = store.to_path_buf();
    let now = vault_io::clock_now;
    let opened = vault_store::audit::AuditLog::open(&store, &identity.public);
    let mut log = match opened {
        Ok((log, recovery)) => {
            events.emit(now(), &Event::AuditLogOpened { origin: log.origin().to_string(), entries: log.size(), signed: recovery.signed, appended_again: recovery.appended_again });
            Some(log)
        }
        Err(e) => {
            let detail =
                format!("the audit log under {} cannot be opened ({e}); it is left as it is for investigation and nothing more is logged until it is repaired; the vault goes on", store.display());
            events.emit(now(), &Event::Alarm { rule: "audit_log_failed".into(), detail });
            None
        }
    };
    let mut said = events.sibling();
    let spawned = std::thread::Builder::new().name("audit-writer".into()).spawn(move || loop {
        let (batch, dropped) = {
            let mut queue = QUEUE.lock().expect("audit queue");
            while queue.lines.is_empty() && queue.dropped == 0 {
                queue = WAKE.wait(queue).expect("audit queue");
            }
            let take = queue.lines.len().min(MAX_BATCH);
            let batch: Vec<Vec<u8>> = queue.lines.drain(..take).collect();
            queue.bytes -= batch.iter().map(Vec::len).sum::<usize>();
            queue.writing = batch.len();
            (batch, std::mem::take(&mut queue.dropped))
        };
        let done = || QUEUE.lock().expect("audit queue").writing = 0;
        let Some(writer) = log.as_mut() else {
            done();
            continue;
        };
        if dropped > 0 {
            events.emit(
                now(),
                &Event::Alarm {
                    rule: "audit_lines_dropped".into(),
                    detail: format!("{dropped} event line(s) could not be queued for the audit log (the queue was full or a line too long); they were printed on the console only"),
                },
            );
        }
        let written = writer.append(&batch).and_then(|()| writer.sign(&identity.key));
        match written {
            Ok(Some(_)) => {
                let signed = writer.signed().expect("just signed");
                events.emit(now(), &Event::AuditCheckpoint { origin: signed.origin.clone(), entries: signed.size, root: signed.root_base64() });
            }
            Ok(None) => {}
            Err(e) => {
                events.emit(
                    now(),
                    &Event::Alarm { rule: "audit_log_failed".into(), detail: format!("appending to the audit log failed ({e}); nothing more is logged until the vault restarts; the vault goes on") },
                );
                log = None;
            }
        }
        done();
    });
    if let Err(e) = spawned {
        said.emit(now(), &Event::Alarm { rule: "audit_log_failed".into(), detail: format!("the audit writer thread did not start ({e})") });
    }
}

/// What a receipt carries about the log under `store`: the newest signed checkpoint and the proof
/// that it extends the checkpoint of `known` entries the pusher holds. Read from the disk, without
/// the writer: tiles only grow, and the checkpoint file is replaced whole. `None` while the log
/// has no checkpoint yet. A checkpoint the vault cannot open or prove from is still sent, without
/// a proof: the pusher, not the vault, judges it (and refuses it).
pub fn evidence(store: &Path, vault_key: &PublicKey, known: u64) -> Option<LogEvidence> {
    let note = vault_store::audit::read_checkpoint(store).ok().flatten()?;
    let proof =
        Checkpoint::open(&note, vault_key).ok().filter(|newest| known <= newest.size).and_then(|newest| vault_store::audit::consistency_proof(store, known, newest.size).ok()).unwrap_or_default();
    Some(LogEvidence { checkpoint: String::from_utf8_lossy(&note).into_owned(), proof_from: known, proof })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_lines_and_bytes_and_counts_what_it_drops() {
        let mut queue = Queue { on: true, ..Queue::default() };
        let line = "x".repeat(1000);
        for _ in 0..MAX_QUEUED + 5 {
            queue.offer(&line);
        }
        assert_eq!((queue.lines.len(), queue.dropped), (MAX_QUEUED, 5));
        let mut queue = Queue { on: true, ..Queue::default() };
        let big = "y".repeat(60_000);
        for _ in 0..400 {
            queue.offer(&big);
        }
        assert_eq!(queue.lines.len(), MAX_QUEUED_BYTES / 60_000);
        assert!(queue.bytes <= MAX_QUEUED_BYTES);
        queue.offer(&"z".repeat(70_000));
        assert_eq!(queue.dropped, 400 - (MAX_QUEUED_BYTES / 60_000) as u64 + 1, "a line too long for an entry is dropped");
    }
}
