// SPDX-License-Identifier: MPL-2.0
//! The row-wise CPU kernels of the forward pass that are not matmuls or
//! attention ([`super::ops`]): RMS norm, LayerNorm, the split of a fused
//! q/k/v projection into heads with RoPE and the query scale, the exact
//! (erf) GELU and the tanh GELU. Each is one parallel pass in f32 that the
//! compiler vectorises, instead of candle's one element at a time (its RMS
//! norm and LayerNorm sum each row in order, its RoPE and GELUs are scalar
//! loops, the tanh one a libm `tanhf` per element) plus the copies and
//! products around them. Figures in docs/cosmos.md.
//!
//! Other devices and dtypes take candle's own ops, as before.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::ops::{assume_init, avx2_fn, contiguous_f32, exp_in_place, init, sum_lanes, uninit};

/// Sum of squares of `x` in eight running lanes (the order differs from a
/// sequential sum by rounding only; it lets the loop vectorise).
#[inline(always)]
fn sum_sq(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// `x / sqrt(mean(x²) + eps) · weight` over the last axis (Qwen2's RMSNorm).
#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// candle's, whose weight and eps the CPU kernel uses; it runs on other
    /// devices and dtypes.
    inner: candle_nn::RmsNorm,
}

impl RmsNorm {
    /// `prefix.weight` (hidden) of `vb`.
    pub fn load(hidden: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
        Ok(RmsNorm {
            inner: candle_nn::rms_norm(hidden, eps, vb)?,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.inner.weight();
        if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
            let eps = self.inner.eps() as f32;
            return x
                .contiguous()?
                .apply_op2_no_bwd(&w.contiguous()?, &RmsNormOp { eps });
        }
        self.inner.forward(x)
    }
}

struct RmsNormOp {
    eps: f32,
}

impl candle_core::CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "vss-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "rms norm")?;
        let w = contiguous_f32(s2, l2, "rms norm")?;
        let dim = *l1.shape().dims().last().unwrap_or(&0);
        if dim == 0 || w.len() != dim {
            candle_core::bail!("rms norm: {:?} by a weight of {}", l1.shape(), w.len());
        }
        let mut dst = uninit(x.len());
        x.par_chunks(dim)
            .zip(dst.par_chunks_mut(dim))
            .for_each(|(x, d)| rms_row(d, x, w, self.eps));
        // SAFETY: every row of `dim` is written by `rms_row` (`init`).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

avx2_fn! {
    /// `d ← x / sqrt(mean(x²) + eps) · w` for one row.
    fn rms_row(d: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], eps: f32) {
        let inv = 1.0 / (sum_sq(x) / x.len() as f32 + eps).sqrt();
        init(d, x.iter().zip(w).map(|(&x, &w)| x * inv * w));
    }
}

/// `(x - mean) / sqrt(var + eps) · weight + bias` over the last axis
/// (torch's `nn.LayerNorm`; Qwen3-VL's vision tower and mergers).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// candle's, whose weight, bias and eps the CPU kernel uses; it runs on
    /// other devices and dtypes.
    inner: candle_nn::LayerNorm,
}

