//! cosmos-reason1: candle vs Hugging Face transformers (eager, f32) on the
//! same mid-sized random Qwen2.5-VL or Qwen3-VL and the same input, on this
//! CPU. Prefill time (vision tower + whole prompt) and greedy decode
//! tokens/s; the largest difference between candle's and transformers'
//! logits of the prefill's last token (the two compute the same thing);
//! then the load time, in seconds per GB of checkpoint, of the FP8
//! (compressed-tensors) copy cosmos_hf.py writes and of the f32 original.
//!
//! Run `pipelines/bench-cosmos.sh` (it makes the models and the HF timing
//! with benches/cosmos_hf.py, then runs this). `BENCH_FAMILY=qwen2_5`
//! (default) or `qwen3` picks the model of `BENCH_QWEN_DIR`. Without the
//! model directory (e.g. under `cargo test`) it says so and exits.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use gstvsssummarize::backend::cosmos::qwen2_5::Qwen25Vl;
use gstvsssummarize::backend::cosmos::qwen3::Qwen3Vl;
use safetensors::SafeTensors;

/// The benchmark's input, as cosmos_hf.py wrote it.
struct Input {
    ids: Vec<u32>,
    grid: [usize; 3],
    pos: [Vec<i64>; 3],
    delta: i64,
    pixels: Tensor,
    /// transformers' logits of the prefill's last token.
    first_logits: Option<Vec<f32>>,
}

