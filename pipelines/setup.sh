#!/usr/bin/env bash
# Usage: pipelines/setup.sh
#
# Prepares a fresh Debian 12 machine to build and run the vsssummarize
# GStreamer plugin, then builds it (target/release/libgstvsssummarize.so):
#   1. apt packages (GStreamer 1.22 dev files, plugins, tools, python3-gi),
#      skipped when dpkg-query shows they are all installed already;
#   2. Rust via rustup, only when `cargo` is not found;
#   3. `cargo build --release --locked` in the repository root.
# Runs apt as root, or through sudo when not root. Idempotent: a second run
# only re-checks and lets cargo find that nothing changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PACKAGES=(
    build-essential pkg-config curl ca-certificates
    libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-x
    python3 python3-gi python3-gst-1.0 gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0
)

log() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root for: $*  (run as root or install sudo)"
        exit 1
    fi
}

# --- 1. system packages -------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
    if [ "$status" != "installed" ]; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    log "all ${#PACKAGES[@]} apt packages already installed"
else
    log "installing: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PACKAGES[@]}"
fi

# --- 2. Rust toolchain ----------------------------------------------------------
# rustup downloads from static.rust-lang.org: on a machine that can reach only
# package registries this step cannot work, so cargo must already be installed
# there (rust-version in Cargo.toml says which version at least).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    log "cargo not found: installing Rust with rustup (needs https://static.rust-lang.org)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
log "using $(cargo --version)"

# --- 3. build -------------------------------------------------------------------
cd "$ROOT"
if [ ! -f "$ROOT/target/release/libgstvsssummarize.so" ]; then
    log "first build: about 6 minutes on 2 cores (2.5 without cosmos-reason1: cargo build --release --no-default-features)"
fi
log "cargo build --release --locked in $ROOT"
cargo build --release --locked
so="$ROOT/target/release/libgstvsssummarize.so"
if [ ! -f "$so" ]; then
    log "build finished but $so is missing"
    exit 1
fi
log "built $so"
log "use it with: export GST_PLUGIN_PATH=\"$ROOT/target/release\"; gst-inspect-1.0 vsssummarize"
