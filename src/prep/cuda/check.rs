// SPDX-License-Identifier: MPL-2.0
//! GPU-versus-CPU comparison, shared by the kernel emulation test
//! (`tests/gpu_emulated.rs`, the kernels compiled for the host CPU) and the
//! GPU check binary (`examples/gpu_check.rs`, the kernels on a real GPU).
//!
//! Every case runs twice on the executor, with device memory poisoned to
//! 0x00 and to 0xFF, so an output the kernels never write cannot match the
//! CPU result by luck.

use std::fmt::Display;

use super::plan::{self, Exec};
use super::GpuError;
use crate::frames::{Colorimetry, Matrix, PixelFormat, RawFrame};
use crate::prep::cpu;
use crate::prep::qwen::VisionParams;

/// Deterministic noise (xorshift32).
pub struct Rng(pub u32);

impl Rng {
    pub fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// Smooth-ish content with noise, so resizes see both edges and flats.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| ((i * 7 / 5) as u32 % 200 + self.next_u32() % 56) as u8)
            .collect()
    }
}

/// A random frame of `format`, `w` × `h`, with every stride padded by
/// `pad` bytes (filled with noise too).
pub fn random_frame(format: PixelFormat, w: u32, h: u32, pad: usize, seed: u32) -> RawFrame {
    let mut rng = Rng(seed.max(1));
    let n = format.n_planes();
    let strides: Vec<usize> = (0..n).map(|i| format.plane_row_bytes(i, w) + pad).collect();
    let planes = (0..n)
        .map(|i| rng.bytes(strides[i] * format.plane_rows(i, h)))
        .collect();
    let colorimetry = Colorimetry {
        matrix: [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020][seed as usize % 3],
        full_range: seed % 2 == 1,
    };
    RawFrame {
        format,
        width: w,
        height: h,
        planes,
        strides,
        colorimetry,
    }
}

/// The result of one comparison.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: String,
    /// Largest |GPU − CPU| (levels for RGB, value units for pixel_values).
    pub max_diff: f64,
    /// How many values differ at all.
    pub n_diff: usize,
    pub n: usize,
    /// The bound the issue sets for this case.
    pub bound: f64,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.max_diff <= self.bound
    }
}

/// An executor whose fresh allocations can be filled with a poison byte.
pub trait Poison: Exec {
    fn set_poison(&mut self, byte: u8);
}

fn diff_u8(a: &[u8], b: &[u8]) -> (f64, usize) {
    if a.len() != b.len() {
        return (f64::INFINITY, a.len().max(b.len()));
    }
    let mut m = 0u8;
    let mut n = 0;
    for (x, y) in a.iter().zip(b) {
        let d = x.abs_diff(*y);
        m = m.max(d);
        n += usize::from(d != 0);
    }
    (f64::from(m), n)
}

fn diff_f32(a: &[f32], b: &[f32]) -> (f64, usize) {
    if a.len() != b.len() {
        return (f64::INFINITY, a.len().max(b.len()));
    }
    let mut m = 0f64;
    let mut n = 0;
    for (x, y) in a.iter().zip(b) {
        let d = f64::from((x - y).abs());
        m = if d.is_nan() { f64::INFINITY } else { m.max(d) };
        n += usize::from(x != y);
    }
    (m, n)
}

/// Frame → RGB cases: every format, several sizes (odd ones, padded
/// strides), native size (conversion only), downscale, upscale and
/// one-axis resizes.
pub fn rgb_cases() -> Vec<(RawFrame, u32, u32)> {
    let mut v = Vec::new();
    let sizes = [(1920u32, 1080u32), (641, 361), (97, 55), (33, 17)];
    for (i, f) in PixelFormat::ALL.into_iter().enumerate() {
        let (w, h) = sizes[i % sizes.len()];
        let frame = random_frame(f, w, h, 8 * (i % 3), 17 + i as u32);
        for (rw, rh) in [
            (0, 0),
            (448, 448),
            (w * 3 / 2, h * 2),
            (w / 3 + 1, 0),
            (w, h / 2 + 1),
        ] {
            v.push((frame.clone(), rw, rh));
        }
    }
    v
}

/// Compares [`plan::prepare_rgb`] on `e` with the CPU path.
pub fn compare_rgb<E: Poison>(e: &mut E, f: &RawFrame, rw: u32, rh: u32) -> Outcome {
    let case = format!(
        "{} {}x{} -> {rw}x{rh} RGB ({:?} {})",
        f.format,
        f.width,
        f.height,
        f.colorimetry.matrix,
        if f.colorimetry.full_range {
            "full"
        } else {
            "limited"
        }
    );
    let want = match cpu::rgb(f, rw, rh) {
        Ok(w) => w,
        Err(err) => return failed(case, err),
    };
    let mut worst = (0.0, 0);
    for poison in [0x00, 0xFF] {
        e.set_poison(poison);
        match plan::prepare_rgb(e, f, rw, rh) {
            Ok(got) if (got.width, got.height) == (want.width, want.height) => {
                let d = diff_u8(&got.data, &want.data);
                worst = if d.0 > worst.0 {
                    d
                } else {
                    (worst.0, worst.1.max(d.1))
                };
            }
            Ok(got) => return failed(case, format!("size {}x{}", got.width, got.height)),
            Err(err) => return failed(case, err),
        }
    }
    Outcome {
        case,
        max_diff: worst.0,
        n_diff: worst.1,
        n: want.data.len(),
        bound: 1.0,
    }
}

