#!/usr/bin/env bash
# Usage: pipelines/bench-cosmos.sh
#
# The cosmos-reason1 benchmark quoted in README.md: the same mid-sized
# random-weight Qwen2.5-VL (text hidden 512 x 8 layers, vision 256 x 4) and
# the same input (8 frames of 224x224 → 334 prompt tokens), run by Hugging
# Face transformers (eager, f32, CPU) and by the plugin's candle model:
# prefill time (vision tower + prompt) and greedy decode tokens/s, as ratios,
# in ROUNDS back-to-back rounds and their median; the first round also gives
# candle's load time in s/GB for an FP8 (compressed-tensors) copy of the
# model and for the f32 original.
# Needs the torch environment (pipelines/setup-python.sh torch) plus
# transformers and torchvision, which this script installs into it.
# Environment: NEW_TOKENS (default 32), RUNS (runs per side per round,
# default 3), ROUNDS (default 3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/pipelines/setup-python.sh" torch
PY="$ROOT/target/py/torch/bin/python"
"$PY" -c 'import transformers, torchvision' 2>/dev/null \
    || "$ROOT/target/py/torch/bin/pip" install -q transformers==5.24.0 torchvision
OUT="$ROOT/target/bench-qwen"
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || { echo "bench-cosmos: ROUNDS must be 1-99 (got '$ROUNDS')" >&2; exit 2; }
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
cd "$ROOT" && cargo bench --bench cosmos --no-run -q
# Rounds of transformers then candle, back to back: a shared machine's speed
# drifts over minutes, so each round's ratio compares the two sides under
# the same conditions; the summary gives every round and their median.
ratios=()
for ((r = 1; r <= ROUNDS; r++)); do
    echo "== round $r of $ROUNDS: transformers"
    "$PY" "$ROOT/benches/cosmos_hf.py" "$OUT" 2>/dev/null
    echo "== round $r of $ROUNDS: candle"
    out=$(BENCH_QWEN_DIR="$OUT" BENCH_LOAD=$([[ $r == 1 ]] && echo 1 || echo 0) \
        cargo bench --bench cosmos 2>/dev/null)
    printf '%s\n' "$out"
    line=$(grep '^ratio candle/transformers' <<<"$out")
    ratios+=("$(sed -E 's/.*prefill time ([0-9.]+), decode speed ([0-9.]+).*/\1 \2/' <<<"$line")")
done
printf '%s\n' "${ratios[@]}" | python3 -c '
import sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
med = lambda xs: sorted(xs)[len(xs) // 2]
p, d = [r[0] for r in rows], [r[1] for r in rows]
print("== summary over %d rounds: prefill time ratio (candle / transformers) median %.2f (rounds: %s); "
      "decode speed ratio median %.2f (rounds: %s)" % (len(rows), med(p), " ".join("%.2f" % x for x in p),
                                                      med(d), " ".join("%.2f" % x for x in d)))'
