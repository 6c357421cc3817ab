#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Tiny random-weight Qwen2.5-VL checkpoint plus reference tensors for the
parity tests of the Rust (candle) reimplementation.

Writes
  tests/qwen/tiny/                  the checkpoint, as a Hugging Face model dir:
    config.json                     v4 *flat* layout, like the hub checkpoints
    config.v5.json                  the nested layout transformers 5 writes
    generation_config.json
    model.safetensors               f32, hub weight names (`model.*`, `visual.*`)
    tokenizer.json, tokenizer_config.json, chat_template.json
    preprocessor_config.json        hub-style processor settings (small pixel floor)
    processor_config.json, chat_template.jinja   what transformers 5 saves itself
  tests/qwen/tiny_fixture.safetensors   reference tensors per case

Frames are `pattern(t, h, w)` from make_preprocess_fixture.py (imported, so
the Rust side regenerates the same frames). Everything is deterministic
(torch.manual_seed(0), CPU, f32, eager attention).

Rules the Rust code must follow (also stored in the fixture metadata):
  * fps of a clip = (n - 1) / (t_last - t_first) from the frame timestamps,
    second_per_grid = temporal_patch_size / fps (a float, never truncated).
    The processor gets video_metadata {fps, total_num_frames: n,
    frames_indices: 0..n-1}, so its sampled_fps is that same fps.
  * position ids (3, L) follow the original get_rope_index (transformers
    <= 4.57 / vLLM), with a float second_per_grid: cur = 0; a text run takes
    cur, cur+1, ... on all three axes; a video run with llm grid
    (T, H/2, W/2) takes (cur + floor(t * second_per_grid * tokens_per_second),
    cur + h, cur + w); after every run cur = max(all positions so far) + 1.
    rope_delta = max + 1 - L; decode step positions are cache_len + rope_delta
    on all three axes. transformers 5.24's own get_rope_index advances cur
    after a vision run by max(H, W)/2 instead; it is saved as position_ids_v5
    for comparison only.

Cases: odd_3f, even_4f_resize, tall_2f, wide_many_windows, plus long_8f_small, the
only one where the two rope rules differ (see CASES). Checks run inside: weights and
flat config reload to the same model, saved tokenizer/processor reproduce the inputs,
logits finite and position-dependent, greedy tokens not constant, KV-cached decode
equals an uncached forward.

Run (about 8 s on 2 cores):
  target/py/torch/bin/python tests/qwen/make_tiny_model.py
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_preprocess_fixture import pattern  # noqa: E402  (same frames as the Rust test)

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The official Qwen2.5-VL chat_template.json text.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Pixel floor/ceiling of the tiny video processor: 56*56 keeps every case
# below at its smart_resize size (no upscaling), 128*28*28 is above them all.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 128 * 28 * 28

# name: (height, width, frame timestamps in seconds)
CASES = {
    "odd_3f": (112, 168, [0.0, 0.5, 1.0]),
    "even_4f_resize": (100, 150, [0.0, 0.25, 0.5, 0.75]),
    "tall_2f": (224, 112, [0.0, 1.0]),
    "wide_many_windows": (112, 448, [0.0, 0.5]),
    # Extra case: 4 temporal groups at a fractional fps (10/3, second_per_grid 0.6, t index
    # floor(t * 1.2) = 0,1,2,3) on a 2x2 llm grid, so the temporal extent (4) exceeds
    # max(H, W)/2 (2) and the v4 and transformers-5.24 rope rules place the text after the
    # video differently (the four cases above cannot tell the rules apart).
    "long_8f_small": (56, 56, [0.0, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.1]),
}
PROMPT = "Describe the video."
NEW_TOKENS = 32
INIT_STD = 0.2
NORM_STD = 0.1

