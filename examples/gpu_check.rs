// SPDX-License-Identifier: MPL-2.0
//! GPU check: runs the frame kernels on a real GPU against the CPU path and
//! times both. Needs a CUDA driver and NVRTC (`libnvrtc.so.12`, shipped
//! beside the binary by `pipelines/gpu-check.sh bundle`); no Rust toolchain,
//! no GStreamer (the binary does not link it).
//!
//! ```text
//! gpu_check [--device N] [--seconds S] [--out FILE] [--cpu-only]
//! ```
//!
//! 1. Correctness: every pixel format, odd sizes, padded strides, all
//!    colorimetries, conversion only and four resizes (bound: ±1 level), and
//!    five chunks → Qwen2.5-VL `pixel_values` (bound: 2 levels of the
//!    bicubic output), each run twice with device memory poisoned to 0x00 and
//!    0xFF so unwritten outputs show.
//! 2. Speed: 1080p NV12 → 448×448 RGB, → 448×448 JPEG (RGB on the GPU, JPEG
//!    on the CPU) and → `pixel_values` of 8-frame chunks, frames/s on the
//!    GPU (upload and download included) and on one CPU core, as a ratio.
//!
//! Exit status: 0 all within bounds, 1 a comparison failed, 2 no usable GPU.

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use gstvsssummarize::frames::{self, PixelFormat, RawFrame};
use gstvsssummarize::prep::cuda::{self, check, plan, CudaExec};
use gstvsssummarize::prep::qwen::VisionParams;
use gstvsssummarize::prep::FramePrep;

struct Args {
    device: usize,
    seconds: f64,
    out: Option<String>,
    cpu_only: bool,
}

fn args() -> Args {
    let mut a = Args {
        device: 0,
        seconds: 2.0,
        out: None,
        cpu_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--device" => a.device = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(2.0),
            "--out" => a.out = it.next(),
            "--cpu-only" => a.cpu_only = true,
            _ => {
                eprintln!("usage: gpu_check [--device N] [--seconds S] [--out FILE] [--cpu-only]");
                std::process::exit(64);
            }
        }
    }
    a
}

