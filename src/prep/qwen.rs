// SPDX-License-Identifier: MPL-2.0
//! Qwen2.5-VL / Cosmos-Reason1 video preprocessing, identical to Hugging
//! Face's `Qwen2VLVideoProcessor` (transformers 5.x with
//! `cap_pixels_per_frame=True`, i.e. the qwen-vl-utils budget) on uint8
//! frames: per-frame pixel budget, `smart_resize` to multiples of 28,
//! antialiased bicubic resize in two passes with a u8 intermediate (torch's
//! CPU uint8 path), odd frame counts padded with the last frame, CLIP
//! normalisation and the merge-block-major patch order.
//!
//! Plain Rust, no GStreamer and no candle: this is also the CPU reference
//! the GPU kernels are checked against, and the cosmos-reason1 backend's
//! preprocessing (`backend::cosmos::preprocess` names this module).

use crate::frames::RgbImage;

/// fps assumed when a chunk's frame times cannot give one (a single frame).
pub const DEFAULT_FPS: f64 = 2.0;

/// The fps of a clip from its frames' times (seconds): `(n - 1) / (t_last -
/// t_first)`. It is what transformers' processor uses (`sampled_fps` of the
/// video metadata, so `second_per_grid_ts = temporal_patch_size / fps`) when
/// the clip is read from an MP4 whose last frame lasts the mean interval
/// (src/mp4.rs): a container's fps is frames / duration =
/// `n / ((t_last - t_first) · n / (n - 1))`, the same number, even for
/// uneven times (tests/video_decoders.rs checks both against the real
/// processor). A single frame, or times that do not increase, give
/// [`DEFAULT_FPS`].
pub fn clip_fps(times: &[f64]) -> f64 {
    let n = times.len();
    if n >= 2 && times[n - 1] > times[0] {
        (n - 1) as f64 / (times[n - 1] - times[0])
    } else {
        DEFAULT_FPS
    }
}

/// Why a video cannot be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QwenError {
    #[error("empty frame {width}x{height}")]
    EmptyFrame { width: u32, height: u32 },
    #[error("aspect ratio of {width}x{height} is above 200, which Qwen-VL models do not accept")]
    AspectRatio { width: u32, height: u32 },
    #[error("no frames")]
    NoFrames,
    #[error("frame size {width}x{height} is not a multiple of {factor}")]
    NotMultiple {
        width: usize,
        height: usize,
        factor: usize,
    },
    #[error("frames of one video must have the same size")]
    MixedSizes,
}

/// OpenAI CLIP normalisation (`OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

/// The processor's parameters (`preprocessor_config.json`), with
/// `Qwen2VLVideoProcessor`'s defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct VisionParams {
    pub patch_size: u32,
    pub temporal_patch_size: u32,
    pub merge_size: u32,
    /// `size.shortest_edge`: the pixel floor of a frame.
    pub min_pixels: u64,
    /// `size.longest_edge`: the per-frame pixel cap.
    pub max_pixels: u64,
    /// `max_video_tokens`: the total-video budget is 90 % of this many
    /// tokens' worth of pixels.
    pub max_video_tokens: u64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Which processor's size rule applies.
    pub rule: ResizeRule,
}

/// The two processors' size rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResizeRule {
    /// `Qwen2VLVideoProcessor` (Qwen2.5-VL, Cosmos-Reason1): per-frame
    /// [`smart_resize`] under [`VisionParams::frame_max_pixels`].
    #[default]
    Qwen2Vl,
    /// `Qwen3VLVideoProcessor` (Qwen3-VL, Cosmos-Reason2, Cosmos3): the
    /// video-wide [`smart_resize_video`] (frames count in the budget; frames
    /// smaller than the factor are scaled up first) with
    /// `cap_pixels_per_frame`: per frame at most `max_video_tokens` tokens'
    /// worth of pixels or an even share of `size.longest_edge`, at least
    /// 1.05 × `size.shortest_edge`.
    Qwen3Vl,
}

/// Qwen3-VL's normalisation (`image_mean` = `image_std` = 0.5).
pub const HALF: [f32; 3] = [0.5, 0.5, 0.5];

impl Default for VisionParams {
    fn default() -> Self {
        VisionParams {
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 128 * 28 * 28,
            max_pixels: 768 * 28 * 28,
            max_video_tokens: 128_000,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            rule: ResizeRule::Qwen2Vl,
        }
    }
}

