//! Every event is one JSON line on stdout (the console), numbered and stamped with the
//! vault's time, so an operator or a test harness can follow the box from outside. The
//! hash-chained audit log (later) will take the same `Event` values.

use std::io::Write;

use serde::Serialize;
use vault_core::units::Timestamp;

use crate::link::LinkConfirmation;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    PolicyAccepted {
        version: u64,
        payload_sha256: String,
        signers: Vec<String>,
        expires: String,
    },
    RootRotated {
        from_version: u64,
        to_version: u64,
    },
    PolicyRefused {
        source: String,
        reason: String,
    },
    /// The bundle presented is the very one in force (a stick left in, presented again):
    /// nothing to do, and nothing wrong.
    PolicyUnchanged {
        source: String,
        version: u64,
    },
    /// At start, the accepted policy did not verify again under the root in force (a
    /// re-imaged root, an altered state directory): not obeyed, the vault stays sealed.
    PolicyDropped {
        version: u64,
        reason: String,
    },
    /// The daemon started; what it runs under.
    /// `uptime_ms`: milliseconds since the kernel started (boot time, on the appliance).
    Started {
        policy_version: Option<u64>,
        time_floor: String,
        uptime_ms: Option<u64>,
    },
    /// PID 1 is up (the appliance): pseudo filesystems mounted.
    Boot {
        uptime_ms: Option<u64>,
    },
    ModuleLoadFailed {
        module: String,
        reason: String,
    },
    /// The drivers a phase (`boot` before sealing, `usb` after) loaded for this hardware, and
    /// whether the kernel refuses unsigned modules (`module.sig_enforce`; None: unknown).
    ModulesLoaded {
        phase: String,
        modules: Vec<String>,
        signatures_enforced: Option<bool>,
        uptime_ms: Option<u64>,
    },
    /// The last module is loaded; `modules_disabled`: the kernel now refuses any other until
    /// it reboots, and the thread that could load them has ended.
    ModuleLoadingEnded {
        modules_disabled: bool,
    },
    /// The data partition, found by its GPT name, mounted nosuid, nodev, noexec.
    DataMounted {
        device: String,
        at: String,
        uptime_ms: Option<u64>,
    },
    /// A gate phase change, with why.
    StateChanged {
        from: String,
        to: String,
        reason: String,
    },
    /// Netlink confirmed a NIC up (or down) after the gatekeeper asked.
    LinkUp {
        why: String,
        confirmation: LinkConfirmation,
    },
    LinkDown {
        why: String,
        confirmation: LinkConfirmation,
    },
    Listening {
        address: String,
    },
    StopAccepting,
    SessionsAborted,
    SessionStarted {
        peer: String,
    },
    SessionEnded {
        peer: String,
    },
    Committed {
        pusher: String,
        dataset: String,
    },
    /// The vault's public key (pushers pin it), printed at every start.
    VaultIdentity {
        key: String,
    },
    /// The store after start-up recovery. `immutable_fixed`: sealed paths that had lost their
    /// immutable flag (a power cut inside a seal) and got it back, at most
    /// [`MAX_LISTED_PATHS`] of them, then how many more. `owned_chunks`: (pusher, chunk)
    /// pairs known, what `have` answers from.
    StoreOpened {
        snapshots: usize,
        chunks: usize,
        staging_removed: usize,
        orphan_packs_removed: usize,
        immutable_fixed: Vec<String>,
        owned_chunks: usize,
        expiries_finished: usize,
    },
    SessionAccepted {
        peer: String,
        pusher: String,
    },
    /// A snapshot past its `retain_until` left the store (vault time; see
    /// `vault_core::lifecycle::retention`). Its chunks stay until garbage collection.
    SnapshotExpired {
        snapshot: String,
        pusher: String,
        dataset: String,
        received_at: String,
        retain_until: String,
    },
    /// One expiry run: how many went, how many past their time were kept and why, snapshots
    /// never expired because their receipt cannot be read, and when the next one falls due.
    ExpiryRan {
        at: String,
        expired: usize,
        kept_as_newest: usize,
        kept_by_hold: usize,
        unreadable_kept: Vec<String>,
        stopped_early: bool,
        next_due: Option<String>,
    },
    /// One garbage collection: chunks the snapshots need, packs removed (no snapshot needed
    /// them, or rewritten) and the bytes that freed, packs kept because they hold enough needed
    /// chunks or are younger than the grace, and the repack: mostly dead packs rewritten, the new
    /// packs written, the chunks and bytes copied into them, packs not rewritten and why.
    GarbageCollected {
        live_chunks: usize,
        packs_removed: usize,
        bytes_freed: u64,
        packs_kept_live: usize,
        packs_kept_young: usize,
        packs_repacked: usize,
        packs_written: usize,
        chunks_copied: u64,
        bytes_copied: u64,
        repack_skipped: Vec<String>,
        stopped_early: bool,
        took_ms: u64,
    },
    /// The audit log was opened at start: its origin, its entries, how many the last signed
    /// checkpoint covers, and those found past it (a cut before their checkpoint), appended again.
    AuditLogOpened {
        origin: String,
        entries: u64,
        signed: u64,
        appended_again: u64,
    },
    /// The audit log grew and the vault signed a checkpoint of it (not itself logged): what every
    /// receipt from now on carries.
    AuditCheckpoint {
        origin: String,
        entries: u64,
        root: String,
    },
    /// A collection passed a step on the disk (said only under the power-cut test hook; see
    /// [`vault_store::GcStep`]).
    GcStep {
        pack: String,
        step: vault_store::GcStep,
    },
    /// The store's filesystem, once a day: used, free, the reserve pushes never take, the used
    /// share, the last 30 days' new bytes, and the days until full at that rate (none without
    /// ingest). Alarms `capacity_warning` (80 %) and `capacity_critical` (90 %) when crossed.
    Capacity {
        used_bytes: u64,
        free_bytes: u64,
        reserve_bytes: u64,
        used_percent: u64,
        ingest_30d_bytes: u64,
        days_until_full: Option<u64>,
        snapshots: usize,
    },
    /// A push stored chunks again that a scrub had found bad with no good copy: the store is
    /// whole again for them (`chunks`: their ids).
    ChunksHealed {
        snapshot: String,
        chunks: Vec<String>,
    },
    /// A scrub: what it read, the bad copies it found (pack, chunk, why), the chunks no good copy
    /// holds any more and the snapshots that need them, and how long it took.
    ScrubFinished {
        packs: usize,
        chunks: u64,
        bytes: u64,
        found: Vec<String>,
        unrecoverable_chunks: usize,
        snapshots_affected: Vec<String>,
        stopped_early: bool,
        took_ms: u64,
    },
    /// A restore drill ran: the snapshots it rebuilt into a null sink, what it read, the errors
    /// it found, the restore rate it implies, and its report as signed by the vault key
    /// (`report`: canonical JSON; `signature`: base64 Ed25519 over its domain-separated hash).
    DrillFinished {
        snapshots: Vec<String>,
        files: u64,
        bytes: u64,
        errors: u64,
        bytes_per_sec: u64,
        took_ms: u64,
        seed: String,
        stopped_early: bool,
        report: String,
        signature: String,
    },
    /// An order from a stick was verified and recorded. `executes_at`: a purge's end of cooling-off.
    OrderAccepted {
        source: String,
        kind: String,
        order: String,
        signers: Vec<String>,
        reason: String,
        executes_at: Option<String>,
    },
    /// An order from a stick was refused, with the rule and values; nothing changed.
    OrderRefused {
        source: String,
        reason: String,
    },
    /// A purge order's cooling-off ended and it was carried out: the snapshots it deleted,
    /// those it could not because a hold covers them, and every one it named that a rule kept
    /// (`id: rule`: a hold, the root's min_retain, sealed after the order).
    PurgeExecuted {
        order: String,
        reason: String,
        signers: Vec<String>,
        expired: Vec<String>,
        kept_held: Vec<String>,
        kept: Vec<String>,
    },
    /// An export was written onto a removable medium, read back from it, and made visible
    /// there: what it holds (`missing`: snapshots the order named that were no longer sealed).
    /// `adopted`: the vault sealed the medium with this export (its first use).
    /// `removed_unfinished`: exports a pulled medium or a stopped vault had left unfinished there.
    /// `rotation`: written for the policy's rotation (`order` is then the rotation's hash).
    ExportWritten {
        order: String,
        rotation: bool,
        export: String,
        medium: String,
        medium_name: String,
        adopted: bool,
        snapshots: Vec<String>,
        missing: Vec<String>,
        packs: usize,
        files: usize,
        bytes: u64,
        took_ms: u64,
        removed_unfinished: Vec<String>,
    },
    /// A medium that came back was checked before anything on it was replaced: its exports, the
    /// files and bytes re-hashed, and every problem found (none: as the vault wrote it).
    MediumVerified {
        medium: String,
        medium_name: String,
        exports: Vec<String>,
        files: usize,
        bytes: u64,
        problems: Vec<String>,
    },
    /// A rotation's new export was read back, and these older ones were removed (beyond `keep`).
    ExportsRemoved {
        medium: String,
        medium_name: String,
        exports: Vec<String>,
        keep: u32,
    },
    /// Test hook only (`vault.seal_step_pause_ms`): an export's file is durable on the medium.
    ExportStep {
        file: String,
    },
    /// An export order could not be carried out on this medium, and why; nothing sealed was
    /// touched, the order stays pending, and the medium holds at most an unfinished export.
    ExportFailed {
        order: String,
        medium: String,
        reason: String,
    },
    /// A medium was looked at and nothing was written: not a medium, not ours, or no export order
    /// names it.
    MediumIgnored {
        source: String,
        reason: String,
    },
    /// A purge order reached its expiry before it could be carried out: it deleted nothing.
    PurgeLapsed {
        order: String,
        reason: String,
        expired_at: String,
    },
    /// A window's session worker is up and confined: its own uid and gid, no capabilities, no
    /// filesystem (see [`crate::session_worker`]).
    SessionWorkerStarted {
        pid: u32,
        uid: u32,
        gid: u32,
    },
    /// A connection or session refused, with the rule and values.
    SessionRefused {
        peer: String,
        pusher: Option<String>,
        reason: String,
    },
    /// At a window's end: strangers' refused connections past the budget of those recorded
    /// one by one per source (`source: count`, most first), only counted.
    RefusalsCounted {
        sources: Vec<String>,
        total: u64,
    },
    /// `seal_ms`: from the commit to the snapshot being durable and visible (fsyncs, renames).
    SnapshotSealed {
        snapshot: String,
        pusher: String,
        dataset: String,
        files: u64,
        logical_bytes: u64,
        bytes_new: u64,
        retain_until: String,
        seal_ms: u64,
    },
    /// The filesystem would not mark a sealed file immutable; it was made read-only instead.
    ImmutableFallback {
        path: String,
        reason: String,
    },
    /// A seal passed a step (the power-cut tests cut at each; see [`vault_store::SealStep`]).
    SealStep {
        snapshot: String,
        step: vault_store::SealStep,
    },
    Alarm {
        rule: String,
        detail: String,
    },
    /// The ransomware signals judged a sealed snapshot suspect: its dataset's snapshots are
    /// held (and its pusher refused, when `closed`) until a release order names it.
    SnapshotSuspect {
        snapshot: String,
        pusher: String,
        dataset: String,
        signals: Vec<String>,
        closed: bool,
    },
    /// Signals fired on a sealed snapshot without making it suspect (one weak signal alone).
    SignalsObserved {
        snapshot: String,
        signals: Vec<String>,
    },
    TimeFloorPersisted {
        floor: String,
    },
    Stopped {
        reason: String,
    },
    /// PID 1 cannot go on: why. The links stay down and the process waits (exiting would
    /// panic the kernel).
    Fatal {
        reason: String,
        uptime_ms: Option<u64>,
    },
    /// A thread panicked (printed by the panic hook, whatever thread it was).
    Panicked {
        thread: String,
        message: String,
        location: String,
    },
    /// The daemon panicked and PID 1 started it again; it seals every NIC before anything else.
    DaemonRestarted {
        restarts_this_hour: u32,
    },
    /// The console's summary line: on every state change and every minute.
    Status {
        state: String,
        policy_version: Option<u64>,
        open_until: Option<String>,
        next_open: Option<String>,
        last_commit: Option<String>,
        alarms_latched: bool,
        /// When the last whole scrub started, what it found, and when the next is due.
        last_scrub: Option<String>,
        last_scrub_result: Option<String>,
        next_scrub: Option<String>,
        /// When the last restore drill started, its summary, and when the next is due.
        last_drill: Option<String>,
        last_drill_result: Option<String>,
        next_drill: Option<String>,
        /// The store's filesystem (statvfs): bytes in use, and free for an unprivileged
        /// writer; `None` when it cannot be read. Pushes stop at the reserve above zero.
        store_used_bytes: Option<u64>,
        store_free_bytes: Option<u64>,
        /// Datasets held because a snapshot was judged suspect (`pusher/dataset`, or
        /// `pusher/*` for all of a pusher's), each with that snapshot: waiting for a release.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        suspect_holds: Vec<String>,
    },
    UsbInserted {
        device: String,
    },
    UsbRemoved {
        device: String,
    },
    /// Capabilities left after start-up; every other one is gone for good.
    CapabilitiesDropped {
        kept: Vec<String>,
    },
    /// PID 1 fixed the kernel's settings at boot ([`crate::init::KERNEL_HARDENING`]): what it set
    /// and what this kernel does not have.
    KernelHardened {
        set: Vec<String>,
        absent: Vec<String>,
    },
    /// The root filesystem (the initramfs) was made read-only.
    RootReadOnly,
}

