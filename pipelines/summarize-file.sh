#!/usr/bin/env bash
# Usage: pipelines/summarize-file.sh VIDEO [OUT.jsonl] [PROPERTY=VALUE ...]
#        pipelines/summarize-file.sh demo [OUT.jsonl] [PROPERTY=VALUE ...]
#
# Captions a video file chunk by chunk with vsssummarize, summarizes the
# captions (one summary per SUMMARY_DURATION of video and a final summary,
# printed whole at the end) and writes the records (JSON Lines: one caption
# per chunk, the summaries) to OUT.jsonl (default: VIDEO's basename +
# .captions.jsonl in the current directory), and an HTML report with a
# thumbnail per chunk next to it (OUT.html; pipelines/report). The pipeline
# runs in pipelines/vss-run.py: each record is printed as one line on stdout
# as it arrives, progress and warnings go to stderr (a status line on a
# terminal, plain lines otherwise), and a result line ends the run:
#
#   filesrc ! decodebin ! videoconvert ! vsssummarize ... name=s
#     s.summary_src ! queue ! filesink   s.src ! fakesink sync=false
#
# Exit status: 0 every chunk captioned and summarized; 2 usage error; 3 some
# or all chunks or summaries failed (the first error is printed); 4 the pipeline failed (configuration
# error, missing file or plugin, decoder error); 130 aborted. Ctrl-C once
# stops early and keeps the records so far; twice aborts.
#
# Environment: CHUNK_DURATION (seconds, default 10), NUM_FRAMES (frames per
# chunk, default 8; with backend=custom the model's manifest.yaml),
# SUMMARY_DURATION (seconds per summary window, default 60; -1: only the
# final summary; the text LLM is the VLM's endpoint, see docs/summaries.md),
# REPORT
# (0 = no HTML report), VSS_PLUGIN_DIR (directory of libgstvsssummarize.so,
# e.g. target/debug; default: GST_PLUGIN_PATH if it holds the plugin, else
# target/release, built when missing), and the element's own:
# VIA_VLM_ENDPOINT (e.g. http://127.0.0.1:38011/v1),
# VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME, VIA_VLM_API_KEY / OPENAI_API_KEY.
# Extra arguments are vsssummarize properties, e.g.
# prompt="Describe the scene" frame-width=640.
#
# VIDEO = demo: makes target/sample.mp4 (pipelines/make-sample-video.sh;
# DEMO_VIDEO=FILE uses FILE instead), starts pipelines/mock-endpoint.py on a
# free port (stopped on exit), points VIA_VLM_ENDPOINT at it and captions
# the video: the whole chain, no model.
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

. "$ROOT/pipelines/common.sh"

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
    if [ -n "${DEMO_VIDEO:-}" ]; then
        VIDEO="$DEMO_VIDEO"
    else
        VIDEO="$ROOT/target/sample.mp4"
        if [ ! -s "$VIDEO" ]; then
            if ! "$ROOT/pipelines/make-sample-video.sh" "$VIDEO" 30 >&2; then
                rm -f "$VIDEO"
                echo "demo: could not make $VIDEO (see above); DEMO_VIDEO=FILE captions a clip of your own" >&2
                exit 4
            fi
        fi
    fi
    start_mock --quiet
    export VIA_VLM_ENDPOINT="$MOCK_URL"
    export VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME="${VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME:-mock}"
    # Never send a real key to the mock.
    unset VIA_VLM_API_KEY OPENAI_API_KEY AZURE_OPENAI_API_KEY AZURE_OPENAI_ENDPOINT
    echo "demo: mock endpoint at $MOCK_URL (no model), video $VIDEO" >&2
fi

if [ -z "$OUT" ]; then
    base="$(basename "$VIDEO")"
    OUT="${base%.*}.captions.jsonl"
fi

CHUNK_DURATION="${CHUNK_DURATION:-10}"
# A custom model's manifest says how many frames it wants: no default then.
custom=0
[ "${VLM_MODEL_TO_USE:-}" = custom ] && custom=1
for a in "${EXTRA[@]}"; do [ "$a" = backend=custom ] && custom=1; done
if [ "$custom" = 1 ]; then NUM_FRAMES="${NUM_FRAMES:-0}"; else NUM_FRAMES="${NUM_FRAMES:-8}"; fi
SHOWN=()
for a in "${EXTRA[@]}"; do
    case "$a" in api-key=*|api_key=*) SHOWN+=("api-key=<hidden>") ;; *) SHOWN+=("$a") ;; esac
done
echo "summarize-file: $VIDEO -> $OUT (chunk-duration=$CHUNK_DURATION num-frames-per-chunk=$NUM_FRAMES${SHOWN[*]:+ ${SHOWN[*]}})" >&2
mkdir -p "$(dirname "$OUT")"
rm -f "$OUT"

REPORT_ARGS=(--report)
[ "${REPORT:-1}" = 0 ] && REPORT_ARGS=()
rc=0
"$(gi_python)" "$ROOT/pipelines/vss-run.py" -o "$OUT" "${REPORT_ARGS[@]}" "$VIDEO" \
    chunk-duration="$CHUNK_DURATION" num-frames-per-chunk="$NUM_FRAMES" \
    summary-duration="${SUMMARY_DURATION:-60}" "${EXTRA[@]}" \
    || rc=$?
exit "$rc"
