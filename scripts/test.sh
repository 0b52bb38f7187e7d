#!/usr/bin/env bash
# `make test`, stage by stage, each one timed (the table at the end says where the hour went).
#
# The QEMU suite runs one guest at a time, and a TCG guest keeps one core busy: on a two-core
# machine the other core would idle for half an hour. The two builds that only the last stages
# need (the minimal-kernel image, and the test image's second, reproducible build) run beside the
# suite on that core, at the lowest CPU priority so the guests keep theirs. They start after the
# package test and the short bench, the last stages that install anything (dpkg's lock is not
# shared), and after the first image build, whose download cache they read.
set -euo pipefail
self=$(realpath "$0")
cd "$(dirname "$self")/.."
CARGO=${CARGO:-cargo}
MAKE_CMD=(make --no-print-directory)

if [ "${1:-}" = --background ]; then
  t0=$SECONDS
  # Not its test-keys prerequisite: the keys are made, and rebuilding the vaultctl the suite
  # is running would pull it from under a test.
  "${MAKE_CMD[@]}" -o test-keys test-image-minimal
  echo "==== background: the minimal-kernel image in $((SECONDS - t0)) s"
  t0=$SECONDS
  "${MAKE_CMD[@]}" reproducible-rebuild
  echo "==== background: the reproducible rebuild in $((SECONDS - t0)) s"
  exit 0
fi

timings=()
started=$SECONDS
stage() { # $1 the stage's name, then its command
  local name=$1 t0=$SECONDS
  shift
  echo "==== make test: $name"
  "$@"
  timings+=("$(printf '%6d s  %s' $((SECONDS - t0)) "$name")")
}
report() {
  echo "==== make test: where the time went"
  printf '%s\n' "${timings[@]}"
  printf '%6d s  in all\n' $((SECONDS - started))
}

stage "workspace build" "$CARGO" build --workspace --locked
stage "workspace tests" "$CARGO" test --workspace --locked --exclude qemu-tests
stage "signals evaluation (quick)" "$CARGO" run --locked -p signals-eval -- --quick
stage "fuzz, 5 s a target" scripts/fuzz.sh 5
stage "lint" "${MAKE_CMD[@]}" lint
stage "Buildroot tree checks" buildroot-overlay/check.sh
stage "Buildroot checks refuse" buildroot-overlay/check-test.sh
stage "test image" "${MAKE_CMD[@]}" test-image
stage "image pins refuse" image/test-pins.sh out/test-keys/root.toml
stage "Debian package" "${MAKE_CMD[@]}" test-deb
# make bench's every step on a small dataset (its own directory, so a real run's is untouched);
# it installs its peers (rsync, restic, rclone, borg) before the background builds start.
# A failed run leaves its directory to be looked at; the next make test removes it.
remove_bench_dir() { chattr -R -i "$1" 2>/dev/null || true; rm -rf "$1"; }
for left in /var/tmp/vault-bench-short.*; do
  if [ -d "$left" ]; then remove_bench_dir "$left"; fi
done
bench_dir=$(mktemp -d /var/tmp/vault-bench-short.XXXXXX)
stage "bench, short" env BENCH_SHORT=1 BENCH_DIR="$bench_dir" scripts/bench.sh
remove_bench_dir "$bench_dir"

# The background builds: their own process group, so a failing foreground stage takes them down.
mkdir -p target
background_log=$PWD/target/make-test-background.log
setsid nice -n 19 "$self" --background >"$background_log" 2>&1 &
background=$!
trap 'kill -- -"$background" 2>/dev/null || true' EXIT
echo "==== make test: the minimal-kernel image and the reproducible rebuild run beside the QEMU suite (log: $background_log)"

stage "QEMU suite" "$CARGO" test -p qemu-tests --locked -- --test-threads=1 --nocapture

t0=$SECONDS
echo "==== make test: waiting for the background builds"
if ! wait "$background"; then
  echo "make test: the background builds failed; the end of their log:" >&2
  tail -n 60 "$background_log" >&2
  exit 1
fi
grep '^==== background\|^reproducible' "$background_log"
timings+=("$(printf '%6d s  %s' $((SECONDS - t0)) "waiting for the background builds")")

stage "minimal-kernel suite" "${MAKE_CMD[@]}" test-minimal-suite
report
