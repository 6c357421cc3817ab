// SPDX-License-Identifier: MPL-2.0
//! Shared test helpers: plugin init, synthetic video, running a pipeline
//! built around `vsssummarize` with appsrc / appsinks, and collecting every
//! output (summary buffers, metas on video buffers, bus messages).
#![allow(dead_code)]

pub mod mock_openai;
pub mod port;
pub mod procs;
pub mod qwen;

use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use gst::prelude::*;

#[allow(unused_imports)]
pub use mock_openai::{MockServer, Reply, PALETTE};

static INIT: Once = Once::new();

pub fn init() {
    INIT.call_once(|| {
        gst::init().unwrap();
        gstvsssummarize::plugin_register_static().expect("register plugin");
    });
}

/// BT.601 limited-range YUV of an RGB colour.
pub fn rgb_to_yuv601(rgb: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = rgb.map(f64::from);
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    [y, u, v].map(|x| x.round().clamp(0.0, 255.0) as u8)
}

/// A solid I420 frame.
pub fn i420_frame(w: usize, h: usize, rgb: [u8; 3]) -> Vec<u8> {
    let [y, u, v] = rgb_to_yuv601(rgb);
    let cw = w.div_ceil(2);
    let ch = h.div_ceil(2);
    let mut out = vec![y; w * h];
    out.extend(std::iter::repeat_n(u, cw * ch));
    out.extend(std::iter::repeat_n(v, cw * ch));
    out
}

/// The palette colour shown during second `s` of the test videos.
pub fn colour_of_second(s: u64) -> (&'static str, [u8; 3]) {
    PALETTE[(s as usize) % PALETTE.len()]
}

/// Everything a run produced.
#[derive(Default, Debug)]
pub struct Outputs {
    /// (pts, duration, bytes, caps name) per summary buffer.
    pub summaries: Vec<(u64, u64, Vec<u8>, String)>,
    /// Structures of VssSummaryMeta found on video buffers, in order.
    pub metas: Vec<gst::Structure>,
    pub video_buffers: usize,
    pub messages: Vec<gst::Structure>,
    /// `vss-alert` element messages, in order.
    pub alerts: Vec<gst::Structure>,
    /// Other element messages of the element (`vss-prompt`, …), in order.
    pub other_messages: Vec<gst::Structure>,
    /// `vss-incident` element messages, in order.
    pub incidents: Vec<gst::Structure>,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
    pub errors: Vec<String>,
    pub got_eos: bool,
    /// Order of EOS arrival: "summary" / "video".
    pub eos_order: Vec<&'static str>,
}

impl Outputs {
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.summaries
            .iter()
            .map(|(_, _, b, _)| serde_json::from_slice(b).expect("summary is JSON"))
            .collect()
    }
}

pub struct Run {
    pub pipeline: gst::Pipeline,
    pub appsrc: gst_app::AppSrc,
    pub element: gst::Element,
    out: Arc<Mutex<Outputs>>,
}

pub struct Video {
    pub width: usize,
    pub height: usize,
    pub fps: u64,
    pub seconds: u64,
}

impl Video {
    /// The tests' usual clip: 64×48 at 10 fps.
    pub fn small(seconds: u64) -> Video {
        Video {
            width: 64,
            height: 48,
            fps: 10,
            seconds,
        }
    }
}

