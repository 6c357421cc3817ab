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

    /// One iteration of the `summary_src` task.
    pub(super) fn summary_loop(&self) {
        let Some(d) = self.dispatcher() else {
            let _ = self.summary_srcpad.pause_task();
            return;
        };
        match d.next_output(Duration::from_millis(100)) {
            None => {
                if d.is_stopped() {
                    let _ = self.summary_srcpad.pause_task();
                }
            }
            Some(Output::Record(r)) => self.emit(*r),
            Some(Output::Marker(m)) => match m.downcast::<SummaryMarker>() {
                Ok(m) => self.emit_marker(*m),
                Err(_) => gst::error!(CAT, imp = self, "unknown marker"),
            },
            Some(Output::Eos) => {
                gst::debug!(CAT, imp = self, "all chunks out, EOS on summary_src");
                let _ = self.summary_srcpad.push_event(gst::event::Eos::new());
                d.eos_done();
            }
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
            Ok(_) => self.summary_prerolled.store(true, Ordering::Release),
            Err(gst::FlowError::NotLinked) | Err(gst::FlowError::Flushing) => {}
            Err(e) => gst::warning!(CAT, imp = self, "summary_src push: {e:?}"),
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
