#!/usr/bin/env bash
# Usage: pipelines/check-readme.sh [README.md]
#
# Runs every shell block of the README that is marked runnable (a line
# `<!-- runnable -->` right before its ``` fence), each in a fresh bash
# (`bash -e -o pipefail`, its own process group, from the repository root),
# exactly as written, and reports ok / FAILED per block with its log under
# target/readme-check/. Exit status 1 when any block failed. Used by
# .ci/run, so a README recipe that stops working fails CI. Background
# processes a block leaves (a mock server) are killed with its group.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
README="${1:-$ROOT/README.md}"
OUTDIR="$ROOT/target/readme-check"
rm -rf "$OUTDIR"; mkdir -p "$OUTDIR"
cd "$ROOT"

# Split the runnable blocks into block-N.sh files.
awk -v dir="$OUTDIR" '
    /^<!-- runnable -->$/ { want = 1; next }
    want && /^```/ { inside = 1; want = 0; n++; file = sprintf("%s/block-%d.sh", dir, n); printf "" > file; next }
    inside && /^```/ { inside = 0; close(file); next }
    inside { print >> file }
    { if (!/^[[:space:]]*$/) want = 0 }
' "$README"

failed=0 total=0
for f in "$OUTDIR"/block-*.sh; do
    [ -e "$f" ] || { echo "check-readme: no runnable blocks in $README" >&2; exit 1; }
    total=$((total + 1))
    log="${f%.sh}.log"
    first="$(grep -v '^[[:space:]]*#' "$f" | head -n 1)"
    t=$(date +%s)
    setsid bash -e -o pipefail "$f" >"$log" 2>&1 </dev/null &
    pid=$!
    wait "$pid"; rc=$?
    kill -- -"$pid" 2>/dev/null || true
    if [ "$rc" -eq 0 ]; then
        echo "ok      $(basename "$f") ($(( $(date +%s) - t )) s): $first"
    else
        failed=$((failed + 1))
        echo "FAILED  $(basename "$f") (exit $rc): $first"
        sed 's/^/    | /' "$log" | tail -n 60
    fi
done
echo "README blocks: $((total - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
