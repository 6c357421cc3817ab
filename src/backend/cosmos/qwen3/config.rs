// SPDX-License-Identifier: MPL-2.0
//! `config.json` of a Qwen3-VL checkpoint (Qwen3-VL 2B/4B/8B,
//! Cosmos-Reason2, Cosmos3 Nano Reasoner): the nested layout transformers
//! writes (`text_config` / `vision_config`), the rope section spelled
//! `rope_scaling` (hub files) or `rope_parameters` (transformers 5.x).
//!
//! Rules:
//! 1. Sizes and token ids come from the file, never from constants; a
//!    missing size is an error naming the key.
//! 2. `mrope_section` has three entries that sum to `head_dim / 2`;
//!    `mrope_interleaved` must not be `false` (Qwen3-VL interleaves).
//! 3. `deepstack_visual_indexes` are distinct vision block indexes below
//!    `depth`, at most as many as there are decoder layers (feature i is
//!    added after decoder layer i).
//! 4. `num_position_embeddings` is a square (the learned position grid).
//! 5. The activations are the ones implemented: vision `gelu_pytorch_tanh`
//!    (or exact `gelu`), text `silu`.
//! 6. Every number is range-checked (non-zero sizes, heads divide the
//!    width, eps and theta finite and positive).

use serde_json::Value;

use crate::backend::cosmos::error::CosmosError;

/// The vision MLP's activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VisionAct {
    /// `gelu_pytorch_tanh` (the shipped checkpoints).
    GeluTanh,
    /// `gelu` (exact, erf).
    GeluErf,
}

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
    /// Frequencies per M-RoPE axis (t, h, w), interleaved; sums to head_dim / 2.
    pub mrope_section: [usize; 3],
    pub attention_bias: bool,
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
    pub in_channels: usize,
    /// Side of the learned position grid (√num_position_embeddings).
    pub pos_grid_side: usize,
    pub deepstack_visual_indexes: Vec<usize>,
    pub act: VisionAct,
    pub rope_theta: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3Config {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
}

fn bad(msg: String) -> CosmosError {
    CosmosError::Checkpoint(msg)
}

fn positive(name: &str, x: Option<f64>, default: f64) -> Result<f64, CosmosError> {
    let x = x.unwrap_or(default);
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(bad(format!(
            "config.json: '{name}' must be a positive number, found {x}"
        )))
    }
}

