// SPDX-License-Identifier: MPL-2.0
//! GPU check of the in-process models (both families): for each checkpoint,
//! load it on the CPU (f32) and on a CUDA device (f32 and bf16), caption the
//! same 8-frame chunk, and print load time, prefill time, decode speed and
//! the parity of the first logits against the CPU build. Needs a build with
//! the `cuda` feature (`pipelines/gpu-check.sh models`); a CPU-only build
//! runs the CPU side and exits 2 (no GPU).
//!
//! ```text
//! model_gpu_check [--device N] [--dir CHECKPOINT]... [--out FILE] [--cpu-only]
//! ```
//!
//! Default checkpoints (next to the binary in `models/`, else the
//! repository's): the tiny Qwen2.5-VL, the tiny Qwen3-VL, its Cosmos3-layout
//! and FP8 copies. Bounds: f32 on the GPU within 1e-3 of the CPU's first
//! logits and the same greedy tokens; bf16 is reported (its rounding is
//! the checkpoint's own precision), failing only when its first logits are
//! off by more than 5 % of their range.
//!
//! Exit status: 0 within bounds, 1 a comparison failed, 2 no usable GPU.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use gstvsssummarize::backend::cosmos::engine::{Engine, Request, Video};
use gstvsssummarize::backend::cosmos::sampling::SampleParams;
use gstvsssummarize::frames::RgbImage;

struct Args {
    device: usize,
    dirs: Vec<PathBuf>,
    out: Option<String>,
    cpu_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        device: 0,
        dirs: Vec::new(),
        out: None,
        cpu_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--device" => a.device = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--dir" => a.dirs.extend(it.next().map(PathBuf::from)),
            "--out" => a.out = it.next(),
            "--cpu-only" => a.cpu_only = true,
            _ => {
                eprintln!("usage: model_gpu_check [--device N] [--dir CHECKPOINT]... [--out FILE] [--cpu-only]");
                std::process::exit(64);
            }
        }
    }
    if a.dirs.is_empty() {
        let exe_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("models")));
        let base = match exe_dir {
            Some(d) if d.is_dir() => d,
            _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests"),
        };
        for d in [
            "qwen/tiny",
            "qwen3/tiny",
            "qwen3/tiny-cosmos3",
            "qwen3/tiny-fp8-channel",
        ] {
            a.dirs.push(base.join(d));
        }
    }
    a
}

/// Eight 224×224 frames, 0.5 s apart: gradients that move.
fn chunk() -> (Vec<RgbImage>, Vec<f64>) {
    let frames = (0..8u32)
        .map(|t| {
            let mut data = Vec::with_capacity(224 * 224 * 3);
            for y in 0..224u32 {
                for x in 0..224u32 {
                    data.extend([
                        ((x + 9 * t) % 256) as u8,
                        ((y * 2 + t) % 256) as u8,
                        ((x ^ y) % 256) as u8,
                    ]);
                }
            }
            RgbImage {
                width: 224,
                height: 224,
                data,
            }
        })
        .collect();
    (frames, (0..8).map(|i| f64::from(i) * 0.5).collect())
}

struct Run {
    load_s: f64,
    prefill_s: f64,
    decode_tok_s: f64,
    logits: Vec<f32>,
    tokens: Vec<u32>,
    prompt_tokens: usize,
}

const NEW_TOKENS: usize = 16;

fn run(dir: &std::path::Path, dev: &Device, dtype: DType) -> Result<Run, String> {
    let t = Instant::now();
    let mut e = Engine::load_as(dir, dev, Some(dtype)).map_err(|e| e.to_string())?;
    let load_s = t.elapsed().as_secs_f64();
    let (frames, times) = chunk();
    let params = SampleParams {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
        repetition_penalty: 1.0,
        seed: 0,
        max_tokens: NEW_TOKENS,
        no_repeat_ngram_size: 0,
    };
    let req = Request {
        video: Video::Frames(&frames),
        times: &times,
        prompt: "Describe the video.",
        system: None,
        params,
        cancelled: &|| false,
    };
    // Warm-up (kernel compilation, allocator), then timed.
    let p = e.prepare(&req).map_err(|e| e.to_string())?;
    e.first_logits(&p).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let p = e.prepare(&req).map_err(|e| e.to_string())?;
    let logits = e.first_logits(&p).map_err(|e| e.to_string())?;
    let prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let out = e.generate(&req).map_err(|e| e.to_string())?;
    let total = t.elapsed().as_secs_f64();
    // generate = prefill + decode: the decode share is what is left.
    let decode_s = (total - prefill_s).max(1e-9);
    Ok(Run {
        load_s,
        prefill_s,
        decode_tok_s: out.output_tokens.max(1) as f64 / decode_s,
        logits,
        tokens: out.tokens,
        prompt_tokens: p.ids.len(),
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() {
    let a = args();
    let mut report = String::from("| checkpoint | run | load s | prefill s | decode tok/s | first logits max diff vs CPU | tokens equal |\n|---|---|---|---|---|---|---|\n");
    let mut failed = false;
    let gpu = if a.cpu_only {
        None
    } else {
        match Device::new_cuda(a.device) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("model-gpu-check: no CUDA device {}: {e}", a.device);
                None
            }
        }
    };
    for dir in &a.dirs {
        let name = dir.display().to_string();
        let cpu = match run(dir, &Device::Cpu, DType::F32) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{name}: CPU run failed: {e}");
                failed = true;
                continue;
            }
        };
        report.push_str(&format!(
            "| {name} | CPU f32 ({} prompt tokens) | {:.2} | {:.3} | {:.1} | – | – |\n",
            cpu.prompt_tokens, cpu.load_s, cpu.prefill_s, cpu.decode_tok_s
        ));
        let Some(dev) = &gpu else { continue };
        for dt in [DType::F32, DType::BF16] {
            match run(dir, dev, dt) {
                Ok(g) => {
                    let d = max_diff(&g.logits, &cpu.logits);
                    let range = cpu.logits.iter().fold(0f32, |m, x| m.max(x.abs()));
                    let same = g.tokens == cpu.tokens;
                    let ok = if dt == DType::F32 {
                        d <= 1e-3 && same
                    } else {
                        d <= 0.05 * range.max(1.0)
                    };
                    failed |= !ok;
                    report.push_str(&format!(
                        "| {name} | cuda:{} {dt:?}{} | {:.2} | {:.3} | {:.1} | {d:.2e} | {same} |\n",
                        a.device,
                        if ok { "" } else { " FAILED" },
                        g.load_s,
                        g.prefill_s,
                        g.decode_tok_s
                    ));
                }
                Err(e) => {
                    eprintln!("{name}: cuda {dt:?} failed: {e}");
                    failed = true;
                }
            }
        }
    }
    print!("{report}");
    if let Some(f) = &a.out {
        if let Err(e) = std::fs::File::create(f).and_then(|mut h| h.write_all(report.as_bytes())) {
            eprintln!("model-gpu-check: cannot write {f}: {e}");
        }
    }
    let code = if failed {
        1
    } else if gpu.is_none() {
        2
    } else {
        0
    };
    std::process::exit(code);
}
