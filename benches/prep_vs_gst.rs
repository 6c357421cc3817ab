//! The plugin's CPU frame preparation against GStreamer's own elements, on
//! the same synthetic 1920x1080 NV12 frames (BT.709 limited range, noisy
//! gradients, 4 distinct frames cycled), on this CPU.
//!
//! Ours (single-threaded, public API of `gstvsssummarize`):
//! 1. NV12 → 448x448 RGB: `frames::prepare_rgb`.
//! 2. NV12 → 448x448 JPEG q85: `frames::prepare_jpeg`.
//! 3. NV12 → Qwen2.5-VL `pixel_values`: `frames::to_rgb` per frame, then
//!    `prep::qwen::preprocess_video` on chunks of 8 frames
//!    (default `VisionParams`); no GStreamer equivalent.
//!
//! GStreamer (`appsrc` → elements → `appsink sync=false`, the same NV12 bytes
//! wrapped without copying; timed from the first push to the last sample
//! pulled, after a warm-up frame so pipeline start-up and negotiation are not
//! counted; `videoconvert`/`videoscale` keep their default `n-threads`, which
//! is printed):
//! - a. `videoconvert ! videoscale add-borders=false ! RGB 448x448` (vs 1),
//! - a'. `videoscale add-borders=false ! videoconvert ! RGB 448x448` (scale
//!   the NV12 first; context for 1, not the same work as ours),
//! - b. `videoconvertscale add-borders=false ! RGB 448x448` (vs 1; skipped
//!   with a reason when the element does not exist),
//! - c. `videoconvert ! videoscale add-borders=false ! I420 448x448 !
//!   jpegenc quality=85` (vs 2),
//! - c'. as c with `colorimetry=1:4:0:0` on the I420 caps (vs 2): jpegenc
//!   stores the I420 samples as they are and JFIF readers take them as
//!   full-range BT.601, so c's JPEGs (BT.709 limited range) decode with
//!   washed-out, shifted colours; c' has videoconvert produce what JFIF means.
//!
//! Every figure is the median of 3 repetitions. Outside the timing, the
//! 448x448 RGB of frame 0 from ours and from each GStreamer RGB pipeline are
//! compared (mean absolute difference in 8-bit levels; the two use different
//! chroma siting and resampling filters, so they are similar, not equal), and
//! so are the decoded JPEGs of 2, c and c' against our RGB.
//!
//! Run with `cargo bench --bench prep_vs_gst`; `VSS_BENCH_FRAMES` (default 60)
//! sets the frames per case and repetition. Under `cargo test --all-targets`
//! (no `--bench` argument) it does a tiny smoke run instead, not a
//! measurement.

use gstvsssummarize::prep::cuda::check::Rng;
use std::hint::black_box;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstvsssummarize::frames::{
    prepare_jpeg, prepare_rgb, to_rgb, Colorimetry, Matrix, PixelFormat, RawFrame, RgbImage,
};
use gstvsssummarize::prep::qwen::{preprocess_video, VisionParams};

/// Distinct input frames, cycled.
const DISTINCT: usize = 4;
/// Frames per `preprocess_video` call.
const CHUNK: usize = 8;
/// JPEG quality for ours and `jpegenc`.
const QUALITY: u8 = 85;
/// How long a pull may wait before the pipeline is considered stuck.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

struct Config {
    w: u32,
    h: u32,
    out: u32,
    frames: usize,
    reps: usize,
}

/// Deterministic noise in `0..amplitude` (xorshift32).
fn noise(rng: &mut Rng, amplitude: u32) -> u32 {
    (rng.next_u32() >> 8) % amplitude
}

