//! A few frames at their own times → one small MP4 (H.264) in memory.
//!
//! Used by `openai-compat`'s video mode (a chunk's sampled frames become one
//! `video_url` data URI) and meant for anything else that needs a short clip
//! of sampled frames (incident clips written to disk). The API has no
//! GStreamer types: frames in, bytes out.
//!
//! Encoding runs an internal pipeline
//! `appsrc ! videoconvert ! videoscale ! capsfilter ! x264enc ! mp4mux ! appsink`
//! on GStreamer's own threads; [`encode`] blocks its caller until the file is
//! complete, an element fails, or [`Mp4Options::timeout`] passes. Call it from
//! a worker thread (a backend worker, `tokio::task::spawn_blocking`), never
//! from a streaming thread or a tokio worker.
//!
//! Rules (one test each, `tests` below):
//! 1. Every frame becomes exactly one video frame, in the order given; the
//!    frames' times must strictly increase (an MP4 cannot hold two frames at
//!    one time), otherwise [`Mp4Error::TimesNotIncreasing`].
//! 2. Times survive: the file's first frame is at 0 and frame `i` at
//!    `pts[i] - pts[0]` (rounded to the 1/90 000 s track timescale). Frame
//!    `i` lasts until frame `i + 1`; the last one lasts the mean interval, so
//!    a reader that derives fps from frame count and duration (OpenCV, vLLM's
//!    loader) gets `1 / mean interval` and, for evenly spaced frames, every
//!    time. A single frame lasts [`Mp4Options::single_frame_duration`].
//! 3. The video has the first frame's size, rounded down to even numbers
//!    (H.264 4:2:0 needs them; 641×361 becomes 640×360). A frame of another
//!    size is scaled to that size (no letterboxing) and counted in
//!    [`Mp4Video::scaled_frames`]; nothing is dropped.
//! 4. Frames are checked before anything runs: a zero or oversized
//!    ([`MAX_SIDE`]) dimension or too little data is [`Mp4Error::BadFrame`]
//!    naming the frame; no frames is [`Mp4Error::NoFrames`].
//! 5. A missing GStreamer element is [`Mp4Error::MissingElement`] naming the
//!    Debian package; an element error is [`Mp4Error::Pipeline`] with
//!    GStreamer's message; a pipeline that does not finish within the timeout
//!    is stopped and reported as [`Mp4Error::Timeout`].
//! 6. The H.264 stream has no B-frames (decode order = display order, which
//!    some minimal decoders and OpenCV's frame counting rely on) and the
//!    `moov` box is written first (`faststart`), so a reader can start from
//!    the first byte of an in-memory buffer.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_video::VideoFrameExt;
use parking_lot::Mutex;

/// Largest accepted width or height.
pub const MAX_SIDE: u32 = 8192;

/// The MP4 track timescale (ticks per second): 90 kHz, the usual video clock,
/// exact for 25, 30, 50, 60 and 1 fps.
pub const TIMESCALE: u32 = 90_000;

/// Pixel layouts [`encode`] accepts; both tightly packed (no row padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mp4Pixels {
    /// Packed 8-bit R, G, B; rows `3 * width` bytes.
    Rgb,
    /// Planar 4:2:0: Y (`width * height`), then U and V
    /// (`ceil(width / 2) * ceil(height / 2)` each).
    I420,
}

impl Mp4Pixels {
    fn caps_name(self) -> &'static str {
        match self {
            Mp4Pixels::Rgb => "RGB",
            Mp4Pixels::I420 => "I420",
        }
    }

    /// (row bytes, rows) of each plane.
    fn planes(self, w: usize, h: usize) -> Vec<(usize, usize)> {
        match self {
            Mp4Pixels::Rgb => vec![(3 * w, h)],
            Mp4Pixels::I420 => {
                let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
                vec![(w, h), (cw, ch), (cw, ch)]
            }
        }
    }

    /// Bytes of a tightly packed frame.
    pub fn frame_bytes(self, width: u32, height: u32) -> usize {
        self.planes(width as usize, height as usize)
            .iter()
            .map(|(r, n)| r * n)
            .sum()
    }
}

/// One frame to encode.
#[derive(Clone, Copy)]
pub struct Mp4Frame<'a> {
    pub pixels: Mp4Pixels,
    pub width: u32,
    pub height: u32,
    /// Tightly packed pixels (see [`Mp4Pixels`]); extra bytes are ignored.
    pub data: &'a [u8],
    /// The frame's time (stream time, ns); only differences matter.
    pub pts_ns: u64,
}

