//! The end-to-end harness: boots the real appliance image (`make image`'s `out/`) under QEMU
//! (TCG), reads the gatekeeper's JSON event lines from the serial console, and drives the
//! box from outside the way an operator would: USB sticks hot-plugged over QMP, resets,
//! power cuts. Each VM gets a fresh copy-on-write overlay of the data disk, and its console
//! log stays under `target/qemu-logs/<test>/` when a test fails.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where the image and the keys its trust root was made from are.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub out: PathBuf,
    /// `root.toml` and the admin keys (`alice.key`, ...) the test image was built with.
    pub keys: PathBuf,
}

impl Artifacts {
    /// `VAULT_IMAGE_DIR` (default `<workspace>/out`) and `VAULT_TEST_KEYS` (default
    /// `<out>/test-keys`). A missing artifact is a test failure that says how to make it.
    pub fn from_env() -> Artifacts {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
        let out = std::env::var_os("VAULT_IMAGE_DIR").map_or_else(|| workspace.join("out"), PathBuf::from);
        let keys = std::env::var_os("VAULT_TEST_KEYS").map_or_else(|| out.join("test-keys"), PathBuf::from);
        for needed in ["vmlinuz", "initramfs.cpio.lz4", "vault.qcow2", "vault.efi", "MANIFEST"] {
            assert!(out.join(needed).exists(), "{} is missing: run `make test-image` (or `make test`) first", out.join(needed).display());
        }
        assert!(keys.join("root.toml").exists(), "{} is missing: run `make test-image` first", keys.join("root.toml").display());
        Artifacts { out, keys }
    }

    /// The workspace's `vaultctl` (built by `make test` before this suite runs).
    pub fn vaultctl(&self) -> PathBuf {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace");
        let release = workspace.join("target/release/vaultctl");
        if release.exists() {
            return release;
        }
        workspace.join("target/debug/vaultctl")
    }

    /// Which kernel the image was built with (`kernel-kind:` in the MANIFEST).
    pub fn kernel(&self) -> KernelKind {
        match self.manifest_field("kernel-kind").as_str() {
            "debian" => KernelKind::Debian,
            "minimal" => KernelKind::Minimal,
            other => panic!("MANIFEST: unknown kernel-kind `{other}`"),
        }
    }

    fn manifest_field(&self, field: &str) -> String {
        let manifest = std::fs::read_to_string(self.out.join("MANIFEST")).expect("MANIFEST (run `make test-image`)");
        let prefix = format!("{field}: ");
        manifest.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("a `{field}:` line in the MANIFEST")).to_string()
    }

    /// The kernel command line the image was built with (the UKI's, from the MANIFEST), so a
    /// direct boot runs the kernel exactly as the firmware boot does.
    pub fn cmdline(&self) -> String {
        self.manifest_field("cmdline")
    }
}

/// The two kernels `make image` can build with (`KERNEL=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// Debian's signed kernel package: the gatekeeper loads the modules the machine needs.
    Debian,
    /// The same release built from its source package with every driver built in: no modules.
    Minimal,
}

/// How the VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// `-kernel` / `-initrd` with the data disk on virtio.
    Direct,
    /// OVMF firmware from the GPT disk's ESP (the UKI), with the disk on NVMe: the
    /// gatekeeper must find its data partition by GPT name, whatever the bus.
    Firmware,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF that enforces Secure Boot (it needs SMM), and variables with Debian's snakeoil test
/// keys enrolled as PK, KEK and db: what a box whose owner enrolled their own keys looks like.
const OVMF_CODE_SECURE_BOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS_SNAKEOIL: &str = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
/// The snakeoil db key and certificate (test only: its private half is public).
pub const SNAKEOIL_KEY: &str = "/usr/share/ovmf/PkKek-1-snakeoil.key";
pub const SNAKEOIL_CERT: &str = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

/// One running appliance.
pub struct Vm {
    pub name: String,
    pub dir: PathBuf,
    pub console: PathBuf,
    /// The data disk this VM runs on (its own overlay, or the one it was given).
    pub disk: PathBuf,
    qemu: Option<Child>,
    qmp: Option<Qmp>,
    /// How many console lines have been consumed by `wait_for`.
    cursor: usize,
    started: Instant,
    keep_logs: bool,
    sticks: u32,
}

/// Options of a boot beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct VmOptions {
    /// Extra QEMU arguments (the network tests add a tap NIC).
    pub extra: Vec<String>,
    /// Boot on this disk instead of a fresh overlay (a reboot after a power cut).
    pub disk: Option<PathBuf>,
    /// Boot with no data disk at all (direct boot only).
    pub no_disk: bool,
    /// Attach the data disk to the board's SATA (AHCI) controller instead of virtio (direct
    /// boot only).
    pub sata: bool,
    /// Wire the vault NIC (virtio, becomes eth0) to the tap in this namespace ([`VaultNet`]).
    pub netns: Option<String>,
    /// Words added to the kernel command line (direct boot only), e.g. a test hook.
    pub cmdline_extra: Vec<String>,
    /// Firmware boot with OVMF's network stack left as it comes (the control of the
    /// firmware-silence test); by default [`FIRMWARE_NETWORK_OFF`] is applied.
    pub firmware_network_on: bool,
    /// Firmware boot with Secure Boot enforced, the snakeoil keys enrolled.
    pub secure_boot: bool,
}

