// SPDX-License-Identifier: MPL-2.0
//! Incidents: consecutive chunks whose captions raise the same event form
//! one incident, with one `incident-start` and one `incident-end` record.
//! Plain Rust, fed in chunk order (the dispatcher's ordered release, right
//! after each chunk's record and alert were put into the output stream).
//!
//! Rules (one test each, `rule_N_…`):
//! 1. **Open**: an event detected in a chunk (its `alert`) with no open
//!    incident for that event opens one: an `incident-start` record follows
//!    the chunk's `alert` record. An alert of several events opens (or
//!    extends) one incident per event.
//! 2. **Extend**: an event detected again while its incident is open
//!    extends it (`end`, `last-chunk`, `alert-count`, the chunks and
//!    captions), unless more than `incident-gap` seconds passed between the
//!    incident's last alert chunk's end and this chunk's start (chunks
//!    without a verdict in between: rule 4): then the old incident closes
//!    (`reason: quiet`) and a new one opens.
//! 3. **Close after the quiet time**: a chunk whose event check found the
//!    event absent closes the incident once `chunk.end − incident.end ≥
//!    incident-gap` (the incident's `end` is the end of its last alert
//!    chunk). With `incident-gap=0` the first chunk without the event closes
//!    it; with 10 s chunks and `incident-gap=30` three quiet chunks do. The
//!    `incident-end` record follows that chunk's record.
//! 4. **No verdict**: error records and captions whose event check failed
//!    (`alert-error`) say nothing about the event: they neither extend nor
//!    close an incident (the time still counts once a verdict arrives).
//! 5. **EOS**: every open incident closes (`reason: eos`), before the final
//!    summary.
//! 6. **Event removed**: [`Incidents::retain_events`] closes the open
//!    incidents of events no longer in `events` (`reason: event-removed`);
//!    alerts of removed events decided before the change (chunks already
//!    checked) open no new incident.
//! 7. **Flush and stop**: [`Incidents::close_all`] with `flush` / `stopped`:
//!    the element posts those `incident-end` records on the bus and the
//!    webhook only (the flushed segment's records on `summary_src` are
//!    discarded, and a stopped pad pushes nothing).
//! 8. **Bounded**: an incident keeps at most [`KEEP_INDICES`] chunk indices
//!    and [`KEEP_CAPTIONS`] captions (the first and the last halves; the
//!    rest is counted in `chunks-omitted`), each caption cut to
//!    [`MAX_CAPTION_CHARS`] characters. At most [`MAX_EVENTS`] incidents
//!    are open at once (one per event).
//! 9. **Exactly once**: each incident ends as exactly one `incident-end`
//!    record: it leaves the open set when its end is made.
//! 10. **Gated chunks** (`skip-unchanged`, triggers; docs/monitoring.md):
//!     an `unchanged` chunk repeats the verdict of the last checked caption
//!     (the picture did not change, so neither did what it shows): the
//!     incidents of the events that caption raised stay open and their
//!     `end` reaches this chunk's end (no alert is added: `alert-count`
//!     counts checked chunks); the others close by rule 3 as after a
//!     caption without them. A `skipped` chunk (no trigger) was not looked
//!     at: no verdict (rule 4).
//!
//! `incident-id` is `<stream-id>-incident-<n>`, `n` counting from 0 in each
//! run (unique within a run, like `alert-id`).

use std::collections::VecDeque;
use std::sync::Arc;

use std::cell::RefCell;

use parking_lot::ReentrantMutex;
use serde_json::{json, Value};

use super::alerts::{Alert, MAX_EVENTS};
use crate::flow::IncidentOut;
use crate::record::{CaptionRecord, ChunkKind, IncidentCaption, IncidentRecord};

/// Default `incident-gap`, seconds: three quiet 10 s chunks, so that one
/// chunk the model describes differently does not split an incident.
pub const DEFAULT_INCIDENT_GAP: f64 = 30.0;
/// Chunk indices kept per incident (first and last halves).
pub const KEEP_INDICES: usize = 256;
/// Captions kept per incident (first and last halves).
pub const KEEP_CAPTIONS: usize = 16;
/// Longest caption kept in an incident record, in characters.
pub const MAX_CAPTION_CHARS: usize = 2000;