impl Qwen3Config {
    pub fn from_json(text: &str) -> Result<Qwen3Config, CosmosError> {
        let root: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("config.json is not JSON: {e}")))?;
        let tc = root
            .get("text_config")
            .filter(|v| v.is_object())
            .ok_or_else(|| bad("config.json has no text_config (Qwen3-VL layout)".into()))?;
        let vc = root
            .get("vision_config")
            .filter(|v| v.is_object())
            .ok_or_else(|| bad("config.json has no vision_config".into()))?;
        // Rule 1.
        let get =
            |obj: &Value, part: &str, k: &str, d: Option<usize>| -> Result<usize, CosmosError> {
                match obj.get(k).and_then(Value::as_u64) {
                    Some(n) if n > 0 && n < (1 << 31) => Ok(n as usize),
                    Some(n) => Err(bad(format!(
                        "config.json: {part}.{k} = {n} is out of range"
                    ))),
                    None => {
                        d.ok_or_else(|| bad(format!("config.json: {part} lacks integer '{k}'")))
                    }
                }
            };
        let t = |k: &str, d: Option<usize>| get(tc, "text_config", k, d);
        let v = |k: &str, d: Option<usize>| get(vc, "vision_config", k, d);
        let num = |obj: &Value, k: &str| obj.get(k).and_then(Value::as_f64);

        let hidden_size = t("hidden_size", None)?;
        let heads = t("num_attention_heads", None)?;
        let kv_heads = t("num_key_value_heads", Some(heads))?;
        let head_dim = t("head_dim", Some(hidden_size / heads))?;
        if heads % kv_heads != 0 {
            return Err(bad(format!(
                "config.json: {heads} attention heads are not a multiple of {kv_heads} key/value heads"
            )));
        }
        // Rule 2.
        let rope = tc
            .get("rope_parameters")
            .or_else(|| tc.get("rope_scaling"))
            .or_else(|| root.get("rope_scaling"));
        let sec: Vec<usize> = rope
            .and_then(|r| r.get("mrope_section"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64().map(|n| n as usize))
                    .collect()
            })
            .ok_or_else(|| {
                bad("config.json has no mrope_section (rope_scaling / rope_parameters)".into())
            })?;
        let mrope_section: [usize; 3] = sec
            .try_into()
            .map_err(|s| bad(format!("mrope_section must have 3 entries, found {s:?}")))?;
        if mrope_section.iter().sum::<usize>() * 2 != head_dim {
            return Err(bad(format!(
                "mrope_section {mrope_section:?} does not cover head_dim {head_dim}"
            )));
        }
        if rope
            .and_then(|r| r.get("mrope_interleaved"))
            .and_then(Value::as_bool)
            == Some(false)
        {
            return Err(bad(
                "config.json says mrope_interleaved: false; Qwen3-VL interleaves its M-RoPE".into(),
            ));
        }
        let rope_theta = positive(
            "rope_theta",
            num(tc, "rope_theta").or_else(|| rope.and_then(|r| num(r, "rope_theta"))),
            5_000_000.0,
        )?;
        // Rule 5.
        let tact = tc
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if tact != "silu" {
            return Err(bad(format!(
                "text_config.hidden_act '{tact}' is not supported (silu)"
            )));
        }
        let text = TextConfig {
            vocab_size: t("vocab_size", None)?,
            hidden_size,
            intermediate_size: t("intermediate_size", None)?,
            num_hidden_layers: t("num_hidden_layers", None)?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: positive("rms_norm_eps", num(tc, "rms_norm_eps"), 1e-6)?,
            rope_theta,
            mrope_section,
            attention_bias: tc
                .get("attention_bias")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            tie_word_embeddings: root
                .get("tie_word_embeddings")
                .or_else(|| tc.get("tie_word_embeddings"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };

        let vact = vc
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        let act = match vact {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => VisionAct::GeluTanh,
            "gelu" => VisionAct::GeluErf,
            o => {
                return Err(bad(format!(
                    "vision_config.hidden_act '{o}' is not supported (gelu_pytorch_tanh, gelu)"
                )))
            }
        };
        let depth = v("depth", None)?;
        let vhidden = v("hidden_size", None)?;
        let vheads = v("num_heads", None)?;
        if vhidden % vheads != 0 || (vhidden / vheads) % 4 != 0 {
            return Err(bad(format!(
                "vision_config: hidden_size {vhidden} over {vheads} heads gives no head width divisible by 4"
            )));
        }
        // Rule 4.
        let npos = v("num_position_embeddings", Some(2304))?;
        let side = (npos as f64).sqrt().round() as usize;
        if side * side != npos {
            return Err(bad(format!(
                "vision_config.num_position_embeddings {npos} is not a square"
            )));
        }
        // Rule 3.
        let ds: Vec<usize> = match vc.get("deepstack_visual_indexes") {
            None => Vec::new(),
            Some(a) => a
                .as_array()
                .ok_or_else(|| bad("deepstack_visual_indexes is not a list".into()))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .map(|n| n as usize)
                        .filter(|&n| n < depth)
                        .ok_or_else(|| {
                            bad(format!(
                                "deepstack_visual_indexes entry {x} is not a vision block below depth {depth}"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let mut sorted = ds.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != ds.len() || ds.len() > text.num_hidden_layers {
            return Err(bad(format!(
                "deepstack_visual_indexes {ds:?} repeat a block or outnumber the {} decoder layers",
                text.num_hidden_layers
            )));
        }
        let vision = VisionConfig {
            depth,
            hidden_size: vhidden,
            intermediate_size: v("intermediate_size", None)?,
            num_heads: vheads,
            out_hidden_size: v("out_hidden_size", Some(hidden_size))?,
            patch_size: v("patch_size", Some(16))?,
            temporal_patch_size: v("temporal_patch_size", Some(2))?,
            spatial_merge_size: v("spatial_merge_size", Some(2))?,
            in_channels: v("in_channels", Some(3))?,
            pos_grid_side: side,
            deepstack_visual_indexes: ds,
            act,
            rope_theta: positive(
                "vision rope_theta",
                vc.get("rope_parameters").and_then(|r| num(r, "rope_theta")),
                10_000.0,
            )?,
        };
        if vision.out_hidden_size != hidden_size {
            return Err(bad(format!(
                "vision_config.out_hidden_size {} differs from the text hidden_size {hidden_size}",
                vision.out_hidden_size
            )));
        }
        let id = |k: &str, d: u32| -> Result<u32, CosmosError> {
            match root.get(k).or_else(|| tc.get(k)) {
                None => Ok(d),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| (n as usize) < text.vocab_size)
                    .map(|n| n as u32)
                    .ok_or_else(|| {
                        bad(format!(
                            "config.json: '{k}' = {x} is not a token id below the vocabulary size"
                        ))
                    }),
            }
        };
        Ok(Qwen3Config {
            image_token_id: id("image_token_id", 151_655)?,
            video_token_id: id("video_token_id", 151_656)?,
            vision_start_token_id: id("vision_start_token_id", 151_652)?,
            vision_end_token_id: id("vision_end_token_id", 151_653)?,
            text,
            vision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen3-VL-4B-Instruct's config.json (hub spelling, trimmed).
    const HUB_4B: &str = r#"{"architectures":["Qwen3VLForConditionalGeneration"],
      "image_token_id":151655,"model_type":"qwen3_vl",
      "text_config":{"attention_bias":false,"head_dim":128,"hidden_act":"silu","hidden_size":2560,
        "intermediate_size":9728,"model_type":"qwen3_vl_text","num_attention_heads":32,
        "num_hidden_layers":36,"num_key_value_heads":8,"rms_norm_eps":1e-06,
        "rope_scaling":{"mrope_interleaved":true,"mrope_section":[24,20,20],"rope_type":"default"},
        "rope_theta":5000000,"tie_word_embeddings":true,"vocab_size":151936},
      "tie_word_embeddings":true,"video_token_id":151656,"vision_end_token_id":151653,
      "vision_start_token_id":151652,
      "vision_config":{"deepstack_visual_indexes":[5,11,17],"depth":24,"hidden_act":"gelu_pytorch_tanh",
        "hidden_size":1024,"in_channels":3,"intermediate_size":4096,"model_type":"qwen3_vl",
        "num_heads":16,"num_position_embeddings":2304,"out_hidden_size":2560,"patch_size":16,
        "spatial_merge_size":2,"temporal_patch_size":2}}"#;

    #[test]
    fn rule_1_sizes_come_from_the_file() {
        let c = Qwen3Config::from_json(HUB_4B).unwrap();
        assert_eq!(c.text.hidden_size, 2560);
        assert_eq!(c.text.num_key_value_heads, 8);
        assert_eq!(c.vision.pos_grid_side, 48);
        assert!(c.text.tie_word_embeddings);
        let e = Qwen3Config::from_json(&HUB_4B.replace("\"vocab_size\":151936", "\"x\":1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab_size"), "{e}");
    }

    #[test]
    fn rule_2_interleaved_section_covers_the_head() {
        let c = Qwen3Config::from_json(HUB_4B).unwrap();
        assert_eq!(c.text.mrope_section, [24, 20, 20]);
        assert_eq!(c.text.rope_theta, 5e6);
        // transformers 5.x spelling.
        let v5 = HUB_4B.replace("\"rope_scaling\"", "\"rope_parameters\"");
        assert_eq!(Qwen3Config::from_json(&v5).unwrap(), c);
        let e = Qwen3Config::from_json(&HUB_4B.replace("[24,20,20]", "[24,20,10]")).unwrap_err();
        assert!(e.to_string().contains("head_dim"), "{e}");
        let e = Qwen3Config::from_json(
            &HUB_4B.replace("\"mrope_interleaved\":true", "\"mrope_interleaved\":false"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("interleav"), "{e}");
    }

    #[test]
    fn rule_3_deepstack_indexes_are_vision_blocks() {
        let c = Qwen3Config::from_json(HUB_4B).unwrap();
        assert_eq!(c.vision.deepstack_visual_indexes, vec![5, 11, 17]);
        for bad in ["[5,11,24]", "[5,5,17]"] {
            let e = Qwen3Config::from_json(&HUB_4B.replace("[5,11,17]", bad)).unwrap_err();
            assert!(e.to_string().contains("deepstack"), "{bad}: {e}");
        }
    }

    #[test]
    fn rule_4_position_grid_is_square() {
        let e = Qwen3Config::from_json(&HUB_4B.replace("2304", "2300")).unwrap_err();
        assert!(e.to_string().contains("square"), "{e}");
    }

    #[test]
    fn rule_5_activations_are_checked() {
        let c = Qwen3Config::from_json(HUB_4B).unwrap();
        assert_eq!(c.vision.act, VisionAct::GeluTanh);
        let e =
            Qwen3Config::from_json(&HUB_4B.replace("gelu_pytorch_tanh", "quick_gelu")).unwrap_err();
        assert!(e.to_string().contains("quick_gelu"), "{e}");
    }

    #[test]
    fn rule_6_numbers_are_range_checked() {
        for (from, to) in [
            ("\"rms_norm_eps\":1e-06", "\"rms_norm_eps\":-1"),
            ("\"num_key_value_heads\":8", "\"num_key_value_heads\":7"),
            ("\"video_token_id\":151656", "\"video_token_id\":999999"),
            ("\"out_hidden_size\":2560", "\"out_hidden_size\":2048"),
        ] {
            assert!(
                Qwen3Config::from_json(&HUB_4B.replace(from, to)).is_err(),
                "{to}"
            );
        }
    }
}
