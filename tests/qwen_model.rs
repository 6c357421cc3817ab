// SPDX-License-Identifier: MPL-2.0
//! The candle Qwen2.5-VL against Hugging Face transformers 5.24 on a tiny
//! random-weight checkpoint (tests/qwen/tiny, made with
//! tests/qwen/make_tiny_model.py): vision embeddings, position ids (original
//! rule), logits and a 32-token greedy continuation, for odd and even frame
//! counts, a resized video, non-square frames and several window layouts.
#![cfg(feature = "cosmos")]

use candle_core::{Device, Tensor};
use gstvsssummarize::backend::cosmos::preprocess::{preprocess_video, VisionParams};
use gstvsssummarize::backend::cosmos::qwen2_5::rope_index::rope_index;
use gstvsssummarize::backend::cosmos::qwen2_5::Qwen25Vl;
use gstvsssummarize::frames::RgbImage;
use safetensors::SafeTensors;

mod common;
use common::qwen::{f32s, greedy_tokens, i64s, pattern};

const CASES: &[&str] = &[
    "odd_3f",
    "even_4f_resize",
    "tall_2f",
    "wide_many_windows",
    "long_8f_small",
];

fn dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/qwen")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn matches_transformers_on_a_tiny_checkpoint() {
    let bytes = std::fs::read(dir().join("tiny_fixture.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let dev = Device::Cpu;
    let mut model = Qwen25Vl::load(&dir().join("tiny"), &dev).expect("tiny model loads");
    let cfg = model.cfg.clone();
    let merge = cfg.vision.spatial_merge_size;
    let params = VisionParams {
        min_pixels: 3136,
        max_pixels: 100_352,
        ..VisionParams::default()
    };
    for case in CASES {
        let k = |s: &str| format!("{case}.{s}");
        let ids: Vec<u32> = i64s(&st, &k("input_ids"))
            .iter()
            .map(|&x| x as u32)
            .collect();
        let grid: Vec<usize> = i64s(&st, &k("video_grid_thw"))
            .iter()
            .map(|&x| x as usize)
            .collect();
        let grid = [grid[0], grid[1], grid[2]];
        let pv = f32s(&st, &k("pixel_values_videos"));
        let rows = pv.len() / 1176;

        // Our preprocessing of the same frames gives the same pixel values.
        let fs = i64s(&st, &k("frames_shape"));
        let frames: Vec<RgbImage> = (0..fs[0] as u64)
            .map(|t| pattern(t, fs[1] as u32, fs[2] as u32))
            .collect();
        let ours = preprocess_video(&frames, &params).unwrap();
        assert_eq!(ours.grid_thw.map(|x| x as usize), grid, "{case}");
        let level = 1.0 / (255.0 * 0.2613);
        let d = max_abs_diff(&ours.data, &pv);
        assert!(d <= 2.0 * level, "{case}: pixel values differ by {d}");

        // Vision embeddings.
        let pvt = Tensor::from_vec(pv, (rows, 1176), &dev).unwrap();
        let vis = model.vision_embeds(&pvt, grid).unwrap();
        let want = f32s(&st, &k("vision_embeds"));
        let got = vis.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_abs_diff(&got, &want);
        eprintln!("{case}: vision embeds max abs diff {d:e} (scale {scale:.3})");
        assert!(
            d <= 1e-4 * scale.max(1.0),
            "{case}: vision embeds differ by {d}"
        );

        // Position ids, original rule, fractional seconds per grid.
        let spg = f32s(&st, &k("second_per_grid"))[0] as f64;
        let llm = [grid[0], grid[1] / merge, grid[2] / merge];
        let (pos, delta) = rope_index(
            &ids,
            cfg.video_token_id,
            Some(llm),
            spg,
            cfg.vision.tokens_per_second,
        )
        .unwrap();
        let want_pos = i64s(&st, &k("position_ids_v4"));
        let l = ids.len();
        for axis in 0..3 {
            assert_eq!(
                pos[axis],
                want_pos[axis * l..(axis + 1) * l],
                "{case} axis {axis}"
            );
        }
        assert_eq!(delta, i64s(&st, &k("rope_delta"))[0], "{case}");

        // Logits of the whole prompt.
        model.clear_cache();
        let emb = model.embed_prompt(&ids, Some(&vis)).unwrap();
        let logits = model.forward(&emb, &pos).unwrap();
        let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = f32s(&st, &k("logits"));
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = max_abs_diff(&got, &want);
        eprintln!("{case}: logits max abs diff {d:e} (scale {scale:.3})");
        assert!(
            d <= 1e-4 * scale,
            "{case}: logits differ by {d} (scale {scale})"
        );

        // forward_last (what generation calls) gives the last row alone.
        let vocab = cfg.text.vocab_size;
        model.clear_cache();
        let last = model.forward_last(&emb, &pos).unwrap();
        assert_eq!(last.dims(), &[1, vocab], "{case}");
        let d = max_abs_diff(
            &last.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            &got[(l - 1) * vocab..l * vocab],
        );
        assert!(d <= 1e-5 * scale, "{case}: forward_last differs by {d}");

        // Greedy continuation with the KV cache, positions cache_len + delta.
        let tokens = greedy_tokens(&mut model, &got[(l - 1) * vocab..l * vocab], delta, 32);
        let want: Vec<u32> = i64s(&st, &k("greedy_tokens"))
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(tokens, want, "{case}: greedy tokens");
    }
}

#[test]
fn both_config_layouts_load_the_same_model() {
    use gstvsssummarize::backend::cosmos::qwen2_5::config::QwenConfig;
    let flat = std::fs::read_to_string(dir().join("tiny/config.json")).unwrap();
    let nested = std::fs::read_to_string(dir().join("tiny/config.v5.json")).unwrap();
    let a = QwenConfig::from_json(&flat).unwrap();
    let b = QwenConfig::from_json(&nested).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.video_token_id, 269);
    assert_eq!(a.text.mrope_section, [2, 3, 3]);
}

