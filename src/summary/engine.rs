// SPDX-License-Identifier: MPL-2.0
//! The summary engine: takes chunk results in output order (from the
//! dispatcher, as each record enters the output stream), closes windows,
//! summarizes them on its own threads and puts `summary` records (in window
//! order) into the output stream ([`SummaryOut`]) and, after
//! [`SummaryEngine::finish`], the `final-summary` record last, then `Eos`.
//! Free of GStreamer types.
//!
//! * Threads: the window summaries and the final summary are jobs of one
//!   ordered pool ([`crate::pool`]) of [`SummaryEngine::WORKERS`] threads,
//!   which releases them in window order; within one, the batches of an aggregation level run
//!   in parallel up to `llm-max-concurrency`. So at most
//!   `WORKERS × llm-max-concurrency` summary calls are in flight, apart from
//!   the event checks, which have their own budget: a slow aggregation never
//!   holds up a caption or an alert.
//! * The queue of closed windows waiting for a thread is bounded
//!   ([`MAX_QUEUED_WINDOWS`]). When a live stream closes windows faster
//!   than the LLM summarizes them, the oldest waiting window becomes a
//!   `summary` record with an error saying so (it is never dropped silently);
//!   its captions were emitted as usual. Non-live input is never skipped:
//!   the dispatcher waits in [`SummaryEngine::wait_room`] before it takes
//!   the next chunk, so a file slows down to the LLM's pace (the queue can
//!   then exceed the bound by the windows of the chunks already pending).
//! * Records leave in window order: a window finished early waits for the
//!   ones before it. The final summary leaves last, after every window, and
//!   `Eos` follows it (or follows [`SummaryEngine::finish`] at once when no
//!   chunk came).
//! * Summary text is capped like captions ([`crate::record::MAX_TEXT_BYTES`],
//!   `text-truncated`), in the records and in what is kept for the final
//!   summary, so an LLM that answers megabytes costs no more memory than one
//!   that answers a paragraph.
//! * At EOS the final summary does not wait for the last window's summary:
//!   it aggregates the earlier window summaries together with the last
//!   window's captions, while that window's own summary is made in parallel
//!   ([`final_summary_with_tail`]): the final job is gated on every window
//!   but that one (pool rule 6) and released after it (pool rule 1). So
//!   the final summary is ready about one
//!   LLM call after EOS (when the earlier windows kept up), not two.
//! * The final summary aggregates the windows that succeeded (see
//!   [`super::aggregate`]); with `summary-duration=-1` it summarizes all
//!   captions. Memory: window summaries (or, with `-1`, all caption lines)
//!   are kept until EOS: about 1 KB per window or caption.
//! * [`SummaryEngine::flush`] (flush/seek) cancels and forgets everything
//!   of the old segment; [`SummaryEngine::expire`] (drain timeout at EOS)
//!   cancels what runs and turns every summary not made into an error record,
//!   so that each window still ends as exactly one record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio_util::sync::CancellationToken;

use super::aggregate::{
    final_summary, final_summary_of_chunks, final_summary_with_tail, summarize_window, PartSummary,
    SummaryConfig, SummaryOutput,
};
use super::llm::TextLlm;
use super::windows::{ChunkResult, Window, Windows};
use crate::flow::SummaryOut;
use crate::pool::{Pool, Spec};
use crate::record::SummaryRecord;

/// Closed windows waiting for a summary thread, at most.
pub const MAX_QUEUED_WINDOWS: usize = 16;

/// What the engine needs besides the LLM.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub summary: SummaryConfig,
    /// `summary-duration`; `None` = only the final summary.
    pub window: Option<f64>,
    pub stream_id: String,
}

