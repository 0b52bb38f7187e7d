#!/usr/bin/env bash
# Installs what the build and tests need on a fresh Debian machine, and nothing if it is
# already there. Called by the Makefile; safe to run again.
set -euo pipefail

need_apt=()
command -v cc >/dev/null || need_apt+=(gcc libc6-dev)
command -v make >/dev/null || need_apt+=(make)
command -v git >/dev/null || need_apt+=(git)
# The link-control host tests make network namespaces and veth pairs (issue 5).
command -v ip >/dev/null || need_apt+=(iproute2)
command -v sysctl >/dev/null || need_apt+=(procps)
# The store tests lift the immutable flag to clean up (chattr); the push tests try a TLS 1.2
# downgrade with openssl s_client.
command -v chattr >/dev/null || need_apt+=(e2fsprogs)
command -v openssl >/dev/null || need_apt+=(openssl)
# tools/read-store.py, the store format's independent reader, is run by the store-format test.
command -v python3 >/dev/null || need_apt+=(python3)
# The QEMU suite boots the appliance image directly and through UEFI firmware (issues 6, 7).
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || need_apt+=(ovmf)
# The Secure Boot test signs a UKI with OVMF's snakeoil key and boots it with the firmware that
# enforces Secure Boot.
command -v sbsign >/dev/null || need_apt+=(sbsigntool)
command -v mcopy >/dev/null || need_apt+=(mtools)
# The audit report test opens `vaultctl report`'s page in headless Chromium (issue 16).
command -v chromium >/dev/null || need_apt+=(chromium)
# Exports are encrypted with age: the tests decrypt them with stock `age` (issue 17).
command -v age >/dev/null || need_apt+=(age)
# Admins may sign with OpenSSH keys: the CLI tests sign with stock `ssh-keygen -Y sign` and check
# the FIDO2 vectors against `ssh-keygen -Y verify` (issue 19). shellcheck lints every script.
command -v ssh-keygen >/dev/null || need_apt+=(openssh-client)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
# The Debian package of vaultctl: built with dpkg-deb, its units checked by systemd-analyze, its
# dependency read with objdump.
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# ... and its push unit run by a real systemd: this host's system booted in a container.
command -v systemd-nspawn >/dev/null || need_apt+=(systemd-container)
command -v objdump >/dev/null || need_apt+=(binutils)
if ((${#need_apt[@]})); then
  echo "ensure-tools: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    echo "ensure-tools: cargo is in ~/.cargo/bin; add it to PATH" >&2
  else
    echo "ensure-tools: installing Debian's cargo and rustc"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo rustc
  fi
fi
if ! cargo fmt --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null; then rustup component add rustfmt; else DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustfmt; fi
fi
if ! cargo clippy --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
  rustup component add clippy
fi