impl fmt::Debug for Mp4Frame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mp4Frame")
            .field("pixels", &self.pixels)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("data_len", &self.data.len())
            .field("pts_ns", &self.pts_ns)
            .finish()
    }
}

/// Encoder settings; [`Default`] suits frames shown to a VLM.
#[derive(Clone, Debug)]
pub struct Mp4Options {
    /// Longest the whole encode may take (default 20 s).
    pub timeout: Duration,
    /// x264 constant-quality quantizer, 0 (lossless) to 50; default 20
    /// (visually clean: a model should not read compression artefacts).
    pub quantizer: u32,
    /// x264 speed preset name (default `veryfast`).
    pub speed_preset: &'static str,
    /// How long a lone frame lasts in the file (default 1 s).
    pub single_frame_duration: Duration,
}

impl Default for Mp4Options {
    fn default() -> Self {
        Mp4Options {
            timeout: Duration::from_secs(20),
            quantizer: 20,
            speed_preset: "veryfast",
            single_frame_duration: Duration::from_secs(1),
        }
    }
}

/// A finished MP4.
#[derive(Clone)]
pub struct Mp4Video {
    /// The file.
    pub bytes: Vec<u8>,
    /// The video's size (the first frame's, rounded down to even).
    pub width: u32,
    pub height: u32,
    /// Each frame's time in the file, ns from the first frame (rule 2).
    pub times_ns: Vec<u64>,
    /// The first frame's `pts_ns` (file time 0).
    pub offset_ns: u64,
    /// `frames / duration`: what a reader deriving fps from the container gets.
    pub fps: f64,
    /// Frames whose size differed from the first one's and were scaled.
    pub scaled_frames: usize,
}

impl fmt::Debug for Mp4Video {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mp4Video")
            .field("bytes", &self.bytes.len())
            .field("width", &self.width)
            .field("height", &self.height)
            .field("times_ns", &self.times_ns)
            .field("fps", &self.fps)
            .field("scaled_frames", &self.scaled_frames)
            .finish()
    }
}

/// Why no MP4 came out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mp4Error {
    #[error("no frames to encode")]
    NoFrames,
    #[error("frame {index}: {reason}")]
    BadFrame { index: usize, reason: String },
    #[error("frame {index}: time {pts_ns} ns is not after the previous frame's {prev_ns} ns")]
    TimesNotIncreasing {
        index: usize,
        pts_ns: u64,
        prev_ns: u64,
    },
    #[error("GStreamer element '{element}' is missing (install {package})")]
    MissingElement {
        element: &'static str,
        package: &'static str,
    },
    #[error("MP4 encoding failed: {0}")]
    Pipeline(String),
    #[error("MP4 encoding did not finish within {0:?}")]
    Timeout(Duration),
}

/// The elements of the pipeline and the Debian packages that bring them.
const ELEMENTS: [(&str, &str); 7] = [
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("videoconvert", "gstreamer1.0-plugins-base"),
    ("videoscale", "gstreamer1.0-plugins-base"),
    ("capsfilter", "gstreamer1.0 (core)"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("mp4mux", "gstreamer1.0-plugins-good"),
    ("appsink", "gstreamer1.0-plugins-base"),
];

/// Whether every element [`encode`] needs is installed (`Err` names the
/// first missing one). Cheap; for start-up checks.
pub fn available() -> Result<(), Mp4Error> {
    gst::init().map_err(|e| Mp4Error::Pipeline(format!("GStreamer init: {e}")))?;
    for (element, package) in ELEMENTS {
        if gst::ElementFactory::find(element).is_none() {
            return Err(Mp4Error::MissingElement { element, package });
        }
    }
    Ok(())
}

/// The file times (rule 2): ns from the first frame, plus each frame's
/// duration.
fn file_times(frames: &[Mp4Frame], single: Duration) -> Result<(Vec<u64>, Vec<u64>), Mp4Error> {
    let t0 = frames[0].pts_ns;
    let mut times = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        if i > 0 && f.pts_ns <= frames[i - 1].pts_ns {
            return Err(Mp4Error::TimesNotIncreasing {
                index: i,
                pts_ns: f.pts_ns,
                prev_ns: frames[i - 1].pts_ns,
            });
        }
        times.push(f.pts_ns - t0);
    }
    let n = times.len();
    let last_dur = if n == 1 {
        (single.as_nanos() as u64).max(1)
    } else {
        (times[n - 1] / (n as u64 - 1)).max(1)
    };
    let durs = (0..n)
        .map(|i| {
            if i + 1 < n {
                times[i + 1] - times[i]
            } else {
                last_dur
            }
        })
        .collect();
    Ok((times, durs))
}

