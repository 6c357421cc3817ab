# SPDX-License-Identifier: MPL-2.0
# Test model for tests/custom.rs: generate() answers with a JSON report of the
# input it received (type, dtype, device, shape, per-frame mean colour), the
# prompt and the configs. Works with torch tensors and with numpy arrays.
import json
import os

import numpy as np


class Inference:
    def __init__(self):
        self.calls = 0
        # Files next to inference.py are reachable through __file__ (VSS's way).
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "label.txt")) as f:
            self.label = f.read().strip()

    def generate(self, prompt, input, configs):
        self.calls += 1
        info = {
            "kind": type(input).__module__.split(".")[0] + "." + type(input).__name__,
            "label": self.label,
            "prompt": prompt,
            "configs": configs,
            "calls": self.calls,
            "shape": list(input.shape),
            "dtype": str(input.dtype),
        }
        if hasattr(input, "dim"):
            assert input.dim() == 4  # VSS samples rely on this
            info["device"] = str(input.device)
            frames = [f.float().cpu().numpy() for f in input]  # iterating: HWC frames
        else:
            info["device"] = "cpu"
            frames = [np.asarray(f, dtype=np.float32) for f in input]
        info["frame_shape"] = list(frames[0].shape)
        info["means"] = [[round(float(c), 2) for c in f.reshape(-1, 3).mean(0)] for f in frames]
        info["min"] = float(min(f.min() for f in frames))
        info["max"] = float(max(f.max() for f in frames))
        return json.dumps(info)

    def get_embeddings(self, frames):
        # (T, C, H, W): the mean of each channel over the chunk, in 0..1.
        assert frames.shape[1] == 3, frames.shape
        if hasattr(frames, "float"):
            return frames.float().mean(dim=(0, 2, 3)) / 255.0
        return frames.astype(np.float32).mean(axis=(0, 2, 3)) / 255.0
