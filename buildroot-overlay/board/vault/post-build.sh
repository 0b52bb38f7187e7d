#!/usr/bin/env bash
# Buildroot post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT): runs after the
# rootfs overlay is copied, before the cpio is made, with TARGET_DIR as $1.
#
# The appliance runs one program, the gatekeeper, as /init. This script:
#   - keeps only the overlay's os-release (Buildroot writes its own);
#   - writes /etc/vault/modules.list, an empty module plan: every driver is built into this kernel
#     (board/vault/linux.config, CONFIG_MODULES off), so it lists nothing;
#   - checks /init is statically linked (no ELF interpreter), then removes
#     the shared objects the toolchain installed, which nothing can use;
#   - refuses an image holding any other executable, or a /bin/sh: no shell,
#     no busybox, no getty.
set -euo pipefail

TARGET_DIR=${1:?usage: post-build.sh TARGET_DIR}
: "${HOST_DIR:?HOST_DIR is not set: run this from Buildroot}"

die() { echo "post-build: $*" >&2; exit 1; }

[ -x "$TARGET_DIR/init" ] || die "no /init: enable BR2_PACKAGE_GATEKEEPER"
[ -s "$TARGET_DIR/etc/vault/root.toml" ] || die "no /etc/vault/root.toml: set BR2_PACKAGE_GATEKEEPER_TRUST_ROOT"

readelf=("$HOST_DIR"/bin/x86_64-*-readelf)
[ -x "${readelf[0]}" ] || die "no x86_64 readelf in $HOST_DIR/bin (the toolchain's binutils)"
if "${readelf[0]}" -lW "$TARGET_DIR/init" | grep -qw INTERP; then
  die "/init is dynamically linked; the gatekeeper must be static (-C target-feature=+crt-static)"
fi

# Buildroot writes its own usr/lib/os-release and links etc/os-release to it;
# the overlay's etc/os-release replaces the link, and Buildroot's is dropped.
if [ -L "$TARGET_DIR/etc/os-release" ] || ! grep -q '^ID=airgap-vault$' "$TARGET_DIR/etc/os-release"; then
  die "etc/os-release is not the overlay's (board/vault/rootfs_overlay/etc/os-release)"
fi
rm -f "$TARGET_DIR/usr/lib/os-release"

install -d -m 0755 "$TARGET_DIR/etc/vault"
printf '%s\n' "# Every driver is built into the kernel (board/vault/linux.config): nothing to load." \
  > "$TARGET_DIR/etc/vault/modules.list"

find "$TARGET_DIR" \( -type f -o -type l \) \( -name '*.so' -o -name '*.so.*' \) -delete

if [ -e "$TARGET_DIR/bin/sh" ] || [ -L "$TARGET_DIR/bin/sh" ]; then
  die "the image has a /bin/sh (BR2_SYSTEM_BIN_SH_NONE must be set)"
fi
mapfile -t extra < <(cd "$TARGET_DIR" && find . -path ./init -prune -o -type f -perm /111 -print | sort)
if ((${#extra[@]})); then
  die "executables other than /init in the image: ${extra[*]}"
fi
