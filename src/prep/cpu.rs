// SPDX-License-Identifier: MPL-2.0
//! The CPU path of frame preparation: the reference the GPU path is checked
//! against (`cuda/check.rs`) and where it falls back to.
//!
//! Rules:
//! 1. A frame becomes RGB with [`frames::prepare_rgb`] (conversion, then the
//!    bilinear resize of fast_image_resize).
//! 2. A chunk becomes `pixel_values` by that RGB step for every frame, all at
//!    the first frame's (pre-scaled) size, then [`qwen::preprocess_video`].

use std::borrow::Borrow;

use super::qwen::{self, PixelValues, VisionParams};
use super::PrepError;
use crate::frames::{self, FrameError, RawFrame, RgbImage};

/// A frame → packed RGB of the requested size (0 keeps the aspect ratio;
/// both 0: native size).
pub fn rgb(f: &RawFrame, req_w: u32, req_h: u32) -> Result<RgbImage, FrameError> {
    frames::prepare_rgb(f, req_w, req_h)
}

/// A chunk's frames → Qwen2.5-VL `pixel_values`, pre-scaled to
/// `pre_w` × `pre_h` first when set.
pub fn pixel_values<F: Borrow<RawFrame>>(
    f: &[F],
    pre_w: u32,
    pre_h: u32,
    p: &VisionParams,
) -> Result<PixelValues, PrepError> {
    let first: &RawFrame = f.first().ok_or(PrepError::NoFrames)?.borrow();
    let (w, h) = frames::target_size(first.width, first.height, pre_w, pre_h);
    let rgb = f
        .iter()
        .map(|x| rgb(x.borrow(), w, h))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(qwen::preprocess_video(&rgb, p)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_chunk_is_refused() {
        let none: [RawFrame; 0] = [];
        let e = pixel_values(&none, 0, 0, &VisionParams::default()).unwrap_err();
        assert!(matches!(e, PrepError::NoFrames));
        assert_eq!(e.to_string(), "the chunk has no frames");
    }
}
