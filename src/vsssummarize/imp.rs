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
//! Two locks: `settings` (what the properties hold) and `state` (the
//! session built at NULL→READY and everything of the current run). Lock
//! order: `state` → `settings`. No lock is held while pushing, posting,
//! submitting a chunk or waiting; the backend, the downloads and the text
//! LLM are built by [`crate::session`], which knows no GStreamer types and
//! reports through [`observer::ElementObserver`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;

use super::BackendProp;
use crate::backend::ChunkJob;
use crate::chunker::{ChunkParams, Chunker};
use crate::config::{self, ApiKey, Env};
use crate::dispatcher::{Dispatcher, Submitted};
use crate::frames::{Colorimetry, Matrix, PixelFormat, RawFrame};
use crate::meta;
use crate::prompt::{self, TimeStyle};
use crate::record::CaptionRecord;
use crate::session::{Counters, RecordConstants, Session, Settings};

mod observer;
mod output;
mod preroll;
mod settings;
mod steering;
mod video;

use output::{SummaryFormat, SummaryMarker};
use video::{colorimetry, copy_frame, pixel_format, FORMATS};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "vsssummarize",
        gst::DebugColorFlags::empty(),
        Some("Video summarization with vision-language models"),
    )
});

/// How long EOS waits for the `summary_src` task to send the records (to
/// post them; to push them too once its sink has prerolled) before it lets
/// the video's EOS go; records are never lost by this wait ending.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

/// The dispatcher of this element: its markers are `summary_src` events.
type Flow = Dispatcher<SummaryMarker>;

/// A completed chunk: its job, its record's template, what the gate needs.
type Job = (ChunkJob, CaptionRecord, Option<crate::gate::ChunkFacts>);

#[derive(Default)]
struct State {
    /// Built at NULL→READY, dropped at READY→NULL.
    session: Option<Session>,
    /// The rest is the current run's (READY→PAUSED … PAUSED→READY).
    /// What every record of the session carries, captured at the start.
    consts: RecordConstants,
    dispatcher: Option<Arc<Flow>>,
    /// Metas waiting for a video buffer (see [`output`]).
    metas: VecDeque<gst::Structure>,
    summary_format: Option<SummaryFormat>,
    chunker: Option<Chunker<RawFrame>>,
    info: Option<gst_video::VideoInfo>,
    segment: gst::FormattedSegment<gst::ClockTime>,
    /// Upstream liveness, queried at the first buffer.
    live: Option<bool>,
    /// (stream time ns, unix seconds) of the first frame, for live time labels.
    wall_base: Option<(u64, f64)>,
    unsupported_warned: bool,
    /// ROI detections of the chunks still open, while triggers are on
    /// (stream time ns, detection).
    detections: VecDeque<(u64, crate::gate::Detection)>,
}

pub struct VssSummarize {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    summary_srcpad: gst::Pad,
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Set when a segment starts; the first video PTS then becomes a
    /// [`SummaryMarker::Gap`], so that sinks on `summary_src` preroll long
    /// before the first record exists.
    gap_needed: AtomicBool,
    /// `summary_src` pushed a buffer or GAP since the last flush: its sink
    /// has prerolled, so waiting for its EOS push cannot deadlock.
    summary_prerolled: AtomicBool,
    /// PTS of the last caption pushed on `summary_src`: summaries and the
    /// final summary are stamped with it, a time inside the segment (a
    /// window's end can lie at the segment's stop, where a sink would clip
    /// the buffer away).
    last_caption_pts: AtomicU64,
    /// Its duration: the alert that follows a caption has the same.
    last_caption_duration: AtomicU64,
    /// The backend's fatal error has been posted.
    fatal_posted: AtomicBool,
    /// Read by the counter properties.
    counters: Counters,
    /// A session built on its own thread (see [`preroll`]).
    preroll: preroll::Preroll,
    /// `request-caption` was emitted: the next chunk completed is captioned.
    caption_requested: AtomicBool,
}

