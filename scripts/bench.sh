#!/usr/bin/env bash
# make bench: the push path against rsync (daemon mode over TCP) and sha256sum, measured in
# the same run on the same data, between two network namespaces joined by a veth pair.
#
#   1. a generated 2 GiB mixed dataset (16 000 small files + 8 large ones, in 8 parts);
#   2. initial push vs initial rsync (best of two rounds each), restic (to rclone's append-only
#      REST server) and borg (serve --append-only); sha256sum over the same files;
#      the same push into a gatekeeper built without the ransomware signals (what they cost);
#      push and rsync again with each side pinned to a core of its own (taskset);
#   3. 1% of the data changed, INCREMENTAL_ROUNDS times (3); incremental push (with its cache)
#      vs incremental rsync each round (the median ratio reported), restic and borg in the first;
#   4. 8 concurrent pushes (one per part) into a fresh store: the gatekeeper's peak RSS;
#   5. getting the initial snapshot back: restore from the store, an export written onto a
#      medium (a directory on the same disk), restore from that export, against `tar x` of
#      the same tree on the same disk;
#   6. the lifecycle on 1000 snapshots and 1 M chunks: scrub vs sha256sum, garbage collection;
#   7. a stolen pusher key's flood against the gatekeeper's memory.
# Prints throughput and ratios; the targets are in issues 4 and 20, the results in docs/PERFORMANCE.md.
#
# BENCH_SHORT=1 (make test's short version): every step on a small dataset, so the script itself
# is proved to run from a fresh machine; its figures mean nothing. It builds no second
# gatekeeper (the without-signals rounds run the same build) and leaves the flood to make
# test's own.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${BENCH_DIR:-/var/tmp/vault-bench}
BENCH_SHORT=${BENCH_SHORT:-}
if [ -n "$BENCH_SHORT" ]; then
  echo "== a short run (BENCH_SHORT): every step on a small dataset; its figures and ratios mean nothing"
  SMALL_PER_PART=${SMALL_PER_PART:-100}; LARGE_MIB=${LARGE_MIB:-2}; INCREMENTAL_ROUNDS=${INCREMENTAL_ROUNDS:-1}
  LIFECYCLE_SNAPSHOTS=${LIFECYCLE_SNAPSHOTS:-20}; LIFECYCLE_CHUNKS=${LIFECYCLE_CHUNKS:-50}
fi
SMALL_PER_PART=${SMALL_PER_PART:-2000}
LARGE_MIB=${LARGE_MIB:-192}
PARTS=8
VAULT_NS=vbench-vault-$$
PEER_NS=vbench-peer-$$
# rsync gets its own namespace and veth: the gatekeeper's egress guard rightly closes the
# window if anything but its listener talks on the vault NIC, and its watchdog downs any
# other NIC in its namespace.
RSYNC_NS=vbench-rsync-$$
VAULT_IP=192.0.2.10
PEER_IP=192.0.2.1
RSYNC_IP=198.51.100.10
RSYNC_PEER_IP=198.51.100.1
GK=$PWD/target/release/gatekeeper
VC=$PWD/target/release/vaultctl
GK_PID=""
# Commands the vault and the pusher start under (the pinned round sets them to `taskset`).
VAULT_PIN=()
PUSHER_PIN=()
RSYNCD_PID=""
PERF_PID=""
RCLONE_PID=""
TMPFS_MOUNTED=""

# The peers, from Debian: rsync (daemon over TCP), restic with rclone's append-only REST
# server, borg.
for tool in rsync restic rclone borg; do
  command -v "$tool" >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync restic rclone borgbackup; break; }
done
if [ -n "$BENCH_SHORT" ]; then
  cargo build --release --locked -p gatekeeper -p vaultctl -p test-net --bins
else
  cargo build --release --workspace --locked
fi
# The comparison build: everything the same but the signals (never used outside this script).
# The whole workspace, as the full run's first build: its crates' features unify the same way,
# so the two gatekeepers differ in the signals only. A short run builds none.
GK_WITH=$GK
if [ -n "$BENCH_SHORT" ]; then
  GK_WITHOUT=$GK
else
  cargo build --release --locked --workspace --features gatekeeper/without-signals --target-dir target/without-signals
  GK_WITHOUT=$PWD/target/without-signals/release/gatekeeper
fi
if [ -n "${BENCH_PROFILE:-}" ]; then
  # The same build with its symbols kept, so perf can name the functions.
  command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
  CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --locked --workspace --target-dir target/profiling
  GK=$PWD/target/profiling/release/gatekeeper GK_WITH=$GK VC=$PWD/target/profiling/release/vaultctl
fi

