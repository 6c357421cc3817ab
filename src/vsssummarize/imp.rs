// SPDX-License-Identifier: MPL-2.0
//! GStreamer glue only: pads, properties, events, queries, state changes.
//! Chunking, frame preparation, requests and ordering live in plain modules.
//!
//! Threads:
//! * the sink streaming thread samples (copies only sampled frames), pushes
//!   the video on `src` and submits completed chunks to the dispatcher (it
//!   waits there only under backpressure for non-live input, and at EOS);
//! * dispatcher worker threads convert/encode frames and call the backend;
//!   HTTP runs on the plugin's tokio runtime;
//! * the `summary_src` pad task pushes records in order, posts the bus
//!   messages and queues the metas for the next video buffers.
//!
//! Lock order: `state` → `settings`. No lock is held while pushing or posting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use super::BackendProp;
use crate::backend::cosmos::backend::{
    CosmosBackend, CosmosGen, CosmosOptions, DTypeChoice, DeviceChoice,
};
use crate::backend::custom::manifest;
use crate::backend::custom::{CustomBackend, CustomOptions, LogFn, LogLevel};
use crate::backend::openai::{OpenAiBackend, OpenAiOptions};
use crate::backend::{Backend, ChunkJob, FrameOptions, GenParams};
use crate::chunker::{ChunkParams, Chunker};
use crate::config::{self, ApiKey, BackendKind, Env, Resolved, UserSettings};
use crate::dispatcher::{Dispatcher, Output, Stats, Submitted};
use crate::frames::{Colorimetry, Matrix, PixelFormat, RawFrame};
use crate::gpu::{self, FramePrep};
use crate::meta;
use crate::prompt::{self, TimeStyle};
use crate::record::SummaryRecord;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "vsssummarize",
        gst::DebugColorFlags::empty(),
        Some("Video summarization with vision-language models"),
    )
});

const DEFAULT_CHUNK_DURATION: f64 = 10.0;
const DEFAULT_JPEG_QUALITY: u32 = 90;
const DEFAULT_MAX_CONCURRENCY: u32 = 4;
const DEFAULT_MAX_PENDING: u32 = 16;
const DEFAULT_REQUEST_TIMEOUT: f64 = 120.0;
const DEFAULT_MAX_RETRIES: u32 = 3;
const DEFAULT_DRAIN_TIMEOUT: f64 = 300.0;
const DEFAULT_MAX_RESTARTS: u32 = 3;
/// Longest a custom model may take to load (`import inference; Inference()`).
const CUSTOM_LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Metas waiting for a video buffer; beyond this the oldest is discarded
/// (only when video stops flowing while records keep arriving).
const MAX_QUEUED_METAS: usize = 256;
/// How long EOS waits for `summary_src` to push what a drain timeout produced.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

const FORMATS: &[gst_video::VideoFormat] = &[
    gst_video::VideoFormat::I420,
    gst_video::VideoFormat::Yv12,
    gst_video::VideoFormat::Nv12,
    gst_video::VideoFormat::Nv21,
    gst_video::VideoFormat::Rgb,
    gst_video::VideoFormat::Bgr,
    gst_video::VideoFormat::Rgba,
    gst_video::VideoFormat::Bgra,
    gst_video::VideoFormat::Rgbx,
    gst_video::VideoFormat::Bgrx,
    gst_video::VideoFormat::Xrgb,
    gst_video::VideoFormat::Xbgr,
    gst_video::VideoFormat::Argb,
    gst_video::VideoFormat::Abgr,
];

fn pixel_format(f: gst_video::VideoFormat) -> Option<PixelFormat> {
    use gst_video::VideoFormat as V;
    Some(match f {
        V::I420 => PixelFormat::I420,
        V::Yv12 => PixelFormat::Yv12,
        V::Nv12 => PixelFormat::Nv12,
        V::Nv21 => PixelFormat::Nv21,
        V::Rgb => PixelFormat::Rgb,
        V::Bgr => PixelFormat::Bgr,
        V::Rgba => PixelFormat::Rgba,
        V::Bgra => PixelFormat::Bgra,
        V::Rgbx => PixelFormat::Rgbx,
        V::Bgrx => PixelFormat::Bgrx,
        V::Xrgb => PixelFormat::Xrgb,
        V::Xbgr => PixelFormat::Xbgr,
        V::Argb => PixelFormat::Argb,
        V::Abgr => PixelFormat::Abgr,
        _ => return None,
    })
}

fn colorimetry(info: &gst_video::VideoInfo) -> Colorimetry {
    let c = info.colorimetry();
    let matrix = match c.matrix() {
        gst_video::VideoColorMatrix::Bt709 => Matrix::Bt709,
        gst_video::VideoColorMatrix::Bt2020 => Matrix::Bt2020,
        gst_video::VideoColorMatrix::Bt601 => Matrix::Bt601,
        // Unknown: GStreamer's own default (BT.709 for HD, BT.601 for SD).
        _ if info.height() >= 720 => Matrix::Bt709,
        _ => Matrix::Bt601,
    };
    Colorimetry {
        matrix,
        full_range: c.range() == gst_video::VideoColorRange::Range0_255,
    }
}

#[derive(Debug, Clone)]
struct Settings {
    user: UserSettings,
    chunk_duration: f64,
    chunk_overlap: f64,
    jpeg_quality: u32,
    prompt: String,
    max_tokens: u32,
    temperature: f64,
    top_p: f64,
    top_k: u32,
    seed: i64,
    max_concurrency: u32,
    max_pending: u32,
    request_timeout: f64,
    max_retries: u32,
    drain_timeout: f64,
    max_restarts: u32,
    device: String,
    dtype: String,
    enable_reasoning: bool,
    /// Generation properties the user set (a custom model's `configs` holds
    /// only these).
    gen_set: std::collections::BTreeSet<&'static str>,
}

impl Default for Settings {
    fn default() -> Self {
        let g = GenParams::default();
        Settings {
            user: UserSettings::default(),
            chunk_duration: DEFAULT_CHUNK_DURATION,
            chunk_overlap: 0.0,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            prompt: prompt::DEFAULT_PROMPT.to_string(),
            max_tokens: g.max_tokens,
            temperature: g.temperature,
            top_p: g.top_p,
            top_k: 0,
            seed: 1,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            max_pending: DEFAULT_MAX_PENDING,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_restarts: DEFAULT_MAX_RESTARTS,
            device: "auto".into(),
            dtype: "auto".into(),
            enable_reasoning: false,
            gen_set: Default::default(),
        }
    }
}

