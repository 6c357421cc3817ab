#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Reference outputs of Hugging Face's Qwen2.5-VL video preprocessing for
tests/qwen_preprocess.rs.

Frames are a deterministic integer pattern that the Rust test regenerates
(see `pattern` in both files), so only the outputs are stored: the resized
uint8 frames (every 6th row) and pixel_values_videos (every 17th row), plus
the grid and the resized size, in tests/qwen/preprocess_fixture.safetensors.

Run with a Python that has torch, torchvision and transformers 5.x:
  target/py/torch/bin/pip install transformers torchvision
  target/py/torch/bin/python tests/qwen/make_preprocess_fixture.py
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from torchvision.transforms.v2 import functional as tvF
from transformers.models.qwen2_vl.video_processing_qwen2_vl import (
    Qwen2VLVideoProcessor,
    smart_resize,
)

# name: (frames, height, width)
CASES = {
    "odd_upscale": (5, 100, 150),
    "downscale_720p": (2, 720, 1280),
    "no_resize": (2, 280, 392),
    "tall": (3, 300, 120),
}
RESIZED_ROW_STRIDE = 6
PV_ROW_STRIDE = 17


def pattern(t, h, w):
    """(h, w, 3) uint8 frame t: gradients plus hashed noise (same in Rust)."""
    y, x = np.meshgrid(np.arange(h, dtype=np.int64), np.arange(w, dtype=np.int64), indexing="ij")
    out = np.empty((h, w, 3), dtype=np.uint8)
    for c in range(3):
        if c == 0:
            smooth = x * 255 // max(w - 1, 1)
        elif c == 1:
            smooth = y * 255 // max(h - 1, 1)
        else:
            smooth = (x + y + 40 * t) % 256
        hsh = ((x * 73856093) ^ (y * 19349663) ^ (t * 83492791) ^ (c * 2654435761)) & 0xFFFFFFFF
        out[..., c] = (smooth * 7 // 8 + hsh % 32).astype(np.uint8)
    return out


def main(out_path):
    torch.manual_seed(0)
    vp = Qwen2VLVideoProcessor()
    tensors = {}
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}
    for name, (n, h, w) in CASES.items():
        frames = np.stack([pattern(t, h, w) for t in range(n)])  # (T, H, W, 3)
        vid = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W) uint8
        out = vp(
            videos=[vid],
            return_tensors="pt",
            cap_pixels_per_frame=True,
            do_sample_frames=False,
        )
        pv = out["pixel_values_videos"].float()
        grid = out["video_grid_thw"][0].tolist()
        # The size the processor resized to, and the resized uint8 frames.
        max_px = max(
            min(vp.size["longest_edge"], int(vp.max_video_tokens * 28 * 28 * 0.9) * 2 // n),
            int(vp.size["shortest_edge"] * 1.05),
        )
        rh, rw = smart_resize(h, w, 28, vp.size["shortest_edge"], max_px)
        if (rh, rw) == (h, w):
            resized = vid
        else:
            resized = tvF.resize(vid, [rh, rw], interpolation=tvF.InterpolationMode.BICUBIC, antialias=True)
        assert grid == [(n + 1) // 2, rh // 14, rw // 14], (grid, rh, rw)
        tensors[f"{name}.resized"] = resized.permute(0, 2, 3, 1)[:, ::RESIZED_ROW_STRIDE].contiguous()
        tensors[f"{name}.pixel_values"] = pv[::PV_ROW_STRIDE].contiguous()
        tensors[f"{name}.grid"] = torch.tensor(grid, dtype=torch.int64)
        tensors[f"{name}.shape"] = torch.tensor([n, h, w, rh, rw, pv.shape[0], pv.shape[1]], dtype=torch.int64)
        meta["cases"][name] = {"frames": n, "size": [h, w], "resized": [rh, rw], "grid": grid}
        print(name, meta["cases"][name], "pixel_values", tuple(pv.shape), file=sys.stderr)
    save_file(tensors, out_path, metadata={"info": json.dumps(meta)})
    print("wrote", out_path, os.path.getsize(out_path), "bytes", file=sys.stderr)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "preprocess_fixture.safetensors"))
