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
#   pipelines/gpu-check.sh models       builds the in-process model check
#                                        (examples/model_gpu_check.rs) with
#                                        the `cuda` feature (build-cuda.sh),
#                                        packs it with NVIDIA's CUDA 13
#                                        libraries and the tiny checkpoints
#                                        of both families into
#                                        target/gpu-check-models/ and runs it
#                                        when a GPU is present
#   target/gpu-check-models/run.sh       on a GPU machine with the driver
# ARGS: --device N, --seconds S (per timing, default 2), --out FILE (the
# report as markdown), --cpu-only. Exit status 0 = every GPU result within
# its bound of the CPU path, 1 = a comparison failed, 2 = no usable GPU.
# The model check prints, per checkpoint (Qwen2.5-VL, Qwen3-VL, its Cosmos3
# layout and FP8 copies), load time, prefill time, decode tok/s and the
# first logits' distance to the CPU build, on the CPU (f32) and the GPU
# (f32 and bf16); about a minute.
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

models() {
    local M="$ROOT/target/gpu-check-models" lib
    "$ROOT/pipelines/build-cuda.sh" --example model_gpu_check
    rm -rf "$M"
    mkdir -p "$M/lib" "$M/models/qwen" "$M/models/qwen3"
    cp "$ROOT/target/cuda-release/release/examples/model_gpu_check" "$M/"
    lib="${VSS_CUDA_TOOLKIT_DIR:-$ROOT/target/cuda}/cuda130/nvidia/cu13/lib"
    if [ -d "$lib" ]; then
        cp -L "$lib"/libcudart.so.13 "$lib"/libcublas.so.13 "$lib"/libcublasLt.so.13 \
            "$lib"/libcurand.so.10 "$lib"/libnvrtc.so.13 "$M/lib/" 2>/dev/null || true
        cp -L "$lib"/libnvrtc-builtins.so.13.* "$M/lib/" 2>/dev/null || true
    fi
    cp -r "$ROOT/tests/qwen/tiny" "$M/models/qwen/"
    for d in tiny tiny-cosmos3 tiny-fp8-channel; do cp -r "$ROOT/tests/qwen3/$d" "$M/models/qwen3/"; done
    cat > "$M/run.sh" <<'RUN'
#!/bin/sh
# In-process model check: needs the NVIDIA driver (libcuda.so.1); the CUDA
# runtime libraries are in ./lib.
here="$(cd "$(dirname "$0")" && pwd)"
LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "$here/model_gpu_check" "$@"
RUN
    chmod +x "$M/run.sh"
    echo "gpu-check: $M ($(du -sh "$M" | cut -f1))"
    if [ -e /dev/nvidiactl ] || command -v nvidia-smi >/dev/null 2>&1; then
        "$M/run.sh" "$@"
    else
        echo "gpu-check: no NVIDIA GPU here; copy $M to a GPU machine and run run.sh there"
    fi
}

case "${1:-}" in
    bundle) bundle ;;
    models) shift; models "$@" ;;
    run)
        shift
        [ -x "$B/run.sh" ] || bundle
        exec "$B/run.sh" "$@"
        ;;
    *) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