/// The OVMF settings (QEMU `-fw_cfg` files, read by the firmware at start) that keep its
/// network stack from ever speaking on the vault NIC: no IPv4 or IPv6 in the firmware at
/// all, and no PXE boot over either. Without them OVMF's own virtio-net driver and IPv6
/// stack send MLD reports from the vault's MAC seconds after power-on, before the kernel
/// exists. The shipped VM configuration (README) carries the same lines.
pub const FIRMWARE_NETWORK_OFF: [&str; 4] = [
    "name=opt/org.tianocore/IPv4Support,string=no",
    "name=opt/org.tianocore/IPv6Support,string=no",
    "name=opt/org.tianocore/IPv4PXESupport,string=no",
    "name=opt/org.tianocore/IPv6PXESupport,string=no",
];

impl Vm {
    /// Boots the image. `name` names the log folder (`target/qemu-logs/<name>`).
    pub fn boot(artifacts: &Artifacts, name: &str, boot: Boot, options: VmOptions) -> Vm {
        let dir = log_root().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("log dir");
        let disk = options.disk.clone().unwrap_or_else(|| {
            let overlay = dir.join("data.qcow2");
            let base = std::fs::canonicalize(artifacts.out.join("vault.qcow2")).expect("vault.qcow2");
            run_ok(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"]).arg(base).arg(&overlay));
            overlay
        });
        let console = dir.join("console.log");
        let qmp_path = dir.join("qmp.sock");
        // QEMU runs inside the test's namespace, where its tap is: nothing reaches the host.
        let mut cmd = match &options.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                cmd.args(["-netdev", &format!("tap,id=vaultnic,ifname={TAP},script=no,downscript=no")]);
                // No option ROM: the firmware gets no network boot code from the NIC either.
                cmd.args(["-device", &format!("virtio-net-pci,netdev=vaultnic,mac={VAULT_MAC},romfile=")]);
                cmd
            }
            None => Command::new("qemu-system-x86_64"),
        };
        // `-cpu max` gives the guest RDRAND, so the kernel's entropy pool is ready at once, as on
        // real hardware (otherwise the first key generation waits a second for it).
        cmd.args(["-machine", "q35", "-accel", "tcg", "-cpu", "max", "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(["-device", "qemu-xhci,id=xhci"]);
        match boot {
            Boot::Direct => {
                cmd.arg("-kernel").arg(artifacts.out.join("vmlinuz")).arg("-initrd").arg(artifacts.out.join("initramfs.cpio.lz4"));
                let cmdline = std::iter::once(artifacts.cmdline()).chain(options.cmdline_extra.iter().cloned()).collect::<Vec<_>>().join(" ");
                cmd.arg("-append").arg(cmdline);
                if options.sata {
                    // q35's ICH9 AHCI controller is bus `ide`: port 2 of 6, so the driver has
                    // empty ports to probe too.
                    cmd.arg("-drive").arg(format!("file={},format=qcow2,if=none,id=disk0", disk.display()));
                    cmd.args(["-device", "ide-hd,drive=disk0,bus=ide.2"]);
                } else if !options.no_disk {
                    cmd.arg("-drive").arg(format!("file={},format=qcow2,if=virtio", disk.display()));
                }
            }
            Boot::Firmware => {
                let vars = dir.join("OVMF_VARS.fd");
                let (code, vars_template) = if options.secure_boot { (OVMF_CODE_SECURE_BOOT, OVMF_VARS_SNAKEOIL) } else { (OVMF_CODE, OVMF_VARS) };
                std::fs::copy(vars_template, &vars).expect("copy OVMF vars (is the ovmf package installed?)");
                if options.secure_boot {
                    // The variable store is writable only from SMM: nothing the OS runs can change the keys.
                    cmd.args(["-machine", "smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]);
                }
                cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"));
                cmd.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
                cmd.arg("-drive").arg(format!("file={},format=qcow2,if=none,id=disk0", disk.display()));
                cmd.args(["-device", "nvme,drive=disk0,serial=vault0"]);
                if !options.firmware_network_on {
                    for setting in FIRMWARE_NETWORK_OFF {
                        cmd.arg("-fw_cfg").arg(setting);
                    }
                }
            }
        }
        cmd.args(&options.extra);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(dir.join("qemu.stderr")).expect("stderr file"));
        let started = Instant::now();
        let qemu = cmd.spawn().expect("start qemu-system-x86_64 (is qemu-system-x86 installed?)");
        let mut vm = Vm { name: name.to_string(), dir, console, disk, qemu: Some(qemu), qmp: None, cursor: 0, started, keep_logs: true, sticks: 0 };
        vm.qmp = Some(vm.connect_qmp());
        vm
    }

    fn connect_qmp(&mut self) -> Qmp {
        let path = self.dir.join("qmp.sock");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = UnixStream::connect(&path) {
                return Qmp::handshake(stream);
            }
            if let Some(status) = self.qemu.as_mut().and_then(|q| q.try_wait().ok().flatten()) {
                self.fail(&format!("QEMU exited at start ({status})"));
            }
            assert!(Instant::now() < deadline, "no QMP socket at {}", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Seconds of wall time since QEMU started.
    pub fn wall_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Every gatekeeper event printed so far (lines of JSON with an `event` field).
    pub fn events(&self) -> Vec<Value> {
        console_events(&std::fs::read_to_string(&self.console).unwrap_or_default())
    }

    /// Waits for the next event (after those already consumed) that `matches`, or fails with
    /// the console's tail.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        match self.next_event(timeout, matches) {
            Ok(event) => event,
            Err(why) => self.fail(&format!("{why} while waiting for {what}")),
        }
    }

    /// Waits for an event that `matches` anywhere in the log, before or after those consumed
    /// (for what a background thread prints at its own pace); the cursor stays where it is.
    pub fn wait_anywhere(&mut self, what: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let cursor = std::mem::take(&mut self.cursor);
        let found = self.next_event(timeout, matches);
        self.cursor = cursor;
        found.unwrap_or_else(|why| self.fail(&format!("{why} while waiting for {what}")))
    }

    /// Like [`Vm::wait_for`], but a timeout is an answer (`None`), not a failure.
    pub fn skip_until(&mut self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        self.next_event(timeout, matches).ok()
    }

    fn next_event(&mut self, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if let Some((i, event)) = events.iter().enumerate().skip(self.cursor).find(|(_, e)| matches(e)) {
                self.cursor = i + 1;
                return Ok(event.clone());
            }
            if let Some(status) = self.qemu.as_mut().and_then(|q| q.try_wait().ok().flatten()) {
                return Err(format!("QEMU exited ({status})"));
            }
            if Instant::now() > deadline {
                return Err(format!("nothing within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Plugs a stick, waits for the vault's verdict on it (`policy_accepted` or
    /// `policy_refused`), pulls it out and waits until the vault has seen it go.
    pub fn present_stick(&mut self, stick: &Path) -> Value {
        let id = self.plug_stick(stick);
        self.wait_event("usb_inserted", Duration::from_secs(60));
        let verdict = self.wait_for("the policy verdict", Duration::from_secs(60), |e| e["event"] == "policy_accepted" || e["event"] == "policy_refused" || e["event"] == "policy_unchanged");
        self.unplug_stick(&id);
        self.wait_event("usb_removed", Duration::from_secs(60));
        verdict
    }

    /// Waits for an event by name.
    pub fn wait_event(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait_for(name, timeout, |e| e["event"] == name)
    }

    /// Fails the test with the last lines of the console.
    pub fn fail(&self, why: &str) -> ! {
        panic!("{}: {why}\n--- console tail ({}) ---\n{}", self.name, self.console.display(), self.console_tail(40));
    }

    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.console).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn qmp(&mut self) -> &mut Qmp {
        self.qmp.as_mut().expect("QMP connected")
    }

    /// Plugs a USB stick made from `image` into the xHCI controller; returns its id.
    pub fn plug_stick(&mut self, image: &Path) -> String {
        self.plug_usb_disk(image, false)
    }

    /// Plugs a USB disk made from `image`, writable (an export medium) or not; returns its id
    /// ([`Vm::unplug_stick`] pulls it).
    pub fn plug_usb_disk(&mut self, image: &Path, writable: bool) -> String {
        self.sticks += 1;
        let id = format!("stick{}", self.sticks);
        let node = format!("{id}-node");
        self.qmp().execute(
            "blockdev-add",
            json!({
                "node-name": node, "driver": "raw", "read-only": !writable,
                "file": { "driver": "file", "filename": image.display().to_string(), "read-only": !writable }
            }),
        );
        self.qmp().execute("device_add", json!({ "driver": "usb-storage", "bus": "xhci.0", "drive": node, "id": id, "removable": true }));
        id
    }

    /// Pulls a stick out (as fast as a hand can).
    pub fn unplug_stick(&mut self, id: &str) {
        // The stick's inner SCSI device goes first, with no id; wait for the stick itself.
        self.unplug(id);
        self.qmp().execute("blockdev-del", json!({ "node-name": format!("{id}-node") }));
    }

    /// Presses `keys` together (QMP `send-key`, qcodes such as `ctrl`, `alt`, `delete`) on
    /// whichever keyboard QEMU routes keys to: the newest one plugged in.
    pub fn press_keys(&mut self, keys: &[&str]) {
        let keys: Vec<Value> = keys.iter().map(|k| json!({ "type": "qcode", "data": k })).collect();
        self.qmp().execute("send-key", json!({ "keys": keys }));
    }

    /// Unplugs a device by id and waits until QEMU says it is gone.
    pub fn unplug(&mut self, id: &str) {
        self.qmp().execute("device_del", json!({ "id": id }));
        self.qmp().wait_qmp_event("DEVICE_DELETED", Duration::from_secs(20), |data| data["device"] == id);
    }

    /// The names of the asynchronous QMP events QEMU has sent so far (RESET, SHUTDOWN, ...).
    pub fn qmp_event_names(&mut self) -> Vec<String> {
        // Any command makes the connection read what QEMU sent before its answer.
        self.qmp().execute("query-status", json!({}));
        self.qmp().pending_events.iter().filter_map(|e| e["event"].as_str().map(str::to_string)).collect()
    }

    /// The reset button (QMP `system_reset`): a warm reboot on the same disk, same console.
    pub fn reset(&mut self) {
        self.qmp().execute("system_reset", json!({}));
    }

    /// A power cut: QEMU killed, no shutdown of any kind. Returns the disk.
    pub fn power_cut(&mut self) -> PathBuf {
        self.kill();
        self.keep_logs = false;
        self.disk.clone()
    }

    /// The test passed: its logs can go.
    pub fn pass(mut self) {
        self.keep_logs = false;
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn kill(&mut self) {
        if let Some(mut qemu) = self.qemu.take() {
            let _ = qemu.kill();
            let _ = qemu.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
        if self.keep_logs {
            eprintln!("{}: logs kept in {}", self.name, self.dir.display());
        }
    }
}

/// The vault NIC's MAC and the test network (192.0.2.0/24 only, inside the test's namespace).
pub const VAULT_MAC: &str = "52:54:00:12:34:56";
pub const VAULT_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 10);
pub const PEER_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 1);
pub const VAULT_PORT: u16 = 7400;
const TAP: &str = "vtap0";

/// A network namespace holding the tap the vault's NIC is wired to, with the pusher's side
/// (192.0.2.1/24) on it. Deleted on drop, pass or fail.
#[derive(Debug)]
pub struct VaultNet {
    pub ns: String,
}

impl VaultNet {
    pub fn new(tag: &str) -> VaultNet {
        assert!(test_net::is_root(), "the network scenarios create namespaces and must run as root");
        let ns = format!("qt-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
        test_net::sh(&["ip", "netns", "add", &ns]);
        let net = VaultNet { ns };
        test_net::sh(&["ip", "-n", &net.ns, "tuntap", "add", "dev", TAP, "mode", "tap"]);
        // The pusher's side is quiet too, so the capture holds what the test sends and the vault says.
        test_net::sh(&["ip", "netns", "exec", &net.ns, "sysctl", "-qw", &format!("net.ipv6.conf.{TAP}.disable_ipv6=1")]);
        test_net::sh(&["ip", "-n", &net.ns, "addr", "add", &format!("{PEER_IP}/24"), "dev", TAP]);
        test_net::sh(&["ip", "-n", &net.ns, "link", "set", TAP, "up"]);
        net
    }

    /// Where the prober stands: on the tap, asking for the vault's address.
    pub fn probe_site(&self) -> test_net::ProbeSite {
        test_net::ProbeSite { ns: self.ns.clone(), iface: TAP.into(), peer_ip: PEER_IP, vault_ip: VAULT_IP }
    }

    /// Boot options wiring a VM to this network.
    pub fn vm_options(&self) -> VmOptions {
        VmOptions { netns: Some(self.ns.clone()), ..VmOptions::default() }
    }

    /// A command run inside the namespace (the pusher's side).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program);
        cmd
    }
}

impl Drop for VaultNet {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Failed scenarios leave their logs here (CI prints their tails).
pub fn log_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").join("target/qemu-logs")
}

/// The gatekeeper's event lines in a console log; kernel messages and anything else skipped.
pub fn console_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|line| line.find('{').map(|i| &line[i..]))
        .filter_map(|json| serde_json::from_str::<Value>(json).ok())
        .filter(|v| v.get("event").is_some() && v.get("seq").is_some())
        .collect()
}

/// Runs a command that must succeed.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A QMP connection (QEMU's JSON control socket).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Asynchronous events read while waiting for a command's answer.
    pending_events: Vec<Value>,
}

impl Qmp {
    fn handshake(stream: UnixStream) -> Qmp {
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("QMP timeout");
        let writer = stream.try_clone().expect("QMP clone");
        let mut qmp = Qmp { reader: BufReader::new(stream), writer, pending_events: Vec::new() };
        // An event QEMU emits while it accepts the connection (RESUME as the machine starts)
        // can come before the greeting: keep it, and read on to the greeting.
        let greeting = loop {
            let line = qmp.read();
            if line.get("event").is_some() && qmp.pending_events.len() < 16 {
                qmp.pending_events.push(line);
                continue;
            }
            break line;
        };
        assert!(greeting.get("QMP").is_some(), "not a QMP greeting: {greeting}");
        qmp.execute("qmp_capabilities", json!({}));
        qmp
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("QMP read");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("QMP sent {line:?}: {e}"))
    }

    /// Runs a command; panics with QEMU's error if it fails.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Value {
        let request = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{request}").expect("QMP write");
        loop {
            let answer = self.read();
            if answer.get("event").is_some() {
                self.pending_events.push(answer);
                continue;
            }
            if let Some(error) = answer.get("error") {
                panic!("QMP {command} failed: {error}");
            }
            return answer["return"].clone();
        }
    }

