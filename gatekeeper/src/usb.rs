//! Policy from a USB stick, the vault's only admin input. The appliance has no udev: this
//! watcher hears the kernel announce block devices (uevents over netlink), and for one that
//! sits under a USB device it mounts the stick read-only, nosuid, nodev, noexec, reads
//! `vault-policy.bundle` once (size-capped, no symlinks, no device files), unmounts, and hands
//! the bytes to the daemon. The daemon verifies those bytes in memory and applies exactly
//! them: whatever happens to the stick afterwards cannot change what was verified.

use std::path::{Path, PathBuf};

use netlink_sys::{protocols::NETLINK_KOBJECT_UEVENT, Socket, SocketAddr};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tokio::sync::mpsc;
use vault_core::policy::bundle::MAX_BUNDLE_BYTES;

use crate::error::{GatekeeperError, Result};

/// The one file the vault reads from a stick (what `vaultctl usb write` puts there).
pub const BUNDLE_FILE: &str = "vault-policy.bundle";
/// Orders (holds, releases, purges, vetoes) beside the bundle: `vault-orders/*.order`.
pub const ORDERS_DIR: &str = "vault-orders";
/// The most order files one stick is read for (sorted by name; more are named as unread).
pub const MAX_STICK_ORDERS: usize = 16;
/// The kernel's uevent multicast group (udev's would be 2; there is no udev here).
const KERNEL_UEVENTS: u32 = 1;
/// How long one stick may take to mount and give its bundle before the watcher gives up on it
/// and goes on with the next (a slow or failing device must not hold the only admin input).
pub const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// What the watcher tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsbReport {
    /// A USB disk appeared.
    Inserted {
        device: String,
    },
    /// The bundle's bytes, read once from the stick.
    Bundle {
        device: String,
        bytes: Vec<u8>,
    },
    /// One order file's bytes (`vault-orders/<name>`), read once.
    Order {
        device: String,
        name: String,
        bytes: Vec<u8>,
    },
    /// A removable medium for exports (`vaultctl media init`): its label's bytes, read once. The
    /// daemon decides whether anything is written to it.
    Medium {
        device: String,
        label: Vec<u8>,
    },
    /// The stick gave no bundle, and why (bad filesystem, no file, too big, pulled mid-read).
    Unreadable {
        device: String,
        reason: String,
    },
    Removed {
        device: String,
    },
}

/// A kernel uevent, as far as the watcher needs one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    pub action: String,
    pub devpath: String,
    pub subsystem: String,
    pub devname: Option<String>,
    pub devtype: Option<String>,
}

impl Uevent {
    /// Builds one from the `KEY=VALUE` lines of a uevent (a datagram or a sysfs `uevent` file).
    fn from_pairs<'a>(action: Option<&str>, devpath: Option<&str>, pairs: impl Iterator<Item = &'a str>) -> Option<Uevent> {
        let mut event = Uevent { action: action.unwrap_or_default().into(), devpath: devpath.unwrap_or_default().into(), subsystem: String::new(), devname: None, devtype: None };
        for pair in pairs {
            let Some((key, value)) = pair.split_once('=') else { continue };
            match key {
                "ACTION" => event.action = value.into(),
                "DEVPATH" => event.devpath = value.into(),
                "SUBSYSTEM" => event.subsystem = value.into(),
                // Joined under /dev: a plain name only (the kernel's are: sda1, mmcblk0p1).
                "DEVNAME" if is_plain_device_name(value) => event.devname = Some(value.into()),
                "DEVTYPE" => event.devtype = Some(value.into()),
                _ => {}
            }
        }
        // Joined under /sys: no step up or sideways out of it.
        let devpath_plain = !event.devpath.split('/').any(|segment| segment == ".." || segment == ".");
        (!event.action.is_empty() && !event.devpath.is_empty() && devpath_plain).then_some(event)
    }

    /// A block device under a USB device: a stick (or a card reader, or a USB disk).
    pub fn is_usb_block(&self) -> bool {
        self.subsystem == "block" && self.devname.is_some() && is_under_usb(&self.devpath)
    }
}

