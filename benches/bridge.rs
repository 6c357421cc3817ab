//! Per-chunk overhead of the Python bridge of `backend=custom`: 8 frames of
//! 1080p I420, from the chunk being handed to the backend to `generate()`
//! being entered, and from its return to the result being back in the
//! element, with a model whose `generate()` returns at once.
//!
//! The baseline, measured in the same run, is `prepare`: the in-process
//! I420 → RGB conversion (and JPEG encoding) of the same frames, which every
//! backend pays. Reported: medians in ms and overhead / prepare.
//!
//! Run with `cargo bench --bench bridge` after `pipelines/setup-python.sh all`
//! (Pythons from VSS_TEST_PYTHON_NUMPY / VSS_TEST_PYTHON_TORCH, else
//! target/py/{numpy,torch}). ITER (default 30) calls per case.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gstvsssummarize::backend::custom::manifest::Manifest;
use gstvsssummarize::backend::custom::{BridgeTiming, CustomBackend, CustomOptions};
use gstvsssummarize::backend::{Backend, ChunkJob, FrameOptions};
use gstvsssummarize::frames::{Colorimetry, Matrix, PixelFormat, RawFrame};
use gstvsssummarize::prompt::TimeStyle;
use tokio_util::sync::CancellationToken;

const FRAMES: usize = 8;

fn frame(k: usize, w: u32, h: u32) -> RawFrame {
    let (w, h) = (w as usize, h as usize);
    let (cw, ch) = (w / 2, h / 2);
    let mut seed = 0x9E37_79B9u32 ^ k as u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed >> 8) as usize
    };
    let y: Vec<u8> = (0..w * h)
        .map(|i| (16 + ((i % w + i / w + 7 * k) * 219 / (w + h)) + next() % 24).min(235) as u8)
        .collect();
    let u: Vec<u8> = (0..cw * ch)
        .map(|i| (16 + (i % cw) * 224 / cw) as u8)
        .collect();
    let v: Vec<u8> = (0..cw * ch)
        .map(|i| (16 + (i / cw) * 224 / ch) as u8)
        .collect();
    RawFrame {
        format: PixelFormat::I420,
        width: w as u32,
        height: h as u32,
        planes: vec![y, u, v],
        strides: vec![w, cw, cw],
        colorimetry: Colorimetry {
            matrix: Matrix::Bt709,
            full_range: false,
        },
    }
}

fn python(kind: &str) -> Option<String> {
    let p = std::env::var(format!("VSS_TEST_PYTHON_{}", kind.to_uppercase()))
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}/target/py/{kind}/bin/python", env!("CARGO_MANIFEST_DIR")));
    if Path::new(&p).exists() {
        Some(p)
    } else {
        println!("skipped {kind}: no Python at {p} (run pipelines/setup-python.sh all)");
        None
    }
}

fn model_dir(jpeg: bool) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "vss-bridge-bench-{}-{}",
        std::process::id(),
        if jpeg { "jpeg" } else { "raw" }
    ));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("inference.py"),
        "class Inference:\n    def generate(self, prompt, input, configs):\n        return 'ok'\n",
    )
    .unwrap();
    std::fs::write(
        d.join("manifest.yaml"),
        format!("input:\n  number_of_frames: {FRAMES}\n  jpeg_encoded: {jpeg}\n"),
    )
    .unwrap();
    d
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run_case(name: &str, py: &str, jpeg: bool, job: &ChunkJob, iters: usize) {
    let dir = model_dir(jpeg);
    let opts = CustomOptions {
        model_dir: dir.clone(),
        python: py.to_string(),
        manifest: Manifest {
            number_of_frames: Some(FRAMES as u32),
            jpeg_encoded: jpeg,
            resolution: None,
        },
        prompt: "describe".into(),
        configs: Default::default(),
        frames: FrameOptions {
            width: 0,
            height: 0,
            jpeg_quality: 90,
        },
        prep: Default::default(),
        env: vec![],
        call_timeout: Duration::from_secs(120),
        load_timeout: Duration::from_secs(300),
        max_restarts: 0,
        log: Arc::new(|_, _| {}),
    };
    let b = CustomBackend::new(opts).expect("bench model loads");
    let cancel = CancellationToken::new();
    let mut t: Vec<BridgeTiming> = Vec::new();
    for i in 0..iters + 3 {
        b.caption(job, &cancel).expect("caption");
        if i >= 3 {
            t.push(b.last_timing().expect("timing"));
        }
    }
    let ms = |f: fn(&BridgeTiming) -> Duration| {
        median(t.iter().map(|x| f(x).as_secs_f64() * 1e3).collect())
    };
    let prepare = ms(|x| x.prepare);
    let to_entry = ms(|x| x.to_entry);
    let back = ms(|x| x.back);
    let overhead = median(
        t.iter()
            .map(|x| (x.to_entry + x.back).as_secs_f64() * 1e3)
            .collect(),
    );
    println!(
        "{name:<34} {:<18} prepare {prepare:7.2} ms | to generate() {to_entry:7.2} ms | back {back:5.2} ms | bridge overhead {overhead:7.2} ms = {:.2} x prepare",
        b.info().tensor,
        overhead / prepare
    );
    drop(b);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs us
    // without it: then one small smoke run, not a measurement.
    let benching = std::env::args().any(|a| a == "--bench");
    let (iters, w, h) = if benching {
        let iters = std::env::var("ITER")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30);
        (iters, 1920, 1080)
    } else {
        (1, 320, 180)
    };
    let job = ChunkJob {
        chunk_index: 0,
        frames: (0..FRAMES).map(|k| Arc::new(frame(k, w, h))).collect(),
        frame_labels: (0..FRAMES).map(|k| format!("{k}.00")).collect(),
        frame_times: (0..FRAMES).map(|k| k as f64).collect(),
        time_style: TimeStyle::Seconds,
        stream_id: String::new(),
        prompts: None,
    };
    println!(
        "custom-backend bridge, {FRAMES} frames of {w}x{h} I420 per chunk, {iters} calls per case (medians){}",
        if benching { "" } else { " [smoke run under cargo test, not a measurement]" }
    );
    if let Some(py) = python("torch") {
        run_case("raw frames, torch installed", &py, false, &job, iters);
    }
    if let Some(py) = python("numpy") {
        run_case("raw frames, numpy only", &py, false, &job, iters);
        run_case("JPEG (quality 90), numpy only", &py, true, &job, iters);
    }
}
