// SPDX-License-Identifier: MPL-2.0
//! FP8 checkpoints, dequantised at load, against Hugging Face: tiny FP8
//! copies of tests/qwen/tiny in the compressed-tensors layout (per-channel and
//! per-tensor scales), the NVIDIA ModelOpt layout and the fine-grained
//! block-wise `fp8` layout, made with tests/qwen/make_fp8_fixture.py
//! (transformers 5.24 + compressed-tensors), whose reference tensors are in
//! tests/qwen/fp8_fixture.safetensors. Checked: every dequantised weight
//! equals transformers' bit for bit (f32 and bf16), logits and greedy tokens
//! match transformers loading the same FP8 checkpoint, the element captions
//! with each, and broken FP8 checkpoints fail at NULL→READY.
#![cfg(feature = "cosmos")]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use gstvsssummarize::backend::cosmos::fp8::{self, Fp8Format, Quantization};
use gstvsssummarize::{
    backend::cosmos::checkpoint::weight_files, backend::cosmos::qwen2_5::Qwen25Vl,
};
use safetensors::SafeTensors;

use common::qwen::{f32s, greedy_tokens, i64s};
use common::ready_error;

/// (fixture key, checkpoint dir, producer, uses transformers 4.52+ names)
const LAYOUTS: &[(&str, &str, Fp8Format, bool)] = &[
    (
        "channel",
        "tiny-fp8-channel",
        Fp8Format::CompressedTensors,
        false,
    ),
    (
        "tensor",
        "tiny-fp8-tensor",
        Fp8Format::CompressedTensors,
        true,
    ),
    ("modelopt", "tiny-fp8-modelopt", Fp8Format::ModelOpt, false),
    ("block", "tiny-fp8-block", Fp8Format::FineGrained, false),
];
const CASES: &[&str] = &["odd_3f", "long_8f_small"];