fn check_frame(index: usize, f: &Mp4Frame) -> Result<(), Mp4Error> {
    let bad = |reason: String| Err(Mp4Error::BadFrame { index, reason });
    if f.width == 0 || f.height == 0 || f.width > MAX_SIDE || f.height > MAX_SIDE {
        return bad(format!(
            "size {}x{} is outside 1..={MAX_SIDE}",
            f.width, f.height
        ));
    }
    let need = f.pixels.frame_bytes(f.width, f.height);
    if f.data.len() < need {
        return bad(format!(
            "{} {}x{} needs {need} bytes, has {}",
            f.pixels.caps_name(),
            f.width,
            f.height,
            f.data.len()
        ));
    }
    Ok(())
}

/// Encodes `frames` (rules in the module doc). Blocks; see the module doc
/// for where to call it.
pub fn encode(frames: &[Mp4Frame], opts: &Mp4Options) -> Result<Mp4Video, Mp4Error> {
    if frames.is_empty() {
        return Err(Mp4Error::NoFrames);
    }
    for (i, f) in frames.iter().enumerate() {
        check_frame(i, f)?;
    }
    let (times, durs) = file_times(frames, opts.single_frame_duration)?;
    available()?;

    let out_w = (frames[0].width & !1).max(2);
    let out_h = (frames[0].height & !1).max(2);
    let total: u64 = durs.iter().sum();
    let fps = frames.len() as f64 * 1e9 / total as f64;
    let scaled_frames = frames
        .iter()
        .filter(|f| (f.width, f.height) != (frames[0].width, frames[0].height))
        .count();

    let run = Pipeline::build(out_w, out_h, fps, opts)?;
    let result = run.encode(frames, &times, &durs, opts.timeout);
    run.stop();
    let bytes = result?;
    Ok(Mp4Video {
        bytes,
        width: out_w,
        height: out_h,
        times_ns: times,
        offset_ns: frames[0].pts_ns,
        fps,
        scaled_frames,
    })
}

fn make(name: &'static str) -> Result<gst::Element, Mp4Error> {
    gst::ElementFactory::make(name).build().map_err(|_| {
        let package = ELEMENTS
            .iter()
            .find(|(e, _)| *e == name)
            .map(|(_, p)| *p)
            .unwrap_or("GStreamer plugins");
        Mp4Error::MissingElement {
            element: name,
            package,
        }
    })
}

fn perr(what: &str, e: impl fmt::Display) -> Mp4Error {
    Mp4Error::Pipeline(format!("{what}: {e}"))
}

/// Caps' framerate: the mean fps as a fraction with a 1001-friendly
/// denominator (x264 uses it for rate control only; times come from the
/// buffers).
fn fps_fraction(fps: f64) -> gst::Fraction {
    let den = 1000;
    let num = ((fps * den as f64).round() as i32).clamp(1, 1_000_000);
    gst::Fraction::new(num, den)
}

struct Pipeline {
    pipeline: gst::Pipeline,
    src: gst::Element,
    out: Arc<Mutex<Vec<u8>>>,
    /// Set by the probe when mp4mux jumps back to rewrite bytes.
    seen_back: Arc<Mutex<bool>>,
    fps: gst::Fraction,
}

