// SPDX-License-Identifier: MPL-2.0
//! FP8 checkpoints, dequantised at load.
//!
//! Three layouts load, each storing a quantised weight `X.weight` as
//! `F8_E4M3` next to a scale tensor:
//!
//! * **compressed-tensors** (llm-compressor's FP8 / FP8-Dynamic checkpoints):
//!   `config.json` `quantization_config` with `quant_method:
//!   compressed-tensors`, `format: float-quantized`; `X.weight_scale` per
//!   channel `[out, 1]`, per tensor `[1]` (or `[]`), per block
//!   (`block_structure`) or per group (`group_size`), in the original dtype.
//! * **NVIDIA ModelOpt** (`hf_quant_config.json`, or a `quantization_config`
//!   with `quant_method: modelopt`) with `quant_algo: FP8`: a per-tensor f32
//!   `X.weight_scale`; the static `X.input_scale` is not used.
//! * **fine-grained fp8** (transformers' `FineGrainedFP8Config`, DeepSeek
//!   style): `quant_method: fp8`, `weight_block_size`, and
//!   `X.weight_scale_inv` with one f32 scale per block.
//!
//! The rule is compressed-tensors' (and transformers'):
//! `W = W_q.to(scale.dtype) * scale`, broadcast over the rows / blocks, then
//! cast to the run dtype. The conversion happens on the host, one tensor at a
//! time, before the tensor moves to the device (candle 0.11's CUDA F8E4M3
//! casts cannot find their kernels, candle #3886), so a load holds at most one
//! tensor's worth of temporary copies on top of the dequantised model. FP8
//! saves disk and download, not memory: the model runs in f32 or bf16.
//!
//! Everything else that is quantised is refused by name, with the reason.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Result as CResult, Shape, Tensor};
use candle_nn::var_builder::{SimpleBackend, VarBuilder};
use serde_json::Value;

use super::ops::{assume_init, init, uninit};

use super::checkpoint::read_json;
use super::error::CosmosError;

/// What loads, for the refusal messages.
pub const SUPPORTED: &str = "supported: unquantised safetensors in bf16, f16 or f32 (e.g. nvidia/Cosmos-Reason1-7B, Qwen/Qwen2.5-VL-7B-Instruct) and FP8 (F8_E4M3) checkpoints dequantised at load: compressed-tensors float-quantized (e.g. RedHatAI/Qwen2.5-VL-7B-Instruct-FP8-Dynamic), NVIDIA ModelOpt FP8, fine-grained fp8 (weight_block_size)";

/// The producer of an FP8 checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fp8Format {
    /// compressed-tensors `float-quantized` (llm-compressor).
    CompressedTensors,
    /// NVIDIA ModelOpt, `quant_algo: FP8`.
    ModelOpt,
    /// transformers' fine-grained `fp8` (`weight_scale_inv` per block).
    FineGrained,
}

/// How an FP8 checkpoint stores its scales.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fp8Layout {
    pub format: Fp8Format,
    /// Appended to a weight's name to name its scale: `_scale`
    /// (`X.weight_scale`) or `_scale_inv` (`X.weight_scale_inv`).
    pub scale_suffix: &'static str,
    /// (rows, cols) of a scale block, when the configuration names one.
    pub block: Option<[usize; 2]>,
    /// Input columns per scale, for group strategies.
    pub group: Option<usize>,
    /// For logs: e.g. `compressed-tensors float-quantized FP8 (channel)`.
    pub description: String,
}

/// A checkpoint's quantisation, as far as this loader is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Quantization {
    /// Plain bf16 / f16 / f32 weights.
    None,
    /// FP8 weights with scales: dequantised at load.
    Fp8(Fp8Layout),
}

/// Which scale applies to element (i, j) of a weight: scale
/// `[(i / rows) * cols_of_scales + j / cols]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleGrid {
    /// One scale for the whole tensor (any shape).
    Tensor,
    /// A 2-D weight cut into blocks of `rows × cols` (the last ones may be
    /// ragged); per channel is `rows = 1, cols = in`.
    Blocks { rows: usize, cols: usize },
}

fn refuse_method(method: &str) -> String {
    let why = match method.to_ascii_lowercase().as_str() {
        "awq" => "AWQ: 4-bit integer weights",
        "gptq" => "GPTQ: integer weights",
        "bitsandbytes" => "bitsandbytes: 8-/4-bit integer weights",
        "aqlm" | "vptq" | "higgs" | "spqr" => "vector-quantised weights",
        "hqq" | "quanto" | "eetq" | "torchao" | "auto-round" | "autoround" | "quark" => {
            "integer weights of a run-time quantisation library"
        }
        "fbgemm_fp8" => "FBGEMM FP8: a layout this loader has not been checked against",
        "mxfp4" => {
            return format!(
                "quant_method '{method}' is not supported (MXFP4 weights): {}",
                super::family::fp4_refusal("MXFP4")
            )
        }
        "fp_quant" => "FP4 weights",
        "bitnet" => "ternary weights",
        "gguf" => "GGUF quantised weights",
        _ => "unknown quantisation method",
    };
    format!("quant_method '{method}' is not supported ({why})")
}