impl VisionParams {
    /// Side length the resized frames are multiples of (28).
    pub fn factor(&self) -> u32 {
        self.patch_size * self.merge_size
    }

    /// The per-frame pixel cap for a video of `nframes` frames: the
    /// per-frame cap, bounded by an even share of the total-video budget,
    /// floored at 1.05 × the pixel floor.
    pub fn frame_max_pixels(&self, nframes: usize) -> u64 {
        let f = u64::from(self.factor());
        let total = (self.max_video_tokens as f64 * (f * f) as f64 * 0.9) as u64;
        let share = total * u64::from(self.temporal_patch_size) / (nframes.max(1) as u64);
        self.max_pixels
            .min(share)
            .max((self.min_pixels as f64 * 1.05) as u64)
    }
}

impl VisionParams {
    /// `Qwen3VLVideoProcessor`'s defaults (transformers 5.x): 16-pixel
    /// patches, factor 32, `size` {shortest_edge 128·32², longest_edge
    /// 768·32²}, `max_video_tokens` 768, mean = std = 0.5.
    pub fn qwen3() -> VisionParams {
        VisionParams {
            patch_size: 16,
            temporal_patch_size: 2,
            merge_size: 2,
            min_pixels: 128 * 32 * 32,
            max_pixels: 768 * 32 * 32,
            max_video_tokens: 768,
            mean: HALF,
            std: HALF,
            rule: ResizeRule::Qwen3Vl,
        }
    }

    /// The size (height, width) every frame of a video of `nframes` frames
    /// of `height` × `width` is resized to, by the processor's rule.
    pub fn target_hw(
        &self,
        nframes: usize,
        height: u32,
        width: u32,
    ) -> Result<(u32, u32), QwenError> {
        match self.rule {
            ResizeRule::Qwen2Vl => smart_resize(
                height,
                width,
                self.factor(),
                self.min_pixels,
                self.frame_max_pixels(nframes),
            ),
            ResizeRule::Qwen3Vl => {
                // The processor refuses fewer frames than a temporal patch;
                // a single frame is sized as the pair it is padded to.
                let n = nframes.max(self.temporal_patch_size as usize).max(1) as u64;
                let f = u64::from(self.factor());
                let frame_cap = self.max_video_tokens.saturating_mul(f * f);
                let per_frame = frame_cap
                    .min(self.max_pixels / n)
                    .max((self.min_pixels as f64 * 1.05) as u64);
                smart_resize_video(
                    n,
                    height,
                    width,
                    self.temporal_patch_size,
                    self.factor(),
                    self.min_pixels,
                    per_frame.saturating_mul(n),
                )
            }
        }
    }
}

