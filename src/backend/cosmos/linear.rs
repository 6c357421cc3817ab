// SPDX-License-Identifier: MPL-2.0
//! Linear layers laid out for the device they run on, and the fused
//! projections of the decoder (q/k/v in one matmul, gate/up in one).
//!
//! Checkpoints store a weight as (out, in); `candle_nn::Linear` multiplies by
//! its transposed view. On the CPU that makes candle's matmul (the `gemm`
//! crate) repack the whole weight on every call; stored as (in, out) it reads
//! the weight as it is: 10–50 % faster per matmul on this project's shapes
//! (docs/cosmos.md). So the CPU keeps the transposed copy, made once
//! at load, one tensor at a time; CUDA (cuBLAS transposes for free) keeps the
//! checkpoint's layout. A weight shared with the embeddings (tied `lm_head`)
//! is not copied: it stays a transposed view.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::ops;

/// `x·Wᵀ + b` over the last axis of `x` (rows, in).
#[derive(Clone, Debug)]
pub struct Lin {
    /// (in, out) when `transposed`, else (out, in).
    w: Tensor,
    transposed: bool,
    bias: Option<Tensor>,
}

impl Lin {
    /// From a checkpoint weight (out, in) and bias (out).
    pub fn new(w: Tensor, bias: Option<Tensor>, device: &Device) -> Result<Lin> {
        if device.is_cpu() {
            Ok(Lin {
                w: stack_transposed(&[w])?,
                transposed: true,
                bias,
            })
        } else {
            Ok(Lin {
                w,
                transposed: false,
                bias,
            })
        }
    }

    /// A weight (out, in) kept as it is (shared with another layer).
    pub fn shared(w: Tensor) -> Lin {
        Lin {
            w,
            transposed: false,
            bias: None,
        }
    }

    /// `prefix.weight` (and `prefix.bias` when `bias`) of `vb`.
    pub fn load(vb: VarBuilder, inp: usize, out: usize, bias: bool) -> Result<Lin> {
        Self::load_fused(&[vb], inp, &[out], bias)
    }

    /// Several projections of the same input as one layer: their weights
    /// stacked along the output axis, so one matmul gives `[a | b | ..]`.
    pub fn load_fused(parts: &[VarBuilder], inp: usize, outs: &[usize], bias: bool) -> Result<Lin> {
        let device = parts[0].device().clone();
        let mut ws = Vec::with_capacity(parts.len());
        let mut bs = Vec::with_capacity(parts.len());
        for (vb, &out) in parts.iter().zip(outs) {
            ws.push(vb.get((out, inp), "weight")?);
            if bias {
                bs.push(vb.get(out, "bias")?);
            }
        }
        let b = match bs.len() {
            0 => None,
            1 => bs.pop(),
            _ => Some(Tensor::cat(&bs, 0)?),
        };
        if device.is_cpu() {
            // Straight into the (in, out) layout: no stacked copy first.
            return Ok(Lin {
                w: stack_transposed(&ws)?,
                transposed: true,
                bias: b,
            });
        }
        let w = if ws.len() == 1 {
            ws.pop().expect("one")
        } else {
            Tensor::cat(&ws, 0)?
        };
        drop(ws);
        Lin::new(w, b, &device)
    }
}

/// CPU weights (out_i, in), stacked along the output axis and transposed
/// into one contiguous (in, Σ out_i) tensor. Candle's `t().contiguous()`
/// copies element by element down the columns (and the stacking was a
/// second copy): that was most of the load time in a `perf` profile. This
/// copies 64×64 blocks, which stay in L1, split over threads by rows of
/// the result.
fn stack_transposed(ws: &[Tensor]) -> Result<Tensor> {
    use candle_core::{CpuStorage, Storage};
    let Some(first) = ws.first() else {
        candle_core::bail!("no weights to stack");
    };
    let (dtype, device) = (first.dtype(), first.device().clone());
    let inp = first.dim(1)?;
    let mut parts = Vec::with_capacity(ws.len());
    for w in ws {
        let (out, i) = w.dims2()?;
        if i != inp || w.dtype() != dtype {
            candle_core::bail!(
                "stacked weights differ: {:?} and {:?}",
                first.shape(),
                w.shape()
            );
        }
        parts.push((w.contiguous()?, out));
    }
    let n: usize = parts.iter().map(|p| p.1).sum();
    let guards: Vec<_> = parts.iter().map(|(w, _)| w.storage_and_layout()).collect();
    macro_rules! stack {
        ($variant:ident) => {{
            let mut src = Vec::with_capacity(parts.len());
            for ((g, l), (_, out)) in guards.iter().zip(&parts) {
                let (Storage::Cpu(CpuStorage::$variant(v)), Some((a, b))) =
                    (&**g, l.contiguous_offsets())
                else {
                    candle_core::bail!("stack_transposed: a CPU {dtype:?} weight expected");
                };
                src.push((&v[a..b], *out));
            }
            Tensor::from_vec(transpose_parts(&src, inp, n), (inp, n), &device)?
        }};
    }
    let t = match dtype {
        DType::F32 => stack!(F32),
        DType::BF16 => stack!(BF16),
        DType::F16 => stack!(F16),
        other => candle_core::bail!("stack_transposed: {other:?} weights"),
    };
    drop(guards);
    Ok(t)
}

