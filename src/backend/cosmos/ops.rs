// SPDX-License-Identifier: MPL-2.0
//! CPU kernels of the cosmos-reason1 forward pass, as candle custom ops,
//! where candle's own were measurably slow (figures in
//! docs/cosmos.md):
//!
//! * [`linear`] and [`bmm`]: straight into the gemm crate candle uses, with
//!   the bias folded into the destination, no zero fill and no thread-count
//!   lookup per call;
//! * [`CausalSoftmax`]: the decoder's causal softmax without a mask tensor,
//!   never exponentiating the masked half; [`softmax_last_dim`] for the rest;
//! * [`silu_mul`]: SiLU of the gate times the up projection in one pass;
//! * [`exp_in_place`]: an `exp` that vectorises (glibc's `expf`, which
//!   candle's softmax and SiLU call one element at a time, was the largest
//!   item after the matmuls in a `perf` profile).
//!
//! Other devices and dtypes take candle's own ops.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Defines `fn $name(args)` whose body is compiled three times, for the
/// crate's baseline (SSE2), for AVX2 with FMA and for AVX-512, the best one
/// the CPU has picked at run time: the row-wise kernels get 8- or 16-lane
/// vectors (and `mul_add` a single instruction) without building the whole
/// plugin for AVX2 or AVX-512. The three copies do the same operations in
/// the same order (no contraction into FMAs but the explicit `mul_add`s):
/// the same results.
macro_rules! avx2_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) {
            #[inline(always)]
            fn body($($a: $t),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($a: $t),*) {
                    body($($a),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($a: $t),*) {
                    body($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `avx512` is compiled
                    // for (AVX-512F implies AVX2 and FMA).
                    return unsafe { avx512($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($a),*) };
                }
            }
            body($($a),*)
        }
    };
}
pub(super) use avx2_fn;

/// The largest element, in eight running lanes (a single running maximum
/// does not vectorise). NaNs are skipped (all NaN or empty: `-inf`).
#[inline(always)]
pub(super) fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let m = acc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    chunks.remainder().iter().fold(m, |m, &v| m.max(v))
}

/// The sum, in eight running lanes (the order differs from a sequential
/// sum by rounding only; a single running sum is a chain of dependent adds).
#[inline(always)]
pub(super) fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

avx2_fn! {
    /// `row ← softmax(row)`.
    pub(super) fn softmax_row_in_place(row: &mut [f32]) {
        let max = max_lanes(row);
        for d in row.iter_mut() {
            *d -= max;
        }
        exp_in_place(row);
        let sum = sum_lanes(row);
        for d in row.iter_mut() {
            *d /= sum;
        }
    }
}

avx2_fn! {
    /// `row ← softmax(src)`, `row` and `src` of one length (the same values
    /// as subtracting the maximum, exponentiating and dividing by the sum).
    pub(super) fn softmax_row(row: &mut [MaybeUninit<f32>], src: &[f32]) {
        let max = max_lanes(src);
        let row = init(row, src.iter().map(|&s| s - max));
        exp_in_place(row);
        let sum = sum_lanes(row);
        for d in row.iter_mut() {
            *d /= sum;
        }
    }
}

/// `e^x` for every element, to about 2 ulp (Cephes' polynomial on
/// `x - n·ln 2`, `|x - n·ln 2| ≤ ln 2 / 2`, then `2^n` in the exponent
/// bits). Straight-line code the compiler vectorises; compiled for AVX-512
/// and AVX2 as well, with fused multiply-adds there (half the dependent
/// steps of the polynomial), and picked at run time. `exp(-inf) = 0`, large `x`
/// saturates to `+inf`, NaN stays NaN.
pub fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { exp_avx512(xs) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above.
            return unsafe { exp_avx2(xs) };
        }
    }
    exp_lanes::<false>(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_avx512(xs: &mut [f32]) {
    exp_lanes::<true>(xs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(xs: &mut [f32]) {
    exp_lanes::<true>(xs)
}

#[inline(always)]
fn exp_lanes<const FMA: bool>(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        *x = exp_one::<FMA>(*x);
    }
}

/// `a·b + c`, in one rounding where the CPU has FMA (`FMA`: only in code
/// compiled for it; elsewhere `mul_add` would be a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

#[inline(always)]
fn exp_one<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n·ln2 is exact for |n| < 2^8.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Below this e^x is 0 in f32 (subnormals flushed), above it +inf.
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.722_83;
    // Adding 1.5·2^23 rounds to nearest for |v| < 2^22 and leaves the
    // integer in the low mantissa bits: no roundf call, no float→int
    // conversion (Rust's saturating `as` does not vectorise).
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(LO, HI);
    let t = madd::<FMA>(xc, LOG2E, ROUND);
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let n = t - ROUND;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, xc));
    // Cephes expf: e^r = 1 + r + r²·P(r).
    let p = 1.987_569_1e-4_f32;
    let p = madd::<FMA>(p, r, 1.398_199_9e-3);
    let p = madd::<FMA>(p, r, 8.333_452e-3);
    let p = madd::<FMA>(p, r, 4.166_579_6e-2);
    let p = madd::<FMA>(p, r, 1.666_666_5e-1);
    let p = madd::<FMA>(p, r, 0.5);
    let y = madd::<FMA>(p * r, r, r) + 1.0;
    // 2^n through the exponent bits, as 2^a·2^b (n is in [-126, 128], so
    // both halves are normal numbers).
    let a = ni >> 1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let v = y * pow2(a) * pow2(ni - a);
    if x.is_nan() {
        x
    } else if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        v
    }
}

