// SPDX-License-Identifier: MPL-2.0
//! Which chunks are captioned: change gating (`skip-unchanged`,
//! `change-threshold`, `heartbeat`), detector triggers (`trigger-classes`,
//! `trigger-mode`, `trigger-cooldown`, `trigger-min-confidence`) and
//! `request-caption`. Plain Rust, free of GStreamer types.
//!
//! ## Rules
//! 1. **Thumbnails.** Each sampled frame becomes a small grey thumbnail
//!    ([`Thumb`], [`THUMB_W`] pixels wide, the frame's aspect kept): each
//!    thumbnail pixel is the mean grey of its box of source pixels (every
//!    second row and column read when a box holds 4×4 pixels or more; grey = Y for YUV, (R+G+B)/3 for RGB).
//!    Box means over ~30×30 pixels of 1080p flatten sensor noise and H.264
//!    artefacts.
//! 2. **Change measure** ([`change`]): between a frame and a reference
//!    frame, what a global light change does not explain — each thumbnail
//!    pixel minus `mean + gain·(reference pixel − reference mean)`, gain
//!    fitted over the whole thumbnail by least squares and kept within
//!    0.5–2 (so slow exposure and brightness changes count next to
//!    nothing) — then the mean absolute value in each block of
//!    [`BLOCK`]×[`BLOCK`] thumbnail pixels, blocks every `BLOCK/2` pixels
//!    (overlapping, so an object on a block border is not split). The
//!    measure is the largest block's value, in grey levels (0–255). A
//!    chunk's change is the largest over its sampled frames against the
//!    **last sampled frame of the last captioned chunk** (the picture its
//!    caption ended on). Thumbnails of another size count as a full change
//!    (255).
//! 3. **Order.** Decisions are made one chunk at a time, in chunk order
//!    ([`Gate::decide`]), each seeing the outcome of the ones before.
//! 4. **Nothing configured** (`skip-unchanged` off, no `trigger-classes`):
//!    every chunk is captioned.
//! 5. **`request-caption`**: a chunk that was asked for is captioned.
//! 6. **First chunk** (and the first after a flush, [`Gate::reset`]): no
//!    reference, captioned.
//! 7. **Heartbeat** (> 0): a chunk that starts `heartbeat` seconds or more
//!    after the last captioned chunk started is captioned.
//! 8. **Triggers** (`trigger-classes` set): a chunk is a candidate only when
//!    its detections match: `any` — one detection of a listed class; `all`
//!    — every listed class detected somewhere in the chunk; detections
//!    whose confidence is known and below the minimum do not count. Not a
//!    candidate: [`Decision::Skip`] with reason `no-trigger`. A candidate
//!    that starts less than `trigger-cooldown` seconds after the last chunk
//!    captioned for a trigger started: reason `cooldown`.
//! 9. **Unchanged** (`skip-unchanged`): a chunk (after rule 8) whose change
//!    is below `change-threshold` is not captioned: [`Decision::Unchanged`],
//!    naming the last captioned chunk (`same-as`).
//! 10. Every other chunk is captioned and becomes the reference (its last
//!     sampled thumbnail, index, start) — whether or not its caption
//!     later succeeds.
//! 11. **Ranges.** `change-threshold` 0–255, `heartbeat` and
//!     `trigger-cooldown` 0–86 400 s, `trigger-min-confidence` 0–1;
//!     [`GateConfig::checked`] clamps anything else (NaN becomes the
//!     default).

use std::collections::BTreeSet;

/// Thumbnail width in pixels.
pub const THUMB_W: usize = 64;
/// Block side in thumbnail pixels (blocks overlap by half).
pub const BLOCK: usize = 8;
/// Default `change-threshold` (grey levels of the most changed block; see
/// docs/monitoring.md for how it was measured).
pub const DEFAULT_THRESHOLD: f64 = 4.0;

/// A small grey picture of a sampled frame (rule 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Thumb {
    pub w: usize,
    pub h: usize,
    pub px: Vec<f32>,
}

/// How the grey of one source pixel is read.
#[derive(Clone, Copy, Debug)]
pub enum GreyLayout {
    /// One byte per pixel (a luma plane).
    Luma,
    /// `bpp` bytes per pixel, the colour bytes at `offs` (grey = their mean).
    Packed { bpp: usize, offs: [usize; 3] },
}

