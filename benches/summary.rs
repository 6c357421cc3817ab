// SPDX-License-Identifier: MPL-2.0
//! Summaries on a 1-hour-equivalent input (360 captions of 10 s chunks)
//! with a mock text LLM of fixed latency L: how many calls, and how long
//! from the last caption to the final summary, as a multiple of L.
//!
//! * `windows`: `summary-duration=60` (the default): window summaries are
//!   made while the stream runs; at EOS only the last window and the final
//!   aggregation remain.
//! * `eos-only`: `summary-duration=-1`, the baseline of the same run: all
//!   captions are summarized after EOS (split into batches that fit the
//!   budget, then aggregated), as a summarizer that waits for the end does.
//!
//! The captions arrive faster than in real time (one window's six captions
//! every 3 L) but slower than the LLM summarizes a window, as with a real
//! camera (60 s of video per window, a few seconds per LLM call).
//!
//! `cargo bench --bench summary` (env: `L_MS`, default 100).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstvsssummarize::backend::BackendError;
use gstvsssummarize::flow::{Item, Outbox};
use gstvsssummarize::summary::{
    ChunkResult, EngineConfig, SummaryConfig, SummaryEngine, SummaryStats, TextAnswer, TextLlm,
    TextRequest,
};
use tokio_util::sync::CancellationToken;

/// Answers a ~60-word summary after `latency`, whatever the input.
struct FixedLatency {
    latency: Duration,
    calls: AtomicU32,
}

impl TextLlm for FixedLatency {
    fn model(&self) -> &str {
        "fixed-latency"
    }

    fn complete(
        &self,
        req: &TextRequest,
        cancel: &CancellationToken,
    ) -> Result<TextAnswer, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let t = Instant::now();
        while t.elapsed() < self.latency {
            if cancel.is_cancelled() {
                return Err(BackendError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let first = req.user.split_whitespace().next().unwrap_or("<0>");
        Ok(TextAnswer {
            text: format!(
                "{first} A forklift carries pallets along aisle three while two workers in vests \
                 check boxes near the loading dock; a truck backs in slowly, the door opens and \
                 closes twice, and nobody enters the marked safety zone during this period of time."
            ),
            input_tokens: 0,
            output_tokens: 60,
        })
    }
}

const CAPTIONS: u64 = 360;
const CHUNK_S: f64 = 10.0;

fn caption(i: u64) -> ChunkResult {
    let start = i as f64 * CHUNK_S;
    ChunkResult {
        chunk_index: i,
        start,
        end: start + CHUNK_S,
        caption: Some(format!(
            "Clip {i}: a worker in a yellow vest walks past shelf {} while a forklift waits at the \
             crossing; boxes are stacked on two pallets, the lights are on and the floor is dry.",
            i % 12
        )),
        start_label: format!("{start:.2}"),
        end_label: format!("{:.2}", start + CHUNK_S),
        same_as: None,
    }
}

/// (LLM calls, seconds from the last caption to the final summary).
fn run(window: Option<f64>, latency: Duration) -> (u32, f64) {
    let llm = Arc::new(FixedLatency {
        latency,
        calls: AtomicU32::new(0),
    });
    let cfg = EngineConfig {
        summary: SummaryConfig::default(),
        window,
        stream_id: "bench".into(),
    };
    let out: Arc<Outbox<()>> = Arc::new(Outbox::default());
    let e = SummaryEngine::new(
        llm.clone(),
        cfg,
        Arc::new(SummaryStats::default()),
        out.clone(),
    )
    .unwrap();
    let per_caption = latency * 3 / 6;
    for i in 0..CAPTIONS {
        e.push(caption(i), false);
        std::thread::sleep(per_caption);
        while out.try_next().is_some() {}
    }
    let t = Instant::now();
    e.finish();
    let mut last = None;
    loop {
        match out.next() {
            Some(Item::Summary(r)) => {
                assert!(r.error.is_none(), "{:?}", r.error);
                last = Some(r);
            }
            Some(Item::Eos) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let last = last.expect("a final summary");
    assert!(last.summary_index.is_none());
    assert_eq!(last.chunk_indices.len() as u64, CAPTIONS);
    (llm.calls.load(Ordering::SeqCst), secs)
}

fn main() {
    let l_ms: u64 = std::env::var("L_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| (10..=10_000).contains(v))
        .unwrap_or(100);
    let l = Duration::from_millis(l_ms);
    println!(
        "summary bench: {CAPTIONS} captions of {CHUNK_S} s (1 h), mock LLM latency L = {l_ms} ms, \
         llm-context-tokens {}",
        SummaryConfig::default().context_tokens
    );
    let (calls_w, secs_w) = run(Some(60.0), l);
    let (calls_e, secs_e) = run(None, l);
    let lf = l.as_secs_f64();
    println!(
        "windows (summary-duration=60): {calls_w} LLM calls; last caption -> final summary {:.2} s = {:.2} L",
        secs_w,
        secs_w / lf
    );
    println!(
        "eos-only (summary-duration=-1, baseline): {calls_e} LLM calls; last caption -> final summary {:.2} s = {:.2} L",
        secs_e,
        secs_e / lf
    );
    println!(
        "ratio: the final summary comes {:.2}x sooner with windows than with eos-only",
        secs_e / secs_w
    );
}
