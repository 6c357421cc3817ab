#!/usr/bin/env python3
# Usage: monitor-scene.py OUT.mp4 [--seconds 600] [--fps 5] [--size 960x540]
#                         [--events SPEC] [--noise 3.0] [--bitrate 2000000]
#
# The camera scene of pipelines/bench-monitor.sh and tests/monitor.rs: a real
# photograph (scikit-image's motorcycle_left.png, from the wheel's data
# folder; no download at run time) as a static background, with sensor-like
# noise (Gaussian, sigma --noise grey levels on luma, half that on chroma,
# new every frame), a slow light drift (+-3 % over 4 minutes), and objects
# (other real photographs: chelsea.png, the cat; astronaut.png) that enter,
# walk across and leave at scripted times. H.264-encoded by GStreamer
# (openh264enc, else x264enc) into OUT.mp4.
#
# --events: ';'-separated START-END:SIZE, SIZE 'small' (1/10 of the frame
# width) or 'large' (1/3); default the bench's 10-minute script. Prints the
# events as JSON (one line: [{"start":..,"end":..,"size":..}, ...]).
# Needs numpy and Pillow, and scikit-image installed without its
# dependencies (pipelines/setup-python.sh images).
import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

DEFAULT_EVENTS = "63-77:small;215-224:large;341-349:small;452-468:large"


def skimage_data(name):
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("monitor-scene: scikit-image is not installed (pipelines/setup-python.sh images)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", name)
    if not os.path.exists(path):
        sys.exit(f"monitor-scene: {path} is missing")
    return path


def to_i420(rgb):
    """uint8 HxWx3 -> (Y, U, V) float32 planes (BT.601 limited range)."""
    r, g, b = [rgb[..., i].astype(np.float32) for i in range(3)]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    sub = lambda p: p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2).mean(axis=(1, 3))
    return y, sub(u), sub(v)


def load(name, w, h):
    img = Image.open(skimage_data(name)).convert("RGB").resize((w, h), Image.BILINEAR)
    return to_i420(np.asarray(img))


def parse_events(spec, seconds):
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        times, size = part.split(":")
        a, b = (float(t) for t in times.split("-"))
        if not (0 <= a < b <= seconds) or size not in ("small", "large"):
            sys.exit(f"monitor-scene: bad event '{part}'")
        out.append({"start": a, "end": b, "size": size})
    return out


def encoder():
    for name, frag in (
        ("openh264enc", "openh264enc bitrate={bps} gop-size=50"),
        ("x264enc", "x264enc bitrate={kbps} key-int-max=50 speed-preset=veryfast"),
    ):
        if subprocess.run(["gst-inspect-1.0", name], capture_output=True).returncode == 0:
            return frag
    sys.exit("monitor-scene: no H.264 encoder (openh264enc from gstreamer1.0-plugins-bad, or x264enc)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--fps", type=int, default=5)
    ap.add_argument("--size", default="960x540")
    ap.add_argument("--events", default=DEFAULT_EVENTS)
    ap.add_argument("--noise", type=float, default=3.0)
    ap.add_argument("--bitrate", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    w, h = (int(x) // 2 * 2 for x in a.size.split("x"))
    events = parse_events(a.events, a.seconds)
    bg = load("motorcycle_left.png", w, h)
    objects = {}
    for size, name, frac in (("small", "chelsea.png", 10), ("large", "astronaut.png", 3)):
        ow = w // frac // 2 * 2
        src = Image.open(skimage_data(name))
        oh = int(ow * src.height / src.width) // 2 * 2
        objects[size] = load(name, ow, oh)
    frag = encoder().format(bps=a.bitrate, kbps=a.bitrate // 1000)
    gst = shutil.which("gst-launch-1.0") or sys.exit("monitor-scene: gst-launch-1.0 not found")
    cmd = [gst, "-q", "fdsrc", "fd=0", "blocksize=%d" % (w * h * 3 // 2), "!",
           "rawvideoparse", "format=i420", f"width={w}", f"height={h}", f"framerate={a.fps}/1", "!"]
    cmd += frag.split() + ["!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={a.out}"]
    enc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    rng = np.random.default_rng(a.seed)
    n = int(round(a.seconds * a.fps))
    for i in range(n):
        t = i / a.fps
        gain = 1.0 + 0.03 * np.sin(2 * np.pi * t / 240.0)
        planes = [p.copy() for p in bg]
        for e in events:
            if not (e["start"] <= t < e["end"]):
                continue
            oy, ou, ov = objects[e["size"]]
            oh, ow = oy.shape
            # Walks in from the left edge of the lower right quarter and
            # across, at a pace that crosses the quarter during the event.
            frac = (t - e["start"]) / (e["end"] - e["start"])
            x0 = int((w // 2) + frac * (w // 2 - ow)) // 2 * 2
            y0 = (h - oh - h // 20) // 2 * 2
            planes[0][y0:y0 + oh, x0:x0 + ow] = oy
            planes[1][y0 // 2:(y0 + oh) // 2, x0 // 2:(x0 + ow) // 2] = ou
            planes[2][y0 // 2:(y0 + oh) // 2, x0 // 2:(x0 + ow) // 2] = ov
        out = []
        for k, p in enumerate(planes):
            sigma = a.noise if k == 0 else a.noise / 2
            q = (p - 16) * gain + 16 if k == 0 else p
            q = q + rng.normal(0.0, sigma, p.shape).astype(np.float32)
            out.append(np.clip(q, 0, 255).astype(np.uint8).tobytes())
        enc.stdin.write(b"".join(out))
    enc.stdin.close()
    if enc.wait() != 0:
        sys.exit("monitor-scene: the encoder failed")
    print(json.dumps(events))


if __name__ == "__main__":
    main()