/// Why an incident ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    Quiet,
    Eos,
    EventRemoved,
    Flush,
    Stopped,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Quiet => "quiet",
            EndReason::Eos => "eos",
            EndReason::EventRemoved => "event-removed",
            EndReason::Flush => "flush",
            EndReason::Stopped => "stopped",
        }
    }
}

/// The first `n/2` and the last `n/2` of a sequence, and how many were left
/// out between them (rule 8).
#[derive(Clone, Debug)]
struct HeadTail<T> {
    cap: usize,
    head: Vec<T>,
    tail: VecDeque<T>,
    omitted: u64,
}

impl<T: Clone> HeadTail<T> {
    fn new(cap: usize) -> Self {
        HeadTail {
            cap: cap.max(2),
            head: Vec::new(),
            tail: VecDeque::new(),
            omitted: 0,
        }
    }
    fn push(&mut self, v: T) {
        if self.head.len() < self.cap / 2 {
            self.head.push(v);
            return;
        }
        self.tail.push_back(v);
        if self.tail.len() > self.cap - self.cap / 2 {
            self.tail.pop_front();
            self.omitted += 1;
        }
    }
    fn to_vec(&self) -> Vec<T> {
        self.head.iter().chain(self.tail.iter()).cloned().collect()
    }
}

/// One open incident.
#[derive(Clone, Debug)]
struct Open {
    id: String,
    event: String,
    start: f64,
    end: f64,
    start_time: Option<String>,
    end_time: Option<String>,
    first_chunk: u64,
    last_chunk: u64,
    alerts: u64,
    indices: HeadTail<u64>,
    captions: HeadTail<IncidentCaption>,
    snapshot: Option<String>,
}

/// The incident state of one run (see the module docs).
#[derive(Debug)]
pub struct Incidents {
    stream_id: String,
    gap: f64,
    next_id: u64,
    open: Vec<Open>,
    /// After an `events` change: the events that may open incidents.
    events: Option<Vec<String>>,
    /// The events the last checked caption raised (rule 10).
    last_verdict: Vec<String>,
}