    /// Waits for an asynchronous QMP event by name whose `data` matches.
    pub fn wait_qmp_event(&mut self, name: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Value {
        let wanted = |e: &Value| e["event"] == name && matches(&e["data"]);
        if let Some(i) = self.pending_events.iter().position(wanted) {
            return self.pending_events.remove(i);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let event = self.read();
            if wanted(&event) {
                return event;
            }
        }
        panic!("no QMP event {name} within {timeout:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_events_skips_kernel_lines_and_keeps_event_lines() {
        let log = "[    1.234] virtio_blk virtio1: [vda] 1056768 512-byte logical blocks\n\
                   {\"seq\":1,\"time\":\"2026-11-26T00:00:00Z\",\"event\":\"boot\",\"uptime_ms\":1900}\n\
                   garbage {not json\n\
                   \r{\"seq\":2,\"time\":\"2026-11-26T00:00:00Z\",\"event\":\"status\",\"state\":\"sealed\"}\n\
                   {\"QMP\":{}}\n";
        let events = console_events(log);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["event"], "boot");
        assert_eq!(events[1]["state"], "sealed");
    }
}

/// A scratch directory for one test's policies and sticks (removed when dropped).
pub struct Workbench {
    pub artifacts: Artifacts,
    pub dir: PathBuf,
    /// Leave the files when done (the demo shows where they are).
    pub keep: bool,
}

impl Workbench {
    pub fn new(artifacts: &Artifacts, name: &str) -> Workbench {
        let dir = log_root().join(format!("{name}-bench"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        Workbench { artifacts: artifacts.clone(), dir, keep: false }
    }

    fn vaultctl(&self) -> Command {
        Command::new(self.artifacts.vaultctl())
    }

    /// A policy for the test vault: one window of `window_minutes` starting `opens_in_secs`
    /// from the host's now, listing both test pushers.
    pub fn policy_toml(&self, version: u64, vault_id: &str, opens_in_secs: i64, window_minutes: u32) -> PathBuf {
        let from = now_secs() + opens_in_secs;
        let spec = PolicySpec { windows: vec![(from, from + i64::from(window_minutes) * 60)], ..PolicySpec::new(version, vault_id) };
        self.write_policy(&spec)
    }

    /// Writes a policy.toml for `spec`.
    pub fn write_policy(&self, spec: &PolicySpec) -> PathBuf {
        let key = |name: &str| std::fs::read_to_string(self.artifacts.keys.join(format!("{name}.pub"))).expect("pusher key").trim().to_string();
        let mut text = format!(
            "vault_id = \"{}\"\nversion = {}\nexpires = \"{}\"\n\n[network]\ninterface = \"eth0\"\naddress = \"{VAULT_IP}/24\"\nport = {VAULT_PORT}\n\n",
            spec.vault_id,
            spec.version,
            rfc3339(now_secs() + 30 * 86_400)
        );
        for (from, until) in &spec.windows {
            text += &format!("[[window]]\nfrom = \"{}\"\nuntil = \"{}\"\n\n", rfc3339(*from), rfc3339(*until));
        }
        for (name, quota) in &spec.pushers {
            text += &format!("[[pusher]]\nname = \"{name}\"\nkey = \"{}\"\nquota = \"{quota}\"\nretain = \"{}\"\n\n", key(name), spec.retain);
        }
        text += &format!("[close]\nearly = {}\ngrace = \"30s\"\n", spec.early_close);
        if let Some(keep_last) = spec.keep_last {
            text += &format!("\n[retention]\nkeep_last = {keep_last}\n");
        }
        if let Some(every) = &spec.scrub_every {
            text += &format!("\n[scrub]\nevery = \"{every}\"\n");
        }
        if let Some((every, sample)) = &spec.drill {
            text += &format!("\n[drill]\nevery = \"{every}\"\nsample = {sample}\n");
        }
        let path = self.dir.join(format!("policy-v{}-{}.toml", spec.version, spec.vault_id));
        std::fs::write(&path, text).expect("policy.toml");
        path
    }

    /// Signs `policy` with each named admin in turn, for the test image's trust root.
    pub fn sign(&self, policy: &Path, admins: &[&str], out_name: &str) -> PathBuf {
        self.sign_for(&self.artifacts.keys.join("root.toml"), policy, admins, out_name)
    }

    /// A trust root for another vault id with the same admins (for mix-and-match bundles).
    pub fn other_root(&self, vault_id: &str) -> PathBuf {
        let out = self.dir.join(format!("root-{vault_id}.toml"));
        let keys = &self.artifacts.keys;
        let mut cmd = self.vaultctl();
        cmd.args(["root", "init", "--vault-id", vault_id, "--threshold", "2", "--out"]).arg(&out);
        for admin in ["alice", "bob", "carol"] {
            cmd.arg("--admin").arg(keys.join(format!("{admin}.pub")));
        }
        run_ok(&mut cmd);
        out
    }

    /// Signs `policy` with each named admin in turn, for the trust root at `root`.
    pub fn sign_for(&self, root: &Path, policy: &Path, admins: &[&str], out_name: &str) -> PathBuf {
        let out = self.dir.join(out_name);
        let mut input = policy.to_path_buf();
        for admin in admins {
            let key = self.artifacts.keys.join(format!("{admin}.key"));
            run_ok(self.vaultctl().args(["policy", "sign", "--root"]).arg(root).arg("--key").arg(key).arg(&input).arg("--out").arg(&out));
            input = out.clone();
        }
        out
    }

    /// A stick image holding `bundle`, verified by vaultctl against the test root unless
    /// `unchecked` (a bundle the vault is to refuse).
    pub fn stick(&self, bundle: &Path, unchecked: bool) -> PathBuf {
        let out = self.dir.join(format!("{}.img", bundle.file_name().unwrap().to_string_lossy()));
        let _ = std::fs::remove_file(&out);
        let mut cmd = self.vaultctl();
        cmd.args(["usb", "write"]).arg(bundle).arg("--out").arg(&out);
        match unchecked {
            true => cmd.arg("--unchecked"),
            false => cmd.arg("--root").arg(self.artifacts.keys.join("root.toml")),
        };
        run_ok(&mut cmd);
        out
    }

    /// `vaultctl order new` with `args` (for the test root), signed by each of `admins`.
    pub fn order(&self, name: &str, args: &[&str], admins: &[&str]) -> PathBuf {
        let out = self.dir.join(format!("{name}.order"));
        let root = self.artifacts.keys.join("root.toml");
        let _ = std::fs::remove_file(&out);
        run_ok(self.vaultctl().args(["order", "new", "--root"]).arg(&root).args(args).arg("--out").arg(&out));
        for admin in admins {
            let key = self.artifacts.keys.join(format!("{admin}.key"));
            run_ok(self.vaultctl().args(["order", "sign", "--root"]).arg(&root).arg("--key").arg(key).arg(&out).arg("--out").arg(&out));
        }
        out
    }

    /// A stick image carrying only `orders` (in `vault-orders/`).
    pub fn order_stick(&self, name: &str, orders: &[PathBuf]) -> PathBuf {
        let out = self.dir.join(format!("{name}.img"));
        let _ = std::fs::remove_file(&out);
        let mut cmd = self.vaultctl();
        cmd.args(["usb", "write", "--root"]).arg(self.artifacts.keys.join("root.toml"));
        for order in orders {
            cmd.arg("--order").arg(order);
        }
        run_ok(cmd.arg("--out").arg(&out));
        out
    }

    /// A file of `bytes` in the bench.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).expect("bench file");
        path
    }
}

impl Drop for Workbench {
    fn drop(&mut self) {
        if !std::thread::panicking() && !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What a test policy says: windows as Unix seconds, pushers with their quotas.
#[derive(Debug, Clone)]
pub struct PolicySpec {
    pub version: u64,
    pub vault_id: String,
    pub windows: Vec<(i64, i64)>,
    pub pushers: Vec<(String, String)>,
    pub early_close: bool,
    /// Every pusher's `retain`.
    pub retain: String,
    /// `[retention] keep_last`, if the policy sets it.
    pub keep_last: Option<u32>,
    /// `[scrub] every`, if the policy sets it.
    pub scrub_every: Option<String>,
    /// `[drill] every` and `sample`, if the policy sets them.
    pub drill: Option<(String, u32)>,
}

impl PolicySpec {
    /// Both test pushers (1 GiB each), early close, no window yet.
    pub fn new(version: u64, vault_id: &str) -> PolicySpec {
        PolicySpec {
            version,
            vault_id: vault_id.into(),
            windows: Vec::new(),
            pushers: vec![("db-backup".into(), "1GiB".into()), ("web-backup".into(), "1GiB".into())],
            early_close: true,
            retain: "35d".into(),
            keep_last: None,
            scrub_every: None,
            drill: None,
        }
    }
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Unix seconds as RFC 3339 UTC (civil-from-days, so the harness needs no date crate).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}

impl Vm {
    /// Quits QEMU in an orderly way (its caches flushed to the disk file); returns the disk.
    pub fn shut_off(&mut self) -> PathBuf {
        if let Some(qmp) = self.qmp.as_mut() {
            let _ = writeln!(qmp.writer, "{}", json!({ "execute": "quit" }));
        }
        if let Some(mut qemu) = self.qemu.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while qemu.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = qemu.kill();
            let _ = qemu.wait();
        }
        self.keep_logs = false;
        self.disk.clone()
    }

    /// The vault key from the `vault_identity` event (what a pusher pins).
    pub fn vault_key(&self) -> String {
        let events = self.events();
        let identity = events.iter().find(|e| e["event"] == "vault_identity").unwrap_or_else(|| self.fail("no vault_identity event"));
        identity["key"].as_str().unwrap().to_string()
    }
}

/// The data partition's offset in the disk (uki-disk.bash: 1 MiB, then a 32 MiB ESP).
const DATA_OFFSET_MIB: u64 = 33;

/// Copies the vault's store out of its disk without mounting anything: the qcow2 to raw, the
/// data partition out of it, its journal replayed, and `debugfs rdump` of `/store`. Returns
/// the store directory.
pub fn extract_store(disk: &Path, into: &Path) -> PathBuf {
    extract(disk, into, false).0
}

/// [`extract_store`], and whether each path under the store (relative to it, directories
/// included) carries the immutable flag on the disk (debugfs `stat`).
pub fn extract_store_with_flags(disk: &Path, into: &Path) -> (PathBuf, BTreeMap<String, bool>) {
    extract(disk, into, true)
}

fn extract(disk: &Path, into: &Path, with_flags: bool) -> (PathBuf, BTreeMap<String, bool>) {
    std::fs::create_dir_all(into).expect("extract dir");
    let raw = into.join("disk.raw");
    run_ok(Command::new("qemu-img").args(["convert", "-f", "qcow2", "-O", "raw"]).arg(disk).arg(&raw));
    let part = into.join("data.ext4");
    run_ok(Command::new("dd").arg(format!("if={}", raw.display())).arg(format!("of={}", part.display())).args(["bs=1M", &format!("skip={DATA_OFFSET_MIB}"), "conv=sparse", "status=none"]));
    let _ = std::fs::remove_file(&raw);
    // What was fsynced may still sit in ext4's journal (the vault was never unmounted, as after
    // a power cut): replay it into this copy first, as a mount would. debugfs reads no journal.
    let fsck = Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(&part).output().expect("e2fsck");
    assert!(matches!(fsck.status.code(), Some(0..=1)), "e2fsck journal replay failed: {}", String::from_utf8_lossy(&fsck.stderr));
    run_ok(Command::new("debugfs").arg("-R").arg(format!("rdump /store {}", into.display())).arg(&part));
    let store = into.join("store");
    let flags = if with_flags { immutable_flags(&part, &store) } else { BTreeMap::new() };
    let _ = std::fs::remove_file(&part);
    (store, flags)
}

/// Rot on the platter, made by hand: flips the bits of `mask` in the byte at `offset` of the file
/// `/store/<path>` on the vault's data filesystem, found through its extents (`debugfs bmap`) and
/// written straight into the block, past the filesystem and its immutable flag. Returns a new
/// qcow2 disk to boot on; `disk` is left as it was.
pub fn flip_byte_in_store(disk: &Path, work: &Path, path: &str, offset: u64, mask: u8) -> PathBuf {
    std::fs::create_dir_all(work).expect("work dir");
    let raw = work.join("disk.raw");
    run_ok(Command::new("qemu-img").args(["convert", "-f", "qcow2", "-O", "raw"]).arg(disk).arg(&raw));
    let part = work.join("data.ext4");
    run_ok(Command::new("dd").arg(format!("if={}", raw.display())).arg(format!("of={}", part.display())).args(["bs=1M", &format!("skip={DATA_OFFSET_MIB}"), "status=none"]));
    // The file's blocks as the journal has them (a mount would replay it first too).
    let fsck = Command::new("e2fsck").args(["-E", "journal_only", "-y"]).arg(&part).output().expect("e2fsck");
    assert!(matches!(fsck.status.code(), Some(0..=1)), "e2fsck journal replay failed: {}", String::from_utf8_lossy(&fsck.stderr));
    let stats = run_ok(Command::new("dumpe2fs").arg("-h").arg(&part));
    let block_size: u64 = stats.lines().find_map(|l| l.strip_prefix("Block size:")).and_then(|v| v.trim().parse().ok()).expect("dumpe2fs block size");
    let bmap = run_ok(Command::new("debugfs").arg("-R").arg(format!("bmap /store/{path} {}", offset / block_size)).arg(&part));
    let physical: u64 = bmap.split_whitespace().last().and_then(|v| v.parse().ok()).filter(|b| *b > 0).unwrap_or_else(|| panic!("debugfs bmap of {path}: {bmap}"));
    let at = physical * block_size + offset % block_size;
    let mut bytes = std::fs::OpenOptions::new().read(true).write(true).open(&part).expect("partition copy");
    use std::io::{Read, Seek, Write};
    let mut byte = [0u8];
    bytes.seek(std::io::SeekFrom::Start(at)).and_then(|_| bytes.read_exact(&mut byte)).expect("read the byte");
    byte[0] ^= mask;
    bytes.seek(std::io::SeekFrom::Start(at)).and_then(|_| bytes.write_all(&byte)).and_then(|_| bytes.sync_all()).expect("write the byte");
    drop(bytes);
    run_ok(Command::new("dd").arg(format!("if={}", part.display())).arg(format!("of={}", raw.display())).args(["bs=1M", &format!("seek={DATA_OFFSET_MIB}"), "conv=notrunc", "status=none"]));
    let flipped = work.join("flipped.qcow2");
    run_ok(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&flipped));
    let _ = std::fs::remove_file(&raw);
    let _ = std::fs::remove_file(&part);
    flipped
}

/// EXT4_IMMUTABLE_FL, as `debugfs stat` prints it in `Flags:`.
const EXT4_IMMUTABLE_FL: u32 = 0x10;

/// For every path of the extracted `store`, whether its inode on `part` is immutable.
fn immutable_flags(part: &Path, store: &Path) -> BTreeMap<String, bool> {
    let paths: Vec<String> = test_net::walk(store, |_| false).into_iter().map(|w| w.rel).collect();
    let commands = part.with_extension("debugfs");
    std::fs::write(&commands, paths.iter().map(|p| format!("stat /store/{p}\n")).collect::<String>()).expect("debugfs commands");
    let out = run_ok(Command::new("debugfs").arg("-f").arg(&commands).arg(part));
    let _ = std::fs::remove_file(&commands);
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in out.lines() {
        if let Some(path) = line.strip_prefix("debugfs: stat /store/") {
            current = Some(path.to_string());
        } else if let (Some(path), Some(hex)) = (&current, line.split("Flags: 0x").nth(1)) {
            let value = u32::from_str_radix(hex.split_whitespace().next().unwrap_or(""), 16).expect("debugfs flags in hex");
            flags.insert(path.clone(), value & EXT4_IMMUTABLE_FL != 0);
            current = None;
        }
    }
    assert_eq!(flags.len(), paths.len(), "debugfs stat answered for every path: {out}");
    flags
}

/// `vaultctl push` from the pusher's side of the test network, JSON summary on stdout.
pub fn push(net: &VaultNet, bench: &Workbench, pusher: &str, vault_key: &str, dataset: &str, source: &Path) -> std::process::Output {
    push_command(net, bench, pusher, vault_key, dataset, source).output().expect("run vaultctl push")
}

/// The `vaultctl push` command of [`push`], to run in the background.
pub fn push_command(net: &VaultNet, bench: &Workbench, pusher: &str, vault_key: &str, dataset: &str, source: &Path) -> Command {
    let keys = &bench.artifacts.keys;
    let mut cmd = net.command(&bench.artifacts.vaultctl());
    cmd.args(["push", "--json", "--connect-timeout-secs", "3", "--vault", &format!("{VAULT_IP}:{VAULT_PORT}"), "--vault-key", vault_key])
        .arg("--key")
        .arg(keys.join(format!("{pusher}.key")))
        .args(["--dataset", dataset])
        .arg("--receipts")
        .arg(bench.dir.join("receipts"))
        .arg("--cache")
        .arg(bench.dir.join(format!("cache-{pusher}-{dataset}.json")))
        .arg(source)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `vaultctl restore` of one snapshot from an extracted store; panics unless it succeeds.
pub fn restore(bench: &Workbench, store: &Path, snapshot: &str, vault_key: &str, to: &Path) {
    run_ok(Command::new(bench.artifacts.vaultctl()).args(["restore", "--store"]).arg(store).args(["--snapshot", snapshot, "--vault-key", vault_key]).arg("--to").arg(to));
}

/// Sealed snapshot ids in an extracted store; panics unless every receipt verifies under
/// `vault_key` and every snapshot is restorable.
pub fn snapshots(bench: &Workbench, store: &Path, vault_key: &str) -> Vec<String> {
    let out = run_ok(Command::new(bench.artifacts.vaultctl()).args(["snapshots", "--json", "--vault-key", vault_key, "--store"]).arg(store));
    let list: Vec<Value> = serde_json::from_str(&out).expect("snapshots JSON");
    list.iter().map(|s| s["snapshot"].as_str().unwrap().to_string()).collect()
}

/// Frames the vault sent that its egress rule does not allow (anything but ARP replies for
/// its address, TCP from its listener, and unicast ARP probes for the peers that TCP went to),
/// judged in capture order as the gatekeeper's guard judges them, as one-line summaries.
pub fn unsolicited(frames: &[test_net::Seen]) -> Vec<String> {
    let mac = vault_core::policy::parse_mac(VAULT_MAC).expect("VAULT_MAC");
    let mut judge = vault_core::link::egress::EgressJudge::new(vault_core::link::egress::EgressRule { mac, address: VAULT_IP, port: VAULT_PORT });
    frames
        .iter()
        .filter_map(|seen| match judge.judge(&seen.frame) {
            vault_core::link::egress::Verdict::Unsolicited(what) => Some(format!("{:.3}: {what}", seen.at)),
            _ => None,
        })
        .collect()
}

/// Times of the ARP replies the vault sent.
pub fn arp_replies(frames: &[test_net::Seen]) -> Vec<f64> {
    frames.iter().filter(|s| test_net::is_arp_reply(&s.frame)).map(|s| s.at).collect()
}

/// One appliance on its own test network, watched from the pusher's side from power-on: the
/// prober sends an ARP request every 50 ms and captures every frame the vault sends.
pub struct Appliance {
    pub vm: Vm,
    pub prober: Option<test_net::Prober>,
    pub bench: Workbench,
    pub net: VaultNet,
    /// Kernel command line words of every boot of this appliance.
    /// Kernel command line words every (re)boot adds; a test may change them between boots.
    pub cmdline_extra: Vec<String>,
}

impl Appliance {
    /// Boots a fresh appliance and waits until it reports Sealed.
    pub fn boot(name: &str, boot: Boot) -> Appliance {
        Appliance::boot_with(name, boot, Vec::new())
    }

    /// [`Appliance::boot`] with words added to the kernel command line (direct boot), kept
    /// for every reboot.
    pub fn boot_with(name: &str, boot: Boot, cmdline_extra: Vec<String>) -> Appliance {
        Appliance::boot_configured(name, boot, VmOptions { cmdline_extra, ..VmOptions::default() })
    }

    /// [`Appliance::boot`] with these options (the network ones are the appliance's own).
    pub fn boot_configured(name: &str, boot: Boot, options: VmOptions) -> Appliance {
        let artifacts = Artifacts::from_env();
        let net = VaultNet::new(&name.chars().filter(char::is_ascii_alphanumeric).take(8).collect::<String>());
        let bench = Workbench::new(&artifacts, name);
        let prober = Some(test_net::Prober::start(&net.probe_site()));
        let cmdline_extra = options.cmdline_extra.clone();
        let mut vm = Vm::boot(&artifacts, name, boot, VmOptions { netns: net.vm_options().netns, ..options });
        vm.wait_for("sealed", Duration::from_secs(120), |e| e["event"] == "status" && e["state"] == "sealed");
        Appliance { vm, prober, bench, net, cmdline_extra }
    }

    /// Signs `spec` with alice and bob, presents it on a stick, waits for it to be accepted.
    pub fn apply_policy(&mut self, spec: &PolicySpec) {
        let toml = self.bench.write_policy(spec);
        let bundle = self.bench.sign(&toml, &["alice", "bob"], &format!("v{}.bundle", spec.version));
        let stick = self.bench.stick(&bundle, false);
        let verdict = self.vm.present_stick(&stick);
        assert_eq!(verdict["event"], "policy_accepted", "{verdict}");
    }

    /// Pulls the plug, then boots again on the same disk and the same network.
    pub fn power_cut_and_reboot(&mut self, name: &str) {
        let disk = self.vm.power_cut();
        self.reboot_on(name, disk);
    }

    /// Boots again on `disk` (after [`Vm::power_cut`]), on the same network.
    pub fn reboot_on(&mut self, name: &str, disk: PathBuf) {
        self.reboot_with(name, disk, Vec::new());
    }

    /// [`Appliance::reboot_on`] with more QEMU arguments (a real-time clock set elsewhere).
    pub fn reboot_with(&mut self, name: &str, disk: PathBuf, extra: Vec<String>) {
        let mut options = VmOptions { disk: Some(disk), cmdline_extra: self.cmdline_extra.clone(), ..self.net.vm_options() };
        options.extra.extend(extra);
        self.vm = Vm::boot(&self.bench.artifacts, name, Boot::Direct, options);
    }

    pub fn push(&self, pusher: &str, dataset: &str, source: &Path) -> std::process::Output {
        push(&self.net, &self.bench, pusher, &self.vm.vault_key(), dataset, source)
    }

    /// Every frame captured so far.
    pub fn frames(&self) -> Vec<test_net::Seen> {
        self.prober.as_ref().map(|p| p.frames()).unwrap_or_default()
    }

    /// Stops the prober; returns what it captured.
    pub fn finish_capture(&mut self) -> Vec<test_net::Seen> {
        self.prober.take().map(|p| p.finish().0).unwrap_or_default()
    }
}

/// The JSON summary `vaultctl push --json` printed; panics with stderr unless it succeeded.
pub fn push_summary(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "push failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("push --json output")
}
