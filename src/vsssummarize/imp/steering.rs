// SPDX-License-Identifier: MPL-2.0
//! Glue for watching a camera ([`crate::gate`], [`crate::steer`]): property
//! changes while running, the `request-caption` signal, the ROI metas of
//! the video buffers and the thumbnails of the sampled frames.

use super::*;
use crate::gate::{ChunkFacts, Detection};

/// Detections kept for the chunks still open (oldest dropped beyond this).
const MAX_DETECTIONS: usize = 4096;

const GATE_PROPS: [&str; 7] = [
    "skip-unchanged",
    "change-threshold",
    "heartbeat",
    "trigger-classes",
    "trigger-mode",
    "trigger-cooldown",
    "trigger-min-confidence",
];

impl VssSummarize {
    /// A property was set: once a session exists, the change goes to its
    /// steering (from the next chunk not yet sent).
    pub(super) fn steer(&self, name: &str, s: &Settings) {
        let steering = self
            .state
            .lock()
            .session
            .as_ref()
            .map(|p| (p.steering.clone(), p.text.is_some()));
        let Some((st, has_text)) = steering else {
            return;
        };
        match name {
            "prompt" | "system-prompt" => {
                let changed = if name == "prompt" {
                    let p = if s.prompt.trim().is_empty() {
                        prompt::DEFAULT_PROMPT.to_string()
                    } else {
                        s.prompt.clone()
                    };
                    st.set_prompts(Some(p), None)
                } else {
                    let sys = s
                        .user
                        .system_prompt
                        .clone()
                        .filter(|x| !x.trim().is_empty());
                    st.set_prompts(None, Some(sys))
                };
                if let Some(p) = changed {
                    gst::info!(
                        CAT,
                        imp = self,
                        "{name} changed: prompt-id {} from the next chunk not yet sent",
                        p.id
                    );
                    let mut b = gst::Structure::builder("vss-prompt")
                        .field("prompt-id", p.id)
                        .field("prompt", p.prompt.as_str());
                    if let Some(sys) = &p.system_prompt {
                        b = b.field("system-prompt", sys.as_str());
                    }
                    let msg = gst::message::Element::builder(b.build())
                        .src(&*self.obj())
                        .build();
                    let _ = self.obj().post_message(msg);
                }
            }
            "events" => match crate::summary::parse_events(&s.text.events) {
                Ok(ev) if has_text => {
                    let n = ev.len();
                    let old = st.set_events(ev.clone());
                    gst::info!(
                        CAT,
                        imp = self,
                        "events changed ({} -> {n}): from the next caption checked",
                        old.len()
                    );
                    // The open incidents of removed events end now
                    // (incidents rule 6), in order with the records.
                    if let Some(d) = self.dispatcher() {
                        d.events_changed(&ev);
                    }
                }
                Ok(_) => gst::warning!(
                    CAT,
                    imp = self,
                    "events changed, but no text LLM was set up at NULL->READY (summarize=false and no events): it applies from the next NULL->READY"
                ),
                Err(e) => gst::warning!(CAT, imp = self, "{e}; the events in effect stay"),
            },
            n if GATE_PROPS.contains(&n) => {
                st.set_gate(s.gate.clone());
                gst::info!(CAT, imp = self, "{n} changed: from the next chunk not yet sent");
            }
            _ => {}
        }
    }

    /// The `request-caption` action signal: the chunk open now is
    /// captioned whatever the gate says.
    pub(super) fn request_caption(&self) {
        gst::info!(CAT, imp = self, "caption requested");
        self.caption_requested.store(true, Ordering::Release);
    }

    /// Called for every video buffer while triggers are on: keeps its ROI
    /// detections (class = the meta's roi-type; confidence from a param
    /// structure's `confidence` field, when one carries it).
    pub(super) fn note_detections(state: &mut State, buffer: &gst::BufferRef, stream_time: u64) {
        for m in buffer.iter_meta::<gst_video::VideoRegionOfInterestMeta>() {
            let confidence = m.params().find_map(|p| {
                p.get::<f64>("confidence")
                    .ok()
                    .or_else(|| p.get::<f32>("confidence").ok().map(f64::from))
                    .filter(|c| c.is_finite())
            });
            if state.detections.len() >= MAX_DETECTIONS {
                state.detections.pop_front();
            }
            state.detections.push_back((
                stream_time,
                Detection {
                    label: m.roi_type().to_string(),
                    confidence,
                },
            ));
        }
    }

    /// What the gate needs of a completed chunk: thumbnails (only when
    /// `skip-unchanged` is on), the detections of its time range, and
    /// whether a caption was requested. `None` when the gate is off.
    pub(super) fn chunk_facts(
        &self,
        state: &mut State,
        c: &crate::chunker::Chunk<RawFrame>,
    ) -> Option<ChunkFacts> {
        let cfg = state.session.as_ref()?.steering.gate_config();
        let requested = self.caption_requested.swap(false, Ordering::AcqRel);
        if !cfg.active() {
            return None;
        }
        let thumbs = if cfg.skip_unchanged {
            c.frames
                .iter()
                .filter_map(|f| crate::gate::thumb_of(&f.frame))
                .collect()
        } else {
            Vec::new()
        };
        let detections = state
            .detections
            .iter()
            .filter(|(t, _)| *t >= c.start && *t < c.end)
            .map(|(_, d)| d.clone())
            .collect();
        // Chunks complete in order: nothing before this start is needed.
        while state.detections.front().is_some_and(|(t, _)| *t < c.start) {
            state.detections.pop_front();
        }
        Some(ChunkFacts {
            index: c.index,
            start: c.start as f64 / 1e9,
            thumbs,
            detections,
            requested,
        })
    }
}
