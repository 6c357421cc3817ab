// SPDX-License-Identifier: MPL-2.0
//! The backend interface: one blocking `caption` call per chunk, made from a
//! dispatcher worker thread (never the streaming thread, never a tokio
//! worker). Backends are free of GStreamer types.

pub mod cosmos;
pub mod custom;
pub mod model_check;
pub mod openai;
pub mod vision;
/// The start-up model check under its old name.
pub use model_check as probe;

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
#[derive(Clone, Debug)]
pub struct ChunkJob {
    pub chunk_index: u64,
    pub frames: Vec<Arc<RawFrame>>,
    /// Time label of each frame as it appears in the prompt.
    pub frame_labels: Vec<String>,
    /// Stream time of each frame, seconds (video models derive fps from it).
    pub frame_times: Vec<f64>,
    pub time_style: TimeStyle,
    /// `stream-id` (the `{stream_id}` prompt placeholder).
    pub stream_id: String,
    /// Prompts changed while running (`None`: the backend's own); see
    /// [`crate::steer`].
    pub prompts: Option<Arc<crate::steer::Prompts>>,
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
    /// Indices (into the job's frames) of the frames the model was shown,
    /// when not all of them (`max-images-per-request`); the record's
    /// `frame_times` then lists only those.
    pub frames_sent: Option<Vec<usize>>,
    /// openai-compat: the server that answered (base URL without user
    /// info, query or fragment; see [`crate::endpoints`]).
    pub endpoint: Option<String>,
}

/// Why a caption (or a text-LLM call, see [`crate::summary::TextLlm`])
/// failed: the kind says what a caller can do about it, the text (its
/// `Display`) is the record's `error`, word for word, and never holds a
/// secret. Nothing decides on the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The caller's cancel fired.
    #[error("cancelled")]
    Cancelled,
    /// A failure worth repeating (HTTP 429 or 5xx, a connection refused,
    /// reset or closed early) that the retries did not clear.
    #[error("{0}")]
    Transient(String),
    /// The request or the model took longer than its time limit (after any
    /// retries).
    #[error("{0}")]
    Timeout(String),
    /// The server refused the request as it was formed (an HTTP 4xx other
    /// than 429): repeating it will not help. `fields` are the request fields
    /// the server's message names (e.g. `top_k`, `response_format`): sending
    /// the request without them might.
    #[error("{message}")]
    Refused {
        status: u16,
        fields: Vec<&'static str>,
        message: String,
    },
    /// The answer was unusable: malformed, empty or too large.
    #[error("{0}")]
    BadAnswer(String),
    /// The backend cannot go on (a model that cannot load or keeps
    /// crashing): every later chunk fails the same way.
    #[error("{0}")]
    Fatal(String),
    /// Any other failure of this chunk (a frame that cannot be prepared, the
    /// model's own error, a redirect, a transport error that repeating will
    /// not cure).
    #[error("{0}")]
    Failed(String),
}

impl BackendError {
    /// The same kind with its text changed by `f` (e.g. a suffix, a
    /// redaction); `Cancelled` stays as it is.
    pub fn map_text(self, f: impl FnOnce(String) -> String) -> BackendError {
        use BackendError as E;
        match self {
            E::Cancelled => E::Cancelled,
            E::Transient(m) => E::Transient(f(m)),
            E::Timeout(m) => E::Timeout(f(m)),
            E::Refused {
                status,
                fields,
                message,
            } => E::Refused {
                status,
                fields,
                message: f(message),
            },
            E::BadAnswer(m) => E::BadAnswer(f(m)),
            E::Fatal(m) => E::Fatal(f(m)),
            E::Failed(m) => E::Failed(f(m)),
        }
    }

    /// Whether the server refused the request for naming `field`.
    pub fn refuses_field(&self, field: &str) -> bool {
        matches!(self, BackendError::Refused { fields, .. } if fields.contains(&field))
    }
}

/// An error text from a module that does not type its errors yet (e.g. the
/// cosmos engine) is a failure of this chunk.
impl From<String> for BackendError {
    fn from(e: String) -> Self {
        BackendError::Failed(e)
    }
}

pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// The model name reported in records.
    fn model(&self) -> &str;
    /// Captions one chunk. Blocks the calling worker thread; must return soon
    /// after `cancel` fires. An `Err` becomes the chunk's error record; its
    /// text must say what failed and never contain secrets.
    fn caption(&self, job: &ChunkJob, cancel: &CancellationToken) -> Result<Caption, BackendError>;
    /// Calls this backend can usefully take at once (`None`: any number).
    /// The element runs at most this many dispatcher workers, so a backend
    /// that serialises (limit 1) sees the chunks strictly in order.
    fn max_concurrency(&self) -> Option<usize> {
        None
    }
    /// The key of the shared endpoint budget ([`crate::budget::key`]) and
    /// the number of servers behind it; `None`: no shared budget (local
    /// models).
    fn budget_key(&self) -> Option<(String, usize)> {
        None
    }
    /// Set once the backend cannot go on (e.g. a model that keeps crashing);
    /// the element then posts an error message and stops the stream.
    fn fatal_error(&self) -> Option<String> {
        None
    }
}