impl VssSummarize {
    fn dispatcher(&self) -> Option<Arc<Flow>> {
        self.state.lock().dispatcher.clone()
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
        if !self.wait_prepared() {
            return Err(gst::FlowError::Flushing);
        }
        if self.check_fatal() {
            return Err(gst::FlowError::Error);
        }
        let need_live = self.state.lock().live.is_none();
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
            let mut st = self.state.lock();
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
            // A GAP lets a sink on summary_src preroll long before the first
            // record exists; it follows the segment in the output order.
            let pts = buffer.pts().unwrap_or(gst::ClockTime::ZERO);
            if let Some(d) = self.dispatcher() {
                let _ = d.mark(SummaryMarker::Gap(pts));
            }
        }
        let (jobs, live) = self.sample(&buffer);

        // One pending record per outgoing video buffer, so that readers that
        // look a meta up by name find each one.
        let meta = self.state.lock().metas.pop_front();
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
        let clip_buffer = buffer.clone();
        let res = self.srcpad.push(buffer);
        self.keep_clip_frame(&clip_buffer);
        self.submit(jobs, live)?;
        res
    }

    /// Evidence: a thumbnail of this frame for the clip ring, at most
    /// `CLIP_FPS` a second, when clips are on (decided under the state lock;
    /// copied, scaled and encoded after it).
    fn keep_clip_frame(&self, buffer: &gst::Buffer) {
        let (ev, t, info, format) = {
            let st = self.state.lock();
            let Some(ev) = st.session.as_ref().and_then(Session::evidence) else {
                return;
            };
            let (Some(pts), Some(info)) = (buffer.pts(), st.info.as_ref()) else {
                return;
            };
            let Some(t) = st.segment.to_stream_time(pts) else {
                return;
            };
            let t = t.nseconds() as f64 / 1e9;
            let Some(format) = pixel_format(info.format()) else {
                return;
            };
            if !ev.wants_frame(t) {
                return;
            }
            (ev, t, info.clone(), format)
        };
        let Some(frame) = copy_frame(buffer, &info, format, colorimetry(&info)) else {
            return;
        };
        match crate::evidence::thumbnail(&frame) {
            Ok(th) => ev.push_thumbnail(t, th),
            Err(e) => gst::debug!(CAT, imp = self, "no clip thumbnail: {e}"),
        }
    }

    /// Feeds the chunker; returns the chunks completed by this buffer.
    fn sample(&self, buffer: &gst::Buffer) -> (Vec<Job>, bool) {
        let mut state = self.state.lock();
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
        if live {
            // The source's NTP clock (rtspsrc add-reference-timestamp-meta=true)
            // wins over the wall clock.
            if let Some(unix) = video::ntp_unix_seconds(buffer) {
                state.wall_base = Some((st, unix));
            }
        }
        if live && state.wall_base.is_none() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            state.wall_base = Some((st, now));
        }
        let triggers = state
            .session
            .as_ref()
            .is_some_and(|s| s.steering.triggers_on());
        if triggers {
            Self::note_detections(&mut state, buffer, st);
        }
        let Some(chunker) = state.chunker.as_mut() else {
            return (Vec::new(), live);
        };
        let chunks = chunker.push(st, buffer.duration().map(|d| d.nseconds()), || {
            copy_frame(buffer, &info, format, color)
        });
        let jobs = chunks
            .into_iter()
            .map(|c| self.make_job(&mut state, c, live))
            .collect();
        (jobs, live)
    }

    fn make_job(&self, state: &mut State, c: crate::chunker::Chunk<RawFrame>, live: bool) -> Job {
        let facts = self.chunk_facts(state, &c);
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
        let RecordConstants {
            backend,
            model,
            stream_id,
        } = state.consts.clone();
        let (start_label, end_label, wall) = match (live, state.wall_base) {
            (true, Some((st0, unix0))) => {
                let at = |t: u64| {
                    prompt::time_label(TimeStyle::Rfc3339, unix0 + (t as f64 - st0 as f64) / 1e9)
                };
                let (a, b) = (at(c.start), at(c.end));
                (a.clone(), b.clone(), Some((a, b)))
            }
            _ => (
                prompt::time_label(TimeStyle::Seconds, c.start as f64 / 1e9),
                prompt::time_label(TimeStyle::Seconds, c.end as f64 / 1e9),
                None,
            ),
        };
        let template = CaptionRecord {
            stream_id,
            start_time: wall.as_ref().map(|w| w.0.clone()),
            end_time: wall.map(|w| w.1),
            start_label,
            end_label,
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
            stream_id: template.stream_id.clone(),
            prompts: None,
        };
        (job, template, facts)
    }

    fn submit(&self, jobs: Vec<Job>, live: bool) -> Result<(), gst::FlowError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let Some(d) = self.dispatcher() else {
            return Err(gst::FlowError::Flushing);
        };
        for (job, template, facts) in jobs {
            gst::debug!(
                CAT,
                imp = self,
                "chunk {} [{:.3}, {:.3}) complete with {} frames",
                template.chunk_index,
                template.start,
                template.end,
                job.frames.len()
            );
            match d.submit_gated(job, template, live, facts) {
                Submitted::Queued => {}
                Submitted::Dropped(idx, hint) => {
                    for i in idx {
                        gst::element_imp_warning!(
                            self,
                            gst::StreamError::Failed,
                            ("chunk {i} dropped: {hint}"),
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
        if event.is_serialized()
            && event.type_() != gst::EventType::FlushStop
            && !self.wait_prepared()
        {
            return false;
        }
        match event.view() {
            EventView::StreamStart(ss) => {
                let id = format!("{}/summary", ss.stream_id());
                // Derived from the sink's: same group and seqnum.
                let mut b = gst::event::StreamStart::builder(&id).seqnum(event.seqnum());
                if let Some(g) = ss.group_id() {
                    b = b.group_id(g);
                }
                // In order after the records of what came before.
                self.summary_event(b.build());
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::Caps(c) => {
                let caps = c.caps_owned();
                match gst_video::VideoInfo::from_caps(&caps) {
                    Ok(info) => {
                        self.state.lock().info = Some(info);
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
                    let mut st = self.state.lock();
                    let live = st.live.unwrap_or(false);
                    let chunks = st.chunker.as_mut().map(|c| c.finish()).unwrap_or_default();
                    let jobs: Vec<_> = chunks
                        .into_iter()
                        .map(|c| self.make_job(&mut st, c, live))
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
                // The records of the old segment leave in the old segment: the
                // new one follows them on summary_src (sent by the task).
                self.summary_event(event.clone());
                self.gap_needed.store(true, Ordering::Release);
                gst::Pad::event_default(pad, Some(&*self.obj()), event)
            }
            EventView::FlushStart(_) => {
                self.wake_held();
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
                    let mut st = self.state.lock();
                    if let Some(c) = st.chunker.as_mut() {
                        c.reset();
                    }
                    st.wall_base = None;
                    st.live = None;
                }
                self.state.lock().metas.clear();
                self.gap_needed.store(true, Ordering::Release);
                // After a flush the sinks preroll again.
                self.summary_prerolled.store(false, Ordering::Release);
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
    /// `drain-timeout`) to be handed to the `summary_src` task, then let EOS
    /// go on `src`. It waits for `summary_src`'s own EOS push too (bounded)
    /// only when that sink has prerolled: a sink that has not (EOS before any
    /// frame, a flushing seek to the end) blocks the push until PLAYING,
    /// which needs the EOS held here to reach the video sink.
    fn drain(&self) {
        let (jobs, live) = {
            let mut st = self.state.lock();
            let live = st.live.unwrap_or(false);
            let chunks = st.chunker.as_mut().map(|c| c.finish()).unwrap_or_default();
            let jobs: Vec<_> = chunks
                .into_iter()
                .map(|c| self.make_job(&mut st, c, live))
                .collect();
            (jobs, live)
        };
        if self.submit(jobs, live).is_err() {
            return;
        }
        let Some(d) = self.dispatcher() else {
            return;
        };
        let timeout = config::secs(self.settings.lock().drain_timeout);
        let deadline = std::time::Instant::now() + timeout;
        gst::debug!(CAT, imp = self, "draining {} pending chunks", d.pending());
        if let Some(n) = d.drain(timeout) {
            self.drain_text(&d, deadline, timeout);
            // Every record's bus message before the video's EOS; and the
            // records themselves too once the sink has prerolled (one that
            // has not blocks pushes until PLAYING, which needs this EOS).
            let pushed = self.summary_prerolled.load(Ordering::Acquire);
            if !d.wait_eos_out(pushed, OUTPUT_GRACE) {
                gst::debug!(CAT, imp = self, "summary_src records still being sent");
            }
            if n > 0 {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Failed,
                    ("{n} chunks were still unanswered when drain-timeout ({:.1} s) expired at EOS; they were reported as error records", timeout.as_secs_f64())
                );
            }
        }
    }

    /// EOS, after the captions: the window and final summaries and the
    /// webhook deliveries finish by `deadline`; summaries not made by then
    /// become error records.
    fn drain_text(&self, d: &Flow, deadline: std::time::Instant, timeout: Duration) {
        if let Some(e) = d.engine() {
            if !e.wait_finished(deadline) && !d.is_stopped() {
                let msg = format!(
                    "drain-timeout ({:.1} s) expired at EOS before the summary was made",
                    timeout.as_secs_f64()
                );
                let n = e.expire(&msg);
                if n > 0 {
                    gst::element_imp_warning!(
                        self,
                        gst::StreamError::Failed,
                        ("{n} summaries were not made when drain-timeout ({:.1} s) expired at EOS; they were reported as error records", timeout.as_secs_f64())
                    );
                }
            }
        }
        let (evidence, webhook) = {
            let st = self.state.lock();
            let s = st.session.as_ref();
            (s.and_then(Session::evidence), s.and_then(Session::webhook))
        };
        if let Some(ev) = evidence {
            if !ev.wait_idle(deadline) {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    ("incident clips were still being encoded when drain-timeout expired at EOS")
                );
            }
        }
        if let Some(w) = webhook {
            if !w.wait_idle(deadline.max(std::time::Instant::now() + Duration::from_millis(100))) {
                gst::element_imp_warning!(
                    self,
                    gst::ResourceError::Write,
                    (
                        "{} alert deliveries to {} were still pending at EOS",
                        w.pending(),
                        w.url_for_log()
                    )
                );
            }
        }
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    /// Posts the backend's fatal error once; true when there is one.
    fn check_fatal(&self) -> bool {
        let fatal = self
            .state
            .lock()
            .session
            .as_ref()
            .and_then(|s| s.backend.fatal_error());
        let Some(e) = fatal else { return false };
        if !self.fatal_posted.swap(true, Ordering::AcqRel) {
            gst::element_imp_error!(self, gst::LibraryError::Failed, ("vsssummarize: {e}"));
        }
        true
    }

    /// NULL→READY: the session (backend, downloads, endpoint check, text
    /// LLM), built without any lock held; on its own thread when it
    /// downloads ([`preroll`]).
    fn prepare(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().clone();
        if self.prepare_async(&settings) {
            return Ok(());
        }
        let observer = observer::ElementObserver::for_element(&self.obj());
        let session = Session::build(
            &settings,
            Env::from_process(),
            &self.obj().name(),
            &self.counters,
            observer,
        )
        .map_err(observer::error_message)?;
        self.fatal_posted.store(false, Ordering::Release);
        self.state.lock().session = Some(session);
        Ok(())
    }

    /// READY→PAUSED: a run: the chunker, the dispatcher with its output
    /// stream and summary engine, the record constants.
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().clone();
        let mut st = self.state.lock();
        let Some(session) = st.session.as_ref() else {
            return Err(gst::error_msg!(
                gst::CoreError::StateChange,
                ("vsssummarize: no session (its build failed, see the earlier error): set the element to NULL and start again")
            ));
        };
        let params = ChunkParams::new(
            config::secs(settings.chunk_duration).as_nanos() as u64,
            config::secs(settings.chunk_overlap).as_nanos() as u64,
            session.resolved.num_frames,
        )
        .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("vsssummarize: {e}")))?;
        let (d, note) = session
            .start::<SummaryMarker>(&settings, &self.counters)
            .map_err(observer::error_message)?;
        let consts = session.record_constants();
        let session = st.session.take();
        *st = State {
            session,
            consts,
            dispatcher: Some(Arc::new(d)),
            chunker: Some(Chunker::new(params)),
            ..Default::default()
        };
        drop(st);
        if let Some(note) = note {
            gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{note}"));
        }
        self.gap_needed.store(true, Ordering::Release);
        self.summary_prerolled.store(false, Ordering::Release);
        Ok(())
    }

    /// PAUSED→READY: cancels everything of the run (the network is not
    /// waited for); the session stays.
    fn stop(&self) {
        let (d, webhook) = {
            let st = self.state.lock();
            (
                st.dispatcher.clone(),
                st.session.as_ref().and_then(Session::webhook),
            )
        };
        if let Some(d) = d {
            d.shutdown();
        }
        if let Some(w) = webhook {
            w.cancel_all();
        }
        let _ = self.summary_srcpad.stop_task();
        let mut st = self.state.lock();
        let session = st.session.take();
        *st = State {
            session,
            ..Default::default()
        };
    }
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
            gap_needed: AtomicBool::new(true),
            summary_prerolled: AtomicBool::new(false),
            last_caption_pts: AtomicU64::new(0),
            last_caption_duration: AtomicU64::new(0),
            fatal_posted: AtomicBool::new(false),
            counters: Counters::default(),
            preroll: Default::default(),
            caption_requested: AtomicBool::new(false),
        }
    }
}

impl ObjectImpl for VssSummarize {
    fn properties() -> &'static [glib::ParamSpec] {
        Self::property_specs()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![glib::subclass::Signal::builder("request-caption")
                .action()
                .class_handler(|args| {
                    let obj = args[0].get::<super::VssSummarize>().expect("signal arg");
                    obj.imp().request_caption();
                    None
                })
                .build()]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        self.set_prop(value, pspec)
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        self.get_prop(pspec)
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
                env!("CARGO_PKG_AUTHORS"),
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
            gst::StateChange::ReadyToPaused => match self.take_prepared() {
                Some(Err(e)) => {
                    self.post_error_message(e);
                    return Err(gst::StateChangeError);
                }
                Some(Ok(false)) => {
                    // Still building: preroll asynchronously (preroll rule 2).
                    self.parent_change_state(transition)?;
                    let obj = self.obj();
                    let _ =
                        obj.post_message(gst::message::AsyncStart::builder().src(&*obj).build());
                    return Ok(gst::StateChangeSuccess::Async);
                }
                None | Some(Ok(true)) => {
                    if let Err(e) = self.start() {
                        self.post_error_message(e);
                        return Err(gst::StateChangeError);
                    }
                }
            },
            gst::StateChange::PausedToReady => {
                self.stop_preroll();
                self.stop();
            }
            gst::StateChange::ReadyToNull => self.cancel_prepare(),
            _ => {}
        }
        let ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::ReadyToPaused => self.start_summary_task(),
            gst::StateChange::ReadyToNull => {
                // Dropped outside the lock: a custom worker's stop waits.
                let session = self.state.lock().session.take();
                drop(session);
            }
            _ => {}
        }
        Ok(ret)
    }
}