impl LayerNorm {
    /// `prefix.weight` and `prefix.bias` (dim) of `vb`.
    pub fn load(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
        Ok(LayerNorm {
            inner: candle_nn::layer_norm(dim, eps, vb)?,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.inner.weight();
        let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        if let Some(b) = self.inner.bias() {
            if f32_cpu(x) && f32_cpu(w) && f32_cpu(b) {
                let eps = self.inner.eps() as f32;
                return x.contiguous()?.apply_op3_no_bwd(
                    &w.contiguous()?,
                    &b.contiguous()?,
                    &LayerNormOp { eps },
                );
            }
        }
        self.inner.forward(x)
    }
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "vss-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "layer norm")?;
        let w = contiguous_f32(s2, l2, "layer norm")?;
        let b = contiguous_f32(s3, l3, "layer norm")?;
        let dim = *l1.shape().dims().last().unwrap_or(&0);
        if dim == 0 || w.len() != dim || b.len() != dim {
            candle_core::bail!(
                "layer norm: {:?} by a weight of {} and a bias of {}",
                l1.shape(),
                w.len(),
                b.len()
            );
        }
        let mut dst = uninit(x.len());
        x.par_chunks(dim)
            .zip(dst.par_chunks_mut(dim))
            .for_each(|(x, d)| layer_norm_row(d, x, w, b, self.eps));
        // SAFETY: every row of `dim` is written by `layer_norm_row` (`init`).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

avx2_fn! {
    /// `d ← (x - mean) / sqrt(var + eps) · w + b` for one row: the mean,
    /// then the variance about it (two passes, as torch: no `E[x²] - mean²`
    /// cancellation), each in eight running lanes.
    fn layer_norm_row(d: &mut [MaybeUninit<f32>], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = sum_lanes(x) / n;
        let mut acc = [0f32; 8];
        let mut chunks = x.chunks_exact(8);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += (v - mean) * (v - mean);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum();
        let var = (acc.iter().sum::<f32>() + tail) / n;
        let inv = 1.0 / (var + eps).sqrt();
        init(d, x.iter().zip(w).zip(b).map(|((&x, &w), &b)| (x - mean) * inv * w + b));
    }
}

/// The heads of a fused projection `qkv` (rows, (hq + hk + hv)·hd) — per
/// row the q heads, then k, then v, each `hd` wide — as head-major q, k and
/// v (heads, rows, hd), with RoPE on q and k (non-interleaved halves, `cos`
/// and `sin` (rows, hd / 2), as candle's `rope`) and q times `q_scale`
/// after it, q in f32 whatever the input's dtype (the scale is not rounded
/// to bf16). On the CPU in f32 one pass writes all three into one
/// (hq + hk + hv, rows, hd) tensor (they are views of it); elsewhere
/// candle's transpose, rope and product.
pub fn qkv_heads(
    qkv: &Tensor,
    heads: [usize; 3],
    hd: usize,
    rope: (&Tensor, &Tensor),
    q_scale: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    qkv_heads_normed(qkv, heads, hd, rope, q_scale, None)
}

/// Per-head RMS norms of q and k (Qwen3's `q_norm` / `k_norm`, over
/// `head_dim`), applied before RoPE.
#[derive(Clone, Debug)]
pub struct QkNorm {
    /// candle's, for other devices and dtypes.
    q: candle_nn::RmsNorm,
    k: candle_nn::RmsNorm,
    /// The weights on the host, f32, for the CPU kernel.
    qw: Vec<f32>,
    kw: Vec<f32>,
    eps: f32,
}

impl QkNorm {
    /// `q_norm.weight` and `k_norm.weight` (head_dim) of `vb`.
    pub fn load(hd: usize, eps: f64, vb: VarBuilder) -> Result<QkNorm> {
        let q = candle_nn::rms_norm(hd, eps, vb.pp("q_norm"))?;
        let k = candle_nn::rms_norm(hd, eps, vb.pp("k_norm"))?;
        let host = |n: &candle_nn::RmsNorm| n.weight().to_dtype(DType::F32)?.to_vec1::<f32>();
        Ok(QkNorm {
            qw: host(&q)?,
            kw: host(&k)?,
            q,
            k,
            eps: eps as f32,
        })
    }
}

/// [`qkv_heads`] with, when `norm` is given, the per-head RMS norm of q and
/// k before RoPE (one pass on the CPU as well).
pub fn qkv_heads_normed(
    qkv: &Tensor,
    [hq, hk, hv]: [usize; 3],
    hd: usize,
    (cos, sin): (&Tensor, &Tensor),
    q_scale: f64,
    norm: Option<&QkNorm>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let rows = qkv.dim(0)?;
    let heads = hq + hk + hv;
    let qkv = qkv.reshape((rows, heads, hd))?;
    let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if f32_cpu(&qkv) && f32_cpu(cos) && f32_cpu(sin) && hd % 2 == 0 {
        let all = qkv.contiguous()?.apply_op3_no_bwd(
            &cos.contiguous()?,
            &sin.contiguous()?,
            &QkvHeads {
                roped: hq + hk,
                hq,
                q_scale: q_scale as f32,
                norm: norm.map(|n| (n.qw.as_slice(), n.kw.as_slice(), n.eps)),
            },
        )?;
        return Ok((
            all.narrow(0, 0, hq)?,
            all.narrow(0, hq, hk)?,
            all.narrow(0, hq + hk, hv)?,
        ));
    }
    let all = qkv.transpose(0, 1)?.contiguous()?;
    let rope = |t: Tensor| candle_nn::rotary_emb::rope(&t.unsqueeze(0)?, cos, sin)?.squeeze(0);
    let (mut q, mut k) = (all.narrow(0, 0, hq)?, all.narrow(0, hq, hk)?);
    if let Some(n) = norm {
        q = n.q.forward(&q.contiguous()?)?;
        k = n.k.forward(&k.contiguous()?)?;
    }
    Ok((
        (rope(q)?.to_dtype(DType::F32)? * q_scale)?,
        rope(k)?,
        all.narrow(0, hq + hk, hv)?,
    ))
}

struct QkvHeads<'a> {
    /// The first `roped` heads get RoPE (q and k), the rest are copied (v).
    roped: usize,
    /// The first `hq` heads are scaled by `q_scale`.
    hq: usize,
    q_scale: f32,
    /// RMS norm weights of q and k heads (head_dim each) and eps.
    norm: Option<(&'a [f32], &'a [f32], f32)>,
}

impl CustomOp3 for QkvHeads<'_> {
    fn name(&self) -> &'static str {
        "vss-qkv-heads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(s1, l1, "qkv heads")?;
        let cos = contiguous_f32(s2, l2, "qkv heads")?;
        let sin = contiguous_f32(s3, l3, "qkv heads")?;
        let (rows, heads, hd) = l1.shape().dims3()?;
        let half = hd / 2;
        if hd % 2 != 0 || cos.len() != rows * half || sin.len() != rows * half {
            candle_core::bail!(
                "qkv heads: {:?} with cos {:?} and sin {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let mut dst = uninit(src.len());
        if !dst.is_empty() {
            // Every element of every output head is written: rotated (q, k)
            // or copied (v).
            dst.par_chunks_mut(rows * hd)
                .enumerate()
                .for_each(|(h, out)| {
                    let x = &src[h * hd..];
                    if h >= self.roped {
                        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
                            init(o, x[r * heads * hd..][..hd].iter().copied());
                        }
                    } else {
                        let scale = if h < self.hq { self.q_scale } else { 1.0 };
                        match self.norm {
                            None => rope_head(out, x, heads * hd, hd, cos, sin, scale),
                            Some((qw, kw, eps)) => {
                                let w = if h < self.hq { qw } else { kw };
                                rope_head_normed(
                                    out,
                                    x,
                                    heads * hd,
                                    hd,
                                    (cos, sin),
                                    scale,
                                    (w, eps),
                                )
                            }
                        }
                    }
                });
        }
        // SAFETY: every element of every output head is written: copied
        // (`init`) or rotated (`rope_head`: both halves of every row; hd
        // is even, checked above).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), Shape::from((heads, rows, hd))))
    }
}

avx2_fn! {
    /// One head of RoPE (non-interleaved halves) times `scale`: output row
    /// `r` (`out` is rows of `hd`) from the `hd` values at `x[r · stride..]`
    /// and row `r` of `cos` and `sin` (rows of `hd / 2`).
    fn rope_head(out: &mut [MaybeUninit<f32>], x: &[f32], stride: usize, hd: usize, cos: &[f32], sin: &[f32], scale: f32) {
        let half = hd / 2;
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            let (x1, x2) = x[r * stride..][..hd].split_at(half);
            let (c, s) = (&cos[r * half..][..half], &sin[r * half..][..half]);
            let (o1, o2) = o.split_at_mut(half);
            for i in 0..half {
                // candle's rope, then the scale: same rounding.
                o1[i].write((x1[i] * c[i] - x2[i] * s[i]) * scale);
                o2[i].write((x1[i] * s[i] + x2[i] * c[i]) * scale);
            }
        }
    }
}