fn read_input(path: &Path, dev: &Device) -> Input {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let i64s = |n: &str| -> Vec<i64> {
        st.tensor(n)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let f32s = |n: &str| -> Option<Vec<f32>> {
        Some(
            st.tensor(n)
                .ok()?
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        )
    };
    let ids: Vec<u32> = i64s("input_ids").iter().map(|&x| x as u32).collect();
    let g = i64s("grid");
    let p = i64s("position_ids");
    let l = ids.len();
    let pv = st.tensor("pixel_values").unwrap();
    let shape = (pv.shape()[0], pv.shape()[1]);
    let pixels = Tensor::from_vec(f32s("pixel_values").unwrap(), shape, dev).unwrap();
    Input {
        grid: [g[0] as usize, g[1] as usize, g[2] as usize],
        pos: [p[..l].to_vec(), p[l..2 * l].to_vec(), p[2 * l..].to_vec()],
        delta: i64s("rope_delta")[0],
        pixels,
        first_logits: f32s("first_logits"),
        ids,
    }
}

fn argmax(v: &[f32]) -> u32 {
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
}

/// One family's model behind the three calls the benchmark times.
trait Model {
    fn clear(&mut self);
    /// Vision tower (timed apart), then embeddings and the prompt's forward:
    /// the last token's logits and the vision tower's seconds.
    fn prefill(&mut self, inp: &Input) -> (Vec<f32>, f64);
    /// One decode step of `tok` at position `p` (all three axes).
    fn step(&mut self, tok: u32, p: i64) -> Vec<f32>;
}

impl Model for Qwen25Vl {
    fn clear(&mut self) {
        self.clear_cache();
    }
    fn prefill(&mut self, inp: &Input) -> (Vec<f32>, f64) {
        let t0 = Instant::now();
        let vis = self.vision_embeds(&inp.pixels, inp.grid).unwrap();
        let vision = t0.elapsed().as_secs_f64();
        let emb = self.embed_prompt(&inp.ids, Some(&vis)).unwrap();
        let logits = self.forward_last(&emb, &inp.pos).unwrap();
        (logits.flatten_all().unwrap().to_vec1().unwrap(), vision)
    }
    fn step(&mut self, tok: u32, p: i64) -> Vec<f32> {
        let e = self.embed_prompt(&[tok], None).unwrap();
        let lg = self.forward_last(&e, &[vec![p], vec![p], vec![p]]).unwrap();
        lg.flatten_all().unwrap().to_vec1().unwrap()
    }
}

impl Model for Qwen3Vl {
    fn clear(&mut self) {
        self.clear_cache();
    }
    fn prefill(&mut self, inp: &Input) -> (Vec<f32>, f64) {
        let t0 = Instant::now();
        let vis = self.vision_embeds(&inp.pixels, inp.grid).unwrap();
        let vision = t0.elapsed().as_secs_f64();
        let (emb, visual) = self.embed_prompt(&inp.ids, Some(&vis)).unwrap();
        let logits = self.forward(&emb, &inp.pos, visual.as_ref(), true).unwrap();
        (logits.flatten_all().unwrap().to_vec1().unwrap(), vision)
    }
    fn step(&mut self, tok: u32, p: i64) -> Vec<f32> {
        let (e, _) = self.embed_prompt(&[tok], None).unwrap();
        let lg = self
            .forward(&e, &[vec![p], vec![p], vec![p]], None, true)
            .unwrap();
        lg.flatten_all().unwrap().to_vec1().unwrap()
    }
}

/// Median of 5 loads of `dir`, in seconds per GB of its `model.safetensors`,
/// and that size in MB.
fn per_gb(d: &Path, load: &dyn Fn(&Path)) -> Option<(f64, f64)> {
    let bytes = std::fs::metadata(d.join("model.safetensors")).ok()?.len() as f64;
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = Instant::now();
            load(d);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    Some((t[2] / (bytes / 1e9), bytes / 1e6))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("cosmos benchmark: run it with cargo bench (pipelines/bench-cosmos.sh)");
        return;
    }
    let family = std::env::var("BENCH_FAMILY").unwrap_or_else(|_| "qwen2_5".into());
    let qwen3 = match family.as_str() {
        "qwen2_5" => false,
        "qwen3" => true,
        f => panic!("BENCH_FAMILY must be qwen2_5 or qwen3, not {f:?}"),
    };
    let default_dir = if qwen3 { "bench-qwen3" } else { "bench-qwen" };
    let dir = std::env::var("BENCH_QWEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join(default_dir)
        });
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
    let dev = Device::Cpu;
    let inp = read_input(&input, &dev);
    let mut m: Box<dyn Model> = if qwen3 {
        Box::new(Qwen3Vl::load(&dir, &dev).unwrap())
    } else {
        Box::new(Qwen25Vl::load(&dir, &dev).unwrap())
    };
    let l = inp.ids.len();
    let mut first = Vec::new();
    let mut run = |m: &mut Box<dyn Model>| {
        let t0 = Instant::now();
        m.clear();
        let (last, vision) = m.prefill(&inp);
        let prefill = t0.elapsed().as_secs_f64();
        let mut tok = argmax(&last);
        first = last;
        let t1 = Instant::now();
        for i in 0..new {
            let v = m.step(tok, (l + i) as i64 + inp.delta);
            tok = argmax(&v);
        }
        (prefill, new as f64 / t1.elapsed().as_secs_f64(), vision)
    };
    run(&mut m);
    let mut res: Vec<(f64, f64, f64)> = (0..runs).map(|_| run(&mut m)).collect();
    res.sort_by(|a, b| a.2.total_cmp(&b.2));
    let vision = res[res.len() / 2].2;
    res.sort_by(|a, b| a.0.total_cmp(&b.0));
    let prefill = res[res.len() / 2].0;
    res.sort_by(|a, b| a.1.total_cmp(&b.1));
    let tps = res[res.len() / 2].1;
    println!(
        "{family}: prompt {l} tokens ({} patches), {new} new tokens, median of {runs}",
        inp.pixels.dim(0).unwrap()
    );
    println!(
        "candle:       prefill {:.3} s (vision tower {:.3} s), decode {:.1} tok/s",
        prefill, vision, tps
    );
    if let Some(hf) = &inp.first_logits {
        assert_eq!(hf.len(), first.len(), "vocabulary sizes differ");
        let diff = hf
            .iter()
            .zip(&first)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = hf.iter().map(|a| a.abs()).fold(0f32, f32::max);
        println!(
            "parity:       first logits max |candle - transformers| {diff:.2e} (largest |logit| {scale:.2}), argmax {} vs {}",
            argmax(&first),
            argmax(hf)
        );
    }
    drop(m);
    // Load time per GB of checkpoint: the FP8 copy (dequantised to f32 as it
    // loads) against the f32 original, page cache warm for both.
    let fp8_dir = PathBuf::from(format!("{}-fp8", dir.display()));
    let load = |d: &Path| {
        if qwen3 {
            drop(Qwen3Vl::load(d, &dev).unwrap());
        } else {
            drop(Qwen25Vl::load(d, &dev).unwrap());
        }
    };
    // BENCH_LOAD=0: no load timing (the later rounds of bench-cosmos.sh).
    let timed_load = std::env::var("BENCH_LOAD").map_or(true, |v| v != "0");
    let timed = || Some((per_gb(&fp8_dir, &load)?, per_gb(&dir, &load)?));
    if let Some(((fp8, fp8_mb), (full, full_mb))) = timed_load.then(timed).flatten() {
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
