#!/usr/bin/env bash
# Fuzzes the decoders for SECONDS each (default 60). cargo-fuzz wants nightly flags;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them (no nightly can be fetched here).
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p corpus/bundle_decode corpus/policy_toml corpus/frame_decode corpus/manifest_decode corpus/store_files corpus/gpt_entry corpus/relay_decode corpus/audit_decode corpus/export_decode corpus/sshsig_decode
# Seed the corpora with real inputs: the README-style policy and a signed bundle.
cp ../scripts/fuzz-seeds/*.toml corpus/policy_toml/ 2>/dev/null || true
cp ../scripts/fuzz-seeds/*.bundle corpus/bundle_decode/ 2>/dev/null || true
cp ../scripts/fuzz-seeds/*.profile.json corpus/store_files/ 2>/dev/null || true
cp ../scripts/fuzz-seeds/*.sshsig corpus/sshsig_decode/ 2>/dev/null || true
cp ../scripts/fuzz-seeds/*.frame corpus/frame_decode/ 2>/dev/null || true
for target in bundle_decode policy_toml frame_decode manifest_decode store_files gpt_entry relay_decode audit_decode export_decode sshsig_decode; do
  echo "== fuzzing $target for ${seconds}s"
  log=$(mktemp)
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --sanitizer none -- \
    -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
    # A build error is above cargo-fuzz's own backtrace: show it, not just the tail.
    grep -v '^ *[0-9]*: \|^ *at ' "$log" | tail -n 60
    rm -f "$log"
    exit 1
  fi
  tail -n 15 "$log"
  rm -f "$log"
done
