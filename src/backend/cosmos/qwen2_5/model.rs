// SPDX-License-Identifier: MPL-2.0
//! Qwen2.5-VL (= Cosmos-Reason1) with candle: the vision tower (patch
//! embedding as a matmul, 2-D RoPE, window attention with full-attention
//! layers, patch merger) and the Qwen2 decoder with M-RoPE and a KV cache.
//! Runs on candle's CPU backend in f32; sizes come from [`QwenConfig`].

use std::path::Path;

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::config::{QwenConfig, TextConfig, VisionConfig};
use crate::backend::cosmos::checkpoint::weight_files;
use crate::backend::cosmos::fp8::{self, Quantization};
use crate::backend::cosmos::linear::Lin;
use crate::backend::cosmos::ops::{self, silu_mul, CausalSoftmax, KvCache};
use crate::backend::cosmos::pointwise::{self, qkv_heads, RmsNorm};

use crate::backend::cosmos::error::CosmosError;

/// Candle's error while the model runs.
fn err(e: candle_core::Error) -> CosmosError {
    CosmosError::Inference(e.to_string())
}

/// Candle's error while the weights load.
fn load_err(e: candle_core::Error) -> CosmosError {
    CosmosError::Checkpoint(e.to_string())
}

fn softmax(x: &Tensor) -> CResult<Tensor> {
    ops::softmax_last_dim(x)
}

// ---------------------------------------------------------------- vision

struct VisionBlock {
    norm1: RmsNorm,
    norm2: RmsNorm,
    qkv: Lin,
    proj: Lin,
    /// `[gate | up]` in one matmul.
    gate_up: Lin,
    down: Lin,
    heads: usize,
    head_dim: usize,
}

impl VisionBlock {
    fn load(c: &VisionConfig, vb: VarBuilder) -> CResult<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(VisionBlock {
            norm1: RmsNorm::load(h, 1e-6, vb.pp("norm1"))?,
            norm2: RmsNorm::load(h, 1e-6, vb.pp("norm2"))?,
            qkv: Lin::load(vb.pp("attn.qkv"), h, 3 * h, true)?,
            proj: Lin::load(vb.pp("attn.proj"), h, h, true)?,
            gate_up: Lin::load_fused(
                &[vb.pp("mlp.gate_proj"), vb.pp("mlp.up_proj")],
                h,
                &[i, i],
                true,
            )?,
            down: Lin::load(vb.pp("mlp.down_proj"), i, h, true)?,
            heads: c.num_heads,
            head_dim: h / c.num_heads,
        })
    }

    /// `spans`: consecutive [start, end) row ranges attended within.
    fn forward(&self, x: &Tensor, spans: &[usize], cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
        let n = x.dim(0)?;
        let (hs, hd) = (self.heads, self.head_dim);
        let h = self.norm1.forward(x)?;
        let dt = x.dtype();
        // RoPE and attention in f32 whatever the weights' type (as HF does),
        // heads first (heads, rows, head_dim); the scale on q (rows ×
        // head_dim) rather than on the scores.
        let qkv = self.qkv.forward(&h)?.to_dtype(DType::F32)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = qkv_heads(&qkv, [hs, hs, hs], hd, (cos, sin), scale)?;
        let o = match ops::span_attention(&q, &k, &v, spans)? {
            Some(o) => o,
            None => batched_span_attention(&q, &k, &v, spans)?,
        };
        let attn = o.transpose(0, 1)?.reshape((n, hs * hd))?.to_dtype(dt)?;
        let x = self.proj.forward_add(&attn, x)?;
        let h = self.norm2.forward(&x)?;
        self.down
            .forward_add(&silu_mul(&self.gate_up.forward(&h)?)?, &x)
    }
}

