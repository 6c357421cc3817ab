// SPDX-License-Identifier: MPL-2.0
//! The Qwen3-VL vision tower: Conv3d patch embedding (with bias) as a
//! matmul, a learned position grid bilinearly interpolated to each frame's
//! patch grid (align-corners), 2-D RoPE, LayerNorm blocks with a GELU-tanh
//! MLP and full attention within each temporal patch, the patch merger and
//! the DeepStack mergers whose outputs feed the first decoder layers.

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::VarBuilder;

use super::config::{VisionAct, VisionConfig};
use crate::backend::cosmos::decoder::inv_freq;
use crate::backend::cosmos::linear::Lin;
use crate::backend::cosmos::ops;
use crate::backend::cosmos::pointwise::{self, qkv_heads, LayerNorm};

fn layer_norm(dim: usize, vb: VarBuilder) -> CResult<LayerNorm> {
    LayerNorm::load(dim, 1e-6, vb)
}

/// LayerNorm computed in f32 (as torch does for f32 weights; for bf16
/// weights torch's kernel also accumulates in f32).
fn ln(norm: &LayerNorm, x: &Tensor) -> CResult<Tensor> {
    let dt = x.dtype();
    if dt == DType::F32 {
        return norm.forward(x);
    }
    norm.forward(&x.to_dtype(DType::F32)?)?.to_dtype(dt)
}

struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Lin,
    proj: Lin,
    fc1: Lin,
    fc2: Lin,
    act: VisionAct,
    heads: usize,
    head_dim: usize,
}

impl Block {
    fn load(c: &VisionConfig, vb: VarBuilder) -> CResult<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Block {
            norm1: layer_norm(h, vb.pp("norm1"))?,
            norm2: layer_norm(h, vb.pp("norm2"))?,
            qkv: Lin::load(vb.pp("attn.qkv"), h, 3 * h, true)?,
            proj: Lin::load(vb.pp("attn.proj"), h, h, true)?,
            fc1: Lin::load(vb.pp("mlp.linear_fc1"), h, i, true)?,
            fc2: Lin::load(vb.pp("mlp.linear_fc2"), i, h, true)?,
            act: c.act,
            heads: c.num_heads,
            head_dim: h / c.num_heads,
        })
    }

    fn forward(&self, x: &Tensor, spans: &[usize], cos: &Tensor, sin: &Tensor) -> CResult<Tensor> {
        let n = x.dim(0)?;
        let (hs, hd) = (self.heads, self.head_dim);
        let dt = x.dtype();
        let h = ln(&self.norm1, x)?;
        let qkv = self.qkv.forward(&h)?.to_dtype(DType::F32)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let (q, k, v) = qkv_heads(&qkv, [hs, hs, hs], hd, (cos, sin), scale)?;
        let o = match ops::span_attention(&q, &k, &v, spans)? {
            Some(o) => o,
            None => frame_attention(&q, &k, &v, spans)?,
        };
        let attn = o.transpose(0, 1)?.reshape((n, hs * hd))?.to_dtype(dt)?;
        let x = self.proj.forward_add(&attn, x)?;
        let h = ln(&self.norm2, &x)?;
        let h = self.fc1.forward(&h)?;
        let h = match self.act {
            VisionAct::GeluTanh => pointwise::gelu_tanh(&h)?,
            VisionAct::GeluErf => pointwise::gelu_erf(&h)?,
        };
        self.fc2.forward_add(&h, &x)
    }
}

/// Attention within each span with candle's ops (CUDA; every span of a
/// video has the same length: one batched matmul).
fn frame_attention(q: &Tensor, k: &Tensor, v: &Tensor, spans: &[usize]) -> CResult<Tensor> {
    let (hs, n, hd) = q.dims3()?;
    let frames = spans.len() - 1;
    let len = n / frames.max(1);
    let batch = |t: &Tensor| {
        t.reshape((hs, frames, len, hd))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((frames * hs, len, hd))
    };
    let (qs, ks, vs) = (batch(q)?, batch(k)?, batch(v)?);
    let att = ops::softmax_last_dim(&ops::bmm(&qs, &ks.transpose(1, 2)?)?)?;
    ops::bmm(&att, &vs)?
        .reshape((frames, hs, len, hd))?
        .transpose(0, 1)?
        .contiguous()?
        .reshape((hs, n, hd))
}

/// The patch merger: LayerNorm before (main) or after (DeepStack) the 2×2
/// shuffle, then fc1 → exact GELU → fc2.
struct Merger {
    norm: LayerNorm,
    postshuffle: bool,
    fc1: Lin,
    fc2: Lin,
    merged: usize,
}

