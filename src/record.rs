// SPDX-License-Identifier: MPL-2.0
//! The records that leave on `summary_src`, as the bus messages and as
//! metas, with the same fields everywhere: [`CaptionRecord`] (one per chunk:
//! its caption or its error), [`SummaryRecord`] (`summary` and
//! `final-summary`) and [`AlertRecord`]. How each is made lives with what
//! makes it (the dispatcher, [`crate::summary::aggregate`],
//! [`crate::summary::alerts`]); their fields and serialization are here.

use serde::Serialize;

/// Emitted once per chunk as JSON on `summary_src`, as the `VssSummaryMeta`
/// structure and as the `vss-summary` bus message. Field names are the same
/// everywhere.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CaptionRecord {
    /// `caption` (also for error records), or `unchanged` / `skipped` for
    /// a chunk the gate held back ([`crate::gate`]; summaries and alerts are
    /// records of their own kinds, see [`crate::summary`]).
    pub kind: ChunkKind,
    /// `stream-id` (default: the element's name).
    pub stream_id: String,
    pub chunk_index: u64,
    /// Stream time of the chunk start, seconds.
    pub start: f64,
    /// Stream time of the chunk end, seconds.
    pub end: f64,
    /// Live streams: the chunk start and end as RFC 3339 wall-clock times
    /// (from the source's NTP reference timestamps when it has them, else
    /// the wall clock at the first buffer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// Stream times of the frames sent, seconds.
    pub frame_times: Vec<f64>,
    /// The caption; empty on error.
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Set when `text` or `reasoning` was longer than
    /// [`MAX_TEXT_BYTES`] and was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub text_truncated: bool,
    pub backend: String,
    pub model: String,
    /// Seconds from the chunk being complete to its result.
    pub latency: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The chunk's embedding (custom models with `get_embeddings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// Why `get_embeddings` failed (the caption is still good).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_error: Option<String>,
    /// The event check (`events`) failed for this caption: why. No alert was
    /// decided for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_error: Option<String>,
    /// The chunk was dropped by the live overflow policy (`error` says
    /// why; its warning was posted when it was dropped).
    #[serde(skip)]
    pub dropped: bool,
    /// The chunk's start and end as the LLMs see them (`<start> <end>`):
    /// seconds for files, RFC 3339 for live.
    #[serde(skip)]
    pub start_label: String,
    #[serde(skip)]
    pub end_label: String,
    /// Chunk start and duration in buffer time (ns), for the summary buffer.
    #[serde(skip)]
    pub pts_ns: u64,
    #[serde(skip)]
    pub duration_ns: u64,
    /// openai-compat: the server that answered (its base URL, never user
    /// info, a query or a key); with several servers in `endpoint`, which.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `unchanged` / `skipped`: the chunk whose caption still holds (the
    /// last captioned one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_as: Option<u64>,
    /// `unchanged`: the change measured (grey levels, see `change-threshold`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    /// `skipped`: why (`no-trigger`, `cooldown`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The prompt version the chunk was (or would have been) captioned
    /// with ([`crate::steer`]): 0 for the prompts set at start.
    pub prompt_id: u64,
    /// The sampled frame an alert's snapshot is made of (evidence); it
    /// goes no further than the event check.
    #[serde(skip)]
    pub frame: SnapshotFrame,
}

/// The frame of a record's snapshot; records compare equal whatever it
/// holds, and Debug does not print pixels.
#[derive(Clone, Default)]
pub struct SnapshotFrame(pub Option<std::sync::Arc<crate::frames::RawFrame>>);

impl SnapshotFrame {
    pub fn take(&mut self) -> Option<std::sync::Arc<crate::frames::RawFrame>> {
        self.0.take()
    }
}

impl PartialEq for SnapshotFrame {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SnapshotFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(fr) => write!(f, "SnapshotFrame({}x{})", fr.width, fr.height),
            None => write!(f, "SnapshotFrame(None)"),
        }
    }
}

/// The `kind` of a chunk's record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkKind {
    #[default]
    Caption,
    /// Not sent: no visible change since `same-as` (`skip-unchanged`).
    Unchanged,
    /// Not sent: no detector trigger, or within `trigger-cooldown`.
    Skipped,
}

impl ChunkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Caption => "caption",
            ChunkKind::Unchanged => "unchanged",
            ChunkKind::Skipped => "skipped",
        }
    }
}

/// Longest caption (and reasoning) text that reaches the outputs, in bytes;
/// longer text is cut at a character boundary and the record says so
/// (`text-truncated`). A model (or server) that answers megabytes would
/// otherwise copy them into the JSON line, the meta and the bus message.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Cuts `s` to at most [`MAX_TEXT_BYTES`]; true when it was cut.
pub fn cap_text(s: &mut String) -> bool {
    if s.len() <= MAX_TEXT_BYTES {
        return false;
    }
    let mut end = MAX_TEXT_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
    true
}

