//! PID 1 on the appliance. The image has no other init, no shell and no getty: the kernel
//! runs the gatekeeper as `/init` from the initramfs, and this module does the little an init
//! must before the daemon starts: mount /proc, /sys, /dev and /run, load the kernel modules
//! the build resolved that this hardware needs (`/etc/vault/modules.list`, see
//! [`crate::modules`]; dependencies first, with finit_module), find the data partition by its
//! GPT name (never by device name, so virtio, SATA and NVMe disks all work), mount it nosuid,
//! nodev, noexec, and reap any child. Then
//! it runs the daemon, which seals every NIC before anything else.
//!
//! A fatal error never returns (PID 1 exiting would panic the kernel): it is printed on the
//! console, the links stay down (nothing ever brought them up), and the process waits.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use crate::error::{GatekeeperError, Result};
use crate::modules::{ModulePlan, Phase};

/// Paths inside the image.
pub const ROOT_TOML: &str = "/etc/vault/root.toml";
pub const MODULES_LIST: &str = "/etc/vault/modules.list";
pub const DATA_MOUNT: &str = "/data";
/// Where a policy stick is mounted while its bundle is read (on the /run tmpfs).
pub const USB_MOUNT: &str = "/run/usb";
/// The data partition's GPT partition name, set by the image builder.
pub const DATA_PARTNAME: &str = "vault-data";
const DATA_WAIT: Duration = Duration::from_secs(20);

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// The kernel command line parameter that pauses after each seal step, in milliseconds: a
/// fault-injection point for the power-cut tests, which cut the power inside the pause. It
/// only delays a seal (never reorders or skips a step) and the command line is part of the
/// signed boot image, so only who builds the image can set it; the daemon says so at start.
pub const SEAL_STEP_PAUSE_PARAM: &str = "vault.seal_step_pause_ms";
/// The longest pause the parameter may ask for.
pub const MAX_SEAL_STEP_PAUSE: Duration = Duration::from_secs(10);

/// The seal-step pause the kernel command line asks for (`vault.seal_step_pause_ms=N`),
/// capped at [`MAX_SEAL_STEP_PAUSE`]; none when absent or not a number.
pub fn seal_step_pause(cmdline: &str) -> Option<Duration> {
    let value = cmdline.split_whitespace().find_map(|word| word.strip_prefix(SEAL_STEP_PAUSE_PARAM)?.strip_prefix('='))?;
    let ms: u64 = value.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms).min(MAX_SEAL_STEP_PAUSE))
}

/// A test hook on the kernel command line (`vault.panic_once_open=1`): the daemon panics the
/// first time a window opens, so the QEMU suite can prove that PID 1 survives a panic, seals,
/// and serves the window again. Like the seal-step pause, only who builds the image can set
/// it, and the daemon says so at start.
pub const PANIC_ONCE_OPEN_PARAM: &str = "vault.panic_once_open";

/// True when the command line carries `vault.panic_once_open=1`.
pub fn panic_once_open(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|word| word == format!("{PANIC_ONCE_OPEN_PARAM}=1"))
}

/// How many times in an hour PID 1 starts a panicked daemon again before it gives up and
/// halts, sealed: a bug that fires at every start must not make the link flap for ever.
pub const MAX_RESTARTS_PER_HOUR: u32 = 5;

/// Prints every panic, of any thread, as a `panicked` event (never panicking itself), instead
/// of the default text. PID 1 then decides what the panic means.
pub fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let message = info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let mut events = crate::events::EventLog::default();
        events.mirror_to_screen();
        events.emit(vault_io::clock_now(), &crate::events::Event::Panicked { thread, message, location });
    }));
}

/// Milliseconds since the kernel started (for boot-time reports).
pub fn uptime_ms() -> Option<u64> {
    let secs: f64 = std::fs::read_to_string("/proc/uptime").ok()?.split_whitespace().next()?.parse().ok()?;
    // why: whole milliseconds are meant (the fraction dropped); `as` saturates, so a nonsense value cannot wrap.
    #[allow(clippy::cast_possible_truncation)]
    let ms = (secs * 1000.0) as u64;
    Some(ms)
}

fn nix_err(what: &'static str) -> impl FnOnce(nix::Error) -> GatekeeperError {
    move |errno| GatekeeperError::Io { what, source: std::io::Error::from(errno) }
}

