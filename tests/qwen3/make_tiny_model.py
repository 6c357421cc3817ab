#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Tiny random-weight Qwen3-VL checkpoints plus reference tensors for the parity
tests of the Rust (candle) Qwen3-VL reimplementation.

Writes (all under tests/qwen3/)
  tiny/                           the checkpoint, as transformers 5.24 saves it
    config.json                   nested text_config / vision_config, text rope in
                                  `rope_parameters` {rope_type, rope_theta, mrope_section,
                                  mrope_interleaved} (transformers 5 spelling)
    config.hub.json               the same model in the spelling of the real hub
                                  checkpoints (written by transformers 4.57): text
                                  `rope_scaling` {mrope_interleaved, mrope_section,
                                  rope_type} plus a separate text `rope_theta`, no vision
                                  `rope_parameters`, vision model_type "qwen3_vl" (sic)
    model.safetensors             f32; keys `model.language_model.*`, `model.visual.*`,
                                  `lm_head.weight` (what save_pretrained writes; the
                                  Qwen3-VL hub checkpoints use these names too)
    generation_config.json        hub Qwen3-VL-Instruct style
    tokenizer.json, tokenizer_config.json
    chat_template.json, chat_template.jinja   the REAL Qwen3-VL-Instruct chat template
                                  (see CHAT_TEMPLATE below: no default system message)
    preprocessor_config.json      image processor, hub style (patch 16, mean = std = 0.5)
    video_preprocessor_config.json  Qwen3VLVideoProcessor settings (small pixel budget)
  tiny-oldprefix/                 same files; model.safetensors with the Qwen2.5-VL-era
                                  names `model.*` (language model), `visual.*`, `lm_head.*`
  tiny-cosmos3/                   the same weights in the Cosmos3 Nano Reasoner
                                  (diffusers-style) layout that vLLM's cosmos3.py loads:
    model_index.json (diffusers style; its class names are made up), config.json
                                  (architectures Cosmos3ForConditionalGeneration,
                                  model_type kept qwen3_vl), tokenizer / template /
                                  processor files at the top level
    transformer/diffusion_pytorch_model-0000{1,2}-of-00002.safetensors + .index.json
                                  `layers.N.self_attn.to_q|to_k|to_v|to_out|norm_q|norm_k`,
                                  `embed_tokens.weight`, `norm.weight`, `lm_head.weight`,
                                  plus junk tensors of the generation tower / quantizers
                                  that a loader must skip
    vision_encoder/model.safetensors  `blocks.*`, `merger.*`, `patch_embed.*`,
                                  `pos_embed.*`, `deepstack_merger_list.*`
  tiny_fixture.safetensors        reference tensors (names below), metadata["info"] JSON

Model: text hidden 64, 3 layers, 4 heads / 2 kv heads, head_dim 16, rope_theta 5e6,
mrope_section [2, 3, 3] interleaved; vision depth 4, hidden 32, 2 heads, patch 16,
temporal patch 2, merge 2, a learned 8x8 position grid (num_position_embeddings 64, so
every frame grid below resamples it), deepstack_visual_indexes [0, 2] (the merged
features of vision blocks 0 and 2 are added to the visual token positions after decoder
layers 0 and 1). Random init: every weight and bias ~ 0.2*randn, norm weights
(RMSNorm and LayerNorm) ~ 1 + 0.1*randn, LayerNorm biases ~ 0.1*randn.

