// SPDX-License-Identifier: MPL-2.0
//! Qwen2.5-VL / Cosmos-Reason1: its `config.json`, M-RoPE position rule and
//! model (vision tower with window attention + Qwen2 decoder). The shared
//! parts (checkpoint files, FP8, kernels, the decoder layers, sampling, the
//! engine) live one level up, in `backend::cosmos`.

pub mod config;
#[cfg(feature = "cosmos")]
mod model;
pub mod rope_index;
#[cfg(feature = "cosmos")]
mod vision;

#[cfg(feature = "cosmos")]
pub use model::Qwen25Vl;