cleanup() {
  if [ -n "$GK_PID" ]; then kill "$GK_PID" 2>/dev/null || true; fi
  if [ -n "$RSYNCD_PID" ]; then kill "$RSYNCD_PID" 2>/dev/null || true; fi
  if [ -n "$PERF_PID" ]; then kill "$PERF_PID" 2>/dev/null || true; fi
  if [ -n "$RCLONE_PID" ]; then kill "$RCLONE_PID" 2>/dev/null || true; fi
  if [ -n "$TMPFS_MOUNTED" ]; then umount "$WORK/vault/store-tmpfs" 2>/dev/null || true; fi
  ip netns del "$VAULT_NS" 2>/dev/null || true
  ip netns del "$PEER_NS" 2>/dev/null || true
  ip netns del "$RSYNC_NS" 2>/dev/null || true
  chattr -R -i "$WORK/vault" 2>/dev/null || true
  rm -f "$WORK/memory-filler"
}
trap cleanup EXIT

now() { date +%s.%N; }
# These VMs' hosts back guest memory lazily and take freed memory back within seconds
# (virtio-balloon's free page reporting): writing 2 GiB into memory not used for a few seconds
# took 4.7-7.8 s of system time here, into memory in use 0.6-1.5 s. Which contender hits fresh
# memory would depend on what ran before it, so the memory is kept full of clean page cache
# that every write reclaims alike, as on a machine whose memory is in use: a sparse file (no
# disk I/O) grown by what is free, less 1 GiB, and read into the cache.
fill_memory() {
  # (Fairness between contenders, which a short run does not measure.)
  [ -z "$BENCH_SHORT" ] || return 0
  python3 - "$WORK/memory-filler" <<'PY'
import os, sys
free = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemFree:")) * 1024
spare = free - (1 << 30)
if spare > 0:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
    size = os.fstat(fd).st_size
    os.ftruncate(fd, size + spare)
    pos = size
    while pos < size + spare:
        n = len(os.pread(fd, 1 << 20, pos))
        if n == 0:
            break
        pos += n
PY
}
# Each timed step starts with no dirty pages left by the one before it, and memory in use.
settle() { sync; fill_memory; sleep 1; }
elapsed() { python3 -c "print(f'{$2 - $1:.3f}')"; }
# timed VAR LABEL COMMAND...: runs the command after settling (its output dropped) and sets
# VAR to its wall time in seconds.
timed() {
  local var=$1 label=$2 t0 t1
  shift 2
  settle; echo "== $label"
  t0=$(now); "$@" > /dev/null; t1=$(now)
  printf -v "$var" '%s' "$(elapsed "$t0" "$t1")"
}
rate() { python3 -c "print(f'{$1 / ($2) / 1e6:.1f}')"; } # bytes, seconds -> MB/s

# ---- 1. the dataset ---------------------------------------------------------------------
DATA=$WORK/data
if [ ! -f "$WORK/data.done" ]; then
  rm -rf "$WORK"
  mkdir -p "$DATA"
  echo "== generating the dataset in $DATA"
  python3 - "$DATA" "$PARTS" "$SMALL_PER_PART" "$LARGE_MIB" <<'PY'
