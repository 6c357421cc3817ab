#!/usr/bin/env bash
# Usage: pipelines/bench-cosmos.sh
#
# The in-process models' benchmark (docs/cosmos.md, "Both families"),
# for both model families of the in-process backend:
#   qwen2_5  a mid-sized random-weight Qwen2.5-VL (text hidden 512 x 8
#            layers, vision 256 x 4, patch 14): 8 frames of 224x224 →
#            334 prompt tokens;
#   qwen3    a Qwen3-VL of comparable cost (text hidden 512 x 8 layers,
#            head_dim 64, interleaved M-RoPE; vision 256 x 4, patch 16,
#            DeepStack after blocks 1 and 2): the same 8 frames through the
#            Qwen3-VL video processor → 294 prompt tokens (per-pair time
#            tags, qwen3/prompt.rs).
# Each family is run by Hugging Face transformers (eager, f32, CPU) and by
# the plugin's candle model: prefill time (vision tower + prompt) and greedy
# decode tokens/s, as ratios, in ROUNDS back-to-back rounds and their median.
# The first round of each family also gives candle's load time in s/GB for
# an FP8 (compressed-tensors) copy of the model and for the f32 original;
# every round prints the largest difference between the two sides' first
# logits (they must compute the same thing).
# Needs the torch environment (pipelines/setup-python.sh torch) plus
# transformers and torchvision, which this script installs into it when
# they are missing.
# Environment: FAMILY (qwen2_5, qwen3 or both; default both), NEW_TOKENS
# (default 32), RUNS (runs per side per round, default 3), ROUNDS (default 3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/target/py/torch/bin/python"
if ! "$PY" -c 'import torch, transformers, torchvision' 2>/dev/null; then
    "$ROOT/pipelines/setup-python.sh" torch
    "$PY" -c 'import transformers, torchvision' 2>/dev/null \
        || "$ROOT/target/py/torch/bin/pip" install -q transformers==5.24.0 torchvision
fi
ROUNDS="${ROUNDS:-3}"
[[ "$ROUNDS" =~ ^[1-9][0-9]?$ ]] || { echo "bench-cosmos: ROUNDS must be 1-99 (got '$ROUNDS')" >&2; exit 2; }
FAMILY="${FAMILY:-both}"
case "$FAMILY" in
    qwen2_5 | qwen3) families=("$FAMILY") ;;
    both) families=(qwen2_5 qwen3) ;;
    *) echo "bench-cosmos: FAMILY must be qwen2_5, qwen3 or both (got '$FAMILY')" >&2; exit 2 ;;
esac
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
cd "$ROOT" && cargo bench --bench cosmos --no-run -q
summaries=()
for fam in "${families[@]}"; do
    OUT="$ROOT/target/bench-qwen"
    [[ $fam == qwen3 ]] && OUT="$ROOT/target/bench-qwen3"
    # Rounds of transformers then candle, back to back: a shared machine's
    # speed drifts over minutes, so each round's ratio compares the two
    # sides under the same conditions; the summary gives every round and
    # their median.
    ratios=()
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "== $fam round $r of $ROUNDS: transformers (load average $(cut -d' ' -f1 /proc/loadavg))"
        "$PY" "$ROOT/benches/cosmos_hf.py" "$OUT" "$fam" 2>/dev/null
        echo "== $fam round $r of $ROUNDS: candle"
        out=$(BENCH_FAMILY="$fam" BENCH_QWEN_DIR="$OUT" BENCH_LOAD=$([[ $r == 1 ]] && echo 1 || echo 0) \
            cargo bench --bench cosmos 2>/dev/null)
        printf '%s\n' "$out"
        line=$(grep '^ratio candle/transformers' <<<"$out")
        ratios+=("$(sed -E 's/.*prefill time ([0-9.]+), decode speed ([0-9.]+).*/\1 \2/' <<<"$line")")
    done
    s=$(printf '%s\n' "${ratios[@]}" | python3 -c '
import sys
fam = sys.argv[1]
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
med = lambda xs: sorted(xs)[len(xs) // 2]
p, d = [r[0] for r in rows], [r[1] for r in rows]
print("== %s summary over %d rounds: prefill time ratio (candle / transformers) median %.2f (rounds: %s); "
      "decode speed ratio median %.2f (rounds: %s)" % (fam, len(rows), med(p), " ".join("%.2f" % x for x in p),
                                                      med(d), " ".join("%.2f" % x for x in d)))' "$fam")
    echo "$s"
    summaries+=("$s")
done
echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${summaries[@]}"
