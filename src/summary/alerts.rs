// SPDX-License-Identifier: MPL-2.0
//! Alerts: the `events` list, the per-caption event check (one LLM call per
//! caption, as VSS), a tolerant parser for its JSON answer, the alert record
//! and the webhook body.
//!
//! ## `events`
//! `;`-separated descriptions. Each is trimmed and its inner whitespace
//! (newlines included) collapsed to single spaces; empty ones are dropped;
//! duplicates (compared case-insensitively) are removed, the first spelling
//! kept. At most [`MAX_EVENTS`] events of at most [`MAX_EVENT_CHARS`]
//! characters each; more is an error naming `events`. An empty list means
//! no alerts.
//!
//! ## Parsing the answer ([`parse_event_answer`])
//! * `<think>…</think>` is removed; the first JSON value in the rest that has
//!   the expected shape is used, so code fences (```` ```json ````) and prose
//!   around it do not matter.
//! * Shapes accepted: `{"result":[{"event":…,"is_detected":…}]}` (also
//!   `results`, a bare array of such entries, a single entry object, `name`
//!   instead of `event`, `detected` instead of `is_detected`), a `result`
//!   object mapping event texts to values, and a `result` array of strings
//!   (the detected events).
//! * `is_detected` may be a bool, a number (non-zero = true), or a string
//!   (`true`/`yes`/`y`/`detected`/`1`, any case); anything else (`false`,
//!   `null`, `"maybe"`, missing) counts as not detected.
//! * Names are mapped back to the given events: exactly, then ignoring case,
//!   surrounding quotes, final punctuation and whitespace differences. Entries
//!   that still match nothing are mapped by their position only when the
//!   answer has exactly as many entries as there are events (a model that
//!   paraphrased every name); otherwise they are ignored. Events the answer
//!   omits are not detected. An event reported twice is detected if any
//!   entry says so.
//! * An answer without such JSON is an error with a short snippet of it (for
//!   the caption record's `alert-error`).
//!
//! ## Alert ids and the webhook
//! `alertId` is `<stream-id>-<chunk-index>`: at most one alert per chunk (all
//! its detected events together) and chunk indices are unique within a
//! stream, so the id is unique within one run of a stream (a restarted
//! element numbers chunks from 0 again; combine with `ntpTimestamp` for a
//! global key). `ntpTimestamp` is the chunk start: RFC 3339 for live, the
//! stream time in seconds (a JSON number, `12.34`) for files.

use serde_json::{json, Value};

use super::llm::TextRequest;
use super::tokens::estimate;
use crate::prompt::split_reasoning;
use crate::record::AlertRecord;

/// The most events in `events`.
pub const MAX_EVENTS: usize = 64;
/// The longest event description, in characters.
pub const MAX_EVENT_CHARS: usize = 500;

/// Parses the `events` property (see the module docs).
pub fn parse_events(s: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for raw in s.split(';') {
        let e = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if e.is_empty() {
            continue;
        }
        let n = e.chars().count();
        if n > MAX_EVENT_CHARS {
            let head: String = e.chars().take(40).collect();
            return Err(format!(
                "events: the event \"{head}…\" is {n} characters long; at most {MAX_EVENT_CHARS}"
            ));
        }
        let key = e.to_lowercase();
        if !seen.contains(&key) {
            seen.push(key);
            out.push(e);
        }
    }
    if out.len() > MAX_EVENTS {
        return Err(format!(
            "events: {} events given; at most {MAX_EVENTS} (separate them with ';')",
            out.len()
        ));
    }
    Ok(out)
}

const DETECTED_PLACEHOLDER: &str = "\u{1}";