import os, random, sys
root, parts, small, large_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(20261125)
for p in range(parts):
    for d in range(small // 100):
        os.makedirs(f"{root}/part{p}/dir{d:03}", exist_ok=True)
    for i in range(small):
        size = rng.randint(1024, 64 * 1024)
        with open(f"{root}/part{p}/dir{i // 100:03}/file{i:05}.dat", "wb") as f:
            f.write(os.urandom(size))
    with open(f"{root}/part{p}/large.bin", "wb") as f:
        for _ in range(large_mib):
            f.write(os.urandom(1 << 20))
PY
  touch "$WORK/data.done"
fi
BYTES=$(du -sb --apparent-size "$DATA" | cut -f1)
FILES=$(find "$DATA" -type f | wc -l)
echo "dataset: $FILES files, $BYTES bytes"
# Everything read from the page cache alike: warm it once for all contenders (after the
# memory is filled, so the dataset is the newest in the cache).
fill_memory
find "$DATA" -type f -print0 | xargs -0 cat > /dev/null

# ---- the network and the vault -----------------------------------------------------------
ip netns add "$VAULT_NS"
ip netns add "$PEER_NS"
ip -n "$PEER_NS" link add tp0 type veth peer name vault0 netns "$VAULT_NS"
ip -n "$PEER_NS" addr add "$PEER_IP/24" dev tp0
ip -n "$PEER_NS" link set tp0 up
ip -n "$PEER_NS" link set lo up
ip netns add "$RSYNC_NS"
ip -n "$PEER_NS" link add rsp0 type veth peer name rs0 netns "$RSYNC_NS"
ip -n "$PEER_NS" addr add "$RSYNC_PEER_IP/24" dev rsp0
ip -n "$PEER_NS" link set rsp0 up
ip -n "$RSYNC_NS" addr add "$RSYNC_IP/24" dev rs0
ip -n "$RSYNC_NS" link set rs0 up
ip -n "$RSYNC_NS" link set lo up

KEYS=$WORK/keys
chattr -R -i "$WORK/vault" 2>/dev/null || true
# (find fails on a first run, where neither exists: nothing was left then.)
LEFT_BY_LAST_RUN=$( (find "$WORK/rsync-dst" "$WORK/vault" -maxdepth 0 2>/dev/null || true) | wc -l)
rm -rf "$KEYS" "$WORK/vault" "$WORK/rsync-dst" "$WORK/pusher"
if [ "$LEFT_BY_LAST_RUN" -gt 0 ]; then
  # The last run's rsync targets were 64 000 files. ext4 without a journal (this disk) does not
  # reuse an inode within 60 s of its deletion (300 s more while its table block is dirty), and
  # passes over each such inode, reading it, for every file it makes: rsync took 12.9 s instead
  # of 3.4 s right after them. Written back and waited out, so no contender pays for them.
  echo "== waiting 65 s: the inodes the last run freed are reused only after 60 s"
  sync; sleep 65
fi
mkdir -p "$KEYS" "$WORK/vault" "$WORK/rsync-dst" "$WORK/pusher"
( cd "$KEYS"
  "$VC" key gen --out alice >/dev/null 2>&1
  "$VC" key gen --out bob >/dev/null 2>&1
  "$VC" key gen --out bench >/dev/null 2>&1
  "$VC" root init --vault-id bench --threshold 2 --admin alice.pub --admin bob.pub --max-window 4h --out root.toml >/dev/null 2>&1
  cat > policy.toml <<TOML
vault_id = "bench"
version = 1
expires = "$(date -u -d '+2 days' +%Y-%m-%dT%H:%M:%SZ)"
[network]
interface = "vault0"
address = "$VAULT_IP/24"
port = 7400
[[window]]
from = "$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:00Z)"
until = "$(date -u -d '+3 hours' +%Y-%m-%dT%H:%M:00Z)"
[[pusher]]
name = "bench"
key = "$(cat bench.pub)"
quota = "1TiB"
retain = "1d"
[close]
early = false
grace = "1m"
TOML
  "$VC" policy sign --root root.toml --key alice.key policy.toml --out policy.bundle 2>/dev/null
  "$VC" policy sign --root root.toml --key bob.key policy.bundle --out policy.bundle 2>/dev/null )

start_vault() { # $1: store directory
  # Each store has its own audit log: the pusher keeps its witness checkpoint per store, or it
  # would rightly call a fresh store's log a rewound one (exit 7).
  RECEIPTS=$WORK/pusher/receipts-$(basename "$1")
  "$GK" --root "$KEYS/root.toml" --state "$WORK/vault/state" apply-bundle "$KEYS/policy.bundle" >/dev/null 2>&1 || true
  ip netns exec "$VAULT_NS" "${VAULT_PIN[@]}" "$GK" --root "$KEYS/root.toml" --state "$WORK/vault/state" --store "$1" run > "$WORK/vault/events-$(basename "$1").log" &
  GK_PID=$!
  # The pusher forgets the last vault's neighbour entry: a stale one costs the next connect
  # seconds of ARP retries, which would be timed as the push's.
  ip -n "$PEER_NS" neigh flush all 2>/dev/null || true
  for _ in $(seq 100); do
    if grep -q '"event":"listening"' "$WORK/vault/events-$(basename "$1").log"; then
      # Resolved once before anything is timed (the vault answers ARP inside a window; the
      # echo itself may go unanswered).
      ip netns exec "$PEER_NS" ping -c 1 -W 1 "$VAULT_IP" >/dev/null 2>&1 || true
      return
    fi
    sleep 0.1
  done
  echo "the vault did not open its window"; cat "$WORK/vault/events-$(basename "$1").log"; exit 1
}
stop_vault() { kill "$GK_PID"; wait "$GK_PID" 2>/dev/null || true; GK_PID=""; }

# Made here, before the vault first starts (`identity` alone refuses a state without a key).
VAULT_KEY=$("$GK" --state "$WORK/vault/state" identity --create)
push() { # $1 dataset, $2 source, then extra flags
  local dataset=$1 source=$2; shift 2
  ip netns exec "$PEER_NS" "${PUSHER_PIN[@]}" "$VC" push --vault "$VAULT_IP:7400" --vault-key "$VAULT_KEY" --key "$KEYS/bench.key" \
    --dataset "$dataset" --receipts "$RECEIPTS" --cache "$WORK/pusher/$dataset.cache" --json "$@" "$source"
}

start_vault "$WORK/vault/store"

# rsync's daemon in its own namespace behind its own veth, plain TCP.
cat > "$WORK/rsyncd.conf" <<CONF
use chroot = no
[bench]
path = $WORK/rsync-dst
read only = false
uid = root
gid = root
CONF
ip netns exec "$RSYNC_NS" rsync --daemon --no-detach --address "$RSYNC_IP" --port 8730 --config "$WORK/rsyncd.conf" &
RSYNCD_PID=$!
sleep 0.5

rsync_run() { ip netns exec "$PEER_NS" rsync -a "$DATA/" "rsync://$RSYNC_IP:8730/bench/$1/"; }

# BENCH_PROFILE=1: perf records every process on the machine (pusher, session worker, daemon)
# from profile_start NAME to profile_stop, into $WORK/NAME.perf; where the cycles went is
# printed at the end.
profile_start() {
  [ -n "${BENCH_PROFILE:-}" ] || return 0
  perf record -a -F 999 -o "$WORK/$1.perf" -- sleep 3600 >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 1
}
profile_stop() {
  if [ -n "$PERF_PID" ]; then kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; fi
}

cpu_of() { awk -v tck="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / tck}' "/proc/$1/stat"; }
# The gatekeeper's CPU so far: the daemon and its session worker (a child that lives as long as
# the window, so its time is not yet in the daemon's children's totals).
gk_cpu() {
  local pid total=0
  for pid in "$GK_PID" $(pgrep -P "$GK_PID"); do total=$(python3 -c "print($total + $(cpu_of "$pid"))"); done
  echo "$total"
}

# ---- 2. initial: best of two rounds, each into an empty store and an empty rsync target ---
best() { python3 -c "print(min($1, $2))"; }
PUSH1=999999; RSYNC1=999999; PUSH_NOSIG=999999
TIMEFORMAT='%U %S'
for round in 1 2; do
  if [ "$round" = 2 ]; then stop_vault; start_vault "$WORK/vault/store-round2"; fi
  # Each round is an initial push: no chunk cache. Round 1's cache names chunks the fresh store
  # of round 2 lacks, which would time the re-read path (every file read twice), not a first push.
  rm -f "$WORK/pusher/all.cache" "$WORK/pusher/all-nosignals.cache"
  settle; echo "== initial push, round $round"
  gk_cpu0=$(gk_cpu)
  if [ "$round" = 1 ]; then profile_start push1; fi
  t0=$(now); { time push all "$DATA" > "$WORK/push1.json"; } 2> "$WORK/push1.cpu"; t1=$(now)
  profile_stop
  took=$(elapsed "$t0" "$t1")
  # The CPU columns are the faster round's.
  if python3 -c "import sys; sys.exit(0 if $took < $PUSH1 else 1)"; then
    GK_CPU1=$(python3 -c "print(f'{$(gk_cpu) - $gk_cpu0:.2f}')")
    PUSHER_CPU1=$(awk '{printf "%.2f", $1 + $2}' "$WORK/push1.cpu")
  fi
  PUSH1=$(best "$PUSH1" "$took")
  settle; echo "== initial rsync, round $round"
  t0=$(now); rsync_run "round$round"; t1=$(now)
  RSYNC1=$(best "$RSYNC1" "$(elapsed "$t0" "$t1")")
  # The same push into a gatekeeper without the signals, in the same round (the machine's
  # noise hits both alike), into a store of its own (removed after), with a chunk cache of its
  # own that is as warm as the other push's.
  kept_store=$(if [ "$round" = 1 ]; then echo "$WORK/vault/store"; else echo "$WORK/vault/store-round2"; fi)
  stop_vault; GK=$GK_WITHOUT; start_vault "$WORK/vault/store-without-signals-$round"
  settle; echo "== initial push without the signals, round $round"
  t0=$(now); push all-nosignals "$DATA" > /dev/null; t1=$(now)
  PUSH_NOSIG=$(best "$PUSH_NOSIG" "$(elapsed "$t0" "$t1")")
  stop_vault; GK=$GK_WITH
  chattr -R -i "$WORK/vault/store-without-signals-$round"; rm -rf "$WORK/vault/store-without-signals-$round"
  start_vault "$kept_store"
done
# What durability costs, measured beside the rest: a push answers only after its pack is on
# the disk (fsync at sealing), rsync never waits for the disk. So: rsync --fsync (each file
# fsynced, as durable as the push); the disk's own rate for 2 GiB written and fdatasync'd (dd:
# no durable push can beat it); and the same push into a store in memory (tmpfs), which shows
# what the CPU path sustains without the disk.
timed RSYNC_FSYNC "initial rsync --fsync" ip netns exec "$PEER_NS" rsync -a --fsync "$DATA/" "rsync://$RSYNC_IP:8730/bench/fsync/"
timed DISK "the disk: 2 GiB written and fdatasync'd" dd if=/dev/zero of="$WORK/vault/dd.tmp" bs=1M count=2048 conv=fdatasync status=none
rm -f "$WORK/vault/dd.tmp"
stop_vault
mkdir -p "$WORK/vault/store-tmpfs"
mount -t tmpfs -o size=4G vault-bench "$WORK/vault/store-tmpfs"
TMPFS_MOUNTED=1
start_vault "$WORK/vault/store-tmpfs"
timed PUSH_TMPFS "initial push into a store in memory (tmpfs)" push all-tmpfs "$DATA"
stop_vault
umount "$WORK/vault/store-tmpfs"; TMPFS_MOUNTED=""
# Each side on a core of its own, as machines of their own would give them: the gatekeeper
# (daemon and session worker) on CPU 1 and the pusher on CPU 0, into a fresh store; rsync's
# daemon (its forks inherit) on CPU 1 and its client on CPU 0, into a fresh target.
VAULT_PIN=(taskset -c 1); PUSHER_PIN=(taskset -c 0)
start_vault "$WORK/vault/store-pinned"
profile_start pinned
timed PUSH_PINNED "initial push, each side on a core of its own" push all-pinned "$DATA"
profile_stop
stop_vault
VAULT_PIN=(); PUSHER_PIN=()
chattr -R -i "$WORK/vault/store-pinned"; rm -rf "$WORK/vault/store-pinned"
taskset -a -p -c 1 "$RSYNCD_PID" >/dev/null
timed RSYNC_PINNED "initial rsync, each side on a core of its own" ip netns exec "$PEER_NS" taskset -c 0 rsync -a "$DATA/" "rsync://$RSYNC_IP:8730/bench/pinned/"
taskset -a -p -c 0-"$(($(nproc) - 1))" "$RSYNCD_PID" >/dev/null
start_vault "$WORK/vault/store-round2"

# restic pushing to `rclone serve restic --append-only` (the nearest open-source append-only
# peer: a stolen client key cannot delete), over plain HTTP in rsync's namespace; and borg
# into a repository served `borg serve --append-only`, reached through a pipe (BORG_RSH runs
# the server here: borg's own client and server, without ssh's cipher). Both with their
# defaults (restic: compression auto, AES-256 + Poly1305; borg: repokey, lz4), from a fresh
# repository, then again after the change below with their own caches.
RESTIC_REPO=rest:http://$RSYNC_IP:8000/
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_RSH="$WORK/borg-rsh"
rm -rf "$WORK/restic-repo" "$WORK/restic-cache" "$WORK/borg-repo" "$WORK/borg-cache"
# borg runs `$BORG_RSH host borg serve ...`: this one drops the host and runs the server here.
printf '#!/bin/sh\nshift\nexec "$@"\n' > "$BORG_RSH"
chmod +x "$BORG_RSH"
ip netns exec "$RSYNC_NS" rclone serve restic --append-only --addr "$RSYNC_IP:8000" "$WORK/restic-repo" > "$WORK/rclone.log" 2>&1 &
RCLONE_PID=$!
for _ in $(seq 100); do
  ip netns exec "$PEER_NS" bash -c "echo > /dev/tcp/$RSYNC_IP/8000" 2>/dev/null && break
  sleep 0.2
done
restic_run() { ip netns exec "$PEER_NS" restic -q -r "$RESTIC_REPO" --cache-dir "$WORK/restic-cache" backup "$DATA" >/dev/null; }
borg_run() { BORG_CACHE_DIR=$WORK/borg-cache borg create "ssh://peer$WORK/borg-repo::$1" "$DATA"; }
ip netns exec "$PEER_NS" restic -q -r "$RESTIC_REPO" --cache-dir "$WORK/restic-cache" init >/dev/null
BORG_CACHE_DIR=$WORK/borg-cache borg init --encryption=repokey "ssh://peer$WORK/borg-repo" --append-only
timed RESTIC1 "initial restic" restic_run
timed BORG1 "initial borg" borg_run initial

settle; echo "== sha256sum"
t0=$(now); find "$DATA" -type f -print0 | xargs -0 sha256sum > /dev/null; t1=$(now)
SHA=$(elapsed "$t0" "$t1")

# ---- 3. 1% changed, INCREMENTAL_ROUNDS times ---------------------------------------------
# Each round changes another 1% and times the incremental push and rsync right after each
# other; one round's ratio moved between 0.29x and 0.53x across runs, so the ratio reported
# is the median of the rounds' (restic and borg run in the first round only).
INCREMENTAL_ROUNDS=${INCREMENTAL_ROUNDS:-3}
[[ $INCREMENTAL_ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "INCREMENTAL_ROUNDS=$INCREMENTAL_ROUNDS: give a whole number of rounds, 1 or more"; exit 2; }
change_one_percent() { # prints the bytes changed
  python3 - "$DATA" "$PARTS" "$SMALL_PER_PART" <<'PY'
import os, random, sys
root, parts, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random()
changed = 0
for p in range(parts):
    for i in rng.sample(range(small), small // 100):
        path = f"{root}/part{p}/dir{i // 100:03}/file{i:05}.dat"
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(rng.randrange(size))
            f.write(os.urandom(512))
        changed += 512
    if p % 4 == 0:  # two large files get an 8 MiB region rewritten
        with open(f"{root}/part{p}/large.bin", "r+b") as f:
            f.seek(rng.randrange(64 << 20))
            f.write(os.urandom(8 << 20))
        changed += 8 << 20
print(changed)
PY
  find "$DATA" -type f -print0 | xargs -0 cat > /dev/null
}
PUSH2_ROUNDS=(); RSYNC2_ROUNDS=()
for round in $(seq "$INCREMENTAL_ROUNDS"); do
  echo "== changing 1% of the data (incremental round $round)"
  CHANGED=$(change_one_percent)
  settle; echo "== incremental push, round $round"
  t0=$(now); push all "$DATA" > "$WORK/push2-$round.json"; t1=$(now)
  PUSH2_ROUNDS+=("$(elapsed "$t0" "$t1")")
  settle; echo "== incremental rsync, round $round"
  t0=$(now); rsync_run round2; t1=$(now)
  RSYNC2_ROUNDS+=("$(elapsed "$t0" "$t1")")
  if [ "$round" = 1 ]; then
    cp "$WORK/push2-1.json" "$WORK/push2.json"
    PUSH2=${PUSH2_ROUNDS[0]}
    timed RESTIC2 "incremental restic" restic_run
    timed BORG2 "incremental borg" borg_run incremental
  fi
done
kill "$RCLONE_PID" 2>/dev/null || true; RCLONE_PID=""
stop_vault

# ---- 4. 8 concurrent pushes into a fresh store: peak RSS -------------------------------------
settle; echo "== 8 concurrent pushes"
start_vault "$WORK/vault/store-concurrent"
t0=$(now)
pids=()
for p in $(seq 0 $((PARTS - 1))); do
  push "part$p" "$DATA/part$p" --no-cache > "$WORK/concurrent-$p.json" &
  pids+=($!)
  # The vault lets one address have at most 4 TLS handshakes in flight (a flood defence):
  # the pushes start a quarter second apart, so each finishes its handshake first.
  sleep 0.25
done
for pid in "${pids[@]}"; do wait "$pid"; done
t1=$(now)
CONC=$(elapsed "$t0" "$t1")
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$GK_PID/status")
stop_vault

NEW2=$(python3 -c "import json; print(json.load(open('$WORK/push2.json'))['bytes_new'])")
python3 - <<PY
bytes_, push1, rsync1, sha = $BYTES, $PUSH1, $RSYNC1, $SHA
push2, conc, rss_kb, changed, new2 = $PUSH2, $CONC, $RSS_KB, $CHANGED, $NEW2
push2_rounds, rsync2_rounds = [$(IFS=,; echo "${PUSH2_ROUNDS[*]}")], [$(IFS=,; echo "${RSYNC2_ROUNDS[*]}")]
import statistics
ratios2 = [p / r for p, r in zip(push2_rounds, rsync2_rounds)]
nosig = $PUSH_NOSIG
restic1, restic2, borg1, borg2 = $RESTIC1, $RESTIC2, $BORG1, $BORG2
rsync_fsync, disk, push_tmpfs = $RSYNC_FSYNC, $DISK, $PUSH_TMPFS
push_pinned, rsync_pinned = $PUSH_PINNED, $RSYNC_PINNED
mb = lambda s: bytes_ / s / 1e6
print()
print(f"dataset              {bytes_ / 2**30:.2f} GiB in $FILES files")
print(f"initial push (best of 2)  {push1:5.2f} s  {mb(push1):7.1f} MB/s  (CPU: pusher $PUSHER_CPU1 s, gatekeeper $GK_CPU1 s)")
print(f"initial rsync (best of 2) {rsync1:5.2f} s  {mb(rsync1):7.1f} MB/s")
print(f"initial push without the signals (best of 2)  {nosig:5.2f} s  {mb(nosig):7.1f} MB/s")
print(f"initial rsync --fsync {rsync_fsync:6.2f} s  {mb(rsync_fsync):7.1f} MB/s  (each file on disk before the next, as durable as the push)")
print(f"the disk, 2 GiB fdatasync'd {disk:5.2f} s  {2**31 / disk / 1e6:7.1f} MB/s  (no durable push of this dataset can beat {bytes_ / (2**31 / disk):.2f} s)")
print(f"initial push into tmpfs {push_tmpfs:5.2f} s  {mb(push_tmpfs):7.1f} MB/s  (the CPU path without the disk)")
print(f"initial push, each side on its own core  {push_pinned:5.2f} s  {mb(push_pinned):7.1f} MB/s  (pusher on CPU 0, gatekeeper on CPU 1)")
print(f"initial rsync, each side on its own core {rsync_pinned:5.2f} s  {mb(rsync_pinned):7.1f} MB/s  (client on CPU 0, daemon on CPU 1)")
print(f"initial restic (rclone --append-only)  {restic1:5.2f} s  {mb(restic1):7.1f} MB/s")
print(f"initial borg (serve --append-only)     {borg1:5.2f} s  {mb(borg1):7.1f} MB/s")
print(f"sha256sum            {sha:7.2f} s  {mb(sha):7.1f} MB/s")
print(f"incremental push     {statistics.median(push2_rounds):7.2f} s  median of {len(push2_rounds)} rounds: {', '.join(f'{t:.2f}' for t in push2_rounds)}  (round 1: {new2 / 2**20:.1f} MiB new chunks sent; {changed / 2**20:.1f} MiB changed a round)")
print(f"incremental rsync    {statistics.median(rsync2_rounds):7.2f} s  median of {len(rsync2_rounds)} rounds: {', '.join(f'{t:.2f}' for t in rsync2_rounds)}")
print(f"incremental restic   {restic2:7.2f} s  (round 1)")
print(f"incremental borg     {borg2:7.2f} s  (round 1)")
print(f"8 concurrent pushes  {conc:7.2f} s  {mb(conc):7.1f} MB/s; gatekeeper peak RSS {rss_kb / 1024:.1f} MiB")
print()
print(f"RATIO initial push / rsync throughput   {rsync1 / push1:.2f}x   (target >= 1.5)")
print(f"RATIO initial push / rsync --fsync throughput  {rsync_fsync / push1:.2f}x")
print(f"RATIO initial push / the disk's fdatasync rate  {(bytes_ / (2**31 / disk)) / push1:.2f}x   (1.0 is the ceiling)")
print(f"RATIO initial push into tmpfs / rsync throughput  {rsync1 / push_tmpfs:.2f}x")
print(f"RATIO initial push / rsync, each side on its own core  {rsync_pinned / push_pinned:.2f}x")
print(f"RATIO initial push / restic throughput  {restic1 / push1:.2f}x   (target >= 3.0)")
print(f"RATIO initial push / borg throughput    {borg1 / push1:.2f}x")
print(f"RATIO incremental push / rsync time      {statistics.median(ratios2):.2f}x   (target <= 0.5; median of the rounds' {', '.join(f'{r:.2f}' for r in ratios2)})")
print(f"RATIO incremental push / restic time     {push2 / restic2:.2f}x   (round 1)")
print(f"RATIO incremental push / borg time       {push2 / borg2:.2f}x   (round 1)")
print(f"RATIO ingest / sha256sum rate            {sha / push1:.2f}x   (target >= 0.60)")
print(f"RATIO ingest with / without the signals  {nosig / push1:.2f}x   (target >= 0.90)")
print(f"RSS   gatekeeper peak, 8 pushes          {rss_kb / 1024:.1f} MiB (target <= 64)")
PY

if [ -n "${BENCH_PROFILE:-}" ]; then
  # perf's top lines only; `head` closing the pipe early is not a failure.
  perf_top() { # perf_top LINES REPORT-ARGS...
  local lines=$1
  shift
  { perf report "$@" --stdio 2>/dev/null || true; } | grep -v -e '^#' -e '^$' | head -"$lines" || true
}
  echo; echo "== where the initial push's cycles went (perf, every process)"
  perf_top 12 -i "$WORK/push1.perf" --sort comm
  perf_top 40 -i "$WORK/push1.perf" --sort comm,dso,sym
  echo; echo "== each side on its own core: the vault's core (CPU 1), then the pusher's (CPU 0)"
  for cpu in 1 0; do
    perf_top 6 -i "$WORK/pinned.perf" --cpu "$cpu" --sort comm
    perf_top 30 -i "$WORK/pinned.perf" --cpu "$cpu" --sort comm,dso,sym
  done
fi

# BENCH_PUSH_ONLY=1: stop after the push measurements (1-4), e.g. after changing ingest.
[ -n "${BENCH_PUSH_ONLY:-}" ] && exit 0

# ---- 5. restore from the store and from an export, against tar x on the same disk -----------
# The round-2 store holds the last incremental snapshot (the dataset as it is now). Exported with the real tools: an export order
# signed by both admins, `gatekeeper export` onto a medium's files (a directory: the label taken
# out of a `vaultctl media init` image), then `vaultctl restore --export` with an age identity.
SNAP=$(python3 -c "import json; print(json.load(open('$WORK/push2-$INCREMENTAL_ROUNDS.json'))['snapshot'])")
STORE2=$WORK/vault/store-round2
rm -rf "$WORK/restore-tar" "$WORK/restore-store" "$WORK/restore-export" "$WORK/medium" "$WORK/medium.img" "$WORK/data.tar" "$WORK/restore.key"
mkdir -p "$WORK/restore-tar" "$WORK/medium"
echo "== tar of the dataset (untimed), then tar x"
tar cf "$WORK/data.tar" -C "$DATA" .
settle; t0=$(now); tar xf "$WORK/data.tar" -C "$WORK/restore-tar"; sync; t1=$(now)
TARX=$(elapsed "$t0" "$t1")
settle; echo "== restore from the store"
t0=$(now); "$VC" restore --store "$STORE2" --snapshot "$SNAP" --vault-key "$VAULT_KEY" --to "$WORK/restore-store" >/dev/null; sync; t1=$(now)
RESTORE_STORE=$(elapsed "$t0" "$t1")
MEDIUM_ID=$("$VC" media init --out "$WORK/medium.img" --label bench --size 64MiB 2>/dev/null)
mcopy -i "$WORK/medium.img@@1M" ::/vault-medium.json "$WORK/medium/"
age-keygen -o "$WORK/restore.key" 2>/dev/null
RECIPIENT=$(age-keygen -y "$WORK/restore.key")
( cd "$KEYS"
  rm -f export.order
  "$VC" order new --root root.toml --kind export --serial "$(date +%s)" --snapshot "$SNAP" --medium "$MEDIUM_ID" --recipient "$RECIPIENT" --reason bench --out export.order 2>/dev/null
  "$VC" order sign --root root.toml --key alice.key export.order --out export.order 2>/dev/null
  "$VC" order sign --root root.toml --key bob.key export.order --out export.order 2>/dev/null )
"$GK" --root "$KEYS/root.toml" --state "$WORK/vault/state" apply-order "$KEYS/export.order" >/dev/null
settle; echo "== export onto the medium"
t0=$(now); "$GK" --root "$KEYS/root.toml" --state "$WORK/vault/state" --store "$STORE2" export --medium "$WORK/medium" > "$WORK/export.log"; sync; t1=$(now)
EXPORT=$(elapsed "$t0" "$t1")
EXPORT_DIR=$(find "$WORK/medium/vault-exports" -mindepth 1 -maxdepth 1 -type d | sort | head -1)
settle; echo "== restore from the export"
t0=$(now); "$VC" restore --export "$EXPORT_DIR" --identity "$WORK/restore.key" --snapshot "$SNAP" --vault-key "$VAULT_KEY" --to "$WORK/restore-export" >/dev/null; sync; t1=$(now)
RESTORE_EXPORT=$(elapsed "$t0" "$t1")
diff -r "$DATA" "$WORK/restore-export" >/dev/null || { echo "the export did not restore the dataset"; exit 1; }
python3 - <<PY
bytes_, tarx, store, export, from_export = $BYTES, $TARX, $RESTORE_STORE, $EXPORT, $RESTORE_EXPORT
mb = lambda s: bytes_ / s / 1e6
print()
print(f"tar x                 {tarx:7.2f} s  {mb(tarx):7.1f} MB/s")
print(f"restore from store    {store:7.2f} s  {mb(store):7.1f} MB/s")
print(f"export onto a medium  {export:7.2f} s  {mb(export):7.1f} MB/s  (chunks re-hashed, age-encrypted, read back)")
print(f"restore from export   {from_export:7.2f} s  {mb(from_export):7.1f} MB/s  (decrypted into a scratch store, then restored)")
print()
print(f"RATIO restore from store / tar x time    {store / tarx:.2f}x")
print(f"RATIO restore from export / tar x time   {from_export / tarx:.2f}x")
PY
rm -rf "$WORK/restore-tar" "$WORK/restore-store" "$WORK/restore-export" "$WORK/data.tar"

# ---- 6. the lifecycle: scrub against sha256sum on the same packs, and garbage collection ------
# 1000 snapshots of 1000 new 1 KiB chunks each (1 M chunks); half expire, then a collection.
echo "== lifecycle: ${LIFECYCLE_SNAPSHOTS:-1000} snapshots of ${LIFECYCLE_CHUNKS:-1000} chunks"
target/release/lifecycle-bench "$WORK/lifecycle" "${LIFECYCLE_SNAPSHOTS:-1000}" "${LIFECYCLE_CHUNKS:-1000}" 1024

# ---- 7. a stolen pusher key against the daemon's memory -------------------------------------
# 16 concurrent hostile sessions, each staging the most new chunks a session may (4-byte
# chunks) and committing a maximal manifest, then one chunk too many: the gatekeeper's peak
# RSS (target <= 256 MiB; one session's <= 128 MiB is checked by make test with two).
if [ -z "$BENCH_SHORT" ]; then
  echo "== flood: 16 hostile sessions"
  FLOOD_SESSIONS=16 cargo test --release --locked -p gatekeeper --test flood -- --nocapture a_flood_of_tiny_chunks 2>&1 | grep -E "^flood:|test result"
fi
