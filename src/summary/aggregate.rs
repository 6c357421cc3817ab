// SPDX-License-Identifier: MPL-2.0
//! Window summaries and the final summary: captions → batches → aggregation,
//! never above the input budget.
//!
//! ## The budget
//! `context_tokens` (`llm-context-tokens`) bounds the **input** of every LLM
//! call: the [estimated](super::tokens) system prompt, user text and chat
//! template overhead. The answer (`max_tokens`, `llm-max-tokens`) is separate,
//! so a model's context window must hold `context_tokens + max_tokens`.
//! Before each call the request is estimated again and a request above the
//! budget is refused (an error, never sent).
//!
//! ## The recursion (`reduce`)
//! The input is a list of lines `<start> <end> text` (captions, or window
//! summaries for the final summary), in time order, joined with newlines.
//! 1. If all lines fit in one call, one call with the stage's prompt gives the
//!    result (a window whose captions fit is one call).
//! 2. Otherwise the lines are packed greedily, in order, into batches that
//!    each fit; each batch is summarized with the stage's prompt (captions:
//!    the caption-summarization prompt). Each batch summary becomes a line
//!    `<first start> <last end> summary` and the list of batch summaries goes
//!    through the same procedure with the aggregation prompt.
//! 3. A caption line that alone exceeds the room left by the prompt is cut to
//!    fit, ending in `…[cut]`, instead of failing. At the aggregation stage,
//!    when the lines do not fit in one call, every line longer than half of
//!    the room is cut to half (ending in `…[cut]`; a single line is cut to
//!    the whole room). Then every batch holds at least two lines, so each
//!    aggregation level at least halves the number of lines and the
//!    recursion ends after about `log2(n)` levels even when the LLM answers
//!    with text as long as its input. Lines are only cut when
//!    needed: with a model that condenses (the normal case) nothing is cut.
//!    [`MAX_LEVELS`] is a backstop that cannot be reached by this rule; if it
//!    were, the summary fails with an error saying so.
//!    Cuts are counted in [`SummaryOutput::cut_inputs`] and named in
//!    [`SummaryOutput::warning`].
//!
//! The batches of one level run in parallel, at most
//! [`SummaryConfig::max_parallel`] at a time, in order.
//!
//! ## Failures
//! The first batch that fails fails the whole summary (its siblings are
//! cancelled); the error names the stage, the batch and its time span, and
//! carries the LLM's message. An answer that is empty after removing
//! `<think>…</think>` is a failure too. Cancellation makes every function
//! return promptly with the error `cancelled`. The final summary aggregates
//! the window summaries that succeeded and lists the failed windows in
//! [`SummaryOutput::failed_windows`] (and `warning`); it fails only when no
//! window succeeded or its own aggregation fails. The final summary of a
//! stream with one window still runs the aggregation prompt over it (the
//! prompt may ask for a different form).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::llm::{TextLlm, TextRequest};
use super::tokens::{self, cut_to_tokens, estimate, request_fixed};
use super::windows::Window;
use crate::prompt::split_reasoning;
use crate::record::{without_nul, SummaryKind, SummaryRecord};

/// The prompt for summarizing captions (`caption-summarization-prompt`).
pub const DEFAULT_CAPTION_SUMMARIZATION_PROMPT: &str = "You summarize what happens in a video. \
Each line of the input describes one clip of the video as `<start> <end> caption`: the start and end time of the clip, then what was seen in it. \
Write a concise summary of the events in chronological order. \
Begin each point with the time range it covers, copying the times exactly as they appear in the input. \
When an event continues or repeats over consecutive clips, describe it once with the whole time range. \
Keep the details that matter: who or what is involved, what they do, and anything unusual or unsafe. \
Use only what the captions say: do not invent, guess or add anything that is not in them. \
Answer with the summary only.";

/// The prompt for merging partial summaries (`summary-aggregation-prompt`).
pub const DEFAULT_SUMMARY_AGGREGATION_PROMPT: &str = "You combine partial summaries of a video into one summary. \
Each part of the input starts with `<start> <end>`, the period it covers, followed by the summary of that period; the periods are consecutive and in order. \
Merge them into one coherent, concise summary of the whole period in chronological order. \
Begin each point with its time range, copying the times exactly as they appear in the input. \
When an event continues or repeats across periods, describe it once with the combined time range, and remove repetition. \
Keep the important details, above all unusual or unsafe events. \
Use only what the summaries say: do not invent anything. \
Answer with the summary only.";

/// A suggested default input budget: fits a 16k-context model with
/// `max_tokens` 2048 and leaves room for estimate slack.
pub const DEFAULT_CONTEXT_TOKENS: u64 = 8192;
/// The least room for input lines that a budget must leave beside each
/// prompt.
pub const MIN_CONTENT_TOKENS: u64 = 64;
/// Backstop on aggregation levels (see the module docs: never reached).
pub const MAX_LEVELS: u32 = 32;
/// The error of a cancelled summary.
pub const CANCELLED: &str = "cancelled";

/// What the summaries need besides the LLM.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryConfig {
    /// `caption-summarization-prompt`; empty (after trimming) = the default.
    pub caption_prompt: String,
    /// `summary-aggregation-prompt`; empty = the default.
    pub aggregation_prompt: String,
    pub max_tokens: u32,
    pub temperature: f64,
    pub top_p: f64,
    /// `llm-context-tokens`: the input budget of one call.
    pub context_tokens: u64,
    /// Batches of one aggregation level run in parallel, at most this many
    /// (0 counts as 1). The LLM client bounds the overall concurrency.
    pub max_parallel: usize,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        SummaryConfig {
            caption_prompt: String::new(),
            aggregation_prompt: String::new(),
            max_tokens: 2048,
            temperature: 0.2,
            top_p: 0.7,
            context_tokens: DEFAULT_CONTEXT_TOKENS,
            max_parallel: 4,
        }
    }
}