/// Built at NULL→READY, dropped at READY→NULL.
struct Prepared {
    resolved: Resolved,
    backend: Arc<dyn Backend>,
    /// Where model input is prepared / the model runs (`device` read-back).
    device: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SummaryFormat {
    Json,
    Text,
}

#[derive(Default)]
struct State {
    chunker: Option<Chunker<RawFrame>>,
    info: Option<gst_video::VideoInfo>,
    segment: gst::FormattedSegment<gst::ClockTime>,
    /// Upstream liveness, queried at the first buffer.
    live: Option<bool>,
    /// (stream time ns, unix seconds) of the first frame, for live time labels.
    wall_base: Option<(u64, f64)>,
    unsupported_warned: bool,
}

pub struct VssSummarize {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    summary_srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    prepared: Mutex<Option<Prepared>>,
    dispatcher: Mutex<Option<Arc<Dispatcher>>>,
    summary_format: Mutex<Option<SummaryFormat>>,
    metas: Mutex<VecDeque<gst::Structure>>,
    /// Set when a segment starts; the first video PTS then goes to
    /// `gap_pts` and the `summary_src` task pushes a GAP there, so that sinks
    /// on `summary_src` preroll long before the first record exists.
    gap_needed: AtomicBool,
    gap_pts: Mutex<Option<gst::ClockTime>>,
    stats: Arc<Stats>,
    /// The backend's fatal error has been posted.
    fatal_posted: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Properties fixed once the element leaves NULL.
const FIXED_PROPS: &[&str] = &[
    "backend",
    "endpoint",
    "model-name",
    "api-key",
    "api-version",
    "model-path",
    "model-root-dir",
    "env-file",
    "python",
    "device",
    "dtype",
];

impl VssSummarize {
    fn dispatcher(&self) -> Option<Arc<Dispatcher>> {
        lock(&self.dispatcher).clone()
    }

    fn upstream_latency(&self) -> Option<(bool, gst::ClockTime, Option<gst::ClockTime>)> {
        let mut q = gst::query::Latency::new();
        if self.sinkpad.peer_query(&mut q) {
            Some(q.result())
        } else {
            None
        }
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if self.check_fatal() {
            return Err(gst::FlowError::Error);
        }
        let need_live = lock(&self.state).live.is_none();
        if need_live {
            // Once per stream: liveness (drop policy, time labels) and, for
            // files, the duration (so the last chunk is sampled over what exists).
            let live = self.upstream_latency().map(|l| l.0).unwrap_or(false);
            let duration = if live {
                None
            } else {
                self.sinkpad.peer_query_duration::<gst::ClockTime>()
            };
            gst::info!(
                CAT,
                imp = self,
                "upstream is {}, duration {}",
                if live { "live" } else { "not live" },
                duration.display()
            );
            let mut st = lock(&self.state);
            st.live = Some(live);
            let stop = st.segment.stop();
            let end = [duration, stop]
                .into_iter()
                .flatten()
                .min()
                .and_then(|t| st.segment.to_stream_time(t).or(Some(t)));
            if let Some(c) = st.chunker.as_mut() {
                c.set_stream_end(end.map(|t| t.nseconds()));
            }
        }

        if self.gap_needed.swap(false, Ordering::AcqRel) {
            *lock(&self.gap_pts) = buffer.pts().or(Some(gst::ClockTime::ZERO));
        }
        let (jobs, live) = self.sample(&buffer);

        // One pending record per outgoing video buffer, so that readers that
        // look a meta up by name find each one.
        let meta = lock(&self.metas).pop_front();
        let buffer = match meta {
            Some(s) => {
                let mut buffer = buffer;
                if let Err(e) = meta::add(buffer.make_mut(), &s) {
                    gst::warning!(CAT, imp = self, "cannot attach meta: {e}");
                }
                buffer
            }
            None => buffer,
        };
        let res = self.srcpad.push(buffer);
        self.submit(jobs, live)?;
        res
    }

    /// Feeds the chunker; returns the chunks completed by this buffer.
    fn sample(&self, buffer: &gst::Buffer) -> (Vec<(ChunkJob, SummaryRecord)>, bool) {
        let mut state = lock(&self.state);
        let live = state.live.unwrap_or(false);
        let Some(pts) = buffer.pts() else {
            return (Vec::new(), live);
        };
        let Some(stream_time) = state.segment.to_stream_time(pts) else {
            return (Vec::new(), live);
        };
        let Some(info) = state.info.clone() else {
            return (Vec::new(), live);
        };
        let Some(format) = pixel_format(info.format()) else {
            if !state.unsupported_warned {
                state.unsupported_warned = true;
                gst::warning!(CAT, imp = self, "unsupported format {:?}", info.format());
            }
            return (Vec::new(), live);
        };
        let color = colorimetry(&info);
        let st = stream_time.nseconds();
        if live && state.wall_base.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            state.wall_base = Some((st, now));
        }
        let Some(chunker) = state.chunker.as_mut() else {
            return (Vec::new(), live);
        };
        let chunks = chunker.push(st, buffer.duration().map(|d| d.nseconds()), || {
            copy_frame(buffer, &info, format, color)
        });
        let jobs = chunks
            .into_iter()
            .map(|c| self.make_job(&state, c, live))
            .collect();
        (jobs, live)
    }