avx2_fn! {
    /// [`rope_head`] of the RMS-normed rows: `x / sqrt(mean(x²) + eps) · w`
    /// (torch's order: the product with the inverse first, then the weight).
    fn rope_head_normed(out: &mut [MaybeUninit<f32>], x: &[f32], stride: usize, hd: usize, cos_sin: (&[f32], &[f32]), scale: f32, norm: (&[f32], f32)) {
        let (cos, sin) = cos_sin;
        let (w, eps) = norm;
        let half = hd / 2;
        let mut xn = vec![0f32; hd];
        for (r, o) in out.chunks_exact_mut(hd).enumerate() {
            let row = &x[r * stride..][..hd];
            let inv = 1.0 / (sum_sq(row) / hd as f32 + eps).sqrt();
            for ((d, &v), &g) in xn.iter_mut().zip(row).zip(w) {
                *d = g * (v * inv);
            }
            let (x1, x2) = xn.split_at(half);
            let (c, s) = (&cos[r * half..][..half], &sin[r * half..][..half]);
            let (o1, o2) = o.split_at_mut(half);
            for i in 0..half {
                o1[i].write((x1[i] * c[i] - x2[i] * s[i]) * scale);
                o2[i].write((x1[i] * s[i] + x2[i] * c[i]) * scale);
            }
        }
    }
}

