// SPDX-License-Identifier: MPL-2.0
//! The `cosmos-reason1` backend (Qwen2.5-VL / Cosmos-Reason1 in process,
//! with candle). So far: the video preprocessing (matched against Hugging
//! Face's processor), the checkpoint configuration, the M-RoPE position rule
//! and the model (vision tower + Qwen2 decoder).

//!
//! Without the `cosmos` feature only the plain parts stay (preprocessing,
//! which the GPU frame path shares, config, positions, sampling): no candle.

#[cfg(feature = "cosmos")]
pub mod alloc;
#[cfg(feature = "cosmos")]
pub mod backend;
#[cfg(feature = "cosmos")]
pub mod checkpoint;
#[cfg(feature = "cosmos")]
pub mod engine;
pub mod error;
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

pub use error::CosmosError;