/// Qwen3-VL's `smart_resize`: the budget covers the whole video (`t_bar`
/// frames rounded to the temporal patch), and a side below `factor` first
/// scales the frame up.
pub fn smart_resize_video(
    nframes: u64,
    height: u32,
    width: u32,
    temporal_factor: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32), QwenError> {
    if height == 0 || width == 0 {
        return Err(QwenError::EmptyFrame { width, height });
    }
    let f = f64::from(factor);
    let (mut h, mut w) = (f64::from(height), f64::from(width));
    if h < f || w < f {
        let scale = (f / h).max(f / w);
        h = (h * scale).trunc();
        w = (w * scale).trunc();
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(QwenError::AspectRatio { width, height });
    }
    let n = nframes as f64;
    let tf = f64::from(temporal_factor.max(1));
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    let tb = (n / tf).round_ties_even() * tf;
    if tb * hb * wb > max_pixels as f64 {
        let beta = (n * h * w / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if tb * hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (n * h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as u32, wb as u32))
}

/// `smart_resize`: the size (height, width) a frame is resized to.
pub fn smart_resize(
    height: u32,
    width: u32,
    factor: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32), QwenError> {
    if height == 0 || width == 0 {
        return Err(QwenError::EmptyFrame { width, height });
    }
    let (h, w, f) = (f64::from(height), f64::from(width), f64::from(factor));
    if h.max(w) / h.min(w) > 200.0 {
        return Err(QwenError::AspectRatio { width, height });
    }
    // Python's round(): ties to even.
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    if hb * wb > max_pixels as f64 {
        let beta = (h * w / max_pixels as f64).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if hb * wb < min_pixels as f64 {
        let beta = (min_pixels as f64 / (h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as u32, wb as u32))
}

/// Keys' cubic with a = -0.5 (PIL's and torch's antialiased bicubic).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Filter taps of one output position: first input index and int16 weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Antialiased bicubic weights for `input` → `output` samples, quantised to
/// int16 fixed point the way torch's uint8 path does (`precision` bits, the
/// most that keep the largest weight below 2^15).
fn taps(input: usize, output: usize) -> (Vec<Taps>, u32) {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut float = Vec::with_capacity(output);
    let mut wmax = 0.0f64;
    for i in 0..output {
        let center = (i as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
        let xmax = ((center + support + 0.5).trunc() as i64).min(input as i64) as usize;
        let mut w: Vec<f64> = (xmin..xmax)
            .map(|j| cubic((j as f64 - center + 0.5) / filterscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|x| *x /= total);
        }
        wmax = w.iter().fold(wmax, |m, x| m.max(*x));
        float.push((xmin, w));
    }
    let mut precision = 0u32;
    while precision < 22 && wmax * f64::from(1u32 << (precision + 1)) < f64::from(1u32 << 15) {
        precision += 1;
    }
    let one = f64::from(1u32 << precision);
    let taps = float
        .into_iter()
        .map(|(start, w)| Taps {
            start,
            weights: w
                .iter()
                .map(|x| {
                    let v = x * one;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }).trunc() as i32
                })
                .collect(),
        })
        .collect();
    (taps, precision)
}

/// The antialiased bicubic taps for `input` → `output` samples as (first
/// input index, int16 weights) per output, and their precision (for the GPU
/// kernels, which apply exactly these).
pub fn bicubic_taps(input: usize, output: usize) -> (Vec<(usize, Vec<i32>)>, u32) {
    let (t, p) = taps(input, output);
    (t.into_iter().map(|t| (t.start, t.weights)).collect(), p)
}

fn clamp_u8(acc: i64, precision: u32) -> u8 {
    let round = if precision > 0 {
        1i64 << (precision - 1)
    } else {
        0
    };
    ((acc + round) >> precision).clamp(0, 255) as u8
}

/// Antialiased bicubic resize of packed RGB to `w` × `h`: a horizontal pass
/// rounded to u8, then a vertical pass (torch's CPU uint8 path; a pass whose
/// size does not change is skipped, as torch does).
pub fn resize_bicubic_aa(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let (ow, oh) = (w as usize, h as usize);
    let mut cur = img.data.clone();
    let mut cw = iw;
    if ow != iw {
        let (t, p) = taps(iw, ow);
        let mut out = vec![0u8; ow * ih * 3];
        for y in 0..ih {
            let row = &cur[y * iw * 3..(y + 1) * iw * 3];
            for (x, tp) in t.iter().enumerate() {
                for c in 0..3 {
                    let acc: i64 = tp
                        .weights
                        .iter()
                        .enumerate()
                        .map(|(k, wt)| i64::from(*wt) * i64::from(row[(tp.start + k) * 3 + c]))
                        .sum();
                    out[(y * ow + x) * 3 + c] = clamp_u8(acc, p);
                }
            }
        }
        cur = out;
        cw = ow;
    }
    if oh != ih {
        let (t, p) = taps(ih, oh);
        let mut out = vec![0u8; cw * oh * 3];
        let stride = cw * 3;
        for (y, tp) in t.iter().enumerate() {
            for i in 0..stride {
                let acc: i64 = tp
                    .weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| i64::from(*wt) * i64::from(cur[(tp.start + k) * stride + i]))
                    .sum();
                out[y * stride + i] = clamp_u8(acc, p);
            }
        }
        cur = out;
    }
    RgbImage {
        width: w,
        height: h,
        data: cur,
    }
}

/// The model input of one video.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelValues {
    /// Row-major (rows, cols) f32: rows = t·h·w patches, cols = 3·tps·p·p.
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    /// `video_grid_thw`: (frames / tps, height / p, width / p).
    pub grid_thw: [u32; 3],
    /// The size frames were resized to (height, width).
    pub resized: (u32, u32),
}

