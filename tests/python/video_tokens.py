#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Visual tokens of one chunk as images and as video, counted by the real
Hugging Face processor (transformers' Qwen2_5_VLProcessor) of the tiny
Qwen2.5-VL checkpoint in tests/qwen/tiny.

Usage: video_tokens.py MODEL_DIR MANIFEST.json
Each case {"name", "path"} is an MP4 written by the element's encoder. Its
frames and times are read back with PyAV; the same frames go through the
processor once as N images and once as one video whose metadata (fps,
frames_indices) comes from the container, as a server reading the MP4
would. Prints one JSON line: per case, the prompt's image-pad and
video-pad token counts, the whole prompt's length, the grids and the fps
the processor was given.
"""
import json
import sys

import av
import numpy as np
from transformers import AutoProcessor


def frames_of(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        frames, times = [], []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            times.append(float(f.pts * s.time_base))
    return np.stack(frames), times


def main():
    proc = AutoProcessor.from_pretrained(sys.argv[1])
    tok = proc.tokenizer
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    video_pad = tok.convert_tokens_to_ids("<|video_pad|>")
    out = {}
    for case in json.load(open(sys.argv[2])):
        frames, times = frames_of(case["path"])
        n = len(frames)
        # fps as the container gives it (what vLLM's and transformers'
        # loaders report): frames over the stream's duration.
        with av.open(case["path"]) as c:
            s = c.streams.video[0]
            fps = float(n / (s.duration * s.time_base)) if s.duration else float(s.average_rate)
        img_msgs = [{"role": "user", "content": [{"type": "image"}] * n + [{"type": "text", "text": "Describe."}]}]
        vid_msgs = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}]
        img_text = proc.apply_chat_template(img_msgs, add_generation_prompt=True, tokenize=False)
        vid_text = proc.apply_chat_template(vid_msgs, add_generation_prompt=True, tokenize=False)
        a = proc(text=[img_text], images=list(frames), return_tensors="np")
        b = proc(
            text=[vid_text],
            videos=[frames],
            video_metadata=[{"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}],
            do_sample_frames=False,
            return_tensors="np",
        )
        ia, ib = a["input_ids"][0], b["input_ids"][0]
        out[case["name"]] = {
            "frames": n,
            "size": [int(frames.shape[2]), int(frames.shape[1])],
            "image_tokens": int((ia == image_pad).sum()),
            "video_tokens": int((ib == video_pad).sum()),
            "image_prompt_len": int(len(ia)),
            "video_prompt_len": int(len(ib)),
            "image_grid_thw": a["image_grid_thw"].tolist(),
            "video_grid_thw": b["video_grid_thw"].tolist(),
            "second_per_grid_ts": [float(x) for x in b.get("second_per_grid_ts", [])],
            "fps": fps,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
