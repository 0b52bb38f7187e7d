#!/usr/bin/env bash
# make image: the appliance from Debian packages (pinned in image/packages.lock) and the
# gatekeeper built here. Writes to out/:
#   vmlinuz, initramfs.cpio.lz4  direct kernel boot (QEMU -kernel/-initrd)
#   vault.efi                    a UKI: systemd's EFI stub + kernel + initramfs + cmdline + os-release
#   vault.img, vault.qcow2       GPT disk: ESP (\EFI\BOOT\BOOTX64.EFI) + ext4 data partition
#   MANIFEST, SHA256SUMS         what it was built from; checksums
# Reproducible: same inputs, same SHA256SUMS (SOURCE_DATE_EPOCH, sorted cpio, fixed ids).
#
# KERNEL picks the kernel:
#   debian   (default) Debian's signed kernel package; the gatekeeper loads the few modules this
#            machine needs at boot (image/modules.txt), module signatures enforced
#   minimal  the same Debian kernel release built here from Debian's linux-source package with
#            buildroot-overlay/board/vault/linux.config: every driver built in, no module
#            support at all, much less kernel; reaches Sealed in half to two thirds of the time
#
# usage: ROOT=path/to/root.toml [KERNEL=debian|minimal] [VARIANT=production] [OUT=out] image/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD

ROOT=${ROOT:-}
VARIANT=${VARIANT:-production}
KERNEL=${KERNEL:-debian}
KERNEL_CONFIG=${KERNEL_CONFIG:-$TOP/buildroot-overlay/board/vault/linux.config}
OUT=${OUT:-$TOP/out}
CACHE=${IMAGE_CACHE:-$HOME/.cache/vault-image}
LOCK=${PACKAGES_LOCK:-$TOP/image/packages.lock}
OVERLAY=$TOP/buildroot-overlay/board/vault/rootfs_overlay
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || echo 1764000000)}
export TZ=UTC LC_ALL=C
umask 022

die() { echo "image: $*" >&2; exit 1; }
[ -n "$ROOT" ] || die "say which trust root to bake in: make image ROOT=path/to/root.toml (vaultctl root init makes one; make demo makes its own)"
[ -f "$ROOT" ] || die "ROOT=$ROOT: no such file"
[ "$VARIANT" = production ] || die "VARIANT=$VARIANT: only the production variant exists (no shell is ever in the image)"
case $KERNEL in debian|minimal) ;; *) die "KERNEL=$KERNEL: expected debian (the signed kernel package) or minimal (built from its source package)" ;; esac

# ---- tools ----------------------------------------------------------------------------------
need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v depmod >/dev/null || need+=(kmod)
command -v objcopy >/dev/null || need+=(binutils)
command -v mkfs.fat >/dev/null || need+=(dosfstools)
command -v mcopy >/dev/null || need+=(mtools)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v python3 >/dev/null || need+=(python3)
command -v lz4 >/dev/null || need+=(lz4)
# Secure Boot: SB_KEY and SB_CERT (PEM) sign the UKI with the operator's own db key.
if [ -n "${SB_KEY:-}${SB_CERT:-}" ]; then
  if [ ! -f "${SB_KEY:-}" ] || [ ! -f "${SB_CERT:-}" ]; then die "Secure Boot signing needs both SB_KEY and SB_CERT (PEM files); got SB_KEY=${SB_KEY:-} SB_CERT=${SB_CERT:-}"; fi
  command -v sbsign >/dev/null || need+=(sbsigntool)
  command -v openssl >/dev/null || need+=(openssl)