/// `silu(gate) · up` of a fused gate/up projection `(rows, 2·inter)`
/// (`[gate | up]` along the last axis) → `(rows, inter)`, in one pass on the
/// CPU in f32 (SiLU as candle computes it, `g / (1 + e^-g)`); candle's ops
/// on the two halves elsewhere.
pub fn silu_mul(gate_up: &Tensor) -> Result<Tensor> {
    let two = gate_up.dim(candle_core::D::Minus1)?;
    if two % 2 != 0 {
        candle_core::bail!("silu_mul: odd last axis {two}");
    }
    if gate_up.device().is_cpu() && gate_up.dtype() == DType::F32 {
        return gate_up.contiguous()?.apply_op1_no_bwd(&SiluMul);
    }
    let g = gate_up.narrow(candle_core::D::Minus1, 0, two / 2)?;
    let u = gate_up.narrow(candle_core::D::Minus1, two / 2, two / 2)?;
    candle_nn::ops::silu(&g)? * u
}

/// The f32 elements of a contiguous CPU tensor, for the custom ops.
pub(super) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(src) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((o1, o2)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: input has to be contiguous");
    };
    Ok(&src[o1..o2])
}

avx2_fn! {
    /// `d ← silu(g) · u` for one row `s = [g | u]`.
    fn silu_mul_row(d: &mut [MaybeUninit<f32>], s: &[f32]) {
        let (g, u) = s.split_at(d.len());
        let d = init(d, g.iter().map(|&g| -g));
        exp_in_place(d);
        for ((d, &g), &u) in d.iter_mut().zip(g).zip(u) {
            *d = g / (*d + 1.0) * u;
        }
    }
}

struct SiluMul;

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "vss-silu-mul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, "silu_mul")?;
        let mut dims = layout.shape().dims().to_vec();
        let two = *dims.last().expect("checked rank");
        let half = two / 2;
        *dims.last_mut().expect("checked rank") = half;
        let mut dst = uninit(src.len() / 2);
        src.par_chunks(two)
            .zip(dst.par_chunks_mut(half))
            .for_each(|(s, d)| silu_mul_row(d, s));
        // SAFETY: every row of `half` is written by `silu_mul_row` (`init`).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), Shape::from_dims(&dims)))
    }
}

/// The gemm crate's parallelism for one call: the threads of the pool the
/// caller runs in (candle's, inside `Device::with_context`).
fn threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// Storage for `n` f32s that a kernel writes before anything reads it: no
/// zero-fill pass (docs/cosmos.md, performance). The elements stay
/// `MaybeUninit` — safe code cannot read them — until written, through
/// [`init`] (safe: it writes every element of a slice before handing it back
/// as `&mut [f32]`) or by `gemm` with `read_dst = false` (it then sets
/// `alpha` to 0 and writes every element of its (m, n) destination, zeros
/// when k = 0, before reading any); [`assume_init`] then turns the whole
/// vector into f32s.
pub(super) fn uninit(n: usize) -> Vec<MaybeUninit<f32>> {
    Box::<[f32]>::new_uninit_slice(n).into_vec()
}

/// Writes every element of `d` from `values` and hands `d` back as written
/// f32s. Panics, before handing anything back, if `values` runs out first:
/// the slice it returns is always fully written.
#[inline(always)]
pub(super) fn init(
    d: &mut [MaybeUninit<f32>],
    values: impl IntoIterator<Item = f32>,
) -> &mut [f32] {
    let mut written = 0;
    for (d, v) in d.iter_mut().zip(values) {
        d.write(v);
        written += 1;
    }
    assert_eq!(written, d.len(), "init: fewer values than elements");
    // SAFETY: all d.len() elements were written just above, and
    // MaybeUninit<f32> has the size, alignment and ABI of f32.
    unsafe { written_slice(d) }
}

/// `d` as f32s.
///
/// # Safety
///
/// Every element of `d` has been written.
#[inline(always)]
unsafe fn written_slice(d: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: the caller's promise; same layout.
    unsafe { &mut *(d as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// The vector of f32s, once every element is written (no copy).
///
/// # Safety
///
/// Every element of `v` has been written.
pub(super) unsafe fn assume_init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: same allocation, length and capacity; MaybeUninit<f32> has
    // f32's layout; every element is written (the caller's promise).
    unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<f32>(), v.len(), v.capacity()) }
}

/// The (rows, cols) strides of a rank-2 layout, and its start.
fn strides2(l: &Layout) -> Result<(usize, isize, isize)> {
    let [rs, cs] = l.stride() else {
        candle_core::bail!("expected a matrix, got {:?}", l.shape());
    };
    Ok((l.start_offset(), *rs as isize, *cs as isize))
}

/// `x (m, k) · w (k, n) [+ bias (n)]` on the CPU in f32, straight into the
/// gemm crate candle uses: the bias is the destination's initial value
/// (`dst = bias + x·w`, no separate broadcast add), no zero-fill, and no
/// thread-count lookup per call (candle 0.11 asks `num_cpus`, which parses
/// `/proc/cpuinfo`, on every matmul: about a sixth of a decode step here).
/// Elsewhere: candle's matmul and add.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.rank() == 2
        && w.rank() == 2
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.is_contiguous());
    if !fast {
        let y = x.matmul(w)?;
        return match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        };
    }
    match bias {
        Some(b) => x.apply_op3_no_bwd(w, b, &Linear),
        None => x.apply_op2_no_bwd(w, &Linear),
    }
}

/// `residual + x·w [+ bias]`: a residual connection folded into the
/// matmul on the CPU in f32, the residual (plus the bias) being the
/// destination's initial value, so there is no separate add (candle's
/// binary add was about 1.5 ns per element here: 4 ms of a prefill's
/// decoder). Elsewhere, and for a residual that is not a contiguous
/// `(m, n)` f32 matrix, `residual + linear(x, w, bias)`.
pub fn linear_add(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && [x, w, residual]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.rank() == 2)
        && residual.is_contiguous()
        && residual.dims() == [x.dim(0)?, w.dim(1)?]
        && bias.is_none_or(|b| b.dtype() == DType::F32 && b.is_contiguous());
    if !fast {
        return residual + linear(x, w, bias)?;
    }
    residual.apply_op3_no_bwd(
        x,
        w,
        &LinearAdd {
            bias: bias.cloned(),
        },
    )
}