/// [`ops::span_attention`] with candle's ops (CUDA): runs of consecutive
/// spans of one length (every window of a frame but those cut by the image
/// border, every frame in the full-attention layers) are one batched
/// attention over (heads·windows, len, head_dim): a free reshape when the
/// run covers every row (frames of one size), one copy otherwise.
fn batched_span_attention(q: &Tensor, k: &Tensor, v: &Tensor, spans: &[usize]) -> CResult<Tensor> {
    let (hs, _, hd) = q.dims3()?;
    let spans: Vec<(usize, usize)> = spans
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .filter(|&(_, len)| len > 0)
        .collect();
    let mut outs = Vec::with_capacity(spans.len());
    let mut i = 0;
    while i < spans.len() {
        let (a, len) = spans[i];
        let mut j = i + 1;
        while j < spans.len() && spans[j].1 == len && spans[j].0 == spans[j - 1].0 + len {
            j += 1;
        }
        let b = j - i;
        let batch = |t: &Tensor| t.narrow(1, a, b * len)?.reshape((hs * b, len, hd));
        let (qs, ks, vs) = (batch(q)?, batch(k)?, batch(v)?);
        let att = softmax(&ops::bmm(&qs, &ks.transpose(1, 2)?)?)?;
        outs.push(ops::bmm(&att, &vs)?.reshape((hs, b * len, hd))?);
        i = j;
    }
    Tensor::cat(&outs, 1)
}

struct VisionModel {
    cfg: VisionConfig,
    /// The weights' dtype.
    dtype: DType,
    /// The Conv3d patch embedding as a matmul (stride = kernel).
    patch: Lin,
    blocks: Vec<VisionBlock>,
    ln_q: RmsNorm,
    mlp0: Lin,
    mlp2: Lin,
}

/// Window order of merged tokens and the window boundaries in patch rows.
fn window_index(grid: [usize; 3], merge: usize, window_tokens: usize) -> (Vec<usize>, Vec<usize>) {
    let [t, h, w] = grid;
    let (lh, lw) = (h / merge, w / merge);
    let unit = merge * merge;
    let pad_h = window_tokens - lh % window_tokens;
    let pad_w = window_tokens - lw % window_tokens;
    let (nwh, nww) = ((lh + pad_h) / window_tokens, (lw + pad_w) / window_tokens);
    let mut index = Vec::with_capacity(t * lh * lw);
    let mut cu = vec![0usize];
    for ti in 0..t {
        for wy in 0..nwh {
            for wx in 0..nww {
                let mut count = 0;
                for y in wy * window_tokens..(wy + 1) * window_tokens {
                    for x in wx * window_tokens..(wx + 1) * window_tokens {
                        if y < lh && x < lw {
                            index.push((ti * lh + y) * lw + x);
                            count += 1;
                        }
                    }
                }
                let last = *cu.last().expect("non-empty");
                // Empty (padding-only) windows are dropped, as unique_consecutive does.
                if count > 0 {
                    cu.push(last + count * unit);
                }
            }
        }
    }
    (index, cu)
}

impl VisionModel {
    fn load(c: &VisionConfig, vb: VarBuilder) -> CResult<Self> {
        let h = c.hidden_size;
        let k = c.in_chans * c.temporal_patch_size * c.patch_size * c.patch_size;
        let patch = vb
            .get(
                (
                    h,
                    c.in_chans,
                    c.temporal_patch_size,
                    c.patch_size,
                    c.patch_size,
                ),
                "patch_embed.proj.weight",
            )?
            .reshape((h, k))?;
        let patch = Lin::new(patch, None, vb.device())?;
        let blocks = (0..c.depth)
            .map(|i| VisionBlock::load(c, vb.pp(format!("blocks.{i}"))))
            .collect::<CResult<Vec<_>>>()?;
        let m = h * c.spatial_merge_size * c.spatial_merge_size;
        Ok(VisionModel {
            cfg: c.clone(),
            dtype: vb.dtype(),
            patch,
            blocks,
            ln_q: RmsNorm::load(h, 1e-6, vb.pp("merger.ln_q"))?,
            mlp0: Lin::load(vb.pp("merger.mlp.0"), m, m, true)?,
            mlp2: Lin::load(vb.pp("merger.mlp.2"), m, c.out_hidden_size, true)?,
        })
    }