/// The system prompt of the event check.
pub fn event_check_prompt(events: &[String]) -> String {
    let list: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{}. {}", i + 1, Value::String(e.clone())))
        .collect();
    let template = json!({
        "result": events
            .iter()
            .map(|e| json!({"event": e, "is_detected": DETECTED_PLACEHOLDER}))
            .collect::<Vec<_>>()
    })
    .to_string()
    .replace(
        &Value::String(DETECTED_PLACEHOLDER.into()).to_string(),
        "true|false",
    );
    format!(
        "You detect events in the description of a video clip. \
The user message is one line `<start> <end> caption`: the clip's start and end time, then a description of what the clip shows.\n\
For each of these events, decide whether the description says that it happens in the clip:\n{}\n\
An event is detected only when the description states it or clearly describes it. \
Do not guess from what might happen next, and do not count a similar but different event.\n\
Answer with only this JSON object, no other text: one entry per event, in the same order, \
the event text copied exactly, and is_detected set to true or false:\n{template}",
        list.join("\n")
    )
}

/// The event-check request for one caption line (`<start> <end> caption`):
/// asks for JSON (`json: true`). `max_tokens` is enough for the JSON answer
/// (twice the estimate, at least 256) but not for long reasoning: the caller
/// sets it (and the sampling parameters, here the `llm-*` defaults) from its
/// properties.
pub fn event_check_request(events: &[String], caption_line: &str) -> TextRequest {
    let answer: u64 = 32 + events.iter().map(|e| estimate(e) + 16).sum::<u64>();
    TextRequest {
        system: Some(event_check_prompt(events)),
        user: caption_line.to_string(),
        max_tokens: (2 * answer).clamp(256, u32::MAX as u64) as u32,
        temperature: 0.2,
        top_p: 0.7,
        json: true,
    }
}

/// A short, single-line excerpt of `s` for error messages.
fn snippet(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "(empty answer)".into();
    }
    let head: String = flat.chars().take(120).collect();
    if head.len() < flat.len() {
        format!("\"{head}…\"")
    } else {
        format!("\"{head}\"")
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => matches!(
            s.trim().to_lowercase().as_str(),
            "true" | "yes" | "y" | "detected" | "1"
        ),
        _ => false,
    }
}

/// One answer entry: the event name as the model wrote it, and the verdict.
type Entry = (Option<String>, bool);

fn entry_of(v: &Value) -> Option<Entry> {
    let o = v.as_object()?;
    let name = ["event", "name", "description"]
        .iter()
        .find_map(|k| o.get(*k))
        .and_then(|n| n.as_str().map(str::to_string));
    let det = ["is_detected", "detected", "isDetected"]
        .iter()
        .find_map(|k| o.get(*k));
    if name.is_none() && det.is_none() {
        return None;
    }
    Some((name, truthy(det)))
}

/// The entries of an answer of an accepted shape.
fn entries_of(v: &Value) -> Option<Vec<Entry>> {
    let list = |a: &Vec<Value>| -> Option<Vec<Entry>> {
        if a.iter().all(Value::is_string) {
            return Some(
                a.iter()
                    .map(|s| (s.as_str().map(str::to_string), true))
                    .collect(),
            );
        }
        a.iter().map(entry_of).collect()
    };
    match v {
        Value::Array(a) => list(a),
        Value::Object(o) => match o.get("result").or_else(|| o.get("results")) {
            Some(Value::Array(a)) => list(a),
            Some(Value::Object(m)) => Some(
                m.iter()
                    .map(|(k, v)| (Some(k.clone()), truthy(Some(v))))
                    .collect(),
            ),
            Some(_) => None,
            None => entry_of(v).map(|e| vec![e]),
        },
        _ => None,
    }
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(|c: char| c == '"' || c == '\'' || c == '.' || c == '!')
        .trim()
        .to_lowercase()
}

