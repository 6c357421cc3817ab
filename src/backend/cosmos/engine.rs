// SPDX-License-Identifier: MPL-2.0
//! One loaded checkpoint and the whole caption path: frames → pixel values
//! → vision embeddings; chat template → tokens (video placeholder expanded)
//! → M-RoPE positions → prefill → sampled tokens → text.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::checkpoint::{cosmos3_weight_files, is_cosmos3_layout, read_json, weight_files};
use super::fp8::{self, Quantization};
use super::preprocess::{preprocess_video, PixelValues, VisionParams};
use super::qwen2_5::rope_index::rope_index;
use super::qwen2_5::Qwen25Vl;
use super::qwen3::{self, Qwen3Vl};
use super::sampling::{sample, GenerationDefaults, Rng, SampleParams};
use crate::frames::RgbImage;

use super::error::CosmosError;

/// fps assumed when a chunk's frame times cannot give one (a single frame).
pub use crate::prep::qwen::DEFAULT_FPS;

/// The loaded model, of either family.
pub enum Vlm {
    /// Qwen2.5-VL / Cosmos-Reason1.
    Qwen25(Qwen25Vl),
    /// Qwen3-VL / Cosmos-Reason2 / Cosmos3 Nano Reasoner.
    Qwen3(Qwen3Vl),
}

impl Vlm {
    pub fn device(&self) -> &Device {
        match self {
            Vlm::Qwen25(m) => m.device(),
            Vlm::Qwen3(m) => m.device(),
        }
    }

    pub fn video_token_id(&self) -> u32 {
        match self {
            Vlm::Qwen25(m) => m.cfg.video_token_id,
            Vlm::Qwen3(m) => m.cfg.video_token_id,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Vlm::Qwen25(m) => m.cfg.text.vocab_size,
            Vlm::Qwen3(m) => m.cfg.text.vocab_size,
        }
    }

    pub fn quantization(&self) -> &Quantization {
        match self {
            Vlm::Qwen25(m) => &m.quantization,
            Vlm::Qwen3(m) => &m.quantization,
        }
    }

    /// The family's name for logs and errors.
    pub fn family(&self) -> &'static str {
        match self {
            Vlm::Qwen25(_) => "Qwen2.5-VL",
            Vlm::Qwen3(_) => "Qwen3-VL",
        }
    }

    fn clear_cache(&mut self) {
        match self {
            Vlm::Qwen25(m) => m.clear_cache(),
            Vlm::Qwen3(m) => m.clear_cache(),
        }
    }

    fn cache_len(&self) -> usize {
        match self {
            Vlm::Qwen25(m) => m.cache_len(),
            Vlm::Qwen3(m) => m.cache_len(),
        }
    }

    /// Token embeddings of text-only ids.
    fn embed_text(&self, ids: &[u32]) -> Result<Tensor, CosmosError> {
        match self {
            Vlm::Qwen25(m) => m.embed_prompt(ids, None),
            Vlm::Qwen3(m) => Ok(m.embed_prompt(ids, None)?.0),
        }
    }

    /// Logits of the last new token (1, vocab).
    fn forward_last(
        &mut self,
        emb: &Tensor,
        pos: &[Vec<i64>; 3],
        visual: Option<&qwen3::Visual>,
    ) -> Result<Tensor, CosmosError> {
        match self {
            Vlm::Qwen25(m) => m.forward_last(emb, pos),
            Vlm::Qwen3(m) => m.forward(emb, pos, visual, true),
        }
    }
}