/// Parses one kernel uevent datagram, `ACTION@DEVPATH\0KEY=VALUE\0...`. Anything else (udev's
/// `libudev` messages, garbage) is `None`.
pub fn parse_uevent(datagram: &[u8]) -> Option<Uevent> {
    let text = std::str::from_utf8(datagram).ok()?;
    let mut fields = text.split('\0');
    let (action, devpath) = fields.next()?.split_once('@')?;
    Uevent::from_pairs(Some(action), Some(devpath), fields)
}

/// A device name that stays one file under /dev: letters, digits, `_`, `-`, not `.`-led, short.
fn is_plain_device_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// True when a sysfs device path passes through a USB bus (`/devices/.../usb1/1-1/...`).
pub fn is_under_usb(devpath: &str) -> bool {
    devpath.split('/').any(|segment| segment.strip_prefix("usb").is_some_and(|bus| !bus.is_empty() && bus.bytes().all(|b| b.is_ascii_digit())))
}

/// Starts the watcher thread. It subscribes before it looks at what is already plugged in,
/// so a stick inserted during start-up is not missed.
pub fn start(mount_point: PathBuf, to_daemon: mpsc::Sender<UsbReport>) -> Result<()> {
    let io = |what| move |source| GatekeeperError::Io { what, source };
    let mut socket = Socket::new(NETLINK_KOBJECT_UEVENT).map_err(io("uevent socket"))?;
    socket.bind(&SocketAddr::new(0, KERNEL_UEVENTS)).map_err(io("uevent subscription"))?;
    std::fs::create_dir_all(&mount_point).map_err(io("USB mount point"))?;
    std::thread::Builder::new()
        .name("usb-policy".into())
        .spawn(move || {
            let watcher = Watcher { sys: PathBuf::from("/sys"), dev: PathBuf::from("/dev"), mount_point, to_daemon, reads: std::cell::Cell::new(0) };
            for event in present_block_devices(&watcher.sys) {
                if !watcher.handle(&event) {
                    return;
                }
            }
            loop {
                let events = match socket.recv_from_full() {
                    // Only the kernel (port 0) announces devices; a process that sends to the
                    // group is not believed.
                    Ok((datagram, from)) if from.port_number() == 0 => parse_uevent(&datagram).into_iter().collect(),
                    Ok(_) => Vec::new(),
                    // The kernel dropped uevents (a burst): look at what is there now.
                    Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => present_block_devices(&watcher.sys),
                    Err(_) => {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        Vec::new()
                    }
                };
                for event in events {
                    if !watcher.handle(&event) {
                        return;
                    }
                }
            }
        })
        .map_err(io("USB watcher thread"))?;
    Ok(())
}

/// Block devices already there at start, as `add` events.
fn present_block_devices(sys: &Path) -> Vec<Uevent> {
    let Ok(entries) = std::fs::read_dir(sys.join("class/block")) else { return Vec::new() };
    let mut events: Vec<Uevent> = entries
        .flatten()
        .filter_map(|entry| {
            let real = std::fs::canonicalize(entry.path()).ok()?;
            let devpath = real.strip_prefix(sys).ok()?.to_str()?.to_string();
            let text = std::fs::read_to_string(real.join("uevent")).ok()?;
            let mut event = Uevent::from_pairs(Some("add"), Some(&format!("/{devpath}")), text.lines())?;
            event.subsystem = "block".into();
            Some(event)
        })
        .collect();
    // Disks before their partitions, as the kernel announces them.
    events.sort_by(|a, b| a.devpath.cmp(&b.devpath));
    events
}

struct Watcher {
    sys: PathBuf,
    dev: PathBuf,
    mount_point: PathBuf,
    to_daemon: mpsc::Sender<UsbReport>,
    /// Sticks read so far: each gets its own mount point, so one that never answers leaves
    /// only its own directory busy.
    reads: std::cell::Cell<u64>,
}