fi
if [ "$KERNEL" = minimal ]; then
  command -v gcc >/dev/null || need+=(gcc)
  command -v make >/dev/null || need+=(make)
  command -v bc >/dev/null || need+=(bc)
  command -v bison >/dev/null || need+=(bison)
  command -v flex >/dev/null || need+=(flex)
  command -v xz >/dev/null || need+=(xz-utils)
  [ -f /usr/include/libelf.h ] || need+=(libelf-dev)
  [ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
fi
if ((${#need[@]})); then
  echo "image: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d /tmp/vault-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" "$CACHE"

# ---- 1. pinned Debian packages --------------------------------------------------------------
debfile() { # $1 package, $2 version -> where apt-get download puts it (amd64 or all)
  local arch
  for arch in amd64 all; do
    [ -f "$CACHE/${1}_${2//:/%3a}_$arch.deb" ] && { echo "$CACHE/${1}_${2//:/%3a}_$arch.deb"; return; }
  done
  echo "$CACHE/${1}_${2//:/%3a}_amd64.deb"
}
fetch() { # $1 package, $2 version, $3 sha256 -> path of the verified .deb
  local pkg=$1 ver=$2 sum=$3 deb
  deb=$(debfile "$pkg" "$ver")
  if [ ! -f "$deb" ]; then
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
    if ! (cd "$CACHE" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$WORK/apt.err"); then
      cat "$WORK/apt.err" >&2
      die "pinned $pkg $ver is no longer served by the Debian mirrors (superseded, e.g. by a kernel security update). Run 'make pins' to pin what is served now, review the diff of image/packages.lock, and build again."
    fi
    deb=$(debfile "$pkg" "$ver")
  fi
  local got
  got=$(sha256sum "$deb" | cut -d' ' -f1)
  [ "$got" = "$sum" ] || die "$deb: SHA-256 $got does not match the pin $sum in image/packages.lock; refusing to build from it"
  echo "$deb"
}
KERNEL_PKG=$(awk '$1 ~ /^linux-image-/ {print $1}' "$LOCK")
read -r _ KERNEL_VER KERNEL_SUM < <(grep "^$KERNEL_PKG " "$LOCK")
read -r _ STUB_VER STUB_SUM < <(grep "^systemd-boot-efi " "$LOCK")
STUB_DEB=$(fetch systemd-boot-efi "$STUB_VER" "$STUB_SUM")
dpkg-deb -x "$STUB_DEB" "$WORK/stub"
STUB=$WORK/stub/usr/lib/systemd/boot/efi/linuxx64.efi.stub
if [ "$KERNEL" = debian ]; then
  KERNEL_DEB=$(fetch "$KERNEL_PKG" "$KERNEL_VER" "$KERNEL_SUM")
  dpkg-deb -x "$KERNEL_DEB" "$WORK/kernel"
  KVER=$(ls "$WORK/kernel/lib/modules")
  VMLINUZ=$WORK/kernel/boot/vmlinuz-$KVER
  depmod -b "$WORK/kernel" "$KVER"
  KERNEL_MANIFEST="$KERNEL_PKG $KERNEL_VER sha256:$KERNEL_SUM ($KVER)"
else
  # The same release as the kernel package, so both images run the same (security-patched) code.
  SOURCE_PKG=$(awk '$1 ~ /^linux-source-/ {print $1}' "$LOCK")
  read -r _ SOURCE_VER SOURCE_SUM < <(grep "^$SOURCE_PKG " "$LOCK")
  [ "$SOURCE_VER" = "$KERNEL_VER" ] || die "image/packages.lock pins $SOURCE_PKG $SOURCE_VER but $KERNEL_PKG $KERNEL_VER; the minimal kernel must be the same release (make pins pins both)"
  SOURCE_DEB=$(fetch "$SOURCE_PKG" "$SOURCE_VER" "$SOURCE_SUM")
  # shellcheck source=kernel.bash
  . "$TOP/image/kernel.bash"
  VMLINUZ=$(minimal_kernel "$SOURCE_DEB" "$KERNEL_CONFIG" "$CACHE/kernels" "$WORK/ksrc")
  KVER=$(cat "$VMLINUZ.release")
  KERNEL_MANIFEST="built from $SOURCE_PKG $SOURCE_VER sha256:$SOURCE_SUM with linux.config sha256:$(sha256sum "$KERNEL_CONFIG" | cut -d' ' -f1) ($KVER, no modules)"
fi

# ---- 2. the gatekeeper, static, with no build paths inside ------------------------------------
echo "image: building the gatekeeper (static)"
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$TOP=/build --remap-path-prefix=$CARGO_HOME_DIR=/cargo" \
  cargo build --release --locked --target x86_64-unknown-linux-gnu -p gatekeeper -q
GATEKEEPER=${CARGO_TARGET_DIR:-$TOP/target}/x86_64-unknown-linux-gnu/release/gatekeeper
# The trust root must be one the gatekeeper accepts.
"$GATEKEEPER" --root "$ROOT" --state "$WORK/check-state" status >/dev/null || die "ROOT=$ROOT is not a valid trust root"

# ---- 3. the initramfs -----------------------------------------------------------------------
TREE=$WORK/initramfs
mkdir -p "$TREE"/{dev,proc,sys,run,data,mnt,etc/vault}
cp -a "$OVERLAY"/. "$TREE"/
rm -f "$TREE/etc/vault/README"
install -m 0755 "$GATEKEEPER" "$TREE/init"
install -m 0644 "$ROOT" "$TREE/etc/vault/root.toml"
if [ "$KERNEL" = debian ]; then
  # Modules: what this machine needs of the kernel package's, and when (image/module-plan.py).
  python3 "$TOP/image/module-plan.py" "$WORK/kernel/lib/modules/$KVER" "$TOP/image/modules.txt" "$KVER" > "$WORK/modules.plan"
  awk '$1 == "module" {print $3}' "$WORK/modules.plan" | while read -r module; do
    # The kernel runs with module.sig_enforce=1: an unsigned module would never load.
    [ "$(tail -c 28 "$WORK/kernel$module")" = "~Module signature appended~" ] || die "$module is not signed; the appliance kernel would refuse it"
    install -D -m 0644 "$WORK/kernel$module" "$TREE$module"
  done
else
  # Every driver is built into the minimal kernel, which cannot load modules at all.
  echo "# Module plan for kernel $KVER: every driver is built in (buildroot-overlay/board/vault/linux.config); nothing to load." > "$WORK/modules.plan"
fi
install -m 0644 "$WORK/modules.plan" "$TREE/etc/vault/modules.list"
python3 "$TOP/image/mkcpio.py" "$TREE" "$OUT/initramfs.cpio.lz4" dev/console:c:5:1
install -m 0644 "$VMLINUZ" "$OUT/vmlinuz"

# ---- 4. the UKI, 5. the GPT disk (one definition for this builder and Buildroot's) ----------
# shellcheck source=../buildroot-overlay/board/vault/uki-disk.bash
. "$TOP/buildroot-overlay/board/vault/uki-disk.bash"
CMDLINE=$VAULT_CMDLINE
vault_uki "$STUB" "$OUT/vmlinuz" "$OUT/initramfs.cpio.lz4" "$TREE/etc/os-release" "$WORK" "$OUT/vault.efi" || die "UKI failed"
if [ -n "${SB_KEY:-}" ]; then
  # Before the disk is made, so its ESP carries the signed UKI. The signature (PKCS#7, no
  # signing time) is deterministic: the image stays reproducible with the same key.
  sbsign --key "$SB_KEY" --cert "$SB_CERT" --output "$WORK/vault.signed.efi" "$OUT/vault.efi" >/dev/null 2>&1 || die "sbsign failed with SB_KEY=$SB_KEY SB_CERT=$SB_CERT"
  mv "$WORK/vault.signed.efi" "$OUT/vault.efi"
  SECURE_BOOT="signed for the db certificate $(openssl x509 -in "$SB_CERT" -noout -subject | sed 's/^subject=//') sha256:$(openssl x509 -in "$SB_CERT" -outform DER | sha256sum | cut -d' ' -f1)"
else
  SECURE_BOOT="unsigned (make image SB_KEY=... SB_CERT=... signs it)"
fi
UKI_SIZE=$(stat -c %s "$OUT/vault.efi")
IMG=$OUT/vault.img
vault_disk "$OUT/vault.efi" "${DATA_MIB:-512}" "$WORK" "$IMG"
rm -f "$OUT/vault.qcow2"
qemu-img convert -q -f raw -O qcow2 "$IMG" "$OUT/vault.qcow2"

# ---- 6. manifest and checksums ---------------------------------------------------------------
{
  echo "image: air-gap vault ($VARIANT)"
  echo "source_date_epoch: $SOURCE_DATE_EPOCH"
  echo "git: $(git -C "$TOP" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "kernel-kind: $KERNEL"
  echo "kernel: $KERNEL_MANIFEST"
  echo "efi-stub: systemd-boot-efi $STUB_VER sha256:$STUB_SUM"
  echo "secure-boot: $SECURE_BOOT"
  echo "gatekeeper: sha256:$(sha256sum "$GATEKEEPER" | cut -d' ' -f1)"
  echo "rustc: $(rustc --version)"
  echo "cargo: $(cargo --version)"
  echo "trust-root: sha256:$(sha256sum "$ROOT" | cut -d' ' -f1)"
  echo "cmdline: $CMDLINE"
  echo "modules (aliases left out):"
  grep -v '^alias ' "$TREE/etc/vault/modules.list" | sed 's/^/  /'
} > "$OUT/MANIFEST"
(cd "$OUT" && sha256sum MANIFEST vmlinuz initramfs.cpio.lz4 vault.efi vault.img vault.qcow2 > SHA256SUMS)

echo "image: built in $OUT"
for f in vmlinuz initramfs.cpio.lz4 vault.efi vault.img vault.qcow2; do
  printf '  %-18s %10s bytes (%s on disk)\n' "$f" "$(stat -c %s "$OUT/$f")" "$(du -h "$OUT/$f" | cut -f1)"
done
echo "  UKI limit 16 MiB: $UKI_SIZE bytes, ok"