pub struct Engine {
    pub model: Vlm,
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

/// A caption request up to the prefill ([`Engine::prepare`]).
pub struct Prepared {
    /// Prompt token ids, video tokens expanded.
    pub ids: Vec<u32>,
    /// Their embeddings, the video's in place.
    pub emb: Tensor,
    pub pos: [Vec<i64>; 3],
    pub delta: i64,
    /// Qwen3-VL's DeepStack features at the video positions.
    pub visual: Option<qwen3::Visual>,
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
    let files = if is_cosmos3_layout(dir) {
        cosmos3_weight_files(dir)?
    } else {
        weight_files(dir)?
    };
    fp8::inspect(dir, &files)
}

/// Whether `dir` holds a Qwen3-VL model (Qwen3-VL, Cosmos-Reason2,
/// Cosmos3), by [`super::family::detect`]'s rules (which also refuse
/// unsupported models and FP4 by name).
fn is_qwen3(dir: &Path) -> Result<bool, CosmosError> {
    Ok(super::family::detect(dir)?.0 == super::family::Family::Qwen3Vl)
}

/// The processor settings: Qwen2.5-VL's from `preprocessor_config.json`;
/// Qwen3-VL's from `video_preprocessor_config.json` (its video processor),
/// else `preprocessor_config.json`, over `Qwen3VLVideoProcessor`'s defaults.
fn vision_params(dir: &Path, qwen3: bool) -> Result<VisionParams, CosmosError> {
    let (mut p, v) = if qwen3 {
        let v = match read_json(&dir.join("video_preprocessor_config.json"))? {
            Some(v) => Some(v),
            None => read_json(&dir.join("preprocessor_config.json"))?,
        };
        (VisionParams::qwen3(), v)
    } else {
        (
            VisionParams::default(),
            read_json(&dir.join("preprocessor_config.json"))?,
        )
    };
    let Some(v) = v else {
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
    if qwen3 {
        if let Some(n) = u("max_video_tokens") {
            p.max_video_tokens = n;
        }
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
        let q3 = is_qwen3(dir)?;
        let model = match (q3, dtype) {
            (true, Some(dt)) => Vlm::Qwen3(Qwen3Vl::load_as(dir, device, dt)?),
            (true, None) => Vlm::Qwen3(Qwen3Vl::load(dir, device)?),
            (false, Some(dt)) => Vlm::Qwen25(Qwen25Vl::load_as(dir, device, dt)?),
            (false, None) => Vlm::Qwen25(Qwen25Vl::load(dir, device)?),
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
            vision: vision_params(dir, q3)?,
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

    fn encode(&self, text: &str) -> Result<Vec<u32>, CosmosError> {
        Ok(self
            .tokenizer
            .encode(text, false)
            .map_err(|e| CosmosError::Inference(format!("tokenizer failed: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Qwen3-VL prompt ids for a video of `pairs` temporal patches at
    /// `times` (one per frame) of `per_pair` tokens each
    /// ([`qwen3::prompt`]: time tags, one block per pair).
    pub fn qwen3_prompt_ids(
        &self,
        text: &str,
        times: &[f64],
        pairs: usize,
        per_pair: usize,
    ) -> Result<Vec<u32>, CosmosError> {
        let tps = self.vision.temporal_patch_size as usize;
        let mut stamps = qwen3::prompt::pair_times(times, tps);
        // Frames without times (never from the element): the processor's
        // 24 fps default.
        if stamps.len() != pairs {
            let t: Vec<f64> = (0..pairs * tps).map(|i| i as f64 / 24.0).collect();
            stamps = qwen3::prompt::pair_times(&t, tps);
        }
        let text = qwen3::prompt::replace_video_entry(text, &stamps)?;
        let ids = self.encode(&text)?;
        qwen3::prompt::expand_pads(&ids, self.model.video_token_id(), pairs, per_pair)
    }

    /// Prompt token ids with the video placeholder expanded to `n_video` tokens.
    pub fn prompt_ids(&self, text: &str, n_video: usize) -> Result<Vec<u32>, CosmosError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| CosmosError::Inference(format!("tokenizer failed: {e}")))?;
        let vid = self.model.video_token_id();
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

    /// The prefill input of a caption request: preprocessing, the prompt
    /// with its video tokens, positions and the vision tower's output.
    pub fn prepare(&self, req: &Request) -> Result<Prepared, CosmosError> {
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
        let text = self.render_prompt(req.system, req.prompt)?;
        match &self.model {
            Vlm::Qwen25(m) => {
                let ms = m.cfg.vision.spatial_merge_size;
                let llm = [grid[0], grid[1] / ms, grid[2] / ms];
                let n_video = llm[0] * llm[1] * llm[2];
                let fps = crate::prep::qwen::clip_fps(req.times);
                let second_per_grid = f64::from(self.vision.temporal_patch_size) / fps;
                let ids = self.prompt_ids(&text, n_video)?;
                let (pos, delta) = rope_index(
                    &ids,
                    m.cfg.video_token_id,
                    Some(llm),
                    second_per_grid,
                    m.cfg.vision.tokens_per_second,
                )?;
                let vis = m.vision_embeds(&px, grid)?;
                let emb = m.embed_prompt(&ids, Some(&vis))?;
                Ok(Prepared {
                    ids,
                    emb,
                    pos,
                    delta,
                    visual: None,
                })
            }
            Vlm::Qwen3(m) => {
                let ms = m.cfg.vision.spatial_merge_size;
                let (lh, lw) = (grid[1] / ms, grid[2] / ms);
                let ids = self.qwen3_prompt_ids(&text, req.times, grid[0], lh * lw)?;
                let (pos, delta) =
                    qwen3::prompt::positions(&ids, m.cfg.video_token_id, Some((lh, lw)))?;
                let vis = m.vision_embeds(&px, grid)?;
                let (emb, visual) = m.embed_prompt(&ids, Some(&vis))?;
                Ok(Prepared {
                    ids,
                    emb,
                    pos,
                    delta,
                    visual,
                })
            }
        }
    }

    /// The logits (vocab) of the next token after a prepared prompt (the
    /// first generated token's distribution); leaves the KV cache empty.
    pub fn first_logits(&mut self, p: &Prepared) -> Result<Vec<f32>, CosmosError> {
        self.model.clear_cache();
        let l = self.model.forward_last(&p.emb, &p.pos, p.visual.as_ref());
        self.model.clear_cache();
        l?.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| CosmosError::Inference(e.to_string()))
    }

    pub fn generate(&mut self, req: &Request) -> Result<Output, CosmosError> {
        let p = self.prepare(req)?;
        self.complete(
            p.ids,
            &p.emb,
            &p.pos,
            p.delta,
            p.visual.as_ref(),
            &req.params,
            req.cancelled,
        )
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
        let ids = self.encode(&text)?;
        // Text only: every axis counts 0, 1, 2, … in both families.
        let (pos, delta) = qwen3::prompt::positions(&ids, self.model.video_token_id(), None)?;
        let emb = self.model.embed_text(&ids)?;
        self.complete(ids, &emb, &pos, delta, None, params, cancelled)
    }

    /// Prefill of the prompt embeddings, then sampling token by token.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        ids: Vec<u32>,
        emb: &Tensor,
        pos: &[Vec<i64>; 3],
        delta: i64,
        visual: Option<&qwen3::Visual>,
        params: &SampleParams,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Output, CosmosError> {
        self.model.clear_cache();
        let logits = self.model.forward_last(emb, pos, visual)?;
        let vocab = self.model.vocab_size();
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
            let e = self.model.embed_text(&[t])?;
            row = last(
                &self
                    .model
                    .forward_last(&e, &[vec![p], vec![p], vec![p]], None)?,
            )?;
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