impl Merger {
    fn load(c: &VisionConfig, postshuffle: bool, vb: VarBuilder) -> CResult<Self> {
        let m = c.hidden_size * c.spatial_merge_size * c.spatial_merge_size;
        Ok(Merger {
            norm: layer_norm(if postshuffle { m } else { c.hidden_size }, vb.pp("norm"))?,
            postshuffle,
            fc1: Lin::load(vb.pp("linear_fc1"), m, m, true)?,
            fc2: Lin::load(vb.pp("linear_fc2"), m, c.out_hidden_size, true)?,
            merged: m,
        })
    }

    fn forward(&self, x: &Tensor) -> CResult<Tensor> {
        let rows = x.elem_count() / self.merged;
        let x = if self.postshuffle {
            ln(&self.norm, &x.reshape((rows, self.merged))?)?
        } else {
            ln(&self.norm, x)?.reshape((rows, self.merged))?
        };
        self.fc2
            .forward(&pointwise::gelu_erf(&self.fc1.forward(&x)?)?)
    }
}

pub struct VisionModel {
    cfg: VisionConfig,
    dtype: DType,
    patch: Lin,
    /// (side², hidden) learned positions.
    pos_embed: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
    /// The grid-dependent inputs of the last forward: every chunk of a
    /// stream has the same grid, so they are computed once per stream.
    grid_inputs: std::sync::Mutex<Option<GridInputs>>,
}

/// What depends on the patch grid alone: the interpolated learned
/// positions (in the model's dtype) and the 2-D RoPE's cos and sin.
#[derive(Clone)]
struct GridInputs {
    grid: [usize; 3],
    pos: Tensor,
    cos: Tensor,
    sin: Tensor,
}

/// Vision embeddings of one video: the merged tokens and one DeepStack
/// feature per `deepstack_visual_indexes` entry (same shape).
pub struct VisionOut {
    pub embeds: Tensor,
    pub deepstack: Vec<Tensor>,
}

/// Bilinear (align-corners) taps of one axis: for each target index of an
/// axis of `size`, the two source indices into a `side` grid and their
/// weights, in f32 as transformers computes them.
fn axis_taps(size: usize, side: usize) -> Vec<([usize; 2], [f32; 2])> {
    (0..size)
        .map(|i| {
            let src = (i as f32 * (side - 1) as f32) / (size.max(2) - 1) as f32;
            let floor = src.floor();
            let taps =
                [0usize, 1].map(|o| (floor as i64 + o as i64).clamp(0, side as i64 - 1) as usize);
            let w = [0f32, 1.0].map(|o| (1.0 - (src - floor - o).abs()).max(0.0));
            (taps, w)
        })
        .collect()
}

/// Gather indices (4 per patch) and weights of the interpolated position
/// embedding of a `h × w` patch grid, patches in merge-block order.
pub fn pos_taps(h: usize, w: usize, merge: usize, side: usize) -> (Vec<u32>, Vec<f32>) {
    let (th, tw) = (axis_taps(h, side), axis_taps(w, side));
    let mut idx = Vec::with_capacity(h * w * 4);
    let mut wts = Vec::with_capacity(h * w * 4);
    for bh in 0..h / merge {
        for bw in 0..w / merge {
            for mh in 0..merge {
                for mw in 0..merge {
                    let (y, x) = (bh * merge + mh, bw * merge + mw);
                    let (ty, wy) = th[y];
                    let (tx, wx) = tw[x];
                    for a in 0..2 {
                        for b in 0..2 {
                            idx.push((ty[a] * side + tx[b]) as u32);
                            wts.push(wy[a] * wx[b]);
                        }
                    }
                }
            }
        }
    }
    (idx, wts)
}

impl VisionModel {
    pub fn load(c: &VisionConfig, vb: VarBuilder) -> CResult<Self> {
        let h = c.hidden_size;
        let k = c.in_channels * c.temporal_patch_size * c.patch_size * c.patch_size;
        let w = vb
            .get(
                (
                    h,
                    c.in_channels,
                    c.temporal_patch_size,
                    c.patch_size,
                    c.patch_size,
                ),
                "patch_embed.proj.weight",
            )?
            .reshape((h, k))?;
        let b = vb.get(h, "patch_embed.proj.bias")?;
        let patch = Lin::new(w, Some(b), vb.device())?;
        let side = c.pos_grid_side;
        let pos_embed = vb.get((side * side, h), "pos_embed.weight")?;
        let blocks = (0..c.depth)
            .map(|i| Block::load(c, vb.pp(format!("blocks.{i}"))))
            .collect::<CResult<Vec<_>>>()?;
        let deepstack = (0..c.deepstack_visual_indexes.len())
            .map(|i| Merger::load(c, true, vb.pp(format!("deepstack_merger_list.{i}"))))
            .collect::<CResult<Vec<_>>>()?;
        Ok(VisionModel {
            cfg: c.clone(),
            dtype: vb.dtype(),
            patch,
            pos_embed,
            blocks,
            merger: Merger::load(c, false, vb.pp("merger"))?,
            deepstack,
            grid_inputs: std::sync::Mutex::new(None),
        })
    }

