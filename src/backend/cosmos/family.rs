// SPDX-License-Identifier: MPL-2.0
//! Which model family a checkpoint directory holds, in which layout, and
//! whether the chosen backend runs it. Plain Rust (no candle): compiled
//! without the `cosmos` feature too, and run before any weight is read, so
//! a wrong checkpoint fails NULL→READY with its name and what to do.
//!
//! Rules (each has a unit test below):
//!
//! 1. The family comes from the top-level `config.json`: `model_type`
//!    `qwen2_5_vl` (or `architectures` holding
//!    `Qwen2_5_VLForConditionalGeneration`) is [`Family::Qwen25Vl`];
//!    `model_type` `qwen3_vl` or `cosmos3*` (Cosmos3's own config is
//!    reported to say `cosmos3_omni`; unverified), or `architectures` holding
//!    `Qwen3VLForConditionalGeneration` or `Cosmos3ForConditionalGeneration`,
//!    is [`Family::Qwen3Vl`]. No `config.json`, or one that is not JSON, is
//!    an error naming the file.
//! 2. Refused by name, before rule 1's families: `qwen3_vl_moe` (mixture of
//!    experts is not run in process: serve it with vLLM or NIM and use
//!    `backend=openai-compat`), Qwen3.5 (`model_type` `qwen3_5*`, a
//!    `Qwen3_5*` architecture: a different architecture), Cosmos3 Edge (a
//!    `model_type` or architecture naming both `cosmos3` and `edge`: custom
//!    attention). Anything else is refused naming the `model_type` and
//!    `architectures` found and the supported ones.
//! 3. The layout is [`Layout::Cosmos3`] when the directory has both a
//!    `transformer/` and a `vision_encoder/` sub-folder holding
//!    `*.safetensors` (vLLM's `cosmos3.py` layout; `config.json` at the
//!    top), else [`Layout::HuggingFace`]. A `transformer/` with weights but
//!    no `vision_encoder/` weights is an error saying so.
//! 4. NVFP4 (and the other FP4 formats) is refused before the family is
//!    returned, naming the file that declares it and what to do
//!    ([`fp4_refusal`]): `quant_algo` `NVFP4`, `NVFP4_AWQ`,
//!    `W4A8_NVFP4_FP8` or `MXFP4` in `hf_quant_config.json` at the top or,
//!    for the Cosmos3 layout, in `transformer/hf_quant_config.json`; in
//!    `config.json`'s `quantization_config`, the same `quant_algo`s, a
//!    compressed-tensors `format` `nvfp4-pack-quantized` /
//!    `mxfp4-pack-quantized`, or `quant_method` `mxfp4`. (Other
//!    quantisations are judged at load, by [`super::fp8`].)
//! 5. [`check_backend`]: `cosmos-reason1` runs only [`Family::Qwen25Vl`];
//!    `cosmos-reason2` and `cosmos-reason3` run only [`Family::Qwen3Vl`]
//!    (either layout). A mismatch names the directory, what was found and
//!    the backend that runs it.

use std::path::Path;

use serde_json::Value;

use super::error::CosmosError;
use crate::config::BackendKind;

/// The model family of a checkpoint (rule 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Qwen2.5-VL, Cosmos-Reason1 (`backend=cosmos-reason1`).
    Qwen25Vl,
    /// Qwen3-VL, Cosmos-Reason2, Cosmos3 Nano Reasoner
    /// (`backend=cosmos-reason2` / `cosmos-reason3`).
    Qwen3Vl,
}

impl Family {
    /// How messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Qwen25Vl => "Qwen2.5-VL (Cosmos-Reason1)",
            Family::Qwen3Vl => "Qwen3-VL (Cosmos-Reason2, Cosmos3 Nano Reasoner)",
        }
    }
}