/// `x · Φ(x)` with the exact (erf) Gaussian CDF, as torch's `nn.GELU()`.
/// On the CPU in f32 one parallel pass with [`erf_in_place`]; elsewhere candle's
/// `gelu_erf`.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&Elementwise {
            name: "vss-gelu-erf",
            chunk: gelu_chunk,
        });
    }
    x.gelu_erf()
}

/// erf in f32 for every element of `xs`, absolute error ≤ 1.5e-7 over the
/// whole line (Abramowitz & Stegun 7.1.26 with [`exp_in_place`]; torch's
/// vectorised CPU `erf` uses the same formula). Straight-line code that
/// vectorises.
pub fn erf_in_place(xs: &mut [f32]) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    // Chunks that stay in L1 between the two passes around the exp.
    let mut t = [0f32; 64];
    let mut e = [0f32; 64];
    for xs in xs.chunks_mut(64) {
        let n = xs.len();
        for ((t, e), &x) in t.iter_mut().zip(e.iter_mut()).zip(xs.iter()) {
            *t = 1.0 / (1.0 + P * x.abs());
            *e = -x * x;
        }
        exp_in_place(&mut e[..n]);
        for ((x, &t), &e) in xs.iter_mut().zip(&t).zip(&e) {
            let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
            let y = 1.0 - poly * e;
            *x = if x.is_nan() { *x } else { y.copysign(*x) };
        }
    }
}

avx2_fn! {
    /// `d ← gelu(s)`.
    fn gelu_chunk(d: &mut [MaybeUninit<f32>], s: &[f32]) {
        let d = init(d, s.iter().map(|&s| s * std::f32::consts::FRAC_1_SQRT_2));
        erf_in_place(d);
        for (d, &s) in d.iter_mut().zip(s) {
            *d = 0.5 * s * (1.0 + *d);
        }
    }
}

/// The tanh approximation of GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
/// (torch's `gelu(approximate="tanh")`, Qwen3-VL's vision MLP). On the CPU
/// in f32 one parallel pass, written as `x · sigmoid(2u)` (the same function:
/// `(1 + tanh u) / 2 = 1 / (1 + e^{-2u})`) with [`exp_in_place`], which has
/// no cancellation where `tanh u` nears -1; elsewhere candle's `gelu`.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1_no_bwd(&Elementwise {
            name: "vss-gelu-tanh",
            chunk: gelu_tanh_chunk,
        });
    }
    x.gelu()
}

