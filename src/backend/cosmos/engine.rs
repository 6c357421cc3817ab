// SPDX-License-Identifier: MPL-2.0
//! One loaded checkpoint and the whole caption path: frames → pixel values
//! → vision embeddings; chat template → tokens (video placeholder expanded)
//! → M-RoPE positions → prefill → sampled tokens → text.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::checkpoint::{read_json, weight_files};
use super::fp8::{self, Quantization};
use super::preprocess::{preprocess_video, PixelValues, VisionParams};
use super::qwen2_5::rope_index::rope_index;
use super::qwen2_5::Qwen25Vl;
use super::sampling::{sample, GenerationDefaults, Rng, SampleParams};
use crate::frames::RgbImage;

use super::error::CosmosError;

/// fps assumed when a chunk's frame times cannot give one (a single frame).
pub use crate::prep::qwen::DEFAULT_FPS;

pub struct Engine {
    pub model: Qwen25Vl,
    tokenizer: Tokenizer,
    /// The checkpoint's chat template, parsed once at load.
    chat: minijinja::Environment<'static>,
    pub defaults: GenerationDefaults,
    pub vision: VisionParams,
    pub dir: PathBuf,
}

/// A chunk's video as the engine receives it.
pub enum Video<'a> {
    /// RGB frames: the engine runs the processor (CPU).
    Frames(&'a [RgbImage]),
    /// `pixel_values` already computed (by `prep::FramePrep`), on the host.
    Pixels(&'a PixelValues),
    /// `pixel_values` already on the model's device (no copy).
    Tensor { px: Tensor, grid_thw: [u32; 3] },
}

/// One caption request.
pub struct Request<'a> {
    pub video: Video<'a>,
    /// Stream time of each frame, seconds.
    pub times: &'a [f64],
    pub prompt: &'a str,
    pub system: Option<&'a str>,
    pub params: SampleParams,
    /// Checked between tokens; true stops the generation.
    pub cancelled: &'a dyn Fn() -> bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Generated token ids (special tokens included).
    pub tokens: Vec<u32>,
}

/// Refuses checkpoints this build cannot run, saying what was found: any
/// quantisation but the FP8 layouts of [`super::fp8`] (which are dequantised
/// at load), tensors in other types, FP8 weights without a usable scale.
fn check_supported(dir: &Path) -> Result<Quantization, CosmosError> {
    fp8::inspect(dir, &weight_files(dir)?)
}

fn vision_params(dir: &Path) -> Result<VisionParams, CosmosError> {
    let mut p = VisionParams::default();
    let Some(v) = read_json(&dir.join("preprocessor_config.json"))? else {
        return Ok(p);
    };
    let u = |k: &str| v.get(k).and_then(Value::as_u64);
    let size = v.get("size");
    if let Some(n) = size
        .and_then(|s| s.get("shortest_edge"))
        .and_then(Value::as_u64)
        .or(u("min_pixels"))
    {
        p.min_pixels = n;
    }
    if let Some(n) = size
        .and_then(|s| s.get("longest_edge"))
        .and_then(Value::as_u64)
        .or(u("max_pixels"))
    {
        p.max_pixels = n;
    }
    if let Some(n) = u("patch_size") {
        p.patch_size = n as u32;
    }
    if let Some(n) = u("temporal_patch_size") {
        p.temporal_patch_size = n as u32;
    }
    if let Some(n) = u("merge_size") {
        p.merge_size = n as u32;
    }
    let arr3 = |k: &str| -> Option<[f32; 3]> {
        let a = v.get(k)?.as_array()?;
        let x: Vec<f32> = a
            .iter()
            .filter_map(|x| x.as_f64().map(|f| f as f32))
            .collect();
        x.try_into().ok()
    };
    if let Some(m) = arr3("image_mean") {
        p.mean = m;
    }
    if let Some(s) = arr3("image_std") {
        p.std = s;
    }
    Ok(p)
}

/// An environment holding the chat template as `chat`, configured as
/// transformers renders chat templates (`trim_blocks`, `lstrip_blocks`).
fn chat_env(template: String) -> Result<minijinja::Environment<'static>, CosmosError> {
    let mut env = minijinja::Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| CosmosError::Checkpoint(format!("template syntax: {e}")))?,
    );
    env.add_template_owned("chat", template)
        .map_err(|e| CosmosError::Checkpoint(format!("chat template does not parse: {e}")))?;
    Ok(env)
}

