// SPDX-License-Identifier: MPL-2.0
//! The event check after each caption (`events`): one LLM call per good
//! caption, as VSS does, run by the dispatcher's after-caption stage on its
//! own threads (`llm-max-concurrency` of them).
//!
//! * Detected events make an [`Alert`], which the dispatcher puts into the
//!   output stream right after its caption (an `alert` record on
//!   `summary_src`), and [`OnAlert`] is called at once, from the checking
//!   thread, so that the bus message and the webhook never wait for the
//!   output order.
//! * An answer that cannot be parsed, or a failed call, is never dropped
//!   silently: the caption record gets `alert-error` and
//!   [`AlertChecker::on_error`] is called (the element posts a warning).
//! * Error records (no caption) are not checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::alerts::{event_check_request, parse_event_answer, Alert};
use super::llm::TextLlm;
use crate::dispatcher::AfterCaption;
use crate::record::CaptionRecord;

/// Called with every alert as soon as it is decided.
pub type OnAlert = Arc<dyn Fn(&Alert) + Send + Sync>;
/// Called with (chunk index, `alert-error`) when a check fails.
pub type OnCheckError = Arc<dyn Fn(u64, &str) + Send + Sync>;

pub struct AlertChecker {
    pub llm: Arc<dyn TextLlm>,
    pub events: Vec<String>,
    /// `llm-temperature`, `llm-top-p`.
    pub temperature: f64,
    pub top_p: f64,
    pub on_alert: OnAlert,
    pub on_error: OnCheckError,
    /// `alerts-raised`.
    pub raised: Arc<AtomicU64>,
    /// When set, `events` as changed while running (read for each check;
    /// `events` above is then the list at start).
    pub steering: Option<Arc<crate::steer::Steering>>,
    /// Writes each alert's snapshot (`evidence-dir`).
    pub evidence: Option<Arc<crate::evidence::Evidence>>,
}

/// The alert of a caption record in which `events` were detected.
pub fn alert_of(rec: &CaptionRecord, events: Vec<String>) -> Alert {
    Alert {
        stream_id: rec.stream_id.clone(),
        chunk_index: rec.chunk_index,
        start: rec.start,
        end: rec.end,
        events,
        text: rec.text.clone(),
        ntp_timestamp: match &rec.start_time {
            Some(t) => json!(t),
            None => json!(rec.start),
        },
        start_time: rec.start_time.clone(),
        end_time: rec.end_time.clone(),
        prompt_id: rec.prompt_id,
        snapshot: None,
    }
}

impl AlertChecker {
    fn fail(&self, rec: &mut CaptionRecord, msg: String) {
        // The answer's snippet may hold NUL, which would cut the bus
        // warning short (hardening round 3).
        let msg = crate::record::without_nul(msg);
        (self.on_error)(rec.chunk_index, &msg);
        rec.alert_error = Some(msg);
    }
}

impl AfterCaption for AlertChecker {
    fn process(&self, rec: &mut CaptionRecord, cancel: &CancellationToken) -> Option<Alert> {
        let line = rec.caption_line()?;
        let events = match &self.steering {
            Some(s) => s.events(),
            None => Arc::new(self.events.clone()),
        };
        if events.is_empty() {
            return None;
        }
        let mut req = event_check_request(&events, &line);
        req.temperature = self.temperature;
        req.top_p = self.top_p;
        match self.llm.complete(&req, cancel) {
            Ok(a) => match parse_event_answer(&a.text, &events) {
                Ok(found) if found.is_empty() => None,
                Ok(found) => {
                    self.raised.fetch_add(1, Ordering::Relaxed);
                    let mut alert = alert_of(rec, found);
                    if let (Some(ev), Some(frame)) = (&self.evidence, &rec.frame.0) {
                        // Written before the alert is published; a failure
                        // is the record's `alert-error`, the alert stands.
                        match ev.snapshot(&alert, frame) {
                            Ok(p) => alert.snapshot = Some(p),
                            Err(e) => self.fail(rec, e),
                        }
                    }
                    (self.on_alert)(&alert);
                    Some(alert)
                }
                Err(e) => {
                    self.fail(rec, e);
                    None
                }
            },
            Err(e) if cancel.is_cancelled() => {
                rec.alert_error = Some(crate::record::without_nul(format!(
                    "the event check was cancelled ({e})"
                )));
                None
            }
            Err(e) => {
                self.fail(rec, format!("the event check failed: {e}"));
                None
            }
        }
    }

