// SPDX-License-Identifier: MPL-2.0
//! The candle Qwen3-VL against Hugging Face transformers 5.24 on tiny
//! random-weight checkpoints (tests/qwen3/, made with
//! tests/qwen3/make_tiny_model.py and make_fp8_fixture.py): preprocessing
//! bit-exact, prompt ids with per-pair time tags, positions, vision
//! embeddings and DeepStack features, logits of every prompt position and
//! a 24-token greedy continuation, for odd and even frame counts, resized,
//! tall, wide and budget-capped videos and a chunk that starts at 12 s;
//! the same model from the older key prefix and from Cosmos3's split
//! layout; an FP8 (compressed-tensors) copy against its dequantized
//! reference; the text-only path the summaries use.
#![cfg(feature = "cosmos")]

use candle_core::{Device, Tensor};
use gstvsssummarize::backend::cosmos::engine::{Engine, Request, Video, Vlm};
use gstvsssummarize::backend::cosmos::preprocess::preprocess_video;
use gstvsssummarize::backend::cosmos::qwen3::{prompt, Qwen3Vl};
use gstvsssummarize::backend::cosmos::sampling::SampleParams;
use gstvsssummarize::frames::RgbImage;
use safetensors::SafeTensors;
use serde_json::Value;

mod common;
use common::qwen::{argmax, f32s, f64s, i64s, pattern};

const CASES: &[&str] = &[
    "odd_3f",
    "resize_4f",
    "tall_2f",
    "wide_2f",
    "budget_5f",
    "late_2f",
];
const PROMPT: &str = "Describe the video.";

fn dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/qwen3")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

struct Fixture {
    bytes: Vec<u8>,
    info: Value,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let bytes = std::fs::read(dir().join(name)).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let info = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("info"))
            .map(|s| serde_json::from_str(s).unwrap())
            .unwrap_or(Value::Null);
        Fixture { bytes, info }
    }

    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }

    fn frames(&self, case: &str) -> (Vec<RgbImage>, Vec<f64>) {
        let c = &self.info["cases"][case];
        let n = c["frames"].as_u64().unwrap();
        let size = c["size"].as_array().unwrap();
        let (h, w) = (
            size[0].as_u64().unwrap() as u32,
            size[1].as_u64().unwrap() as u32,
        );
        let frames = (0..n).map(|t| pattern(t, h, w)).collect();
        (frames, f64s(&self.st(), &format!("{case}.times")))
    }
}

fn ids(st: &SafeTensors, name: &str) -> Vec<u32> {
    i64s(st, name).iter().map(|&x| x as u32).collect()
}

fn qwen3(engine: &mut Engine) -> &mut Qwen3Vl {
    match &mut engine.model {
        Vlm::Qwen3(m) => m,
        Vlm::Qwen25(_) => panic!("loaded as Qwen2.5-VL"),
    }
}

/// `n` greedy tokens after a prefill whose last logits are `row`.
fn greedy(m: &mut Qwen3Vl, mut row: Vec<f32>, delta: i64, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&row);
        out.push(t);
        let p = m.cache_len() as i64 + delta;
        let (e, _) = m.embed_prompt(&[t], None).unwrap();
        let l = m
            .forward(&e, &[vec![p], vec![p], vec![p]], None, true)
            .unwrap();
        row = l.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    }
    out
}

