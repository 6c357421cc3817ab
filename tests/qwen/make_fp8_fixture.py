#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Tiny FP8 checkpoints made from the tiny Qwen2.5-VL model (tests/qwen/tiny), in
the layouts public FP8 checkpoints use, plus the reference tensors the Rust
FP8 loader (src/backend/cosmos/fp8.rs) is checked against in tests/qwen_fp8.rs.

The tiny f32 model is first rounded to bf16 (the "tiny bf16 model"; public FP8
checkpoints are bf16 with bf16 or f32 scales). Then every Linear of the language
model (q/k/v/o, gate/up/down of both layers) is quantized to float8_e4m3fn;
embeddings, norms, lm_head and the whole vision tower stay bf16, as in
llm-compressor's recipe (ignore lm_head and visual.*).

Writes
  tests/qwen/tiny-fp8-channel/   compressed-tensors, format float-quantized, the
                                 FP8_DYNAMIC scheme (llm-compressor / RedHatAI
                                 ...-FP8-Dynamic): weight F8_E4M3 [out, in],
                                 weight_scale bf16 [out, 1], no input_scale;
                                 hub weight names (model.*, visual.*)
  tests/qwen/tiny-fp8-tensor/    compressed-tensors, float-quantized, the FP8
                                 scheme (static per-tensor): weight_scale bf16 [1],
                                 input_scale bf16 [1]; transformers 4.52+ names
                                 (model.language_model.*, model.visual.*)
  tests/qwen/tiny-fp8-modelopt/  NVIDIA ModelOpt: hf_quant_config.json with
                                 quant_algo FP8, no quantization_config in
                                 config.json; weight_scale f32 scalar [],
                                 input_scale f32 scalar []
  tests/qwen/tiny-fp8-block/     transformers "fp8" fine-grained (DeepSeek style):
                                 quant_method fp8, weight_block_size [32, 32],
                                 weight_scale_inv f32 [ceil(out/32), ceil(in/32)]
  tests/qwen/fp8_fixture.safetensors
    e4m3_table                   f32 [256]: torch's float8_e4m3fn -> f32 of every byte
    {layout}.dequant.{name}.f32  every quantized weight as transformers loads it
    {layout}.dequant.{name}.bf16   with dtype=float32 / bfloat16 (ModelOpt: the
                                 rule W_q.to(scale.dtype) * scale, then .to(dtype),
                                 as transformers cannot load ModelOpt)
    {layout}.{case}.logits       f32 logits of transformers (eager, f32) on the
                                 tiny_fixture.safetensors inputs of {case}
    {layout}.{case}.vision_embeds
    {layout}.odd_3f.greedy_tokens  32 greedy tokens (KV cache, v4 positions)

How transformers loads each layout for the reference: compressed-tensors with
CompressedTensorsConfig(dequantize=True) (weights dequantized at load, no
activation quantization: what the Rust loader does); fp8 with
FineGrainedFP8Config(dequantize=True); ModelOpt (unsupported by transformers)
by loading the dequantized state dict into the dense model. The metadata also
records, per layout, how far the FP8 model's logits are from the tiny f32
model's (the quantization error) and, for compressed-tensors, how far
transformers' run-compressed path (dequantize=False: FP8 activations as well)
is from the dequantized one.

Run (about 15 s; needs torch, transformers 5.24, compressed-tensors, accelerate):
  python3 -m venv /tmp/fp8venv   # plus torch, transformers==5.24.0, compressed-tensors,
                                 # accelerate, torchvision, pillow
  /tmp/fp8venv/bin/python tests/qwen/make_fp8_fixture.py
