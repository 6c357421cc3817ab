// SPDX-License-Identifier: MPL-2.0
//! Linear layers laid out for the device they run on, and the fused
//! projections of the decoder (q/k/v in one matmul, gate/up in one).
//!
//! Checkpoints store a weight as (out, in); `candle_nn::Linear` multiplies by
//! its transposed view. On the CPU that makes candle's matmul (the `gemm`
//! crate) repack the whole weight on every call; stored as (in, out) it reads
//! the weight as it is: 10–50 % faster per matmul on this project's shapes
//! (docs/cosmos-reason1.md). So the CPU keeps the transposed copy, made once
//! at load, one tensor at a time; CUDA (cuBLAS transposes for free) keeps the
//! checkpoint's layout. A weight shared with the embeddings (tied `lm_head`)
//! is not copied: it stays a transposed view.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

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
                w: w.t()?.contiguous()?,
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
        let w = if ws.len() == 1 {
            ws.pop().expect("one")
        } else {
            Tensor::cat(&ws, 0)?
        };
        drop(ws);
        let b = match bs.len() {
            0 => None,
            1 => bs.pop(),
            _ => Some(Tensor::cat(&bs, 0)?),
        };
        Lin::new(w, b, &device)
    }
}

impl Module for Lin {
    /// [`ops::linear`]: on the CPU one gemm call with the bias folded in.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.transposed {
            ops::linear(x, &self.w, self.bias.as_ref())
        } else {
            ops::linear(x, &self.w.t()?, self.bias.as_ref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::HashMap;

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