/// The whole caption path from frames: chat template, tokenizer, video
/// placeholder expansion, fps from the frame times, preprocessing, model and
/// greedy sampling give Hugging Face's prompt ids and continuation.
#[test]
fn engine_from_frames_matches_transformers() {
    use gstvsssummarize::backend::cosmos::engine::{Engine, Request, Video};
    use gstvsssummarize::backend::cosmos::sampling::SampleParams;
    let bytes = std::fs::read(dir().join("tiny_fixture.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut engine = Engine::load(&dir().join("tiny"), &Device::Cpu).unwrap();
    assert_eq!(engine.defaults.eos, vec![258, 256]);
    assert!((engine.defaults.repetition_penalty - 1.05).abs() < 1e-9);
    for case in CASES {
        let k = |s: &str| format!("{case}.{s}");
        let want_ids: Vec<u32> = i64s(&st, &k("input_ids"))
            .iter()
            .map(|&x| x as u32)
            .collect();
        let n_video = want_ids.iter().filter(|&&t| t == 269).count();
        let text = engine.render_prompt(None, "Describe the video.").unwrap();
        assert_eq!(
            engine.prompt_ids(&text, n_video).unwrap(),
            want_ids,
            "{case}"
        );

        let fs = i64s(&st, &k("frames_shape"));
        let frames: Vec<RgbImage> = (0..fs[0] as u64)
            .map(|t| pattern(t, fs[1] as u32, fs[2] as u32))
            .collect();
        let times = common::qwen::f64s(&st, &k("frame_times"));
        let out = engine
            .generate(&Request {
                video: Video::Frames(&frames),
                times: &times,
                prompt: "Describe the video.",
                system: None,
                params: SampleParams {
                    temperature: 0.0,
                    top_p: 1.0,
                    top_k: 0,
                    repetition_penalty: 1.0,
                    seed: 0,
                    max_tokens: 32,
                    no_repeat_ngram_size: 0,
                },
                cancelled: &|| false,
            })
            .unwrap();
        let want: Vec<u32> = i64s(&st, &k("greedy_tokens"))
            .iter()
            .map(|&x| x as u32)
            .collect();
        // The engine stops at the first end token; the reference never stops.
        let stop = want
            .iter()
            .position(|t| [258, 256].contains(t))
            .unwrap_or(want.len());
        assert_eq!(out.tokens, want[..stop], "{case}");
        assert_eq!(out.input_tokens as usize, want_ids.len());
        assert_eq!(out.output_tokens as usize, stop);
    }
}

/// Checkpoints saved by transformers 4.52–4.57 name the weights
/// `model.language_model.*` / `model.visual.*`: the same model loads.
#[test]
fn both_weight_name_prefixes_load() {
    let tiny = dir().join("tiny");
    let bytes = std::fs::read(tiny.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let k = if let Some(r) = k.strip_prefix("visual.") {
                format!("model.visual.{r}")
            } else if let Some(r) = k.strip_prefix("model.") {
                format!("model.language_model.{r}")
            } else {
                k
            };
            (k, v)
        })
        .collect();
    assert!(renamed
        .iter()
        .any(|(k, _)| k.starts_with("model.language_model.layers.0")));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_path_buf();
    for f in [
        "config.json",
        "tokenizer.json",
        "chat_template.json",
        "generation_config.json",
    ] {
        std::fs::copy(tiny.join(f), out.join(f)).unwrap();
    }
    std::fs::write(
        out.join("model.safetensors"),
        safetensors::serialize(renamed, None).unwrap(),
    )
    .unwrap();
    let dev = Device::Cpu;
    let mut a = Qwen25Vl::load(&tiny, &dev).unwrap();
    let mut b = Qwen25Vl::load(&out, &dev).unwrap();
    let ids = [1u32, 2, 3, 257, 258];
    let pos: [Vec<i64>; 3] = std::array::from_fn(|_| (0..5).collect());
    let la = a
        .forward(&a.embed_prompt(&ids, None).unwrap(), &pos)
        .unwrap();
    let lb = b
        .forward(&b.embed_prompt(&ids, None).unwrap(), &pos)
        .unwrap();
    let (la, lb) = (
        la.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        lb.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    assert_eq!(la, lb);
    drop(tmp);
}

/// The bf16 path (the default on CUDA) on the CPU: the same model in bf16
/// stays close to transformers' f32 logits.
#[test]
fn bf16_weights_stay_close_to_f32() {
    use candle_core::DType;
    let bytes = std::fs::read(dir().join("tiny_fixture.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let dev = Device::Cpu;
    let mut m = Qwen25Vl::load_as(&dir().join("tiny"), &dev, DType::BF16).unwrap();
    let case = "odd_3f";
    let k = |s: &str| format!("{case}.{s}");
    let ids: Vec<u32> = i64s(&st, &k("input_ids"))
        .iter()
        .map(|&x| x as u32)
        .collect();
    let g: Vec<usize> = i64s(&st, &k("video_grid_thw"))
        .iter()
        .map(|&x| x as usize)
        .collect();
    let pv = f32s(&st, &k("pixel_values_videos"));
    let rows = pv.len() / 1176;
    let pvt = Tensor::from_vec(pv, (rows, 1176), &dev).unwrap();
    let vis = m.vision_embeds(&pvt, [g[0], g[1], g[2]]).unwrap();
    let p = i64s(&st, &k("position_ids_v4"));
    let l = ids.len();
    let pos = [p[..l].to_vec(), p[l..2 * l].to_vec(), p[2 * l..].to_vec()];
    let logits = m
        .forward(&m.embed_prompt(&ids, Some(&vis)).unwrap(), &pos)
        .unwrap();
    let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = f32s(&st, &k("logits"));
    let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
    let d = max_abs_diff(&got, &want);
    eprintln!("bf16: logits max abs diff {d} (scale {scale})");
    assert!(
        d <= 0.1 * scale,
        "bf16 logits differ by {d} (scale {scale})"
    );
}