    fn timed_out(&self, rec: &mut CaptionRecord, msg: &str) {
        let msg = crate::record::without_nul(format!("the event check did not finish: {msg}"));
        (self.on_error)(rec.chunk_index, &msg);
        rec.alert_error = Some(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::super::llm::fake::FakeLlm;
    use super::*;
    use std::sync::Mutex;

    type Seen<T> = Arc<Mutex<Vec<T>>>;

    fn checker(llm: FakeLlm) -> (AlertChecker, Seen<Alert>, Seen<String>) {
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (a, e) = (alerts.clone(), errors.clone());
        (
            AlertChecker {
                llm: Arc::new(llm),
                events: vec!["a person falls".into(), "smoke or fire".into()],
                temperature: 0.2,
                top_p: 0.7,
                on_alert: Arc::new(move |x: &Alert| a.lock().unwrap().push(x.clone())),
                on_error: Arc::new(move |_, m: &str| e.lock().unwrap().push(m.to_string())),
                raised: Default::default(),
                steering: None,
                evidence: None,
            },
            alerts,
            errors,
        )
    }

    fn caption(text: &str) -> CaptionRecord {
        CaptionRecord {
            stream_id: "dock-3".into(),
            chunk_index: 7,
            start: 70.0,
            end: 80.0,
            text: text.into(),
            start_label: "70.00".into(),
            end_label: "80.00".into(),
            ..Default::default()
        }
    }

    #[test]
    fn detected_events_raise_one_alert_with_the_caption() {
        let (c, alerts, errors) = checker(FakeLlm::new(|req, _, _| {
            assert_eq!(req.user, "<70.00> <80.00> A man falls off a ladder.");
            assert!(req.json);
            Ok("```json\n{\"result\":[{\"event\":\"a person falls\",\"is_detected\":true},{\"event\":\"smoke or fire\",\"is_detected\":false}]}\n```".into())
        }));
        let mut r = caption("A man falls off a ladder.");
        let alert = c.process(&mut r, &CancellationToken::new()).unwrap();
        assert_eq!(alert.events, vec!["a person falls"]);
        assert!(r.alert_error.is_none());
        let a = alerts.lock().unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].text, "A man falls off a ladder.");
        assert_eq!(a[0].webhook_body()["ntpTimestamp"], 70.0);
        assert_eq!(a[0].webhook_body()["alertId"], "dock-3-7");
        assert!(errors.lock().unwrap().is_empty());
        assert_eq!(c.raised.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_unparsable_answer_is_an_alert_error_not_silence() {
        let (c, alerts, errors) = checker(FakeLlm::new(|_, _, _| Ok("Yes, someone falls.".into())));
        let mut r = caption("A man falls.");
        assert!(c.process(&mut r, &CancellationToken::new()).is_none());
        let e = r.alert_error.clone().unwrap();
        assert!(e.contains("no JSON") && e.contains("someone falls"), "{e}");
        assert!(alerts.lock().unwrap().is_empty());
        assert_eq!(errors.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_failed_call_and_error_records() {
        let (c, _, errors) = checker(FakeLlm::new(|_, _, _| Err("HTTP 503 from x".into())));
        let mut r = caption("smoke");
        c.process(&mut r, &CancellationToken::new());
        assert!(r.alert_error.as_deref().unwrap().contains("HTTP 503"));
        let mut bad = caption("");
        bad.error = Some("HTTP 500".into());
        c.process(&mut bad, &CancellationToken::new());
        assert!(bad.alert_error.is_none());
        assert_eq!(errors.lock().unwrap().len(), 1);
    }

    #[test]
    fn live_alerts_carry_wall_clock_times() {
        let (c, alerts, _) = checker(FakeLlm::new(|_, _, _| {
            Ok("{\"result\":[{\"event\":\"smoke or fire\",\"is_detected\":true}]}".into())
        }));
        let mut r = caption("Smoke rises.");
        r.start_time = Some("2026-12-02T10:00:00.000Z".into());
        r.end_time = Some("2026-12-02T10:00:10.000Z".into());
        c.process(&mut r, &CancellationToken::new());
        let a = alerts.lock().unwrap();
        assert_eq!(
            a[0].webhook_body()["ntpTimestamp"],
            "2026-12-02T10:00:00.000Z"
        );
        assert_eq!(
            a[0].record().start_time.as_deref(),
            Some("2026-12-02T10:00:00.000Z")
        );
    }

    /// Round 3: a NUL in the LLM's answer reached the bus warning, which
    /// GLib cut there; the record kept the whole text.
    #[test]
    fn nul_in_an_answer_does_not_cut_the_warning() {
        let (c, _, errors) = checker(FakeLlm::new(|_, _, _| Ok("no json\0 after the nul".into())));
        let mut r = caption("A man falls.");
        assert!(c.process(&mut r, &CancellationToken::new()).is_none());
        let e = errors.lock().unwrap()[0].clone();
        assert!(!e.contains('\0') && e.contains("after the nul"), "{e}");
        assert_eq!(r.alert_error.as_deref(), Some(e.as_str()));
    }
}
