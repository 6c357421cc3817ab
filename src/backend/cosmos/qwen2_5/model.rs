// SPDX-License-Identifier: MPL-2.0
//! Qwen2.5-VL (= Cosmos-Reason1) with candle: loading, the vision tower
//! ([`super::vision`]) and the Qwen2 decoder ([`super::text`]) with M-RoPE
//! and a KV cache. Runs on candle's CPU backend in f32 (bf16 on CUDA);
//! sizes come from [`QwenConfig`].

use std::path::Path;

use candle_core::{DType, Device, Module, Result as CResult, Tensor};
use candle_nn::Embedding;

use super::config::QwenConfig;
use super::text::DecoderLayer;
use super::vision::VisionModel;
use crate::backend::cosmos::checkpoint::{default_dtype, open, weight_files};
use crate::backend::cosmos::fp8::Quantization;
use crate::backend::cosmos::linear::Lin;
use crate::backend::cosmos::ops::CausalSoftmax;
use crate::backend::cosmos::pointwise::RmsNorm;

use crate::backend::cosmos::error::CosmosError;

/// Candle's error while the model runs.
fn err(e: candle_core::Error) -> CosmosError {
    CosmosError::Inference(e.to_string())
}

/// Candle's error while the weights load.
fn load_err(e: candle_core::Error) -> CosmosError {
    CosmosError::Checkpoint(e.to_string())
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
        Self::load_as(dir, device, default_dtype(device))
    }

    /// Loads with the weights in `dtype` (f32, bf16 or f16); RoPE, attention
    /// scores and the logits stay f32. FP8 checkpoints (`fp8.rs`) are
    /// dequantised to `dtype` on the host, one tensor at a time, as they load.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Qwen25Vl, CosmosError> {
        let (text, quantization, vb) = open(dir, &weight_files(dir)?, device, dtype)?;
        let cfg = QwenConfig::from_json(&text)?;
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
