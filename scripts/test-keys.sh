#!/usr/bin/env bash
# Keys and a trust root for the test image (`make test-image`): three admins (2 of 3 must
# sign) and two pushers. Made once per checkout with the workspace's vaultctl; test keys only,
# never for a real vault.
set -euo pipefail
dir=${1:?usage: test-keys.sh DIR}
vaultctl=${VAULTCTL:-$(cd "$(dirname "$0")/.." && pwd)/target/release/vaultctl}
mkdir -p "$dir"
cd "$dir"
for name in alice bob carol db-backup web-backup log-backup; do
  [ -f "$name.key" ] || "$vaultctl" key gen --out "$name" >/dev/null
done
[ -f root.toml ] || "$vaultctl" root init --vault-id vault-test --threshold 2 \
  --admin alice.pub --admin bob.pub --admin carol.pub --out root.toml
