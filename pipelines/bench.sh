#!/usr/bin/env bash
# Usage: pipelines/bench.sh
#
# The benchmark quoted in README.md. Prints the machine first, then:
#  (a) pipeline wall time, 1080p I420 25 fps from videotestsrc pattern=smpte
#      (N frames, default 750 = 30 s of video), all sinks sync=false:
#        baseline:      videotestsrc ! caps ! identity ! fakesink
#        vsssummarize:  videotestsrc ! caps ! vsssummarize chunk-duration=2
#                       num-frames-per-chunk=8 ! fakesink, summary_src ! filesink,
#                       against pipelines/mock-endpoint.py --delay 0 (an
#                       instant local endpoint; its CPU use is included)
#      RUNS (default 3) runs of each, alternating; medians and their ratio,
#      and records / errors per run to show every chunk was captioned;
#  (c) vision-mode=images against vision-mode=video (openai-compat), the same
#      pipeline as (a) with frame-width=640, RUNS runs of each, alternating:
#      each record's latency (chunk complete -> record: frame preparation,
#      JPEG or MP4 encoding, the request to the instant mock) and the median
#      per mode, i.e. the time per chunk the element spends on each mode;
#  (b) cargo bench --bench frames -- --noplot (criterion: colour conversion,
#      resize and JPEG encoding of one 1080p frame) and frames/s = 1 / criterion's estimate.
# Environment: N (frames), RUNS, BENCH_PROPS (extra vsssummarize properties,
# e.g. "frame-width=640"), SKIP_CRITERION=1 to run (a) only, BENCH_NO_BUILD=1
# to use target/release as it is (else `cargo build --release` runs first).
# Takes about 3-6 minutes on 2 cores when the bench binary must be compiled.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/pipelines/common.sh"

N="${N:-750}"
RUNS="${RUNS:-3}"
CHUNK=2
FRAMES=8
FPS=25
read -r -a PROPS <<<"${BENCH_PROPS:-}"
CAPS="video/x-raw,format=I420,width=1920,height=1080,framerate=$FPS/1"
EXPECTED=$(awk -v n="$N" -v f="$FPS" -v c="$CHUNK" 'BEGIN { x = n / f / c; printf "%d", (x == int(x)) ? x : int(x) + 1 }')

TMP="$(mktemp -d "${TMPDIR:-/tmp}/vss-bench.XXXXXX")"
cleanup() {
    stop_mock
    rm -rf "$TMP"
}
trap cleanup EXIT

echo "== machine"
lscpu | grep -E '^(Model name|CPU\(s\)|Thread\(s\) per core|CPU max MHz)' | sed 's/  */ /g' || true
echo "GStreamer: $(gst-launch-1.0 --version | sed -n 's/^GStreamer //p')"
echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"