/// The kernel's own filesystems.
pub fn mount_pseudo_filesystems() -> Result<()> {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    for (source, target, fstype, flags) in
        [("proc", "/proc", "proc", hardened), ("sysfs", "/sys", "sysfs", hardened), ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC), ("tmpfs", "/run", "tmpfs", hardened)]
    {
        let _ = std::fs::create_dir_all(target);
        mount(Some(source), target, Some(fstype), flags, None::<&str>).map_err(nix_err(target_name(target)))?;
    }
    Ok(())
}

/// Kernel settings PID 1 fixes at boot, before any driver loads or the daemon starts: where a
/// crash's core would go (nowhere: a path under /proc, never a pipe to a helper that would run
/// with every capability), and the switches that keep an unprivileged process (the session
/// worker) from the kernel's larger attack surfaces or from reading its secrets. Each is
/// `/proc/sys/<key>`; keys this kernel does not have are listed as absent.
pub const KERNEL_HARDENING: [(&str, &str); 14] = [
    ("kernel/core_pattern", "/proc/no-core-dumps"),
    ("fs/suid_dumpable", "0"),
    ("kernel/kptr_restrict", "2"),
    ("kernel/dmesg_restrict", "1"),
    ("kernel/perf_event_paranoid", "3"),
    ("kernel/unprivileged_bpf_disabled", "1"),
    ("net/core/bpf_jit_harden", "2"),
    ("user/max_user_namespaces", "0"),
    ("vm/unprivileged_userfaultfd", "0"),
    ("kernel/kexec_load_disabled", "1"),
    // The magic SysRq keys on any keyboard (a stick can pose as one) could sync-less reboot.
    ("kernel/sysrq", "0"),
    ("fs/protected_symlinks", "1"),
    ("fs/protected_hardlinks", "1"),
    ("kernel/yama/ptrace_scope", "3"),
];

/// What [`harden_kernel`] did.
#[derive(Debug, Default)]
pub struct Hardened {
    pub set: Vec<String>,
    pub absent: Vec<String>,
    /// Keys present that would not take the value, with why.
    pub failed: Vec<String>,
}

/// Writes [`KERNEL_HARDENING`], and no core dumps for PID 1 and all it starts (RLIMIT_CORE 0).
pub fn harden_kernel() -> Hardened {
    let mut done = Hardened::default();
    if let Err(e) = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0) {
        done.failed.push(format!("RLIMIT_CORE 0: {}", e.desc()));
    }
    for (key, value) in KERNEL_HARDENING {
        let path = Path::new("/proc/sys").join(key);
        if !path.exists() {
            done.absent.push(key.to_string());
            continue;
        }
        match std::fs::write(&path, value) {
            Ok(()) => done.set.push(format!("{key}={value}")),
            Err(e) => done.failed.push(format!("{key}={value}: {e}")),
        }
    }
    done
}

fn target_name(target: &str) -> &'static str {
    match target {
        "/proc" => "mount /proc",
        "/sys" => "mount /sys",
        "/dev" => "mount /dev",
        _ => "mount /run",
    }
}

/// Reads the image's module plan ([`ModulePlan`]); a plan that does not parse is fatal, since
/// the image is then not the one that was built.
pub fn read_module_plan(path: &Path) -> Result<ModulePlan> {
    let text = std::fs::read_to_string(path).map_err(|source| GatekeeperError::Io { what: "read the module plan", source })?;
    ModulePlan::parse(&text).map_err(|reason| GatekeeperError::Io { what: "read the module plan", source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason) })
}

/// What one phase of module loading did.
#[derive(Debug)]
pub struct Coldplug {
    /// Every module tried, loaded or not (a failure is reported once, not retried).
    pub tried: BTreeSet<String>,
    /// In load order.
    pub loaded: Vec<String>,
    pub failures: Vec<(String, String)>,
    /// The data partition, or why there is none yet (boot phase only).
    pub data: std::result::Result<PathBuf, String>,
}

impl Default for Coldplug {
    fn default() -> Coldplug {
        Coldplug { tried: BTreeSet::new(), loaded: Vec::new(), failures: Vec::new(), data: Err("not looked for yet".into()) }
    }
}