impl Pipeline {
    fn build(w: u32, h: u32, fps: f64, opts: &Mp4Options) -> Result<Pipeline, Mp4Error> {
        let pipeline = gst::Pipeline::new();
        let src = make("appsrc")?;
        let convert = make("videoconvert")?;
        let scale = make("videoscale")?;
        let filter = make("capsfilter")?;
        let enc = make("x264enc")?;
        let mux = make("mp4mux")?;
        let sink = make("appsink")?;
        let fps = fps_fraction(fps);

        src.set_property("format", gst::Format::Time);
        src.set_property("is-live", false);
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .field("width", w as i32)
                .field("height", h as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        enc.set_property_from_str("speed-preset", opts.speed_preset);
        enc.set_property_from_str("pass", "qual");
        enc.set_property("quantizer", opts.quantizer.min(50));
        enc.set_property("bframes", 0u32);
        enc.set_property("b-adapt", false);
        mux.set_property("faststart", true);
        mux.set_property("trak-timescale", TIMESCALE);
        sink.set_property("sync", false);
        sink.set_property("emit-signals", true);

        let out = Arc::new(Mutex::new(Vec::new()));
        let out2 = out.clone();
        sink.connect("new-sample", false, move |args| {
            let sink = args[0].get::<gst::Element>().ok()?;
            let sample = sink.emit_by_name::<Option<gst::Sample>>("pull-sample", &[]);
            let Some(sample) = sample else {
                return Some(gst::FlowReturn::Eos.to_value());
            };
            if let Some(buf) = sample.buffer() {
                if let Ok(map) = buf.map_readable() {
                    out2.lock().extend_from_slice(&map);
                }
            }
            Some(gst::FlowReturn::Ok.to_value())
        });
        // mp4mux only rewrites earlier bytes when downstream is seekable;
        // with faststart it writes the file front to back. A byte segment
        // that jumps back would corrupt the file: refuse it loudly.
        let sinkpad = sink
            .static_pad("sink")
            .ok_or_else(|| perr("appsink", "no sink pad"))?;
        let seen_back = Arc::new(Mutex::new(false));
        let out3 = out.clone();
        let seen2 = seen_back.clone();
        sinkpad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data {
                if let gst::EventView::Segment(s) = ev.view() {
                    let seg = s.segment();
                    if seg.format() == gst::Format::Bytes {
                        let start = seg.start().value();
                        if start >= 0 && (start as usize) < out3.lock().len() {
                            *seen2.lock() = true;
                        }
                    }
                }
            }
            gst::PadProbeReturn::Ok
        });

        pipeline
            .add_many([&src, &convert, &scale, &filter, &enc, &mux, &sink])
            .map_err(|e| perr("pipeline", e))?;
        gst::Element::link_many([&src, &convert, &scale, &filter, &enc, &mux, &sink])
            .map_err(|e| perr("linking", e))?;
        Ok(Pipeline {
            pipeline,
            src,
            out,
            seen_back,
            fps,
        })
    }

    fn caps_for(&self, f: &Mp4Frame) -> Result<gst_video::VideoInfo, Mp4Error> {
        let fmt = match f.pixels {
            Mp4Pixels::Rgb => gst_video::VideoFormat::Rgb,
            Mp4Pixels::I420 => gst_video::VideoFormat::I420,
        };
        gst_video::VideoInfo::builder(fmt, f.width, f.height)
            .fps(self.fps)
            .par(gst::Fraction::new(1, 1))
            .build()
            .map_err(|e| perr("video info", e))
    }

    fn encode(
        &self,
        frames: &[Mp4Frame],
        times: &[u64],
        durs: &[u64],
        timeout: Duration,
    ) -> Result<Vec<u8>, Mp4Error> {
        let deadline = Instant::now() + timeout;
        let bus = self
            .pipeline
            .bus()
            .ok_or_else(|| perr("pipeline", "no bus"))?;
        self.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| perr("starting", e))?;
        let mut caps_of: Option<(u32, u32)> = None;
        for (i, f) in frames.iter().enumerate() {
            let info = self.caps_for(f)?;
            if caps_of != Some((f.width, f.height)) {
                let caps = info.to_caps().map_err(|e| perr("caps", e))?;
                self.src.set_property("caps", &caps);
                caps_of = Some((f.width, f.height));
            }
            let mut buf = fill_buffer(&info, f)?;
            {
                let b = buf.get_mut().expect("fresh buffer is writable");
                b.set_pts(gst::ClockTime::from_nseconds(times[i]));
                b.set_dts(gst::ClockTime::from_nseconds(times[i]));
                b.set_duration(gst::ClockTime::from_nseconds(durs[i]));
            }
            let ret = self
                .src
                .emit_by_name::<gst::FlowReturn>("push-buffer", &[&buf]);
            if ret != gst::FlowReturn::Ok {
                return Err(self
                    .bus_error(&bus)
                    .unwrap_or_else(|| Mp4Error::Pipeline(format!("frame {i} refused: {ret:?}"))));
            }
        }
        let _ = self
            .src
            .emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Mp4Error::Timeout(timeout));
            }
            let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_nseconds(left.as_nanos() as u64),
                &[gst::MessageType::Eos, gst::MessageType::Error],
            ) else {
                return Err(Mp4Error::Timeout(timeout));
            };
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => return Err(error_of(e)),
                _ => {}
            }
        }
        if *self.seen_back.lock() {
            return Err(Mp4Error::Pipeline(
                "mp4mux rewrote earlier bytes (faststart not honoured)".into(),
            ));
        }
        let bytes = std::mem::take(&mut *self.out.lock());
        if bytes.is_empty() {
            return Err(Mp4Error::Pipeline("mp4mux wrote nothing".into()));
        }
        Ok(bytes)
    }

    fn bus_error(&self, bus: &gst::Bus) -> Option<Mp4Error> {
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(100),
            &[gst::MessageType::Error],
        )?;
        match msg.view() {
            gst::MessageView::Error(e) => Some(error_of(e)),
            _ => None,
        }
    }

    fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn error_of(e: &gst::message::Error) -> Mp4Error {
    let from = e
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    Mp4Error::Pipeline(format!("{from}: {}", e.error()))
}