#[derive(Debug, Default)]
pub struct SummaryStats {
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

impl SummaryStats {
    pub fn reset(&self) {
        self.completed.store(0, Ordering::Relaxed);
        self.failed.store(0, Ordering::Relaxed);
    }
}

/// A job of the engine's pool ([`crate::pool`]).
enum Job {
    Window(Window),
    /// Gated on every window but the one closed by EOS (pool rule 6).
    Final,
}

/// A result of the engine's pool, released in order.
enum Done {
    Window(Window, SummaryOutput),
    Final(SummaryOutput),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FinalState {
    /// Not asked for yet (no EOS).
    Waiting,
    /// EOS seen; the final job is in the pool.
    Due,
    /// Its record is in the output stream.
    Done,
}

struct State {
    /// Bumped by flush and expire (ends `wait_finished`).
    generation: u64,
    shutdown: bool,
    windows: Windows,
    /// Without windows: every chunk, for the final summary.
    all_chunks: Vec<ChunkResult>,
    /// Live input: summaries carry `start-time` / `end-time`.
    live: bool,
    /// For the final summary, in window order.
    parts: std::collections::BTreeMap<u64, PartSummary>,
    final_state: FinalState,
    /// The window closed by EOS: the final summary reads its captions
    /// instead of waiting for its summary.
    tail: Option<Window>,
    /// Chunks pushed since the start or the last flush.
    pushed: u64,
}

/// What the pool's functions share. Lock order: pool → `state` → output
/// stream; nothing holds `state` while it calls the pool.
struct Core {
    state: Mutex<State>,
    /// `wait_finished` waits here.
    changed: Condvar,
    /// Where the records go.
    out: Arc<dyn SummaryOut>,
    llm: Arc<dyn TextLlm>,
    cfg: EngineConfig,
    stats: Arc<SummaryStats>,
}

pub struct SummaryEngine {
    core: Arc<Core>,
    pool: Pool<Job, Done>,
}

impl SummaryEngine {
    /// Summary threads.
    pub const WORKERS: usize = 2;

    pub fn new(
        llm: Arc<dyn TextLlm>,
        cfg: EngineConfig,
        stats: Arc<SummaryStats>,
        out: Arc<dyn SummaryOut>,
    ) -> Result<SummaryEngine, crate::config::SettingsError> {
        cfg.summary.validate()?;
        let core = Arc::new(Core {
            state: Mutex::new(State {
                generation: 0,
                shutdown: false,
                windows: Windows::new(cfg.window)?,
                all_chunks: Vec::new(),
                live: false,
                parts: Default::default(),
                final_state: FinalState::Waiting,
                tail: None,
                pushed: 0,
            }),
            changed: Condvar::new(),
            out,
            llm,
            cfg,
            stats,
        });
        let (c1, c2) = (core.clone(), core.clone());
        let pool = Pool::new(Spec {
            name: "vsssummarize-s".into(),
            workers: Self::WORKERS,
            work: Box::new(move |job: &Job, token: &CancellationToken| c1.run(job, token)),
            panicked: Box::new(|job: &Job, what: &str| {
                failed(
                    job,
                    format!("internal error in the summary: {what} (a bug: please report it)"),
                )
            }),
            release: Box::new(move |done: Done| c2.release(done)),
        })
        .map_err(|e| format!("cannot start a summary thread: {e}"))?;
        Ok(SummaryEngine { core, pool })
    }

    /// One chunk's result, in chunk (output) order. `live`: the labels are
    /// wall-clock times. Called by one feeder at a time (the dispatcher, as
    /// each record enters the output stream).
    pub fn push(&self, chunk: ChunkResult, live: bool) {
        let closed = {
            let mut st = self.core.state.lock();
            if st.shutdown || st.final_state != FinalState::Waiting {
                return;
            }
            st.live = live;
            st.pushed += 1;
            if self.core.cfg.window.is_none() {
                st.all_chunks.push(chunk);
                return;
            }
            st.windows.push(chunk)
        };
        for w in closed {
            self.enqueue(w, live);
        }
    }

    /// EOS: closes the last window; the final summary follows the windows.
    pub fn finish(&self) {
        let (tail, live) = {
            let mut st = self.core.state.lock();
            if st.shutdown || st.final_state != FinalState::Waiting {
                return;
            }
            if st.pushed == 0 {
                // No chunk at all (EOS before any frame): nothing to
                // summarize, no record.
                st.final_state = FinalState::Done;
                self.core.out.eos();
                self.core.changed.notify_all();
                return;
            }
            let tail = st.windows.finish();
            st.tail = tail.last().cloned();
            st.final_state = FinalState::Due;
            (tail, st.live)
        };
        let mut gate = None;
        for w in tail {
            gate = self.enqueue(w, live);
        }
        // Without waiting for the EOS window's own summary.
        let _ = self.pool.submit_gated(Job::Final, gate);
    }

