#!/usr/bin/env bash
# Usage: pipelines/burn-captions.sh VIDEO OUT.mp4 [PROPERTY=VALUE ...]
#
# Captions VIDEO chunk by chunk with vsssummarize and burns each chunk's
# caption over that chunk's frames with textoverlay. The model gets frames at
# the source resolution (set frame-width=... to shrink them); the output is
# scaled to 640 pixels wide before the queue below, H.264 (or MPEG-4) in MP4,
# without audio.
#
# Environment: CHUNK_DURATION (seconds, default 10), NUM_FRAMES (default 8),
# QUEUE_SECONDS (video held back, default CHUNK_DURATION*3+30), ENCODER
# (gst-launch fragment, see make-sample-video.sh) and the element's own
# VIA_VLM_ENDPOINT, VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME, VIA_VLM_API_KEY /
# OPENAI_API_KEY. Extra arguments are vsssummarize properties.
#
# Why the big queue: the caption of chunk [t, t+D) exists only after t+D plus
# the model latency, and textoverlay (wait-text=true) holds each video frame
# until the text for its time has arrived. The frames of [t, t+D) must
# therefore wait in a queue while vsssummarize keeps receiving the following
# frames that complete the chunk. With room for less than D of video the
# pipeline would deadlock; with room for D plus the model latency it never
# waits; in between, a slow model only slows it down (decoding waits for the
# next caption, which request-timeout and max-retries bound).
# Memory: 640x360 I420 is 0.35 MB a frame, so at 25 fps up to ~8.6 MB per
# queued second (about 520 MB for the default 60 s at D = 10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

if [ $# -lt 2 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
VIDEO="$1"
OUT="$2"
shift 2
EXTRA=("$@")

if [ ! -f "$VIDEO" ]; then
    echo "burn-captions: no such file: $VIDEO" >&2
    exit 2
fi
mkdir -p "$(dirname "$OUT")"

CHUNK_DURATION="${CHUNK_DURATION:-10}"
NUM_FRAMES="${NUM_FRAMES:-8}"
QUEUE_SECONDS="${QUEUE_SECONDS:-$(awk -v d="$CHUNK_DURATION" 'BEGIN { printf "%d", d * 3 + 30 }')}"
if ! awk -v q="$QUEUE_SECONDS" -v d="$CHUNK_DURATION" 'BEGIN { exit !(q > d) }'; then
    echo "burn-captions: QUEUE_SECONDS ($QUEUE_SECONDS) must exceed CHUNK_DURATION ($CHUNK_DURATION), or textoverlay and vsssummarize wait on each other forever" >&2
    exit 2
fi
QUEUE_NS="$(awk -v s="$QUEUE_SECONDS" 'BEGIN { printf "%.0f", s * 1e9 }')"
enc="$(pick_encoder 1500000)"

echo "burn-captions: $VIDEO -> $OUT (chunk-duration=$CHUNK_DURATION, video queue ${QUEUE_SECONDS} s, ${enc%% *})" >&2
# openh264 prints a harmless "cmInitParaError" when it is drained at EOS.
# shellcheck disable=SC2086  # $enc is a pipeline fragment
gst-launch-1.0 -q -e \
    filesrc location="$VIDEO" ! decodebin ! videoconvert \
    ! vsssummarize chunk-duration="$CHUNK_DURATION" num-frames-per-chunk="$NUM_FRAMES" name=s "${EXTRA[@]}" \
    s.src ! videoscale ! video/x-raw,width=640,pixel-aspect-ratio=1/1 \
    ! queue max-size-time="$QUEUE_NS" max-size-bytes=0 max-size-buffers=0 ! o.video_sink \
    s.summary_src ! queue ! o.text_sink \
    textoverlay name=o wrap-mode=wordchar valignment=top font-desc="Sans 14" shaded-background=true \
    ! videoconvert ! $enc ! mp4mux ! filesink location="$OUT" \
    2> >(grep -v 'cmInitParaError' >&2)

echo "burn-captions: wrote $OUT"