/// Median seconds per call of `f`, over at least `budget` of calls (after
/// two warm-up calls).
fn time<F: FnMut()>(budget: f64, mut f: F) -> f64 {
    f();
    f();
    let mut v = Vec::new();
    let start = Instant::now();
    while v.len() < 5 || (start.elapsed().as_secs_f64() < budget && v.len() < 2000) {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let mut report = String::new();
    let mut say = |s: String| {
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let frame = check::random_frame(PixelFormat::Nv12, 1920, 1080, 0, 2);
    let chunk: Vec<RawFrame> = (0..8)
        .map(|i| check::random_frame(PixelFormat::Nv12, 1920, 1080, 0, 40 + i))
        .collect();
    let p = VisionParams::default();

    let exec = if a.cpu_only {
        None
    } else {
        match cuda::open(a.device) {
            Ok(d) => {
                say(format!(
                    "GPU {}: {} (compute capability {}.{}, kernels compiled by NVRTC as {}); host: {threads} CPU threads",
                    d.ordinal, d.card, d.compute_capability.0, d.compute_capability.1, d.arch
                ));
                match CudaExec::new(d) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        eprintln!("cannot start on the GPU: {e}");
                        std::process::exit(2);
                    }
                }
            }
            Err(e) => {
                eprintln!("no usable GPU {}: {e}", a.device);
                std::process::exit(2);
            }
        }
    };

    let mut failed = 0;
    let mut exec = exec;
    if let Some(e) = exec.as_mut() {
        say("\n## GPU vs CPU path (max |difference|; bound in brackets)\n".into());
        say("| case | max diff | values differing | result |".into());
        say("|---|---|---|---|".into());
        let mut outcomes = Vec::new();
        for (f, w, h) in check::rgb_cases() {
            outcomes.push(check::compare_rgb(e, &f, w, h));
        }
        let small = VisionParams {
            max_pixels: 64 * 28 * 28,
            ..Default::default()
        };
        for (i, (fs, pw, ph)) in check::pixel_cases().into_iter().enumerate() {
            let params = if i % 2 == 0 { &p } else { &small };
            outcomes.push(check::compare_pixels(e, &fs, pw, ph, params));
        }
        for o in &outcomes {
            failed += usize::from(!o.ok());
            say(format!(
                "| {} | {:.3e} [{:.3e}] | {} of {} | {} |",
                o.case,
                o.max_diff,
                o.bound,
                o.n_diff,
                o.n,
                if o.ok() { "ok" } else { "FAIL" }
            ));
        }
        say(format!(
            "\n{} of {} cases within bounds",
            outcomes.len() - failed,
            outcomes.len()
        ));
        e.clear_poison(); // time without filling allocations
        e.synchronize().ok();
    }

    say(format!(
        "\n## Speed: 1080p NV12 frames, median of at least {} s per case (one CPU thread for the CPU path)\n",
        a.seconds
    ));
    say("| conversion | CPU frames/s | GPU frames/s | GPU / CPU |".into());
    say("|---|---|---|---|".into());
    let cpu_rgb = time(a.seconds, || {
        black_box(frames::prepare_rgb(&frame, 448, 448).unwrap());
    });
    let cpu_jpeg = time(a.seconds, || {
        black_box(frames::prepare_jpeg(&frame, 448, 448, 85).unwrap());
    });
    let cpu_px = time(a.seconds, || {
        black_box(FramePrep::Cpu.pixel_values(&chunk, 0, 0, &p).unwrap());
    }) / chunk.len() as f64;
    let rgb448 = frames::prepare_rgb(&frame, 448, 448).unwrap();
    let jpeg_only = time(a.seconds, || {
        black_box(frames::encode_jpeg(&rgb448, 85).unwrap());
    });
    let mut row = |name: &str, cpu: f64, gpu: Option<f64>| {
        let g = gpu.map_or("-".into(), |g| format!("{:.0}", 1.0 / g));
        let r = gpu.map_or("-".into(), |g| format!("{:.1}×", cpu / g));
        say(format!("| {name} | {:.0} | {g} | {r} |", 1.0 / cpu));
    };
    match exec.as_mut() {
        Some(e) => {
            let g_rgb = time(a.seconds, || {
                black_box(plan::prepare_rgb(e, &frame, 448, 448).unwrap());
            });
            let g_jpeg = time(a.seconds, || {
                let rgb = plan::prepare_rgb(e, &frame, 448, 448).unwrap();
                black_box(frames::encode_jpeg(&rgb, 85).unwrap());
            });
            let g_px = time(a.seconds, || {
                black_box(plan::pixel_values_host(e, &chunk, 0, 0, &p).unwrap());
            }) / chunk.len() as f64;
            let g_px_dev = time(a.seconds, || {
                let d = plan::pixel_values(e, &chunk, 0, 0, &p).unwrap();
                e.synchronize().unwrap();
                black_box(d.rows);
            }) / chunk.len() as f64;
            row("→ 448×448 RGB (on the host)", cpu_rgb, Some(g_rgb));
            row(
                "→ 448×448 JPEG q85 (JPEG on the CPU)",
                cpu_jpeg,
                Some(g_jpeg),
            );
            row(
                "→ Qwen pixel_values, 8-frame chunks (on the host)",
                cpu_px,
                Some(g_px),
            );
            row(
                "→ Qwen pixel_values, left on the GPU (what candle uses)",
                cpu_px,
                Some(g_px_dev),
            );
        }
        None => {
            row("→ 448×448 RGB", cpu_rgb, None);
            row("→ 448×448 JPEG q85", cpu_jpeg, None);
            row("→ Qwen pixel_values, 8-frame chunks", cpu_px, None);
        }
    }
    say(format!(
        "\nJPEG encoding of one 448×448 frame on the CPU alone: {:.2} ms ({:.0} frames/s)",
        jpeg_only * 1e3,
        1.0 / jpeg_only
    ));
    if let Some(path) = a.out {
        let mut f = std::fs::File::create(&path).expect("--out file");
        f.write_all(report.as_bytes()).unwrap();
    }
    if failed > 0 {
        eprintln!("{failed} comparison(s) outside their bounds");
        std::process::exit(1);
    }
}