/// A test that panics before `stop()` still takes its pipeline to NULL, so
/// GStreamer's "disposing an element in PLAYING" critical (fatal under
/// `G_DEBUG=fatal_warnings`) does not kill the process before the panic's
/// message is printed.
impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Run {
    /// `props` is a gst-launch property string for vsssummarize. Without
    /// `summarize=` in it the element runs with `summarize=false`: the tests
    /// written for captions see only captions (tests/summaries.rs sets it).
    /// `summary_caps`: capsfilter placed before the summary appsink ("" for none).
    pub fn new(props: &str, summary_caps: &str, live: bool, w: usize, h: usize, fps: u64) -> Run {
        init();
        let props = &if props.contains("summarize=") {
            props.to_string()
        } else {
            format!("summarize=false {props}")
        };
        let caps_filter = if summary_caps.is_empty() {
            String::new()
        } else {
            format!("! {summary_caps} ")
        };
        let desc = format!(
            "appsrc name=in format=time is-live={live} caps=video/x-raw,format=I420,width={w},height={h},framerate={fps}/1,colorimetry=bt601 \
             ! vsssummarize name=s {props} \
             s.summary_src {caps_filter}! appsink name=sum sync=false emit-signals=false \
             s.src ! appsink name=vid sync=false"
        );
        let pipeline = gst::parse::launch(&desc)
            .expect("pipeline parses")
            .downcast::<gst::Pipeline>()
            .unwrap();
        let appsrc = pipeline
            .by_name("in")
            .unwrap()
            .downcast::<gst_app::AppSrc>()
            .unwrap();
        appsrc.set_property("block", true);
        appsrc.set_property("max-bytes", 64u64 * 1024 * 1024);
        let element = pipeline.by_name("s").unwrap();
        let out = Arc::new(Mutex::new(Outputs::default()));

        let sum = pipeline
            .by_name("sum")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let o = out.clone();
        let o2 = out.clone();
        sum.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let b = sample.buffer().unwrap();
                    let caps = sample
                        .caps()
                        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
                        .unwrap_or_default();
                    let data = b.map_readable().unwrap().to_vec();
                    o.lock().unwrap().summaries.push((
                        b.pts().map(|t| t.nseconds()).unwrap_or(u64::MAX),
                        b.duration().map(|t| t.nseconds()).unwrap_or(u64::MAX),
                        data,
                        caps,
                    ));
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| o2.lock().unwrap().eos_order.push("summary"))
                .build(),
        );
        let vid = pipeline
            .by_name("vid")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let o = out.clone();
        let o2 = out.clone();
        vid.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let b = sample.buffer().unwrap();
                    let mut o = o.lock().unwrap();
                    o.video_buffers += 1;
                    if let Some(m) = gstvsssummarize::meta::read(b) {
                        o.metas.push(m);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| o2.lock().unwrap().eos_order.push("video"))
                .build(),
        );
        Run {
            pipeline,
            appsrc,
            element,
            out,
        }
    }

    pub fn play(&self) -> Result<(), String> {
        self.pipeline
            .set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|_| {
                self.drain_bus();
                format!("state change failed: {:?}", self.out.lock().unwrap().errors)
            })
    }

    /// Pushes frames of the test video: second s shows `colour_of_second(s)`.
    pub fn push_video(&self, v: &Video) {
        self.push_range(v, 0, v.seconds * v.fps);
    }

    pub fn push_range(&self, v: &Video, from_frame: u64, to_frame: u64) {
        let dur = 1_000_000_000 / v.fps;
        for i in from_frame..to_frame {
            let pts = i * 1_000_000_000 / v.fps;
            let (_, rgb) = colour_of_second(pts / 1_000_000_000);
            let mut b = gst::Buffer::from_mut_slice(i420_frame(v.width, v.height, rgb));
            {
                let b = b.get_mut().unwrap();
                b.set_pts(gst::ClockTime::from_nseconds(pts));
                b.set_duration(gst::ClockTime::from_nseconds(dur));
            }
            if self.appsrc.push_buffer(b).is_err() {
                return;
            }
        }
    }

    pub fn end(&self) {
        let _ = self.appsrc.end_of_stream();
    }

    /// Collects bus messages until EOS or error or timeout.
    pub fn wait_eos(&self, timeout: Duration) -> bool {
        let bus = self.pipeline.bus().unwrap();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
                if self.handle(&msg) {
                    return true;
                }
                if matches!(msg.view(), gst::MessageView::Error(_)) {
                    return false;
                }
            }
        }
        false
    }

    pub fn drain_bus(&self) {
        let bus = self.pipeline.bus().unwrap();
        while let Some(msg) = bus.pop() {
            self.handle(&msg);
        }
    }

    fn handle(&self, msg: &gst::Message) -> bool {
        let mut o = self.out.lock().unwrap();
        match msg.view() {
            gst::MessageView::Eos(_) => {
                o.got_eos = true;
                return true;
            }
            gst::MessageView::Error(e) => o.errors.push(format!("{} ({:?})", e.error(), e.debug())),
            gst::MessageView::Warning(w) => {
                o.warnings.push(format!("{} ({:?})", w.error(), w.debug()))
            }
            gst::MessageView::Info(i) => o.infos.push(i.error().to_string()),
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    if s.name() == "vss-summary" {
                        o.messages.push(s.to_owned());
                    } else if s.name() == "vss-alert" {
                        o.alerts.push(s.to_owned());
                    } else if s.name() == "vss-incident" {
                        o.incidents.push(s.to_owned());
                    } else if s.name().starts_with("vss-") {
                        o.other_messages.push(s.to_owned());
                    }
                }
            }
            _ => {}
        }
        false
    }

    pub fn stop(&self) {
        self.drain_bus();
        self.pipeline.set_state(gst::State::Null).unwrap();
    }

    pub fn outputs(&self) -> std::sync::MutexGuard<'_, Outputs> {
        self.out.lock().unwrap()
    }

    pub fn prop_u64(&self, name: &str) -> u64 {
        self.element.property::<u64>(name)
    }
}

/// A pipeline fed with `v`'s format, not started.
pub fn with_video(props: &str, v: &Video, live: bool) -> Run {
    Run::new(props, "", live, v.width, v.height, v.fps)
}

/// Plays `v` into a pipeline whose endpoint stalls, and returns once at
/// least `n` requests hang at the server.
pub fn stalled(props: &str, v: &Video, server: &MockServer, n: usize) -> Run {
    server.set_policy(|_, _| Reply::Stall(Duration::from_secs(120)));
    let r = with_video(props, v, false);
    r.play().expect("pipeline plays");
    r.push_video(v);
    assert!(server.wait_for_requests(n, Duration::from_secs(20)));
    r
}

/// Runs a whole video through and returns when EOS arrives (panics on timeout).
pub fn run_video(props: &str, v: &Video, timeout: Duration) -> Run {
    let r = with_video(props, v, false);
    r.play().expect("pipeline plays");
    r.push_video(v);
    r.end();
    assert!(
        r.wait_eos(timeout),
        "no EOS within {timeout:?}: {:?}",
        r.outputs().errors
    );
    r.drain_bus();
    r
}

/// `fakesrc ! vsssummarize PROPS ! fakesink` must fail NULL→READY; returns
/// the error message and its debug text (`error | debug`).
pub fn ready_error(props: &str) -> String {
    init();
    let p = gst::parse::launch(&format!("fakesrc ! vsssummarize {props} ! fakesink")).unwrap();
    assert!(p.set_state(gst::State::Ready).is_err(), "{props} must fail");
    let bus = p.bus().unwrap();
    let mut err = String::new();
    while let Some(m) = bus.pop() {
        if let gst::MessageView::Error(e) = m.view() {
            err = format!("{} | {}", e.error(), e.debug().unwrap_or_default());
        }
    }
    p.set_state(gst::State::Null).unwrap();
    err
}
