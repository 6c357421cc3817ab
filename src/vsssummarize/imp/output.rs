// SPDX-License-Identifier: MPL-2.0
//! The `summary_src` side: its pad task pushes records and markers in
//! order, negotiates JSON or text, posts the bus messages and queues the
//! metas; and its queries.

use super::*;

/// Metas waiting for a video buffer; beyond this the oldest is discarded
/// (only when video stops flowing while records keep arriving).
const MAX_QUEUED_METAS: usize = 256;

/// What `summary_src` sends between records, in the dispatcher's order.
pub(super) enum SummaryMarker {
    /// A stream-start or segment: records submitted before it belong to
    /// the previous one (a segment change without a flush, e.g. `concat`).
    Event(gst::Event),
    /// The first video PTS of a segment, for sinks to preroll.
    Gap(gst::ClockTime),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SummaryFormat {
    Json,
    Text,
}

impl VssSummarize {
    pub(super) fn start_summary_task(&self) {
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

    /// One iteration of the `summary_src` task: a summary that is ready,
    /// else the next caption (or marker) in order; after the captions' EOS,
    /// the remaining summaries, the final one last, then EOS.
    pub(super) fn summary_loop(&self) {
        let Some(d) = self.dispatcher() else {
            let _ = self.summary_srcpad.pause_task();
            return;
        };
        let engine = self.summary_engine();
        if let Some(e) = &engine {
            if let Some(r) = e.try_next() {
                self.emit_summary(r, e);
                return;
            }
        }
        if self.eos_pending.load(Ordering::Acquire) {
            if d.is_stopped() {
                let _ = self.summary_srcpad.pause_task();
                return;
            }
            match &engine {
                Some(e) if !e.all_taken() => e.wait_ready(Duration::from_millis(100)),
                _ => self.send_summary_eos(&d),
            }
            return;
        }
        // Summaries in the making are looked for often; captions wake us anyway.
        let wait = match &engine {
            Some(e) if e.busy() => Duration::from_millis(20),
            _ => Duration::from_millis(100),
        };
        match d.next_output(wait) {
            None => {
                if d.is_stopped() {
                    let _ = self.summary_srcpad.pause_task();
                }
            }
            Some(Output::Record(r)) => {
                let r = *r;
                let chunk = engine.as_ref().map(|_| crate::summary::ChunkResult {
                    chunk_index: r.chunk_index,
                    start: r.start,
                    end: r.end,
                    caption: (!r.is_error()).then(|| r.text.clone()),
                    start_label: r.start_label.clone(),
                    end_label: r.end_label.clone(),
                });
                let live = r.start_time.is_some();
                self.emit(r);
                if let (Some(e), Some(c)) = (&engine, chunk) {
                    // After its caption went out: a summary follows its captions.
                    e.push(c, live);
                }
            }
            Some(Output::Marker(m)) => match m.downcast::<SummaryMarker>() {
                Ok(m) => self.emit_marker(*m),
                Err(_) => gst::error!(CAT, imp = self, "unknown marker"),
            },
            Some(Output::Eos) => match &engine {
                Some(e) => {
                    gst::debug!(CAT, imp = self, "all chunks out, finishing the summaries");
                    e.finish();
                    self.eos_pending.store(true, Ordering::Release);
                }
                None => self.send_summary_eos(&d),
            },
        }
    }

    fn send_summary_eos(&self, d: &Dispatcher) {
        gst::debug!(CAT, imp = self, "all records out, EOS on summary_src");
        self.eos_pending.store(false, Ordering::Release);
        let _ = self.summary_srcpad.push_event(gst::event::Eos::new());
        d.eos_done();
    }

    /// Emits a `summary` or `final-summary` record: bus message, meta queue,
    /// `summary_src` buffer (stamped with the last caption's PTS, no
    /// duration).
    pub(super) fn emit_summary(&self, r: crate::summary::SummaryRecordFields, e: &SummaryEngine) {
        let final_ = r.summary_index.is_none();
        let what = match r.summary_index {
            Some(i) => format!("summary {i} [{:.2} s, {:.2} s)", r.start, r.end),
            None => format!("final summary [{:.2} s, {:.2} s)", r.start, r.end),
        };
        match &r.error {
            Some(e) => gst::element_imp_warning!(
                self,
                gst::StreamError::Failed,
                ("{what} failed: {e}"),
                details: gst::Structure::builder("vss-summary-failed")
                    .field("summary-index", r.summary_index.map(|i| i as i64).unwrap_or(-1))
                    .build()
            ),
            None => gst::debug!(
                CAT,
                imp = self,
                "{what} made in {:.2} s ({} calls)",
                r.latency,
                r.llm_calls
            ),
        }
        let value = serde_json::to_value(&r).unwrap_or_default();
        let s = meta::structure_from_json(meta::STRUCTURE_NAME, &value);
        let msg = gst::message::Element::builder(s.clone())
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
        self.queue_meta(s);
        // Posted: EOS may now leave (the push below may wait for preroll).
        e.emitted(&r);
        let pts = gst::ClockTime::from_nseconds(self.last_caption_pts.load(Ordering::Acquire));
        let text = match (&r.error, final_) {
            (Some(e), true) => format!("[final summary failed: {e}]"),
            (Some(e), false) => format!("[{what} failed: {e}]"),
            (None, true) => format!("[final summary] {}", r.text),
            (None, false) => format!("[summary {:.2}-{:.2} s] {}", r.start, r.end, r.text),
        };
        self.push_record(r.to_json_line(), text, pts, None);
    }

    fn queue_meta(&self, s: gst::Structure) {
        let mut metas = lock(&self.metas);
        if metas.len() >= MAX_QUEUED_METAS {
            metas.pop_front();
            gst::debug!(CAT, imp = self, "meta queue full, oldest meta discarded");
        }
        metas.push_back(s);
    }

    /// One buffer on `summary_src`, JSON or text as negotiated.
    fn push_record(
        &self,
        json: String,
        text: String,
        pts: gst::ClockTime,
        duration: Option<gst::ClockTime>,
    ) {
        let format = self.ensure_summary_caps();
        let bytes = match format {
            SummaryFormat::Json => json.into_bytes(),
            SummaryFormat::Text => text.into_bytes(),
        };
        let mut buf = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buf.get_mut().expect("new buffer is writable");
            b.set_pts(pts);
            b.set_duration(duration);
        }
        match self.summary_srcpad.push(buf) {
            Ok(_) => self.summary_prerolled.store(true, Ordering::Release),
            Err(gst::FlowError::NotLinked) | Err(gst::FlowError::Flushing) => {}
            Err(e) => gst::warning!(CAT, imp = self, "summary_src push: {e:?}"),
        }
    }

