#!/usr/bin/env bash
# Usage: pipelines/build-cuda.sh [cargo build args...]
#        pipelines/build-cuda.sh --check
#
# --check: compile-only (what CI runs, no GPU needed): `cargo clippy
# --all-targets --features cuda -D warnings` into $VSS_CUDA_TARGET_DIR
# (default target/cuda-check). CI points it and $VSS_CUDA_TOOLKIT_DIR at a
# cache outside the clone, so a warm run rebuilds only this crate.
#
# Builds the plugin with the `cuda` feature (candle's CUDA backend for
# backend=cosmos-reason1, device=cuda:N) into target/cuda-release/release/.
# Uses the system CUDA toolkit when `nvcc` is on PATH; otherwise fetches
# NVIDIA's CUDA 13.0 toolkit wheels from PyPI into target/cuda/ (~1.2 GB, no
# root needed) and links against a stub libcuda so that the build also works
# on a machine without a GPU or driver. ~8 min (debug) to ~15 min (release) on
# 2 cores; the CUDA kernels of candle dominate.
#
# The result links libcuda.so.1, libcudart.so.13, libcublas.so.13,
# libcurand.so.10 and libnvrtc: it only loads where the NVIDIA driver and
# those libraries are present (LD_LIBRARY_PATH=target/cuda/cuda130/nvidia/cu13/lib
# provides all but the driver). Machines without them use the default CPU build.
# CUDA_COMPUTE_CAP (default 90 = H100) selects the GPU generation.
set -euo pipefail
# cudarc's bindings follow CUDARC_CUDA_VERSION (e.g. 12040 for CUDA 12.4);
# with a system toolkit it is read from nvcc, otherwise it is the wheels'
# 13.0. (The default build uses 12.8 bindings with run-time loading.)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CHECK=0
if [ "${1:-}" = "--check" ]; then CHECK=1; shift; fi
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
TOOLKIT="${VSS_CUDA_TOOLKIT_DIR:-$ROOT/target/cuda}"
if ! command -v nvcc >/dev/null 2>&1; then
    C="$TOOLKIT/cuda130/nvidia/cu13"
    if [ ! -x "$C/bin/nvcc" ]; then
        "$ROOT/pipelines/setup-python.sh" numpy
        "$ROOT/target/py/numpy/bin/pip" install -q --no-deps --target "$TOOLKIT/cuda130" \
            nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
            nvidia-cublas==13.1.1.3 nvidia-curand==10.4.0.35
    fi
    (cd "$C/lib" && for l in cudart cublas cublasLt curand nvrtc; do
        f=$(ls "lib$l.so."* | grep -v -e alt -e builtins | head -1); ln -sf "$f" "lib$l.so"; done)
    if [ ! -f "$C/lib/stubs/libcuda.so" ]; then
        # A link-time stand-in for the driver: every cu* entry point cudarc
        # names, each answering CUDA_ERROR_NO_DEVICE.
        mkdir -p "$C/lib/stubs"
        cargo fetch --locked >/dev/null
        SYS=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys | head -1)
        grep -ohE '\bcu[A-Z][A-Za-z0-9_]*\b' "$SYS/mod.rs" | sort -u \
            | awk '{print "int " $1 "(void){return 100;}"}' > "$C/lib/stubs/stub.c"
        gcc -shared -fPIC -o "$C/lib/stubs/libcuda.so.1" "$C/lib/stubs/stub.c" -Wl,-soname,libcuda.so.1
        ln -sf libcuda.so.1 "$C/lib/stubs/libcuda.so"
    fi
    export CUDA_PATH="$C" CUDA_HOME="$C" PATH="$C/bin:$PATH" CUDARC_CUDA_VERSION=13000
    export LIBRARY_PATH="$C/lib:$C/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
elif [ -z "${CUDARC_CUDA_VERSION:-}" ]; then
    v=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
    export CUDARC_CUDA_VERSION="$(printf '%d0%d0' $v)"
fi
if [ "$CHECK" = 1 ]; then
    CARGO_TARGET_DIR="${VSS_CUDA_TARGET_DIR:-$ROOT/target/cuda-check}" \
        cargo clippy --locked --all-targets --features cuda -- -D warnings
    echo "checked: the cuda feature compiles (clippy -D warnings, all targets)"
    exit 0
fi
CARGO_TARGET_DIR="$ROOT/target/cuda-release" cargo build --locked --release --features cuda "$@"
echo "built: $ROOT/target/cuda-release/release/libgstvsssummarize.so"