fn qdir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/qwen")
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn scale_of(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

fn to_new_prefix(k: &str) -> String {
    if let Some(r) = k.strip_prefix("visual.") {
        format!("model.visual.{r}")
    } else if let Some(r) = k.strip_prefix("model.") {
        format!("model.language_model.{r}")
    } else {
        k.to_string()
    }
}

fn layout_of(dir: &Path) -> fp8::Fp8Layout {
    match fp8::inspect(dir, &weight_files(dir).unwrap()).unwrap() {
        Quantization::Fp8(l) => l,
        q => panic!("{}: {q:?}", dir.display()),
    }
}

#[test]
fn e4m3_decoding_equals_torch_for_every_byte() {
    let bytes = read(&qdir().join("fp8_fixture.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = f32s(&st, "e4m3_table");
    assert_eq!(want.len(), 256);
    for (b, w) in want.iter().enumerate() {
        let got = fp8::e4m3_to_f32(b as u8);
        assert!(
            got.to_bits() == w.to_bits() || (got.is_nan() && w.is_nan()),
            "{b:#04x}: {got} vs torch {w}"
        );
    }
}

/// Every quantised weight of every layout, dequantised by our loader to f32
/// and to bf16, equals what transformers (compressed-tensors / fine-grained
/// fp8 dequantisation; for ModelOpt the same rule in torch) produces, bit for
/// bit; unquantised tensors come through unchanged.
#[test]
fn dequantised_weights_equal_the_python_reference_bit_for_bit() {
    let bytes = read(&qdir().join("fp8_fixture.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let dev = Device::Cpu;
    for &(key, name, format, renamed) in LAYOUTS {
        let dir = qdir().join(name);
        let layout = layout_of(&dir);
        assert_eq!(layout.format, format, "{name}");
        let files = weight_files(&dir).unwrap();
        let mut names: Vec<String> = st
            .names()
            .into_iter()
            .filter_map(|k| {
                k.strip_prefix(&format!("{key}.dequant."))
                    .and_then(|r| r.strip_suffix(".f32"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        assert_eq!(names.len(), 14, "{key}: 7 linears × 2 layers");
        let mut elems = 0usize;
        for dt in [DType::F32, DType::BF16] {
            let vb = fp8::var_builder(&files, &layout, dt, &dev).unwrap();
            for n in &names {
                let ck = if renamed { to_new_prefix(n) } else { n.clone() };
                let want_view = st
                    .tensor(&format!(
                        "{key}.dequant.{n}.{}",
                        if dt == DType::F32 { "f32" } else { "bf16" }
                    ))
                    .unwrap();
                let shape = want_view.shape().to_vec();
                let got = vb.get(shape.as_slice(), &ck).unwrap();
                assert_eq!(got.dtype(), dt);
                // Compare the raw bytes: bit for bit.
                let got_bytes: Vec<u8> = match dt {
                    DType::F32 => got
                        .flatten_all()
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        .flat_map(|x| x.to_le_bytes())
                        .collect(),
                    _ => got
                        .flatten_all()
                        .unwrap()
                        .to_dtype(DType::F32)
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap()
                        .iter()
                        // bf16 -> f32 is exact: the top 16 bits are the bf16.
                        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                        .collect(),
                };
                assert!(
                    got_bytes == want_view.data(),
                    "{key} {n} {dt:?}: differs from transformers"
                );
                if dt == DType::F32 {
                    elems += got.elem_count();
                }
            }
            // An unquantised tensor is the stored bf16 value.
            let emb = if renamed {
                "model.language_model.embed_tokens.weight"
            } else {
                "model.embed_tokens.weight"
            };
            let raw = vb.get((512, 64), emb).unwrap();
            assert_eq!(raw.dtype(), dt);
        }
        eprintln!(
            "{key} ({}): {} tensors, {elems} weights, bit-identical in f32 and bf16",
            layout.description,
            names.len()
        );
    }
}

fn case_inputs(st: &SafeTensors, case: &str) -> (Vec<u32>, Tensor, [usize; 3], [Vec<i64>; 3]) {
    let k = |s: &str| format!("{case}.{s}");
    let ids: Vec<u32> = i64s(st, &k("input_ids"))
        .iter()
        .map(|&x| x as u32)
        .collect();
    let g: Vec<usize> = i64s(st, &k("video_grid_thw"))
        .iter()
        .map(|&x| x as usize)
        .collect();
    let pv = f32s(st, &k("pixel_values_videos"));
    let rows = pv.len() / 1176;
    let px = Tensor::from_vec(pv, (rows, 1176), &Device::Cpu).unwrap();
    let p = i64s(st, &k("position_ids_v4"));
    let l = ids.len();
    let pos = [p[..l].to_vec(), p[l..2 * l].to_vec(), p[2 * l..].to_vec()];
    (ids, px, [g[0], g[1], g[2]], pos)
}

/// Logits (and vision embeddings, and 32 greedy tokens) of the candle model
/// loaded from each FP8 checkpoint match transformers loading the same FP8
/// checkpoint, within the tolerance of tests/qwen_model.rs.
#[test]
fn logits_match_transformers_on_fp8_checkpoints() {
    let inputs = read(&qdir().join("tiny_fixture.safetensors"));
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let refs = read(&qdir().join("fp8_fixture.safetensors"));
    let refs = SafeTensors::deserialize(&refs).unwrap();
    for &(key, name, format, _) in LAYOUTS {
        let mut model = Qwen25Vl::load(&qdir().join(name), &Device::Cpu).expect("FP8 model loads");
        match &model.quantization {
            Quantization::Fp8(l) => assert_eq!(l.format, format),
            q => panic!("{name}: {q:?}"),
        }
        let vocab = model.cfg.text.vocab_size;
        for case in CASES {
            let (ids, px, grid, pos) = case_inputs(&inputs, case);
            let k = |s: &str| format!("{key}.{case}.{s}");
            let vis = model.vision_embeds(&px, grid).unwrap();
            let got = vis.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = f32s(&refs, &k("vision_embeds"));
            let (d, scale) = (max_abs_diff(&got, &want), scale_of(&want));
            eprintln!("{key} {case}: vision embeds max abs diff {d:e} (scale {scale:.3})");
            assert!(
                d <= 1e-4 * scale.max(1.0),
                "{key} {case}: vision embeds differ by {d}"
            );

            model.clear_cache();
            let emb = model.embed_prompt(&ids, Some(&vis)).unwrap();
            let logits = model.forward(&emb, &pos).unwrap();
            let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want = f32s(&refs, &k("logits"));
            let (d, scale) = (max_abs_diff(&got, &want), scale_of(&want));
            eprintln!("{key} {case}: logits max abs diff {d:e} (scale {scale:.3})");
            assert!(
                d <= 1e-4 * scale,
                "{key} {case}: logits differ by {d} (scale {scale})"
            );

            if *case == "odd_3f" {
                let l = ids.len();
                let delta = i64s(&inputs, &format!("{case}.rope_delta"))[0];
                let tokens = greedy_tokens(&mut model, &got[(l - 1) * vocab..l * vocab], delta, 32);
                let want: Vec<u32> = i64s(&refs, &k("greedy_tokens"))
                    .iter()
                    .map(|&x| x as u32)
                    .collect();
                assert_eq!(tokens, want, "{key}: greedy tokens");
            }
        }
    }
}

/// The bf16 run dtype (the default on CUDA) from an FP8 checkpoint stays
/// close to transformers' f32 logits, as for the bf16 checkpoint.
#[test]
fn fp8_in_bf16_stays_close_to_f32() {
    let inputs = read(&qdir().join("tiny_fixture.safetensors"));
    let inputs = SafeTensors::deserialize(&inputs).unwrap();
    let refs = read(&qdir().join("fp8_fixture.safetensors"));
    let refs = SafeTensors::deserialize(&refs).unwrap();
    let mut m =
        Qwen25Vl::load_as(&qdir().join("tiny-fp8-channel"), &Device::Cpu, DType::BF16).unwrap();
    let (ids, px, grid, pos) = case_inputs(&inputs, "odd_3f");
    let vis = m.vision_embeds(&px, grid).unwrap();
    let emb = m.embed_prompt(&ids, Some(&vis)).unwrap();
    let got = m
        .forward(&emb, &pos)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = f32s(&refs, "channel.odd_3f.logits");
    let (d, scale) = (max_abs_diff(&got, &want), scale_of(&want));
    eprintln!("channel bf16: logits max abs diff {d} (scale {scale})");
    assert!(
        d <= 0.1 * scale,
        "bf16 logits differ by {d} (scale {scale})"
    );
}

// ------------------------------------------------------------ the element

const T: Duration = Duration::from_secs(120);

fn props(dir: &Path, extra: &str) -> String {
    format!(
        "backend=cosmos-reason1 model-path={} chunk-duration=1 num-frames-per-chunk=4 max-tokens=12 {extra}",
        dir.display()
    )
}

/// `vsssummarize backend=cosmos-reason1 model-path=<FP8 dir>` captions: one
/// record per chunk, no error, for every layout.
#[test]
fn the_element_captions_with_fp8_checkpoints() {
    let v = common::Video::small(2);
    for &(_, name, _, _) in LAYOUTS {
        let r = common::run_video(&props(&qdir().join(name), ""), &v, T);
        let recs = r.outputs().json();
        assert_eq!(recs.len(), 2, "{name}: {recs:?}");
        for (k, rec) in recs.iter().enumerate() {
            assert!(rec.get("error").is_none(), "{name}: {rec}");
            assert_eq!(rec["chunk-index"], k as u64);
            assert_eq!(rec["backend"], "cosmos-reason1");
            assert_eq!(rec["model"], name);
            let out = rec["output-tokens"].as_u64().unwrap();
            assert!((1..=12).contains(&out), "{name}: {rec}");
            assert!(rec["input-tokens"].as_u64().unwrap() > 100, "{name}: {rec}");
        }
        r.stop();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// Broken or unsupported FP8 checkpoints fail at NULL→READY saying what was
/// found: a weight without its scale, an unknown scale layout, an int4 AWQ
/// configuration, compressed-tensors' packed int4 format.
#[test]
fn broken_fp8_checkpoints_fail_at_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let src = qdir().join("tiny-fp8-channel");
    let bytes = read(&src.join("model.safetensors"));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // Each stored tensor goes out under the names `f` gives it (none: dropped).
    let rewrite = |dir: &Path, f: &dyn Fn(&str) -> Vec<String>| {
        let kept: Vec<(String, safetensors::tensor::TensorView)> = st
            .tensors()
            .into_iter()
            .flat_map(|(k, v)| f(&k).into_iter().map(move |n| (n, v.clone())))
            .collect();
        std::fs::write(
            dir.join("model.safetensors"),
            safetensors::serialize(kept, None).unwrap(),
        )
        .unwrap();
    };

    // A weight whose scale is missing.
    let d = base.join("noscale");
    copy_dir(&src, &d);
    let gone = "model.layers.1.mlp.up_proj.weight_scale";
    rewrite(&d, &|k| {
        if k == gone {
            vec![]
        } else {
            vec![k.to_string()]
        }
    });
    let e = ready_error(&props(&d, ""));
    eprintln!("{e}");
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && e.contains("without its scale"),
        "{e}"
    );

    // A scale of a shape no layout explains: the per-channel scale of
    // another layer with a different row count.
    let d = base.join("badscale");
    copy_dir(&src, &d);
    rewrite(&d, &|k| match k {
        "model.layers.0.self_attn.k_proj.weight_scale" => vec![],
        "model.layers.0.mlp.gate_proj.weight_scale" => vec![
            k.to_string(),
            "model.layers.0.self_attn.k_proj.weight_scale".into(),
        ],
        k => vec![k.to_string()],
    });
    let e = ready_error(&props(&d, ""));
    eprintln!("{e}");
    assert!(
        e.contains("unknown FP8 scale layout") && e.contains("k_proj"),
        "{e}"
    );

    // AWQ and compressed-tensors pack-quantized configurations.
    let cfg: serde_json::Value = serde_json::from_slice(&read(&src.join("config.json"))).unwrap();
    let d = base.join("awq");
    copy_dir(&src, &d);
    let mut c = cfg.clone();
    c["quantization_config"] = serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": true, "version": "gemm"});
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let e = ready_error(&props(&d, ""));
    eprintln!("{e}");
    assert!(
        e.contains("quant_method 'awq'") && e.contains("4-bit"),
        "{e}"
    );
    let d = base.join("packed");
    copy_dir(&src, &d);
    let mut c = cfg.clone();
    c["quantization_config"]["format"] = "pack-quantized".into();
    c["quantization_config"]["config_groups"]["group_0"]["weights"] = serde_json::json!({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32, "symmetric": true});
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let e = ready_error(&props(&d, ""));
    eprintln!("{e}");
    assert!(e.contains("format 'pack-quantized'"), "{e}");
    drop(tmp);
}