/// Runs one case through the model: prompt ids, positions, vision, full
/// logits and greedy tokens, each checked against the fixture.
fn check_case(engine: &mut Engine, fx: &Fixture, case: &str, logits_tol: f32) {
    let st = fx.st();
    let k = |s: &str| format!("{case}.{s}");
    let (frames, times) = fx.frames(case);

    // Preprocessing: bit-exact.
    let pv = preprocess_video(&frames, &engine.vision).unwrap();
    let want_grid: Vec<u32> = i64s(&st, &k("grid_thw"))
        .iter()
        .map(|&x| x as u32)
        .collect();
    assert_eq!(pv.grid_thw.to_vec(), want_grid, "{case}: grid");
    let want_px = f32s(&st, &k("pixel_values"));
    assert_eq!(
        max_abs_diff(&pv.data, &want_px),
        0.0,
        "{case}: pixel values"
    );

    // Prompt ids (time tags from the real frame times) and positions.
    let grid = pv.grid_thw.map(|x| x as usize);
    let (lh, lw) = (grid[1] / 2, grid[2] / 2);
    let text = engine.render_prompt(None, PROMPT).unwrap();
    let got_ids = engine
        .qwen3_prompt_ids(&text, &times, grid[0], lh * lw)
        .unwrap();
    let want_ids = ids(&st, &k("input_ids"));
    assert_eq!(got_ids, want_ids, "{case}: prompt ids");
    let m = qwen3(engine);
    let (pos, delta) = prompt::positions(&got_ids, m.cfg.video_token_id, Some((lh, lw))).unwrap();
    let want_pos = i64s(&st, &k("position_ids"));
    let l = got_ids.len();
    for a in 0..3 {
        assert_eq!(
            pos[a],
            want_pos[a * l..(a + 1) * l],
            "{case}: positions axis {a}"
        );
    }
    assert_eq!(delta, i64s(&st, &k("rope_delta"))[0], "{case}: rope delta");

    // Vision embeddings and DeepStack features.
    let px = Tensor::from_vec(pv.data.clone(), (pv.rows, pv.cols), &Device::Cpu).unwrap();
    let vis = m.vision_embeds(&px, grid).unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let d = max_abs_diff(&flat(&vis.embeds), &f32s(&st, &k("vision_embeds")));
    assert!(d < logits_tol, "{case}: vision embeddings differ by {d}");
    assert_eq!(vis.deepstack.len(), 2);
    for (i, ds) in vis.deepstack.iter().enumerate() {
        let d = max_abs_diff(&flat(ds), &f32s(&st, &k(&format!("deepstack.{i}"))));
        assert!(d < logits_tol, "{case}: deepstack {i} differs by {d}");
    }

    // Logits of every prompt position, then the greedy continuation.
    m.clear_cache();
    let (emb, visual) = m.embed_prompt(&got_ids, Some(&vis)).unwrap();
    let logits = m.forward(&emb, &pos, visual.as_ref(), false).unwrap();
    let got = flat(&logits);
    let d = max_abs_diff(&got, &f32s(&st, &k("logits")));
    assert!(d < logits_tol, "{case}: logits differ by {d}");
    let vocab = m.cfg.text.vocab_size;
    let last = got[(l - 1) * vocab..].to_vec();
    let toks = greedy(m, last, delta, 24);
    m.clear_cache();
    assert_eq!(toks, ids(&st, &k("greedy")), "{case}: greedy tokens");
    // The prefill generation runs (last logits only: the last decoder
    // layer on the last row) gives the last row of the full logits.
    let (emb, visual) = m.embed_prompt(&got_ids, Some(&vis)).unwrap();
    let only = flat(&m.forward(&emb, &pos, visual.as_ref(), true).unwrap());
    m.clear_cache();
    let scale = got.iter().fold(0f32, |a, x| a.max(x.abs()));
    let dl = max_abs_diff(&only, &got[(l - 1) * vocab..]);
    assert!(
        dl <= 1e-5 * scale,
        "{case}: last-token prefill differs by {dl}"
    );
    eprintln!(
        "{case}: {l} prompt tokens, grid {grid:?}: identical ids/positions, max logit diff {d:.2e}"
    );
}

#[test]
fn matches_transformers_on_tiny_checkpoints() {
    let fx = Fixture::load("tiny_fixture.safetensors");
    let mut engine = Engine::load(&dir().join("tiny"), &Device::Cpu).expect("tiny Qwen3-VL loads");
    assert!(matches!(engine.model, Vlm::Qwen3(_)));
    for case in CASES {
        check_case(&mut engine, &fx, case, 1e-4);
    }
    // The vision tower keeps the last grid's positions and RoPE tables:
    // the same grid again (reused) and an earlier one (recomputed) must
    // give the same results as the first time.
    let (last, first) = (CASES[CASES.len() - 1], CASES[0]);
    check_case(&mut engine, &fx, last, 1e-4);
    check_case(&mut engine, &fx, first, 1e-4);
}

/// The chunk at 12 s says `<12.2 seconds>`: real frame times, not indices.
#[test]
fn time_tags_use_the_chunks_real_times() {
    let fx = Fixture::load("tiny_fixture.safetensors");
    let late = fx.info["cases"]["late_2f"]["prompt"].as_str().unwrap();
    let times = f64s(&fx.st(), "late_2f.times");
    assert!(times[0] >= 10.0, "{times:?}");
    let tag = prompt::time_tag(prompt::pair_times(&times, 2)[0]);
    assert!(late.contains(&tag), "{tag} not in {late}");
}

/// Both key prefixes transformers has used, and Cosmos3's split layout
/// with renamed keys and generator/audio/action tensors to skip, load the
/// same model: identical logits.
#[test]
fn every_checkpoint_layout_loads_the_same_model() {
    let fx = Fixture::load("tiny_fixture.safetensors");
    for layout in ["tiny-oldprefix", "tiny-cosmos3"] {
        let mut engine = Engine::load(&dir().join(layout), &Device::Cpu)
            .unwrap_or_else(|e| panic!("{layout}: {e}"));
        if layout == "tiny-cosmos3" {
            assert!(qwen3(&mut engine).cosmos3);
        }
        check_case(&mut engine, &fx, "odd_3f", 1e-4);
        check_case(&mut engine, &fx, "late_2f", 1e-4);
    }
}

fn greedy_params(max_tokens: usize) -> SampleParams {
    SampleParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        seed: 0,
        max_tokens,
        no_repeat_ngram_size: 0,
    }
}