fn cut(s: &str) -> String {
    let t = s.trim();
    match t.char_indices().nth(MAX_CAPTION_CHARS) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

impl Incidents {
    /// `gap`: `incident-gap`, seconds (negative or not finite is 0).
    pub fn new(stream_id: &str, gap: f64) -> Incidents {
        Incidents {
            stream_id: stream_id.to_string(),
            gap: if gap.is_finite() { gap.max(0.0) } else { 0.0 },
            next_id: 0,
            open: Vec::new(),
            events: None,
            last_verdict: Vec::new(),
        }
    }

    /// Incidents open now.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The events with an open incident.
    pub fn open_events(&self) -> Vec<String> {
        self.open.iter().map(|o| o.event.clone()).collect()
    }

    fn record(o: &Open, kind: &'static str, reason: Option<EndReason>) -> IncidentRecord {
        IncidentRecord {
            kind,
            stream_id: String::new(),
            incident_id: o.id.clone(),
            event: o.event.clone(),
            start: o.start,
            end: o.end,
            start_time: o.start_time.clone(),
            end_time: o.end_time.clone(),
            first_chunk: o.first_chunk,
            last_chunk: o.last_chunk,
            alert_count: o.alerts,
            chunk_indices: o.indices.to_vec(),
            captions: o.captions.to_vec(),
            chunks_omitted: o.indices.omitted,
            reason: reason.map(EndReason::as_str),
            snapshot: o.snapshot.clone(),
            clip: None,
            clip_start: None,
            clip_end: None,
        }
    }

    fn end_of(&self, o: &Open, reason: EndReason) -> IncidentRecord {
        let mut r = Self::record(o, "incident-end", Some(reason));
        r.stream_id = self.stream_id.clone();
        r
    }

    /// One chunk's record and its alert, in chunk order (rules 1–4): the
    /// incident records to put after them (ends first, then starts).
    pub fn observe(&mut self, rec: &CaptionRecord, alert: Option<&Alert>) -> Vec<IncidentRecord> {
        // Rule 4: no verdict.
        if rec.kind == ChunkKind::Skipped
            || alert.is_none() && (rec.is_error() || rec.alert_error.is_some())
        {
            return Vec::new();
        }
        // Rule 10: an unchanged chunk repeats the last verdict.
        let unchanged = rec.kind == ChunkKind::Unchanged;
        let repeated = if unchanged {
            std::mem::take(&mut self.last_verdict)
        } else {
            Vec::new()
        };
        let detected: &[String] = match alert {
            Some(a) => a.events.as_slice(),
            None => &repeated,
        };
        let mut out = Vec::new();
        // Rules 2 and 3: closes.
        let mut i = 0;
        while i < self.open.len() {
            let o = &self.open[i];
            let seen = detected.contains(&o.event);
            let close = if seen {
                rec.start - o.end > self.gap
            } else {
                rec.end - o.end >= self.gap
            };
            if close {
                let o = self.open.remove(i);
                out.push(self.end_of(&o, EndReason::Quiet));
            } else {
                i += 1;
            }
        }
        if unchanged {
            for o in self.open.iter_mut().filter(|o| detected.contains(&o.event)) {
                o.end = o.end.max(rec.end);
                o.end_time = rec.end_time.clone().or(o.end_time.take());
            }
            self.last_verdict = repeated;
            return out;
        }
        self.last_verdict = detected.to_vec();
        let Some(alert) = alert else {
            return out;
        };
        let caption = IncidentCaption {
            chunk_index: rec.chunk_index,
            start: rec.start,
            end: rec.end,
            text: cut(&rec.text),
        };
        for ev in &alert.events {
            if let Some(o) = self.open.iter_mut().find(|o| &o.event == ev) {
                // Rule 2.
                o.end = o.end.max(rec.end);
                o.end_time = rec.end_time.clone().or(o.end_time.take());
                o.last_chunk = rec.chunk_index;
                o.alerts += 1;
                o.indices.push(rec.chunk_index);
                o.captions.push(caption.clone());
                continue;
            }
            if self.open.len() >= MAX_EVENTS
                || self.events.as_ref().is_some_and(|l| !l.contains(ev))
            {
                continue;
            }
            // Rule 1.
            let mut o = Open {
                id: format!("{}-incident-{}", self.stream_id, self.next_id),
                event: ev.clone(),
                start: rec.start,
                end: rec.end,
                start_time: rec.start_time.clone(),
                end_time: rec.end_time.clone(),
                first_chunk: rec.chunk_index,
                last_chunk: rec.chunk_index,
                alerts: 1,
                indices: HeadTail::new(KEEP_INDICES),
                captions: HeadTail::new(KEEP_CAPTIONS),
                snapshot: alert.snapshot.clone(),
            };
            self.next_id += 1;
            o.indices.push(rec.chunk_index);
            o.captions.push(caption.clone());
            let mut r = Self::record(&o, "incident-start", None);
            r.stream_id = self.stream_id.clone();
            out.push(r);
            self.open.push(o);
        }
        out
    }

    /// Rules 5 and 7: closes every open incident.
    pub fn close_all(&mut self, reason: EndReason) -> Vec<IncidentRecord> {
        let open = std::mem::take(&mut self.open);
        open.iter().map(|o| self.end_of(o, reason)).collect()
    }

    /// Rule 6: closes the incidents of events not in `events`.
    pub fn retain_events(&mut self, events: &[String]) -> Vec<IncidentRecord> {
        let (keep, gone): (Vec<Open>, Vec<Open>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| events.contains(&o.event));
        self.open = keep;
        self.events = Some(events.to_vec());
        gone.iter()
            .map(|o| self.end_of(o, EndReason::EventRemoved))
            .collect()
    }
}

/// The webhook body of an incident record (`alert-webhook-mode=incident`):
/// VSS's alert fields (`streamId`, `alertId` = the incident id and
/// `-open` / `-closed`, unique per post,
/// `ntpTimestamp` = the incident start, `alertDetails` = the first caption,
/// `detectedEvents`) plus `incidentId`, `state` (`open` / `closed`),
/// `start`, `end`, `alertCount`, `chunkIndices`, and on close `reason`,
/// `captions`, `clip`; `snapshot` when there is one.
pub fn webhook_body(r: &IncidentRecord) -> Value {
    let closed = r.kind == "incident-end";
    let mut b = json!({
        "streamId": r.stream_id,
        "alertId": format!("{}-{}", r.incident_id, if closed { "closed" } else { "open" }),
        "incidentId": r.incident_id,
        "state": if closed { "closed" } else { "open" },
        "ntpTimestamp": match &r.start_time { Some(t) => json!(t), None => json!(r.start) },
        "alertDetails": r.captions.first().map(|c| c.text.clone()).unwrap_or_default(),
        "detectedEvents": [r.event],
        "start": r.start,
        "end": r.end,
        "alertCount": r.alert_count,
        "chunkIndices": r.chunk_indices,
    });
    if closed {
        b["reason"] = json!(r.reason);
        b["captions"] = serde_json::to_value(&r.captions).unwrap_or_default();
        if let Some(c) = &r.clip {
            b["clip"] = json!(c);
        }
    }
    if let Some(s) = &r.snapshot {
        b["snapshot"] = json!(s);
    }
    b
}

/// Called with every incident record as soon as it is decided (the bus
/// message `vss-incident`, the webhook in `alert-webhook-mode=incident`).
pub type OnIncident = Arc<dyn Fn(&IncidentRecord) + Send + Sync>;
/// Fills in the evidence of an ending incident (`clip`, `clip-start`,
/// `clip-end`) and starts making it; called before the record is published.
pub type ClipHook = Arc<dyn Fn(&mut IncidentRecord) + Send + Sync>;

/// The incident state of a run and where its records go: the dispatcher
/// feeds it in chunk order ([`IncidentStage::after_record`]), at EOS, flush
/// and stop ([`IncidentStage::finish`]); the application's `events` changes
/// reach it through [`IncidentStage::events_changed`]. Lock order: taken
/// after the check pool, before the output stream.
///
/// The lock is re-entrant and no borrow of the state is held while
/// records are published: an application that changes `events` from a
/// synchronous bus handler of `vss-incident` (on the publishing thread)
/// gets its change applied at once instead of a deadlock, and each record
/// is in the output stream before its callback runs, so the order on
/// `summary_src` stays the order decided.
pub struct IncidentStage {
    state: ReentrantMutex<RefCell<Incidents>>,
    out: Arc<dyn IncidentOut>,
    on_incident: OnIncident,
    clip: Option<ClipHook>,
}

impl IncidentStage {
    pub fn new(
        incidents: Incidents,
        out: Arc<dyn IncidentOut>,
        on_incident: OnIncident,
        clip: Option<ClipHook>,
    ) -> IncidentStage {
        IncidentStage {
            state: ReentrantMutex::new(RefCell::new(incidents)),
            out,
            on_incident,
            clip,
        }
    }

    /// Publishes decided records: evidence, then (when `to_pad`) the
    /// output stream, then the callback (bus message, webhook).
    fn publish(&self, records: Vec<IncidentRecord>, to_pad: bool) {
        for mut r in records {
            if r.kind == "incident-end" {
                if let Some(c) = &self.clip {
                    c(&mut r);
                }
            }
            if to_pad {
                self.out.incident(r.clone());
            }
            (self.on_incident)(&r);
        }
    }

    /// A chunk's record and its alert, in chunk order (rules 1–4): `put`
    /// puts them into the output stream, then the incident records they
    /// decided follow, all under the stage's lock, so that an `events`
    /// change never comes between a chunk and its incident records.
    pub fn after_record<
        R: std::ops::Deref<Target = CaptionRecord>,
        A: std::ops::Deref<Target = Alert>,
    >(
        &self,
        rec: R,
        alert: Option<A>,
        put: impl FnOnce(R, Option<A>),
    ) {
        let st = self.state.lock();
        let records = st.borrow_mut().observe(&rec, alert.as_deref());
        put(rec, alert);
        self.publish(records, true);
    }

    /// EOS (the records go to the output stream before the final summary),
    /// flush or stop (bus and webhook only, rule 7).
    pub fn finish(&self, reason: EndReason) {
        let st = self.state.lock();
        let records = st.borrow_mut().close_all(reason);
        self.publish(records, reason == EndReason::Eos);
    }

    /// `events` changed while running: the incidents of removed events end
    /// now (rule 6), between the records already put and the next ones.
    pub fn events_changed(&self, events: &[String]) {
        let st = self.state.lock();
        let records = st.borrow_mut().retain_events(events);
        self.publish(records, true);
    }

    /// Incidents open now.
    pub fn open_count(&self) -> usize {
        self.state.lock().borrow().open_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::checker::alert_of;
    use parking_lot::Mutex;

    fn ev(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// Chunk `i` of a 10 s stride.
    fn chunk(i: u64, text: &str) -> CaptionRecord {
        CaptionRecord {
            stream_id: "cam".into(),
            chunk_index: i,
            start: i as f64 * 10.0,
            end: i as f64 * 10.0 + 10.0,
            text: text.into(),
            ..Default::default()
        }
    }

    /// Feeds chunk `i`: `events` detected (empty: checked, nothing found).
    fn feed(inc: &mut Incidents, i: u64, events: &[&str]) -> Vec<IncidentRecord> {
        let rec = chunk(i, &format!("caption {i}"));
        let alert = (!events.is_empty()).then(|| alert_of(&rec, ev(events)));
        inc.observe(&rec, alert.as_ref())
    }

    fn kinds(v: &[IncidentRecord]) -> Vec<(&'static str, String)> {
        v.iter().map(|r| (r.kind, r.event.clone())).collect()
    }

    #[test]
    fn rule_1_an_alert_opens_one_incident_per_event() {
        let mut inc = Incidents::new("cam", 0.0);
        assert!(feed(&mut inc, 0, &[]).is_empty());
        let out = feed(&mut inc, 1, &["fire", "fall"]);
        assert_eq!(
            kinds(&out),
            vec![
                ("incident-start", "fire".into()),
                ("incident-start", "fall".into())
            ]
        );
        assert_eq!(out[0].incident_id, "cam-incident-0");
        assert_eq!(out[1].incident_id, "cam-incident-1");
        assert_eq!(out[0].first_chunk, 1);
        assert_eq!(out[0].alert_count, 1);
        assert_eq!(out[0].captions[0].text, "caption 1");
        assert!(out[0].reason.is_none());
        assert_eq!(inc.open_count(), 2);
    }

    #[test]
    fn rule_2_consecutive_alerts_extend_one_incident() {
        let mut inc = Incidents::new("cam", 0.0);
        feed(&mut inc, 3, &["fire"]);
        for i in 4..8 {
            assert!(feed(&mut inc, i, &["fire"]).is_empty(), "chunk {i}");
        }
        let end = feed(&mut inc, 8, &[]);
        assert_eq!(kinds(&end), vec![("incident-end", "fire".into())]);
        let e = &end[0];
        assert_eq!((e.first_chunk, e.last_chunk, e.alert_count), (3, 7, 5));
        assert_eq!((e.start, e.end), (30.0, 80.0));
        assert_eq!(e.chunk_indices, vec![3, 4, 5, 6, 7]);
        assert_eq!(e.captions.len(), 5);
        assert_eq!(e.reason, Some("quiet"));
        // A detection after a hole longer than the gap starts a new one.
        let mut inc = Incidents::new("cam", 15.0);
        feed(&mut inc, 0, &["fire"]);
        let mut r = chunk(5, "fire again");
        let a = alert_of(&r, ev(&["fire"]));
        r.chunk_index = 5;
        let out = inc.observe(&r, Some(&a));
        assert_eq!(
            kinds(&out),
            vec![
                ("incident-end", "fire".into()),
                ("incident-start", "fire".into())
            ]
        );
    }

    #[test]
    fn rule_3_the_quiet_time_closes() {
        let mut inc = Incidents::new("cam", 30.0);
        feed(&mut inc, 0, &["fire"]);
        assert!(feed(&mut inc, 1, &[]).is_empty());
        assert!(feed(&mut inc, 2, &[]).is_empty());
        // A detection within the gap keeps it open.
        assert!(feed(&mut inc, 3, &["fire"]).is_empty());
        assert!(feed(&mut inc, 4, &[]).is_empty());
        assert!(feed(&mut inc, 5, &[]).is_empty());
        let end = feed(&mut inc, 6, &[]);
        assert_eq!(kinds(&end), vec![("incident-end", "fire".into())]);
        assert_eq!((end[0].end, end[0].alert_count), (40.0, 2));
        assert_eq!(end[0].chunk_indices, vec![0, 3]);
        // Another event's alert is a verdict "absent" for this one.
        let mut inc = Incidents::new("cam", 0.0);
        feed(&mut inc, 0, &["fire"]);
        let out = feed(&mut inc, 1, &["fall"]);
        assert_eq!(
            kinds(&out),
            vec![
                ("incident-end", "fire".into()),
                ("incident-start", "fall".into())
            ]
        );
    }

    #[test]
    fn rule_4_chunks_without_a_verdict_neither_extend_nor_close() {
        let mut inc = Incidents::new("cam", 0.0);
        feed(&mut inc, 0, &["fire"]);
        let mut bad = chunk(1, "");
        bad.error = Some("HTTP 500".into());
        assert!(inc.observe(&bad, None).is_empty());
        let mut unchecked = chunk(2, "smoke");
        unchecked.alert_error = Some("the event check failed".into());
        assert!(inc.observe(&unchecked, None).is_empty());
        assert_eq!(inc.open_count(), 1);
        let end = feed(&mut inc, 3, &[]);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].alert_count, 1);
    }

    #[test]
    fn rule_10_unchanged_chunks_repeat_the_last_verdict_skipped_give_none() {
        let gated = |i: u64, kind: ChunkKind| CaptionRecord {
            kind,
            same_as: Some(0),
            ..chunk(i, "")
        };
        let mut inc = Incidents::new("cam", 0.0);
        feed(&mut inc, 0, &["fire"]);
        // The picture did not change: the fire is still there (with
        // incident-gap=0 a caption without it would close the incident).
        assert!(inc
            .observe(&gated(1, ChunkKind::Unchanged), None)
            .is_empty());
        assert!(inc
            .observe(&gated(2, ChunkKind::Unchanged), None)
            .is_empty());
        // Skipped: not looked at, no verdict.
        assert!(inc.observe(&gated(3, ChunkKind::Skipped), None).is_empty());
        assert_eq!(inc.open_count(), 1);
        let end = feed(&mut inc, 4, &[]);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].end, 30.0, "extended to the last unchanged chunk");
        assert_eq!(end[0].alert_count, 1, "unchanged chunks add no alert");
        // After a caption without the event, unchanged chunks repeat that.
        feed(&mut inc, 5, &["fall"]);
        feed(&mut inc, 6, &[]);
        assert_eq!(inc.open_count(), 0);
        assert!(inc
            .observe(&gated(7, ChunkKind::Unchanged), None)
            .is_empty());
        assert_eq!(inc.open_count(), 0);
    }

    #[test]
    fn rule_5_eos_closes_everything_once() {
        let mut inc = Incidents::new("cam", 30.0);
        feed(&mut inc, 0, &["fire", "fall"]);
        let end = inc.close_all(EndReason::Eos);
        assert_eq!(end.len(), 2);
        assert!(end
            .iter()
            .all(|r| r.kind == "incident-end" && r.reason == Some("eos")));
        assert!(inc.close_all(EndReason::Eos).is_empty());
    }

    #[test]
    fn rule_6_a_removed_event_closes_its_incident() {
        let mut inc = Incidents::new("cam", 30.0);
        feed(&mut inc, 0, &["fire", "fall"]);
        let end = inc.retain_events(&ev(&["fall", "new one"]));
        assert_eq!(kinds(&end), vec![("incident-end", "fire".into())]);
        assert_eq!(end[0].reason, Some("event-removed"));
        assert_eq!(inc.open_events(), ev(&["fall"]));
        // An alert of the removed event checked before the change opens
        // nothing; the new event can open one.
        assert_eq!(
            kinds(&feed(&mut inc, 1, &["fire", "fall", "new one"])),
            vec![("incident-start", "new one".into())]
        );
        assert!(inc.retain_events(&ev(&["fall", "new one"])).is_empty());
    }

    #[test]
    fn rule_7_flush_and_stop_close_with_their_reason() {
        let mut inc = Incidents::new("cam", 30.0);
        feed(&mut inc, 0, &["fire"]);
        assert_eq!(inc.close_all(EndReason::Flush)[0].reason, Some("flush"));
        feed(&mut inc, 1, &["fire"]);
        let r = inc.close_all(EndReason::Stopped);
        assert_eq!(r[0].reason, Some("stopped"));
        assert_eq!(r[0].incident_id, "cam-incident-1");
    }

    #[test]
    fn rule_8_long_incidents_stay_bounded() {
        let mut inc = Incidents::new("cam", 0.0);
        let long = "y".repeat(MAX_CAPTION_CHARS + 50);
        for i in 0..1000 {
            let r = chunk(i, &long);
            let a = alert_of(&r, ev(&["fire"]));
            inc.observe(&r, Some(&a));
        }
        let e = inc.close_all(EndReason::Eos).remove(0);
        assert_eq!(e.alert_count, 1000);
        assert_eq!(e.chunk_indices.len(), KEEP_INDICES);
        assert_eq!(e.chunks_omitted, 1000 - KEEP_INDICES as u64);
        assert_eq!(e.chunk_indices[0], 0);
        assert_eq!(*e.chunk_indices.last().unwrap(), 999);
        assert_eq!(e.captions.len(), KEEP_CAPTIONS);
        assert_eq!(e.captions[KEEP_CAPTIONS - 1].chunk_index, 999);
        assert_eq!(e.captions[0].text.chars().count(), MAX_CAPTION_CHARS + 1);
        // At most one open incident per event, MAX_EVENTS in all.
        let mut inc = Incidents::new("cam", 0.0);
        let many: Vec<String> = (0..MAX_EVENTS + 5).map(|i| format!("e{i}")).collect();
        let r = chunk(0, "x");
        let a = alert_of(&r, many);
        inc.observe(&r, Some(&a));
        assert_eq!(inc.open_count(), MAX_EVENTS);
    }

    #[test]
    fn rule_9_each_incident_ends_exactly_once() {
        let mut inc = Incidents::new("cam", 10.0);
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        // fire in 0-2, 6, 7; fall in 2-3; nothing else.
        let script: [&[&str]; 10] = [
            &["fire"],
            &["fire"],
            &["fire", "fall"],
            &["fall"],
            &[],
            &[],
            &["fire"],
            &["fire"],
            &[],
            &[],
        ];
        for (i, evs) in script.iter().enumerate() {
            for r in feed(&mut inc, i as u64, evs) {
                match r.kind {
                    "incident-start" => starts.push(r.incident_id),
                    _ => ends.push(r.incident_id),
                }
            }
        }
        for r in inc.close_all(EndReason::Eos) {
            ends.push(r.incident_id);
        }
        assert_eq!(starts.len(), 3);
        let mut e = ends.clone();
        e.sort();
        e.dedup();
        assert_eq!(e.len(), ends.len());
        starts.sort();
        assert_eq!(starts, e);
    }

    #[test]
    fn webhook_bodies_open_and_closed() {
        let mut inc = Incidents::new("cam", 0.0);
        let s = feed(&mut inc, 2, &["fire"]).remove(0);
        let b = webhook_body(&s);
        assert_eq!(b["state"], "open");
        assert_eq!(b["incidentId"], "cam-incident-0");
        assert_eq!(b["alertId"], "cam-incident-0-open");
        assert_eq!(b["alertDetails"], "caption 2");
        assert_eq!(b["ntpTimestamp"], 20.0);
        assert!(b.get("reason").is_none());
        let mut e = feed(&mut inc, 3, &[]).remove(0);
        e.clip = Some("/ev/x.mp4".into());
        let b = webhook_body(&e);
        assert_eq!(b["state"], "closed");
        assert_eq!(b["alertId"], "cam-incident-0-closed");
        assert_eq!(b["reason"], "quiet");
        assert_eq!(b["clip"], "/ev/x.mp4");
        assert_eq!(b["captions"][0]["chunk-index"], 2);
    }

    /// A callback that changes `events` (a synchronous bus handler) is
    /// applied at once, and the pad order stays start, end.
    #[test]
    fn a_callback_may_change_events() {
        use crate::flow::{Item, Outbox};
        let out = Arc::new(Outbox::<()>::default());
        let stage: Arc<std::sync::OnceLock<Arc<IncidentStage>>> = Default::default();
        let s2 = stage.clone();
        let st = Arc::new(IncidentStage::new(
            Incidents::new("cam", 30.0),
            out.clone(),
            Arc::new(move |r: &IncidentRecord| {
                if r.kind == "incident-start" {
                    s2.get().unwrap().events_changed(&[]);
                }
            }),
            None,
        ));
        let _ = stage.set(st.clone());
        let r = chunk(0, "fire");
        let fire = alert_of(&r, ev(&["fire"]));
        st.after_record(&r, Some(&fire), |_, _| {});
        let mut got = Vec::new();
        while let Some(Item::Incident(r)) = out.try_next() {
            got.push((r.kind, r.reason));
        }
        assert_eq!(
            got,
            vec![
                ("incident-start", None),
                ("incident-end", Some("event-removed"))
            ]
        );
        assert_eq!(st.open_count(), 0);
    }

    /// The stage puts starts and quiet ends into the output stream and
    /// calls back for each; flush ends reach the callback only.
    #[test]
    fn the_stage_publishes_in_order_with_the_clip() {
        use crate::flow::{Item, Outbox};
        let out = Arc::new(Outbox::<()>::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let stage = IncidentStage::new(
            Incidents::new("cam", 0.0),
            out.clone(),
            Arc::new(move |r: &IncidentRecord| s2.lock().push((r.kind, r.clip.clone()))),
            Some(Arc::new(|r: &mut IncidentRecord| {
                r.clip = Some(format!("{}.mp4", r.incident_id))
            })),
        );
        let r = chunk(0, "fire");
        let fire = alert_of(&r, ev(&["fire"]));
        let none: Option<&Alert> = None;
        let put = |_: &CaptionRecord, _: Option<&Alert>| {};
        stage.after_record(&r, Some(&fire), put);
        stage.after_record(&chunk(1, "calm"), none, put);
        stage.after_record(&r, Some(&fire), put);
        stage.events_changed(&ev(&["other", "fire"]));
        stage.events_changed(&ev(&["other"]));
        stage.events_changed(&ev(&["other", "fire"]));
        stage.after_record(&r, Some(&fire), put);
        stage.finish(EndReason::Flush);
        let mut got = Vec::new();
        while let Some(Item::Incident(r)) = out.try_next() {
            got.push((r.kind, r.reason, r.clip.clone()));
        }
        assert_eq!(
            got,
            vec![
                ("incident-start", None, None),
                (
                    "incident-end",
                    Some("quiet"),
                    Some("cam-incident-0.mp4".into())
                ),
                ("incident-start", None, None),
                (
                    "incident-end",
                    Some("event-removed"),
                    Some("cam-incident-1.mp4".into())
                ),
                ("incident-start", None, None),
            ]
        );
        let seen = seen.lock();
        assert_eq!(seen.len(), 6);
        assert_eq!(
            seen[5],
            ("incident-end", Some("cam-incident-2.mp4".to_string()))
        );
        assert_eq!(stage.open_count(), 0);
    }
}