/// [`linear_add`]'s op: the residual, `x` and `w` are its inputs; the bias
/// (a fourth tensor, which candle's custom ops have no slot for) rides in
/// the op.
struct LinearAdd {
    bias: Option<Tensor>,
}

impl candle_core::CustomOp3 for LinearAdd {
    fn name(&self) -> &'static str {
        "vss-linear-add"
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
        let residual = contiguous_f32(s1, l1, "linear_add residual")?;
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s2, s3) else {
            candle_core::bail!("linear_add: f32 only");
        };
        let guard = self.bias.as_ref().map(|b| b.storage_and_layout());
        let bias = match &guard {
            Some((storage, layout)) => match &**storage {
                candle_core::Storage::Cpu(b) => Some(contiguous_f32(b, layout, "linear_add bias")?),
                _ => candle_core::bail!("linear_add: the bias is not on the CPU"),
            },
            None => None,
        };
        Linear::run((x, l2), (w, l3), bias, Some(residual))
    }
}

struct Linear;

impl Linear {
    /// `dst = [residual +] [bias +] x·w`.
    fn run(
        x: (&[f32], &Layout),
        w: (&[f32], &Layout),
        bias: Option<&[f32]>,
        residual: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x.1.shape().dims2()?;
        let (k2, n) = w.1.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("linear: ({m}, {k}) by ({k2}, {n})");
        }
        if bias.is_some_and(|b| b.len() != n) {
            candle_core::bail!(
                "linear: bias of {} for {n} outputs",
                bias.map_or(0, <[f32]>::len)
            );
        }
        let (xo, x_rs, x_cs) = strides2(x.1)?;
        let (wo, w_rs, w_cs) = strides2(w.1)?;
        if residual.is_some_and(|r| r.len() != m * n) {
            candle_core::bail!(
                "linear: residual of {} for ({m}, {n})",
                residual.map_or(0, <[f32]>::len)
            );
        }
        let read_dst = bias.is_some() || residual.is_some();
        let mut dst = match (residual, bias) {
            (Some(r), Some(b)) => {
                let mut d = uninit(m * n);
                d.par_chunks_mut(n.max(1))
                    .zip(r.par_chunks(n.max(1)))
                    .for_each(|(d, r)| {
                        init(d, r.iter().zip(b).map(|(&r, &b)| r + b));
                    });
                d
            }
            // The initial destinations are written row by row on every
            // thread (a prefill's are up to 4 MB).
            (Some(r), None) => {
                let mut d = uninit(m * n);
                d.par_chunks_mut(n.max(1))
                    .zip(r.par_chunks(n.max(1)))
                    .for_each(|(d, r)| {
                        init(d, r.iter().copied());
                    });
                d
            }
            (None, Some(b)) => {
                let mut d = uninit(m * n);
                d.par_chunks_mut(n.max(1)).for_each(|d| {
                    init(d, b.iter().copied());
                });
                d
            }
            (None, None) => uninit(m * n),
        };
        if k == 0 && !read_dst {
            init(&mut dst, std::iter::repeat(0.0));
        } else if m > 0 && n > 0 && k > 0 {
            // SAFETY: the pointers and strides describe the (m, k), (k, n)
            // and (m, n) matrices inside their buffers (candle's layouts).
            // `dst` is only read when `read_dst`, and then it is written
            // (bias and/or residual above); otherwise gemm writes every
            // element without reading it (alpha forced to 0).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    read_dst,
                    x.0[xo..].as_ptr(),
                    x_cs,
                    x_rs,
                    w.0[wo..].as_ptr(),
                    w_cs,
                    w_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    threads(),
                )
            };
        }
        // SAFETY: every element is written: by the bias/residual rows when
        // `read_dst`, by the zero fill when k = 0, by gemm otherwise (or
        // there are none: m = 0 or n = 0).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), Shape::from((m, n))))
    }
}

impl candle_core::CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "vss-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => Linear::run((x, l1), (w, l2), None, None),
            _ => candle_core::bail!("linear: f32 only"),
        }
    }
}

impl candle_core::CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "vss-linear-bias"
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
        match (s1, s2, s3) {
            (CpuStorage::F32(x), CpuStorage::F32(w), b) => Linear::run(
                (x, l1),
                (w, l2),
                Some(contiguous_f32(b, l3, "linear bias")?),
                None,
            ),
            _ => candle_core::bail!("linear: f32 only"),
        }
    }
}

/// Batched `a (b, m, k) · c (b, k, n)` (any strides, e.g. a transposed
/// view of the keys) on the CPU in f32: the batches run in parallel, one
/// single-threaded gemm each, when there are enough of them to keep every
/// thread busy (window attention: hundreds of 64×64 products), else one
/// after the other with the threads inside each. Elsewhere candle's matmul.
pub fn bmm(a: &Tensor, c: &Tensor) -> Result<Tensor> {
    if !(a.device().is_cpu()
        && a.dtype() == DType::F32
        && c.dtype() == DType::F32
        && a.rank() == 3
        && c.rank() == 3)
    {
        return a.matmul(c);
    }
    a.apply_op2_no_bwd(c, &Bmm)
}

struct Bmm;

