// SPDX-License-Identifier: MPL-2.0
//! The language-model half both families share: the decoder layer (q/k/v
//! in one matmul, M-RoPE, grouped-query attention over a KV cache, a
//! SiLU-gated MLP), the token embedding with the video rows put in, the
//! final norm and `lm_head`, and the rotary tables. What differs between
//! Qwen2.5-VL's Qwen2 decoder and Qwen3-VL's Qwen3 one is data
//! ([`LayerSpec`]: q/k/v and o biases, per-head q/k RMS norm) or the M-RoPE
//! axis of each frequency (contiguous sections or interleaved, passed to
//! [`mrope`]); Qwen3-VL's DeepStack additions stay in its own forward loop.

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::error::CosmosError;
use super::linear::Lin;
use super::ops::{silu_mul, CausalSoftmax, KvCache};
use super::pointwise::{qkv_heads_normed, QkNorm, RmsNorm};

/// Candle's error while the model runs.
fn err(e: candle_core::Error) -> CosmosError {
    CosmosError::Inference(e.to_string())
}

/// The shape of one decoder layer, from a family's text config.
#[derive(Clone, Copy, Debug)]
pub struct LayerSpec {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Biases on q, k and v (Qwen2: always; Qwen3: `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on `o_proj` (Qwen2: never; Qwen3: `attention_bias`).
    pub o_bias: bool,
    /// Per-head RMS norm of q and k before RoPE (Qwen3's `q_norm`/`k_norm`).
    pub qk_norm: bool,
}

pub struct Attention {
    /// `[q | k | v]` in one matmul.
    qkv: Lin,
    o: Lin,
    norm: Option<QkNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pub cache: KvCache,
}

impl Attention {
    fn load(s: &LayerSpec, vb: VarBuilder) -> CResult<Self> {
        let (h, hd) = (s.hidden, s.head_dim);
        Ok(Attention {
            qkv: Lin::load_fused(
                &[vb.pp("q_proj"), vb.pp("k_proj"), vb.pp("v_proj")],
                h,
                &[s.heads * hd, s.kv_heads * hd, s.kv_heads * hd],
                s.qkv_bias,
            )?,
            o: Lin::load(vb.pp("o_proj"), s.heads * hd, h, s.o_bias)?,
            norm: if s.qk_norm {
                Some(QkNorm::load(hd, s.rms_norm_eps, vb.clone())?)
            } else {
                None
            },
            heads: s.heads,
            kv_heads: s.kv_heads,
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
        // Heads first, (heads, l, hd), (q/k norm and) RoPE on q and k; the
        // scale on q rather than on the scores.
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = qkv_heads_normed(
            &self.qkv.forward(x)?,
            [hs, kvs, kvs],
            hd,
            (cos, sin),
            scale,
            self.norm.as_ref(),
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
        // Grouped-query attention without repeating k and v.
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
    /// `[gate | up]` in one matmul.
    gate_up: Lin,
    down: Lin,
}

impl DecoderLayer {
    pub fn load(s: &LayerSpec, vb: VarBuilder) -> CResult<Self> {
        let (h, i) = (s.hidden, s.intermediate);
        Ok(DecoderLayer {
            attn: Attention::load(s, vb.pp("self_attn"))?,
            norm1: RmsNorm::load(h, s.rms_norm_eps, vb.pp("input_layernorm"))?,
            norm2: RmsNorm::load(h, s.rms_norm_eps, vb.pp("post_attention_layernorm"))?,
            gate_up: Lin::load_fused(
                &[vb.pp("mlp.gate_proj"), vb.pp("mlp.up_proj")],
                h,
                &[i, i],
                false,
            )?,
            down: Lin::load(vb.pp("mlp.down_proj"), i, h, false)?,
        })
    }

    /// With `last_only`, the output is the last row alone (see
    /// [`Attention`]'s forward).
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

/// The token embedding, the decoder layers, the final norm and `lm_head`
/// of a checkpoint's language model.
pub struct Decoder {
    embed: Embedding,
    pub layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Lin,
}

impl Decoder {
    /// `embed_tokens`, `layers.N` and `norm` under `tvb`; `lm_head` under
    /// `vb` (the checkpoint's root), or the embedding itself when the
    /// config ties them and the checkpoint has no `lm_head.weight`.
    pub fn load(
        s: &LayerSpec,
        layers: usize,
        vocab: usize,
        tie_word_embeddings: bool,
        tvb: VarBuilder,
        vb: VarBuilder,
    ) -> CResult<Decoder> {
        let embed = candle_nn::embedding(vocab, s.hidden, tvb.pp("embed_tokens"))?;
        let layers = (0..layers)
            .map(|i| DecoderLayer::load(s, tvb.pp(format!("layers.{i}"))))
            .collect::<CResult<Vec<_>>>()?;
        let norm = RmsNorm::load(s.hidden, s.rms_norm_eps, tvb.pp("norm"))?;
        let lm_head = if tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            Lin::shared(embed.embeddings().clone())
        } else {
            Lin::load(vb.pp("lm_head"), s.hidden, vocab, false)?
        };
        Ok(Decoder {
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// Token embeddings of `ids` with the rows of the `video_token`s
    /// replaced by `video`'s, in order; with a video, also the prompt
    /// positions of its tokens. A count that differs from `video`'s rows is
    /// an error.
    pub fn embed_prompt(
        &self,
        ids: &[u32],
        video_token: u32,
        video: Option<&Tensor>,
        device: &Device,
    ) -> Result<(Tensor, Option<Tensor>), CosmosError> {
        let idt = Tensor::new(ids, device).map_err(err)?;
        let x = self.embed.forward(&idt).map_err(err)?;
        let Some(v) = video else {
            return Ok((x, None));
        };
        let at: Vec<u32> = ids
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == video_token)
            .map(|(i, _)| i as u32)
            .collect();
        let n = v.dim(0).map_err(err)?;
        if at.len() != n {
            return Err(CosmosError::Inference(format!(
                "{} video tokens in the prompt for {n} vision embeddings",
                at.len()
            )));
        }
        let at = Tensor::from_vec(at, n, device).map_err(err)?;
        let v = v.to_dtype(x.dtype()).map_err(err)?;
        let x = x
            .index_add(&at, &(v - x.index_select(&at, 0)).map_err(err)?, 0)
            .map_err(err)?;
        Ok((x, Some(at)))
    }

    /// The logits (f32) of the decoder's output `x`: of its last row only
    /// when `last_only` (a last layer run with `last_only` already gives
    /// that one row).
    pub fn logits(&self, x: &Tensor, last_only: bool) -> CResult<Tensor> {
        let x = if last_only {
            x.narrow(0, x.dim(0)? - 1, 1)?
        } else {
            x.clone()
        };
        self.lm_head
            .forward(&self.norm.forward(&x)?)?
            .to_dtype(DType::F32)
    }

    /// Forgets the KV cache (start of a new prompt).
    pub fn clear_cache(&mut self) {
        for l in self.layers.iter_mut() {
            l.attn.cache.clear();
        }
    }

    /// Tokens in the KV cache.
    pub fn cache_len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.attn.cache.len())
    }
}

/// The rotary inverse frequencies `1 / theta^(i / dim)` for even `i` below
/// `dim` (`dim / 2` of them).
pub fn inv_freq(dim: usize, theta: f64) -> Vec<f32> {
    let theta = theta as f32;
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / theta.powf(i as f32 / dim as f32))
        .collect()
}

/// M-RoPE cos/sin (L, head_dim / 2) for position ids per axis (t, h, w):
/// frequency `i` follows the axis `axis(i)`.
pub fn mrope(
    pos: &[Vec<i64>; 3],
    head_dim: usize,
    theta: f64,
    axis: impl Fn(usize) -> usize,
    device: &Device,
) -> CResult<(Tensor, Tensor)> {
    let inv = inv_freq(head_dim, theta);
    let axis: Vec<usize> = (0..inv.len()).map(axis).collect();
    let l = pos[0].len();
    let mut f = Vec::with_capacity(l * inv.len());
    for ((&pt, &ph), &pw) in pos[0].iter().zip(&pos[1]).zip(&pos[2]) {
        let p = [pt, ph, pw];
        f.extend(inv.iter().zip(&axis).map(|(w, &a)| p[a] as f32 * w));
    }
    let f = Tensor::from_vec(f, (l, inv.len()), device)?;
    Ok((f.cos()?, f.sin()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrope_takes_each_frequency_from_its_axis() {
        let pos = [vec![0i64, 5], vec![1, 6], vec![2, 7]];
        // Four frequencies, axes t, h, w, t.
        let (cos, _) = mrope(&pos, 8, 10_000.0, |i| [0, 1, 2, 0][i], &Device::Cpu).unwrap();
        let inv = inv_freq(8, 10_000.0);
        assert_eq!(inv.len(), 4);
        assert_eq!(inv[0], 1.0);
        let cos = cos.to_vec2::<f32>().unwrap();
        let want = |p: i64, i: usize| (p as f32 * inv[i]).cos();
        assert_eq!(cos[1], vec![want(5, 0), want(6, 1), want(7, 2), want(5, 3)]);
        assert_eq!(cos[0][1], want(1, 1));
    }
}
