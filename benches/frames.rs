//! Per-frame preparation cost: colour conversion, resize and JPEG encoding of
//! a 1080p decoder frame.
//!
//! Run with `cargo bench --bench frames`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gstvsssummarize::frames::{
    encode_jpeg, prepare_jpeg, prepare_rgb, to_rgb, Colorimetry, Matrix, PixelFormat, RawFrame,
};

const W: u32 = 1920;
const H: u32 = 1080;

/// Deterministic noise in `0..amplitude` (xorshift32).
fn noise(seed: &mut u32, amplitude: u32) -> u32 {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;
    (x >> 8) % amplitude
}

/// Synthetic 1920x1080 BT.709 limited-range content: diagonal luma gradient
/// and horizontal/vertical chroma gradients, all with noise so the JPEG
/// encoder has real detail to work on. Returns tight (Y, U, V) planes.
fn synthetic_yuv() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (w, h) = (W as usize, H as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut seed = 0x9E37_79B9u32;
    let mut y = Vec::with_capacity(w * h);
    for r in 0..h {
        for c in 0..w {
            let g = 16 + ((r + c) * 219 / (w + h)) as u32;
            y.push((g + noise(&mut seed, 24)).min(235) as u8);
        }
    }
    let mut u = Vec::with_capacity(cw * ch);
    let mut v = Vec::with_capacity(cw * ch);
    for r in 0..ch {
        for c in 0..cw {
            u.push((16 + (c * 224 / cw) as u32 + noise(&mut seed, 8)).min(240) as u8);
            v.push((16 + (r * 224 / ch) as u32 + noise(&mut seed, 8)).min(240) as u8);
        }
    }
    (y, u, v)
}

fn frames() -> (RawFrame, RawFrame) {
    let (y, u, v) = synthetic_yuv();
    let cw = (W as usize).div_ceil(2);
    let colorimetry = Colorimetry {
        matrix: Matrix::Bt709,
        full_range: false,
    };
    let uv: Vec<u8> = u.iter().zip(&v).flat_map(|(&u, &v)| [u, v]).collect();
    let nv12 = RawFrame {
        format: PixelFormat::Nv12,
        width: W,
        height: H,
        planes: vec![y.clone(), uv],
        strides: vec![W as usize, 2 * cw],
        colorimetry,
    };
    let i420 = RawFrame {
        format: PixelFormat::I420,
        width: W,
        height: H,
        planes: vec![y, u, v],
        strides: vec![W as usize, cw, cw],
        colorimetry,
    };
    (i420, nv12)
}

fn bench_frames(c: &mut Criterion) {
    let (i420, nv12) = frames();
    let rgb = to_rgb(&i420).expect("valid frame");

    let mut g = c.benchmark_group("frames_1080p");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));

    g.bench_function("to_rgb_i420", |b| {
        b.iter(|| to_rgb(black_box(&i420)).unwrap())
    });
    g.bench_function("to_rgb_nv12", |b| {
        b.iter(|| to_rgb(black_box(&nv12)).unwrap())
    });
    g.bench_function("prepare_rgb_i420_640w", |b| {
        b.iter(|| prepare_rgb(black_box(&i420), 640, 0).unwrap())
    });
    g.bench_function("encode_jpeg_native_q85", |b| {
        b.iter(|| encode_jpeg(black_box(&rgb), 85).unwrap())
    });
    g.bench_function("prepare_jpeg_i420_640w_q85", |b| {
        b.iter(|| prepare_jpeg(black_box(&i420), 640, 0, 85).unwrap())
    });
    g.bench_function("prepare_jpeg_i420_native_q85", |b| {
        b.iter(|| prepare_jpeg(black_box(&i420), 0, 0, 85).unwrap())
    });
    g.bench_function("prepare_jpeg_nv12_640w_q85", |b| {
        b.iter(|| prepare_jpeg(black_box(&nv12), 640, 0, 85).unwrap())
    });
    g.bench_function("prepare_jpeg_nv12_native_q85", |b| {
        b.iter(|| prepare_jpeg(black_box(&nv12), 0, 0, 85).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_frames);
criterion_main!(benches);