    /// (rows, head_dim / 2) cos and sin of the 2-D RoPE, rows in patch order.
    fn rope(&self, grid: [usize; 3], device: &Device) -> CResult<(Tensor, Tensor)> {
        let hd = self.cfg.hidden_size / self.cfg.num_heads;
        let dim = hd / 2;
        let theta = self.cfg.rope_theta as f32;
        let inv: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / dim as f32))
            .collect();
        let m = self.cfg.spatial_merge_size;
        let [t, h, w] = grid;
        let mut freqs = Vec::with_capacity(t * h * w * dim);
        for _ in 0..t {
            for bh in 0..h / m {
                for bw in 0..w / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            let (hp, wp) = ((bh * m + mh) as f32, (bw * m + mw) as f32);
                            freqs.extend(inv.iter().map(|f| hp * f));
                            freqs.extend(inv.iter().map(|f| wp * f));
                        }
                    }
                }
            }
        }
        let f = Tensor::from_vec(freqs, (t * h * w, dim), device)?;
        Ok((f.cos()?, f.sin()?))
    }

    fn forward(&self, pixel_values: &Tensor, grid: [usize; 3]) -> CResult<Tensor> {
        let c = &self.cfg;
        let dev = pixel_values.device();
        let n = pixel_values.dim(0)?;
        let unit = c.spatial_merge_size * c.spatial_merge_size;
        let x = self.patch.forward(&pixel_values.to_dtype(self.dtype)?)?;
        let (cos, sin) = self.rope(grid, dev)?;
        let window_tokens = c.window_size / c.spatial_merge_size / c.patch_size;
        let (widx, cu_window) = window_index(grid, c.spatial_merge_size, window_tokens);
        // Rows (grouped by merged token) in window order.
        let rows: Vec<u32> = widx
            .iter()
            .flat_map(|&m| (0..unit).map(move |u| (m * unit + u) as u32))
            .collect();
        let rows = Tensor::from_vec(rows, n, dev)?;
        let mut x = x.index_select(&rows, 0)?;
        let cos = cos.index_select(&rows, 0)?;
        let sin = sin.index_select(&rows, 0)?;
        let frame = grid[1] * grid[2];
        let cu_full: Vec<usize> = (0..=grid[0]).map(|i| i * frame).collect();
        for (i, b) in self.blocks.iter().enumerate() {
            let spans = if c.fullatt_block_indexes.contains(&i) {
                &cu_full
            } else {
                &cu_window
            };
            x = b.forward(&x, spans, &cos, &sin)?;
        }
        let x = self
            .ln_q
            .forward(&x)?
            .reshape((n / unit, c.hidden_size * unit))?;
        let x = self
            .mlp2
            .forward(&pointwise::gelu_erf(&self.mlp0.forward(&x)?)?)?;
        // Back to the original merged-token order.
        let mut rev = vec![0u32; widx.len()];
        for (i, &w) in widx.iter().enumerate() {
            rev[w] = i as u32;
        }
        x.index_select(&Tensor::from_vec(rev, widx.len(), dev)?, 0)
    }
}

// ------------------------------------------------------------------ text