"""
import json
import math
import os
import shutil
import sys
import time

import compressed_tensors
import torch
import transformers
from compressed_tensors.compressors import ModelCompressor, NaiveQuantizationCompressor
from compressed_tensors.quantization import (
    QuantizationConfig,
    QuantizationScheme,
    QuantizationStatus,
)
from compressed_tensors.quantization.quant_scheme import FP8, FP8_DYNAMIC
from compressed_tensors.quantization.utils import calculate_qparams
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import (
    CompressedTensorsConfig,
    FineGrainedFP8Config,
    Qwen2_5_VLForConditionalGeneration,
)

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "tiny")
FIXTURE = os.path.join(HERE, "fp8_fixture.safetensors")
CASES = ["odd_3f", "long_8f_small"]
NEW_TOKENS = 32
BLOCK = [32, 32]
FP8_MAX = 448.0
# Files of the tiny checkpoint the FP8 copies share (not the weights / configs).
SHARED = [
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
]
LINEARS = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
]


def quantized_modules(n_layers):
    return [f"model.layers.{i}.{l}" for i in range(n_layers) for l in LINEARS]


def new_prefix(k):
    """Hub name -> transformers 4.52+ checkpoint name."""
    if k.startswith("visual."):
        return "model." + k
    if k.startswith("model."):
        return "model.language_model." + k[len("model."):]
    return k


def live_name(k, sd):
    if k in sd:
        return k
    n = new_prefix(k)
    if n in sd:
        return n
    raise KeyError(k)


def base_config():
    with open(os.path.join(TINY, "config.json")) as f:
        cfg = json.load(f)
    cfg["torch_dtype"] = "bfloat16"
    return cfg


def write_dir(name, tensors, cfg, extra_files=None):
    out = os.path.join(HERE, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for f in SHARED:
        shutil.copy(os.path.join(TINY, f), os.path.join(out, f))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    for fname, obj in (extra_files or {}).items():
        with open(os.path.join(out, fname), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(out, "model.safetensors"), 0o644)
    return out


def ct_quantize(w, scheme):
    """One Linear weight through compressed-tensors: minmax scale, then its compressor."""
    args = scheme.weights
    if args.strategy == "channel":
        lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    elif args.strategy == "tensor":
        lo, hi = w.amin().reshape(1), w.amax().reshape(1)
    else:
        raise ValueError(args.strategy)
    scale, zp = calculate_qparams(lo, hi, args)
    sd = NaiveQuantizationCompressor.compress({"weight": w, "weight_scale": scale, "weight_zero_point": zp}, scheme)
    assert set(sd) == {"weight", "weight_scale"}, set(sd)
    assert sd["weight"].dtype == torch.float8_e4m3fn and sd["weight_scale"].dtype == w.dtype
    return sd["weight"], sd["weight_scale"]


def make_compressed_tensors(base, modules, preset, name, rename):
    scheme = QuantizationScheme(targets=["Linear"], **preset)
    qc = QuantizationConfig(
        config_groups={"group_0": scheme},
        ignore=["lm_head", "re:visual.*", "re:model.visual.*"],
        format="float-quantized",
        quantization_status=QuantizationStatus.COMPRESSED,
    )
    tensors = dict(base)
    gen = torch.Generator().manual_seed(1)
    for m in modules:
        wq, s = ct_quantize(base[m + ".weight"], scheme)
        tensors[m + ".weight"] = wq
        tensors[m + ".weight_scale"] = s
        if not scheme.input_activations.dynamic:
            # A static activation scale, as a calibrated FP8 checkpoint has; the loader ignores it.
            tensors[m + ".input_scale"] = (0.01 + 0.02 * torch.rand(1, generator=gen)).to(torch.bfloat16)
    if rename:
        tensors = {new_prefix(k): v for k, v in tensors.items()}
    out = write_dir(name, tensors, base_config())
    ModelCompressor(quantization_config=qc).update_config(out)
    return out


def make_modelopt(base, modules, name):
    tensors = dict(base)
    gen = torch.Generator().manual_seed(2)
    for m in modules:
        w = base[m + ".weight"].float()
        scale = (w.abs().max() / FP8_MAX).reshape(())  # f32 scalar
        wq = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        tensors[m + ".weight"] = wq
        tensors[m + ".weight_scale"] = scale
        tensors[m + ".input_scale"] = (0.01 + 0.02 * torch.rand((), generator=gen)).float()
    hq = {
        "producer": {"name": "modelopt", "version": "0.29.0"},
        "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": ["lm_head", "visual*"]},
    }
    return write_dir(name, tensors, base_config(), {"hf_quant_config.json": hq})


def make_block(base, modules, name):
    tensors = dict(base)
    bh, bw = BLOCK
    for m in modules:
        w = base[m + ".weight"].float()
        r, c = w.shape
        sr, sc = math.ceil(r / bh), math.ceil(c / bw)
        assert r % bh == 0 and c % bw == 0, "transformers needs whole blocks"
        blocks = w.reshape(sr, bh, sc, bw)
        amax = blocks.abs().amax(dim=(1, 3))
        scale_inv = (amax / FP8_MAX).float()
        wq = (blocks / scale_inv[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).reshape(r, c).to(torch.float8_e4m3fn)
        tensors[m + ".weight"] = wq
        tensors[m + ".weight_scale_inv"] = scale_inv
    cfg = base_config()
    cfg["quantization_config"] = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": BLOCK,
        "modules_to_not_convert": ["lm_head", "visual"],
    }
    return write_dir(name, tensors, cfg)


def manual_dequant(st, m, scale_name, dtype, block=None):
    wq = st[m + ".weight"]
    s = st[m + scale_name]
    if block is None:
        w = wq.to(s.dtype) * s
    else:
        bh, bw = block
        w = wq.to(s.dtype) * s.repeat_interleave(bh, 0).repeat_interleave(bw, 1)[: wq.shape[0], : wq.shape[1]]
    return w.to(dtype)


def load_tf(path, dtype, qcfg=None):
    kw = {} if qcfg is None else {"quantization_config": qcfg}
    m = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager", dtype=dtype, **kw)
    m.eval()
    return m


def load_dense_with(sd_hub, dtype):
    """The dense tiny model with the given (hub-named) weights."""
    m = load_tf(TINY, dtype)
    live = m.state_dict()
    new = {live_name(k, live): v.to(dtype) for k, v in sd_hub.items()}
    missing, unexpected = m.load_state_dict(new, strict=True), None
    del missing, unexpected
    return m


def run_case(model, fx, case):
    ids = fx.get_tensor(f"{case}.input_ids")
    pv = fx.get_tensor(f"{case}.pixel_values_videos")
    grid = fx.get_tensor(f"{case}.video_grid_thw")
    pos = fx.get_tensor(f"{case}.position_ids_v4")
    delta = int(fx.get_tensor(f"{case}.rope_delta")[0])
    L = ids.shape[0]
    with torch.no_grad():
        vis = model.model.visual(pv, grid_thw=grid).pooler_output.float()
        out = model(input_ids=ids[None], pixel_values_videos=pv, video_grid_thw=grid, position_ids=pos[:, None, :], use_cache=True)
        logits = out.logits[0].float()
        cache = out.cache
        tokens = []
        nxt = int(logits[-1].argmax())
        for step in range(NEW_TOKENS):
            tokens.append(nxt)
            if step == NEW_TOKENS - 1:
                break
            p = torch.full((3, 1, 1), L + step + delta, dtype=torch.long)
            o = model(input_ids=torch.tensor([[nxt]]), position_ids=p, cache=cache, use_cache=True)
            cache = o.cache
            nxt = int(o.logits[0, -1].argmax())
    return vis, logits, tokens


def main():
    t0 = time.time()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    fx = safe_open(os.path.join(HERE, "tiny_fixture.safetensors"), "pt")
    f32 = load_file(os.path.join(TINY, "model.safetensors"))
    base = {k: v.to(torch.bfloat16) for k, v in f32.items()}
    with open(os.path.join(TINY, "config.json")) as f:
        n_layers = json.load(f)["num_hidden_layers"]
    modules = quantized_modules(n_layers)

    # tensors of the tiny f32 model on the cases, for the quantization error
    dense = load_tf(TINY, torch.float32)
    dense_logits = {c: run_case(dense, fx, c)[1] for c in CASES}

    layouts = {
        "channel": (make_compressed_tensors(base, modules, FP8_DYNAMIC, "tiny-fp8-channel", False), ".weight_scale", None),
        "tensor": (make_compressed_tensors(base, modules, FP8, "tiny-fp8-tensor", True), ".weight_scale", None),
        "modelopt": (make_modelopt(base, modules, "tiny-fp8-modelopt"), ".weight_scale", None),
        "block": (make_block(base, modules, "tiny-fp8-block"), ".weight_scale_inv", BLOCK),
    }

    out = {}
    meta_layouts = {}
    b = torch.arange(256, dtype=torch.uint8)
    out["e4m3_table"] = b.view(torch.float8_e4m3fn).float()

    for lay, (path, sname, block) in layouts.items():
        st = load_file(os.path.join(path, "model.safetensors"))
        if lay == "tensor":
            st = {k: v for k, v in st.items()}
            hub = {}
            for k, v in st.items():
                if k.startswith("model.visual."):
                    hub[k[len("model."):]] = v
                elif k.startswith("model.language_model."):
                    hub["model." + k[len("model.language_model."):]] = v
                else:
                    hub[k] = v
            st = hub
        deq = {dt: {m: manual_dequant(st, m, sname, dt, block) for m in modules} for dt in (torch.float32, torch.bfloat16)}
        models = {}
        for dt in (torch.float32, torch.bfloat16):
            if lay in ("channel", "tensor"):
                models[dt] = load_tf(path, dt, CompressedTensorsConfig(dequantize=True))
            elif lay == "block":
                models[dt] = load_tf(path, dt, FineGrainedFP8Config(dequantize=True))
            else:
                dense_sd = {k: v for k, v in st.items() if not k.endswith("_scale")}
                for m in modules:
                    dense_sd[m + ".weight"] = deq[dt][m]
                models[dt] = load_dense_with(dense_sd, dt)
            live = models[dt].state_dict()
            for m in modules:
                got = live[live_name(m + ".weight", live)]
                assert got.dtype == dt, (lay, m, got.dtype)
                # transformers' dequantization is the rule W_q.to(scale.dtype) * scale, then .to(dtype)
                assert torch.equal(got, deq[dt][m]), (lay, m, dt, float((got.float() - deq[dt][m].float()).abs().max()))
                tag = "f32" if dt == torch.float32 else "bf16"
                out[f"{lay}.dequant.{m}.weight.{tag}"] = got.contiguous()
            # unquantized tensors load unchanged (bf16 -> dt)
            for k in ("model.embed_tokens.weight", "lm_head.weight", "visual.blocks.0.attn.qkv.weight"):
                assert torch.equal(live[live_name(k, live)], st[k].to(dt)), (lay, k)
        m32 = models[torch.float32]
        info = {"path": os.path.basename(path), "cases": {}}
        for case in CASES:
            vis, logits, tokens = run_case(m32, fx, case)
            out[f"{lay}.{case}.vision_embeds"] = vis.contiguous()
            out[f"{lay}.{case}.logits"] = logits.contiguous()
            if case == "odd_3f":
                out[f"{lay}.{case}.greedy_tokens"] = torch.tensor(tokens, dtype=torch.int64)
            qerr = float((logits - dense_logits[case]).abs().max())
            c = {
                "logits_scale": float(logits.abs().max()),
                "max_abs_logit_diff_vs_tiny_f32": qerr,
                "greedy_tokens": tokens if case == "odd_3f" else None,
            }
            if lay in ("channel", "tensor"):
                # transformers' default for compressed-tensors: weights decompressed at the first
                # forward and (here) activations quantized to FP8 too; only reported.
                rc = load_tf(path, torch.float32)
                _, lrc, _ = run_case(rc, fx, case)
                c["max_abs_logit_diff_run_compressed_vs_dequantized"] = float((lrc - logits).abs().max())
            info["cases"][case] = c
            print(f"{lay} {case}: logits scale {c['logits_scale']:.3f}, vs tiny f32 {qerr:.4g}, "
                  f"{'run-compressed diff %.4g' % c['max_abs_logit_diff_run_compressed_vs_dequantized'] if 'max_abs_logit_diff_run_compressed_vs_dequantized' in c else ''}",
                  file=sys.stderr)
        files = sorted(os.listdir(path))
        info["bytes"] = {f: os.path.getsize(os.path.join(path, f)) for f in files}
        meta_layouts[lay] = info

    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "compressed_tensors": compressed_tensors.__version__,
        "cases": CASES,
        "rule": "W = W_q.to(scale.dtype) * scale (broadcast per tensor / row / block), then .to(run dtype)",
        "layouts": meta_layouts,
    }
    save_file(out, FIXTURE, metadata={"info": json.dumps(meta)})
    for lay, info in meta_layouts.items():
        print(f"  {info['path']}: {sum(info['bytes'].values())} bytes", file=sys.stderr)
    print(f"wrote {FIXTURE}: {os.path.getsize(FIXTURE)} bytes in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