/// Normalises and patchifies frames that already have the target size
/// (a multiple of 28 on both sides); an odd count is padded with the last
/// frame.
pub fn patchify(frames: &[RgbImage], p: &VisionParams) -> Result<PixelValues, QwenError> {
    let first = frames.first().ok_or(QwenError::NoFrames)?;
    let (w, h) = (first.width as usize, first.height as usize);
    let f = p.factor() as usize;
    if w % f != 0 || h % f != 0 {
        return Err(QwenError::NotMultiple {
            width: w,
            height: h,
            factor: f,
        });
    }
    if frames
        .iter()
        .any(|x| x.width != first.width || x.height != first.height)
    {
        return Err(QwenError::MixedSizes);
    }
    let (ps, tps, ms) = (
        p.patch_size as usize,
        p.temporal_patch_size as usize,
        p.merge_size as usize,
    );
    let n = frames.len().div_ceil(tps) * tps;
    let frame = |i: usize| &frames[i.min(frames.len() - 1)];
    let (gt, gh, gw) = (n / tps, h / ps, w / ps);
    let cols = 3 * tps * ps * ps;
    let rows = gt * gh * gw;
    // Per-channel affine: (x - 255·mean) / (255·std), as HF's fused form
    // (a division, as torchvision's normalize: not a product by the inverse).
    let div: [f32; 3] = std::array::from_fn(|c| 255.0 * p.std[c]);
    let shift: [f32; 3] = std::array::from_fn(|c| 255.0 * p.mean[c]);
    let mut data = vec![0f32; rows * cols];
    let mut r = 0;
    for g in 0..gt {
        for bh in 0..gh / ms {
            for bw in 0..gw / ms {
                for mh in 0..ms {
                    for mw in 0..ms {
                        let row = &mut data[r * cols..(r + 1) * cols];
                        for c in 0..3 {
                            for tp in 0..tps {
                                let img = &frame(g * tps + tp).data;
                                for py in 0..ps {
                                    let y = (bh * ms + mh) * ps + py;
                                    for px in 0..ps {
                                        let x = (bw * ms + mw) * ps + px;
                                        let v = f32::from(img[(y * w + x) * 3 + c]);
                                        row[((c * tps + tp) * ps + py) * ps + px] =
                                            (v - shift[c]) / div[c];
                                    }
                                }
                            }
                        }
                        r += 1;
                    }
                }
            }
        }
    }
    Ok(PixelValues {
        data,
        rows,
        cols,
        grid_thw: [gt as u32, gh as u32, gw as u32],
        resized: (h as u32, w as u32),
    })
}

/// The target size of every frame of a video of `frames` (all the first
/// frame's size, as the processor stacks them).
pub fn target_size(frames: &[RgbImage], p: &VisionParams) -> Result<(u32, u32), QwenError> {
    let first = frames.first().ok_or(QwenError::NoFrames)?;
    p.target_hw(frames.len(), first.height, first.width)
}

