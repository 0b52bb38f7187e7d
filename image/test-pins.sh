#!/usr/bin/env bash
# The builder refuses what the lock file does not pin: a .deb whose SHA-256 differs from the
# pin, a pinned version the mirrors no longer serve, a kernel source of another release than
# the kernel package, and a kernel configuration line the kernel does not take (each with its
# own message, before anything is built). Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: test-pins.sh ROOT.toml}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

expect_refusal() { # $1 case name, $2 expected message, then the build's settings (NAME=VALUE ...)
  local name=$1 message=$2 out
  shift 2
  if out=$(env "$@" ROOT="$root" OUT="$work/out" image/build.sh 2>&1); then
    echo "test-pins: $name: the build went ahead" >&2
    exit 1
  fi
  if ! grep -qF "$message" <<<"$out"; then
    echo "test-pins: $name: expected \"$message\" in:" >&2
    echo "$out" | tail -5 >&2
    exit 1
  fi
  echo "test-pins: $name: refused ($message)"
}

# The kernel's pin with one hex digit changed.
awk '$1 ~ /^linux-image-/ { $3 = (substr($3, 1, 1) == "0" ? "1" : "0") substr($3, 2) } { print }' image/packages.lock > "$work/bad-sum.lock"
expect_refusal "tampered pin" "does not match the pin" PACKAGES_LOCK="$work/bad-sum.lock"

# The EFI stub pinned at a version no mirror serves.
awk '$1 == "systemd-boot-efi" { $2 = "0.0.1-0vault" } { print }' image/packages.lock > "$work/gone.lock"
expect_refusal "superseded pin" "is no longer served by the Debian mirrors" PACKAGES_LOCK="$work/gone.lock"

# The minimal kernel's source pinned at another release than the kernel package.
awk '$1 ~ /^linux-source-/ { $2 = "0.0.1-0vault" } { print }' image/packages.lock > "$work/other-release.lock"
expect_refusal "kernel source of another release" "the minimal kernel must be the same release" \
  PACKAGES_LOCK="$work/other-release.lock" KERNEL=minimal

# A configuration line this kernel release does not take (as a renamed symbol would not).
cp buildroot-overlay/board/vault/linux.config "$work/renamed.config"
echo "CONFIG_VAULT_RENAMED_SYMBOL=y" >> "$work/renamed.config"
expect_refusal "kernel configuration not taken" "asks for CONFIG_VAULT_RENAMED_SYMBOL=y, which this kernel release does not take" \
  KERNEL=minimal KERNEL_CONFIG="$work/renamed.config"
[ ! -e "$work/out/vault.efi" ] || { echo "test-pins: an image was written" >&2; exit 1; }
echo "test-pins: ok"
