#!/usr/bin/env bash
# Usage: pipelines/summarize-file.sh VIDEO [OUT.jsonl] [PROPERTY=VALUE ...]
#        pipelines/summarize-file.sh demo [OUT.jsonl] [PROPERTY=VALUE ...]
#
# Captions a video file chunk by chunk with vsssummarize and writes one JSON
# record per chunk (JSON Lines) to OUT.jsonl (default: VIDEO's basename +
# .captions.jsonl in the current directory), then prints the records and a
# count of records / errors.
#
#   filesrc ! decodebin ! videoconvert ! vsssummarize ... name=s
#     s.summary_src ! queue ! filesink   s.src ! fakesink sync=false
#
# Environment: CHUNK_DURATION (seconds, default 10), NUM_FRAMES (frames per
# chunk, default 8; with backend=custom the model's manifest.yaml), and the element's own: VIA_VLM_ENDPOINT (e.g.
# http://127.0.0.1:38011/v1), VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME,
# VIA_VLM_API_KEY / OPENAI_API_KEY. Extra arguments are vsssummarize
# properties, e.g. prompt="Describe the scene" frame-width=640.
#
# VIDEO = demo: makes target/sample.mp4 (pipelines/make-sample-video.sh),
# starts pipelines/mock-endpoint.py on a free port (stopped on exit), points
# VIA_VLM_ENDPOINT at it and captions the sample: the whole chain, no model.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

VIDEO="$1"
shift
OUT=""
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
    OUT="$1"
    shift
fi
EXTRA=("$@")

trap stop_mock EXIT
if [ "$VIDEO" = "demo" ]; then
    VIDEO="$ROOT/target/sample.mp4"
    if [ ! -s "$VIDEO" ]; then
        "$ROOT/pipelines/make-sample-video.sh" "$VIDEO" 30
    fi
    start_mock --quiet
    export VIA_VLM_ENDPOINT="$MOCK_URL"
    export VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME="${VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME:-mock}"
    # Never send a real key to the mock.
    unset VIA_VLM_API_KEY OPENAI_API_KEY AZURE_OPENAI_API_KEY
    echo "demo: mock endpoint at $MOCK_URL (no model), video $VIDEO" >&2
fi

if [ ! -f "$VIDEO" ]; then
    echo "summarize-file: no such file: $VIDEO" >&2
    exit 2
fi
if [ -z "$OUT" ]; then
    base="$(basename "$VIDEO")"
    OUT="${base%.*}.captions.jsonl"
fi
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"

CHUNK_DURATION="${CHUNK_DURATION:-10}"
# A custom model's manifest says how many frames it wants: no default then.
custom=0
[ "${VLM_MODEL_TO_USE:-}" = custom ] && custom=1
for a in "${EXTRA[@]}"; do [ "$a" = backend=custom ] && custom=1; done
if [ "$custom" = 1 ]; then NUM_FRAMES="${NUM_FRAMES:-0}"; else NUM_FRAMES="${NUM_FRAMES:-8}"; fi
echo "summarize-file: $VIDEO -> $OUT (chunk-duration=$CHUNK_DURATION num-frames-per-chunk=$NUM_FRAMES${EXTRA[*]:+ ${EXTRA[*]}})" >&2

start=$(date +%s.%N)
rc=0
gst-launch-1.0 -q -e \
    filesrc location="$VIDEO" ! decodebin ! videoconvert \
    ! vsssummarize chunk-duration="$CHUNK_DURATION" num-frames-per-chunk="$NUM_FRAMES" name=s "${EXTRA[@]}" \
    s.summary_src ! queue ! filesink location="$OUT" \
    s.src ! fakesink sync=false \
    || rc=$?
end=$(date +%s.%N)

if [ -s "$OUT" ]; then
    cat "$OUT"
fi
echo "summarize-file: $(count_records "$OUT") in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s -> $OUT"
if [ "$rc" -ne 0 ]; then
    echo "summarize-file: gst-launch-1.0 failed (exit $rc)" >&2
fi
exit "$rc"