struct Attention {
    /// `[q | k | v]` in one matmul.
    qkv: Lin,
    o: Lin,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: KvCache,
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

struct DecoderLayer {
    attn: Attention,
    norm1: RmsNorm,
    norm2: RmsNorm,
    /// `[gate | up]` in one matmul.
    gate_up: Lin,
    down: Lin,
}

impl DecoderLayer {
    fn load(c: &TextConfig, vb: VarBuilder) -> CResult<Self> {
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

    fn forward(
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

/// A loaded Qwen2.5-VL checkpoint.
pub struct Qwen25Vl {
    pub cfg: QwenConfig,
    /// How the checkpoint stored its weights (FP8 ones were dequantised to
    /// the run dtype at load).
    pub quantization: Quantization,
    device: Device,
    vision: VisionModel,
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Lin,
}

impl Qwen25Vl {
    /// Loads `config.json` and the safetensors weights of `dir`.
    /// Loads in f32 on the CPU and bf16 on CUDA ([`Qwen25Vl::load_as`]).
    pub fn load(dir: &Path, device: &Device) -> Result<Qwen25Vl, CosmosError> {
        let dtype = if device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        };
        Self::load_as(dir, device, dtype)
    }

    /// Loads with the weights in `dtype` (f32, bf16 or f16); RoPE, attention
    /// scores and the logits stay f32. FP8 checkpoints ([`fp8`]) are
    /// dequantised to `dtype` on the host, one tensor at a time, as they load.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Qwen25Vl, CosmosError> {
        crate::backend::cosmos::alloc::reuse_freed_pages();
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
            CosmosError::Checkpoint(format!("cannot read '{}': {e}", cfg_path.display()))
        })?;
        let cfg = QwenConfig::from_json(&text)?;
        let files = weight_files(dir)?;
        let quantization = fp8::inspect(dir, &files)?;
        let vb = match &quantization {
            // SAFETY: the files are memory-mapped read-only; they must not be
            // modified while the model is loaded (as for every mmap loader).
            Quantization::None => {
                unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
                    .map_err(load_err)?
            }
            Quantization::Fp8(layout) => fp8::var_builder(&files, layout, dtype, device)?,
        };
        // Hub layout (`model.*`, `visual.*`) or transformers 4.52+ (`model.language_model.*`, `model.visual.*`).
        let (tp, vp) = if vb.contains_tensor("model.language_model.embed_tokens.weight") {
            ("model.language_model", "model.visual")
        } else {
            ("model", "visual")
        };
        let t = &cfg.text;
        let vision = VisionModel::load(&cfg.vision, vb.pp(vp)).map_err(load_err)?;
        let tvb = vb.pp(tp);
        let embed = candle_nn::embedding(t.vocab_size, t.hidden_size, tvb.pp("embed_tokens"))
            .map_err(load_err)?;
        let layers = (0..t.num_hidden_layers)
            .map(|i| DecoderLayer::load(t, tvb.pp(format!("layers.{i}"))))
            .collect::<CResult<Vec<_>>>()
            .map_err(load_err)?;
        let norm =
            RmsNorm::load(t.hidden_size, t.rms_norm_eps, tvb.pp("norm")).map_err(load_err)?;
        let lm_head = if t.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            Lin::shared(embed.embeddings().clone())
        } else {
            Lin::load(vb.pp("lm_head"), t.hidden_size, t.vocab_size, false).map_err(load_err)?
        };
        Ok(Qwen25Vl {
            cfg,
            quantization,
            device: device.clone(),
            vision,
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Vision embeddings (merged tokens, out_hidden) of one video.
    pub fn vision_embeds(
        &self,
        pixel_values: &Tensor,
        grid: [usize; 3],
    ) -> Result<Tensor, CosmosError> {
        self.device
            .with_context(|| self.vision.forward(pixel_values, grid))
            .map_err(err)
    }

    /// Token embeddings with the video tokens replaced by `vision`, in order.
    pub fn embed_prompt(
        &self,
        ids: &[u32],
        vision: Option<&Tensor>,
    ) -> Result<Tensor, CosmosError> {
        let idt = Tensor::new(ids, &self.device).map_err(err)?;
        let mut x = self.embed.forward(&idt).map_err(err)?;
        if let Some(v) = vision {
            let at: Vec<u32> = ids
                .iter()
                .enumerate()
                .filter(|(_, t)| **t == self.cfg.video_token_id)
                .map(|(i, _)| i as u32)
                .collect();
            let n = v.dim(0).map_err(err)?;
            if at.len() != n {
                return Err(CosmosError::Inference(format!(
                    "{} video tokens in the prompt for {n} vision embeddings",
                    at.len()
                )));
            }
            let at = Tensor::from_vec(at, n, &self.device).map_err(err)?;
            x = x
                .index_add(&at, &(v - x.index_select(&at, 0)).map_err(err)?, 0)
                .map_err(err)?;
        }
        Ok(x)
    }

    /// M-RoPE cos/sin (L, head_dim / 2) for position ids per axis.
    fn mrope(&self, pos: &[Vec<i64>; 3]) -> CResult<(Tensor, Tensor)> {
        let t = &self.cfg.text;
        let hd = t.head_dim;
        let theta = t.rope_theta as f32;
        let inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1.0 / theta.powf(i as f32 / hd as f32))
            .collect();
        let [s0, s1, _] = t.mrope_section;
        let l = pos[0].len();
        let mut f = Vec::with_capacity(l * hd);
        // Frequency j follows axis t, h or w by the (contiguous) sections.
        let axis: Vec<usize> = (0..inv.len())
            .map(|j| usize::from(j >= s0) + usize::from(j >= s0 + s1))
            .collect();
        for ((&pt, &ph), &pw) in pos[0].iter().zip(&pos[1]).zip(&pos[2]) {
            let p = [pt, ph, pw];
            let half: Vec<f32> = inv
                .iter()
                .zip(&axis)
                .map(|(w, &a)| p[a] as f32 * w)
                .collect();
            f.extend_from_slice(&half);
        }
        let f = Tensor::from_vec(f, (l, hd / 2), &self.device)?;
        Ok((f.cos()?, f.sin()?))
    }

    /// Runs the decoder over new embeddings (appending to the KV cache) and
    /// returns their logits (L, vocab).
    ///
    /// On the CPU this (like [`Qwen25Vl::vision_embeds`]) runs inside
    /// candle's thread pool (`Device::with_context`): the matmuls' and the
    /// elementwise ops' threads stay warm between the many short parallel
    /// sections instead of being woken from outside the pool for each; the
    /// calling thread waits. That was about a quarter of the prefill here.
    pub fn forward(&mut self, embeds: &Tensor, pos: &[Vec<i64>; 3]) -> Result<Tensor, CosmosError> {
        let device = self.device.clone();
        device.with_context(|| self.forward_here(embeds, pos, false))
    }

    /// [`Qwen25Vl::forward`], returning the logits of the last token only
    /// (1, vocab): what generation needs. The `lm_head` matmul then covers
    /// one row instead of the whole prompt (for a 7B model and a 2k-token
    /// prompt, 2.2 TFLOP less), and so do the last decoder layer's
    /// attention output, `o_proj` and MLP (its k and v still cover every
    /// token, for the cache).
    pub fn forward_last(
        &mut self,
        embeds: &Tensor,
        pos: &[Vec<i64>; 3],
    ) -> Result<Tensor, CosmosError> {
        let device = self.device.clone();
        device.with_context(|| self.forward_here(embeds, pos, true))
    }

    fn forward_here(
        &mut self,
        embeds: &Tensor,
        pos: &[Vec<i64>; 3],
        last_only: bool,
    ) -> Result<Tensor, CosmosError> {
        let (cos, sin) = self.mrope(pos).map_err(err)?;
        let dt = embeds.dtype();
        let (cos, sin) = (
            cos.to_dtype(dt).map_err(err)?,
            sin.to_dtype(dt).map_err(err)?,
        );
        // Causal over the new tokens, everything cached visible; set up
        // once for all layers.
        let l = embeds.dim(0).map_err(err)?;
        let causal = CausalSoftmax::new(l, self.cache_len(), &self.device).map_err(err)?;
        let mut x = embeds.clone();
        let n = self.layers.len();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            // The last layer computes only the last row when that is all
            // the logits need.
            x = layer
                .forward(&x, &cos, &sin, &causal, last_only && i + 1 == n)
                .map_err(err)?;
        }
        let x = if last_only {
            let rows = x.dim(0).map_err(err)?;
            x.narrow(0, rows - 1, 1).map_err(err)?
        } else {
            x
        };
        let x = self.norm.forward(&x).map_err(err)?;
        self.lm_head
            .forward(&x)
            .and_then(|l| l.to_dtype(DType::F32))
            .map_err(err)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The candle-ops path (what CUDA runs) against the CPU kernel, on the
    /// window boundaries of a real grid (with windows cut by the border).
    #[test]
    fn batched_span_attention_equals_the_cpu_kernel() {
        let dev = Device::Cpu;
        let (_, cu) = window_index([2, 6, 20], 2, 4);
        let n = *cu.last().unwrap();
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(0f32, 1.0, (2, n, 8), &dev).unwrap());
        let want = ops::span_attention(&q, &k, &v, &cu).unwrap().unwrap();
        let got = batched_span_attention(&q, &k, &v, &cu).unwrap();
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn windows_cover_every_token_once() {
        // llm grid 3x10, windows of 4x4 tokens: 1 row of windows x 3 columns, last partial.
        let (idx, cu) = window_index([2, 6, 20], 2, 4);
        assert_eq!(idx.len(), 2 * 3 * 10);
        let mut sorted = idx.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..60).collect::<Vec<_>>());
        // Per frame: windows of 3x4, 3x4, 3x2 tokens, 4 patches each.
        assert_eq!(cu, vec![0, 48, 96, 120, 168, 216, 240]);
        // First window visits rows 0..3, columns 0..4.
        assert_eq!(&idx[..5], &[0, 1, 2, 3, 10]);
        // Exact multiple: a padding-only window is dropped.
        let (_, cu) = window_index([1, 8, 8], 2, 4);
        assert_eq!(cu, vec![0, 64]);
    }
}