fn chat_template(dir: &Path) -> Result<String, CosmosError> {
    if let Some(v) = read_json(&dir.join("chat_template.json"))? {
        if let Some(t) = v.get("chat_template").and_then(Value::as_str) {
            return Ok(t.to_string());
        }
    }
    if let Ok(t) = std::fs::read_to_string(dir.join("chat_template.jinja")) {
        return Ok(t);
    }
    if let Some(v) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(t) = v.get("chat_template").and_then(Value::as_str) {
            return Ok(t.to_string());
        }
    }
    Err(CosmosError::Checkpoint(format!(
        "'{}' has no chat template (chat_template.json, chat_template.jinja or tokenizer_config.json)",
        dir.display()
    )))
}

impl Engine {
    /// Loads everything from a checkpoint directory; errors say what is missing.
    pub fn load(dir: &Path, device: &Device) -> Result<Engine, CosmosError> {
        Self::load_as(dir, device, None)
    }

    /// [`Engine::load`] with the weights in `dtype` (`None`: f32 on the CPU,
    /// bf16 on CUDA).
    pub fn load_as(
        dir: &Path,
        device: &Device,
        dtype: Option<DType>,
    ) -> Result<Engine, CosmosError> {
        check_supported(dir)?;
        let model = match dtype {
            Some(dt) => Qwen25Vl::load_as(dir, device, dt)?,
            None => Qwen25Vl::load(dir, device)?,
        };
        let tk = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tk)
            .map_err(|e| CosmosError::Checkpoint(format!("cannot load '{}': {e}", tk.display())))?;
        let chat = chat_env(chat_template(dir)?)?;
        let defaults = match std::fs::read_to_string(dir.join("generation_config.json")) {
            Ok(t) => GenerationDefaults::from_json(&t)?,
            Err(_) => GenerationDefaults::default(),
        };
        let mut defaults = defaults;
        if defaults.eos.is_empty() {
            // Qwen's end tokens by name, from the tokenizer.
            defaults.eos = ["<|im_end|>", "<|endoftext|>"]
                .iter()
                .filter_map(|t| tokenizer.token_to_id(t))
                .collect();
        }
        Ok(Engine {
            model,
            tokenizer,
            chat,
            defaults,
            vision: vision_params(dir)?,
            dir: dir.to_path_buf(),
        })
    }

    /// The chat template applied to one user turn holding one video and the
    /// prompt (system message when given), with the generation prompt.
    pub fn render_prompt(&self, system: Option<&str>, prompt: &str) -> Result<String, CosmosError> {
        self.render(
            system,
            serde_json::json!([{"type": "video", "video": "chunk"}, {"type": "text", "text": prompt}]),
        )
    }

    /// The chat template applied to a text-only conversation (system
    /// message when given, one user turn), with the generation prompt.
    pub fn render_text_prompt(
        &self,
        system: Option<&str>,
        user: &str,
    ) -> Result<String, CosmosError> {
        self.render(system, serde_json::json!(user))
    }

    fn render(
        &self,
        system: Option<&str>,
        content: serde_json::Value,
    ) -> Result<String, CosmosError> {
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": content}));
        self.chat
            .get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                    add_generation_prompt => true,
                })
            })
            .map_err(|e| CosmosError::Prompt(format!("chat template failed: {e}")))
    }

    /// Prompt token ids with the video placeholder expanded to `n_video` tokens.
    pub fn prompt_ids(&self, text: &str, n_video: usize) -> Result<Vec<u32>, CosmosError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| CosmosError::Inference(format!("tokenizer failed: {e}")))?;
        let vid = self.model.cfg.video_token_id;
        let mut ids = Vec::with_capacity(enc.len() + n_video);
        let mut seen = 0;
        for &t in enc.get_ids() {
            if t == vid {
                seen += 1;
                ids.extend(std::iter::repeat_n(vid, n_video));
            } else {
                ids.push(t);
            }
        }
        if seen != 1 {
            return Err(CosmosError::Inference(format!(
                "the chat template produced {seen} video placeholders; expected 1"
            )));
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        let known = self.tokenizer.get_vocab_size(true) as u32;
        let ids: Vec<u32> = ids.iter().copied().filter(|&t| t < known).collect();
        self.tokenizer.decode(&ids, true).unwrap_or_default()
    }

    pub fn generate(&mut self, req: &Request) -> Result<Output, CosmosError> {
        let dev = self.model.device().clone();
        let (px, grid) = match &req.video {
            Video::Frames(f) => {
                let pv = preprocess_video(f, &self.vision)
                    .map_err(|e| CosmosError::Frames(e.to_string()))?;
                let px = Tensor::from_vec(pv.data, (pv.rows, pv.cols), &dev);
                (
                    px.map_err(|e| CosmosError::Inference(e.to_string()))?,
                    pv.grid_thw,
                )
            }
            Video::Pixels(pv) => {
                let px = Tensor::from_slice(&pv.data, (pv.rows, pv.cols), &dev);
                (
                    px.map_err(|e| CosmosError::Inference(e.to_string()))?,
                    pv.grid_thw,
                )
            }
            Video::Tensor { px, grid_thw } => (px.clone(), *grid_thw),
        };
        let grid = grid.map(|x| x as usize);
        let m = self.model.cfg.vision.spatial_merge_size;
        let llm = [grid[0], grid[1] / m, grid[2] / m];
        let n_video = llm[0] * llm[1] * llm[2];

        let fps = crate::prep::qwen::clip_fps(req.times);
        let second_per_grid = f64::from(self.vision.temporal_patch_size) / fps;

        let text = self.render_prompt(req.system, req.prompt)?;
        let ids = self.prompt_ids(&text, n_video)?;
        let (pos, delta) = rope_index(
            &ids,
            self.model.cfg.video_token_id,
            Some(llm),
            second_per_grid,
            self.model.cfg.vision.tokens_per_second,
        )?;
        let vis = self.model.vision_embeds(&px, grid)?;
        let emb = self.model.embed_prompt(&ids, Some(&vis))?;
        self.complete(ids, &emb, &pos, delta, &req.params, req.cancelled)
    }

    /// Text-only generation (summaries, event checks): the same model and
    /// sampling, no vision tower.
    pub fn generate_text(
        &mut self,
        system: Option<&str>,
        user: &str,
        params: &SampleParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Output, CosmosError> {
        let text = self.render_text_prompt(system, user)?;
        let ids: Vec<u32> = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| CosmosError::Inference(format!("tokenizer failed: {e}")))?
            .get_ids()
            .to_vec();
        let (pos, delta) = rope_index(
            &ids,
            self.model.cfg.video_token_id,
            None,
            0.0,
            self.model.cfg.vision.tokens_per_second,
        )?;
        let emb = self.model.embed_prompt(&ids, None)?;
        self.complete(ids, &emb, &pos, delta, params, cancelled)
    }

    /// Prefill of the prompt embeddings, then sampling token by token.
    fn complete(
        &mut self,
        ids: Vec<u32>,
        emb: &Tensor,
        pos: &[Vec<i64>; 3],
        delta: i64,
        params: &SampleParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Output, CosmosError> {
        self.model.clear_cache();
        let logits = self.model.forward_last(emb, pos)?;
        let vocab = self.model.cfg.text.vocab_size;
        let last = |t: &Tensor| -> Result<Vec<f32>, CosmosError> {
            let l = t
                .dim(0)
                .map_err(|e| CosmosError::Inference(e.to_string()))?;
            t.narrow(0, l - 1, 1)
                .and_then(|r| r.flatten_all())
                .and_then(|r| r.to_vec1::<f32>())
                .map_err(|e| CosmosError::Inference(e.to_string()))
        };
        let mut row = last(&logits)?;
        debug_assert_eq!(row.len(), vocab);
        let mut rng = Rng::new(params.seed);
        let mut seen = ids.clone();
        let mut out = Vec::new();
        while out.len() < params.max_tokens {
            if cancelled() {
                self.model.clear_cache();
                return Err(CosmosError::Cancelled);
            }
            let t = sample(&row, &seen, params, &mut rng);
            if self.defaults.eos.contains(&t) {
                break;
            }
            out.push(t);
            seen.push(t);
            if out.len() == params.max_tokens {
                break;
            }
            let p = self.model.cache_len() as i64 + delta;
            let e = self.model.embed_prompt(&[t], None)?;
            row = last(&self.model.forward_last(&e, &[vec![p], vec![p], vec![p]])?)?;
        }
        self.model.clear_cache();
        Ok(Output {
            text: self.decode(&out),
            input_tokens: ids.len() as u64,
            output_tokens: out.len() as u64,
            tokens: out,
        })
    }
}