impl candle_core::CustomOp2 for Bmm {
    fn name(&self) -> &'static str {
        "vss-bmm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(c)) = (s1, s2) else {
            candle_core::bail!("bmm: f32 only");
        };
        let (b, m, k) = l1.shape().dims3()?;
        let (b2, k2, n) = l2.shape().dims3()?;
        if b != b2 || k != k2 {
            candle_core::bail!("bmm: ({b}, {m}, {k}) by ({b2}, {k2}, {n})");
        }
        let [a_bs, a_rs, a_cs] = *l1.stride() else {
            unreachable!()
        };
        let [c_bs, c_rs, c_cs] = *l2.stride() else {
            unreachable!()
        };
        let (a, c) = (&a[l1.start_offset()..], &c[l2.start_offset()..]);
        let mut dst = uninit(b * m * n);
        let one = |i: usize, d: &mut [MaybeUninit<f32>], par: gemm::Parallelism| {
            // SAFETY: batch i of each operand lies inside its buffer at the
            // layout's strides; d is this batch's (m, n) block, which gemm
            // writes whole without reading it (read_dst = false).
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    d.as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    false,
                    a[i * a_bs..].as_ptr(),
                    a_cs as isize,
                    a_rs as isize,
                    c[i * c_bs..].as_ptr(),
                    c_cs as isize,
                    c_rs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            }
        };
        if k == 0 {
            init(&mut dst, std::iter::repeat(0.0));
        } else if m * n > 0 {
            if b >= 2 * rayon::current_num_threads() {
                dst.par_chunks_mut(m * n)
                    .enumerate()
                    .for_each(|(i, d)| one(i, d, gemm::Parallelism::None));
            } else {
                for (i, d) in dst.chunks_mut(m * n).enumerate() {
                    one(i, d, threads());
                }
            }
        }
        // SAFETY: every element is written: zeros when k = 0, else each of
        // the b (m, n) blocks by gemm (or there are none).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), Shape::from((b, m, n))))
    }
}

/// One decoder layer's key/value cache, (kv_heads, tokens, hd) each.
///
/// On the CPU the tokens are written in place into buffers with room to
/// spare (capacity doubling), so a decode step copies only its own key and
/// value: appending with `Tensor::cat` copied the whole cache every step
/// (9 % of a decode step's time in a `perf` profile, docs/cosmos.md).
/// What [`KvCache::append`] returns is then a view of the buffers' first
/// tokens (strided along the heads; [`bmm`] and the attention kernels take
/// that as it is or copy it). Elsewhere (CUDA) `Tensor::cat`, as before.
#[derive(Debug, Default)]
pub struct KvCache {
    /// The keys and values: the whole cache (`len` tokens) off the CPU,
    /// buffers of `capacity ≥ len` tokens on it.
    kv: Option<(Tensor, Tensor)>,
    len: usize,
}

impl KvCache {
    /// Tokens in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every token (start of a new prompt).
    pub fn clear(&mut self) {
        self.kv = None;
        self.len = 0;
    }

    /// Appends `k` and `v` (kv_heads, l, hd) and gives the whole cache.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let l = k.dim(1)?;
        if v.dims() != k.dims() {
            candle_core::bail!("kv cache: k {:?} and v {:?}", k.shape(), v.shape());
        }
        if !k.device().is_cpu() {
            let (k, v) = match &self.kv {
                Some((pk, pv)) => (Tensor::cat(&[pk, k], 1)?, Tensor::cat(&[pv, v], 1)?),
                None => (k.clone(), v.clone()),
            };
            self.kv = Some((k.clone(), v.clone()));
            self.len += l;
            return Ok((k, v));
        }
        let need = self.len + l;
        let capacity = self.kv.as_ref().map_or(0, |(b, _)| b.dim(1).unwrap_or(0));
        if need > capacity {
            // Room for the tokens a generation adds after a prompt (or
            // twice the cache): reallocations stay rare.
            let cap = (2 * capacity).max(need + 256);
            let (kvs, _, hd) = k.dims3()?;
            let grow = |old: Option<&Tensor>, new: &Tensor| -> Result<Tensor> {
                let b = Tensor::zeros((kvs, cap, hd), new.dtype(), new.device())?;
                if let Some(old) = old {
                    b.slice_set(&old.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                Ok(b)
            };
            let old = self.kv.take();
            self.kv = Some((
                grow(old.as_ref().map(|o| &o.0), k)?,
                grow(old.as_ref().map(|o| &o.1), v)?,
            ));
        }
        let (bk, bv) = self.kv.as_ref().expect("allocated above");
        bk.slice_set(&k.contiguous()?, 1, self.len)?;
        bv.slice_set(&v.contiguous()?, 1, self.len)?;
        self.len = need;
        if self.len == l {
            // The first append (a prompt): its attention takes the
            // contiguous k and v it was given.
            return Ok((k.clone(), v.clone()));
        }
        Ok((bk.narrow(1, 0, need)?, bv.narrow(1, 0, need)?))
    }
}

/// The causal softmax of a forward pass over `queries` new tokens after
/// `past` cached ones: query `i` sees keys `0..=past + i`, the others get 0
/// (what adding a `-inf` mask before the softmax gives). Built once per
/// forward, used by every layer.
pub enum CausalSoftmax {
    /// One new token: it sees everything, a plain softmax.
    Plain,
    /// CPU, f32 scores: the fused kernel, no mask tensor.
    Fused { queries: usize, past: usize },
    /// Elsewhere (CUDA): an additive (queries, past + queries) mask and
    /// candle's softmax.
    Mask(Tensor),
}

impl CausalSoftmax {
    pub fn new(queries: usize, past: usize, device: &candle_core::Device) -> Result<Self> {
        if queries <= 1 {
            return Ok(CausalSoftmax::Plain);
        }
        if device.is_cpu() {
            return Ok(CausalSoftmax::Fused { queries, past });
        }
        Ok(CausalSoftmax::Mask(additive_mask(queries, past, device)?))
    }

