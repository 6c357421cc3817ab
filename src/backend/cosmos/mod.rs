// SPDX-License-Identifier: MPL-2.0
//! The in-process backends `cosmos-reason1` (Qwen2.5-VL / Cosmos-Reason1),
//! `cosmos-reason2` (Qwen3-VL / Cosmos-Reason2) and `cosmos-reason3`
//! (Cosmos3 Nano Reasoner), with candle: the video preprocessing (matched
//! against Hugging Face's processor), the checkpoint's family and layout
//! ([`family`]), the configuration, the M-RoPE position rule, the models,
//! and the engine thread that serves a loaded model ([`serve`]).

//!
//! Without the `cosmos` feature only the plain parts stay (preprocessing,
//! which the GPU frame path shares, config, positions, sampling, the family
//! check, the serving queue): no candle.

#[cfg(feature = "cosmos")]
pub mod alloc;
#[cfg(feature = "cosmos")]
pub mod backend;
#[cfg(feature = "cosmos")]
pub mod checkpoint;
#[cfg(feature = "cosmos")]
pub mod decoder;
#[cfg(feature = "cosmos")]
pub mod engine;
pub mod error;
pub mod family;
#[cfg(feature = "cosmos")]
pub mod fp8;
#[cfg(feature = "cosmos")]
pub mod linear;
#[cfg(feature = "cosmos")]
pub mod ops;
#[cfg(feature = "cosmos")]
pub mod pointwise;
/// The video preprocessing lives with frame preparation ([`crate::prep::qwen`]),
/// which the GPU path shares; this is its name inside the backend.
pub use crate::prep::qwen as preprocess;
pub mod qwen2_5;
pub mod qwen3;
pub mod sampling;
pub mod serve;

pub use error::CosmosError;