/// Where the weights of a checkpoint lie (rule 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face: `model.safetensors` (or shards and their index) next to
    /// `config.json`.
    HuggingFace,
    /// Cosmos3 (diffusers-style): the language model in
    /// `transformer/*.safetensors`, the vision tower in
    /// `vision_encoder/*.safetensors`, `config.json` at the top.
    Cosmos3,
}

/// What [`inspect`] found: the family, the layout, and how the family was
/// recognised (for messages, e.g. `config.json model_type qwen3_vl`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detected {
    pub family: Family,
    pub layout: Layout,
    pub found: String,
}

/// The supported checkpoints, for refusals.
pub const SUPPORTED_FAMILIES: &str = "supported: model_type qwen2_5_vl (Qwen2.5-VL, Cosmos-Reason1: backend=cosmos-reason1) and qwen3_vl (Qwen3-VL, Cosmos-Reason2: backend=cosmos-reason2; Cosmos3 Nano Reasoner, architectures Cosmos3ForConditionalGeneration: backend=cosmos-reason3)";

/// What to do with an FP4 checkpoint.
pub const FP4_ADVICE: &str = "serve this model with vLLM or NIM and use backend=openai-compat (or pick the bf16 / FP8 checkpoint)";

/// The refusal of an FP4 checkpoint (`what`: `NVFP4`, `MXFP4`), rule 4;
/// [`super::fp8`] words its FP4 refusals with it too.
pub fn fp4_refusal(what: &str) -> String {
    format!("{what} checkpoints need Blackwell-class FP4 kernels: {FP4_ADVICE}")
}

/// The FP4 format a ModelOpt `quant_algo` names, if any.
pub fn fp4_algo(algo: &str) -> Option<&'static str> {
    match algo.to_ascii_uppercase().as_str() {
        "NVFP4" | "NVFP4_AWQ" | "W4A8_NVFP4_FP8" => Some("NVFP4"),
        "MXFP4" => Some("MXFP4"),
        _ => None,
    }
}

/// The FP4 format a compressed-tensors `format` names, if any.
pub fn fp4_format(format: &str) -> Option<&'static str> {
    match format {
        "nvfp4-pack-quantized" => Some("NVFP4"),
        "mxfp4-pack-quantized" => Some("MXFP4"),
        _ => None,
    }
}

/// A JSON file, `None` when it does not exist.
pub fn read_json(p: &Path) -> Result<Option<Value>, CosmosError> {
    match std::fs::read_to_string(p) {
        Ok(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            CosmosError::Checkpoint(format!("'{}' is not valid JSON: {e}", p.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CosmosError::Checkpoint(format!(
            "cannot read '{}': {e}",
            p.display()
        ))),
    }
}

/// Whether `dir` holds at least one `*.safetensors` file.
fn has_safetensors(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten().any(|e| {
                e.path().extension().is_some_and(|x| x == "safetensors") && e.path().is_file()
            })
        })
        .unwrap_or(false)
}

/// Rule 3.
fn layout(dir: &Path) -> Result<Layout, CosmosError> {
    let t = dir.join("transformer");
    let v = dir.join("vision_encoder");
    match (has_safetensors(&t), has_safetensors(&v)) {
        (true, true) => Ok(Layout::Cosmos3),
        (true, false) => Err(CosmosError::Checkpoint(format!(
            "'{}' has transformer/*.safetensors but no vision_encoder/*.safetensors: a Cosmos3 checkpoint needs both (the language model in transformer/, the vision tower in vision_encoder/); the download may be incomplete",
            dir.display()
        ))),
        _ => Ok(Layout::HuggingFace),
    }
}

