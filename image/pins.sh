#!/usr/bin/env bash
# make pins: rewrites image/packages.lock to the versions Debian serves now, with the SHA-256
# of each .deb. A deliberate step: review and commit the diff; the image's MANIFEST records it.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=image/packages.lock
apt-get update -qq
kernel=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
[ -n "$kernel" ] || { echo "pins: cannot resolve linux-image-amd64" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  sed -n '/^#/p' "$LOCK"
  # The minimal kernel's source is pinned at the kernel package's version: the same release.
  kernel_ver=$(apt-cache policy "$kernel" | awk '/Candidate:/ {print $2}')
  source=linux-source-$(cut -d. -f1,2 <<<"$kernel_ver")
  for pkg in "$kernel" systemd-boot-efi "$source"; do
    ver=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
    [ "$pkg" != "$source" ] || ver=$kernel_ver
    (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) || { echo "pins: Debian does not serve $pkg $ver" >&2; exit 1; }
    sum=$(sha256sum "$tmp/${pkg}_${ver//:/%3a}"_*.deb | cut -d' ' -f1)
    printf '%-30s %-21s %s\n' "$pkg" "$ver" "$sum"
  done
} > "$tmp/lock"
if diff -u "$LOCK" "$tmp/lock"; then
  echo "pins: image/packages.lock already pins what Debian serves"
else
  cp "$tmp/lock" "$LOCK"
  echo "pins: image/packages.lock rewritten; review the diff above and commit it"
fi
