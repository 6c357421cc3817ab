#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""A tiny FP8 Qwen3-VL checkpoint made from tests/qwen3/tiny (see make_tiny_model.py),
in the compressed-tensors FP8_DYNAMIC ("channel") layout that llm-compressor writes
(RedHatAI ...-FP8-Dynamic, and the NGC "fp8-dynamic" Cosmos-Reason2 builds), plus the
reference tensors for the Rust FP8 loader.

The tiny f32 model is rounded to bf16 first. Every Linear of the language model
(q/k/v/o_proj, gate/up/down_proj of the 3 layers) is quantized to float8_e4m3fn with a
per-output-channel bf16 weight_scale [out, 1] (minmax / 448, compressed-tensors'
NaiveQuantizationCompressor), no input_scale (dynamic activations). Embeddings, norms,
lm_head and the whole vision tower stay bf16 (ignore: lm_head, re:visual.*,
re:model.visual.*). Weight names are the transformers 5 / Qwen3-VL hub ones
(model.language_model.*, model.visual.*, lm_head.weight).

Writes
  tests/qwen3/tiny-fp8-channel/    config.json (+ compressed-tensors quantization_config,
                                   format float-quantized, strategy channel),
                                   model.safetensors, tokenizer / template / processor /
                                   generation files copied from tiny/
  tests/qwen3/fp8_fixture.safetensors
    fp8.e4m3_table                 f32 [256]: torch's float8_e4m3fn value of every byte
    fp8.{odd_3f,budget_5f}.logits  f32 (L, 512): transformers (eager, f32) with
                                   CompressedTensorsConfig(dequantize=True) on the
                                   tiny_fixture inputs of the case (input_ids, pixel_values,
                                   grid_thw; positions from the model, == {case}.position_ids)
    fp8.odd_3f.greedy              i64 [24]: plain argmax, no eos stop, KV cache (checked
                                   against an uncached argmax loop)
  metadata["info"]: versions, the dequantization rule, per case the distance to the tiny
  f32 model's logits and to transformers' run-compressed path (FP8 activations too).

Dequantization (what transformers does at load, checked here for every weight):
W = W_fp8.to(bf16) * weight_scale (bf16 product), then .to(f32).