/// The one weight-quantisation block (or group) shared by all groups, if any.
fn merge_one<T: PartialEq + Copy + std::fmt::Debug>(
    slot: &mut Option<T>,
    v: T,
    what: &str,
) -> Result<(), CosmosError> {
    match slot {
        Some(old) if *old != v => Err(CosmosError::Unsupported(format!(
            "config groups with different {what}s ({old:?} and {v:?}) are not supported"
        ))),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

fn usize_pair(v: &Value) -> Option<[usize; 2]> {
    let a = v.as_array()?;
    match a.as_slice() {
        [x, y] => Some([x.as_u64()? as usize, y.as_u64()? as usize]),
        _ => None,
    }
}

fn non_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

fn compressed_tensors(q: &Value) -> Result<Fp8Layout, CosmosError> {
    let ct = "quant_method 'compressed-tensors'";
    let top_format = q.get("format").and_then(Value::as_str);
    if let Some(s) = q.get("quantization_status").and_then(Value::as_str) {
        if s != "compressed" {
            return Err(CosmosError::Unsupported(format!(
                "{ct} with quantization_status '{s}' is not supported (weights not stored compressed: they would be fake-quantised at run time); only 'compressed' checkpoints load"
            )));
        }
    }
    if non_empty(q.get("sparsity_config")) {
        let f = q
            .pointer("/sparsity_config/format")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return Err(CosmosError::Unsupported(format!(
            "{ct} with a sparsity_config (format '{f}') is not supported (sparse compressed weights)"
        )));
    }
    if non_empty(q.get("transform_config")) {
        return Err(CosmosError::Unsupported(format!(
            "{ct} with a transform_config is not supported (weights rotated by online transforms)"
        )));
    }
    let groups = q
        .get("config_groups")
        .and_then(Value::as_object)
        .filter(|g| !g.is_empty())
        .ok_or_else(|| {
            CosmosError::Unsupported(format!("{ct} without config_groups: unknown scale layout"))
        })?;
    let (mut block, mut group, mut strategies) = (None, None, Vec::new());
    for (gname, g) in groups {
        let fmt = g
            .get("format")
            .and_then(Value::as_str)
            .or(top_format)
            .unwrap_or("?");
        let w = match g.get("weights") {
            None | Some(Value::Null) => continue, // activations only: weights stay dense
            Some(w) => w,
        };
        let ty = w.get("type").and_then(Value::as_str).unwrap_or("?");
        let bits = w.get("num_bits").and_then(Value::as_u64).unwrap_or(0);
        if !matches!(fmt, "float-quantized" | "naive-quantized") {
            let why = match fmt {
                "pack-quantized" => "integer weights packed into int32, e.g. int4 W4A16",
                "int-quantized" => "8-bit integer weights",
                "marlin-24" | "sparse-24-bitmask" | "sparse-bitmask" => "sparse packed weights",
                "dense" => "dense weights fake-quantised at run time",
                f => match super::family::fp4_format(f) {
                    Some(w) => {
                        return Err(CosmosError::Unsupported(format!(
                            "{ct} format '{fmt}' (group '{gname}'): packed {w} weights; {}",
                            super::family::fp4_refusal(w)
                        )))
                    }
                    None => "an unknown compression format",
                },
            };
            return Err(CosmosError::Unsupported(format!(
                "{ct} format '{fmt}' (group '{gname}') is not supported ({why}); only 'float-quantized' FP8 loads"
            )));
        }
        if ty != "float" || bits != 8 {
            return Err(CosmosError::Unsupported(format!(
                "{ct} group '{gname}' quantises weights to {bits}-bit {ty}; only 8-bit float (FP8) weights load"
            )));
        }
        if w.get("symmetric").and_then(Value::as_bool) == Some(false) {
            return Err(CosmosError::Unsupported(format!(
                "{ct} group '{gname}' has asymmetric weights (zero points); only symmetric FP8 loads"
            )));
        }
        if w.get("dynamic").and_then(Value::as_bool) == Some(true) {
            return Err(CosmosError::Unsupported(format!(
                "{ct} group '{gname}' quantises weights dynamically (no stored scales): not supported"
            )));
        }
        let strategy = w.get("strategy").and_then(Value::as_str).unwrap_or("?");
        match strategy {
            "tensor" | "channel" => {}
            "block" => {
                let b = w
                    .get("block_structure")
                    .and_then(usize_pair)
                    .filter(|b| b[0] > 0 && b[1] > 0)
                    .ok_or_else(|| {
                        CosmosError::Unsupported(format!("{ct} group '{gname}': block strategy without a block_structure: unknown scale layout"))
                    })?;
                merge_one(&mut block, b, "block_structure")?;
            }
            "group" => {
                let n = w
                    .get("group_size")
                    .and_then(Value::as_u64)
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        CosmosError::Unsupported(format!("{ct} group '{gname}': group strategy without a group_size: unknown scale layout"))
                    })?;
                merge_one(&mut group, n as usize, "group_size")?;
            }
            other => {
                return Err(CosmosError::Unsupported(format!(
                    "{ct} group '{gname}' uses weight strategy '{other}': unknown FP8 scale layout (supported: tensor, channel, block, group)"
                )))
            }
        }
        if !strategies.contains(&strategy) {
            strategies.push(strategy);
        }
    }
    if strategies.is_empty() {
        return Err(CosmosError::Unsupported(format!(
            "{ct} without quantised weights in config_groups"
        )));
    }
    Ok(Fp8Layout {
        format: Fp8Format::CompressedTensors,
        scale_suffix: "_scale",
        block,
        group,
        description: format!(
            "compressed-tensors float-quantized FP8 ({})",
            strategies.join(", ")
        ),
    })
}

fn modelopt(q: &Value, source: &str) -> Result<Fp8Layout, CosmosError> {
    // hf_quant_config.json nests it in "quantization"; config.json has it flat.
    let inner = q.get("quantization").unwrap_or(q);
    let algo = inner
        .get("quant_algo")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            CosmosError::Unsupported(format!("{source}: ModelOpt config without quant_algo"))
        })?;
    if algo != "FP8" {
        let why = match algo {
            "FP8_PER_CHANNEL_PER_TOKEN" | "FP8_PB_WO" | "FP8_BLOCK" => {
                "FP8 with a scale layout this loader has not been checked against"
            }
            a if super::family::fp4_algo(a).is_some() => {
                let w = super::family::fp4_algo(a).unwrap_or("FP4");
                return Err(CosmosError::Unsupported(format!(
                    "{source}: ModelOpt quant_algo '{algo}' ({w} weights) is not supported: {}",
                    super::family::fp4_refusal(w)
                )));
            }
            "INT4_AWQ" | "W4A8_AWQ" | "W4A16_AWQ" => "4-bit integer weights (AWQ)",
            "INT8_SQ" | "INT8" | "W8A8_SQ_PER_CHANNEL" => "8-bit integer weights",
            _ => "unknown ModelOpt algorithm",
        };
        return Err(CosmosError::Unsupported(format!(
            "{source}: ModelOpt quant_algo '{algo}' is not supported ({why}); only quant_algo 'FP8' (per-tensor scales) loads"
        )));
    }
    Ok(Fp8Layout {
        format: Fp8Format::ModelOpt,
        scale_suffix: "_scale",
        block: None,
        group: None,
        description: "NVIDIA ModelOpt FP8 (per tensor)".into(),
    })
}

