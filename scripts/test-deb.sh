#!/usr/bin/env bash
# The Debian package as a user gets it: built (scripts/deb.sh), installed with dpkg -i, its
# binary, man pages, completions and systemd units where Debian looks for them (the units
# checked by systemd-analyze verify), its timer and service run by a real systemd to push a
# profile into a vault (gatekeeper/tests/push_unit.rs, in a container booted from this host's
# system), then removed again, leaving nothing behind. Root only.
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"
[ "$(id -u)" = 0 ] || { echo "test-deb: needs root (dpkg -i)" >&2; exit 1; }
if dpkg -s vaultctl >/dev/null 2>&1; then
  echo "test-deb: a vaultctl package is installed already; remove it first (dpkg -r vaultctl)" >&2
  exit 1
fi
deb=$(scripts/deb.sh)
fail() { echo "test-deb: $*" >&2; dpkg -r vaultctl >/dev/null 2>&1 || true; exit 1; }
depends=$(dpkg-deb --field "$deb" Depends)
[[ "$depends" == "libc6 (>= 2."* ]] || fail "$deb: depends on '$depends', not on libc6 (>= 2.x)"
dpkg -i "$deb" >/dev/null
[ "$(command -v vaultctl)" = /usr/bin/vaultctl ] || fail "vaultctl is not /usr/bin/vaultctl on PATH"
/usr/bin/vaultctl --version | grep -q '^vaultctl ' || fail "vaultctl --version"
for f in /usr/share/man/man1/vaultctl.1.gz /usr/share/man/man1/vaultctl-push.1.gz /usr/share/man/man1/vaultctl-policy-add-sshsig.1.gz \
  /usr/share/bash-completion/completions/vaultctl /usr/share/zsh/vendor-completions/_vaultctl /usr/share/fish/vendor_completions.d/vaultctl.fish \
  /lib/systemd/system/vaultctl-push@.service /lib/systemd/system/vaultctl-push@.timer /usr/share/doc/vaultctl/examples/vaultctl.toml; do
  [ -f "$f" ] || fail "$f: not installed"
done
zgrep -q -- 'wait\\-for\\-window' /usr/share/man/man1/vaultctl-push.1.gz || fail "vaultctl-push(1) does not document --wait-for-window"
grep -q 'add-sshsig' /usr/share/bash-completion/completions/vaultctl || fail "bash completion lacks policy add-sshsig"
# Bash completes the subcommands from the installed file.
words=$(bash -c 'source /usr/share/bash-completion/completions/vaultctl; COMP_WORDS=(vaultctl pol); COMP_CWORD=1; _vaultctl vaultctl pol vaultctl; echo "${COMPREPLY[*]}"')
[ "$words" = policy ] || fail "bash completion of 'vaultctl pol' gave '$words'"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify --man=no /lib/systemd/system/vaultctl-push@test.service /lib/systemd/system/vaultctl-push@test.timer || fail "systemd-analyze verify refused the units"
fi
# The installed timer and service, started by systemd, push a profile into a vault.
cargo test --workspace --exclude qemu-tests --locked --test push_unit -- --ignored --exact the_installed_package_pushes_from_a_systemd_timer_unit ||
  fail "the installed package's timer unit did not push (above)"
dpkg -r vaultctl >/dev/null
[ ! -e /usr/bin/vaultctl ] || fail "dpkg -r left /usr/bin/vaultctl"
[ ! -e /lib/systemd/system/vaultctl-push@.service ] || fail "dpkg -r left the units"
echo "test-deb: $deb installs vaultctl, its man pages, completions and units, pushes from its timer unit under systemd, and is removed"