    /// Queues a closed window; on live input a full queue skips its oldest
    /// waiting window (which becomes an error record). Its sequence number.
    fn enqueue(&self, window: Window, live: bool) -> Option<u64> {
        // Live only: a file waits in `wait_room` instead.
        if live && self.pool.counts().queued >= MAX_QUEUED_WINDOWS {
            self.pool.drop_oldest_queued(|job| {
                failed(job, format!(
                    "skipped: the LLM summarizes slower than windows close ({MAX_QUEUED_WINDOWS} windows were waiting); raise summary-duration or llm-max-concurrency, or use a faster LLM"
                ))
            });
        }
        self.pool.submit(Job::Window(window)).ok()
    }

    /// Non-live back-pressure: waits while [`MAX_QUEUED_WINDOWS`] windows
    /// wait for a thread; returns at once on a flush or shutdown.
    pub fn wait_room(&self) {
        self.pool.wait_room(MAX_QUEUED_WINDOWS);
    }

    /// After [`finish`](Self::finish): the final record is in the output
    /// stream.
    pub fn finished(&self) -> bool {
        self.core.state.lock().final_state == FinalState::Done
    }

    /// Waits until the final record exists (`finished`) or `deadline`;
    /// false on timeout, flush or shutdown.
    pub fn wait_finished(&self, deadline: Instant) -> bool {
        let core = &self.core;
        let mut st = core.state.lock();
        let generation = st.generation;
        loop {
            if st.final_state == FinalState::Done {
                return true;
            }
            if st.shutdown || st.generation != generation {
                return false;
            }
            if core.changed.wait_until(&mut st, deadline).timed_out() {
                return st.final_state == FinalState::Done;
            }
        }
    }

    /// Drain timeout: cancels what runs; every window summary not made and
    /// the final summary (made at once from what exists, without an LLM
    /// call) become error records with `msg`. Returns the number of summaries
    /// that failed this way.
    pub fn expire(&self, msg: &str) -> usize {
        {
            let mut st = self.core.state.lock();
            if st.final_state == FinalState::Done {
                return 0;
            }
            st.generation += 1;
            self.core.changed.notify_all();
        }
        // The windows in order, then the final (pool rule 7); a final
        // record already made is released after the windows.
        let mut n = self
            .pool
            .fail_pending(|job, _| failed(job, msg.to_string()));
        let core = &self.core;
        let mut st = core.state.lock();
        if st.final_state != FinalState::Done {
            // Not asked for (no EOS yet): made here.
            let out = SummaryOutput {
                error: Some(msg.to_string()),
                ..Default::default()
            };
            core.put_final(&mut st, &out);
            n += 1;
        }
        n
    }

    /// Flush/seek: cancels and forgets everything (open window included).
    pub fn flush(&self) {
        self.pool.stop();
        {
            let mut st = self.core.state.lock();
            reset(&mut st);
            self.core.changed.notify_all();
        }
        self.pool.start();
    }

    /// Cancels everything and stops the threads.
    pub fn shutdown(&self) {
        self.pool.shutdown();
        let mut st = self.core.state.lock();
        reset(&mut st);
        st.shutdown = true;
        self.core.changed.notify_all();
    }
}

impl Drop for SummaryEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn reset(st: &mut State) {
    st.generation += 1;
    st.windows.reset();
    st.all_chunks.clear();
    st.parts.clear();
    st.final_state = FinalState::Waiting;
    st.tail = None;
    st.pushed = 0;
}

/// The result of a job that was not made: an error with `msg`.
fn failed(job: &Job, msg: String) -> Done {
    let out = SummaryOutput {
        error: Some(msg),
        ..Default::default()
    };
    match job {
        Job::Window(w) => Done::Window(w.clone(), out),
        Job::Final => Done::Final(out),
    }
}

impl Core {
    /// The pool's work function (without the pool's lock).
    fn run(&self, job: &Job, token: &CancellationToken) -> Done {
        match job {
            Job::Window(w) => Done::Window(
                w.clone(),
                summarize_window(&*self.llm, &self.cfg.summary, w, token),
            ),
            Job::Final => {
                let (parts, tail, whole) = {
                    let st = self.state.lock();
                    let (parts, tail) = final_parts(&st);
                    (parts, tail, Window::whole(st.all_chunks.clone()))
                };
                let (llm, cfg) = (&*self.llm, &self.cfg.summary);
                Done::Final(match (self.cfg.window, &tail) {
                    (Some(_), Some(t)) => final_summary_with_tail(llm, cfg, &parts, t, token),
                    (Some(_), None) => final_summary(llm, cfg, &parts, token),
                    (None, _) => final_summary_of_chunks(llm, cfg, &whole, token),
                })
            }
        }
    }

