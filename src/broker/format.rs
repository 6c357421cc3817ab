// SPDX-License-Identifier: MPL-2.0
//! What `vssbrokersink` publishes for a record: the record's own JSON
//! (`format=json`) or NVIDIA's VLM metadata message (`format=nvidia`).
//!
//! ## Rules
//! 1. `json`: the record exactly as `summary_src` sent it (without the
//!    trailing newline).
//! 2. `nvidia`: the JSON mapping (protobuf `MessageToDict` style,
//!    camelCase) of NVIDIA's `nv.VisionLLM` message: `version`,
//!    `timestamp` (chunk or window start, RFC 3339), `end`, `startFrameId`,
//!    `endFrameId`, `sensor.id` (the stream-id), `llm.queries[0].response`
//!    (the caption, summary or alert text) and `info`, a string→string map
//!    carrying the rest: `kind`, `chunk_idx` (VSS's name), `stream_id`,
//!    `model`, `error`, `events` (JSON), `alert_id`… Every value in `info`
//!    is a string, as in a protobuf `map<string, string>`.
//! 3. Times: a live record's `start-time` / `end-time` are used as they
//!    are; a file's stream seconds become times after the Unix epoch
//!    (`1970-01-01T00:00:05Z` is 5 s into the file) so that the field stays
//!    a valid timestamp. Frame ids are the chunk index (`startFrameId` =
//!    `endFrameId`), since frames have no ids of their own here.
//! 4. A number outside what a timestamp holds (negative, not finite,
//!    beyond year 9999) is written as the epoch, and `info.time_error`
//!    says so.

use serde_json::{json, Map, Value};

/// Which layout the sink publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecordFormat {
    #[default]
    Json,
    Nvidia,
}

/// The schema version written in `version` (VSS's VisionLLM producer's
/// value could not be confirmed; see docs/fleet.md).
pub const NVIDIA_VERSION: &str = "4.0";

/// The payload of one record (rules 1-4). `raw` is the buffer as received.
pub fn payload(format: RecordFormat, raw: &[u8], value: &Value) -> Vec<u8> {
    match format {
        RecordFormat::Json => {
            let mut v = raw.to_vec();
            while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                v.pop();
            }
            v
        }
        RecordFormat::Nvidia => serde_json::to_vec(&vision_llm(value)).unwrap_or_default(),
    }
}

/// Seconds of stream time as an RFC 3339 time after the epoch (rule 3, 4).
fn epoch_time(secs: f64) -> Option<String> {
    // 9999-12-31T23:59:59Z
    const MAX: f64 = 253_402_300_799.0;
    if !secs.is_finite() || !(0.0..=MAX).contains(&secs) {
        return None;
    }
    Some(crate::prompt::rfc3339(secs))
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `nv.VisionLLM` JSON of a record (rule 2).
pub fn vision_llm(r: &Value) -> Value {
    let get = |k: &str| r.get(k);
    let mut info = Map::new();
    let mut time_error = false;
    let mut time = |wall: &str, secs: &str| -> String {
        if let Some(t) = get(wall).and_then(|v| v.as_str()) {
            return t.to_string();
        }
        match get(secs).and_then(|v| v.as_f64()).and_then(epoch_time) {
            Some(t) => t,
            None => {
                time_error = true;
                "1970-01-01T00:00:00.000Z".to_string()
            }
        }
    };
    let start = time("start-time", "start");
    let end = time("end-time", "end");
    if time_error {
        info.insert(
            "time_error".into(),
            "start or end out of range; written as the epoch".into(),
        );
    }
    let frame_id = get("chunk-index")
        .or_else(|| get("summary-index"))
        .map(s)
        .unwrap_or_default();
    for (k, name) in [
        ("kind", "kind"),
        ("stream-id", "stream_id"),
        ("chunk-index", "chunk_idx"),
        ("summary-index", "summary_idx"),
        ("alert-id", "alert_id"),
        ("events", "events"),
        ("chunk-indices", "chunk_indices"),
        ("missing-chunks", "missing_chunks"),
        ("start", "start_pts"),
        ("end", "end_pts"),
        ("model", "model"),
        ("backend", "backend"),
        ("latency", "vlm_execute_time"),
        ("input-tokens", "input_tokens"),
        ("output-tokens", "output_tokens"),
        ("error", "error"),
        ("alert-error", "alert_error"),
        ("reasoning", "reasoning"),
    ] {
        if let Some(v) = get(k).filter(|v| !v.is_null()) {
            info.insert(name.into(), Value::String(s(v)));
        }
    }
    let text = get("text").map(s).unwrap_or_default();
    json!({
        "version": NVIDIA_VERSION,
        "timestamp": start,
        "end": end,
        "startFrameId": frame_id,
        "endFrameId": frame_id,
        "sensor": { "id": get("stream-id").map(s).unwrap_or_default() },
        "llm": { "queries": [ { "response": text } ] },
        "info": info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule1_json_is_the_record_as_sent() {
        let raw = b"{\"kind\":\"caption\",\"text\":\"a\"}\n";
        let v: Value = serde_json::from_slice(raw).unwrap();
        assert_eq!(
            payload(RecordFormat::Json, raw, &v),
            b"{\"kind\":\"caption\",\"text\":\"a\"}"
        );
    }

    #[test]
    fn rule2_nvidia_layout() {
        let v = json!({"kind":"caption","stream-id":"cam-3","chunk-index":7,
            "start":10.0,"end":20.0,"text":"a forklift","model":"m","latency":1.5,
            "start-time":"2026-01-02T03:04:05Z","end-time":"2026-01-02T03:04:15Z"});
        let out: Value = serde_json::from_slice(&payload(RecordFormat::Nvidia, b"", &v)).unwrap();
        assert_eq!(out["sensor"]["id"], "cam-3");
        assert_eq!(out["timestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(out["end"], "2026-01-02T03:04:15Z");
        assert_eq!(out["startFrameId"], "7");
        assert_eq!(out["llm"]["queries"][0]["response"], "a forklift");
        assert_eq!(out["info"]["chunk_idx"], "7");
        assert_eq!(out["info"]["kind"], "caption");
        assert_eq!(out["info"]["vlm_execute_time"], "1.5");
        assert!(out["info"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v.is_string()));
        let alert = vision_llm(&json!({"kind":"alert","stream-id":"c","chunk-index":1,
            "start":0.0,"end":1.0,"alert-id":"c-1","events":["fire"],"text":"smoke"}));
        assert_eq!(alert["info"]["events"], "[\"fire\"]");
        assert_eq!(alert["info"]["alert_id"], "c-1");
    }

    #[test]
    fn rule3_file_times_count_from_the_epoch() {
        assert_eq!(epoch_time(5.0).unwrap(), "1970-01-01T00:00:05.000Z");
        assert_eq!(
            epoch_time(86_400.0 * 366.0 + 3661.25).unwrap(),
            "1971-01-02T01:01:01.250Z"
        );
        let v = vision_llm(&json!({"start":5.0,"end":15.5,"chunk-index":0}));
        assert_eq!(v["timestamp"], "1970-01-01T00:00:05.000Z");
        assert_eq!(v["end"], "1970-01-01T00:00:15.500Z");
    }

    #[test]
    fn rule4_out_of_range_times() {
        assert!(epoch_time(-1.0).is_none());
        assert!(epoch_time(f64::NAN).is_none());
        assert!(epoch_time(1e20).is_none());
        let v = vision_llm(&json!({"start":-3.0,"end":1e300}));
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert!(v["info"]["time_error"].is_string());
    }
}