/// Parses the event-check answer; the detected events, as given and in the
/// order given (see the module docs).
pub fn parse_event_answer(answer: &str, events: &[String]) -> Result<Vec<String>, String> {
    let (text, _) = split_reasoning(answer);
    let mut found = None;
    for (i, c) in text.char_indices().take(100_000) {
        if c != '{' && c != '[' {
            continue;
        }
        let mut it = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        if let Some(Ok(v)) = it.next() {
            if let Some(e) = entries_of(&v) {
                found = Some(e);
                break;
            }
        }
    }
    let Some(entries) = found else {
        return Err(format!(
            "the event check answered no JSON {{\"result\":[…]}}: {}",
            snippet(&text)
        ));
    };
    let mut detected = vec![false; events.len()];
    let mut verdicts = 0;
    let mut unmatched: Vec<(usize, bool)> = Vec::new();
    let normed: Vec<String> = events.iter().map(|e| norm(e)).collect();
    for (pos, (name, det)) in entries.iter().enumerate() {
        let k = name.as_deref().and_then(|n| {
            events
                .iter()
                .position(|e| e == n)
                .or_else(|| normed.iter().position(|e| *e == norm(n)))
        });
        match k {
            Some(k) => {
                detected[k] |= det;
                verdicts += 1;
            }
            None => unmatched.push((pos, *det)),
        }
    }
    if entries.len() == events.len() {
        for (pos, det) in unmatched {
            detected[pos] |= det;
            verdicts += 1;
        }
    }
    if verdicts == 0 {
        // Hardening round 3: such an answer used to pass as "nothing
        // detected" without a trace.
        return Err(format!(
            "the event check gave no verdict for any of the {} events asked: {}",
            events.len(),
            snippet(&text)
        ));
    }
    Ok(events
        .iter()
        .zip(detected)
        .filter(|(_, d)| *d)
        .map(|(e, _)| e.clone())
        .collect())
}

/// `<stream-id>-<chunk-index>`.
pub fn alert_id(stream_id: &str, chunk_index: u64) -> String {
    format!("{stream_id}-{chunk_index}")
}

/// One alert: a caption in which events were detected.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub stream_id: String,
    pub chunk_index: u64,
    /// Stream time, seconds.
    pub start: f64,
    pub end: f64,
    /// The detected events, as given in `events`.
    pub events: Vec<String>,
    /// The caption, exactly.
    pub text: String,
    /// The chunk start: an RFC 3339 string (live) or the stream time in
    /// seconds, a number (files).
    pub ntp_timestamp: Value,
    /// Live: RFC 3339 chunk start and end.
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// The prompt version of its caption (`prompt-id`).
    pub prompt_id: u64,
    /// The JPEG snapshot's path (`evidence-dir`), once written.
    pub snapshot: Option<String>,
}

impl Alert {
    pub fn alert_id(&self) -> String {
        alert_id(&self.stream_id, self.chunk_index)
    }

    pub fn record(&self) -> AlertRecord {
        AlertRecord {
            kind: "alert",
            stream_id: self.stream_id.clone(),
            chunk_index: self.chunk_index,
            start: self.start,
            end: self.end,
            start_time: self.start_time.clone(),
            end_time: self.end_time.clone(),
            alert_id: self.alert_id(),
            events: self.events.clone(),
            text: self.text.clone(),
            prompt_id: self.prompt_id,
            snapshot: self.snapshot.clone(),
        }
    }