impl SummaryConfig {
    /// The caption-summarization prompt in effect.
    pub fn caption_prompt(&self) -> &str {
        match self.caption_prompt.trim() {
            "" => DEFAULT_CAPTION_SUMMARIZATION_PROMPT,
            p => p,
        }
    }

    /// The aggregation prompt in effect.
    pub fn aggregation_prompt(&self) -> &str {
        match self.aggregation_prompt.trim() {
            "" => DEFAULT_SUMMARY_AGGREGATION_PROMPT,
            p => p,
        }
    }

    /// The least `context_tokens` these prompts allow.
    pub fn min_context_tokens(&self) -> u64 {
        request_fixed(Some(self.caption_prompt()))
            .max(request_fixed(Some(self.aggregation_prompt())))
            + MIN_CONTENT_TOKENS
    }

    /// Checks that the budget leaves room beside both prompts.
    pub fn validate(&self) -> Result<(), crate::config::SettingsError> {
        let min = self.min_context_tokens();
        if self.context_tokens < min {
            return Err(crate::config::SettingsError(format!(
                "llm-context-tokens ({}) is too small for the summary prompts: use at least {min} \
                 (the prompts and the chat template take {} of it, estimated conservatively)",
                self.context_tokens,
                min - MIN_CONTENT_TOKENS
            )));
        }
        Ok(())
    }
}

/// The result of one summary (window or final).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SummaryOutput {
    /// The summary, `<think>` removed; `None` when it failed.
    pub text: Option<String>,
    /// What failed (stage, batch, time span, the LLM's message), or
    /// [`CANCELLED`].
    pub error: Option<String>,
    /// Something the user should know although the summary exists: inputs
    /// that were cut, window summaries that failed.
    pub warning: Option<String>,
    /// Sums over all calls, as the server reported them.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// LLM calls made (including a failed one).
    pub calls: u32,
    /// Levels of the recursion used: 1 = everything in one call; each round
    /// of batches adds one.
    pub levels: u32,
    /// Input lines cut to fit the budget.
    pub cut_inputs: u32,
    /// Seconds spent in the function.
    pub latency: f64,
    /// `text` was longer than [`crate::record::MAX_TEXT_BYTES`] and was cut.
    pub truncated: bool,
    /// Final summary: the windows whose summary failed (not in the text).
    pub failed_windows: Vec<u64>,
}

/// A window's summary as the final summary needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct PartSummary {
    /// `summary-index`.
    pub index: u64,
    pub start: f64,
    pub end: f64,
    /// The span its captions cover (see [`Window::labels`]): these prefix
    /// the summary in the aggregation input.
    pub start_label: String,
    pub end_label: String,
    pub chunk_indices: Vec<u64>,
    pub missing_chunks: Vec<u64>,
    pub text: Option<String>,
    pub error: Option<String>,
}

impl PartSummary {
    pub fn new(window: &Window, out: &SummaryOutput) -> PartSummary {
        let (start_label, end_label) = window.labels();
        PartSummary {
            index: window.index,
            start: window.start,
            end: window.end,
            start_label,
            end_label,
            chunk_indices: window.chunk_indices(),
            missing_chunks: window.missing_chunks(),
            text: out.text.clone(),
            error: out.error.clone(),
        }
    }
}

/// Summarizes one window's captions (see the module docs).
pub fn summarize_window(
    llm: &dyn TextLlm,
    cfg: &SummaryConfig,
    window: &Window,
    cancel: &CancellationToken,
) -> SummaryOutput {
    let t0 = Instant::now();
    let pieces: Vec<Piece> = window
        .chunks
        .iter()
        .filter_map(|c| {
            c.line().map(|line| Piece {
                start: c.start_label.clone(),
                end: c.end_label.clone(),
                line,
            })
        })
        .collect();
    let empty = if window.chunks.is_empty() {
        Some("no chunks to summarize".to_string())
    } else if pieces.is_empty() {
        Some(format!(
            "no caption to summarize: every chunk ended as an error record (missing-chunks {:?})",
            window.missing_chunks()
        ))
    } else {
        None
    };
    let mut out = run(llm, cfg, cancel, pieces, Stage::Captions, empty);
    out.latency = t0.elapsed().as_secs_f64();
    out
}

/// The final summary from the window summaries: those that succeeded are
/// aggregated, the failed ones are listed in `failed_windows`.
pub fn final_summary(
    llm: &dyn TextLlm,
    cfg: &SummaryConfig,
    parts: &[PartSummary],
    cancel: &CancellationToken,
) -> SummaryOutput {
    aggregate_parts(llm, cfg, parts, None, cancel)
}

/// The final summary at EOS without waiting for the last window's summary:
/// the summaries of the earlier windows (`parts`, those that succeeded) and
/// the captions of the last window (`tail`) go into the aggregation
/// together, so the final summary is ready one LLM call after EOS instead of
/// two. The last window's own `summary` record is made in parallel.
pub fn final_summary_with_tail(
    llm: &dyn TextLlm,
    cfg: &SummaryConfig,
    parts: &[PartSummary],
    tail: &Window,
    cancel: &CancellationToken,
) -> SummaryOutput {
    aggregate_parts(llm, cfg, parts, Some(tail), cancel)
}

