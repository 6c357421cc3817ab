// SPDX-License-Identifier: MPL-2.0
//! The ring of downscaled frames that incident clips are made of. Plain
//! Rust: the element pushes RGB thumbnails (made on the streaming thread,
//! at most [`super::CLIP_FPS`] a second); a clip takes the frames of a time
//! range.
//!
//! Rules (one test each):
//! 1. **Bounded**: the frames held cost at most `max_bytes` (each frame
//!    counts its pixel bytes plus [`FRAME_OVERHEAD`]); a push evicts the
//!    oldest frames until the new one fits. A frame larger than the whole
//!    bound is not kept.
//! 2. **Monotonic**: a frame whose time is before the newest one (a seek, a
//!    new segment) clears the ring first: a clip never mixes timelines.
//! 3. **One size**: a frame of another size than the ones held (the input
//!    changed resolution) clears the ring first: a clip has one size.
//! 4. **Range**: [`Ring::range`] gives the frames with `from ≤ t ≤ to`,
//!    oldest first, sharing their bytes (no copy).

use std::collections::VecDeque;
use std::sync::Arc;

/// Bookkeeping counted per frame on top of its bytes.
pub const FRAME_OVERHEAD: usize = 64;

/// One thumbnail: stream time (seconds), size, packed RGB pixels.
#[derive(Clone, Debug)]
pub struct RingFrame {
    pub t: f64,
    pub width: u32,
    pub height: u32,
    pub rgb: Arc<Vec<u8>>,
}

impl RingFrame {
    fn cost(&self) -> usize {
        self.rgb.len() + FRAME_OVERHEAD
    }
}

#[derive(Debug)]
pub struct Ring {
    max_bytes: usize,
    frames: VecDeque<RingFrame>,
    bytes: usize,
    /// Frames evicted to stay in the bound.
    pub evicted: u64,
}

impl Ring {
    pub fn new(max_bytes: usize) -> Ring {
        Ring {
            max_bytes,
            frames: VecDeque::new(),
            bytes: 0,
            evicted: 0,
        }
    }

    /// Bytes held (rule 1: never above the bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The newest frame's time.
    pub fn newest(&self) -> Option<f64> {
        self.frames.back().map(|f| f.t)
    }

    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }

    /// Rules 1–3.
    pub fn push(&mut self, f: RingFrame) {
        if let Some(last) = self.frames.back() {
            if f.t < last.t || (f.width, f.height) != (last.width, last.height) {
                self.clear();
            }
        }
        let cost = f.cost();
        if cost > self.max_bytes {
            return;
        }
        while self.bytes + cost > self.max_bytes {
            let Some(old) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.cost();
            self.evicted += 1;
        }
        self.bytes += cost;
        self.frames.push_back(f);
    }

    /// Rule 4.
    pub fn range(&self, from: f64, to: f64) -> Vec<RingFrame> {
        self.frames
            .iter()
            .filter(|f| f.t >= from && f.t <= to)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(t: f64, n: usize) -> RingFrame {
        RingFrame {
            t,
            width: 64,
            height: 36,
            rgb: Arc::new(vec![0; n]),
        }
    }

    #[test]
    fn rule_1_the_ring_stays_in_its_bound() {
        let mut r = Ring::new(10 * (1000 + FRAME_OVERHEAD));
        for i in 0..100 {
            r.push(frame(i as f64 * 0.2, 1000 + (i % 7) * 10));
            assert!(r.bytes() <= 10 * (1000 + FRAME_OVERHEAD), "frame {i}");
        }
        assert!(r.len() < 10 && r.len() >= 9, "{}", r.len());
        assert_eq!(r.newest(), Some(99.0 * 0.2));
        assert!(r.evicted > 80);
        // Larger than the whole bound: not kept.
        r.push(frame(100.0, 20_000));
        assert_eq!(r.newest(), Some(99.0 * 0.2));
    }

    #[test]
    fn rule_2_time_going_back_clears() {
        let mut r = Ring::new(1 << 20);
        r.push(frame(10.0, 10));
        r.push(frame(10.2, 10));
        r.push(frame(3.0, 10));
        assert_eq!(r.len(), 1);
        assert_eq!(r.range(0.0, 100.0)[0].t, 3.0);
    }

    #[test]
    fn rule_3_a_new_size_clears() {
        let mut r = Ring::new(1 << 20);
        r.push(frame(1.0, 10));
        let mut f = frame(2.0, 10);
        f.width = 32;
        r.push(f);
        assert_eq!(r.len(), 1);
        assert_eq!(r.range(0.0, 9.0)[0].width, 32);
    }

    #[test]
    fn rule_4_range_is_inclusive_and_ordered() {
        let mut r = Ring::new(1 << 20);
        for i in 0..10 {
            r.push(frame(i as f64, 10));
        }
        let got: Vec<f64> = r.range(2.0, 5.0).iter().map(|f| f.t).collect();
        assert_eq!(got, vec![2.0, 3.0, 4.0, 5.0]);
        assert!(r.range(20.0, 30.0).is_empty());
    }
}