/// How many paths an event lists before it only counts the rest (one console line each).
pub const MAX_LISTED_PATHS: usize = 32;

/// `paths` for an event: the first [`MAX_LISTED_PATHS`], then `... and N more`.
pub fn listed_paths<I: IntoIterator<Item = String>>(paths: I) -> Vec<String> {
    let mut listed = Vec::new();
    let mut more = 0usize;
    for path in paths {
        if listed.len() < MAX_LISTED_PATHS {
            listed.push(path);
        } else {
            more += 1;
        }
    }
    if more > 0 {
        listed.push(format!("... and {more} more"));
    }
    listed
}

/// The kind of a printed line: the `event` tag, which [`Line`] puts right after `seq` and `time`
/// (a snake_case name, never escaped).
fn kind_of(line: &str) -> &str {
    line.split_once(",\"event\":\"").and_then(|(_, rest)| rest.split_once('"')).map_or("", |(kind, _)| kind)
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    time: String,
    #[serde(flatten)]
    event: &'a Event,
}

/// One sequence per process, whichever log prints: a line printed after the daemon has
/// stopped (PID 1's last words) still follows the daemon's last.
static LAST_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Numbers events in the order they happen.
#[derive(Debug, Default)]
pub struct EventLog {
    /// Keep a copy of each line with when it was emitted (tests read them back).
    pub keep: bool,
    pub kept: Vec<(std::time::Instant, String)>,
    /// The screen (tty0) on the appliance; the serial console is stdout.
    screen: Option<std::fs::File>,
}

impl EventLog {
    /// Also writes every line to the screen, so the same image is watched on a monitor as on
    /// the serial port. Best effort: a box without a screen has none.
    pub fn mirror_to_screen(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: a screen stopped with Scroll Lock must not stop the vault.
        self.screen = std::fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY).open("/dev/tty0").ok();
    }

    /// Another log onto the same console (and screen, if this one mirrors to it), for a
    /// thread of its own; lines stay numbered in one sequence.
    pub fn sibling(&self) -> EventLog {
        let mut log = EventLog::default();
        if self.screen.is_some() {
            log.mirror_to_screen();
        }
        log
    }

    pub fn emit(&mut self, now: Timestamp, event: &Event) -> String {
        // Numbered under the console lock, so lines from two threads print in order.
        let mut out = std::io::stdout().lock();
        let seq = LAST_SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let line = serde_json::to_string(&Line { seq, time: now.to_string(), event }).expect("events serialize");
        // The console is best effort: a full pipe must never stop the vault from closing.
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
        if let Some(screen) = &mut self.screen {
            let _ = writeln!(screen, "{line}");
        }
        if self.keep {
            self.kept.push((std::time::Instant::now(), line.clone()));
        }
        crate::audit::record(kind_of(&line), &line);
        line
    }
}