fn aggregate_parts(
    llm: &dyn TextLlm,
    cfg: &SummaryConfig,
    parts: &[PartSummary],
    tail: Option<&Window>,
    cancel: &CancellationToken,
) -> SummaryOutput {
    let t0 = Instant::now();
    let failed: Vec<u64> = parts
        .iter()
        .filter(|p| p.text.is_none())
        .map(|p| p.index)
        .collect();
    let mut pieces: Vec<Piece> = parts
        .iter()
        .filter_map(|p| {
            p.text.as_ref().map(|t| Piece {
                start: p.start_label.clone(),
                end: p.end_label.clone(),
                line: format!("<{}> <{}> {}", p.start_label, p.end_label, t.trim()),
            })
        })
        .collect();
    let tail_chunks = tail.map(|t| t.chunks.as_slice()).unwrap_or_default();
    pieces.extend(tail_chunks.iter().filter_map(|c| {
        c.line().map(|line| Piece {
            start: c.start_label.clone(),
            end: c.end_label.clone(),
            line,
        })
    }));
    let empty = if !pieces.is_empty() {
        None
    } else if parts.is_empty() && tail_chunks.is_empty() {
        Some("no window summaries: the stream had no chunks".to_string())
    } else if failed.is_empty() {
        Some("no caption to summarize: every chunk ended as an error record".to_string())
    } else if tail.is_some() {
        Some(format!(
            "every window summary failed (windows {}) and the last window has no caption",
            list(&failed)
        ))
    } else {
        Some(format!(
            "every window summary failed (windows {})",
            list(&failed)
        ))
    };
    let mut out = run(llm, cfg, cancel, pieces, Stage::Aggregation, empty);
    if !failed.is_empty() && out.text.is_some() {
        let note = format!(
            "the summaries of windows {} failed; the final summary covers the others",
            list(&failed)
        );
        out.warning = Some(match out.warning.take() {
            Some(w) => format!("{note}; {w}"),
            None => note,
        });
    }
    out.failed_windows = failed;
    out.latency = t0.elapsed().as_secs_f64();
    out
}

/// The final summary without windows (`summary-duration=-1`): all captions
/// of the stream as one window ([`Window::whole`]), captions → batches →
/// aggregation.
pub fn final_summary_of_chunks(
    llm: &dyn TextLlm,
    cfg: &SummaryConfig,
    whole: &Window,
    cancel: &CancellationToken,
) -> SummaryOutput {
    summarize_window(llm, cfg, whole, cancel)
}

fn list(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One input line and the time span it covers.
#[derive(Clone, Debug)]
struct Piece {
    start: String,
    end: String,
    line: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Captions,
    Aggregation,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Captions => "caption summarization",
            Stage::Aggregation => "summary aggregation",
        }
    }
}