impl Thumb {
    /// Rule 1: the thumbnail of a `width`×`height` plane whose rows are
    /// `stride` bytes apart. `None` for an empty or short plane.
    pub fn from_plane(
        data: &[u8],
        stride: usize,
        width: usize,
        height: usize,
        layout: GreyLayout,
    ) -> Option<Thumb> {
        let bpp = match layout {
            GreyLayout::Luma => 1,
            GreyLayout::Packed { bpp, .. } => bpp,
        };
        if width == 0 || height == 0 || stride < width * bpp {
            return None;
        }
        if data.len() < stride * (height - 1) + width * bpp {
            return None;
        }
        let tw = THUMB_W.min(width);
        let th = ((height * tw + width / 2) / width).clamp(1, height);
        let mut sum = vec![0u32; tw * th];
        let mut n = vec![0u32; tw * th];
        // Every second row / column when each box holds at least 4×4 pixels.
        let sx = if width >= 4 * tw { 2 } else { 1 };
        let sy = if height >= 4 * th { 2 } else { 1 };
        for y in (0..height).step_by(sy) {
            let ty = y * th / height;
            let row = &data[y * stride..];
            for x in (0..width).step_by(sx) {
                let tx = x * tw / width;
                let g = match layout {
                    GreyLayout::Luma => row[x] as u32,
                    GreyLayout::Packed { bpp, offs } => {
                        let p = &row[x * bpp..];
                        (p[offs[0]] as u32 + p[offs[1]] as u32 + p[offs[2]] as u32) / 3
                    }
                };
                sum[ty * tw + tx] += g;
                n[ty * tw + tx] += 1;
            }
        }
        let px = sum
            .iter()
            .zip(&n)
            .map(|(s, n)| if *n == 0 { 0.0 } else { *s as f32 / *n as f32 })
            .collect();
        Some(Thumb { w: tw, h: th, px })
    }
}

/// Rule 1 for a sampled frame (plane 0: luma, or the packed pixels).
pub fn thumb_of(f: &crate::frames::RawFrame) -> Option<Thumb> {
    use crate::frames::PixelFormat as P;
    let layout = match f.format {
        P::I420 | P::Yv12 | P::Nv12 | P::Nv21 => GreyLayout::Luma,
        P::Rgb | P::Bgr => GreyLayout::Packed {
            bpp: 3,
            offs: [0, 1, 2],
        },
        P::Rgba | P::Bgra | P::Rgbx | P::Bgrx => GreyLayout::Packed {
            bpp: 4,
            offs: [0, 1, 2],
        },
        P::Xrgb | P::Xbgr | P::Argb | P::Abgr => GreyLayout::Packed {
            bpp: 4,
            offs: [1, 2, 3],
        },
    };
    Thumb::from_plane(
        f.planes.first()?,
        *f.strides.first()?,
        f.width as usize,
        f.height as usize,
        layout,
    )
}

/// Rule 2: how much `cur` changed from `reference`, in grey levels of the
/// most changed block (0 = identical, up to 255).
pub fn change(cur: &Thumb, reference: &Thumb) -> f64 {
    if cur.w != reference.w || cur.h != reference.h || cur.px.is_empty() {
        return 255.0;
    }
    // The global light change: cur ≈ mc + gain·(ref − mr), fitted by least
    // squares (gain kept within 0.5–2); what it does not explain changed.
    let n = cur.px.len() as f32;
    let mc = cur.px.iter().sum::<f32>() / n;
    let mr = reference.px.iter().sum::<f32>() / n;
    let (mut cov, mut var) = (0.0f32, 0.0f32);
    for (c, r) in cur.px.iter().zip(&reference.px) {
        cov += (c - mc) * (r - mr);
        var += (r - mr) * (r - mr);
    }
    let gain = if var > 1e-3 {
        (cov / var).clamp(0.5, 2.0)
    } else {
        1.0
    };
    let d: Vec<f32> = cur
        .px
        .iter()
        .zip(&reference.px)
        .map(|(c, r)| (c - mc - gain * (r - mr)).abs())
        .collect();
    let (bw, bh) = (BLOCK.min(cur.w), BLOCK.min(cur.h));
    let starts = |len: usize, b: usize| -> Vec<usize> {
        let mut v: Vec<usize> = (0..=len - b).step_by((b / 2).max(1)).collect();
        if *v.last().expect("one start") != len - b {
            v.push(len - b);
        }
        v
    };
    let mut best = 0.0f32;
    for y0 in starts(cur.h, bh) {
        for x0 in starts(cur.w, bw) {
            let mut s = 0.0f32;
            for y in y0..y0 + bh {
                s += d[y * cur.w + x0..y * cur.w + x0 + bw].iter().sum::<f32>();
            }
            best = best.max(s / (bw * bh) as f32);
        }
    }
    best as f64
}

