//! Which kernel modules to load, and in what order: the pure half of PID 1's module loading
//! (the I/O half is in [`crate::init`]).
//!
//! The image carries one plan, `/etc/vault/modules.list`, written by the image builder from
//! `image/modules.txt` and the kernel's own modules.dep and modules.alias:
//!
//! ```text
//! module NAME PATH [DEP...]     every module in the image, with its direct dependencies
//! load PHASE WHEN NAME          what to load: PHASE `disk`, `boot` or `usb` (see [`Phase`]),
//!                               WHEN `present` (a device here matches its aliases) or `always`
//! alias PATTERN NAME            the kernel's device aliases (fnmatch) of the `present` modules
//! ```
//!
//! Loading only drivers for hardware that is there is what udev's coldplug does; here it is
//! what keeps boot short: every module costs a signature check and relocation, and the box
//! has one disk controller and one NIC, not all of them.

use std::collections::{BTreeMap, BTreeSet};

/// When a module is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Disk controllers, tried one at a time in the plan's order until the data partition
    /// shows; the rest are never loaded (the vault uses one disk).
    Disk,
    /// Before the links are sealed: the data filesystem and the NIC drivers.
    Boot,
    /// In the background once sealed: USB host controllers and what a policy stick needs.
    Usb,
}

/// Whether a module needs matching hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Present,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Module {
    path: String,
    deps: Vec<String>,
}

/// The parsed plan.
#[derive(Debug, Default)]
pub struct ModulePlan {
    modules: BTreeMap<String, Module>,
    loads: Vec<(Phase, When, String)>,
    aliases: Vec<(String, String)>,
}

impl ModulePlan {
    /// Parses a plan; every line is checked, so a broken image says which line at boot.
    pub fn parse(text: &str) -> Result<ModulePlan, String> {
        let mut plan = ModulePlan::default();
        for (number, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("modules.list line {number}: {why}: `{line}`");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["module", name, path, deps @ ..] => {
                    let module = Module { path: path.to_string(), deps: deps.iter().map(|d| d.to_string()).collect() };
                    if plan.modules.insert(name.to_string(), module).is_some() {
                        return Err(bad("module listed twice"));
                    }
                }
                ["load", phase, when, name] => {
                    let phase = match *phase {
                        "disk" => Phase::Disk,
                        "boot" => Phase::Boot,
                        "usb" => Phase::Usb,
                        _ => return Err(bad("phase must be `disk`, `boot` or `usb`")),
                    };
                    let when = match *when {
                        "present" => When::Present,
                        "always" => When::Always,
                        _ => return Err(bad("must be `present` or `always`")),
                    };
                    plan.loads.push((phase, when, name.to_string()));
                }
                ["alias", pattern, name] => {
                    if !brackets_close(pattern.as_bytes()) {
                        return Err(bad("bad alias pattern (a `[` is never closed)"));
                    }
                    plan.aliases.push((pattern.to_string(), name.to_string()));
                }
                _ => return Err(bad("expected `module NAME PATH [DEP...]`, `load PHASE WHEN NAME` or `alias PATTERN NAME`")),
            }
        }
        for name in plan.modules.values().flat_map(|m| &m.deps).chain(plan.loads.iter().map(|(_, _, n)| n)).chain(plan.aliases.iter().map(|(_, n)| n)) {
            if !plan.modules.contains_key(name) {
                return Err(format!("modules.list names `{name}`, which has no `module` line"));
            }
        }
        Ok(plan)
    }

    /// The modules `phase` wants on a machine whose devices have these modaliases, in the
    /// plan's order.
    pub fn wanted<'a>(&'a self, phase: Phase, modaliases: &[String]) -> Vec<&'a str> {
        let mut wanted: Vec<&str> = Vec::new();
        let matching = |name: &str| self.aliases.iter().any(|(pattern, owner)| owner == name && modaliases.iter().any(|m| fnmatch(pattern.as_bytes(), m.as_bytes())));
        for (_, when, name) in self.loads.iter().filter(|(p, _, _)| *p == phase) {
            if (*when == When::Always || matching(name)) && !wanted.contains(&name.as_str()) {
                wanted.push(name);
            }
        }
        wanted
    }

    /// Paths to load for `names`, each module after its dependencies, skipping what is loaded.
    pub fn load_order(&self, names: &[&str], loaded: &BTreeSet<String>) -> Vec<(String, String)> {
        fn visit(plan: &ModulePlan, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<(String, String)>) {
            if !seen.insert(name.to_string()) {
                return;
            }
            let module = &plan.modules[name];
            for dep in &module.deps {
                visit(plan, dep, seen, order);
            }
            order.push((name.to_string(), module.path.clone()));
        }
        let mut seen = loaded.clone();
        let mut order = Vec::new();
        for name in names {
            visit(self, name, &mut seen, &mut order);
        }
        order
    }
}

