#!/usr/bin/env bash
# Usage: pipelines/summarize-rtsp.sh RTSP_URL [OUT.jsonl] [PROPERTY=VALUE ...]
#
# Captions a live RTSP stream chunk by chunk with vsssummarize until Ctrl-C.
# Each record (one JSON object per line) is appended to OUT.jsonl (default
# rtsp.captions.jsonl in the current directory) and printed on stdout as it
# arrives. Ctrl-C sends EOS (gst-launch-1.0 -e): the open chunk is captioned
# and pending requests are awaited (drain-timeout, default 300 s) before exit.
#
#   rtspsrc latency=200 ! application/x-rtp,media=video ! decodebin ! videoconvert
#     ! vsssummarize ... name=s
#   s.summary_src ! tee ! queue ! filesink (unbuffered)
#                       ! queue ! fdsink fd=1          s.src ! fakesink sync=false
#
# Environment: CHUNK_DURATION (default 10), NUM_FRAMES (default 8),
# RTSP_PROTOCOLS (rtspsrc protocols, e.g. tcp when UDP is blocked), and the
# element's VIA_VLM_ENDPOINT, VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME,
# VIA_VLM_API_KEY / OPENAI_API_KEY. Live input: frame times in the prompt are
# RFC 3339 wall-clock times, and when the model falls behind the oldest queued
# chunk is dropped (max-pending-chunks) with a warning.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
URL="$1"
shift
OUT="rtsp.captions.jsonl"
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then
    OUT="$1"
    shift
fi
EXTRA=("$@")
case "$URL" in
    rtsp://*|rtsps://*|rtspt://*|rtspu://*|rtsph://*) ;;
    *) echo "summarize-rtsp: not an rtsp:// URL: $URL" >&2; exit 2 ;;
esac
mkdir -p "$(dirname "$OUT")"

CHUNK_DURATION="${CHUNK_DURATION:-10}"
NUM_FRAMES="${NUM_FRAMES:-8}"
SRC_OPTS=(latency=200)
if [ -n "${RTSP_PROTOCOLS:-}" ]; then
    SRC_OPTS+=("protocols=$RTSP_PROTOCOLS")
fi

echo "summarize-rtsp: $URL -> $OUT (chunk-duration=$CHUNK_DURATION num-frames-per-chunk=$NUM_FRAMES); Ctrl-C to stop" >&2
rc=0
# -q keeps stdout for the records; errors and warnings still go to stderr.
gst-launch-1.0 -q -e \
    rtspsrc location="$URL" "${SRC_OPTS[@]}" ! application/x-rtp,media=video \
    ! decodebin ! videoconvert \
    ! vsssummarize chunk-duration="$CHUNK_DURATION" num-frames-per-chunk="$NUM_FRAMES" name=s "${EXTRA[@]}" \
    s.summary_src ! tee name=t \
    t. ! queue ! filesink location="$OUT" append=true buffer-mode=unbuffered sync=false \
    t. ! queue ! fdsink fd=1 sync=false \
    s.src ! fakesink sync=false \
    || rc=$?

echo "summarize-rtsp: $OUT now holds $(count_records "$OUT") (appended across runs)" >&2
if [ "$rc" -ne 0 ]; then
    echo "summarize-rtsp: gst-launch-1.0 failed (exit $rc)" >&2
fi
exit "$rc"