/// `parts` are row-major (out_i, inp) matrices; the result is row-major
/// (inp, Σ out_i) with part i's transpose in its columns.
fn transpose_parts<T: Copy + Send + Sync>(parts: &[(&[T], usize)], inp: usize, n: usize) -> Vec<T> {
    use std::mem::MaybeUninit;
    const B: usize = 64;
    let len = inp * n;
    let mut dst: Vec<MaybeUninit<T>> = Vec::with_capacity(len);
    // SAFETY: MaybeUninit<T> needs no initialisation.
    unsafe { dst.set_len(len) };
    if n == 0 {
        return Vec::new();
    }
    dst.par_chunks_mut(B * n).enumerate().for_each(|(bi, d)| {
        let k0 = bi * B;
        let rows = d.len() / n;
        let mut off = 0;
        for &(src, out) in parts {
            for o0 in (0..out).step_by(B) {
                let o1 = (o0 + B).min(out);
                for k in 0..rows {
                    let row = &mut d[k * n + off + o0..k * n + off + o1];
                    for (x, o) in row.iter_mut().zip(o0..o1) {
                        *x = MaybeUninit::new(src[o * inp + k0 + k]);
                    }
                }
            }
            off += out;
        }
    });
    // Every row k of the result got columns off..off + out of every part,
    // and the parts' outs sum to n: all `len` elements are written.
    let mut dst = std::mem::ManuallyDrop::new(dst);
    // SAFETY: same allocation, length and capacity; MaybeUninit<T> has the
    // layout of T, and every element is initialised (above).
    unsafe { Vec::from_raw_parts(dst.as_mut_ptr().cast::<T>(), len, dst.capacity()) }
}

impl Lin {
    /// The weight as (in, out): as stored, or a transposed view.
    fn w_in_out(&self) -> Result<Tensor> {
        if self.transposed {
            Ok(self.w.clone())
        } else {
            self.w.t()
        }
    }

    /// `residual + self.forward(x)`, on the CPU with the residual folded
    /// into the matmul ([`ops::linear_add`]).
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        ops::linear_add(x, &self.w_in_out()?, self.bias.as_ref(), residual)
    }
}

impl Module for Lin {
    /// [`ops::linear`]: on the CPU one gemm call with the bias folded in.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.w_in_out()?, self.bias.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

    /// Sizes that cross the 64×64 blocks and the per-thread row chunks.
    #[test]
    fn stacked_transpose_equals_cat_then_transpose() {
        let dev = Device::Cpu;
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let ws: Vec<Tensor> = [70usize, 1, 129]
                .iter()
                .map(|&o| {
                    Tensor::randn(0f32, 1.0, (o, 131), &dev)
                        .unwrap()
                        .to_dtype(dt)
                        .unwrap()
                })
                .collect();
            let got = stack_transposed(&ws).unwrap();
            let want = Tensor::cat(&ws, 0)
                .unwrap()
                .t()
                .unwrap()
                .contiguous()
                .unwrap();
            assert_eq!(got.dims(), &[131, 200]);
            assert_eq!(got.dtype(), dt);
            let f = |t: &Tensor| {
                t.to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert_eq!(f(&got), f(&want), "{dt:?}");
        }
        let one = Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap();
        let t = stack_transposed(std::slice::from_ref(
            &one.t().unwrap().contiguous().unwrap().t().unwrap(),
        ))
        .unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            one.t().unwrap().to_vec2::<f32>().unwrap(),
            "a strided input"
        );
    }

    #[test]
    fn fused_and_transposed_equal_candle_linear() {
        let dev = Device::Cpu;
        let mut map = HashMap::new();
        for (n, out) in [("a", 3usize), ("b", 5)] {
            map.insert(
                format!("{n}.weight"),
                Tensor::randn(0f32, 1.0, (out, 4), &dev).unwrap(),
            );
            map.insert(
                format!("{n}.bias"),
                Tensor::randn(0f32, 1.0, out, &dev).unwrap(),
            );
        }
        let vb = VarBuilder::from_tensors(map.clone(), DType::F32, &dev);
        let x = Tensor::randn(0f32, 1.0, (7, 4), &dev).unwrap();
        let fused = Lin::load_fused(&[vb.pp("a"), vb.pp("b")], 4, &[3, 5], true).unwrap();
        assert!(fused.transposed);
        let got = fused.forward(&x).unwrap();
        let want: Vec<Tensor> = ["a", "b"]
            .iter()
            .map(|n| {
                candle_nn::Linear::new(
                    map[&format!("{n}.weight")].clone(),
                    Some(map[&format!("{n}.bias")].clone()),
                )
                .forward(&x)
                .unwrap()
            })
            .collect();
        let want = Tensor::cat(&want, 1).unwrap();
        let d = ops::max_diff(&got, &want);
        assert!(d < 1e-5, "{d}");
        let shared = Lin::shared(map["a.weight"].clone());
        let plain = candle_nn::Linear::new(map["a.weight"].clone(), None);
        let d = ops::max_diff(&shared.forward(&x).unwrap(), &plain.forward(&x).unwrap());
        assert!(d < 1e-5, "{d}");
    }
}
