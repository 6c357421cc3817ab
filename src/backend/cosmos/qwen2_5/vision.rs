// SPDX-License-Identifier: MPL-2.0
//! The Qwen2.5-VL vision tower: patch embedding as a matmul, 2-D RoPE,
//! window attention with the full-attention layers of
//! `fullatt_block_indexes`, and the patch merger.

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

use super::config::VisionConfig;
use crate::backend::cosmos::decoder::inv_freq;
use crate::backend::cosmos::linear::Lin;
use crate::backend::cosmos::ops::{self, silu_mul};
use crate::backend::cosmos::pointwise::{self, qkv_heads, RmsNorm};

fn softmax(x: &Tensor) -> CResult<Tensor> {
    ops::softmax_last_dim(x)
}

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

pub(super) struct VisionModel {
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
    pub(super) fn load(c: &VisionConfig, vb: VarBuilder) -> CResult<Self> {
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
        let inv = inv_freq(dim, self.cfg.rope_theta);
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

    pub(super) fn forward(&self, pixel_values: &Tensor, grid: [usize; 3]) -> CResult<Tensor> {
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
