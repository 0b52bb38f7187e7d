#!/usr/bin/env bash
# The builder refuses what the lock file does not pin: a .deb whose SHA-256 differs from the
# pin, and a pinned version the mirrors no longer serve (each with its own message, before
# anything is built). Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:?usage: test-pins.sh ROOT.toml}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

expect_refusal() { # $1 case name, $2 lock file, $3 expected message
  local out
  if out=$(PACKAGES_LOCK=$2 ROOT=$root OUT=$work/out image/build.sh 2>&1); then
    echo "test-pins: $1: the build went ahead" >&2
    exit 1
  fi
  if ! grep -qF "$3" <<<"$out"; then
    echo "test-pins: $1: expected \"$3\" in:" >&2
    echo "$out" | tail -5 >&2
    exit 1
  fi
  echo "test-pins: $1: refused ($3)"
}

# The kernel's pin with one hex digit changed.
awk '$1 ~ /^linux-image-/ { $3 = (substr($3, 1, 1) == "0" ? "1" : "0") substr($3, 2) } { print }' image/packages.lock > "$work/bad-sum.lock"
expect_refusal "tampered pin" "$work/bad-sum.lock" "does not match the pin"

# The EFI stub pinned at a version no mirror serves.
awk '$1 == "systemd-boot-efi" { $2 = "0.0.1-0vault" } { print }' image/packages.lock > "$work/gone.lock"
expect_refusal "superseded pin" "$work/gone.lock" "is no longer served by the Debian mirrors"
[ ! -e "$work/out/vault.efi" ] || { echo "test-pins: an image was written" >&2; exit 1; }
echo "test-pins: ok"