    /// The webhook body: VSS's default fields (`streamId`, `alertId`,
    /// `ntpTimestamp`, `alertDetails` = the caption, `detectedEvents`) plus
    /// `chunkIndex`, `start`, `end` (stream time, seconds).
    pub fn webhook_body(&self) -> Value {
        let mut b = json!({
            "streamId": self.stream_id,
            "alertId": self.alert_id(),
            "ntpTimestamp": self.ntp_timestamp,
            "alertDetails": self.text,
            "detectedEvents": self.events,
            "chunkIndex": self.chunk_index,
            "start": self.start,
            "end": self.end,
        });
        if let Some(s) = &self.snapshot {
            b["snapshot"] = json!(s);
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn events_property() {
        assert_eq!(
            parse_events(" a person falls ;smoke or fire;; ;A  Person\nFalls;a forklift comes close to a person;")
                .unwrap(),
            ev(&["a person falls", "smoke or fire", "a forklift comes close to a person"])
        );
        assert_eq!(parse_events("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_events(" ; ;").unwrap(), Vec::<String>::new());
        let long = "x".repeat(501);
        let e = parse_events(&format!("ok;{long}")).unwrap_err();
        assert!(
            e.starts_with("events:") && e.contains("501 characters"),
            "{e}"
        );
        assert!(parse_events(&"é".repeat(500)).is_ok()); // characters, not bytes
        let many: Vec<String> = (0..65).map(|i| format!("event {i}")).collect();
        let e = parse_events(&many.join(";")).unwrap_err();
        assert!(e.starts_with("events: 65 events"), "{e}");
        assert_eq!(parse_events(&many[..64].join(";")).unwrap().len(), 64);
    }

    #[test]
    fn request_asks_for_json_with_the_events() {
        let events = ev(&["a person falls", "say \"hi\""]);
        let r = event_check_request(&events, "<1.00> <2.00> A man trips.");
        assert!(r.json);
        assert_eq!(r.user, "<1.00> <2.00> A man trips.");
        let sys = r.system.unwrap();
        assert!(
            sys.contains("1. \"a person falls\"\n2. \"say \\\"hi\\\"\""),
            "{sys}"
        );
        assert!(sys.ends_with(
            r#"{"result":[{"event":"a person falls","is_detected":true|false},{"event":"say \"hi\"","is_detected":true|false}]}"#
        ), "{sys}");
        assert!(r.max_tokens >= 256);
    }

    #[test]
    fn answers_plain_fenced_and_in_prose() {
        let events = ev(&["a person falls", "smoke or fire"]);
        let plain = r#"{"result":[{"event":"a person falls","is_detected":true},{"event":"smoke or fire","is_detected":false}]}"#;
        assert_eq!(
            parse_event_answer(plain, &events).unwrap(),
            ev(&["a person falls"])
        );
        let fenced = format!("```json\n{plain}\n```");
        assert_eq!(
            parse_event_answer(&fenced, &events).unwrap(),
            ev(&["a person falls"])
        );
        let prose = format!(
            "<think>The caption says {{maybe}} a fall.</think>Sure! Here is the answer: {plain} Hope it helps {{:)}}"
        );
        assert_eq!(
            parse_event_answer(&prose, &events).unwrap(),
            ev(&["a person falls"])
        );
        // Brackets in prose before the JSON.
        let noisy = format!("[note] {{not json}} {plain}");
        assert_eq!(
            parse_event_answer(&noisy, &events).unwrap(),
            ev(&["a person falls"])
        );
    }

    #[test]
    fn string_and_odd_verdicts() {
        let events = ev(&["a", "b", "c", "d"]);
        let a = r#"{"result":[{"event":"a","is_detected":"true"},{"event":"b","is_detected":"Yes"},
            {"event":"c","is_detected":"no"},{"event":"d","is_detected":1}]}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["a", "b", "d"])
        );
        let a = r#"{"result":[{"event":"a","is_detected":"maybe"},{"event":"b","is_detected":null},{"event":"c"}]}"#;
        assert!(parse_event_answer(a, &events).unwrap().is_empty());
    }