fn failed(case: String, err: impl Display) -> Outcome {
    Outcome {
        case: format!("{case}: {err}"),
        max_diff: f64::INFINITY,
        n_diff: 0,
        n: 0,
        bound: 0.0,
    }
}

/// Chunk → pixel_values cases: odd and even frame counts, NV12 and I420,
/// with and without a bilinear pre-scale, tall and wide frames, and a
/// chunk whose frame size changes.
pub fn pixel_cases() -> Vec<(Vec<RawFrame>, u32, u32)> {
    let chunk = |f: PixelFormat, w, h, n: u32, seed: u32| -> Vec<RawFrame> {
        (0..n).map(|i| random_frame(f, w, h, 0, seed + i)).collect()
    };
    vec![
        (chunk(PixelFormat::Nv12, 1920, 1080, 4, 3), 0, 0),
        (chunk(PixelFormat::I420, 640, 360, 3, 5), 0, 0),
        (chunk(PixelFormat::Nv12, 1280, 720, 2, 7), 448, 0),
        (chunk(PixelFormat::Bgrx, 200, 500, 1, 11), 0, 0),
        (chunk(PixelFormat::Nv21, 56, 28, 2, 13), 0, 0),
        // A size change inside a chunk: every frame gets the first's size.
        (
            vec![
                random_frame(PixelFormat::Nv12, 640, 360, 0, 21),
                random_frame(PixelFormat::Nv12, 320, 240, 0, 22),
            ],
            0,
            0,
        ),
    ]
}

/// Compares [`plan::pixel_values_host`] on `e` with the CPU path
/// (`preprocess_video(prepare_rgb(..))`). The bound is 2 levels of the
/// bicubic output, in pixel_values units (2 / (255·std)).
pub fn compare_pixels<E: Poison>(
    e: &mut E,
    frames: &[RawFrame],
    pre_w: u32,
    pre_h: u32,
    p: &VisionParams,
) -> Outcome {
    let f = &frames[0];
    let case = format!(
        "{} × {} {}x{} (pre-scale {pre_w}x{pre_h}) -> pixel_values",
        frames.len(),
        f.format,
        f.width,
        f.height
    );
    let want = match cpu::pixel_values(frames, pre_w, pre_h, p) {
        Ok(w) => w,
        Err(err) => return failed(case, err),
    };
    let mut worst = (0.0, 0);
    for poison in [0x00, 0xFF] {
        e.set_poison(poison);
        match plan::pixel_values_host(e, frames, pre_w, pre_h, p) {
            Ok(got) if got.grid_thw == want.grid_thw && got.cols == want.cols => {
                let d = diff_f32(&got.data, &want.data);
                worst = if d.0 > worst.0 {
                    d
                } else {
                    (worst.0, worst.1.max(d.1))
                };
            }
            Ok(got) => {
                return failed(
                    case,
                    format!("grid {:?} vs {:?}", got.grid_thw, want.grid_thw),
                )
            }
            Err(err) => return failed(case, err),
        }
    }
    let min_std = p.std.iter().fold(f32::INFINITY, |m, s| m.min(*s));
    Outcome {
        case: format!("{case} {:?}", want.grid_thw),
        max_diff: worst.0,
        n_diff: worst.1,
        n: want.data.len(),
        bound: f64::from(2.0 / (255.0 * min_std)),
    }
}

/// A few milliseconds of the checks above on tiny inputs (three frame → RGB
/// cases and one chunk → `pixel_values`): what the element runs when it
/// opens a GPU, before trusting it with frames.
pub fn self_test<E: Poison>(e: &mut E) -> Result<(), GpuError> {
    let mut outcomes = Vec::new();
    for (i, (f, w, h, rw, rh)) in [
        (PixelFormat::Nv12, 97, 55, 33, 17),
        (PixelFormat::I420, 64, 48, 0, 0),
        (PixelFormat::Bgrx, 40, 30, 80, 61),
    ]
    .into_iter()
    .enumerate()
    {
        let frame = random_frame(f, w, h, 4, 7 + i as u32);
        outcomes.push(compare_rgb(e, &frame, rw, rh));
    }
    let chunk: Vec<RawFrame> = (0..3)
        .map(|i| random_frame(PixelFormat::Nv21, 70, 42, 0, 30 + i))
        .collect();
    outcomes.push(compare_pixels(e, &chunk, 0, 0, &VisionParams::default()));
    match outcomes.iter().find(|o| !o.ok()) {
        None => Ok(()),
        Some(o) => Err(GpuError::SelfTest {
            case: o.case.clone(),
            max_diff: o.max_diff,
            bound: o.bound,
        }),
    }
}