    fn make_job(
        &self,
        state: &State,
        c: crate::chunker::Chunk<RawFrame>,
        live: bool,
    ) -> (ChunkJob, SummaryRecord) {
        let frame_times: Vec<f64> = c.frames.iter().map(|f| f.pts as f64 / 1e9).collect();
        let (style, labels) = match (live, state.wall_base) {
            (true, Some((st0, unix0))) => (
                TimeStyle::Rfc3339,
                c.frames
                    .iter()
                    .map(|f| {
                        prompt::time_label(
                            TimeStyle::Rfc3339,
                            unix0 + (f.pts as f64 - st0 as f64) / 1e9,
                        )
                    })
                    .collect(),
            ),
            _ => (
                TimeStyle::Seconds,
                frame_times
                    .iter()
                    .map(|t| prompt::time_label(TimeStyle::Seconds, *t))
                    .collect(),
            ),
        };
        let pts = state
            .segment
            .position_from_stream_time(gst::ClockTime::from_nseconds(c.start))
            .map(|t| t.nseconds())
            .unwrap_or(c.start);
        let (backend, model) = lock(&self.prepared)
            .as_ref()
            .map(|p| {
                (
                    p.resolved.backend.as_str().to_string(),
                    p.backend.model().to_string(),
                )
            })
            .unwrap_or_default();
        let template = SummaryRecord {
            chunk_index: c.index,
            start: c.start as f64 / 1e9,
            end: c.end as f64 / 1e9,
            frame_times,
            backend,
            model,
            pts_ns: pts,
            duration_ns: c.end.saturating_sub(c.start),
            ..Default::default()
        };
        let job = ChunkJob {
            chunk_index: c.index,
            frames: c.frames.into_iter().map(|f| f.frame).collect(),
            frame_labels: labels,
            frame_times: template.frame_times.clone(),
            time_style: style,
        };
        (job, template)
    }