    /// Sends a stream-start or segment on `summary_src` after every record
    /// submitted before it (the task sends it), or at once when not running.
    pub(super) fn summary_event(&self, event: gst::Event) {
        let queued = self
            .dispatcher()
            .is_some_and(|d| d.mark(Box::new(SummaryMarker::Event(event.clone()))));
        if !queued {
            self.emit_marker(SummaryMarker::Event(event));
        }
    }

    pub(super) fn emit_marker(&self, m: SummaryMarker) {
        match m {
            SummaryMarker::Event(e) => {
                if e.type_() == gst::EventType::StreamStart {
                    *lock(&self.summary_format) = None;
                } else {
                    // Sticky order on summary_src: stream-start, caps, segment.
                    self.ensure_summary_caps();
                }
                gst::debug!(CAT, imp = self, "{:?} on summary_src", e.type_());
                let _ = self.summary_srcpad.store_sticky_event(&e);
            }
            SummaryMarker::Gap(pts) => {
                self.ensure_summary_caps();
                gst::debug!(CAT, imp = self, "GAP at {pts} on summary_src");
                if self
                    .summary_srcpad
                    .push_event(gst::event::Gap::builder(pts).build())
                {
                    self.summary_prerolled.store(true, Ordering::Release);
                }
            }
        }
    }

    pub(super) fn negotiate_summary(&self) -> SummaryFormat {
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
    pub(super) fn ensure_summary_caps(&self) -> SummaryFormat {
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
    pub(super) fn emit(&self, r: SummaryRecord) {
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
        self.queue_meta(s);
        // Text consumers (textoverlay, subtitle files) show the failure.
        let text = match &r.error {
            Some(e) => format!("[chunk {} failed: {e}]", r.chunk_index),
            None => r.text.clone(),
        };
        let pts = gst::ClockTime::from_nseconds(r.pts_ns);
        let duration = gst::ClockTime::from_nseconds(r.duration_ns);
        self.last_caption_pts.store(r.pts_ns, Ordering::Release);
        self.push_record(r.to_json_line(), text, pts, Some(duration));
        if !r.detected_events.is_empty() {
            // The alert follows its caption directly (its bus message and
            // webhook delivery went out when it was decided).
            let a = crate::summary::checker::alert_of(&r).record();
            let value = serde_json::to_value(&a).unwrap_or_default();
            self.queue_meta(meta::structure_from_json(meta::STRUCTURE_NAME, &value));
            let mut line = serde_json::to_string(&a).unwrap_or_default();
            line.push('\n');
            let text = format!("[alert: {}] {}", a.events.join("; "), a.text);
            self.push_record(line, text, pts, Some(duration));
        }
        self.check_fatal();
    }

    pub(super) fn summary_src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
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
}