# Measure the current source: rebuild the plugin if src/ changed (a no-op
# when it is up to date). BENCH_NO_BUILD=1 skips this.
if [ "${BENCH_NO_BUILD:-0}" != "1" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
fi

start_mock --quiet --delay 0
export VIA_VLM_ENDPOINT="$MOCK_URL"
export VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME=mock
echo "plugin: $PLUGIN_SO ($(stat -c %y "$PLUGIN_SO" | cut -d. -f1))"
echo
unset VIA_VLM_API_KEY OPENAI_API_KEY AZURE_OPENAI_API_KEY

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

run_baseline() {
    gst-launch-1.0 -q videotestsrc num-buffers="$N" pattern=smpte ! "$CAPS" \
        ! identity ! fakesink sync=false
}
run_vss() {
    gst-launch-1.0 -q videotestsrc num-buffers="$N" pattern=smpte ! "$CAPS" \
        ! vsssummarize chunk-duration=$CHUNK num-frames-per-chunk=$FRAMES name=s "${PROPS[@]}" \
        s.src ! fakesink sync=false \
        s.summary_src ! filesink location="$1" sync=false
}

echo "== (a) wall time: $N frames 1920x1080 I420 @ $FPS fps ($(awk -v n="$N" -v f="$FPS" 'BEGIN { print n / f }') s of video), chunk-duration=$CHUNK num-frames-per-chunk=$FRAMES${BENCH_PROPS:+ $BENCH_PROPS}, endpoint $MOCK_URL (mock, delay 0)"
base_times=()
vss_times=()
records=()
for i in $(seq 1 "$RUNS"); do
    t0=$(now); run_baseline; t1=$(now)
    base_times+=("$(elapsed "$t0" "$t1")")
    out="$TMP/run$i.jsonl"
    t0=$(now); run_vss "$out"; t1=$(now)
    vss_times+=("$(elapsed "$t0" "$t1")")
    records+=("$(count_records "$out")")
    printf 'run %d: baseline %s s, vsssummarize %s s (%s; %d chunks expected)\n' \
        "$i" "${base_times[-1]}" "${vss_times[-1]}" "${records[-1]}" "$EXPECTED"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
mb=$(median "${base_times[@]}")
mv=$(median "${vss_times[@]}")
echo
printf '%-28s %12s %16s %8s\n' "pipeline (median of $RUNS)" "baseline s" "vsssummarize s" "ratio"
printf '%-28s %12s %16s %8s\n' "1080p I420, $N frames" "$mb" "$mv" "$(awk -v a="$mb" -v b="$mv" 'BEGIN { printf "%.2f", b / a }')"
printf '%-28s %12s %16s\n' "frames/s" \
    "$(awk -v n="$N" -v t="$mb" 'BEGIN { printf "%.0f", n / t }')" \
    "$(awk -v n="$N" -v t="$mv" 'BEGIN { printf "%.0f", n / t }')"
printf '%-28s %12s %16s\n' "x real time" \
    "$(awk -v n="$N" -v f="$FPS" -v t="$mb" 'BEGIN { printf "%.1f", n / f / t }')" \
    "$(awk -v n="$N" -v f="$FPS" -v t="$mv" 'BEGIN { printf "%.1f", n / f / t }')"
echo
echo "== (c) vision-mode: time per chunk in the element (record latency), frame-width=640, $RUNS runs of each mode"
run_mode() {
    gst-launch-1.0 -q videotestsrc num-buffers="$N" pattern=smpte ! "$CAPS" \
        ! vsssummarize chunk-duration=$CHUNK num-frames-per-chunk=$FRAMES frame-width=640 \
          vision-mode="$1" max-concurrency=1 name=s "${PROPS[@]}" \
        s.src ! fakesink sync=false \
        s.summary_src ! filesink location="$2" sync=false
}
for i in $(seq 1 "$RUNS"); do
    for mode in images video; do
        run_mode "$mode" "$TMP/mode-$mode-$i.jsonl"
    done
done
"$PYTHON" - "$TMP" "$RUNS" <<'EOF'
import json, statistics, sys
tmp, runs = sys.argv[1], int(sys.argv[2])
res = {}
for mode in ("images", "video"):
    lat, errors = [], 0
    for i in range(1, runs + 1):
        for line in open("%s/mode-%s-%d.jsonl" % (tmp, mode, i)):
            r = json.loads(line)
            if r.get("kind", "caption") != "caption":
                continue
            if r.get("error"):
                errors += 1
                continue
            lat.append(r["latency"])
    res[mode] = statistics.median(lat) if lat else float("nan")
    print("%-7s %4d records, %d errors, median latency %.1f ms per chunk" % (mode, len(lat), errors, res[mode] * 1e3))
print("video / images: %.2f" % (res["video"] / res["images"]))
EOF
stop_mock
echo

if [ "${SKIP_CRITERION:-0}" = "1" ]; then
    echo "== (b) skipped (SKIP_CRITERION=1)"
    exit 0
fi
echo "== (b) cargo bench --bench frames -- --noplot (one 1920x1080 frame per iteration)"
log="$TMP/criterion.log"
# Progress lines ("Benchmarking ...", "Compiling ...") stay in the log only.
set +e
(cd "$ROOT" && cargo bench --bench frames -- --noplot) 2>&1 | tee "$log" \
    | grep -vE '^\s*(Compiling|Downloaded|Downloading|Benchmarking) '
bench_rc=${PIPESTATUS[0]}
set -e
if [ "$bench_rc" -ne 0 ] || ! grep -q 'time:' "$log"; then
    echo "cargo bench failed; its output:" >&2
    cat "$log" >&2
    exit 1
fi
echo
echo "== (b) summary: frames/s = 1 / criterion estimate (middle value of time: [...])"
"$PYTHON" - "$log" <<'EOF'
import re, sys
unit = {"ps": 1e-12, "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0}
name = None
rows = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r"^(\S+/\S+)", line)
    if m and not line.startswith(("Benchmarking", "Found", "Warning")):
        name = m.group(1)
    t = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if t and name:
        secs = float(t.group(1)) * unit[t.group(2)]
        rows.append((name, secs))
        name = None
if not rows:
    print("no criterion results found")
    sys.exit(1)
for name, secs in rows:
    print("%-44s %9.2f ms  %8.1f frames/s" % (name, secs * 1e3, 1.0 / secs))
EOF