FPS_RULE = (
    "fps = (n-1)/(t_last-t_first) from the frame timestamps (2 frames: 1/(t1-t0)); "
    "second_per_grid = temporal_patch_size/fps as a float; the processor is given "
    "video_metadata {fps, total_num_frames=n, frames_indices=0..n-1} so sampled_fps == fps"
)
ROPE_RULE = (
    "original get_rope_index (transformers<=4.57/vLLM) with float second_per_grid: cur=0; "
    "text run -> cur+i on t,h,w; video run with llm grid (T,H/2,W/2) -> "
    "(cur+floor(t*second_per_grid*tokens_per_second), cur+h, cur+w); after each run "
    "cur=max(all positions so far)+1; rope_delta=max+1-L; decode position = cache_len+rope_delta "
    "on all three axes"
)


def bytes_to_unicode():
    """GPT-2's byte -> printable unicode char map (the ByteLevel alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_tokenizer():
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}  # token id == byte value
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )
    fast.padding_side = "left"
    ids = {s: fast.convert_tokens_to_ids(s) for s in SPECIALS}
    assert list(ids.values()) == list(range(256, 256 + len(SPECIALS))), ids
    return fast, ids


def build_config(ids):
    text = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        use_sliding_window=False,
        max_window_layers=2,
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        temporal_patch_size=2,
        spatial_merge_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
        in_channels=3,
        hidden_act="silu",
    )
    cfg = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return cfg, text, vision


def flat_v4_config(text, vision, ids):
    """config.json as the hub checkpoints (written by transformers 4.x) have it."""
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "hidden_act": text["hidden_act"],
        "hidden_size": text["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": text["intermediate_size"],
        "max_position_embeddings": text["max_position_embeddings"],
        "max_window_layers": text["max_window_layers"],
        "model_type": "qwen2_5_vl",
        "num_attention_heads": text["num_attention_heads"],
        "num_hidden_layers": text["num_hidden_layers"],
        "num_key_value_heads": text["num_key_value_heads"],
        "rms_norm_eps": text["rms_norm_eps"],
        "rope_theta": text["rope_parameters"]["rope_theta"],
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.49.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": vision["depth"],
            "hidden_act": vision["hidden_act"],
            "hidden_size": vision["hidden_size"],
            "intermediate_size": vision["intermediate_size"],
            "num_heads": vision["num_heads"],
            "in_chans": vision["in_channels"],
            "out_hidden_size": vision["out_hidden_size"],
            "patch_size": vision["patch_size"],
            "spatial_merge_size": vision["spatial_merge_size"],
            "spatial_patch_size": vision["patch_size"],
            "window_size": vision["window_size"],
            "fullatt_block_indexes": vision["fullatt_block_indexes"],
            "tokens_per_second": vision["tokens_per_second"],
            "temporal_patch_size": vision["temporal_patch_size"],
        },
        "rope_scaling": {"type": "mrope", "mrope_section": text["rope_parameters"]["mrope_section"]},
        "vocab_size": text["vocab_size"],
    }


def reinit_(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name:  # RMSNorm weights
                p.copy_(1.0 + NORM_STD * torch.randn_like(p))
            else:
                p.copy_(INIT_STD * torch.randn_like(p))


def live_name(k, sd):
    """Saved (hub-layout) weight name -> the live module's state_dict name."""
    if k in sd:
        return k
    if k.startswith("visual."):
        return "model." + k
    if k.startswith("model."):
        return "model.language_model." + k[len("model."):]
    raise KeyError(k)


def fps_from_times(times):
    n = len(times)
    span = times[-1] - times[0]
    if n < 2 or span <= 0:
        raise ValueError("need >= 2 increasing timestamps")
    return (n - 1) / span


def rope_index_v4(input_ids, grid_thw, second_per_grid, video_token_id, merge, tokens_per_second):
    """Original (transformers <= 4.57 / vLLM) get_rope_index for one video, float time step."""
    ids = list(input_ids)
    L = len(ids)
    pos = np.zeros((3, L), dtype=np.int64)
    cur = 0
    i = 0
    while i < L:
        if ids[i] == video_token_id:
            t, h, w = (int(v) for v in grid_thw)
            gt, gh, gw = t, h // merge, w // merge
            n = gt * gh * gw
            assert ids[i : i + n] == [video_token_id] * n, "video run shorter than grid"
            k = i
            for tt in range(gt):
                tpos = math.floor(tt * second_per_grid * tokens_per_second)
                for hh in range(gh):
                    for ww in range(gw):
                        pos[:, k] = (cur + tpos, cur + hh, cur + ww)
                        k += 1
            i += n
            cur = int(pos[:, :i].max()) + 1
        else:
            j = i
            while j < L and ids[j] != video_token_id:
                j += 1
            pos[:, i:j] = cur + np.arange(j - i)
            i = j
            cur = int(pos[:, :i].max()) + 1
    delta = int(pos.max()) + 1 - L
    return pos, delta


