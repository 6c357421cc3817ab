#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""The Hugging Face side of the cosmos-reason1 benchmark (pipelines/bench-cosmos.sh).

Usage: cosmos_hf.py OUT_DIR [qwen2_5|qwen3]   (default qwen2_5)

qwen2_5: builds a mid-sized random-weight Qwen2.5-VL (text: hidden 512,
8 layers; vision: hidden 256, depth 4) in OUT_DIR with the tiny-model
generator's tokenizer and template (tests/qwen/make_tiny_model.py).
qwen3: a Qwen3-VL of comparable cost (text: hidden 512, 8 layers, 8 heads /
4 kv heads, head_dim 64, interleaved M-RoPE [12, 10, 10]; vision: hidden
256, depth 4, patch 16, DeepStack after blocks 1 and 2, a 48x48 learned
position grid) with tests/qwen3/make_tiny_model.py's tokenizer, template and
prompt rule (per-pair `<t seconds>` tags; the input_ids are built here as
that generator and src/backend/cosmos/qwen3/prompt.rs build them).
Both: a fixed input (8 frames of 224x224, the real video processor), and
transformers (eager attention, f32, CPU) timed: prefill (vision tower + the
whole prompt) and greedy decode of NEW tokens with the KV cache. Writes
OUT_DIR/bench_input.safetensors (the exact input, and transformers' logits
of the prefill's last token for the parity check) and OUT_DIR/hf_timing.json.
"""
import json
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "qwen"))
import make_tiny_model as tiny  # noqa: E402
from make_preprocess_fixture import pattern  # noqa: E402


def load_qwen3_generator():
    """tests/qwen3/make_tiny_model.py under a name of its own (the Qwen2.5
    generator is `make_tiny_model` too)."""
    import importlib.util
    path = os.path.join(HERE, "..", "tests", "qwen3", "make_tiny_model.py")
    spec = importlib.util.spec_from_file_location("make_tiny_model_qwen3", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

NEW = int(os.environ.get("NEW_TOKENS", "32"))
RUNS = int(os.environ.get("RUNS", "3"))


LINEAR = re.compile(r"(^|\.)layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


def write_fp8_copy(src, dst):
    """The same checkpoint as compressed-tensors FP8 (per-channel scales, the
    FP8-Dynamic layout): the decoder's linear weights as float8_e4m3fn, the
    vision tower, embeddings, norms and lm_head as they are. For the load-time
    figure (seconds per GB) of the candle side."""
    os.makedirs(dst, exist_ok=True)
    sd = load_file(os.path.join(src, "model.safetensors"))
    out = {}
    for k, v in sd.items():
        if LINEAR.search(k) and "visual" not in k:
            scale = (v.abs().amax(dim=1, keepdim=True) / 448.0).clamp(min=1e-12)
            out[k] = (v / scale).to(torch.float8_e4m3fn)
            out[k + "_scale"] = scale.to(v.dtype)
        else:
            out[k] = v
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(src):
        if f.endswith(".json") and f not in ("config.json", "hf_timing.json") or f.endswith(".jinja"):
            shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg["quantization_config"] = {
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True}}},
        "ignore": ["lm_head", "re:visual.*", "re:model.visual.*"]}
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def main(out_dir):
    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)
    tokenizer, ids = tiny.build_tokenizer()
    text = dict(vocab_size=512, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=4, hidden_act="silu", rms_norm_eps=1e-6,
                max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
                use_sliding_window=False, max_window_layers=8, tie_word_embeddings=False)
    vision = dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=512,
                  patch_size=14, temporal_patch_size=2, spatial_merge_size=2, window_size=112,
                  fullatt_block_indexes=[3], tokens_per_second=2, in_channels=3, hidden_act="silu")
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision,
                           image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                           tie_word_embeddings=False)
    model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_((1.0 + 0.1 * torch.randn_like(p)) if ("norm" in name or "ln_q" in name) else 0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(tiny.flat_v4_config(text, vision, ids), f, indent=2)
    proc = tiny.write_processor_files(out_dir, tokenizer)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"do_sample": False, "eos_token_id": [], "repetition_penalty": 1.0}, f)

    write_fp8_copy(out_dir, out_dir + "-fp8")

    n, h, w = 8, 224, 224
    times = [i * 0.5 for i in range(n)]
    vid = torch.from_numpy(np.stack([pattern(t, h, w) for t in range(n)])).permute(0, 3, 1, 2).contiguous()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the video."}]}]
    prompt = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    fps = (n - 1) / (times[-1] - times[0])
    inp = proc(text=[prompt], videos=[vid], return_tensors="pt",
               videos_kwargs={"video_metadata": [{"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}],
                              "cap_pixels_per_frame": True, "do_sample_frames": False})
    grid = inp["video_grid_thw"]
    spg = float(inp["second_per_grid_ts"][0]) if "second_per_grid_ts" in inp else 2.0 / fps
    input_ids = inp["input_ids"]
    pos, delta = tiny.rope_index_v4(input_ids[0].tolist(), grid[0].tolist(), spg, ids["<|video_pad|>"], 2, 2)
    pos = torch.tensor(pos, dtype=torch.long)[:, None, :]

    time_and_save(model, out_dir, input_ids, inp["pixel_values_videos"], grid, pos, delta, {})


def time_and_save(model, out_dir, input_ids, pixel_values, grid, pos, delta, extra):
    """Times prefill and greedy decode (warm-up, then RUNS runs, medians) and
    writes the input, transformers' first logits and the timing."""
    def run():
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model(input_ids=input_ids, pixel_values_videos=pixel_values,
                        video_grid_thw=grid, position_ids=pos, use_cache=True,
                        logits_to_keep=1, **extra)
        t1 = time.perf_counter()
        cache = getattr(out, "past_key_values", None) or getattr(out, "cache", None)
        first = out.logits[0, -1].float().clone()
        tok = out.logits[0, -1].argmax()
        L = input_ids.shape[1]
        with torch.no_grad():
            for i in range(NEW):
                p = torch.full((3, 1, 1), L + i + delta, dtype=torch.long)
                o = model(input_ids=tok.view(1, 1), past_key_values=cache, position_ids=p, use_cache=True,
                          logits_to_keep=1)
                cache = getattr(o, "past_key_values", None) or getattr(o, "cache", None)
                tok = o.logits[0, -1].argmax()
        t2 = time.perf_counter()
        return t1 - t0, NEW / (t2 - t1), first

    first = run()[2]  # warm-up
    res = [run() for _ in range(RUNS)]
    prefill = sorted(r[0] for r in res)[len(res) // 2]
    tps = sorted(r[1] for r in res)[len(res) // 2]
    save_file({"input_ids": input_ids[0].contiguous(), "pixel_values": pixel_values.float().contiguous(),
               "grid": grid[0].to(torch.int64).contiguous(), "position_ids": pos[:, 0, :].contiguous(),
               "rope_delta": torch.tensor([delta], dtype=torch.int64), "first_logits": first.contiguous()},
              os.path.join(out_dir, "bench_input.safetensors"))
    info = {"prefill_s": prefill, "decode_tok_s": tps, "prompt_tokens": int(input_ids.shape[1]),
            "new_tokens": NEW, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__}
    with open(os.path.join(out_dir, "hf_timing.json"), "w") as f:
        json.dump(info, f)
    print(json.dumps(info))


def main_qwen3(out_dir):
    """The Qwen3-VL model and input (see the module docstring)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor
    t3 = load_qwen3_generator()
    torch.manual_seed(0)
    os.makedirs(out_dir, exist_ok=True)
    tokenizer, ids = t3.build_tokenizer()
    video_id = ids["<|video_pad|>"]
    text = dict(vocab_size=512, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
                num_attention_heads=8, num_key_value_heads=4, head_dim=64, hidden_act="silu",
                rms_norm_eps=1e-6, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [12, 10, 10],
                                 "mrope_interleaved": True},
                attention_bias=False, tie_word_embeddings=False)
    vision = dict(depth=4, hidden_size=256, intermediate_size=1024, num_heads=4, in_channels=3,
                  patch_size=16, temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=512,
                  num_position_embeddings=2304, deepstack_visual_indexes=[1, 2],
                  hidden_act="gelu_pytorch_tanh")
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision,
                        image_token_id=ids["<|image_pad|>"], video_token_id=video_id,
                        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                        tie_word_embeddings=False)
    model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    norm_mods = {n for n, m in model.named_modules()
                 if isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")}
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod, _, leaf = name.rpartition(".")
            if mod in norm_mods and leaf == "weight":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif mod in norm_mods and leaf == "bias":
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump({"do_sample": False, "eos_token_id": [], "repetition_penalty": 1.0}, f)
    write_fp8_copy(out_dir, out_dir + "-fp8")

    n, h, w = 8, 224, 224
    times = [i * 0.5 for i in range(n)]
    vid = torch.from_numpy(np.stack([pattern(t, h, w) for t in range(n)])).permute(0, 3, 1, 2).contiguous()
    vp = Qwen3VLVideoProcessor()  # transformers' defaults: patch 16, merge 2, mean = std = 0.5
    fps = (n - 1) / (times[-1] - times[0])
    md = [{"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}]
    vout = vp(videos=[vid], video_metadata=md, return_tensors="pt", do_sample_frames=False, cap_pixels_per_frame=True)
    pv, grid = vout["pixel_values_videos"].float(), vout["video_grid_thw"]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the video."}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # qwen3/prompt.rs rule 3 (make_tiny_model.py's expand_video: per pair a time tag, then
    # <|vision_start|>, the pair's video tokens, <|vision_end|>) and rule 4's positions.
    full = t3.expand_video(prompt, grid[0].tolist(), times)
    input_ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]], dtype=torch.long)
    assert int((input_ids == video_id).sum()) == int(grid[0].prod()) // 4
    pos, delta = t3.rope_index_v4(input_ids[0].tolist(), grid[0].tolist(), video_id)
    pos = torch.tensor(pos, dtype=torch.long)[:, None, :]
    mm = t3.mm_types(input_ids, ids)
    time_and_save(model, out_dir, input_ids, pv, grid, pos, delta, {"mm_token_type_ids": mm})


if __name__ == "__main__":
    if (sys.argv[2] if len(sys.argv) > 2 else "qwen2_5") == "qwen3":
        main_qwen3(sys.argv[1])
    else:
        main(sys.argv[1])