    fn submit(
        &self,
        jobs: Vec<(ChunkJob, SummaryRecord)>,
        live: bool,
    ) -> Result<(), gst::FlowError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let Some(d) = self.dispatcher() else {
            return Err(gst::FlowError::Flushing);
        };
        for (job, template) in jobs {
            gst::debug!(
                CAT,
                imp = self,
                "chunk {} [{:.3}, {:.3}) complete with {} frames",
                template.chunk_index,
                template.start,
                template.end,
                job.frames.len()
            );
            match d.submit(job, template, live) {
                Submitted::Queued => {}
                Submitted::DroppedOlder(idx) => {
                    for i in idx {
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Failed,
                            ("chunk {i} dropped: the model is slower than the live input (max-pending-chunks reached)"),
                            details: gst::Structure::builder("vss-chunk-dropped").field("chunk-index", i).build()
                        );
                    }
                }
                Submitted::Flushing => return Err(gst::FlowError::Flushing),
            }
        }
        Ok(())
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "event {:?}", event.type_());
        match event.view() {
            EventView::StreamStart(ss) => {
                let id = format!("{}/summary", ss.stream_id());
                let mut b = gst::event::StreamStart::builder(&id);
                if let Some(g) = ss.group_id() {
                    b = b.group_id(g);
                }
                let _ = self.summary_srcpad.store_sticky_event(&b.build());
                *lock(&self.summary_format) = None;
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                match gst_video::VideoInfo::from_caps(&caps) {
                    Ok(info) => {
                        lock(&self.state).info = Some(info);
                        gst::Pad::event_default(pad, Some(&*self.obj()), event)
                    }
                    Err(e) => {
                        gst::element_imp_error!(
                            self,
                            gst::CoreError::Negotiation,
                            ("cannot parse caps {caps}: {e}")
                        );
                        false
                    }
                }
            }
            EventView::Segment(s) => {
                let seg = s.segment().clone();
                // A new segment without a flush: caption what the old one left open.
                let (jobs, live) = {
                    let mut st = lock(&self.state);
                    let live = st.live.unwrap_or(false);
                    let chunks = st.chunker.as_mut().map(|c| c.finish()).unwrap_or_default();
                    let jobs: Vec<_> = chunks
                        .into_iter()
                        .map(|c| self.make_job(&st, c, live))
                        .collect();
                    match seg.downcast::<gst::ClockTime>() {
                        Ok(seg) => st.segment = seg,
                        Err(_) => {
                            drop(st);
                            gst::element_imp_error!(
                                self,
                                gst::StreamError::Format,
                                ("only TIME segments are supported")
                            );
                            return false;
                        }
                    }
                    st.wall_base = None;
                    // Re-query liveness and duration for the new segment.
                    st.live = None;
                    (jobs, live)
                };
                let _ = self.submit(jobs, live);
                // Sticky order on summary_src: stream-start, caps, segment.
                self.ensure_summary_caps();
                let _ = self.summary_srcpad.store_sticky_event(&event);
                self.gap_needed.store(true, Ordering::Release);
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStart(_) => {
                if let Some(d) = self.dispatcher() {
                    d.flush_start();
                }
                let ok = self.srcpad.push_event(event.clone());
                let _ = self.summary_srcpad.push_event(event);
                let _ = self.summary_srcpad.pause_task();
                ok
            }
            EventView::FlushStop(_) => {
                {
                    let mut st = lock(&self.state);
                    if let Some(c) = st.chunker.as_mut() {
                        c.reset();
                    }
                    st.wall_base = None;
                    st.live = None;
                }
                lock(&self.metas).clear();
                self.gap_needed.store(true, Ordering::Release);
                if let Some(d) = self.dispatcher() {
                    d.flush_stop();
                }
                let ok = self.srcpad.push_event(event.clone());
                let _ = self.summary_srcpad.push_event(event);
                self.start_summary_task();
                ok
            }
            EventView::Eos(_) => {
                self.drain();
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// EOS: caption the open chunks, wait for every record (bounded by
    /// `drain-timeout`) and for `summary_src`'s EOS, then let EOS go on `src`.
    fn drain(&self) {
        let (jobs, live) = {
            let mut st = lock(&self.state);
            let live = st.live.unwrap_or(false);
            let chunks = st.chunker.as_mut().map(|c| c.finish()).unwrap_or_default();
            let jobs: Vec<_> = chunks
                .into_iter()
                .map(|c| self.make_job(&st, c, live))
                .collect();
            (jobs, live)
        };
        if self.submit(jobs, live).is_err() {
            return;
        }
        let Some(d) = self.dispatcher() else {
            return;
        };
        let timeout = config::secs(lock(&self.settings).drain_timeout);
        gst::debug!(CAT, imp = self, "draining {} pending chunks", d.pending());
        if let Some(n) = d.drain(timeout, OUTPUT_GRACE) {
            if n > 0 {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Failed,
                    ("{n} chunks were still unanswered when drain-timeout ({:.1} s) expired at EOS; they were reported as error records", timeout.as_secs_f64())
                );
            }
        }
    }

    fn start_summary_task(&self) {
        let this = self.downgrade();
        let res = self.summary_srcpad.start_task(move || {
            if let Some(this) = this.upgrade() {
                this.summary_loop();
            }
        });
        if let Err(e) = res {
            gst::error!(CAT, imp = self, "cannot start the summary_src task: {e}");
        }
    }

    /// One iteration of the `summary_src` task.
    fn summary_loop(&self) {
        let Some(d) = self.dispatcher() else {
            let _ = self.summary_srcpad.pause_task();
            return;
        };
        let gap = lock(&self.gap_pts).take();
        if let Some(pts) = gap {
            self.ensure_summary_caps();
            gst::debug!(CAT, imp = self, "GAP at {pts} on summary_src");
            let _ = self
                .summary_srcpad
                .push_event(gst::event::Gap::builder(pts).build());
        }
        match d.next_output(Duration::from_millis(100)) {
            None => {
                if d.is_stopped() {
                    let _ = self.summary_srcpad.pause_task();
                }
            }
            Some(Output::Record(r)) => self.emit(*r),
            Some(Output::Eos) => {
                gst::debug!(CAT, imp = self, "all chunks out, EOS on summary_src");
                let _ = self.summary_srcpad.push_event(gst::event::Eos::new());
                d.eos_done();
            }
        }
    }

    fn negotiate_summary(&self) -> SummaryFormat {
        let templ = self.summary_srcpad.pad_template_caps();
        let peer = self.summary_srcpad.peer_query_caps(Some(&templ));
        let format = match peer.structure(0).map(|s| s.name().as_str()) {
            Some("text/x-raw") => SummaryFormat::Text,
            _ => SummaryFormat::Json,
        };
        let caps = match format {
            SummaryFormat::Json => gst::Caps::builder("application/x-json").build(),
            SummaryFormat::Text => gst::Caps::builder("text/x-raw")
                .field("format", "utf8")
                .build(),
        };
        gst::info!(CAT, imp = self, "summary_src caps {caps}");
        let _ = self
            .summary_srcpad
            .store_sticky_event(&gst::event::Caps::new(&caps));
        format
    }

    /// The current `summary_src` format, negotiated first if needed.
    fn ensure_summary_caps(&self) -> SummaryFormat {
        let cur = *lock(&self.summary_format);
        match cur {
            Some(f) if !self.summary_srcpad.check_reconfigure() => f,
            _ => {
                let f = self.negotiate_summary();
                *lock(&self.summary_format) = Some(f);
                f
            }
        }
    }

    /// Emits one record: bus message, meta queue, `summary_src` buffer.
    fn emit(&self, r: SummaryRecord) {
        if let Some(e) = &r.error {
            gst::warning!(CAT, imp = self, "chunk {} failed: {e}", r.chunk_index);
            // Drops were already reported when they happened.
            if !e.starts_with("dropped") {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Failed,
                    ("chunk {} [{:.2} s, {:.2} s) failed: {e}", r.chunk_index, r.start, r.end),
                    details: gst::Structure::builder("vss-chunk-failed").field("chunk-index", r.chunk_index).build()
                );
            }
        } else {
            gst::debug!(
                CAT,
                imp = self,
                "chunk {} captioned in {:.2} s",
                r.chunk_index,
                r.latency
            );
        }
        let s = meta::to_structure(&r);
        let msg = gst::message::Element::builder(s.clone())
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
        {
            let mut metas = lock(&self.metas);
            if metas.len() >= MAX_QUEUED_METAS {
                metas.pop_front();
                gst::debug!(CAT, imp = self, "meta queue full, oldest meta discarded");
            }
            metas.push_back(s);
        }

        let format = self.ensure_summary_caps();
        let bytes = match format {
            SummaryFormat::Json => r.to_json_line().into_bytes(),
            // Text consumers (textoverlay, subtitle files) show the failure.
            SummaryFormat::Text => match &r.error {
                Some(e) => format!("[chunk {} failed: {e}]", r.chunk_index).into_bytes(),
                None => r.text.clone().into_bytes(),
            },
        };
        let mut buf = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buf.get_mut().expect("new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(r.pts_ns));
            b.set_duration(gst::ClockTime::from_nseconds(r.duration_ns));
        }
        match self.summary_srcpad.push(buf) {
            Ok(_) | Err(gst::FlowError::NotLinked) | Err(gst::FlowError::Flushing) => {}
            Err(e) => gst::warning!(CAT, imp = self, "summary_src push: {e:?}"),
        }
        self.check_fatal();
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    fn summary_src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        use gst::QueryViewMut;
        match query.view_mut() {
            QueryViewMut::Latency(q) => {
                let Some((live, min, max)) = self.upstream_latency() else {
                    return false;
                };
                // A chunk's record cannot leave before the chunk is complete;
                // how long the model takes on top is unbounded.
                let chunk = gst::ClockTime::from_nseconds(
                    config::secs(lock(&self.settings).chunk_duration).as_nanos() as u64,
                );
                let _ = max;
                q.set(live, min + chunk, gst::ClockTime::NONE);
                true
            }
            QueryViewMut::Caps(q) => {
                let templ = pad.pad_template_caps();
                let caps = match q.filter() {
                    Some(f) => f.intersect_with_mode(&templ, gst::CapsIntersectMode::First),
                    None => templ,
                };
                q.set_result(&caps);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn prepare(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let settings_err =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}"));
        let mut resolved =
            config::resolve(&settings.user, Env::from_process()).map_err(settings_err)?;
        let choice: DeviceChoice = settings.device.parse().map_err(settings_err)?;
        let selected = gpu::select(choice).map_err(settings_err)?;
        gst::info!(CAT, imp = self, "{}", selected.reason);
        let prep = selected.prep;
        if let FramePrep::Gpu(g) = &prep {
            let weak = self.obj().downgrade();
            g.on_broken(Arc::new(move |msg: &str| {
                if let Some(obj) = weak.upgrade() {
                    gst::element_warning!(obj, gst::LibraryError::Failed, ("vsssummarize: {msg}"));
                }
            }));
        }
        let mut device = prep.name().to_string();
        let backend: Arc<dyn Backend> = match resolved.backend {
            BackendKind::OpenAiCompat => {
                let endpoint = resolved
                    .endpoint
                    .clone()
                    .expect("resolved for openai-compat");
                if !endpoint.model_explicit && !endpoint.is_openai() {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "model-name / VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME not set: sending the default '{}' to {}; most servers (vLLM, NIM) need the served model name",
                        config::DEFAULT_MODEL,
                        endpoint.chat_url.host_str().unwrap_or_default()
                    );
                }
                gst::info!(
                    CAT,
                    imp = self,
                    "endpoint {}",
                    endpoint.chat_url.host_str().unwrap_or_default()
                );
                let opts = OpenAiOptions {
                    endpoint,
                    gen: GenParams {
                        prompt: settings.prompt.clone(),
                        system_prompt: resolved.system_prompt.clone(),
                        max_tokens: settings.max_tokens,
                        temperature: settings.temperature,
                        top_p: settings.top_p,
                        top_k: settings.top_k,
                        seed: (settings.seed >= 0).then_some(settings.seed),
                    },
                    frames: FrameOptions {
                        width: resolved.frame_width,
                        height: resolved.frame_height,
                        jpeg_quality: settings.jpeg_quality.clamp(1, 100) as u8,
                    },
                    prep: prep.clone(),
                    request_timeout: config::secs(settings.request_timeout),
                    max_retries: settings.max_retries,
                };
                Arc::new(OpenAiBackend::new(opts).map_err(settings_err)?)
            }
            BackendKind::Custom => {
                Arc::new(self.prepare_custom(&settings, &mut resolved, prep.clone())?)
            }
            BackendKind::CosmosReason1 => {
                let b = self.prepare_cosmos(&settings, &resolved, prep.clone())?;
                if b.device_name() != device {
                    gst::info!(CAT, imp = self, "the model runs on {}", b.device_name());
                    device = format!("{device} (model on {})", b.device_name());
                }
                Arc::new(b)
            }
        };
        gst::info!(
            CAT,
            imp = self,
            "backend {} model '{}' ({} frames per chunk)",
            resolved.backend.as_str(),
            backend.model(),
            resolved.num_frames
        );
        self.fatal_posted.store(false, Ordering::Release);
        *lock(&self.prepared) = Some(Prepared {
            resolved,
            backend,
            device,
        });
        Ok(())
    }

    /// `backend=custom`: checks the model directory, applies its manifest to
    /// `resolved` (frames per chunk, frame size) and loads the model.
    fn prepare_custom(
        &self,
        settings: &Settings,
        resolved: &mut Resolved,
        prep: FramePrep,
    ) -> Result<CustomBackend, gst::ErrorMessage> {
        let settings_err =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}"));
        let dir = manifest::resolve_model_dir(
            resolved.model_path.as_deref(),
            resolved.model_root_dir.as_deref(),
        )
        .map_err(settings_err)?;
        let (man, warnings) = manifest::load(&dir).map_err(settings_err)?;
        for w in warnings {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Settings,
                ("{}/manifest.yaml: {w}", dir.display())
            );
        }
        if !resolved.num_frames_explicit {
            resolved.num_frames = man.number_of_frames.unwrap_or(1);
        }
        if !resolved.frame_size_explicit {
            if let Some((w, h)) = man.resolution {
                (resolved.frame_width, resolved.frame_height) = (w, h);
            }
        }
        let mut configs = serde_json::Map::new();
        let set = |k: &str| settings.gen_set.contains(k);
        if set("max-tokens") {
            configs.insert("max_new_tokens".into(), settings.max_tokens.into());
        }
        if set("temperature") {
            configs.insert("temperature".into(), settings.temperature.into());
        }
        if set("top-p") {
            configs.insert("top_p".into(), settings.top_p.into());
        }
        if set("top-k") && settings.top_k > 0 {
            configs.insert("top_k".into(), settings.top_k.into());
        }
        if set("seed") && settings.seed >= 0 {
            configs.insert("seed".into(), settings.seed.into());
        }
        let weak = self.obj().downgrade();
        let log: LogFn = Arc::new(move |level, msg| {
            let Some(obj) = weak.upgrade() else { return };
            match level {
                LogLevel::Debug => gst::debug!(CAT, obj = obj, "{msg}"),
                LogLevel::Info => gst::info!(CAT, obj = obj, "{msg}"),
                LogLevel::Warning => gst::warning!(CAT, obj = obj, "{msg}"),
            }
        });
        let timeout = if settings.request_timeout > 0.0 {
            config::secs(settings.request_timeout)
        } else {
            Duration::from_secs(365 * 86_400)
        };
        let opts = CustomOptions {
            model_dir: dir,
            python: resolved.python.clone(),
            manifest: man,
            prompt: if settings.prompt.trim().is_empty() {
                prompt::DEFAULT_PROMPT.to_string()
            } else {
                settings.prompt.clone()
            },
            configs,
            frames: FrameOptions {
                width: resolved.frame_width,
                height: resolved.frame_height,
                jpeg_quality: settings.jpeg_quality.clamp(1, 100) as u8,
            },
            prep,
            env: resolved
                .env
                .vars()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            call_timeout: timeout,
            load_timeout: CUSTOM_LOAD_TIMEOUT,
            max_restarts: settings.max_restarts,
            log,
        };
        CustomBackend::new(opts)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("vsssummarize: {e}")))
    }

    /// `backend=cosmos-reason1`: checks the checkpoint directory and loads
    /// (or shares) the model on the chosen device.
    fn prepare_cosmos(
        &self,
        settings: &Settings,
        resolved: &Resolved,
        prep: FramePrep,
    ) -> Result<CosmosBackend, gst::ErrorMessage> {
        let settings_err =
            |e: String| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}"));
        let dir = manifest::contained_dir(
            resolved.model_path.as_deref(),
            resolved.model_root_dir.as_deref(),
            "cosmos-reason1",
            "a Hugging Face Qwen2.5-VL / Cosmos-Reason1 checkpoint (config.json, *.safetensors, tokenizer.json)",
        )
        .map_err(settings_err)?;
        let device: DeviceChoice = settings.device.parse().map_err(settings_err)?;
        let dtype: DTypeChoice = settings.dtype.parse().map_err(settings_err)?;
        let set = |k: &str| settings.gen_set.contains(k);
        let weak = self.obj().downgrade();
        let log = Arc::new(move |msg: &str| {
            if let Some(obj) = weak.upgrade() {
                gst::info!(CAT, obj = obj, "{msg}");
            }
        });
        let opts = CosmosOptions {
            model_dir: dir,
            device,
            dtype,
            prompt: if settings.prompt.trim().is_empty() {
                prompt::DEFAULT_PROMPT.to_string()
            } else {
                settings.prompt.clone()
            },
            system_prompt: resolved.system_prompt.clone(),
            enable_reasoning: settings.enable_reasoning,
            gen: CosmosGen {
                max_tokens: settings.max_tokens,
                temperature: set("temperature").then_some(settings.temperature),
                top_p: set("top-p").then_some(settings.top_p),
                top_k: (set("top-k") && settings.top_k > 0).then_some(settings.top_k),
                seed: (settings.seed >= 0).then_some(settings.seed as u64),
            },
            frame_width: resolved.frame_width,
            frame_height: resolved.frame_height,
            prep,
            log,
        };
        CosmosBackend::new(opts)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("vsssummarize: {e}")))
    }

    /// Posts the backend's fatal error once; true when there is one.
    fn check_fatal(&self) -> bool {
        let fatal = lock(&self.prepared)
            .as_ref()
            .and_then(|p| p.backend.fatal_error());
        let Some(e) = fatal else { return false };
        if !self.fatal_posted.swap(true, Ordering::AcqRel) {
            gst::element_imp_error!(self, gst::LibraryError::Failed, ("vsssummarize: {e}"));
        }
        true
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let prepared = lock(&self.prepared);
        let Some(p) = prepared.as_ref() else {
            return Err(gst::error_msg!(
                gst::CoreError::StateChange,
                ("not prepared")
            ));
        };
        let params = ChunkParams::new(
            config::secs(settings.chunk_duration).as_nanos() as u64,
            config::secs(settings.chunk_overlap).as_nanos() as u64,
            p.resolved.num_frames,
        )
        .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}")))?;
        self.stats.reset();
        let workers = (settings.max_concurrency as usize)
            .min(p.backend.max_concurrency().unwrap_or(usize::MAX))
            .max(1);
        let d = Dispatcher::new(
            p.backend.clone(),
            workers,
            settings.max_pending as usize,
            self.stats.clone(),
        );
        drop(prepared);
        *lock(&self.state) = State {
            chunker: Some(Chunker::new(params)),
            ..Default::default()
        };
        *lock(&self.dispatcher) = Some(Arc::new(d));
        *lock(&self.summary_format) = None;
        lock(&self.metas).clear();
        self.gap_needed.store(true, Ordering::Release);
        *lock(&self.gap_pts) = None;
        Ok(())
    }

    fn stop(&self) {
        if let Some(d) = lock(&self.dispatcher).take() {
            d.shutdown();
        }
        let _ = self.summary_srcpad.stop_task();
        *lock(&self.state) = State::default();
        lock(&self.metas).clear();
    }
}