    /// Softmax over the last axis of f32 scores `(.., rows, past + queries)`
    /// whose row `r` belongs to query `r % queries`.
    pub fn apply(&self, scores: &Tensor) -> Result<Tensor> {
        match self {
            CausalSoftmax::Plain => softmax_last_dim(scores),
            CausalSoftmax::Fused { queries, past } if scores.dtype() == DType::F32 => {
                let total = scores.dim(candle_core::D::Minus1)?;
                if past + queries != total {
                    candle_core::bail!(
                        "causal softmax: {queries} queries after {past} cached tokens but {total} keys"
                    );
                }
                scores.contiguous()?.apply_op1_no_bwd(&FusedCausalSoftmax {
                    queries: *queries,
                    past: *past,
                })
            }
            CausalSoftmax::Fused { queries, past } => {
                CausalSoftmax::Mask(additive_mask(*queries, *past, scores.device())?).apply(scores)
            }
            CausalSoftmax::Mask(mask) => {
                let (queries, total) = mask.dims2()?;
                let dims = scores.dims().to_vec();
                let rows = dims[..dims.len() - 1].iter().product::<usize>();
                let s = scores
                    .reshape((rows / queries, queries, total))?
                    .broadcast_add(&mask.to_dtype(scores.dtype())?)?
                    .reshape(dims)?;
                candle_nn::ops::softmax_last_dim(&s)
            }
        }
    }
}

impl CausalSoftmax {
    /// Attention with this causal rule: `softmax(q·kᵀ)·v` per head, `q`
    /// (heads, l, hd) in f32 and already scaled, `k` and `v` (kv_heads,
    /// past + l, hd), `heads` a multiple of `kv_heads` (grouped-query
    /// attention: the query heads that share a kv head are stacked along the
    /// rows, a free reshape). Gives (heads, l, hd) in v's dtype.
    ///
    /// CPU prefill in f32: `CausalAttention`, which never computes the
    /// masked half of the scores. Elsewhere: two batched matmuls around
    /// [`CausalSoftmax::apply`].
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (hs, l, hd) = q.dims3()?;
        let kvs = k.dim(0)?;
        if kvs == 0 || hs % kvs != 0 {
            candle_core::bail!("attention: {hs} query heads over {kvs} kv heads");
        }
        if let CausalSoftmax::Fused { past, .. } = self {
            if q.device().is_cpu() && [q, k, v].iter().all(|t| t.dtype() == DType::F32) {
                return q.contiguous()?.apply_op3_no_bwd(
                    &k.contiguous()?,
                    &v.contiguous()?,
                    &CausalAttention { past: *past },
                );
            }
        }
        let qg = q.reshape((kvs, hs / kvs * l, hd))?;
        let att = bmm(&qg, &k.to_dtype(DType::F32)?.t()?)?;
        bmm(&self.apply(&att)?.to_dtype(v.dtype())?, v)?.reshape((hs, l, hd))
    }
}

