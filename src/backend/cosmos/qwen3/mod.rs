// SPDX-License-Identifier: MPL-2.0
//! Qwen3-VL (Qwen3-VL 2B/4B/8B, Cosmos-Reason2, Cosmos3 Nano Reasoner)
//! with candle: its `config.json`, the video prompt with per-pair time tags
//! and its positions ([`prompt`]), the vision tower with the learned
//! position grid and DeepStack ([`vision`]) and the Qwen3 decoder
//! ([`text`]). What differs from Qwen2.5-VL and where each fact comes from:
//! docs/cosmos.md.

pub mod config;
pub mod prompt;
#[cfg(feature = "cosmos")]
pub mod text;
#[cfg(feature = "cosmos")]
pub mod vision;

#[cfg(feature = "cosmos")]
pub use model::{Qwen3Vl, Visual};

#[cfg(feature = "cosmos")]
mod model {
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Arc;

    use candle_core::{DType, Device, Result as CResult, Tensor};

    use super::config::Qwen3Config;
    use super::text::{interleaved_axis, layer_spec};
    use super::vision::{VisionModel, VisionOut};
    use crate::backend::cosmos::checkpoint::{
        cosmos3_weight_files, default_dtype, is_cosmos3_layout, open, qwen3_candidates,
        tensor_names, weight_files,
    };
    use crate::backend::cosmos::decoder::{mrope, Decoder};
    use crate::backend::cosmos::error::CosmosError;
    use crate::backend::cosmos::fp8::Quantization;
    use crate::backend::cosmos::ops::CausalSoftmax;

    fn err(e: candle_core::Error) -> CosmosError {
        CosmosError::Inference(e.to_string())
    }

    fn load_err(e: candle_core::Error) -> CosmosError {
        CosmosError::Checkpoint(e.to_string())
    }

    /// The video's part of a prefill: where its tokens sit in the prompt and
    /// the DeepStack features added there after the first decoder layers.
    pub struct Visual {
        /// Prompt positions of the video tokens.
        pub at: Tensor,
        pub deepstack: Vec<Tensor>,
    }

    /// A loaded Qwen3-VL checkpoint.
    pub struct Qwen3Vl {
        pub cfg: Qwen3Config,
        pub quantization: Quantization,
        /// The Cosmos3 split layout (`transformer/`, `vision_encoder/`).
        pub cosmos3: bool,
        device: Device,
        vision: VisionModel,
        text: Decoder,
    }

    impl Qwen3Vl {
        /// f32 on the CPU, bf16 on CUDA.
        pub fn load(dir: &Path, device: &Device) -> Result<Qwen3Vl, CosmosError> {
            Self::load_as(dir, device, default_dtype(device))
        }

        /// Loads `config.json` and the weights of `dir` (Hugging Face layout
        /// with either key prefix, or Cosmos3's split layout), FP8 ones
        /// dequantised to `dtype` as they load.
        pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Qwen3Vl, CosmosError> {
            let cosmos3 = is_cosmos3_layout(dir);
            let files = if cosmos3 {
                cosmos3_weight_files(dir)?
            } else {
                weight_files(dir)?
            };
            let (text, quantization, vb) = open(dir, &files, device, dtype)?;
            let cfg = Qwen3Config::from_json(&text)?;
            let names: Arc<HashSet<String>> = Arc::new(tensor_names(&files)?);
            if !names
                .iter()
                .any(|n| qwen3_candidates("model.language_model.embed_tokens.weight").contains(n))
            {
                let mut some: Vec<&String> = names.iter().take(5).collect();
                some.sort();
                return Err(CosmosError::Checkpoint(format!(
                    "'{}' has no Qwen3-VL token embedding (model.language_model.embed_tokens.weight, model.embed_tokens.weight or Cosmos3's embed_tokens.weight); it holds e.g. {some:?}",
                    dir.display()
                )));
            }
            let vb = vb.rename_f(move |n: &str| {
                qwen3_candidates(n)
                    .into_iter()
                    .find(|c| names.contains(c))
                    .unwrap_or_else(|| n.to_string())
            });
            let t = &cfg.text;
            let vision = VisionModel::load(&cfg.vision, vb.pp("model.visual")).map_err(load_err)?;
            let text = Decoder::load(
                &layer_spec(t),
                t.num_hidden_layers,
                t.vocab_size,
                t.tie_word_embeddings,
                vb.pp("model.language_model"),
                vb.clone(),
            )
            .map_err(load_err)?;
            Ok(Qwen3Vl {
                cfg,
                quantization,
                cosmos3,
                device: device.clone(),
                vision,
                text,
            })
        }

