# The appliance's boot artifacts, in one place for both builders: image/build.sh (Debian
# packages) and board/vault/post-image.sh (Buildroot) source this file, so the UKI and the
# disk layout cannot drift apart. Reproducible: every time and id inside comes from
# SOURCE_DATE_EPOCH or a constant.
#
# Needs: objcopy (with PE support), mkfs.fat and mcopy, mkfs.ext4, sfdisk.
# shellcheck shell=bash

# What the UKI boots with: the console on the serial port and the screen (the same image is
# watched in QEMU and on hardware), quiet kernel. panic=10: a kernel panic (PID 1 itself gone,
# which its restart loop makes unlikely) restarts the box after 10 s instead of hanging it until
# someone power-cycles it; it comes back sealed and opens its next window. cryptomgr.notests
# skips the kernel's crypto known-answer self-tests (most of a second of boot under emulation):
# the vault's own cryptography is ring in userspace, and the kernel's is only used for module
# signatures and ext4 checksums, whose algorithms still run, untested at boot.
# module.sig_enforce=1: the kernel loads only modules signed by the kernel's builder (Debian),
# whatever a process with CAP_SYS_MODULE asks for.
# initcall_blacklist: start-up work for interfaces the appliance has no use for, about 0.3 s
# under emulation: the tracing filesystem (tracefs files for ~2000 trace events, and each
# module's events again as it loads; nothing on the box could read them) with its enum
# rewriting, and the SP 800-108 KDF's known-answer test (nothing on the box uses that KDF).
# Tracepoints themselves stay compiled in and off, as they are on any kernel.
# noreplace-smp: on a one-CPU machine the kernel would otherwise rewrite every LOCK prefix in
# its text (and in each module's, as it loads) into a no-op, one text_poke with a page-table
# switch per site: about 0.4 s of a one-CPU VM's boot under emulation. The locked instructions
# stay; they are correct on any number of CPUs, and a multi-CPU box never did this rewrite.
VAULT_CMDLINE="console=tty0 console=ttyS0,115200 loglevel=4 panic=10 cryptomgr.notests module.sig_enforce=1 initcall_blacklist=trace_eval_init,tracer_init_tracefs,crypto_kdf108_init noreplace-smp"
VAULT_UKI_LIMIT=$((16 * 1024 * 1024))
# GPT: a 32 MiB ESP then the data partition, found by the gatekeeper by its name.
VAULT_ESP_MIB=32
VAULT_DATA_PARTNAME=vault-data
# The data partition's own GPT type, so nothing mistakes it for a Linux root.
VAULT_DATA_TYPE=5661756c-7444-4174-a000-000000000001

# vault_uki STUB VMLINUZ INITRD OS_RELEASE WORKDIR OUT
# systemd's EFI stub with the kernel, initramfs, command line and os-release as sections.
vault_uki() {
  local stub=$1 vmlinuz=$2 initrd=$3 osrel=$4 work=$5 out=$6
  printf '%s' "$VAULT_CMDLINE" > "$work/cmdline"
  local linux_vma=0x2000000 initrd_vma
  initrd_vma=$(printf '0x%x' $(( (linux_vma + $(stat -c %s "$vmlinuz") + 0xfff) / 0x1000 * 0x1000 )))
  objcopy \
    --add-section .osrel="$osrel" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
    --add-section .linux="$vmlinuz" --change-section-vma .linux="$linux_vma" \
    --add-section .initrd="$initrd" --change-section-vma .initrd="$initrd_vma" \
    "$stub" "$out"
  # objcopy (binutils 2.40) stamps the PE header with the current time: put SOURCE_DATE_EPOCH
  # there instead, and zero the optional checksum (EFI firmware does not check it).
  local pe
  pe=$(od -An -tu4 -j60 -N4 "$out" | tr -d ' ')
  vault_put_le32 "$out" $((pe + 8)) "$SOURCE_DATE_EPOCH"
  vault_put_le32 "$out" $((pe + 88)) 0
  local size
  size=$(stat -c %s "$out")
  if [ "$size" -gt "$VAULT_UKI_LIMIT" ]; then
    echo "vault.efi is $size bytes, over the 16 MiB limit" >&2
    return 1
  fi
  touch -d "@$SOURCE_DATE_EPOCH" "$out"
}

# vault_put_le32 FILE OFFSET VALUE: writes VALUE as a little-endian 32-bit word in place.
vault_put_le32() {
  local hex
  hex=$(printf '%08x' "$3")
  printf '%b' "\\x${hex:6:2}\\x${hex:4:2}\\x${hex:2:2}\\x${hex:0:2}" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# vault_disk UKI DATA_MIB WORKDIR OUT
# A raw GPT disk: the ESP holding the UKI as \EFI\BOOT\BOOTX64.EFI, and an empty ext4 data
# partition. No loop mounts: each filesystem is made in a file and copied into place.
vault_disk() {
  local uki=$1 data_mib=$2 work=$3 img=$4
  local esp_mib=$VAULT_ESP_MIB
  mkfs.fat -C --invariant -i 7661756c -n VAULT-ESP -F 16 "$work/esp.img" $((esp_mib * 1024)) >/dev/null
  mkdir -p "$work/esp/EFI/BOOT"
  cp -p "$uki" "$work/esp/EFI/BOOT/BOOTX64.EFI"
  find "$work/esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  MTOOLS_SKIP_CHECK=1 mcopy -i "$work/esp.img" -s -m -Q "$work/esp/EFI" ::/
  mkdir -p "$work/data-root"
  E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -L "$VAULT_DATA_PARTNAME" \
    -U 5661756c-7444-4174-a000-000000000002 -E hash_seed=5661756c-7444-4174-a000-000000000003,root_owner=0:0 \
    -d "$work/data-root" "$work/data.img" "${data_mib}M"
  rm -f "$img"
  truncate -s $(( (1 + esp_mib + data_mib + 1) * 1024 * 1024 )) "$img"
  sfdisk -q --no-reread --no-tell-kernel "$img" <<GPT
label: gpt
label-id: 5661756c-7444-4174-a000-000000000000
first-lba: 2048
start=2048, size=$((esp_mib * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=5661756c-7444-4174-a000-0000000000e5, name="vault-esp"
start=$(( (1 + esp_mib) * 2048 )), size=$((data_mib * 2048)), type=$VAULT_DATA_TYPE, uuid=5661756c-7444-4174-a000-0000000000da, name="$VAULT_DATA_PARTNAME"
GPT
  dd if="$work/esp.img" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$work/data.img" of="$img" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
}