/// Copies one mapped video frame (all planes, with their strides).
fn copy_frame(
    buffer: &gst::Buffer,
    info: &gst_video::VideoInfo,
    format: PixelFormat,
    colorimetry: Colorimetry,
) -> Option<RawFrame> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info).ok()?;
    let mut planes = Vec::with_capacity(frame.n_planes() as usize);
    let mut strides = Vec::with_capacity(frame.n_planes() as usize);
    for p in 0..frame.n_planes() {
        let stride = frame.plane_stride()[p as usize] as usize;
        let data = frame.plane_data(p).ok()?;
        let h = info.height() as usize;
        let rows = match format {
            // 4:2:0 chroma planes are half height.
            PixelFormat::I420 | PixelFormat::Yv12 | PixelFormat::Nv12 | PixelFormat::Nv21
                if p > 0 =>
            {
                h.div_ceil(2)
            }
            _ => h,
        };
        let len = (stride * rows).min(data.len());
        planes.push(data[..len].to_vec());
        strides.push(stride);
    }
    Some(RawFrame {
        format,
        width: info.width(),
        height: info.height(),
        planes,
        strides,
        colorimetry,
    })
}

#[glib::object_subclass]
impl ObjectSubclass for VssSummarize {
    const NAME: &'static str = "GstVssSummarize";
    type Type = super::VssSummarize;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass.pad_template("sink").expect("sink template");
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                VssSummarize::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                VssSummarize::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .iterate_internal_links_function(|_pad, parent| {
                VssSummarize::catch_panic_pad_function(
                    parent,
                    || gst::Iterator::from_vec(vec![]),
                    |imp| gst::Iterator::from_vec(vec![imp.srcpad.clone()]),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS | gst::PadFlags::PROXY_ALLOCATION)
            .build();

        let templ = klass.pad_template("src").expect("src template");
        let srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                VssSummarize::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .iterate_internal_links_function(|_pad, parent| {
                VssSummarize::catch_panic_pad_function(
                    parent,
                    || gst::Iterator::from_vec(vec![]),
                    |imp| gst::Iterator::from_vec(vec![imp.sinkpad.clone()]),
                )
            })
            .flags(
                gst::PadFlags::PROXY_CAPS
                    | gst::PadFlags::PROXY_ALLOCATION
                    | gst::PadFlags::PROXY_SCHEDULING,
            )
            .build();

        let templ = klass.pad_template("summary_src").expect("summary template");
        let summary_srcpad = gst::Pad::builder_from_template(&templ)
            .query_function(|pad, parent, query| {
                VssSummarize::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.summary_src_query(pad, query),
                )
            })
            .iterate_internal_links_function(|_pad, _parent| gst::Iterator::from_vec(vec![]))
            .build();

        VssSummarize {
            sinkpad,
            srcpad,
            summary_srcpad,
            settings: Mutex::new(Settings::default()),
            state: Mutex::new(State::default()),
            prepared: Mutex::new(None),
            dispatcher: Mutex::new(None),
            summary_format: Mutex::new(None),
            metas: Mutex::new(VecDeque::new()),
            gap_needed: AtomicBool::new(true),
            gap_pts: Mutex::new(None),
            stats: Arc::new(Stats::default()),
            fatal_posted: AtomicBool::new(false),
        }
    }
}

