//! What is inside the built image, read from the artifacts without booting them: the
//! initramfs holds one program (the gatekeeper as /init, static) and no shell; the UKI carries
//! the kernel, initramfs, command line and os-release; the GPT disk names its partitions.

use std::collections::BTreeMap;
use std::io::Read;

use qemu_tests::{Artifacts, KernelKind};

/// lz4's legacy format, the one the kernel unpacks: a magic number, then blocks of 8 MiB
/// each (the last one shorter), every one preceded by its compressed size.
fn unlz4_legacy(compressed: &[u8]) -> Vec<u8> {
    const MAGIC: [u8; 4] = 0x184C_2102u32.to_le_bytes();
    const BLOCK: usize = 8 << 20;
    assert_eq!(compressed[..4], MAGIC, "not lz4's legacy format (what the kernel reads)");
    let (mut at, mut data) = (4, Vec::new());
    while at < compressed.len() {
        let size = u32::from_le_bytes(compressed[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        let mut block = vec![0; BLOCK];
        let n = lz4_flex::block::decompress_into(&compressed[at..at + size], &mut block).expect("an lz4 block");
        data.extend_from_slice(&block[..n]);
        at += size;
    }
    data
}

/// (path -> (mode, contents)) of the image's newc cpio.
fn read_cpio(lz4: &[u8]) -> BTreeMap<String, (u32, Vec<u8>)> {
    let data = unlz4_legacy(lz4);
    let field = |at: usize, i: usize| u32::from_str_radix(std::str::from_utf8(&data[at + 6 + i * 8..at + 14 + i * 8]).unwrap(), 16).unwrap() as usize;
    let (mut at, mut entries) = (0, BTreeMap::new());
    loop {
        assert_eq!(&data[at..at + 6], b"070701", "newc magic at {at}");
        let (mode, size, name_len) = (field(at, 1), field(at, 6), field(at, 11));
        let name = String::from_utf8(data[at + 110..at + 110 + name_len - 1].to_vec()).unwrap();
        let body = (at + 110 + name_len).next_multiple_of(4);
        if name == "TRAILER!!!" {
            return entries;
        }
        entries.insert(name, (u32::try_from(mode).unwrap(), data[body..body + size].to_vec()));
        at = (body + size).next_multiple_of(4);
    }
}

fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| u32::from_le_bytes(elf[phoff + i * phentsize..phoff + i * phentsize + 4].try_into().unwrap()) == 3)
}

#[test]
fn the_initramfs_holds_the_gatekeeper_and_nothing_to_log_in_with() {
    let artifacts = Artifacts::from_env();
    let cpio = read_cpio(&std::fs::read(artifacts.out.join("initramfs.cpio.lz4")).unwrap());
    let executables: Vec<&String> = cpio.iter().filter(|(_, (mode, _))| mode & 0o170000 == 0o100000 && mode & 0o111 != 0).map(|(p, _)| p).collect();
    assert_eq!(executables, ["init"], "one program in the image");
    for forbidden in ["sh", "busybox", "getty", "agetty", "sshd", "login", "dropbear"] {
        assert!(!cpio.keys().any(|p| p.rsplit('/').next() == Some(forbidden)), "{forbidden} is in the image");
    }
    assert!(!has_interpreter(&cpio["init"].1), "/init must be statically linked");
    let baked = &cpio["etc/vault/root.toml"].1;
    assert_eq!(baked, &std::fs::read(artifacts.keys.join("root.toml")).unwrap(), "the trust root baked in is the build's ROOT");
    // The module plan parses as the gatekeeper parses it, and every module it names is there.
    let modules = String::from_utf8(cpio["etc/vault/modules.list"].1.clone()).unwrap();
    gatekeeper::modules::ModulePlan::parse(&modules).expect("the module plan parses");
    let paths: Vec<&str> = modules.lines().filter_map(|l| l.strip_prefix("module ")).map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    for path in &paths {
        assert!(cpio.contains_key(path.trim_start_matches('/')), "{path} is listed but not in the image");
    }
    let shipped = cpio.keys().filter(|p| p.ends_with(".ko")).count();
    assert_eq!(shipped, paths.len(), "modules in the image that the plan does not name");
    match artifacts.kernel() {
        KernelKind::Debian => assert!(paths.len() >= 10, "the module plan is too short: {modules}"),
        KernelKind::Minimal => assert!(paths.is_empty() && modules.lines().all(|l| l.starts_with('#')), "the minimal kernel loads no modules: {modules}"),
    }
}

/// PE section name -> contents.
fn pe_sections(pe: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let u32_at = |o: usize| u32::from_le_bytes(pe[o..o + 4].try_into().unwrap()) as usize;
    let u16_at = |o: usize| u16::from_le_bytes([pe[o], pe[o + 1]]) as usize;
    let header = u32_at(0x3c);
    assert_eq!(&pe[header..header + 4], b"PE\0\0");
    let (count, optional) = (u16_at(header + 6), u16_at(header + 20));
    let table = header + 24 + optional;
    (0..count)
        .map(|i| {
            let s = table + i * 40;
            let name = String::from_utf8_lossy(&pe[s..s + 8]).trim_end_matches('\0').to_string();
            let (virtual_size, raw_size, raw_at) = (u32_at(s + 8), u32_at(s + 16), u32_at(s + 20));
            (name, pe[raw_at..raw_at + raw_size.min(virtual_size.max(1))].to_vec())
        })
        .collect()
}

#[test]
fn the_uki_carries_kernel_initramfs_cmdline_and_os_release() {
    let artifacts = Artifacts::from_env();
    let uki = std::fs::read(artifacts.out.join("vault.efi")).unwrap();
    assert!(uki.len() <= 16 << 20, "UKI is {} bytes, over 16 MiB", uki.len());
    let sections = pe_sections(&uki);
    let cmdline = String::from_utf8(sections[".cmdline"].clone()).unwrap();
    assert!(cmdline.contains("console=ttyS0") && cmdline.contains("console=tty0"), "{cmdline}");
    assert!(cmdline.split(' ').any(|arg| arg == "module.sig_enforce=1"), "only signed modules may load: {cmdline}");
    assert!(String::from_utf8_lossy(&sections[".osrel"]).contains("ID=airgap-vault"));
    assert_eq!(sections[".linux"], std::fs::read(artifacts.out.join("vmlinuz")).unwrap());
    assert_eq!(sections[".initrd"], std::fs::read(artifacts.out.join("initramfs.cpio.lz4")).unwrap());
}

#[test]
fn the_disk_is_gpt_with_an_esp_and_a_named_data_partition() {
    let artifacts = Artifacts::from_env();
    let mut disk = std::fs::File::open(artifacts.out.join("vault.img")).unwrap();
    let mut head = vec![0u8; 34 * 512];
    disk.read_exact(&mut head).unwrap();
    assert_eq!(&head[512..520], b"EFI PART");
    let entries = &head[1024..];
    let name = |i: usize| String::from_utf16_lossy(&entries[i * 128 + 56..i * 128 + 128].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&c| c != 0).collect::<Vec<_>>());
    assert_eq!(name(0), "vault-esp");
    assert_eq!(name(1), "vault-data");
    // The ESP's type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B, mixed-endian on disk).
    assert_eq!(&entries[..16], &[0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
}
