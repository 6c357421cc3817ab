#!/usr/bin/env bash
# Usage:
#   pipelines/gpu-check.sh bundle        on the development machine: builds the
#                                        GPU check (examples/gpu_check.rs,
#                                        release) and packs it with NVRTC 12.8
#                                        into target/gpu-check/ and
#                                        target/gpu-check.tar.xz
#   pipelines/gpu-check.sh run [ARGS]    runs the bundle here (builds it first
#                                        when missing)
#   target/gpu-check/run.sh [ARGS]       on a GPU machine that has only the
#                                        NVIDIA driver: no Rust, no GStreamer,
#                                        no CUDA toolkit needed
# ARGS: --device N, --seconds S (per timing, default 2), --out FILE (the
# report as markdown), --cpu-only. Exit status 0 = every GPU result within
# its bound of the CPU path, 1 = a comparison failed, 2 = no usable GPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
B="$ROOT/target/gpu-check"

bundle() {
    local lib
    lib="$("$ROOT/pipelines/setup-python.sh" nvrtc | tail -1)"
    cargo build --locked --release --example gpu_check
    rm -rf "$B"
    mkdir -p "$B/lib"
    cp target/release/examples/gpu_check "$B/"
    cp "$lib/libnvrtc.so.12" "$lib"/libnvrtc-builtins.so.12.* "$B/lib/"
    if readelf -d "$B/gpu_check" | grep -q 'NEEDED.*libgst'; then
        echo "gpu-check: the binary links GStreamer; it must not" >&2
        exit 1
    fi
    cat > "$B/run.sh" <<'RUN'
#!/bin/sh
# GPU check: needs the NVIDIA driver (libcuda.so.1); NVRTC is in ./lib.
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/gpu_check" "$@"
RUN
    chmod +x "$B/run.sh"
    tar -C "$ROOT/target" -cf - gpu-check | xz -T0 -6 > "$ROOT/target/gpu-check.tar.xz"
    echo "gpu-check: $B ($(du -sh "$B" | cut -f1)), $ROOT/target/gpu-check.tar.xz ($(du -sh "$ROOT/target/gpu-check.tar.xz" | cut -f1))"
    echo "gpu-check: NEEDED: $(readelf -d "$B/gpu_check" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
}

case "${1:-}" in
    bundle) bundle ;;
    run)
        shift
        [ -x "$B/run.sh" ] || bundle
        exec "$B/run.sh" "$@"
        ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