/// Shell wildcard matching as modprobe does it (`fnmatch(3)` with no flags): `*`, `?` and
/// `[...]` sets with ranges and `!` or `^` negation (no backslash escapes: kernel aliases have
/// none). Nothing is compiled: the
/// plan holds hundreds and a boot matches each against a few dozen devices once or twice.
pub fn fnmatch(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: the pattern just past it, and the text it covers up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_set(pattern, p, text[t]).and_then(|(end, matched)| matched.then_some(end)),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((after_star, covered))) => {
                p = after_star;
                t = covered + 1;
                star = Some((after_star, covered + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The set opening at `pattern[open]`, tried on `c`: the index past it and whether `c` is in
/// it, or `None` if it never closes.
fn match_set(pattern: &[u8], open: usize, c: u8) -> Option<(usize, bool)> {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((i + 1, matched != negated));
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&hi| hi != b']') {
            matched |= (lo..=pattern[i + 2]).contains(&c);
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// Every `[` outside a set opens one that closes.
fn brackets_close(pattern: &[u8]) -> bool {
    let mut i = 0;
    while i < pattern.len() {
        if pattern[i] == b'[' {
            match match_set(pattern, i, 0) {
                Some((end, _)) => i = end,
                None => return false,
            }
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
# a comment
module virtio_ring /m/virtio_ring.ko
module virtio /m/virtio.ko virtio_ring
module virtio_pci /m/virtio_pci.ko virtio virtio_ring
module virtio_blk /m/virtio_blk.ko virtio virtio_ring
module ahci /m/ahci.ko
module ext4 /m/ext4.ko
module usb_storage /m/usb-storage.ko
module xhci_pci /m/xhci-pci.ko
load disk present virtio_pci
load disk present virtio_blk
load disk present ahci
load boot always ext4
load usb present xhci_pci
load usb always usb_storage
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
";

    fn aliases(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_drivers_for_present_hardware_are_wanted() {
        let plan = ModulePlan::parse(PLAN).unwrap();
        let virtio_box = aliases(&["pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"]);
        assert_eq!(plan.wanted(Phase::Disk, &virtio_box), ["virtio_pci"]);
        assert_eq!(plan.wanted(Phase::Boot, &virtio_box), ["ext4"]);
        // Once virtio_pci has probed, its children appear on the virtio bus.
        let later = aliases(&["pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00", "virtio:d00000002v00001AF4"]);
        assert_eq!(plan.wanted(Phase::Disk, &later), ["virtio_pci", "virtio_blk"]);
        let sata_box = aliases(&["pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"]);
        assert_eq!(plan.wanted(Phase::Disk, &sata_box), ["ahci"]);
        assert_eq!(plan.wanted(Phase::Usb, &sata_box), ["usb_storage"]);
        let with_xhci = aliases(&["pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30"]);
        assert_eq!(plan.wanted(Phase::Usb, &with_xhci), ["xhci_pci", "usb_storage"]);
        assert!(plan.wanted(Phase::Disk, &[]).is_empty());
    }

    #[test]
    fn dependencies_load_first_and_once() {
        let plan = ModulePlan::parse(PLAN).unwrap();
        let order = plan.load_order(&["virtio_blk", "virtio_pci"], &BTreeSet::new());
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk", "virtio_pci"]);
        assert_eq!(order[2].1, "/m/virtio_blk.ko");
        let loaded: BTreeSet<String> = ["virtio_ring", "virtio", "virtio_pci"].iter().map(|s| s.to_string()).collect();
        let again = plan.load_order(&["virtio_blk", "virtio_pci"], &loaded);
        assert_eq!(again, [("virtio_blk".to_string(), "/m/virtio_blk.ko".to_string())]);
    }

    #[test]
    fn fnmatch_matches_as_modprobe_does() {
        let m = |p: &str, t: &str| fnmatch(p.as_bytes(), t.as_bytes());
        assert!(m("pci:v*d*sv*sd*bc01sc06i01*", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"));
        assert!(!m("pci:v*d*sv*sd*bc01sc06i01*", "pci:v00008086d00002922sv00001AF4sd00001100bc01sc08i02"));
        assert!(m("virtio:d00000002v*", "virtio:d00000002v00001AF4"));
        assert!(!m("virtio:d00000002v*", "virtio:d00000001v00001AF4"));
        // usb-storage's aliases use sets with ranges.
        assert!(m("usb:v0BC2p3332d0[0-8]*", "usb:v0BC2p3332d0100dc00"));
        assert!(!m("usb:v0BC2p3332d0[0-8]*", "usb:v0BC2p3332d0900dc00"));
        assert!(m("a[!0-9]c", "abc") && !m("a[!0-9]c", "a1c") && m("a[^x]c", "abc"));
        assert!(m("a[]]c", "a]c") && m("a?c", "axc") && !m("a?c", "ac"));
        assert!(m("*", "") && m("", "") && !m("", "a") && m("a**b", "ab") && m("*b*", "abc"));
        assert!(!m("a[bc", "ab"), "an unclosed set matches nothing (and `parse` refuses it)");
    }

    #[test]
    fn a_broken_plan_is_refused_with_the_line() {
        let err = |text: &str| ModulePlan::parse(text).unwrap_err();
        assert!(err("load boot sometimes ext4\nmodule ext4 /e.ko").contains("line 1: must be `present` or `always`"));
        assert!(err("load early always ext4").contains("phase must be `disk`, `boot` or `usb`"));
        assert!(err("module ext4 /e.ko jbd2").contains("`jbd2`, which has no `module` line"));
        assert!(err("module a /a.ko\nmodule a /b.ko").contains("line 2: module listed twice"));
        assert!(err("module a /a.ko\nalias pci:[ a").contains("bad alias pattern"));
        assert!(err("insmod ext4").contains("expected `module NAME PATH"));
        assert!(err("alias pci:* ghost").contains("`ghost`"));
    }

    proptest::proptest! {
        // Most random patterns with a `[` leave it unclosed; those are skipped, not failures.
        #![proptest_config(proptest::test_runner::Config { max_global_rejects: 1_000_000, ..proptest::test_runner::Config::default() })]
        /// The same answers as the C library's fnmatch, which modprobe uses.
        #[test]
        fn fnmatch_agrees_with_libc(pattern in "[ab*?!^\\[\\]-]{0,8}", text in "[ab*?!^\\[\\]-]{0,6}") {
            // An unclosed `[` is a literal to glibc and a refused plan line here.
            proptest::prop_assume!(brackets_close(pattern.as_bytes()));
            let (p, t) = (std::ffi::CString::new(pattern.clone()).unwrap(), std::ffi::CString::new(text.clone()).unwrap());
            // SAFETY: both are NUL-terminated strings that outlive the call; fnmatch only reads them.
            let libc = unsafe { nix::libc::fnmatch(p.as_ptr(), t.as_ptr(), 0) } == 0;
            proptest::prop_assert_eq!(fnmatch(pattern.as_bytes(), text.as_bytes()), libc, "pattern {:?} text {:?}", pattern, text);
        }
    }
}