/// One detection on a frame of the chunk (a `GstVideoRegionOfInterestMeta`).
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub label: String,
    /// `None` when the meta does not carry one.
    pub confidence: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TriggerMode {
    #[default]
    Any,
    All,
}

/// The settings of the gate (rule 11 for their ranges).
#[derive(Clone, Debug, PartialEq)]
pub struct GateConfig {
    pub skip_unchanged: bool,
    pub threshold: f64,
    /// Seconds; 0 = none.
    pub heartbeat: f64,
    /// Empty = triggers off.
    pub trigger_classes: Vec<String>,
    pub trigger_mode: TriggerMode,
    pub trigger_cooldown: f64,
    pub min_confidence: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            skip_unchanged: false,
            threshold: DEFAULT_THRESHOLD,
            heartbeat: 0.0,
            trigger_classes: Vec::new(),
            trigger_mode: TriggerMode::Any,
            trigger_cooldown: 0.0,
            min_confidence: 0.0,
        }
    }
}

fn clamp(v: f64, lo: f64, hi: f64, default: f64) -> f64 {
    if v.is_nan() {
        default
    } else {
        v.clamp(lo, hi)
    }
}

impl GateConfig {
    /// Rule 11.
    pub fn checked(mut self) -> GateConfig {
        let d = GateConfig::default();
        self.threshold = clamp(self.threshold, 0.0, 255.0, d.threshold);
        self.heartbeat = clamp(self.heartbeat, 0.0, 86_400.0, 0.0);
        self.trigger_cooldown = clamp(self.trigger_cooldown, 0.0, 86_400.0, 0.0);
        self.min_confidence = clamp(self.min_confidence, 0.0, 1.0, 0.0);
        self.trigger_classes = self
            .trigger_classes
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        self
    }

    /// Rule 4: does the gate ever hold a chunk back?
    pub fn active(&self) -> bool {
        self.skip_unchanged || !self.trigger_classes.is_empty()
    }

    /// Parses a `trigger-classes` value: names separated by `,` or `;`
    /// (the brackets and quotes of a gst-launch array, `<"person", "car">`,
    /// are ignored).
    pub fn parse_classes(s: &str) -> Vec<String> {
        s.split([',', ';'])
            .map(|c| {
                c.trim_matches(|ch: char| ch.is_whitespace() || "<>{}[]\"'".contains(ch))
                    .to_string()
            })
            .filter(|c| !c.is_empty())
            .collect()
    }
}

/// What the gate needs to know of a chunk.
#[derive(Clone, Debug, Default)]
pub struct ChunkFacts {
    pub index: u64,
    /// Stream time of its start, seconds.
    pub start: f64,
    pub thumbs: Vec<Thumb>,
    pub detections: Vec<Detection>,
    /// `request-caption` was called for it.
    pub requested: bool,
}

/// Why a chunk is captioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The gate is off (rule 4).
    Always,
    Requested,
    First,
    Heartbeat,
    /// Changed (or triggered without `skip-unchanged`).
    Changed,
}

/// The outcome for one chunk.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Caption(Why),
    /// Rule 9: its caption would repeat that of `same_as`.
    Unchanged {
        same_as: u64,
        change: f64,
    },
    /// Rule 8: `reason` is `no-trigger` or `cooldown`; `same_as` is the last
    /// captioned chunk, if any.
    Skip {
        reason: &'static str,
        same_as: Option<u64>,
    },
}

impl Decision {
    pub fn captioned(&self) -> bool {
        matches!(self, Decision::Caption(_))
    }
}

struct Reference {
    index: u64,
    start: f64,
    thumb: Option<Thumb>,
}

/// The gate's state across chunks (rule 3).
#[derive(Default)]
pub struct Gate {
    reference: Option<Reference>,
    /// Start of the last chunk captioned for a trigger.
    last_trigger: Option<f64>,
}

impl Gate {
    /// A flush: the next chunk is captioned (rule 6).
    pub fn reset(&mut self) {
        *self = Gate::default();
    }