impl Coldplug {
    /// Loads `names` (dependencies first) that were not tried yet; returns how many it tried.
    fn load(&mut self, plan: &ModulePlan, names: &[&str]) -> usize {
        let order = plan.load_order(names, &self.tried);
        for (name, path) in &order {
            match load_module(path) {
                Ok(()) => self.loaded.push(name.clone()),
                Err(reason) => self.failures.push((name.clone(), reason)),
            }
            self.tried.insert(name.clone());
        }
        order.len()
    }
}

/// Everything before sealing. First the disk controllers, one at a time in the plan's order,
/// rescanning after each (virtio_pci's children, the disks behind ahci appear as they probe),
/// until the data partition shows or [`DATA_WAIT`] runs out. Then the data filesystem and the
/// NIC drivers for the NICs that are here, so the daemon seals every NIC there will be.
/// A module already there, or one for hardware this box lacks (ENODEV), is fine; any other
/// failure is reported and loading goes on, so one broken driver cannot keep the vault from
/// sealing its links and saying why.
pub fn coldplug_boot(plan: &ModulePlan) -> Coldplug {
    let started = Instant::now();
    let mut coldplug = Coldplug::default();
    loop {
        coldplug.data = find_data_partition(Path::new("/sys/class/block"), Path::new("/dev"));
        if coldplug.data.is_ok() || started.elapsed() > DATA_WAIT {
            break;
        }
        let next = plan.wanted(Phase::Disk, &device_modaliases(Path::new(SYSFS_BUS))).into_iter().find(|name| !coldplug.tried.contains(*name));
        match next {
            Some(driver) => {
                coldplug.load(plan, &[driver]);
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    while coldplug.load(plan, &plan.wanted(Phase::Boot, &device_modaliases(Path::new(SYSFS_BUS)))) > 0 {}
    coldplug
}

/// The USB phase, on a thread of its own at idle priority so it never delays sealing: what a
/// policy stick needs (vfat, code pages, sd_mod, usb-storage, uas), then the host controllers
/// that are here, last, so no stick shows before its drivers. It must start before
/// [`drop_capabilities`]: capabilities belong to threads, so this one keeps CAP_SYS_MODULE, and
/// only that: it drops the rest before this function returns. When it is done it switches
/// module loading off for good (`kernel.modules_disabled`), then ends.
pub fn start_usb_coldplug(plan: ModulePlan, tried_at_boot: BTreeSet<String>) {
    let (narrowed_tx, narrowed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let narrowed = keep_only_capabilities(&[caps::Capability::CAP_SYS_MODULE]);
        let _ = narrowed_tx.send(());
        lower_own_priority();
        let mut coldplug = Coldplug { tried: tried_at_boot, ..Coldplug::default() };
        let modules_disabled = match narrowed {
            Ok(_) => {
                coldplug.load(&plan, &plan.wanted(Phase::Usb, &device_modaliases(Path::new(SYSFS_BUS))));
                match switch_module_loading_off() {
                    Ok(()) => true,
                    Err(e) => {
                        coldplug.failures.push(("(switching module loading off)".into(), e.to_string()));
                        false
                    }
                }
            }
            // Loading with more privilege than it needs is not an option: no USB, and say so.
            Err(e) => {
                coldplug.failures.push(("(the USB phase)".into(), e.to_string()));
                false
            }
        };
        let mut events = crate::events::EventLog::default();
        events.mirror_to_screen();
        report_coldplug(&mut events, "usb", &coldplug);
        events.emit(vault_io::clock_now(), &crate::events::Event::ModuleLoadingEnded { modules_disabled });
    });
    // Whatever happened there, the thread holds at most CAP_SYS_MODULE from here on.
    let _ = narrowed.recv();
}

/// Once `1`, the kernel loads no module until it reboots (a one-way switch).
const MODULES_DISABLED: &str = "/proc/sys/kernel/modules_disabled";

/// The kernel lists its loaded modules here only if it can load any (CONFIG_MODULES).
const PROC_MODULES: &str = "/proc/modules";

/// Makes the kernel refuse every module until it reboots. A kernel built without module
/// support (the minimal kernel) refuses them already and has no switch to turn.
fn switch_module_loading_off() -> std::io::Result<()> {
    if !Path::new(PROC_MODULES).exists() {
        return Ok(());
    }
    std::fs::write(MODULES_DISABLED, "1")
}

/// `modules_loaded` (and one `module_load_failed` per failure) for a phase.
pub fn report_coldplug(events: &mut crate::events::EventLog, phase: &str, coldplug: &Coldplug) {
    use crate::events::Event;
    for (module, reason) in &coldplug.failures {
        events.emit(vault_io::clock_now(), &Event::ModuleLoadFailed { module: module.clone(), reason: reason.clone() });
    }
    let signatures_enforced = std::fs::read_to_string("/sys/module/module/parameters/sig_enforce").ok().map(|v| v.trim() == "Y");
    events.emit(vault_io::clock_now(), &Event::ModulesLoaded { phase: phase.into(), modules: coldplug.loaded.clone(), signatures_enforced, uptime_ms: uptime_ms() });
}

/// SCHED_IDLE for the calling thread: it runs only when nothing else wants the CPU.
fn lower_own_priority() {
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler only reads `param`, a live local; pid 0 is the calling
    // thread. A failure leaves the priority as it was, which is harmless.
    unsafe {
        nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param);
    }
}

/// Where the kernel lists devices by bus.
const SYSFS_BUS: &str = "/sys/bus";

/// The modalias of every device on every bus (`/sys/bus/*/devices/*/modalias`).
pub fn device_modaliases(sys_bus: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for bus in std::fs::read_dir(sys_bus).into_iter().flatten().flatten() {
        for device in std::fs::read_dir(bus.path().join("devices")).into_iter().flatten().flatten() {
            if let Ok(alias) = std::fs::read_to_string(device.path().join("modalias")) {
                found.push(alias.trim().to_string());
            }
        }
    }
    found
}

fn load_module(path: &str) -> std::result::Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    match nix::kmod::finit_module(file.as_fd(), &CString::default(), nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENODEV) => Ok(()),
        Err(errno) => Err(errno.to_string()),
    }
}

