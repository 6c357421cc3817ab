#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Decodes the MP4s tests/video_decoders.rs wrote with the element's encoder
(src/mp4.rs) using PyAV and OpenCV (opencv-python-headless, vLLM's default
video loader) and reports what each decoder sees, as one JSON line.

Usage: check_mp4.py MANIFEST.json
The manifest lists cases: {"name", "path"}. For each case the report has,
per decoder: the frame count, each frame's size, mean luma (order check)
and time in seconds. PyAV times come from each frame's pts; OpenCV gives
CAP_PROP_FPS, CAP_PROP_FRAME_COUNT and each frame's CAP_PROP_POS_MSEC, plus
index / fps, the time vLLM's OpenCV loader derives.
"""
import json
import sys

import av
import cv2
import numpy as np


def with_pyav(path):
    out = {"times": [], "sizes": [], "luma": []}
    with av.open(path) as c:
        s = c.streams.video[0]
        out["avg_rate"] = float(s.average_rate) if s.average_rate else None
        out["declared_frames"] = s.frames
        for f in c.decode(s):
            out["times"].append(float(f.pts * s.time_base))
            out["sizes"].append([f.width, f.height])
            out["luma"].append(float(np.asarray(f.to_ndarray(format="gray")).mean()))
    out["count"] = len(out["times"])
    return out


def with_opencv(path):
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        return {"error": "cannot open"}
    fps = cap.get(cv2.CAP_PROP_FPS)
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    out = {"fps": fps, "declared_frames": declared, "times": [], "sizes": [], "luma": []}
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        # The time of the frame just read.
        out["times"].append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
        out["sizes"].append([frame.shape[1], frame.shape[0]])
        out["luma"].append(float(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).mean()))
    cap.release()
    out["count"] = len(out["luma"])
    out["index_times"] = [i / fps for i in range(out["count"])] if fps > 0 else []
    return out


def main():
    cases = json.load(open(sys.argv[1]))
    report = {
        "versions": {"av": av.__version__, "cv2": cv2.__version__},
        "cases": {c["name"]: {"pyav": with_pyav(c["path"]), "opencv": with_opencv(c["path"])} for c in cases},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
