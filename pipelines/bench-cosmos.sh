#!/usr/bin/env bash
# Usage: pipelines/bench-cosmos.sh
#
# The cosmos-reason1 benchmark quoted in README.md: the same mid-sized
# random-weight Qwen2.5-VL (text hidden 512 x 8 layers, vision 256 x 4) and
# the same input (8 frames of 224x224 → 334 prompt tokens), run by Hugging
# Face transformers (eager, f32, CPU) and by the plugin's candle model:
# prefill time (vision tower + prompt) and greedy decode tokens/s, as ratios;
# then candle's load time in s/GB for an FP8 (compressed-tensors) copy of the
# model and for the f32 original.
# Needs the torch environment (pipelines/setup-python.sh torch) plus
# transformers and torchvision, which this script installs into it.
# Environment: NEW_TOKENS (default 32), RUNS (default 3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/pipelines/setup-python.sh" torch
PY="$ROOT/target/py/torch/bin/python"
"$PY" -c 'import transformers, torchvision' 2>/dev/null \
    || "$ROOT/target/py/torch/bin/pip" install -q transformers==5.24.0 torchvision
OUT="$ROOT/target/bench-qwen"
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== transformers"
"$PY" "$ROOT/benches/cosmos_hf.py" "$OUT" 2>/dev/null
echo "== candle"
cd "$ROOT" && BENCH_QWEN_DIR="$OUT" cargo bench --bench cosmos 2>/dev/null