        pub fn device(&self) -> &Device {
            &self.device
        }

        /// Vision embeddings and DeepStack features of one video.
        pub fn vision_embeds(
            &self,
            pixel_values: &Tensor,
            grid: [usize; 3],
        ) -> Result<VisionOut, CosmosError> {
            self.device
                .with_context(|| self.vision.forward(pixel_values, grid))
                .map_err(err)
        }

        /// Token embeddings with the video tokens replaced by `vision` (in
        /// order), and the video's [`Visual`] for the prefill.
        pub fn embed_prompt(
            &self,
            ids: &[u32],
            vision: Option<&VisionOut>,
        ) -> Result<(Tensor, Option<Visual>), CosmosError> {
            let (x, at) = self.text.embed_prompt(
                ids,
                self.cfg.video_token_id,
                vision.map(|v| &v.embeds),
                &self.device,
            )?;
            let visual = vision.zip(at).map(|(v, at)| Visual {
                at,
                deepstack: v.deepstack.clone(),
            });
            Ok((x, visual))
        }

        /// Interleaved M-RoPE cos/sin (L, head_dim / 2).
        fn mrope(&self, pos: &[Vec<i64>; 3]) -> CResult<(Tensor, Tensor)> {
            let t = &self.cfg.text;
            let axis = |i| interleaved_axis(i, t.mrope_section);
            mrope(pos, t.head_dim, t.rope_theta, axis, &self.device)
        }

        /// The decoder over new embeddings (appending to the KV cache):
        /// logits of the last token (1, vocab), or of every token.
        pub fn forward(
            &mut self,
            embeds: &Tensor,
            pos: &[Vec<i64>; 3],
            visual: Option<&Visual>,
            last_only: bool,
        ) -> Result<Tensor, CosmosError> {
            let device = self.device.clone();
            device.with_context(|| self.forward_here(embeds, pos, visual, last_only))
        }

        fn forward_here(
            &mut self,
            embeds: &Tensor,
            pos: &[Vec<i64>; 3],
            visual: Option<&Visual>,
            last_only: bool,
        ) -> Result<Tensor, CosmosError> {
            let (cos, sin) = self.mrope(pos).map_err(err)?;
            let dt = embeds.dtype();
            let (cos, sin) = (
                cos.to_dtype(dt).map_err(err)?,
                sin.to_dtype(dt).map_err(err)?,
            );
            let l = embeds.dim(0).map_err(err)?;
            let causal = CausalSoftmax::new(l, self.cache_len(), &self.device).map_err(err)?;
            let mut x = embeds.clone();
            let n = self.text.layers.len();
            let deepstack = visual.map_or(0, |v| v.deepstack.len());
            for (i, layer) in self.text.layers.iter_mut().enumerate() {
                // The last layer computes only the last row when that is
                // all the logits need (and no DeepStack feature is added
                // after it).
                let one_row = last_only && i + 1 == n && i >= deepstack;
                x = layer
                    .forward(&x, &cos, &sin, &causal, one_row)
                    .map_err(err)?;
                if let Some(v) = visual {
                    if let Some(ds) = v.deepstack.get(i) {
                        let ds = ds.to_dtype(x.dtype()).map_err(err)?;
                        x = x.index_add(&v.at, &ds, 0).map_err(err)?;
                    }
                }
            }
            self.text.logits(&x, last_only).map_err(err)
        }

        pub fn clear_cache(&mut self) {
            self.text.clear_cache();
        }

        pub fn cache_len(&self) -> usize {
            self.text.cache_len()
        }
    }
}
