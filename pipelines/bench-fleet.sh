#!/usr/bin/env bash
# Usage: pipelines/bench-fleet.sh
#
# The fleet load figure of docs/performance.md ("Shared budget and several
# endpoints", docs/endpoints.md): CAMERAS (default 16) live sources
# (videotestsrc is-live=true, FPS frames/s, 320x240) in ONE gst-launch-1.0
# process, each through its own vsssummarize (stream-id camN, chunk-duration
# CHUNK s, FRAMES frames per chunk, max-pending-chunks PENDING, the other
# properties at their defaults, so endpoint-concurrency is the default 8)
# into camN.jsonl, against pipelines/mock-endpoint.py with a fixed capacity
# (CAPACITY requests at a time, DELAY s each: 4 × 1 s = 4 answers/s, against
# CAMERAS / CHUNK = 8 chunks/s offered: twice what it can take), for
# DURATION s of video (default 300), then EOS (the drain is included).
# Prints per camera: captions, drops, other errors; the ratio of the most to
# the least captioned camera (goal <= 1.2); the mock's most requests at once
# (inside it, and worked on; summaries and event checks of the text LLM are
# not in the budget: FLEET_PROPS=summarize=false leaves captions only); the
# process's RSS at 30 s, every minute and at the end of the video (memory
# flat). Takes DURATION + about 30 s.
# BROKER=mqtt: each camera's records also go (tee) to a vssbrokersink that
# publishes to a Mosquitto started here; an independent paho-mqtt consumer
# (tests/python/broker_consume.py, target/py/brokers from
# `pipelines/setup-python.sh brokers`) counts what arrived per camera
# against the records in camN.jsonl (goal: equal, 0 lost).
# Environment: CAMERAS, DURATION, FPS, CHUNK, FRAMES, PENDING, CAPACITY,
# DELAY, FLEET_PROPS (extra vsssummarize properties, e.g.
# "endpoint-concurrency=4"), BROKER, VSS_PLUGIN_DIR (see pipelines/common.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

CAMERAS="${CAMERAS:-16}"
DURATION="${DURATION:-300}"
FPS="${FPS:-5}"
CHUNK="${CHUNK:-2}"
FRAMES="${FRAMES:-2}"
PENDING="${PENDING:-4}"
CAPACITY="${CAPACITY:-4}"
DELAY="${DELAY:-1}"
read -r -a PROPS <<<"${FLEET_PROPS:-}"

BROKER="${BROKER:-}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/vss-fleet.XXXXXX")"
GST_PID=""
MQTT_PID=""
SUB_PID=""
cleanup() {
    [ -n "$GST_PID" ] && kill "$GST_PID" 2>/dev/null || true
    [ -n "$SUB_PID" ] && kill "$SUB_PID" 2>/dev/null || true
    [ -n "$MQTT_PID" ] && kill "$MQTT_PID" 2>/dev/null || true
    stop_mock
    rm -rf "$TMP"
}
trap cleanup EXIT

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\))' | sed 's/  */ /g' || true
echo "plugin: $PLUGIN_SO"
start_mock --quiet --capacity "$CAPACITY" --delay "$DELAY"
export VIA_VLM_ENDPOINT="$MOCK_URL"
export VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME=mock
unset VIA_VLM_API_KEY OPENAI_API_KEY AZURE_OPENAI_API_KEY
echo "mock: $MOCK_URL, capacity $CAPACITY x ${DELAY}s; $CAMERAS cameras, ${DURATION}s of video, ${CHUNK}s chunks, $FRAMES frames/chunk, max-pending-chunks=$PENDING ${FLEET_PROPS:-}"

if [ "$BROKER" = mqtt ]; then
    BPY="$ROOT/target/py/brokers/bin/python"
    [ -x "$BPY" ] || { echo "BROKER=mqtt needs pipelines/setup-python.sh brokers"; exit 2; }
    MQTT_PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mosquitto -p "$MQTT_PORT" >"$TMP/mosquitto.log" 2>&1 &
    MQTT_PID=$!
    sleep 1
    "$BPY" "$ROOT/tests/python/broker_consume.py" mqtt 127.0.0.1 "$MQTT_PORT" 'fleet/#' \
        --client-id bench-fleet --timeout 20 >"$TMP/delivered.jsonl" 2>"$TMP/consume.log" &
    SUB_PID=$!
    for _ in $(seq 100); do grep -q ready "$TMP/delivered.jsonl" 2>/dev/null && break; sleep 0.2; done
    echo "broker: mosquitto on 127.0.0.1:$MQTT_PORT, one vssbrokersink per camera"
fi

