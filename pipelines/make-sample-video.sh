#!/usr/bin/env bash
# Usage: pipelines/make-sample-video.sh [OUT.mp4] [SECONDS]
#
# Writes a test clip with visible changes over time (a moving ball from
# videotestsrc pattern=ball plus a running-time overlay), 640x360, 25 fps,
# ~1 Mbit/s, in MP4. Defaults: OUT = <repo>/target/sample.mp4, SECONDS = 30.
#
# Encoder: $ENCODER if set (a gst-launch fragment, e.g. "x264enc ! h264parse"),
# else openh264enc, else x264enc, else avenc_mpeg4 (last because Debian 12's
# gstreamer1.0-libav 1.22.0 with libavcodec59 5.1.x emits avenc_mpeg4 buffers
# without valid timestamps, so mp4mux writes a 0.04 s file).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

OUT="${1:-$ROOT/target/sample.mp4}"
SECS="${2:-30}"
case "$SECS" in
    ''|*[!0-9]*|0) echo "make-sample-video: SECONDS must be a positive integer, got '$SECS'" >&2; exit 2 ;;
esac
FPS=25
mkdir -p "$(dirname "$OUT")"
enc="$(pick_encoder 1000000)"

# openh264 prints a harmless "cmInitParaError" when it is drained at EOS.
# shellcheck disable=SC2086  # $enc is a pipeline fragment
gst-launch-1.0 -q -e \
    videotestsrc pattern=ball num-buffers=$((SECS * FPS)) \
    ! "video/x-raw,width=640,height=360,framerate=$FPS/1" \
    ! timeoverlay font-desc="Sans 28" halignment=left valignment=bottom \
    ! videoconvert ! $enc \
    ! mp4mux ! filesink location="$OUT" \
    2> >(grep -v 'cmInitParaError' >&2)

echo "wrote $OUT (${SECS} s, 640x360, $FPS fps, ${enc%% *})"