/// The message of a caught panic (`""` when it is not text).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Model output may contain NUL characters, which GStreamer strings (meta
/// structure, bus message, log) cannot hold: they become U+FFFD.
pub fn without_nul(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

impl CaptionRecord {
    pub fn is_error(&self) -> bool {
        self.error.is_some()
    }

    /// Held back by the gate (`unchanged`, `skipped`): no model call.
    pub fn is_gated(&self) -> bool {
        self.kind != ChunkKind::Caption
    }

    /// The caption line the text LLM sees, `<start> <end> caption`; `None`
    /// for an error record and a gated one.
    pub fn caption_line(&self) -> Option<String> {
        (!self.is_error() && !self.is_gated()).then(|| {
            format!(
                "<{}> <{}> {}",
                self.start_label,
                self.end_label,
                self.text.trim()
            )
        })
    }

    /// One JSON object, newline-terminated (JSON Lines).
    pub fn to_json_line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("record serializes");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_and_optional_fields() {
        let mut r = CaptionRecord {
            chunk_index: 3,
            start: 30.0,
            end: 40.0,
            frame_times: vec![30.0, 35.0],
            text: "A forklift moves.".into(),
            backend: "openai-compat".into(),
            model: "gpt-4o".into(),
            latency: 1.25,
            input_tokens: 120,
            output_tokens: 9,
            ..Default::default()
        };
        let line = r.to_json_line();
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "caption");
        assert_eq!(v["stream-id"], "");
        assert_eq!(v["chunk-index"], 3);
        assert!(v.get("start-time").is_none() && v.get("alert-error").is_none());
        assert_eq!(v["frame-times"][1], 35.0);
        assert_eq!(v["input-tokens"], 120);
        assert!(v.get("error").is_none() && v.get("reasoning").is_none());
        assert!(v.get("pts_ns").is_none() && v.get("pts-ns").is_none());
        r.error = Some("HTTP 500".into());
        let v: serde_json::Value = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(v["error"], "HTTP 500");
    }

    #[test]
    fn nul_characters_are_replaced() {
        assert_eq!(without_nul("a\0b".into()), "a\u{FFFD}b");
        assert_eq!(without_nul("plain".into()), "plain");
    }
}

/// `kind` of a summary record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SummaryKind {
    Summary,
    FinalSummary,
}

/// The fields of a `summary` / `final-summary` record (JSON names as in the
/// issue's contract). `start-time` / `end-time` (live) are for the caller to
/// fill.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SummaryRecord {
    pub kind: SummaryKind,
    pub stream_id: String,
    /// Window summaries only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_index: Option<u64>,
    /// Stream time, seconds.
    pub start: f64,
    pub end: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    /// The chunks whose captions went in (final: through the windows that
    /// succeeded).
    pub chunk_indices: Vec<u64>,
    /// Chunks that ended as error records; always present.
    pub missing_chunks: Vec<u64>,
    /// Final summary only (always there, `[]` when none): windows whose
    /// summary failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_windows: Option<Vec<u64>>,
    /// The summary; empty on error.
    pub text: String,
    pub model: String,
    pub latency: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub llm_calls: u32,
    /// Set when the summary was longer than
    /// [`MAX_TEXT_BYTES`] and was cut, as
    /// for captions.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub text_truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SummaryRecord {
    /// One JSON object, newline-terminated (JSON Lines).
    pub fn to_json_line(&self) -> String {
        json_line(self)
    }
}

/// The `alert` record (JSON names as in the contract).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AlertRecord {
    /// Always `"alert"`.
    pub kind: &'static str,
    pub stream_id: String,
    pub chunk_index: u64,
    pub start: f64,
    pub end: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub alert_id: String,
    pub events: Vec<String>,
    pub text: String,
    /// The prompt version of its caption ([`crate::steer`]).
    pub prompt_id: u64,
    /// The JPEG snapshot of the chunk (`evidence-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A caption kept in an incident record.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct IncidentCaption {
    pub chunk_index: u64,
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// The `incident-start` and `incident-end` records (see
/// [`crate::summary::incidents`] for how they are decided). Fields only an
/// end has are left out of a start.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct IncidentRecord {
    /// `"incident-start"` or `"incident-end"`.
    pub kind: &'static str,
    pub stream_id: String,
    pub incident_id: String,
    /// The event (as given in `events`).
    pub event: String,
    /// Stream time, seconds: the first alert chunk's start, the last alert
    /// chunk's end.
    pub start: f64,
    pub end: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub first_chunk: u64,
    pub last_chunk: u64,
    /// Alerts (chunks) that raised the event.
    pub alert_count: u64,
    /// Their chunk indices (bounded: the first and the last ones).
    pub chunk_indices: Vec<u64>,
    /// Their captions (bounded: the first and the last ones).
    pub captions: Vec<IncidentCaption>,
    /// Alert chunks left out of `chunk-indices`.
    #[serde(skip_serializing_if = "is_zero")]
    pub chunks_omitted: u64,
    /// End only: `quiet`, `eos`, `event-removed`, `flush`, `stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The snapshot of the alert that opened it (`evidence-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// End only: the MP4 clip (`evidence-dir`, `clip-pre` / `clip-post`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    /// Stream times the clip covers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_start: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_end: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl IncidentRecord {
    /// One JSON object, newline-terminated (JSON Lines).
    pub fn to_json_line(&self) -> String {
        json_line(self)
    }
}

/// A record as one JSON object, newline-terminated (JSON Lines).
pub fn json_line(r: &impl Serialize) -> String {
    let mut s = serde_json::to_string(r).expect("record serializes");
    s.push('\n');
    s
}