    fn triggered(cfg: &GateConfig, dets: &[Detection]) -> bool {
        let counts = |d: &&Detection| d.confidence.is_none_or(|c| c >= cfg.min_confidence);
        let seen: BTreeSet<&str> = dets
            .iter()
            .filter(counts)
            .map(|d| d.label.as_str())
            .collect();
        let mut listed = cfg
            .trigger_classes
            .iter()
            .map(|c| seen.contains(c.as_str()));
        match cfg.trigger_mode {
            TriggerMode::Any => listed.any(|b| b),
            TriggerMode::All => listed.all(|b| b),
        }
    }

    /// Decides for `chunk` (rules 4–10), the chunks before it decided.
    pub fn decide(&mut self, cfg: &GateConfig, chunk: &ChunkFacts) -> Decision {
        let why = self.why(cfg, chunk);
        match why {
            Ok(why) => {
                if !cfg.trigger_classes.is_empty() && Self::triggered(cfg, &chunk.detections) {
                    self.last_trigger = Some(chunk.start);
                }
                self.reference = Some(Reference {
                    index: chunk.index,
                    start: chunk.start,
                    thumb: chunk.thumbs.last().cloned(),
                });
                Decision::Caption(why)
            }
            Err(d) => d,
        }
    }

    fn why(&self, cfg: &GateConfig, chunk: &ChunkFacts) -> Result<Why, Decision> {
        if !cfg.active() {
            return Ok(Why::Always);
        }
        if chunk.requested {
            return Ok(Why::Requested);
        }
        let Some(r) = &self.reference else {
            return Ok(Why::First);
        };
        if cfg.heartbeat > 0.0 && chunk.start - r.start >= cfg.heartbeat {
            return Ok(Why::Heartbeat);
        }
        if !cfg.trigger_classes.is_empty() {
            let skip = |reason| Decision::Skip {
                reason,
                same_as: Some(r.index),
            };
            if !Self::triggered(cfg, &chunk.detections) {
                return Err(skip("no-trigger"));
            }
            if let Some(t) = self.last_trigger {
                if chunk.start - t < cfg.trigger_cooldown {
                    return Err(skip("cooldown"));
                }
            }
        }
        if cfg.skip_unchanged {
            let change = match &r.thumb {
                Some(rt) => chunk
                    .thumbs
                    .iter()
                    .map(|t| change(t, rt))
                    .fold(0.0, f64::max),
                None => 255.0,
            };
            if chunk.thumbs.is_empty() || change < cfg.threshold {
                return Err(Decision::Unchanged {
                    same_as: r.index,
                    change,
                });
            }
        }
        Ok(Why::Changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(w: usize, h: usize, v: f32) -> Thumb {
        Thumb {
            w,
            h,
            px: vec![v; w * h],
        }
    }

    fn chunk(index: u64, start: f64, thumb: Thumb) -> ChunkFacts {
        ChunkFacts {
            index,
            start,
            thumbs: vec![thumb],
            ..Default::default()
        }
    }

    fn gating() -> GateConfig {
        GateConfig {
            skip_unchanged: true,
            ..Default::default()
        }
    }

    /// Rule 1: box means; grey of packed RGB; every second pixel read.
    #[test]
    fn rule1_thumbnails_are_box_means() {
        // 128×64 luma: left half 0, right half 200.
        let (w, h) = (128, 64);
        let data: Vec<u8> = (0..w * h)
            .map(|i| if i % w < w / 2 { 0 } else { 200 })
            .collect();
        let t = Thumb::from_plane(&data, w, w, h, GreyLayout::Luma).unwrap();
        assert_eq!((t.w, t.h), (64, 32));
        assert_eq!(t.px[0], 0.0);
        assert_eq!(t.px[63], 200.0);
        // RGBx: grey is the mean of R, G, B.
        let rgbx: Vec<u8> = (0..4 * 4).flat_map(|_| [30u8, 60, 90, 255]).collect();
        let layout = GreyLayout::Packed {
            bpp: 4,
            offs: [0, 1, 2],
        };
        let t = Thumb::from_plane(&rgbx, 16, 4, 4, layout).unwrap();
        assert!(t.px.iter().all(|p| *p == 60.0), "{t:?}");
        // A short plane is refused.
        assert!(Thumb::from_plane(&data[..10], w, w, h, GreyLayout::Luma).is_none());
    }

    /// Rule 2: a global shift counts nothing, a small blob in a corner
    /// counts, independent noise averages out, other sizes are a change.
    #[test]
    fn rule2_change_is_blockwise_and_ignores_global_light() {
        let a = flat(64, 36, 100.0);
        let brighter = flat(64, 36, 130.0);
        assert!(change(&brighter, &a) < 1e-3);
        // A textured picture 10 % brighter (gain) and 5 levels up.
        let tex = Thumb {
            w: 64,
            h: 36,
            px: (0..64 * 36)
                .map(|i| 40.0 + ((i * 37) % 150) as f32)
                .collect(),
        };
        let lit = Thumb {
            px: tex.px.iter().map(|p| p * 1.1 + 5.0).collect(),
            ..tex.clone()
        };
        assert!(change(&lit, &tex) < 1e-2, "{}", change(&lit, &tex));
        let mut blob = a.clone();
        for y in 30..36 {
            for x in 58..64 {
                blob.px[y * 64 + x] = 180.0;
            }
        }
        let c = change(&blob, &a);
        assert!(c > 20.0, "{c}");
        // ±1 grey level of noise per thumbnail pixel stays about 1.
        let mut noisy = a.clone();
        for (i, p) in noisy.px.iter_mut().enumerate() {
            *p += if (i * 7919) % 3 == 0 { 1.0 } else { -0.5 };
        }
        assert!(change(&noisy, &a) < 1.5);
        assert_eq!(change(&flat(32, 18, 100.0), &a), 255.0);
    }

    /// Rule 3: each decision sees the ones before (the reference moves to
    /// the last captioned chunk).
    #[test]
    fn rule3_decisions_follow_the_last_captioned_chunk() {
        let mut g = Gate::default();
        let cfg = gating();
        let mut blob = flat(64, 36, 100.0);
        for y in 0..8 {
            for x in 0..8 {
                blob.px[y * 64 + x] = 250.0;
            }
        }
        assert!(g
            .decide(&cfg, &chunk(0, 0.0, flat(64, 36, 100.0)))
            .captioned());
        assert!(g.decide(&cfg, &chunk(1, 10.0, blob.clone())).captioned());
        // Same as chunk 1 now, not as chunk 0.
        assert_eq!(
            g.decide(&cfg, &chunk(2, 20.0, blob)),
            Decision::Unchanged {
                same_as: 1,
                change: 0.0
            }
        );
    }

    /// Rule 4: without gating or triggers everything is captioned.
    #[test]
    fn rule4_off_captions_everything() {
        let mut g = Gate::default();
        let cfg = GateConfig::default();
        for i in 0..3 {
            assert_eq!(
                g.decide(&cfg, &chunk(i, i as f64, flat(64, 36, 1.0))),
                Decision::Caption(Why::Always)
            );
        }
    }

    /// Rule 5: a requested chunk is captioned even when unchanged.
    #[test]
    fn rule5_request_caption_wins() {
        let mut g = Gate::default();
        let cfg = gating();
        g.decide(&cfg, &chunk(0, 0.0, flat(64, 36, 1.0)));
        let mut c = chunk(1, 10.0, flat(64, 36, 1.0));
        assert!(!g.decide(&cfg, &c).captioned());
        c.index = 2;
        c.requested = true;
        assert_eq!(g.decide(&cfg, &c), Decision::Caption(Why::Requested));
    }

    /// Rule 6: first chunk, and first after a reset.
    #[test]
    fn rule6_first_chunk_and_after_reset() {
        let mut g = Gate::default();
        let cfg = gating();
        assert_eq!(
            g.decide(&cfg, &chunk(0, 0.0, flat(64, 36, 1.0))),
            Decision::Caption(Why::First)
        );
        g.reset();
        assert_eq!(
            g.decide(&cfg, &chunk(5, 50.0, flat(64, 36, 1.0))),
            Decision::Caption(Why::First)
        );
    }

    /// Rule 7: heartbeat forces a caption.
    #[test]
    fn rule7_heartbeat() {
        let mut g = Gate::default();
        let cfg = GateConfig {
            heartbeat: 30.0,
            ..gating()
        };
        g.decide(&cfg, &chunk(0, 0.0, flat(64, 36, 1.0)));
        assert!(!g
            .decide(&cfg, &chunk(1, 10.0, flat(64, 36, 1.0)))
            .captioned());
        assert!(!g
            .decide(&cfg, &chunk(2, 20.0, flat(64, 36, 1.0)))
            .captioned());
        assert_eq!(
            g.decide(&cfg, &chunk(3, 30.0, flat(64, 36, 1.0))),
            Decision::Caption(Why::Heartbeat)
        );
        assert!(!g
            .decide(&cfg, &chunk(4, 40.0, flat(64, 36, 1.0)))
            .captioned());
    }

    fn det(label: &str, c: Option<f64>) -> Detection {
        Detection {
            label: label.into(),
            confidence: c,
        }
    }

    /// Rule 8: any / all, minimum confidence, cooldown.
    #[test]
    fn rule8_triggers_any_all_confidence_cooldown() {
        let cfg = GateConfig {
            trigger_classes: vec!["person".into(), "car".into()],
            trigger_cooldown: 15.0,
            min_confidence: 0.5,
            ..Default::default()
        };
        let mut g = Gate::default();
        let mut c = chunk(0, 0.0, flat(64, 36, 1.0));
        assert!(g.decide(&cfg, &c).captioned()); // first
        c.index = 1;
        c.start = 10.0;
        c.detections = vec![det("dog", Some(0.9)), det("person", Some(0.3))];
        assert_eq!(
            g.decide(&cfg, &c),
            Decision::Skip {
                reason: "no-trigger",
                same_as: Some(0)
            }
        );
        c.index = 2;
        c.start = 20.0;
        c.detections = vec![det("person", None)];
        assert_eq!(g.decide(&cfg, &c), Decision::Caption(Why::Changed));
        c.index = 3;
        c.start = 30.0;
        assert_eq!(
            g.decide(&cfg, &c),
            Decision::Skip {
                reason: "cooldown",
                same_as: Some(2)
            }
        );
        c.index = 4;
        c.start = 35.0;
        assert!(g.decide(&cfg, &c).captioned());
        // all: both classes needed.
        let all = GateConfig {
            trigger_mode: TriggerMode::All,
            trigger_cooldown: 0.0,
            ..cfg
        };
        c.index = 5;
        c.start = 40.0;
        assert!(!g.decide(&all, &c).captioned());
        c.index = 6;
        c.detections.push(det("car", Some(0.99)));
        assert!(g.decide(&all, &c).captioned());
    }

    /// Rule 9: below the threshold is unchanged, at or above is captioned.
    #[test]
    fn rule9_threshold() {
        let mut g = Gate::default();
        let cfg = GateConfig {
            threshold: 10.0,
            ..gating()
        };
        g.decide(&cfg, &chunk(0, 0.0, flat(64, 36, 100.0)));
        let mut small = flat(64, 36, 100.0);
        let mut big = small.clone();
        for y in 0..8 {
            for x in 0..8 {
                small.px[y * 64 + x] = 105.0;
                big.px[y * 64 + x] = 130.0;
            }
        }
        assert!(matches!(
            g.decide(&cfg, &chunk(1, 10.0, small)),
            Decision::Unchanged { same_as: 0, .. }
        ));
        assert!(g.decide(&cfg, &chunk(2, 20.0, big)).captioned());
    }

    /// Rule 10: a captioned chunk becomes the reference.
    #[test]
    fn rule10_captioned_chunk_is_the_reference() {
        let mut g = Gate::default();
        let cfg = gating();
        g.decide(&cfg, &chunk(0, 0.0, flat(64, 36, 1.0)));
        let mut c = chunk(1, 10.0, flat(64, 36, 1.0));
        c.requested = true;
        g.decide(&cfg, &c);
        assert_eq!(
            g.decide(&cfg, &chunk(2, 20.0, flat(64, 36, 1.0))),
            Decision::Unchanged {
                same_as: 1,
                change: 0.0
            }
        );
    }

    /// Rule 11: out-of-range settings are clamped.
    #[test]
    fn rule11_ranges() {
        let c = GateConfig {
            threshold: f64::NAN,
            heartbeat: -3.0,
            trigger_cooldown: 1e12,
            min_confidence: 7.0,
            trigger_classes: vec![" person ".into(), "".into()],
            ..Default::default()
        }
        .checked();
        assert_eq!(c.threshold, DEFAULT_THRESHOLD);
        assert_eq!(c.heartbeat, 0.0);
        assert_eq!(c.trigger_cooldown, 86_400.0);
        assert_eq!(c.min_confidence, 1.0);
        assert_eq!(c.trigger_classes, vec!["person".to_string()]);
        assert_eq!(
            GateConfig::parse_classes("person, car;;truck"),
            vec!["person", "car", "truck"]
        );
        assert_eq!(
            GateConfig::parse_classes("<\"person\", \"fork lift\">"),
            vec!["person", "fork lift"]
        );
    }
}