fn fine_grained(q: &Value) -> Result<Fp8Layout, CosmosError> {
    if let Some(fmt) = q.get("fmt").and_then(Value::as_str) {
        if fmt != "e4m3" {
            return Err(CosmosError::Unsupported(format!(
                "quant_method 'fp8' with fmt '{fmt}' is not supported; only e4m3 loads"
            )));
        }
    }
    let block = match q.get("weight_block_size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            usize_pair(v)
                .filter(|b| b[0] > 0 && b[1] > 0)
                .ok_or_else(|| {
                    CosmosError::Unsupported(format!(
                        "quant_method 'fp8' with weight_block_size {v}: unknown scale layout"
                    ))
                })?,
        ),
    };
    let description = match block {
        Some([r, c]) => format!("quant_method 'fp8' (fine-grained FP8, {r}×{c} blocks)"),
        None => "quant_method 'fp8' (fine-grained FP8)".into(),
    };
    Ok(Fp8Layout {
        format: Fp8Format::FineGrained,
        scale_suffix: "_scale_inv",
        block,
        group: None,
        description,
    })
}

/// The quantisation described by a checkpoint's `config.json` and
/// `hf_quant_config.json` (either may be absent). `config.json`'s
/// `quantization_config` wins when both exist.
///
/// The refusal as text: tests/docs_errors.rs checks that docs/ quote it.
/// (Kept as `String` for that caller; the loader uses [`quantization`].)
pub fn detect(
    config: Option<&Value>,
    hf_quant_config: Option<&Value>,
) -> Result<Quantization, String> {
    quantization(config, hf_quant_config).map_err(String::from)
}

/// [`detect`], typed.
pub fn quantization(
    config: Option<&Value>,
    hf_quant_config: Option<&Value>,
) -> Result<Quantization, CosmosError> {
    if let Some(q) = config.and_then(|c| c.get("quantization_config")) {
        let method = q
            .get("quant_method")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let layout = match method {
            "compressed-tensors" => compressed_tensors(q)?,
            "modelopt" => modelopt(q, "config.json quantization_config")?,
            "fp8" => fine_grained(q)?,
            m => return Err(CosmosError::Unsupported(refuse_method(m))),
        };
        return Ok(Quantization::Fp8(layout));
    }
    if let Some(h) = hf_quant_config {
        return Ok(Quantization::Fp8(modelopt(h, "hf_quant_config.json")?));
    }
    Ok(Quantization::None)
}

/// One tensor of a safetensors header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// As the header spells it: `BF16`, `F8_E4M3`, ….
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// The tensors of a safetensors file, from its header only.
pub fn read_header(f: &Path) -> Result<Vec<TensorInfo>, CosmosError> {
    use std::io::Read;
    let bad = |e: String| format!("'{}' is not a safetensors file: {e}", f.display());
    let mut file = std::fs::File::open(f)
        .map_err(|e| CosmosError::Checkpoint(format!("cannot open '{}': {e}", f.display())))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| CosmosError::Checkpoint(bad(e.to_string())))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(CosmosError::Checkpoint(bad(format!(
            "header of {len} bytes"
        ))));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| CosmosError::Checkpoint(bad(e.to_string())))?;
    // The safetensors crate's own header (offsets, dtypes and shapes
    // checked against each other).
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| CosmosError::Checkpoint(bad(e.to_string())))?;
    let mut tensors: Vec<TensorInfo> = meta
        .tensors()
        .into_iter()
        .map(|(name, t)| TensorInfo {
            name,
            dtype: t.dtype.to_string(),
            shape: t.shape.clone(),
        })
        .collect();
    // By name, as before (the first refusal does not depend on hashing).
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

/// Which scale covers which weight element, from the two shapes; an error
/// names the layout it cannot place.
pub fn scale_grid(
    weight: &[usize],
    scale: &[usize],
    layout: &Fp8Layout,
) -> Result<ScaleGrid, CosmosError> {
    let numel: usize = scale.iter().product();
    if numel == 1 {
        return Ok(ScaleGrid::Tensor);
    }
    let unknown = || {
        format!(
            "unknown FP8 scale layout: weight {weight:?} with scale {scale:?} ({})",
            layout.description
        )
    };
    let [r, c] = match weight {
        [r, c] => [*r, *c],
        _ => return Err(CosmosError::Unsupported(unknown())),
    };
    let [sr, sc] = match scale {
        [sr] => [*sr, 1],
        [sr, sc] => [*sr, *sc],
        _ => return Err(CosmosError::Unsupported(unknown())),
    };
    if sr == r && sc == 1 {
        return Ok(ScaleGrid::Blocks { rows: 1, cols: c });
    }
    if let Some([bh, bw]) = layout.block {
        if sr == r.div_ceil(bh) && sc == c.div_ceil(bw) {
            return Ok(ScaleGrid::Blocks { rows: bh, cols: bw });
        }
    }
    if let Some(g) = layout.group {
        if sr == r && sc == c.div_ceil(g) {
            return Ok(ScaleGrid::Blocks { rows: 1, cols: g });
        }
    }
    // transformers' fine-grained rule when the config names no block: whole
    // blocks derived from the grid.
    if layout.format == Fp8Format::FineGrained
        && layout.block.is_none()
        && sr > 0
        && sc > 0
        && r % sr == 0
        && c % sc == 0
    {
        return Ok(ScaleGrid::Blocks {
            rows: r / sr,
            cols: c / sc,
        });
    }
    Err(CosmosError::Unsupported(unknown()))
}