/// The whole path: budget, resize, pad, normalise, patchify.
pub fn preprocess_video(frames: &[RgbImage], p: &VisionParams) -> Result<PixelValues, QwenError> {
    let (th, tw) = target_size(frames, p)?;
    let resized: Vec<RgbImage> = frames
        .iter()
        .map(|f| {
            if (f.height, f.width) == (th, tw) {
                f.clone()
            } else {
                resize_bicubic_aa(f, tw, th)
            }
        })
        .collect();
    patchify(&resized, p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Qwen3-VL's rule, on the fixture's cases (tests/qwen3, transformers
    /// 5.24 with `cap_pixels_per_frame`, size {4096, 32768}).
    #[test]
    fn qwen3_budget_counts_the_video_and_scales_small_frames_up() {
        let p = VisionParams {
            min_pixels: 4096,
            max_pixels: 32768,
            ..VisionParams::qwen3()
        };
        // Within the budget: multiples of 32, ties to even (80 → 64, 208 → 192).
        assert_eq!(p.target_hw(2, 80, 208).unwrap(), (64, 192));
        assert_eq!(p.target_hw(3, 64, 96).unwrap(), (64, 96));
        // Over the budget: 5 frames of 128×160 → 64×64 (t_bar 4, β from n = 5).
        assert_eq!(p.target_hw(5, 128, 160).unwrap(), (64, 64));
        // Under the floor: 40×40 → 64×64.
        assert_eq!(p.target_hw(2, 40, 40).unwrap(), (64, 64));
        // A side below the factor scales the frame up first (20×100 → 32×160).
        assert_eq!(
            smart_resize_video(2, 20, 100, 2, 32, 1, u64::MAX).unwrap(),
            (32, 160)
        );
        // One frame is sized as the pair it is padded to.
        assert_eq!(
            p.target_hw(1, 64, 96).unwrap(),
            p.target_hw(2, 64, 96).unwrap()
        );
        assert!(p.target_hw(2, 1, 300).is_err());
    }

    #[test]
    fn smart_resize_cases() {
        let p = VisionParams::default();
        let f = p.factor();
        // Upscale to the floor.
        assert_eq!(
            smart_resize(100, 150, f, p.min_pixels, p.max_pixels).unwrap(),
            (280, 392)
        );
        // 720p and 1080p are both capped to 560x1008.
        let cap = p.frame_max_pixels(8);
        assert_eq!(cap, 602_112);
        assert_eq!(
            smart_resize(720, 1280, f, p.min_pixels, cap).unwrap(),
            (560, 1008)
        );
        assert_eq!(
            smart_resize(1080, 1920, f, p.min_pixels, cap).unwrap(),
            (560, 1008)
        );
        // 360p: 13x23 merged tokens.
        assert_eq!(
            smart_resize(360, 640, f, p.min_pixels, cap).unwrap(),
            (364, 644)
        );
        // Ties go to even: 42/28 = 1.5 → 2, 70/28 = 2.5 → 2.
        assert_eq!(
            smart_resize(42 * 10, 70 * 10, 2, 1, u64::MAX).unwrap(),
            (420, 700)
        );
        assert_eq!(smart_resize(42, 70, 28, 1, u64::MAX).unwrap(), (56, 56));
        let e = smart_resize(1, 300, f, p.min_pixels, cap).unwrap_err();
        assert_eq!(
            e,
            QwenError::AspectRatio {
                width: 300,
                height: 1
            }
        );
        assert!(e.to_string().contains("above 200"), "{e}");
    }

    #[test]
    fn budget_shrinks_with_frame_count() {
        let p = VisionParams::default();
        // total = 128000·784·0.9 = 90316800; ·2 / n
        assert_eq!(p.frame_max_pixels(2), 602_112);
        assert_eq!(p.frame_max_pixels(768), 235_200);
        assert_eq!(p.frame_max_pixels(100_000), 105_369);
    }

    #[test]
    fn resize_keeps_flat_colour_and_identity() {
        let img = RgbImage {
            width: 37,
            height: 23,
            data: [10u8, 200, 77].repeat(37 * 23),
        };
        for (w, h) in [(74, 46), (12, 9), (37, 60), (5, 23)] {
            let r = resize_bicubic_aa(&img, w, h);
            assert_eq!((r.width, r.height), (w, h));
            assert!(r.data.chunks(3).all(|p| p == [10, 200, 77]), "{w}x{h}");
        }
        let same = resize_bicubic_aa(&img, 37, 23);
        assert_eq!(same, img);
    }

    #[test]
    fn patch_order_and_padding() {
        let p = VisionParams::default();
        // 3 frames of 28x56 whose pixel value encodes (frame, y, x).
        let frames: Vec<RgbImage> = (0..3)
            .map(|t| RgbImage {
                width: 56,
                height: 28,
                data: (0..28 * 56)
                    .flat_map(|i| {
                        let (y, x) = (i / 56, i % 56);
                        [(t * 80 + y) as u8, x as u8, 0]
                    })
                    .collect(),
            })
            .collect();
        let pv = patchify(&frames, &p).unwrap();
        assert_eq!(pv.grid_thw, [2, 2, 4]);
        assert_eq!((pv.rows, pv.cols), (16, 1176));
        let val =
            |row: usize, col: usize| pv.data[row * 1176 + col] / (1.0 / (255.0 * CLIP_STD[0]));
        let red = |v: f32| (v + 255.0 * CLIP_MEAN[0]).round() as i32;
        // Row 1 = block (0,0), mh=0, mw=1: x starts at 14.
        let green0 = pv.data[1176 + 392] * 255.0 * CLIP_STD[1] + 255.0 * CLIP_MEAN[1];
        assert_eq!(green0.round() as i32, 14);
        // Row 2 = mh=1, mw=0: y starts at 14 (red of frame 0).
        assert_eq!(red(val(2, 0)), 14);
        // Column 196 = temporal slot 1: frame 1 (red offset 80).
        assert_eq!(red(val(0, 196)), 80);
        // Rows 8.. = temporal group 1: frame 2 and its padded copy.
        assert_eq!(red(val(8, 0)), 160);
        assert_eq!(red(val(8, 196)), 160);
        // Row 4 = the second merge block (bw=1): x starts at 28.
        let g = pv.data[4 * 1176 + 392] * 255.0 * CLIP_STD[1] + 255.0 * CLIP_MEAN[1];
        assert_eq!(g.round() as i32, 28);
    }
}