Frames are `pattern(t, h, w)` from tests/qwen/make_preprocess_fixture.py (t = 0..n-1),
preprocessed by the real Qwen3VLVideoProcessor loaded from tiny/ with
do_sample_frames=False, cap_pixels_per_frame=True (qwen-vl-utils' per-frame budget),
video_metadata {fps = (n-1)/(t_last-t_first), total_num_frames n, frames_indices 0..n-1}.

Rules the Rust side follows (also in the fixture metadata):
  * prompt: render the chat template (user message = [video, text]), then replace the
    template's `<|vision_start|><|video_pad|><|vision_end|>` WHOLE by, for each temporal
    patch k (pair of frames): `<{t_k:.1f} seconds>` + `<|vision_start|>` +
    `<|video_pad|>` x (grid_h/2 * grid_w/2) + `<|vision_end|>`, with t_k = (time of the
    pair's first frame + time of its last frame) / 2 taken from the real frame times
    (an odd last frame is paired with itself). This is what vLLM and transformers <= 4.57
    do. transformers 5.24's Qwen3VLProcessor replaces only `<|video_pad|>` (so its
    prompt has nested `<|vision_start|>`s) and computes times as index/fps from 0; its
    string is stored per case in the metadata (`processor_5_24_prompt`) for comparison
    only. `{:.1f}` is Python's: exact ties round to even (0.25 -> "0.2").
  * position ids: Qwen3VLModel.get_rope_index on these input_ids (mm_token_type_ids = 2
    on `<|video_pad|>`, 0 elsewhere): the grid is split into T single-frame grids; a text
    run takes cur, cur+1, ... on all three axes; a frame run takes (cur, cur+h, cur+w) for
    h < grid_h/2, w < grid_w/2 (temporal position constant: time is in the text tags),
    then cur += max(grid_h, grid_w)/2. This equals the transformers <= 4.57 / vLLM rule
    (next start = max position so far + 1), checked here. rope_delta = max + 1 - L;
    a decode step at cache length c uses position c + rope_delta on all three axes.
  * greedy: 24 tokens, plain argmax, NO stop on eos (the generate call gets no
    eos_token_id, so `<|im_end|>` may appear and decoding goes on), KV cache.

Fixture tensors (f32 unless said), per video case `{case}.`:
  pixel_values (patches, 1536), grid_thw i64 [3], times f64 [n], input_ids i64 [L],
  position_ids i64 [3, L], rope_delta i64 [1], vision_embeds (L_vis, 64) (merger output),
  deepstack.0, deepstack.1 (L_vis, 64), logits (L, 512) of the full prefill forward,
  greedy i64 [24].
  `text.`: input_ids, position_ids, logits, greedy (system + user text, no video).

Checks (asserts): the real template text (sha256); the saved checkpoint and tokenizer
reload to identical logits / ids; the video processor from tiny/ matches the direct one;
get_rope_index == the 4.57/vLLM rule; the model's own 3D positions == the stored ones;
the old-prefix copy loads (key remap) to identical logits; the Cosmos3 copy maps back
through vLLM's cosmos3.py rules to exactly the HF state dict (junk dropped); logits
depend on the video; KV-cached greedy == an uncached argmax loop.

Run (about 6 s on 2 cores, CPU torch, transformers 5.24; deterministic, rewrites all outputs):
  target/py/torch/bin/python tests/qwen3/make_tiny_model.py
"""
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor, smart_resize

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "qwen"))
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

# The Qwen3-VL-Instruct chat template, byte for byte: the tokenizer.chat_template of
# Qwen/Qwen3-VL-8B-Instruct-GGUF (5292 bytes, sha256 3636d0f0...489e4, as pinned by
# zhongkaifu/TensorSharp's QwenImageIntentScorerTests, which quotes it), the same text as
# the Instruct checkpoints' chat_template.json (its opening matches the one published for
# Qwen3-VL-30B-A3B-Instruct). No default system message; generation prompt
# `<|im_start|>assistant\n` (the Thinking models' template appends `<think>\n`).
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""
CHAT_TEMPLATE_SHA256 = "3636d0f0bd6bef02654cdffdc447b79cb2cef8ab02cc75267345946291a489e4"

MEAN_STD = [0.5, 0.5, 0.5]
# Video pixel budget: floor 64*64 (the Qwen3-VL hub video floor; late_2f's 40x40 frames are
# upscaled by it), total budget 32 * 32 * 32 pixels per clip (cap_pixels_per_frame splits it
# between the frames), small enough that budget_5f is downscaled.
MIN_PIXELS = 4096
MAX_PIXELS = 32768
PATCH = 16
MERGE = 2
TPATCH = 2

# name: (height, width, frame times in seconds)
CASES = {
    # 3 frames: the last temporal patch repeats frame 2; no resize (64x96).
    "odd_3f": (64, 96, [0.0, 0.5, 1.0]),
    # non-multiple-of-32 frame, resized (bicubic, antialias) to 64x96.
    "resize_4f": (70, 100, [0.0, 0.25, 0.5, 0.75]),
    # tall: 10x4 patch grid (8x8 pos grid is upsampled in h, downsampled in w).
    "tall_2f": (160, 64, [0.0, 1.0]),
    # wide: 80x208 -> 64x192 (round(2.5) = 2 and round(6.5) = 6: Python rounds half to
    # even), a 4x12 patch grid: differs from the 8x8 pos grid in both axes.
    "wide_2f": (80, 208, [0.0, 0.5]),
    # 5 frames over the budget: downscaled to 64x64; smart_resize tests
    # round(5/2)*2 = 4 frames (half to even) against the budget but scales by 5.
    "budget_5f": (128, 160, [0.0, 0.4, 0.8, 1.2, 1.6]),
    # one pair starting at 12.0 s (a later chunk of a stream): tag "<12.2 seconds>";
    # 40x40 is under the 64*64 floor and is upscaled to 64x64.
    "late_2f": (40, 40, [12.0, 12.5]),
}
PROMPT = "Describe the video."
TEXT_SYSTEM = "You are a careful assistant."
TEXT_USER = "Summarize: a cat sat on a mat."
NEW_TOKENS = 24
INIT_STD = 0.2
NORM_STD = 0.1

PROMPT_RULE = (
    "render the chat template with user content [video, text]; replace the template's "
    "'<|vision_start|><|video_pad|><|vision_end|>' whole by, per temporal patch k: "
    "f'<{t_k:.1f} seconds>' + '<|vision_start|>' + '<|video_pad|>' * (grid_h/2*grid_w/2) + "
    "'<|vision_end|>', t_k = (time of the pair's first frame + time of its last frame)/2 from "
    "the given frame times (odd count: last frame paired with itself); Python format, ties "
    "to even (vLLM / transformers<=4.57). transformers 5.24's processor output is NOT used "
    "(nested vision_start, times index/fps from 0)"
)
FPS_RULE = (
    "processor video_metadata: fps = (n-1)/(t_last-t_first), total_num_frames = n, "
    "frames_indices = 0..n-1; do_sample_frames=False, cap_pixels_per_frame=True"
)
ROPE_RULE = (
    "Qwen3VLModel.get_rope_index with mm_token_type_ids (2 on <|video_pad|>): grid split "
    "into T frames of (1, H, W); text run -> cur+i on t,h,w; frame run -> (cur, cur+h, cur+w), "
    "h<H/2, w<W/2; then cur += max(H,W)/2 (== max position + 1, the transformers<=4.57/vLLM "
    "rule); rope_delta = max+1-L; decode position = cache_len + rope_delta on all axes"
)
GREEDY_RULE = (
    f"{NEW_TOKENS} tokens by model.generate(do_sample=False, use_cache=True) with no "
    "eos_token_id: plain argmax every step, no stop, no penalties; equals an uncached "
    "argmax loop"
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
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        hidden_act="silu",
        rms_norm_eps=1e-6,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3], "mrope_interleaved": True},
        attention_bias=False,
        tie_word_embeddings=False,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    vision = dict(
        depth=4,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        in_channels=3,
        patch_size=PATCH,
        temporal_patch_size=TPATCH,
        spatial_merge_size=MERGE,
        out_hidden_size=64,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 2],
        hidden_act="gelu_pytorch_tanh",
    )
    cfg = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    return cfg


def hub_config(cfg_json):
    """config.json in the spelling of the real Qwen3-VL hub checkpoints (transformers 4.57):
    text `rope_scaling` {mrope_interleaved, mrope_section, rope_type} and a separate
    `rope_theta`; `torch_dtype`; no vision rope_parameters (the axial theta 10000 is a
    transformers 5 default); vision model_type "qwen3_vl" (as the hub files have it)."""
    c = json.loads(json.dumps(cfg_json))
    t = c["text_config"]
    rp = t.pop("rope_parameters")
    t["rope_scaling"] = {"mrope_interleaved": rp["mrope_interleaved"], "mrope_section": rp["mrope_section"], "rope_type": rp["rope_type"]}
    t["rope_theta"] = rp["rope_theta"]
    t.pop("pad_token_id", None)
    for d in (c, t, c["vision_config"]):
        if "dtype" in d:
            d["torch_dtype"] = d.pop("dtype")
    v = c["vision_config"]
    v.pop("rope_parameters", None)
    v["model_type"] = "qwen3_vl"
    c["transformers_version"] = "4.57.0.dev0"
    return dict(sorted(c.items()))


def reinit_(model):
    """Random weights: norms ~ 1 + 0.1 randn (their biases ~ 0.1 randn), all else ~ 0.2 randn."""
    norm_mods = set()
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm"):
            norm_mods.add(name)
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod, _, leaf = name.rpartition(".")
            if mod in norm_mods and leaf == "weight":
                p.copy_(1.0 + NORM_STD * torch.randn_like(p))
            elif mod in norm_mods and leaf == "bias":
                p.copy_(NORM_STD * torch.randn_like(p))
            else:
                p.copy_(INIT_STD * torch.randn_like(p))
    return norm_mods


def to_oldprefix(k):
    if k.startswith("model.language_model."):
        return "model." + k[len("model.language_model."):]
    if k.startswith("model.visual."):
        return "visual." + k[len("model.visual."):]
    assert k == "lm_head.weight", k
    return k


def from_oldprefix(k):
    if k.startswith("visual."):
        return "model." + k
    if k.startswith("model."):
        return "model.language_model." + k[len("model."):]
    return k


# ---- Cosmos3 layout -------------------------------------------------------------------
COSMOS_LM_RENAMES = [  # HF name part -> Cosmos3 (diffusers) name part
    (".self_attn.q_proj.", ".self_attn.to_q."),
    (".self_attn.k_proj.", ".self_attn.to_k."),
    (".self_attn.v_proj.", ".self_attn.to_v."),
    (".self_attn.o_proj.", ".self_attn.to_out."),
    (".self_attn.q_norm.", ".self_attn.norm_q."),
    (".self_attn.k_norm.", ".self_attn.norm_k."),
]
COSMOS_VISION_PREFIXES = ("blocks.", "merger.", "patch_embed.", "pos_embed.", "deepstack_merger_list.")


def to_cosmos3(k):
    """HF name -> (subfolder, Cosmos3 name)."""
    if k == "lm_head.weight":
        return "transformer", k
    if k.startswith("model.language_model."):
        n = k[len("model.language_model."):]
        for a, b in COSMOS_LM_RENAMES:
            n = n.replace(a, b)
        return "transformer", n
    if k.startswith("model.visual."):
        n = k[len("model.visual."):]
        assert n.startswith(COSMOS_VISION_PREFIXES), n
        return "vision_encoder", n
    raise KeyError(k)


# vLLM's Cosmos3ForConditionalGeneration.hf_to_vllm_mapper (vllm/model_executor/models/
# cosmos3.py): WeightsMapper applies the regex rules, then the substrings, then the
# prefixes, each in order; a None target drops the tensor.
VLLM_COSMOS3_REGEX = [
    (re.compile(r"^(layers\.|embed_tokens\.|norm\.)(.+)$"), r"language_model.model.\1\2"),
    (re.compile(r"^(blocks\.|merger\.|patch_embed\.|pos_embed\.|deepstack_merger_list\.)"), r"visual.\1"),
    (re.compile(r"^audio_modality_embed(?:\..*)?$"), None),
    (re.compile(r"^action_modality_embed(?:\..*)?$"), None),
]
VLLM_COSMOS3_SUBSTR = [
    ("_moe_gen", None),
    (".add_q_proj.", None),
    (".add_k_proj.", None),
    (".add_v_proj.", None),
    (".to_add_out.", None),
    (".norm_added_q.", None),
    (".norm_added_k.", None),
    (".to_q.", ".q_proj."),
    (".to_k.", ".k_proj."),
    (".to_v.", ".v_proj."),
    (".to_out.", ".o_proj."),
    (".norm_q.", ".q_norm."),
    (".norm_k.", ".k_norm."),
    (".input_quantizer.", None),
    (".weight_quantizer.", None),
    (".output_quantizer.", None),
]
VLLM_COSMOS3_PREFIX = [
    ("proj_in.", None),
    ("proj_out.", None),
    ("time_embedder.", None),
    ("audio_proj_in.", None),
    ("audio_proj_out.", None),
    ("action_proj_in.", None),
    ("action_proj_out.", None),
    ("lm_head.", "language_model.lm_head."),
]


def vllm_cosmos3_map(key):
    for pat, new in VLLM_COSMOS3_REGEX:
        if pat.search(key):
            if new is None:
                return None
            key = pat.sub(new, key)
    for sub, new in VLLM_COSMOS3_SUBSTR:
        if sub in key:
            if new is None:
                return None
            key = key.replace(sub, new, 1)
    for pre, new in VLLM_COSMOS3_PREFIX:
        if key.startswith(pre):
            if new is None:
                return None
            key = new + key[len(pre):]
    return key


def vllm_to_hf(key):
    """vLLM Qwen3-VL module name -> transformers 5 state-dict name."""
    if key.startswith("language_model.model."):
        return "model.language_model." + key[len("language_model.model."):]
    if key.startswith("language_model.lm_head."):
        return key[len("language_model."):]
    if key.startswith("visual."):
        return "model." + key
    raise KeyError(key)


def cosmos3_junk(gen):
    """Tensors of the generation tower / quantizers a Cosmos3 reasoner loader must skip."""
    r = lambda *s: (0.05 * torch.randn(*s, generator=gen)).float()  # noqa: E731
    return {
        "transformer": {
            "layers.0.self_attn.add_q_proj.weight": r(64, 64),
            "layers.0.self_attn.to_add_out.weight": r(64, 64),
            "layers.1.self_attn.norm_added_k.weight": r(16),
            "layers.0.mlp_moe_gen.up.weight": r(32, 64),
            "proj_in.weight": r(64, 16),
            "proj_out.bias": r(16),
            "time_embedder.linear_1.weight": r(64, 32),
            "audio_modality_embed": r(64),
            "action_modality_embed": r(64),
            "audio_proj_in.weight": r(64, 8),
            "action_proj_out.weight": r(8, 64),
            "layers.0.self_attn.to_q.input_quantizer._amax": r(1).abs(),
            "layers.2.mlp.down_proj.weight_quantizer._amax": r(1).abs(),
        },
        "vision_encoder": {},
    }


def write_hub_processor_files(out_dir):
    pp = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": MEAN_STD,
        "image_std": MEAN_STD,
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "merge_size": MERGE,
        "patch_size": PATCH,
        "processor_class": "Qwen3VLProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255,
        "size": {"longest_edge": 16 * 32 * 32 * 4, "shortest_edge": 32 * 32 * 4},
        "temporal_patch_size": TPATCH,
    }
    vp = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "do_sample_frames": True,
        "fps": 2,
        "image_mean": MEAN_STD,
        "image_std": MEAN_STD,
        "max_frames": 768,
        "merge_size": MERGE,
        "min_frames": 4,
        "patch_size": PATCH,
        "processor_class": "Qwen3VLProcessor",
        "resample": 3,
        "rescale_factor": 1.0 / 255,
        "return_metadata": False,
        "size": {"longest_edge": MAX_PIXELS, "shortest_edge": MIN_PIXELS},
        "temporal_patch_size": TPATCH,
        "video_processor_type": "Qwen3VLVideoProcessor",
    }
    for name, obj in (("preprocessor_config.json", pp), ("video_preprocessor_config.json", vp), ("chat_template.json", {"chat_template": CHAT_TEMPLATE})):
        with open(os.path.join(out_dir, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    with open(os.path.join(out_dir, "chat_template.jinja"), "w") as f:
        f.write(CHAT_TEMPLATE)


def clean_dir(d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)


def fmt_time(t):
    return f"<{t:.1f} seconds>"


def pair_times(times, tpatch=TPATCH):
    ts = list(times)
    while len(ts) % tpatch:
        ts.append(ts[-1])
    return [(ts[i] + ts[i + tpatch - 1]) / 2 for i in range(0, len(ts), tpatch)]


def expand_video(prompt, grid, times):
    """The vLLM / transformers<=4.57 replacement of the template's whole video block."""
    block = "<|vision_start|><|video_pad|><|vision_end|>"
    assert prompt.count(block) == 1, prompt
    t, h, w = (int(x) for x in grid)
    per = (h // MERGE) * (w // MERGE)
    pts = pair_times(times)
    assert len(pts) == t, (pts, grid)
    rep = "".join(fmt_time(tk) + "<|vision_start|>" + "<|video_pad|>" * per + "<|vision_end|>" for tk in pts)
    return prompt.replace(block, rep)


def rope_index_v4(ids, grid, video_id):
    """transformers<=4.57 / vLLM Qwen3-VL rule, written independently: per frame run
    (cur, cur+h, cur+w); next start = max position so far + 1."""
    t, h, w = (int(x) for x in grid)
    gh, gw = h // MERGE, w // MERGE
    L = len(ids)
    pos = np.zeros((3, L), dtype=np.int64)
    cur, i, frames = 0, 0, 0
    while i < L:
        if ids[i] == video_id:
            n = gh * gw
            assert ids[i : i + n] == [video_id] * n
            k = i
            for hh in range(gh):
                for ww in range(gw):
                    pos[:, k] = (cur, cur + hh, cur + ww)
                    k += 1
            frames += 1
            i += n
        else:
            j = i
            while j < L and ids[j] != video_id:
                j += 1
            pos[:, i:j] = cur + np.arange(j - i)
            i = j
        cur = int(pos[:, :i].max()) + 1
    assert frames == (t if t else 0)
    return pos, int(pos.max()) + 1 - L


def mm_types(ids, ids_map):
    t = torch.zeros_like(ids)
    t[ids == ids_map["<|image_pad|>"]] = 1
    t[ids == ids_map["<|video_pad|>"]] = 2
    return t


def greedy_generate(model, gen_cfg, batch):
    with torch.no_grad():
        out = model.generate(**batch, generation_config=gen_cfg)
    L = batch["input_ids"].shape[1]
    assert out.shape[1] == L + NEW_TOKENS, out.shape
    return out[0, L:].tolist()


def uncached_argmax(model, batch, tokens):
    """Greedy by full uncached forwards over prompt + tokens so far (positions by the model)."""
    ids = batch["input_ids"]
    got = []
    with torch.no_grad():
        for step in range(NEW_TOKENS):
            cur = torch.cat([ids, torch.tensor([tokens[:step]], dtype=ids.dtype)], dim=1)
            b = dict(batch)
            b["input_ids"] = cur
            b["attention_mask"] = torch.ones_like(cur)
            if "mm_token_type_ids" in b:
                b["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros((1, step), dtype=cur.dtype)], dim=1)
            model.model.rope_deltas = None
            o = model(**b, use_cache=False)
            got.append(int(o.logits[0, -1].argmax()))
    model.model.rope_deltas = None
    return got


def main():
    t0 = time.time()
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    assert hashlib.sha256(CHAT_TEMPLATE.encode()).hexdigest() == CHAT_TEMPLATE_SHA256, "not the Qwen3-VL-Instruct template"
    out_dir = os.path.join(HERE, "tiny")
    old_dir = os.path.join(HERE, "tiny-oldprefix")
    cos_dir = os.path.join(HERE, "tiny-cosmos3")
    fixture_path = os.path.join(HERE, "tiny_fixture.safetensors")
    clean_dir(out_dir)

    # ---- tokenizer, config, weights
    tokenizer, ids = build_tokenizer()
    im_end, eot = ids["<|im_end|>"], ids["<|endoftext|>"]
    video_id = ids["<|video_pad|>"]
    cfg = build_config(ids)
    model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    norm_mods = reinit_(model)
    model.eval()
    # hub Qwen3-VL-Instruct generation_config.json (sampling settings; the fixture is greedy)
    model.generation_config = GenerationConfig(
        bos_token_id=eot, pad_token_id=eot, eos_token_id=[im_end, eot], do_sample=True, top_k=20, top_p=0.8, temperature=0.7, repetition_penalty=1.0
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    write_hub_processor_files(out_dir)
    with open(os.path.join(out_dir, "config.json")) as f:
        cfg_json = json.load(f)
    with open(os.path.join(out_dir, "config.hub.json"), "w") as f:
        json.dump(hub_config(cfg_json), f, indent=2)
        f.write("\n")
    assert cfg_json["text_config"]["rope_parameters"]["mrope_interleaved"] is True
    assert cfg_json["vision_config"]["deepstack_visual_indexes"] == [0, 2]

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as st:
        weight_keys = sorted(st.keys())
        assert sorted(sd) == weight_keys, set(sd) ^ set(weight_keys)
        for k in weight_keys:
            assert torch.equal(st.get_tensor(k), sd[k]), k
    assert all(k.startswith(("model.language_model.", "model.visual.", "lm_head.")) for k in weight_keys)
    # every LayerNorm has a random bias, every vision Linear/Conv a bias
    assert any(k.endswith("norm1.bias") for k in weight_keys) and "model.visual.patch_embed.proj.bias" in sd
    assert not any(k.endswith("q_proj.bias") for k in weight_keys)  # attention_bias=False

    # ---- the old-prefix copy
    clean_dir(old_dir)
    for f in os.listdir(out_dir):
        if f != "model.safetensors":
            shutil.copy(os.path.join(out_dir, f), os.path.join(old_dir, f))
    save_file({to_oldprefix(k): v.contiguous() for k, v in sd.items()}, os.path.join(old_dir, "model.safetensors"), metadata={"format": "pt"})

    # ---- the Cosmos3 (diffusers-style) copy
    clean_dir(cos_dir)
    gen = torch.Generator().manual_seed(7)
    parts = cosmos3_junk(gen)
    for k, v in sd.items():
        sub, n = to_cosmos3(k)
        assert n not in parts[sub], n
        parts[sub][n] = v.contiguous()
    os.makedirs(os.path.join(cos_dir, "transformer"))
    os.makedirs(os.path.join(cos_dir, "vision_encoder"))
    tkeys = sorted(parts["transformer"])
    half = len(tkeys) // 2
    shards = {
        "diffusion_pytorch_model-00001-of-00002.safetensors": tkeys[:half],
        "diffusion_pytorch_model-00002-of-00002.safetensors": tkeys[half:],
    }
    weight_map, total = {}, 0
    for fname, keys in shards.items():
        save_file({k: parts["transformer"][k] for k in keys}, os.path.join(cos_dir, "transformer", fname), metadata={"format": "pt"})
        for k in keys:
            weight_map[k] = fname
            total += parts["transformer"][k].numel() * parts["transformer"][k].element_size()
    with open(os.path.join(cos_dir, "transformer", "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    save_file(parts["vision_encoder"], os.path.join(cos_dir, "vision_encoder", "model.safetensors"), metadata={"format": "pt"})
    cos_cfg = dict(cfg_json)
    cos_cfg["architectures"] = ["Cosmos3ForConditionalGeneration"]
    with open(os.path.join(cos_dir, "config.json"), "w") as f:
        json.dump(cos_cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(cos_dir, "model_index.json"), "w") as f:
        json.dump(
            {
                "_class_name": "Cosmos3Pipeline",
                "_diffusers_version": "0.36.0",
                "transformer": ["diffusers", "Cosmos3Transformer"],
                "vision_encoder": ["transformers", "Qwen3VLVisionModel"],
                "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
            },
            f,
            indent=2,
        )
        f.write("\n")
    for f in os.listdir(out_dir):
        if f not in ("model.safetensors", "config.json", "config.hub.json"):
            shutil.copy(os.path.join(out_dir, f), os.path.join(cos_dir, f))
    # vLLM's rules on the files it reads ([tv]*er/*.safetensors) give back the HF state dict
    recovered, dropped = {}, []
    for sub in ("transformer", "vision_encoder"):
        for fname in sorted(os.listdir(os.path.join(cos_dir, sub))):
            if not fname.endswith(".safetensors"):
                continue
            for k, v in load_file(os.path.join(cos_dir, sub, fname)).items():
                m = vllm_cosmos3_map(k)
                if m is None:
                    dropped.append(k)
                    continue
                hk = vllm_to_hf(m)
                assert hk not in recovered, hk
                recovered[hk] = v
    assert sorted(recovered) == sorted(sd), set(recovered) ^ set(sd)
    for k in sd:
        assert torch.equal(recovered[k], sd[k]), k
    assert sorted(dropped) == sorted(k for p in cosmos3_junk(torch.Generator().manual_seed(7)).values() for k in p), dropped

    # ---- reloads
    reloaded = Qwen3VLForConditionalGeneration.from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32).eval()
    old_model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
    old_sd = load_file(os.path.join(old_dir, "model.safetensors"))
    assert all(k.startswith(("model.", "visual.", "lm_head.")) and not k.startswith("model.language_model.") for k in old_sd)
    old_model.load_state_dict({from_oldprefix(k): v for k, v in old_sd.items()}, strict=True)
    transformers.logging.set_verbosity_error()
    try:  # does transformers itself read the old names? (reported only)
        m_old_direct = Qwen3VLForConditionalGeneration.from_pretrained(old_dir, attn_implementation="eager", dtype=torch.float32)
        old_direct_ok = all(torch.equal(a, sd[k]) for k, a in m_old_direct.state_dict().items())
        del m_old_direct
    except Exception as e:  # noqa: BLE001
        old_direct_ok = f"error: {type(e).__name__}"
    transformers.logging.set_verbosity_warning()
    cos_model = Qwen3VLForConditionalGeneration._from_config(cfg, attn_implementation="eager", dtype=torch.float32).eval()
    cos_model.load_state_dict(recovered, strict=True)
    rc = reloaded.config
    assert rc.text_config.rope_parameters["mrope_section"] == [2, 3, 3] and rc.text_config.rope_parameters["mrope_interleaved"]
    assert rc.vision_config.num_position_embeddings == 64 and rc.vision_config.deepstack_visual_indexes == [0, 2]
    hub_cfg = Qwen3VLConfig.from_dict(hub_config(cfg_json))  # the hub spelling parses to the same rope
    assert hub_cfg.text_config.rope_parameters["rope_theta"] == 5e6 and hub_cfg.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    assert hub_cfg.text_config.rope_parameters.get("mrope_interleaved") is True
    assert hub_cfg.vision_config.model_type == "qwen3_vl_vision"

    # ---- processors: direct, and as loaded from tiny/
    vp_direct = Qwen3VLVideoProcessor(
        size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        patch_size=PATCH, temporal_patch_size=TPATCH, merge_size=MERGE, image_mean=MEAN_STD, image_std=MEAN_STD,
    )
    vp = transformers.AutoVideoProcessor.from_pretrained(out_dir)
    assert isinstance(vp, Qwen3VLVideoProcessor), type(vp)
    assert dict(vp.size) == {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}, vp.size
    assert list(vp.image_mean) == MEAN_STD and vp.patch_size == PATCH
    ip = Qwen2VLImageProcessor(patch_size=PATCH, merge_size=MERGE, temporal_patch_size=TPATCH, image_mean=MEAN_STD, image_std=MEAN_STD)
    proc = Qwen3VLProcessor(image_processor=ip, tokenizer=tokenizer, video_processor=vp, chat_template=CHAT_TEMPLATE)
    raw_tok = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    tok2 = transformers.AutoTokenizer.from_pretrained(out_dir)

    def encode(text):
        enc = raw_tok.encode(text, add_special_tokens=False).ids
        assert enc == tokenizer(text, add_special_tokens=False)["input_ids"] == tok2(text, add_special_tokens=False)["input_ids"]
        assert raw_tok.decode(enc, skip_special_tokens=False) == text
        return enc

    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == tok2.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expect = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Describe the video.<|im_end|>\n<|im_start|>assistant\n"
    assert prompt == expect, repr(prompt)

    # The saved generation_config.json has the hub's sampling settings and eos ids; the fixture
    # decode is plain argmax with no stop token, so the live model gets a config without eos.
    for m in (model, reloaded, old_model, cos_model):
        m.generation_config = GenerationConfig(bos_token_id=eot, pad_token_id=eot)
    gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, pad_token_id=eot, bos_token_id=eot)
    tensors, meta_cases = {}, {}
    for name, (h, w, times) in CASES.items():
        n = len(times)
        frames = np.stack([pattern(t, h, w) for t in range(n)])  # (T, H, W, 3) uint8
        vid = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()  # (T, C, H, W)
        fps = (n - 1) / (times[-1] - times[0])
        vkw = dict(do_sample_frames=False, cap_pixels_per_frame=True)
        md = [{"fps": fps, "total_num_frames": n, "frames_indices": list(range(n))}]
        vout = vp(videos=[vid], video_metadata=md, return_tensors="pt", **vkw)
        vout_d = vp_direct(videos=[vid], video_metadata=md, return_tensors="pt", **vkw)
        pv, grid = vout["pixel_values_videos"].float(), vout["video_grid_thw"]
        assert torch.equal(pv, vout_d["pixel_values_videos"]) and torch.equal(grid, vout_d["video_grid_thw"])
        # the resize the processor made, by the smart_resize rule (documented in metadata)
        ppf = max(min(vp.max_video_tokens * 32 * 32, MAX_PIXELS // n), int(MIN_PIXELS * 1.05))
        rh, rw = smart_resize(n, h, w, temporal_factor=TPATCH, factor=PATCH * MERGE, min_pixels=MIN_PIXELS, max_pixels=ppf * n)
        assert grid[0].tolist() == [(n + 1) // 2, rh // PATCH, rw // PATCH], (grid, rh, rw)

        # transformers 5.24's processor, for comparison only
        p524 = proc(text=[prompt], videos=[vid], return_tensors="pt", videos_kwargs=dict(video_metadata=md, **vkw))
        assert torch.equal(p524["pixel_values_videos"].float(), pv) and torch.equal(p524["video_grid_thw"], grid)
        p524_text = tokenizer.decode(p524["input_ids"][0].tolist(), skip_special_tokens=False)

        full_prompt = expand_video(prompt, grid[0].tolist(), times)
        input_ids = torch.tensor(encode(full_prompt), dtype=torch.long)
        L = input_ids.shape[0]
        n_vid = int((input_ids == video_id).sum())
        assert n_vid == int(grid[0].prod()) // (MERGE * MERGE)
        assert int((input_ids == ids["<|vision_start|>"]).sum()) == int(grid[0, 0])
        mm = mm_types(input_ids, ids)

        model.model.rope_deltas = None
        pos, delta = model.model.get_rope_index(input_ids[None], mm_token_type_ids=mm[None], video_grid_thw=grid.clone())
        pos = pos[:, 0]
        delta = int(delta.reshape(-1)[0])
        pos_v4, delta_v4 = rope_index_v4(input_ids.tolist(), grid[0].tolist(), video_id)
        assert np.array_equal(pos.numpy(), pos_v4) and delta == delta_v4, "5.24 get_rope_index != 4.57/vLLM rule"

        batch = {
            "input_ids": input_ids[None],
            "attention_mask": torch.ones_like(input_ids)[None],
            "pixel_values_videos": pv,
            "video_grid_thw": grid,
            "mm_token_type_ids": mm[None],
        }
        with torch.no_grad():
            vis = model.model.visual(pv, grid_thw=grid)
            vision_embeds = vis.pooler_output.float()
            ds = [d.float() for d in vis.deepstack_features]
            assert len(ds) == 2 and all(d.shape == vision_embeds.shape for d in ds)
            assert vision_embeds.shape == (n_vid, 64)
            model.model.rope_deltas = None
            out = model(**batch)
            logits = out.logits[0].float()
            # explicit positions give the same logits
            model.model.rope_deltas = None
            out_p = model(**batch, position_ids=pos[:, None, :])
            assert torch.equal(out_p.logits[0], logits)
            # reloaded / old-prefix / Cosmos3-recovered models give identical logits
            for m in (reloaded, old_model, cos_model):
                m.model.rope_deltas = None
                assert torch.equal(m(**batch).logits[0], logits)
                m.model.rope_deltas = None
            # logits depend on the video (other frames, same grid)
            frames2 = np.stack([pattern(t + 11, h, w) for t in range(n)])
            vid2 = torch.from_numpy(frames2).permute(0, 3, 1, 2).contiguous()
            pv2 = vp(videos=[vid2], video_metadata=md, return_tensors="pt", **vkw)["pixel_values_videos"].float()
            model.model.rope_deltas = None
            logits2 = model(**dict(batch, pixel_values_videos=pv2)).logits[0]
            first_vid = int((input_ids == video_id).nonzero().min())
            assert torch.equal(logits2[:first_vid], logits[:first_vid])
            vdiff = float((logits2[-1] - logits[-1]).abs().max())
            assert vdiff > 1e-3, vdiff
        model.model.rope_deltas = None
        greedy = greedy_generate(model, gen_cfg, batch)
        assert uncached_argmax(model, batch, greedy) == greedy, "cached vs uncached greedy"
        assert torch.isfinite(logits).all() and float(logits.std(dim=0).mean()) > 1e-2
        assert len(set(greedy)) > 1, greedy

        p = f"{name}."
        tensors[p + "pixel_values"] = pv.contiguous()
        tensors[p + "grid_thw"] = grid[0].to(torch.int64).contiguous()
        tensors[p + "times"] = torch.tensor(times, dtype=torch.float64)
        tensors[p + "input_ids"] = input_ids.to(torch.int64).contiguous()
        tensors[p + "position_ids"] = pos.to(torch.int64).contiguous()
        tensors[p + "rope_delta"] = torch.tensor([delta], dtype=torch.int64)
        tensors[p + "vision_embeds"] = vision_embeds.contiguous()
        tensors[p + "deepstack.0"] = ds[0].contiguous()
        tensors[p + "deepstack.1"] = ds[1].contiguous()
        tensors[p + "logits"] = logits.contiguous()
        tensors[p + "greedy"] = torch.tensor(greedy, dtype=torch.int64)
        eos_pos = [i for i, t in enumerate(greedy) if t in (im_end, eot)]
        meta_cases[name] = {
            "frames": n,
            "size": [h, w],
            "resized": [rh, rw],
            "times": times,
            "fps": fps,
            "pixels_per_frame_budget": ppf,
            "grid_thw": grid[0].tolist(),
            "pair_times": pair_times(times),
            "L": L,
            "video_tokens": n_vid,
            "rope_delta": delta,
            "prompt": full_prompt,
            "processor_5_24_prompt": p524_text,
            "processor_5_24_input_ids_len": int(p524["input_ids"].shape[1]),
            "greedy_eos_positions": eos_pos,
            "max_abs_last_logit_change_other_video": vdiff,
        }
        print(
            f"{name}: {n}f {h}x{w} -> {rh}x{rw} grid={grid[0].tolist()} L={L} vid={n_vid} delta={delta} "
            f"tags={[fmt_time(t) for t in pair_times(times)]} greedy[:8]={greedy[:8]} eos_at={eos_pos}",
            file=sys.stderr,
        )

    # ---- text-only case (the element's summary calls)
    tmsg = [{"role": "system", "content": TEXT_SYSTEM}, {"role": "user", "content": TEXT_USER}]
    tprompt = tokenizer.apply_chat_template(tmsg, tokenize=False, add_generation_prompt=True)
    assert tprompt == f"<|im_start|>system\n{TEXT_SYSTEM}<|im_end|>\n<|im_start|>user\n{TEXT_USER}<|im_end|>\n<|im_start|>assistant\n", repr(tprompt)
    tids = torch.tensor(encode(tprompt), dtype=torch.long)
    tbatch = {"input_ids": tids[None], "attention_mask": torch.ones_like(tids)[None]}
    model.model.rope_deltas = None
    with torch.no_grad():
        tlogits = model(**tbatch).logits[0].float()
        model.model.rope_deltas = None
        tpos = torch.arange(len(tids)).expand(3, -1).contiguous()
        assert torch.equal(model(**tbatch, position_ids=tpos[:, None, :]).logits[0], tlogits)
        for m in (reloaded, old_model, cos_model):
            m.model.rope_deltas = None
            assert torch.equal(m(**tbatch).logits[0], tlogits)
    model.model.rope_deltas = None
    tgreedy = greedy_generate(model, gen_cfg, tbatch)
    assert uncached_argmax(model, tbatch, tgreedy) == tgreedy
    tensors["text.input_ids"] = tids.to(torch.int64)
    tensors["text.position_ids"] = tpos.to(torch.int64)
    tensors["text.logits"] = tlogits.contiguous()
    tensors["text.greedy"] = torch.tensor(tgreedy, dtype=torch.int64)
    print(f"text: L={len(tids)} greedy[:8]={tgreedy[:8]}", file=sys.stderr)

    meta = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "prompt_text": PROMPT,
        "chat_template": "Qwen3-VL-Instruct (real), sha256 " + CHAT_TEMPLATE_SHA256,
        "rendered_template": prompt,
        "prompt_rule": PROMPT_RULE,
        "fps_rule": FPS_RULE,
        "rope_rule": ROPE_RULE,
        "greedy_rule": GREEDY_RULE,
        "frames": "pattern(t, h, w) of tests/qwen/make_preprocess_fixture.py, t = 0..n-1",
        "processor": {
            "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
            "cap_pixels_per_frame": True,
            "pixels_per_frame": "max(min(max_video_tokens(768)*32*32, longest_edge // n), int(shortest_edge*1.05)); "
            "max_pixels = that * n; smart_resize(n, h, w, temporal_factor 2, factor 32, min_pixels=shortest_edge, max_pixels): "
            "t_bar = round(n/2)*2 (half to even), h_bar/w_bar = round(x/32)*32 (half to even); if t_bar*h_bar*w_bar > "
            "max_pixels: beta = sqrt(n*h*w/max_pixels) (n, not t_bar), h_bar = max(32, floor(h/beta/32)*32); elif < "
            "min_pixels: beta = sqrt(min_pixels/(n*h*w)), h_bar = ceil(h*beta/32)*32; resize bicubic antialias; pad the "
            "frame count to even by repeating the last frame",
            "mean_std": MEAN_STD,
        },
        "special_ids": ids,
        "text_case": {"system": TEXT_SYSTEM, "user": TEXT_USER, "rendered": tprompt, "greedy_eos_positions": [i for i, t in enumerate(tgreedy) if t in (im_end, eot)]},
        "deepstack": "deepstack.i = deepstack_merger_list[i](output of vision block deepstack_visual_indexes[i]); added at the "
        "video token positions to the hidden states after decoder layer i",
        "checkpoint_prefixes": {
            "tiny": "model.language_model.*, model.visual.*, lm_head.weight",
            "tiny-oldprefix": "model.*, visual.*, lm_head.weight",
            "tiny-oldprefix_loads_directly_in_transformers_5_24": old_direct_ok,
        },
        "cosmos3": {
            "dropped_by_vllm_rules": sorted(dropped),
            "note": "config.json keeps model_type qwen3_vl; third-party notes say the native Cosmos3 checkpoint's "
            "config has model_type cosmos3_omni (unverified)",
        },
        "cases": meta_cases,
    }
    save_file(tensors, fixture_path, metadata={"info": json.dumps(meta)})

    total = 0
    for root, _, files in os.walk(HERE):
        for f in files:
            if f.endswith((".py",)) or "__pycache__" in root:
                continue
            total += os.path.getsize(os.path.join(root, f))
    print(f"old-prefix copy loads directly in transformers: {old_direct_ok}", file=sys.stderr)
    print(f"tests/qwen3 data total {total} bytes; fixture {os.path.getsize(fixture_path)} bytes; "
          f"{len(norm_mods)} norm modules; {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
