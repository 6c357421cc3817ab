// SPDX-License-Identifier: MPL-2.0
//! `config.json` of a Qwen2.5-VL / Cosmos-Reason1 checkpoint, in either the
//! flat layout (transformers 4.x, the hub files) or the nested one
//! (transformers 5.x: `text_config`, `rope_parameters`). Sizes and token ids
//! always come from here, never from constants.

use serde_json::Value;

use crate::backend::cosmos::error::CosmosError;

#[derive(Clone, Debug, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Frequencies per M-RoPE axis (t, h, w), contiguous; sums to head_dim / 2.
    pub mrope_section: [usize; 3],
    pub tie_word_embeddings: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub out_hidden_size: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub window_size: usize,
    pub fullatt_block_indexes: Vec<usize>,
    pub tokens_per_second: f64,
    pub in_chans: usize,
    pub rope_theta: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct QwenConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

impl QwenConfig {
    pub fn from_json(text: &str) -> Result<QwenConfig, CosmosError> {
        let root: Value = serde_json::from_str(text)
            .map_err(|e| CosmosError::Checkpoint(format!("config.json is not JSON: {e}")))?;
        let mt = root.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !mt.is_empty() && mt != "qwen2_5_vl" {
            return Err(CosmosError::Unsupported(format!(
                "config.json has model_type '{mt}'; supported: qwen2_5_vl (Qwen2.5-VL, Cosmos-Reason1)"
            )));
        }
        let tc = root.get("text_config").filter(|v| v.is_object());
        // A text key: text_config first (v5), then the top level (v4).
        let t = |k: &str| tc.and_then(|c| c.get(k)).or_else(|| root.get(k));
        let usize_of = |k: &str| -> Result<usize, CosmosError> {
            t(k).and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| CosmosError::Checkpoint(format!("config.json lacks integer '{k}'")))
        };
        let rope_params = t("rope_parameters").or_else(|| t("rope_scaling"));
        let rope_theta = num(t("rope_theta"))
            .or_else(|| num(rope_params.and_then(|r| r.get("rope_theta"))))
            .unwrap_or(1_000_000.0);
        let sec: Vec<usize> = rope_params
            .and_then(|r| r.get("mrope_section"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|n| n as usize))
                    .collect()
            })
            .ok_or_else(|| {
                CosmosError::Checkpoint(
                    "config.json has no mrope_section (rope_scaling / rope_parameters)".into(),
                )
            })?;
        let mrope_section: [usize; 3] = sec.try_into().map_err(|s| {
            CosmosError::Checkpoint(format!("mrope_section must have 3 entries, found {s:?}"))
        })?;
        let hidden_size = usize_of("hidden_size")?;
        let num_attention_heads = usize_of("num_attention_heads")?;
        let head_dim = t("head_dim")
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .unwrap_or(hidden_size / num_attention_heads);
        if mrope_section.iter().sum::<usize>() * 2 != head_dim {
            return Err(CosmosError::Checkpoint(format!(
                "mrope_section {mrope_section:?} does not cover head_dim {head_dim}"
            )));
        }
        let text = TextConfig {
            vocab_size: usize_of("vocab_size")?,
            hidden_size,
            intermediate_size: usize_of("intermediate_size")?,
            num_hidden_layers: usize_of("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: usize_of("num_key_value_heads").unwrap_or(num_attention_heads),
            head_dim,
            rms_norm_eps: num(t("rms_norm_eps")).unwrap_or(1e-6),
            rope_theta,
            mrope_section,
            tie_word_embeddings: root
                .get("tie_word_embeddings")
                .or_else(|| t("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };

        let vc = root
            .get("vision_config")
            .ok_or_else(|| CosmosError::Checkpoint("config.json has no vision_config".into()))?;
        let v = |k: &str| vc.get(k);
        let vusize = |k: &str, d: Option<usize>| -> Result<usize, CosmosError> {
            v(k).and_then(Value::as_u64)
                .map(|n| n as usize)
                .or(d)
                .ok_or_else(|| {
                    CosmosError::Checkpoint(format!("vision_config lacks integer '{k}'"))
                })
        };
        let act = v("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(CosmosError::Checkpoint(format!(
                "vision_config.hidden_act '{act}' is not supported (silu)"
            )));
        }
        let vision = VisionConfig {
            depth: vusize("depth", None)?,
            hidden_size: vusize("hidden_size", None)?,
            intermediate_size: vusize("intermediate_size", None)?,
            num_heads: vusize("num_heads", None)?,
            out_hidden_size: vusize("out_hidden_size", Some(hidden_size))?,
            patch_size: vusize("patch_size", Some(14))?,
            temporal_patch_size: vusize("temporal_patch_size", Some(2))?,
            spatial_merge_size: vusize("spatial_merge_size", Some(2))?,
            window_size: vusize("window_size", Some(112))?,
            fullatt_block_indexes: v("fullatt_block_indexes")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64().map(|n| n as usize))
                        .collect()
                })
                .unwrap_or_default(),
            tokens_per_second: num(v("tokens_per_second")).unwrap_or(2.0),
            in_chans: vusize("in_chans", None).or_else(|_| vusize("in_channels", Some(3)))?,
            rope_theta: num(v("rope_parameters").and_then(|r| r.get("rope_theta")))
                .unwrap_or(10_000.0),
        };
        let id = |k: &str| -> Result<u32, CosmosError> {
            root.get(k)
                .or_else(|| t(k))
                .and_then(Value::as_u64)
                .map(|n| n as u32)
                .ok_or_else(|| CosmosError::Checkpoint(format!("config.json lacks '{k}'")))
        };
        Ok(QwenConfig {
            text,
            vision,
            image_token_id: id("image_token_id")?,
            video_token_id: id("video_token_id")?,
            vision_start_token_id: id("vision_start_token_id")?,
            vision_end_token_id: id("vision_end_token_id")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = r#"{"model_type":"qwen2_5_vl","hidden_size":3584,"num_hidden_layers":28,
      "num_attention_heads":28,"num_key_value_heads":4,"intermediate_size":18944,"vocab_size":152064,
      "rms_norm_eps":1e-6,"rope_theta":1000000.0,"rope_scaling":{"type":"mrope","mrope_section":[16,24,24]},
      "tie_word_embeddings":false,"image_token_id":151655,"video_token_id":151656,
      "vision_start_token_id":151652,"vision_end_token_id":151653,
      "vision_config":{"depth":32,"hidden_size":1280,"num_heads":16,"intermediate_size":3420,
        "out_hidden_size":3584,"patch_size":14,"temporal_patch_size":2,"spatial_merge_size":2,
        "window_size":112,"fullatt_block_indexes":[7,15,23,31],"tokens_per_second":2,"in_chans":3,
        "hidden_act":"silu"}}"#;

    #[test]
    fn flat_and_nested_layouts() {
        let a = QwenConfig::from_json(FLAT).unwrap();
        assert_eq!(a.text.head_dim, 128);
        assert_eq!(a.text.mrope_section, [16, 24, 24]);
        assert_eq!(a.vision.fullatt_block_indexes, vec![7, 15, 23, 31]);
        assert_eq!(a.video_token_id, 151656);
        let nested = r#"{"model_type":"qwen2_5_vl","image_token_id":151655,"video_token_id":151656,
          "vision_start_token_id":151652,"vision_end_token_id":151653,"tie_word_embeddings":false,
          "text_config":{"hidden_size":3584,"num_hidden_layers":28,"num_attention_heads":28,
            "num_key_value_heads":4,"intermediate_size":18944,"vocab_size":152064,"rms_norm_eps":1e-6,
            "rope_parameters":{"rope_theta":1000000.0,"mrope_section":[16,24,24],"rope_type":"default"}},
          "vision_config":{"depth":32,"hidden_size":1280,"num_heads":16,"intermediate_size":3420,
            "out_hidden_size":3584,"patch_size":14,"temporal_patch_size":2,"spatial_merge_size":2,
            "window_size":112,"fullatt_block_indexes":[7,15,23,31],"tokens_per_second":2,"in_channels":3,
            "hidden_act":"silu","rope_parameters":{"rope_theta":10000.0,"rope_type":"axial"}}}"#;
        let b = QwenConfig::from_json(nested).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn wrong_models_are_named() {
        let e = QwenConfig::from_json(r#"{"model_type":"llava"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("llava") && e.contains("qwen2_5_vl"), "{e}");
        let e = QwenConfig::from_json(&FLAT.replace("[16,24,24]", "[16,24]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mrope_section"), "{e}");
    }
}
