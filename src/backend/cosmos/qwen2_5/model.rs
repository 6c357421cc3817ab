// SPDX-License-Identifier: MPL-2.0
//! Qwen2.5-VL (= Cosmos-Reason1) with candle: loading, the vision tower
//! ([`super::vision`]) and the Qwen2 decoder (the shared
//! [`crate::backend::cosmos::decoder`]: q/k/v biases, no q/k norm) with
//! M-RoPE in contiguous sections and a KV cache. Runs on candle's CPU backend in f32 (bf16 on CUDA);
//! sizes come from [`QwenConfig`].

use std::path::Path;

use candle_core::{DType, Device, Result as CResult, Tensor};

use super::config::{QwenConfig, TextConfig};
use super::vision::VisionModel;
use crate::backend::cosmos::checkpoint::{default_dtype, open, weight_files};
use crate::backend::cosmos::decoder::{mrope, Decoder, LayerSpec};
use crate::backend::cosmos::fp8::Quantization;
use crate::backend::cosmos::ops::CausalSoftmax;

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
    text: Decoder,
}

/// Qwen2's decoder layer: q/k/v with biases, `o_proj` without, no q/k norm.
fn layer_spec(t: &TextConfig) -> LayerSpec {
    LayerSpec {
        hidden: t.hidden_size,
        intermediate: t.intermediate_size,
        heads: t.num_attention_heads,
        kv_heads: t.num_key_value_heads,
        head_dim: t.head_dim,
        rms_norm_eps: t.rms_norm_eps,
        qkv_bias: true,
        o_bias: false,
        qk_norm: false,
    }
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
        let text = Decoder::load(
            &layer_spec(t),
            t.num_hidden_layers,
            t.vocab_size,
            t.tie_word_embeddings,
            vb.pp(tp),
            vb.clone(),
        )
        .map_err(load_err)?;
        Ok(Qwen25Vl {
            cfg,
            quantization,
            device: device.clone(),
            vision,
            text,
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
        let (x, _) = self
            .text
            .embed_prompt(ids, self.cfg.video_token_id, vision, &self.device)?;
        Ok(x)
    }

    /// M-RoPE cos/sin (L, head_dim / 2) for position ids per axis:
    /// frequency j follows axis t, h or w by the (contiguous) sections.
    fn mrope(&self, pos: &[Vec<i64>; 3]) -> CResult<(Tensor, Tensor)> {
        let t = &self.cfg.text;
        let [s0, s1, _] = t.mrope_section;
        let axis = |j: usize| usize::from(j >= s0) + usize::from(j >= s0 + s1);
        mrope(pos, t.head_dim, t.rope_theta, axis, &self.device)
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
        let n = self.text.layers.len();
        for (i, layer) in self.text.layers.iter_mut().enumerate() {
            // The last layer computes only the last row when that is all
            // the logits need.
            x = layer
                .forward(&x, &cos, &sin, &causal, last_only && i + 1 == n)
                .map_err(err)?;
        }
        self.text.logits(&x, last_only).map_err(err)
    }

    /// Forgets the KV cache (start of a new prompt).
    pub fn clear_cache(&mut self) {
        self.text.clear_cache();
    }

    /// Tokens in the KV cache.
    pub fn cache_len(&self) -> usize {
        self.text.cache_len()
    }
}
