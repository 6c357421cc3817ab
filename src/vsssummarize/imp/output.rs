// SPDX-License-Identifier: MPL-2.0
//! The `summary_src` side: its pad task pushes records and markers in
//! order, negotiates JSON or text, posts the bus messages and queues the
//! metas; and its queries.

use super::*;
use crate::flow::Item;

/// Metas waiting for a video buffer; beyond this the oldest is discarded
/// (only when video stops flowing while records keep arriving).
const MAX_QUEUED_METAS: usize = 256;

/// What `summary_src` sends between records, in the dispatcher's order.
#[derive(Debug)]
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

    /// One iteration of the `summary_src` task: blocks for the next item of
    /// the output stream (captions, alerts, summaries and markers in their
    /// final order, then EOS) and sends it. The task pauses when the stream
    /// stops (flush, shutdown) or downstream fails.
    pub(super) fn summary_loop(&self) {
        let Some(d) = self.dispatcher() else {
            let _ = self.summary_srcpad.pause_task();
            return;
        };
        let sent = match d.next() {
            None => {
                let _ = self.summary_srcpad.pause_task();
                return;
            }
            Some(Item::Caption(r)) => self.emit(*r),
            Some(Item::Alert(a)) => self.emit_alert(&a),
            Some(Item::Incident(r)) => self.emit_incident(&r),
            Some(Item::Summary(r)) => self.emit_summary(*r),
            Some(Item::Marker(m)) => {
                self.emit_marker(m);
                Ok(())
            }
            Some(Item::Eos) => {
                gst::debug!(CAT, imp = self, "all records out, EOS on summary_src");
                let _ = self.summary_srcpad.push_event(gst::event::Eos::new());
                d.eos_done();
                Ok(())
            }
        };
        if let Err(e) = sent {
            self.summary_flow_error(&d, e);
        }
    }

    /// A push on `summary_src` failed: as gst-plugins-rs's elements do,
    /// `NotLinked` is fine, flushing and EOS pause the task, and anything
    /// else (an error downstream did not report itself) stops the pipeline
    /// with an element error that names the pad. Records pushed before it
    /// were delivered; later ones still reach the bus and the metas.
    fn summary_flow_error(&self, d: &Flow, e: gst::FlowError) {
        match e {
            gst::FlowError::NotLinked => {}
            gst::FlowError::Flushing | gst::FlowError::Eos => {
                gst::debug!(CAT, imp = self, "summary_src: {e:?}, pausing");
                let _ = self.summary_srcpad.pause_task();
            }
            e => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Internal data stream error."),
                    ["streaming stopped on summary_src, reason {e:?} (the element linked to summary_src refused a record)"]
                );
                d.output_failed();
                let _ = self.summary_srcpad.pause_task();
            }
        }
    }

    /// Emits a `summary` or `final-summary` record: bus message, meta queue,
    /// `summary_src` buffer (stamped with the last caption's PTS, no
    /// duration).
    pub(super) fn emit_summary(
        &self,
        r: crate::summary::SummaryRecord,
    ) -> Result<(), gst::FlowError> {
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
        let pts = gst::ClockTime::from_nseconds(self.last_caption_pts.load(Ordering::Acquire));
        let text = match (&r.error, final_) {
            (Some(e), true) => format!("[final summary failed: {e}]"),
            (Some(e), false) => format!("[{what} failed: {e}]"),
            (None, true) => format!("[final summary] {}", r.text),
            (None, false) => format!("[summary {:.2}-{:.2} s] {}", r.start, r.end, r.text),
        };
        self.push_record(r.to_json_line(), text, pts, None)
    }

    fn queue_meta(&self, s: gst::Structure) {
        let mut st = self.state.lock();
        let metas = &mut st.metas;
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
    ) -> Result<(), gst::FlowError> {
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
        let res = self.summary_srcpad.push(buf);
        if res.is_ok() {
            self.summary_prerolled.store(true, Ordering::Release);
        }
        res.map(|_| ())
    }

    /// Sends a stream-start or segment on `summary_src` after every record
    /// submitted before it (the task sends it), or at once when not running.
    pub(super) fn summary_event(&self, event: gst::Event) {
        let marker = SummaryMarker::Event(event);
        let not_queued = match self.dispatcher() {
            Some(d) => d.mark(marker).err(),
            None => Some(marker),
        };
        if let Some(m) = not_queued {
            self.emit_marker(m);
        }
    }

    pub(super) fn emit_marker(&self, m: SummaryMarker) {
        match m {
            SummaryMarker::Event(e) => {
                if e.type_() == gst::EventType::StreamStart {
                    self.state.lock().summary_format = None;
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
        let cur = self.state.lock().summary_format;
        match cur {
            Some(f) if !self.summary_srcpad.check_reconfigure() => f,
            _ => {
                let f = self.negotiate_summary();
                self.state.lock().summary_format = Some(f);
                f
            }
        }
    }

    /// Emits one record: bus message, meta queue, `summary_src` buffer.
    pub(super) fn emit(&self, r: CaptionRecord) -> Result<(), gst::FlowError> {
        if let Some(e) = &r.error {
            gst::warning!(CAT, imp = self, "chunk {} failed: {e}", r.chunk_index);
            // Drops were already reported when they happened.
            if !r.dropped {
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
        let text = match (&r.error, r.same_as) {
            (Some(e), _) => format!("[chunk {} failed: {e}]", r.chunk_index),
            (None, Some(i)) if r.is_gated() => {
                format!("[{} since chunk {i}]", r.kind.as_str())
            }
            (None, _) if r.is_gated() => format!("[{}]", r.kind.as_str()),
            (None, _) => r.text.clone(),
        };
        let pts = gst::ClockTime::from_nseconds(r.pts_ns);
        let duration = gst::ClockTime::from_nseconds(r.duration_ns);
        self.last_caption_pts.store(r.pts_ns, Ordering::Release);
        self.last_caption_duration
            .store(r.duration_ns, Ordering::Release);
        let res = self.push_record(r.to_json_line(), text, pts, Some(duration));
        self.check_fatal();
        res
    }

    /// The alert that follows its caption (its bus message and webhook
    /// delivery went out when it was decided): meta queue and `summary_src`
    /// buffer, with the caption's PTS and duration.
    fn emit_alert(&self, a: &crate::summary::Alert) -> Result<(), gst::FlowError> {
        let a = a.record();
        let value = serde_json::to_value(&a).unwrap_or_default();
        self.queue_meta(meta::structure_from_json(meta::STRUCTURE_NAME, &value));
        let mut line = serde_json::to_string(&a).unwrap_or_default();
        line.push('\n');
        let text = format!("[alert: {}] {}", a.events.join("; "), a.text);
        let pts = gst::ClockTime::from_nseconds(self.last_caption_pts.load(Ordering::Acquire));
        let duration =
            gst::ClockTime::from_nseconds(self.last_caption_duration.load(Ordering::Acquire));
        self.push_record(line, text, pts, Some(duration))
    }

    /// An `incident-start` / `incident-end` record (its `vss-incident`
    /// message and webhook went out when it was decided): meta queue and
    /// `summary_src` buffer, stamped like the alert before it.
    fn emit_incident(&self, r: &crate::summary::IncidentRecord) -> Result<(), gst::FlowError> {
        let value = serde_json::to_value(r).unwrap_or_default();
        self.queue_meta(meta::structure_from_json(meta::STRUCTURE_NAME, &value));
        let text = match r.reason {
            None => format!("[incident {}: {}]", r.incident_id, r.event),
            Some(why) => format!(
                "[incident {} ended ({why}): {}, {} alerts, {:.2}-{:.2} s]",
                r.incident_id, r.event, r.alert_count, r.start, r.end
            ),
        };
        let pts = gst::ClockTime::from_nseconds(self.last_caption_pts.load(Ordering::Acquire));
        self.push_record(r.to_json_line(), text, pts, None)
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
                    config::secs(self.settings.lock().chunk_duration).as_nanos() as u64,
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