impl Watcher {
    /// Returns false once the daemon is gone.
    fn handle(&self, event: &Uevent) -> bool {
        if !event.is_usb_block() {
            return true;
        }
        let name = event.devname.clone().unwrap_or_default();
        let device = self.dev.join(&name).display().to_string();
        let is_disk = event.devtype.as_deref() == Some("disk");
        let mut reports = Vec::new();
        match event.action.as_str() {
            "add" => {
                if is_disk {
                    reports.push(UsbReport::Inserted { device: device.clone() });
                }
                // A partitioned stick is read through its partitions, which are announced next;
                // an empty card reader has nothing to read.
                let sysfs = self.sys.join(event.devpath.trim_start_matches('/'));
                let read_through_partitions = is_disk && has_partitions(&sysfs, &name);
                if !read_through_partitions && !is_empty_medium(&sysfs) {
                    self.reads.set(self.reads.get() + 1);
                    let mount_point = self.mount_point.join(self.reads.get().to_string());
                    match read_stick_within(PathBuf::from(&device), mount_point, READ_WITHIN) {
                        Ok(stick) => {
                            if let Some(label) = stick.medium {
                                // Exports are written only to a partition made for them.
                                match export_partition_doubt(&sysfs, &self.dev) {
                                    None => reports.push(UsbReport::Medium { device: device.clone(), label }),
                                    Some(doubt) => reports.push(UsbReport::Unreadable {
                                        device: device.clone(),
                                        reason: format!("medium: {doubt}, not the vault's export type {}: refused (make export media with `vaultctl media init`)", vault_core::gpt::VAULT_EXPORT_TYPE),
                                    }),
                                }
                            }
                            if let Some(bytes) = stick.bundle {
                                reports.push(UsbReport::Bundle { device: device.clone(), bytes });
                            }
                            for (name, bytes) in stick.orders {
                                reports.push(UsbReport::Order { device: device.clone(), name, bytes });
                            }
                            for reason in stick.problems {
                                reports.push(UsbReport::Unreadable { device: device.clone(), reason });
                            }
                        }
                        Err(reason) => reports.push(UsbReport::Unreadable { device, reason }),
                    }
                }
            }
            "remove" if is_disk => reports.push(UsbReport::Removed { device }),
            _ => {}
        }
        reports.into_iter().all(|report| self.to_daemon.blocking_send(report).is_ok())
    }
}

/// Why the block device at `sysfs` (a partition's sysfs directory) is not an export medium's
/// partition, if it is not: a whole disk, or a partition of another GPT type.
fn export_partition_doubt(sysfs: &Path, dev: &Path) -> Option<String> {
    let Some(number) = std::fs::read_to_string(sysfs.join("partition")).ok().and_then(|n| n.trim().parse::<u32>().ok()) else {
        return Some("a filesystem on the whole device, not on a GPT partition".into());
    };
    let Some((disk_sysfs, disk)) = sysfs.parent().and_then(|parent| Some((parent, parent.file_name()?.to_string_lossy().to_string()))) else {
        return Some(format!("no disk above {}", sysfs.display()));
    };
    match crate::init::partition_type(disk_sysfs, &disk, dev, number) {
        Ok(found) if found == vault_core::gpt::VAULT_EXPORT_TYPE => None,
        Ok(found) => Some(format!("partition type {found}")),
        Err(e) => Some(e),
    }
}

fn has_partitions(sysfs: &Path, name: &str) -> bool {
    std::fs::read_dir(sysfs).map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(name) && e.path().join("partition").exists())).unwrap_or(false)
}

fn is_empty_medium(sysfs: &Path) -> bool {
    std::fs::read_to_string(sysfs.join("size")).map(|s| s.trim() == "0").unwrap_or(false)
}

/// What a stick gave: its bundle, its orders, a medium's label, and what could not be read (each a sentence).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StickContents {
    /// An export medium's label (`vault-medium.json`), when the filesystem is one.
    pub medium: Option<Vec<u8>>,
    pub bundle: Option<Vec<u8>>,
    pub orders: Vec<(String, Vec<u8>)>,
    pub problems: Vec<String>,
}

/// [`read_stick`] at a fresh mount point, given `within` to finish (see [`finish_within`]).
pub fn read_stick_within(device: PathBuf, mount_point: PathBuf, within: std::time::Duration) -> std::result::Result<StickContents, String> {
    std::fs::create_dir_all(&mount_point).map_err(|e| format!("stick: mount point {}: {e}; nothing read", mount_point.display()))?;
    finish_within(within, move || {
        let read = read_stick(&device, &mount_point);
        let _ = std::fs::remove_dir(&mount_point);
        read
    })
}