/// Checks a checkpoint's quantisation and tensor types before anything is
/// loaded: every error says what was found and what loads.
pub fn inspect(dir: &Path, files: &[PathBuf]) -> Result<Quantization, CosmosError> {
    let config = read_json(&dir.join("config.json"))?;
    let hq = read_json(&dir.join("hf_quant_config.json"))?;
    let quant = quantization(config.as_ref(), hq.as_ref()).map_err(|e| {
        CosmosError::Unsupported(format!(
            "'{}' is a quantised checkpoint: {e}; {SUPPORTED}",
            dir.display()
        ))
    })?;
    let mut all: HashMap<String, (TensorInfo, PathBuf)> = HashMap::new();
    let mut order = Vec::new();
    for f in files {
        for t in read_header(f)? {
            order.push(t.name.clone());
            all.insert(t.name.clone(), (t, f.clone()));
        }
    }
    let mut fp8_tensors = 0usize;
    for name in &order {
        let (t, f) = &all[name];
        match (t.dtype.as_str(), &quant) {
            ("F32" | "F16" | "BF16", _) => {}
            ("F8_E4M3", Quantization::None) => {
                return Err(CosmosError::Unsupported(format!(
                    "'{}' holds tensor '{name}' as F8_E4M3 but neither config.json's quantization_config nor hf_quant_config.json describes its scales; supported weight types: BF16, F16, F32, and F8_E4M3 in a described FP8 checkpoint ({SUPPORTED})",
                    f.display()
                )))
            }
            ("F8_E4M3", Quantization::Fp8(layout)) => {
                let sname = format!("{name}{}", layout.scale_suffix);
                let Some((s, _)) = all.get(&sname) else {
                    return Err(CosmosError::Unsupported(format!(
                        "'{}' holds '{name}' as F8_E4M3 without its scale '{sname}' ({}): cannot dequantise it",
                        f.display(),
                        layout.description
                    )));
                };
                if !matches!(s.dtype.as_str(), "F32" | "F16" | "BF16") {
                    return Err(CosmosError::Unsupported(format!(
                        "'{}': scale '{sname}' is {}; only F32, BF16 or F16 scales are supported ({})",
                        f.display(),
                        s.dtype,
                        layout.description
                    )));
                }
                scale_grid(&t.shape, &s.shape, layout)
                    .map_err(|e| CosmosError::Unsupported(format!("'{}': '{name}': {e}", f.display())))?;
                fp8_tensors += 1;
            }
            (dt, _) => {
                let what = if name.ends_with("weight_packed") || dt == "I32" {
                    " (packed integer weights)"
                } else if dt == "F8_E5M2" {
                    " (FP8 E5M2: only E4M3 loads)"
                } else {
                    ""
                };
                return Err(CosmosError::Unsupported(format!(
                    "'{}' holds tensor '{name}' as {dt}{what}; supported weight types: BF16, F16, F32, and F8_E4M3 with scales ({SUPPORTED})",
                    f.display()
                )));
            }
        }
    }
    if let Quantization::Fp8(layout) = &quant {
        if fp8_tensors == 0 {
            return Err(CosmosError::Unsupported(format!(
                "'{}' declares FP8 weights ({}) but holds no F8_E4M3 tensor: quantising at load is not supported; {SUPPORTED}",
                dir.display(),
                layout.description
            )));
        }
    }
    Ok(quant)
}

/// float8 e4m3fn (no infinities; 0x7f/0xff are NaN) to f32, exactly.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let neg = b & 0x80 != 0;
    let e = i32::from((b >> 3) & 0xf);
    let m = f32::from(b & 7);
    let v = if e == 0xf && b & 7 == 7 {
        f32::NAN
    } else if e == 0 {
        m * (2f32).powi(-9)
    } else {
        (1.0 + m / 8.0) * (2f32).powi(e - 7)
    };
    if neg {
        -v
    } else {
        v
    }
}

fn e4m3_table() -> &'static [f32; 256] {
    static T: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|b| e4m3_to_f32(b as u8)))
}

