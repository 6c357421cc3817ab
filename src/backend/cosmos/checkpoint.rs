// SPDX-License-Identifier: MPL-2.0
//! Checkpoint files shared by both model families: which `*.safetensors`
//! files hold the weights, and reading the small JSON files beside them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::CosmosError;

pub use super::family::read_json;

/// The `*.safetensors` files of a checkpoint (sharded with an index, or one).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, CosmosError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| CosmosError::Checkpoint(format!("{}: {e}", index.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| CosmosError::Checkpoint(format!("{}: {e}", index.display())))?;
        let mut files: Vec<PathBuf> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                CosmosError::Checkpoint(format!("{} has no weight_map", index.display()))
            })?
            .values()
            .filter_map(|f| f.as_str().map(|f| dir.join(f)))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(CosmosError::Checkpoint(format!(
        "'{}' has neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )))
}

/// The weight files of a Cosmos3-layout directory (diffusers style): the
/// language model in `transformer/`, the vision tower in `vision_encoder/`,
/// each sharded with a `*.safetensors.index.json` or as plain files. Other
/// folders (the VAE, the sound tokenizer) are not read.
pub fn cosmos3_weight_files(dir: &Path) -> Result<Vec<PathBuf>, CosmosError> {
    let mut all = Vec::new();
    for sub in ["transformer", "vision_encoder"] {
        let d = dir.join(sub);
        let mut index = None;
        let mut plain = Vec::new();
        let entries = std::fs::read_dir(&d)
            .map_err(|e| CosmosError::Checkpoint(format!("cannot read '{}': {e}", d.display())))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors.index.json") {
                index = Some(e.path());
            } else if name.ends_with(".safetensors") {
                plain.push(e.path());
            }
        }
        let files = match index {
            Some(ix) => {
                let v = read_json(&ix)?.unwrap_or_default();
                let mut f: Vec<PathBuf> = v
                    .get("weight_map")
                    .and_then(Value::as_object)
                    .ok_or_else(|| {
                        CosmosError::Checkpoint(format!("{} has no weight_map", ix.display()))
                    })?
                    .values()
                    .filter_map(|x| x.as_str().map(|x| d.join(x)))
                    .collect();
                f.sort();
                f.dedup();
                f
            }
            None => {
                plain.sort();
                plain
            }
        };
        if files.is_empty() {
            return Err(CosmosError::Checkpoint(format!(
                "'{}' holds no *.safetensors (a Cosmos3 checkpoint keeps its weights in transformer/ and vision_encoder/)",
                d.display()
            )));
        }
        all.extend(files);
    }
    Ok(all)
}

/// Whether `dir` has Cosmos3's split layout.
pub fn is_cosmos3_layout(dir: &Path) -> bool {
    dir.join("transformer").is_dir() && dir.join("vision_encoder").is_dir()
}

/// Every tensor name in `files` (from the safetensors headers only).
pub fn tensor_names(files: &[PathBuf]) -> Result<HashSet<String>, CosmosError> {
    let mut names = HashSet::new();
    for f in files {
        names.extend(super::fp8::read_header(f)?.into_iter().map(|t| t.name));
    }
    Ok(names)
}

