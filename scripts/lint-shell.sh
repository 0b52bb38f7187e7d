#!/usr/bin/env bash
# Runs shellcheck over every shell script in the repository (found by name or by shebang, so a new
# script is linted without being listed here), following what each sources.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t scripts < <(git ls-files --cached --others --exclude-standard | while read -r f; do
  case "${f##*/}" in
    *.sh | *.bash) echo "$f" ;;
    *.*) ;;
    *) [ -f "$f" ] && head -c 64 "$f" | head -n1 | grep -Eq '^#!.*\b(ba)?sh\b' && echo "$f" ;;
  esac
done)
[ "${#scripts[@]}" -gt 0 ] || { echo "lint-shell: no scripts found" >&2; exit 1; }
shellcheck --external-sources --source-path=SCRIPTDIR --source-path=. "${scripts[@]}"
echo "lint-shell: shellcheck passed on ${#scripts[@]} scripts"