/// Dequantises raw F8_E4M3 bytes of shape `shape` with `scale` (its values
/// as f32, `scale_dtype` the dtype it is stored in) on the CPU:
/// `W = W_q.to(scale_dtype) * scale`, then cast to `dtype`. The product is
/// formed in f32, where it is exact for bf16/f16 scales, and rounded to
/// `scale_dtype` as torch does.
pub fn dequantize(
    raw: &[u8],
    shape: &[usize],
    scale: &[f32],
    scale_dtype: DType,
    grid: ScaleGrid,
    dtype: DType,
) -> CResult<Tensor> {
    let n: usize = shape.iter().product();
    if raw.len() != n {
        candle_core::bail!("{} bytes for an F8 tensor of shape {shape:?}", raw.len());
    }
    if !matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
        candle_core::bail!("cannot dequantise FP8 weights to {dtype:?}");
    }
    let lut = e4m3_table();
    let mut out = uninit(n);
    let cols = if shape.len() >= 2 {
        shape[shape.len() - 1]
    } else {
        n.max(1)
    };
    // Rows of the output, split over threads for the big tensors.
    let fill = |row0: usize, chunk: &mut [MaybeUninit<f32>]| -> CResult<()> {
        match grid {
            ScaleGrid::Tensor => {
                let s = scale[0];
                init(
                    chunk,
                    raw[row0 * cols..].iter().map(|&b| lut[b as usize] * s),
                );
            }
            ScaleGrid::Blocks { rows: bh, cols: bw } => {
                let sc = cols.div_ceil(bw);
                for (k, orow) in chunk.chunks_mut(cols).enumerate() {
                    let i = row0 + k;
                    let srow = &scale[(i / bh) * sc..(i / bh + 1) * sc];
                    let irow = &raw[i * cols..(i + 1) * cols];
                    init(
                        orow,
                        irow.iter()
                            .enumerate()
                            .map(|(j, &b)| lut[b as usize] * srow[j / bw]),
                    );
                }
            }
        }
        Ok(())
    };
    if let ScaleGrid::Blocks { rows: bh, cols: bw } = grid {
        let r = n / cols.max(1);
        let need = r.div_ceil(bh) * cols.div_ceil(bw);
        if shape.len() != 2 || scale.len() != need {
            candle_core::bail!(
                "{} scales for an F8 weight of shape {shape:?} in {bh}×{bw} blocks",
                scale.len()
            );
        }
    } else if scale.is_empty() {
        candle_core::bail!("no scale for an F8 tensor");
    }
    let rows = n / cols.max(1);
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(16);
    if n < 1 << 16 || threads < 2 || rows < 2 {
        fill(0, &mut out)?;
    } else {
        let per = rows.div_ceil(threads);
        std::thread::scope(|s| -> CResult<()> {
            let handles: Vec<_> = out
                .chunks_mut(per * cols)
                .enumerate()
                .map(|(t, chunk)| {
                    let fill = &fill;
                    s.spawn(move || fill(t * per, chunk))
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| {
                    candle_core::Error::Msg("dequantisation thread panicked".into())
                })??;
            }
            Ok(())
        })?;
    }
    // Each step consumes its input, so at most two copies live at a time.
    let cast = |t: Tensor, dt: DType| -> CResult<Tensor> {
        if t.dtype() == dt {
            Ok(t)
        } else {
            t.to_dtype(dt)
        }
    };
    // SAFETY: every element is written by `fill` (`init`): the chunks of
    // whole rows cover `out`, and each is written whole.
    let out = unsafe { assume_init(out) };
    let t = Tensor::from_vec(out, shape, &Device::Cpu)?;
    cast(cast(t, scale_dtype)?, dtype)
}

/// A [`SimpleBackend`] over memory-mapped safetensors that dequantises
/// `F8_E4M3` weights with their scales as they are requested (one at a
/// time, on the host) and hands every other tensor through as
/// candle's own backend does. Scale and `input_scale` tensors are simply
/// never requested by the model.
pub struct Fp8Safetensors {
    st: MmapedSafetensors,
    layout: Fp8Layout,
}

impl Fp8Safetensors {
    /// # Safety
    ///
    /// The files are memory-mapped ([`MmapedSafetensors::multi`]): they must
    /// not be modified while this lives.
    pub unsafe fn new(files: &[PathBuf], layout: Fp8Layout) -> CResult<Self> {
        Ok(Fp8Safetensors {
            st: MmapedSafetensors::multi(files)?,
            layout,
        })
    }

    /// The tensor `name` in `dtype` on `dev`, dequantised when it is FP8.
    pub fn load(&self, name: &str, dtype: DType, dev: &Device) -> CResult<Tensor> {
        let view = self.st.get(name)?;
        if !matches!(DType::try_from(view.dtype()), Ok(DType::F8E4M3)) {
            return self.st.load(name, dev)?.to_dtype(dtype);
        }
        let sname = format!("{name}{}", self.layout.scale_suffix);
        let sview = self.st.get(&sname).map_err(|_| {
            candle_core::Error::Msg(format!(
                "'{name}' is F8_E4M3 without its scale '{sname}' ({})",
                self.layout.description
            ))
        })?;
        let grid = scale_grid(view.shape(), sview.shape(), &self.layout)
            .map_err(|e| candle_core::Error::Msg(format!("'{name}': {e}")))?;
        let scale = self.st.load(&sname, &Device::Cpu)?;
        let sdt = scale.dtype();
        if !matches!(sdt, DType::F32 | DType::BF16 | DType::F16) {
            candle_core::bail!(
                "scale '{sname}' is {sdt:?}; only f32, bf16 or f16 scales are supported"
            );
        }
        let svals = scale
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let w = dequantize(view.data(), view.shape(), &svals, sdt, grid, dtype)?;
        w.to_device(dev)
    }
}

