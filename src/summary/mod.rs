// SPDX-License-Identifier: MPL-2.0
//! Summaries and alerts from chunk captions, in plain Rust (no GStreamer
//! types, no network): the element glue feeds chunk results in and emits
//! what comes out; the text LLM is behind [`TextLlm`].
//!
//! * [`windows`]: chunk results → summary windows (`summary-duration`):
//!   window `w` holds the chunks whose start lies in `[w·D, (w+1)·D)`; a
//!   chunk that crosses a boundary belongs to the window it starts in, so
//!   with `D` not a multiple of the chunk stride windows hold different
//!   numbers of chunks; windows without chunks produce nothing; error
//!   records are listed as `missing-chunks`.
//! * [`aggregate`]: a window's captions (`<start> <end> caption` lines) →
//!   one summary, split into batches and aggregated recursively so that no
//!   call's estimated input exceeds `llm-context-tokens` (the input budget;
//!   `llm-max-tokens` is on top); window summaries → the final summary; the
//!   record fields of `summary` / `final-summary`.
//! * [`tokens`]: the conservative token estimate behind the budget.
//! * [`alerts`]: the `events` list, the per-caption event check request and
//!   its tolerant JSON parser, the `alert` record and the webhook body.
//! * [`llm`]: the [`TextLlm`] interface (implemented by the HTTP client and
//!   the in-process model).
//! * [`engine`]: the threads that turn chunk results into `summary` and
//!   `final-summary` records, in order, while the stream runs.
//! * [`checker`]: the event check run after each caption (the dispatcher's
//!   after-caption stage) and the `alert` it decides.
//! * [`webhook`]: bounded, retried delivery of alerts to `alert-webhook`.
//! * [`incidents`]: consecutive alerts of one event as one incident
//!   (`incident-start` / `incident-end`, `incident-gap`).
//!
//! Each submodule documents its rules and the choices made where the issue
//! is silent.
//!

pub mod aggregate;
pub mod alerts;
pub mod checker;
pub mod engine;
pub mod incidents;
pub mod llm;
pub mod tokens;
pub mod webhook;
pub mod windows;

pub use crate::record::{AlertRecord, IncidentRecord, SummaryKind, SummaryRecord};
pub use aggregate::{
    final_summary, final_summary_of_chunks, summarize_window, PartSummary, SummaryConfig,
    SummaryOutput, DEFAULT_CAPTION_SUMMARIZATION_PROMPT, DEFAULT_SUMMARY_AGGREGATION_PROMPT,
};
pub use alerts::{alert_id, event_check_request, parse_event_answer, parse_events, Alert};
pub use checker::{AlertChecker, OnAlert};
pub use engine::{EngineConfig, SummaryEngine, SummaryStats};
pub use llm::{TextAnswer, TextLlm, TextRequest};
pub use webhook::{Webhook, WebhookStats};
pub use windows::{parse_summary_duration, ChunkResult, Window, Windows};
