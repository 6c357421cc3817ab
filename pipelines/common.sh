# Sourced by the scripts in pipelines/ (not run on its own):
#   ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
#   . "$ROOT/pipelines/common.sh"
# Finds the plugin and defines small helpers. Where the plugin comes from:
#   1. $VSS_PLUGIN_DIR when set: the directory holding libgstvsssummarize.so
#      (e.g. target/debug); it is put first in GST_PLUGIN_PATH; nothing is built.
#   2. else a directory in $GST_PLUGIN_PATH that already holds
#      libgstvsssummarize.so; GST_PLUGIN_PATH is left as it is.
#   3. else $ROOT/target/release, built with pipelines/setup.sh when the .so
#      is missing (a release build takes minutes).
# PLUGIN_SO is the .so in use.

: "${ROOT:?set ROOT to the repository root before sourcing common.sh}"
PLUGIN_SO=""
if [ -n "${VSS_PLUGIN_DIR:-}" ]; then
    PLUGIN_SO="$VSS_PLUGIN_DIR/libgstvsssummarize.so"
    if [ ! -f "$PLUGIN_SO" ]; then
        echo "$(basename "$0"): VSS_PLUGIN_DIR=$VSS_PLUGIN_DIR holds no libgstvsssummarize.so (build it: cargo build [--release])" >&2
        exit 4
    fi
    export GST_PLUGIN_PATH="$VSS_PLUGIN_DIR${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
else
    _vss_ifs="$IFS"
    IFS=:
    for _vss_dir in ${GST_PLUGIN_PATH:-}; do
        if [ -n "$_vss_dir" ] && [ -f "$_vss_dir/libgstvsssummarize.so" ]; then
            PLUGIN_SO="$_vss_dir/libgstvsssummarize.so"
            break
        fi
    done
    IFS="$_vss_ifs"
    unset _vss_ifs _vss_dir
    if [ -z "$PLUGIN_SO" ]; then
        PLUGIN_SO="$ROOT/target/release/libgstvsssummarize.so"
        export GST_PLUGIN_PATH="$ROOT/target/release${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}"
        if [ ! -f "$PLUGIN_SO" ]; then
            echo "$(basename "$0"): $PLUGIN_SO is missing; running pipelines/setup.sh (or set VSS_PLUGIN_DIR=\$PWD/target/debug after cargo build)" >&2
            "$ROOT/pipelines/setup.sh"
        fi
    fi
fi
PYTHON="${PYTHON:-$(command -v python3 || echo /usr/bin/python3)}"

# gi_python -> prints a Python that can use GStreamer through PyGObject (for
# pipelines/vss-run.py and pipelines/report): $PYTHON, python3 or
# /usr/bin/python3, the first that imports gi (a pyenv or virtualenv python3
# first on PATH usually has no gi). Prints $PYTHON when none does (vss-run.py
# then says what to install).
gi_python() {
    local p
    for p in "$PYTHON" python3 /usr/bin/python3; do
        if "$p" -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' >/dev/null 2>&1; then
            command -v "$p"
            return 0
        fi
    done
    echo "$PYTHON"
}

# pick_encoder BITRATE_BPS -> prints a gst-launch fragment producing MP4-muxable
# video. $ENCODER wins when set. avenc_mpeg4 comes last: with Debian 12's
# gstreamer1.0-libav 1.22.0 + libavcodec59 5.1.x its buffers carry no valid
# timestamps (PTS 2^63), and mp4mux then writes a 0.04 s file.
pick_encoder() {
    local bps="$1"
    if [ -n "${ENCODER:-}" ]; then
        echo "$ENCODER"
    elif gst-inspect-1.0 openh264enc >/dev/null 2>&1; then
        echo "openh264enc bitrate=$bps ! h264parse"
    elif gst-inspect-1.0 x264enc >/dev/null 2>&1; then
        echo "x264enc bitrate=$((bps / 1000)) ! h264parse"
    else
        echo "avenc_mpeg4 bitrate=$bps"
    fi
}

# start_mock [extra mock-endpoint.py args...]: starts pipelines/mock-endpoint.py
# on a free port; sets MOCK_PID and MOCK_URL (http://127.0.0.1:PORT/v1).
# The caller kills it (stop_mock) from its EXIT trap.
MOCK_PID=""
MOCK_URL=""
MOCK_LOG=""
start_mock() {
    MOCK_LOG="$(mktemp "${TMPDIR:-/tmp}/vss-mock.XXXXXX")"
    "$PYTHON" "$ROOT/pipelines/mock-endpoint.py" --port 0 "$@" >"$MOCK_LOG" 2>&1 &
    MOCK_PID=$!
    local i
    for i in $(seq 1 100); do
        MOCK_URL="$(sed -n 's#^listening on \(http://[^ ]*\)$#\1#p' "$MOCK_LOG" | head -n 1)"
        [ -n "$MOCK_URL" ] && return 0
        if ! kill -0 "$MOCK_PID" 2>/dev/null; then
            echo "mock endpoint failed to start:" >&2
            cat "$MOCK_LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "mock endpoint did not start within 10 s" >&2
    return 1
}
stop_mock() {
    if [ -n "$MOCK_PID" ]; then
        kill "$MOCK_PID" 2>/dev/null || true
        wait "$MOCK_PID" 2>/dev/null || true
        MOCK_PID=""
    fi
    if [ -n "$MOCK_LOG" ]; then
        rm -f "$MOCK_LOG"
        MOCK_LOG=""
    fi
}

# count_records FILE.jsonl -> "N records, M errors" (lines that are not JSON
# objects are counted as "unparsable").
count_records() {
    "$PYTHON" -c '
import json, sys
n = err = bad = 0
try:
    f = open(sys.argv[1], encoding="utf-8")
except OSError:
    f = []
for line in f:
    line = line.strip()
    if not line:
        continue
    try:
        rec = json.loads(line)
    except ValueError:
        bad += 1
        continue
    if not isinstance(rec, dict):
        bad += 1
        continue
    n += 1
    if "error" in rec:
        err += 1
print("%d records, %d errors%s" % (n, err, ", %d unparsable lines" % bad if bad else ""))
' "$1"
}
