// SPDX-License-Identifier: MPL-2.0
//! The Qwen2 decoder of Qwen2.5-VL: attention with q/k/v biases and
//! M-RoPE, a SiLU-gated MLP, a KV cache.

use candle_core::{DType, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

use super::config::TextConfig;
use crate::backend::cosmos::linear::Lin;
use crate::backend::cosmos::ops::{silu_mul, CausalSoftmax, KvCache};
use crate::backend::cosmos::pointwise::{qkv_heads, RmsNorm};

pub(super) struct Attention {
    /// `[q | k | v]` in one matmul.
    qkv: Lin,
    o: Lin,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pub(super) cache: KvCache,
}

impl Attention {
    fn load(c: &TextConfig, vb: VarBuilder) -> CResult<Self> {
        let (h, hd) = (c.hidden_size, c.head_dim);
        Ok(Attention {
            qkv: Lin::load_fused(
                &[vb.pp("q_proj"), vb.pp("k_proj"), vb.pp("v_proj")],
                h,
                &[
                    c.num_attention_heads * hd,
                    c.num_key_value_heads * hd,
                    c.num_key_value_heads * hd,
                ],
                true,
            )?,
            o: Lin::load(vb.pp("o_proj"), c.num_attention_heads * hd, h, false)?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
            cache: KvCache::default(),
        })
    }

    /// `residual +` the attention of `x`: causal over the new tokens,
    /// everything cached visible.
    fn forward(
        &mut self,
        x: &Tensor,
        residual: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        causal: &CausalSoftmax,
        last_only: bool,
    ) -> CResult<Tensor> {
        let l = x.dim(0)?;
        let hd = self.head_dim;
        let (hs, kvs) = (self.heads, self.kv_heads);
        // Heads first, (heads, l, hd), RoPE on q and k; the scale on q
        // rather than on the scores.
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = qkv_heads(&self.qkv.forward(x)?, [hs, kvs, kvs], hd, (cos, sin), scale)?;
        let (k, v) = self.cache.append(&k, &v)?;
        if last_only && l > 1 {
            // Only the last token's output is used (the last layer of a
            // prefill that wants the last logits): every token's k and v go
            // to the cache, but the attention, o_proj (and the MLP after
            // it) run on the last row alone; it sees every key.
            let q = q.narrow(1, l - 1, 1)?.to_dtype(DType::F32)?;
            let o = CausalSoftmax::Plain
                .attend(&q, &k, &v)?
                .transpose(0, 1)?
                .reshape((1, hs * hd))?;
            return self.o.forward_add(&o, &residual.narrow(0, l - 1, 1)?);
        }
        // Grouped-query attention without repeating k and v.
        let o = causal
            .attend(&q.to_dtype(DType::F32)?, &k, &v)?
            .transpose(0, 1)?
            .reshape((l, self.heads * hd))?;
        self.o.forward_add(&o, residual)
    }
}

pub(super) struct DecoderLayer {
    pub(super) attn: Attention,
    norm1: RmsNorm,
    norm2: RmsNorm,
    /// `[gate | up]` in one matmul.
    gate_up: Lin,
    down: Lin,
}

impl DecoderLayer {
    pub(super) fn load(c: &TextConfig, vb: VarBuilder) -> CResult<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(DecoderLayer {
            attn: Attention::load(c, vb.pp("self_attn"))?,
            norm1: RmsNorm::load(h, c.rms_norm_eps, vb.pp("input_layernorm"))?,
            norm2: RmsNorm::load(h, c.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            gate_up: Lin::load_fused(
                &[vb.pp("mlp.gate_proj"), vb.pp("mlp.up_proj")],
                h,
                &[i, i],
                false,
            )?,
            down: Lin::load(vb.pp("mlp.down_proj"), i, h, false)?,
        })
    }

    pub(super) fn forward(
        &mut self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        causal: &CausalSoftmax,
        last_only: bool,
    ) -> CResult<Tensor> {
        let x = self
            .attn
            .forward(&self.norm1.forward(x)?, x, cos, sin, causal, last_only)?;
        let h = self.norm2.forward(&x)?;
        self.down
            .forward_add(&silu_mul(&self.gate_up.forward(&h)?)?, &x)
    }
}
