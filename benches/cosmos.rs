//! cosmos-reason1: candle vs Hugging Face transformers (eager, f32) on the
//! same mid-sized random Qwen2.5-VL and the same input, on this CPU.
//! Prefill time (vision tower + whole prompt) and greedy decode tokens/s;
//! then the load time, in seconds per GB of checkpoint, of the FP8
//! (compressed-tensors) copy cosmos_hf.py writes and of the f32 original.
//!
//! Run `pipelines/bench-cosmos.sh` (it makes the model and the HF timing
//! with benches/cosmos_hf.py, then runs this). Without the model directory
//! (e.g. under `cargo test`) it says so and exits.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use gstvsssummarize::backend::cosmos::qwen2_5::Qwen25Vl;
use safetensors::SafeTensors;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cosmos benchmark: run it with cargo bench (pipelines/bench-cosmos.sh)");
        return;
    }
    let dir = std::env::var("BENCH_QWEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-qwen"));
    let input = dir.join("bench_input.safetensors");
    if !input.exists() {
        println!(
            "skipped: no {} (run pipelines/bench-cosmos.sh)",
            input.display()
        );
        return;
    }
    let new: usize = std::env::var("NEW_TOKENS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let bytes = std::fs::read(&input).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| -> Vec<i64> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let ids: Vec<u32> = i64s("input_ids").iter().map(|&x| x as u32).collect();
    let g = i64s("grid");
    let grid = [g[0] as usize, g[1] as usize, g[2] as usize];
    let p = i64s("position_ids");
    let l = ids.len();
    let pos = [p[..l].to_vec(), p[l..2 * l].to_vec(), p[2 * l..].to_vec()];
    let delta = i64s("rope_delta")[0];
    let pv: Vec<f32> = st
        .tensor("pixel_values")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let rows = pv.len() / 1176;
    let dev = Device::Cpu;
    let pv = Tensor::from_vec(pv, (rows, 1176), &dev).unwrap();
    let mut m = Qwen25Vl::load(&dir, &dev).unwrap();
    let vocab = m.cfg.text.vocab_size;
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |b, (i, x)| {
                if *x > b.1 {
                    (i, *x)
                } else {
                    b
                }
            })
            .0 as u32
    };
    let mut run = || {
        let t0 = Instant::now();
        m.clear_cache();
        let vis = m.vision_embeds(&pv, grid).unwrap();
        let vision = t0.elapsed().as_secs_f64();
        let emb = m.embed_prompt(&ids, Some(&vis)).unwrap();
        let logits = m.forward_last(&emb, &pos).unwrap();
        let last = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let prefill = t0.elapsed().as_secs_f64();
        let mut tok = argmax(&last);
        let t1 = Instant::now();
        for i in 0..new {
            let p = (l + i) as i64 + delta;
            let e = m.embed_prompt(&[tok], None).unwrap();
            let lg = m.forward_last(&e, &[vec![p], vec![p], vec![p]]).unwrap();
            let v = lg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(v.len(), vocab);
            tok = argmax(&v);
        }
        (prefill, new as f64 / t1.elapsed().as_secs_f64(), vision)
    };
    run();
    let mut res: Vec<(f64, f64, f64)> = (0..runs).map(|_| run()).collect();
    res.sort_by(|a, b| a.2.total_cmp(&b.2));
    let vision = res[res.len() / 2].2;
    res.sort_by(|a, b| a.0.total_cmp(&b.0));
    let prefill = res[res.len() / 2].0;
    res.sort_by(|a, b| a.1.total_cmp(&b.1));
    let tps = res[res.len() / 2].1;
    println!("prompt {l} tokens ({rows} patches), {new} new tokens, median of {runs}");
    println!(
        "candle:       prefill {:.3} s (vision tower {:.3} s), decode {:.1} tok/s",
        prefill, vision, tps
    );
    // Load time per GB of checkpoint: the FP8 copy (dequantised to f32 as it
    // loads) against the f32 original, page cache warm for both.
    let fp8_dir = PathBuf::from(format!("{}-fp8", dir.display()));
    let per_gb = |d: &std::path::Path| -> Option<(f64, f64)> {
        let bytes = std::fs::metadata(d.join("model.safetensors")).ok()?.len() as f64;
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let t0 = Instant::now();
                let m = Qwen25Vl::load(d, &dev).unwrap();
                let s = t0.elapsed().as_secs_f64();
                drop(m);
                s
            })
            .collect();
        t.sort_by(f64::total_cmp);
        Some((t[2] / (bytes / 1e9), bytes / 1e6))
    };
    // BENCH_LOAD=0: no load timing (the later rounds of bench-cosmos.sh).
    let load = std::env::var("BENCH_LOAD").map_or(true, |v| v != "0");
    let timed = || Some((per_gb(&fp8_dir)?, per_gb(&dir)?));
    if let Some(((fp8, fp8_mb), (full, full_mb))) = load.then(timed).flatten() {
        println!(
            "load:         FP8 (compressed-tensors, {fp8_mb:.0} MB) {fp8:.2} s/GB, f32 ({full_mb:.0} MB) {full:.2} s/GB (median of 5)"
        );
    }
    if let Ok(t) = std::fs::read_to_string(dir.join("hf_timing.json")) {
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        let hp = v["prefill_s"].as_f64().unwrap();
        let ht = v["decode_tok_s"].as_f64().unwrap();
        println!(
            "transformers: prefill {:.3} s, decode {:.1} tok/s (torch {} threads)",
            hp, ht, v["threads"]
        );
        println!(
            "ratio candle/transformers: prefill time {:.2}, decode speed {:.2}",
            prefill / hp,
            tps / ht
        );
    }
}
