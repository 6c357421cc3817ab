// SPDX-License-Identifier: MPL-2.0
//! The `cosmos-reason1` backend (Qwen2.5-VL / Cosmos-Reason1 in process).
//! So far: the video preprocessing, matched against Hugging Face's processor.

pub mod preprocess;