ARGS=()
for i in $(seq 0 $((CAMERAS - 1))); do
    ARGS+=(videotestsrc is-live=true pattern=ball "num-buffers=$((DURATION * FPS))"
        ! "video/x-raw,width=320,height=240,framerate=$FPS/1"
        ! vsssummarize "name=cam$i" "stream-id=cam$i" "chunk-duration=$CHUNK"
        "num-frames-per-chunk=$FRAMES" "max-pending-chunks=$PENDING" "${PROPS[@]}"
        ! fakesink sync=false)
    if [ "$BROKER" = mqtt ]; then
        ARGS+=("cam$i.summary_src" ! tee "name=t$i" ! queue ! filesink "location=$TMP/cam$i.jsonl"
            "t$i." ! queue ! vssbrokersink "url=mqtt://127.0.0.1:$MQTT_PORT" "topic=fleet/{stream-id}/{kind}")
    else
        ARGS+=("cam$i.summary_src" ! filesink "location=$TMP/cam$i.jsonl")
    fi
done

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
gst-launch-1.0 -q -e "${ARGS[@]}" >"$TMP/gst.log" 2>&1 &
GST_PID=$!
START=$(date +%s)
RSS_30=""
RSS_END=""
RSS_MAX=0
RSS_SERIES=""
NEXT_MARK=60
while kill -0 "$GST_PID" 2>/dev/null; do
    sleep 5
    t=$(($(date +%s) - START))
    r=$(rss_kb "$GST_PID")
    [ "$r" -gt "$RSS_MAX" ] && RSS_MAX=$r
    if [ "$t" -ge "$NEXT_MARK" ] && [ "$r" -gt 0 ]; then
        RSS_SERIES="$RSS_SERIES ${t}s:$((r / 1024))"
        NEXT_MARK=$((NEXT_MARK + 60))
    fi
    if [ -z "$RSS_30" ] && [ "$t" -ge 30 ]; then RSS_30=$r; fi
    if [ "$t" -le "$DURATION" ] && [ "$r" -gt 0 ]; then RSS_END=$r; fi
done
wait "$GST_PID" || { echo "gst-launch-1.0 failed:"; tail -20 "$TMP/gst.log"; exit 1; }
GST_PID=""
WALL=$(($(date +%s) - START))
STATS="$(curl -s "${MOCK_URL%/v1}/stats")"

"$PYTHON" - "$TMP" "$CAMERAS" "$STATS" "$WALL" "${RSS_30:-0}" "${RSS_END:-0}" "$RSS_MAX" <<'EOF'
import json, sys
tmp, cameras, stats, wall = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
rss30, rss_end, rss_max = (int(x) / 1024 for x in sys.argv[5:8])
print("\n== per camera (captions / dropped / other errors / chunks)")
caps = []
for i in range(cameras):
    c = d = e = n = 0
    with open("%s/cam%d.jsonl" % (tmp, i)) as f:
        for line in f:
            r = json.loads(line)
            if r.get("kind", "caption") != "caption":
                continue
            n += 1
            err = r.get("error")
            if err is None:
                c += 1
            elif err.startswith("dropped:"):
                d += 1
            else:
                e += 1
    caps.append(c)
    print("cam%-3d %5d %5d %5d %5d" % (i, c, d, e, n))
lo, hi = min(caps), max(caps)
print("\n== totals")
print("captions %d, most/least captioned camera %d/%d = %s (goal <= 1.2)" % (
    sum(caps), hi, lo, ("%.3f" % (hi / lo)) if lo else "inf"))
print("mock: %d answers, most at once inside it %d, worked on %d" % (
    stats["served"], stats["max_in"], stats["max_running"]))
print("RSS: %.1f MiB at 30 s, %.1f MiB at the end of the video, %.1f MiB max; wall %s s" % (
    rss30, rss_end, rss_max, wall))
EOF
echo "RSS every minute (MiB):$RSS_SERIES"

if [ "$BROKER" = mqtt ]; then
    # The consumer ends 20 s after the last message.
    wait "$SUB_PID" || true
    SUB_PID=""
    "$PYTHON" - "$TMP" "$CAMERAS" <<'EOF'
import json, sys
tmp, cameras = sys.argv[1], int(sys.argv[2])
seen, got = {}, 0
for line in open("%s/delivered.jsonl" % tmp):
    if not line.startswith("{"):
        continue
    got += 1
    m = json.loads(line)
    r = json.loads(m["payload"])
    # At least once: a redelivered record counts once (stream, kind, index).
    ident = (r.get("kind"), r.get("chunk-index", r.get("summary-index", r.get("incident-id"))))
    seen.setdefault(m["topic"].split("/")[1], set()).add(ident)
print("\n== broker (per camera: records written / distinct records delivered)")
lost = 0
for i in range(cameras):
    n = sum(1 for _ in open("%s/cam%d.jsonl" % (tmp, i)))
    d = len(seen.get("cam%d" % i, ()))
    lost += max(0, n - d)
    print("cam%-3d %5d %5d" % (i, n, d))
print("messages received %d; records lost: %d" % (got, lost))
EOF
fi