/// Where a Qwen3-VL weight lives in a checkpoint. The model asks for the
/// names transformers 5 writes (`model.language_model.*`, `model.visual.*`,
/// `lm_head.*`); the first of these candidates the files hold is read:
/// 1. that name;
/// 2. the older prefixes (`model.*` for the language model, `visual.*`);
/// 3. Cosmos3's flat keys, as vLLM's `Cosmos3ForConditionalGeneration`
///    maps them: the language model at the top level (`layers.*`,
///    `embed_tokens.*`, `norm.*`) or under `model.`, attention named
///    `to_q/to_k/to_v/to_out` and `norm_q/norm_k`, the vision tower at the
///    top level (`blocks.*`, `merger.*`, `patch_embed.*`, `pos_embed.*`,
///    `deepstack_merger_list.*`).
///
/// Keys of the generator, audio and action towers and ModelOpt quantizer
/// states are never asked for, so they are skipped.
pub fn qwen3_candidates(name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        let renamed = rest
            .replace(".self_attn.q_proj.", ".self_attn.to_q.")
            .replace(".self_attn.k_proj.", ".self_attn.to_k.")
            .replace(".self_attn.v_proj.", ".self_attn.to_v.")
            .replace(".self_attn.o_proj.", ".self_attn.to_out.")
            .replace(".self_attn.q_norm.", ".self_attn.norm_q.")
            .replace(".self_attn.k_norm.", ".self_attn.norm_k.");
        out.push(format!("model.{rest}"));
        out.push(rest.to_string());
        if renamed != rest {
            out.push(renamed.clone());
            out.push(format!("model.{renamed}"));
        }
    } else if let Some(rest) = name.strip_prefix("model.visual.") {
        out.push(format!("visual.{rest}"));
        out.push(rest.to_string());
    }
    out
}

/// The run dtype when none is asked for: f32 on the CPU, bf16 on CUDA.
#[cfg(feature = "cosmos")]
pub fn default_dtype(device: &candle_core::Device) -> candle_core::DType {
    if device.is_cuda() {
        candle_core::DType::BF16
    } else {
        candle_core::DType::F32
    }
}

/// What both families do before building their model: `config.json`'s
/// text, the weights' quantisation ([`super::fp8::inspect`]) and a
/// `VarBuilder` over `files` in `dtype` (memory-mapped, or FP8 dequantised
/// on the host one tensor at a time as it loads).
#[cfg(feature = "cosmos")]
pub fn open(
    dir: &Path,
    files: &[PathBuf],
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> Result<
    (
        String,
        super::fp8::Quantization,
        candle_nn::VarBuilder<'static>,
    ),
    CosmosError,
> {
    use super::fp8::{self, Quantization};
    super::alloc::reuse_freed_pages();
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        CosmosError::Checkpoint(format!("cannot read '{}': {e}", cfg_path.display()))
    })?;
    let quantization = fp8::inspect(dir, files)?;
    let vb = match &quantization {
        // SAFETY: the files are memory-mapped read-only; they must not be
        // modified while the model is loaded (as for every mmap loader).
        Quantization::None => {
            unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(files, dtype, device) }
                .map_err(|e| CosmosError::Checkpoint(e.to_string()))?
        }
        Quantization::Fp8(layout) => fp8::var_builder(files, layout, dtype, device)?,
    };
    Ok((text, quantization, vb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen3_names_are_found_in_every_layout() {
        let c = qwen3_candidates("model.language_model.layers.3.self_attn.q_proj.weight");
        assert_eq!(
            c[0],
            "model.language_model.layers.3.self_attn.q_proj.weight"
        );
        // Older prefix, Cosmos3 flat and `model.`-prefixed, with vLLM's renames.
        for want in [
            "model.layers.3.self_attn.q_proj.weight",
            "layers.3.self_attn.q_proj.weight",
            "layers.3.self_attn.to_q.weight",
            "model.layers.3.self_attn.to_q.weight",
        ] {
            assert!(c.iter().any(|x| x == want), "{want} not in {c:?}");
        }
        let c = qwen3_candidates("model.language_model.layers.0.self_attn.k_norm.weight");
        assert!(
            c.iter().any(|x| x == "layers.0.self_attn.norm_k.weight"),
            "{c:?}"
        );
        let c = qwen3_candidates("model.visual.blocks.0.norm1.weight");
        assert!(c.iter().any(|x| x == "visual.blocks.0.norm1.weight"));
        assert!(c.iter().any(|x| x == "blocks.0.norm1.weight"));
        assert_eq!(
            qwen3_candidates("lm_head.weight"),
            vec!["lm_head.weight".to_string()]
        );
    }
}
