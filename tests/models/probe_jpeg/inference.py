# SPDX-License-Identifier: MPL-2.0
# Test model for tests/custom.rs (JPEG mode, no get_embeddings): reports the
# type of each input element and the size and mean colour of each decoded JPEG.
import io
import json

import numpy as np
from PIL import Image


class Inference:
    def generate(self, prompt, input, configs):
        out = {"kind": type(input).__name__, "n": len(input), "frames": []}
        for a in input:
            img = Image.open(io.BytesIO(a.tobytes()))
            px = np.asarray(img.convert("RGB"), dtype=np.float32)
            out["frames"].append({
                "type": type(a).__module__ + "." + type(a).__name__,
                "dtype": str(a.dtype),
                "ndim": a.ndim,
                "soi": a[:2].tobytes().hex(),
                "format": img.format,
                "size": list(img.size),
                "mean": [round(float(c), 1) for c in px.reshape(-1, 3).mean(0)],
            })
        return json.dumps(out)