/// Copies a tightly packed frame into a GStreamer buffer laid out as
/// `info` says (row strides padded to 4 bytes).
fn fill_buffer(info: &gst_video::VideoInfo, f: &Mp4Frame) -> Result<gst::Buffer, Mp4Error> {
    let buf = gst::Buffer::with_size(info.size()).map_err(|e| perr("buffer", e))?;
    let mut vf = gst_video::VideoFrame::from_buffer_writable(buf, info)
        .map_err(|_| perr("buffer", "map"))?;
    let mut src_off = 0usize;
    for (p, (row, rows)) in f
        .pixels
        .planes(f.width as usize, f.height as usize)
        .into_iter()
        .enumerate()
    {
        let stride = vf.plane_stride()[p] as usize;
        let dst = vf
            .plane_data_mut(p as u32)
            .map_err(|e| perr("buffer plane", e))?;
        for r in 0..rows {
            dst[r * stride..r * stride + row]
                .copy_from_slice(&f.data[src_off + r * row..src_off + (r + 1) * row]);
        }
        src_off += row * rows;
    }
    Ok(vf.into_buffer())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// A solid grey RGB frame of level `v`.
    fn grey_rgb(w: u32, h: u32, v: u8) -> Vec<u8> {
        vec![v; (w * h * 3) as usize]
    }

    fn frames<'a>(data: &'a [Vec<u8>], w: u32, h: u32, times: &[u64]) -> Vec<Mp4Frame<'a>> {
        data.iter()
            .zip(times)
            .map(|(d, &t)| Mp4Frame {
                pixels: Mp4Pixels::Rgb,
                width: w,
                height: h,
                data: d,
                pts_ns: t,
            })
            .collect()
    }

    /// A decoded frame: (pts ns, width, height, mean luma).
    type Decoded = (u64, u32, u32, f64);

    /// Demuxes and decodes `mp4` with GStreamer (qtdemux, avdec_h264).
    fn decode(mp4: &[u8]) -> Vec<Decoded> {
        gst::init().unwrap();
        let p = gst::parse::launch(
            "appsrc name=src caps=video/quicktime ! qtdemux ! h264parse ! avdec_h264 ! \
             videoconvert ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false",
        )
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let src = p
            .by_name("src")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        let sink = p
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        src.push_buffer(gst::Buffer::from_slice(mp4.to_vec()))
            .unwrap();
        src.end_of_stream().unwrap();
        let mut out = Vec::new();
        while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(30)) {
            let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
            let buf = s.buffer().unwrap();
            let f = gst_video::VideoFrameRef::from_buffer_ref_readable(buf, &info).unwrap();
            let stride = f.plane_stride()[0] as usize;
            let d = f.plane_data(0).unwrap();
            let (w, h) = (info.width() as usize, info.height() as usize);
            let sum: u64 = (0..h)
                .flat_map(|y| d[y * stride..y * stride + w].iter())
                .map(|&v| v as u64)
                .sum();
            out.push((
                buf.pts().unwrap().nseconds(),
                info.width(),
                info.height(),
                sum as f64 / (w * h) as f64,
            ));
        }
        p.set_state(gst::State::Null).unwrap();
        out
    }

    /// Rule 1: one decoded frame per input frame, in order (each frame is
    /// brighter than the one before).
    #[test]
    fn rule1_every_frame_once_in_order() {
        for n in [2usize, 5, 32] {
            let data: Vec<_> = (0..n)
                .map(|i| grey_rgb(64, 48, (20 + i * 200 / n) as u8))
                .collect();
            let times: Vec<u64> = (0..n as u64).map(|i| i * S / 2).collect();
            let v = encode(&frames(&data, 64, 48, &times), &Mp4Options::default()).unwrap();
            let dec = decode(&v.bytes);
            assert_eq!(dec.len(), n, "{n} frames");
            for w in dec.windows(2) {
                assert!(w[1].3 > w[0].3 + 2.0, "order: {dec:?}");
            }
        }
    }

    /// Rule 1: equal or decreasing times are refused, naming the frame.
    #[test]
    fn rule1_times_must_increase() {
        let data = vec![grey_rgb(16, 16, 0); 3];
        let err = encode(&frames(&data, 16, 16, &[0, S, S]), &Mp4Options::default()).unwrap_err();
        assert_eq!(
            err,
            Mp4Error::TimesNotIncreasing {
                index: 2,
                pts_ns: S,
                prev_ns: S
            }
        );
    }

    /// Rule 2: uneven times, far from zero, come back from the file
    /// relative to the first frame; fps is frames / duration.
    #[test]
    fn rule2_times_survive() {
        let t0 = 3_600 * S + 123_456_789;
        let rel = [0, 400_000_000, 1_100_000_000, 1_500_000_000, 2_000_000_000];
        let times: Vec<u64> = rel.iter().map(|r| t0 + r).collect();
        let data: Vec<_> = (0..5).map(|i| grey_rgb(32, 32, 40 * i as u8)).collect();
        let v = encode(&frames(&data, 32, 32, &times), &Mp4Options::default()).unwrap();
        assert_eq!(v.offset_ns, t0);
        assert_eq!(v.times_ns, rel);
        // 5 frames over 2.0 s + one mean interval (0.5 s).
        assert!((v.fps - 2.0).abs() < 1e-9, "{}", v.fps);
        let dec = decode(&v.bytes);
        let got: Vec<u64> = dec.iter().map(|d| d.0).collect();
        for (g, r) in got.iter().zip(rel) {
            assert!(
                g.abs_diff(r) <= S / TIMESCALE as u64 + 1,
                "{got:?} vs {rel:?}"
            );
        }
        // A lone frame lasts single_frame_duration.
        let one = encode(&frames(&data[..1], 32, 32, &[t0]), &Mp4Options::default()).unwrap();
        assert!((one.fps - 1.0).abs() < 1e-9);
        assert_eq!(decode(&one.bytes).len(), 1);
    }

    /// Rule 3: odd sizes round down to even; other sizes are scaled to the
    /// first frame's and counted.
    #[test]
    fn rule3_sizes() {
        let data = vec![grey_rgb(641, 361, 50), grey_rgb(641, 361, 100)];
        let v = encode(&frames(&data, 641, 361, &[0, S]), &Mp4Options::default()).unwrap();
        assert_eq!((v.width, v.height, v.scaled_frames), (640, 360, 0));
        assert!(decode(&v.bytes).iter().all(|d| (d.1, d.2) == (640, 360)));

        let small = grey_rgb(160, 90, 150);
        let big = grey_rgb(320, 180, 50);
        let mixed = [
            Mp4Frame {
                pixels: Mp4Pixels::Rgb,
                width: 320,
                height: 180,
                data: &big,
                pts_ns: 0,
            },
            Mp4Frame {
                pixels: Mp4Pixels::Rgb,
                width: 160,
                height: 90,
                data: &small,
                pts_ns: S,
            },
            Mp4Frame {
                pixels: Mp4Pixels::Rgb,
                width: 320,
                height: 180,
                data: &big,
                pts_ns: 2 * S,
            },
        ];
        let v = encode(&mixed, &Mp4Options::default()).unwrap();
        assert_eq!((v.width, v.height, v.scaled_frames), (320, 180, 1));
        let dec = decode(&v.bytes);
        assert_eq!(dec.len(), 3);
        assert!(dec.iter().all(|d| (d.1, d.2) == (320, 180)), "{dec:?}");
        // The small frame is the bright one, scaled, not dropped.
        assert!(dec[1].3 > dec[0].3 + 30.0 && dec[1].3 > dec[2].3 + 30.0);
    }

    /// I420 input (odd size) encodes like RGB.
    #[test]
    fn i420_input() {
        let (w, h) = (33u32, 17u32);
        let n = Mp4Pixels::I420.frame_bytes(w, h);
        assert_eq!(n, 33 * 17 + 2 * 17 * 9);
        let mut a = vec![128u8; n];
        a[..(w * h) as usize].fill(40);
        let mut b = vec![128u8; n];
        b[..(w * h) as usize].fill(200);
        let f = |d: &'static [u8], t| Mp4Frame {
            pixels: Mp4Pixels::I420,
            width: w,
            height: h,
            data: d,
            pts_ns: t,
        };
        let (a, b): (&'static [u8], &'static [u8]) = (a.leak(), b.leak());
        let v = encode(&[f(a, 0), f(b, S / 10)], &Mp4Options::default()).unwrap();
        let dec = decode(&v.bytes);
        assert_eq!(dec.len(), 2);
        assert_eq!((dec[0].1, dec[0].2), (32, 16));
        assert!(dec[1].3 > dec[0].3 + 100.0, "{dec:?}");
    }

    /// Rule 4: frames are checked before anything runs.
    #[test]
    fn rule4_bad_frames() {
        let o = Mp4Options::default();
        assert_eq!(encode(&[], &o).unwrap_err(), Mp4Error::NoFrames);
        let d = grey_rgb(8, 8, 0);
        let mut f = frames(std::slice::from_ref(&d), 8, 8, &[0]);
        f.push(Mp4Frame { width: 9, ..f[0] });
        f[1].pts_ns = 1;
        match encode(&f, &o).unwrap_err() {
            Mp4Error::BadFrame { index: 1, reason } => assert!(reason.contains("needs 216 bytes")),
            e => panic!("{e:?}"),
        }
        f[1].width = 0;
        assert!(matches!(
            encode(&f, &o).unwrap_err(),
            Mp4Error::BadFrame { index: 1, .. }
        ));
        f[1].width = MAX_SIDE + 1;
        assert!(matches!(
            encode(&f, &o).unwrap_err(),
            Mp4Error::BadFrame { index: 1, .. }
        ));
    }

    /// Rule 5: a missing element names its package; a pipeline that cannot
    /// finish in time is stopped and reported.
    #[test]
    fn rule5_errors() {
        gst::init().unwrap();
        assert!(available().is_ok());
        let e = make("x264enc-not-installed").unwrap_err();
        assert!(e.to_string().contains("x264enc-not-installed"), "{e}");
        let data = vec![grey_rgb(64, 64, 0); 4];
        let o = Mp4Options {
            timeout: Duration::ZERO,
            ..Mp4Options::default()
        };
        let err = encode(&frames(&data, 64, 64, &[0, 1, 2, 3]), &o).unwrap_err();
        assert_eq!(err, Mp4Error::Timeout(Duration::ZERO));
        assert!(err.to_string().contains("did not finish"));
    }

    /// Rule 6: `moov` before `mdat`; no B-frames (decode times equal
    /// presentation times after demuxing).
    #[test]
    fn rule6_faststart_no_bframes() {
        let data: Vec<_> = (0..12).map(|i| grey_rgb(64, 64, (i * 20) as u8)).collect();
        let times: Vec<u64> = (0..12).map(|i| i * S / 5).collect();
        let v = encode(&frames(&data, 64, 64, &times), &Mp4Options::default()).unwrap();
        let mut boxes = Vec::new();
        let mut at = 0usize;
        while at + 8 <= v.bytes.len() {
            let size = u32::from_be_bytes(v.bytes[at..at + 4].try_into().unwrap()) as usize;
            boxes.push(String::from_utf8_lossy(&v.bytes[at + 4..at + 8]).to_string());
            if size < 8 {
                break;
            }
            at += size;
        }
        assert_eq!(at, v.bytes.len(), "boxes {boxes:?} do not tile the file");
        let moov = boxes.iter().position(|b| b == "moov").unwrap();
        let mdat = boxes.iter().position(|b| b == "mdat").unwrap();
        assert!(moov < mdat, "{boxes:?}");
        // No ctts box (composition offsets) means no reordering.
        assert!(
            !v.bytes.windows(4).any(|w| w == b"ctts"),
            "the file has composition offsets (B-frames)"
        );
    }
}
