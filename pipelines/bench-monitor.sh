#!/usr/bin/env bash
# Usage: pipelines/bench-monitor.sh
#
# Watching a camera (docs/monitoring.md): a 10-minute scene with known
# events, captioned with change gating off and on, in the same run, against
# pipelines/mock-endpoint.py. The figures are in docs/performance.md.
#
# The scene (pipelines/monitor-scene.py): scikit-image's motorcycle_left.png
# (a real photograph) as a static background, 960x540 at 5 fps, with
# Gaussian sensor noise (sigma 3 grey levels) and a slow light drift, H.264
# (openh264enc, else x264enc); real objects (the cat chelsea.png, 1/10 of
# the width; the astronaut, 1/3) walk in and out at scripted times:
#   63-77 s small, 215-224 s large, 341-349 s small, 452-468 s large.
# Each run: filesrc ! qtdemux ! h264parse ! avdec_h264 ! videoconvert !
#   vsssummarize chunk-duration=10 summarize=false [skip-unchanged=true]
# Printed per run: VLM calls (POSTs the mock logged), visual tokens (the
# mock counts 256 per image, as a 448x448 Qwen2-VL image; the sum of
# 256 x frames over the captioned chunks) and input tokens as the mock
# reported them (the records' input-tokens), records by kind; per scripted
# event, which chunks hold it and whether each was captioned with gating.
# Goal: >= 80 % fewer calls with gating, every event chunk captioned; the
# script exits 1 when either fails.
# Environment: SECONDS_TOTAL (600), EVENTS (monitor-scene.py --events),
# MONITOR_PROPS (extra vsssummarize properties for the gated run),
# VSS_PLUGIN_DIR (e.g. $PWD/target/debug; see pipelines/common.sh).
# Takes about 4-6 minutes on 2 cores (most of it making the scene).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

SECONDS_TOTAL="${SECONDS_TOTAL:-600}"
EVENTS="${EVENTS:-63-77:small;215-224:large;341-349:small;452-468:large}"
CHUNK=10

"$ROOT/pipelines/setup-python.sh" images
IMG_PY="$ROOT/target/py/images/bin/python"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vss-bench-monitor.XXXXXX")"
cleanup() {
    stop_mock
    rm -rf "$TMP"
}
trap cleanup EXIT

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\))' | sed 's/  */ /g' || true
echo "GStreamer: $(gst-launch-1.0 --version | sed -n 's/^GStreamer //p')"
echo "plugin: $PLUGIN_SO"

echo "== scene: $SECONDS_TOTAL s, events $EVENTS"
t0=$(date +%s)
"$IMG_PY" "$ROOT/pipelines/monitor-scene.py" "$TMP/scene.mp4" --seconds "$SECONDS_TOTAL" \
    --events "$EVENTS" >"$TMP/events.json" 2>"$TMP/scene.log" || { cat "$TMP/scene.log"; exit 1; }
echo "made in $(( $(date +%s) - t0 )) s: $(stat -c %s "$TMP/scene.mp4") bytes"

run() { # NAME EXTRA-PROPS...
    local name="$1"; shift
    start_mock --delay 0
    local t0; t0=$(date +%s.%N)
    gst-launch-1.0 -q filesrc location="$TMP/scene.mp4" ! qtdemux ! h264parse ! avdec_h264 \
        ! videoconvert ! video/x-raw,format=I420 \
        ! vsssummarize name=s endpoint="$MOCK_URL" model-name=mock summarize=false \
            chunk-duration=$CHUNK "$@" \
        s.summary_src ! filesink location="$TMP/$name.jsonl" s.src ! fakesink >/dev/null
    local t1; t1=$(date +%s.%N)
    grep -c 'POST /v1/chat/completions' "$MOCK_LOG" >"$TMP/$name.calls" || true
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }' >"$TMP/$name.wall"
    stop_mock
}

read -r -a EXTRA <<<"${MONITOR_PROPS:-}"
echo "== run 1: gating off"
run off
echo "== run 2: skip-unchanged=true ${EXTRA[*]}"
run on skip-unchanged=true "${EXTRA[@]}"

"$PYTHON" - "$TMP" "$CHUNK" <<'EOF'
import json, sys
tmp, chunk = sys.argv[1], float(sys.argv[2])
events = json.load(open(f"{tmp}/events.json"))
res = {}
for name in ("off", "on"):
    recs = [json.loads(l) for l in open(f"{tmp}/{name}.jsonl") if l.strip()]
    calls = int(open(f"{tmp}/{name}.calls").read().strip() or 0)
    caps = [r for r in recs if r["kind"] == "caption" and not r.get("error")]
    kinds = {}
    for r in recs:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    res[name] = dict(recs=recs, calls=calls, kinds=kinds,
                     visual=sum(256 * len(r["frame-times"]) for r in caps),
                     tokens=sum(r["input-tokens"] for r in caps),
                     wall=open(f"{tmp}/{name}.wall").read())
    print(f"{name:>3}: {len(recs)} records {kinds}, VLM calls {calls}, visual tokens {res[name]['visual']}, "
          f"input tokens (mock) {res[name]['tokens']}, wall {res[name]['wall']} s")
off, on = res["off"], res["on"]
saved = 1 - on["calls"] / off["calls"] if off["calls"] else 0
print(f"calls saved: {100 * saved:.1f} % ({off['calls']} -> {on['calls']}); "
      f"visual tokens saved: {100 * (1 - on['visual'] / max(off['visual'], 1)):.1f} %")
by_idx = {r["chunk-index"]: r for r in on["recs"]}
ok = saved >= 0.8
for e in events:
    idx = [r["chunk-index"] for r in on["recs"] if r["start"] < e["end"] and r["end"] > e["start"]]
    got = [(i, by_idx[i]["kind"]) for i in idx]
    good = all(k == "caption" for _, k in got)
    ok &= good
    print(f"event {e['start']:.0f}-{e['end']:.0f} s {e['size']}: chunks {idx} -> "
          f"{', '.join(k for _, k in got)} {'OK' if good else 'MISSED'}")
others = [r["chunk-index"] for r in on["recs"] if r["kind"] == "caption"
          and not any(r["start"] < e["end"] and r["end"] > e["start"] for e in events)]
print(f"captioned without an event: chunks {others} (the first chunk, and those where an object had just left)")
print("RESULT:", "PASS" if ok else "FAIL", "(>= 80 % fewer calls, every event chunk captioned)")
sys.exit(0 if ok else 1)
EOF
