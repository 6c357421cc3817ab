// SPDX-License-Identifier: MPL-2.0
//! The backend interface: one blocking `caption` call per chunk, made from a
//! dispatcher worker thread (never the streaming thread, never a tokio
//! worker). Backends are free of GStreamer types.

pub mod cosmos;
pub mod custom;
pub mod openai;
pub mod probe;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::BackendKind;
use crate::frames::RawFrame;
use crate::prompt::TimeStyle;

/// Generation parameters, as set on the element.
#[derive(Clone, Debug, PartialEq)]
pub struct GenParams {
    pub prompt: String,
    pub system_prompt: Option<String>,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    /// 0 = not sent.
    pub top_k: u32,
    /// None = not sent.
    pub seed: Option<i64>,
}

impl Default for GenParams {
    fn default() -> Self {
        // VSS's openai-compat defaults.
        GenParams {
            prompt: String::new(),
            system_prompt: None,
            max_tokens: 1024,
            temperature: 0.2,
            top_p: 1.0,
            top_k: 0,
            seed: Some(1),
        }
    }
}

/// How sampled frames are shaped before they reach the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOptions {
    /// 0 = native; one of them 0 keeps the aspect ratio.
    pub width: u32,
    pub height: u32,
    pub jpeg_quality: u8,
}

/// One chunk's input.
#[derive(Debug)]
pub struct ChunkJob {
    pub chunk_index: u64,
    pub frames: Vec<Arc<RawFrame>>,
    /// Time label of each frame as it appears in the prompt.
    pub frame_labels: Vec<String>,
    /// Stream time of each frame, seconds (video models derive fps from it).
    pub frame_times: Vec<f64>,
    pub time_style: TimeStyle,
}

/// A backend's answer for one chunk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Caption {
    pub text: String,
    pub reasoning: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The chunk's embedding, from backends that make one.
    pub embedding: Option<Vec<f32>>,
    /// Why the embedding is missing although the model makes them.
    pub embedding_error: Option<String>,
}

pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// The model name reported in records.
    fn model(&self) -> &str;
    /// Captions one chunk. Blocks the calling worker thread; must return soon
    /// after `cancel` fires. An `Err` becomes the chunk's error record; its
    /// text must say what failed and never contain secrets.
    fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, String>;
    /// Calls this backend can usefully take at once (`None`: any number).
    /// The element runs at most this many dispatcher workers, so a backend
    /// that serialises (limit 1) sees the chunks strictly in order.
    fn max_concurrency(&self) -> Option<usize> {
        None
    }
    /// Set once the backend cannot go on (e.g. a model that keeps crashing);
    /// the element then posts an error message and stops the stream.
    fn fatal_error(&self) -> Option<String> {
        None
    }
}
