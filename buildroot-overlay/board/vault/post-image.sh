#!/usr/bin/env bash
# Buildroot post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT), run with BINARIES_DIR as $1.
# Makes, from Buildroot's bzImage and rootfs.cpio.lz4, what image/build.sh makes from Debian's
# packages, in the same layout: the UKI and the disk come from uki-disk.bash, which build.sh
# sources too. Writes to BINARIES_DIR:
#   vmlinuz, initramfs.cpio.lz4  direct kernel boot (copies of bzImage and rootfs.cpio.lz4)
#   vault.efi                    a UKI: systemd's EFI stub + kernel + initramfs + cmdline + os-release
#   vault.img                    GPT disk: ESP (\EFI\BOOT\BOOTX64.EFI) + ext4 data partition
#   MANIFEST, SHA256SUMS         what it was built from; checksums
# (build.sh's vault.qcow2 needs qemu-img, which Buildroot builds only with host-qemu:
#  qemu-img convert -f raw -O qcow2 vault.img vault.qcow2.)
#
# Tools come from $HOST_DIR: mkfs.fat (host-dosfstools), mcopy (host-mtools), mkfs.ext4
# (host-e2fsprogs), sfdisk (host-util-linux) and objcopy (the toolchain's binutils).
#
# The EFI stub. Buildroot builds systemd's linuxx64.efi.stub only as part of systemd
# (BR2_PACKAGE_SYSTEMD_BOOT, inside BR2_PACKAGE_SYSTEMD, which BR2_INIT_SYSTEMD selects), never
# with BR2_INIT_NONE. So it comes from outside, the first of:
#   1. this script's second argument: BR2_ROOTFS_POST_IMAGE_SCRIPT_ARGS="/path/to/linuxx64.efi.stub"
#   2. $VAULT_EFI_STUB: make VAULT_EFI_STUB=/path/to/linuxx64.efi.stub
# There is no fallback to whatever stub the build host has installed: an unpinned stub would make
# the image depend on the host. image/build.sh uses the systemd-boot-efi version pinned in
# image/packages.lock; readme.txt says how to use that same file here. Its SHA-256 goes into
# MANIFEST.
set -euo pipefail

OUT=${1:?usage: post-image.sh BINARIES_DIR [EFI_STUB]}
STUB=${2:-${VAULT_EFI_STUB:-}}
[ -n "$STUB" ] || { echo "post-image: no EFI stub given: pass the pinned linuxx64.efi.stub as BR2_ROOTFS_POST_IMAGE_SCRIPT_ARGS or VAULT_EFI_STUB (readme.txt says where to get it)" >&2; exit 1; }
: "${HOST_DIR:?HOST_DIR is not set: run this from Buildroot}"
: "${TARGET_DIR:?TARGET_DIR is not set: run this from Buildroot}"
TREE=$TARGET_DIR
BOARD_DIR=$(cd "$(dirname "$0")" && pwd)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$BOARD_DIR" log -1 --format=%ct 2>/dev/null || echo 1764000000)}
export TZ=UTC LC_ALL=C
umask 022

die() { echo "post-image: $*" >&2; exit 1; }

# ---- tools, from $HOST_DIR ------------------------------------------------------------------
export PATH="$HOST_DIR/bin:$HOST_DIR/sbin:$PATH"
for need in mkfs.fat:BR2_PACKAGE_HOST_DOSFSTOOLS mcopy:BR2_PACKAGE_HOST_MTOOLS \
  mkfs.ext4:BR2_PACKAGE_HOST_E2FSPROGS sfdisk:BR2_PACKAGE_HOST_UTIL_LINUX; do
  tool=${need%%:*}
  case "$(command -v "$tool" || true)" in
    "$HOST_DIR"/*) ;;
    *) die "$tool is not in $HOST_DIR: enable ${need#*:}" ;;
  esac
done
objcopies=("$HOST_DIR"/bin/x86_64-*-objcopy)
OBJCOPY=${objcopies[0]}
[ -x "$OBJCOPY" ] || die "no x86_64 objcopy in $HOST_DIR/bin (the toolchain's binutils)"
"$OBJCOPY" --info 2>/dev/null | grep -q 'pei-x86-64' || die "$OBJCOPY cannot write PE files (pei-x86-64)"
objcopy() { "$OBJCOPY" "$@"; }

# ---- inputs ---------------------------------------------------------------------------------
[ -f "$STUB" ] || die "no EFI stub at $STUB (see the header of $0)"
[ "$(head -c 2 "$STUB")" = MZ ] || die "$STUB is not a PE file"
[ -f "$OUT/bzImage" ] || die "no $OUT/bzImage (BR2_LINUX_KERNEL_BZIMAGE)"
[ -f "$OUT/rootfs.cpio.lz4" ] || die "no $OUT/rootfs.cpio.lz4 (BR2_TARGET_ROOTFS_CPIO_LZ4)"
WORK=$(mktemp -d "${BUILD_DIR:-/tmp}/vault-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
install -m 0644 "$OUT/bzImage" "$OUT/vmlinuz"
install -m 0644 "$OUT/rootfs.cpio.lz4" "$OUT/initramfs.cpio.lz4"

# ---- 4. the UKI, 5. the GPT disk: the same functions image/build.sh uses -------------------
# shellcheck source=uki-disk.bash
. "$BOARD_DIR/uki-disk.bash"
CMDLINE=$VAULT_CMDLINE
vault_uki "$STUB" "$OUT/vmlinuz" "$OUT/initramfs.cpio.lz4" "$TREE/etc/os-release" "$WORK" "$OUT/vault.efi" || die "UKI failed"
vault_disk "$OUT/vault.efi" "${DATA_MIB:-512}" "$WORK" "$OUT/vault.img"

# ---- 6. manifest and checksums ---------------------------------------------------------------
sha() { sha256sum "$1" | cut -d' ' -f1; }
{
  echo "image: air-gap vault (buildroot)"
  echo "source_date_epoch: $SOURCE_DATE_EPOCH"
  echo "kernel: $(sed -n 's/^BR2_LINUX_KERNEL_VERSION=//p' "${BR2_CONFIG:-/dev/null}" | tr -d '"') bzImage sha256:$(sha "$OUT/vmlinuz")"
  echo "efi-stub: linuxx64.efi.stub sha256:$(sha "$STUB")"
  echo "gatekeeper: sha256:$(sha "$TREE/init")"
  echo "trust-root: sha256:$(sha "$TREE/etc/vault/root.toml")"
  echo "cmdline: $CMDLINE"
} > "$OUT/MANIFEST"
(cd "$OUT" && sha256sum MANIFEST vmlinuz initramfs.cpio.lz4 vault.efi vault.img > SHA256SUMS)

echo "post-image: built in $OUT"
for f in vmlinuz initramfs.cpio.lz4 vault.efi vault.img; do
  printf '  %-18s %10s bytes\n' "$f" "$(stat -c %s "$OUT/$f")"
done