/// Runs `work` on its own thread and waits at most `within` for it. A stick that does not
/// answer in time is reported as unreadable and left to its thread (stuck in the kernel, it
/// cannot be cancelled); the watcher goes on with the next one.
fn finish_within<T: Send + 'static>(within: std::time::Duration, work: impl FnOnce() -> std::result::Result<T, String> + Send + 'static) -> std::result::Result<T, String> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("usb-read".into())
        .spawn(move || {
            let _ = done_tx.send(work());
        })
        .map_err(|e| format!("stick: no reader thread ({e}); nothing read"))?;
    done_rx.recv_timeout(within).unwrap_or_else(|_| Err(format!("stick: no answer within {} s (a slow or failing device); nothing read, pull it out and try another stick", within.as_secs())))
}

/// Mounts the stick read-only and reads its bundle and its orders once each; always unmounts.
/// Each problem is a sentence for a `policy_refused` event.
pub fn read_stick(device: &Path, mount_point: &Path) -> std::result::Result<StickContents, String> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
    mount(Some(device), mount_point, Some("vfat"), flags, None::<&str>).map_err(|errno| match errno {
        nix::errno::Errno::EINVAL => "stick: not a FAT filesystem (or a damaged one); nothing read".to_string(),
        other => format!("stick: mount failed ({other}); nothing read"),
    })?;
    let contents = read_mounted(mount_point);
    // Lazily: a stick pulled mid-read must not leave the mount point busy for the next one.
    let _ = umount2(mount_point, MntFlags::MNT_DETACH);
    Ok(contents)
}

/// Mounts an export medium's FAT filesystem read-write (nosuid, nodev, noexec: nothing on it
/// is ever run) for the export writer, at a fresh mount point. Directory changes are
/// synchronous (dirsync): FAT keeps a new directory's entries in its own cluster, which a
/// file's fsync does not write, so without it a medium pulled mid-export comes back with
/// directories the kernel calls corrupted.
pub fn mount_medium(device: &Path, mount_point: &Path) -> std::result::Result<(), String> {
    std::fs::create_dir_all(mount_point).map_err(|e| format!("medium: mount point {}: {e}", mount_point.display()))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME | MsFlags::MS_DIRSYNC;
    // Files and directories the vault makes are its own, and not readable by the session
    // workers' users.
    mount(Some(device), mount_point, Some("vfat"), flags, Some("uid=0,gid=0,umask=077,errors=remount-ro")).map_err(|errno| match errno {
        nix::errno::Errno::EINVAL => "medium: not a FAT filesystem (or a damaged one); nothing written".to_string(),
        other => format!("medium: mount failed ({other}); nothing written"),
    })
}