def write_processor_files(out_dir, tokenizer):
    vp = Qwen2VLVideoProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
        cap_pixels_per_frame=True,
        do_sample_frames=False,
    )
    ip = Qwen2VLImageProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, chat_template=CHAT_TEMPLATE)
    proc.save_pretrained(out_dir)
    # transformers 5 puts everything into processor_config.json; the hub checkpoints have a
    # preprocessor_config.json (image processor) and chat_template.json. Write those too.
    pp = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
    }
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(pp, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "chat_template.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE}, f, indent=2)
        f.write("\n")
    return proc


def main():
    t0 = time.time()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out_dir = os.path.join(HERE, "tiny")
    fixture_path = os.path.join(HERE, "tiny_fixture.safetensors")
    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):  # start clean: save_pretrained leaves stale files otherwise
        os.remove(os.path.join(out_dir, f))

    # ---- tokenizer, config, weights
    tokenizer, ids = build_tokenizer()
    im_end, eot = ids["<|im_end|>"], ids["<|endoftext|>"]
    cfg, text, vision = build_config(ids)
    model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    reinit_(model)
    model.eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=eot,
        pad_token_id=eot,
        eos_token_id=[im_end, eot],
        do_sample=True,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
        repetition_penalty=1.05,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    os.replace(os.path.join(out_dir, "config.json"), os.path.join(out_dir, "config.v5.json"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(flat_v4_config(text, vision, ids), f, indent=2)
        f.write("\n")
    proc = write_processor_files(out_dir, tokenizer)

    # The saved weights are exactly the live ones, and the flat config reloads to the same model.
    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as st:
        weight_keys = sorted(st.keys())
        sd = model.state_dict()
        assert len(weight_keys) == len(sd), (len(weight_keys), len(sd))
        for k in weight_keys:
            assert torch.equal(st.get_tensor(k), sd[live_name(k, sd)]), k
    reloaded = Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32)
    reloaded.eval()
    rc = reloaded.config
    assert rc.text_config.hidden_size == 64 and rc.vision_config.depth == 3
    assert rc.text_config.rope_parameters["mrope_section"] == [2, 3, 3], rc.text_config.rope_parameters
    assert rc.text_config.rope_parameters["rope_theta"] == 1e6
    assert rc.vision_config.fullatt_block_indexes == [1] and rc.vision_config.tokens_per_second == 2
    assert rc.video_token_id == ids["<|video_pad|>"]
    for (k, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), k

    tps = cfg.vision_config.tokens_per_second
    merge = cfg.vision_config.spatial_merge_size
    tpatch = cfg.vision_config.temporal_patch_size
    video_token_id = ids["<|video_pad|>"]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    prompt = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expect = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>Describe the video.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert prompt == expect, repr(prompt)

    # Reloading the saved tokenizer / processor gives the same prompt ids.
    raw = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    enc = raw.encode(prompt, add_special_tokens=False).ids
    assert enc == tokenizer(prompt)["input_ids"], "tokenizer.json round trip"
    assert raw.decode(enc, skip_special_tokens=False) == prompt
    assert enc[: enc.index(ids["<|video_pad|>"])][-1] == ids["<|vision_start|>"]
    proc2 = transformers.AutoProcessor.from_pretrained(out_dir)

    tensors = {}
    meta_cases = {}
    for name, (h, w, times) in CASES.items():
        n = len(times)
        frames = np.stack([pattern(t, h, w) for t in range(n)])  # (T, H, W, 3) uint8
        vid = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)
        fps = fps_from_times(times)
        spg_expected = tpatch / fps
        inputs = proc(
            text=[prompt],
            videos=[vid],
            return_tensors="pt",
            videos_kwargs={
                "video_metadata": [{"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}],
                "cap_pixels_per_frame": True,
                "do_sample_frames": False,
            },
        )
        input_ids = inputs["input_ids"][0]
        inputs2 = proc2(
            text=[prompt],
            videos=[vid],
            return_tensors="pt",
            videos_kwargs={"video_metadata": [{"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}]},
        )
        for k in ("input_ids", "pixel_values_videos", "video_grid_thw"):
            assert torch.equal(inputs[k], inputs2[k]), f"reloaded processor differs on {k}"
        pv = inputs["pixel_values_videos"].float()
        grid = inputs["video_grid_thw"]
        spg = float(inputs["second_per_grid_ts"][0])
        assert abs(spg - spg_expected) < 1e-6, (spg, spg_expected)  # the processor returns f32
        L = input_ids.shape[0]
        n_vid = int((input_ids == video_token_id).sum())
        assert n_vid == int(grid[0].prod()) // (merge * merge)

        pos, delta = rope_index_v4(input_ids.tolist(), grid[0].tolist(), spg_expected, video_token_id, merge, tps)
        pos_t = torch.from_numpy(pos)
        # transformers 5.24's rule (text after the video starts at cur + max(H, W)/2).
        pos_v5, delta_v5 = model.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            video_grid_thw=grid,
            second_per_grid_ts=inputs["second_per_grid_ts"],
        )
        pos_v5 = pos_v5[:, 0]
        vmask = input_ids == video_token_id

        with torch.no_grad():
            vis = model.model.visual(pv, grid_thw=grid)
            vision_embeds = vis.pooler_output.float()
            vis_r = reloaded.model.visual(pv, grid_thw=grid).pooler_output
            assert torch.equal(vision_embeds, vis_r)
            out = model(
                input_ids=inputs["input_ids"],
                pixel_values_videos=pv,
                video_grid_thw=grid,
                position_ids=pos_t[:, None, :],
                use_cache=True,
            )
            logits = out.logits[0].float()
            cache = out.cache
            # greedy decode with explicit positions cache_len + delta on all axes
            tokens = []
            nxt = int(logits[-1].argmax())
            for step in range(NEW_TOKENS):
                tokens.append(nxt)
                if step == NEW_TOKENS - 1:
                    break
                cache_len = L + step
                p = torch.full((3, 1, 1), cache_len + delta, dtype=torch.long)
                o = model(input_ids=torch.tensor([[nxt]]), position_ids=p, cache=cache, use_cache=True)
                cache = o.cache
                nxt = int(o.logits[0, -1].argmax())
            # KV-cached decode == one uncached forward over prompt + generated tokens
            full_ids = torch.cat([inputs["input_ids"], torch.tensor([tokens[:-1]])], dim=1)
            dec_pos = torch.arange(L, L + NEW_TOKENS - 1) + delta
            full_pos = torch.cat([pos_t, dec_pos.expand(3, -1)], dim=1)[:, None, :]
            full = model(input_ids=full_ids, pixel_values_videos=pv, video_grid_thw=grid, position_ids=full_pos)
            assert full.logits[0, L - 1 :].argmax(-1).tolist() == tokens, "cached vs uncached decode"
            assert torch.allclose(full.logits[0, :L], logits, atol=1e-5)
            # the same prompt through the flat-config reload gives the same logits
            out_r = reloaded(
                input_ids=inputs["input_ids"], pixel_values_videos=pv, video_grid_thw=grid, position_ids=pos_t[:, None, :]
            )
            assert torch.equal(out_r.logits[0], out.logits[0])
            # logits with 5.24's own positions, only to report the difference
            out_v5 = model(input_ids=inputs["input_ids"], pixel_values_videos=pv, video_grid_thw=grid, position_ids=pos_v5[:, None, :])
            v5_diff = float((out_v5.logits[0] - logits).abs().max())

        # sanity checks
        assert torch.isfinite(logits).all() and torch.isfinite(vision_embeds).all()
        assert float(logits.std(dim=0).mean()) > 1e-2, "logits do not vary across positions"
        assert len(set(tokens)) > 1, f"greedy tokens all identical: {tokens}"
        eos_pos = [i for i, t in enumerate(tokens) if t in (im_end, eot)]

        p = f"{name}."
        tensors[p + "input_ids"] = input_ids.to(torch.int64).contiguous()
        tensors[p + "pixel_values_videos"] = pv.contiguous()
        tensors[p + "video_grid_thw"] = grid.to(torch.int64).contiguous()
        tensors[p + "second_per_grid"] = torch.tensor([spg_expected], dtype=torch.float32)
        tensors[p + "frame_times"] = torch.tensor(times, dtype=torch.float64)
        tensors[p + "frames_shape"] = torch.tensor([n, h, w], dtype=torch.int64)
        tensors[p + "position_ids_v4"] = pos_t.contiguous()
        tensors[p + "rope_delta"] = torch.tensor([delta], dtype=torch.int64)
        tensors[p + "position_ids_v5"] = pos_v5.to(torch.int64).contiguous()
        tensors[p + "rope_delta_v5"] = delta_v5.reshape(1).to(torch.int64)
        tensors[p + "vision_embeds"] = vision_embeds.contiguous()
        tensors[p + "logits"] = logits.contiguous()
        tensors[p + "greedy_tokens"] = torch.tensor(tokens, dtype=torch.int64)
        tensors[p + "greedy_eos_index"] = torch.tensor([eos_pos[0] if eos_pos else -1], dtype=torch.int64)

        text_after = int(pos[0, int(vmask.nonzero().max()) + 1])
        text_after_v5 = int(pos_v5[0, int(vmask.nonzero().max()) + 1])
        meta_cases[name] = {
            "frames": n,
            "size": [h, w],
            "frame_times": times,
            "fps": fps,
            "second_per_grid": spg_expected,
            "grid_thw": grid[0].tolist(),
            "L": L,
            "video_tokens": n_vid,
            "rope_delta": delta,
            "rope_delta_v5": int(delta_v5),
            "text_after_video_pos_v4": text_after,
            "text_after_video_pos_v5": text_after_v5,
            "max_abs_logit_diff_v5_positions": v5_diff,
            "greedy_eos_positions": eos_pos,
        }
        print(
            f"{name}: L={L} grid={grid[0].tolist()} video_tokens={n_vid} spg={spg_expected} delta={delta} "
            f"(v5 {int(delta_v5)}) text-after-video pos v4={text_after} v5={text_after_v5} "
            f"v5-pos logit diff={v5_diff:.3g} greedy[:8]={tokens[:8]} eos_at={eos_pos}",
            file=sys.stderr,
        )

    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "fps_rule": FPS_RULE,
        "rope_rule": ROPE_RULE,
        "greedy": f"{NEW_TOKENS} tokens, argmax, no repetition penalty, no eos stop, KV cache, "
        "step positions cache_len+rope_delta on all axes; greedy_eos_index = first index of "
        "<|im_end|>/<|endoftext|> in greedy_tokens or -1",
        "frames": "pattern(t, h, w) of tests/qwen/make_preprocess_fixture.py, t = 0..n-1",
        "prompt": prompt,
        "processor": {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS, "cap_pixels_per_frame": True},
        "special_ids": ids,
        "cases": meta_cases,
    }
    save_file(tensors, fixture_path, metadata={"info": json.dumps(meta)})

    total = 0
    for f in sorted(os.listdir(out_dir)):
        sz = os.path.getsize(os.path.join(out_dir, f))
        total += sz
        print(f"  tiny/{f}: {sz} bytes", file=sys.stderr)
    print(f"  tiny/ total {total} bytes", file=sys.stderr)
    print(f"wrote {fixture_path}: {os.path.getsize(fixture_path)} bytes in {time.time() - t0:.1f} s", file=sys.stderr)
    print("model.safetensors keys (first 6):", weight_keys[:3], weight_keys[-3:], file=sys.stderr)


if __name__ == "__main__":
    main()
