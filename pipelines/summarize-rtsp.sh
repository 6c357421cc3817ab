#!/usr/bin/env bash
# Usage: pipelines/summarize-rtsp.sh RTSP_URL [OUT.jsonl] [PROPERTY=VALUE ...]
#
# Captions a live RTSP stream chunk by chunk with vsssummarize until Ctrl-C,
# with a summary of every SUMMARY_DURATION seconds and alerts on EVENTS.
# Each record (one JSON object per line: captions, summaries, alerts, and the
# final summary at Ctrl-C) is appended to OUT.jsonl (default
# rtsp.captions.jsonl in the current directory, unbuffered) and printed on
# stdout as one readable line as it arrives (window summaries and alerts
# as soon as they are made: "[ 60.0–120.0 s] summary 1: ...",
# "[ 70.0–80.0 s] ALERT (a person falls): ..."); progress and warnings go to
# stderr. The pipeline runs in pipelines/vss-run.py --rtsp. Ctrl-C sends EOS:
# the open chunk is captioned and pending requests are awaited (drain-timeout,
# default 300 s) before exit; a second Ctrl-C aborts. Afterwards OUT.html
# (pipelines/report, no thumbnails for a stream) shows all records in OUT,
# appended across runs (REPORT=0: no report).
#
#   rtspsrc latency=200 ! application/x-rtp,media=video ! decodebin ! videoconvert
#     ! vsssummarize ... name=s
#   s.summary_src ! queue ! filesink append=true buffer-mode=unbuffered
#   s.src ! fakesink sync=false
#
# Exit status: 0 every chunk captioned; 2 usage error; 3 some or all chunks
# failed or were dropped (the first error is printed); 4 the pipeline failed
# (configuration error, RTSP connection or decoder error); 130 aborted.
#
# Environment: CHUNK_DURATION (default 10), NUM_FRAMES (default 8),
# SUMMARY_DURATION (default 60), EVENTS (';'-separated events to alert on,
# e.g. "a person falls;smoke or fire"; default none), ALERT_WEBHOOK (URL
# that receives each alert as a JSON POST),
# RTSP_PROTOCOLS (rtspsrc protocols, e.g. tcp when UDP is blocked), REPORT,
# VSS_PLUGIN_DIR (as for summarize-file.sh), and the element's
# VIA_VLM_ENDPOINT, VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME,
# VIA_VLM_API_KEY / OPENAI_API_KEY. Live input: frame times in the prompt are
# RFC 3339 wall-clock times, and when the model falls behind the oldest queued
# chunk is dropped (max-pending-chunks) with a warning.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}
if [ $# -lt 1 ]; then
    usage >&2
    exit 2
fi
if [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    usage
    exit 0
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

. "$ROOT/pipelines/common.sh"
mkdir -p "$(dirname "$OUT")"

CHUNK_DURATION="${CHUNK_DURATION:-10}"
NUM_FRAMES="${NUM_FRAMES:-8}"
RUN_ARGS=(--rtsp "$URL" --rtsp-latency 200 --append -o "$OUT")
if [ -n "${RTSP_PROTOCOLS:-}" ]; then
    RUN_ARGS+=(--rtsp-protocols "$RTSP_PROTOCOLS")
fi
[ "${REPORT:-1}" = 0 ] || RUN_ARGS+=(--report)

echo "summarize-rtsp: $URL -> $OUT (chunk-duration=$CHUNK_DURATION num-frames-per-chunk=$NUM_FRAMES); Ctrl-C to stop" >&2
rc=0
TEXT_ARGS=(summary-duration="${SUMMARY_DURATION:-60}")
[ -z "${EVENTS:-}" ] || TEXT_ARGS+=(events="$EVENTS")
[ -z "${ALERT_WEBHOOK:-}" ] || TEXT_ARGS+=(alert-webhook="$ALERT_WEBHOOK")
"$(gi_python)" "$ROOT/pipelines/vss-run.py" "${RUN_ARGS[@]}" \
    chunk-duration="$CHUNK_DURATION" num-frames-per-chunk="$NUM_FRAMES" "${TEXT_ARGS[@]}" "${EXTRA[@]}" \
    || rc=$?
exit "$rc"