/// Unmounts a medium: flushed first, so what was written is on it when it is pulled; a busy or
/// vanished device is detached instead.
pub fn unmount_medium(mount_point: &Path) {
    if umount2(mount_point, MntFlags::empty()).is_err() {
        let _ = umount2(mount_point, MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(mount_point);
}

/// What a mounted stick holds at `root`: `vault-policy.bundle` and `vault-orders/*.order`.
pub fn read_mounted(root: &Path) -> StickContents {
    let mut stick = StickContents::default();
    let read = |path: &Path, shown: &str| {
        vault_io::read_bounded(path, MAX_BUNDLE_BYTES).map_err(|e| match e {
            vault_io::IoError::Io { source, .. } if source.raw_os_error() == Some(nix::libc::ELOOP) => format!("stick: {shown} is a symlink; refused"),
            vault_io::IoError::Io { source, .. } => format!("stick: reading {shown} failed ({source}); was it pulled out?"),
            other => format!("stick: {other}"),
        })
    };
    let bundle = root.join(BUNDLE_FILE);
    if std::fs::symlink_metadata(&bundle).is_ok() {
        match read(&bundle, BUNDLE_FILE) {
            Ok(bytes) => stick.bundle = Some(bytes),
            Err(reason) => stick.problems.push(reason),
        }
    }
    let orders = root.join(ORDERS_DIR);
    match std::fs::symlink_metadata(&orders) {
        Ok(meta) if meta.is_dir() => {
            let mut names: Vec<String> =
                std::fs::read_dir(&orders).map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).filter(|n| n.ends_with(".order")).collect()).unwrap_or_default();
            names.sort();
            if names.len() > MAX_STICK_ORDERS {
                stick.problems.push(format!("stick: {} orders in {ORDERS_DIR}/, at most {MAX_STICK_ORDERS} are read; not read: {}", names.len(), names[MAX_STICK_ORDERS..].join(", ")));
                names.truncate(MAX_STICK_ORDERS);
            }
            for name in names {
                match read(&orders.join(&name), &format!("{ORDERS_DIR}/{name}")) {
                    Ok(bytes) => stick.orders.push((name, bytes)),
                    Err(reason) => stick.problems.push(reason),
                }
            }
        }
        Ok(_) => stick.problems.push(format!("stick: {ORDERS_DIR} is not a directory; refused")),
        Err(_) => {}
    }
    let label = root.join(vault_core::export::medium::LABEL_FILE);
    if std::fs::symlink_metadata(&label).is_ok() {
        match vault_io::read_bounded(&label, vault_core::export::medium::MAX_MEDIUM_FILE_BYTES) {
            Ok(bytes) => stick.medium = Some(bytes),
            Err(e) => stick.problems.push(format!("medium: {}: {e}; refused", vault_core::export::medium::LABEL_FILE)),
        }
    }
    if stick.medium.is_none() && stick.bundle.is_none() && stick.orders.is_empty() && stick.problems.is_empty() {
        stick.problems.push(format!("stick: no {BUNDLE_FILE} and no {ORDERS_DIR}/ at its top level"));
    }
    stick
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(parts: &[&str]) -> Vec<u8> {
        parts.join("\0").into_bytes()
    }

    const STICK: &str = "/devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda";

    #[test]
    fn parses_a_kernel_block_uevent() {
        let bytes = datagram(&[&format!("add@{STICK}"), "ACTION=add", &format!("DEVPATH={STICK}"), "SUBSYSTEM=block", "MAJOR=8", "MINOR=0", "DEVNAME=sda", "DEVTYPE=disk", "SEQNUM=1234"]);
        let event = parse_uevent(&bytes).expect("a uevent");
        assert_eq!(event, Uevent { action: "add".into(), devpath: STICK.into(), subsystem: "block".into(), devname: Some("sda".into()), devtype: Some("disk".into()) });
        assert!(event.is_usb_block());
    }

    #[test]
    fn a_disk_on_a_pci_controller_is_not_a_stick() {
        let disk = "/devices/pci0000:00/0000:00:05.0/virtio2/block/vda";
        let bytes = datagram(&[&format!("add@{disk}"), "ACTION=add", &format!("DEVPATH={disk}"), "SUBSYSTEM=block", "DEVNAME=vda", "DEVTYPE=disk"]);
        assert!(!parse_uevent(&bytes).unwrap().is_usb_block());
    }

    #[test]
    fn usb_devices_that_are_not_block_devices_are_ignored() {
        let hub = "/devices/pci0000:00/0000:00:04.0/usb2/2-1";
        let bytes = datagram(&[&format!("add@{hub}"), "ACTION=add", &format!("DEVPATH={hub}"), "SUBSYSTEM=usb", "DEVNAME=bus/usb/002/002", "DEVTYPE=usb_device"]);
        assert!(!parse_uevent(&bytes).unwrap().is_usb_block());
    }

    #[test]
    fn device_names_and_paths_that_leave_dev_or_sys_are_not_believed() {
        for bad in ["../sda", "sda/../../etc", ".hidden", "", "a/b"] {
            let bytes = datagram(&[&format!("add@{STICK}"), "ACTION=add", &format!("DEVPATH={STICK}"), "SUBSYSTEM=block", &format!("DEVNAME={bad}"), "DEVTYPE=disk"]);
            let event = parse_uevent(&bytes).unwrap();
            assert!(!event.is_usb_block(), "DEVNAME={bad:?} was believed");
        }
        let escape = "/devices/pci0000:00/usb2/../../../etc";
        let bytes = datagram(&[&format!("add@{escape}"), "ACTION=add", &format!("DEVPATH={escape}"), "SUBSYSTEM=block", "DEVNAME=sda", "DEVTYPE=disk"]);
        assert_eq!(parse_uevent(&bytes), None);
    }

    #[test]
    fn a_stick_that_does_not_answer_in_time_is_given_up_on() {
        let took = std::time::Instant::now();
        let err = finish_within(std::time::Duration::from_millis(100), || {
            std::thread::sleep(std::time::Duration::from_secs(3));
            Ok(())
        })
        .unwrap_err();
        assert!(err.starts_with("stick: no answer within 0 s"), "{err}");
        assert!(took.elapsed() < std::time::Duration::from_secs(1), "the watcher waited {:?}", took.elapsed());
        assert_eq!(finish_within(std::time::Duration::from_secs(5), || Ok(7)), Ok(7));
    }

    #[test]
    fn udev_messages_and_garbage_are_not_uevents() {
        assert_eq!(parse_uevent(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse_uevent(b"no at sign here"), None);
        assert_eq!(parse_uevent(&[0xff, 0xfe, b'@']), None);
        assert_eq!(parse_uevent(b"add@"), None);
    }

    #[test]
    fn usb_ancestry_needs_a_bus_segment() {
        assert!(is_under_usb(STICK));
        assert!(is_under_usb("/devices/platform/usb10/10-1/block/sdb"));
        assert!(!is_under_usb("/devices/virtual/block/usbdisk"));
        assert!(!is_under_usb("/devices/pci0000:00/usb/block/sdb"));
        assert!(!is_under_usb("/devices/virtual/block/loop0"));
    }

    /// Exports go only to a GPT partition of the vault's export type (`vaultctl media init`),
    /// whatever label file another filesystem carries.
    #[test]
    fn an_export_medium_is_a_partition_of_the_export_type() {
        use crate::init::tests::{fake_disk, LINUX_DATA, USB};
        let root = tempfile::tempdir().unwrap();
        let dev = root.path().join("dev");
        fake_disk(root.path(), USB, "sdb", 1, "vault-export", vault_core::gpt::VAULT_EXPORT_TYPE, "1");
        let disks = root.path().join("sys").join(USB);
        assert_eq!(export_partition_doubt(&disks.join("sdb/sdb1"), &dev), None);
        fake_disk(root.path(), USB, "sdc", 1, "vault-export", LINUX_DATA, "1");
        assert_eq!(export_partition_doubt(&disks.join("sdc/sdc1"), &dev), Some(format!("partition type {LINUX_DATA}")));
        // A filesystem on the whole stick has no partition type at all.
        let doubt = export_partition_doubt(&disks.join("sdc"), &dev).unwrap();
        assert!(doubt.contains("on the whole device"), "{doubt}");
    }

    #[test]
    fn a_stick_gives_its_bundle_and_its_orders_and_names_what_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(read_mounted(root).problems, vec![format!("stick: no {BUNDLE_FILE} and no {ORDERS_DIR}/ at its top level")]);
        std::fs::write(root.join(BUNDLE_FILE), b"bundle").unwrap();
        std::fs::create_dir(root.join(ORDERS_DIR)).unwrap();
        std::fs::write(root.join(ORDERS_DIR).join("b.order"), b"second").unwrap();
        std::fs::write(root.join(ORDERS_DIR).join("a.order"), b"first").unwrap();
        std::fs::write(root.join(ORDERS_DIR).join("notes.txt"), b"ignored").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join(ORDERS_DIR).join("c.order")).unwrap();
        let stick = read_mounted(root);
        assert_eq!(stick.bundle.as_deref(), Some(&b"bundle"[..]));
        assert_eq!(stick.orders, vec![("a.order".to_string(), b"first".to_vec()), ("b.order".to_string(), b"second".to_vec())]);
        assert_eq!(stick.problems, vec![format!("stick: {ORDERS_DIR}/c.order is a symlink; refused")]);
        for i in 0..20 {
            std::fs::write(root.join(ORDERS_DIR).join(format!("x{i:02}.order")), b"o").unwrap();
        }
        let many = read_mounted(root);
        // The first 16 names are read; one of them is the refused symlink.
        assert_eq!(many.orders.len(), MAX_STICK_ORDERS - 1);
        assert!(many.problems.iter().any(|p| p.contains("at most 16 are read")), "{:?}", many.problems);
    }

    #[test]
    fn reading_a_device_that_is_not_a_filesystem_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_device = dir.path().join("garbage");
        std::fs::write(&not_a_device, b"not a filesystem").unwrap();
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        let reason = read_stick(&not_a_device, &mount_point).unwrap_err();
        assert!(reason.starts_with("stick: "), "{reason}");
        assert!(reason.contains("nothing read"), "{reason}");
    }
}