/// Synthetic BT.709 limited-range NV12 frame `k`: diagonal luma gradient and
/// horizontal/vertical chroma gradients (shifted per frame), all with noise.
/// Tight planes: Y (stride `w`), interleaved UV (stride `2 * ceil(w / 2)`).
fn synthetic_nv12(w: u32, h: u32, k: usize) -> RawFrame {
    let (w, h) = (w as usize, h as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut seed = Rng(0x9E37_79B9u32 ^ (k as u32).wrapping_mul(0x85EB_CA6B));
    let shift = k * 37;
    let mut y = Vec::with_capacity(w * h);
    for r in 0..h {
        for c in 0..w {
            let g = 16 + (((r + c + shift) % (w + h)) * 219 / (w + h)) as u32;
            y.push((g + noise(&mut seed, 24)).min(235) as u8);
        }
    }
    let mut uv = Vec::with_capacity(2 * cw * ch);
    for r in 0..ch {
        for c in 0..cw {
            let u = 16 + (((c + shift) % cw) * 224 / cw) as u32 + noise(&mut seed, 8);
            let v = 16 + (((r + shift) % ch) * 224 / ch) as u32 + noise(&mut seed, 8);
            uv.push(u.min(240) as u8);
            uv.push(v.min(240) as u8);
        }
    }
    RawFrame {
        format: PixelFormat::Nv12,
        width: w as u32,
        height: h as u32,
        planes: vec![y, uv],
        strides: vec![w, 2 * cw],
        colorimetry: Colorimetry {
            matrix: Matrix::Bt709,
            full_range: false,
        },
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median frames/s over `reps` repetitions of `run`, which processes
/// `frames` frames per call.
fn measure(reps: usize, frames: usize, mut run: impl FnMut()) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                run();
                frames as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images differ in size");
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.len() as f64
}

/// Decodes a JPEG to packed RGB.
fn decode_jpeg(jpeg: &[u8]) -> Vec<u8> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    zune_jpeg::JpegDecoder::new_with_options(jpeg, opts)
        .decode()
        .expect("JPEG decodes")
}

/// What one GStreamer pipeline gave.
struct GstResult {
    fps: f64,
    /// The output of frame 0 (warm-up frame): packed RGB without row
    /// padding for raw video, the bytes as they are otherwise.
    first: Vec<u8>,
    /// Mean output buffer size over the timed frames, in bytes.
    mean_bytes: f64,
}

/// The bytes of a sample; raw RGB is repacked without row padding.
fn sample_bytes(sample: &gst::Sample) -> Vec<u8> {
    let buf = sample.buffer().expect("sample has a buffer");
    let map = buf.map_readable().expect("buffer maps");
    let caps = sample.caps().expect("sample has caps");
    let s = caps.structure(0).expect("caps have a structure");
    if s.name() != "video/x-raw" {
        return map.as_slice().to_vec();
    }
    let info = gst_video::VideoInfo::from_caps(caps).expect("raw video caps");
    assert_eq!(info.format(), gst_video::VideoFormat::Rgb, "RGB output");
    let row = info.width() as usize * 3;
    let stride = info.stride()[0] as usize;
    let offset = info.offset()[0];
    (0..info.height() as usize)
        .flat_map(|r| &map[offset + r * stride..offset + r * stride + row])
        .copied()
        .collect()
}

/// Fails loudly with the bus's error, if there is one.
fn check_bus(pipeline: &gst::Pipeline, what: &str) {
    let bus = pipeline.bus().expect("pipeline has a bus");
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            panic!("{what}: {} ({:?})", e.error(), e.debug());
        }
    }
}