/// Rule 4 for one quantisation description (`source` names its file).
fn refuse_fp4(q: &Value, source: &str) -> Result<(), CosmosError> {
    let inner = q.get("quantization").unwrap_or(q);
    let algo = inner.get("quant_algo").and_then(Value::as_str);
    let mut what = algo
        .and_then(fp4_algo)
        .map(|w| (w, format!("quant_algo '{}'", algo.unwrap_or_default())));
    if what.is_none() {
        if let Some(m) = inner.get("quant_method").and_then(Value::as_str) {
            if m.eq_ignore_ascii_case("mxfp4") {
                what = Some(("MXFP4", format!("quant_method '{m}'")));
            }
        }
    }
    if what.is_none() {
        let top = inner.get("format").and_then(Value::as_str);
        let groups = inner
            .get("config_groups")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|g| g.values())
            .filter_map(|g| g.get("format").and_then(Value::as_str));
        if let Some(f) = top
            .into_iter()
            .chain(groups)
            .find(|f| fp4_format(f).is_some())
        {
            what = Some((fp4_format(f).unwrap_or("FP4"), format!("format '{f}'")));
        }
    }
    match what {
        Some((w, by)) => Err(CosmosError::Unsupported(format!(
            "{source} declares {w} weights ({by}): {}",
            fp4_refusal(w)
        ))),
        None => Ok(()),
    }
}

/// Rule 4 over the files that may declare a quantisation.
fn check_fp4(dir: &Path, config: &Value, layout: Layout) -> Result<(), CosmosError> {
    let at = |p: &Path| format!("'{}'", p.display());
    if let Some(q) = config.get("quantization_config") {
        refuse_fp4(
            q,
            &format!("{} quantization_config", at(&dir.join("config.json"))),
        )?;
    }
    let mut files = vec![dir.join("hf_quant_config.json")];
    if layout == Layout::Cosmos3 {
        files.push(dir.join("transformer").join("hf_quant_config.json"));
    }
    for f in files {
        if let Some(q) = read_json(&f)? {
            refuse_fp4(&q, &at(&f))?;
        }
    }
    Ok(())
}

/// Rules 1–4: the family and layout of the checkpoint in `dir`, with how
/// the family was recognised.
pub fn inspect(dir: &Path) -> Result<Detected, CosmosError> {
    let cfg_path = dir.join("config.json");
    let config = read_json(&cfg_path)?.ok_or_else(|| {
        CosmosError::Checkpoint(format!(
            "'{}' has no config.json: point model-path at a checkpoint directory ({SUPPORTED_FAMILIES})",
            dir.display()
        ))
    })?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let archs: Vec<String> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mt = model_type.to_ascii_lowercase();
    let has_arch = |a: &str| archs.iter().any(|x| x == a);
    let found_mt = format!("config.json model_type {model_type}");
    let found = |by_arch: &str| {
        if model_type.is_empty() {
            format!("config.json architectures {by_arch}")
        } else {
            format!("config.json model_type {model_type}")
        }
    };
    let d = dir.display();
    // Rule 2: refused by name.
    if mt == "qwen3_vl_moe" || has_arch("Qwen3VLMoeForConditionalGeneration") {
        return Err(CosmosError::Unsupported(format!(
            "'{d}' is a Qwen3-VL mixture-of-experts checkpoint ({}): MoE models are not run in process; serve it with vLLM or NIM and use backend=openai-compat",
            found("Qwen3VLMoeForConditionalGeneration")
        )));
    }
    if mt.starts_with("qwen3_5") || archs.iter().any(|a| a.starts_with("Qwen3_5")) {
        return Err(CosmosError::Unsupported(format!(
            "'{d}' is a Qwen3.5 checkpoint ({}): a different architecture (hybrid linear attention), not run in process; serve it with vLLM or NIM and use backend=openai-compat ({SUPPORTED_FAMILIES})",
            found(&archs.join(", "))
        )));
    }
    let edge = |s: &str| {
        let s = s.to_ascii_lowercase();
        s.contains("cosmos3") && s.contains("edge")
    };
    if edge(&mt) || archs.iter().any(|a| edge(a)) {
        return Err(CosmosError::Unsupported(format!(
            "'{d}' is a Cosmos3 Edge checkpoint ({}): a different model (custom attention), not run in process; serve it with vLLM or NIM and use backend=openai-compat ({SUPPORTED_FAMILIES})",
            found(&archs.join(", "))
        )));
    }
    // Rule 1.
    let (family, found) = if mt == "qwen2_5_vl" {
        (Family::Qwen25Vl, found_mt)
    } else if mt == "qwen3_vl" || mt.starts_with("cosmos3") {
        (Family::Qwen3Vl, found_mt)
    } else if has_arch("Cosmos3ForConditionalGeneration") {
        (
            Family::Qwen3Vl,
            "config.json architectures Cosmos3ForConditionalGeneration".to_string(),
        )
    } else if has_arch("Qwen3VLForConditionalGeneration") {
        (
            Family::Qwen3Vl,
            "config.json architectures Qwen3VLForConditionalGeneration".to_string(),
        )
    } else if has_arch("Qwen2_5_VLForConditionalGeneration") {
        (
            Family::Qwen25Vl,
            "config.json architectures Qwen2_5_VLForConditionalGeneration".to_string(),
        )
    } else {
        let shown = |s: &str| {
            if s.is_empty() {
                "none".to_string()
            } else {
                format!("'{s}'")
            }
        };
        return Err(CosmosError::Unsupported(format!(
            "'{d}' holds config.json model_type {} with architectures [{}]: not a model this backend runs; {SUPPORTED_FAMILIES}",
            shown(&model_type),
            archs.join(", ")
        )));
    };
    let layout = layout(dir)?;
    check_fp4(dir, &config, layout)?;
    Ok(Detected {
        family,
        layout,
        found,
    })
}