/// Why a reduction stopped without a summary; its text is the summary's
/// `error`.
#[derive(Debug, thiserror::Error)]
enum Halt {
    /// By the caller, or (a sibling batch) by the first failing batch.
    #[error("{CANCELLED}")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

fn run(
    llm: &dyn TextLlm,
    cfg: &SummaryConfig,
    cancel: &CancellationToken,
    pieces: Vec<Piece>,
    stage: Stage,
    nothing: Option<String>,
) -> SummaryOutput {
    let mut out = SummaryOutput::default();
    let result = if cancel.is_cancelled() {
        Err(Halt::Cancelled)
    } else if let Err(e) = cfg.validate() {
        Err(Halt::Failed(e.into()))
    } else if let Some(e) = nothing {
        Err(Halt::Failed(e))
    } else {
        let mut r = Reducer {
            llm,
            cfg,
            parent: cancel,
            cancel: cancel.child_token(),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            cut: 0,
            levels: 0,
        };
        let res = r.reduce(pieces, stage, MAX_LEVELS);
        out.input_tokens = r.input_tokens.into_inner();
        out.output_tokens = r.output_tokens.into_inner();
        out.calls = r.calls.into_inner();
        out.levels = r.levels;
        out.cut_inputs = r.cut;
        res
    };
    match result {
        Ok(text) => {
            if out.cut_inputs > 0 {
                out.warning = Some(format!(
                    "{} input(s) did not fit llm-context-tokens ({}) and were cut (…[cut])",
                    out.cut_inputs, cfg.context_tokens
                ));
            }
            out.text = Some(text);
        }
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}

struct Reducer<'a> {
    llm: &'a dyn TextLlm,
    cfg: &'a SummaryConfig,
    parent: &'a CancellationToken,
    /// Cancelled by the parent, or by the first failing batch (its siblings
    /// stop).
    cancel: CancellationToken,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    calls: AtomicU32,
    cut: u32,
    levels: u32,
}

/// Tokens of the newline between two lines.
fn newline() -> u64 {
    estimate("\n")
}

fn total(pieces: &[Piece]) -> u64 {
    let lines: u64 = pieces.iter().map(|p| estimate(&p.line)).sum();
    lines + newline() * (pieces.len() as u64).saturating_sub(1)
}

fn join(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| p.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Greedy, in order: each batch's lines (with newlines) fit in `room`.
/// Every piece must be `<= room` on its own.
fn pack(pieces: Vec<Piece>, room: u64) -> Vec<Vec<Piece>> {
    let mut batches = Vec::new();
    let mut cur: Vec<Piece> = Vec::new();
    let mut used = 0u64;
    for p in pieces {
        let t = estimate(&p.line);
        if !cur.is_empty() && used + newline() + t > room {
            batches.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += if cur.is_empty() { t } else { newline() + t };
        cur.push(p);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

impl Reducer<'_> {
    fn prompt(&self, stage: Stage) -> &str {
        match stage {
            Stage::Captions => self.cfg.caption_prompt(),
            Stage::Aggregation => self.cfg.aggregation_prompt(),
        }
    }

    fn reduce(
        &mut self,
        mut pieces: Vec<Piece>,
        mut stage: Stage,
        max_levels: u32,
    ) -> Result<String, Halt> {
        let budget = self.cfg.context_tokens;
        for level in 0..max_levels {
            self.levels = level + 1;
            let system = self.prompt(stage).to_string();
            let room = budget.saturating_sub(request_fixed(Some(&system)));
            if total(&pieces) > room {
                let cap = if stage == Stage::Captions || pieces.len() == 1 {
                    room
                } else {
                    room.saturating_sub(newline()) / 2
                };
                for p in pieces.iter_mut() {
                    if estimate(&p.line) > cap {
                        p.line = cut_to_tokens(&p.line, cap);
                        self.cut += 1;
                    }
                }
            }
            if total(&pieces) <= room {
                let (s, e) = span(&pieces);
                return self.call(stage, &system, join(&pieces), None, &s, &e);
            }
            let batches = pack(pieces, room);
            pieces = self.run_batches(stage, &system, batches)?;
            stage = Stage::Aggregation;
        }
        Err(Halt::Failed(format!(
            "summary aggregation did not converge after {max_levels} levels"
        )))
    }

    /// Summarizes each batch (in parallel, bounded); the summaries in order.
    fn run_batches(
        &self,
        stage: Stage,
        system: &str,
        batches: Vec<Vec<Piece>>,
    ) -> Result<Vec<Piece>, Halt> {
        let n = batches.len();
        let results: Vec<Mutex<Option<Result<Piece, Halt>>>> =
            (0..n).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let work = || loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= n || self.cancel.is_cancelled() {
                break;
            }
            let (s, e) = span(&batches[i]);
            let r = self
                .call(stage, system, join(&batches[i]), Some((i, n)), &s, &e)
                .map(|text| Piece {
                    line: format!("<{s}> <{e}> {text}"),
                    start: s,
                    end: e,
                });
            if r.is_err() {
                self.cancel.cancel();
            }
            *results[i].lock().unwrap() = Some(r);
        };
        let workers = self.cfg.max_parallel.max(1).min(n);
        if workers <= 1 {
            work();
        } else {
            std::thread::scope(|sc| {
                for _ in 0..workers {
                    sc.spawn(work);
                }
            });
        }
        if self.parent.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let mut done = Vec::with_capacity(n);
        let mut first_err = None;
        for r in results {
            match r.into_inner().unwrap() {
                Some(Ok(p)) => done.push(p),
                // Siblings stopped by the first failure say "cancelled".
                Some(Err(e @ Halt::Failed(_))) => {
                    first_err.get_or_insert(e);
                }
                _ => {}
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if done.len() != n {
            return Err(Halt::Cancelled);
        }
        Ok(done)
    }

    fn call(
        &self,
        stage: Stage,
        system: &str,
        user: String,
        batch: Option<(usize, usize)>,
        start: &str,
        end: &str,
    ) -> Result<String, Halt> {
        if self.cancel.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let what = match batch {
            Some((i, n)) => format!("batch {} of {n}, <{start}> to <{end}>", i + 1),
            None => format!("<{start}> to <{end}>"),
        };
        let req = TextRequest {
            system: Some(system.to_string()),
            user,
            max_tokens: self.cfg.max_tokens,
            temperature: self.cfg.temperature,
            top_p: self.cfg.top_p,
            json: false,
        };
        let est = tokens::estimate_request(&req);
        if est > self.cfg.context_tokens {
            // Cannot happen (the packing adds the same estimates); refuse
            // rather than exceed the budget.
            return Err(Halt::Failed(format!(
                "{} ({what}): internal error: request of {est} tokens above llm-context-tokens ({})",
                stage.name(),
                self.cfg.context_tokens
            )));
        }
        self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = self.llm.complete(&req, &self.cancel);
        if self.cancel.is_cancelled() {
            return Err(Halt::Cancelled);
        }
        let answer =
            answer.map_err(|e| Halt::Failed(format!("{} failed ({what}): {e}", stage.name())))?;
        self.input_tokens
            .fetch_add(answer.input_tokens, Ordering::SeqCst);
        self.output_tokens
            .fetch_add(answer.output_tokens, Ordering::SeqCst);
        let (text, _reasoning) = split_reasoning(&answer.text);
        if text.is_empty() {
            return Err(Halt::Failed(format!(
                "{} failed ({what}): the LLM answered an empty text",
                stage.name()
            )));
        }
        Ok(text)
    }
}

fn span(pieces: &[Piece]) -> (String, String) {
    (
        pieces.first().map(|p| p.start.clone()).unwrap_or_default(),
        pieces.last().map(|p| p.end.clone()).unwrap_or_default(),
    )
}

impl SummaryRecord {
    fn from_output(
        kind: SummaryKind,
        stream_id: &str,
        model: &str,
        out: &SummaryOutput,
    ) -> SummaryRecord {
        SummaryRecord {
            kind,
            stream_id: stream_id.to_string(),
            summary_index: None,
            start: 0.0,
            end: 0.0,
            start_time: None,
            end_time: None,
            chunk_indices: Vec::new(),
            missing_chunks: Vec::new(),
            failed_windows: None,
            text: without_nul(out.text.clone().unwrap_or_default()),
            model: model.to_string(),
            latency: out.latency,
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            llm_calls: out.calls,
            text_truncated: out.truncated,
            error: out.error.clone().map(without_nul),
        }
    }

    /// A `summary` record for one window.
    pub fn window(
        stream_id: &str,
        model: &str,
        window: &Window,
        out: &SummaryOutput,
    ) -> SummaryRecord {
        SummaryRecord {
            summary_index: Some(window.index),
            start: window.start,
            end: window.end,
            chunk_indices: window.chunk_indices(),
            missing_chunks: window.missing_chunks(),
            ..Self::from_output(SummaryKind::Summary, stream_id, model, out)
        }
    }

    /// The `final-summary` record from the window summaries: `start`/`end`
    /// span all windows; `chunk-indices` are those of the windows that
    /// succeeded; `missing-chunks` those of all windows.
    pub fn final_of_windows(
        stream_id: &str,
        model: &str,
        parts: &[PartSummary],
        out: &SummaryOutput,
    ) -> SummaryRecord {
        let mut chunk_indices: Vec<u64> = parts
            .iter()
            .filter(|p| p.text.is_some())
            .flat_map(|p| p.chunk_indices.iter().copied())
            .collect();
        chunk_indices.sort_unstable();
        let mut missing: Vec<u64> = parts
            .iter()
            .flat_map(|p| p.missing_chunks.iter().copied())
            .collect();
        missing.sort_unstable();
        let start = parts
            .iter()
            .map(|p| p.start)
            .reduce(f64::min)
            .unwrap_or(0.0);
        let end = parts
            .iter()
            .map(|p| p.end)
            .reduce(f64::max)
            .unwrap_or(start);
        SummaryRecord {
            start,
            end,
            chunk_indices,
            missing_chunks: missing,
            failed_windows: Some(out.failed_windows.clone()),
            ..Self::from_output(SummaryKind::FinalSummary, stream_id, model, out)
        }
    }

    /// The `final-summary` record without windows (`summary-duration=-1`).
    pub fn final_of_chunks(
        stream_id: &str,
        model: &str,
        whole: &Window,
        out: &SummaryOutput,
    ) -> SummaryRecord {
        SummaryRecord {
            start: whole.start,
            end: whole.end,
            chunk_indices: whole.chunk_indices(),
            missing_chunks: whole.missing_chunks(),
            failed_windows: Some(Vec::new()),
            ..Self::from_output(SummaryKind::FinalSummary, stream_id, model, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::llm::fake::{ids_in, FakeLlm};
    use super::super::windows::{ChunkResult, Windows};
    use super::*;
    use std::collections::BTreeSet;
    use std::time::Duration;

    fn chunk(idx: u64, start: f64, end: f64, ok: bool) -> ChunkResult {
        ChunkResult {
            chunk_index: idx,
            start,
            end,
            caption: ok.then(|| format!("caption #{idx}: a person walks past the door.")),
            start_label: format!("{start:.2}"),
            end_label: format!("{end:.2}"),
            same_as: None,
        }
    }

    fn chunks(n: u64) -> Vec<ChunkResult> {
        (0..n)
            .map(|k| chunk(k, k as f64 * 10.0, (k + 1) as f64 * 10.0, true))
            .collect()
    }

    fn tiny(budget: u64) -> SummaryConfig {
        SummaryConfig {
            caption_prompt: "Summarize.".into(),
            aggregation_prompt: "Merge.".into(),
            context_tokens: budget,
            ..Default::default()
        }
    }

    fn ids(out: &SummaryOutput) -> BTreeSet<u64> {
        ids_in(out.text.as_deref().expect("summary text"))
    }

    #[test]
    fn one_call_when_it_fits() {
        let llm = FakeLlm::id_ranges();
        let cfg = SummaryConfig::default();
        let w = Window::whole(chunks(6));
        let out = summarize_window(&llm, &cfg, &w, &CancellationToken::new());
        assert_eq!(out.text.as_deref(), Some("#0-5"));
        assert_eq!((out.calls, out.levels, out.cut_inputs), (1, 1, 0));
        assert!(out.error.is_none() && out.warning.is_none());
        let req = &llm.requests()[0];
        assert_eq!(
            req.system.as_deref(),
            Some(DEFAULT_CAPTION_SUMMARIZATION_PROMPT)
        );
        assert!(!req.json);
        assert_eq!(
            (req.max_tokens, req.temperature, req.top_p),
            (2048, 0.2, 0.7)
        );
        let lines: Vec<&str> = req.user.lines().collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            "<0.00> <10.00> caption #0: a person walks past the door."
        );
        assert!(lines[5].starts_with("<50.00> <60.00> caption #5"));
        assert!(out.input_tokens > 0 && out.output_tokens > 0);
    }

    #[test]
    fn recursion_respects_a_tiny_budget_and_covers_every_caption() {
        // A 1-hour file at 10 s chunks, no windows, budget 200 tokens.
        let llm = FakeLlm::id_ranges();
        let cfg = tiny(200);
        let w = Window::whole(chunks(360));
        let out = final_summary_of_chunks(&llm, &cfg, &w, &CancellationToken::new());
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(ids(&out), (0..360).collect::<BTreeSet<u64>>());
        assert!(
            llm.max_request_tokens() <= 200,
            "{}",
            llm.max_request_tokens()
        );
        assert!(out.levels >= 3, "{}", out.levels);
        assert_eq!(out.calls, llm.calls());
        assert_eq!(out.cut_inputs, 0);
        // First level: caption prompt; later levels: aggregation prompt.
        let reqs = llm.requests();
        assert!(reqs
            .iter()
            .any(|r| r.system.as_deref() == Some("Summarize.")));
        assert_eq!(reqs.last().unwrap().system.as_deref(), Some("Merge."));
        // Every caption went into exactly one caption-summarization call.
        let mut seen = Vec::new();
        for r in reqs
            .iter()
            .filter(|r| r.system.as_deref() == Some("Summarize."))
        {
            seen.extend(r.user.lines().flat_map(ids_in));
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..360).collect::<Vec<u64>>());
        // Batch summaries carry the span of their captions.
        let agg = &reqs[reqs.len() - 1].user;
        assert!(agg.starts_with("<0.00> <"), "{agg}");
        assert!(agg.contains("<3600.00> #"), "{agg}");
    }

    #[test]
    fn windows_then_final_with_a_tiny_budget() {
        let llm = FakeLlm::id_ranges();
        let cfg = tiny(200);
        let cancel = CancellationToken::new();
        let mut windows = Windows::new(Some(60.0)).unwrap();
        let mut parts = Vec::new();
        let mut closed = Vec::new();
        for c in chunks(360) {
            closed.extend(windows.push(c));
        }
        closed.extend(windows.finish());
        assert_eq!(closed.len(), 60);
        for w in &closed {
            let out = summarize_window(&llm, &cfg, w, &cancel);
            let want: BTreeSet<u64> = w.chunk_indices().into_iter().collect();
            assert_eq!(ids(&out), want, "window {}", w.index);
            parts.push(PartSummary::new(w, &out));
        }
        let out = final_summary(&llm, &cfg, &parts, &cancel);
        assert_eq!(ids(&out), (0..360).collect::<BTreeSet<u64>>());
        assert!(out.failed_windows.is_empty() && out.warning.is_none());
        assert!(llm.max_request_tokens() <= 200);
        let rec = SummaryRecord::final_of_windows("cam", "fake-llm", &parts, &out);
        assert_eq!(rec.chunk_indices, (0..360).collect::<Vec<u64>>());
        assert_eq!((rec.start, rec.end), (0.0, 3600.0));
    }

    #[test]
    fn a_parrot_llm_still_terminates_within_budget() {
        // Answers as long as its input: only cutting guarantees progress.
        let llm = FakeLlm::parrot();
        let cfg = tiny(200);
        let out = summarize_window(
            &llm,
            &cfg,
            &Window::whole(chunks(100)),
            &CancellationToken::new(),
        );
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(llm.max_request_tokens() <= 200);
        assert!(out.levels <= 12, "{}", out.levels);
        assert!(out.cut_inputs > 0);
        assert!(out
            .warning
            .as_deref()
            .unwrap()
            .contains("llm-context-tokens"));
        assert!(out.text.unwrap().contains("…[cut]"));

        // One that doubles its input.
        let llm = FakeLlm::new(|r, _, _| Ok(format!("{} {}", r.user, r.user)));
        let out = summarize_window(
            &llm,
            &cfg,
            &Window::whole(chunks(100)),
            &CancellationToken::new(),
        );
        assert!(out.error.is_none(), "{:?}", out.error);
        assert!(llm.max_request_tokens() <= 200);
        assert!(llm.calls() < 400, "{}", llm.calls());
    }

    #[test]
    fn an_oversized_caption_is_cut_not_failed() {
        let llm = FakeLlm::id_ranges();
        let cfg = tiny(200);
        let mut cs = chunks(3);
        cs[1].caption = Some(format!("#1 {}", "very long caption ".repeat(200)));
        let out = summarize_window(&llm, &cfg, &Window::whole(cs), &CancellationToken::new());
        assert_eq!(ids(&out), [0, 1, 2].into_iter().collect());
        assert_eq!(out.cut_inputs, 1);
        assert!(llm.max_request_tokens() <= 200);
        assert!(llm
            .requests()
            .iter()
            .any(|r| r.user.contains("<10.00> <20.00> #1 very") && r.user.contains("…[cut]")));
    }

    #[test]
    fn max_levels_backstop() {
        let llm = FakeLlm::id_ranges();
        let cfg = tiny(200);
        let pieces: Vec<Piece> = chunks(50)
            .iter()
            .map(|c| Piece {
                start: c.start_label.clone(),
                end: c.end_label.clone(),
                line: c.line().unwrap(),
            })
            .collect();
        let cancel = CancellationToken::new();
        let mut r = Reducer {
            llm: &llm,
            cfg: &cfg,
            parent: &cancel,
            cancel: cancel.child_token(),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            calls: AtomicU32::new(0),
            cut: 0,
            levels: 0,
        };
        let e = r
            .reduce(pieces, Stage::Captions, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not converge after 1 levels"), "{e}");
    }

    #[test]
    fn llm_failure_fails_the_window_with_its_message() {
        let llm = FakeLlm::new(|r, _, _| {
            if r.user.contains("#5:") {
                Err("HTTP 503: overloaded".into())
            } else {
                Ok("fine".into())
            }
        });
        let cfg = tiny(200);
        let out = summarize_window(
            &llm,
            &cfg,
            &Window::whole(chunks(12)),
            &CancellationToken::new(),
        );
        assert!(out.text.is_none());
        let e = out.error.unwrap();
        assert!(e.starts_with("caption summarization failed (batch "), "{e}");
        assert!(e.contains("HTTP 503: overloaded"), "{e}");
        assert!(e.contains(" to <"), "{e}");
        // One window's failure: the single-call case names the span.
        let out = summarize_window(
            &llm,
            &SummaryConfig::default(),
            &Window::whole(chunks(6)),
            &CancellationToken::new(),
        );
        assert_eq!(
            out.error.as_deref(),
            Some("caption summarization failed (<0.00> to <60.00>): HTTP 503: overloaded")
        );
    }

    #[test]
    fn empty_answers_and_think_blocks() {
        let llm = FakeLlm::new(|_, _, _| Ok("<think>long reasoning</think>\n\nA summary.".into()));
        let w = Window::whole(chunks(2));
        let out = summarize_window(&llm, &tiny(200), &w, &CancellationToken::new());
        assert_eq!(out.text.as_deref(), Some("A summary."));
        let llm = FakeLlm::new(|_, _, _| Ok("<think>only thinking".into()));
        let out = summarize_window(&llm, &tiny(200), &w, &CancellationToken::new());
        assert!(out.error.unwrap().contains("empty text"));
    }

    #[test]
    fn windows_without_captions_make_no_call() {
        let llm = FakeLlm::id_ranges();
        let w = Window::whole(vec![
            chunk(0, 0.0, 10.0, false),
            chunk(1, 10.0, 20.0, false),
        ]);
        let out = summarize_window(&llm, &tiny(200), &w, &CancellationToken::new());
        assert!(out.error.unwrap().contains("missing-chunks [0, 1]"));
        let out = summarize_window(
            &llm,
            &tiny(200),
            &Window::whole(vec![]),
            &CancellationToken::new(),
        );
        assert!(out.error.unwrap().contains("no chunks"));
        assert_eq!(llm.calls(), 0);
    }

    #[test]
    fn cancellation_is_prompt() {
        // Already cancelled: no call.
        let llm = FakeLlm::id_ranges();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let out = summarize_window(&llm, &tiny(200), &Window::whole(chunks(10)), &cancel);
        assert_eq!(out.error.as_deref(), Some(CANCELLED));
        assert_eq!(llm.calls(), 0);

        // Cancelled while calls are in flight: an LLM that only returns on
        // cancellation, with parallel batches.
        let llm = FakeLlm::new(|_, _, cancel| {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err("request aborted".into())
        });
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c2.cancel();
        });
        let t0 = Instant::now();
        let out = summarize_window(&llm, &tiny(200), &Window::whole(chunks(100)), &cancel);
        t.join().unwrap();
        assert_eq!(out.error.as_deref(), Some(CANCELLED));
        assert!(t0.elapsed() < Duration::from_secs(2));
        assert!(llm.calls() <= 4, "{}", llm.calls()); // max_parallel, then stop
        let out = final_summary(&llm, &tiny(200), &[], &cancel);
        assert_eq!(out.error.as_deref(), Some(CANCELLED));
    }

    #[test]
    fn first_failure_stops_siblings() {
        // Batch 0 fails at once; the others would block until cancelled.
        let llm = FakeLlm::new(|r, _, cancel| {
            if r.user.contains("#0:") {
                return Err("boom".into());
            }
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err("aborted".into())
        });
        let t0 = Instant::now();
        let out = summarize_window(
            &llm,
            &tiny(200),
            &Window::whole(chunks(40)),
            &CancellationToken::new(),
        );
        assert!(t0.elapsed() < Duration::from_secs(2));
        let e = out.error.unwrap();
        assert!(e.contains("batch 1 of") && e.ends_with("boom"), "{e}");
    }

    #[test]
    fn parallel_and_sequential_agree() {
        let w = Window::whole(chunks(120));
        let mut texts = Vec::new();
        for p in [0, 1, 3, 16] {
            let llm = FakeLlm::id_ranges();
            let cfg = SummaryConfig {
                max_parallel: p,
                ..tiny(200)
            };
            let out = summarize_window(&llm, &cfg, &w, &CancellationToken::new());
            texts.push((out.text, out.calls, llm.requests().last().cloned()));
        }
        assert!(texts.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn final_summary_skips_and_names_failed_windows() {
        let llm = FakeLlm::id_ranges();
        let cfg = SummaryConfig::default();
        let mut windows = Windows::new(Some(30.0)).unwrap();
        let mut closed = Vec::new();
        for (i, c) in chunks(9).into_iter().enumerate() {
            let mut c = c;
            if i == 4 {
                c.caption = None; // an error record
            }
            closed.extend(windows.push(c));
        }
        closed.extend(windows.finish());
        let mut parts: Vec<PartSummary> = closed
            .iter()
            .map(|w| {
                PartSummary::new(
                    w,
                    &summarize_window(&llm, &cfg, w, &CancellationToken::new()),
                )
            })
            .collect();
        // Window 1's summary failed.
        parts[1].text = None;
        parts[1].error = Some("summary aggregation failed: HTTP 500".into());
        let out = final_summary(&llm, &cfg, &parts, &CancellationToken::new());
        assert_eq!(ids(&out), [0, 1, 2, 6, 7, 8].into_iter().collect());
        assert_eq!(out.failed_windows, vec![1]);
        assert!(out.error.is_none());
        assert!(out.warning.as_deref().unwrap().contains("windows 1 failed"));
        let agg = llm.requests().last().unwrap().clone();
        assert_eq!(
            agg.system.as_deref(),
            Some(DEFAULT_SUMMARY_AGGREGATION_PROMPT)
        );
        assert_eq!(agg.user, "<0.00> <30.00> #0-2\n<60.00> <90.00> #6-8");

        let rec = SummaryRecord::final_of_windows("dock-3", "m", &parts, &out);
        let v: serde_json::Value = serde_json::from_str(&rec.to_json_line()).unwrap();
        assert_eq!(v["kind"], "final-summary");
        assert_eq!(v["stream-id"], "dock-3");
        assert!(v.get("summary-index").is_none());
        assert_eq!(v["chunk-indices"], serde_json::json!([0, 1, 2, 6, 7, 8]));
        assert_eq!(v["missing-chunks"], serde_json::json!([4]));
        assert_eq!(v["failed-windows"], serde_json::json!([1]));
        assert_eq!(
            (v["start"].as_f64(), v["end"].as_f64()),
            (Some(0.0), Some(90.0))
        );

        // Every window failed: the final fails, naming them.
        for p in parts.iter_mut() {
            p.text = None;
        }
        let out = final_summary(&llm, &cfg, &parts, &CancellationToken::new());
        assert_eq!(
            out.error.as_deref(),
            Some("every window summary failed (windows 0, 1, 2)")
        );
        assert_eq!(out.failed_windows, vec![0, 1, 2]);
        let out = final_summary(&llm, &cfg, &[], &CancellationToken::new());
        assert!(out.error.unwrap().contains("no chunks"));
    }

    #[test]
    fn window_record_fields() {
        let w = Window {
            index: 2,
            start: 120.0,
            end: 175.5,
            chunks: vec![
                chunk(12, 120.0, 130.0, true),
                chunk(13, 130.0, 140.0, false),
            ],
        };
        let out = SummaryOutput {
            text: Some("A person walks.\0".into()),
            input_tokens: 10,
            output_tokens: 3,
            calls: 1,
            latency: 0.5,
            ..Default::default()
        };
        let rec = SummaryRecord::window("cam", "llama", &w, &out);
        let v: serde_json::Value = serde_json::from_str(&rec.to_json_line()).unwrap();
        assert_eq!(v["kind"], "summary");
        assert_eq!(v["summary-index"], 2);
        assert_eq!(v["chunk-indices"], serde_json::json!([12]));
        assert_eq!(v["missing-chunks"], serde_json::json!([13]));
        assert_eq!(v["text"], "A person walks.\u{FFFD}");
        assert_eq!(v["model"], "llama");
        assert_eq!(v["input-tokens"], 10);
        assert_eq!(v["output-tokens"], 3);
        assert_eq!(v["llm-calls"], 1);
        assert_eq!(v["end"], 175.5);
        for absent in ["error", "failed-windows", "start-time", "end-time"] {
            assert!(v.get(absent).is_none(), "{absent}");
        }
        let failed = SummaryOutput {
            error: Some("cancelled".into()),
            ..Default::default()
        };
        let v: serde_json::Value =
            serde_json::to_value(SummaryRecord::window("cam", "llama", &w, &failed)).unwrap();
        assert_eq!(v["error"], "cancelled");
        assert_eq!(v["text"], "");
        let whole = Window::whole(vec![chunk(0, 0.0, 10.0, true)]);
        let v = serde_json::to_value(SummaryRecord::final_of_chunks("cam", "llama", &whole, &out))
            .unwrap();
        assert_eq!(v["kind"], "final-summary");
        assert_eq!(v["failed-windows"], serde_json::json!([]));
        assert_eq!(v["missing-chunks"], serde_json::json!([]));
    }

    #[test]
    fn config_checks_the_budget() {
        let cfg = SummaryConfig {
            context_tokens: 100,
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err();
        assert!(
            e.starts_with("llm-context-tokens (100) is too small"),
            "{e}"
        );
        let llm = FakeLlm::id_ranges();
        let out = summarize_window(
            &llm,
            &cfg,
            &Window::whole(chunks(2)),
            &CancellationToken::new(),
        );
        assert!(out.error.unwrap().contains("llm-context-tokens"));
        assert_eq!(llm.calls(), 0);
        assert!(SummaryConfig::default().validate().is_ok());
        assert!(tiny(200).validate().is_ok());
        let blank = SummaryConfig {
            caption_prompt: "  ".into(),
            ..Default::default()
        };
        assert_eq!(blank.caption_prompt(), DEFAULT_CAPTION_SUMMARIZATION_PROMPT);
        assert_eq!(
            blank.aggregation_prompt(),
            DEFAULT_SUMMARY_AGGREGATION_PROMPT
        );
    }

    #[test]
    fn default_prompts_say_what_matters() {
        for p in [
            DEFAULT_CAPTION_SUMMARIZATION_PROMPT,
            DEFAULT_SUMMARY_AGGREGATION_PROMPT,
        ] {
            assert!(p.contains("`<start> <end>"));
            assert!(p.contains("chronological"));
            assert!(p.contains("do not invent"));
            assert!(!p.to_lowercase().contains("warehouse"));
        }
        // They leave most of the default budget for captions.
        assert!(SummaryConfig::default().min_context_tokens() < 600);
    }
}