/// Runs `appsrc ! {elements} ! appsink` on the frames: one warm-up frame,
/// then `reps` timed repetitions of `frames` frames each.
fn run_gst(cfg: &Config, inputs: &[gst::Buffer], elements: &str) -> GstResult {
    let desc = format!(
        "appsrc name=src format=time \
         caps=video/x-raw,format=NV12,width={w},height={h},framerate=30/1,colorimetry=bt709 \
         ! {elements} ! appsink name=sink sync=false",
        w = cfg.w,
        h = cfg.h,
    );
    let pipeline = gst::parse::launch(&desc)
        .unwrap_or_else(|e| panic!("{desc}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("appsrc");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    src.set_block(true);
    src.set_max_buffers(4);
    pipeline
        .set_state(gst::State::Playing)
        .unwrap_or_else(|e| panic!("{elements}: cannot start: {e}"));

    let frame_ns = 1_000_000_000 / 30;
    let mut n = 0u64;
    let mut push = |k: usize| {
        // A shallow copy: shares the NV12 memory, only the timestamps differ.
        let mut b = inputs[k % inputs.len()].copy();
        {
            let b = b.get_mut().expect("fresh copy is writable");
            b.set_pts(gst::ClockTime::from_nseconds(n * frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
        }
        n += 1;
        src.push_buffer(b).expect("push");
    };
    let pull = || {
        sink.try_pull_sample(gst::ClockTime::from_nseconds(PULL_TIMEOUT.as_nanos() as u64))
            .unwrap_or_else(|| {
                check_bus(&pipeline, elements);
                panic!("{elements}: no sample within {PULL_TIMEOUT:?}")
            })
    };

    push(0);
    let first = sample_bytes(&pull());
    let mut bytes = 0usize;
    let mut fps = Vec::with_capacity(cfg.reps);
    for _ in 0..cfg.reps {
        let t = Instant::now();
        for k in 0..cfg.frames {
            push(k);
        }
        for _ in 0..cfg.frames {
            let s = pull();
            bytes += s.buffer().map_or(0, |b| b.size());
        }
        fps.push(cfg.frames as f64 / t.elapsed().as_secs_f64());
    }
    let _ = src.end_of_stream();
    check_bus(&pipeline, elements);
    pipeline
        .set_state(gst::State::Null)
        .expect("pipeline stops");
    GstResult {
        fps: median(fps),
        first,
        mean_bytes: bytes as f64 / (cfg.reps * cfg.frames) as f64,
    }
}

/// Default value of an element's unsigned property, as a string.
fn default_u32(element: &str, property: &str) -> String {
    gst::ElementFactory::make(element)
        .build()
        .ok()
        .and_then(|e| e.find_property(property))
        .and_then(|p| p.default_value().get::<u32>().ok())
        .map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs us
    // without it: then one small smoke run, not a measurement.
    let benching = std::env::args().any(|a| a == "--bench");
    let cfg = if benching {
        let frames = std::env::var("VSS_BENCH_FRAMES")
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n: &usize| n > 0)
            .unwrap_or(60);
        Config {
            w: 1920,
            h: 1080,
            out: 448,
            frames,
            reps: 3,
        }
    } else {
        Config {
            w: 320,
            h: 180,
            out: 64,
            frames: 2,
            reps: 1,
        }
    };
    gst::init().expect("GStreamer initialises");

    let raws: Vec<RawFrame> = (0..DISTINCT)
        .map(|k| synthetic_nv12(cfg.w, cfg.h, k))
        .collect();
    // The same bytes for GStreamer: Y plane then interleaved UV, stride = width
    // (matches GStreamer's default NV12 layout for even widths).
    let inputs: Vec<gst::Buffer> = raws
        .iter()
        .map(|f| gst::Buffer::from_slice(f.planes.concat()))
        .collect();
    let out = cfg.out;

    println!(
        "frame preparation, ours vs GStreamer {}: {}x{} NV12 BT.709 limited -> {out}x{out}, \
         {} frames per case and repetition ({DISTINCT} distinct, cycled), median of {} repetitions, \
         {} CPU cores{}",
        gst::version_string(),
        cfg.w,
        cfg.h,
        cfg.frames,
        cfg.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if benching {
            ""
        } else {
            " [smoke run under cargo test, not a measurement]"
        }
    );
    println!(
        "ours: single-threaded; GStreamer n-threads defaults: videoconvert {}, videoscale {}, \
         videoconvertscale {} (left as they are); videoscale method default: bilinear",
        default_u32("videoconvert", "n-threads"),
        default_u32("videoscale", "n-threads"),
        default_u32("videoconvertscale", "n-threads"),
    );

    // Ours.
    let frame = |k: usize| &raws[k % DISTINCT];
    let ours_rgb = measure(cfg.reps, cfg.frames, || {
        for k in 0..cfg.frames {
            black_box(prepare_rgb(black_box(frame(k)), out, out).unwrap());
        }
    });
    let ours_jpeg = measure(cfg.reps, cfg.frames, || {
        for k in 0..cfg.frames {
            black_box(prepare_jpeg(black_box(frame(k)), out, out, QUALITY).unwrap());
        }
    });
    let params = VisionParams::default();
    let chunks = cfg.frames.div_ceil(CHUNK);
    let pv_frames = chunks * CHUNK;
    let pv_chunk = |c: usize| {
        let rgbs: Vec<RgbImage> = (0..CHUNK)
            .map(|i| to_rgb(frame(c * CHUNK + i)).unwrap())
            .collect();
        preprocess_video(&rgbs, &params).unwrap()
    };
    let pv = pv_chunk(0);
    let ours_pv = measure(cfg.reps, pv_frames, || {
        for c in 0..chunks {
            black_box(pv_chunk(c));
        }
    });

    // GStreamer.
    let caps_rgb = format!("video/x-raw,format=RGB,width={out},height={out}");
    let caps_i420 = format!("video/x-raw,format=I420,width={out},height={out}");
    let gst_a = run_gst(
        &cfg,
        &inputs,
        &format!("videoconvert ! videoscale add-borders=false ! {caps_rgb}"),
    );
    let gst_a2 = run_gst(
        &cfg,
        &inputs,
        &format!("videoscale add-borders=false ! videoconvert ! {caps_rgb}"),
    );
    let gst_b = if gst::ElementFactory::find("videoconvertscale").is_some() {
        Ok(run_gst(
            &cfg,
            &inputs,
            &format!("videoconvertscale add-borders=false ! {caps_rgb}"),
        ))
    } else {
        Err("no videoconvertscale element in this GStreamer")
    };
    let has_jpegenc = gst::ElementFactory::find("jpegenc").is_some();
    let jpeg_case = |caps: &str| {
        if has_jpegenc {
            Ok(run_gst(
                &cfg,
                &inputs,
                &format!(
                    "videoconvert ! videoscale add-borders=false ! {caps} ! jpegenc quality={QUALITY}"
                ),
            ))
        } else {
            Err("no jpegenc element (gst-plugins-good) in this GStreamer")
        }
    };
    let gst_c = jpeg_case(&caps_i420);
    // jpegenc writes the I420 samples into the JFIF as they are; JFIF means
    // full-range BT.601, so c' asks videoconvert for that.
    let gst_c2 = jpeg_case(&format!("{caps_i420},colorimetry=1:4:0:0"));

    println!();
    println!("| case | ours frames/s | GStreamer frames/s | ratio (ours/GStreamer) |");
    println!("|---|---:|---:|---:|");
    let row = |case: &str, ours: f64, theirs: Result<&GstResult, &str>| match theirs {
        Ok(g) => println!(
            "| {case} | {ours:.1} | {:.1} | {:.2} |",
            g.fps,
            ours / g.fps
        ),
        Err(why) => println!("| {case} | {ours:.1} | skipped: {why} | - |"),
    };
    row(
        "1 vs a: NV12 -> RGB (prepare_rgb vs videoconvert ! videoscale)",
        ours_rgb,
        Ok(&gst_a),
    );
    row(
        "1 vs a': NV12 -> RGB (prepare_rgb vs videoscale ! videoconvert, scales NV12 first)",
        ours_rgb,
        Ok(&gst_a2),
    );
    row(
        "1 vs b: NV12 -> RGB (prepare_rgb vs videoconvertscale)",
        ours_rgb,
        gst_b.as_ref().map_err(|e| *e),
    );
    row(
        "2 vs c: NV12 -> JPEG q85 (prepare_jpeg vs videoconvert ! videoscale ! I420 ! jpegenc)",
        ours_jpeg,
        gst_c.as_ref().map_err(|e| *e),
    );
    row(
        "2 vs c': NV12 -> JPEG q85 (as c, I420 colorimetry=1:4:0:0 = JFIF full-range BT.601)",
        ours_jpeg,
        gst_c2.as_ref().map_err(|e| *e),
    );
    println!(
        "| 3: NV12 -> pixel_values (to_rgb + preprocess_video, {CHUNK}-frame chunks) | {ours_pv:.1} | - (no equivalent) | - ({:.2} x case 1 ours) |",
        ours_pv / ours_rgb
    );

    // Sanity checks, outside the timing.
    println!();
    let ours0 = prepare_rgb(&raws[0], out, out).unwrap();
    println!(
        "sanity, frame 0 {out}x{out} RGB mean abs difference ours vs GStreamer (8-bit levels): \
         a {:.2}, a' {:.2}{}",
        mean_abs_diff(&ours0.data, &gst_a.first),
        mean_abs_diff(&ours0.data, &gst_a2.first),
        match &gst_b {
            Ok(b) => format!(", b {:.2}", mean_abs_diff(&ours0.data, &b.first)),
            Err(_) => String::new(),
        }
    );
    if let (Ok(c), Ok(c2)) = (&gst_c, &gst_c2) {
        let ours_j = prepare_jpeg(&raws[0], out, out, QUALITY).unwrap();
        let ours_bytes: usize = raws
            .iter()
            .map(|f| prepare_jpeg(f, out, out, QUALITY).unwrap().len())
            .sum();
        println!(
            "sanity, frame 0 JPEG q{QUALITY} decoded (zune-jpeg), mean abs difference to our {out}x{out} RGB: \
             ours {:.2}, c {:.2}, c' {:.2} levels",
            mean_abs_diff(&ours0.data, &decode_jpeg(&ours_j)),
            mean_abs_diff(&ours0.data, &decode_jpeg(&c.first)),
            mean_abs_diff(&ours0.data, &decode_jpeg(&c2.first)),
        );
        println!(
            "mean JPEG size: ours {:.0} B, c {:.0} B, c' {:.0} B",
            ours_bytes as f64 / raws.len() as f64,
            c.mean_bytes,
            c2.mean_bytes
        );
    }
    println!(
        "pixel_values per {CHUNK}-frame chunk: {} x {} f32, grid_thw {:?}, frames resized to {}x{} (h x w)",
        pv.rows, pv.cols, pv.grid_thw, pv.resized.0, pv.resized.1
    );
}