Run after make_tiny_model.py (about 15 s; needs compressed-tensors + accelerate next to torch / transformers 5.24;
a throwaway venv that reuses the project's packages works):
  /usr/bin/python3.11 -m venv /tmp/fp8venv
  echo "$PWD/target/py/torch/lib/python3.11/site-packages" \
      > /tmp/fp8venv/lib/python3.11/site-packages/torchenv.pth
  /tmp/fp8venv/bin/pip install compressed-tensors accelerate   # 0.20.1, 1.16.0 were used
  /tmp/fp8venv/bin/python tests/qwen3/make_fp8_fixture.py
"""
import json
import os
import shutil
import sys
import time

import compressed_tensors
import torch
import transformers
from compressed_tensors.compressors import ModelCompressor, NaiveQuantizationCompressor
from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, QuantizationStatus
from compressed_tensors.quantization.quant_scheme import FP8_DYNAMIC
from compressed_tensors.quantization.utils import calculate_qparams
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import CompressedTensorsConfig, GenerationConfig, Qwen3VLForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "tiny")
OUT = os.path.join(HERE, "tiny-fp8-channel")
FIXTURE = os.path.join(HERE, "fp8_fixture.safetensors")
CASES = ["odd_3f", "budget_5f"]
NEW_TOKENS = 24
SHARED = [
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
]
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def ct_quantize(w, scheme):
    """One Linear weight through compressed-tensors: per-row minmax scale, then its compressor."""
    args = scheme.weights
    assert args.strategy == "channel", args.strategy
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    scale, zp = calculate_qparams(lo, hi, args)
    sd = NaiveQuantizationCompressor.compress({"weight": w, "weight_scale": scale, "weight_zero_point": zp}, scheme)
    assert set(sd) == {"weight", "weight_scale"}, set(sd)
    assert sd["weight"].dtype == torch.float8_e4m3fn and sd["weight_scale"].dtype == w.dtype
    assert sd["weight_scale"].shape == (w.shape[0], 1)
    return sd["weight"], sd["weight_scale"]


def load(path, qcfg=None):
    kw = {} if qcfg is None else {"quantization_config": qcfg}
    m = Qwen3VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager", dtype=torch.float32, **kw).eval()
    eot = m.config.text_config.bos_token_id
    m.generation_config = GenerationConfig(bos_token_id=eot, pad_token_id=eot)  # no eos: plain argmax
    return m


def batch_for(fx, case, video_id):
    ids = fx.get_tensor(f"{case}.input_ids")
    mm = torch.zeros_like(ids)
    mm[ids == video_id] = 2
    return {
        "input_ids": ids[None],
        "attention_mask": torch.ones_like(ids)[None],
        "pixel_values_videos": fx.get_tensor(f"{case}.pixel_values"),
        "video_grid_thw": fx.get_tensor(f"{case}.grid_thw")[None],
        "mm_token_type_ids": mm[None],
    }


def logits_of(model, batch):
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model(**batch).logits[0].float()
    model.model.rope_deltas = None
    return out


def greedy(model, batch):
    L = batch["input_ids"].shape[1]
    model.model.rope_deltas = None
    with torch.no_grad():
        out = model.generate(**batch, generation_config=GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=model.generation_config.pad_token_id))
    assert out.shape[1] == L + NEW_TOKENS, out.shape
    toks = out[0, L:].tolist()
    # uncached argmax loop
    for step in range(NEW_TOKENS):
        ids = torch.cat([batch["input_ids"], torch.tensor([toks[:step]], dtype=torch.long)], dim=1)
        b = dict(batch, input_ids=ids, attention_mask=torch.ones_like(ids))
        b["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros((1, step), dtype=torch.long)], dim=1)
        assert int(logits_of(model, b)[-1].argmax()) == toks[step], ("cached vs uncached", step)
    return toks


def main():
    t0 = time.time()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    fx = safe_open(os.path.join(HERE, "tiny_fixture.safetensors"), "pt")
    with open(os.path.join(TINY, "config.json")) as f:
        cfg = json.load(f)
    n_layers = cfg["text_config"]["num_hidden_layers"]
    video_id = cfg["video_token_id"]
    modules = [f"model.language_model.layers.{i}.{l}" for i in range(n_layers) for l in LINEARS]

    base = {k: v.to(torch.bfloat16) for k, v in load_file(os.path.join(TINY, "model.safetensors")).items()}
    scheme = QuantizationScheme(targets=["Linear"], **FP8_DYNAMIC)
    qc = QuantizationConfig(
        config_groups={"group_0": scheme},
        ignore=["lm_head", "re:visual.*", "re:model.visual.*"],
        format="float-quantized",
        quantization_status=QuantizationStatus.COMPRESSED,
    )
    tensors = dict(base)
    for m in modules:
        wq, s = ct_quantize(base[m + ".weight"], scheme)
        tensors[m + ".weight"] = wq
        tensors[m + ".weight_scale"] = s
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    for f in SHARED:
        shutil.copy(os.path.join(TINY, f), os.path.join(OUT, f))
    qcfg_json = dict(cfg)
    qcfg_json["dtype"] = "bfloat16"
    for sub in ("text_config", "vision_config"):
        qcfg_json[sub] = dict(cfg[sub], dtype="bfloat16")
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(qcfg_json, f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "model.safetensors"), metadata={"format": "pt"})
    ModelCompressor(quantization_config=qc).update_config(OUT)
    with open(os.path.join(OUT, "config.json")) as f:
        qconf = json.load(f)["quantization_config"]
    assert qconf["format"] == "float-quantized" and qconf["config_groups"]["group_0"]["weights"]["strategy"] == "channel"

    dense = load(TINY)
    fp8 = load(OUT, CompressedTensorsConfig(dequantize=True))
    live = fp8.state_dict()
    for m in modules:
        want = (tensors[m + ".weight"].to(torch.bfloat16) * tensors[m + ".weight_scale"]).to(torch.float32)
        assert torch.equal(live[m + ".weight"], want), m
        assert m + ".weight_scale" not in live
    for k in ("model.language_model.embed_tokens.weight", "lm_head.weight", "model.visual.blocks.0.attn.qkv.weight", "model.visual.patch_embed.proj.bias"):
        assert torch.equal(live[k], base[k].float()), k

    out = {"fp8.e4m3_table": torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()}
    info = {}
    run_compressed = load(OUT)  # transformers' default: FP8 activations as well (reported only)
    for case in CASES:
        b = batch_for(fx, case, video_id)
        lg = logits_of(fp8, b)
        d32 = logits_of(dense, b)
        assert torch.equal(d32, fx.get_tensor(f"{case}.logits")), "tiny model drifted from tiny_fixture"
        out[f"fp8.{case}.logits"] = lg.contiguous()
        info[case] = {
            "logits_scale": float(lg.abs().max()),
            "max_abs_diff_vs_tiny_f32": float((lg - d32).abs().max()),
            "max_abs_diff_run_compressed_vs_dequantized": float((logits_of(run_compressed, b) - lg).abs().max()),
        }
        if case == "odd_3f":
            toks = greedy(fp8, b)
            out[f"fp8.{case}.greedy"] = torch.tensor(toks, dtype=torch.int64)
            info[case]["greedy"] = toks
            info[case]["tiny_f32_greedy"] = fx.get_tensor(f"{case}.greedy").tolist()
        print(f"{case}: {info[case]}", file=sys.stderr)

    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "compressed_tensors": compressed_tensors.__version__,
        "layout": "compressed-tensors float-quantized FP8_DYNAMIC: weight F8_E4M3 [out,in], weight_scale bf16 [out,1], no input_scale",
        "quantized": modules,
        "rule": "W = W_fp8.to(bf16) * weight_scale (bf16), then .to(f32)",
        "reference": "transformers eager f32, CompressedTensorsConfig(dequantize=True); inputs and positions as tiny_fixture",
        "greedy": f"{NEW_TOKENS} tokens, plain argmax, no eos stop, KV cache",
        "cases": info,
    }
    save_file(out, FIXTURE, metadata={"info": json.dumps(meta)})
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({size} bytes) and {FIXTURE} ({os.path.getsize(FIXTURE)} bytes) in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
