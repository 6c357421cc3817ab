// SPDX-License-Identifier: MPL-2.0
//! What the cosmos-reason1 backend reports when a checkpoint, a device,
//! frames or a generation fail.
//!
//! 1. `Display` is the message the element reports, word for word (each
//!    names the file or setting and what to do; docs/errors.md and
//!    docs/cosmos.md quote them).
//! 2. The variant says what failed, so no caller looks inside the text.
//! 3. Candle's own `candle_core::Result` stays inside the tensor code; it is
//!    turned into one of these at the model's boundary, with its message.

/// Why the cosmos-reason1 backend could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CosmosError {
    /// A file of the checkpoint is missing or malformed: `config.json`,
    /// `generation_config.json`, the preprocessor or chat template, the
    /// weights.
    #[error("{0}")]
    Checkpoint(String),
    /// The checkpoint is of a kind this loader does not run (model type,
    /// quantization, weight types).
    #[error("{0}")]
    Unsupported(String),
    /// A setting (`dtype`, `device`) names something unusable.
    #[error("{0}")]
    Setting(String),
    /// The frames cannot be turned into the model's input.
    #[error("{0}")]
    Frames(String),
    /// The chat template could not render the prompt.
    #[error("{0}")]
    Prompt(String),
    /// The model failed while running (candle's message).
    #[error("{0}")]
    Inference(String),
    /// The caller cancelled the generation.
    #[error("cancelled")]
    Cancelled,
}

/// For callers that still carry errors as text (the [`Backend`] trait's
/// `Result<_, String>`, the GPU frame path): the same message.
///
/// [`Backend`]: crate::backend::Backend
impl From<CosmosError> for String {
    fn from(e: CosmosError) -> String {
        e.to_string()
    }
}