impl ObjectImpl for VssSummarize {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let s = |name: &str, blurb: &str| {
                glib::ParamSpecString::builder(name)
                    .blurb(blurb)
                    .mutable_ready()
                    .build()
            };
            vec![
                glib::ParamSpecEnum::builder_with_default("backend", BackendProp::OpenAiCompat)
                    .nick("Backend")
                    .blurb("Model backend (default from VLM_MODEL_TO_USE); fixed once the element leaves NULL")
                    .build(),
                s("endpoint", "OpenAI-compatible base URL, e.g. http://localhost:8000/v1 (default from VIA_VLM_ENDPOINT, else https://api.openai.com/v1)"),
                s("model-name", "Model / deployment name sent as 'model' (default from VIA_VLM_OPENAI_MODEL_DEPLOYMENT_NAME, else gpt-4o)"),
                glib::ParamSpecString::builder("api-key")
                    .blurb("API key (write-only; default from VIA_VLM_API_KEY, else OPENAI_API_KEY; AZURE_OPENAI_API_KEY for Azure)")
                    .write_only()
                    .build(),
                s("api-version", "Azure OpenAI api-version (default from OPENAI_API_VERSION)"),
                s("model-path", "Model directory for local backends (default from MODEL_PATH)"),
                s("model-root-dir", "Directory local models must lie in (default from MODEL_ROOT_DIR)"),
                s("python", "Python interpreter that runs a custom model (default from VSS_PYTHON, else python3); point it at a virtualenv's bin/python"),
                s("env-file", "VSS .env file of 'export KEY=VALUE' lines used as defaults (wins over the process environment)"),
                glib::ParamSpecDouble::builder("chunk-duration")
                    .blurb("Chunk length in seconds")
                    .minimum(0.001)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_CHUNK_DURATION)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("chunk-overlap")
                    .blurb("Overlap between consecutive chunks in seconds (must be < chunk-duration)")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(0.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("num-frames-per-chunk")
                    .blurb("Frames sampled per chunk (0 = VLM_DEFAULT_NUM_FRAMES_PER_CHUNK, else the backend default: 10 for openai-compat, the manifest's number_of_frames for custom)")
                    .maximum(256)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("frame-width")
                    .blurb("Width of frames sent to the model (0 = native, or keep the aspect ratio if frame-height is set; default from VLM_INPUT_WIDTH)")
                    .maximum(16384)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("frame-height")
                    .blurb("Height of frames sent to the model (0 = native, or keep the aspect ratio if frame-width is set; default from VLM_INPUT_HEIGHT)")
                    .maximum(16384)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("jpeg-quality")
                    .blurb("JPEG quality of frames sent to the model")
                    .minimum(1)
                    .maximum(100)
                    .default_value(DEFAULT_JPEG_QUALITY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("prompt")
                    .blurb("Caption prompt (after the frame timestamp list)")
                    .default_value(Some(prompt::DEFAULT_PROMPT))
                    .mutable_ready()
                    .build(),
                s("system-prompt", "System message (default from VLM_SYSTEM_PROMPT; none if empty)"),
                glib::ParamSpecUInt::builder("max-tokens")
                    .blurb("max_tokens of each request")
                    .minimum(1)
                    .maximum(1 << 20)
                    .default_value(1024)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("temperature")
                    .minimum(0.0)
                    .maximum(2.0)
                    .default_value(0.2)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("top-p")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(1.0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("top-k")
                    .blurb("top_k (0 = not sent)")
                    .maximum(100_000)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt64::builder("seed")
                    .blurb("seed (-1 = not sent)")
                    .minimum(-1)
                    .default_value(1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-concurrency")
                    .blurb("Requests in flight at most")
                    .minimum(1)
                    .maximum(256)
                    .default_value(DEFAULT_MAX_CONCURRENCY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-pending-chunks")
                    .blurb("Chunks queued or in flight at most; then non-live input is slowed down and live input drops the oldest chunk")
                    .minimum(1)
                    .maximum(4096)
                    .default_value(DEFAULT_MAX_PENDING)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("request-timeout")
                    .blurb("Seconds per request attempt (0 = no timeout)")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_REQUEST_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-retries")
                    .blurb("Retries of a request after 429, 5xx or a timeout")
                    .maximum(100)
                    .default_value(DEFAULT_MAX_RETRIES)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("drain-timeout")
                    .blurb("Seconds EOS waits for pending chunks before reporting them as errors")
                    .minimum(0.0)
                    .maximum(86_400.0)
                    .default_value(DEFAULT_DRAIN_TIMEOUT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .blurb("Where sampled frames are converted/resized (and, for cosmos-reason1 in a cuda build, where the model runs): auto (GPU 0 when the NVIDIA driver, a GPU and NVRTC are present, else CPU), cpu, cuda:N (fails at NULL->READY without a usable GPU); reads back the device in use once READY")
                    .default_value(Some("auto"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("dtype")
                    .blurb("cosmos-reason1: weight type: auto (f32 on the CPU, bf16 on CUDA), f32, bf16 (half the memory; on the CPU slower than f32)")
                    .default_value(Some("auto"))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("enable-reasoning")
                    .blurb("cosmos-reason1: ask for <think>…</think><answer>…</answer> and put the thinking in the record's reasoning field")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-restarts")
                    .blurb("custom backend: model process restarts after crashes in a row before the element fails")
                    .maximum(1000)
                    .default_value(DEFAULT_MAX_RESTARTS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("chunks-submitted").read_only().build(),
                glib::ParamSpecUInt64::builder("chunks-completed").read_only().build(),
                glib::ParamSpecUInt64::builder("chunks-failed").read_only().build(),
                glib::ParamSpecUInt64::builder("chunks-dropped").read_only().build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if FIXED_PROPS.contains(&name) && self.obj().current_state() != gst::State::Null {
            gst::warning!(
                CAT,
                imp = self,
                "property '{name}' can only be changed in the NULL state; change refused"
            );
            return;
        }
        let mut s = lock(&self.settings);
        let opt_str = |v: &glib::Value| {
            v.get::<Option<String>>()
                .expect("type checked upstream")
                .filter(|s| !s.is_empty())
        };
        match name {
            "backend" => s.user.backend = Some(value.get::<BackendProp>().expect("type").into()),
            "endpoint" => s.user.endpoint = opt_str(value),
            "model-name" => s.user.model_name = opt_str(value),
            "api-key" => s.user.api_key = opt_str(value).and_then(ApiKey::new),
            "api-version" => s.user.api_version = opt_str(value),
            "model-path" => s.user.model_path = opt_str(value),
            "model-root-dir" => s.user.model_root_dir = opt_str(value),
            "env-file" => s.user.env_file = opt_str(value),
            "python" => s.user.python = opt_str(value),
            "max-restarts" => s.max_restarts = value.get().expect("type"),
            "device" => {
                s.device = value
                    .get::<Option<String>>()
                    .expect("type")
                    .unwrap_or_else(|| "auto".into())
            }
            "enable-reasoning" => s.enable_reasoning = value.get().expect("type"),
            "dtype" => {
                s.dtype = value
                    .get::<Option<String>>()
                    .expect("type")
                    .unwrap_or_else(|| "auto".into())
            }
            "chunk-duration" => s.chunk_duration = value.get().expect("type"),
            "chunk-overlap" => s.chunk_overlap = value.get().expect("type"),
            "num-frames-per-chunk" => {
                let n: u32 = value.get().expect("type");
                s.user.num_frames = (n > 0).then_some(n);
            }
            "frame-width" => s.user.frame_width = Some(value.get().expect("type")),
            "frame-height" => s.user.frame_height = Some(value.get().expect("type")),
            "jpeg-quality" => s.jpeg_quality = value.get().expect("type"),
            "prompt" => {
                s.prompt = value
                    .get::<Option<String>>()
                    .expect("type")
                    .unwrap_or_default()
            }
            "system-prompt" => s.user.system_prompt = value.get::<Option<String>>().expect("type"),
            "max-tokens" => {
                s.max_tokens = value.get().expect("type");
                s.gen_set.insert("max-tokens");
            }
            "temperature" => {
                s.temperature = value.get().expect("type");
                s.gen_set.insert("temperature");
            }
            "top-p" => {
                s.top_p = value.get().expect("type");
                s.gen_set.insert("top-p");
            }
            "top-k" => {
                s.top_k = value.get().expect("type");
                s.gen_set.insert("top-k");
            }
            "seed" => {
                s.seed = value.get().expect("type");
                s.gen_set.insert("seed");
            }
            "max-concurrency" => s.max_concurrency = value.get().expect("type"),
            "max-pending-chunks" => s.max_pending = value.get().expect("type"),
            "request-timeout" => s.request_timeout = value.get().expect("type"),
            "max-retries" => s.max_retries = value.get().expect("type"),
            "drain-timeout" => s.drain_timeout = value.get().expect("type"),
            _ => unimplemented!("property {name}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let prepared = lock(&self.prepared);
        let resolved = prepared.as_ref().map(|p| &p.resolved);
        let s = lock(&self.settings);
        let u = &s.user;
        match pspec.name() {
            "backend" => BackendProp::from(
                resolved
                    .map(|r| r.backend)
                    .or(u.backend)
                    .unwrap_or_default(),
            )
            .to_value(),
            "endpoint" => u.endpoint.to_value(),
            "model-name" => prepared
                .as_ref()
                .map(|p| p.backend.model().to_string())
                .or_else(|| u.model_name.clone())
                .to_value(),
            "python" => resolved
                .map(|r| r.python.clone())
                .or_else(|| u.python.clone())
                .to_value(),
            "max-restarts" => s.max_restarts.to_value(),
            "device" => prepared
                .as_ref()
                .map(|p| p.device.clone())
                .unwrap_or_else(|| s.device.clone())
                .to_value(),
            "enable-reasoning" => s.enable_reasoning.to_value(),
            "dtype" => s.dtype.to_value(),
            "api-version" => u.api_version.to_value(),
            "model-path" => u.model_path.to_value(),
            "model-root-dir" => u.model_root_dir.to_value(),
            "env-file" => u.env_file.to_value(),
            "chunk-duration" => s.chunk_duration.to_value(),
            "chunk-overlap" => s.chunk_overlap.to_value(),
            "num-frames-per-chunk" => resolved
                .map(|r| r.num_frames)
                .or(u.num_frames)
                .unwrap_or(0)
                .to_value(),
            "frame-width" => resolved
                .map(|r| r.frame_width)
                .or(u.frame_width)
                .unwrap_or(0)
                .to_value(),
            "frame-height" => resolved
                .map(|r| r.frame_height)
                .or(u.frame_height)
                .unwrap_or(0)
                .to_value(),
            "jpeg-quality" => s.jpeg_quality.to_value(),
            "prompt" => s.prompt.to_value(),
            "system-prompt" => resolved
                .and_then(|r| r.system_prompt.clone())
                .or_else(|| u.system_prompt.clone())
                .to_value(),
            "max-tokens" => s.max_tokens.to_value(),
            "temperature" => s.temperature.to_value(),
            "top-p" => s.top_p.to_value(),
            "top-k" => s.top_k.to_value(),
            "seed" => s.seed.to_value(),
            "max-concurrency" => s.max_concurrency.to_value(),
            "max-pending-chunks" => s.max_pending.to_value(),
            "request-timeout" => s.request_timeout.to_value(),
            "max-retries" => s.max_retries.to_value(),
            "drain-timeout" => s.drain_timeout.to_value(),
            "chunks-submitted" => self
                .stats
                .submitted
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "chunks-completed" => self
                .stats
                .completed
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "chunks-failed" => self
                .stats
                .failed
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            "chunks-dropped" => self
                .stats
                .dropped
                .load(std::sync::atomic::Ordering::Relaxed)
                .to_value(),
            name => unimplemented!("property {name}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("add sink pad");
        obj.add_pad(&self.srcpad).expect("add src pad");
        obj.add_pad(&self.summary_srcpad)
            .expect("add summary_src pad");
    }
}

impl GstObjectImpl for VssSummarize {}

impl ElementImpl for VssSummarize {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "VSS video summarizer",
                "Filter/Analyzer/Video",
                "Captions chunks of video with a vision-language model; video passes through",
                "vsssummarize developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let video = gst_video::VideoCapsBuilder::new()
                .format_list(FORMATS.iter().copied())
                .build();
            // JSON first: what an unconstrained peer (filesink) gets.
            let mut summary = gst::Caps::builder("application/x-json").build();
            summary.make_mut().append(
                gst::Caps::builder("text/x-raw")
                    .field("format", "utf8")
                    .build(),
            );
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &video,
                )
                .expect("sink template"),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &video,
                )
                .expect("src template"),
                gst::PadTemplate::new(
                    "summary_src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &summary,
                )
                .expect("summary template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::debug!(CAT, imp = self, "change state {transition:?}");
        match transition {
            gst::StateChange::NullToReady => {
                if let Err(e) = self.prepare() {
                    self.post_error_message(e);
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::ReadyToPaused => {
                if let Err(e) = self.start() {
                    self.post_error_message(e);
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::PausedToReady => self.stop(),
            _ => {}
        }
        let ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused => self.start_summary_task(),
            gst::StateChange::ReadyToNull => *lock(&self.prepared) = None,
            _ => {}
        }
        Ok(ret)
    }
}