    #[test]
    fn names_mapped_back_to_the_given_events() {
        let events = ev(&["a person falls", "smoke or fire"]);
        // Case, whitespace, quotes and final punctuation.
        let a = r#"{"result":[{"event":"A  Person Falls.","is_detected":true},{"event":"'Smoke or fire'","is_detected":true}]}"#;
        assert_eq!(parse_event_answer(a, &events).unwrap(), events);
        // Paraphrased names, same count: by position.
        let a = r#"{"result":[{"event":"someone falling","is_detected":false},{"event":"fire","is_detected":true}]}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["smoke or fire"])
        );
        // Paraphrased, different count: no verdict for any asked event.
        let a = r#"{"result":[{"event":"fire","is_detected":true}]}"#;
        let e = parse_event_answer(a, &events).unwrap_err();
        assert!(e.contains("no verdict for any of the 2 events"), "{e}");
        // Omitted events are not detected; reported twice: any true wins.
        let a = r#"{"result":[{"event":"smoke or fire","is_detected":false},{"event":"smoke or fire","is_detected":true},{"event":"x","is_detected":true}]}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["smoke or fire"])
        );
        // Entries without names, same count.
        let a = r#"[{"is_detected":true},{"is_detected":false}]"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["a person falls"])
        );
    }

    #[test]
    fn other_shapes() {
        let events = ev(&["a person falls", "smoke or fire"]);
        let a = r#"{"results":[{"name":"smoke or fire","detected":true}]}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["smoke or fire"])
        );
        let a = r#"{"result":{"a person falls":true,"smoke or fire":"no"}}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["a person falls"])
        );
        let a = r#"{"result":["smoke or fire"]}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["smoke or fire"])
        );
        let a = r#"{"event":"a person falls","is_detected":true}"#;
        assert_eq!(
            parse_event_answer(a, &events).unwrap(),
            ev(&["a person falls"])
        );
        let a = r#"{"result":[]}"#;
        let e = parse_event_answer(a, &events).unwrap_err();
        assert!(e.contains("no verdict"), "{e}");
    }

    #[test]
    fn garbage_is_an_error_with_a_snippet() {
        let events = ev(&["a person falls"]);
        for bad in [
            "",
            "No events detected.",
            "{\"result\": [ {\"event\": \"a person falls\", ",
            "{\"answer\": 42}",
            "[1, 2, 3]",
            "<think>{\"result\":[{\"event\":\"a person falls\",\"is_detected\":true}]}",
        ] {
            let e = parse_event_answer(bad, &events).unwrap_err();
            assert!(
                e.starts_with("the event check answered no JSON"),
                "{bad:?}: {e}"
            );
        }
        let e = parse_event_answer("No events detected.", &events).unwrap_err();
        assert!(e.ends_with(": \"No events detected.\""), "{e}");
        let e = parse_event_answer(&"blah ".repeat(100), &events).unwrap_err();
        assert!(e.ends_with("…\"") && e.len() < 250, "{e}");
        assert!(parse_event_answer("", &events)
            .unwrap_err()
            .contains("(empty answer)"));
    }

    #[test]
    fn alert_record_and_webhook_body() {
        let a = Alert {
            stream_id: "dock-3".into(),
            chunk_index: 17,
            start: 170.0,
            end: 180.0,
            events: ev(&["a person falls"]),
            text: "<b>A worker \"slips\"</b> and falls.".into(),
            ntp_timestamp: "2024-05-30T01:41:25.123Z".into(),
            start_time: Some("2024-05-30T01:41:25.123Z".into()),
            end_time: Some("2024-05-30T01:41:35.123Z".into()),
            prompt_id: 0,
            snapshot: None,
        };
        assert_eq!(a.alert_id(), "dock-3-17");
        let b = a.webhook_body();
        assert_eq!(
            b,
            json!({
                "streamId": "dock-3",
                "alertId": "dock-3-17",
                "ntpTimestamp": "2024-05-30T01:41:25.123Z",
                "alertDetails": "<b>A worker \"slips\"</b> and falls.",
                "detectedEvents": ["a person falls"],
                "chunkIndex": 17,
                "start": 170.0,
                "end": 180.0,
            })
        );
        let v = serde_json::to_value(a.record()).unwrap();
        assert_eq!(v["kind"], "alert");
        assert_eq!(v["stream-id"], "dock-3");
        assert_eq!(v["chunk-index"], 17);
        assert_eq!(v["events"], json!(["a person falls"]));
        assert_eq!(v["text"], a.text);
        assert_eq!(v["start-time"], "2024-05-30T01:41:25.123Z");
        assert_eq!(v["alert-id"], "dock-3-17");
        let file = Alert {
            start_time: None,
            end_time: None,
            ..a
        };
        let v = serde_json::to_value(file.record()).unwrap();
        assert!(v.get("start-time").is_none() && v.get("end-time").is_none());
    }
}
