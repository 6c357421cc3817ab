// SPDX-License-Identifier: MPL-2.0
//! An incident clip: ring frames (RGB thumbnails with stream times) → an
//! H.264 MP4 file, through the plugin's one frames→MP4 encoder
//! ([`crate::mp4`]: GStreamer's x264enc and mp4mux in an internal
//! pipeline). Called on the evidence thread, never on the streaming thread.
//!
//! Each frame lasts until the next one and the last one the mean interval
//! ([`crate::mp4`] rule 2), so the file lasts about as long as the time its
//! frames cover.

use std::path::Path;
use std::time::Duration;

use super::ring::RingFrame;
use super::CLIP_FRAME_INTERVAL;
use crate::mp4::{self, Mp4Frame, Mp4Options, Mp4Pixels};

/// Why clips cannot be made here (a missing element, naming its package).
pub fn unavailable() -> Option<String> {
    mp4::available().err().map(|e| e.to_string())
}

/// Encodes `frames` (oldest first) and writes the MP4 to `path` (through
/// `path.part`).
pub fn encode(frames: &[RingFrame], path: &Path, timeout: Duration) -> Result<(), String> {
    let input: Vec<Mp4Frame> = frames
        .iter()
        .map(|f| Mp4Frame {
            pixels: Mp4Pixels::Rgb,
            width: f.width,
            height: f.height,
            data: &f.rgb,
            pts_ns: (f.t.max(0.0) * 1e9).round() as u64,
        })
        .collect();
    let opts = Mp4Options {
        timeout,
        quantizer: 24,
        speed_preset: "veryfast",
        single_frame_duration: Duration::from_secs_f64(CLIP_FRAME_INTERVAL),
    };
    let video = mp4::encode(&input, &opts).map_err(|e| e.to_string())?;
    super::write_file(path, &video.bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The file lasts as long as its frames and holds one frame each
    /// (checked in depth by `crate::mp4`'s tests and tests/incidents.rs).
    #[test]
    fn a_clip_file_is_written_through_a_part_file() {
        if let Some(why) = unavailable() {
            eprintln!("SKIP: {why}");
            return;
        }
        let frames: Vec<RingFrame> = (0..10)
            .map(|i| RingFrame {
                t: 50.0 + i as f64 * 0.2,
                width: 32,
                height: 18,
                rgb: Arc::new(vec![(i * 20) as u8; 32 * 18 * 3]),
            })
            .collect();
        let path = std::env::temp_dir().join(format!("vss-clip-test-{}.mp4", std::process::id()));
        encode(&frames, &path, Duration::from_secs(60)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&bytes[4..8], b"ftyp");
        assert!(!Path::new(&format!("{}.part", path.display())).exists());
        // Times that do not increase are refused, not written.
        let mut bad = frames.clone();
        bad[3].t = bad[2].t;
        assert!(encode(&bad, &path, Duration::from_secs(60))
            .unwrap_err()
            .contains("not after"));
        assert!(!path.exists());
    }
}