/// Rules 1–4: the family and layout of the checkpoint in `dir`.
pub fn detect(dir: &Path) -> Result<(Family, Layout), CosmosError> {
    inspect(dir).map(|d| (d.family, d.layout))
}

/// Rule 5: whether `backend` runs the checkpoint in `dir` ([`inspect`]'s
/// answer); the error names the backend that does.
pub fn check_backend(
    dir: &Path,
    detected: &Detected,
    backend: BackendKind,
) -> Result<(), CosmosError> {
    let d = dir.display();
    let found = &detected.found;
    match (backend, detected.family) {
        (BackendKind::CosmosReason1, Family::Qwen25Vl)
        | (BackendKind::CosmosReason2 | BackendKind::CosmosReason3, Family::Qwen3Vl) => Ok(()),
        (BackendKind::CosmosReason1, Family::Qwen3Vl) => Err(CosmosError::Unsupported(format!(
            "'{d}' is a Qwen3-VL checkpoint ({found}): use backend=cosmos-reason2 (Cosmos-Reason2, Qwen3-VL) or backend=cosmos-reason3 (Cosmos3 Nano Reasoner); backend=cosmos-reason1 runs Qwen2.5-VL (Cosmos-Reason1)"
        ))),
        (BackendKind::CosmosReason2 | BackendKind::CosmosReason3, Family::Qwen25Vl) => {
            Err(CosmosError::Unsupported(format!(
                "'{d}' is a Qwen2.5-VL checkpoint ({found}), i.e. Cosmos-Reason1: use backend=cosmos-reason1; backend={} runs Qwen3-VL (Cosmos-Reason2, Cosmos3 Nano Reasoner)",
                backend.as_str()
            )))
        }
        (other, f) => Err(CosmosError::Setting(format!(
            "backend={} does not run in-process checkpoints ('{d}' is {})",
            other.as_str(),
            f.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir_with(config: Value) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("config.json"), config.to_string()).unwrap();
        t
    }

    fn err(t: &tempfile::TempDir) -> String {
        inspect(t.path()).unwrap_err().to_string()
    }

    fn cosmos3_dirs(t: &tempfile::TempDir) {
        for sub in ["transformer", "vision_encoder"] {
            std::fs::create_dir_all(t.path().join(sub)).unwrap();
            std::fs::write(t.path().join(sub).join("w.safetensors"), b"x").unwrap();
        }
    }

    #[test]
    fn rule1_family_from_config_json() {
        let t = dir_with(json!({"model_type": "qwen2_5_vl"}));
        let d = inspect(t.path()).unwrap();
        assert_eq!(
            (d.family, d.layout),
            (Family::Qwen25Vl, Layout::HuggingFace)
        );
        assert_eq!(d.found, "config.json model_type qwen2_5_vl");
        let t = dir_with(json!({"model_type": "cosmos3_omni"}));
        assert_eq!(detect(t.path()).unwrap().0, Family::Qwen3Vl);
        let t = dir_with(json!({"model_type": "qwen3_vl"}));
        assert_eq!(detect(t.path()).unwrap().0, Family::Qwen3Vl);
        for arch in [
            "Qwen3VLForConditionalGeneration",
            "Cosmos3ForConditionalGeneration",
        ] {
            let t = dir_with(json!({"architectures": [arch]}));
            let d = inspect(t.path()).unwrap();
            assert_eq!(d.family, Family::Qwen3Vl, "{arch}");
            assert!(d.found.contains(arch), "{}", d.found);
        }
        let t = dir_with(json!({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}));
        assert_eq!(detect(t.path()).unwrap().0, Family::Qwen25Vl);
        // The committed tiny checkpoint.
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/qwen/tiny");
        assert_eq!(
            detect(&tiny).unwrap(),
            (Family::Qwen25Vl, Layout::HuggingFace)
        );
        // No config.json / not JSON.
        let t = tempfile::tempdir().unwrap();
        assert!(err(&t).contains("has no config.json"), "{}", err(&t));
        std::fs::write(t.path().join("config.json"), "{").unwrap();
        assert!(err(&t).contains("not valid JSON"), "{}", err(&t));
    }

    #[test]
    fn rule2_refused_by_name() {
        let t = dir_with(json!({"model_type": "qwen3_vl_moe"}));
        let e = err(&t);
        assert!(
            e.contains("mixture-of-experts")
                && e.contains("qwen3_vl_moe")
                && e.contains("backend=openai-compat")
                && e.contains("vLLM"),
            "{e}"
        );
        for c in [
            json!({"model_type": "qwen3_5"}),
            json!({"model_type": "qwen3_5_moe"}),
            json!({"architectures": ["Qwen3_5ForConditionalGeneration"]}),
        ] {
            let e = err(&dir_with(c));
            assert!(
                e.contains("Qwen3.5") && e.contains("different architecture"),
                "{e}"
            );
        }
        let e = err(&dir_with(
            json!({"architectures": ["Cosmos3EdgeForConditionalGeneration"]}),
        ));
        assert!(e.contains("Cosmos3 Edge"), "{e}");
        let e = err(&dir_with(
            json!({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]}),
        ));
        assert!(
            e.contains("model_type 'llava'")
                && e.contains("LlavaForConditionalGeneration")
                && e.contains("qwen2_5_vl")
                && e.contains("qwen3_vl"),
            "{e}"
        );
        let e = err(&dir_with(json!({})));
        assert!(e.contains("model_type none"), "{e}");
    }

    #[test]
    fn rule3_cosmos3_layout() {
        let t = dir_with(json!({"architectures": ["Cosmos3ForConditionalGeneration"]}));
        cosmos3_dirs(&t);
        assert_eq!(
            detect(t.path()).unwrap(),
            (Family::Qwen3Vl, Layout::Cosmos3)
        );
        // Folders without weights: the Hugging Face layout.
        let t = dir_with(json!({"model_type": "qwen3_vl"}));
        std::fs::create_dir_all(t.path().join("transformer")).unwrap();
        std::fs::create_dir_all(t.path().join("vision_encoder")).unwrap();
        assert_eq!(detect(t.path()).unwrap().1, Layout::HuggingFace);
        // Half a Cosmos3 checkpoint.
        std::fs::write(t.path().join("transformer/a.safetensors"), b"x").unwrap();
        let e = err(&t);
        assert!(e.contains("no vision_encoder/*.safetensors"), "{e}");
    }

    #[test]
    fn rule4_fp4_is_refused_by_name() {
        // Cosmos3 layout, NVFP4 declared in transformer/hf_quant_config.json.
        let t = dir_with(json!({"architectures": ["Cosmos3ForConditionalGeneration"]}));
        cosmos3_dirs(&t);
        std::fs::write(
            t.path().join("transformer/hf_quant_config.json"),
            json!({"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "NVFP4"}})
                .to_string(),
        )
        .unwrap();
        let e = err(&t);
        assert!(
            e.contains("transformer/hf_quant_config.json")
                && e.contains("NVFP4 checkpoints need Blackwell-class FP4 kernels")
                && e.contains(FP4_ADVICE),
            "{e}"
        );
        // Top-level hf_quant_config.json, Hugging Face layout.
        let t = dir_with(json!({"model_type": "qwen3_vl"}));
        std::fs::write(
            t.path().join("hf_quant_config.json"),
            json!({"quantization": {"quant_algo": "W4A8_NVFP4_FP8"}}).to_string(),
        )
        .unwrap();
        assert!(err(&t).contains("NVFP4 checkpoints"), "{}", err(&t));
        // config.json: compressed-tensors NVFP4, ModelOpt, mxfp4.
        let ct = json!({"model_type": "qwen3_vl", "quantization_config": {
            "quant_method": "compressed-tensors",
            "config_groups": {"group_0": {"format": "nvfp4-pack-quantized"}}}});
        let e = err(&dir_with(ct));
        assert!(
            e.contains("format 'nvfp4-pack-quantized'") && e.contains("NVFP4"),
            "{e}"
        );
        let mo = json!({"model_type": "qwen2_5_vl", "quantization_config": {
            "quant_method": "modelopt", "quant_algo": "NVFP4"}});
        assert!(err(&dir_with(mo)).contains("NVFP4 checkpoints"));
        let mx =
            json!({"model_type": "qwen3_vl", "quantization_config": {"quant_method": "mxfp4"}});
        assert!(err(&dir_with(mx)).contains("MXFP4 checkpoints"));
        // FP8 passes here (judged at load).
        let fp8 = json!({"model_type": "qwen3_vl", "quantization_config": {
            "quant_method": "modelopt", "quant_algo": "FP8"}});
        assert!(inspect(dir_with(fp8).path()).is_ok());
    }

    #[test]
    fn rule5_backend_matches_family() {
        let q3 = dir_with(json!({"model_type": "qwen3_vl"}));
        let d3 = inspect(q3.path()).unwrap();
        let q25 = dir_with(json!({"model_type": "qwen2_5_vl"}));
        let d25 = inspect(q25.path()).unwrap();
        assert!(check_backend(q3.path(), &d3, BackendKind::CosmosReason2).is_ok());
        assert!(check_backend(q3.path(), &d3, BackendKind::CosmosReason3).is_ok());
        assert!(check_backend(q25.path(), &d25, BackendKind::CosmosReason1).is_ok());
        let e = check_backend(q3.path(), &d3, BackendKind::CosmosReason1)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "'{}' is a Qwen3-VL checkpoint (config.json model_type qwen3_vl): use backend=cosmos-reason2 (Cosmos-Reason2, Qwen3-VL) or backend=cosmos-reason3 (Cosmos3 Nano Reasoner); backend=cosmos-reason1 runs Qwen2.5-VL (Cosmos-Reason1)",
                q3.path().display()
            )
        );
        for b in [BackendKind::CosmosReason2, BackendKind::CosmosReason3] {
            let e = check_backend(q25.path(), &d25, b).unwrap_err().to_string();
            assert!(
                e.contains("is a Qwen2.5-VL checkpoint")
                    && e.contains("Cosmos-Reason1: use backend=cosmos-reason1")
                    && e.contains(b.as_str()),
                "{e}"
            );
        }
        assert!(check_backend(q3.path(), &d3, BackendKind::OpenAiCompat).is_err());
    }
}
