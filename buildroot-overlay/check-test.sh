#!/usr/bin/env bash
# check.sh must refuse what it is there to refuse: each case below breaks one copy of the tree
# (with image/ beside it, as in the workspace) and expects check.sh to fail naming the rule.
#
# usage: buildroot-overlay/check-test.sh
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failures=0
# expect_refusal NAME PATTERN SED-SCRIPT [FILE]: check.sh on a copy edited by SED-SCRIPT fails
# with a message matching PATTERN.
expect_refusal() {
  local name=$1 pattern=$2 edit=$3 file=${4:-buildroot-overlay/configs/vault_defconfig}
  local copy=$work/$name
  mkdir -p "$copy"
  cp -a "$SRC/buildroot-overlay" "$SRC/image" "$copy/"
  sed -i "$edit" "$copy/$file"
  if out=$("$copy/buildroot-overlay/check.sh" 2>&1); then
    echo "check-test: $name: check.sh passed a broken tree" >&2
    failures=$((failures + 1))
  elif ! grep -qE "$pattern" <<<"$out"; then
    echo "check-test: $name: check.sh failed without saying '$pattern':" >&2
    echo "$out" >&2
    failures=$((failures + 1))
  fi
}

"$SRC/buildroot-overlay/check.sh" >/dev/null 2>&1 || { echo "check-test: the tree itself does not pass check.sh" >&2; exit 1; }
expect_refusal no-release "name the Buildroot release" '/^# Buildroot release:/d'
expect_refusal no-kernel-pin "pin the kernel" '/^BR2_LINUX_KERNEL_CUSTOM_VERSION=y$/d'
expect_refusal kernel-unpinned-value "is 'unset'.*set it to \"6\\.1\\." '/^BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE=/d'
expect_refusal other-kernel "is '7\\.1\\.9'" 's/^BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE=.*/BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE="7.1.9"/'
expect_refusal debian-moved-on "the Debian kernel pinned in image/packages.lock is 6\\.1\\.999-1" 's/^\(linux-image-[^ ]* *\)[^ ]*/\16.1.999-1/' image/packages.lock
expect_refusal headers-newer "BR2_KERNEL_HEADERS_AS_KERNEL" '/^BR2_KERNEL_HEADERS_AS_KERNEL=y$/d'
expect_refusal headers-series "LINUX_HEADERS_CUSTOM_6_1=y" '/^BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_6_1=y$/d'
expect_refusal no-hash-check "BR2_DOWNLOAD_FORCE_CHECK_HASHES" '/^BR2_DOWNLOAD_FORCE_CHECK_HASHES=y$/d'
expect_refusal busybox "BR2_PACKAGE_BUSYBOX" 's/^# BR2_PACKAGE_BUSYBOX is not set$/BR2_PACKAGE_BUSYBOX=y/'

if [ "$failures" -ne 0 ]; then
  echo "check-test: $failures case(s) not refused" >&2
  exit 1
fi
echo "check-test: check.sh refused all 9 broken trees"
