// SPDX-License-Identifier: MPL-2.0
//! The Qwen2.5-VL video preprocessing against Hugging Face's
//! `Qwen2VLVideoProcessor` (transformers 5.24, `cap_pixels_per_frame=True`):
//! reference outputs in tests/qwen/preprocess_fixture.safetensors, made by
//! tests/qwen/make_preprocess_fixture.py from the same deterministic frames
//! this test regenerates. No Python needed here.

use gstvsssummarize::backend::cosmos::preprocess::{
    patchify, preprocess_video, resize_bicubic_aa, target_size, VisionParams,
};
use gstvsssummarize::frames::RgbImage;
use safetensors::SafeTensors;

mod common;
use common::qwen::{f32s, i64s, pattern};

const RESIZED_ROW_STRIDE: usize = 6;
const PV_ROW_STRIDE: usize = 17;

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/qwen/preprocess_fixture.safetensors"
    ))
    .expect("fixture present")
}

#[test]
fn matches_hugging_face_processor() {
    let bytes = fixture();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let p = VisionParams::default();
    for case in ["odd_upscale", "downscale_720p", "no_resize", "tall"] {
        let s = i64s(&st, &format!("{case}.shape"));
        let (n, h, w, rh, rw, rows, cols) = (
            s[0] as u64,
            s[1] as u32,
            s[2] as u32,
            s[3] as u32,
            s[4] as u32,
            s[5] as usize,
            s[6] as usize,
        );
        let frames: Vec<RgbImage> = (0..n).map(|t| pattern(t, h, w)).collect();

        // Budget and smart_resize.
        assert_eq!(target_size(&frames, &p).unwrap(), (rh, rw), "{case}");

        // Resize: every stored pixel within ±2 levels (torch's uint8 path).
        let want = st.tensor(&format!("{case}.resized")).unwrap();
        let want = want.data();
        let resized: Vec<RgbImage> = frames
            .iter()
            .map(|f| {
                if (f.height, f.width) == (rh, rw) {
                    f.clone()
                } else {
                    resize_bicubic_aa(f, rw, rh)
                }
            })
            .collect();
        let row_bytes = rw as usize * 3;
        let kept_rows = (rh as usize).div_ceil(RESIZED_ROW_STRIDE);
        assert_eq!(want.len(), n as usize * kept_rows * row_bytes, "{case}");
        let (mut worst, mut differ) = (0i32, 0usize);
        for (t, img) in resized.iter().enumerate() {
            for (k, y) in (0..rh as usize).step_by(RESIZED_ROW_STRIDE).enumerate() {
                let ours = &img.data[y * row_bytes..(y + 1) * row_bytes];
                let off = (t * kept_rows + k) * row_bytes;
                for (a, b) in ours.iter().zip(&want[off..off + row_bytes]) {
                    let d = (i32::from(*a) - i32::from(*b)).abs();
                    worst = worst.max(d);
                    differ += usize::from(d > 0);
                }
            }
        }
        eprintln!(
            "{case}: {n} frames {w}x{h} -> {rw}x{rh}: max diff {worst}, {differ} of {} values differ",
            want.len()
        );
        assert!(worst <= 2, "{case}: resize differs by {worst} levels");

        // Normalise + patchify from the reference's own resized frames must be
        // exact to float rounding; the whole path within ±2 levels.
        let pv = preprocess_video(&frames, &p).unwrap();
        assert_eq!(
            pv.grid_thw.map(i64::from).to_vec(),
            i64s(&st, &format!("{case}.grid")),
            "{case}"
        );
        assert_eq!((pv.rows, pv.cols), (rows, cols), "{case}");
        let want_pv = f32s(&st, &format!("{case}.pixel_values"));
        // One level in normalised units is 1/(255·std) ≈ 0.0146.
        let level = 1.0 / (255.0 * 0.2613);
        let mut worst_pv = 0f32;
        for (k, r) in (0..rows).step_by(PV_ROW_STRIDE).enumerate() {
            let ours = &pv.data[r * cols..(r + 1) * cols];
            let theirs = &want_pv[k * cols..(k + 1) * cols];
            for (a, b) in ours.iter().zip(theirs) {
                worst_pv = worst_pv.max((a - b).abs());
            }
        }
        assert!(
            worst_pv <= 2.0 * level + 1e-4,
            "{case}: pixel_values differ by {worst_pv}"
        );
        eprintln!("{case}: pixel_values max abs diff {worst_pv:e}");
        if worst == 0 {
            // Identical resized pixels: normalisation (a division by 255·std,
            // as torchvision's normalize; a product by the inverse was off
            // by up to 2.4e-7) and patch order are exact.
            assert_eq!(worst_pv, 0.0, "{case}");
        }
        if rh == h && rw == w {
            // No resize at all: exact up to f32 rounding.
            let exact = patchify(&frames, &p).unwrap();
            for (k, r) in (0..rows).step_by(PV_ROW_STRIDE).enumerate() {
                for (a, b) in exact.data[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(&want_pv[k * cols..(k + 1) * cols])
                {
                    assert!((a - b).abs() <= 1e-5, "{case}: {a} vs {b}");
                }
            }
        }
    }
}
