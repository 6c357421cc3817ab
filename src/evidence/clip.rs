// SPDX-License-Identifier: MPL-2.0
//! Encodes a clip of ring frames (JPEG thumbnails with stream times) into an
//! H.264 MP4 with GStreamer's own elements, in an internal pipeline:
//! `appsrc ! jpegdec ! videoconvert ! x264enc ! mp4mux ! filesink`.
//! Called on the evidence thread, never on the streaming thread.
//!
//! Each frame lasts until the next one (the last one
//! [`super::CLIP_FRAME_INTERVAL`]), so the MP4's duration is the time the
//! frames cover. Fails (with a text) when an element is missing (x264enc is
//! in gstreamer1.0-plugins-ugly), the pipeline errors, or it does not finish
//! within `timeout`.

use std::path::Path;
use std::time::Duration;

use gst::prelude::*;

use super::ring::RingFrame;

/// The elements the clip pipeline needs.
pub const ELEMENTS: [&str; 5] = ["appsrc", "jpegdec", "videoconvert", "x264enc", "mp4mux"];

/// The first missing element, if any (`x264enc`: install
/// gstreamer1.0-plugins-ugly).
pub fn missing_element() -> Option<&'static str> {
    ELEMENTS
        .into_iter()
        .find(|e| gst::ElementFactory::find(e).is_none())
}

/// Writes `frames` (oldest first, one size) to `path` as MP4.
pub fn encode(
    frames: &[RingFrame],
    last_duration: f64,
    path: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let first = frames.first().ok_or("no frames")?;
    let desc = "appsrc name=src format=time ! jpegdec ! videoconvert ! video/x-raw,format=I420 \
                ! x264enc speed-preset=ultrafast key-int-max=50 ! mp4mux ! filesink name=sink";
    let pipeline = gst::parse::launch(desc)
        .map_err(|e| format!("cannot build the clip pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "the clip pipeline is not a pipeline".to_string())?;
    let src = pipeline.by_name("src").ok_or("no appsrc")?;
    let sink = pipeline.by_name("sink").ok_or("no filesink")?;
    sink.set_property("location", path.to_string_lossy().to_string());
    let caps = gst::Caps::builder("image/jpeg")
        .field("width", first.width as i32)
        .field("height", first.height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    src.set_property("caps", &caps);
    // Everything is queued before PLAYING: no frame is ever dropped.
    src.set_property("max-bytes", 0u64);
    src.set_property("block", false);
    let result = run(&pipeline, &src, frames, last_duration, timeout);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(
    pipeline: &gst::Pipeline,
    src: &gst::Element,
    frames: &[RingFrame],
    last_duration: f64,
    timeout: Duration,
) -> Result<(), String> {
    let t0 = frames[0].t;
    let ns = |s: f64| gst::ClockTime::from_nseconds((s.max(0.0) * 1e9).round() as u64);
    for (i, f) in frames.iter().enumerate() {
        let next = frames.get(i + 1).map_or(f.t + last_duration, |n| n.t);
        let mut buf = gst::Buffer::from_slice(f.jpeg.as_ref().clone());
        {
            let b = buf.get_mut().expect("new buffer is writable");
            b.set_pts(ns(f.t - t0));
            b.set_duration(ns(next - f.t));
        }
        let r = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buf]);
        if r != gst::FlowReturn::Ok {
            return Err(format!("the clip pipeline refused a frame: {r:?}"));
        }
    }
    let _ = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("the clip pipeline did not start: {e}"))?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let timeout = gst::ClockTime::from_nseconds(timeout.as_nanos() as u64);
    match bus.timed_pop_filtered(timeout, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(m) => match m.view() {
            gst::MessageView::Eos(_) => Ok(()),
            gst::MessageView::Error(e) => Err(format!(
                "the clip pipeline failed: {} ({})",
                e.error(),
                e.debug().unwrap_or_default()
            )),
            _ => unreachable!("filtered"),
        },
        None => Err(format!(
            "the clip pipeline did not finish within {} s",
            timeout.seconds()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A JPEG thumbnail whose brightness depends on `i`.
    pub(crate) fn thumb(i: usize, w: u32, h: u32) -> Vec<u8> {
        let img = crate::frames::RgbImage {
            width: w,
            height: h,
            data: (0..w * h * 3)
                .map(|k| ((k as usize / 3 + i * 9) % 256) as u8)
                .collect(),
        };
        crate::frames::encode_jpeg(&img, 80).unwrap()
    }

    /// The clip decodes and lasts as long as its frames (GStreamer's
    /// discoverer reads it back).
    #[test]
    fn a_clip_is_a_decodable_mp4_of_the_expected_duration() {
        gst::init().unwrap();
        if let Some(e) = missing_element() {
            eprintln!(
                "SKIP: GStreamer element {e} is missing (x264enc: gstreamer1.0-plugins-ugly)"
            );
            return;
        }
        let frames: Vec<RingFrame> = (0..20)
            .map(|i| RingFrame {
                t: 100.0 + i as f64 * 0.2,
                width: 96,
                height: 54,
                jpeg: Arc::new(thumb(i, 96, 54)),
            })
            .collect();
        let path = std::env::temp_dir().join(format!("vss-clip-test-{}.mp4", std::process::id()));
        encode(&frames, 0.2, &path, Duration::from_secs(60)).unwrap();
        let d = gst_pbutils_duration(&path);
        let _ = std::fs::remove_file(&path);
        assert!((d - 4.0).abs() < 0.25, "duration {d}");
    }

    /// The duration as a decode pipeline reads it (the file demuxes and
    /// decodes; the position at EOS is the last frame's end).
    fn gst_pbutils_duration(path: &Path) -> f64 {
        let p = gst::parse::launch(&format!(
            "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! fakesink name=sink sync=false",
            path.display()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let sink = p.by_name("sink").unwrap();
        let pad = sink.static_pad("sink").unwrap();
        let last_end = Arc::new(parking_lot::Mutex::new(0.0f64));
        let (f2, l2) = (frames.clone(), last_end.clone());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                f2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let end =
                    b.pts().map_or(0, |t| t.nseconds()) + b.duration().map_or(0, |t| t.nseconds());
                let mut l = l2.lock();
                *l = l.max(end as f64 / 1e9);
            }
            gst::PadProbeReturn::Ok
        });
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        let m = bus
            .timed_pop_filtered(
                gst::ClockTime::from_seconds(60),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            )
            .expect("the clip decodes to EOS");
        assert!(matches!(m.view(), gst::MessageView::Eos(_)), "{m:?}");
        p.set_state(gst::State::Null).unwrap();
        assert_eq!(frames.load(std::sync::atomic::Ordering::Relaxed), 20);
        let d = *last_end.lock();
        d
    }
}