/// One block of attention on the CPU in f32, with single-threaded gemm
/// calls: `rb` queries `q` against `kl` keys `k` and values `v` (rows of
/// `hd`, contiguous), into `o` (`rb` rows of `hd`). Query `i` sees keys
/// `0..visible(i)` (1 ≤ visible(i) ≤ kl), the rest get weight 0. `s` is the
/// scratch for the rb×kl scores. Both are written before they are read:
/// every element of `o[..rb * hd]` is written.
#[allow(clippy::too_many_arguments)]
fn attend_block(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &mut [MaybeUninit<f32>],
    (rb, kl, hd): (usize, usize, usize),
    visible: impl Fn(usize) -> usize,
    s: &mut [MaybeUninit<f32>],
) {
    assert!(
        q.len() >= rb * hd
            && k.len() >= kl * hd
            && v.len() >= kl * hd
            && o.len() >= rb * hd
            && s.len() >= rb * kl
    );
    let s = &mut s[..rb * kl];
    // SAFETY (both calls): the operands are at least the sizes checked
    // above, read and written at these strides (row-major rows of hd or kl;
    // the keys read as their transpose). The destinations are written whole
    // without being read (read_dst = false).
    unsafe {
        gemm::gemm(
            rb,
            kl,
            hd,
            s.as_mut_ptr().cast::<f32>(),
            1,
            kl as isize,
            false,
            q.as_ptr(),
            1,
            hd as isize,
            k.as_ptr(),
            hd as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    // SAFETY: gemm wrote all rb × kl scores (zeros when hd = 0).
    let s = unsafe { written_slice(s) };
    for (i, row) in s.chunks_mut(kl).enumerate() {
        let (row, hidden) = row.split_at_mut(visible(i));
        hidden.fill(0.0);
        softmax_row_in_place(row);
    }
    unsafe {
        gemm::gemm(
            rb,
            hd,
            kl,
            o.as_mut_ptr().cast::<f32>(),
            1,
            hd as isize,
            false,
            s.as_ptr(),
            1,
            kl as isize,
            v.as_ptr(),
            1,
            hd as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// A (heads, rows, hd) f32 result computed head by head in parallel: `f(h,
/// out)` must write every element of head `h`'s (rows, hd) block.
///
/// # Safety
///
/// `f` writes every element of the block it is given.
unsafe fn per_head(
    (hs, rows, hd): (usize, usize, usize),
    f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> (CpuStorage, Shape) {
    let mut dst = uninit(hs * rows * hd);
    if !dst.is_empty() {
        dst.par_chunks_mut(rows * hd)
            .enumerate()
            .for_each(|(h, o)| f(h, o));
    }
    // SAFETY: every block is written by `f` (the caller's promise).
    let dst = unsafe { assume_init(dst) };
    (CpuStorage::F32(dst), Shape::from((hs, rows, hd)))
}

/// Causal attention of `l` new queries after `past` cached keys on the CPU
/// in f32, per query head and block of 64 queries: the scores against the
/// keys that block can see (`past + end of block`, not all of them: about
/// half the score and value products of a prefill are skipped), the causal
/// softmax in place, then times the values ([`attend_block`]); the heads run
/// in parallel. No (heads, l, past + l) score tensor is ever allocated.
struct CausalAttention {
    past: usize,
}

impl candle_core::CustomOp3 for CausalAttention {
    fn name(&self) -> &'static str {
        "vss-causal-attention"
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
        const B: usize = 64;
        let q = contiguous_f32(s1, l1, "causal attention")?;
        let k = contiguous_f32(s2, l2, "causal attention")?;
        let v = contiguous_f32(s3, l3, "causal attention")?;
        let (hs, l, hd) = l1.shape().dims3()?;
        let (kvs, total, hd2) = l2.shape().dims3()?;
        if l3.shape() != l2.shape() || hd2 != hd || total != self.past + l || hs % kvs != 0 {
            candle_core::bail!(
                "causal attention: q {:?}, k {:?}, v {:?} after {} cached tokens",
                l1.shape(),
                l2.shape(),
                l3.shape(),
                self.past
            );
        }
        let groups = hs / kvs;
        // SAFETY: every output row r0.. of every head is written by its
        // block (`attend_block` writes all of its rb rows).
        Ok(unsafe {
            per_head((hs, l, hd), |h, o| {
                let (qh, g) = (&q[h * l * hd..(h + 1) * l * hd], h / groups);
                let (kh, vh) = (&k[g * total * hd..], &v[g * total * hd..]);
                let mut s = uninit(B.min(l) * total);
                for r0 in (0..l).step_by(B) {
                    let rb = B.min(l - r0);
                    let kend = self.past + r0 + rb;
                    attend_block(
                        &qh[r0 * hd..],
                        &kh[..kend * hd],
                        &vh[..kend * hd],
                        &mut o[r0 * hd..],
                        (rb, kend, hd),
                        |i| self.past + r0 + i + 1,
                        &mut s,
                    );
                }
            })
        })
    }
}

/// Attention within spans of rows, every key of its span visible to every
/// query (the vision tower's windows and frames): `q`, `k`, `v` (heads, n,
/// hd), `spans` the boundaries `0 = b0 ≤ b1 ≤ … = n`. On the CPU in f32 one
/// fused kernel, per head in parallel and span by span (`attend_block`):
/// no per-window copies of q/k/v, no score tensors, no concatenation of the
/// windows' outputs. `None` elsewhere (the caller batches candle's ops).
pub fn span_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spans: &[usize],
) -> Result<Option<Tensor>> {
    if !(q.device().is_cpu() && [q, k, v].iter().all(|t| t.dtype() == DType::F32)) {
        return Ok(None);
    }
    let n = q.dim(1)?;
    let ok = spans.first() == Some(&0)
        && spans.last() == Some(&n)
        && spans.windows(2).all(|w| w[0] <= w[1]);
    if !ok {
        candle_core::bail!("span attention: spans {spans:?} do not cover {n} rows");
    }
    let t = q.contiguous()?.apply_op3_no_bwd(
        &k.contiguous()?,
        &v.contiguous()?,
        &SpanAttention {
            spans: spans.to_vec(),
        },
    )?;
    Ok(Some(t))
}

struct SpanAttention {
    /// Checked: from 0 to the row count, non-decreasing.
    spans: Vec<usize>,
}

impl candle_core::CustomOp3 for SpanAttention {
    fn name(&self) -> &'static str {
        "vss-span-attention"
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
        let q = contiguous_f32(s1, l1, "span attention")?;
        let k = contiguous_f32(s2, l2, "span attention")?;
        let v = contiguous_f32(s3, l3, "span attention")?;
        let (hs, n, hd) = l1.shape().dims3()?;
        if l2.shape() != l1.shape() || l3.shape() != l1.shape() {
            candle_core::bail!(
                "span attention: q {:?}, k {:?}, v {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let longest = self
            .spans
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        // SAFETY: the spans cover every row 0..n (checked), so every
        // output row is written (`attend_block` writes all of its rows).
        Ok(unsafe {
            per_head((hs, n, hd), |h, o| {
                let (base, end) = (h * n * hd, (h + 1) * n * hd);
                let mut s = uninit(longest * longest);
                for w in self.spans.windows(2) {
                    let (a, len) = (w[0], w[1] - w[0]);
                    if len == 0 {
                        continue;
                    }
                    attend_block(
                        &q[base + a * hd..end],
                        &k[base + a * hd..end],
                        &v[base + a * hd..end],
                        &mut o[a * hd..],
                        (len, len, hd),
                        |_| len,
                        &mut s,
                    );
                }
            })
        })
    }
}

/// Softmax over the last axis; on the CPU in f32 the fused kernel (every
/// key visible) with the vectorised exp, elsewhere candle's.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let total = x.dim(candle_core::D::Minus1)?;
        if total == 0 {
            return Ok(x.clone());
        }
        return x.contiguous()?.apply_op1_no_bwd(&FusedCausalSoftmax {
            queries: 1,
            past: total - 1,
        });
    }
    candle_nn::ops::softmax_last_dim(x)
}

/// (queries, past + queries): 0 where query `i` sees key `j`, `-inf` after.
fn additive_mask(queries: usize, past: usize, device: &candle_core::Device) -> Result<Tensor> {
    let total = past + queries;
    let m: Vec<f32> = (0..queries)
        .flat_map(|i| (0..total).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (queries, total), device)
}

struct FusedCausalSoftmax {
    queries: usize,
    past: usize,
}

impl CustomOp1 for FusedCausalSoftmax {
    fn name(&self) -> &'static str {
        "vss-causal-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(storage, layout, "causal softmax")?;
        let total = self.past + self.queries;
        let mut dst = uninit(src.len());
        src.par_chunks(total)
            .zip(dst.par_chunks_mut(total))
            .enumerate()
            .for_each(|(r, (s, d))| {
                let valid = self.past + r % self.queries + 1;
                let (d, hidden) = d.split_at_mut(valid);
                init(hidden, std::iter::repeat(0.0));
                softmax_row(d, &s[..valid]);
            });
        // SAFETY: every row of `total` is written: the hidden part by
        // `init`, the rest by `softmax_row` (`init`).
        let dst = unsafe { assume_init(dst) };
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

/// The largest |a - b| of two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `init` writes every element and hands back the written slice; with
    /// too few values it panics rather than hand back unwritten elements.
    #[test]
    fn init_writes_every_element_or_panics() {
        let mut d = uninit(5);
        let got = init(&mut d, (0..5).map(|i| i as f32));
        assert_eq!(got, &[0.0, 1.0, 2.0, 3.0, 4.0]);
        // Extra values are ignored.
        assert_eq!(init(&mut d[..2], std::iter::repeat(7.0)), &[7.0, 7.0]);
        // SAFETY: every element was written above.
        let v = unsafe { assume_init(d) };
        assert_eq!(v, [7.0, 7.0, 2.0, 3.0, 4.0]);
        let short = std::panic::catch_unwind(|| {
            let mut d = uninit(3);
            init(&mut d, [1.0, 2.0]).len()
        });
        assert!(short.is_err());
        assert!(uninit(0).is_empty());
    }
    use candle_core::Device;

    /// The fused kernel against bmm + the masked softmax + bmm, with grouped
    /// heads, cached keys and query blocks that do not divide `l`.
    #[test]
    fn kv_cache_appends_in_place_and_equals_cat() {
        let dev = candle_core::Device::Cpu;
        let mut c = KvCache::default();
        let mut all_k: Option<Tensor> = None;
        // A prompt, then enough single tokens to grow the buffers.
        for (i, l) in [5usize, 1, 1, 300, 1].into_iter().enumerate() {
            let k = Tensor::randn(0f32, 1.0, (2, l, 4), &dev).unwrap();
            let v = (&k * (i as f64 + 1.0)).unwrap();
            let (ck, cv) = c.append(&k, &v).unwrap();
            let want = match &all_k {
                Some(p) => Tensor::cat(&[p, &k], 1).unwrap(),
                None => k.clone(),
            };
            assert_eq!(ck.dims(), want.dims());
            assert_eq!(max_diff(&ck, &want), 0.0);
            assert_eq!(cv.dims(), want.dims());
            all_k = Some(want);
            assert_eq!(c.len(), all_k.as_ref().unwrap().dim(1).unwrap());
        }
        c.clear();
        assert!(c.is_empty());
        let k = Tensor::ones((2, 3, 4), DType::F32, &dev).unwrap();
        assert_eq!(c.append(&k, &k).unwrap().0.dims(), &[2, 3, 4]);
    }

    #[test]
    fn causal_attention_equals_the_unfused_path() {
        let dev = Device::Cpu;
        for (past, l) in [(0usize, 1usize), (0, 130), (7, 64), (5, 3)] {
            let total = past + l;
            let q = Tensor::randn(0f32, 1.0, (4, l, 16), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (2, total, 16), &dev).unwrap();
            let v = Tensor::randn(0f32, 1.0, (2, total, 16), &dev).unwrap();
            let fused = CausalSoftmax::Fused { queries: l, past };
            let got = fused.attend(&q, &k, &v).unwrap();
            let mask = CausalSoftmax::Mask(additive_mask(l, past, &dev).unwrap());
            let want = mask.attend(&q, &k, &v).unwrap();
            assert_eq!(got.dims(), &[4, l, 16]);
            let d = max_diff(&got, &want);
            assert!(d < 1e-5, "past {past}, l {l}: {d}");
        }
    }

    /// The fused span kernel against a plain softmax attention per span.
    #[test]
    fn span_attention_equals_attention_per_span() {
        let dev = Device::Cpu;
        let spans = [0usize, 5, 5, 69, 70, 130];
        let [q, k, v] = [0, 1, 2].map(|_| Tensor::randn(0f32, 1.0, (3, 130, 8), &dev).unwrap());
        let got = span_attention(&q, &k, &v, &spans).unwrap().unwrap();
        let mut want = Vec::new();
        for w in spans.windows(2).filter(|w| w[1] > w[0]) {
            let part = |t: &Tensor| t.narrow(1, w[0], w[1] - w[0]).unwrap();
            let att =
                candle_nn::ops::softmax_last_dim(&part(&q).matmul(&part(&k).t().unwrap()).unwrap())
                    .unwrap();
            want.push(att.matmul(&part(&v)).unwrap());
        }
        let want = Tensor::cat(&want, 1).unwrap();
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "{d}");
        assert!(span_attention(&q, &k, &v, &[0, 100]).is_err());
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        // The variant this CPU runs, and both portable ones (with and
        // without fused multiply-adds).
        type Exp = fn(&mut [f32]);
        let variants: [(&str, Exp); 3] = [
            ("dispatched", exp_in_place),
            ("portable", exp_lanes::<false>),
            ("portable fma", exp_lanes::<true>),
        ];
        for (name, exp) in variants {
            let mut worst = 0u32;
            let mut x = -87.0f32;
            while x < 88.0 {
                let mut v = [x];
                exp(&mut v);
                let want = x.exp();
                let ulp = (v[0].to_bits() as i64 - want.to_bits() as i64).unsigned_abs() as u32;
                worst = worst.max(ulp);
                x += 0.0137;
            }
            assert!(worst <= 2, "{name}: worst error {worst} ulp");
        }
        let mut v = [
            f32::NEG_INFINITY,
            -200.0,
            0.0,
            200.0,
            f32::INFINITY,
            f32::NAN,
        ];
        exp_in_place(&mut v);
        assert_eq!(&v[..5], &[0.0, 0.0, 1.0, f32::INFINITY, f32::INFINITY]);
        assert!(v[5].is_nan());
    }

    #[test]
    fn linear_matches_candle_matmul() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (7, 33), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (33, 19), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 19, &dev).unwrap();
        let want = x.matmul(&w).unwrap();
        assert!(max_diff(&linear(&x, &w, None).unwrap(), &want) < 1e-5);
        let want_b = want.broadcast_add(&b).unwrap();
        assert!(max_diff(&linear(&x, &w, Some(&b)).unwrap(), &want_b) < 1e-5);
        // A transposed (strided) weight, a strided input (a row slice).
        let wt = w.t().unwrap().contiguous().unwrap();
        assert!(max_diff(&linear(&x, &wt.t().unwrap(), Some(&b)).unwrap(), &want_b) < 1e-5);
        let xs = x.narrow(1, 0, 30).unwrap();
        let ws = w.narrow(0, 0, 30).unwrap();
        assert!(max_diff(&linear(&xs, &ws, None).unwrap(), &xs.matmul(&ws).unwrap()) < 1e-5);
        // Empty inner dimension: the bias alone.
        let e = linear(
            &x.narrow(1, 0, 0).unwrap(),
            &w.narrow(0, 0, 0).unwrap(),
            Some(&b),
        )
        .unwrap();
        assert!(max_diff(&e, &b.unsqueeze(0).unwrap().broadcast_as((7, 19)).unwrap()) == 0.0);
    }

    /// The residual folded into the matmul against the separate add, with
    /// and without a bias, an inner dimension that gemm splits into
    /// several depth blocks, and the fallbacks (a transposed residual, an
    /// empty inner dimension).
    #[test]
    fn linear_add_matches_linear_then_add() {
        let dev = Device::Cpu;
        for (m, k, n) in [(7usize, 33usize, 19usize), (70, 1100, 130)] {
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let w = Tensor::randn(0f32, 1.0, (k, n), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
            let r = Tensor::randn(0f32, 1.0, (m, n), &dev).unwrap();
            for bias in [None, Some(&b)] {
                let want = (&r + linear(&x, &w, bias).unwrap()).unwrap();
                let got = linear_add(&x, &w, bias, &r).unwrap();
                let scale = want
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                let d = max_diff(&got, &want);
                assert!(
                    d <= 1e-6 * scale,
                    "({m}, {k}, {n}), bias {}: {d}",
                    bias.is_some()
                );
            }
            // The residual is an input: unchanged.
            let before = r.to_vec2::<f32>().unwrap();
            linear_add(&x, &w, Some(&b), &r).unwrap();
            assert_eq!(r.to_vec2::<f32>().unwrap(), before);
        }
        let x = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (8, 6), &dev).unwrap();
        let rt = Tensor::randn(0f32, 1.0, (6, 5), &dev).unwrap().t().unwrap();
        let want = (&rt + linear(&x, &w, None).unwrap()).unwrap();
        assert_eq!(
            max_diff(&linear_add(&x, &w, None, &rt).unwrap(), &want),
            0.0
        );
        let e = linear_add(
            &x.narrow(1, 0, 0).unwrap(),
            &w.narrow(0, 0, 0).unwrap(),
            None,
            &rt.contiguous().unwrap(),
        )
        .unwrap();
        assert_eq!(max_diff(&e, &rt), 0.0);
    }

    #[test]
    fn bmm_matches_candle_matmul() {
        let dev = Device::Cpu;
        // Few batches (threads inside each gemm) and many (one gemm per batch).
        for batches in [1usize, 3, 40] {
            let a = Tensor::randn(0f32, 1.0, (batches, 9, 16), &dev).unwrap();
            let k = Tensor::randn(0f32, 1.0, (batches, 11, 16), &dev).unwrap();
            let kt = k.transpose(1, 2).unwrap();
            let got = bmm(&a, &kt).unwrap();
            assert_eq!(got.dims(), &[batches, 9, 11]);
            assert!(max_diff(&got, &a.matmul(&kt).unwrap()) < 1e-5, "{batches}");
        }
    }

    #[test]
    fn silu_mul_matches_candle() {
        let dev = Device::Cpu;
        let gu = Tensor::randn(0f32, 4.0, (5, 2 * 37), &dev).unwrap();
        let got = silu_mul(&gu).unwrap();
        let want = (candle_nn::ops::silu(&gu.narrow(1, 0, 37).unwrap()).unwrap()
            * gu.narrow(1, 37, 37).unwrap())
        .unwrap();
        assert_eq!(got.dims(), &[5, 37]);
        let d = max_diff(&got, &want);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn lane_reductions_and_the_row_softmax_match_the_plain_loops() {
        for n in 0..40 {
            let x: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(max_lanes(&x), max, "n = {n}");
            let sum: f32 = x.iter().sum();
            assert!(
                (sum_lanes(&x) - sum).abs() <= 1e-5 * (1.0 + sum.abs()),
                "n = {n}"
            );
            if n == 0 {
                continue;
            }
            let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
            let total: f32 = e.iter().sum();
            let mut got = uninit(n);
            softmax_row(&mut got, &x);
            // SAFETY: softmax_row writes its whole row.
            let got = unsafe { assume_init(got) };
            let mut in_place = x.clone();
            softmax_row_in_place(&mut in_place);
            assert_eq!(got, in_place);
            for (g, e) in got.iter().zip(&e) {
                assert!(
                    (g - e / total).abs() < 1e-6,
                    "n = {n}: {g} vs {}",
                    e / total
                );
            }
        }
        // A NaN among numbers is skipped by the maximum, as f32::max does.
        let mut x = vec![1.0f32; 17];
        x[9] = f32::NAN;
        x[3] = 4.0;
        assert_eq!(max_lanes(&x), 4.0);
    }

    #[test]
    fn causal_softmax_matches_mask_and_softmax() {
        let dev = Device::Cpu;
        for (queries, past) in [(5usize, 0usize), (3, 4), (1, 6)] {
            let total = past + queries;
            let s = Tensor::randn(0f32, 3.0, (2, 2 * queries, total), &dev).unwrap();
            let got = CausalSoftmax::new(queries, past, &dev)
                .unwrap()
                .apply(&s)
                .unwrap();
            let m: Vec<f32> = (0..2 * queries)
                .flat_map(|r| {
                    (0..total).map(move |j| {
                        if j > past + r % queries {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(m, (2 * queries, total), &dev).unwrap();
            // The mask path (what CUDA takes) gives the same.
            let masked = CausalSoftmax::Mask(additive_mask(queries, past, &dev).unwrap())
                .apply(&s)
                .unwrap();
            let want = candle_nn::ops::softmax_last_dim(&s.broadcast_add(&mask).unwrap()).unwrap();
            let d = max_diff(&got, &want);
            assert!(d < 1e-6, "queries {queries} past {past}: {d}");
            assert_eq!(max_diff(&masked, &want), 0.0);
        }
    }
}