    /// (rows, head_dim / 2) cos and sin of the 2-D RoPE, rows in patch order.
    fn rope(&self, grid: [usize; 3], device: &Device) -> CResult<(Tensor, Tensor)> {
        let hd = self.cfg.hidden_size / self.cfg.num_heads;
        let dim = hd / 2;
        let inv = inv_freq(dim, self.cfg.rope_theta);
        let m = self.cfg.spatial_merge_size;
        let [t, h, w] = grid;
        let mut frame = Vec::with_capacity(h * w * dim);
        for bh in 0..h / m {
            for bw in 0..w / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let (hp, wp) = ((bh * m + mh) as f32, (bw * m + mw) as f32);
                        frame.extend(inv.iter().map(|f| hp * f));
                        frame.extend(inv.iter().map(|f| wp * f));
                    }
                }
            }
        }
        let f = Tensor::from_vec(frame, (h * w, dim), device)?;
        let f = Tensor::cat(&vec![f; t], 0)?;
        Ok((f.cos()?, f.sin()?))
    }

    /// The interpolated learned positions (t·h·w, hidden), f32.
    fn positions(&self, grid: [usize; 3], device: &Device) -> CResult<Tensor> {
        let [t, h, w] = grid;
        let c = &self.cfg;
        let (idx, wts) = pos_taps(h, w, c.spatial_merge_size, c.pos_grid_side);
        let n = h * w;
        let idx = Tensor::from_vec(idx, n * 4, device)?;
        let wts = Tensor::from_vec(wts, (n, 4, 1), device)?;
        let rows = self
            .pos_embed
            .index_select(&idx, 0)?
            .to_dtype(DType::F32)?
            .reshape((n, 4, c.hidden_size))?;
        let frame = rows.broadcast_mul(&wts)?.sum(1)?;
        Tensor::cat(&vec![frame; t], 0)
    }

    /// The positions and RoPE tables of `grid`, from the last call when
    /// its grid was the same.
    fn grid_inputs(&self, grid: [usize; 3], dev: &Device) -> CResult<GridInputs> {
        let mut last = self
            .grid_inputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(g) = last.as_ref().filter(|g| g.grid == grid) {
            return Ok(g.clone());
        }
        let pos = self.positions(grid, dev)?.to_dtype(self.dtype)?;
        let (cos, sin) = self.rope(grid, dev)?;
        let g = GridInputs {
            grid,
            pos,
            cos,
            sin,
        };
        *last = Some(g.clone());
        Ok(g)
    }

    pub fn forward(&self, pixel_values: &Tensor, grid: [usize; 3]) -> CResult<VisionOut> {
        let dev = pixel_values.device();
        let GridInputs { pos, cos, sin, .. } = self.grid_inputs(grid, dev)?;
        // The positions are the patch embedding's residual: added inside
        // its matmul on the CPU (no separate add).
        let mut x = self
            .patch
            .forward_add(&pixel_values.to_dtype(self.dtype)?, &pos)?;
        let frame = grid[1] * grid[2];
        let spans: Vec<usize> = (0..=grid[0]).map(|i| i * frame).collect();
        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, b) in self.blocks.iter().enumerate() {
            x = b.forward(&x, &spans, &cos, &sin)?;
            if let Some(j) = self
                .cfg
                .deepstack_visual_indexes
                .iter()
                .position(|&d| d == i)
            {
                deepstack.push((j, self.deepstack[j].forward(&x)?));
            }
        }
        deepstack.sort_by_key(|(j, _)| *j);
        Ok(VisionOut {
            embeds: self.merger.forward(&x)?,
            deepstack: deepstack.into_iter().map(|(_, t)| t).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// align_corners=True: the grid's corners map to the table's corners,
    /// and the weights of every patch sum to 1.
    #[test]
    fn interpolation_taps_hit_the_corners() {
        let (idx, w) = pos_taps(4, 6, 2, 8);
        assert_eq!(idx.len(), 4 * 6 * 4);
        for p in w.chunks(4) {
            assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // First patch (0, 0): all weight on table entry 0.
        assert_eq!(idx[0], 0);
        assert_eq!(w[0], 1.0);
        // The last patch in merge-block order is (3, 5): the table's last entry.
        let last = &idx[idx.len() - 4..];
        let lw = &w[w.len() - 4..];
        let best = lw
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| last[i])
            .unwrap();
        assert_eq!(best, 63);
        // Same size as the table: identity.
        let (idx, w) = pos_taps(8, 8, 1, 8);
        for (p, (i, ws)) in idx.chunks(4).zip(w.chunks(4)).enumerate() {
            let k = ws.iter().position(|&x| x == 1.0).unwrap();
            assert_eq!(i[k] as usize, p);
        }
    }
}