avx2_fn! {
    /// `d ← gelu_tanh(s)`.
    fn gelu_tanh_chunk(d: &mut [MaybeUninit<f32>], s: &[f32]) {
        // -2·√(2/π)
        const K: f32 = -2.0 * 0.797_884_6;
        let d = init(d, s.iter().map(|&x| K * (x + 0.044_715 * x * x * x)));
        exp_in_place(d);
        for (d, &x) in d.iter_mut().zip(s) {
            *d = x / (1.0 + *d);
        }
    }
}

/// An elementwise CPU op in f32: `chunk` writes each 4096-element chunk of
/// the output from the same chunk of the input, chunks in parallel.
struct Elementwise {
    name: &'static str,
    chunk: fn(&mut [MaybeUninit<f32>], &[f32]),
}

impl CustomOp1 for Elementwise {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, self.name)?;
        let mut dst = uninit(src.len());
        const CHUNK: usize = 4096;
        src.par_chunks(CHUNK)
            .zip(dst.par_chunks_mut(CHUNK))
            .for_each(|(s, d)| (self.chunk)(d, s));
        // SAFETY: every chunk is written by `chunk` (each of them fills its
        // output with `init`).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cosmos::ops::max_diff;
    use candle_core::Device;

    fn randn(shape: &[usize]) -> Tensor {
        Tensor::randn(0f32, 2.0, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn rms_norm_matches_candle() {
        let dev = Device::Cpu;
        let w = randn(&[300]);
        let x = randn(&[7, 300]);
        let vb = VarBuilder::from_tensors(
            [("weight".to_string(), w.clone())].into_iter().collect(),
            DType::F32,
            &dev,
        );
        let ours = RmsNorm::load(300, 1e-6, vb).unwrap();
        let theirs = candle_nn::RmsNorm::new(w, 1e-6);
        let (a, b) = (ours.forward(&x).unwrap(), theirs.forward(&x).unwrap());
        let scale = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(max_diff(&a, &b) <= 4e-7 * scale, "{}", max_diff(&a, &b));
        // A weight of the wrong size is refused, not read out of bounds.
        let bad = x.apply_op2_no_bwd(&randn(&[299]), &RmsNormOp { eps: 1e-6 });
        assert!(bad.is_err());
    }

    #[test]
    fn qkv_heads_equal_transpose_rope_and_scale() {
        let (rows, hd, [hq, hk, hv]) = (9, 8, [4, 2, 2]);
        let qkv = randn(&[rows, (hq + hk + hv) * hd]);
        let cos = randn(&[rows, hd / 2]).cos().unwrap();
        let sin = randn(&[rows, hd / 2]).sin().unwrap();
        let (q, k, v) = qkv_heads(&qkv, [hq, hk, hv], hd, (&cos, &sin), 0.25).unwrap();
        let all = qkv
            .reshape((rows, hq + hk + hv, hd))
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap();
        let rope = |t: Tensor| {
            candle_nn::rotary_emb::rope(&t.unsqueeze(0).unwrap(), &cos, &sin)
                .unwrap()
                .squeeze(0)
                .unwrap()
        };
        let q0 = (rope(all.narrow(0, 0, hq).unwrap()) * 0.25).unwrap();
        let k0 = rope(all.narrow(0, hq, hk).unwrap());
        let v0 = all.narrow(0, hq + hk, hv).unwrap();
        // The same operations in the same order: equal to the bit.
        assert_eq!(max_diff(&q, &q0), 0.0);
        assert_eq!(max_diff(&k, &k0), 0.0);
        assert_eq!(max_diff(&v, &v0), 0.0);
        assert_eq!(q.dims(), &[hq, rows, hd]);
    }

    #[test]
    fn gelu_is_within_2e7_of_the_f64_erf_gelu() {
        // Every 1/512 from -12 to 12, and tiny values.
        let mut xs: Vec<f32> = (-6144..=6144).map(|i| i as f32 / 512.0).collect();
        xs.extend([1e-30, -1e-30, 0.0, -0.0]);
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours = gelu_erf(&t).unwrap().to_vec1::<f32>().unwrap();
        let exact = t
            .to_dtype(DType::F64)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for ((&x, &a), &b) in xs.iter().zip(&ours).zip(&exact) {
            let err = (a as f64 - b).abs();
            assert!(
                err <= 2e-7 * x.abs().max(1.0) as f64,
                "gelu({x}) = {a}, not {b}"
            );
        }
        let special = Tensor::new(&[f32::INFINITY, f32::NAN], &Device::Cpu).unwrap();
        let s = gelu_erf(&special).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(s[0], f32::INFINITY);
        assert!(s[1].is_nan());
    }

    #[test]
    fn layer_norm_matches_the_f64_formula() {
        let dev = Device::Cpu;
        let (rows, dim) = (5, 300);
        // An offset mean, where `E[x²] - mean²` would lose digits.
        let x = (randn(&[rows, dim]) + 50.0).unwrap();
        let (w, b) = (randn(&[dim]), randn(&[dim]));
        let vb = VarBuilder::from_tensors(
            [
                ("weight".to_string(), w.clone()),
                ("bias".to_string(), b.clone()),
            ]
            .into_iter()
            .collect(),
            DType::F32,
            &dev,
        );
        let got = LayerNorm::load(dim, 1e-6, vb).unwrap().forward(&x).unwrap();
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let x64 = f64s(&x);
        let mean = x64.mean_keepdim(1).unwrap();
        let c = x64.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(1).unwrap();
        let want = c
            .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&f64s(&w))
            .unwrap()
            .broadcast_add(&f64s(&b))
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let d = max_diff(&got, &want);
        assert!(d <= 2e-5, "{d}");
        // Wrong sizes are refused, not read out of bounds.
        let bad = x.apply_op3_no_bwd(&randn(&[299]), &b, &LayerNormOp { eps: 1e-6 });
        assert!(bad.is_err());
    }

    #[test]
    fn gelu_tanh_is_within_2e7_of_the_f64_tanh_gelu() {
        let mut xs: Vec<f32> = (-6144..=6144).map(|i| i as f32 / 512.0).collect();
        xs.extend([1e-30, -1e-30, 0.0, -0.0, 1e4, -1e4]);
        let t = Tensor::new(xs.as_slice(), &Device::Cpu).unwrap();
        let ours = gelu_tanh(&t).unwrap().to_vec1::<f32>().unwrap();
        for (&x, &a) in xs.iter().zip(&ours) {
            let x64 = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let b = 0.5 * x64 * (1.0 + u.tanh());
            let err = (a as f64 - b).abs();
            assert!(
                err <= 2e-7 * x.abs().max(1.0) as f64,
                "gelu_tanh({x}) = {a}, not {b}"
            );
        }
        let special = Tensor::new(&[f32::INFINITY, f32::NAN], &Device::Cpu).unwrap();
        let s = gelu_tanh(&special).unwrap().to_vec1::<f32>().unwrap();
        assert!(s[1].is_nan());
        // candle's own (libm tanh) agrees.
        let theirs = t.gelu().unwrap();
        assert!(max_diff(&gelu_tanh(&t).unwrap(), &theirs) <= 1e-5);
    }

    #[test]
    fn erf_is_odd_and_saturates() {
        let mut xs = vec![0.5f32, -0.5, 4.0, -4.0, 30.0, -30.0];
        erf_in_place(&mut xs);
        assert_eq!(xs[0], -xs[1]);
        assert!((xs[0] as f64 - 0.520_499_877_813_046_5).abs() < 3e-7);
        assert_eq!((xs[4], xs[5]), (1.0, -1.0));
    }
}