impl SimpleBackend for Fp8Safetensors {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> CResult<Tensor> {
        let t = self.load(name, dtype, dev)?;
        if t.shape() != &s {
            Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: t.shape().clone(),
            }
            .bt())?
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> CResult<Tensor> {
        self.load(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.st.get(name).is_ok()
    }
}

/// A [`VarBuilder`] over `files` whose FP8 weights come out dequantised to
/// `dtype` on `device`.
pub fn var_builder(
    files: &[PathBuf],
    layout: &Fp8Layout,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, CosmosError> {
    // SAFETY: the files are memory-mapped read-only; they must not be
    // modified while the model loads (as for every mmap loader).
    let st = unsafe { Fp8Safetensors::new(files, layout.clone()) }
        .map_err(|e| CosmosError::Checkpoint(e.to_string()))?;
    Ok(VarBuilder::from_backend(
        Box::new(st),
        dtype,
        device.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ct(groups: Value) -> Value {
        json!({"quantization_config": {
            "quant_method": "compressed-tensors", "format": "float-quantized",
            "quantization_status": "compressed", "config_groups": groups,
            "ignore": ["lm_head", "re:visual.*"], "kv_cache_scheme": null,
            "sparsity_config": {}, "transform_config": {}}})
    }

    fn fp8_group(strategy: &str) -> Value {
        json!({"group_0": {"targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": strategy, "symmetric": true,
                        "dynamic": false, "group_size": null, "block_structure": null},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}})
    }

    fn layout(c: &Value) -> Fp8Layout {
        match detect(Some(c), None).unwrap() {
            Quantization::Fp8(l) => l,
            q => panic!("{q:?}"),
        }
    }

    #[test]
    fn unquantised_configs_are_plain() {
        assert_eq!(detect(None, None).unwrap(), Quantization::None);
        assert_eq!(
            detect(Some(&json!({"model_type": "qwen2_5_vl"})), None).unwrap(),
            Quantization::None
        );
    }

    #[test]
    fn compressed_tensors_layouts_are_detected() {
        let l = layout(&ct(fp8_group("channel")));
        assert_eq!(l.format, Fp8Format::CompressedTensors);
        assert_eq!(l.scale_suffix, "_scale");
        assert_eq!((l.block, l.group), (None, None));
        assert!(l.description.contains("channel"), "{}", l.description);
        let l = layout(&ct(fp8_group("tensor")));
        assert!(l.description.contains("tensor"));
        let mut g = fp8_group("block");
        g["group_0"]["weights"]["block_structure"] = json!([128, 128]);
        assert_eq!(layout(&ct(g)).block, Some([128, 128]));
        let mut g = fp8_group("group");
        g["group_0"]["weights"]["group_size"] = json!(64);
        assert_eq!(layout(&ct(g)).group, Some(64));
        // A group's own format wins over the top-level one.
        let mut c = ct(fp8_group("channel"));
        c["quantization_config"]["format"] = json!("mixed-precision");
        c["quantization_config"]["config_groups"]["group_0"]["format"] = json!("float-quantized");
        assert_eq!(layout(&c).format, Fp8Format::CompressedTensors);
        // kv-cache quantisation does not touch the weights.
        let mut c = ct(fp8_group("channel"));
        c["quantization_config"]["kv_cache_scheme"] = json!({"num_bits": 8, "type": "float"});
        assert_eq!(layout(&c).format, Fp8Format::CompressedTensors);
    }

    #[test]
    fn modelopt_and_fine_grained_are_detected() {
        let hq = json!({"producer": {"name": "modelopt", "version": "0.29.0"},
            "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": null, "exclude_modules": ["lm_head"]}});
        let Quantization::Fp8(l) = detect(None, Some(&hq)).unwrap() else {
            panic!()
        };
        assert_eq!(l.format, Fp8Format::ModelOpt);
        assert_eq!(l.scale_suffix, "_scale");
        // Newer exports put it flat into config.json.
        let c = json!({"quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8"}});
        assert_eq!(layout(&c).format, Fp8Format::ModelOpt);
        let c = json!({"quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
            "activation_scheme": "dynamic", "weight_block_size": [128, 128]}});
        let l = layout(&c);
        assert_eq!(l.format, Fp8Format::FineGrained);
        assert_eq!(l.scale_suffix, "_scale_inv");
        assert_eq!(l.block, Some([128, 128]));
        // config.json wins over hf_quant_config.json.
        assert_eq!(
            match detect(Some(&c), Some(&hq)).unwrap() {
                Quantization::Fp8(l) => l.format,
                _ => panic!(),
            },
            Fp8Format::FineGrained
        );
    }

    fn refused(c: &Value) -> String {
        detect(Some(c), None).unwrap_err().to_string()
    }