    /// The pool's release callback: results in window order, the final
    /// last (under the pool's lock; takes `state`).
    fn release(&self, done: Done) {
        let mut st = self.state.lock();
        match done {
            Done::Window(w, out) => {
                let out = &capped(&out);
                let mut rec = SummaryRecord::window(&self.cfg.stream_id, self.llm.model(), &w, out);
                if st.live {
                    let (a, b) = w.labels();
                    rec.start_time = Some(a);
                    rec.end_time = Some(b);
                }
                self.count(out);
                st.parts.insert(w.index, PartSummary::new(&w, out));
                self.out.summary(rec);
            }
            Done::Final(out) => {
                if st.final_state == FinalState::Due {
                    self.put_final(&mut st, &out);
                }
            }
        }
    }

    /// Puts the final record, then `Eos`.
    fn put_final(&self, st: &mut State, out: &SummaryOutput) {
        let out = capped(out);
        let rec = final_record(self, st, &out);
        self.count(&out);
        self.out.summary(rec);
        self.out.eos();
        st.final_state = FinalState::Done;
        self.changed.notify_all();
    }

    fn count(&self, out: &SummaryOutput) {
        if out.text.is_some() {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `out` with its text cut to [`crate::record::MAX_TEXT_BYTES`]
/// (`truncated` says so).
fn capped(out: &SummaryOutput) -> SummaryOutput {
    let mut out = out.clone();
    if let Some(t) = out.text.as_mut() {
        out.truncated |= crate::record::cap_text(t);
    }
    if let Some(e) = out.error.as_mut() {
        crate::record::cap_text(e);
    }
    out
}

/// The parts the final summary reads: the window summaries, with the EOS
/// window's captions standing in for its summary.
fn final_parts(st: &State) -> (Vec<PartSummary>, Option<Window>) {
    let tail = st.tail.clone();
    let parts = st
        .parts
        .values()
        .filter(|p| tail.as_ref().is_none_or(|t| t.index != p.index))
        .cloned()
        .collect();
    (parts, tail)
}

fn final_record(core: &Core, st: &State, out: &SummaryOutput) -> SummaryRecord {
    let (id, model) = (&core.cfg.stream_id, core.llm.model());
    let mut rec = if core.cfg.window.is_some() {
        let (mut parts, tail) = final_parts(st);
        if let Some(t) = &tail {
            // Its captions went in themselves.
            let mut p = PartSummary::new(t, &SummaryOutput::default());
            p.text = Some(String::new());
            parts.push(p);
        }
        SummaryRecord::final_of_windows(id, model, &parts, out)
    } else {
        SummaryRecord::final_of_chunks(id, model, &Window::whole(st.all_chunks.clone()), out)
    };
    if st.live {
        let tail = st.tail.as_ref().map(|w| w.labels());
        let first = st
            .parts
            .values()
            .next()
            .map(|p| p.start_label.clone())
            .or_else(|| tail.as_ref().map(|t| t.0.clone()))
            .or_else(|| st.all_chunks.first().map(|c| c.start_label.clone()));
        let last = tail
            .map(|t| t.1)
            .or_else(|| st.parts.values().next_back().map(|p| p.end_label.clone()))
            .or_else(|| st.all_chunks.last().map(|c| c.end_label.clone()));
        rec.start_time = first;
        rec.end_time = last;
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::super::llm::fake::{ids_in, FakeLlm};
    use super::*;
    use crate::flow::{Item, Outbox};
    use crate::record::SummaryKind;
    use std::collections::BTreeSet;
    use std::time::Duration;

    type Out = Arc<Outbox<()>>;

    fn chunk(idx: u64, start: f64, ok: bool) -> ChunkResult {
        ChunkResult {
            chunk_index: idx,
            start,
            end: start + 10.0,
            caption: ok.then(|| format!("caption #{idx}")),
            start_label: format!("{start:.2}"),
            end_label: format!("{:.2}", start + 10.0),
            same_as: None,
        }
    }

    fn engine(llm: Arc<dyn TextLlm>, window: Option<f64>) -> (SummaryEngine, Out) {
        let cfg = EngineConfig {
            summary: SummaryConfig::default(),
            window,
            stream_id: "cam".into(),
        };
        let out: Out = Arc::new(Outbox::default());
        let e =
            SummaryEngine::new(llm, cfg, Arc::new(SummaryStats::default()), out.clone()).unwrap();
        (e, out)
    }

    /// The next record put into the output stream (blocks).
    fn next_record(out: &Out) -> SummaryRecord {
        match out.next() {
            Some(Item::Summary(r)) => *r,
            other => panic!("expected a summary, got {other:?}"),
        }
    }

    /// Every record up to `Eos`, which must follow the final summary.
    fn take_all(out: &Out) -> Vec<SummaryRecord> {
        let mut v = Vec::new();
        loop {
            match out.next() {
                Some(Item::Summary(r)) => v.push(*r),
                Some(Item::Eos) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(out.try_next().is_none(), "nothing after Eos");
        v
    }

    #[test]
    fn windows_then_final_in_order_with_their_captions() {
        let llm = Arc::new(FakeLlm::id_ranges());
        let (e, out) = engine(llm.clone(), Some(30.0));
        for i in 0..10 {
            e.push(chunk(i, i as f64 * 10.0, i != 4), false);
        }
        e.finish();
        let recs = take_all(&out);
        assert_eq!(recs.len(), 5, "4 windows and the final");
        for (w, r) in recs[..4].iter().enumerate() {
            assert_eq!(r.kind, SummaryKind::Summary);
            assert_eq!(r.summary_index, Some(w as u64));
            let ids: BTreeSet<u64> = ids_in(&r.text);
            let want: BTreeSet<u64> = r.chunk_indices.iter().copied().collect();
            assert_eq!(ids, want, "window {w}: {}", r.text);
        }
        assert_eq!(recs[1].missing_chunks, vec![4]);
        assert_eq!(recs[3].end, 100.0);
        let f = &recs[4];
        assert_eq!(f.kind, SummaryKind::FinalSummary);
        let ids = ids_in(&f.text);
        assert_eq!(ids, (0..10).filter(|i| *i != 4).collect::<BTreeSet<u64>>());
        assert_eq!(f.missing_chunks, vec![4]);
    }

    #[test]
    fn windows_are_summarized_while_the_stream_runs() {
        let llm = Arc::new(FakeLlm::id_ranges());
        let (e, out) = engine(llm.clone(), Some(20.0));
        for i in 0..6 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        // Windows 0 and 1 are closed: their summaries come before EOS.
        let got = [next_record(&out), next_record(&out)];
        assert_eq!(got[0].summary_index, Some(0));
        assert_eq!(got[1].summary_index, Some(1));
        assert!(!e.finished());
        e.finish();
        let rest = take_all(&out);
        assert_eq!(rest.len(), 2);
        assert_eq!(rest[1].kind, SummaryKind::FinalSummary);
    }

    #[test]
    fn no_windows_gives_only_the_final_summary_of_all_captions() {
        let llm = Arc::new(FakeLlm::id_ranges());
        let (e, out) = engine(llm.clone(), None);
        for i in 0..5 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        e.finish();
        let recs = take_all(&out);
        assert_eq!(recs.len(), 1);
        assert_eq!(ids_in(&recs[0].text), (0..5).collect());
        assert_eq!(recs[0].chunk_indices, vec![0, 1, 2, 3, 4]);
        assert_eq!(llm.calls(), 1);
    }

    #[test]
    fn a_failing_window_is_an_error_record_and_the_final_covers_the_rest() {
        let llm = Arc::new(FakeLlm::new(|req, _, _| {
            if req.user.contains("#2") && !req.user.contains("#0") {
                Err("HTTP 500 from x".into())
            } else {
                Ok(super::super::llm::fake::format_ranges(&ids_in(&req.user)))
            }
        }));
        let (e, out) = engine(llm, Some(20.0));
        for i in 0..6 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        e.finish();
        let recs = take_all(&out);
        assert_eq!(recs.len(), 4);
        assert!(recs[1].error.as_deref().unwrap().contains("HTTP 500"));
        let f = &recs[3];
        assert!(f.error.is_none(), "{f:?}");
        assert_eq!(f.failed_windows, Some(vec![1]));
        assert_eq!(ids_in(&f.text), [0, 1, 4, 5].into_iter().collect());
    }

    #[test]
    fn expire_turns_what_is_left_into_error_records_once() {
        let llm = Arc::new(FakeLlm::new(|_, _, cancel| {
            let t = Instant::now();
            while !cancel.is_cancelled() && t.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err("cancelled".into())
        }));
        let (e, out) = engine(llm, Some(10.0));
        for i in 0..4 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        e.finish();
        assert!(!e.wait_finished(Instant::now() + Duration::from_millis(100)));
        assert_eq!(e.expire("drain-timeout expired"), 5);
        let recs = take_all(&out);
        assert_eq!(recs.len(), 5);
        let idx: Vec<Option<u64>> = recs.iter().map(|r| r.summary_index).collect();
        assert_eq!(idx, vec![Some(0), Some(1), Some(2), Some(3), None]);
        assert!(recs
            .iter()
            .all(|r| r.error.as_deref() == Some("drain-timeout expired")));
        // Late answers are not emitted twice.
        assert_eq!(e.expire("again"), 0);
        assert!(out.try_next().is_none());
    }

    #[test]
    fn the_final_summary_does_not_wait_for_the_last_window() {
        // The last window's summary holds until the aggregation of the final
        // summary has started: if the final waited for it, that would never
        // happen (the wait gives up after a minute and the test fails).
        let (agg_tx, agg_rx) = std::sync::mpsc::channel::<()>();
        let agg_tx = std::sync::Mutex::new(agg_tx);
        let agg_rx = std::sync::Mutex::new(agg_rx);
        let overlapped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ov = overlapped.clone();
        let llm = Arc::new(FakeLlm::new(move |req, _, _| {
            let tail = req.user.contains("#5");
            let agg = req
                .system
                .as_deref()
                .unwrap_or_default()
                .starts_with("You combine");
            if agg {
                let _ = agg_tx.lock().unwrap().send(());
            } else if tail {
                let got = agg_rx.lock().unwrap().recv_timeout(Duration::from_secs(60));
                ov.store(got.is_ok(), Ordering::SeqCst);
            }
            Ok(super::super::llm::fake::format_ranges(&ids_in(&req.user)))
        }));
        let (e, out) = engine(llm, Some(20.0));
        for i in 0..6 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        e.finish();
        let recs = take_all(&out);
        let idx: Vec<Option<u64>> = recs.iter().map(|r| r.summary_index).collect();
        assert_eq!(
            idx,
            vec![Some(0), Some(1), Some(2), None],
            "the final stays last"
        );
        assert!(
            overlapped.load(Ordering::SeqCst),
            "the aggregation started while the last window was still being summarized"
        );
        let f = &recs[3];
        assert_eq!(
            ids_in(&f.text),
            (0..6).collect(),
            "the last window's captions are in"
        );
        assert_eq!(f.chunk_indices, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(f.failed_windows, Some(vec![]));
    }

    #[test]
    fn nothing_pushed_means_no_record() {
        let llm = Arc::new(FakeLlm::id_ranges());
        let (e, out) = engine(llm.clone(), Some(20.0));
        e.finish();
        assert!(e.finished());
        assert!(matches!(out.try_next(), Some(Item::Eos)), "Eos at once");
        assert!(out.try_next().is_none());
        assert_eq!(llm.calls(), 0);
    }

    #[test]
    fn flush_forgets_the_old_segment() {
        let llm = Arc::new(FakeLlm::id_ranges());
        let (e, out) = engine(llm, Some(20.0));
        for i in 0..3 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        e.flush();
        // What the old segment's threads still put is discarded with it
        // (the dispatcher stops and restarts the output stream around a
        // flush).
        out.stop();
        out.restart();
        for i in 10..12 {
            e.push(chunk(i, 500.0 + (i - 10) as f64 * 10.0, true), false);
        }
        e.finish();
        let recs = take_all(&out);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].chunk_indices, vec![10, 11]);
        assert_eq!(recs[1].chunk_indices, vec![10, 11]);
    }

    #[test]
    fn a_slow_llm_on_live_input_skips_windows_by_name() {
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started_tx = std::sync::Mutex::new(started_tx);
        let llm = Arc::new(FakeLlm::new(move |_, _, cancel| {
            let _ = started_tx.lock().unwrap().send(());
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err("cancelled".into())
        }));
        let (e, out) = engine(llm, Some(10.0));
        let n = (SummaryEngine::WORKERS + MAX_QUEUED_WINDOWS + 3) as u64;
        for i in 0..=n {
            e.push(chunk(i, i as f64 * 10.0, true), true);
            if i == 2 {
                // Both threads take a window before the queue fills (and
                // hang there until cancelled).
                for _ in 0..SummaryEngine::WORKERS {
                    started_rx.recv().unwrap();
                }
            }
        }
        e.finish();
        e.expire("drain-timeout expired");
        let recs = take_all(&out);
        assert_eq!(
            recs.len() as u64,
            n + 2,
            "every window one record, plus the final"
        );
        let skipped = recs
            .iter()
            .filter(|r| r.error.as_deref().is_some_and(|e| e.starts_with("skipped")))
            .count();
        assert_eq!(skipped, 4);
        assert!(recs.iter().all(|r| r.start_time.is_some()));
    }

    /// Issue 21 F4: a file (non-live input) never skips a window when the
    /// LLM is slower than the captions: `wait_room` holds the input back
    /// while the queue is full, and every window gets its summary.
    #[test]
    fn a_slow_llm_on_a_file_slows_the_input_and_skips_nothing() {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let llm = Arc::new(FakeLlm::new(move |req, _, _| {
            // Each window summary waits for the test to let it go.
            if !req
                .system
                .as_deref()
                .unwrap_or_default()
                .starts_with("You combine")
            {
                let _ = release_rx.lock().unwrap().recv();
            }
            Ok(super::super::llm::fake::format_ranges(&ids_in(&req.user)))
        }));
        let (e, out) = engine(llm, Some(10.0));
        let e = Arc::new(e);
        let n = (SummaryEngine::WORKERS + MAX_QUEUED_WINDOWS + 4) as u64;
        let (fed_tx, fed_rx) = std::sync::mpsc::channel::<u64>();
        let feeder = {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..n {
                    // As the dispatcher does before each non-live chunk.
                    e.wait_room();
                    e.push(chunk(i, i as f64 * 10.0, true), false);
                    fed_tx.send(i).unwrap();
                }
                e.finish();
            })
        };
        // The feeder gets ahead by the threads plus the bounded queue, then
        // waits: chunk i closes window i - 1.
        let limit = (SummaryEngine::WORKERS + MAX_QUEUED_WINDOWS) as u64 + 1;
        for i in 0..limit {
            assert_eq!(fed_rx.recv().unwrap(), i);
        }
        assert!(
            fed_rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the input must wait while {MAX_QUEUED_WINDOWS} windows wait"
        );
        // Letting the LLM answer lets the input go on, to the end.
        for _ in 0..n {
            release_tx.send(()).unwrap();
        }
        // Calls after those (the final summary's) do not wait.
        drop(release_tx);
        feeder.join().unwrap();
        let recs = take_all(&out);
        assert_eq!(recs.len() as u64, n + 1, "every window and the final");
        assert!(recs.iter().all(|r| r.error.is_none()), "nothing skipped");
    }

    /// Issue 21 F3: summary text is capped like captions, in the record and
    /// in what is kept for the final summary.
    #[test]
    fn huge_summaries_are_cut_and_flagged() {
        let llm = Arc::new(FakeLlm::new(|_, _, _| Ok("é".repeat(2_500_000))));
        let (e, out) = engine(llm, Some(20.0));
        for i in 0..4 {
            e.push(chunk(i, i as f64 * 10.0, true), false);
        }
        e.finish();
        let recs = take_all(&out);
        assert_eq!(recs.len(), 3);
        for r in &recs {
            assert!(r.text_truncated, "{:?}", r.summary_index);
            assert!(r.text.len() <= crate::record::MAX_TEXT_BYTES);
            assert!(r.text.ends_with('…'));
        }
        let line = recs[0].to_json_line();
        assert!(line.contains("\"text-truncated\":true"), "{}", &line[..200]);
        let parts = e
            .core
            .state
            .lock()
            .parts
            .values()
            .map(|p| p.text.as_ref().map_or(0, |t| t.len()))
            .max();
        assert!(parts.unwrap() <= crate::record::MAX_TEXT_BYTES);
    }
}
