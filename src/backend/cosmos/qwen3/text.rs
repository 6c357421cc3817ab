// SPDX-License-Identifier: MPL-2.0
//! The Qwen3-VL text decoder: Qwen3 attention (q/k/v without bias unless
//! the config says so, per-head RMS norm of q and k before RoPE), the
//! interleaved M-RoPE, a SiLU-gated MLP, a KV cache, and the DeepStack
//! features added at the visual positions after the first decoder layers.

use candle_core::{DType, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

use super::config::TextConfig;
use crate::backend::cosmos::linear::Lin;
use crate::backend::cosmos::ops::{silu_mul, CausalSoftmax, KvCache};
use crate::backend::cosmos::pointwise::{qkv_heads_normed, QkNorm, RmsNorm};

pub struct Attention {
    /// `[q | k | v]` in one matmul.
    qkv: Lin,
    o: Lin,
    norm: QkNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pub cache: KvCache,
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
                c.attention_bias,
            )?,
            o: Lin::load(
                vb.pp("o_proj"),
                c.num_attention_heads * hd,
                h,
                c.attention_bias,
            )?,
            norm: QkNorm::load(hd, c.rms_norm_eps, vb.clone())?,
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: hd,
            cache: KvCache::default(),
        })
    }

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
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = qkv_heads_normed(
            &self.qkv.forward(x)?,
            [hs, kvs, kvs],
            hd,
            (cos, sin),
            scale,
            Some(&self.norm),
        )?;
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
        let o = causal
            .attend(&q.to_dtype(DType::F32)?, &k, &v)?
            .transpose(0, 1)?
            .reshape((l, hs * hd))?;
        self.o.forward_add(&o, residual)
    }
}

pub struct DecoderLayer {
    pub attn: Attention,
    norm1: RmsNorm,
    norm2: RmsNorm,
    gate_up: Lin,
    down: Lin,
}

impl DecoderLayer {
    pub fn load(c: &TextConfig, vb: VarBuilder) -> CResult<Self> {
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

    pub fn forward(
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

/// Which M-RoPE axis (0 = t, 1 = h, 2 = w) rotary frequency `i` follows:
/// t, except `i ≡ 1 (mod 3)` below `3 · section[1]` (h) and `i ≡ 2 (mod 3)`
/// below `3 · section[2]` (w) — transformers' `recomposition_frequencies`.
pub fn interleaved_axis(i: usize, section: [usize; 3]) -> usize {
    match i % 3 {
        1 if i < 3 * section[1] => 1,
        2 if i < 3 * section[2] => 2,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving_follows_transformers() {
        // [24, 20, 20] over 64 frequencies: h at 1, 4, …, 58; w at 2, 5, …, 59; t elsewhere.
        let s = [24, 20, 20];
        let axes: Vec<usize> = (0..64).map(|i| interleaved_axis(i, s)).collect();
        assert_eq!(&axes[..6], &[0, 1, 2, 0, 1, 2]);
        assert_eq!(axes[58], 1);
        assert_eq!(axes[59], 2);
        assert_eq!(&axes[60..], &[0, 0, 0, 0]);
        assert_eq!(axes.iter().filter(|&&a| a == 0).count(), 24);
        assert_eq!(axes.iter().filter(|&&a| a == 1).count(), 20);
        // The tiny fixture's [2, 3, 3] over 8.
        let axes: Vec<usize> = (0..8).map(|i| interleaved_axis(i, [2, 3, 3])).collect();
        assert_eq!(axes, vec![0, 1, 2, 0, 1, 2, 0, 1]);
    }
}