/// The data partition: the one partition named [`DATA_PARTNAME`] whose GPT type is
/// [`vault_core::gpt::VAULT_DATA_TYPE`], on a disk that is neither removable nor on a USB bus.
/// A stick left in across a power cut (on a kernel with USB built in it can show before the
/// internal disk) is never it, whatever its partitions are named; two candidates are refused
/// rather than guessed between. `Err` says what was found and why none was taken.
pub fn find_data_partition(sys_class_block: &Path, dev: &Path) -> std::result::Result<PathBuf, String> {
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for entry in std::fs::read_dir(sys_class_block).map_err(|e| format!("{}: {e}", sys_class_block.display()))?.flatten() {
        let uevent = std::fs::read_to_string(entry.path().join("uevent")).unwrap_or_default();
        let field = |key: &str| uevent.lines().find_map(|l| l.strip_prefix(key)).map(str::to_string);
        let (Some(partname), Some(devname), Some(number)) = (field("PARTNAME="), field("DEVNAME="), field("PARTN=")) else { continue };
        if partname != DATA_PARTNAME {
            continue;
        }
        let device = dev.join(&devname);
        match data_partition_doubt(&entry.path(), dev, number.parse().unwrap_or(0)) {
            None => accepted.push(device),
            Some(doubt) => refused.push(format!("{}: {doubt}", device.display())),
        }
    }
    match accepted.len() {
        1 => Ok(accepted.remove(0)),
        0 => Err(format!(
            "no block device with GPT name `{DATA_PARTNAME}` and type {} on a fixed, non-USB disk{}",
            vault_core::gpt::VAULT_DATA_TYPE,
            if refused.is_empty() { String::new() } else { format!(" (refused: {})", refused.join("; ")) }
        )),
        _ => Err(format!(
            "{} data partitions ({}): the vault uses exactly one; take out the disks that are not this vault's",
            accepted.len(),
            accepted.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Why the partition at `partition_sysfs` (its `/sys/class/block` entry) is not the data
/// partition, if it is not.
fn data_partition_doubt(partition_sysfs: &Path, dev: &Path, number: u32) -> Option<String> {
    // Fail closed: a partition whose place in sysfs cannot be read is doubted, not taken.
    let real = match std::fs::canonicalize(partition_sysfs) {
        Ok(real) => real,
        Err(e) => return Some(format!("its sysfs entry is unreadable ({e})")),
    };
    if crate::usb::is_under_usb(&real.to_string_lossy()) {
        return Some("on a USB bus".into());
    }
    let Some((disk_sysfs, disk)) = real.parent().and_then(|parent| Some((parent, parent.file_name()?.to_string_lossy().to_string()))) else {
        return Some(format!("no disk above {}", real.display()));
    };
    match std::fs::read_to_string(disk_sysfs.join("removable")).map(|s| s.trim().to_string()) {
        Ok(flag) if flag == "0" => {}
        Ok(_) => return Some(format!("{disk} is removable media")),
        Err(e) => return Some(format!("{disk}: removable flag unreadable ({e})")),
    }
    match partition_type(disk_sysfs, &disk, dev, number) {
        Ok(found) if found == vault_core::gpt::VAULT_DATA_TYPE => None,
        Ok(found) => Some(format!("partition type {found}, not the vault's")),
        Err(e) => Some(e),
    }
}

/// The GPT type of partition `number` of `disk` (its sysfs directory `disk_sysfs`, its device
/// under `dev`), read from the disk's primary GPT at the disk's logical block size.
pub(crate) fn partition_type(disk_sysfs: &Path, disk: &str, dev: &Path, number: u32) -> std::result::Result<vault_core::gpt::Guid, String> {
    let block_size: u32 = std::fs::read_to_string(disk_sysfs.join("queue/logical_block_size")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(512);
    gpt_type_of(&dev.join(disk), number, block_size).map_err(|e| format!("GPT of {disk} unreadable: {e}"))
}

/// Reads partition `number`'s type from the disk's primary GPT: the header, then that entry.
fn gpt_type_of(disk: &Path, number: u32, block_size: u32) -> std::result::Result<vault_core::gpt::Guid, String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(disk).map_err(|e| e.to_string())?;
    let mut header = vec![0u8; vault_core::gpt::HEADER_LEN];
    file.read_exact_at(&mut header, u64::from(block_size)).map_err(|e| format!("header: {e}"))?;
    let (offset, size) = vault_core::gpt::entry_location(&header, number, block_size).map_err(|e| e.to_string())?;
    let mut entry = vec![0u8; size as usize];
    file.read_exact_at(&mut entry, offset).map_err(|e| format!("entry {number}: {e}"))?;
    vault_core::gpt::entry_type(&entry).map_err(|e| e.to_string())
}

/// Mounts the data partition the boot phase found.
pub fn mount_data(device: std::result::Result<PathBuf, String>) -> Result<PathBuf> {
    let device = device.map_err(|why| GatekeeperError::Io { what: "find the data partition", source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{why}, after {DATA_WAIT:?}")) })?;
    std::fs::create_dir_all(DATA_MOUNT).map_err(|source| GatekeeperError::Io { what: "create /data", source })?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
    mount(Some(&device), DATA_MOUNT, Some("ext4"), flags, None::<&str>).map_err(nix_err("mount the data partition"))?;
    Ok(device)
}

/// Makes the root filesystem (the initramfs) read-only: nothing on it changes after boot.
pub fn seal_root_filesystem() -> Result<()> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(nix_err("remount / read-only"))
}

/// What the daemon still needs once booted: link control and sysctls (NET_ADMIN), the egress
/// guard's packet sockets (NET_RAW), mounting a policy stick (SYS_ADMIN), marking sealed
/// files immutable (LINUX_IMMUTABLE), listening on the policy's port (NET_BIND_SERVICE), and
/// confining each window's session worker (SYS_CHROOT, SETUID, SETGID: an empty root, its own
/// uid and gid, which clears its capabilities). Module loading, raw I/O, ptrace, time, reboot
/// and the rest are gone from every set, the bounding set included, and no exec can gain them back.
pub const KEPT_CAPABILITIES: [caps::Capability; 8] = [
    caps::Capability::CAP_NET_ADMIN,
    caps::Capability::CAP_NET_RAW,
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_LINUX_IMMUTABLE,
    // A policy may name a port below 1024.
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETGID,
];

/// Drops every capability but [`KEPT_CAPABILITIES`]; returns the names kept.
pub fn drop_capabilities() -> Result<Vec<String>> {
    keep_only_capabilities(&KEPT_CAPABILITIES)
}

/// Drops, for the calling thread and what it starts, every capability but `keep`; returns the
/// names kept.
fn keep_only_capabilities(keep: &[caps::Capability]) -> Result<Vec<String>> {
    use caps::CapSet;
    let failed = |what: &'static str| move |e: caps::errors::CapsError| GatekeeperError::Io { what, source: std::io::Error::other(e.to_string()) };
    let keep: caps::CapsHashSet = keep.iter().copied().collect();
    // The bounding set first: that needs CAP_SETPCAP, which is about to go.
    for cap in caps::all().difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(failed("drop from the bounding set"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(failed("clear ambient capabilities"))?;
    caps::clear(None, CapSet::Inheritable).map_err(failed("clear inheritable capabilities"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(failed("set effective capabilities"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(failed("set permitted capabilities"))?;
    nix::sys::prctl::set_no_new_privs().map_err(nix_err("no_new_privs"))?;
    let mut kept: Vec<String> = caps::read(None, CapSet::Permitted).map_err(failed("read capabilities"))?.iter().map(|c| c.to_string()).collect();
    kept.sort();
    Ok(kept)
}

/// Makes the console (stdin, stdout and stderr share /dev/console) non-blocking: a serial
/// line held by flow control (XOFF) loses lines instead of stopping the vault.
pub fn console_never_blocks() -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let stdout = std::io::stdout();
    let flags = fcntl(&stdout, FcntlArg::F_GETFL).map_err(nix_err("console flags"))?;
    fcntl(&stdout, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK)).map_err(nix_err("console flags"))?;
    Ok(())
}

/// Reaps every child that exits (PID 1 inherits orphans).
pub fn start_reaper() {
    std::thread::spawn(|| loop {
        match nix::sys::wait::waitpid(None, None) {
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => std::thread::sleep(Duration::from_secs(1)),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    });
}

/// Never returns: says why on the console (a `fatal` event), keeps everything down, waits.
/// Ctrl-Alt-Del on any keyboard would otherwise restart the box at once, without a sync: the
/// kernel then only signals PID 1 (SIGINT), which the appliance's init ignores.
pub fn ignore_ctrl_alt_del() -> Result<()> {
    nix::sys::reboot::set_cad_enabled(false).map_err(nix_err("reboot(RB_DISABLE_CAD)"))
}

pub fn halt(reason: &str) -> ! {
    let mut events = crate::events::EventLog::default();
    events.mirror_to_screen();
    events.emit(vault_io::clock_now(), &crate::events::Event::Fatal { reason: reason.to_string(), uptime_ms: uptime_ms() });
    // Never a panic here, even on a console that refuses the write.
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("gatekeeper: FATAL: {reason}; the vault stays sealed\n"));
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A disk as sysfs and /dev show it: the partition's uevent, the disk's removable flag and
    /// block size, and the disk's first sectors with a GPT whose entry `partn` has `kind`.
    pub(crate) fn fake_disk(root: &Path, devices: &str, disk: &str, partn: u32, name: &str, kind: vault_core::gpt::Guid, removable: &str) {
        let part = format!("{disk}{partn}");
        let disk_dir = root.join("sys").join(devices).join(disk);
        std::fs::create_dir_all(disk_dir.join(&part)).unwrap();
        std::fs::create_dir_all(disk_dir.join("queue")).unwrap();
        std::fs::write(disk_dir.join("removable"), format!("{removable}\n")).unwrap();
        std::fs::write(disk_dir.join("queue/logical_block_size"), "512\n").unwrap();
        std::fs::write(disk_dir.join(&part).join("uevent"), format!("MAJOR=8\nMINOR=2\nDEVNAME={part}\nDEVTYPE=partition\nPARTN={partn}\nPARTNAME={name}\n")).unwrap();
        std::fs::write(disk_dir.join(&part).join("partition"), format!("{partn}\n")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/block")).unwrap();
        std::os::unix::fs::symlink(disk_dir.join(&part), root.join("sys/class/block").join(&part)).unwrap();
        let mut image = vec![0u8; 512 * 34];
        image[512..520].copy_from_slice(b"EFI PART");
        image[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        image[512 + 80..512 + 84].copy_from_slice(&128u32.to_le_bytes());
        image[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        let entry = 1024 + (partn as usize - 1) * 128;
        image[entry..entry + 16].copy_from_slice(&kind_bytes(kind));
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(root.join("dev").join(disk), image).unwrap();
    }

    fn kind_bytes(kind: vault_core::gpt::Guid) -> [u8; 16] {
        // The on-disk order, read back through the decoder's own Display for a check.
        let text = kind.to_string().replace('-', "");
        let hex: [u8; 16] = vault_core::keys::unhex(&text).unwrap();
        [hex[3], hex[2], hex[1], hex[0], hex[5], hex[4], hex[7], hex[6], hex[8], hex[9], hex[10], hex[11], hex[12], hex[13], hex[14], hex[15]]
    }

    const VIRTIO: &str = "devices/pci0000:00/0000:00:04.0/virtio1/block";
    pub(crate) const USB: &str = "devices/pci0000:00/0000:00:05.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block";
    pub(crate) const LINUX_DATA: vault_core::gpt::Guid = vault_core::gpt::Guid::from_text_form(0x0fc6_3daf, 0x8483, 0x4772, [0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);

    fn find(root: &Path) -> std::result::Result<PathBuf, String> {
        find_data_partition(&root.join("sys/class/block"), &root.join("dev"))
    }

    /// Issue 14, item 1: a stick named like the data partition is never it.
    #[test]
    fn the_data_partition_is_on_a_fixed_non_usb_disk_with_the_vaults_type() {
        let root = tempfile::tempdir().unwrap();
        fake_disk(root.path(), USB, "sda", 2, DATA_PARTNAME, vault_core::gpt::VAULT_DATA_TYPE, "0");
        let err = find(root.path()).unwrap_err();
        assert!(err.contains("sda2: on a USB bus"), "{err}");
        fake_disk(root.path(), VIRTIO, "vda", 2, DATA_PARTNAME, vault_core::gpt::VAULT_DATA_TYPE, "0");
        assert_eq!(find(root.path()).unwrap(), root.path().join("dev/vda2"));
    }

    #[test]
    fn removable_media_another_type_and_two_candidates_are_refused_by_name() {
        let root = tempfile::tempdir().unwrap();
        fake_disk(root.path(), "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block", "sdb", 2, DATA_PARTNAME, vault_core::gpt::VAULT_DATA_TYPE, "1");
        fake_disk(root.path(), VIRTIO, "vdb", 2, DATA_PARTNAME, LINUX_DATA, "0");
        let err = find(root.path()).unwrap_err();
        assert!(err.contains("sdb is removable media"), "{err}");
        assert!(err.contains("vdb2: partition type 0fc63daf-8483-4772-8e79-3d69d8477de4, not the vault's"), "{err}");
        assert!(err.starts_with("no block device with GPT name `vault-data` and type 5661756c-7444-4174-a000-000000000001"), "{err}");
        fake_disk(root.path(), VIRTIO, "vda", 2, DATA_PARTNAME, vault_core::gpt::VAULT_DATA_TYPE, "0");
        fake_disk(root.path(), "devices/pci0000:00/0000:00:06.0/nvme/nvme0/nvme0n1", "nvme0n1p", 2, DATA_PARTNAME, vault_core::gpt::VAULT_DATA_TYPE, "0");
        let err = find(root.path()).unwrap_err();
        assert!(err.starts_with("2 data partitions") && err.contains("exactly one"), "{err}");
    }

    #[test]
    fn the_panic_hook_is_read_from_its_own_parameter_only() {
        assert!(panic_once_open("console=ttyS0 vault.panic_once_open=1 quiet"));
        for absent in ["console=ttyS0", "vault.panic_once_open=0", "vault.panic_once_open=", "vault.panic_once_open=1x", "xvault.panic_once_open=1"] {
            assert!(!panic_once_open(absent), "{absent}");
        }
    }

    #[test]
    fn the_seal_step_pause_is_read_from_its_own_parameter_and_capped() {
        let cmdline = "console=ttyS0 vault.seal_step_pause_ms=1500 quiet";
        assert_eq!(seal_step_pause(cmdline), Some(Duration::from_millis(1500)));
        assert_eq!(seal_step_pause("vault.seal_step_pause_ms=99999999"), Some(MAX_SEAL_STEP_PAUSE));
        for absent in ["console=ttyS0", "vault.seal_step_pause_ms=", "vault.seal_step_pause_ms=0", "vault.seal_step_pause_ms=1s", "vault.seal_step_pause_msx=5"] {
            assert_eq!(seal_step_pause(absent), None, "{absent}");
        }
    }
}