    #[test]
    fn other_quantisations_are_refused_by_name() {
        let e = refused(
            &json!({"quantization_config": {"quant_method": "awq", "bits": 4,
            "group_size": 128, "version": "gemm", "zero_point": true}}),
        );
        assert!(
            e.contains("quant_method 'awq'") && e.contains("4-bit"),
            "{e}"
        );
        let e = refused(&json!({"quantization_config": {"quant_method": "gptq", "bits": 4}}));
        assert!(e.contains("quant_method 'gptq'"), "{e}");
        let e = refused(&json!({"quantization_config": {"quant_method": "frobnicate"}}));
        assert!(e.contains("'frobnicate'") && e.contains("unknown"), "{e}");
        let e = refused(&json!({"quantization_config": {"bits": 4}}));
        assert!(e.contains("quant_method 'unknown'"), "{e}");

        // compressed-tensors int4 W4A16 (pack-quantized).
        let mut c = ct(json!({"group_0": {"targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": true}}}));
        c["quantization_config"]["format"] = json!("pack-quantized");
        let e = refused(&c);
        assert!(
            e.contains("format 'pack-quantized'") && e.contains("packed"),
            "{e}"
        );
        // int8 weights stored naively.
        let mut c = ct(json!({"group_0": {"targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": true}}}));
        c["quantization_config"]["format"] = json!("int-quantized");
        assert!(refused(&c).contains("'int-quantized'"));
        c["quantization_config"]["format"] = json!("naive-quantized");
        let e = refused(&c);
        assert!(e.contains("8-bit int") && e.contains("FP8"), "{e}");
        // FP4 and unknown strategies / formats.
        let mut c = ct(fp8_group("tensor_group"));
        assert!(refused(&c).contains("strategy 'tensor_group'"));
        c["quantization_config"]["format"] = json!("nvfp4-pack-quantized");
        let e = refused(&c);
        assert!(
            e.contains("packed NVFP4 weights")
                && e.contains("NVFP4 checkpoints need Blackwell-class FP4 kernels: serve this model with vLLM or NIM and use backend=openai-compat (or pick the bf16 / FP8 checkpoint)"),
            "{e}"
        );
        let e = refused(&json!({"quantization_config": {"quant_method": "mxfp4"}}));
        assert!(
            e.contains("MXFP4 checkpoints need Blackwell-class FP4 kernels"),
            "{e}"
        );
        // Block strategy without its block size: unknown scale layout.
        let e = refused(&ct(fp8_group("block")));
        assert!(
            e.contains("block_structure") && e.contains("unknown scale layout"),
            "{e}"
        );
        // Not stored compressed, sparse, transformed, asymmetric.
        let mut c = ct(fp8_group("channel"));
        c["quantization_config"]["quantization_status"] = json!("frozen");
        assert!(refused(&c).contains("quantization_status 'frozen'"));
        let mut c = ct(fp8_group("channel"));
        c["quantization_config"]["sparsity_config"] = json!({"format": "sparse-24-bitmask"});
        assert!(refused(&c).contains("sparse-24-bitmask"));
        let mut c = ct(fp8_group("channel"));
        c["quantization_config"]["transform_config"] = json!({"config_groups": {"u": {}}});
        assert!(refused(&c).contains("transform_config"));
        let mut c = ct(fp8_group("channel"));
        c["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = json!(false);
        assert!(refused(&c).contains("asymmetric"));

        // ModelOpt other than FP8.
        let hq = json!({"quantization": {"quant_algo": "NVFP4"}});
        let e = detect(None, Some(&hq)).unwrap_err().to_string();
        assert!(
            e.contains("quant_algo 'NVFP4'")
                && e.contains("NVFP4 checkpoints need Blackwell-class FP4 kernels")
                && e.contains("backend=openai-compat"),
            "{e}"
        );
        let hq = json!({"quantization": {"quant_algo": "W4A8_AWQ"}});
        assert!(detect(None, Some(&hq))
            .unwrap_err()
            .to_string()
            .contains("AWQ"));
        let e = detect(None, Some(&json!({"quantization": {}})))
            .unwrap_err()
            .to_string();
        assert!(e.contains("without quant_algo"), "{e}");
        // fine-grained in e5m2.
        let e = refused(&json!({"quantization_config": {"quant_method": "fp8", "fmt": "e5m2"}}));
        assert!(e.contains("fmt 'e5m2'"), "{e}");
    }

    fn lay(format: Fp8Format, block: Option<[usize; 2]>, group: Option<usize>) -> Fp8Layout {
        Fp8Layout {
            format,
            scale_suffix: "_scale",
            block,
            group,
            description: "test".into(),
        }
    }

    /// [`scale_grid`] with its refusal as text, to compare results.
    fn sg(w: &[usize], s: &[usize], l: &Fp8Layout) -> Result<ScaleGrid, String> {
        scale_grid(w, s, l).map_err(String::from)
    }

    #[test]
    fn scale_layouts_are_placed_or_refused() {
        let ct = lay(Fp8Format::CompressedTensors, None, None);
        assert_eq!(sg(&[8, 4], &[1], &ct), Ok(ScaleGrid::Tensor));
        assert_eq!(sg(&[8, 4], &[], &ct), Ok(ScaleGrid::Tensor));
        assert_eq!(sg(&[2, 3, 4, 4], &[1], &ct), Ok(ScaleGrid::Tensor));
        let ch = ScaleGrid::Blocks { rows: 1, cols: 4 };
        assert_eq!(sg(&[8, 4], &[8, 1], &ct), Ok(ch));
        assert_eq!(sg(&[8, 4], &[8], &ct), Ok(ch));
        // A per-column scale, or a grid without a configured block: refused.
        let e = sg(&[8, 4], &[1, 4], &ct).unwrap_err();
        assert!(
            e.contains("unknown FP8 scale layout") && e.contains("[1, 4]"),
            "{e}"
        );
        assert!(sg(&[8, 4], &[2, 2], &ct).is_err());
        assert!(sg(&[8, 4, 2], &[8, 1], &ct).is_err());
        // Ragged blocks from the configured size.
        let b = lay(Fp8Format::CompressedTensors, Some([3, 3]), None);
        assert_eq!(
            sg(&[8, 4], &[3, 2], &b),
            Ok(ScaleGrid::Blocks { rows: 3, cols: 3 })
        );
        assert!(sg(&[8, 4], &[4, 2], &b).is_err());
        let g = lay(Fp8Format::CompressedTensors, None, Some(2));
        assert_eq!(
            sg(&[8, 4], &[8, 2], &g),
            Ok(ScaleGrid::Blocks { rows: 1, cols: 2 })
        );
        // fine-grained without weight_block_size: whole blocks from the grid.
        let fg = lay(Fp8Format::FineGrained, None, None);
        assert_eq!(
            sg(&[8, 4], &[2, 2], &fg),
            Ok(ScaleGrid::Blocks { rows: 4, cols: 2 })
        );
        assert!(sg(&[8, 4], &[3, 2], &fg).is_err());
    }

    #[test]
    fn e4m3_decoding_matches_candle() {
        let bytes: Vec<u8> = (0..=255).collect();
        let t = Tensor::from_raw_buffer(&bytes, DType::F8E4M3, &[256], &Device::Cpu).unwrap();
        let c = t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        for (b, want) in c.iter().enumerate() {
            let got = e4m3_to_f32(b as u8);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{b:#04x}: {got} vs candle {want}"
            );
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0xb8), -1.0);
    }

    #[test]
    fn dequantisation_follows_the_scale_dtype_rule() {
        // 0x38 = 1.0, 0x40 = 2.0, 0x3c = 1.5, 0xc0 = -2.0
        let raw = [0x38u8, 0x40, 0x3c, 0xc0, 0x38, 0x38];
        let get = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ch = ScaleGrid::Blocks { rows: 1, cols: 3 };
        let w = dequantize(&raw, &[2, 3], &[0.5, 3.0], DType::F32, ch, DType::F32).unwrap();
        assert_eq!(get(w), [0.5, 1.0, 0.75, -6.0, 3.0, 3.0]);
        // Ragged 1×2 blocks over 3 columns: scales per (row, block).
        let bl = ScaleGrid::Blocks { rows: 1, cols: 2 };
        let w = dequantize(
            &raw,
            &[2, 3],
            &[1.0, 10.0, 2.0, 4.0],
            DType::F32,
            bl,
            DType::F32,
        )
        .unwrap();
        assert_eq!(get(w), [1.0, 2.0, 15.0, -4.0, 2.0, 4.0]);
        // bf16 scale: the product is rounded to bf16 before the f32 run dtype.
        // 1.5 * s with s = 1 + 2^-7 (a bf16) = 1.5 + 1.5*2^-7 is not a bf16:
        // it rounds to 1.5 + 2^-6.
        let s = 1.0 + 2f32.powi(-7);
        let w = dequantize(
            &[0x3c],
            &[1, 1],
            &[s],
            DType::BF16,
            ScaleGrid::Tensor,
            DType::F32,
        )
        .unwrap();
        assert_eq!(get(w), [1.5 + 2f32.powi(-6)]);
        // The same with an f32 scale keeps the exact product.
        let w = dequantize(
            &[0x3c],
            &[1, 1],
            &[s],
            DType::F32,
            ScaleGrid::Tensor,
            DType::F32,
        )
        .unwrap();
        assert_eq!(get(w), [1.5 + 1.5 * 2f32.powi(-7)]);
        // Bad inputs.
        assert!(dequantize(
            &raw,
            &[2, 2],
            &[1.0],
            DType::F32,
            ScaleGrid::Tensor,
            DType::F32
        )
        .is_err());
        assert!(dequantize(&raw, &[2, 3], &[1.0], DType::F32, ch, DType::F32).is_err());
        assert!(dequantize(
            &raw,
            &[2, 3],
            &[1.0],
            DType::F32,
            ScaleGrid::Tensor,
            DType::U8
        )
        .is_err());
        // A big tensor goes through the threaded path and gives the same values.
        let n = 1 << 21;
        let raw: Vec<u8> = (0..n).map(|i| (i % 251) as u8 & 0x7e).collect();
        let scales: Vec<f32> = (0..1024).map(|i| 1.0 + i as f32 / 1024.0).collect();
        let g = ScaleGrid::Blocks {
            rows: 1,
            cols: 2048,
        };
        let w = get(dequantize(&raw, &[1024, 2048], &scales, DType::F32, g, DType::F32).unwrap());
        for i in (0..n).step_by(4099) {
            assert_eq!(w[i], e4m3_to_f32(raw[i]) * scales[i / 2048], "{i}");
        }
    }

    fn write_st(path: &Path, tensors: &[(&str, &str, &[usize], Vec<u8>)]) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, dt, shape, bytes) in tensors {
            header.insert(
                name.to_string(),
                json!({"dtype": dt, "shape": shape, "data_offsets": [data.len(), data.len() + bytes.len()]}),
            );
            data.extend_from_slice(bytes);
        }
        let h = serde_json::to_vec(&Value::Object(header)).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(&data);
        std::fs::write(path, out).unwrap();
    }

    #[test]
    fn inspect_checks_tensors_against_the_layout() {
        let dir = std::env::temp_dir().join(format!("vss-fp8-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("model.safetensors");
        let cfg = ct(fp8_group("channel"));
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let bf16 = |n: usize| vec![0u8; 2 * n];
        let files = [f.clone()];
        // A well-formed per-channel checkpoint.
        write_st(
            &f,
            &[
                ("a.weight", "F8_E4M3", &[4, 2], vec![0x38; 8]),
                ("a.weight_scale", "BF16", &[4, 1], bf16(4)),
                ("norm.weight", "BF16", &[2], bf16(2)),
            ],
        );
        assert!(matches!(
            inspect(&dir, &files).unwrap(),
            Quantization::Fp8(_)
        ));
        // A missing scale.
        write_st(&f, &[("a.weight", "F8_E4M3", &[4, 2], vec![0x38; 8])]);
        let e = inspect(&dir, &files).unwrap_err().to_string();
        assert!(e.contains("without its scale 'a.weight_scale'"), "{e}");
        // A scale in an unusable type or shape.
        write_st(
            &f,
            &[
                ("a.weight", "F8_E4M3", &[4, 2], vec![0x38; 8]),
                ("a.weight_scale", "U8", &[4, 1], vec![0; 4]),
            ],
        );
        assert!(inspect(&dir, &files)
            .unwrap_err()
            .to_string()
            .contains("is U8"));
        write_st(
            &f,
            &[
                ("a.weight", "F8_E4M3", &[4, 2], vec![0x38; 8]),
                ("a.weight_scale", "BF16", &[1, 2], bf16(2)),
            ],
        );
        let e = inspect(&dir, &files).unwrap_err().to_string();
        assert!(e.contains("unknown FP8 scale layout"), "{e}");
        // Packed integer weights.
        write_st(&f, &[("a.weight_packed", "I32", &[4, 1], vec![0; 16])]);
        let e = inspect(&dir, &files).unwrap_err().to_string();
        assert!(
            e.contains("'a.weight_packed' as I32") && e.contains("packed"),
            "{e}"
        );
        // FP8 declared, none stored.
        write_st(&f, &[("norm.weight", "BF16", &[2], bf16(2))]);
        let e = inspect(&dir, &files).unwrap_err().to_string();
        assert!(e.contains("holds no F8_E4M3 tensor"), "{e}");
        // No quantisation declared: F8 refused as before.
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        write_st(&f, &[("a.weight", "F8_E4M3", &[4, 2], vec![0x38; 8])]);
        let e = inspect(&dir, &files).unwrap_err().to_string();
        assert!(e.contains("F8_E4M3") && e.contains("BF16"), "{e}");
        // An AWQ config names the method.
        std::fs::write(
            dir.join("config.json"),
            json!({"quantization_config": {"quant_method": "awq", "bits": 4}}).to_string(),
        )
        .unwrap();
        let e = inspect(&dir, &files).unwrap_err().to_string();
        assert!(
            e.contains("quantised checkpoint") && e.contains("quant_method 'awq'"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