/// The whole engine path from RGB frames and times (what the element
/// calls) gives transformers' greedy caption, stopping at the end token.
#[test]
fn engine_captions_as_transformers_does() {
    let fx = Fixture::load("tiny_fixture.safetensors");
    let st = fx.st();
    let mut engine = Engine::load(&dir().join("tiny"), &Device::Cpu).unwrap();
    let eos = engine.defaults.eos.clone();
    assert!(!eos.is_empty());
    for case in CASES {
        let (frames, times) = fx.frames(case);
        let out = engine
            .generate(&Request {
                video: Video::Frames(&frames),
                times: &times,
                prompt: PROMPT,
                system: None,
                params: greedy_params(24),
                cancelled: &|| false,
            })
            .unwrap();
        let want = ids(&st, &format!("{case}.greedy"));
        let stop = want
            .iter()
            .position(|t| eos.contains(t))
            .unwrap_or(want.len());
        assert_eq!(out.tokens, want[..stop], "{case}");
        assert_eq!(
            out.input_tokens as usize,
            ids(&st, &format!("{case}.input_ids")).len()
        );
    }
}

/// Summaries and event checks: a text-only prompt (system + user) gives
/// transformers' ids, logits and greedy tokens.
#[test]
fn text_only_prompts_match_transformers() {
    let fx = Fixture::load("tiny_fixture.safetensors");
    let st = fx.st();
    let tc = &fx.info["text_case"];
    let mut engine = Engine::load(&dir().join("tiny"), &Device::Cpu).unwrap();
    let text = engine
        .render_text_prompt(tc["system"].as_str(), tc["user"].as_str().unwrap())
        .unwrap();
    assert_eq!(text, tc["rendered"].as_str().unwrap());
    let out = engine
        .generate_text(
            tc["system"].as_str(),
            tc["user"].as_str().unwrap(),
            &greedy_params(24),
            &|| false,
        )
        .unwrap();
    let want = ids(&st, "text.greedy");
    let eos = engine.defaults.eos.clone();
    let stop = want
        .iter()
        .position(|t| eos.contains(t))
        .unwrap_or(want.len());
    assert_eq!(out.tokens, want[..stop]);
    assert_eq!(out.input_tokens as usize, ids(&st, "text.input_ids").len());
    // Logits of the whole prompt.
    let m = qwen3(&mut engine);
    let prompt_ids = ids(&st, "text.input_ids");
    let (pos, _) = prompt::positions(&prompt_ids, m.cfg.video_token_id, None).unwrap();
    let (emb, _) = m.embed_prompt(&prompt_ids, None).unwrap();
    m.clear_cache();
    let l = m.forward(&emb, &pos, None, false).unwrap();
    let d = max_abs_diff(
        &l.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        &f32s(&st, "text.logits"),
    );
    m.clear_cache();
    assert!(d < 1e-4, "text logits differ by {d}");
}

/// An FP8 copy (compressed-tensors FP8_DYNAMIC, per-channel bf16 scales)
/// dequantised at load gives its dequantised reference's logits and greedy
/// tokens (transformers with `CompressedTensorsConfig(dequantize=True)`).
#[test]
fn fp8_copy_matches_its_dequantized_reference() {
    use gstvsssummarize::backend::cosmos::fp8::Quantization;
    let fx = Fixture::load("tiny_fixture.safetensors");
    let fp8 = Fixture::load("fp8_fixture.safetensors");
    let (st, st8) = (fx.st(), fp8.st());
    let mut engine = Engine::load(&dir().join("tiny-fp8-channel"), &Device::Cpu).unwrap();
    assert!(matches!(engine.model.quantization(), Quantization::Fp8(_)));
    for case in ["odd_3f", "budget_5f"] {
        let k = |s: &str| format!("{case}.{s}");
        let (frames, times) = fx.frames(case);
        let pv = preprocess_video(&frames, &engine.vision).unwrap();
        let grid = pv.grid_thw.map(|x| x as usize);
        let text = engine.render_prompt(None, PROMPT).unwrap();
        let prompt_ids = engine
            .qwen3_prompt_ids(&text, &times, grid[0], grid[1] / 2 * grid[2] / 2)
            .unwrap();
        assert_eq!(prompt_ids, ids(&st, &k("input_ids")));
        let m = qwen3(&mut engine);
        let (pos, delta) = prompt::positions(
            &prompt_ids,
            m.cfg.video_token_id,
            Some((grid[1] / 2, grid[2] / 2)),
        )
        .unwrap();
        let px = Tensor::from_vec(pv.data, (pv.rows, pv.cols), &Device::Cpu).unwrap();
        let vis = m.vision_embeds(&px, grid).unwrap();
        m.clear_cache();
        let (emb, visual) = m.embed_prompt(&prompt_ids, Some(&vis)).unwrap();
        let got = m
            .forward(&emb, &pos, visual.as_ref(), false)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let d = max_abs_diff(&got, &f32s(&st8, &format!("fp8.{case}.logits")));
        assert!(d < 1e-4, "{case}: FP8 logits differ by {d}");
        if case == "odd_3f" {
            let vocab = m.cfg.text.vocab_size;
            let last = got[got.len() - vocab..].to_vec();
            let toks = greedy(m, last, delta, 24);
            assert_eq!(toks, ids(&st8, "fp8.odd_3f.greedy"));
        }
        m.clear_cache();
        eprintln!("fp8 {case}: max logit diff {d:.2e}");
    }
}
