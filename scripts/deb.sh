#!/usr/bin/env bash
# Builds the Debian package of vaultctl into out/: the binary; its man pages and bash, zsh and
# fish completions, generated from the clap definitions (`vaultctl generate`); the systemd
# units vaultctl-push@.service and .timer; an example /etc/vaultctl/vaultctl.toml. File times
# come from the last commit (SOURCE_DATE_EPOCH), so two builds give the same package.
#
# usage: scripts/deb.sh            prints the package's path
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || { echo "deb: no version in Cargo.toml's [workspace.package]" >&2; exit 1; }
arch=$(dpkg --print-architecture)
# Built as every other build of target/release/vaultctl is (exported below, SOURCE_DATE_EPOCH
# would make cargo rebuild ring and all above it, which read it, twice in a `make test`).
cargo build --release --locked -p vaultctl >&2
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -D -m 0755 target/release/vaultctl "$root/usr/bin/vaultctl"
target/release/vaultctl generate --out "$stage/gen" 2>/dev/null
install -d "$root/usr/share/man/man1"
for page in "$stage"/gen/man/*.1; do
  name=$(basename "$page")
  gzip -9n < "$page" > "$root/usr/share/man/man1/$name.gz"
done
install -D -m 0644 "$stage/gen/completions/vaultctl.bash" "$root/usr/share/bash-completion/completions/vaultctl"
install -D -m 0644 "$stage/gen/completions/_vaultctl" "$root/usr/share/zsh/vendor-completions/_vaultctl"
install -D -m 0644 "$stage/gen/completions/vaultctl.fish" "$root/usr/share/fish/vendor_completions.d/vaultctl.fish"
install -D -m 0644 packaging/systemd/vaultctl-push@.service "$root/lib/systemd/system/vaultctl-push@.service"
install -D -m 0644 packaging/systemd/vaultctl-push@.timer "$root/lib/systemd/system/vaultctl-push@.timer"
install -D -m 0644 packaging/vaultctl.toml "$root/usr/share/doc/vaultctl/examples/vaultctl.toml"
install -d -m 0755 "$root/etc/vaultctl"
cat > "$root/usr/share/doc/vaultctl/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: airgap-vault
Files: *
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

# The oldest glibc whose symbols the binary needs: the package depends on that, no newer.
glibc=$(objdump -T "$root/usr/bin/vaultctl" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
installed_size=$(du -sk "$root" | cut -f1)
install -d "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: vaultctl
Version: $version
Architecture: $arch
Maintainer: airgap-vault developers <vault@example.org>
Installed-Size: $installed_size
Depends: libc6 (>= $glibc)
Recommends: openssh-client
Section: admin
Priority: optional
Homepage: https://example.org/airgap-vault
Description: operator and pusher CLI of the air-gap backup vault
 vaultctl makes keys and trust roots, signs policy bundles and orders (with its
 own keys or OpenSSH and FIDO2 keys), writes USB sticks for the vault, pushes
 backups into the vault inside its windows (profiles, systemd units), and
 restores and verifies snapshots offline.
CONTROL
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p out
deb=out/vaultctl_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
